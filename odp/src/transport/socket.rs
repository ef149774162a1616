//! A `NETLINK_GENERIC` socket with a reusable receive buffer.

use std::io;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, SocketAddr};

use super::error::Error;

/// The netlink protocol number of generic netlink.
pub const NETLINK_GENERIC: isize = 16;
/// Receive buffer size: large enough for a 64 KiB GSO packet upcall with its
/// key, and for any dump datagram.
pub const RECV_BUF: usize = 256 * 1024;
/// Socket receive queue size asked for (`SO_RCVBUFFORCE` when allowed).
pub const RCVBUF_BYTES: usize = 8 * 1024 * 1024;

/// A bound generic-netlink socket.
pub struct GenlSocket {
    sock: Socket,
    pid: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for GenlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenlSocket")
            .field("pid", &self.pid)
            .finish()
    }
}

impl AsRawFd for GenlSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

fn set_rcvbuf(sock: &Socket, bytes: usize) {
    let v: libc::c_int = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid,
    // live `c_int` on our stack; the fd is owned by `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Not privileged: the plain option is capped by net.core.rmem_max.
        let _ = sock.set_rx_buf_sz(v);
    }
}

impl GenlSocket {
    /// Opens and binds a socket; the kernel picks the port id. Extended acks
    /// are turned on, and error replies do not echo the request back.
    pub fn open() -> Result<Self, Error> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        let addr = sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Older kernels lack these options; both are optional niceties.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        set_rcvbuf(&sock, RCVBUF_BYTES);
        let mut pid = addr.port_number();
        if pid == 0 {
            let mut a = SocketAddr::new(0, 0);
            sock.get_address(&mut a)?;
            pid = a.port_number();
        }
        Ok(GenlSocket {
            sock,
            pid,
            buf: vec![0; RECV_BUF],
        })
    }

    /// The socket's netlink port id (what the kernel calls its PID).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sets the receive queue size with plain `SO_RCVBUF` (the kernel doubles
    /// it and caps it at `net.core.rmem_max`).
    pub fn set_recv_queue(&self, bytes: usize) -> Result<(), Error> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        Ok(self.sock.set_rx_buf_sz(v)?)
    }

    /// Joins a multicast group.
    pub fn add_membership(&self, group: u32) -> Result<(), Error> {
        Ok(self.sock.add_membership(group)?)
    }

    /// Switches between blocking and non-blocking receives.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Error> {
        Ok(self.sock.set_non_blocking(nonblocking)?)
    }

    /// The underlying file descriptor (for polling).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }

    /// Sends one datagram holding one or more messages.
    pub fn send(&self, data: &[u8]) -> Result<(), Error> {
        loop {
            match self.sock.send(data, 0) {
                Ok(n) if n == data.len() => return Ok(()),
                Ok(_) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short netlink send",
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Receives one datagram. `ENOBUFS` (messages were dropped because the
    /// receive queue was full) becomes [`Error::Overrun`]; a would-block on a
    /// non-blocking socket is an `Io` error of kind `WouldBlock`.
    pub fn recv(&mut self) -> Result<&[u8], Error> {
        loop {
            let mut slice: &mut [u8] = &mut self.buf[..];
            match self.sock.recv(&mut slice, libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => return Err(Error::Truncated(n)),
                Ok(n) => return Ok(self.buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Err(Error::Overrun),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}
