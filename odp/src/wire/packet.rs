//! The `ovs_packet` family: upcalls (MISS, ACTION) from the kernel and
//! EXECUTE requests to it.

use super::action::{Action, decode_actions};
use super::error::DecodeError;
use super::key::{FlowKey, TunnelKeyAttr};
use super::nla::{Attr, AttrWriter, Nla, decode_all, emit_all};
use super::ovs::{OvsFamily, OvsMessage};

/// Packet attribute numbers (`OVS_PACKET_ATTR_*`).
pub mod attr {
    /// The packet, from the Ethernet header on.
    pub const PACKET: u16 = 1;
    /// Flow key (nested).
    pub const KEY: u16 = 2;
    /// Actions (nested).
    pub const ACTIONS: u16 = 3;
    /// Userdata from a userspace action.
    pub const USERDATA: u16 = 4;
    /// Egress tunnel key (nested tunnel attributes).
    pub const EGRESS_TUN_KEY: u16 = 5;
    /// Feature probe (flag).
    pub const PROBE: u16 = 8;
    /// Maximum received fragment size (`u16`).
    pub const MRU: u16 = 9;
    /// Length before truncation (`u32`).
    pub const LEN: u16 = 10;
    /// Packet hash (`u64`).
    pub const HASH: u16 = 11;
    /// PID for upcalls triggered during EXECUTE (`u32`).
    pub const UPCALL_PID: u16 = 12;
}

/// Commands of the packet family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketCmd {
    /// Upcall: no flow matched.
    Miss,
    /// Upcall: a userspace action fired.
    Action,
    /// Request: run actions on a packet.
    Execute,
    /// A command number this crate does not know.
    Other(u8),
}

impl From<u8> for PacketCmd {
    fn from(v: u8) -> Self {
        match v {
            1 => PacketCmd::Miss,
            2 => PacketCmd::Action,
            3 => PacketCmd::Execute,
            o => PacketCmd::Other(o),
        }
    }
}

impl From<PacketCmd> for u8 {
    fn from(c: PacketCmd) -> u8 {
        match c {
            PacketCmd::Miss => 1,
            PacketCmd::Action => 2,
            PacketCmd::Execute => 3,
            PacketCmd::Other(o) => o,
        }
    }
}

/// One `OVS_PACKET_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketAttr {
    /// Packet bytes.
    Packet(Vec<u8>),
    /// Flow key.
    Key(FlowKey),
    /// Actions.
    Actions(Vec<Action>),
    /// Userdata.
    Userdata(Vec<u8>),
    /// Egress tunnel key.
    EgressTunKey(Vec<TunnelKeyAttr>),
    /// Probe flag.
    Probe,
    /// Maximum received fragment size.
    Mru(u16),
    /// Length before truncation.
    Len(u32),
    /// Packet hash.
    Hash(u64),
    /// Upcall PID for EXECUTE.
    UpcallPid(u32),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const W: &str = "packet";

impl Nla for PacketAttr {
    fn kind(&self) -> u16 {
        match self {
            PacketAttr::Packet(_) => attr::PACKET,
            PacketAttr::Key(_) => attr::KEY,
            PacketAttr::Actions(_) => attr::ACTIONS,
            PacketAttr::Userdata(_) => attr::USERDATA,
            PacketAttr::EgressTunKey(_) => attr::EGRESS_TUN_KEY,
            PacketAttr::Probe => attr::PROBE,
            PacketAttr::Mru(_) => attr::MRU,
            PacketAttr::Len(_) => attr::LEN,
            PacketAttr::Hash(_) => attr::HASH,
            PacketAttr::UpcallPid(_) => attr::UPCALL_PID,
            PacketAttr::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            PacketAttr::Packet(d) | PacketAttr::Userdata(d) | PacketAttr::Other { data: d, .. } => {
                w.raw(d)
            }
            PacketAttr::Key(k) => k.emit(w),
            PacketAttr::Actions(a) => emit_all(w, a),
            PacketAttr::EgressTunKey(t) => emit_all(w, t),
            PacketAttr::Probe => {}
            PacketAttr::Mru(v) => w.raw(&v.to_ne_bytes()),
            PacketAttr::Len(v) | PacketAttr::UpcallPid(v) => w.raw(&v.to_ne_bytes()),
            PacketAttr::Hash(v) => w.raw(&v.to_ne_bytes()),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            attr::PACKET => PacketAttr::Packet(a.payload.to_vec()),
            attr::KEY => PacketAttr::Key(FlowKey::decode(a.payload, depth + 1)?),
            attr::ACTIONS => PacketAttr::Actions(decode_actions(a.payload, depth + 1)?),
            attr::USERDATA => PacketAttr::Userdata(a.payload.to_vec()),
            attr::EGRESS_TUN_KEY => {
                PacketAttr::EgressTunKey(decode_all("tunnel key", a.payload, depth + 1)?)
            }
            attr::PROBE => PacketAttr::Probe,
            attr::MRU => PacketAttr::Mru(a.u16(W)?),
            attr::LEN => PacketAttr::Len(a.u32(W)?),
            attr::HASH => PacketAttr::Hash(a.u64(W)?),
            attr::UPCALL_PID => PacketAttr::UpcallPid(a.u32(W)?),
            kind => PacketAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

impl OvsFamily for PacketAttr {
    const NAME: &'static str = "ovs_packet";
    const VERSION: u8 = 1;
    type Cmd = PacketCmd;
}

/// A message of the `ovs_packet` family.
pub type PacketMessage = OvsMessage<PacketAttr>;

/// A decoded upcall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcall {
    /// MISS or ACTION.
    pub cmd: PacketCmd,
    /// The datapath.
    pub dp_ifindex: i32,
    /// The packet bytes.
    pub packet: Vec<u8>,
    /// The flow key the kernel extracted.
    pub key: FlowKey,
    /// Userdata of the userspace action (ACTION upcalls).
    pub userdata: Option<Vec<u8>>,
    /// Actions, when the userspace action asked for them.
    pub actions: Option<Vec<Action>>,
    /// Egress tunnel key, when asked for.
    pub egress_tun_key: Option<Vec<TunnelKeyAttr>>,
    /// MRU of a reassembled packet.
    pub mru: Option<u16>,
    /// Length before truncation.
    pub len: Option<u32>,
    /// Packet hash.
    pub hash: Option<u64>,
}

impl Upcall {
    /// Decodes an upcall message body (bytes after the netlink header).
    /// Fails on non-upcall commands or a missing packet or key.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let m = PacketMessage::decode(body)?;
        if !matches!(m.cmd, PacketCmd::Miss | PacketCmd::Action) {
            return Err(DecodeError::Unexpected("packet message is not an upcall"));
        }
        let (mut packet, mut key) = (None, None);
        let mut up = Upcall {
            cmd: m.cmd,
            dp_ifindex: m.dp_ifindex,
            packet: Vec::new(),
            key: FlowKey::new(),
            userdata: None,
            actions: None,
            egress_tun_key: None,
            mru: None,
            len: None,
            hash: None,
        };
        for a in m.attrs {
            match a {
                PacketAttr::Packet(p) => packet = Some(p),
                PacketAttr::Key(k) => key = Some(k),
                PacketAttr::Userdata(u) => up.userdata = Some(u),
                PacketAttr::Actions(x) => up.actions = Some(x),
                PacketAttr::EgressTunKey(t) => up.egress_tun_key = Some(t),
                PacketAttr::Mru(v) => up.mru = Some(v),
                PacketAttr::Len(v) => up.len = Some(v),
                PacketAttr::Hash(v) => up.hash = Some(v),
                _ => {}
            }
        }
        match (packet, key) {
            (Some(p), Some(k)) => {
                up.packet = p;
                up.key = k;
                Ok(up)
            }
            _ => Err(DecodeError::Unexpected("upcall without packet or key")),
        }
    }
}

/// Builds an EXECUTE request: `packet` (at least 14 bytes), a key carrying
/// metadata (in_port, tunnel...) and the actions to run.
pub fn execute_message(
    dp_ifindex: i32,
    packet: &[u8],
    key: FlowKey,
    actions: Vec<Action>,
) -> PacketMessage {
    PacketMessage::new(
        PacketCmd::Execute,
        dp_ifindex,
        vec![
            PacketAttr::Packet(packet.to_vec()),
            PacketAttr::Key(key),
            PacketAttr::Actions(actions),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::KeyAttr;
    use crate::wire::netlink::{MessageIter, NlMsgHeader, Payload};
    use crate::wire::types::Be16;

    #[test]
    fn execute_round_trip() {
        let m = execute_message(
            3,
            &[0xff; 60],
            FlowKey::new().with(KeyAttr::InPort(1)),
            vec![Action::Output(2)],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x21, 0x5, 1).unwrap();
        assert_eq!(&buf[16..20], &[3, 1, 0, 0]);
        assert_eq!(PacketMessage::decode(&buf[16..]).unwrap(), m);
    }

    /// A MISS upcall whose packet attribute is the last one and unpadded, as
    /// the kernel sends with the UNALIGNED feature: nlmsg_len is 4k+1.
    #[test]
    fn unaligned_miss_upcall() {
        let key = FlowKey::new()
            .with(KeyAttr::InPort(2))
            .with(KeyAttr::EtherType(Be16(0x0806)));
        let mut body = vec![1u8, 1, 0, 0];
        body.extend_from_slice(&9i32.to_ne_bytes());
        {
            let mut w = AttrWriter::new(&mut body);
            PacketAttr::Key(key.clone()).emit(&mut w);
            w.finish().unwrap();
        }
        let pkt: Vec<u8> = (0..61u8).collect();
        body.extend_from_slice(&((4 + pkt.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&attr::PACKET.to_ne_bytes());
        body.extend_from_slice(&pkt);
        let hdr = NlMsgHeader {
            len: (16 + body.len()) as u32,
            kind: 0x21,
            flags: 0,
            seq: 0,
            pid: 0,
        };
        let mut msg = hdr.to_bytes().to_vec();
        msg.extend_from_slice(&body);
        assert_eq!(msg.len() % 4, 1);
        let raw = MessageIter::new(&msg).next().unwrap().unwrap();
        let Payload::Data(b) = raw.payload().unwrap() else {
            panic!("not data")
        };
        let up = Upcall::decode(b).unwrap();
        assert_eq!(up.cmd, PacketCmd::Miss);
        assert_eq!(up.dp_ifindex, 9);
        assert_eq!(up.packet, pkt);
        assert_eq!(up.key, key);
    }

    #[test]
    fn action_upcall_with_userdata() {
        let m = PacketMessage::new(
            PacketCmd::Action,
            4,
            vec![
                PacketAttr::Packet(vec![1; 20]),
                PacketAttr::Key(FlowKey::new().with(KeyAttr::InPort(1))),
                PacketAttr::Userdata(vec![9, 9]),
                PacketAttr::Mru(1500),
                PacketAttr::Len(20),
                PacketAttr::Hash(77),
                PacketAttr::Other {
                    kind: 40,
                    data: vec![1],
                },
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x21, 0, 0).unwrap();
        assert_eq!(PacketMessage::decode(&buf[16..]).unwrap(), m);
        let up = Upcall::decode(&buf[16..]).unwrap();
        assert_eq!(up.userdata, Some(vec![9, 9]));
        assert_eq!((up.mru, up.len, up.hash), (Some(1500), Some(20), Some(77)));
        // EXECUTE is not an upcall.
        let ex = execute_message(1, &[0; 14], FlowKey::new(), vec![]);
        let mut buf = Vec::new();
        ex.encode(&mut buf, 0x21, 0, 0).unwrap();
        assert!(Upcall::decode(&buf[16..]).is_err());
    }
}
