//! What the sleeve needs to know about the frames it carries, decided the
//! way Weave Net 2.8.1 decides it (its decoder is gopacket's Ethernet and
//! IPv4 layers, in `router/ethernet_decoder.go`):
//!
//! - frames shorter than an Ethernet header are not frames at all;
//! - "special" frames are the router's own probes: both MACs zero and a
//!   zero type/length field (an 802.3 frame of length 0);
//! - a frame is IPv4 when its type is 0x0800 and the header parses with
//!   gopacket's rules; only such frames can be DF, be fragmented, or be
//!   answered with ICMP "fragmentation needed".
//!
//! The ICMP message and the fragments are built here byte by byte with
//! their checksums.

use super::checksum::{IPPROTO_ICMP, internet_checksum};
use super::frame::ETHERNET_OVERHEAD;

/// Ethernet type of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;

/// Frames are padded to this many bytes when built (without FCS).
pub const MIN_FRAME_LEN: usize = 60;

const FLAG_DF: u8 = 0b010;
const FLAG_MF: u8 = 0b001;

/// The parts of an IPv4 header the sleeve looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Header bytes (IHL × 4).
    pub header_len: usize,
    /// Total length field (a zero field counts as the bytes present).
    pub total_len: u16,
    /// TOS byte.
    pub tos: u8,
    /// The three flag bits (reserved, DF, MF).
    pub flags: u8,
    /// Fragment offset in units of eight bytes.
    pub frag_offset: u16,
    /// Protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4Info {
    /// Don't Fragment is set.
    pub fn dont_fragment(&self) -> bool {
        self.flags & FLAG_DF != 0
    }

    /// More Fragments is set.
    pub fn more_fragments(&self) -> bool {
        self.flags & FLAG_MF != 0
    }
}

/// A frame as the sleeve sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// The raw type/length field.
    pub ether_type: u16,
    /// The IPv4 header, when the frame carries one that parses.
    pub ipv4: Option<Ipv4Info>,
}

impl Decoded {
    /// A probe frame made by a router rather than captured.
    pub fn is_special(&self) -> bool {
        self.ipv4.is_none()
            && self.ether_type == 0
            && self.dst_mac == [0; 6]
            && self.src_mac == [0; 6]
    }

    /// IPv4 with Don't Fragment set.
    pub fn dont_fragment(&self) -> bool {
        self.ipv4.is_some_and(|ip| ip.dont_fragment())
    }
}

/// Decodes a frame's Ethernet header and, if present, its IPv4 header.
/// `None` for frames shorter than an Ethernet header (Weave ignores them).
pub fn decode(frame: &[u8]) -> Option<Decoded> {
    let (eth, payload) = frame.split_first_chunk::<ETHERNET_OVERHEAD>()?;
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&eth[0..6]);
    src_mac.copy_from_slice(&eth[6..12]);
    let ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    let ipv4 = if ether_type == ETHERTYPE_IPV4 {
        parse_ipv4(payload)
    } else {
        None
    };
    Some(Decoded {
        dst_mac,
        src_mac,
        ether_type,
        ipv4,
    })
}

/// gopacket's acceptance rules for an IPv4 header.
fn parse_ipv4(data: &[u8]) -> Option<Ipv4Info> {
    let h = data.first_chunk::<20>()?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let mut total_len = u16::from_be_bytes([h[2], h[3]]);
    if total_len == 0 {
        // Segmentation offload leaves the field zero; gopacket then takes
        // the bytes present (cut to 16 bits).
        total_len = data.len() as u16;
    }
    if total_len < 20 || header_len < 20 || header_len > usize::from(total_len) {
        return None;
    }
    if data.len() < header_len {
        return None;
    }
    let options = data.get(20..header_len)?;
    if !options_ok(options) {
        return None;
    }
    let flags_frag = u16::from_be_bytes([h[6], h[7]]);
    Some(Ipv4Info {
        header_len,
        total_len,
        tos: h[1],
        flags: (flags_frag >> 13) as u8,
        frag_offset: flags_frag & 0x1fff,
        protocol: h[9],
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
    })
}

fn options_ok(mut options: &[u8]) -> bool {
    while let Some((&kind, rest)) = options.split_first() {
        match kind {
            0 => return true,
            1 => options = rest,
            _ => {
                let Some(&len) = rest.first() else {
                    return false;
                };
                let len = usize::from(len);
                if options.len() < len || len <= 2 {
                    return false;
                }
                options = options.get(len..).unwrap_or_default();
            }
        }
    }
    true
}

/// Whether a captured frame is larger than an MTU allows. MTUs count IP
/// bytes, frames include the Ethernet header.
pub fn frame_too_big(frame_len: usize, mtu: usize) -> bool {
    frame_len > mtu + ETHERNET_OVERHEAD
}

fn pad(frame: &mut Vec<u8>) {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
}

/// Builds the ICMP "fragmentation needed" (type 3, code 4) reply to a DF
/// frame too big for `mtu`, addressed back to its sender: MACs and IP
/// addresses swapped, TOS kept, ID and flags zero, TTL 64, the next-hop
/// MTU in the last two bytes of the ICMP header, and the offending IP
/// header plus the first eight bytes after it as the body.
pub fn icmp_frag_needed(frame: &[u8], decoded: &Decoded, ip: &Ipv4Info, mtu: u16) -> Vec<u8> {
    let ip_start = ETHERNET_OVERHEAD;
    let quoted_end = (ip_start + ip.header_len + 8).min(frame.len());
    let quoted = frame.get(ip_start..quoted_end).unwrap_or_default();
    let total = 20 + 8 + quoted.len();
    let mut out = Vec::with_capacity(ETHERNET_OVERHEAD + total.max(MIN_FRAME_LEN));
    out.extend_from_slice(&decoded.src_mac);
    out.extend_from_slice(&decoded.dst_mac);
    out.extend_from_slice(&decoded.ether_type.to_be_bytes());

    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[1] = ip.tos;
    header[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    header[8] = 64;
    header[9] = IPPROTO_ICMP;
    header[12..16].copy_from_slice(&ip.dst);
    header[16..20].copy_from_slice(&ip.src);
    let c = internet_checksum(&header);
    header[10..12].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&header);

    let icmp_start = out.len();
    out.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quoted);
    let c = internet_checksum(out.get(icmp_start..).unwrap_or_default());
    if let Some(field) = out.get_mut(icmp_start + 2..icmp_start + 4) {
        field.copy_from_slice(&c.to_be_bytes());
    }
    pad(&mut out);
    out
}

/// Why a frame could not be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The IPv4 packet is longer than the frame holds.
    #[error("IPv4 packet of {total} bytes truncated to {have}")]
    Truncated {
        /// The total length field.
        total: usize,
        /// IP bytes present.
        have: usize,
    },
    /// The MTU leaves no room for eight bytes of payload after the header.
    #[error("MTU {mtu} too small for an IPv4 header of {header} bytes")]
    MtuTooSmall {
        /// The MTU asked for.
        mtu: usize,
        /// The header length.
        header: usize,
    },
    /// A fragment offset would not fit the 13-bit field.
    #[error("fragment offset past the end of the IPv4 offset field")]
    OffsetOverflow,
}

/// Splits an IPv4 frame into fragments whose IP packets fit `mtu`, the way
/// Weave does for non-DF frames it cannot trust the stack to fragment:
/// payload cut in multiples of eight bytes, every piece but the last with
/// More Fragments set, the last with the original flags, offsets counted
/// from the original offset, the original header (options included)
/// repeated in each piece with its length and checksum redone, and the
/// Ethernet header kept.
pub fn fragment(
    frame: &[u8],
    ip: &Ipv4Info,
    mtu: usize,
    mut emit: impl FnMut(Vec<u8>),
) -> Result<(), FragmentError> {
    let ip_start = ETHERNET_OVERHEAD;
    let header_len = ip.header_len;
    let total = usize::from(ip.total_len);
    let have = frame.len().saturating_sub(ip_start);
    let (Some(eth), Some(header), Some(payload)) = (
        frame.get(..ip_start),
        frame.get(ip_start..ip_start + header_len),
        frame.get(ip_start + header_len..ip_start + total),
    ) else {
        return Err(FragmentError::Truncated { total, have });
    };
    let max_segment = mtu.saturating_sub(header_len) & !7;
    if max_segment == 0 {
        return Err(FragmentError::MtuTooSmall {
            mtu,
            header: header_len,
        });
    }
    let base = usize::from(ip.frag_offset) << 3;
    let pieces = payload.len().div_ceil(max_segment).max(1);
    if (base + (pieces - 1) * max_segment) >> 3 > 0x1fff {
        return Err(FragmentError::OffsetOverflow);
    }
    let mut chunks = payload.chunks(max_segment).peekable();
    let mut offset = 0usize;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = if last { ip.flags } else { ip.flags | FLAG_MF };
        let field = (u16::from(flags) << 13) | (((offset + base) >> 3) as u16 & 0x1fff);
        let mut out = Vec::with_capacity(ip_start + header_len + chunk.len());
        out.extend_from_slice(eth);
        let h = out.len();
        out.extend_from_slice(header);
        out.extend_from_slice(chunk);
        if let Some(hdr) = out.get_mut(h..h + header_len) {
            let len = (header_len + chunk.len()) as u16;
            hdr[2..4].copy_from_slice(&len.to_be_bytes());
            hdr[6..8].copy_from_slice(&field.to_be_bytes());
            hdr[10..12].copy_from_slice(&[0, 0]);
            let c = internet_checksum(hdr);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        }
        pad(&mut out);
        emit(out);
        offset += chunk.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::checksum::tests::l4_frame;
    use super::super::checksum::{IPPROTO_UDP, fold, sum_words};
    use super::*;

    #[test]
    fn special_frames() {
        let mut hb = vec![0u8; 22];
        hb[14..].copy_from_slice(&42u64.to_be_bytes());
        let d = decode(&hb).unwrap();
        assert!(d.is_special());
        assert!(decode(&[0u8; 13]).is_none());
        let mut not = hb.clone();
        not[5] = 1;
        assert!(!decode(&not).unwrap().is_special());
        not = hb.clone();
        not[13] = 1;
        assert!(!decode(&not).unwrap().is_special());
        assert!(decode(&[0u8; 14]).unwrap().is_special());
    }

    #[test]
    fn ipv4_rules() {
        let f = l4_frame(IPPROTO_UDP, b"abc", true);
        let d = decode(&f).unwrap();
        let ip = d.ipv4.unwrap();
        assert!(d.dont_fragment() && !ip.more_fragments());
        assert_eq!((ip.header_len, ip.total_len, ip.protocol), (20, 31, 17));
        assert_eq!((ip.src, ip.dst), ([10, 32, 0, 1], [10, 32, 0, 2]));
        // A zero length field takes the bytes present.
        let mut z = f.clone();
        z[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(decode(&z).unwrap().ipv4.unwrap().total_len, 31);
        // IHL below 5, length below the header, options that overrun.
        let mut bad = f.clone();
        bad[14] = 0x44;
        assert!(decode(&bad).unwrap().ipv4.is_none());
        bad = f.clone();
        bad[16..18].copy_from_slice(&[0, 19]);
        assert!(decode(&bad).unwrap().ipv4.is_none());
        bad = f.clone();
        bad[14] = 0x46;
        bad[34] = 7;
        bad[35] = 9;
        assert!(decode(&bad).unwrap().ipv4.is_none());
        bad[35] = 2;
        assert!(decode(&bad).unwrap().ipv4.is_none());
        bad[35] = 4;
        assert!(decode(&bad).unwrap().ipv4.is_some());
        // Truncated packets still decode while the header is whole.
        assert!(decode(&f[..34]).unwrap().ipv4.is_some());
        assert!(decode(&f[..33]).unwrap().ipv4.is_none());
        // Not IPv4.
        bad = f.clone();
        bad[12] = 0x86;
        assert!(decode(&bad).unwrap().ipv4.is_none());
        assert!(!decode(&bad).unwrap().dont_fragment());
    }

    #[test]
    fn too_big_counts_ethernet() {
        assert!(!frame_too_big(1514, 1500));
        assert!(frame_too_big(1515, 1500));
    }

    #[test]
    fn golden_icmp_frag_needed() {
        let f = l4_frame(IPPROTO_UDP, &[0x55; 2000], true);
        let d = decode(&f).unwrap();
        let out = icmp_frag_needed(&f, &d, &d.ipv4.unwrap(), 1376);
        let mut want = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        // IPv4: 20 + 8 + 28 = 56 bytes, ID 0, no flags, TTL 64, ICMP,
        // 10.32.0.2 -> 10.32.0.1.
        let mut ip = vec![
            0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 10, 32, 0, 2, 10, 32, 0, 1,
        ];
        // Checksum by hand: 4500+0038+4001+0a20+0002+0a20+0001 = 0x997c.
        ip[10..12].copy_from_slice(&(!0x997cu16).to_be_bytes());
        want.extend_from_slice(&ip);
        let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x60];
        icmp.extend_from_slice(&f[14..14 + 28]);
        let c = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        want.extend_from_slice(&icmp);
        assert_eq!(out, want);
        assert_eq!(internet_checksum(&out[14..34]), 0);
        assert_eq!(fold(sum_words(&out[34..], 0)), 0xffff);
        let back = decode(&out).unwrap();
        assert!(!back.dont_fragment());
        assert_eq!(back.ipv4.unwrap().protocol, 1);
    }

    #[test]
    fn fragments_reassemble() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let f = l4_frame(IPPROTO_UDP, &payload, false);
        let ip = decode(&f).unwrap().ipv4.unwrap();
        let mut pieces = Vec::new();
        fragment(&f, &ip, 1000, |p| pieces.push(p)).unwrap();
        // 3008 bytes of IP payload in 976-byte pieces: 976, 976, 976, 80.
        assert_eq!(pieces.len(), 4);
        let mut joined = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let pi = decode(p).unwrap().ipv4.unwrap();
            assert_eq!(internet_checksum(&p[14..34]), 0);
            assert_eq!(pi.more_fragments(), i < 3);
            assert_eq!(usize::from(pi.frag_offset) * 8, joined.len());
            assert!(usize::from(pi.total_len) <= 1000);
            assert_eq!(&p[..14], &f[..14]);
            assert_eq!(&p[18..20], &f[18..20], "ID kept");
            joined.extend_from_slice(&p[34..14 + usize::from(pi.total_len)]);
        }
        assert_eq!(joined, f[34..]);
        assert_eq!(pieces[0].len(), 14 + 20 + 976);
    }

    #[test]
    fn fragment_of_a_fragment_and_padding() {
        let f = l4_frame(IPPROTO_UDP, &[1; 50], false);
        let mut g = f.clone();
        // Mark it a middle fragment at offset 800 with MF.
        g[20..22].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
        let ip = decode(&g).unwrap().ipv4.unwrap();
        let mut pieces = Vec::new();
        fragment(&g, &ip, 60, |p| pieces.push(p)).unwrap();
        // 58 payload bytes in 40-byte pieces.
        assert_eq!(pieces.len(), 2);
        let a = decode(&pieces[0]).unwrap().ipv4.unwrap();
        let b = decode(&pieces[1]).unwrap().ipv4.unwrap();
        assert_eq!((a.frag_offset, b.frag_offset), (100, 105));
        assert!(a.more_fragments() && b.more_fragments());
        assert_eq!(pieces[1].len(), 60, "short piece padded to 60");
        assert_eq!(b.total_len, 38);
        assert_eq!(&pieces[1][52..], &[0u8; 8]);
    }

    #[test]
    fn fragment_errors() {
        let f = l4_frame(IPPROTO_UDP, &[1; 100], false);
        let ip = decode(&f).unwrap().ipv4.unwrap();
        assert!(matches!(
            fragment(&f[..60], &ip, 50, |_| {}),
            Err(FragmentError::Truncated { .. })
        ));
        assert!(matches!(
            fragment(&f, &ip, 27, |_| {}),
            Err(FragmentError::MtuTooSmall { .. })
        ));
        let mut g = f.clone();
        g[20..22].copy_from_slice(&0x1fffu16.to_be_bytes());
        let ip = decode(&g).unwrap().ipv4.unwrap();
        assert_eq!(
            fragment(&g, &ip, 60, |_| {}),
            Err(FragmentError::OffsetOverflow)
        );
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Bytes gopacket (vendored in Weave 2.8.1) produces for the same
    /// frames with the layer settings Weave's ICMP and fragmentation code
    /// use, from a Go harness run against the Weave tree.
    #[test]
    fn matches_gopacket_serialization() {
        use super::super::checksum::recompute_l4;
        let mut f = l4_frame(IPPROTO_UDP, &[0x55; 2000], true);
        assert_eq!(recompute_l4(&mut f).unwrap().checksum, 0x561d);
        assert_eq!(
            f[..42].to_vec(),
            unhex(
                "0200000000020200000000010800450007ec1234400040110c8b0a2000010a2000023039005007d8561d"
            )
        );
        let d = decode(&f).unwrap();
        let icmp = icmp_frag_needed(&f, &d, &d.ipv4.unwrap(), 1376);
        assert_eq!(
            icmp,
            unhex(concat!(
                "0200000000010200000000020800",
                "4500003800000000400166830a2000020a200001",
                "0304691d00000560",
                "450007ec1234400040110c8b0a2000010a2000023039005007d8561d"
            ))
        );

        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut g = l4_frame(IPPROTO_UDP, &payload, false);
        recompute_l4(&mut g).unwrap();
        let ip = decode(&g).unwrap().ipv4.unwrap();
        let mut pieces = Vec::new();
        fragment(&g, &ip, 1000, |p| pieces.push(p)).unwrap();
        let want = [
            (
                1010,
                "0200000000020200000000010800450003e412342000401130930a2000010a200002",
            ),
            (
                1010,
                "0200000000020200000000010800450003e41234207a401130190a2000010a200002",
            ),
            (
                1010,
                "0200000000020200000000010800450003e4123420f440112f9f0a2000010a200002",
            ),
            (
                114,
                "0200000000020200000000010800450000641234016e401152a50a2000010a200002",
            ),
        ];
        assert_eq!(pieces.len(), want.len());
        for (p, (len, head)) in pieces.iter().zip(want) {
            assert_eq!(p.len(), len);
            assert_eq!(p[..34].to_vec(), unhex(head));
        }
    }
}
