//! The kernel's per-namespace protocol counters (`/proc/net/snmp` and
//! `/proc/net/netstat`), read inside a namespace, for tests and benchmarks
//! that must tell loss from reordering on a path.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::Command;

/// Counters by `<Group><Name>`, e.g. `TcpExtTCPOFOQueue`, `UdpInErrors`.
pub type Counters = BTreeMap<String, u64>;

/// Parses `/proc/net/snmp` or `/proc/net/netstat` text, keeping the groups
/// in `groups` (`Tcp`, `TcpExt`, `Udp`, `Ip`, …). Both files are pairs of
/// lines: `Udp: Name Name…` then `Udp: 1 2…`; anything else is skipped.
pub fn parse_proc_net(text: &str, groups: &[&str]) -> Counters {
    let mut counters = Counters::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let mut names = names.split_whitespace();
        let group = names.next().unwrap_or("").trim_end_matches(':');
        if !groups.contains(&group) {
            continue;
        }
        for (name, value) in names.zip(values.split_whitespace().skip(1)) {
            if let Ok(value) = value.parse::<u64>() {
                counters.insert(format!("{group}{name}"), value);
            }
        }
    }
    counters
}

/// The `Tcp`, `TcpExt`, `Udp` and `Ip` counters of namespace `netns`.
pub fn read(netns: &str) -> Result<Counters> {
    let mut counters = Counters::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let out = Command::new("cat").arg(file).in_netns(netns).output()?;
        counters.extend(parse_proc_net(&out.stdout, &["Tcp", "TcpExt", "Udp", "Ip"]));
    }
    Ok(counters)
}

/// How much counter `name` grew from `before` to `after`.
pub fn delta(before: &Counters, after: &Counters, name: &str) -> u64 {
    let then = before.get(name).copied().unwrap_or(0);
    after.get(name).copied().unwrap_or(0).saturating_sub(then)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_lines_become_named_counters() {
        let text = "TcpExt: SyncookiesSent TCPOFOQueue\nTcpExt: 0 262\n\
                    IpExt: InNoRoutes\nIpExt: 5\nUdp: InErrors\nUdp: 3\nodd line\n";
        let counters = parse_proc_net(text, &["TcpExt", "Udp"]);
        assert_eq!(counters.get("TcpExtTCPOFOQueue"), Some(&262));
        assert_eq!(counters.get("UdpInErrors"), Some(&3));
        assert!(!counters.contains_key("IpExtInNoRoutes"));
        let later = parse_proc_net("TcpExt: TCPOFOQueue\nTcpExt: 300\n", &["TcpExt"]);
        assert_eq!(delta(&counters, &later, "TcpExtTCPOFOQueue"), 38);
        assert_eq!(delta(&later, &counters, "TcpExtTCPOFOQueue"), 0);
    }
}
