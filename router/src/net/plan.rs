//! The bridge set-up as a plan: a pure function from what was asked for and
//! what the host already has to the steps that make the host right, or to
//! a typed refusal that names the mismatch and its fix.
//!
//! Three shapes connect containers to the overlay (the names are Weave's, so
//! Weave's own tools and a Weave router recognise what we build and we
//! recognise what they built):
//!
//! - [`BridgeType::Bridge`]: a Linux bridge `weave`; a veth pair
//!   `vethwe-bridge` (on the bridge) / `vethwe-pcap` (where the router
//!   captures and injects frames in userspace).
//! - [`BridgeType::BridgedFastdp`]: a Linux bridge `weave` and an Open
//!   vSwitch datapath `datapath`, joined by the veth pair `vethwe-bridge`
//!   (on the bridge) / `vethwe-datapath` (a port of the datapath). The
//!   default when the kernel has the openvswitch family.
//! - [`BridgeType::Fastdp`]: `weave` is itself the datapath.

use std::fmt;

use super::link::{LinkKind, MAX_IFNAME_LEN, MacAddr};

/// Weave's default name of the bridge (`--weave-bridge`).
pub const DEFAULT_BRIDGE: &str = "weave";
/// Weave's default name of the datapath in BridgedFastdp (`--datapath`).
pub const DEFAULT_DATAPATH: &str = "datapath";
/// The bridge's end of the joining veth pair, in both bridged modes.
pub const BRIDGE_IF: &str = "vethwe-bridge";
/// The capture end of the veth pair in Bridge mode.
pub const PCAP_IF: &str = "vethwe-pcap";
/// The datapath's end of the veth pair in BridgedFastdp.
pub const DATAPATH_IF: &str = "vethwe-datapath";
/// Prefix of every veth Weave makes (host ends of container veths too);
/// `reset` removes links with this prefix.
pub const VETH_PREFIX: &str = "vethwe";

/// Default MTU with a datapath: 1460 (GCE's underlay) less 50 for VXLAN
/// and 34 for the ESP headroom of encrypted fastdp.
pub const FASTDP_DEFAULT_MTU: u32 = 1376;
/// Default MTU of a plain Bridge, as Weave: the largest the bridge takes;
/// sleeve then tells senders the path MTU with ICMP.
pub const BRIDGE_DEFAULT_MTU: u32 = 65535;
/// The smallest MTU accepted (IPv4's minimum datagram).
pub const MIN_MTU: u32 = 576;

/// One of the three ways containers are connected to the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BridgeType {
    /// Linux bridge with userspace capture (sleeve only).
    Bridge,
    /// Linux bridge joined to an ODP datapath by a veth pair.
    BridgedFastdp,
    /// The bridge device is the ODP datapath itself.
    Fastdp,
}

impl BridgeType {
    /// Whether the type uses an ODP datapath (and so fastdp).
    pub fn is_fastdp(self) -> bool {
        !matches!(self, BridgeType::Bridge)
    }

    /// Weave's name for the type, as its scripts and status print it.
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeType::Bridge => "bridge",
            BridgeType::BridgedFastdp => "bridged_fastdp",
            BridgeType::Fastdp => "fastdp",
        }
    }
}

impl fmt::Display for BridgeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bridge options of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// `--weave-bridge`: the bridge's name.
    pub weave_bridge: String,
    /// `--datapath`: the datapath's name in BridgedFastdp.
    pub datapath: String,
    /// `--no-fastdp`: Bridge mode only.
    pub no_fastdp: bool,
    /// `--no-bridged-fastdp`: Fastdp rather than BridgedFastdp.
    pub no_bridged_fastdp: bool,
    /// `--mtu`; `None` picks the mode's default.
    pub mtu: Option<u32>,
    /// The bridge's Ethernet address (Weave uses the peer name).
    pub mac: MacAddr,
}

impl BridgeConfig {
    /// Weave's defaults, with the bridge address `mac`.
    pub fn new(mac: MacAddr) -> BridgeConfig {
        BridgeConfig {
            weave_bridge: DEFAULT_BRIDGE.to_string(),
            datapath: DEFAULT_DATAPATH.to_string(),
            no_fastdp: false,
            no_bridged_fastdp: false,
            mtu: None,
            mac,
        }
    }

    /// The type the options ask for, before asking the kernel.
    pub fn requested_type(&self) -> BridgeType {
        if self.no_fastdp {
            BridgeType::Bridge
        } else if self.no_bridged_fastdp {
            BridgeType::Fastdp
        } else {
            BridgeType::BridgedFastdp
        }
    }

    /// The MTU the set-up gives the devices in mode `ty`.
    pub fn mtu_for(&self, ty: BridgeType) -> u32 {
        self.mtu.unwrap_or(if ty.is_fastdp() {
            FASTDP_DEFAULT_MTU
        } else {
            BRIDGE_DEFAULT_MTU
        })
    }

    /// The name of the datapath device in mode `ty`, if any.
    pub fn datapath_name(&self, ty: BridgeType) -> Option<&str> {
        match ty {
            BridgeType::Bridge => None,
            BridgeType::BridgedFastdp => Some(&self.datapath),
            BridgeType::Fastdp => Some(&self.weave_bridge),
        }
    }
}

/// Whether the kernel offers the openvswitch generic-netlink families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OdpSupport {
    /// It does.
    Available,
    /// It does not; why, in words.
    Missing(String),
}

/// What exists on the host under the two configured names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The kind of the link named like the bridge, if it exists.
    pub weave: Option<LinkKind>,
    /// The kind of the link named like the datapath, if it exists.
    pub datapath: Option<LinkKind>,
}

/// A refusal to set up, naming what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The options are contradictory or out of range.
    #[error("bad bridge options: {0}")]
    Config(String),
    /// A link the router would own is something weave never makes.
    #[error(
        "link {name} exists as type {kind}, which weave does not create: remove or rename it, or choose another name with {flag}"
    )]
    Foreign {
        /// The link.
        name: String,
        /// Its kind.
        kind: LinkKind,
        /// The option that names it.
        flag: &'static str,
    },
    /// The links present form no known bridge type.
    #[error(
        "inconsistent bridge state: {weave_desc} and {datapath_desc}: run `weave-router reset` first"
    )]
    Inconsistent {
        /// What the bridge name holds.
        weave_desc: String,
        /// What the datapath name holds.
        datapath_desc: String,
    },
    /// A complete set-up of another type exists.
    #[error("bridge {bridge} exists as type {existing} but {wanted} was asked for: {fix}")]
    Mismatch {
        /// The bridge's name.
        bridge: String,
        /// The type found.
        existing: BridgeType,
        /// The type asked for.
        wanted: BridgeType,
        /// What to do about it.
        fix: String,
    },
    /// A datapath exists but the kernel no longer offers openvswitch.
    #[error("a {existing} set-up exists but {reason}: run `weave-router reset` first")]
    DatapathUnreachable {
        /// The type found.
        existing: BridgeType,
        /// Why the datapath cannot be driven.
        reason: String,
    },
}

/// One thing to do to the host. Every step is idempotent: doing it when it
/// is already done changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the ODP datapath `name` unless it exists.
    CreateDatapath {
        /// Its name.
        name: String,
    },
    /// Make the netdev `ifname` a port of datapath `datapath`.
    AddDatapathPort {
        /// The datapath.
        datapath: String,
        /// The netdev.
        ifname: String,
    },
    /// Create the Linux bridge `name` (STP off) unless it exists.
    EnsureBridge {
        /// Its name.
        name: String,
    },
    /// Create the veth pair unless both ends exist.
    EnsureVeth {
        /// One end.
        name: String,
        /// The other end.
        peer: String,
        /// MTU of both ends.
        mtu: u32,
    },
    /// Set a link's Ethernet address.
    SetMac {
        /// The link.
        link: String,
        /// The address.
        mac: MacAddr,
    },
    /// Set a link's MTU.
    SetMtu {
        /// The link.
        link: String,
        /// The MTU.
        mtu: u32,
    },
    /// Enslave a link to a bridge.
    SetMaster {
        /// The link.
        link: String,
        /// The bridge.
        master: String,
    },
    /// Bring a link up.
    SetUp {
        /// The link.
        link: String,
    },
    /// Turn TX checksum offload off.
    TxChecksumOff {
        /// The link.
        link: String,
    },
    /// Write a `/proc/sys` variable.
    Sysctl {
        /// The variable, relative to `/proc/sys`.
        variable: String,
        /// The value.
        value: String,
        /// Skip it when the variable does not exist (IPv6 settings).
        if_exists: bool,
    },
}

impl Step {
    /// Whether the step needs the datapath driver.
    pub fn needs_datapath(&self) -> bool {
        matches!(
            self,
            Step::CreateDatapath { .. } | Step::AddDatapathPort { .. }
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateDatapath { name } => write!(f, "create datapath {name}"),
            Step::AddDatapathPort { datapath, ifname } => {
                write!(f, "add {ifname} to datapath {datapath}")
            }
            Step::EnsureBridge { name } => write!(f, "create bridge {name}"),
            Step::EnsureVeth { name, peer, mtu } => {
                write!(f, "create veth pair {name}/{peer} (mtu {mtu})")
            }
            Step::SetMac { link, mac } => write!(f, "set {link} address {mac}"),
            Step::SetMtu { link, mtu } => write!(f, "set {link} mtu {mtu}"),
            Step::SetMaster { link, master } => write!(f, "attach {link} to {master}"),
            Step::SetUp { link } => write!(f, "set {link} up"),
            Step::TxChecksumOff { link } => write!(f, "turn tx checksum offload off on {link}"),
            Step::Sysctl {
                variable, value, ..
            } => write!(f, "sysctl {variable}={value}"),
        }
    }
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    /// The type that will be set up.
    pub bridge_type: BridgeType,
    /// The type the options asked for.
    pub requested: BridgeType,
    /// The type already present, if any.
    pub existing: Option<BridgeType>,
    /// Why fastdp is not used although it was asked for, for the log and
    /// `/status` ("fastdp unavailable: …").
    pub fallback: Option<String>,
    /// The MTU given to the devices.
    pub mtu: u32,
    /// The bridge's name.
    pub bridge: String,
    /// The datapath's name, if the type has one.
    pub datapath: Option<String>,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

impl BridgePlan {
    /// The line for `/status` when fastdp was asked for and is off.
    pub fn status_note(&self) -> Option<String> {
        self.fallback
            .as_ref()
            .map(|why| format!("fastdp unavailable: {why}"))
    }
}

fn describe(name: &str, kind: &Option<LinkKind>) -> String {
    match kind {
        None => format!("{name} is absent"),
        Some(kind) => format!("{name} is of type {kind}"),
    }
}

/// The type an existing set-up has, from the kinds under the two names;
/// `Ok(None)` when nothing exists.
pub fn existing_type(
    config: &BridgeConfig,
    observed: &Observed,
) -> Result<Option<BridgeType>, PlanError> {
    use LinkKind::{Bridge, Openvswitch};
    for (name, kind, flag) in [
        (&config.weave_bridge, &observed.weave, "--weave-bridge"),
        (&config.datapath, &observed.datapath, "--datapath"),
    ] {
        if let Some(kind) = kind
            && *kind != Bridge
            && *kind != Openvswitch
        {
            return Err(PlanError::Foreign {
                name: name.clone(),
                kind: kind.clone(),
                flag,
            });
        }
    }
    match (&observed.weave, &observed.datapath) {
        (None, None) => Ok(None),
        (Some(Bridge), None) => Ok(Some(BridgeType::Bridge)),
        (Some(Openvswitch), None) => Ok(Some(BridgeType::Fastdp)),
        (Some(Bridge), Some(Openvswitch)) => Ok(Some(BridgeType::BridgedFastdp)),
        (weave, datapath) => Err(PlanError::Inconsistent {
            weave_desc: describe(&config.weave_bridge, weave),
            datapath_desc: describe(&config.datapath, datapath),
        }),
    }
}

fn check_config(config: &BridgeConfig) -> Result<(), PlanError> {
    for (name, flag) in [
        (&config.weave_bridge, "--weave-bridge"),
        (&config.datapath, "--datapath"),
    ] {
        if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.contains(['/', ' ', '\0']) {
            return Err(PlanError::Config(format!(
                "{flag} {name:?} is not a valid interface name (1 to {MAX_IFNAME_LEN} bytes, no '/' or spaces)"
            )));
        }
    }
    if config.weave_bridge == config.datapath {
        return Err(PlanError::Config(format!(
            "--weave-bridge and --datapath are both {:?}; for a bridge that is itself the datapath use --no-bridged-fastdp",
            config.weave_bridge
        )));
    }
    for name in [&config.weave_bridge, &config.datapath] {
        if name.starts_with(VETH_PREFIX) {
            return Err(PlanError::Config(format!(
                "{name:?} starts with {VETH_PREFIX:?}, which `reset` treats as weave's veths"
            )));
        }
    }
    if let Some(mtu) = config.mtu
        && !(MIN_MTU..=65535).contains(&mtu)
    {
        return Err(PlanError::Config(format!(
            "--mtu {mtu} is outside {MIN_MTU}..=65535"
        )));
    }
    Ok(())
}

fn mismatch_fix(existing: BridgeType, wanted: BridgeType) -> String {
    let keep = match existing {
        BridgeType::Bridge => "--no-fastdp",
        BridgeType::Fastdp => "--no-bridged-fastdp",
        BridgeType::BridgedFastdp => "neither --no-fastdp nor --no-bridged-fastdp",
    };
    format!(
        "run `weave-router reset` first to rebuild it as {wanted}, or pass {keep} to keep the {existing} set-up"
    )
}

/// Decides the set-up: the type, the MTU and the steps.
pub fn plan(
    config: &BridgeConfig,
    odp: &OdpSupport,
    observed: &Observed,
) -> Result<BridgePlan, PlanError> {
    check_config(config)?;
    let existing = existing_type(config, observed)?;
    let requested = config.requested_type();
    let (bridge_type, fallback) = match (requested.is_fastdp(), odp) {
        (true, OdpSupport::Missing(why)) => (BridgeType::Bridge, Some(why.clone())),
        _ => (requested, None),
    };
    if let Some(existing) = existing {
        if existing.is_fastdp()
            && let OdpSupport::Missing(reason) = odp
        {
            return Err(PlanError::DatapathUnreachable {
                existing,
                reason: reason.clone(),
            });
        }
        if existing != bridge_type {
            return Err(PlanError::Mismatch {
                bridge: config.weave_bridge.clone(),
                existing,
                wanted: bridge_type,
                fix: mismatch_fix(existing, bridge_type),
            });
        }
    }
    let mtu = config.mtu_for(bridge_type);
    let bridge = config.weave_bridge.clone();
    let mut steps = Vec::new();
    let step_bridge_prep = |steps: &mut Vec<Step>| {
        steps.push(Step::EnsureBridge {
            name: bridge.clone(),
        });
        // The address is set after creation, never at it (Weave's note:
        // older kernels then miss the bridge's own fdb entry).
        steps.push(Step::SetMac {
            link: bridge.clone(),
            mac: config.mac,
        });
        // Setting it by hand also pins it: the bridge no longer follows the
        // smallest MTU among its ports.
        steps.push(Step::SetMtu {
            link: bridge.clone(),
            mtu,
        });
    };
    let step_veth = |steps: &mut Vec<Step>, peer: &str| {
        steps.push(Step::EnsureVeth {
            name: BRIDGE_IF.to_string(),
            peer: peer.to_string(),
            mtu,
        });
        steps.push(Step::SetMaster {
            link: BRIDGE_IF.to_string(),
            master: bridge.clone(),
        });
        for end in [BRIDGE_IF, peer] {
            steps.push(Step::Sysctl {
                variable: format!("net/ipv6/conf/{end}/accept_ra"),
                value: "0".into(),
                if_exists: true,
            });
        }
        steps.push(Step::SetUp {
            link: peer.to_string(),
        });
    };
    let datapath = config.datapath_name(bridge_type).map(str::to_string);
    match bridge_type {
        BridgeType::Bridge => {
            step_bridge_prep(&mut steps);
            step_veth(&mut steps, PCAP_IF);
            steps.push(Step::SetUp {
                link: BRIDGE_IF.into(),
            });
            steps.push(Step::TxChecksumOff {
                link: bridge.clone(),
            });
        }
        BridgeType::BridgedFastdp => {
            let dp = config.datapath.clone();
            steps.push(Step::CreateDatapath { name: dp.clone() });
            steps.push(Step::SetMtu {
                link: dp.clone(),
                mtu,
            });
            step_bridge_prep(&mut steps);
            step_veth(&mut steps, DATAPATH_IF);
            steps.push(Step::AddDatapathPort {
                datapath: dp.clone(),
                ifname: DATAPATH_IF.into(),
            });
            steps.push(Step::SetUp {
                link: BRIDGE_IF.into(),
            });
            steps.push(Step::SetUp { link: dp });
        }
        BridgeType::Fastdp => {
            steps.push(Step::CreateDatapath {
                name: bridge.clone(),
            });
            steps.push(Step::SetMtu {
                link: bridge.clone(),
                mtu,
            });
        }
    }
    // Common to all: no IPv6 router advertisements on the bridge, the bridge
    // up, and a short-lived ARP cache so moved containers are found again.
    steps.push(Step::Sysctl {
        variable: format!("net/ipv6/conf/{bridge}/accept_ra"),
        value: "0".into(),
        if_exists: true,
    });
    steps.push(Step::SetUp {
        link: bridge.clone(),
    });
    for (variable, value) in [
        ("base_reachable_time", "5"),
        ("delay_first_probe_time", "2"),
        ("ucast_solicit", "1"),
    ] {
        steps.push(Step::Sysctl {
            variable: format!("net/ipv4/neigh/{bridge}/{variable}"),
            value: value.into(),
            if_exists: false,
        });
    }
    Ok(BridgePlan {
        bridge_type,
        requested,
        existing,
        fallback,
        mtu,
        bridge,
        datapath,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x0a, 0, 0, 0, 0, 1]);

    fn cfg() -> BridgeConfig {
        BridgeConfig::new(MAC)
    }

    fn none() -> Observed {
        Observed::default()
    }

    fn obs(weave: Option<LinkKind>, datapath: Option<LinkKind>) -> Observed {
        Observed { weave, datapath }
    }

    fn missing() -> OdpSupport {
        OdpSupport::Missing("generic netlink family ovs_datapath is not registered".into())
    }

    #[test]
    fn requested_types_follow_the_flags() {
        let mut c = cfg();
        assert_eq!(c.requested_type(), BridgeType::BridgedFastdp);
        c.no_bridged_fastdp = true;
        assert_eq!(c.requested_type(), BridgeType::Fastdp);
        c.no_fastdp = true;
        assert_eq!(c.requested_type(), BridgeType::Bridge);
    }

    #[test]
    fn fresh_bridged_fastdp_steps() {
        let p = plan(&cfg(), &OdpSupport::Available, &none()).unwrap();
        assert_eq!(p.bridge_type, BridgeType::BridgedFastdp);
        assert_eq!(p.mtu, 1376);
        assert_eq!(p.fallback, None);
        assert_eq!(p.datapath.as_deref(), Some("datapath"));
        let shown: Vec<String> = p.steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "create datapath datapath",
                "set datapath mtu 1376",
                "create bridge weave",
                "set weave address 0a:00:00:00:00:01",
                "set weave mtu 1376",
                "create veth pair vethwe-bridge/vethwe-datapath (mtu 1376)",
                "attach vethwe-bridge to weave",
                "sysctl net/ipv6/conf/vethwe-bridge/accept_ra=0",
                "sysctl net/ipv6/conf/vethwe-datapath/accept_ra=0",
                "set vethwe-datapath up",
                "add vethwe-datapath to datapath datapath",
                "set vethwe-bridge up",
                "set datapath up",
                "sysctl net/ipv6/conf/weave/accept_ra=0",
                "set weave up",
                "sysctl net/ipv4/neigh/weave/base_reachable_time=5",
                "sysctl net/ipv4/neigh/weave/delay_first_probe_time=2",
                "sysctl net/ipv4/neigh/weave/ucast_solicit=1",
            ]
        );
    }

    #[test]
    fn bridge_mode_uses_the_pcap_veth_and_no_datapath() {
        let mut c = cfg();
        c.no_fastdp = true;
        let p = plan(&c, &OdpSupport::Available, &none()).unwrap();
        assert_eq!(p.bridge_type, BridgeType::Bridge);
        assert_eq!(p.mtu, BRIDGE_DEFAULT_MTU);
        assert_eq!(p.datapath, None);
        assert!(!p.steps.iter().any(Step::needs_datapath));
        assert!(p.steps.contains(&Step::EnsureVeth {
            name: "vethwe-bridge".into(),
            peer: "vethwe-pcap".into(),
            mtu: 65535
        }));
        assert!(p.steps.contains(&Step::TxChecksumOff {
            link: "weave".into()
        }));
    }

    #[test]
    fn fastdp_makes_the_bridge_name_a_datapath() {
        let mut c = cfg();
        c.no_bridged_fastdp = true;
        c.mtu = Some(1410);
        let p = plan(&c, &OdpSupport::Available, &none()).unwrap();
        assert_eq!(p.bridge_type, BridgeType::Fastdp);
        assert_eq!(p.datapath.as_deref(), Some("weave"));
        assert_eq!(
            p.steps[..2],
            [
                Step::CreateDatapath {
                    name: "weave".into()
                },
                Step::SetMtu {
                    link: "weave".into(),
                    mtu: 1410
                }
            ]
        );
        assert!(
            !p.steps
                .iter()
                .any(|s| matches!(s, Step::EnsureBridge { .. }))
        );
    }

    #[test]
    fn missing_openvswitch_falls_back_to_bridge_with_a_reason() {
        let p = plan(&cfg(), &missing(), &none()).unwrap();
        assert_eq!(p.requested, BridgeType::BridgedFastdp);
        assert_eq!(p.bridge_type, BridgeType::Bridge);
        assert!(!p.steps.iter().any(Step::needs_datapath));
        let note = p.status_note().unwrap();
        assert!(note.starts_with("fastdp unavailable: "), "{note}");
        assert!(note.contains("ovs_datapath"), "{note}");
        // On restart the fallen-back bridge is accepted as it is.
        let again = plan(&cfg(), &missing(), &obs(Some(LinkKind::Bridge), None)).unwrap();
        assert_eq!(again.existing, Some(BridgeType::Bridge));
        assert_eq!(again.bridge_type, BridgeType::Bridge);
    }

    #[test]
    fn existing_types_are_recognised() {
        let c = cfg();
        let cases = [
            (none(), None),
            (obs(Some(LinkKind::Bridge), None), Some(BridgeType::Bridge)),
            (
                obs(Some(LinkKind::Openvswitch), None),
                Some(BridgeType::Fastdp),
            ),
            (
                obs(Some(LinkKind::Bridge), Some(LinkKind::Openvswitch)),
                Some(BridgeType::BridgedFastdp),
            ),
        ];
        for (o, want) in cases {
            assert_eq!(existing_type(&c, &o).unwrap(), want, "{o:?}");
        }
    }

    #[test]
    fn matching_existing_set_up_is_replanned_idempotently() {
        let o = obs(Some(LinkKind::Bridge), Some(LinkKind::Openvswitch));
        let fresh = plan(&cfg(), &OdpSupport::Available, &none()).unwrap();
        let again = plan(&cfg(), &OdpSupport::Available, &o).unwrap();
        assert_eq!(again.existing, Some(BridgeType::BridgedFastdp));
        assert_eq!(again.steps, fresh.steps);
    }

    #[test]
    fn a_mismatch_is_refused_with_the_fix() {
        let err = plan(
            &cfg(),
            &OdpSupport::Available,
            &obs(Some(LinkKind::Bridge), None),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            PlanError::Mismatch {
                existing: BridgeType::Bridge,
                wanted: BridgeType::BridgedFastdp,
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.starts_with("bridge weave exists as type bridge but bridged_fastdp was asked for"),
            "{text}"
        );
        assert!(text.contains("weave-router reset"), "{text}");
        assert!(text.contains("--no-fastdp"), "{text}");

        let mut c = cfg();
        c.no_fastdp = true;
        let err = plan(
            &c,
            &OdpSupport::Available,
            &obs(Some(LinkKind::Openvswitch), None),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--no-bridged-fastdp"), "{err}");
    }

    #[test]
    fn inconsistent_and_foreign_states_are_refused() {
        let c = cfg();
        let err = plan(
            &c,
            &OdpSupport::Available,
            &obs(None, Some(LinkKind::Openvswitch)),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "inconsistent bridge state: weave is absent and datapath is of type openvswitch: run `weave-router reset` first"
        );
        let err = plan(
            &c,
            &OdpSupport::Available,
            &obs(Some(LinkKind::Openvswitch), Some(LinkKind::Openvswitch)),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::Inconsistent { .. }));
        let err = plan(&c, &OdpSupport::Available, &obs(Some(LinkKind::Veth), None)).unwrap_err();
        assert_eq!(
            err,
            PlanError::Foreign {
                name: "weave".into(),
                kind: LinkKind::Veth,
                flag: "--weave-bridge"
            }
        );
        assert!(err.to_string().contains("exists as type veth"), "{err}");
    }

    #[test]
    fn a_datapath_without_openvswitch_is_refused() {
        let err = plan(
            &cfg(),
            &missing(),
            &obs(Some(LinkKind::Bridge), Some(LinkKind::Openvswitch)),
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::DatapathUnreachable { .. }));
    }

    #[test]
    fn bad_options_are_refused() {
        let mut c = cfg();
        c.datapath = "weave".into();
        assert!(matches!(
            plan(&c, &OdpSupport::Available, &none()),
            Err(PlanError::Config(_))
        ));
        let mut c = cfg();
        c.weave_bridge = "a-very-long-bridge-name".into();
        assert!(matches!(
            plan(&c, &OdpSupport::Available, &none()),
            Err(PlanError::Config(_))
        ));
        let mut c = cfg();
        c.mtu = Some(100);
        assert!(matches!(
            plan(&c, &OdpSupport::Available, &none()),
            Err(PlanError::Config(_))
        ));
        let mut c = cfg();
        c.weave_bridge = "vethwe0".into();
        assert!(matches!(
            plan(&c, &OdpSupport::Available, &none()),
            Err(PlanError::Config(_))
        ));
    }
}
