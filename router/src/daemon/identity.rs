//! Where a router's default name and nickname come from.
//!
//! As Weave's `weaver`: the name defaults to the MAC address of the weave
//! bridge when it exists (so a restarted router keeps its name), otherwise
//! to the MAC of the interface that carries the default route, otherwise
//! to that of the first interface with a MAC. The nickname defaults to the
//! host name.

use std::path::Path;

use crate::mesh::identity::PeerName;

/// The default peer name, read from `/sys/class/net` and `/proc/net/route`.
pub fn default_name(bridge: &str) -> Result<PeerName, String> {
    let sys = Path::new("/sys/class/net");
    let mut candidates = vec![bridge.to_string()];
    if let Some(iface) = default_route_interface() {
        candidates.push(iface);
    }
    let mut others: Vec<String> = std::fs::read_dir(sys)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    candidates.extend(others);
    for iface in candidates {
        let Ok(text) = std::fs::read_to_string(sys.join(&iface).join("address")) else {
            continue;
        };
        let text = text.trim();
        if text.is_empty() || text == "00:00:00:00:00:00" {
            continue;
        }
        if let Ok(name) = text.parse::<PeerName>() {
            return Ok(name);
        }
    }
    Err("no interface with a MAC address to name this router after: give --name".into())
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&table)
}

fn default_route_in(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [iface, "00000000", _, _, _, _, _, "00000000", ..] => Some((*iface).to_string()),
            _ => None,
        }
    })
}

/// The host name, or `weave-router` when it cannot be read.
pub fn default_nickname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "weave-router".into())
}

#[cfg(test)]
mod tests {
    use super::default_route_in;

    #[test]
    fn the_default_route_interface_is_found() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in("Iface\tDestination\n"), None);
    }
}
