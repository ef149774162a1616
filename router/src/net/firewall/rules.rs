//! The host rules, as data: which chains, which rules where, in what order.
//! Pure, so the whole rule set is checked by unit tests; the backends only
//! carry it out.
//!
//! The rules are Weave 2.8.1's, so that a host moving from a Weave router to
//! ours (or back) ends with one consistent set:
//!
//! - filter/FORWARD, at the top and in this order: traffic between the
//!   Docker bridge and ours dropped (when a Docker bridge is named); bridge
//!   to bridge accepted (firewalls such as ufw would drop it otherwise), or,
//!   with a network-policy controller, handed to its chains; traffic to the
//!   bridge through WEAVE-EXPOSE; bridge to elsewhere accepted; replies back
//!   accepted.
//! - filter/INPUT: with a Docker bridge, containers on it may not reach the
//!   router's ports on the Docker bridge address, but may reach DNS; with a
//!   control port, only local processes may reach it on 127.0.0.1.
//! - nat/POSTROUTING jumps to nat/WEAVE, which holds the masquerading of
//!   exposed subnets; filter/WEAVE-EXPOSE accepts forwarded traffic to them.
//!
//! Every spec is written the way `iptables-save` prints the rule: the
//! addresses, interfaces and protocol first, in the order `-s`, `-d`, `-i`,
//! `-o`, `-p`; the match a port option needs named (`-p tcp -m tcp
//! --dport`); addresses with their prefix length; the comment the last
//! match. Set-up compares these specs word by word with the listing (see
//! [`plan`](super::plan)), and the netns tests check them against real
//! listings of both variants.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The filter chain that accepts traffic to exposed subnets.
pub const EXPOSE_CHAIN: &str = "WEAVE-EXPOSE";
/// The nat chain holding the masquerade rules.
pub const NAT_CHAIN: &str = "WEAVE";
/// The network-policy controller's ingress chain.
pub const NPC_CHAIN: &str = "WEAVE-NPC";
/// The network-policy controller's egress chain.
pub const NPC_EGRESS_CHAIN: &str = "WEAVE-NPC-EGRESS";
/// Weave's canary chain, used to notice a flush of the tables.
pub const CANARY_CHAIN: &str = "WEAVE-CANARY";
/// Comment on the FORWARD rules that must precede kube-proxy's.
pub const KUBE_NOTE: &str = "NOTE: this must go before '-j KUBE-FORWARD'";
/// Comment on the control-port rule.
pub const CONTROL_PORT_NOTE: &str = "Block non-local access to Weave Net control port";

/// An iptables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
    /// `mangle`.
    Mangle,
}

impl Table {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chain in a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The table.
    pub table: Table,
    /// The chain's name.
    pub name: String,
}

impl Chain {
    /// `table`/`name`.
    pub fn new(table: Table, name: &str) -> Chain {
        Chain {
            table,
            name: name.to_string(),
        }
    }
}

/// One rule: where it goes and its match/target arguments (everything
/// after the chain name on an iptables command line).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The table.
    pub table: Table,
    /// The chain.
    pub chain: String,
    /// The arguments.
    pub spec: Vec<String>,
}

impl Rule {
    /// A rule in `table`/`chain` with arguments `spec`.
    pub fn new(table: Table, chain: &str, spec: &[&str]) -> Rule {
        Rule {
            table,
            chain: chain.to_string(),
            spec: spec.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The target after `-j`, if any.
    pub fn jump_target(&self) -> Option<&str> {
        let at = self.spec.iter().position(|w| w == "-j")?;
        self.spec.get(at + 1).map(String::as_str)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "-t {} -A {} {}",
            self.table,
            self.chain,
            self.spec.join(" ")
        )
    }
}

/// The Docker bridge, when the router is told about one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerBridge {
    /// Its name (`--docker-bridge`).
    pub name: String,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
}

/// What the host rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The weave bridge.
    pub bridge: String,
    /// The Docker bridge, if any.
    pub docker_bridge: Option<DockerBridge>,
    /// The router's port (6783; fastdp uses the next one).
    pub port: u16,
    /// The HTTP control port, when the API listens on TCP.
    pub control_port: Option<u16>,
    /// Whether a network-policy controller runs (`--expect-npc`).
    pub npc: bool,
}

impl FirewallConfig {
    /// The rules for bridge `bridge` with no Docker bridge, control port or
    /// policy controller, on port 6783.
    pub fn new(bridge: &str) -> FirewallConfig {
        FirewallConfig {
            bridge: bridge.to_string(),
            docker_bridge: None,
            port: 6783,
            control_port: None,
            npc: false,
        }
    }
}

/// Everything the router keeps in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Chains emptied (and created if missing) at every start, before the
    /// rules go in, so rules of exposed subnets no longer there vanish.
    pub flushed_at_start: Vec<Chain>,
    /// Chains that must exist.
    pub chains: Vec<Chain>,
    /// Rules appended unless present.
    pub appended: Vec<Rule>,
    /// Rules that must be at the top of filter/FORWARD, in this order.
    pub forward_top: Vec<Vec<String>>,
}

fn strings(spec: &[&str]) -> Vec<String> {
    spec.iter().map(|s| s.to_string()).collect()
}

/// The rules for `config`.
pub fn host_rules(config: &FirewallConfig) -> RuleSet {
    let br = config.bridge.as_str();
    let mut set = RuleSet {
        flushed_at_start: Vec::new(),
        chains: Vec::new(),
        appended: Vec::new(),
        forward_top: Vec::new(),
    };
    if !config.npc {
        set.flushed_at_start
            .push(Chain::new(Table::Filter, EXPOSE_CHAIN));
    }
    set.flushed_at_start.push(Chain::new(Table::Nat, NAT_CHAIN));

    if let Some(docker) = &config.docker_bridge {
        let db = docker.name.as_str();
        if db != br {
            set.forward_top
                .push(strings(&["-i", db, "-o", br, "-j", "DROP"]));
        }
        let dst = format!("{}/32", docker.ip);
        let port = config.port.to_string();
        let next = config.port.saturating_add(1).to_string();
        for (proto, port) in [("tcp", &port), ("udp", &port), ("udp", &next)] {
            set.appended.push(Rule::new(
                Table::Filter,
                "INPUT",
                &[
                    "-d", &dst, "-i", db, "-p", proto, "-m", proto, "--dport", port, "-j", "DROP",
                ],
            ));
        }
        for proto in ["udp", "tcp"] {
            set.appended.push(Rule::new(
                Table::Filter,
                "INPUT",
                &[
                    "-i", db, "-p", proto, "-m", proto, "--dport", "53", "-j", "ACCEPT",
                ],
            ));
        }
    }
    if let Some(control) = config.control_port {
        set.appended.push(Rule::new(
            Table::Filter,
            "INPUT",
            &[
                "-d",
                "127.0.0.1/32",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                &control.to_string(),
                "-m",
                "addrtype",
                "!",
                "--src-type",
                "LOCAL",
                "-m",
                "conntrack",
                "!",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                CONTROL_PORT_NOTE,
                "-j",
                "DROP",
            ],
        ));
    }
    if config.npc {
        set.chains.push(Chain::new(Table::Filter, NPC_CHAIN));
        set.chains.push(Chain::new(Table::Filter, NPC_EGRESS_CHAIN));
        set.appended.push(Rule::new(
            Table::Filter,
            "INPUT",
            &["-i", br, "-j", NPC_EGRESS_CHAIN],
        ));
        set.forward_top.push(strings(&[
            "-i",
            br,
            "-m",
            "comment",
            "--comment",
            KUBE_NOTE,
            "-j",
            NPC_EGRESS_CHAIN,
        ]));
        set.forward_top.push(strings(&[
            "-o",
            br,
            "-m",
            "comment",
            "--comment",
            KUBE_NOTE,
            "-j",
            NPC_CHAIN,
        ]));
        set.forward_top.push(strings(&[
            "-o",
            br,
            "-m",
            "state",
            "--state",
            "NEW",
            "-j",
            "NFLOG",
            "--nflog-group",
            "86",
        ]));
        set.forward_top.push(strings(&["-o", br, "-j", "DROP"]));
    } else {
        set.forward_top
            .push(strings(&["-i", br, "-o", br, "-j", "ACCEPT"]));
        set.chains.push(Chain::new(Table::Filter, EXPOSE_CHAIN));
        set.forward_top
            .push(strings(&["-o", br, "-j", EXPOSE_CHAIN]));
    }
    set.forward_top
        .push(strings(&["-i", br, "!", "-o", br, "-j", "ACCEPT"]));
    set.forward_top.push(strings(&[
        "-o",
        br,
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]));
    set.chains.push(Chain::new(Table::Nat, NAT_CHAIN));
    set.appended
        .push(Rule::new(Table::Nat, "POSTROUTING", &["-j", NAT_CHAIN]));
    set
}

/// The rules that expose `subnet` (the bridge's address and prefix) to the
/// host: masquerade between it and the rest of the world (multicast from it
/// excepted), and, without a policy controller, accept forwarded traffic to
/// it. `skip_nat` leaves the masquerading out.
pub fn expose_rules(subnet: Ipv4Net, skip_nat: bool, npc: bool) -> Vec<Rule> {
    let net = subnet.trunc().to_string();
    let mut rules = Vec::new();
    if !skip_nat {
        rules.push(Rule::new(
            Table::Nat,
            NAT_CHAIN,
            &["-s", &net, "-d", "224.0.0.0/4", "-j", "RETURN"],
        ));
        rules.push(Rule::new(
            Table::Nat,
            NAT_CHAIN,
            &["!", "-s", &net, "-d", &net, "-j", "MASQUERADE"],
        ));
        rules.push(Rule::new(
            Table::Nat,
            NAT_CHAIN,
            &["-s", &net, "!", "-d", &net, "-j", "MASQUERADE"],
        ));
    }
    if !npc {
        rules.push(Rule::new(
            Table::Filter,
            EXPOSE_CHAIN,
            &["-d", &net, "-j", "ACCEPT"],
        ));
    }
    rules
}

/// What `reset` removes: every rule any configuration of ours (or Weave's)
/// puts in a built-in chain, then our chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    /// Rules deleted from built-in chains (every copy).
    pub rules: Vec<Rule>,
    /// Chains flushed and deleted.
    pub chains: Vec<Chain>,
}

/// The teardown for `config`: the rules of both the plain and the policy
/// controller variant, whichever was set up.
pub fn teardown(config: &FirewallConfig) -> Teardown {
    let mut rules = Vec::new();
    for npc in [false, true] {
        let set = host_rules(&FirewallConfig {
            npc,
            ..config.clone()
        });
        for rule in set.appended {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        for spec in set.forward_top {
            let rule = Rule {
                table: Table::Filter,
                chain: "FORWARD".into(),
                spec,
            };
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    let chains = vec![
        Chain::new(Table::Filter, EXPOSE_CHAIN),
        Chain::new(Table::Nat, NAT_CHAIN),
        Chain::new(Table::Filter, NPC_CHAIN),
        Chain::new(Table::Filter, NPC_EGRESS_CHAIN),
        Chain::new(Table::Filter, CANARY_CHAIN),
        Chain::new(Table::Nat, CANARY_CHAIN),
        Chain::new(Table::Mangle, CANARY_CHAIN),
    ];
    Teardown { rules, chains }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(spec: &[String]) -> String {
        spec.join(" ")
    }

    #[test]
    fn plain_rules_match_weave() {
        let set = host_rules(&FirewallConfig::new("weave"));
        let top: Vec<String> = set.forward_top.iter().map(|s| joined(s)).collect();
        assert_eq!(
            top,
            [
                "-i weave -o weave -j ACCEPT",
                "-o weave -j WEAVE-EXPOSE",
                "-i weave ! -o weave -j ACCEPT",
                "-o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ]
        );
        assert_eq!(
            set.flushed_at_start,
            [
                Chain::new(Table::Filter, "WEAVE-EXPOSE"),
                Chain::new(Table::Nat, "WEAVE")
            ]
        );
        assert_eq!(
            set.chains,
            [
                Chain::new(Table::Filter, "WEAVE-EXPOSE"),
                Chain::new(Table::Nat, "WEAVE")
            ]
        );
        let appended: Vec<String> = set.appended.iter().map(|r| r.to_string()).collect();
        assert_eq!(appended, ["-t nat -A POSTROUTING -j WEAVE"]);
    }

    #[test]
    fn docker_bridge_and_control_port_rules() {
        let mut cfg = FirewallConfig::new("weave");
        cfg.docker_bridge = Some(DockerBridge {
            name: "docker0".into(),
            ip: Ipv4Addr::new(172, 17, 0, 1),
        });
        cfg.control_port = Some(6784);
        let set = host_rules(&cfg);
        assert_eq!(joined(&set.forward_top[0]), "-i docker0 -o weave -j DROP");
        let appended: Vec<String> = set.appended.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            appended,
            [
                "-t filter -A INPUT -d 172.17.0.1/32 -i docker0 -p tcp -m tcp --dport 6783 -j DROP",
                "-t filter -A INPUT -d 172.17.0.1/32 -i docker0 -p udp -m udp --dport 6783 -j DROP",
                "-t filter -A INPUT -d 172.17.0.1/32 -i docker0 -p udp -m udp --dport 6784 -j DROP",
                "-t filter -A INPUT -i docker0 -p udp -m udp --dport 53 -j ACCEPT",
                "-t filter -A INPUT -i docker0 -p tcp -m tcp --dport 53 -j ACCEPT",
                "-t filter -A INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6784 -m addrtype ! --src-type LOCAL -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment Block non-local access to Weave Net control port -j DROP",
                "-t nat -A POSTROUTING -j WEAVE",
            ]
        );
        // A Docker bridge that is our bridge gets no DROP between them.
        cfg.docker_bridge = Some(DockerBridge {
            name: "weave".into(),
            ip: Ipv4Addr::new(10, 32, 0, 1),
        });
        assert_eq!(
            joined(&host_rules(&cfg).forward_top[0]),
            "-i weave -o weave -j ACCEPT"
        );
    }

    #[test]
    fn npc_rules_hand_traffic_to_its_chains() {
        let mut cfg = FirewallConfig::new("weave");
        cfg.npc = true;
        let set = host_rules(&cfg);
        let top: Vec<String> = set.forward_top.iter().map(|s| joined(s)).collect();
        assert_eq!(
            top,
            [
                "-i weave -m comment --comment NOTE: this must go before '-j KUBE-FORWARD' -j WEAVE-NPC-EGRESS",
                "-o weave -m comment --comment NOTE: this must go before '-j KUBE-FORWARD' -j WEAVE-NPC",
                "-o weave -m state --state NEW -j NFLOG --nflog-group 86",
                "-o weave -j DROP",
                "-i weave ! -o weave -j ACCEPT",
                "-o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            ]
        );
        assert!(
            !set.chains
                .contains(&Chain::new(Table::Filter, EXPOSE_CHAIN))
        );
        assert_eq!(set.flushed_at_start, [Chain::new(Table::Nat, NAT_CHAIN)]);
    }

    #[test]
    fn expose_masquerades_the_network() {
        let net: Ipv4Net = "10.32.0.1/12".parse().unwrap();
        let rules: Vec<String> = expose_rules(net, false, false)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            rules,
            [
                "-t nat -A WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN",
                "-t nat -A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE",
                "-t nat -A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE",
                "-t filter -A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT",
            ]
        );
        assert_eq!(expose_rules(net, true, true), []);
        assert_eq!(expose_rules(net, true, false).len(), 1);
    }

    #[test]
    fn teardown_covers_every_rule_once() {
        let mut cfg = FirewallConfig::new("weave");
        cfg.control_port = Some(6784);
        let down = teardown(&cfg);
        for npc in [false, true] {
            let set = host_rules(&FirewallConfig { npc, ..cfg.clone() });
            for r in &set.appended {
                assert!(down.rules.contains(r), "{r}");
            }
            for spec in &set.forward_top {
                assert!(
                    down.rules
                        .iter()
                        .any(|r| &r.spec == spec && r.chain == "FORWARD")
                );
            }
        }
        let distinct: std::collections::HashSet<&Rule> = down.rules.iter().collect();
        assert_eq!(distinct.len(), down.rules.len());
        assert!(down.chains.contains(&Chain::new(Table::Nat, "WEAVE")));
    }
}
