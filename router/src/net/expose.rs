//! `expose`: giving the bridge an address on a weave subnet so the host can
//! reach containers, and masquerading the subnet's traffic to the world.

use ipnet::Ipv4Net;

use super::firewall::{Firewall, FirewallError, rules::FirewallConfig};
use super::rtnl::{Rtnl, RtnlError};

/// Why an expose failed.
#[derive(Debug, thiserror::Error)]
pub enum ExposeError {
    /// Adding or listing the address failed.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// Adding the rules failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
}

/// Adds `addr` (an address with its subnet's prefix, say 10.32.0.1/12) to
/// the bridge and the rules for its subnet; `skip_nat` leaves out the
/// masquerading. Exposing twice changes nothing the second time.
pub fn expose(
    rtnl: &mut Rtnl,
    firewall: &Firewall,
    config: &FirewallConfig,
    addr: Ipv4Net,
    skip_nat: bool,
) -> Result<(), ExposeError> {
    rtnl.add_address(&config.bridge, addr)?;
    firewall.expose(config, addr, skip_nat)?;
    Ok(())
}

/// Removes `addr` from the bridge, and the rules for its subnet unless
/// another of the bridge's addresses still exposes that subnet. Returns
/// whether `addr` was on the bridge; when it was not, nothing changes.
pub fn hide(
    rtnl: &mut Rtnl,
    firewall: &Firewall,
    config: &FirewallConfig,
    addr: Ipv4Net,
) -> Result<bool, ExposeError> {
    if !rtnl.delete_address(&config.bridge, addr)? {
        return Ok(false);
    }
    let subnet = addr.trunc();
    let still_exposed = rtnl
        .addresses_v4(&config.bridge)?
        .iter()
        .any(|left| left.trunc() == subnet);
    if !still_exposed {
        firewall.hide(config, addr)?;
    }
    Ok(true)
}

/// The subnets currently exposed: the bridge's IPv4 addresses. Weave reads
/// them back at start so a restarted router exposes them again.
pub fn exposed(rtnl: &mut Rtnl, bridge: &str) -> Result<Vec<Ipv4Net>, RtnlError> {
    rtnl.addresses_v4(bridge)
}
