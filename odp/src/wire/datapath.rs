//! The `ovs_datapath` family: datapath create/delete/get/set and their
//! replies.

use super::error::{DecodeError, need};
use super::nla::{Attr, AttrWriter, Nla};
use super::ovs::{ObjCmd, OvsFamily, OvsMessage};
use super::types::array_at;

/// Datapath attribute numbers (`OVS_DP_ATTR_*`).
pub mod attr {
    /// Name of the datapath's local port.
    pub const NAME: u16 = 1;
    /// Upcall PID for the local port (NEW only).
    pub const UPCALL_PID: u16 = 2;
    /// `struct ovs_dp_stats`.
    pub const STATS: u16 = 3;
    /// `struct ovs_dp_megaflow_stats`.
    pub const MEGAFLOW_STATS: u16 = 4;
    /// `OVS_DP_F_*` feature bits.
    pub const USER_FEATURES: u16 = 5;
    /// Padding for 64-bit alignment.
    pub const PAD: u16 = 6;
    /// Size of the masks cache.
    pub const MASKS_CACHE_SIZE: u16 = 7;
    /// Per-CPU upcall PIDs.
    pub const PER_CPU_PIDS: u16 = 8;
    /// Ifindex for a new datapath's netdev (NEW only).
    pub const IFINDEX: u16 = 9;
}

/// `OVS_DP_ATTR_USER_FEATURES` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UserFeatures(pub u32);

impl UserFeatures {
    /// The last attribute of an upcall may be unpadded.
    pub const UNALIGNED: UserFeatures = UserFeatures(1 << 0);
    /// Several upcall PIDs per vport.
    pub const VPORT_PIDS: UserFeatures = UserFeatures(1 << 1);
    /// tc offload recirculation sharing.
    pub const TC_RECIRC_SHARING: UserFeatures = UserFeatures(1 << 2);
    /// Upcalls go to a per-CPU PID.
    pub const DISPATCH_UPCALL_PER_CPU: UserFeatures = UserFeatures(1 << 3);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: UserFeatures) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for UserFeatures {
    type Output = UserFeatures;
    fn bitor(self, rhs: Self) -> Self {
        UserFeatures(self.0 | rhs.0)
    }
}

/// `struct ovs_dp_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpStats {
    /// Packets that matched a flow.
    pub n_hit: u64,
    /// Packets that missed.
    pub n_missed: u64,
    /// Misses that could not be sent to userspace.
    pub n_lost: u64,
    /// Flows in the table.
    pub n_flows: u64,
}

/// `struct ovs_dp_megaflow_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MegaflowStats {
    /// Masks visited by lookups.
    pub n_mask_hit: u64,
    /// Masks in the datapath.
    pub n_masks: u32,
    /// Lookups served by the mask cache.
    pub n_cache_hit: u64,
}

pub(crate) fn u64s<const N: usize>(
    what: &'static str,
    a: &Attr<'_>,
) -> Result<[u64; N], DecodeError> {
    need(what, a.payload, N * 8)?;
    let mut out = [0u64; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = array_at::<8>(a.payload, i * 8)
            .map(u64::from_ne_bytes)
            .unwrap_or(0);
    }
    Ok(out)
}

/// One `OVS_DP_ATTR_*` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatapathAttr {
    /// Datapath (local port) name.
    Name(String),
    /// Upcall PID of the local port.
    UpcallPid(u32),
    /// Packet statistics.
    Stats(DpStats),
    /// Megaflow statistics.
    MegaflowStats(MegaflowStats),
    /// Feature bits.
    UserFeatures(UserFeatures),
    /// Masks cache size.
    MasksCacheSize(u32),
    /// Per-CPU upcall PIDs (index = CPU).
    PerCpuPids(Vec<u32>),
    /// Ifindex for the datapath netdev.
    Ifindex(u32),
    /// Any other attribute, kept as raw bytes.
    Other {
        /// Attribute type.
        kind: u16,
        /// Raw payload.
        data: Vec<u8>,
    },
}

const W: &str = "datapath";

impl Nla for DatapathAttr {
    fn kind(&self) -> u16 {
        match self {
            DatapathAttr::Name(_) => attr::NAME,
            DatapathAttr::UpcallPid(_) => attr::UPCALL_PID,
            DatapathAttr::Stats(_) => attr::STATS,
            DatapathAttr::MegaflowStats(_) => attr::MEGAFLOW_STATS,
            DatapathAttr::UserFeatures(_) => attr::USER_FEATURES,
            DatapathAttr::MasksCacheSize(_) => attr::MASKS_CACHE_SIZE,
            DatapathAttr::PerCpuPids(_) => attr::PER_CPU_PIDS,
            DatapathAttr::Ifindex(_) => attr::IFINDEX,
            DatapathAttr::Other { kind, .. } => *kind,
        }
    }

    fn emit_payload(&self, w: &mut AttrWriter<'_>) {
        match self {
            DatapathAttr::Name(n) => {
                w.raw(n.as_bytes());
                w.raw(&[0]);
            }
            DatapathAttr::UpcallPid(v)
            | DatapathAttr::MasksCacheSize(v)
            | DatapathAttr::Ifindex(v) => w.raw(&v.to_ne_bytes()),
            DatapathAttr::UserFeatures(f) => w.raw(&f.0.to_ne_bytes()),
            DatapathAttr::Stats(s) => {
                for v in [s.n_hit, s.n_missed, s.n_lost, s.n_flows] {
                    w.raw(&v.to_ne_bytes());
                }
            }
            DatapathAttr::MegaflowStats(s) => {
                w.raw(&s.n_mask_hit.to_ne_bytes());
                w.raw(&s.n_masks.to_ne_bytes());
                w.raw(&0u32.to_ne_bytes());
                w.raw(&s.n_cache_hit.to_ne_bytes());
                w.raw(&0u64.to_ne_bytes());
            }
            DatapathAttr::PerCpuPids(p) => {
                for x in p {
                    w.raw(&x.to_ne_bytes());
                }
            }
            DatapathAttr::Other { data, .. } => w.raw(data),
        }
    }

    fn decode(a: &Attr<'_>, _depth: usize) -> Result<Self, DecodeError> {
        Ok(match a.kind {
            attr::NAME => DatapathAttr::Name(a.string(W)?),
            attr::UPCALL_PID => DatapathAttr::UpcallPid(a.u32(W)?),
            attr::STATS => {
                let [n_hit, n_missed, n_lost, n_flows] = u64s::<4>(W, a)?;
                DatapathAttr::Stats(DpStats {
                    n_hit,
                    n_missed,
                    n_lost,
                    n_flows,
                })
            }
            attr::MEGAFLOW_STATS => {
                let [n_mask_hit, masks, n_cache_hit] = u64s::<3>(W, a)?;
                DatapathAttr::MegaflowStats(MegaflowStats {
                    n_mask_hit,
                    // n_masks is the first u32 of the second 8-byte word.
                    n_masks: array_at::<4>(a.payload, 8)
                        .map(u32::from_ne_bytes)
                        .unwrap_or(masks as u32),
                    n_cache_hit,
                })
            }
            attr::USER_FEATURES => DatapathAttr::UserFeatures(UserFeatures(a.u32(W)?)),
            attr::MASKS_CACHE_SIZE => DatapathAttr::MasksCacheSize(a.u32(W)?),
            attr::PER_CPU_PIDS => DatapathAttr::PerCpuPids(a.u32_array(W)?),
            attr::IFINDEX => DatapathAttr::Ifindex(a.u32(W)?),
            kind => DatapathAttr::Other {
                kind,
                data: a.payload.to_vec(),
            },
        })
    }
}

impl OvsFamily for DatapathAttr {
    const NAME: &'static str = "ovs_datapath";
    /// Always 2: a NEW with a lower version on an existing datapath resets its
    /// user features.
    const VERSION: u8 = 2;
    type Cmd = ObjCmd;
}

/// A message of the `ovs_datapath` family.
pub type DatapathMessage = OvsMessage<DatapathAttr>;

/// A datapath as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatapathInfo {
    /// The local port's ifindex, used to address the datapath's vports and flows.
    pub dp_ifindex: i32,
    /// The datapath name.
    pub name: String,
    /// Packet statistics.
    pub stats: Option<DpStats>,
    /// Megaflow statistics.
    pub megaflow_stats: Option<MegaflowStats>,
    /// Feature bits in force.
    pub user_features: Option<UserFeatures>,
    /// Masks cache size.
    pub masks_cache_size: Option<u32>,
    /// Per-CPU upcall PIDs.
    pub per_cpu_pids: Option<Vec<u32>>,
}

impl DatapathInfo {
    /// Collects a reply's attributes. Fails if the reply has no name.
    pub fn from_message(m: &DatapathMessage) -> Result<Self, DecodeError> {
        let mut info = DatapathInfo {
            dp_ifindex: m.dp_ifindex,
            ..Default::default()
        };
        let mut named = false;
        for a in &m.attrs {
            match a {
                DatapathAttr::Name(n) => {
                    info.name = n.clone();
                    named = true;
                }
                DatapathAttr::Stats(s) => info.stats = Some(*s),
                DatapathAttr::MegaflowStats(s) => info.megaflow_stats = Some(*s),
                DatapathAttr::UserFeatures(f) => info.user_features = Some(*f),
                DatapathAttr::MasksCacheSize(v) => info.masks_cache_size = Some(*v),
                DatapathAttr::PerCpuPids(p) => info.per_cpu_pids = Some(p.clone()),
                _ => {}
            }
        }
        if !named {
            return Err(DecodeError::Unexpected("datapath reply without a name"));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_bytes() {
        let m = DatapathMessage::new(
            ObjCmd::New,
            0,
            vec![
                DatapathAttr::Name("dp0".into()),
                DatapathAttr::UpcallPid(0),
                DatapathAttr::UserFeatures(
                    UserFeatures::UNALIGNED | UserFeatures::DISPATCH_UPCALL_PER_CPU,
                ),
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1d, 0x5, 3).unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(&48u32.to_ne_bytes());
        expect.extend_from_slice(&0x1du16.to_ne_bytes());
        expect.extend_from_slice(&5u16.to_ne_bytes());
        expect.extend_from_slice(&3u32.to_ne_bytes());
        expect.extend_from_slice(&0u32.to_ne_bytes());
        expect.extend_from_slice(&[1, 2, 0, 0]); // NEW, version 2
        expect.extend_from_slice(&0i32.to_ne_bytes()); // dp_ifindex
        expect.extend_from_slice(&[8, 0, 1, 0, b'd', b'p', b'0', 0]);
        expect.extend_from_slice(&[8, 0, 2, 0]);
        expect.extend_from_slice(&0u32.to_ne_bytes());
        expect.extend_from_slice(&[8, 0, 5, 0]);
        expect.extend_from_slice(&9u32.to_ne_bytes());
        assert_eq!(buf, expect);
        let back = DatapathMessage::decode(&buf[16..]).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn reply_round_trip() {
        let m = DatapathMessage::new(
            ObjCmd::New,
            12,
            vec![
                DatapathAttr::Name("weave".into()),
                DatapathAttr::Stats(DpStats {
                    n_hit: 1,
                    n_missed: 2,
                    n_lost: 3,
                    n_flows: 4,
                }),
                DatapathAttr::MegaflowStats(MegaflowStats {
                    n_mask_hit: 5,
                    n_masks: 6,
                    n_cache_hit: 7,
                }),
                DatapathAttr::UserFeatures(UserFeatures(3)),
                DatapathAttr::MasksCacheSize(256),
                DatapathAttr::PerCpuPids(vec![10, 11]),
                DatapathAttr::Other {
                    kind: 6,
                    data: vec![],
                },
            ],
        );
        let mut buf = Vec::new();
        m.encode(&mut buf, 0x1d, 0, 0).unwrap();
        let back = DatapathMessage::decode(&buf[16..]).unwrap();
        assert_eq!(back, m);
        let info = DatapathInfo::from_message(&back).unwrap();
        assert_eq!(info.dp_ifindex, 12);
        assert_eq!(info.megaflow_stats.unwrap().n_masks, 6);
        assert_eq!(info.per_cpu_pids, Some(vec![10, 11]));
    }
}
