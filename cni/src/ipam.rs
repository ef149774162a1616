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

/// ADD: allocates (or finds) the container's address. A release of the
/// same id left while the router was down is cancelled first (see
/// [`crate::pending`]): the id is live again, its address must stay.
pub fn add(router: &Router, conf: &NetConf, id: &str) -> Result<CniResult, CniError> {
    cancel_deferred_release(conf, id)?;
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

/// DEL: frees every address of the container; when the router cannot be
/// reached, leaves that to it (see [`release_or_defer`]).
pub fn del(router: &Router, conf: &NetConf, id: &str) -> Result<(), CniError> {
    release_or_defer(router, conf, id)
}

/// Frees `id`'s addresses. When the router cannot be reached (or answers
/// that it is not ready), records the release in the pending directory
/// for the router to do when it is back, and succeeds: a DEL must not
/// wait for the router. Fails only if the record cannot be written
/// either (the runtime then retries the DEL).
pub fn release_or_defer(router: &Router, conf: &NetConf, id: &str) -> Result<(), CniError> {
    let error = match router.release(id) {
        Ok(()) => return Ok(()),
        Err(error) if error.code == Code::TryAgainLater && valid_container_id(id) => error,
        Err(error) => return Err(error),
    };
    let pending = conf.ipam.pending();
    match pending.lock().and_then(|locked| locked.defer(id)) {
        Ok(()) => {
            eprintln!(
                "weave-cni: {}: the addresses of {id} are left in {} for weave-router to free when it is back",
                error.msg,
                pending.path().display()
            );
            Ok(())
        }
        Err(io) => {
            let details = format!(
                "{}; and recording the release in {} failed: {io}",
                error.details,
                pending.path().display()
            );
            Err(error.with_details(details))
        }
    }
}

/// Removes a deferred release of `id`, under the directory's lock, if one
/// was left.
fn cancel_deferred_release(conf: &NetConf, id: &str) -> Result<(), CniError> {
    let pending = conf.ipam.pending();
    if !pending.has_record(id) {
        return Ok(());
    }
    let cancelled = pending.lock().and_then(|locked| locked.cancel(id));
    match cancelled {
        Ok(true) => {
            eprintln!(
                "weave-cni: {id} is added again: its release left while weave-router was down is cancelled"
            );
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(io) => Err(CniError::new(
            Code::Io,
            format!("cannot cancel the deferred release of {id}"),
        )
        .with_details(format!("{}: {io}", pending.path().display()))),
    }
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
