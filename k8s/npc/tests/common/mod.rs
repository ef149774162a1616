//! The upstream NetworkPolicy e2e model (kubernetes test/e2e/network/netpol),
//! written from its description: namespaces x, y, z; pods a, b, c in each;
//! servers on 80 and 81 for TCP, UDP and SCTP with container ports named
//! `serve-<port>-<proto>`; every case states the whole expected reachability
//! matrix, pod to pod, and a pod always reaches itself.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weave_npc::core::{Event, Object};
use weave_npc::oracle::Cluster;
use weave_npc::spec::{self, ObjectKey, Protocol};

/// The namespaces of the model.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods in each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The node every model pod runs on.
pub const NODE: &str = "node-1";

/// The address of pod `i` (0..9 in x/a, x/b, …, z/c order).
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 40, 0, 11 + (i / 3) as u8 * 10 + (i % 3) as u8)
}

/// "x/a" for pod index `i`.
pub fn pod_name(i: usize) -> String {
    format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("model object JSON")
}

/// A namespace of the model with its labels.
pub fn namespace(name: &str, extra: &[(&str, &str)]) -> Namespace {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("ns".into(), name.into());
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    from_json(json!({"metadata": {"name": name, "labels": labels}}))
}

/// Pod `name` in `ns` with address `ip` and the model's six servers.
pub fn pod(ns: &str, name: &str, ip: Ipv4Addr, labels: &[(&str, &str)]) -> Pod {
    let mut l: BTreeMap<String, String> = BTreeMap::new();
    l.insert("pod".into(), name.into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    let containers: Vec<Value> = [80, 81]
        .iter()
        .flat_map(|port| {
            ["TCP", "UDP", "SCTP"].iter().map(move |proto| {
                let p = proto.to_lowercase();
                json!({
                    "name": format!("cont-{port}-{p}"),
                    "image": "pause",
                    "ports": [{"containerPort": port, "protocol": proto,
                               "name": format!("serve-{port}-{p}")}],
                })
            })
        })
        .collect();
    from_json(json!({
        "metadata": {"namespace": ns, "name": name, "labels": l},
        "spec": {"nodeName": NODE, "containers": containers},
        "status": {"phase": "Running", "podIP": ip.to_string()},
    }))
}

/// A NetworkPolicy from its namespace, name and spec as JSON.
pub fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    from_json(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
}

/// The objects of a model cluster.
#[derive(Debug, Clone)]
pub struct Model {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by namespace/name.
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// Policies by namespace/name.
    pub policies: BTreeMap<ObjectKey, NetworkPolicy>,
}

/// A change a case makes to the model.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create or replace a policy.
    Apply(Box<NetworkPolicy>),
    /// Delete a policy.
    DeletePolicy(&'static str, &'static str),
    /// Set (Some) or remove (None) a label on pod ns/name.
    LabelPod(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
    /// Set or remove a namespace label.
    LabelNs(&'static str, &'static str, Option<&'static str>),
    /// Delete a pod.
    DeletePod(&'static str, &'static str),
    /// Create (or replace) a pod.
    AddPod(Box<Pod>),
}

impl Model {
    /// The nine pods in three namespaces, no policies.
    pub fn new() -> Model {
        let mut m = Model {
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            policies: BTreeMap::new(),
        };
        for ns in NAMESPACES {
            m.namespaces.insert(ns.into(), namespace(ns, &[]));
        }
        for i in 0..9 {
            let (ns, p) = (NAMESPACES[i / 3], PODS[i % 3]);
            m.pods
                .insert(ObjectKey::new(ns, p), pod(ns, p, pod_ip(i), &[]));
        }
        m
    }

    /// Applies a change; returns the watch event the controller would see.
    pub fn change(&mut self, c: &Change) -> Event {
        match c {
            Change::Apply(np) => {
                let np: &NetworkPolicy = np;
                self.policies.insert(key_of(&np.metadata), np.clone());
                Event::Apply(Object::Policy(Box::new(np.clone())))
            }
            Change::DeletePolicy(ns, name) => {
                let np = self
                    .policies
                    .remove(&ObjectKey::new(*ns, *name))
                    .expect("policy");
                Event::Delete(Object::Policy(Box::new(np)))
            }
            Change::LabelPod(ns, name, k, v) => {
                let pod = self.pods.get_mut(&ObjectKey::new(*ns, *name)).expect("pod");
                let labels = pod.metadata.labels.get_or_insert_default();
                match v {
                    Some(v) => labels.insert((*k).into(), (*v).into()),
                    None => labels.remove(*k),
                };
                Event::Apply(Object::Pod(Box::new(pod.clone())))
            }
            Change::LabelNs(ns, k, v) => {
                let n = self.namespaces.get_mut(*ns).expect("namespace");
                let labels = n.metadata.labels.get_or_insert_default();
                match v {
                    Some(v) => labels.insert((*k).into(), (*v).into()),
                    None => labels.remove(*k),
                };
                Event::Apply(Object::Namespace(Box::new(n.clone())))
            }
            Change::DeletePod(ns, name) => {
                let p = self.pods.remove(&ObjectKey::new(*ns, *name)).expect("pod");
                Event::Delete(Object::Pod(Box::new(p)))
            }
            Change::AddPod(p) => {
                self.pods.insert(key_of(&p.metadata), (**p).clone());
                Event::Apply(Object::Pod(p.clone()))
            }
        }
    }

    /// Every object as an Apply event (an initial listing).
    pub fn listing(&self) -> Vec<Event> {
        let mut v: Vec<Event> = self
            .namespaces
            .values()
            .map(|n| Event::Apply(Object::Namespace(Box::new(n.clone()))))
            .collect();
        v.extend(
            self.pods
                .values()
                .map(|p| Event::Apply(Object::Pod(Box::new(p.clone())))),
        );
        v.extend(
            self.policies
                .values()
                .map(|p| Event::Apply(Object::Policy(Box::new(p.clone())))),
        );
        v
    }

    /// The compiled cluster for the oracle.
    pub fn cluster(&self) -> Cluster {
        let mut c = Cluster::default();
        for ns in self.namespaces.values() {
            let n = spec::Namespace::compile(ns).expect("namespace");
            c.namespaces.insert(n.name.clone(), n);
        }
        for p in self.pods.values() {
            let p = spec::Pod::compile(p).expect("pod");
            c.pods.insert(p.key.clone(), p);
        }
        for np in self.policies.values() {
            let p = spec::Policy::compile(np).expect("policy");
            c.policies.insert(p.key.clone(), p);
        }
        c
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Which pods a reachability expectation names: "x/a", "x" or "*".
fn select(sel: &str) -> Vec<usize> {
    (0..9)
        .filter(|i| {
            let name = pod_name(*i);
            sel == "*" || sel == name || Some(sel) == name.split('/').next()
        })
        .collect()
}

/// An expected 9x9 reachability matrix (from row to column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach(pub [[bool; 9]; 9]);

impl Reach {
    /// Every pair set to `default`.
    pub fn all(default: bool) -> Reach {
        Reach([[default; 9]; 9])
    }
    /// Sets every pair from `from` to `to`.
    pub fn peer(mut self, from: &str, to: &str, ok: bool) -> Reach {
        for f in select(from) {
            for t in select(to) {
                self.0[f][t] = ok;
            }
        }
        self
    }
    /// Sets everything `to` receives.
    pub fn ingress(self, to: &str, ok: bool) -> Reach {
        self.peer("*", to, ok)
    }
    /// Sets everything `from` sends.
    pub fn egress(self, from: &str, ok: bool) -> Reach {
        self.peer(from, "*", ok)
    }
    /// The matrix with every pod reaching itself.
    pub fn with_loopback(mut self) -> Reach {
        for i in 0..9 {
            self.0[i][i] = true;
        }
        self
    }
    /// A readable table of the differences from `other` (`X` = differs).
    pub fn diff(&self, other: &Reach) -> String {
        let mut out = String::from("      ");
        for t in 0..9 {
            out += &format!("{:>4}", pod_name(t));
        }
        out.push('\n');
        for f in 0..9 {
            out += &format!("{:>6}", pod_name(f));
            for t in 0..9 {
                let c = match (self.0[f][t], other.0[f][t]) {
                    (a, b) if a != b => "X",
                    (true, _) => ".",
                    (false, _) => "x",
                };
                out += &format!("{c:>4}");
            }
            out.push('\n');
        }
        out
    }
}

/// The oracle's matrix for `proto`/`port` on the model.
pub fn oracle_matrix(
    cluster: &Cluster,
    pods: &[Option<Ipv4Addr>; 9],
    proto: Protocol,
    port: u16,
) -> Reach {
    let mut r = Reach::all(false);
    for f in 0..9 {
        for t in 0..9 {
            r.0[f][t] = match (pods[f], pods[t]) {
                (Some(s), Some(d)) => cluster.evaluate(s, d, proto, port).allowed(),
                _ => false,
            };
        }
    }
    r
}

/// One step of a case: changes, then the probes and their expected matrices.
#[derive(Debug, Clone)]
pub struct Step {
    /// Changes applied before probing.
    pub changes: Vec<Change>,
    /// (protocol, port, expected reachability).
    pub probes: Vec<(Protocol, u16, Reach)>,
}

/// A named case of steps.
#[derive(Debug, Clone)]
pub struct Case {
    /// The upstream-like name.
    pub name: &'static str,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

fn step(changes: Vec<Change>, probes: Vec<(Protocol, u16, Reach)>) -> Step {
    Step { changes, probes }
}

fn case(name: &'static str, steps: Vec<Step>) -> Case {
    Case { name, steps }
}

fn one(
    name: &'static str,
    policies: Vec<NetworkPolicy>,
    probes: Vec<(Protocol, u16, Reach)>,
) -> Case {
    case(
        name,
        vec![step(
            policies
                .into_iter()
                .map(|p| Change::Apply(Box::new(p)))
                .collect(),
            probes,
        )],
    )
}

use Protocol::{Sctp, Tcp, Udp};

fn deny_all_ingress(ns: &str) -> NetworkPolicy {
    policy(
        ns,
        "deny-all-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )
}

fn a_from(ns: &str, name: &str, from: Value) -> NetworkPolicy {
    policy(
        ns,
        name,
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": from}]}),
    )
}

/// The cases, after the upstream suite's, each with its expected matrices.
pub fn cases() -> Vec<Case> {
    let t = |b| Reach::all(b);
    vec![
        one(
            "default-deny-ingress",
            vec![deny_all_ingress("x")],
            vec![
                (Tcp, 80, t(true).ingress("x", false)),
                (Udp, 81, t(true).ingress("x", false)),
            ],
        ),
        one(
            "default-deny-all",
            vec![policy(
                "x",
                "deny-all",
                json!({"podSelector": {},
                "policyTypes": ["Ingress", "Egress"]}),
            )],
            vec![(Tcp, 80, t(true).ingress("x", false).egress("x", false))],
        ),
        one(
            "allow from pods within server namespace by podSelector",
            vec![a_from(
                "x",
                "x-a-from-x-b",
                json!([{"podSelector": {"matchLabels": {"pod": "b"}}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("x/b", "x/a", true),
            )],
        ),
        one(
            "allow ingress traffic for a target",
            vec![
                deny_all_ingress("x"),
                policy(
                    "x",
                    "allow-a",
                    json!({
                "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}),
                ),
            ],
            vec![(Tcp, 80, t(true).ingress("x", false).ingress("x/a", true))],
        ),
        one(
            "allow ingress from pods in all namespaces",
            vec![a_from("x", "all-ns", json!([{"namespaceSelector": {}}]))],
            vec![(Tcp, 80, t(true))],
        ),
        one(
            "allow only from a different namespace by namespaceSelector",
            vec![policy(
                "x",
                "from-y",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            vec![(Tcp, 80, t(true).ingress("x", false).peer("y", "x", true))],
        ),
        one(
            "podSelector with matchExpressions",
            vec![a_from(
                "x",
                "expr",
                json!([{"podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "In", "values": ["b"]}]}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("x/b", "x/a", true),
            )],
        ),
        one(
            "namespaceSelector with matchExpressions",
            vec![a_from(
                "x",
                "nsexpr",
                json!([{"namespaceSelector": {"matchExpressions": [
                {"key": "ns", "operator": "In", "values": ["y"]}]}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("y", "x/a", true),
            )],
        ),
        one(
            "podSelector or namespaceSelector",
            vec![a_from(
                "x",
                "or",
                json!([
                {"podSelector": {"matchLabels": {"pod": "b"}}},
                {"namespaceSelector": {"matchExpressions": [
                    {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]),
            )],
            vec![(Tcp, 80, t(true).peer("x/c", "x/a", false))],
        ),
        one(
            "podSelector and namespaceSelector",
            vec![a_from(
                "x",
                "and",
                json!([{
                "podSelector": {"matchLabels": {"pod": "b"}},
                "namespaceSelector": {"matchExpressions": [
                    {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true)
                    .ingress("x/a", false)
                    .peer("y/b", "x/a", true)
                    .peer("z/b", "x/a", true),
            )],
        ),
        one(
            "multiple podSelectors and namespaceSelectors",
            vec![a_from(
                "x",
                "multi",
                json!([{
                "podSelector": {"matchExpressions": [
                    {"key": "pod", "operator": "In", "values": ["b", "c"]}]},
                "namespaceSelector": {"matchExpressions": [
                    {"key": "ns", "operator": "NotIn", "values": ["x"]}]}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true)
                    .ingress("x/a", false)
                    .peer("y", "x/a", true)
                    .peer("z", "x/a", true)
                    .peer("y/a", "x/a", false)
                    .peer("z/a", "x/a", false),
            )],
        ),
        one(
            "any podSelectors",
            vec![a_from(
                "x",
                "any",
                json!([
                {"podSelector": {"matchLabels": {"pod": "b"}}},
                {"podSelector": {"matchLabels": {"pod": "c"}}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("x", "x/a", true),
            )],
        ),
        one(
            "only from a pod in a different namespace by pod and namespace selector",
            vec![a_from(
                "x",
                "ya",
                json!([{
                "podSelector": {"matchLabels": {"pod": "a"}},
                "namespaceSelector": {"matchLabels": {"ns": "y"}}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("y/a", "x/a", true),
            )],
        ),
        one(
            "ports",
            vec![policy(
                "x",
                "port-81",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                             "ports": [{"port": 81, "protocol": "TCP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).ingress("x/a", false)),
                (
                    Tcp,
                    81,
                    t(true).ingress("x/a", false).peer("y", "x/a", true),
                ),
            ],
        ),
        one(
            "multiple stacked policies with overlapping podSelectors",
            vec![
                policy(
                    "x",
                    "p80",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                 "ports": [{"port": 80}]}]}),
                ),
                policy(
                    "x",
                    "p81",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                 "ports": [{"port": 81}]}]}),
                ),
            ],
            vec![
                (
                    Tcp,
                    80,
                    t(true).ingress("x/a", false).peer("y", "x/a", true),
                ),
                (
                    Tcp,
                    81,
                    t(true).ingress("x/a", false).peer("y", "x/a", true),
                ),
            ],
        ),
        one(
            "allow-all policy",
            vec![policy(
                "x",
                "allow-all",
                json!({"podSelector": {}, "ingress": [{}]}),
            )],
            vec![(Tcp, 80, t(true)), (Udp, 81, t(true))],
        ),
        one(
            "ingress on one named port",
            vec![policy(
                "x",
                "named-81",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            )],
            vec![(Tcp, 81, t(true)), (Tcp, 80, t(true).ingress("x", false))],
        ),
        one(
            "ingress from namespace on one named port",
            vec![policy(
                "x",
                "named-80-y",
                json!({"podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                             "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).ingress("x", false).peer("y", "x", true)),
                (Tcp, 81, t(true).ingress("x", false)),
            ],
        ),
        one(
            "named UDP port",
            vec![policy(
                "x",
                "named-udp",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}),
            )],
            vec![
                (Udp, 81, t(true)),
                (Udp, 80, t(true).ingress("x", false)),
                (Tcp, 81, t(true).ingress("x", false)),
            ],
        ),
        one(
            "named port no pod has isolates without admitting",
            vec![policy(
                "x",
                "named-none",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"port": "serve-82-tcp"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).ingress("x", false)),
                (Tcp, 81, t(true).ingress("x", false)),
            ],
        ),
        one(
            "named port with the wrong protocol admits nothing",
            vec![policy(
                "x",
                "named-proto",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"port": "serve-80-tcp", "protocol": "UDP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).ingress("x", false)),
                (Udp, 80, t(true).ingress("x", false)),
            ],
        ),
        one(
            "egress on one named port",
            vec![policy(
                "x",
                "eg-named",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}),
            )],
            vec![(Tcp, 80, t(true)), (Tcp, 81, t(true).egress("x", false))],
        ),
        case(
            "enforce updated policy",
            vec![
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "p",
                        json!({"podSelector": {}, "ingress": [{}]}),
                    )))],
                    vec![(Tcp, 80, t(true))],
                ),
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "p",
                        json!({"podSelector": {},
                    "ingress": [{"ports": [{"port": 81}]}]}),
                    )))],
                    vec![(Tcp, 80, t(true).ingress("x", false)), (Tcp, 81, t(true))],
                ),
            ],
        ),
        case(
            "ingress from updated namespace",
            vec![
                step(
                    vec![Change::Apply(Box::new(a_from(
                        "x",
                        "ns2",
                        json!([{"namespaceSelector":
                    {"matchLabels": {"ns2": "updated"}}}]),
                    )))],
                    vec![(Tcp, 80, t(true).ingress("x/a", false))],
                ),
                step(
                    vec![Change::LabelNs("y", "ns2", Some("updated"))],
                    vec![(
                        Tcp,
                        80,
                        t(true).ingress("x/a", false).peer("y", "x/a", true),
                    )],
                ),
                step(
                    vec![Change::LabelNs("y", "ns2", None)],
                    vec![(Tcp, 80, t(true).ingress("x/a", false))],
                ),
            ],
        ),
        case(
            "ingress from updated pod",
            vec![
                step(
                    vec![Change::Apply(Box::new(a_from(
                        "x",
                        "pod2",
                        json!([{"podSelector":
                    {"matchLabels": {"pod2": "updated"}}}]),
                    )))],
                    vec![(Tcp, 80, t(true).ingress("x/a", false))],
                ),
                step(
                    vec![Change::LabelPod("x", "b", "pod2", Some("updated"))],
                    vec![(
                        Tcp,
                        80,
                        t(true).ingress("x/a", false).peer("x/b", "x/a", true),
                    )],
                ),
            ],
        ),
        one(
            "deny ingress from pods on other namespaces",
            vec![policy(
                "x",
                "same-ns",
                json!({"podSelector": {},
                "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            vec![(Tcp, 80, t(true).ingress("x", false).peer("x", "x", true))],
        ),
        case(
            "deny ingress to updated pod",
            vec![
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "iso",
                        json!({"podSelector":
                    {"matchLabels": {"target": "isolated"}}, "policyTypes": ["Ingress"]}),
                    )))],
                    vec![(Tcp, 80, t(true))],
                ),
                step(
                    vec![Change::LabelPod("x", "a", "target", Some("isolated"))],
                    vec![(Tcp, 80, t(true).ingress("x/a", false))],
                ),
            ],
        ),
        one(
            "deny egress from pods by podSelector",
            vec![policy(
                "x",
                "eg-a",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"]}),
            )],
            vec![(Tcp, 80, t(true).egress("x/a", false))],
        ),
        one(
            "deny egress from all pods in a namespace",
            vec![policy(
                "x",
                "eg-all",
                json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            )],
            vec![
                (Tcp, 80, t(true).egress("x", false)),
                (Udp, 80, t(true).egress("x", false)),
            ],
        ),
        one(
            "ingress and egress together",
            vec![policy(
                "x",
                "both",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            vec![(
                Tcp,
                80,
                t(true)
                    .ingress("x/a", false)
                    .peer("x/b", "x/a", true)
                    .egress("x/a", false)
                    .peer("x/a", "y", true),
            )],
        ),
        one(
            "deny egress on the client even if the server allows",
            vec![
                policy(
                    "x",
                    "eg-a",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"]}),
                ),
                policy("y", "allow", json!({"podSelector": {}, "ingress": [{}]})),
            ],
            vec![(Tcp, 80, t(true).egress("x/a", false))],
        ),
        one(
            "egress to a server in another namespace by pod and namespace selector",
            vec![policy(
                "x",
                "eg-ya",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "a"}},
                    "namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
            )],
            vec![(
                Tcp,
                80,
                t(true).egress("x/a", false).peer("x/a", "y/a", true),
            )],
        ),
        one(
            "any port on a specific protocol",
            vec![policy(
                "x",
                "tcp-only",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"protocol": "TCP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true)),
                (Tcp, 81, t(true)),
                (Udp, 80, t(true).ingress("x/a", false)),
            ],
        ),
        case(
            "ingress allow-all takes precedence",
            vec![
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "p80",
                        json!({"podSelector": {"matchLabels":
                    {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]}),
                    )))],
                    vec![(Tcp, 80, t(true)), (Tcp, 81, t(true).ingress("x/a", false))],
                ),
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "all",
                        json!({"podSelector": {"matchLabels":
                    {"pod": "a"}}, "ingress": [{}]}),
                    )))],
                    vec![(Tcp, 80, t(true)), (Tcp, 81, t(true))],
                ),
            ],
        ),
        case(
            "egress allow-all takes precedence",
            vec![
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "p80",
                        json!({"podSelector": {"matchLabels":
                    {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 80}]}]}),
                    )))],
                    vec![(Tcp, 80, t(true)), (Tcp, 81, t(true).egress("x/a", false))],
                ),
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "all",
                        json!({"podSelector": {"matchLabels":
                    {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{}]}),
                    )))],
                    vec![(Tcp, 80, t(true)), (Tcp, 81, t(true))],
                ),
            ],
        ),
        case(
            "stop enforcing after deletion",
            vec![
                step(
                    vec![Change::Apply(Box::new(policy(
                        "x",
                        "deny",
                        json!({"podSelector": {},
                    "policyTypes": ["Ingress", "Egress"]}),
                    )))],
                    vec![(Tcp, 80, t(true).ingress("x", false).egress("x", false))],
                ),
                step(
                    vec![Change::DeletePolicy("x", "deny")],
                    vec![(Tcp, 80, t(true))],
                ),
            ],
        ),
        one(
            "egress to a server in a CIDR block",
            vec![policy(
                "x",
                "cidr",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": format!("{}/32", pod_ip(4))}}]}]}),
            )],
            vec![(
                Tcp,
                80,
                t(true).egress("x/a", false).peer("x/a", "y/b", true),
            )],
        ),
        one(
            "except clause in a CIDR block",
            vec![policy(
                "x",
                "except",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.40.0.0/16",
                    "except": [format!("{}/32", pod_ip(4))]}}]}]}),
            )],
            vec![(Tcp, 80, t(true).peer("x/a", "y/b", false))],
        ),
        one(
            "address in both CIDR and except is allowed by another block",
            vec![policy(
                "x",
                "overlap",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.40.0.0/16",
                    "except": [format!("{}/32", pod_ip(4))]}}]},
                    {"to": [{"ipBlock": {"cidr": format!("{}/32", pod_ip(4))}}]}]}),
            )],
            vec![(Tcp, 80, t(true))],
        ),
        one(
            "ingress ipBlock with except",
            vec![policy(
                "x",
                "in-except",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.40.0.0/24",
                    "except": ["10.40.0.20/30"]}}]}]}),
            )],
            vec![(
                Tcp,
                80,
                t(true)
                    .peer("y/a", "x/a", false)
                    .peer("y/b", "x/a", false)
                    .peer("y/c", "x/a", false),
            )],
        ),
        one(
            "ingress and egress controlled independently",
            vec![
                policy(
                    "x",
                    "eg-deny",
                    json!({"podSelector": {"matchLabels": {"pod": "a"}},
                    "policyTypes": ["Egress"]}),
                ),
                policy(
                    "x",
                    "in-deny",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                    "policyTypes": ["Ingress"]}),
                ),
            ],
            vec![(Tcp, 80, t(true).egress("x/a", false).ingress("x/b", false))],
        ),
        one(
            "SCTP is not TCP",
            vec![policy(
                "x",
                "sctp",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).ingress("x/a", false)),
                (Sctp, 80, t(true)),
            ],
        ),
        one(
            "only UDP means no TCP",
            vec![policy(
                "x",
                "udp",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 81, "protocol": "UDP"}]}]}),
            )],
            vec![
                (Tcp, 81, t(true).ingress("x/a", false)),
                (Udp, 81, t(true)),
                (Udp, 80, t(true).ingress("x/a", false)),
            ],
        ),
        one(
            "default namespace label with matchLabels",
            vec![a_from(
                "x",
                "meta",
                json!([{"namespaceSelector": {"matchLabels":
                {"kubernetes.io/metadata.name": "y"}}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).ingress("x/a", false).peer("y", "x/a", true),
            )],
        ),
        one(
            "default namespace label with matchExpressions",
            vec![a_from(
                "x",
                "meta-expr",
                json!([{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["y"]}]}}]),
            )],
            vec![(Tcp, 80, t(true).peer("y", "x/a", false))],
        ),
        one(
            "Exists and DoesNotExist",
            vec![a_from(
                "x",
                "exists",
                json!([
                {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}},
                {"namespaceSelector": {"matchExpressions": [
                    {"key": "ns", "operator": "DoesNotExist"}]}}]),
            )],
            vec![(
                Tcp,
                80,
                t(true).peer("y", "x/a", false).peer("z", "x/a", false),
            )],
        ),
        one(
            "endPort",
            vec![policy(
                "x",
                "range",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                             "ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}),
            )],
            vec![
                (
                    Tcp,
                    80,
                    t(true).ingress("x/a", false).peer("y", "x/a", true),
                ),
                (
                    Tcp,
                    81,
                    t(true).ingress("x/a", false).peer("y", "x/a", true),
                ),
                (Tcp, 82, t(true).ingress("x/a", false)),
                (Udp, 80, t(true).ingress("x/a", false)),
            ],
        ),
        one(
            "endPort and a single port in one rule",
            vec![policy(
                "x",
                "mixed",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": 81, "endPort": 90}, {"port": 80, "protocol": "UDP"}]}]}),
            )],
            vec![
                (Tcp, 80, t(true).egress("x", false)),
                (Tcp, 81, t(true)),
                (Tcp, 85, t(true)),
                (Udp, 80, t(true)),
                (Udp, 81, t(true).egress("x", false)),
            ],
        ),
        one(
            "an invalid endPort isolates and admits nothing",
            vec![policy(
                "x",
                "bad",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"ports": [{"port": 81, "endPort": 80}]}, {"ports": [{"port": 80}]}]}),
            )],
            vec![(Tcp, 80, t(true)), (Tcp, 81, t(true).ingress("x/a", false))],
        ),
        one(
            "an invalid selector operator isolates",
            vec![policy(
                "x",
                "bad-op",
                json!({"podSelector": {"matchExpressions": [
                {"key": "pod", "operator": "Near", "values": ["a"]}]},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            vec![(Tcp, 80, t(true).ingress("x", false).peer("x/b", "x", true))],
        ),
        one(
            "an invalid peer admits nothing",
            vec![policy(
                "x",
                "bad-peer",
                json!({"podSelector": {},
                "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                    {"key": "pod", "operator": "In"}]}}]}]}),
            )],
            vec![(Tcp, 80, t(true).ingress("x", false))],
        ),
        case(
            "an address reused by a new pod",
            vec![
                step(
                    vec![Change::Apply(Box::new(a_from(
                        "x",
                        "from-b",
                        json!([{"podSelector":
                    {"matchLabels": {"pod": "b"}}}]),
                    )))],
                    vec![(
                        Tcp,
                        80,
                        t(true).ingress("x/a", false).peer("x/b", "x/a", true),
                    )],
                ),
                step(
                    vec![
                        Change::DeletePod("x", "b"),
                        Change::AddPod(Box::new(pod("x", "d", pod_ip(1), &[("pod", "d")]))),
                    ],
                    vec![(Tcp, 80, t(true).ingress("x/a", false))],
                ),
            ],
        ),
        case(
            "namespace label change moves pods out of a peer",
            vec![
                step(
                    vec![
                        Change::Apply(Box::new(policy(
                            "z",
                            "from-team",
                            json!({"podSelector": {},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "t"}}}]}]}),
                        ))),
                        Change::LabelNs("x", "team", Some("t")),
                        Change::LabelNs("y", "team", Some("t")),
                    ],
                    vec![(
                        Tcp,
                        80,
                        t(true)
                            .ingress("z", false)
                            .peer("x", "z", true)
                            .peer("y", "z", true),
                    )],
                ),
                step(
                    vec![Change::LabelNs("x", "team", Some("other"))],
                    vec![(Tcp, 80, t(true).ingress("z", false).peer("y", "z", true))],
                ),
            ],
        ),
    ]
}
