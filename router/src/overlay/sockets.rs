//! The data plane's sockets, on `libc`: the AF_PACKET socket on
//! `vethwe-pcap` and the two UDP sockets of the sleeve port, with
//! `recvmmsg`/`sendmmsg` batches.
//!
//! Everything is non-blocking; the data-plane thread polls the
//! descriptors.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::sleeve::offload::{VNET_HDR_LEN, VnetHdr};

// Kernel uapi values (linux/if_packet.h, linux/if_ether.h, linux/in.h),
// spelled out here so the code does not depend on which libc release
// exports them.
const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_STATISTICS: libc::c_int = 6;
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const IP_MTU_DISCOVER: libc::c_int = 10;
const IP_MTU: libc::c_int = 14;
/// `IP_PMTUDISC_DONT`: never set DF; the kernel fragments.
pub const PMTUDISC_DONT: libc::c_int = 0;
/// `IP_PMTUDISC_DO`: always set DF; oversize sends fail with `EMSGSIZE`.
pub const PMTUDISC_DO: libc::c_int = 2;

/// Bytes of `struct tpacket_auxdata` (`tp_status` is its first field).
const AUXDATA_LEN: usize = 20;

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(|_| ())
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = check(unsafe {
        libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto)
    })?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Asks for big socket buffers: first past the limit (needs
/// CAP_NET_ADMIN), else within it.
fn big_buffers(fd: RawFd, bytes: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt(fd, libc::SOL_SOCKET, force, &bytes).is_err() {
            let _ = setsockopt(fd, libc::SOL_SOCKET, plain, &bytes);
        }
    }
}

/// One frame of a capture batch.
#[derive(Debug)]
pub struct Captured<'a> {
    /// The frame, writable so its checksum can be completed.
    pub frame: &'a mut [u8],
    /// The kernel left the transport checksum to offload
    /// (`TP_STATUS_CSUMNOTREADY`): it must be completed before the frame
    /// leaves the host.
    pub csum_not_ready: bool,
    /// The frame was longer than the buffer.
    pub truncated: bool,
    /// We sent it (only seen on kernels without `PACKET_IGNORE_OUTGOING`).
    pub outgoing: bool,
    /// The frame's `virtio_net_hdr`, on a socket with `PACKET_VNET_HDR`
    /// (then `frame` starts after it).
    pub vnet: Option<VnetHdr>,
}

/// Buffers and headers for one `recvmmsg` call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; 16]>,
    lens: Vec<usize>,
    flags: Vec<libc::c_int>,
    ctrl_lens: Vec<usize>,
    filled: usize,
    vnet: bool,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.bufs.len())
            .field("filled", &self.filled)
            .finish()
    }
}

impl RecvBatch {
    /// `slots` buffers of `size` bytes each.
    pub fn new(slots: usize, size: usize) -> Self {
        RecvBatch {
            bufs: (0..slots).map(|_| vec![0u8; size]).collect(),
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            addrs: (0..slots).map(|_| unsafe { zeroed() }).collect(),
            ctrl: vec![[0u64; 16]; slots],
            lens: vec![0; slots],
            flags: vec![0; slots],
            ctrl_lens: vec![0; slots],
            filled: 0,
            vnet: false,
        }
    }

    /// The same for a capture socket with `PACKET_VNET_HDR` (see
    /// [`PacketSocket::has_vnet_hdr`]): each frame is read behind its
    /// `virtio_net_hdr`.
    pub fn with_vnet_hdr(mut self, vnet: bool) -> Self {
        self.vnet = vnet;
        self
    }

    /// How many messages the last call filled.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Reads up to a batch of messages without blocking; returns how many
    /// (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let slots = self.bufs.len();
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(slots);
        for ((iov, addr), ctrl) in iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.ctrl.iter_mut())
        {
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = size_of::<[u64; 16]>() as _;
            msgs.push(m);
        }
        // SAFETY: every pointer in `msgs` refers to buffers owned by self
        // or to `iovs`, all alive for the call; the lengths are theirs.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                slots as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.filled = 0;
            return match e.raw_os_error() {
                // EINVAL on a capture socket: a frame the kernel could not
                // describe in a vnet header (a GSO kind it does not name);
                // it was consumed and dropped.
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                Some(libc::EINVAL) if self.vnet => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.flags[i] = m.msg_hdr.msg_flags;
            self.ctrl_lens[i] = m.msg_hdr.msg_controllen as _;
        }
        self.filled = n;
        Ok(n)
    }

    /// Message `i` of the last call as a captured frame.
    pub fn captured(&mut self, i: usize) -> Option<Captured<'_>> {
        if i >= self.filled {
            return None;
        }
        let len = self.lens[i].min(self.bufs[i].len());
        let truncated = self.flags[i] & libc::MSG_TRUNC != 0;
        let ctrl = ctrl_bytes(&self.ctrl[i]);
        let status = auxdata_status(ctrl.get(..self.ctrl_lens[i]).unwrap_or_default()).unwrap_or(0);
        // SAFETY: the kernel filled a sockaddr_ll for AF_PACKET sockets;
        // sockaddr_storage is larger and suitably aligned.
        let sll: &libc::sockaddr_ll =
            unsafe { &*(&self.addrs[i] as *const libc::sockaddr_storage).cast() };
        let outgoing = sll.sll_pkttype == PACKET_OUTGOING;
        let data = &mut self.bufs[i][..len];
        let (vnet, frame) = if self.vnet {
            let vnet = VnetHdr::parse(data).map(|(h, _)| h);
            (vnet, data.get_mut(VNET_HDR_LEN..).unwrap_or_default())
        } else {
            (None, data)
        };
        Some(Captured {
            frame,
            csum_not_ready: status & TP_STATUS_CSUMNOTREADY != 0,
            truncated,
            outgoing,
            vnet,
        })
    }

    /// Message `i` of the last call as a UDP datagram and its sender.
    pub fn datagram(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8], bool)> {
        if i >= self.filled {
            return None;
        }
        let len = self.lens[i].min(self.bufs[i].len());
        let truncated = self.flags[i] & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel filled a sockaddr_in for AF_INET sockets.
        let sin: &libc::sockaddr_in =
            unsafe { &*(&self.addrs[i] as *const libc::sockaddr_storage).cast() };
        let from = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        ));
        Some((from, &mut self.bufs[i][..len], truncated))
    }

    /// The UDP GRO segment size of message `i` of the last call: with
    /// `UDP_GRO`, one message may hold several datagrams of this many
    /// bytes back to back (the last may be shorter). `None`: one datagram.
    pub fn segment_size(&self, i: usize) -> Option<usize> {
        if i >= self.filled {
            return None;
        }
        let ctrl = ctrl_bytes(&self.ctrl[i]);
        let data = find_cmsg(
            ctrl.get(..self.ctrl_lens[i]).unwrap_or_default(),
            SOL_UDP,
            UDP_GRO,
        )?;
        let size = i32::from_ne_bytes(data.get(..4)?.try_into().ok()?);
        usize::try_from(size).ok().filter(|s| *s > 0)
    }
}

fn ctrl_bytes(ctrl: &[u64; 16]) -> [u8; 128] {
    let mut out = [0u8; 128];
    for (chunk, w) in out.chunks_exact_mut(8).zip(ctrl) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    out
}

/// The data of the first control message of `level`/`ty` in `ctrl`.
fn find_cmsg(ctrl: &[u8], level: libc::c_int, ty: libc::c_int) -> Option<&[u8]> {
    const HDR: usize = size_of::<libc::cmsghdr>();
    let mut rest = ctrl;
    while rest.len() >= HDR {
        let len = usize::from_ne_bytes(rest.get(..8)?.try_into().ok()?);
        let l = i32::from_ne_bytes(rest.get(8..12)?.try_into().ok()?);
        let t = i32::from_ne_bytes(rest.get(12..16)?.try_into().ok()?);
        if len < HDR {
            return None;
        }
        if l == level && t == ty {
            return rest.get(HDR..len);
        }
        let step = len.div_ceil(8) * 8;
        rest = rest.get(step..)?;
    }
    None
}

/// Finds the `PACKET_AUXDATA` message in a control buffer and returns its
/// `tp_status`.
fn auxdata_status(ctrl: &[u8]) -> Option<u32> {
    let data = find_cmsg(ctrl, SOL_PACKET, PACKET_AUXDATA)?;
    if data.len() < AUXDATA_LEN {
        return None;
    }
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// An AF_PACKET socket bound to one interface: captures every frame the
/// interface receives and injects frames as if they arrived from it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: libc::c_int,
    vnet: bool,
}

impl PacketSocket {
    /// Opens and binds the socket on `ifname`, promiscuous, with
    /// `PACKET_AUXDATA`, `PACKET_VNET_HDR` when the kernel has it, and
    /// without our own transmissions.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: name is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = ifindex as libc::c_int;
        // Protocol 0 receives nothing until bound, so no frame of another
        // interface slips in before the bind.
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let raw = fd.as_raw_fd();
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        setsockopt(raw, SOL_PACKET, PACKET_AUXDATA, &1i32)?;
        // Older kernels lack it; outgoing frames are then skipped by type.
        let _ = setsockopt(raw, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32);
        let mreq = PacketMreq {
            mr_ifindex: ifindex,
            mr_type: PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(raw, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)?;
        big_buffers(raw, 8 << 20);
        let vnet = setsockopt(raw, SOL_PACKET, PACKET_VNET_HDR, &1i32).is_ok();
        Ok(PacketSocket { fd, ifindex, vnet })
    }

    /// Frames the kernel dropped for want of room since the last call
    /// (`PACKET_STATISTICS`, which resets on read); 0 if it cannot say.
    pub fn take_drops(&self) -> u64 {
        // struct tpacket_stats { tp_packets, tp_drops }.
        let mut stats = [0u32; 2];
        let mut len = size_of::<[u32; 2]>() as libc::socklen_t;
        // SAFETY: `stats` is writable for `len` bytes and `len` is a valid
        // pointer; the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                stats.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 { u64::from(stats[1]) } else { 0 }
    }

    /// Whether frames are read and written behind a `virtio_net_hdr`.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet
    }

    /// The descriptor, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The interface index.
    pub fn ifindex(&self) -> libc::c_int {
        self.ifindex
    }

    /// Injects frames (`sendmmsg`), each starting with its
    /// `virtio_net_hdr` when the socket has one ([`Self::has_vnet_hdr`]);
    /// returns how many went and the errors of those that did not, by
    /// index.
    pub fn inject<'a>(
        &self,
        frames: impl Iterator<Item = &'a [u8]>,
    ) -> (usize, Vec<(usize, io::Error)>) {
        send_batch(self.raw_fd(), frames.map(|f| (None, f)))
    }
}

/// Sends datagrams or frames with `sendmmsg`, going on past a failed
/// message; returns how many were sent and the failures by index.
fn send_batch<'a>(
    fd: RawFd,
    items: impl Iterator<Item = (Option<SocketAddrV4>, &'a [u8])>,
) -> (usize, Vec<(usize, io::Error)>) {
    let items: Vec<(Option<libc::sockaddr_in>, &[u8])> = items
        .map(|(to, data)| (to.map(sockaddr_in), data))
        .collect();
    let mut iovs: Vec<libc::iovec> = items
        .iter()
        .map(|(_, d)| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(items.len());
    for (i, (to, _)) in items.iter().enumerate() {
        // SAFETY: mmsghdr is plain data; all-zero is valid.
        let mut m: libc::mmsghdr = unsafe { zeroed() };
        if let Some(to) = to {
            m.msg_hdr.msg_name = (to as *const libc::sockaddr_in) as *mut libc::c_void;
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
        msgs.push(m);
    }
    let mut done = 0;
    let mut sent = 0;
    let mut errors = Vec::new();
    while done < msgs.len() {
        let rest = &mut msgs[done..];
        // SAFETY: the headers point into `items` and `iovs`, alive for
        // the call.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n > 0 {
            done += n as usize;
            sent += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if e.raw_os_error() == Some(libc::EAGAIN) {
            // The socket buffer is full: what is left is dropped, as a
            // NIC drops on a full queue.
            errors.extend(
                (done..msgs.len()).map(|i| (i, io::Error::from_raw_os_error(libc::EAGAIN))),
            );
            break;
        }
        // The error belongs to the first unsent message: skip it.
        errors.push((done, e));
        done += 1;
    }
    (sent, errors)
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sin
}

/// A UDP socket on the sleeve port with a fixed DF policy. Two of them
/// share the port (`SO_REUSEPORT`): one never sets DF, one always does.
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
}

impl UdpSocket {
    /// Binds `addr` (the router's `--host` and the sleeve port; the
    /// unspecified address when no `--host` is given) with PMTU discovery
    /// mode `pmtudisc` ([`PMTUDISC_DO`] or [`PMTUDISC_DONT`]).
    ///
    /// `UDP_GRO` is asked for (kernels from 5.0 have it): a run of
    /// equal-sized datagrams that arrives as one GSO packet (a peer's UDP
    /// GSO send across veths and bridges, or the NIC's GRO) is then read
    /// in one go; [`RecvBatch::segment_size`] says how to cut it.
    pub fn bind(addr: SocketAddrV4, pmtudisc: libc::c_int) -> io::Result<Self> {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, &1i32)?;
        setsockopt(raw, libc::IPPROTO_IP, IP_MTU_DISCOVER, &pmtudisc)?;
        let _ = setsockopt(raw, SOL_UDP, UDP_GRO, &1i32);
        big_buffers(raw, 8 << 20);
        let sin = sockaddr_in(addr);
        // SAFETY: sin is a valid sockaddr_in of the size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
        Ok(UdpSocket { fd })
    }

    /// The descriptor, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends datagrams (`sendmmsg`); returns how many went and the errors
    /// of those that did not, by index.
    pub fn send(&self, items: &[(SocketAddrV4, &[u8])]) -> (usize, Vec<(usize, io::Error)>) {
        send_batch(self.raw_fd(), items.iter().map(|(to, d)| (Some(*to), *d)))
    }
}

impl UdpSocket {
    /// Sends `parts` to `to` as one UDP GSO send (`UDP_SEGMENT`): the
    /// kernel cuts the concatenation into datagrams of `segment` bytes
    /// (the last may be shorter) late on its way out. Every part but the
    /// last must be exactly `segment` bytes.
    pub fn send_gso(&self, to: SocketAddrV4, segment: usize, parts: &[&[u8]]) -> io::Result<()> {
        let segment = u16::try_from(segment)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let sin = sockaddr_in(to);
        let mut iovs: Vec<libc::iovec> = parts
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // One cmsghdr (16 bytes) and a u16, padded to 8: 24 bytes.
        let mut ctrl = [0u64; 3];
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&(16usize + 2).to_ne_bytes());
        bytes.extend_from_slice(&SOL_UDP.to_ne_bytes());
        bytes.extend_from_slice(&UDP_SEGMENT.to_ne_bytes());
        bytes.extend_from_slice(&segment.to_ne_bytes());
        bytes.resize(24, 0);
        for (word, chunk) in ctrl.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *word = u64::from_ne_bytes(b);
        }
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&sin as *const libc::sockaddr_in) as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = iovs.as_mut_ptr();
        msg.msg_iovlen = iovs.len() as _;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = 24 as _;
        loop {
            // SAFETY: the header points at `sin`, `iovs` (and through them
            // `parts`) and `ctrl`, all alive for the call.
            let n = unsafe { libc::sendmsg(self.raw_fd(), &msg, 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

/// The kernel's current path MTU towards `to` (what a socket connected
/// there reads as `IP_MTU`; the route cache is shared by all sockets).
pub fn path_mtu(to: SocketAddrV4) -> io::Result<usize> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let raw = fd.as_raw_fd();
    setsockopt(raw, libc::IPPROTO_IP, IP_MTU_DISCOVER, &PMTUDISC_DO)?;
    let sin = sockaddr_in(to);
    // SAFETY: sin is a valid sockaddr_in of the size passed.
    check(unsafe {
        libc::connect(
            raw,
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: mtu and len are valid for writing an int.
    check(unsafe {
        libc::getsockopt(
            raw,
            libc::IPPROTO_IP,
            IP_MTU,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    usize::try_from(mtu).map_err(|_| io::Error::other("negative IP_MTU"))
}

/// `SIOCETHTOOL`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_SFEATURES: u32 = 0x3b;
/// `ETH_SS_FEATURES`: the string set naming netdev features.
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// Runs one ethtool ioctl on `ifname` with the command buffer `buf`
/// (which starts with the command word and is filled in by the kernel).
fn ethtool_ioctl(ifname: &str, buf: &mut [u64]) -> io::Result<()> {
    #[repr(C)]
    struct IfreqData {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq whose data pointer refers to `buf`,
    // sized by the caller for the command's answer and alive for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfreqData) };
    check(rc).map(|_| ())
}

fn u64_words_to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Turns off every netdev feature of `ifname` whose ethtool name (e.g.
/// `tx-udp-segmentation`) `off` picks, through `ETHTOOL_SFEATURES`; the
/// other features stay as they are. Returns the names turned off.
pub fn disable_netdev_features(
    ifname: &str,
    off: impl Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    if cfg!(target_endian = "big") {
        return Err(io::Error::other("big-endian host"));
    }
    // How many feature names there are.
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_FEATURES;
    ethtool_ioctl(ifname, &mut info)?;
    if info[1] & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::other("no feature names"));
    }
    let count = (info[2] & 0xffff_ffff) as usize;
    // The names, 32 bytes each, after a 12-byte header.
    let mut strings = vec![0u64; (12 + count * ETH_GSTRING_LEN).div_ceil(8)];
    strings[0] = u64::from(ETHTOOL_GSTRINGS) | (u64::from(ETH_SS_FEATURES) << 32);
    strings[1] = count as u64;
    ethtool_ioctl(ifname, &mut strings)?;
    let bytes = u64_words_to_bytes(&strings);
    // One {valid, requested} pair of u32 per 32 features; requested 0.
    let blocks = count.div_ceil(32);
    let mut set = vec![0u64; 1 + blocks];
    set[0] = u64::from(ETHTOOL_SFEATURES) | ((blocks as u64) << 32);
    let mut names = Vec::new();
    for i in 0..count {
        let name = bytes
            .get(12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN)
            .unwrap_or_default();
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(name.get(..end).unwrap_or_default());
        if !name.is_empty() && off(&name) {
            if let Some(pair) = set.get_mut(1 + i / 32) {
                *pair |= 1u64 << (i % 32);
            }
            names.push(name.into_owned());
        }
    }
    if names.is_empty() {
        return Ok(names);
    }
    ethtool_ioctl(ifname, &mut set)?;
    Ok(names)
}

/// Whether the capture should leave a segmentation offload of the
/// capture pair's bridge end on: only TCP ones (the capture cuts TCP
/// super-frames itself) and generic GSO, and not AccECN's, whose vnet flag it does not
/// handle. Everything else the kernel must segment before the capture,
/// since a vnet header cannot describe every GSO kind on every kernel
/// (UDP GSO is missing before Linux 6.2, and reading such a frame fails).
pub fn capture_keeps_offload(name: &str) -> bool {
    let segmentation = name.starts_with("tx-")
        && (name.ends_with("-segmentation") || name == "tx-gso-list" || name == "tx-gso-partial");
    !segmentation
        || name == "tx-generic-segmentation"
        || (name.contains("tcp") && !name.contains("accecn"))
}

/// An eventfd that wakes the data-plane thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A fresh, non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2); checked.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fd is fresh and ours.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor, for polling.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the descriptor readable.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        let _ = unsafe { libc::write(self.raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears the readable state.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        let _ = unsafe { libc::read(self.raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes (-1:
/// forever); returns the readable flags in order.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a live array of the length passed.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxdata_is_found_among_control_messages() {
        let mut buf = Vec::new();
        // An unrelated message of 20 bytes (padded to 24), then auxdata.
        buf.extend_from_slice(&20usize.to_ne_bytes());
        buf.extend_from_slice(&1i32.to_ne_bytes());
        buf.extend_from_slice(&2i32.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]);
        let aux_len = 16 + AUXDATA_LEN;
        buf.extend_from_slice(&aux_len.to_ne_bytes());
        buf.extend_from_slice(&SOL_PACKET.to_ne_bytes());
        buf.extend_from_slice(&PACKET_AUXDATA.to_ne_bytes());
        buf.extend_from_slice(&(TP_STATUS_CSUMNOTREADY | 1).to_ne_bytes());
        buf.extend_from_slice(&[0; 20]);
        assert_eq!(auxdata_status(&buf), Some(TP_STATUS_CSUMNOTREADY | 1));
        assert_eq!(auxdata_status(&buf[..30]), None);
        assert_eq!(auxdata_status(&[0xff; 7]), None);
        // A zero length must not loop forever.
        assert_eq!(auxdata_status(&[0; 32]), None);
    }

    #[test]
    fn udp_batches_go_through_loopback() -> io::Result<()> {
        // Port 0 is not shared, so this cannot disturb a running router.
        let a = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), PMTUDISC_DONT)?;
        let b = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), PMTUDISC_DO)?;
        let port = local_port(b.raw_fd())?;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let (sent, errors) = a.send(&[(to, b"one"), (to, b"two"), (to, &[7; 3000])]);
        assert_eq!((sent, errors.len()), (3, 0));
        let mut batch = RecvBatch::new(8, 65536);
        let mut got = Vec::new();
        for _ in 0..100 {
            poll_readable(&[b.raw_fd()], 100)?;
            let n = batch.recv(b.raw_fd())?;
            for i in 0..n {
                let (_, d, trunc) = batch.datagram(i).expect("filled");
                assert!(!trunc);
                got.push(d.to_vec());
            }
            if got.len() == 3 {
                break;
            }
        }
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), vec![7; 3000]]);
        // A datagram the kernel refuses does not stop the rest.
        let huge = vec![0u8; 70000];
        let (sent, errors) = b.send(&[(to, &huge), (to, b"after")]);
        assert_eq!(sent, 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 0);
        assert_eq!(errors[0].1.raw_os_error(), Some(libc::EMSGSIZE));
        // The loopback route caps at the largest IPv4 packet.
        assert!(path_mtu(to)? >= 65535);
        Ok(())
    }

    #[test]
    fn gso_sends_arrive_as_separate_datagrams() -> io::Result<()> {
        let a = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), PMTUDISC_DO)?;
        let b = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), PMTUDISC_DONT)?;
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(b.raw_fd())?);
        let parts: Vec<Vec<u8>> = vec![vec![1; 1000], vec![2; 1000], vec![3; 400]];
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        a.send_gso(to, 1000, &refs)?;
        let mut batch = RecvBatch::new(8, 65536);
        let mut got = Vec::new();
        for _ in 0..100 {
            poll_readable(&[b.raw_fd()], 100)?;
            let n = batch.recv(b.raw_fd())?;
            for i in 0..n {
                // With UDP_GRO the run may come up whole, with its
                // segment size.
                let size = batch.segment_size(i);
                let data = batch.datagram(i).expect("filled").1.to_vec();
                if let Some(size) = size {
                    assert_eq!(size, 1000);
                }
                let size = size.unwrap_or(data.len());
                got.extend(data.chunks(size).map(<[u8]>::to_vec));
            }
            if got.len() >= 3 {
                break;
            }
        }
        assert_eq!(got, parts);
        // A segment size over the socket's limit is refused, not cut.
        assert!(a.send_gso(to, 70000, &refs).is_err());
        Ok(())
    }

    #[test]
    fn capture_keeps_only_tcp_segmentation_offloads() {
        for keep in [
            "tx-tcp-segmentation",
            "tx-tcp6-segmentation",
            "tx-tcp-ecn-segmentation",
            "tx-tcp-mangleid-segmentation",
            "tx-checksum-ip-generic",
            "tx-generic-segmentation",
            "rx-gro",
            "tx-scatter-gather",
        ] {
            assert!(capture_keeps_offload(keep), "{keep}");
        }
        for off in [
            "tx-udp-segmentation",
            "tx-sctp-segmentation",
            "tx-udp_tnl-segmentation",
            "tx-gre-segmentation",
            "tx-gso-list",
            "tx-gso-partial",
            "tx-tcp-accecn-segmentation",
        ] {
            assert!(!capture_keeps_offload(off), "{off}");
        }
    }

    fn local_port(fd: RawFd) -> io::Result<u16> {
        // SAFETY: sockaddr_in is plain data.
        let mut sin: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: sin/len are valid for writing.
        check(unsafe {
            libc::getsockname(fd, (&mut sin as *mut libc::sockaddr_in).cast(), &mut len)
        })?;
        Ok(u16::from_be(sin.sin_port))
    }
}
