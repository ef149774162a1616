//! The check Weave's launch.sh made with `weaveutil netcheck` before
//! starting: the allocation range must not overlap a route the host
//! already has (other than through the weave bridge itself, or the
//! default route), or pod traffic would be misrouted.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// An IPv4 route of the host: the interface and the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its interface.
    pub iface: String,
    /// Its destination.
    pub dest: Ipv4Net,
}

/// Parses `/proc/net/route` (destination and mask in the kernel's
/// little-endian hex); lines that do not parse are skipped.
pub fn parse_routes(table: &str) -> Vec<Route> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let dest = hex(dest)?;
            let prefix = u32::from(hex(mask)?).leading_ones() as u8;
            Some(Route {
                iface: (*iface).to_string(),
                dest: Ipv4Net::new(dest, prefix).ok()?,
            })
        })
        .collect()
}

/// The first route that overlaps `range`, ignoring routes via `bridge`
/// and default routes.
pub fn overlap<'a>(range: Ipv4Net, routes: &'a [Route], bridge: &str) -> Option<&'a Route> {
    routes.iter().find(|r| {
        r.iface != bridge
            && r.dest.prefix_len() > 0
            && (r.dest.contains(&range.network()) || range.contains(&r.dest.network()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
weave\t0000200A\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    #[test]
    fn finds_overlaps_but_not_the_bridge_or_default() {
        let routes = parse_routes(TABLE);
        assert_eq!(routes.len(), 4);
        assert_eq!(routes[1].dest.to_string(), "192.168.0.0/24");
        assert_eq!(routes[2].dest.to_string(), "10.32.0.0/12");
        let range: Ipv4Net = "10.32.0.0/12".parse().unwrap();
        assert_eq!(overlap(range, &routes, "weave"), None);
        let clash: Ipv4Net = "172.16.0.0/12".parse().unwrap();
        assert_eq!(overlap(clash, &routes, "weave").unwrap().iface, "docker0");
        let inside: Ipv4Net = "192.168.0.128/25".parse().unwrap();
        assert_eq!(overlap(inside, &routes, "weave").unwrap().iface, "eth0");
    }
}
