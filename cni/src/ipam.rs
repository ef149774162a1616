//! `weave-ipam`: addresses from weave-router's allocator, by container id,
//! as Weave's IPAM plugin gave them. `weave-net` runs the same code in
//! process when its `ipam.type` is `weave-ipam` (or empty).

use std::collections::HashSet;

use ipnet::{IpNet, Ipv4Net};

use crate::config::NetConf;
use crate::env::valid_container_id;
use crate::error::{CniError, Code};
use crate::result::{CniResult, IpConfig};
use crate::router::Router;

/// ADD: allocates (or finds) the container's address.
pub fn add(router: &Router, conf: &NetConf, id: &str) -> Result<CniResult, CniError> {
    let address = router.allocate(id, conf.ipam.subnet)?;
    Ok(CniResult {
        ips: vec![IpConfig {
            address: IpNet::V4(address),
            gateway: conf.ipam.gateway.map(Into::into),
            interface: None,
        }],
        routes: conf.ipam.routes.clone(),
        ..CniResult::default()
    })
}

/// DEL: frees every address of the container.
pub fn del(router: &Router, id: &str) -> Result<(), CniError> {
    router.release(id)
}

/// CHECK: every IPv4 address `expected` lists is still reserved for `id`.
pub fn check(
    router: &Router,
    conf: &NetConf,
    id: &str,
    expected: &[Ipv4Net],
) -> Result<(), CniError> {
    for addr in expected {
        let subnet = conf.ipam.subnet.unwrap_or(addr.trunc());
        let held = router.lookup(id, Some(subnet))?;
        if !held.contains(addr) {
            return Err(CniError::new(
                Code::CheckFailed,
                format!("address {addr} is no longer reserved for {id}"),
            )
            .with_details(format!("weave-router holds {held:?} for it")));
        }
    }
    Ok(())
}

/// The IPv4 addresses of a previous result, optionally only those on
/// interface `interface`.
pub fn v4_addresses(result: &CniResult, interface: Option<usize>) -> Vec<Ipv4Net> {
    result
        .ips
        .iter()
        .filter(|ip| interface.is_none() || ip.interface.is_none() || ip.interface == interface)
        .filter_map(|ip| match ip.address {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// GC: frees the addresses of every container the runtime no longer lists
/// (`cni.dev/valid-attachments`), in this network's subnet. Identities that
/// are not container ids (`weave:expose`, `_`) are never touched. Errors are
/// collected and the sweep carries on.
pub fn gc(router: &Router, conf: &NetConf) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Err(CniError::new(
            Code::InvalidConfig,
            "GC needs cni.dev/valid-attachments in the configuration",
        ));
    };
    let keep: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let subnet = match conf.ipam.subnet {
        Some(subnet) => subnet,
        None => router.default_subnet()?,
    };
    let mut errors = Vec::new();
    for owned in router.owned()? {
        let ours =
            !owned.addrs.is_empty() && owned.addrs.iter().all(|a| subnet.contains(&a.addr()));
        if !ours || keep.contains(owned.id.as_str()) || !valid_container_id(&owned.id) {
            continue;
        }
        match router.release(&owned.id) {
            Ok(()) => router.unregister_container(&owned.id),
            Err(e) => errors.push(format!("{}: {e}", owned.id)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(Code::Router, "GC could not free some addresses")
                .with_details(errors.join("; ")),
        )
    }
}
