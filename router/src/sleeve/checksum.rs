//! Internet checksums, and completing the TCP/UDP checksum of frames
//! captured with the checksum left for offload.
//!
//! A frame that a container's veth hands to the bridge may be
//! `CHECKSUM_PARTIAL`: the TCP or UDP checksum field holds only the folded
//! pseudo-header sum, and the rest was to be done by the NIC. A userspace
//! capture (AF_PACKET) sees such frames as they are; the socket flags them
//! with `TP_STATUS_CSUMNOTREADY` in `PACKET_AUXDATA`, and with
//! `PACKET_VNET_HDR` also says where the sum starts (`csum_start`,
//! counted from the first byte of the frame) and where the result goes
//! (`csum_offset`, counted from `csum_start`). Forwarded unchanged they
//! arrive with bad checksums and are dropped, so the router completes them
//! before encapsulation: [`complete_partial`] when the offsets are known,
//! [`recompute_l4`] otherwise.

use super::ethernet::{Ipv4Info, decode};
use super::frame::ETHERNET_OVERHEAD;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;

/// Adds `data` as big-endian 16-bit words to a running ones'-complement
/// sum (an odd last byte is padded with zero).
///
/// Only the folded value is meaningful. The bulk of `data` is summed as
/// native-endian 64-bit words, each split into its 32-bit halves added
/// into a 64-bit accumulator (no carries to track, and a loop the compiler
/// turns into vector adds); the ones'-complement sum does not depend on
/// the byte order it is computed in, up to a byte swap of the folded
/// result (RFC 1071, section 2(B)), and 2^16 ≡ 1 modulo 0xffff makes wider
/// words fold to the same 16-bit sum. The last few bytes are added as
/// big-endian words.
pub fn sum_words(data: &[u8], sum: u64) -> u64 {
    let bulk_len = data.len() & !7;
    let (bulk, rest) = data.split_at(bulk_len);
    let mut acc = 0u64;
    for block in bulk.chunks(BLOCK) {
        acc = u64::from(fold(acc)) + sum_native_words(block);
    }
    sum_tail(rest, sum + u64::from(native_to_be(fold(acc))))
}

/// Bytes summed before the accumulator is folded: 2^16 words of 8 bytes
/// add less than 2^49, far from overflowing a u64.
const BLOCK: usize = 8 << 16;

/// The sum of the 32-bit halves of `data`'s native-endian 64-bit words
/// (`data.len()` a multiple of 8 and at most [`BLOCK`]).
#[inline]
fn sum_native_words(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    for w in data.chunks_exact(8) {
        if let Ok(b) = <[u8; 8]>::try_from(w) {
            let w = u64::from_ne_bytes(b);
            acc += (w & 0xffff_ffff) + (w >> 32);
        }
    }
    acc
}

/// A 16-bit sum of native-endian words as the sum of the same bytes
/// taken as big-endian words.
#[inline]
fn native_to_be(folded: u16) -> u16 {
    if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    }
}

/// Adds up to a few bytes as big-endian 16-bit words.
fn sum_tail(data: &[u8], mut sum: u64) -> u64 {
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Copies `src` into `dst` and adds the bytes copied to the running sum
/// `sum` as [`sum_words`] would, a cache-sized chunk at a time, so the
/// bytes come from memory once (the aim of the kernel's
/// `csum_partial_copy`). Copies `min(dst.len(), src.len())` bytes; only
/// those are summed.
pub fn copy_and_sum(dst: &mut [u8], src: &[u8], sum: u64) -> u64 {
    let len = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..len], &src[..len]);
    // Each chunk is summed right after it is copied, while it is still in
    // the first-level cache. Chunks start at even offsets, so their sums
    // add up to the sum of the whole.
    let mut sum = sum;
    for (d, s) in dst.chunks_mut(COPY_CHUNK).zip(src.chunks(COPY_CHUNK)) {
        d.copy_from_slice(s);
        sum = sum_words(s, sum);
    }
    sum
}

/// Bytes copied, then summed, at a time by [`copy_and_sum`] (even, and
/// small enough to stay in the first-level cache).
const COPY_CHUNK: usize = 4096;

/// Appends `src` to `buf` and adds it to the running sum `sum`, in one
/// pass ([`copy_and_sum`]).
pub fn extend_and_sum(buf: &mut Vec<u8>, src: &[u8], sum: u64) -> u64 {
    let start = buf.len();
    buf.resize(start + src.len(), 0);
    let dst = buf.get_mut(start..).unwrap_or_default();
    copy_and_sum(dst, src, sum)
}

/// Folds a running sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// Why a frame's transport checksum could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// Not an Ethernet frame carrying a well-formed IPv4 packet.
    #[error("not an IPv4 frame")]
    NotIpv4,
    /// The IPv4 packet is longer than the captured bytes.
    #[error("IPv4 packet truncated")]
    Truncated,
    /// Fragments carry no complete transport header to sum.
    #[error("IPv4 fragment")]
    Fragment,
    /// Only TCP and UDP are handled.
    #[error("IP protocol {0} is neither TCP nor UDP")]
    Protocol(u8),
    /// The transport header is shorter than its checksum field needs.
    #[error("transport header too short")]
    ShortHeader,
    /// `csum_start`/`csum_offset` point outside the packet.
    #[error("checksum offsets {start}+{offset} outside a packet of {len} bytes")]
    BadOffsets {
        /// Start of the summed region, from the frame start.
        start: usize,
        /// Position of the checksum field, from `start`.
        offset: usize,
        /// Bytes of frame the packet occupies.
        len: usize,
    },
}

fn ipv4_of(frame: &[u8]) -> Result<(Ipv4Info, usize), ChecksumError> {
    let decoded = decode(frame).ok_or(ChecksumError::NotIpv4)?;
    let ip = decoded.ipv4.ok_or(ChecksumError::NotIpv4)?;
    let end = ETHERNET_OVERHEAD + usize::from(ip.total_len);
    if end > frame.len() {
        return Err(ChecksumError::Truncated);
    }
    Ok((ip, end))
}

/// Completes a `CHECKSUM_PARTIAL` checksum: sums the frame from
/// `csum_start` to the end of the IPv4 packet (the field already holds the
/// pseudo-header sum) and stores the complement at
/// `csum_start + csum_offset`, writing 0xffff for a zero result as the
/// kernel does.
pub fn complete_partial(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), ChecksumError> {
    let (_, end) = ipv4_of(frame)?;
    let bad = ChecksumError::BadOffsets {
        start: csum_start,
        offset: csum_offset,
        len: end,
    };
    let field = csum_start.checked_add(csum_offset).ok_or(bad)?;
    if csum_start < ETHERNET_OVERHEAD || field.checked_add(2).is_none_or(|e| e > end) {
        return Err(bad);
    }
    let region = frame.get(csum_start..end).ok_or(bad)?;
    let mut sum = !fold(sum_words(region, 0));
    if sum == 0 {
        sum = 0xffff;
    }
    frame
        .get_mut(field..field + 2)
        .ok_or(bad)?
        .copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Which transport checksum [`recompute_l4`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Checksum {
    /// The IP protocol (TCP or UDP).
    pub protocol: u8,
    /// The value written.
    pub checksum: u16,
}

/// Recomputes the TCP or UDP checksum of an IPv4 frame from scratch
/// (pseudo header plus segment), whatever the field held.
pub fn recompute_l4(frame: &mut [u8]) -> Result<L4Checksum, ChecksumError> {
    let (ip, end) = ipv4_of(frame)?;
    if ip.more_fragments() || ip.frag_offset != 0 {
        return Err(ChecksumError::Fragment);
    }
    let field_at = match ip.protocol {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        other => return Err(ChecksumError::Protocol(other)),
    };
    let l4_start = ETHERNET_OVERHEAD + ip.header_len;
    let l4_len = end - l4_start;
    if l4_len < field_at + 2 {
        return Err(ChecksumError::ShortHeader);
    }
    let field = l4_start + field_at;
    let segment = frame
        .get_mut(l4_start..end)
        .ok_or(ChecksumError::Truncated)?;
    if let Some(f) = segment.get_mut(field_at..field_at + 2) {
        f.copy_from_slice(&[0, 0]);
    }
    let mut sum = sum_words(&ip.src, 0);
    sum = sum_words(&ip.dst, sum);
    sum += u64::from(ip.protocol);
    sum += l4_len as u64;
    sum = sum_words(segment, sum);
    let mut checksum = !fold(sum);
    if checksum == 0 && ip.protocol == IPPROTO_UDP {
        checksum = 0xffff;
    }
    if let Some(f) = frame.get_mut(field..field + 2) {
        f.copy_from_slice(&checksum.to_be_bytes());
    }
    Ok(L4Checksum {
        protocol: ip.protocol,
        checksum,
    })
}

/// Where `PACKET_VNET_HDR` said the partial checksum lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialHint {
    /// Start of the summed region, from the first byte of the frame.
    pub csum_start: u16,
    /// Position of the checksum field, from `csum_start`.
    pub csum_offset: u16,
}

/// Completes the checksum of a frame the capture flagged as not ready:
/// with offsets, the partial sum is finished; without, the transport
/// checksum is recomputed. Frames that are not IPv4 TCP/UDP come back as
/// an error and should be forwarded untouched.
pub fn complete_checksum(frame: &mut [u8], hint: Option<PartialHint>) -> Result<(), ChecksumError> {
    match hint {
        Some(h) => complete_partial(frame, usize::from(h.csum_start), usize::from(h.csum_offset)),
        None => recompute_l4(frame).map(|_| ()),
    }
}

/// Whether an IPv4 frame's TCP/UDP checksum verifies (a UDP checksum of 0
/// means "none" and verifies).
pub fn l4_checksum_ok(frame: &[u8]) -> Result<bool, ChecksumError> {
    let (ip, end) = ipv4_of(frame)?;
    let l4_start = ETHERNET_OVERHEAD + ip.header_len;
    let segment = frame.get(l4_start..end).ok_or(ChecksumError::Truncated)?;
    if ip.protocol == IPPROTO_UDP && segment.get(6..8) == Some(&[0, 0]) {
        return Ok(true);
    }
    let mut sum = sum_words(&ip.src, 0);
    sum = sum_words(&ip.dst, sum);
    sum += u64::from(ip.protocol);
    sum += segment.len() as u64;
    sum = sum_words(segment, sum);
    Ok(fold(sum) == 0xffff)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP/TCP frame with a correct IP checksum and a
    /// zero transport checksum.
    pub(crate) fn l4_frame(protocol: u8, payload: &[u8], df: bool) -> Vec<u8> {
        let l4_header = if protocol == IPPROTO_TCP { 20 } else { 8 };
        let total = 20 + l4_header + payload.len();
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let flags: u8 = if df { 0x40 } else { 0 };
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            flags,
            0,
            64,
            protocol,
            0,
            0,
            10,
            32,
            0,
            1,
            10,
            32,
            0,
            2,
        ];
        let c = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut l4 = vec![0u8; l4_header];
        l4[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        if protocol == IPPROTO_UDP {
            l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        } else {
            l4[12] = 0x50;
        }
        f.extend_from_slice(&l4);
        f.extend_from_slice(payload);
        f
    }

    /// Puts the pseudo-header sum in the field, as a sender with checksum
    /// offload leaves it.
    fn make_partial(f: &mut [u8], protocol: u8) -> (usize, usize) {
        let l4_len = f.len() - 34;
        let mut sum = sum_words(&f[26..34], 0);
        sum += u64::from(protocol);
        sum += l4_len as u64;
        let field = if protocol == IPPROTO_TCP { 16 } else { 6 };
        f[34 + field..36 + field].copy_from_slice(&fold(sum).to_be_bytes());
        (34, field)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3's worked example words sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&data, 0)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
        assert_eq!(fold(sum_words(&[0xff], 0)), 0xff00);
    }

    /// The plain definition: big-endian 16-bit words, an odd byte padded.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut sum = 0u64;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            sum += hi | lo;
        }
        fold(sum)
    }

    /// Property: every length and alignment, with a running sum passed in,
    /// the wide sum and the fused copy agree with the plain definition.
    #[test]
    fn wide_sum_and_fused_copy_match_the_definition() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let all_ff = vec![0xffu8; 70_000];
        for round in 0..3000 {
            let len = match round % 4 {
                0 => (next() % 40) as usize,
                1 => (next() % 2000) as usize,
                _ => (next() % 70_000) as usize,
            };
            let data: Vec<u8> = if round % 7 == 0 {
                all_ff[..len].to_vec()
            } else {
                (0..len).map(|_| next() as u8).collect()
            };
            let off = (next() % 8) as usize;
            let slice = &data[off.min(len)..];
            let seed = next() % 0x1_0000_0000;
            let want = fold(u64::from(reference_sum(slice)) + seed);
            assert_eq!(fold(sum_words(slice, seed)), want, "len {len} off {off}");
            let mut dst = vec![0u8; slice.len() + 3];
            let got = copy_and_sum(&mut dst[1..], slice, seed);
            assert_eq!(fold(got), want, "copy len {len} off {off}");
            assert_eq!(&dst[1..1 + slice.len()], slice);
            let mut buf = vec![7u8; off];
            assert_eq!(fold(extend_and_sum(&mut buf, slice, seed)), want);
            assert_eq!(&buf[off..], slice);
        }
        assert_eq!(fold(sum_words(&[], 0)), 0);
        assert_eq!(fold(sum_words(&[0; 64], 0)), 0);
        assert_eq!(fold(sum_words(&[0xff; 64], 0)), 0xffff);
        // A destination shorter than the source: only what fits.
        let mut short = [0u8; 3];
        assert_eq!(
            fold(copy_and_sum(&mut short, &[1, 2, 3, 4], 0)),
            0x0102 + 0x0300
        );
        assert_eq!(short, [1, 2, 3]);
    }

    #[test]
    fn partial_completion_equals_full_recompute() {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
            for len in [0usize, 1, 2, 3, 100, 1001] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut partial = l4_frame(protocol, &payload, false);
                let (start, off) = make_partial(&mut partial, protocol);
                assert!(!l4_checksum_ok(&partial).unwrap() || len == 0 && protocol == 17);
                let mut full = partial.clone();
                complete_partial(&mut partial, start, off).unwrap();
                let written = recompute_l4(&mut full).unwrap();
                assert_eq!(written.protocol, protocol);
                assert_eq!(partial, full, "protocol {protocol} len {len}");
                assert!(l4_checksum_ok(&partial).unwrap());
            }
        }
    }

    #[test]
    fn complete_checksum_dispatches_on_hint() {
        let mut a = l4_frame(IPPROTO_UDP, b"hello", false);
        let (start, off) = make_partial(&mut a, IPPROTO_UDP);
        let mut b = a.clone();
        let hint = PartialHint {
            csum_start: start as u16,
            csum_offset: off as u16,
        };
        complete_checksum(&mut a, Some(hint)).unwrap();
        complete_checksum(&mut b, None).unwrap();
        assert_eq!(a, b);
        assert!(l4_checksum_ok(&a).unwrap());
    }

    #[test]
    fn known_udp_checksum() {
        // UDP 10.32.0.1:12345 -> 10.32.0.2:80 carrying "hello": pseudo
        // header 0a20 0001 0a20 0002 0011 000d, header 3039 0050 000d 0000,
        // data 6865 6c6c 6f00 sum to 0x1_88c8 → 0x88c9, complement 0x7736.
        let mut f = l4_frame(IPPROTO_UDP, b"hello", false);
        let c = recompute_l4(&mut f).unwrap();
        assert_eq!(c.checksum, 0x7736);
        assert_eq!(&f[40..42], &[0x77, 0x36]);
    }

    #[test]
    fn rejects_what_it_cannot_complete() {
        assert_eq!(recompute_l4(&mut [0u8; 10]), Err(ChecksumError::NotIpv4));
        let mut arp = l4_frame(IPPROTO_UDP, b"x", false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(recompute_l4(&mut arp), Err(ChecksumError::NotIpv4));
        let mut icmp = l4_frame(IPPROTO_UDP, b"x", false);
        icmp[23] = IPPROTO_ICMP;
        assert_eq!(recompute_l4(&mut icmp), Err(ChecksumError::Protocol(1)));
        let mut frag = l4_frame(IPPROTO_UDP, b"x", false);
        frag[20] = 0x20;
        assert_eq!(recompute_l4(&mut frag), Err(ChecksumError::Fragment));
        let mut trunc = l4_frame(IPPROTO_TCP, b"abcdef", false);
        trunc.truncate(trunc.len() - 2);
        assert_eq!(recompute_l4(&mut trunc), Err(ChecksumError::Truncated));
        let mut f = l4_frame(IPPROTO_TCP, b"abc", false);
        assert!(matches!(
            complete_partial(&mut f, 34, 60),
            Err(ChecksumError::BadOffsets { .. })
        ));
        assert!(matches!(
            complete_partial(&mut f, usize::MAX, 2),
            Err(ChecksumError::BadOffsets { .. })
        ));
        assert!(matches!(
            complete_partial(&mut f, 2, 2),
            Err(ChecksumError::BadOffsets { .. })
        ));
    }

    #[test]
    fn ethernet_padding_is_not_summed() {
        let mut f = l4_frame(IPPROTO_UDP, b"hi", false);
        let mut padded = f.clone();
        padded.resize(60, 0xee);
        recompute_l4(&mut f).unwrap();
        recompute_l4(&mut padded).unwrap();
        assert_eq!(&padded[..f.len()], &f[..]);
        assert!(l4_checksum_ok(&padded).unwrap());
    }
}
