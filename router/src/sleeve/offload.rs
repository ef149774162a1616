//! Segmentation and coalescing offloads done in userspace, so the kernel
//! moves a bulk TCP stream between the `weave` bridge and the sleeve as
//! few large frames instead of many MTU-sized ones.
//!
//! With `PACKET_VNET_HDR` an AF_PACKET socket reads and writes each frame
//! behind a `struct virtio_net_hdr` ([`VnetHdr`]), which says whether the
//! frame is a GSO "super-frame" (a TCP segment of up to 64 KiB the kernel
//! would otherwise cut into MTU-sized segments) and whether its transport
//! checksum is still to be computed.
//!
//! - Capture: [`segment_tcp`] cuts a TCP/IPv4 super-frame into segments
//!   of the size the sender's stack chose (`gso_size`), each a complete
//!   frame with its own IP and TCP checksums: exactly what the kernel's
//!   software segmentation would have made, so the sleeve carries
//!   ordinary frames and a Weave peer sees nothing new.
//! - Injection: a [`Coalescer`] gathers the frames of a receive batch and
//!   merges consecutive, contiguous segments of one TCP/IPv4 flow into
//!   one super-frame with a GSO header (what GRO does for a NIC), so the
//!   bridge and the receiving container's stack handle one packet instead
//!   of dozens. Only segments whose TCP checksum verifies are merged: the
//!   merged frame goes up with the checksum marked partial, which the
//!   kernel trusts.
//!
//! Everything here is pure: bytes in, bytes out.

use super::checksum::{IPPROTO_TCP, extend_and_sum, fold, internet_checksum, sum_words};
use super::ethernet::ETHERTYPE_IPV4;
use super::frame::ETHERNET_OVERHEAD;

/// Bytes of `struct virtio_net_hdr` in front of every frame on a socket
/// with `PACKET_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` on is
/// still to be computed and stored at `csum_start + csum_offset`.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on top of the GSO type.
pub const GSO_ECN: u8 = 0x80;

/// Most bytes a merged IPv4 packet may have (its length field is 16 bits).
const MAX_IP_LEN: usize = 65535;
/// Most segments merged into one frame (the kernel's default
/// `gso_max_segs` is far higher; this keeps a merged frame near 64 KiB
/// at Ethernet sizes and bounds the work per frame).
const MAX_MERGED_SEGMENTS: usize = 64;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` as `PACKET_VNET_HDR` reads and writes it
/// (little-endian fields on the hosts this runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type (with the ECN flag).
    pub gso_type: u8,
    /// Bytes of headers (Ethernet, IP, transport) of a GSO frame.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO frame.
    pub gso_size: u16,
    /// Where the checksummed region starts, from the frame's first byte.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Splits a frame read with `PACKET_VNET_HDR` into its header and the
    /// frame; `None` when shorter than the header.
    pub fn parse(data: &[u8]) -> Option<(VnetHdr, &[u8])> {
        let (h, frame) = data.split_first_chunk::<VNET_HDR_LEN>()?;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Some((
            VnetHdr {
                flags: h[0],
                gso_type: h[1],
                hdr_len: u16_at(2),
                gso_size: u16_at(4),
                csum_start: u16_at(6),
                csum_offset: u16_at(8),
            },
            frame,
        ))
    }

    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Whether the frame is a GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Why a super-frame could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Not an Ethernet frame with an IPv4 header and a TCP header.
    #[error("not a TCP/IPv4 frame")]
    NotTcp4,
    /// The headers claim more bytes than the frame has.
    #[error("headers truncated")]
    Truncated,
    /// A segment size of zero.
    #[error("GSO segment size 0")]
    ZeroSize,
}

/// Ethernet type of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// The header layout of a TCP/IPv4 or TCP/IPv6 frame without VLAN tag
/// (and, for IPv6, without extension headers).
#[derive(Debug, Clone, Copy)]
struct TcpFrame {
    /// IPv6 rather than IPv4.
    v6: bool,
    /// IP header bytes.
    ihl: usize,
    /// TCP header bytes.
    thl: usize,
    /// End of the IPv4 packet in the frame.
    end: usize,
}

impl TcpFrame {
    fn l4(&self) -> usize {
        ETHERNET_OVERHEAD + self.ihl
    }
    fn headers(&self) -> usize {
        ETHERNET_OVERHEAD + self.ihl + self.thl
    }
}

fn parse_tcp4(frame: &[u8]) -> Option<TcpFrame> {
    let eth = frame.get(..ETHERNET_OVERHEAD)?;
    let ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    if ether_type == ETHERTYPE_IPV6 {
        return parse_tcp6(frame);
    }
    if ether_type != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_OVERHEAD..ETHERNET_OVERHEAD + 20)?;
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
        return None;
    }
    // Fragments carry no TCP header to work with.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    // A super-frame may have a zero length field; otherwise it bounds
    // the packet (the rest is Ethernet padding).
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let end = if total == 0 {
        frame.len()
    } else {
        (ETHERNET_OVERHEAD + total).min(frame.len())
    };
    let tcp = frame.get(ETHERNET_OVERHEAD + ihl..ETHERNET_OVERHEAD + ihl + 20)?;
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || ETHERNET_OVERHEAD + ihl + thl > end {
        return None;
    }
    Some(TcpFrame {
        v6: false,
        ihl,
        thl,
        end,
    })
}

fn parse_tcp6(frame: &[u8]) -> Option<TcpFrame> {
    let ip = frame.get(ETHERNET_OVERHEAD..ETHERNET_OVERHEAD + 40)?;
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let end = if payload == 0 {
        frame.len()
    } else {
        (ETHERNET_OVERHEAD + 40 + payload).min(frame.len())
    };
    let tcp = frame.get(ETHERNET_OVERHEAD + 40..ETHERNET_OVERHEAD + 60)?;
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || ETHERNET_OVERHEAD + 40 + thl > end {
        return None;
    }
    Some(TcpFrame {
        v6: true,
        ihl: 40,
        thl,
        end,
    })
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(b) = buf.get_mut(at..at + 2) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes the IPv4 header checksum of the frame's IP header.
fn set_ip_checksum(frame: &mut [u8], ihl: usize) {
    put_u16(frame, ETHERNET_OVERHEAD + 10, 0);
    let sum = frame
        .get(ETHERNET_OVERHEAD..ETHERNET_OVERHEAD + ihl)
        .map_or(0, internet_checksum);
    put_u16(frame, ETHERNET_OVERHEAD + 10, sum);
}

/// The running sum of the TCP/IPv4 pseudo header for `tcp_len` bytes.
fn pseudo_sum(frame: &[u8], tcp_len: usize) -> u64 {
    let addrs = frame
        .get(ETHERNET_OVERHEAD + 12..ETHERNET_OVERHEAD + 20)
        .unwrap_or_default();
    sum_words(addrs, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

/// The running sum of the TCP pseudo header of either family.
fn pseudo_sum_of(frame: &[u8], h: &TcpFrame, tcp_len: usize) -> u64 {
    if !h.v6 {
        return pseudo_sum(frame, tcp_len);
    }
    let addrs = frame
        .get(ETHERNET_OVERHEAD + 8..ETHERNET_OVERHEAD + 40)
        .unwrap_or_default();
    sum_words(addrs, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

/// The running sum of a TCP frame's pseudo header (for its whole TCP
/// length) and TCP header: with the payload's sum added, it folds to
/// 0xffff when the checksum verifies.
fn tcp_header_sum(frame: &[u8], h: &TcpFrame) -> u64 {
    let pseudo = pseudo_sum_of(frame, h, h.end - h.l4());
    frame
        .get(h.l4()..h.headers())
        .map_or(pseudo, |t| sum_words(t, pseudo))
}

/// Cuts a TCP/IPv4 or TCP/IPv6 GSO super-frame into segments of at most
/// `mss` payload bytes, as the kernel's software segmentation does: each
/// segment gets the headers with its own IP length, IPv4 ID (counting up
/// from the super-frame's) and header checksum, sequence number, flags
/// (FIN and PSH only on the last, CWR only on the first) and a complete
/// TCP checksum. IPv6 with extension headers is not handled.
/// Each segment is built in `scratch` and handed to `each`; returns how
/// many there were.
pub fn segment_tcp(
    frame: &[u8],
    mss: usize,
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<usize, SegmentError> {
    let mut headers = Vec::new();
    segment_tcp_parts(frame, mss, &mut headers, |head, payload| {
        scratch.clear();
        scratch.extend_from_slice(head);
        scratch.extend_from_slice(payload);
        each(scratch);
    })
}

/// [`segment_tcp`] without copying payload: each segment is handed to
/// `each` as its headers (built in `headers`, checksums done) and its
/// payload (a slice of `frame`), so the caller copies the payload once,
/// to where it goes. The payload is read once here, to sum it.
pub fn segment_tcp_parts(
    frame: &[u8],
    mss: usize,
    headers: &mut Vec<u8>,
    mut each: impl FnMut(&[u8], &[u8]),
) -> Result<usize, SegmentError> {
    if mss == 0 {
        return Err(SegmentError::ZeroSize);
    }
    let h = parse_tcp4(frame).ok_or(SegmentError::NotTcp4)?;
    let head = frame.get(..h.headers()).ok_or(SegmentError::Truncated)?;
    let payload = frame
        .get(h.headers()..h.end)
        .ok_or(SegmentError::Truncated)?;
    let id = get_u16(frame, ETHERNET_OVERHEAD + 4);
    let seq = get_u32(frame, h.l4() + 4);
    let flags_at = h.l4() + 13;
    let flags = frame.get(flags_at).copied().unwrap_or(0);
    let count = payload.len().div_ceil(mss).max(1);
    let mut chunks = payload.chunks(mss);
    for i in 0..count {
        let chunk = chunks.next().unwrap_or_default();
        headers.clear();
        headers.extend_from_slice(head);
        if h.v6 {
            put_u16(headers, ETHERNET_OVERHEAD + 4, (h.thl + chunk.len()) as u16);
        } else {
            let ip_len = h.ihl + h.thl + chunk.len();
            put_u16(headers, ETHERNET_OVERHEAD + 2, ip_len as u16);
            put_u16(headers, ETHERNET_OVERHEAD + 4, id.wrapping_add(i as u16));
            set_ip_checksum(headers, h.ihl);
        }
        let seg_seq = seq.wrapping_add((i * mss) as u32);
        if let Some(b) = headers.get_mut(h.l4() + 4..h.l4() + 8) {
            b.copy_from_slice(&seg_seq.to_be_bytes());
        }
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        if let Some(b) = headers.get_mut(flags_at) {
            *b = f;
        }
        put_u16(headers, h.l4() + 16, 0);
        // The TCP header and the payload are summed apart: the payload
        // starts at an even offset of the TCP segment, so the sums add.
        let tcp_len = h.thl + chunk.len();
        let pseudo = pseudo_sum_of(headers, &h, tcp_len) + sum_words(chunk, 0);
        let sum = headers
            .get(h.l4()..)
            .map_or(pseudo, |t| sum_words(t, pseudo));
        put_u16(headers, h.l4() + 16, !fold(sum));
        each(headers, chunk);
    }
    Ok(count)
}

/// The flow a merged frame can still grow with.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Where the frame (its vnet header first) starts in the buffer.
    start: usize,
    /// Its header layout.
    h: TcpFrame,
    /// Payload bytes of each segment; every merged segment but the last
    /// has exactly this many.
    mss: usize,
    /// The sequence number the next segment must carry.
    next_seq: u32,
    /// Segments merged so far.
    segments: usize,
}

/// Frames waiting to be injected, each behind a [`VnetHdr`], with
/// contiguous segments of one TCP/IPv4 flow merged into GSO frames.
///
/// Frames keep their order; a segment is merged only into the frame just
/// before it, when it continues that frame's flow: same Ethernet and IP
/// addresses, ports, TOS, TTL, acknowledgement, window and options, the
/// next sequence number, ACK (and maybe PSH) as its only flags, and a
/// payload no larger than the first segment's while all before it had
/// exactly that size.
#[derive(Debug, Default)]
pub struct Coalescer {
    buf: Vec<u8>,
    starts: Vec<usize>,
    open: Option<Open>,
    merged: usize,
    no_merge: bool,
}

impl Coalescer {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue that never merges (for a socket without
    /// `PACKET_VNET_HDR`, which cannot take GSO frames): frames still get
    /// a (zero) vnet header, for the caller to skip.
    pub fn without_merging() -> Self {
        Coalescer {
            no_merge: true,
            ..Self::default()
        }
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Frames queued (merged frames count once).
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Segments merged into an earlier frame since the queue was last
    /// cleared.
    pub fn merged(&self) -> usize {
        self.merged
    }

    /// Empties the queue, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
        self.open = None;
        self.merged = 0;
    }

    /// The queued frames in order, each with its vnet header first.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain(std::iter::once(self.buf.len()));
        self.starts
            .iter()
            .zip(ends)
            .filter_map(|(s, e)| self.buf.get(*s..e))
    }

    /// Queues a frame, merging it into the frame before when it continues
    /// that frame's TCP flow.
    pub fn push(&mut self, frame: &[u8]) {
        if let Some(open) = self.open
            && self.try_merge(open, frame)
        {
            return;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&VnetHdr::default().to_bytes());
        self.starts.push(start);
        self.open = None;
        let head = if self.no_merge {
            None
        } else {
            Self::mergeable_head(frame)
        };
        let Some((h, mss, next_seq)) = head else {
            self.buf.extend_from_slice(frame);
            return;
        };
        // Headers, then the payload summed as it is copied: its TCP
        // checksum must verify for the frame to start a merge. Ethernet
        // padding after the packet is left out, so payload can be
        // appended right after the packet.
        let (Some(headers), Some(payload)) =
            (frame.get(..h.headers()), frame.get(h.headers()..h.end))
        else {
            self.buf.extend_from_slice(frame);
            return;
        };
        self.buf.extend_from_slice(headers);
        let sum = extend_and_sum(&mut self.buf, payload, tcp_header_sum(frame, &h));
        if fold(sum) == 0xffff {
            self.open = Some(Open {
                start,
                h,
                mss,
                next_seq,
                segments: 1,
            });
        }
    }

    /// A frame that can start a merge: plain TCP/IPv4 with data and ACK
    /// as its only flag (its checksum is checked as it is copied).
    fn mergeable_head(frame: &[u8]) -> Option<(TcpFrame, usize, u32)> {
        let h = parse_tcp4(frame).filter(|h| !h.v6)?;
        let flags = *frame.get(h.l4() + 13)?;
        if flags != TCP_ACK {
            return None;
        }
        let mss = h.end - h.headers();
        if mss == 0 {
            return None;
        }
        let seq = get_u32(frame, h.l4() + 4);
        Some((h, mss, seq.wrapping_add(mss as u32)))
    }

    fn try_merge(&mut self, mut open: Open, seg: &[u8]) -> bool {
        let Some(h) = parse_tcp4(seg).filter(|h| !h.v6) else {
            self.open = None;
            return false;
        };
        let payload_len = h.end - h.headers();
        let head_at = open.start + VNET_HDR_LEN;
        let Some(head) = self.buf.get(head_at..head_at + open.h.headers()) else {
            return false;
        };
        let Some(seg_headers) = seg.get(..h.headers()) else {
            return false;
        };
        let flags = seg_headers.get(h.l4() + 13).copied().unwrap_or(0);
        let total = open.h.end - ETHERNET_OVERHEAD + payload_len;
        let ok = h.ihl == open.h.ihl
            && h.thl == open.h.thl
            && payload_len > 0
            && payload_len <= open.mss
            && flags & !(TCP_ACK | TCP_PSH) == 0
            && flags & TCP_ACK != 0
            && get_u32(seg, h.l4() + 4) == open.next_seq
            && total <= MAX_IP_LEN
            && open.segments < MAX_MERGED_SEGMENTS
            && same_flow(head, seg_headers, &h);
        let payload = seg.get(h.headers()..h.end);
        let (true, Some(payload)) = (ok, payload) else {
            self.open = None;
            return false;
        };
        // The payload is appended and summed in one pass; a segment whose
        // TCP checksum does not verify is taken back out and queued on
        // its own, as it came.
        let end = self.buf.len();
        let sum = extend_and_sum(&mut self.buf, payload, tcp_header_sum(seg, &h));
        if fold(sum) != 0xffff {
            self.buf.truncate(end);
            self.open = None;
            return false;
        }
        open.segments += 1;
        open.h.end += payload_len;
        open.next_seq = open.next_seq.wrapping_add(payload_len as u32);
        self.merged += 1;
        self.rewrite_head(&open, flags & TCP_PSH != 0);
        // A short segment or a push ends the run.
        self.open = (payload_len == open.mss && flags & TCP_PSH == 0).then_some(open);
        true
    }

    /// Makes the merged frame's headers describe it whole: IP length and
    /// checksum, PSH, the TCP checksum left partial (pseudo header only)
    /// and a TCPv4 GSO vnet header.
    fn rewrite_head(&mut self, open: &Open, push: bool) {
        let h = open.h;
        let Some(frame) = self.buf.get_mut(open.start + VNET_HDR_LEN..) else {
            return;
        };
        let ip_len = h.end - ETHERNET_OVERHEAD;
        put_u16(frame, ETHERNET_OVERHEAD + 2, ip_len as u16);
        set_ip_checksum(frame, h.ihl);
        if push && let Some(f) = frame.get_mut(h.l4() + 13) {
            *f |= TCP_PSH;
        }
        let tcp_len = h.end - h.l4();
        let partial = fold(pseudo_sum(frame, tcp_len));
        put_u16(frame, h.l4() + 16, partial);
        let vnet = VnetHdr {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: h.headers() as u16,
            gso_size: open.mss as u16,
            csum_start: h.l4() as u16,
            csum_offset: 16,
        };
        if let Some(b) = self.buf.get_mut(open.start..open.start + VNET_HDR_LEN) {
            b.copy_from_slice(&vnet.to_bytes());
        }
    }
}

/// Whether `seg`'s headers continue the flow of the frame whose headers
/// are `head`: everything equal but the IP length, ID and checksum, the
/// sequence number, the flags and the TCP checksum.
fn same_flow(head: &[u8], seg: &[u8], h: &TcpFrame) -> bool {
    let ip = ETHERNET_OVERHEAD;
    let l4 = h.l4();
    let ranges = [
        // Ethernet header; version/IHL and TOS.
        0..ip + 2,
        // Flags/fragment, TTL, protocol.
        ip + 6..ip + 10,
        // Addresses and IP options.
        ip + 12..l4,
        // Ports.
        l4..l4 + 4,
        // Acknowledgement number and data offset.
        l4 + 8..l4 + 13,
        // Window.
        l4 + 14..l4 + 16,
        // Urgent pointer and options.
        l4 + 18..h.headers(),
    ];
    ranges
        .into_iter()
        .all(|r| head.get(r.clone()).is_some_and(|a| seg.get(r) == Some(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sleeve::checksum::l4_checksum_ok;

    /// A TCP/IPv4 frame with a timestamp option and a correct checksum.
    fn tcp_frame(seq: u32, id: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let ip_len = 20 + 32 + payload.len();
        f.extend_from_slice(&[0x45, 0, 0, 0]);
        put_u16(&mut f, 16, ip_len as u16);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 10, 32, 0, 1, 10, 32, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
        f.extend_from_slice(payload);
        set_ip_checksum(&mut f, 20);
        let h = parse_tcp4(&f).expect("tcp");
        let sum = sum_words(&f[h.l4()..], pseudo_sum(&f, h.end - h.l4()));
        put_u16(&mut f, h.l4() + 16, !fold(sum));
        f
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1324,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(&[9, 9]);
        let (back, rest) = VnetHdr::parse(&bytes).expect("long enough");
        assert_eq!(back, h);
        assert_eq!(rest, &[9, 9]);
        assert!(back.is_gso());
        assert_eq!(bytes[4..6], 1324u16.to_le_bytes());
        assert!(VnetHdr::parse(&[0; 9]).is_none());
    }

    #[test]
    fn segmenting_then_coalescing_gives_back_the_stream() {
        let data = payload(10_000, 3);
        // A super-frame as the kernel hands it: PSH set, checksum partial.
        let mut big = tcp_frame(1000, 50, TCP_ACK | TCP_PSH, &data);
        put_u16(&mut big, 16, 0);
        let mut segs = Vec::new();
        let mut scratch = Vec::new();
        let n = segment_tcp(&big, 1324, &mut scratch, |s| segs.push(s.to_vec())).expect("ok");
        assert_eq!(n, 8);
        assert_eq!(segs.len(), 8);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(l4_checksum_ok(s), Ok(true), "segment {i}");
            assert_eq!(internet_checksum(&s[14..34]), 0, "IP checksum {i}");
            let h = parse_tcp4(s).expect("tcp");
            assert_eq!(get_u16(s, 18), 50 + i as u16);
            assert_eq!(get_u32(s, h.l4() + 4), 1000 + (i * 1324) as u32);
            let psh = s[h.l4() + 13] & TCP_PSH != 0;
            assert_eq!(psh, i == 7);
            joined.extend_from_slice(&s[h.headers()..]);
        }
        assert_eq!(joined, data);

        let mut c = Coalescer::new();
        for s in &segs {
            c.push(s);
        }
        assert_eq!(c.len(), 1);
        assert_eq!(c.merged(), 7);
        let merged = c.frames().next().expect("one frame").to_vec();
        let (vnet, frame) = VnetHdr::parse(&merged).expect("header");
        assert_eq!(vnet.gso_type, GSO_TCPV4);
        assert_eq!(vnet.gso_size, 1324);
        assert_eq!(vnet.flags, VNET_F_NEEDS_CSUM);
        assert_eq!(usize::from(vnet.hdr_len), 14 + 20 + 32);
        assert_eq!(usize::from(vnet.csum_start), 34);
        let h = parse_tcp4(frame).expect("tcp");
        assert_eq!(&frame[h.headers()..], &data[..]);
        assert_eq!(usize::from(get_u16(frame, 16)), 20 + 32 + data.len());
        assert_eq!(internet_checksum(&frame[14..34]), 0);
        assert_ne!(frame[h.l4() + 13] & TCP_PSH, 0, "PSH of the last segment");
        // Completing the partial checksum gives a valid segment.
        let mut done = frame.to_vec();
        crate::sleeve::checksum::complete_partial(&mut done, 34, 16).expect("complete");
        assert_eq!(l4_checksum_ok(&done), Ok(true));
    }

    #[test]
    fn only_contiguous_segments_of_one_flow_merge() {
        let p = payload(1000, 1);
        let a = tcp_frame(0, 1, TCP_ACK, &p);
        let gap = tcp_frame(2000, 2, TCP_ACK, &p);
        let mut other_port = tcp_frame(1000, 2, TCP_ACK, &p);
        other_port[34] ^= 1;
        let mut bad_sum = tcp_frame(1000, 2, TCP_ACK, &p);
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 0xff;
        let fin = tcp_frame(1000, 2, TCP_ACK | TCP_FIN, &p);
        let bigger = tcp_frame(1000, 2, TCP_ACK, &payload(1001, 1));
        for (name, second) in [
            ("gap", &gap),
            ("other port", &other_port),
            ("bad checksum", &bad_sum),
            ("fin", &fin),
            ("bigger", &bigger),
        ] {
            let mut c = Coalescer::new();
            c.push(&a);
            c.push(second);
            assert_eq!(c.len(), 2, "{name}");
            let frames: Vec<&[u8]> = c.frames().collect();
            assert_eq!(&frames[0][VNET_HDR_LEN..], &a[..], "{name}");
            assert_eq!(&frames[1][VNET_HDR_LEN..], &second[..], "{name}");
            assert_eq!(&frames[1][..VNET_HDR_LEN], &[0; VNET_HDR_LEN], "{name}");
        }
        // A first segment whose checksum fails starts no merge.
        let mut bad_head = a.clone();
        let last = bad_head.len() - 1;
        bad_head[last] ^= 0x5a;
        let next = tcp_frame(1000, 2, TCP_ACK, &p);
        let mut c = Coalescer::new();
        c.push(&bad_head);
        c.push(&next);
        assert_eq!((c.len(), c.merged()), (2, 0));
        let frames: Vec<&[u8]> = c.frames().collect();
        assert_eq!(&frames[0][VNET_HDR_LEN..], &bad_head[..]);
        assert_eq!(&frames[1][VNET_HDR_LEN..], &next[..]);
        // A short segment is merged but ends the run.
        let mut c = Coalescer::new();
        c.push(&a);
        c.push(&tcp_frame(1000, 2, TCP_ACK, &payload(10, 1)));
        c.push(&tcp_frame(1010, 3, TCP_ACK, &payload(10, 1)));
        assert_eq!((c.len(), c.merged()), (2, 1));
        // Non-TCP frames pass untouched, and the queue empties.
        c.push(&[1, 2, 3]);
        assert_eq!(
            c.frames().last(),
            Some(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3][..])
        );
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.frames().count(), 0);
    }

    #[test]
    fn merging_stops_below_the_ip_length_limit() {
        let p = payload(1400, 2);
        let mut c = Coalescer::new();
        for i in 0..60u32 {
            c.push(&tcp_frame(i * 1400, i as u16, TCP_ACK, &p));
        }
        let sizes: Vec<usize> = c.frames().map(|f| f.len()).collect();
        assert_eq!(sizes.len(), 2);
        assert!(sizes.iter().all(|s| *s - VNET_HDR_LEN - 14 <= MAX_IP_LEN));
    }

    #[test]
    fn ipv6_super_frames_are_cut_with_valid_checksums() {
        let data = payload(3000, 9);
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&[0xfd; 16]);
        f.extend_from_slice(&[0xfe; 16]);
        f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 7]);
        f.extend_from_slice(&[0x50, TCP_ACK | TCP_PSH, 1, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&data);
        let mut scratch = Vec::new();
        let mut joined = Vec::new();
        let n = segment_tcp(&f, 1200, &mut scratch, |s| {
            let h = parse_tcp4(s).expect("tcp6");
            assert!(h.v6);
            assert_eq!(usize::from(get_u16(s, 18)), s.len() - 54);
            let payload = &s[h.headers()..h.end];
            assert_eq!(fold(sum_words(payload, tcp_header_sum(s, &h))), 0xffff);
            joined.extend_from_slice(&s[h.headers()..]);
        })
        .expect("cut");
        assert_eq!(n, 3);
        assert_eq!(joined, data);
        // IPv6 is never merged.
        let mut c = Coalescer::new();
        c.push(&f);
        c.push(&f);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn segmenting_rejects_what_it_cannot_cut() {
        let mut scratch = Vec::new();
        assert_eq!(
            segment_tcp(&[0; 20], 1000, &mut scratch, |_| {}),
            Err(SegmentError::NotTcp4)
        );
        let f = tcp_frame(0, 0, TCP_ACK, &payload(100, 0));
        assert_eq!(
            segment_tcp(&f, 0, &mut scratch, |_| {}),
            Err(SegmentError::ZeroSize)
        );
        // No payload: one segment, the headers.
        let bare = tcp_frame(0, 0, TCP_ACK, &[]);
        assert_eq!(segment_tcp(&bare, 1000, &mut scratch, |_| {}), Ok(1));
    }

    /// Fuzz body: arbitrary frames never panic either function.
    #[test]
    fn arbitrary_bytes_do_not_panic() {
        let mut x: u64 = 0x1234_5678;
        let mut scratch = Vec::new();
        let base = tcp_frame(5, 5, TCP_ACK, &payload(300, 5));
        let mut c = Coalescer::new();
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut f = base.clone();
            let flips = (x % 4) as usize;
            for k in 0..flips {
                let at = ((x >> (8 * k)) as usize) % f.len();
                f[at] = (x >> (3 * k)) as u8;
            }
            f.truncate(((x >> 40) as usize) % (f.len() + 1));
            let _ = segment_tcp(&f, ((x >> 20) % 2000) as usize, &mut scratch, |_| {});
            c.push(&f);
            if c.len() > 100 {
                c.clear();
            }
        }
    }
}
