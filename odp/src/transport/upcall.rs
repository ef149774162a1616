//! Sockets for messages the kernel sends on its own: upcalls (to the PID a
//! vport or CPU names) and multicast notifications.

use std::io;

use crate::wire::netlink::{MessageIter, Payload};
use crate::wire::packet::Upcall;
use crate::wire::vport::VportMessage;

use super::error::Error;
use super::socket::GenlSocket;

/// Sans-IO: calls `each` with the body of every message of `family` in one
/// received datagram (errors, acks and control messages are skipped).
pub fn family_bodies(
    datagram: &[u8],
    family: u16,
    mut each: impl FnMut(&[u8]),
) -> Result<(), Error> {
    for msg in MessageIter::new(datagram) {
        let msg = msg?;
        if msg.header.kind != family {
            continue;
        }
        if let Payload::Data(body) = msg.payload()? {
            each(body);
        }
    }
    Ok(())
}

/// A socket that receives unsolicited kernel messages. Give its
/// [`pid`](UpcallSocket::pid) to a vport's or datapath's upcall PIDs, or join a
/// multicast group with [`UpcallSocket::join`].
#[derive(Debug)]
pub struct UpcallSocket {
    sock: GenlSocket,
}

impl UpcallSocket {
    /// Opens a socket.
    pub fn open() -> Result<Self, Error> {
        Ok(UpcallSocket {
            sock: GenlSocket::open()?,
        })
    }

    /// The port id to hand to the kernel.
    pub fn pid(&self) -> u32 {
        self.sock.pid()
    }

    /// Joins a multicast group (e.g. the `ovs_vport` group).
    pub fn join(&self, group: u32) -> Result<(), Error> {
        self.sock.add_membership(group)
    }

    /// Makes receives non-blocking: an empty batch then means "nothing yet".
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Error> {
        self.sock.set_nonblocking(nonblocking)
    }

    /// The file descriptor, for `poll`.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.raw_fd()
    }

    /// Receives one datagram and returns the bodies of the messages of
    /// `family` in it (errors and control messages are skipped). A would-block
    /// on a non-blocking socket gives an empty list; lost messages give
    /// [`Error::Overrun`] (the socket stays usable).
    pub fn recv_raw(&mut self, family: u16) -> Result<Vec<Vec<u8>>, Error> {
        let datagram = match self.sock.recv() {
            Ok(d) => d,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        family_bodies(datagram, family, |b| out.push(b.to_vec()))?;
        Ok(out)
    }

    /// Receives upcalls of the `ovs_packet` family (`family` is its id).
    pub fn recv_upcalls(&mut self, family: u16) -> Result<Vec<Upcall>, Error> {
        self.recv_raw(family)?
            .iter()
            .map(|b| Upcall::decode(b).map_err(Error::from))
            .collect()
    }

    /// Receives vport notifications of the `ovs_vport` family.
    pub fn recv_vport_events(&mut self, family: u16) -> Result<Vec<VportMessage>, Error> {
        self.recv_raw(family)?
            .iter()
            .map(|b| VportMessage::decode(b).map_err(Error::from))
            .collect()
    }
}
