//! A small synchronous rtnetlink (NETLINK_ROUTE) client.
//!
//! One [`Rtnl`] owns one netlink socket. A netlink socket belongs to the
//! network namespace of the thread that created it, for its whole life, so
//! opening the handle inside a namespace (see [`super::netns`]) is all it
//! takes to manage that namespace's links from any thread afterwards.
//!
//! Requests are strictly one at a time: send, then read until the kernel's
//! acknowledgement (or the end of a dump) for that sequence number.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Size of the receive buffer; a dump datagram from the kernel is at most
/// 32 KiB unless the socket asks for more, which this one never does.
const RECV_BUFFER: usize = 64 * 1024;

/// Length of a netlink message header.
const HEADER_LEN: usize = 16;

/// What went wrong talking rtnetlink.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket itself failed (open, send or receive).
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Kernel {
        /// What was asked, in words.
        op: String,
        /// The positive errno the kernel answered with.
        errno: i32,
        /// The errno as an I/O error, for its text.
        #[source]
        source: io::Error,
    },
    /// A reply could not be decoded.
    #[error("malformed rtnetlink reply: {0}")]
    Decode(String),
    /// A reply was well formed but not what the request calls for.
    #[error("unexpected rtnetlink reply: {0}")]
    Unexpected(String),
    /// A request named a link that does not exist.
    #[error("no link named {0:?}")]
    NoSuchLink(String),
}

impl RtnlError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A netlink-route socket bound to the namespace it was opened in.
#[derive(Debug)]
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, RtnlError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        socket.bind_auto().map_err(RtnlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    /// Sends `msg` with `NLM_F_ACK` plus `flags` and waits for the
    /// acknowledgement. `op` names the request in errors.
    pub fn execute(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), RtnlError> {
        let replies = self.exchange(op, msg, flags | NLM_F_ACK, false)?;
        if let Some(first) = replies.first() {
            return Err(RtnlError::Unexpected(format!(
                "{op}: data before the acknowledgement: {first:?}"
            )));
        }
        Ok(())
    }

    /// Sends a get request for one object and returns the kernel's answer.
    pub fn get(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, RtnlError> {
        let mut replies = self.exchange(op, msg, NLM_F_ACK, false)?;
        match replies.len() {
            1 => replies
                .pop()
                .ok_or_else(|| RtnlError::Unexpected(format!("{op}: no reply"))),
            n => Err(RtnlError::Unexpected(format!(
                "{op}: {n} replies to a single get"
            ))),
        }
    }

    /// Sends a dump request and returns every message of the dump.
    pub fn dump(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.exchange(op, msg, NLM_F_DUMP, true)
    }

    fn exchange(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(RtnlError::Socket)?;

        let mut replies = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(RtnlError::Socket)?;
            let data = self
                .buf
                .get(..n)
                .ok_or_else(|| RtnlError::Decode(format!("receive length {n} too large")))?;
            for frame in split_messages(data)? {
                let message: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(frame)
                        .map_err(|e| RtnlError::Decode(e.to_string()))?;
                if message.header.sequence_number != seq {
                    // A late answer to an earlier request, or a notification.
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(code) => {
                                let errno = code.get().checked_neg().unwrap_or(i32::MAX);
                                Err(RtnlError::Kernel {
                                    op: op.to_string(),
                                    errno,
                                    source: io::Error::from_raw_os_error(errno),
                                })
                            }
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(RtnlError::Unexpected(format!("{op}: overrun")));
                    }
                    other => {
                        return Err(RtnlError::Unexpected(format!("{op}: {other:?}")));
                    }
                }
            }
        }
    }
}

/// Splits one datagram into the netlink messages it holds, checking every
/// length against the buffer.
pub(crate) fn split_messages(mut data: &[u8]) -> Result<Vec<&[u8]>, RtnlError> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        let len_bytes: [u8; 4] = data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| RtnlError::Decode(format!("{} trailing bytes", data.len())))?;
        let len = u32::from_ne_bytes(len_bytes) as usize;
        if len < HEADER_LEN || len > data.len() {
            return Err(RtnlError::Decode(format!(
                "message length {len} with {} bytes left",
                data.len()
            )));
        }
        frames.push(data.get(..len).unwrap_or_default());
        let step = len.saturating_add(3) & !3;
        data = data.get(step..).unwrap_or_default();
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rejects_bad_lengths() {
        assert!(split_messages(&[1, 2]).is_err());
        assert!(split_messages(&[8, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut two = vec![0u8; 40];
        two[..4].copy_from_slice(&18u32.to_ne_bytes());
        two[20..24].copy_from_slice(&20u32.to_ne_bytes());
        let frames = split_messages(&two).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), 18);
        assert_eq!(frames[1].len(), 20);
        two[20..24].copy_from_slice(&21u32.to_ne_bytes());
        assert!(split_messages(&two).is_err());
    }

    #[test]
    fn split_never_panics_on_noise() {
        let mut state = 0x1234_5678_u32;
        for _ in 0..4000 {
            let mut data = vec![0u8; (state % 64) as usize];
            for b in data.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (state >> 24) as u8;
            }
            let _ = split_messages(&data);
        }
    }
}
