//! The host firewall rules and `expose` as the daemon runs them.
//!
//! At start, once the bridge exists, [`HostRules::install`] (in the
//! background: the API does not wait for it) picks the
//! iptables variant (the operator's `--iptables-backend`, else the one the
//! host's own rules live in), puts Weave's rules in place and exposes again
//! the subnets the bridge still has addresses in (they outlive a router
//! restart), all in one `iptables-save` and at most one `iptables-restore`
//! ([`Firewall::install`]). The HTTP API then exposes and hides subnets through it.
//! Like Weave, it plants empty `WEAVE-CANARY` chains and looks every ten
//! seconds whether they are still there: when a firewall service reloads
//! the tables, they vanish with our rules, and everything is put back.
//!
//! A host where no iptables works keeps its router: the mesh and the data
//! plane do not need the rules. The failure is logged, shown in `/report`,
//! and `expose` answers 503 with it instead of half-exposing a subnet.
//!
//! Everything here blocks (iptables runs as a command, rtnetlink is
//! synchronous): the daemon calls it from `spawn_blocking`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::config::Options;
use crate::net::expose::{self, ExposeError};
use crate::net::firewall::rules::{CANARY_CHAIN, FirewallConfig};
use crate::net::firewall::{Exposure, Firewall};
use crate::net::rtnl::{Rtnl, RtnlError};

/// Why the host rules could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum HostRulesError {
    /// rtnetlink could not be opened or asked.
    #[error(transparent)]
    Rtnl(#[from] RtnlError),
    /// `--docker-bridge` names a link without an IPv4 address.
    #[error("--docker-bridge {0}: it has no IPv4 address")]
    DockerBridgeAddress(String),
    /// `--docker-bridge` names no link.
    #[error(
        "--docker-bridge {0}: there is no such link (give the name of Docker's bridge, or leave the flag out)"
    )]
    NoDockerBridge(String),
}

/// Why an `expose` or `hide` request failed; [`status`](Self::status)
/// gives its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ExposeRequestError {
    /// The address or prefix length in the path is not usable.
    #[error("{0}")]
    BadRequest(String),
    /// The host rules are not available on this host.
    #[error("the host firewall rules are not available: {0}")]
    Unavailable(String),
    /// The address is not on the bridge (hide).
    #[error("{0} is not exposed: the bridge does not have that address")]
    NotExposed(Ipv4Net),
    /// Adding or removing the address or the rules failed.
    #[error(transparent)]
    Failed(#[from] ExposeError),
}

impl ExposeRequestError {
    /// The HTTP status code that answers it.
    pub fn status(&self) -> u16 {
        match self {
            ExposeRequestError::BadRequest(_) => 400,
            ExposeRequestError::NotExposed(_) => 404,
            ExposeRequestError::Unavailable(_) => 503,
            ExposeRequestError::Failed(_) => 500,
        }
    }
}

/// Parses the `{ip}/{prefix}` of `/expose/{ip}/{prefix}`: an IPv4 unicast
/// address with its subnet's prefix length (1 to 32), e.g. `10.32.0.1` and
/// `12`. The subnet's own network and broadcast addresses are refused: a
/// bridge holding one would answer for the whole subnet.
pub fn parse_exposed(ip: &str, prefix: &str) -> Result<Ipv4Net, ExposeRequestError> {
    let bad = |text: String| Err(ExposeRequestError::BadRequest(text));
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return bad(format!("{ip:?} is not an IPv4 address"));
    };
    let len = match prefix.parse::<u8>() {
        Ok(len @ 1..=32) => len,
        _ => {
            return bad(format!("{prefix:?} is not a prefix length from 1 to 32"));
        }
    };
    if addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_broadcast()
        || addr.is_link_local()
    {
        return bad(format!("{addr} cannot be a bridge address"));
    }
    let net = match Ipv4Net::new(addr, len) {
        Ok(net) => net,
        Err(error) => return bad(format!("{addr}/{prefix}: {error}")),
    };
    if len < 31 && (addr == net.network() || addr == net.broadcast()) {
        return bad(format!(
            "{addr} is the {} address of {}: give a host address, e.g. {}/{len}",
            if addr == net.network() {
                "network"
            } else {
                "broadcast"
            },
            net.trunc(),
            Ipv4Addr::from(u32::from(net.network()).saturating_add(1)),
        ));
    }
    Ok(net)
}

/// The Docker bridge's IPv4 address, when `--docker-bridge` names one.
/// `Ok(None)` when none is named.
fn docker_ip(options: &Options, rtnl: &mut Rtnl) -> Result<Option<Ipv4Addr>, HostRulesError> {
    if options.docker_bridge.is_empty() {
        return Ok(None);
    }
    let addrs = match rtnl.addresses_v4(&options.docker_bridge) {
        Err(RtnlError::NoSuchLink(name)) => return Err(HostRulesError::NoDockerBridge(name)),
        other => other?,
    };
    match addrs.first() {
        Some(net) => Ok(Some(net.addr())),
        None => Err(HostRulesError::DockerBridgeAddress(
            options.docker_bridge.clone(),
        )),
    }
}

/// The firewall configuration `reset` removes: that of `options`, with the
/// Docker bridge's rules only when the bridge can still be found.
pub fn reset_config(options: &Options) -> FirewallConfig {
    let ip = Rtnl::open()
        .ok()
        .and_then(|mut rtnl| docker_ip(options, &mut rtnl).ok().flatten());
    options.firewall_config(ip)
}

/// How often the canary chain is looked at (Weave's interval).
pub const CANARY_INTERVAL: Duration = Duration::from_secs(10);

/// Where the installation stands, as `/report` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Choosing the variant and putting the rules in place.
    Installing,
    /// Done (perhaps with an error: see the problem).
    Installed,
    /// No usable iptables: no rules.
    Unavailable,
}

impl Progress {
    fn as_str(self) -> &'static str {
        match self {
            Progress::Installing => "installing",
            Progress::Installed => "installed",
            Progress::Unavailable => "unavailable",
        }
    }
}

/// What `/report` shows; behind its own lock so that reading it never
/// waits for iptables.
#[derive(Debug)]
struct Shown {
    progress: Progress,
    /// Why there is no firewall, or why its last set-up failed.
    problem: Option<String>,
}

/// The router's host rules: the firewall in use (once chosen) and what it
/// is set up for.
#[derive(Debug)]
pub struct HostRules {
    config: FirewallConfig,
    backend: Option<crate::net::firewall::iptables::Variant>,
    firewall: OnceLock<Firewall>,
    shown: Mutex<Shown>,
    /// Held through every iptables change (iptables' check-then-append is
    /// not atomic), the installation included, so that an `expose` arriving
    /// meanwhile waits for it. Holds the subnets exposed by this run
    /// without masquerading, so that putting the rules back after a flush
    /// keeps them so.
    work: Mutex<BTreeSet<Ipv4Net>>,
}

impl HostRules {
    /// The host rules for `options`, not yet installed. Fails on a
    /// configuration error (`--docker-bridge`).
    pub fn new(options: &Options) -> Result<HostRules, HostRulesError> {
        let mut rtnl = Rtnl::open()?;
        let config = options.firewall_config(docker_ip(options, &mut rtnl)?);
        Ok(HostRules {
            config,
            backend: options.iptables_backend.map(|b| b.variant()),
            firewall: OnceLock::new(),
            shown: Mutex::new(Shown {
                progress: Progress::Installing,
                problem: None,
            }),
            work: Mutex::new(BTreeSet::new()),
        })
    }

    fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) -> MutexGuard<'_, BTreeSet<Ipv4Net>> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chooses the variant and sets the rules up (see the module doc). A
    /// host without a working iptables is logged and reported, not an
    /// error. Slow where commands are slow (seconds in an emulated VM), so
    /// the daemon runs it in the background.
    pub fn install(&self) {
        let no_nat = self.work();
        let chosen = match self.backend {
            Some(variant) => Firewall::with_variant(variant).map(|fw| {
                let reason = format!("--iptables-backend {}", fw.variant());
                fw.with_reason(reason)
            }),
            None => Firewall::detect(),
        };
        let firewall = match chosen {
            Ok(firewall) => self.firewall.get_or_init(|| firewall),
            Err(error) => {
                warn!(%error, "host firewall rules not installed: the bridge will not be exposed");
                let mut shown = self.shown();
                shown.progress = Progress::Unavailable;
                shown.problem = Some(error.to_string());
                return;
            }
        };
        info!(
            variant = %firewall.variant(),
            reason = firewall.reason(),
            "host firewall rules go in {}",
            firewall.variant()
        );
        self.apply(firewall, &no_nat, "exposed again");
    }

    /// Puts every rule in place and exposes again the subnets of the
    /// bridge's addresses; records (and logs) a failure. The caller holds
    /// the work lock (`no_nat` is under it).
    fn apply(&self, firewall: &Firewall, no_nat: &BTreeSet<Ipv4Net>, verb: &str) {
        let result = (|| -> Result<Vec<Ipv4Net>, ExposeError> {
            let mut rtnl = Rtnl::open()?;
            let exposed = expose::exposed(&mut rtnl, &self.config.bridge)?;
            let exposures: Vec<Exposure> = exposed
                .iter()
                .map(|net| Exposure {
                    subnet: *net,
                    skip_nat: no_nat.contains(&net.trunc()),
                })
                .collect();
            firewall.install(&self.config, &exposures, true)?;
            Ok(exposed)
        })();
        let problem = match result {
            Ok(exposed) => {
                for net in &exposed {
                    info!(%net, bridge = %self.config.bridge, "{verb}");
                }
                None
            }
            Err(error) => {
                warn!(%error, "setting up the host firewall rules failed");
                Some(error.to_string())
            }
        };
        let mut shown = self.shown();
        shown.progress = Progress::Installed;
        shown.problem = problem;
    }

    /// Looks at the canary once; when it is gone (the tables were reloaded
    /// or flushed) puts every rule back. Returns whether it did.
    pub fn check_canary(&self) -> bool {
        let no_nat = self.work();
        let Some(firewall) = self.firewall.get() else {
            return false;
        };
        match firewall.canary_missing() {
            Ok(false) => false,
            Ok(true) => {
                info!(
                    "iptables canary {} deleted: putting the host rules back",
                    CANARY_CHAIN
                );
                self.apply(firewall, &no_nat, "exposed again after the flush");
                true
            }
            Err(error) => {
                warn!(%error, "could not look for the iptables canary");
                false
            }
        }
    }

    /// Installs the rules, then watches the canary every
    /// [`CANARY_INTERVAL`] until the task is dropped.
    pub async fn run(rules: Arc<HostRules>) {
        let installing = rules.clone();
        if tokio::task::spawn_blocking(move || installing.install())
            .await
            .is_err()
            || rules.firewall.get().is_none()
        {
            return;
        }
        let mut tick = tokio::time::interval(CANARY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let rules = rules.clone();
            if tokio::task::spawn_blocking(move || rules.check_canary())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Deletes the canary chains, as the router stops (the rules stay).
    pub fn stop(&self) {
        let _serial = self.work();
        if let Some(firewall) = self.firewall.get()
            && let Err(error) = firewall.remove_canaries()
        {
            warn!(%error, "could not remove the iptables canaries");
        }
    }

    /// The firewall in use, once chosen.
    pub fn firewall(&self) -> Option<&Firewall> {
        self.firewall.get()
    }

    fn ready(&self) -> Result<&Firewall, ExposeRequestError> {
        self.firewall.get().ok_or_else(|| {
            ExposeRequestError::Unavailable(
                self.shown()
                    .problem
                    .clone()
                    .unwrap_or_else(|| "no firewall".into()),
            )
        })
    }

    /// Gives the bridge `addr` and exposes its subnet (masqueraded unless
    /// `skip_nat`). Exposing twice is harmless. Waits for the installation.
    pub fn expose(&self, addr: Ipv4Net, skip_nat: bool) -> Result<(), ExposeRequestError> {
        let mut no_nat = self.work();
        let firewall = self.ready()?;
        let mut rtnl = Rtnl::open().map_err(ExposeError::from)?;
        expose::expose(&mut rtnl, firewall, &self.config, addr, skip_nat)?;
        if skip_nat {
            no_nat.insert(addr.trunc());
        } else {
            no_nat.remove(&addr.trunc());
        }
        info!(%addr, bridge = %self.config.bridge, skip_nat, "exposed");
        if forwarding_off() {
            warn!(
                "net.ipv4.ip_forward is 0: traffic from {} will not be forwarded off this host",
                addr.trunc()
            );
        }
        Ok(())
    }

    /// Takes `addr` off the bridge and, when no other address of the bridge
    /// is in its subnet, the subnet's rules. Waits for the installation.
    pub fn hide(&self, addr: Ipv4Net) -> Result<(), ExposeRequestError> {
        let _serial = self.work();
        let firewall = self.ready()?;
        let mut rtnl = Rtnl::open().map_err(ExposeError::from)?;
        if !expose::hide(&mut rtnl, firewall, &self.config, addr)? {
            return Err(ExposeRequestError::NotExposed(addr));
        }
        info!(%addr, bridge = %self.config.bridge, "hidden");
        Ok(())
    }

    /// The `Firewall` entry of `/report`: `State` (installing, installed,
    /// unavailable), `Variant` and `Reason` once chosen, `Error`.
    pub fn report_json(&self) -> Value {
        let shown = self.shown();
        let firewall = self.firewall.get();
        json!({
            "State": shown.progress.as_str(),
            "Variant": firewall.map(|f| f.variant().to_string()),
            "Reason": firewall.map(Firewall::reason),
            "Error": shown.problem,
        })
    }
}

/// Whether IPv4 forwarding is off in this namespace (false when unknown).
fn forwarding_off() -> bool {
    crate::net::sysctl::Sysctl::default()
        .get("net/ipv4/ip_forward")
        .is_ok_and(|v| v.trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_addresses_parse() {
        let net = parse_exposed("10.32.0.1", "12").unwrap();
        assert_eq!(net.to_string(), "10.32.0.1/12");
        assert_eq!(parse_exposed("10.0.0.7", "32").unwrap().prefix_len(), 32);
        for (ip, prefix, says) in [
            ("10.32.0.300", "12", "not an IPv4 address"),
            ("fe80::1", "64", "not an IPv4 address"),
            ("", "12", "not an IPv4 address"),
            ("10.32.0.1", "33", "prefix length"),
            ("10.32.0.1", "0", "prefix length"),
            ("10.32.0.1", "-1", "prefix length"),
            ("10.32.0.1", "twelve", "prefix length"),
            ("10.32.0.1", "99999999999999999999", "prefix length"),
            ("10.32.0.0", "12", "network address of 10.32.0.0/12"),
            ("10.47.255.255", "12", "broadcast address"),
            ("127.0.0.1", "8", "cannot be a bridge address"),
            ("224.0.0.1", "4", "cannot be a bridge address"),
            ("0.0.0.0", "8", "cannot be a bridge address"),
            ("169.254.1.1", "16", "cannot be a bridge address"),
        ] {
            let error = parse_exposed(ip, prefix).unwrap_err();
            assert_eq!(error.status(), 400);
            assert!(error.to_string().contains(says), "{ip}/{prefix}: {error}");
        }
        // /31 has no network or broadcast address to refuse.
        assert!(parse_exposed("10.0.0.0", "31").is_ok());
    }

    #[test]
    fn errors_map_to_statuses() {
        let net: Ipv4Net = "10.32.0.1/12".parse().unwrap();
        assert_eq!(ExposeRequestError::NotExposed(net).status(), 404);
        assert_eq!(ExposeRequestError::Unavailable("x".into()).status(), 503);
        let failed =
            ExposeRequestError::Failed(ExposeError::Rtnl(RtnlError::NoSuchLink("weave".into())));
        assert_eq!(failed.status(), 500);
        assert!(failed.to_string().contains("weave"));
    }
}
