//! The sans-IO policy core: object events in, batches of ruleset operations
//! out.
//!
//! The ruleset (table `ip weave-npc`, see [`crate::nft`]) is laid out so
//! that pods are set elements and policies are chains:
//!
//! - base chains `fwd-eg` (forward, priority 0) and `in-eg` (input) send
//!   packets coming from the bridge to `egress`; `fwd-in` (forward, at
//!   priority 1) sends packets going to the bridge to `ingress`. Established and
//!   related packets pass first; the node's own packets never hit a hook we
//!   use (they leave through output), so kubelet probes stay allowed.
//! - `ingress` accepts what is not addressed to an ingress-isolated local pod
//!   (set `ing-iso`), jumps to each policy's chain `p<id>-in`, and drops the
//!   rest; `egress` is the same with `eg-iso` and `p<id>-eg`.
//! - a policy's chain has one rule per (peer kind × port entry) of each rule,
//!   matching its target set `p<id>-t` (selected local pods), a peer set
//!   (`p<id>-i<n>-p` pods, `p<id>-i<n>-b` ipBlock ranges) and the ports
//!   (numbers, ranges, or set `p<id>-i<n>-n` of resolved named ports as
//!   address . protocol . port).
//!
//! Pod and namespace changes therefore only add and remove set elements;
//! elements are reference-counted per (pod, policy) so an address shared by
//! a dying and a new pod stays as long as one of them needs it. A policy
//! change installs the new version under a new id and removes the old one in
//! the same batch. What cannot be compiled fails closed (see
//! [`crate::spec`]) and is reported in [`Output::errors`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::model::{Batch, ChainDef, Elem, Hook, Match, Op, Rule, SetKind, Verdict};
use crate::spec::{
    Namespace, ObjectKey, Peer, Pod, Policy, PortMatch, Rule as SpecRule, SpecError,
};

/// The set of local pods isolated for ingress.
pub const ING_ISO: &str = "ing-iso";
/// The set of local pods isolated for egress.
pub const EG_ISO: &str = "eg-iso";
/// The multicast range, when `--allow-mcast`.
pub const MCAST: &str = "mcast";

/// What the core needs to know about its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's name (spec.nodeName of local pods).
    pub node_name: String,
    /// The pod bridge (Weave's `weave`).
    pub bridge: String,
    /// Let isolated pods send to 224.0.0.0/4.
    pub allow_mcast: bool,
}

/// An API object.
#[derive(Debug, Clone)]
pub enum Object {
    /// A Namespace.
    Namespace(Box<K8sNamespace>),
    /// A Pod.
    Pod(Box<K8sPod>),
    /// A NetworkPolicy.
    Policy(Box<NetworkPolicy>),
}

/// A change the watchers saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// Created or updated.
    Apply(Object),
    /// Deleted.
    Delete(Object),
}

/// Something the core could not enforce as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementError {
    /// The object (policy, or the object that could not be read).
    pub object: Option<ObjectKey>,
    /// What is wrong.
    pub error: SpecError,
}

/// The result of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Operations to apply as one transaction (empty before [`Core::start`]).
    pub batch: Batch,
    /// Problems found in the event's object.
    pub errors: Vec<EnforcementError>,
}

#[derive(Debug, Clone)]
struct Installed {
    id: u64,
    policy: Policy,
    sets: Vec<(String, SetKind)>,
    chains: Vec<String>,
}

/// Per-batch element changes, netted against the state before the batch.
#[derive(Default)]
struct Pending {
    /// (set, element) → present before the batch.
    touched: BTreeMap<(String, Elem), bool>,
}

/// The policy core.
#[derive(Debug, Clone)]
pub struct Core {
    cfg: Config,
    started: bool,
    next_id: u64,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<ObjectKey, Pod>,
    policies: BTreeMap<ObjectKey, Installed>,
    /// (pod, policy id) → the elements that pair puts in sets.
    contrib: BTreeMap<(ObjectKey, u64), BTreeSet<(String, Elem)>>,
    /// (set, element) → how many (pod, policy) pairs put it there.
    refs: BTreeMap<(String, Elem), u32>,
}

impl Core {
    /// A core with no objects, not started.
    pub fn new(cfg: Config) -> Core {
        Core {
            cfg,
            started: false,
            next_id: 1,
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            policies: BTreeMap::new(),
            contrib: BTreeMap::new(),
            refs: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Marks the initial listing done and returns the whole ruleset as one
    /// reset batch (it replaces any previous table atomically). Later events
    /// return incremental batches.
    pub fn start(&mut self) -> Batch {
        self.started = true;
        self.full()
    }

    /// The whole ruleset for the current objects, as a reset batch.
    pub fn full(&self) -> Batch {
        let mut ops = vec![
            Op::AddSet(ING_ISO.into(), SetKind::Addr),
            Op::AddSet(EG_ISO.into(), SetKind::Addr),
        ];
        if self.cfg.allow_mcast {
            ops.push(Op::AddSet(MCAST.into(), SetKind::AddrRanges));
            ops.push(Op::AddElems(
                MCAST.into(),
                vec![Elem::Range(
                    Ipv4Addr::new(224, 0, 0, 0),
                    Ipv4Addr::new(239, 255, 255, 255),
                )],
            ));
        }
        for inst in self.policies.values() {
            ops.extend(self.install_ops(inst));
        }
        let mut by_set: BTreeMap<&str, Vec<Elem>> = BTreeMap::new();
        for (set, elem) in self.refs.keys() {
            by_set.entry(set).or_default().push(*elem);
        }
        for (set, elems) in by_set {
            ops.push(Op::AddElems(set.to_string(), elems));
        }
        for name in ["ingress", "egress"] {
            ops.push(Op::AddChain(ChainDef {
                name: name.into(),
                base: None,
            }));
        }
        for (name, hook, prio) in [
            ("fwd-eg", Hook::Forward, 0),
            ("fwd-in", Hook::Forward, 1),
            ("in-eg", Hook::Input, 0),
        ] {
            ops.push(Op::AddChain(ChainDef {
                name: name.into(),
                base: Some((hook, prio)),
            }));
        }
        for inst in self.policies.values() {
            ops.extend(self.policy_rules(inst));
        }
        ops.extend(self.dispatch_ops());
        let bridge = self.cfg.bridge.clone();
        let est = || Rule::new(vec![Match::CtEstablished], Verdict::Accept);
        ops.push(Op::SetRules(
            "fwd-eg".into(),
            vec![
                est(),
                Rule::new(
                    vec![Match::IifName(bridge.clone())],
                    Verdict::Jump("egress".into()),
                ),
            ],
        ));
        ops.push(Op::SetRules(
            "fwd-in".into(),
            vec![
                est(),
                Rule::new(
                    vec![Match::OifName(bridge.clone())],
                    Verdict::Jump("ingress".into()),
                ),
            ],
        ));
        ops.push(Op::SetRules(
            "in-eg".into(),
            vec![
                est(),
                Rule::new(vec![Match::IifName(bridge)], Verdict::Jump("egress".into())),
            ],
        ));
        Batch { reset: true, ops }
    }

    /// Applies one event and returns what changes.
    pub fn apply(&mut self, event: Event) -> Output {
        let mut pending = Pending::default();
        let mut out = Output::default();
        let mut ops_before = Vec::new();
        let mut ops_after = Vec::new();
        let mut deleted_sets = BTreeSet::new();
        match event {
            Event::Apply(Object::Namespace(ns)) => match Namespace::compile(&ns) {
                Ok(ns) => {
                    let name = ns.name.clone();
                    if self.namespaces.get(&name) != Some(&ns) {
                        self.namespaces.insert(name.clone(), ns);
                        self.refresh_namespace(&name, &mut pending);
                    }
                }
                Err(error) => out.errors.push(EnforcementError {
                    object: None,
                    error,
                }),
            },
            Event::Delete(Object::Namespace(ns)) => {
                if let Some(name) = ns.metadata.name.as_ref()
                    && self.namespaces.remove(name).is_some()
                {
                    self.refresh_namespace(name, &mut pending);
                }
            }
            Event::Apply(Object::Pod(pod)) => match Pod::compile(&pod) {
                Ok(pod) => {
                    let key = pod.key.clone();
                    if self.pods.get(&key) != Some(&pod) {
                        self.pods.insert(key.clone(), pod);
                        self.refresh_pod(&key, &mut pending);
                    }
                }
                Err(error) => out.errors.push(EnforcementError {
                    object: None,
                    error,
                }),
            },
            Event::Delete(Object::Pod(pod)) => {
                if let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) {
                    let key = ObjectKey::new(ns.clone(), name.clone());
                    if self.pods.remove(&key).is_some() {
                        self.refresh_pod(&key, &mut pending);
                    }
                }
            }
            Event::Apply(Object::Policy(np)) => match Policy::compile(&np) {
                Ok(policy) => {
                    if self.policies.get(&policy.key).map(|i| &i.policy) != Some(&policy) {
                        for error in &policy.errors {
                            out.errors.push(EnforcementError {
                                object: Some(policy.key.clone()),
                                error: error.clone(),
                            });
                        }
                        let key = policy.key.clone();
                        if let Some(old) = self.policies.remove(&key) {
                            ops_after.extend(self.uninstall(&old, &mut pending, &mut deleted_sets));
                        }
                        let inst = self.prepare(policy);
                        ops_before.extend(self.install_ops(&inst));
                        self.policies.insert(key.clone(), inst);
                        let keys: Vec<ObjectKey> = self.pods.keys().cloned().collect();
                        let id = self.policies[&key].id;
                        for pod in keys {
                            self.refresh_pair(&pod, id, &mut pending);
                        }
                        let inst = &self.policies[&key];
                        ops_after.splice(0..0, self.policy_rules(inst));
                    }
                }
                Err(error) => out.errors.push(EnforcementError {
                    object: None,
                    error,
                }),
            },
            Event::Delete(Object::Policy(np)) => {
                if let (Some(ns), Some(name)) = (&np.metadata.namespace, &np.metadata.name) {
                    let key = ObjectKey::new(ns.clone(), name.clone());
                    if let Some(old) = self.policies.remove(&key) {
                        ops_after.extend(self.uninstall(&old, &mut pending, &mut deleted_sets));
                    }
                }
            }
        }
        let policy_changed = !ops_before.is_empty() || !ops_after.is_empty();
        let mut ops = ops_before;
        ops.extend(self.element_ops(pending, &deleted_sets));
        if policy_changed {
            // New policy chains' rules, then the dispatch, then the old
            // chains and sets go (nothing refers to them any more).
            let (rules, removals): (Vec<Op>, Vec<Op>) = ops_after
                .into_iter()
                .partition(|op| matches!(op, Op::SetRules(_, r) if !r.is_empty()));
            ops.extend(rules);
            ops.extend(self.dispatch_ops());
            ops.extend(removals);
        }
        if self.started {
            out.batch = Batch { reset: false, ops };
        }
        out
    }

    fn prepare(&mut self, policy: Policy) -> Installed {
        let id = self.next_id;
        self.next_id += 1;
        let mut sets = vec![(format!("p{id}-t"), SetKind::Addr)];
        let mut chains = Vec::new();
        for (dir, rules) in [("i", &policy.ingress), ("e", &policy.egress)] {
            let Some(rules) = rules else { continue };
            chains.push(format!("p{id}-{}", if dir == "i" { "in" } else { "eg" }));
            for (n, rule) in rules.iter().enumerate() {
                let Some(rule) = rule else { continue };
                let peers = rule.peers.iter().flatten();
                if peers.clone().any(|p| matches!(p, Peer::Pods { .. })) {
                    sets.push((format!("p{id}-{dir}{n}-p"), SetKind::Addr));
                }
                if peers.clone().any(|p| matches!(p, Peer::Block(_))) {
                    sets.push((format!("p{id}-{dir}{n}-b"), SetKind::AddrRanges));
                }
                if rule
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| matches!(p, PortMatch::Named(..)))
                {
                    sets.push((format!("p{id}-{dir}{n}-n"), SetKind::AddrProtoPort));
                }
            }
        }
        Installed {
            id,
            policy,
            sets,
            chains,
        }
    }

    /// Sets (with their static ipBlock ranges) and empty chains of a policy.
    fn install_ops(&self, inst: &Installed) -> Vec<Op> {
        let mut ops: Vec<Op> = inst
            .sets
            .iter()
            .map(|(name, kind)| Op::AddSet(name.clone(), *kind))
            .collect();
        let id = inst.id;
        for (dir, rules) in [("i", &inst.policy.ingress), ("e", &inst.policy.egress)] {
            for (n, rule) in rules.iter().flatten().enumerate() {
                let Some(rule) = rule else { continue };
                let ranges = merge_ranges(rule.peers.iter().flatten().flat_map(|p| match p {
                    Peer::Block(r) => r.clone(),
                    Peer::Pods { .. } => Vec::new(),
                }));
                if !ranges.is_empty() {
                    ops.push(Op::AddElems(
                        format!("p{id}-{dir}{n}-b"),
                        ranges.into_iter().map(|(a, b)| Elem::Range(a, b)).collect(),
                    ));
                }
            }
        }
        for chain in &inst.chains {
            ops.push(Op::AddChain(ChainDef {
                name: chain.clone(),
                base: None,
            }));
        }
        ops
    }

    /// The rules of a policy's chains.
    fn policy_rules(&self, inst: &Installed) -> Vec<Op> {
        let id = inst.id;
        let target = format!("p{id}-t");
        let mut ops = Vec::new();
        for (dir, rules) in [("i", &inst.policy.ingress), ("e", &inst.policy.egress)] {
            let Some(rules) = rules else { continue };
            let ingress = dir == "i";
            let mut out = Vec::new();
            for (n, rule) in rules.iter().enumerate() {
                let Some(rule) = rule else { continue };
                let peer_alts = peer_alternatives(rule, &format!("p{id}-{dir}{n}"), ingress);
                let port_alts = port_alternatives(rule, &format!("p{id}-{dir}{n}-n"));
                for peer in &peer_alts {
                    for port in &port_alts {
                        let own = if ingress {
                            Match::Daddr {
                                set: target.clone(),
                                negate: false,
                            }
                        } else {
                            Match::Saddr {
                                set: target.clone(),
                                negate: false,
                            }
                        };
                        let mut matches = vec![own];
                        matches.extend(peer.iter().cloned());
                        matches.extend(port.iter().cloned());
                        out.push(Rule::new(matches, Verdict::Accept));
                    }
                }
            }
            let chain = format!("p{id}-{}", if ingress { "in" } else { "eg" });
            ops.push(Op::SetRules(chain, out));
        }
        ops
    }

    fn dispatch_ops(&self) -> Vec<Op> {
        let mut ingress = vec![Rule::new(
            vec![Match::Daddr {
                set: ING_ISO.into(),
                negate: true,
            }],
            Verdict::Accept,
        )];
        let mut egress = vec![Rule::new(
            vec![Match::Saddr {
                set: EG_ISO.into(),
                negate: true,
            }],
            Verdict::Accept,
        )];
        if self.cfg.allow_mcast {
            egress.push(Rule::new(
                vec![Match::Daddr {
                    set: MCAST.into(),
                    negate: false,
                }],
                Verdict::Accept,
            ));
        }
        for inst in self.policies.values() {
            let id = inst.id;
            if inst.policy.ingress.is_some() {
                ingress.push(Rule::new(vec![], Verdict::Jump(format!("p{id}-in"))));
            }
            if inst.policy.egress.is_some() {
                egress.push(Rule::new(vec![], Verdict::Jump(format!("p{id}-eg"))));
            }
        }
        ingress.push(Rule::new(vec![], Verdict::Drop));
        egress.push(Rule::new(vec![], Verdict::Drop));
        vec![
            Op::SetRules("ingress".into(), ingress),
            Op::SetRules("egress".into(), egress),
        ]
    }

    /// Forgets a policy's contributions; returns the ops that empty and
    /// delete its chains and sets (to run after the dispatch no longer
    /// jumps there).
    fn uninstall(
        &mut self,
        old: &Installed,
        pending: &mut Pending,
        deleted_sets: &mut BTreeSet<String>,
    ) -> Vec<Op> {
        let keys: Vec<(ObjectKey, u64)> = self
            .contrib
            .keys()
            .filter(|(_, id)| *id == old.id)
            .cloned()
            .collect();
        for key in keys {
            self.set_contrib(key, BTreeSet::new(), pending);
        }
        let mut ops = Vec::new();
        for chain in &old.chains {
            ops.push(Op::SetRules(chain.clone(), Vec::new()));
        }
        for chain in &old.chains {
            ops.push(Op::DelChain(chain.clone()));
        }
        for (set, _) in &old.sets {
            deleted_sets.insert(set.clone());
            ops.push(Op::DelSet(set.clone()));
        }
        ops
    }

    fn refresh_namespace(&mut self, ns: &str, pending: &mut Pending) {
        let keys: Vec<ObjectKey> = self
            .pods
            .keys()
            .filter(|k| k.namespace == ns)
            .cloned()
            .collect();
        for key in keys {
            self.refresh_pod(&key, pending);
        }
    }

    fn refresh_pod(&mut self, key: &ObjectKey, pending: &mut Pending) {
        let ids: Vec<u64> = self.policies.values().map(|i| i.id).collect();
        for id in ids {
            self.refresh_pair(key, id, pending);
        }
    }

    fn refresh_pair(&mut self, key: &ObjectKey, id: u64, pending: &mut Pending) {
        let new = self.contributions(key, id);
        self.set_contrib((key.clone(), id), new, pending);
    }

    /// The elements pod `key` puts in the sets of policy `id`.
    fn contributions(&self, key: &ObjectKey, id: u64) -> BTreeSet<(String, Elem)> {
        let mut out = BTreeSet::new();
        let (Some(pod), Some(inst)) = (
            self.pods.get(key),
            self.policies.values().find(|i| i.id == id),
        ) else {
            return out;
        };
        let Some(ip) = pod.ip else { return out };
        let policy = &inst.policy;
        let local = pod.node.as_deref() == Some(self.cfg.node_name.as_str());
        let empty = Default::default();
        let ns_labels = self
            .namespaces
            .get(&pod.key.namespace)
            .map(|n| &n.labels)
            .unwrap_or(&empty);
        let selected = local && policy.selects(pod);
        if selected {
            out.insert((format!("p{id}-t"), Elem::Addr(ip)));
            if policy.ingress.is_some() {
                out.insert((ING_ISO.to_string(), Elem::Addr(ip)));
            }
            if policy.egress.is_some() {
                out.insert((EG_ISO.to_string(), Elem::Addr(ip)));
            }
        }
        for (dir, rules) in [("i", &policy.ingress), ("e", &policy.egress)] {
            for (n, rule) in rules.iter().flatten().enumerate() {
                let Some(rule) = rule else { continue };
                let is_peer = rule
                    .peers
                    .iter()
                    .flatten()
                    .any(|p| p.matches_pod(&policy.key.namespace, pod, ns_labels));
                if is_peer {
                    out.insert((format!("p{id}-{dir}{n}-p"), Elem::Addr(ip)));
                }
                // Named ports resolve on the destination: the selected local
                // pod for ingress, any pod for egress.
                if dir == "i" && !selected {
                    continue;
                }
                for pm in rule.ports.iter().flatten() {
                    let PortMatch::Named(proto, name) = pm else {
                        continue;
                    };
                    for cp in &pod.ports {
                        if cp.name == *name && cp.protocol == *proto {
                            out.insert((
                                format!("p{id}-{dir}{n}-n"),
                                Elem::AddrProtoPort(ip, proto.number(), cp.port),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    fn set_contrib(
        &mut self,
        key: (ObjectKey, u64),
        new: BTreeSet<(String, Elem)>,
        pending: &mut Pending,
    ) {
        let old = self.contrib.remove(&key).unwrap_or_default();
        for gone in old.difference(&new) {
            let count = self.refs.get(gone).copied().unwrap_or(0);
            pending.touched.entry(gone.clone()).or_insert(count > 0);
            if count <= 1 {
                self.refs.remove(gone);
            } else {
                self.refs.insert(gone.clone(), count - 1);
            }
        }
        for added in new.difference(&old) {
            let count = self.refs.get(added).copied().unwrap_or(0);
            pending.touched.entry(added.clone()).or_insert(count > 0);
            self.refs.insert(added.clone(), count + 1);
        }
        if !new.is_empty() {
            self.contrib.insert(key, new);
        }
    }

    fn element_ops(&self, pending: Pending, deleted_sets: &BTreeSet<String>) -> Vec<Op> {
        let mut adds: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        let mut dels: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        for ((set, elem), before) in pending.touched {
            if deleted_sets.contains(&set) {
                continue;
            }
            let now = self.refs.contains_key(&(set.clone(), elem));
            match (before, now) {
                (false, true) => adds.entry(set).or_default().push(elem),
                (true, false) => dels.entry(set).or_default().push(elem),
                _ => {}
            }
        }
        let mut ops: Vec<Op> = dels
            .into_iter()
            .map(|(set, elems)| Op::DelElems(set, elems))
            .collect();
        ops.extend(
            adds.into_iter()
                .map(|(set, elems)| Op::AddElems(set, elems)),
        );
        ops
    }

    /// What every one of our sets must hold now (the self-check compares the
    /// kernel's sets with this).
    pub fn expected_sets(&self) -> BTreeMap<String, (SetKind, BTreeSet<Elem>)> {
        let mut rs = crate::model::Ruleset::default();
        match rs.apply(&self.full()) {
            Ok(()) => rs.sets,
            // full() is consistent by construction (and property-tested);
            // an inconsistency would show up as drift and a rebuild.
            Err(_) => BTreeMap::new(),
        }
    }

    /// The counted pod with address `ip`, if one is known.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.values().find(|p| p.ip == Some(ip))
    }

    /// Why a packet from `src` to `dst` was dropped by the `ingress` (or
    /// egress) chain: the pod the direction isolates and the policies that
    /// isolate it there.
    pub fn isolated_by(&self, src: Ipv4Addr, dst: Ipv4Addr, ingress: bool) -> Vec<ObjectKey> {
        let Some(pod) = self.pod_at(if ingress { dst } else { src }) else {
            return Vec::new();
        };
        self.policies
            .values()
            .map(|i| &i.policy)
            .filter(|p| p.selects(pod))
            .filter(|p| {
                if ingress {
                    p.ingress.is_some()
                } else {
                    p.egress.is_some()
                }
            })
            .map(|p| p.key.clone())
            .collect()
    }

    /// The compiled policies selecting the local pod `key` (for status pages).
    pub fn policies_selecting(&self, key: &ObjectKey) -> Vec<&Policy> {
        let Some(pod) = self.pods.get(key) else {
            return Vec::new();
        };
        self.policies
            .values()
            .map(|i| &i.policy)
            .filter(|p| p.selects(pod))
            .collect()
    }
}

/// The peer part of a rule's nft rules: one alternative per peer kind.
fn peer_alternatives(rule: &SpecRule, prefix: &str, ingress: bool) -> Vec<Vec<Match>> {
    let Some(peers) = &rule.peers else {
        return vec![vec![]];
    };
    let m = |set: String| {
        if ingress {
            Match::Saddr { set, negate: false }
        } else {
            Match::Daddr { set, negate: false }
        }
    };
    let mut alts = Vec::new();
    if peers.iter().any(|p| matches!(p, Peer::Pods { .. })) {
        alts.push(vec![m(format!("{prefix}-p"))]);
    }
    if peers.iter().any(|p| matches!(p, Peer::Block(_))) {
        alts.push(vec![m(format!("{prefix}-b"))]);
    }
    alts
}

/// The port part of a rule's nft rules: one alternative per numeric entry,
/// one for all named entries together.
fn port_alternatives(rule: &SpecRule, named_set: &str) -> Vec<Vec<Match>> {
    let Some(ports) = &rule.ports else {
        return vec![vec![]];
    };
    let mut alts = Vec::new();
    let mut named = false;
    for p in ports {
        match p {
            PortMatch::AnyPort(proto) => alts.push(vec![Match::L4Proto(proto.number())]),
            PortMatch::Range(proto, lo, hi) => {
                alts.push(vec![Match::L4Proto(proto.number()), Match::Dport(*lo, *hi)])
            }
            PortMatch::Named(..) => named = true,
        }
    }
    if named {
        alts.push(vec![Match::DaddrProtoDport(named_set.to_string())]);
    }
    alts
}

/// Sorted, disjoint, merged inclusive ranges.
fn merge_ranges(ranges: impl Iterator<Item = (Ipv4Addr, Ipv4Addr)>) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut v: Vec<(u32, u32)> = ranges.map(|(a, b)| (a.into(), b.into())).collect();
    v.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some((_, last)) if lo <= last.saturating_add(1) => *last = (*last).max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
        .collect()
}
