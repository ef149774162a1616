//! `weave-net`'s work on the host and in the container: the veth pair on
//! the bridge, the container's address and routes, and undoing it.
//!
//! The bridge `weave` is either a Linux bridge (Bridge and BridgedFastdp
//! modes), where the host veth is enslaved here, or, in pure Fastdp mode,
//! the Open vSwitch datapath's own internal port: then the router makes
//! the host veth a port of the datapath when the container is registered
//! (`PUT /container/{id}` with `host_veth`), and ADD waits until the
//! kernel shows it attached.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::error::{CniError, Code};
use crate::netns::{Netns, NetnsError};
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::router::{EXPOSE_ID, Router};
use crate::rtnl::{Link, Rtnl, RtnlError};
use crate::sys;

/// Prefix of the host end of a container's veth, as Weave names it.
pub const HOST_VETH_PREFIX: &str = "vethwepl";

/// How long ADD waits, in pure Fastdp mode, for the router to make the
/// host veth a datapath port.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the link named by the configuration's `bridge` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// A Linux bridge (Bridge or BridgedFastdp mode).
    Linux,
    /// The internal port of an Open vSwitch datapath (pure Fastdp mode).
    Datapath,
}

/// What a link's kind makes of it as the weave bridge, or `None` when it
/// can be neither.
pub fn bridge_kind(kind: &str) -> Option<BridgeKind> {
    match kind {
        "bridge" => Some(BridgeKind::Linux),
        "openvswitch" => Some(BridgeKind::Datapath),
        _ => None,
    }
}

fn kernel(error: RtnlError) -> CniError {
    CniError::new(Code::Kernel, error.to_string())
}

fn netns_error(error: NetnsError) -> CniError {
    CniError::new(Code::Io, "cannot work in the container's network namespace")
        .with_details(error.to_string())
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The host end's name: Weave's `vethwepl` and the first 7 characters of
/// the container id (ids shorter than 5 characters, which Weave replaced
/// with random hex, get a hash of id and interface instead).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    if container_id.len() < 5 {
        return fallback_veth_name(container_id, ifname);
    }
    let id: String = container_id
        .chars()
        .take(15 - HOST_VETH_PREFIX.len())
        .collect();
    format!("{HOST_VETH_PREFIX}{id}")
}

/// The name used when [`host_veth_name`] is taken (a second interface of
/// the same container, or two ids sharing their first 7 characters).
pub fn fallback_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = fnv(&format!("{container_id}/{ifname}")) & 0x0fff_ffff;
    format!("{HOST_VETH_PREFIX}{hash:07x}")
}

/// What the container side reports back.
struct ContainerSide {
    mac: String,
}

/// ADD for `weave-net`. `ipam_result` is what IPAM gave; `release` undoes
/// the allocation if anything later fails.
pub fn add(
    router: &Router,
    conf: &NetConf,
    env: &CniEnv,
    ipam_result: CniResult,
    release: &dyn Fn(),
) -> Result<CniResult, CniError> {
    let ns_path = env.netns.clone().unwrap_or_default();
    let ifname = env.ifname().to_string();
    let netns = Netns::open(&ns_path).map_err(netns_error)?;
    let mut rtnl = Rtnl::open().map_err(kernel)?;
    let (bridge, kind) = bridge(&mut rtnl, &conf.bridge)?;
    let address = ipam_result
        .ips
        .iter()
        .find_map(|ip| match ip.address {
            IpNet::V4(net) => Some((net, ip.gateway)),
            IpNet::V6(_) => None,
        })
        .ok_or_else(|| CniError::new(Code::Router, "IPAM returned no IPv4 address"))?;
    let (addr, ipam_gateway) = address;
    let result = (|| {
        let gateway = match ipam_gateway {
            Some(std::net::IpAddr::V4(gw)) => Some(gw),
            _ if ipam_result.routes.is_empty() => {
                Some(bridge_address(router, conf, &mut rtnl, &bridge, addr)?)
            }
            _ => None,
        };
        // The pod keeps TX checksum and segmentation offload in every mode.
        // Weave's plugin turned checksum offload off for the sleeve, whose
        // pcap capture forwarded frames as they were; weave-rs's capture
        // completes partial checksums and cuts TCP super-frames itself, and
        // with offload on the pod's TCP hands it 64 KiB at a time.
        let mtu = conf.mtu.unwrap_or(bridge.mtu);
        let mut host_name = host_veth_name(env.id(), &ifname);
        if rtnl.link(&host_name).map_err(kernel)?.is_some() {
            host_name = fallback_veth_name(env.id(), &ifname);
        }
        rtnl.add_veth(&host_name, &ifname, mtu, netns.file().as_raw_fd())
            .map_err(|e| match e.errno() {
                Some(libc::EEXIST) => CniError::new(
                    Code::InterfaceExists,
                    format!("interface {ifname} (or host veth {host_name}) already exists"),
                ),
                _ => kernel(e),
            })?;
        let host = rtnl
            .link(&host_name)
            .map_err(kernel)?
            .ok_or_else(|| CniError::new(Code::Kernel, format!("veth {host_name} vanished")))?;
        let undo_veth = |rtnl: &mut Rtnl| {
            let _ = rtnl.delete_link(host.index);
        };
        let host_setup = (|| {
            sys::sysctl_if_exists(&format!("net/ipv6/conf/{host_name}/accept_ra"), "0")
                .map_err(|e| CniError::new(Code::Kernel, e.to_string()))?;
            if kind == BridgeKind::Linux {
                rtnl.set_master(host.index, bridge.index).map_err(kernel)?;
                if conf.hairpin_mode {
                    rtnl.set_hairpin(host.index, true).map_err(kernel)?;
                }
            }
            rtnl.set_up(host.index).map_err(kernel)
        })();
        if let Err(e) = host_setup {
            undo_veth(&mut rtnl);
            return Err(e);
        }
        let routes = ipam_result.routes.clone();
        let name = ifname.clone();
        let side = netns
            .run(move || container_setup(&name, addr, gateway, &routes))
            .map_err(netns_error)
            .and_then(|r| r);
        let side = match side {
            Ok(side) => side,
            Err(e) => {
                undo_veth(&mut rtnl);
                return Err(e);
            }
        };
        match kind {
            BridgeKind::Linux => {
                router.register_container(env.id(), &[addr], &side.mac, &host_name);
            }
            BridgeKind::Datapath => {
                let attached = router
                    .attach_container(env.id(), &[addr], &side.mac, &host_name)
                    .and_then(|()| wait_attached(&mut rtnl, &host_name, bridge.index));
                if let Err(e) = attached {
                    router.unregister_container(env.id());
                    undo_veth(&mut rtnl);
                    return Err(e);
                }
            }
        }
        Ok(build_result(
            conf,
            &ns_path,
            &ifname,
            &host,
            &host_name,
            mtu,
            &side,
            &ipam_result,
            gateway,
        ))
    })();
    if result.is_err() {
        release();
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn build_result(
    conf: &NetConf,
    ns_path: &str,
    ifname: &str,
    host: &Link,
    host_name: &str,
    mtu: u32,
    side: &ContainerSide,
    ipam_result: &CniResult,
    gateway: Option<Ipv4Addr>,
) -> CniResult {
    let mut out = conf.prev_result.clone().unwrap_or_default();
    let base = out.interfaces.len();
    out.interfaces.push(Interface {
        name: host_name.to_string(),
        mac: host.mac.clone(),
        ..Interface::default()
    });
    out.interfaces.push(Interface {
        name: ifname.to_string(),
        mac: Some(side.mac.clone()),
        mtu: Some(mtu),
        sandbox: Some(ns_path.to_string()),
        ..Interface::default()
    });
    for ip in &ipam_result.ips {
        out.ips.push(IpConfig {
            address: ip.address,
            gateway: ip.gateway.or_else(|| {
                gateway
                    .filter(|_| ip.address.addr().is_ipv4())
                    .map(Into::into)
            }),
            interface: Some(base + 1),
        });
    }
    if ipam_result.routes.is_empty() {
        if let Some(gw) = gateway {
            out.routes
                .push(Route::via(IpNet::V4(Ipv4Net::default()), Some(gw.into())));
        }
    } else {
        out.routes.extend(ipam_result.routes.iter().cloned());
    }
    if !conf.dns.is_empty() {
        out.dns = conf.dns.clone();
    } else if !ipam_result.dns.is_empty() {
        out.dns = ipam_result.dns.clone();
    }
    out
}

/// Waits until the host veth `name` is a port of the datapath whose
/// internal port has index `datapath` (the kernel shows the datapath as
/// the port's master).
fn wait_attached(rtnl: &mut Rtnl, name: &str, datapath: u32) -> Result<(), CniError> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let link = rtnl.link(name).map_err(kernel)?;
        if link.as_ref().and_then(|l| l.master) == Some(datapath) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CniError::new(
                Code::Router,
                format!(
                    "weave-router did not make {name} a port of its datapath within {}s",
                    ATTACH_TIMEOUT.as_secs()
                ),
            )
            .with_details("see the router's log (\"attaching the container's veth\")"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The bridge: a Linux bridge, or the internal port of an Open vSwitch
/// datapath (pure Fastdp).
fn bridge(rtnl: &mut Rtnl, name: &str) -> Result<(Link, BridgeKind), CniError> {
    let bridge = rtnl.link(name).map_err(kernel)?.ok_or_else(|| {
        CniError::new(
            Code::TryAgainLater,
            format!("bridge {name:?} is not present; is weave-router running?"),
        )
    })?;
    match bridge_kind(&bridge.kind) {
        Some(kind) => Ok((bridge, kind)),
        None => Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "{name:?} is a {:?} link, neither a Linux bridge nor an Open vSwitch datapath",
                bridge.kind
            ),
        )),
    }
}

/// The bridge's address to route through: one in the container's subnet,
/// else its first; when it has none, an address of the subnet is allocated
/// under `weave:expose` and put on the bridge (through the router's
/// `/expose` when it has one, else directly).
fn bridge_address(
    router: &Router,
    conf: &NetConf,
    rtnl: &mut Rtnl,
    bridge: &Link,
    addr: Ipv4Net,
) -> Result<Ipv4Addr, CniError> {
    let addrs = rtnl.addresses_v4(bridge.index).map_err(kernel)?;
    if let Some(found) = addrs
        .iter()
        .find(|a| addr.contains(&a.addr()))
        .or_else(|| addrs.first())
    {
        return Ok(found.addr());
    }
    if !conf.ipam.is_weave() {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "bridge {:?} has no address; give ipam.gateway or routes with ipam type {}",
                bridge.name, conf.ipam.plugin
            ),
        ));
    }
    let exposed = router.allocate(EXPOSE_ID, Some(addr.trunc()))?;
    if !router.expose(exposed)? {
        // The router has no /expose: put the address on the bridge here.
        // (Weave's expose also added NAT rules; they are the router's job.)
        rtnl.add_address(bridge.index, exposed).map_err(kernel)?;
    }
    Ok(exposed.addr())
}

/// Exposes the bridge before the container's address is allocated, when
/// the bridge will be the container's gateway (weave IPAM, no configured
/// gateway or routes) and has no address yet: the bridge then takes the
/// first address of the node's share (10.32.0.1 on the node that owns the
/// start of the range), as on Weave's Kubernetes nodes, where the
/// DaemonSet's `weave expose` runs when the router starts, before the
/// first pod. (Weave's plugin alone allocated the pod first and the bridge
/// second.) [`bridge_address`] still covers a bridge that loses its
/// address between the two steps.
pub fn expose_bridge_first(router: &Router, conf: &NetConf) -> Result<(), CniError> {
    if !conf.ipam.is_weave() || conf.ipam.gateway.is_some() || !conf.ipam.routes.is_empty() {
        return Ok(());
    }
    let mut rtnl = Rtnl::open().map_err(kernel)?;
    let (bridge, _) = bridge(&mut rtnl, &conf.bridge)?;
    if !rtnl.addresses_v4(bridge.index).map_err(kernel)?.is_empty() {
        return Ok(());
    }
    let exposed = router.allocate(EXPOSE_ID, conf.ipam.subnet)?;
    if !router.expose(exposed)? {
        // As in bridge_address: no /expose on this router.
        if let Err(error) = rtnl.add_address(bridge.index, exposed) {
            if error.errno() != Some(libc::EEXIST) {
                return Err(kernel(error));
            }
        }
    }
    Ok(())
}

fn container_setup(
    ifname: &str,
    addr: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    routes: &[Route],
) -> Result<ContainerSide, CniError> {
    let mut rtnl = Rtnl::open().map_err(kernel)?;
    let link = rtnl.link(ifname).map_err(kernel)?.ok_or_else(|| {
        CniError::new(
            Code::Kernel,
            format!("{ifname} did not appear in the container"),
        )
    })?;
    let sysfail = |e: std::io::Error| CniError::new(Code::Kernel, e.to_string());
    sys::sysctl_if_exists(&format!("net/ipv6/conf/{ifname}/accept_ra"), "0").map_err(sysfail)?;
    sys::configure_arp_cache(ifname).map_err(sysfail)?;
    // The gratuitous ARP is sent by the kernel (arp_notify), see below.
    sys::sysctl_if_exists(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1").map_err(sysfail)?;
    rtnl.add_address(link.index, addr).map_err(kernel)?;
    rtnl.set_up(link.index).map_err(kernel)?;
    if routes.is_empty() {
        if let Some(gw) = gateway {
            if !addr.contains(&gw) {
                let host = Ipv4Net::new(gw, 32).unwrap_or_default();
                rtnl.add_route(host, None, link.index, true, None, None, None, None)
                    .map_err(kernel)?;
            }
            rtnl.add_route(
                Ipv4Net::default(),
                Some(gw),
                link.index,
                false,
                None,
                None,
                None,
                None,
            )
            .map_err(kernel)?;
        }
    } else {
        for route in routes {
            let IpNet::V4(dst) = route.dst else { continue };
            let gw = match route.gw {
                Some(std::net::IpAddr::V4(gw)) => Some(gw),
                _ => gateway,
            };
            rtnl.add_route(
                dst,
                gw,
                link.index,
                false,
                route.priority,
                route.table,
                route.mtu,
                route.advmss,
            )
            .map_err(kernel)?;
        }
    }
    let mac = link.mac.clone().unwrap_or_default();
    // The gratuitous ARP, so neighbours drop a stale entry for a reused
    // address: re-setting the MAC makes the kernel send it (arp_notify).
    // Not at link-up, where it would come before the bridge port of the
    // host end forwards; and not from a packet socket, whose close waits
    // for an RCU grace period (about 15 ms, most of an ADD).
    if let Some(bytes) = sys::parse_mac(&mac) {
        if let Err(e) = rtnl.set_mac(link.index, bytes) {
            eprintln!("weave-cni: gratuitous ARP on {ifname}: {e}");
        }
    }
    Ok(ContainerSide { mac })
}

/// Whether `ifname` exists in the namespace.
pub fn interface_exists(netns: &Netns, ifname: &str) -> Result<bool, CniError> {
    let name = ifname.to_string();
    netns
        .run(move || {
            Rtnl::open()
                .and_then(|mut r| r.link(&name))
                .map(|l| l.is_some())
        })
        .map_err(netns_error)?
        .map_err(kernel)
}

/// DEL's interface part: removes `ifname` from the namespace (and with it
/// the host end). A namespace or interface already gone is success.
pub fn remove(env: &CniEnv) -> Result<(), CniError> {
    let Some(path) = env.netns.as_deref() else {
        return Ok(());
    };
    let netns = match Netns::open(path) {
        Ok(ns) => ns,
        Err(e) if e.is_gone() => return Ok(()),
        Err(e) => return Err(netns_error(e)),
    };
    let name = env.ifname().to_string();
    let outcome = netns.run(move || -> Result<(), RtnlError> {
        let mut rtnl = Rtnl::open()?;
        if let Some(link) = rtnl.link(&name)? {
            rtnl.delete_link(link.index)?;
        }
        Ok(())
    });
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(kernel(e)),
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(netns_error(e)),
    }
}

/// CHECK's interface part: the container interface and host veth that
/// `prev` lists still exist as ADD left them.
pub fn check(conf: &NetConf, env: &CniEnv, prev: &CniResult) -> Result<Vec<Ipv4Net>, CniError> {
    let failed = |msg: String| CniError::new(Code::CheckFailed, msg);
    let ns_path = env.netns.clone().unwrap_or_default();
    let ifname = env.ifname().to_string();
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref() == Some(ns_path.as_str()))
        .ok_or_else(|| {
            failed(format!(
                "prevResult lists no interface {ifname} in {ns_path}"
            ))
        })?;
    let expected = crate::ipam::v4_addresses(prev, Some(index));
    let mac = prev.interfaces.get(index).and_then(|i| i.mac.clone());
    let routes: Vec<(Ipv4Net, Option<Ipv4Addr>)> = prev
        .routes
        .iter()
        .filter_map(|r| match (r.dst, r.gw) {
            (IpNet::V4(dst), Some(std::net::IpAddr::V4(gw))) => Some((dst, Some(gw))),
            (IpNet::V4(dst), _) => Some((dst, None)),
            _ => None,
        })
        .collect();
    let netns = Netns::open(&ns_path).map_err(netns_error)?;
    let addrs = expected.clone();
    let name = ifname.clone();
    netns
        .run(move || -> Result<(), CniError> {
            let mut rtnl = Rtnl::open().map_err(kernel)?;
            let link = rtnl
                .link(&name)
                .map_err(kernel)?
                .ok_or_else(|| failed(format!("{name} is missing from the container")))?;
            if !link.up {
                return Err(failed(format!("{name} is down")));
            }
            if mac.is_some() && link.mac != mac {
                return Err(failed(format!(
                    "{name} has MAC {:?}, not {mac:?}",
                    link.mac
                )));
            }
            let have = rtnl.addresses_v4(link.index).map_err(kernel)?;
            for addr in &addrs {
                if !have.contains(addr) {
                    return Err(failed(format!(
                        "{name} lacks address {addr} (has {have:?})"
                    )));
                }
            }
            let table = rtnl.routes_v4().map_err(kernel)?;
            for (dst, gw) in &routes {
                let present = table
                    .iter()
                    .any(|r| r.dst == *dst && (gw.is_none() || r.gw == *gw));
                if !present {
                    return Err(failed(format!("route to {dst} via {gw:?} is missing")));
                }
            }
            Ok(())
        })
        .map_err(netns_error)??;
    let mut rtnl = Rtnl::open().map_err(kernel)?;
    let (bridge, _) = bridge(&mut rtnl, &conf.bridge)?;
    for host in prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_none() && i.name.starts_with(HOST_VETH_PREFIX))
    {
        let link = rtnl
            .link(&host.name)
            .map_err(kernel)?
            .ok_or_else(|| failed(format!("host veth {} is missing", host.name)))?;
        if link.master != Some(bridge.index) {
            return Err(failed(format!(
                "host veth {} is not on bridge (or datapath) {}",
                host.name, conf.bridge
            )));
        }
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_follow_weave() {
        assert_eq!(
            host_veth_name("0e18de4c2a5b7f6e1d", "eth0"),
            "vethwepl0e18de4"
        );
        assert_eq!(host_veth_name("abcde", "eth0"), "vethweplabcde");
        let short = host_veth_name("ab", "eth0");
        assert_eq!(short.len(), 15);
        assert!(short.starts_with(HOST_VETH_PREFIX));
        assert_ne!(
            fallback_veth_name("abc", "eth0"),
            fallback_veth_name("abc", "eth1")
        );
        assert!(fallback_veth_name("x", "y").len() <= 15);
    }

    #[test]
    fn bridge_kinds() {
        assert_eq!(bridge_kind("bridge"), Some(BridgeKind::Linux));
        assert_eq!(bridge_kind("openvswitch"), Some(BridgeKind::Datapath));
        assert_eq!(bridge_kind("veth"), None);
        assert_eq!(bridge_kind(""), None);
    }
}
