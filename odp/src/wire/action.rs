//! Flow actions (`OVS_ACTION_ATTR_*`) and their nested attribute sets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::DecodeError;
use super::key::{EthernetKey, KeyAttr};
use super::nla::{Attr, AttrIter, AttrWriter, Nla, decode_all, emit_all};
use super::types::{Be16, Be32, MacAddr, array_at};

/// Action attribute numbers (`OVS_ACTION_ATTR_*`).
pub mod attr {
    /// Output to a port (`u32`).
    pub const OUTPUT: u16 = 1;
    /// Send to userspace (nested).
    pub const USERSPACE: u16 = 2;
    /// Set a header (one nested key attribute).
    pub const SET: u16 = 3;
    /// Push a VLAN tag.
    pub const PUSH_VLAN: u16 = 4;
    /// Pop a VLAN tag.
    pub const POP_VLAN: u16 = 5;
    /// Probabilistic sample (nested).
    pub const SAMPLE: u16 = 6;
    /// Recirculate (`u32` id).
    pub const RECIRC: u16 = 7;
    /// Compute a hash.
    pub const HASH: u16 = 8;
    /// Push an MPLS label.
    pub const PUSH_MPLS: u16 = 9;
    /// Pop an MPLS label.
    pub const POP_MPLS: u16 = 10;
    /// Masked set (one nested key attribute: value then mask).
    pub const SET_MASKED: u16 = 11;
    /// Conntrack (nested).
    pub const CT: u16 = 12;
    /// Truncate (`u32` max length).
    pub const TRUNC: u16 = 13;
    /// Push an Ethernet header.
    pub const PUSH_ETH: u16 = 14;
    /// Pop the Ethernet header.
    pub const POP_ETH: u16 = 15;
    /// Clear conntrack state.
    pub const CT_CLEAR: u16 = 16;
    /// Run through a meter (`u32`).
    pub const METER: u16 = 19;
    /// Clone (nested actions).
    pub const CLONE: u16 = 20;
    /// Explicit drop with a reason (`u32`), newer kernels.
    pub const DROP: u16 = 24;
}

/// Userspace action attribute numbers.
pub mod userspace_attr {
    /// Netlink PID to send to.
    pub const PID: u16 = 1;
    /// Opaque cookie echoed in the upcall.
    pub const USERDATA: u16 = 2;
    /// Output port whose tunnel info to include.
    pub const EGRESS_TUN_PORT: u16 = 3;
    /// Include the actions in the upcall.
    pub const ACTIONS: u16 = 4;
}

/// Conntrack action attribute numbers.
pub mod ct_attr {
    /// Commit the connection.
    pub const COMMIT: u16 = 1;
    /// Zone (`u16`).
    pub const ZONE: u16 = 2;
    /// Mark value and mask.
    pub const MARK: u16 = 3;
    /// Labels value and mask.
    pub const LABELS: u16 = 4;
    /// Helper name.
    pub const HELPER: u16 = 5;
    /// NAT (nested).
    pub const NAT: u16 = 6;
    /// Commit, replacing an entry of the other direction.
    pub const FORCE_COMMIT: u16 = 7;
    /// Event mask (`u32`).
    pub const EVENTMASK: u16 = 8;
    /// Timeout policy name.
    pub const TIMEOUT: u16 = 9;
}

/// NAT attribute numbers.
pub mod nat_attr {
    /// Source NAT.
    pub const SRC: u16 = 1;
    /// Destination NAT.
    pub const DST: u16 = 2;
    /// Lowest address.
    pub const IP_MIN: u16 = 3;
    /// Highest address.
    pub const IP_MAX: u16 = 4;
    /// Lowest port (`u16`, host order).
    pub const PROTO_MIN: u16 = 5;
    /// Highest port (`u16`, host order).
    pub const PROTO_MAX: u16 = 6;
    /// Persistent mapping.
    pub const PERSISTENT: u16 = 7;
    /// Hashed port mapping.
    pub const PROTO_HASH: u16 = 8;
    /// Random port mapping.
    pub const PROTO_RANDOM: u16 = 9;
}

/// Sample attribute numbers.
pub mod sample_attr {
    /// Probability (`u32`, `u32::MAX` = always).
    pub const PROBABILITY: u16 = 1;
    /// Nested actions.
    pub const ACTIONS: u16 = 2;
}

macro_rules! other_variant_kind {
    ($self:ident, $($pat:pat => $k:expr),* $(,)?) => {
        match $self { $($pat => $k),* }
    };
}

/// One attribute of a userspace action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserspaceAttr {
    /// The Netlink PID to send the packet to.
    Pid(u32),
    /// Cookie echoed back as the upcall's userdata.
    Userdata(Vec<u8>),
    /// Output tunnel port whose metadata to attach.
    EgressTunPort(u32),
    /// Attach the flow's actions.
    Actions,
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl Nla for UserspaceAttr {
    fn kind(&self) -> u16 {
        use userspace_attr as u;
        other_variant_kind!(self,
            UserspaceAttr::Pid(_) => u::PID,
            UserspaceAttr::Userdata(_) => u::USERDATA,
            UserspaceAttr::EgressTunPort(_) => u::EGRESS_TUN_PORT,
            UserspaceAttr::Actions => u::ACTIONS,
            UserspaceAttr::Other { kind, .. } => *kind,
        )
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            UserspaceAttr::Pid(v) | UserspaceAttr::EgressTunPort(v) => w.raw(&v.to_ne_bytes()),
            UserspaceAttr::Userdata(d) | UserspaceAttr::Other { data: d, .. } => w.raw(d),
            UserspaceAttr::Actions => {}
        }
    }
    fn decode(a: &Attr<'_>, _depth: usize) -> Result<Self, DecodeError> {
        const W: &str = "userspace action";
        use userspace_attr as u;
        Ok(match a.kind {
            u::PID => UserspaceAttr::Pid(a.u32(W)?),
            u::USERDATA => UserspaceAttr::Userdata(a.payload.to_vec()),
            u::EGRESS_TUN_PORT => UserspaceAttr::EgressTunPort(a.u32(W)?),
            u::ACTIONS => UserspaceAttr::Actions,
            kind => UserspaceAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One NAT attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatAttr {
    /// Source NAT.
    Src,
    /// Destination NAT.
    Dst,
    /// Lowest address of the range.
    IpMin(IpAddr),
    /// Highest address of the range.
    IpMax(IpAddr),
    /// Lowest port.
    ProtoMin(u16),
    /// Highest port.
    ProtoMax(u16),
    /// Persistent mapping.
    Persistent,
    /// Hashed port mapping.
    ProtoHash,
    /// Random port mapping.
    ProtoRandom,
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(what: &'static str, a: &Attr<'_>) -> Result<IpAddr, DecodeError> {
    match a.payload.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(a.array::<4>(what)?))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(a.array::<16>(what)?))),
        len => Err(DecodeError::AttrSize {
            what,
            kind: a.kind,
            len,
            expected: "4 or 16",
        }),
    }
}

impl Nla for NatAttr {
    fn kind(&self) -> u16 {
        use nat_attr as n;
        other_variant_kind!(self,
            NatAttr::Src => n::SRC,
            NatAttr::Dst => n::DST,
            NatAttr::IpMin(_) => n::IP_MIN,
            NatAttr::IpMax(_) => n::IP_MAX,
            NatAttr::ProtoMin(_) => n::PROTO_MIN,
            NatAttr::ProtoMax(_) => n::PROTO_MAX,
            NatAttr::Persistent => n::PERSISTENT,
            NatAttr::ProtoHash => n::PROTO_HASH,
            NatAttr::ProtoRandom => n::PROTO_RANDOM,
            NatAttr::Other { kind, .. } => *kind,
        )
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            NatAttr::IpMin(ip) | NatAttr::IpMax(ip) => w.raw(&ip_bytes(ip)),
            NatAttr::ProtoMin(p) | NatAttr::ProtoMax(p) => w.raw(&p.to_ne_bytes()),
            NatAttr::Other { data, .. } => w.raw(data),
            NatAttr::Src
            | NatAttr::Dst
            | NatAttr::Persistent
            | NatAttr::ProtoHash
            | NatAttr::ProtoRandom => {}
        }
    }
    fn decode(a: &Attr<'_>, _depth: usize) -> Result<Self, DecodeError> {
        const W: &str = "nat";
        use nat_attr as n;
        Ok(match a.kind {
            n::SRC => NatAttr::Src,
            n::DST => NatAttr::Dst,
            n::IP_MIN => NatAttr::IpMin(ip_from(W, a)?),
            n::IP_MAX => NatAttr::IpMax(ip_from(W, a)?),
            n::PROTO_MIN => NatAttr::ProtoMin(a.u16(W)?),
            n::PROTO_MAX => NatAttr::ProtoMax(a.u16(W)?),
            n::PERSISTENT => NatAttr::Persistent,
            n::PROTO_HASH => NatAttr::ProtoHash,
            n::PROTO_RANDOM => NatAttr::ProtoRandom,
            kind => NatAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One conntrack action attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CtAttr {
    /// Commit the connection.
    Commit,
    /// Conntrack zone.
    Zone(u16),
    /// Set the mark bits selected by `mask` to `value`.
    Mark {
        /// Value.
        value: u32,
        /// Bits to change.
        mask: u32,
    },
    /// Set the label bits selected by `mask` to `value`.
    Labels {
        /// Value.
        value: [u8; 16],
        /// Bits to change.
        mask: [u8; 16],
    },
    /// ALG helper name.
    Helper(String),
    /// NAT.
    Nat(Vec<NatAttr>),
    /// Commit, replacing an entry of the opposite direction.
    ForceCommit,
    /// Which conntrack events to report.
    EventMask(u32),
    /// Timeout policy name.
    Timeout(String),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl Nla for CtAttr {
    fn kind(&self) -> u16 {
        use ct_attr as c;
        other_variant_kind!(self,
            CtAttr::Commit => c::COMMIT,
            CtAttr::Zone(_) => c::ZONE,
            CtAttr::Mark { .. } => c::MARK,
            CtAttr::Labels { .. } => c::LABELS,
            CtAttr::Helper(_) => c::HELPER,
            CtAttr::Nat(_) => c::NAT,
            CtAttr::ForceCommit => c::FORCE_COMMIT,
            CtAttr::EventMask(_) => c::EVENTMASK,
            CtAttr::Timeout(_) => c::TIMEOUT,
            CtAttr::Other { kind, .. } => *kind,
        )
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            CtAttr::Commit | CtAttr::ForceCommit => {}
            CtAttr::Zone(z) => w.raw(&z.to_ne_bytes()),
            CtAttr::Mark { value, mask } => {
                w.raw(&value.to_ne_bytes());
                w.raw(&mask.to_ne_bytes());
            }
            CtAttr::Labels { value, mask } => {
                w.raw(value);
                w.raw(mask);
            }
            CtAttr::Helper(s) | CtAttr::Timeout(s) => {
                w.raw(s.as_bytes());
                w.raw(&[0]);
            }
            CtAttr::Nat(n) => emit_all(w, n),
            CtAttr::EventMask(m) => w.raw(&m.to_ne_bytes()),
            CtAttr::Other { data, .. } => w.raw(data),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        const W: &str = "ct action";
        use ct_attr as c;
        Ok(match a.kind {
            c::COMMIT => CtAttr::Commit,
            c::ZONE => CtAttr::Zone(a.u16(W)?),
            c::MARK => {
                let b = a.array::<8>(W)?;
                CtAttr::Mark {
                    value: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    mask: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                }
            }
            c::LABELS => {
                let b = a.array::<32>(W)?;
                CtAttr::Labels {
                    value: array_at::<16>(&b, 0).unwrap_or_default(),
                    mask: array_at::<16>(&b, 16).unwrap_or_default(),
                }
            }
            c::HELPER => CtAttr::Helper(a.string(W)?),
            c::NAT => CtAttr::Nat(decode_all("nat", a.payload, depth + 1)?),
            c::FORCE_COMMIT => CtAttr::ForceCommit,
            c::EVENTMASK => CtAttr::EventMask(a.u32(W)?),
            c::TIMEOUT => CtAttr::Timeout(a.string(W)?),
            kind => CtAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One attribute of a sample action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SampleAttr {
    /// Probability out of `u32::MAX`.
    Probability(u32),
    /// Actions run on sampled packets.
    Actions(Vec<Action>),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl Nla for SampleAttr {
    fn kind(&self) -> u16 {
        match self {
            SampleAttr::Probability(_) => sample_attr::PROBABILITY,
            SampleAttr::Actions(_) => sample_attr::ACTIONS,
            SampleAttr::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            SampleAttr::Probability(p) => w.raw(&p.to_ne_bytes()),
            SampleAttr::Actions(a) => emit_all(w, a),
            SampleAttr::Other { data, .. } => w.raw(data),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            sample_attr::PROBABILITY => SampleAttr::Probability(a.u32("sample")?),
            sample_attr::ACTIONS => SampleAttr::Actions(decode_all(AW, a.payload, depth + 1)?),
            kind => SampleAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One flow action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Send to a port.
    Output(u32),
    /// Send to userspace.
    Userspace(Vec<UserspaceAttr>),
    /// Overwrite a header (or set tunnel metadata with a `Tunnel` key).
    Set(KeyAttr),
    /// Overwrite the bits of a header that `mask` selects. `value` and `mask`
    /// must be the same key type; unmasked value bits must be zero.
    SetMasked {
        /// New header bits.
        value: KeyAttr,
        /// Which bits to change.
        mask: KeyAttr,
    },
    /// Push an 802.1Q/802.1ad tag; the TCI must have the 0x1000 bit set.
    PushVlan {
        /// Tag protocol id (0x8100 or 0x88a8).
        tpid: Be16,
        /// Tag control information.
        tci: Be16,
    },
    /// Pop the outer VLAN tag.
    PopVlan,
    /// Run actions on a random fraction of packets.
    Sample(Vec<SampleAttr>),
    /// Recirculate with this id.
    Recirc(u32),
    /// Compute a hash into `dp_hash`.
    Hash {
        /// Algorithm (0 = L4, 1 = symmetric L4).
        alg: u32,
        /// Basis.
        basis: u32,
    },
    /// Push an MPLS label.
    PushMpls {
        /// Label stack entry.
        lse: Be32,
        /// New ethertype (0x8847 or 0x8848).
        ethertype: Be16,
    },
    /// Pop an MPLS label, setting this ethertype.
    PopMpls(Be16),
    /// Send through conntrack.
    Ct(Vec<CtAttr>),
    /// Truncate to this many bytes at the next output.
    Trunc(u32),
    /// Push an Ethernet header.
    PushEth(EthernetKey),
    /// Pop the Ethernet header.
    PopEth,
    /// Forget conntrack state.
    CtClear,
    /// Run through a meter.
    Meter(u32),
    /// Run actions on a copy of the packet.
    Clone(Vec<Action>),
    /// Drop with a reason code (must be the last action; newer kernels only).
    Drop(u32),
    /// Any other action.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const AW: &str = "actions";

impl Nla for Action {
    fn kind(&self) -> u16 {
        use attr as a;
        other_variant_kind!(self,
            Action::Output(_) => a::OUTPUT,
            Action::Userspace(_) => a::USERSPACE,
            Action::Set(_) => a::SET,
            Action::SetMasked { .. } => a::SET_MASKED,
            Action::PushVlan { .. } => a::PUSH_VLAN,
            Action::PopVlan => a::POP_VLAN,
            Action::Sample(_) => a::SAMPLE,
            Action::Recirc(_) => a::RECIRC,
            Action::Hash { .. } => a::HASH,
            Action::PushMpls { .. } => a::PUSH_MPLS,
            Action::PopMpls(_) => a::POP_MPLS,
            Action::Ct(_) => a::CT,
            Action::Trunc(_) => a::TRUNC,
            Action::PushEth(_) => a::PUSH_ETH,
            Action::PopEth => a::POP_ETH,
            Action::CtClear => a::CT_CLEAR,
            Action::Meter(_) => a::METER,
            Action::Clone(_) => a::CLONE,
            Action::Drop(_) => a::DROP,
            Action::Other { kind, .. } => *kind,
        )
    }

    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            Action::Output(v)
            | Action::Recirc(v)
            | Action::Trunc(v)
            | Action::Meter(v)
            | Action::Drop(v) => w.raw(&v.to_ne_bytes()),
            Action::Userspace(u) => emit_all(w, u),
            Action::Set(k) => k.emit(w),
            Action::SetMasked { value, mask } => {
                w.with(value.kind(), |w| {
                    value.emit_payload(w);
                    mask.emit_payload(w);
                });
            }
            Action::PushVlan { tpid, tci } => {
                w.raw(&tpid.to_bytes());
                w.raw(&tci.to_bytes());
            }
            Action::PopVlan | Action::PopEth | Action::CtClear => {}
            Action::Sample(s) => emit_all(w, s),
            Action::Hash { alg, basis } => {
                w.raw(&alg.to_ne_bytes());
                w.raw(&basis.to_ne_bytes());
            }
            Action::PushMpls { lse, ethertype } => {
                // struct ovs_action_push_mpls: be32 + be16, padded to 8.
                w.raw(&lse.to_bytes());
                w.raw(&ethertype.to_bytes());
                w.raw(&[0, 0]);
            }
            Action::PopMpls(t) => w.raw(&t.to_bytes()),
            Action::Ct(c) => emit_all(w, c),
            Action::PushEth(e) => {
                w.raw(&e.src.0);
                w.raw(&e.dst.0);
            }
            Action::Clone(a) => emit_all(w, a),
            Action::Other { data, .. } => w.raw(data),
        }
    }

    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        use attr as k;
        Ok(match a.kind {
            k::OUTPUT => Action::Output(a.u32(AW)?),
            k::USERSPACE => {
                Action::Userspace(decode_all("userspace action", a.payload, depth + 1)?)
            }
            k::SET => Action::Set(single_key(a, depth)?),
            k::SET_MASKED => {
                let inner = single_attr(a)?;
                let half = inner.payload.len() / 2;
                if inner.payload.len() % 2 != 0 {
                    return Err(DecodeError::AttrSize {
                        what: "set_masked",
                        kind: inner.kind,
                        len: inner.payload.len(),
                        expected: "an even length (value then mask)",
                    });
                }
                let (v, m) = inner.payload.split_at(half);
                Action::SetMasked {
                    value: KeyAttr::decode_payload(inner.kind, v, depth + 1)?,
                    mask: KeyAttr::decode_payload(inner.kind, m, depth + 1)?,
                }
            }
            k::PUSH_VLAN => {
                let b = a.array::<4>(AW)?;
                Action::PushVlan {
                    tpid: Be16::from_bytes([b[0], b[1]]),
                    tci: Be16::from_bytes([b[2], b[3]]),
                }
            }
            k::POP_VLAN => Action::PopVlan,
            k::SAMPLE => Action::Sample(decode_all("sample", a.payload, depth + 1)?),
            k::RECIRC => Action::Recirc(a.u32(AW)?),
            k::HASH => {
                let b = a.array::<8>(AW)?;
                Action::Hash {
                    alg: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    basis: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                }
            }
            k::PUSH_MPLS => {
                let b = a.array::<8>(AW)?;
                Action::PushMpls {
                    lse: Be32::from_bytes([b[0], b[1], b[2], b[3]]),
                    ethertype: Be16::from_bytes([b[4], b[5]]),
                }
            }
            k::POP_MPLS => Action::PopMpls(a.be16(AW)?),
            k::CT => Action::Ct(decode_all("ct action", a.payload, depth + 1)?),
            k::TRUNC => Action::Trunc(a.u32(AW)?),
            k::PUSH_ETH => {
                let b = a.array::<12>(AW)?;
                Action::PushEth(EthernetKey {
                    src: MacAddr(array_at::<6>(&b, 0).unwrap_or_default()),
                    dst: MacAddr(array_at::<6>(&b, 6).unwrap_or_default()),
                })
            }
            k::POP_ETH => Action::PopEth,
            k::CT_CLEAR => Action::CtClear,
            k::METER => Action::Meter(a.u32(AW)?),
            k::CLONE => Action::Clone(decode_all(AW, a.payload, depth + 1)?),
            k::DROP => Action::Drop(a.u32(AW)?),
            kind => Action::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

fn single_attr<'a>(a: &Attr<'a>) -> Result<Attr<'a>, DecodeError> {
    let mut it = AttrIter::new("set action", a.payload);
    match (it.next(), it.next()) {
        (Some(inner), None) => inner,
        _ => Err(DecodeError::Unexpected(
            "a set action must hold exactly one key attribute",
        )),
    }
}

fn single_key(a: &Attr<'_>, depth: usize) -> Result<KeyAttr, DecodeError> {
    if depth + 1 > super::nla::MAX_DEPTH {
        return Err(DecodeError::TooDeep(super::nla::MAX_DEPTH));
    }
    KeyAttr::decode(&single_attr(a)?, depth + 1)
}

/// Decodes an action list (the payload of an ACTIONS attribute).
pub fn decode_actions(buf: &[u8], depth: usize) -> Result<Vec<Action>, DecodeError> {
    decode_all(AW, buf, depth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::{Ipv4Key, TunnelKeyAttr};
    use crate::wire::types::Be64;

    fn round_trip(a: Action) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = AttrWriter::new(&mut buf);
        a.emit(&mut w);
        w.finish().unwrap();
        assert_eq!(decode_actions(&buf, 0).unwrap(), vec![a]);
        buf
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    #[test]
    fn output_and_simple_actions() {
        assert_eq!(
            round_trip(Action::Output(2)),
            [&[8, 0, 1, 0][..], &ne32(2)].concat()
        );
        assert_eq!(round_trip(Action::PopVlan), [4, 0, 5, 0]);
        assert_eq!(
            round_trip(Action::PushVlan {
                tpid: Be16(0x8100),
                tci: Be16(0x1005)
            }),
            [8, 0, 4, 0, 0x81, 0, 0x10, 5]
        );
        assert_eq!(
            round_trip(Action::Recirc(7)),
            [&[8, 0, 7, 0][..], &ne32(7)].concat()
        );
        assert_eq!(
            round_trip(Action::Hash { alg: 0, basis: 9 }),
            [&[12, 0, 8, 0][..], &ne32(0), &ne32(9)].concat()
        );
        assert_eq!(
            round_trip(Action::Trunc(100)),
            [&[8, 0, 13, 0][..], &ne32(100)].concat()
        );
        assert_eq!(
            round_trip(Action::Drop(0)),
            [&[8, 0, 24, 0][..], &ne32(0)].concat()
        );
        assert_eq!(
            round_trip(Action::PushMpls {
                lse: Be32(0x0001_4140),
                ethertype: Be16(0x8847)
            }),
            [12, 0, 9, 0, 0, 1, 0x41, 0x40, 0x88, 0x47, 0, 0]
        );
        round_trip(Action::PopMpls(Be16(0x0800)));
        round_trip(Action::CtClear);
        round_trip(Action::PopEth);
        round_trip(Action::Meter(3));
        round_trip(Action::PushEth(EthernetKey::default()));
        round_trip(Action::Other {
            kind: 23,
            data: vec![4, 0, 1, 0],
        });
    }

    #[test]
    fn set_tunnel_layout() {
        let b = round_trip(Action::Set(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(5)),
            TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2)),
            TunnelKeyAttr::Ttl(64),
            TunnelKeyAttr::DontFragment,
        ])));
        let expect: Vec<u8> = [
            &[40, 0, 3, 0][..],
            &[36, 0, 16, 0],
            &[12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            &[8, 0, 2, 0, 192, 0, 2, 2],
            &[5, 0, 4, 0, 64, 0, 0, 0],
            &[4, 0, 5, 0],
        ]
        .concat();
        assert_eq!(b, expect);
    }

    #[test]
    fn set_masked_layout() {
        let value = KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::new(10, 0, 0, 9),
            ..Default::default()
        });
        let mask = KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::BROADCAST,
            ..Default::default()
        });
        let b = round_trip(Action::SetMasked { value, mask });
        let expect: Vec<u8> = [
            &[32, 0, 11, 0][..],
            &[28, 0, 7, 0],
            &[0, 0, 0, 0, 10, 0, 0, 9, 0, 0, 0, 0],
            &[0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(b, expect);
    }

    #[test]
    fn nested_actions_round_trip() {
        round_trip(Action::Userspace(vec![
            UserspaceAttr::Pid(1234),
            UserspaceAttr::Userdata(vec![1, 2, 3]),
            UserspaceAttr::EgressTunPort(3),
            UserspaceAttr::Actions,
        ]));
        let b = round_trip(Action::Ct(vec![
            CtAttr::Commit,
            CtAttr::Zone(5),
            CtAttr::Mark {
                value: 1,
                mask: 0xff,
            },
            CtAttr::Labels {
                value: [1; 16],
                mask: [0xff; 16],
            },
            CtAttr::Helper("ftp".into()),
            CtAttr::Nat(vec![
                NatAttr::Src,
                NatAttr::IpMin(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
                NatAttr::IpMax(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                NatAttr::ProtoMin(1000),
                NatAttr::ProtoMax(2000),
                NatAttr::Persistent,
                NatAttr::ProtoHash,
                NatAttr::ProtoRandom,
            ]),
            CtAttr::ForceCommit,
            CtAttr::EventMask(3),
            CtAttr::Timeout("t".into()),
        ]));
        assert_eq!(&b[2..4], &[12, 0]);
        round_trip(Action::Clone(vec![
            Action::Clone(vec![Action::Output(1)]),
            Action::Output(2),
        ]));
        round_trip(Action::Sample(vec![
            SampleAttr::Probability(u32::MAX),
            SampleAttr::Actions(vec![Action::Output(3)]),
        ]));
    }

    #[test]
    fn malformed_set_is_an_error() {
        // SET with two nested attributes.
        let buf = [12, 0, 3, 0, 4, 0, 1, 0, 4, 0, 1, 0];
        assert!(decode_actions(&buf, 0).is_err());
        // SET_MASKED with an odd payload.
        let buf = [12, 0, 11, 0, 7, 0, 6, 0, 1, 2, 3, 0];
        assert!(decode_actions(&buf, 0).is_err());
    }
}
