//! `reset`: removing everything the router (or Weave) set up on the host.
//! Idempotent: a second run finds nothing and succeeds.

use super::datapath::{DatapathError, DatapathOps};
use super::firewall::{self, FirewallError, rules::FirewallConfig};
use super::link::LinkKind;
use super::plan::{BridgeConfig, VETH_PREFIX};
use super::rtnl::{Rtnl, RtnlError};

/// Why `reset` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// rtnetlink failed.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// The datapath driver failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A datapath exists and no driver was given to delete it.
    #[error("{0} is an Open vSwitch datapath and no datapath driver is available to delete it")]
    NoDatapathDriver(String),
    /// Removing the firewall rules failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// What `reset` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Links (and datapaths) removed.
    pub removed: Vec<String>,
    /// Links left alone because weave does not make links of their kind,
    /// with that kind.
    pub left: Vec<(String, LinkKind)>,
}

/// Removes the bridge, the datapath and every `vethwe*` link.
pub fn reset_links(
    rtnl: &mut Rtnl,
    mut datapath: Option<&mut dyn DatapathOps>,
    config: &BridgeConfig,
) -> Result<ResetReport, ResetError> {
    let mut report = ResetReport::default();
    for name in [&config.weave_bridge, &config.datapath] {
        match rtnl.link_kind(name)? {
            None => {}
            Some(LinkKind::Bridge) if rtnl.delete_link(name)? => {
                report.removed.push(name.clone());
            }
            Some(LinkKind::Bridge) => {}
            Some(LinkKind::Openvswitch) => {
                let ops = datapath
                    .as_deref_mut()
                    .ok_or_else(|| ResetError::NoDatapathDriver(name.clone()))?;
                if ops.delete_datapath(name)? {
                    report.removed.push(name.clone());
                }
            }
            Some(kind) => report.left.push((name.clone(), kind)),
        }
    }
    // Deleting one end of a veth pair takes the other with it; report every
    // name that was there before and is gone after.
    let veths: Vec<String> = rtnl
        .links()?
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with(VETH_PREFIX))
        .collect();
    for name in &veths {
        rtnl.delete_link(name)?;
    }
    let left: Vec<String> = rtnl.links()?.into_iter().map(|l| l.name).collect();
    report
        .removed
        .extend(veths.into_iter().filter(|n| !left.contains(n)));
    Ok(report)
}

/// The whole `reset`: links, datapath and the firewall rules of every
/// installed iptables variant.
pub fn reset(
    rtnl: &mut Rtnl,
    datapath: Option<&mut dyn DatapathOps>,
    config: &BridgeConfig,
    firewall_config: &FirewallConfig,
) -> Result<ResetReport, ResetError> {
    let report = reset_links(rtnl, datapath, config)?;
    firewall::teardown_all(firewall_config)?;
    Ok(report)
}
