//! Carrying out a [`BridgePlan`]: detecting what exists, then running the
//! steps against the kernel.

use super::datapath::{DatapathError, DatapathOps};
use super::ethtool;
use super::link::LinkKind;
use super::plan::{BridgeConfig, BridgePlan, Observed, OdpSupport, PlanError, Step, plan};
use super::rtnl::{Rtnl, RtnlError};
use super::sysctl::{Sysctl, SysctlError};

/// Why one step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// rtnetlink refused or failed.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// The datapath driver failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A sysctl write failed.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The ethtool ioctl failed.
    #[error("ethtool: {0}")]
    Ethtool(#[source] std::io::Error),
    /// The plan needs a datapath driver and none was given.
    #[error("no datapath driver was given")]
    NoDatapathDriver,
    /// A link that should be a bridge is not one.
    #[error("{name} is of type {kind}, not a bridge")]
    NotABridge {
        /// The link.
        name: String,
        /// Its kind.
        kind: LinkKind,
    },
}

/// A failed set-up: which step, and why.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Reading the current state failed.
    #[error("detecting the bridge state: {0}")]
    Detect(#[source] RtnlError),
    /// The planner refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A step failed.
    #[error("{step}: {source}")]
    Step {
        /// The step, in words.
        step: String,
        /// Why.
        #[source]
        source: StepError,
    },
}

/// What exists under the configured names.
pub fn observe(rtnl: &mut Rtnl, config: &BridgeConfig) -> Result<Observed, RtnlError> {
    Ok(Observed {
        weave: rtnl.link_kind(&config.weave_bridge)?,
        datapath: rtnl.link_kind(&config.datapath)?,
    })
}

/// Detects the host's state and plans the set-up for it.
pub fn plan_for_host(
    rtnl: &mut Rtnl,
    config: &BridgeConfig,
    odp: &OdpSupport,
) -> Result<BridgePlan, SetupError> {
    let observed = observe(rtnl, config).map_err(SetupError::Detect)?;
    Ok(plan(config, odp, &observed)?)
}

/// Runs the steps of `plan`, in order, stopping at the first failure.
/// `datapath` is needed only by plans whose type has a datapath.
pub fn apply(
    rtnl: &mut Rtnl,
    sysctl: &Sysctl,
    mut datapath: Option<&mut dyn DatapathOps>,
    plan: &BridgePlan,
) -> Result<(), SetupError> {
    for step in &plan.steps {
        run_step(rtnl, sysctl, datapath.as_deref_mut(), step).map_err(|source| {
            SetupError::Step {
                step: step.to_string(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Detects, plans and applies: the whole bridge set-up.
pub fn ensure_bridge(
    rtnl: &mut Rtnl,
    sysctl: &Sysctl,
    datapath: Option<&mut dyn DatapathOps>,
    config: &BridgeConfig,
    odp: &OdpSupport,
) -> Result<BridgePlan, SetupError> {
    let plan = plan_for_host(rtnl, config, odp)?;
    apply(rtnl, sysctl, datapath, &plan)?;
    Ok(plan)
}

fn run_step<'a>(
    rtnl: &mut Rtnl,
    sysctl: &Sysctl,
    datapath: Option<&mut (dyn DatapathOps + 'a)>,
    step: &Step,
) -> Result<(), StepError> {
    match step {
        Step::CreateDatapath { name } => datapath
            .ok_or(StepError::NoDatapathDriver)?
            .create_datapath(name)?,
        Step::AddDatapathPort {
            datapath: dp,
            ifname,
        } => datapath
            .ok_or(StepError::NoDatapathDriver)?
            .add_netdev_port(dp, ifname)?,
        Step::EnsureBridge { name } => {
            if let Some(link) = rtnl.link(name)? {
                if link.kind != LinkKind::Bridge {
                    return Err(StepError::NotABridge {
                        name: name.clone(),
                        kind: link.kind,
                    });
                }
                if link.stp != Some(false) {
                    rtnl.set_bridge_stp(name, false)?;
                }
            } else {
                rtnl.add_bridge(name)?;
            }
        }
        Step::EnsureVeth { name, peer, mtu } => {
            rtnl.add_veth(name, peer, *mtu)?;
        }
        Step::SetMac { link, mac } => {
            if rtnl.require_link(link)?.mac != Some(*mac) {
                rtnl.set_mac(link, *mac)?;
            }
        }
        Step::SetMtu { link, mtu } => rtnl.set_mtu(link, *mtu)?,
        Step::SetMaster { link, master } => {
            let want = rtnl.require_link(master)?.index;
            if rtnl.require_link(link)?.master != Some(want) {
                rtnl.set_master(link, master)?;
            }
        }
        Step::SetUp { link } => {
            if !rtnl.require_link(link)?.up {
                rtnl.set_up(link, true)?;
            }
        }
        Step::TxChecksumOff { link } => {
            if ethtool::tx_checksum(link).map_err(StepError::Ethtool)? {
                ethtool::tx_checksum_off(link).map_err(StepError::Ethtool)?;
            }
        }
        Step::Sysctl {
            variable,
            value,
            if_exists,
        } => {
            if *if_exists {
                sysctl.set_if_exists(variable, value)?;
            } else {
                sysctl.set(variable, value)?;
            }
        }
    }
    Ok(())
}
