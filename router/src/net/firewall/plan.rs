//! Deciding, from one `iptables-save` listing, the single
//! `iptables-restore --noflush` input that puts the router's rules in place.
//! Pure: the listing comes in, the restore input goes out.
//!
//! Three kinds of chain, three treatments:
//!
//! - Chains the router owns outright (the rule set's `flushed_at_start`:
//!   nat/WEAVE, and filter/WEAVE-EXPOSE without a policy controller) are
//!   rewritten whole. In a `--noflush` restore, declaring a user chain
//!   (`:NAME - [0:0]`) creates it or empties it, and the rules appended
//!   after it land in the same commit, so the chain is never seen empty and
//!   rewriting it twice gives the same chain. When the listing already
//!   shows exactly the wanted content, the chain is left alone.
//! - Chains someone else fills (weave-npc's WEAVE-NPC chains) and the
//!   canary chains are declared only when missing: declaring an existing
//!   chain would empty it.
//! - Rules in built-in chains (INPUT, POSTROUTING) are appended only when
//!   the listing does not show them. The comparison is word by word, so
//!   our specs are written the way `iptables-save` prints them (see
//!   [`rules`](super::rules)). A rule that is not shown exactly but looks
//!   like one that is (same interfaces, addresses, ports and target) may be
//!   ours printed differently by another iptables version: it is left to
//!   the caller to check with `iptables -C`, so no copy is ever added.
//!
//! The FORWARD block must be the first rules of filter/FORWARD, in order,
//! once each. When the listing shows otherwise, the restore deletes every
//! copy of the block's rules and inserts the block again at the top; when
//! the listing holds a rule that only looks like one of the block's, the
//! block is left to the caller's per-rule path.

use std::collections::BTreeMap;

use super::rules::{Chain, Rule, RuleSet, Table};
use super::saved::{Saved, join_words};

/// What a set-up has to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The `iptables-restore --noflush` input; empty when everything is in
    /// place already.
    pub input: String,
    /// Rules the listing could not settle (absent as written, but a rule
    /// like them is there): check each with `iptables -C`, append if absent.
    pub unsure: Vec<Rule>,
    /// Whether the FORWARD block is left to the per-rule path (a rule like
    /// one of the block's, not spelled as ours, is in FORWARD).
    pub forward_unsure: bool,
}

/// The lines of one table's part of the restore input.
#[derive(Debug, Default)]
struct TablePart {
    declared: Vec<String>,
    lines: Vec<String>,
}

impl TablePart {
    fn declare(&mut self, chain: &str) {
        if !self.declared.iter().any(|c| c == chain) {
            self.declared.push(chain.to_string());
        }
    }

    fn rule(&mut self, op: &str, chain: &str, position: Option<usize>, spec: &[String]) {
        let mut line = format!("{op} {chain}");
        if let Some(position) = position {
            line.push_str(&format!(" {position}"));
        }
        if !spec.is_empty() {
            line.push(' ');
            line.push_str(&join_words(spec));
        }
        self.lines.push(line);
    }
}

/// The words that identify a rule loosely: its target and the values of
/// its interface, address, protocol and port options (negations, match
/// names and the order of the words ignored).
fn loose_key(spec: &[String]) -> BTreeMap<&str, String> {
    const KEYS: [&str; 9] = [
        "-j",
        "-i",
        "-o",
        "-s",
        "-d",
        "-p",
        "--dport",
        "--sport",
        "--comment",
    ];
    let mut key = BTreeMap::new();
    for pair in spec.windows(2) {
        if let [option, value] = pair
            && let Some(&name) = KEYS.iter().find(|k| **k == option.as_str())
        {
            key.insert(name, value.trim_end_matches("/32").to_string());
        }
    }
    key
}

/// Whether `have` looks like `want` without being spelled the same.
fn looks_like(have: &[String], want: &[String]) -> bool {
    have != want && loose_key(have) == loose_key(want)
}

/// Whether one of `have` (the listing's rules of a chain) that is none of
/// `ours` looks like `want`.
fn lookalike_present(have: &[&[String]], ours: &[&[String]], want: &[String]) -> bool {
    have.iter()
        .filter(|h| !ours.contains(h))
        .any(|h| looks_like(h, want))
}

/// The restore that makes `saved` hold `set`, with `extra` (the rules of
/// exposed subnets) and the chains `canaries` besides.
pub fn plan(set: &RuleSet, extra: &[Rule], canaries: &[Chain], saved: &Saved) -> Plan {
    let mut parts: BTreeMap<Table, TablePart> = BTreeMap::new();
    let mut plan = Plan::default();

    let mut owned: Vec<&Chain> = Vec::new();
    for chain in &set.flushed_at_start {
        if !owned.contains(&chain) {
            owned.push(chain);
        }
    }
    let mut content: Vec<Vec<&[String]>> = vec![Vec::new(); owned.len()];
    let mut elsewhere: Vec<&Rule> = Vec::new();
    for rule in set.appended.iter().chain(extra) {
        match owned
            .iter()
            .position(|c| c.table == rule.table && c.name == rule.chain)
        {
            Some(at) => {
                if let Some(rules) = content.get_mut(at)
                    && !rules.contains(&rule.spec.as_slice())
                {
                    rules.push(&rule.spec);
                }
            }
            None => {
                if !elsewhere.contains(&rule) {
                    elsewhere.push(rule);
                }
            }
        }
    }

    for (chain, want) in owned.iter().zip(&content) {
        if saved.has_chain(chain.table, &chain.name)
            && saved.rules_of(chain.table, &chain.name) == *want
        {
            continue;
        }
        let part = parts.entry(chain.table).or_default();
        part.declare(&chain.name);
        for spec in want {
            part.rule("-A", &chain.name, None, spec);
        }
    }

    for chain in set.chains.iter().chain(canaries) {
        if !owned.contains(&chain) && !saved.has_chain(chain.table, &chain.name) {
            parts.entry(chain.table).or_default().declare(&chain.name);
        }
    }

    for rule in &elsewhere {
        let have = saved.rules_of(rule.table, &rule.chain);
        if have.contains(&rule.spec.as_slice()) {
            continue;
        }
        let ours: Vec<&[String]> = elsewhere
            .iter()
            .filter(|r| r.table == rule.table && r.chain == rule.chain)
            .map(|r| r.spec.as_slice())
            .collect();
        if lookalike_present(&have, &ours, &rule.spec) {
            plan.unsure.push((*rule).clone());
        } else {
            parts
                .entry(rule.table)
                .or_default()
                .rule("-A", &rule.chain, None, &rule.spec);
        }
    }

    let block: Vec<&[String]> = set.forward_top.iter().map(Vec::as_slice).collect();
    let have = saved.rules_of(Table::Filter, "FORWARD");
    let in_place = have.get(..block.len()) == Some(block.as_slice())
        && have
            .iter()
            .skip(block.len())
            .all(|rule| !block.contains(rule));
    if !in_place {
        if block
            .iter()
            .any(|want| lookalike_present(&have, &block, want))
        {
            plan.forward_unsure = true;
        } else {
            let part = parts.entry(Table::Filter).or_default();
            for spec in &block {
                for _ in have.iter().filter(|h| *h == spec) {
                    part.rule("-D", "FORWARD", None, spec);
                }
            }
            for (at, spec) in block.iter().enumerate() {
                part.rule("-I", "FORWARD", Some(at + 1), spec);
            }
        }
    }

    for (table, part) in parts {
        plan.input.push_str(&format!("*{table}\n"));
        for chain in &part.declared {
            plan.input.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for line in &part.lines {
            plan.input.push_str(line);
            plan.input.push('\n');
        }
        plan.input.push_str("COMMIT\n");
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::rules::{FirewallConfig, expose_rules, host_rules};

    fn canaries() -> Vec<Chain> {
        [Table::Mangle, Table::Nat, Table::Filter]
            .into_iter()
            .map(|t| Chain::new(t, "WEAVE-CANARY"))
            .collect()
    }

    /// A listing that holds what `input` (a restore input applied to empty
    /// tables) creates; only appends and inserts at the top are modelled.
    fn applied(saved: &str, input: &str) -> String {
        let mut tables: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut current = String::new();
        for line in saved.lines().chain(input.lines()) {
            if let Some(name) = line.strip_prefix('*') {
                current = name.to_string();
                tables.entry(current.clone()).or_default();
            } else if let Some(decl) = line.strip_prefix(':') {
                let (chains, rules) = tables.entry(current.clone()).or_default();
                let name = decl.split(' ').next().unwrap().to_string();
                if !chains.contains(&name) {
                    chains.push(name.clone());
                } else if decl.contains(" - ") {
                    rules.retain(|r| !r.starts_with(&format!("-A {name} ")));
                }
            } else if line.starts_with("-A ") {
                tables.get_mut(&current).unwrap().1.push(line.to_string());
            } else if let Some(rest) = line.strip_prefix("-I ") {
                let (chain, rest) = rest.split_once(' ').unwrap();
                let (pos, spec) = rest.split_once(' ').unwrap();
                let pos: usize = pos.parse().unwrap();
                let rules = &mut tables.get_mut(&current).unwrap().1;
                let first = rules
                    .iter()
                    .position(|r| r.starts_with(&format!("-A {chain} ")))
                    .unwrap_or(rules.len());
                rules.insert(first + pos - 1, format!("-A {chain} {spec}"));
            } else if let Some(rest) = line.strip_prefix("-D ") {
                let rules = &mut tables.get_mut(&current).unwrap().1;
                let at = rules.iter().position(|r| r[3..] == *rest).unwrap();
                rules.remove(at);
            }
        }
        let mut out = String::new();
        for (name, (chains, rules)) in tables {
            out.push_str(&format!("*{name}\n"));
            for c in chains {
                out.push_str(&format!(":{c} - [0:0]\n"));
            }
            for r in rules {
                out.push_str(&r);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    const EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn fresh_tables_get_everything_in_one_restore() {
        let set = host_rules(&FirewallConfig::new("weave"));
        let net = "10.32.0.1/12".parse().unwrap();
        let extra = expose_rules(net, false, false);
        let saved = Saved::parse(EMPTY).unwrap();
        let plan = plan(&set, &extra, &canaries(), &saved);
        assert!(plan.unsure.is_empty() && !plan.forward_unsure);
        assert_eq!(
            plan.input,
            "*filter\n\
             :WEAVE-EXPOSE - [0:0]\n\
             :WEAVE-CANARY - [0:0]\n\
             -A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT\n\
             -I FORWARD 1 -i weave -o weave -j ACCEPT\n\
             -I FORWARD 2 -o weave -j WEAVE-EXPOSE\n\
             -I FORWARD 3 -i weave ! -o weave -j ACCEPT\n\
             -I FORWARD 4 -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             COMMIT\n\
             *nat\n\
             :WEAVE - [0:0]\n\
             :WEAVE-CANARY - [0:0]\n\
             -A WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN\n\
             -A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE\n\
             -A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE\n\
             -A POSTROUTING -j WEAVE\n\
             COMMIT\n\
             *mangle\n\
             :WEAVE-CANARY - [0:0]\n\
             COMMIT\n"
        );
        // Once applied, the same set-up has nothing left to do.
        let after = Saved::parse(&applied(EMPTY, &plan.input)).unwrap();
        assert_eq!(
            super::plan(&set, &extra, &canaries(), &after),
            Plan::default()
        );
    }

    #[test]
    fn owned_chains_are_rewritten_and_others_only_created() {
        let mut config = FirewallConfig::new("weave");
        config.npc = true;
        let set = host_rules(&config);
        let saved = Saved::parse(
            "*filter\n:FORWARD ACCEPT [0:0]\n:WEAVE-NPC - [0:0]\n-A WEAVE-NPC -j ACCEPT\nCOMMIT\n\
             *nat\n:POSTROUTING ACCEPT [0:0]\n:WEAVE - [0:0]\n\
             -A POSTROUTING -j WEAVE\n-A WEAVE -s 10.0.0.0/8 -j MASQUERADE\nCOMMIT\n",
        )
        .unwrap();
        let plan = plan(&set, &[], &[], &saved);
        // WEAVE-NPC exists and is weave-npc's: not declared (that would
        // empty it); its egress twin is missing: created.
        assert!(!plan.input.contains(":WEAVE-NPC "), "{}", plan.input);
        assert!(plan.input.contains(":WEAVE-NPC-EGRESS - [0:0]\n"));
        // nat/WEAVE is ours: emptied of the stale subnet.
        assert!(
            plan.input.contains("*nat\n:WEAVE - [0:0]\nCOMMIT\n"),
            "{}",
            plan.input
        );
        assert!(!plan.input.contains("-A POSTROUTING"));
        assert!(plan.input.contains(
            "-I FORWARD 1 -i weave -m comment --comment \"NOTE: this must go before \\'-j KUBE-FORWARD\\'\" -j WEAVE-NPC-EGRESS\n"
        ));
    }

    #[test]
    fn a_displaced_forward_block_is_deleted_and_put_back_on_top() {
        let set = host_rules(&FirewallConfig::new("weave"));
        let saved = Saved::parse(
            "*filter\n:FORWARD ACCEPT [0:0]\n:WEAVE-EXPOSE - [0:0]\n\
             -A FORWARD -j DOCKER-USER\n\
             -A FORWARD -i weave -o weave -j ACCEPT\n\
             -A FORWARD -o weave -j WEAVE-EXPOSE\n\
             -A FORWARD -o weave -j WEAVE-EXPOSE\n\
             COMMIT\n",
        )
        .unwrap();
        let plan = plan(&set, &[], &[], &saved);
        assert!(!plan.forward_unsure);
        assert!(
            plan.input.contains(
                "-D FORWARD -i weave -o weave -j ACCEPT\n\
                 -D FORWARD -o weave -j WEAVE-EXPOSE\n\
                 -D FORWARD -o weave -j WEAVE-EXPOSE\n\
                 -I FORWARD 1 -i weave -o weave -j ACCEPT\n"
            ),
            "{}",
            plan.input
        );
        // The block on top, but a copy further down: also redone.
        let saved = Saved::parse(&format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:WEAVE-EXPOSE - [0:0]\n{}-A FORWARD -i weave ! -o weave -j ACCEPT\nCOMMIT\n",
            set.forward_top
                .iter()
                .map(|s| format!("-A FORWARD {}\n", join_words(s)))
                .collect::<String>()
        ))
        .unwrap();
        assert!(super::plan(&set, &[], &[], &saved).input.contains(
            "-D FORWARD -i weave ! -o weave -j ACCEPT\n-D FORWARD -i weave ! -o weave -j ACCEPT\n"
        ));
    }

    #[test]
    fn rules_spelled_otherwise_are_left_to_the_per_rule_check() {
        let mut config = FirewallConfig::new("weave");
        config.docker_bridge = Some(crate::net::firewall::rules::DockerBridge {
            name: "docker0".into(),
            ip: "172.17.0.1".parse().unwrap(),
        });
        let set = host_rules(&config);
        // As an older iptables might print them: different order, no `-m udp`,
        // no /32.
        let saved = Saved::parse(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
             -A INPUT -i docker0 -p udp --dport 53 -j ACCEPT\n\
             -A INPUT -i docker0 -d 172.17.0.1 -p tcp --dport 6783 -j DROP\n\
             -A INPUT -i docker1 -p tcp -m tcp --dport 53 -j ACCEPT\n\
             -A FORWARD -o weave -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
             COMMIT\n",
        )
        .unwrap();
        let plan = plan(&set, &[], &[], &saved);
        let unsure: Vec<String> = plan.unsure.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            unsure,
            [
                "-t filter -A INPUT -d 172.17.0.1/32 -i docker0 -p tcp -m tcp --dport 6783 -j DROP",
                "-t filter -A INPUT -i docker0 -p udp -m udp --dport 53 -j ACCEPT",
            ]
        );
        assert!(plan.forward_unsure);
        assert!(!plan.input.contains("FORWARD"), "{}", plan.input);
        // The others go in as usual.
        assert!(
            plan.input
                .contains("-A INPUT -i docker0 -p tcp -m tcp --dport 53 -j ACCEPT\n")
        );
    }
}
