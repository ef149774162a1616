//! The `ovs_vport` family: datapath ports (netdev, internal, tunnels).

use super::datapath::u64s;
use super::error::DecodeError;
use super::nla::{Attr, AttrWriter, Nla, decode_all, emit_all};
use super::ovs::{ObjCmd, OvsFamily, OvsMessage};

/// Vport attribute numbers (`OVS_VPORT_ATTR_*`).
pub mod attr {
    /// Port number (`u32`).
    pub const PORT_NO: u16 = 1;
    /// Vport type (`u32`).
    pub const TYPE: u16 = 2;
    /// Name (string).
    pub const NAME: u16 = 3;
    /// Type-specific options (nested).
    pub const OPTIONS: u16 = 4;
    /// Upcall PIDs (array of `u32`).
    pub const UPCALL_PID: u16 = 5;
    /// `struct ovs_vport_stats`.
    pub const STATS: u16 = 6;
    /// Padding.
    pub const PAD: u16 = 7;
    /// Ifindex of the vport's netdev.
    pub const IFINDEX: u16 = 8;
    /// Network namespace id of the netdev.
    pub const NETNSID: u16 = 9;
    /// Upcall statistics (nested).
    pub const UPCALL_STATS: u16 = 10;
}

/// Tunnel option numbers (`OVS_TUNNEL_ATTR_*`) inside `OPTIONS`.
pub mod tunnel_attr {
    /// UDP destination port: exactly 2 bytes, host byte order.
    pub const DST_PORT: u16 = 1;
    /// Extensions (nested `OVS_VXLAN_EXT_*`).
    pub const EXTENSION: u16 = 2;
}

/// VXLAN extension: group-based policy.
pub const OVS_VXLAN_EXT_GBP: u16 = 1;

/// `OVS_VPORT_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VportType {
    /// An existing network device.
    Netdev,
    /// A device created by and internal to the datapath.
    Internal,
    /// GRE tunnel.
    Gre,
    /// VXLAN tunnel.
    Vxlan,
    /// Geneve tunnel.
    Geneve,
    /// A type number this crate does not know.
    Other(u32),
}

impl From<u32> for VportType {
    fn from(v: u32) -> Self {
        match v {
            1 => VportType::Netdev,
            2 => VportType::Internal,
            3 => VportType::Gre,
            4 => VportType::Vxlan,
            5 => VportType::Geneve,
            o => VportType::Other(o),
        }
    }
}

impl From<VportType> for u32 {
    fn from(t: VportType) -> u32 {
        match t {
            VportType::Netdev => 1,
            VportType::Internal => 2,
            VportType::Gre => 3,
            VportType::Vxlan => 4,
            VportType::Geneve => 5,
            VportType::Other(o) => o,
        }
    }
}

/// `struct ovs_vport_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VportStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Receive drops.
    pub rx_dropped: u64,
    /// Transmit drops.
    pub tx_dropped: u64,
}

/// One VXLAN extension (`OVS_VXLAN_EXT_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VxlanExt {
    /// Group-based policy.
    Gbp,
    /// Any other extension.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl Nla for VxlanExt {
    fn kind(&self) -> u16 {
        match self {
            VxlanExt::Gbp => OVS_VXLAN_EXT_GBP,
            VxlanExt::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        if let VxlanExt::Other { data, .. } = self {
            w.raw(data)
        }
    }
    fn decode(a: &Attr<'_>, _depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            OVS_VXLAN_EXT_GBP => VxlanExt::Gbp,
            kind => VxlanExt::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One tunnel option (`OVS_TUNNEL_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelOption {
    /// UDP destination port (host order on the wire, 2 bytes).
    DstPort(u16),
    /// Extensions.
    Extension(Vec<VxlanExt>),
    /// Any other option.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl Nla for TunnelOption {
    fn kind(&self) -> u16 {
        match self {
            TunnelOption::DstPort(_) => tunnel_attr::DST_PORT,
            TunnelOption::Extension(_) => tunnel_attr::EXTENSION,
            TunnelOption::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            TunnelOption::DstPort(p) => w.raw(&p.to_ne_bytes()),
            TunnelOption::Extension(e) => emit_all(w, e),
            TunnelOption::Other { data, .. } => w.raw(data),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            tunnel_attr::DST_PORT => TunnelOption::DstPort(a.u16("vport options")?),
            tunnel_attr::EXTENSION => {
                TunnelOption::Extension(decode_all("vxlan ext", a.payload, depth + 1)?)
            }
            kind => TunnelOption::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

/// One `OVS_VPORT_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VportAttr {
    /// Port number.
    PortNo(u32),
    /// Type.
    Type(VportType),
    /// Name.
    Name(String),
    /// Tunnel options.
    Options(Vec<TunnelOption>),
    /// Upcall PIDs; `[0]` means no upcalls.
    UpcallPids(Vec<u32>),
    /// Statistics.
    Stats(VportStats),
    /// Ifindex of the netdev (internal ports, kernel 6.1 and later).
    Ifindex(u32),
    /// Network namespace id of the netdev.
    NetnsId(i32),
    /// Any other attribute.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const W: &str = "vport";

impl Nla for VportAttr {
    fn kind(&self) -> u16 {
        match self {
            VportAttr::PortNo(_) => attr::PORT_NO,
            VportAttr::Type(_) => attr::TYPE,
            VportAttr::Name(_) => attr::NAME,
            VportAttr::Options(_) => attr::OPTIONS,
            VportAttr::UpcallPids(_) => attr::UPCALL_PID,
            VportAttr::Stats(_) => attr::STATS,
            VportAttr::Ifindex(_) => attr::IFINDEX,
            VportAttr::NetnsId(_) => attr::NETNSID,
            VportAttr::Other { kind, .. } => *kind,
        }
    }
    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            VportAttr::PortNo(v) | VportAttr::Ifindex(v) => w.raw(&v.to_ne_bytes()),
            VportAttr::Type(t) => w.raw(&u32::from(*t).to_ne_bytes()),
            VportAttr::Name(n) => {
                w.raw(n.as_bytes());
                w.raw(&[0]);
            }
            VportAttr::Options(o) => emit_all(w, o),
            VportAttr::UpcallPids(p) => {
                for x in p {
                    w.raw(&x.to_ne_bytes());
                }
            }
            VportAttr::Stats(s) => {
                for v in [
                    s.rx_packets,
                    s.tx_packets,
                    s.rx_bytes,
                    s.tx_bytes,
                    s.rx_errors,
                    s.tx_errors,
                    s.rx_dropped,
                    s.tx_dropped,
                ] {
                    w.raw(&v.to_ne_bytes());
                }
            }
            VportAttr::NetnsId(v) => w.raw(&v.to_ne_bytes()),
            VportAttr::Other { data, .. } => w.raw(data),
        }
    }
    fn decode(a: &Attr<'_>, depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            attr::PORT_NO => VportAttr::PortNo(a.u32(W)?),
            attr::TYPE => VportAttr::Type(VportType::from(a.u32(W)?)),
            attr::NAME => VportAttr::Name(a.string(W)?),
            attr::OPTIONS => VportAttr::Options(decode_all("vport options", a.payload, depth + 1)?),
            attr::UPCALL_PID => VportAttr::UpcallPids(a.u32_array(W)?),
            attr::STATS => {
                let [
                    rx_packets,
                    tx_packets,
                    rx_bytes,
                    tx_bytes,
                    rx_errors,
                    tx_errors,
                    rx_dropped,
                    tx_dropped,
                ] = u64s::<8>(W, a)?;
                VportAttr::Stats(VportStats {
                    rx_packets,
                    tx_packets,
                    rx_bytes,
                    tx_bytes,
                    rx_errors,
                    tx_errors,
                    rx_dropped,
                    tx_dropped,
                })
            }
            attr::IFINDEX => VportAttr::Ifindex(a.u32(W)?),
            attr::NETNSID => VportAttr::NetnsId(a.u32(W)? as i32),
            kind => VportAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

impl OvsFamily for VportAttr {
    const NAME: &'static str = "ovs_vport";
    const VERSION: u8 = 1;
    type Cmd = ObjCmd;
}

/// A message of the `ovs_vport` family.
pub type VportMessage = OvsMessage<VportAttr>;

/// A vport as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VportInfo {
    /// The datapath it belongs to.
    pub dp_ifindex: i32,
    /// Port number within the datapath.
    pub port_no: u32,
    /// Type.
    pub kind: VportType,
    /// Name.
    pub name: String,
    /// Tunnel options (empty for netdev/internal).
    pub options: Vec<TunnelOption>,
    /// Upcall PIDs.
    pub upcall_pids: Vec<u32>,
    /// Statistics.
    pub stats: Option<VportStats>,
    /// Ifindex of the netdev, when the kernel reports it.
    pub ifindex: Option<u32>,
}

impl VportInfo {
    /// The tunnel's UDP destination port, if it has one.
    pub fn dst_port(&self) -> Option<u16> {
        self.options.iter().find_map(|o| match o {
            TunnelOption::DstPort(p) => Some(*p),
            _ => None,
        })
    }

    /// Collects a reply's attributes. Fails without port number, type or name.
    pub fn from_message(m: &VportMessage) -> Result<Self, DecodeError> {
        let (mut port_no, mut kind, mut name) = (None, None, None);
        let mut info = VportInfo {
            dp_ifindex: m.dp_ifindex,
            port_no: 0,
            kind: VportType::Other(0),
            name: String::new(),
            options: Vec::new(),
            upcall_pids: Vec::new(),
            stats: None,
            ifindex: None,
        };
        for a in &m.attrs {
            match a {
                VportAttr::PortNo(p) => port_no = Some(*p),
                VportAttr::Type(t) => kind = Some(*t),
                VportAttr::Name(n) => name = Some(n.clone()),
                VportAttr::Options(o) => info.options = o.clone(),
                VportAttr::UpcallPids(p) => info.upcall_pids = p.clone(),
                VportAttr::Stats(s) => info.stats = Some(*s),
                VportAttr::Ifindex(i) => info.ifindex = Some(*i),
                _ => {}
            }
        }
        match (port_no, kind, name) {
            (Some(p), Some(k), Some(n)) => {
                info.port_no = p;
                info.kind = k;
                info.name = n;
                Ok(info)
            }
            _ => Err(DecodeError::Unexpected(
                "vport reply without port number, type or name",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_new_request_bytes() {
        let m = VportMessage::new(
            ObjCmd::New,
            7,
            vec![
                VportAttr::Name("vxlan-6784".into()),
                VportAttr::Type(VportType::Vxlan),
                VportAttr::Options(vec![
                    TunnelOption::DstPort(6784),
                    TunnelOption::Extension(vec![VxlanExt::Gbp]),
                ]),
                VportAttr::UpcallPids(vec![0]),
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1e, 0x405, 1).unwrap();
        let body = &buf[16..];
        assert_eq!(&body[..4], &[1, 1, 0, 0]);
        assert_eq!(&body[4..8], &7i32.to_ne_bytes());
        let attrs = &body[8..];
        // name: 4 + 11 = 15 -> padded 16
        assert_eq!(&attrs[..4], &[15, 0, 3, 0]);
        assert_eq!(&attrs[4..16], b"vxlan-6784\0\0");
        assert_eq!(&attrs[16..20], &[8, 0, 2, 0]);
        assert_eq!(&attrs[20..24], &4u32.to_ne_bytes());
        // options: header + dst port attr (6, padded 8) + extension (4 + gbp 4) = 20
        assert_eq!(&attrs[24..28], &[20, 0, 4, 0]);
        assert_eq!(&attrs[28..32], &[6, 0, 1, 0]);
        assert_eq!(&attrs[32..34], &6784u16.to_ne_bytes());
        assert_eq!(&attrs[34..36], &[0, 0]);
        assert_eq!(&attrs[36..44], &[8, 0, 2, 0, 4, 0, 1, 0]);
        assert_eq!(&attrs[44..48], &[8, 0, 5, 0]);
        assert_eq!(&attrs[48..52], &0u32.to_ne_bytes());
        assert_eq!(attrs.len(), 52);
        assert_eq!(VportMessage::decode(body).unwrap(), m);
    }

    #[test]
    fn reply_round_trip_and_info() {
        let m = VportMessage::new(
            ObjCmd::New,
            7,
            vec![
                VportAttr::PortNo(2),
                VportAttr::Type(VportType::Internal),
                VportAttr::Name("int0".into()),
                VportAttr::UpcallPids(vec![100, 101]),
                VportAttr::Stats(VportStats {
                    rx_packets: 1,
                    tx_dropped: 8,
                    ..Default::default()
                }),
                VportAttr::Ifindex(33),
                VportAttr::NetnsId(-1),
                VportAttr::Other {
                    kind: 10,
                    data: vec![4, 0, 0, 0],
                },
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1e, 0, 0).unwrap();
        let back = VportMessage::decode(&buf[16..]).unwrap();
        assert_eq!(back, m);
        let info = VportInfo::from_message(&back).unwrap();
        assert_eq!(
            (info.port_no, info.kind, info.ifindex),
            (2, VportType::Internal, Some(33))
        );
        assert_eq!(info.stats.unwrap().tx_dropped, 8);
    }
}
