//! Flow keys and masks (`OVS_KEY_ATTR_*`).
//!
//! A flow key is a list of [`KeyAttr`]s; a mask uses the very same encoding
//! (1 bits match exactly), so [`FlowKey`] serves for both. The packed structs
//! mirror the kernel's `struct ovs_key_*` layouts byte for byte, including the
//! tail padding of `struct ovs_key_arp` (22 bytes of fields, size 24).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::DecodeError;
use super::nla::{Attr, AttrWriter, Nla, decode_all, emit_all};
use super::types::{Be16, Be32, Be64, MacAddr, array_at};

/// Key attribute numbers (`OVS_KEY_ATTR_*`).
pub mod attr {
    /// Nested attributes inside a VLAN header.
    pub const ENCAP: u16 = 1;
    /// `skb->priority` (`u32`).
    pub const PRIORITY: u16 = 2;
    /// Input port (`u32`).
    pub const IN_PORT: u16 = 3;
    /// `struct ovs_key_ethernet`.
    pub const ETHERNET: u16 = 4;
    /// VLAN TCI (`be16`).
    pub const VLAN: u16 = 5;
    /// Ethertype (`be16`).
    pub const ETHERTYPE: u16 = 6;
    /// `struct ovs_key_ipv4`.
    pub const IPV4: u16 = 7;
    /// `struct ovs_key_ipv6`.
    pub const IPV6: u16 = 8;
    /// `struct ovs_key_tcp`.
    pub const TCP: u16 = 9;
    /// `struct ovs_key_udp`.
    pub const UDP: u16 = 10;
    /// `struct ovs_key_icmp`.
    pub const ICMP: u16 = 11;
    /// `struct ovs_key_icmpv6`.
    pub const ICMPV6: u16 = 12;
    /// `struct ovs_key_arp`.
    pub const ARP: u16 = 13;
    /// `struct ovs_key_nd`.
    pub const ND: u16 = 14;
    /// `skb->mark` (`u32`).
    pub const SKB_MARK: u16 = 15;
    /// Tunnel metadata (nested `OVS_TUNNEL_KEY_ATTR_*`).
    pub const TUNNEL: u16 = 16;
    /// `struct ovs_key_sctp`.
    pub const SCTP: u16 = 17;
    /// TCP flags (`be16`).
    pub const TCP_FLAGS: u16 = 18;
    /// Datapath hash (`u32`).
    pub const DP_HASH: u16 = 19;
    /// Recirculation id (`u32`).
    pub const RECIRC_ID: u16 = 20;
    /// MPLS label stack entries (array of `be32`).
    pub const MPLS: u16 = 21;
    /// Conntrack state bits (`u32`).
    pub const CT_STATE: u16 = 22;
    /// Conntrack zone (`u16`).
    pub const CT_ZONE: u16 = 23;
    /// Conntrack mark (`u32`).
    pub const CT_MARK: u16 = 24;
    /// Conntrack labels (16 bytes).
    pub const CT_LABELS: u16 = 25;
}

/// Tunnel key attribute numbers (`OVS_TUNNEL_KEY_ATTR_*`); they start at 0.
pub mod tunnel_attr {
    /// Tunnel id (`be64`).
    pub const ID: u16 = 0;
    /// Outer IPv4 source.
    pub const IPV4_SRC: u16 = 1;
    /// Outer IPv4 destination.
    pub const IPV4_DST: u16 = 2;
    /// Outer TOS (`u8`).
    pub const TOS: u16 = 3;
    /// Outer TTL (`u8`).
    pub const TTL: u16 = 4;
    /// Don't-fragment flag.
    pub const DONT_FRAGMENT: u16 = 5;
    /// Checksum flag.
    pub const CSUM: u16 = 6;
    /// OAM flag.
    pub const OAM: u16 = 7;
    /// Geneve options (raw).
    pub const GENEVE_OPTS: u16 = 8;
    /// Outer UDP source port (`be16`).
    pub const TP_SRC: u16 = 9;
    /// Outer UDP destination port (`be16`).
    pub const TP_DST: u16 = 10;
    /// VXLAN options (nested).
    pub const VXLAN_OPTS: u16 = 11;
    /// Outer IPv6 source.
    pub const IPV6_SRC: u16 = 12;
    /// Outer IPv6 destination.
    pub const IPV6_DST: u16 = 13;
    /// Padding.
    pub const PAD: u16 = 14;
}

/// Conntrack state bits (`OVS_CS_F_*`) for [`KeyAttr::CtState`].
pub mod ct_state {
    /// Start of a new connection.
    pub const NEW: u32 = 0x01;
    /// Part of an established connection.
    pub const ESTABLISHED: u32 = 0x02;
    /// Related to an established connection.
    pub const RELATED: u32 = 0x04;
    /// Reply direction.
    pub const REPLY_DIR: u32 = 0x08;
    /// Could not be tracked.
    pub const INVALID: u32 = 0x10;
    /// Went through conntrack.
    pub const TRACKED: u32 = 0x20;
    /// Source NAT applied.
    pub const SRC_NAT: u32 = 0x40;
    /// Destination NAT applied.
    pub const DST_NAT: u32 = 0x80;
}

/// `struct ovs_key_ethernet` (12 bytes): source then destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EthernetKey {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
}

/// `struct ovs_key_ipv4` (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Key {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol.
    pub proto: u8,
    /// TOS byte.
    pub tos: u8,
    /// TTL.
    pub ttl: u8,
    /// Fragment type (0 none, 1 first, 2 later).
    pub frag: u8,
}

impl Default for Ipv4Key {
    fn default() -> Self {
        Ipv4Key {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            proto: 0,
            tos: 0,
            ttl: 0,
            frag: 0,
        }
    }
}

/// `struct ovs_key_ipv6` (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Key {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Flow label (20 low bits).
    pub label: Be32,
    /// Next header.
    pub proto: u8,
    /// Traffic class.
    pub tclass: u8,
    /// Hop limit.
    pub hlimit: u8,
    /// Fragment type.
    pub frag: u8,
}

impl Default for Ipv6Key {
    fn default() -> Self {
        Ipv6Key {
            src: Ipv6Addr::UNSPECIFIED,
            dst: Ipv6Addr::UNSPECIFIED,
            label: Be32(0),
            proto: 0,
            tclass: 0,
            hlimit: 0,
            frag: 0,
        }
    }
}

/// `struct ovs_key_tcp` / `_udp` / `_sctp` (4 bytes): L4 ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortsKey {
    /// Source port.
    pub src: Be16,
    /// Destination port.
    pub dst: Be16,
}

/// `struct ovs_key_icmp` / `_icmpv6` (2 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IcmpKey {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
}

/// `struct ovs_key_arp` (24 bytes: 22 of fields plus 2 of tail padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpKey {
    /// Sender IP.
    pub sip: Ipv4Addr,
    /// Target IP.
    pub tip: Ipv4Addr,
    /// Opcode.
    pub op: Be16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Target hardware address.
    pub tha: MacAddr,
}

impl Default for ArpKey {
    fn default() -> Self {
        ArpKey {
            sip: Ipv4Addr::UNSPECIFIED,
            tip: Ipv4Addr::UNSPECIFIED,
            op: Be16(0),
            sha: MacAddr::default(),
            tha: MacAddr::default(),
        }
    }
}

/// `struct ovs_key_nd` (28 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NdKey {
    /// Target address.
    pub target: Ipv6Addr,
    /// Source link-layer address option.
    pub sll: MacAddr,
    /// Target link-layer address option.
    pub tll: MacAddr,
}

/// Wire sizes of the fixed key structs.
pub mod size {
    /// `struct ovs_key_ethernet`.
    pub const ETHERNET: usize = 12;
    /// `struct ovs_key_ipv4`.
    pub const IPV4: usize = 12;
    /// `struct ovs_key_ipv6`.
    pub const IPV6: usize = 40;
    /// `struct ovs_key_tcp` and friends.
    pub const PORTS: usize = 4;
    /// `struct ovs_key_icmp`.
    pub const ICMP: usize = 2;
    /// `struct ovs_key_arp`, including its 2 bytes of tail padding.
    pub const ARP: usize = 24;
    /// `struct ovs_key_nd`.
    pub const ND: usize = 28;
}

fn mac_at(b: &[u8], off: usize) -> MacAddr {
    MacAddr(array_at::<6>(b, off).unwrap_or_default())
}
fn v4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::from(array_at::<4>(b, off).unwrap_or_default())
}
fn v6_at(b: &[u8], off: usize) -> Ipv6Addr {
    Ipv6Addr::from(array_at::<16>(b, off).unwrap_or_default())
}
fn be16_at(b: &[u8], off: usize) -> Be16 {
    Be16::from_bytes(array_at::<2>(b, off).unwrap_or_default())
}
fn sized<'a>(
    what: &'static str,
    a: &Attr<'a>,
    len: usize,
    expected: &'static str,
) -> Result<&'a [u8], DecodeError> {
    if a.payload.len() == len {
        Ok(a.payload)
    } else {
        Err(DecodeError::AttrSize {
            what,
            kind: a.kind,
            len: a.payload.len(),
            expected,
        })
    }
}

impl EthernetKey {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.src.0);
        w.raw(&self.dst.0);
    }
    fn read(b: &[u8]) -> Self {
        EthernetKey {
            src: mac_at(b, 0),
            dst: mac_at(b, 6),
        }
    }
}

impl Ipv4Key {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.src.octets());
        w.raw(&self.dst.octets());
        w.raw(&[self.proto, self.tos, self.ttl, self.frag]);
    }
    fn read(b: &[u8]) -> Self {
        let t = array_at::<4>(b, 8).unwrap_or_default();
        Ipv4Key {
            src: v4_at(b, 0),
            dst: v4_at(b, 4),
            proto: t[0],
            tos: t[1],
            ttl: t[2],
            frag: t[3],
        }
    }
}

impl Ipv6Key {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.src.octets());
        w.raw(&self.dst.octets());
        w.raw(&self.label.to_bytes());
        w.raw(&[self.proto, self.tclass, self.hlimit, self.frag]);
    }
    fn read(b: &[u8]) -> Self {
        let t = array_at::<4>(b, 36).unwrap_or_default();
        Ipv6Key {
            src: v6_at(b, 0),
            dst: v6_at(b, 16),
            label: Be32::from_bytes(array_at::<4>(b, 32).unwrap_or_default()),
            proto: t[0],
            tclass: t[1],
            hlimit: t[2],
            frag: t[3],
        }
    }
}

impl PortsKey {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.src.to_bytes());
        w.raw(&self.dst.to_bytes());
    }
    fn read(b: &[u8]) -> Self {
        PortsKey {
            src: be16_at(b, 0),
            dst: be16_at(b, 2),
        }
    }
}

impl ArpKey {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.sip.octets());
        w.raw(&self.tip.octets());
        w.raw(&self.op.to_bytes());
        w.raw(&self.sha.0);
        w.raw(&self.tha.0);
        w.raw(&[0, 0]);
    }
    fn read(b: &[u8]) -> Self {
        ArpKey {
            sip: v4_at(b, 0),
            tip: v4_at(b, 4),
            op: be16_at(b, 8),
            sha: mac_at(b, 10),
            tha: mac_at(b, 16),
        }
    }
}

impl NdKey {
    fn write(&self, w: &mut AttrWriter<'_>) {
        w.raw(&self.target.octets());
        w.raw(&self.sll.0);
        w.raw(&self.tll.0);
    }
    fn read(b: &[u8]) -> Self {
        NdKey {
            target: v6_at(b, 0),
            sll: mac_at(b, 16),
            tll: mac_at(b, 22),
        }
    }
}

/// One tunnel metadata attribute (`OVS_TUNNEL_KEY_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKeyAttr {
    /// Tunnel id (VNI).
    Id(Be64),
    /// Outer IPv4 source.
    Ipv4Src(Ipv4Addr),
    /// Outer IPv4 destination.
    Ipv4Dst(Ipv4Addr),
    /// Outer TOS.
    Tos(u8),
    /// Outer TTL.
    Ttl(u8),
    /// Set DF on the outer header.
    DontFragment,
    /// Checksum the outer UDP header.
    Csum,
    /// OAM frame.
    Oam,
    /// Geneve options, raw.
    GeneveOpts(Vec<u8>),
    /// Outer UDP source port.
    TpSrc(Be16),
    /// Outer UDP destination port.
    TpDst(Be16),
    /// Outer IPv6 source.
    Ipv6Src(Ipv6Addr),
    /// Outer IPv6 destination.
    Ipv6Dst(Ipv6Addr),
    /// Any other attribute (VXLAN options, ERSPAN, padding...).
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const TW: &str = "tunnel key";

impl Nla for TunnelKeyAttr {
    fn kind(&self) -> u16 {
        use tunnel_attr as t;
        match self {
            TunnelKeyAttr::Id(_) => t::ID,
            TunnelKeyAttr::Ipv4Src(_) => t::IPV4_SRC,
            TunnelKeyAttr::Ipv4Dst(_) => t::IPV4_DST,
            TunnelKeyAttr::Tos(_) => t::TOS,
            TunnelKeyAttr::Ttl(_) => t::TTL,
            TunnelKeyAttr::DontFragment => t::DONT_FRAGMENT,
            TunnelKeyAttr::Csum => t::CSUM,
            TunnelKeyAttr::Oam => t::OAM,
            TunnelKeyAttr::GeneveOpts(_) => t::GENEVE_OPTS,
            TunnelKeyAttr::TpSrc(_) => t::TP_SRC,
            TunnelKeyAttr::TpDst(_) => t::TP_DST,
            TunnelKeyAttr::Ipv6Src(_) => t::IPV6_SRC,
            TunnelKeyAttr::Ipv6Dst(_) => t::IPV6_DST,
            TunnelKeyAttr::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            TunnelKeyAttr::Id(v) => w.raw(&v.to_bytes()),
            TunnelKeyAttr::Ipv4Src(a) | TunnelKeyAttr::Ipv4Dst(a) => w.raw(&a.octets()),
            TunnelKeyAttr::Tos(v) | TunnelKeyAttr::Ttl(v) => w.raw(&[*v]),
            TunnelKeyAttr::DontFragment | TunnelKeyAttr::Csum | TunnelKeyAttr::Oam => {}
            TunnelKeyAttr::GeneveOpts(d) | TunnelKeyAttr::Other { data: d, .. } => w.raw(d),
            TunnelKeyAttr::TpSrc(p) | TunnelKeyAttr::TpDst(p) => w.raw(&p.to_bytes()),
            TunnelKeyAttr::Ipv6Src(a) | TunnelKeyAttr::Ipv6Dst(a) => w.raw(&a.octets()),
        }
    }
    fn decode(a: &Attr<'_>, _depth: usize) -> Result<Self, DecodeError> {
        use tunnel_attr as t;
        Ok(match a.kind {
            t::ID => TunnelKeyAttr::Id(a.be64(TW)?),
            t::IPV4_SRC => TunnelKeyAttr::Ipv4Src(Ipv4Addr::from(a.array::<4>(TW)?)),
            t::IPV4_DST => TunnelKeyAttr::Ipv4Dst(Ipv4Addr::from(a.array::<4>(TW)?)),
            t::TOS => TunnelKeyAttr::Tos(a.u8(TW)?),
            t::TTL => TunnelKeyAttr::Ttl(a.u8(TW)?),
            t::DONT_FRAGMENT => TunnelKeyAttr::DontFragment,
            t::CSUM => TunnelKeyAttr::Csum,
            t::OAM => TunnelKeyAttr::Oam,
            t::GENEVE_OPTS => TunnelKeyAttr::GeneveOpts(a.payload.to_vec()),
            t::TP_SRC => TunnelKeyAttr::TpSrc(a.be16(TW)?),
            t::TP_DST => TunnelKeyAttr::TpDst(a.be16(TW)?),
            t::IPV6_SRC => TunnelKeyAttr::Ipv6Src(Ipv6Addr::from(a.array::<16>(TW)?)),
            t::IPV6_DST => TunnelKeyAttr::Ipv6Dst(Ipv6Addr::from(a.array::<16>(TW)?)),
            kind => TunnelKeyAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One flow key (or mask) attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAttr {
    /// Attributes of the frame inside a VLAN tag.
    Encap(Vec<KeyAttr>),
    /// `skb->priority`.
    Priority(u32),
    /// Input port number.
    InPort(u32),
    /// Ethernet addresses.
    Ethernet(EthernetKey),
    /// VLAN TCI (the CFI/"tag present" bit 0x1000 must be set in keys).
    Vlan(Be16),
    /// Ethertype.
    EtherType(Be16),
    /// IPv4 header fields.
    Ipv4(Ipv4Key),
    /// IPv6 header fields.
    Ipv6(Ipv6Key),
    /// TCP ports.
    Tcp(PortsKey),
    /// UDP ports.
    Udp(PortsKey),
    /// ICMP type and code.
    Icmp(IcmpKey),
    /// ICMPv6 type and code.
    Icmpv6(IcmpKey),
    /// ARP fields.
    Arp(ArpKey),
    /// IPv6 neighbour discovery fields.
    Nd(NdKey),
    /// `skb->mark`.
    SkbMark(u32),
    /// Tunnel metadata.
    Tunnel(Vec<TunnelKeyAttr>),
    /// SCTP ports.
    Sctp(PortsKey),
    /// TCP flags.
    TcpFlags(Be16),
    /// Datapath hash.
    DpHash(u32),
    /// Recirculation id.
    RecircId(u32),
    /// MPLS label stack entries.
    Mpls(Vec<Be32>),
    /// Conntrack state bits (see [`ct_state`]).
    CtState(u32),
    /// Conntrack zone.
    CtZone(u16),
    /// Conntrack mark.
    CtMark(u32),
    /// Conntrack labels.
    CtLabels([u8; 16]),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const KW: &str = "flow key";

impl Nla for KeyAttr {
    fn kind(&self) -> u16 {
        match self {
            KeyAttr::Encap(_) => attr::ENCAP,
            KeyAttr::Priority(_) => attr::PRIORITY,
            KeyAttr::InPort(_) => attr::IN_PORT,
            KeyAttr::Ethernet(_) => attr::ETHERNET,
            KeyAttr::Vlan(_) => attr::VLAN,
            KeyAttr::EtherType(_) => attr::ETHERTYPE,
            KeyAttr::Ipv4(_) => attr::IPV4,
            KeyAttr::Ipv6(_) => attr::IPV6,
            KeyAttr::Tcp(_) => attr::TCP,
            KeyAttr::Udp(_) => attr::UDP,
            KeyAttr::Icmp(_) => attr::ICMP,
            KeyAttr::Icmpv6(_) => attr::ICMPV6,
            KeyAttr::Arp(_) => attr::ARP,
            KeyAttr::Nd(_) => attr::ND,
            KeyAttr::SkbMark(_) => attr::SKB_MARK,
            KeyAttr::Tunnel(_) => attr::TUNNEL,
            KeyAttr::Sctp(_) => attr::SCTP,
            KeyAttr::TcpFlags(_) => attr::TCP_FLAGS,
            KeyAttr::DpHash(_) => attr::DP_HASH,
            KeyAttr::RecircId(_) => attr::RECIRC_ID,
            KeyAttr::Mpls(_) => attr::MPLS,
            KeyAttr::CtState(_) => attr::CT_STATE,
            KeyAttr::CtZone(_) => attr::CT_ZONE,
            KeyAttr::CtMark(_) => attr::CT_MARK,
            KeyAttr::CtLabels(_) => attr::CT_LABELS,
            KeyAttr::Other { kind, .. } => *kind,
        }
    }

    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            KeyAttr::Encap(v) => emit_all(w, v),
            KeyAttr::Priority(v)
            | KeyAttr::InPort(v)
            | KeyAttr::SkbMark(v)
            | KeyAttr::DpHash(v)
            | KeyAttr::RecircId(v)
            | KeyAttr::CtState(v)
            | KeyAttr::CtMark(v) => w.raw(&v.to_ne_bytes()),
            KeyAttr::Ethernet(e) => e.write(w),
            KeyAttr::Vlan(v) | KeyAttr::EtherType(v) | KeyAttr::TcpFlags(v) => w.raw(&v.to_bytes()),
            KeyAttr::Ipv4(k) => k.write(w),
            KeyAttr::Ipv6(k) => k.write(w),
            KeyAttr::Tcp(k) | KeyAttr::Udp(k) | KeyAttr::Sctp(k) => k.write(w),
            KeyAttr::Icmp(k) | KeyAttr::Icmpv6(k) => w.raw(&[k.icmp_type, k.code]),
            KeyAttr::Arp(k) => k.write(w),
            KeyAttr::Nd(k) => k.write(w),
            KeyAttr::Tunnel(t) => emit_all(w, t),
            KeyAttr::Mpls(l) => {
                for x in l {
                    w.raw(&x.to_bytes());
                }
            }
            KeyAttr::CtZone(z) => w.raw(&z.to_ne_bytes()),
            KeyAttr::CtLabels(l) => w.raw(l),
            KeyAttr::Other { data, .. } => w.raw(data),
        }
    }

    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            attr::ENCAP => KeyAttr::Encap(decode_all(KW, a.payload, depth + 1)?),
            attr::PRIORITY => KeyAttr::Priority(a.u32(KW)?),
            attr::IN_PORT => KeyAttr::InPort(a.u32(KW)?),
            attr::ETHERNET => {
                KeyAttr::Ethernet(EthernetKey::read(sized(KW, a, size::ETHERNET, "12")?))
            }
            attr::VLAN => KeyAttr::Vlan(a.be16(KW)?),
            attr::ETHERTYPE => KeyAttr::EtherType(a.be16(KW)?),
            attr::IPV4 => KeyAttr::Ipv4(Ipv4Key::read(sized(KW, a, size::IPV4, "12")?)),
            attr::IPV6 => KeyAttr::Ipv6(Ipv6Key::read(sized(KW, a, size::IPV6, "40")?)),
            attr::TCP => KeyAttr::Tcp(PortsKey::read(sized(KW, a, size::PORTS, "4")?)),
            attr::UDP => KeyAttr::Udp(PortsKey::read(sized(KW, a, size::PORTS, "4")?)),
            attr::SCTP => KeyAttr::Sctp(PortsKey::read(sized(KW, a, size::PORTS, "4")?)),
            attr::ICMP | attr::ICMPV6 => {
                let b = a.array::<2>(KW)?;
                let k = IcmpKey {
                    icmp_type: b[0],
                    code: b[1],
                };
                if a.kind == attr::ICMP {
                    KeyAttr::Icmp(k)
                } else {
                    KeyAttr::Icmpv6(k)
                }
            }
            attr::ARP => KeyAttr::Arp(ArpKey::read(sized(KW, a, size::ARP, "24")?)),
            attr::ND => KeyAttr::Nd(NdKey::read(sized(KW, a, size::ND, "28")?)),
            attr::SKB_MARK => KeyAttr::SkbMark(a.u32(KW)?),
            attr::TUNNEL => KeyAttr::Tunnel(decode_all(TW, a.payload, depth + 1)?),
            attr::TCP_FLAGS => KeyAttr::TcpFlags(a.be16(KW)?),
            attr::DP_HASH => KeyAttr::DpHash(a.u32(KW)?),
            attr::RECIRC_ID => KeyAttr::RecircId(a.u32(KW)?),
            attr::MPLS => {
                if a.payload.len() % 4 != 0 {
                    return Err(DecodeError::AttrSize {
                        what: KW,
                        kind: a.kind,
                        len: a.payload.len(),
                        expected: "a multiple of 4",
                    });
                }
                KeyAttr::Mpls(
                    a.payload
                        .chunks_exact(4)
                        .map(|c| Be32::from_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            attr::CT_STATE => KeyAttr::CtState(a.u32(KW)?),
            attr::CT_ZONE => KeyAttr::CtZone(a.u16(KW)?),
            attr::CT_MARK => KeyAttr::CtMark(a.u32(KW)?),
            attr::CT_LABELS => KeyAttr::CtLabels(a.array::<16>(KW)?),
            kind => KeyAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

impl KeyAttr {
    /// Decodes one key attribute of type `kind` from a bare payload (used for
    /// the value and mask halves of a masked set action).
    pub fn decode_payload(kind: u16, payload: &[u8], depth: usize) -> Result<Self, DecodeError> {
        KeyAttr::decode(
            &Attr {
                kind,
                flags: 0,
                payload,
            },
            depth,
        )
    }

    /// The payload bytes this attribute encodes to (without header).
    pub fn payload_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        self.emit_payload(&mut w);
        // A key payload is never near the 64 KiB limit unless it is an Other
        // with a huge blob; the outer writer reports that case.
        let _ = w.finish();
        buf
    }
}

/// A flow key or mask: an ordered list of key attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FlowKey(pub Vec<KeyAttr>);

impl FlowKey {
    /// An empty key.
    pub fn new() -> Self {
        FlowKey(Vec::new())
    }
    /// Appends an attribute (builder style).
    pub fn with(mut self, a: KeyAttr) -> Self {
        self.0.push(a);
        self
    }
    /// Appends an attribute.
    pub fn push(&mut self, a: KeyAttr) {
        self.0.push(a)
    }
    /// The attributes.
    pub fn attrs(&self) -> &[KeyAttr] {
        &self.0
    }
    /// The first attribute of type `kind` at the top level.
    pub fn get(&self, kind: u16) -> Option<&KeyAttr> {
        self.0.iter().find(|a| a.kind() == kind)
    }
    /// The input port, if the key has one.
    pub fn in_port(&self) -> Option<u32> {
        self.0.iter().find_map(|a| match a {
            KeyAttr::InPort(p) => Some(*p),
            _ => None,
        })
    }
    /// The top-level ethertype, if present.
    pub fn eth_type(&self) -> Option<u16> {
        self.0.iter().find_map(|a| match a {
            KeyAttr::EtherType(t) => Some(t.get()),
            _ => None,
        })
    }
    /// The Ethernet addresses, if present.
    pub fn ethernet(&self) -> Option<EthernetKey> {
        self.0.iter().find_map(|a| match a {
            KeyAttr::Ethernet(e) => Some(*e),
            _ => None,
        })
    }
    /// Writes the attributes (not an enclosing attribute).
    pub fn emit(&self, w: &mut AttrWriter<'_>) {
        emit_all(w, &self.0)
    }
    /// Decodes a key set from the payload of a KEY or MASK attribute.
    pub fn decode(buf: &[u8], depth: usize) -> Result<Self, DecodeError> {
        decode_all(KW, buf, depth).map(FlowKey)
    }
}

impl From<Vec<KeyAttr>> for FlowKey {
    fn from(v: Vec<KeyAttr>) -> Self {
        FlowKey(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(a: &KeyAttr) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        a.emit(&mut w);
        w.finish().unwrap();
        buf
    }

    fn round_trip(a: KeyAttr) -> Vec<u8> {
        let bytes = enc(&a);
        let back = FlowKey::decode(&bytes, 0).unwrap();
        assert_eq!(back.0, vec![a]);
        bytes
    }

    const MAC1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
    const MAC2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

    #[test]
    fn ethernet_layout() {
        let b = round_trip(KeyAttr::Ethernet(EthernetKey {
            src: MAC1,
            dst: MAC2,
        }));
        assert_eq!(b, [16, 0, 4, 0, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn ipv4_layout() {
        let b = round_trip(KeyAttr::Ipv4(Ipv4Key {
            src: Ipv4Addr::new(10, 32, 0, 1),
            dst: Ipv4Addr::new(10, 32, 0, 2),
            proto: 6,
            tos: 0x10,
            ttl: 64,
            frag: 1,
        }));
        assert_eq!(b, [16, 0, 7, 0, 10, 32, 0, 1, 10, 32, 0, 2, 6, 0x10, 64, 1]);
    }

    #[test]
    fn ipv6_layout() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::2".parse().unwrap();
        let b = round_trip(KeyAttr::Ipv6(Ipv6Key {
            src,
            dst,
            label: Be32(0x12345),
            proto: 58,
            tclass: 3,
            hlimit: 255,
            frag: 0,
        }));
        assert_eq!(b.len(), 44);
        assert_eq!(&b[..4], &[44, 0, 8, 0]);
        assert_eq!(&b[4..20], &src.octets());
        assert_eq!(&b[20..36], &dst.octets());
        assert_eq!(&b[36..40], &[0x00, 0x01, 0x23, 0x45]);
        assert_eq!(&b[40..44], &[58, 3, 255, 0]);
    }

    #[test]
    fn l4_and_small_layouts() {
        assert_eq!(
            round_trip(KeyAttr::Tcp(PortsKey {
                src: Be16(0x1234),
                dst: Be16(80)
            })),
            [8, 0, 9, 0, 0x12, 0x34, 0, 80]
        );
        assert_eq!(
            round_trip(KeyAttr::Udp(PortsKey {
                src: Be16(6784),
                dst: Be16(53)
            })),
            [8, 0, 10, 0, 0x1a, 0x80, 0, 53]
        );
        assert_eq!(
            round_trip(KeyAttr::Icmp(IcmpKey {
                icmp_type: 8,
                code: 0
            })),
            [6, 0, 11, 0, 8, 0, 0, 0]
        );
        assert_eq!(
            round_trip(KeyAttr::Icmpv6(IcmpKey {
                icmp_type: 135,
                code: 0
            })),
            [6, 0, 12, 0, 135, 0, 0, 0]
        );
        assert_eq!(
            round_trip(KeyAttr::EtherType(Be16(0x0800))),
            [6, 0, 6, 0, 8, 0, 0, 0]
        );
        assert_eq!(
            round_trip(KeyAttr::Vlan(Be16(0x1005))),
            [6, 0, 5, 0, 0x10, 5, 0, 0]
        );
        assert_eq!(
            round_trip(KeyAttr::TcpFlags(Be16(0x0012))),
            [6, 0, 18, 0, 0, 0x12, 0, 0]
        );
        let mut inport = vec![8, 0, 3, 0];
        inport.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(round_trip(KeyAttr::InPort(7)), inport);
        let mut zone = vec![6, 0, 23, 0];
        zone.extend_from_slice(&5u16.to_ne_bytes());
        zone.extend_from_slice(&[0, 0]);
        assert_eq!(round_trip(KeyAttr::CtZone(5)), zone);
        round_trip(KeyAttr::Priority(1));
        round_trip(KeyAttr::SkbMark(2));
        round_trip(KeyAttr::DpHash(3));
        round_trip(KeyAttr::RecircId(4));
        round_trip(KeyAttr::CtState(ct_state::TRACKED | ct_state::NEW));
        round_trip(KeyAttr::CtMark(9));
        round_trip(KeyAttr::CtLabels([7; 16]));
        round_trip(KeyAttr::Sctp(PortsKey {
            src: Be16(1),
            dst: Be16(2),
        }));
        round_trip(KeyAttr::Mpls(vec![Be32(0x0001_41ff)]));
        round_trip(KeyAttr::Other {
            kind: 26,
            data: vec![1; 16],
        });
    }

    #[test]
    fn arp_layout_has_tail_padding() {
        let b = round_trip(KeyAttr::Arp(ArpKey {
            sip: Ipv4Addr::new(10, 0, 0, 1),
            tip: Ipv4Addr::new(10, 0, 0, 2),
            op: Be16(1),
            sha: MAC1,
            tha: MAC2,
        }));
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..4], &[28, 0, 13, 0]);
        assert_eq!(
            &b[4..26],
            &[
                10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2
            ]
        );
        assert_eq!(&b[26..], &[0, 0]);
    }

    #[test]
    fn nd_layout() {
        let t: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b = round_trip(KeyAttr::Nd(NdKey {
            target: t,
            sll: MAC1,
            tll: MAC2,
        }));
        assert_eq!(&b[..4], &[32, 0, 14, 0]);
        assert_eq!(&b[4..20], &t.octets());
        assert_eq!(&b[20..32], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn tunnel_layout() {
        let b = round_trip(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(0x5)),
            TunnelKeyAttr::Ipv4Src(Ipv4Addr::new(192, 0, 2, 1)),
            TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2)),
            TunnelKeyAttr::Tos(0),
            TunnelKeyAttr::Ttl(64),
            TunnelKeyAttr::DontFragment,
            TunnelKeyAttr::Csum,
            TunnelKeyAttr::TpSrc(Be16(1000)),
            TunnelKeyAttr::TpDst(Be16(6784)),
        ]));
        let expect: Vec<u8> = [
            &[72, 0, 16, 0][..],
            &[12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            &[8, 0, 1, 0, 192, 0, 2, 1],
            &[8, 0, 2, 0, 192, 0, 2, 2],
            &[5, 0, 3, 0, 0, 0, 0, 0],
            &[5, 0, 4, 0, 64, 0, 0, 0],
            &[4, 0, 5, 0],
            &[4, 0, 6, 0],
            &[6, 0, 9, 0, 0x03, 0xe8, 0, 0],
            &[6, 0, 10, 0, 0x1a, 0x80, 0, 0],
        ]
        .concat();
        assert_eq!(b, expect);
    }

    #[test]
    fn encap_nests_and_wrong_sizes_fail() {
        round_trip(KeyAttr::Encap(vec![
            KeyAttr::EtherType(Be16(0x0800)),
            KeyAttr::Ipv4(Ipv4Key::default()),
        ]));
        // An IPv4 key with 11 bytes is refused, not misread.
        let bad = [15, 0, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0];
        assert!(matches!(
            FlowKey::decode(&bad, 0),
            Err(DecodeError::AttrSize { kind: 7, .. })
        ));
    }
}
