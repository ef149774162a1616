//! Our nftables ruleset as data: named sets keyed by address, chains of
//! rules, the operations that change them, and an evaluator that runs a
//! packet through a ruleset in process.
//!
//! The core emits [`Batch`]es of [`Op`]s; the enforcer turns each batch into
//! one nf_tables transaction, and [`Ruleset::apply`] replays the same batch
//! in memory with the kernel's strictness (no element deleted twice, no set
//! or chain deleted while in use), so the tests check the exact stream the
//! kernel would get.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// What a set's elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// IPv4 addresses (a hash set).
    Addr,
    /// IPv4 address ranges (an interval set; ranges must not overlap).
    AddrRanges,
    /// (address, IP protocol, port) triples, a concatenated key.
    AddrProtoPort,
}

/// One set element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// An address.
    Addr(Ipv4Addr),
    /// An inclusive address range.
    Range(Ipv4Addr, Ipv4Addr),
    /// An address, IP protocol number and port.
    AddrProtoPort(Ipv4Addr, u8, u16),
}

/// The netfilter hooks our base chains attach to (ip family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// Packets to the node itself.
    Input,
    /// Packets passing through (bridged ones too, via br_netfilter).
    Forward,
}

/// A chain: a base chain on a hook with a priority, or a regular one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    /// Its name.
    pub name: String,
    /// Hook and priority for a base chain (policy accept).
    pub base: Option<(Hook, i32)>,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The connection is established or related (conntrack).
    CtEstablished,
    /// Input interface name equals.
    IifName(String),
    /// Output interface name equals.
    OifName(String),
    /// Source address in (or, negated, not in) a set.
    Saddr {
        /// The set.
        set: String,
        /// Not in the set.
        negate: bool,
    },
    /// Destination address in (or not in) a set.
    Daddr {
        /// The set.
        set: String,
        /// Not in the set.
        negate: bool,
    },
    /// The IP protocol number.
    L4Proto(u8),
    /// Transport destination port in an inclusive range.
    Dport(u16, u16),
    /// (destination address, protocol, destination port) in a set.
    DaddrProtoDport(String),
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept (for this base chain).
    Accept,
    /// Drop.
    Drop,
    /// Run another chain, then continue here unless it decided.
    Jump(String),
}

/// A rule: all matches hold → verdict. `counted` rules carry a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// The verdict.
    pub verdict: Verdict,
}

impl Rule {
    /// A rule from its matches and verdict.
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule { matches, verdict }
    }
}

/// One change to the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a set.
    AddSet(String, SetKind),
    /// Delete a set (no rule may use it).
    DelSet(String),
    /// Add elements (absent ones).
    AddElems(String, Vec<Elem>),
    /// Delete elements (present ones).
    DelElems(String, Vec<Elem>),
    /// Create a chain.
    AddChain(ChainDef),
    /// Delete a chain (empty, and no rule may jump to it).
    DelChain(String),
    /// Replace all rules of a chain.
    SetRules(String, Vec<Rule>),
}

/// A batch of operations, applied as one transaction. A `reset` batch
/// replaces the whole table (created if absent) atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Replace everything instead of changing the current table.
    pub reset: bool,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.reset && self.ops.is_empty()
    }
}

/// A batch the kernel would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A set or chain that does not exist.
    #[error("no such {0} {1:?}")]
    Missing(&'static str, String),
    /// A set or chain created twice.
    #[error("{0} {1:?} exists")]
    Exists(&'static str, String),
    /// Deleting something still referenced or not empty.
    #[error("{0} {1:?} is in use")]
    Busy(&'static str, String),
    /// Deleting an element that is not there.
    #[error("set {0:?} has no element {1:?}")]
    NoElement(String, Elem),
    /// An element of the wrong kind, or an overlapping range.
    #[error("set {0:?} cannot hold {1:?}")]
    BadElement(String, Elem),
}

/// A ruleset in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Sets by name: kind and elements.
    pub sets: BTreeMap<String, (SetKind, BTreeSet<Elem>)>,
    /// Chains by name: definition and rules.
    pub chains: BTreeMap<String, (ChainDef, Vec<Rule>)>,
}

/// A packet as the evaluator sees it (a new connection's first packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Input interface.
    pub iif: String,
    /// Output interface (empty on the input hook).
    pub oif: String,
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port.
    pub dport: u16,
}

enum Outcome {
    Accept,
    Drop,
    Continue,
}

impl Ruleset {
    /// Applies a batch with the kernel's strictness; on error the ruleset is
    /// left unchanged (the transaction aborts).
    pub fn apply(&mut self, batch: &Batch) -> Result<(), ModelError> {
        let mut next = if batch.reset {
            Ruleset::default()
        } else {
            self.clone()
        };
        for op in &batch.ops {
            next.apply_op(op)?;
        }
        *self = next;
        Ok(())
    }

    fn uses_set(&self, name: &str) -> bool {
        self.chains.values().flat_map(|(_, rules)| rules).any(|r| {
            r.matches.iter().any(|m| match m {
                Match::Saddr { set, .. } | Match::Daddr { set, .. } => set == name,
                Match::DaddrProtoDport(set) => set == name,
                _ => false,
            })
        })
    }

    fn apply_op(&mut self, op: &Op) -> Result<(), ModelError> {
        match op {
            Op::AddSet(name, kind) => {
                if self.sets.contains_key(name) {
                    return Err(ModelError::Exists("set", name.clone()));
                }
                self.sets.insert(name.clone(), (*kind, BTreeSet::new()));
            }
            Op::DelSet(name) => {
                if !self.sets.contains_key(name) {
                    return Err(ModelError::Missing("set", name.clone()));
                }
                if self.uses_set(name) {
                    return Err(ModelError::Busy("set", name.clone()));
                }
                self.sets.remove(name);
            }
            Op::AddElems(name, elems) => {
                let (kind, set) = self
                    .sets
                    .get_mut(name)
                    .ok_or_else(|| ModelError::Missing("set", name.clone()))?;
                for e in elems {
                    let ok = match (*kind, e) {
                        (SetKind::Addr, Elem::Addr(_)) => true,
                        (SetKind::AddrProtoPort, Elem::AddrProtoPort(..)) => true,
                        (SetKind::AddrRanges, Elem::Range(lo, hi)) => lo <= hi
                            && !set.iter().any(
                                |x| matches!(x, Elem::Range(a, b) if a <= hi && lo <= b && x != e),
                            ),
                        _ => false,
                    };
                    if !ok {
                        return Err(ModelError::BadElement(name.clone(), *e));
                    }
                    set.insert(*e);
                }
            }
            Op::DelElems(name, elems) => {
                let (_, set) = self
                    .sets
                    .get_mut(name)
                    .ok_or_else(|| ModelError::Missing("set", name.clone()))?;
                for e in elems {
                    if !set.remove(e) {
                        return Err(ModelError::NoElement(name.clone(), *e));
                    }
                }
            }
            Op::AddChain(def) => {
                if self.chains.contains_key(&def.name) {
                    return Err(ModelError::Exists("chain", def.name.clone()));
                }
                self.chains
                    .insert(def.name.clone(), (def.clone(), Vec::new()));
            }
            Op::DelChain(name) => {
                let Some((_, rules)) = self.chains.get(name) else {
                    return Err(ModelError::Missing("chain", name.clone()));
                };
                let jumped = self
                    .chains
                    .values()
                    .flat_map(|(_, r)| r)
                    .any(|r| matches!(&r.verdict, Verdict::Jump(c) if c == name));
                if !rules.is_empty() || jumped {
                    return Err(ModelError::Busy("chain", name.clone()));
                }
                self.chains.remove(name);
            }
            Op::SetRules(name, rules) => {
                for rule in rules {
                    for m in &rule.matches {
                        let set = match m {
                            Match::Saddr { set, .. } | Match::Daddr { set, .. } => set,
                            Match::DaddrProtoDport(set) => set,
                            _ => continue,
                        };
                        if !self.sets.contains_key(set) {
                            return Err(ModelError::Missing("set", set.clone()));
                        }
                    }
                    if let Verdict::Jump(c) = &rule.verdict
                        && !self.chains.contains_key(c)
                    {
                        return Err(ModelError::Missing("chain", c.clone()));
                    }
                }
                let (_, current) = self
                    .chains
                    .get_mut(name)
                    .ok_or_else(|| ModelError::Missing("chain", name.clone()))?;
                *current = rules.clone();
            }
        }
        Ok(())
    }

    /// Whether the first packet of a new connection passes every base chain
    /// on `hook` (each runs in priority order; any drop drops it).
    pub fn admits(&self, hook: Hook, pkt: &Packet) -> bool {
        let mut bases: Vec<_> = self
            .chains
            .values()
            .filter_map(|(def, _)| def.base.filter(|(h, _)| *h == hook).map(|(_, p)| (p, def)))
            .collect();
        bases.sort_by_key(|(p, def)| (*p, def.name.clone()));
        bases
            .into_iter()
            .all(|(_, def)| !matches!(self.run(&def.name, pkt, 0), Outcome::Drop))
    }

    fn run(&self, chain: &str, pkt: &Packet, depth: usize) -> Outcome {
        let Some((_, rules)) = self.chains.get(chain) else {
            return Outcome::Continue;
        };
        if depth > 16 {
            return Outcome::Drop;
        }
        for rule in rules {
            if !rule.matches.iter().all(|m| self.holds(m, pkt)) {
                continue;
            }
            match &rule.verdict {
                Verdict::Accept => return Outcome::Accept,
                Verdict::Drop => return Outcome::Drop,
                Verdict::Jump(c) => match self.run(c, pkt, depth + 1) {
                    Outcome::Continue => {}
                    decided => return decided,
                },
            }
        }
        Outcome::Continue
    }

    fn contains(&self, set: &str, e: Elem) -> bool {
        let Some((_, elems)) = self.sets.get(set) else {
            return false;
        };
        match e {
            Elem::Addr(a) => {
                elems.contains(&e)
                    || elems
                        .iter()
                        .any(|x| matches!(x, Elem::Range(lo, hi) if *lo <= a && a <= *hi))
            }
            _ => elems.contains(&e),
        }
    }

    fn holds(&self, m: &Match, pkt: &Packet) -> bool {
        match m {
            // The evaluator looks at first packets only.
            Match::CtEstablished => false,
            Match::IifName(n) => pkt.iif == *n,
            Match::OifName(n) => pkt.oif == *n,
            Match::Saddr { set, negate } => self.contains(set, Elem::Addr(pkt.saddr)) != *negate,
            Match::Daddr { set, negate } => self.contains(set, Elem::Addr(pkt.daddr)) != *negate,
            Match::L4Proto(p) => pkt.proto == *p,
            Match::Dport(lo, hi) => (*lo..=*hi).contains(&pkt.dport),
            Match::DaddrProtoDport(set) => {
                self.contains(set, Elem::AddrProtoPort(pkt.daddr, pkt.proto, pkt.dport))
            }
        }
    }
}
