//! The `ovs_flow` family: flow install, modify, lookup, delete and dump.

use super::action::{Action, decode_actions};
use super::datapath::u64s;
use super::error::DecodeError;
use super::key::FlowKey;
use super::nla::{Attr, AttrWriter, Nla, decode_all, emit_all};
use super::ovs::{ObjCmd, OvsFamily, OvsMessage};

/// Flow attribute numbers (`OVS_FLOW_ATTR_*`).
pub mod attr {
    /// Key (nested key attributes).
    pub const KEY: u16 = 1;
    /// Actions (nested).
    pub const ACTIONS: u16 = 2;
    /// `struct ovs_flow_stats`.
    pub const STATS: u16 = 3;
    /// OR of TCP flags seen (`u8`).
    pub const TCP_FLAGS: u16 = 4;
    /// Last use, milliseconds of monotonic time (`u64`).
    pub const USED: u16 = 5;
    /// Clear stats, flags and last use (flag).
    pub const CLEAR: u16 = 6;
    /// Mask (nested key attributes).
    pub const MASK: u16 = 7;
    /// Probe: the kernel logs no errors for this request (flag).
    pub const PROBE: u16 = 8;
    /// Unique flow id (1 to 16 bytes).
    pub const UFID: u16 = 9;
    /// `OVS_UFID_F_*` flags (`u32`).
    pub const UFID_FLAGS: u16 = 10;
    /// Padding.
    pub const PAD: u16 = 11;
}

/// `OVS_UFID_F_*`: what replies may leave out when flows are addressed by UFID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UfidFlags(pub u32);

impl UfidFlags {
    /// Leave out the key.
    pub const OMIT_KEY: UfidFlags = UfidFlags(1);
    /// Leave out the mask.
    pub const OMIT_MASK: UfidFlags = UfidFlags(2);
    /// Leave out the actions.
    pub const OMIT_ACTIONS: UfidFlags = UfidFlags(4);
    /// All of the above: the tersest replies and dumps.
    pub const TERSE: UfidFlags = UfidFlags(7);
}

impl std::ops::BitOr for UfidFlags {
    type Output = UfidFlags;
    fn bitor(self, rhs: Self) -> Self {
        UfidFlags(self.0 | rhs.0)
    }
}

/// A unique flow identifier: 1 to 16 bytes chosen by userspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ufid(Vec<u8>);

impl Ufid {
    /// A UFID from 1 to 16 bytes; `None` otherwise.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (1..=16)
            .contains(&bytes.len())
            .then(|| Ufid(bytes.to_vec()))
    }
    /// A 16-byte UFID from a `u128` (big-endian bytes).
    pub fn from_u128(v: u128) -> Self {
        Ufid(v.to_be_bytes().to_vec())
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `struct ovs_flow_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Packets matched.
    pub n_packets: u64,
    /// Bytes matched.
    pub n_bytes: u64,
}

/// One `OVS_FLOW_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowAttr {
    /// The flow key.
    Key(FlowKey),
    /// The actions; an empty list drops.
    Actions(Vec<Action>),
    /// Statistics.
    Stats(FlowStats),
    /// OR of TCP flags seen.
    TcpFlags(u8),
    /// Last use (ms of monotonic time).
    Used(u64),
    /// Clear statistics (SET only).
    Clear,
    /// The mask.
    Mask(FlowKey),
    /// Feature probe.
    Probe,
    /// Unique flow id. Decoded UFIDs outside 1..=16 bytes stay raw in `Other`.
    Ufid(Ufid),
    /// UFID flags.
    UfidFlags(UfidFlags),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const W: &str = "flow";

impl Nla for FlowAttr {
    fn kind(&self) -> u16 {
        match self {
            FlowAttr::Key(_) => attr::KEY,
            FlowAttr::Actions(_) => attr::ACTIONS,
            FlowAttr::Stats(_) => attr::STATS,
            FlowAttr::TcpFlags(_) => attr::TCP_FLAGS,
            FlowAttr::Used(_) => attr::USED,
            FlowAttr::Clear => attr::CLEAR,
            FlowAttr::Mask(_) => attr::MASK,
            FlowAttr::Probe => attr::PROBE,
            FlowAttr::Ufid(_) => attr::UFID,
            FlowAttr::UfidFlags(_) => attr::UFID_FLAGS,
            FlowAttr::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            FlowAttr::Key(k) | FlowAttr::Mask(k) => k.emit(w),
            FlowAttr::Actions(a) => emit_all(w, a),
            FlowAttr::Stats(s) => {
                w.raw(&s.n_packets.to_ne_bytes());
                w.raw(&s.n_bytes.to_ne_bytes());
            }
            FlowAttr::TcpFlags(f) => w.raw(&[*f]),
            FlowAttr::Used(u) => w.raw(&u.to_ne_bytes()),
            FlowAttr::Clear | FlowAttr::Probe => {}
            FlowAttr::Ufid(u) => w.raw(u.as_bytes()),
            FlowAttr::UfidFlags(f) => w.raw(&f.0.to_ne_bytes()),
            FlowAttr::Other { data, .. } => w.raw(data),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            attr::KEY => FlowAttr::Key(FlowKey::decode(a.payload, depth + 1)?),
            attr::ACTIONS => FlowAttr::Actions(decode_actions(a.payload, depth + 1)?),
            attr::STATS => {
                let [n_packets, n_bytes] = u64s::<2>(W, a)?;
                FlowAttr::Stats(FlowStats { n_packets, n_bytes })
            }
            attr::TCP_FLAGS => FlowAttr::TcpFlags(a.u8(W)?),
            attr::USED => FlowAttr::Used(a.u64(W)?),
            attr::CLEAR => FlowAttr::Clear,
            attr::MASK => FlowAttr::Mask(FlowKey::decode(a.payload, depth + 1)?),
            attr::PROBE => FlowAttr::Probe,
            attr::UFID => match Ufid::new(a.payload) {
                Some(u) => FlowAttr::Ufid(u),
                None => FlowAttr::Other {
                    kind: a.kind,
                    data: a.payload.to_vec(),
                },
            },
            attr::UFID_FLAGS => FlowAttr::UfidFlags(UfidFlags(a.u32(W)?)),
            kind => FlowAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

impl OvsFamily for FlowAttr {
    const NAME: &'static str = "ovs_flow";
    const VERSION: u8 = 1;
    type Cmd = ObjCmd;
}

/// A message of the `ovs_flow` family.
pub type FlowMessage = OvsMessage<FlowAttr>;

/// A flow as the kernel reports it (fields may be missing in terse replies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowInfo {
    /// The datapath.
    pub dp_ifindex: i32,
    /// The key.
    pub key: Option<FlowKey>,
    /// The mask.
    pub mask: Option<FlowKey>,
    /// The actions.
    pub actions: Option<Vec<Action>>,
    /// Statistics (absent when zero).
    pub stats: Option<FlowStats>,
    /// Last use.
    pub used: Option<u64>,
    /// OR of TCP flags seen.
    pub tcp_flags: Option<u8>,
    /// UFID, if the flow has one.
    pub ufid: Option<Ufid>,
}

impl FlowInfo {
    /// Collects a reply's attributes.
    pub fn from_message(m: &FlowMessage) -> Self {
        let mut info = FlowInfo {
            dp_ifindex: m.dp_ifindex,
            ..Default::default()
        };
        for a in &m.attrs {
            match a {
                FlowAttr::Key(k) => info.key = Some(k.clone()),
                FlowAttr::Mask(k) => info.mask = Some(k.clone()),
                FlowAttr::Actions(x) => info.actions = Some(x.clone()),
                FlowAttr::Stats(s) => info.stats = Some(*s),
                FlowAttr::Used(u) => info.used = Some(*u),
                FlowAttr::TcpFlags(f) => info.tcp_flags = Some(*f),
                FlowAttr::Ufid(u) => info.ufid = Some(u.clone()),
                _ => {}
            }
        }
        info
    }
}

/// Decodes an attribute list of the flow family (used by the fuzzer).
pub fn decode_flow_attrs(buf: &[u8]) -> Result<Vec<FlowAttr>, DecodeError> {
    decode_all(W, buf, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::{EthernetKey, Ipv4Key, KeyAttr};
    use crate::wire::types::{Be16, MacAddr};
    use std::net::Ipv4Addr;

    fn sample_flow() -> FlowMessage {
        let key = FlowKey::new()
            .with(KeyAttr::InPort(1))
            .with(KeyAttr::Ethernet(EthernetKey {
                src: MacAddr([2, 0, 0, 0, 0, 1]),
                dst: MacAddr([2, 0, 0, 0, 0, 2]),
            }))
            .with(KeyAttr::EtherType(Be16(0x0800)))
            .with(KeyAttr::Ipv4(Ipv4Key {
                dst: Ipv4Addr::new(10, 32, 0, 1),
                ..Default::default()
            }));
        let mask = FlowKey::new()
            .with(KeyAttr::InPort(u32::MAX))
            .with(KeyAttr::Ethernet(EthernetKey {
                src: MacAddr([0; 6]),
                dst: MacAddr::BROADCAST,
            }))
            .with(KeyAttr::EtherType(Be16(0xffff)))
            .with(KeyAttr::Ipv4(Ipv4Key {
                dst: Ipv4Addr::new(255, 240, 0, 0),
                ..Default::default()
            }));
        FlowMessage::new(
            ObjCmd::New,
            5,
            vec![
                FlowAttr::Ufid(Ufid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)),
                FlowAttr::Key(key),
                FlowAttr::Mask(mask),
                FlowAttr::Actions(vec![Action::Output(2)]),
                FlowAttr::UfidFlags(UfidFlags::OMIT_ACTIONS | UfidFlags::OMIT_MASK),
            ],
        )
    }

    #[test]
    fn flow_request_round_trip_and_layout() {
        let m = sample_flow();
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1f, 0x405, 44).unwrap();
        let body = &buf[16..];
        assert_eq!(&body[..4], &[1, 1, 0, 0]);
        // UFID attribute: 4 + 16
        assert_eq!(&body[8..12], &[20, 0, 9, 0]);
        assert_eq!(body[12], 1);
        // key: 4 + in_port 8 + eth 16 + ethertype 8 + ipv4 16 = 52
        assert_eq!(&body[28..32], &[52, 0, 1, 0]);
        assert_eq!(FlowMessage::decode(body).unwrap(), m);
    }

    #[test]
    fn reply_round_trip_with_stats() {
        let mut m = sample_flow();
        m.attrs.push(FlowAttr::Stats(FlowStats {
            n_packets: 10,
            n_bytes: 980,
        }));
        m.attrs.push(FlowAttr::Used(123_456));
        m.attrs.push(FlowAttr::TcpFlags(0x12));
        m.attrs.push(FlowAttr::Clear);
        m.attrs.push(FlowAttr::Probe);
        m.attrs.push(FlowAttr::Other {
            kind: 11,
            data: vec![],
        });
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1f, 0, 0).unwrap();
        let back = FlowMessage::decode(&buf[16..]).unwrap();
        assert_eq!(back, m);
        let info = FlowInfo::from_message(&back);
        assert_eq!(
            info.stats,
            Some(FlowStats {
                n_packets: 10,
                n_bytes: 980
            })
        );
        assert_eq!(info.used, Some(123_456));
        assert_eq!(info.key.unwrap().in_port(), Some(1));
    }

    #[test]
    fn empty_actions_mean_drop_and_round_trip() {
        let m = FlowMessage::new(ObjCmd::Set, 5, vec![FlowAttr::Actions(vec![])]);
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1f, 0, 0).unwrap();
        assert_eq!(&buf[24..28], &[4, 0, 2, 0]);
        assert_eq!(FlowMessage::decode(&buf[16..]).unwrap(), m);
    }
}
