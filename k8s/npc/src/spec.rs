//! The API objects the controller reads (Namespaces, Pods,
//! networking.k8s.io/v1 NetworkPolicies), checked and compiled once into the
//! plain forms both the oracle and the policy core evaluate.
//!
//! Compiling never fails as a whole: a part that is invalid or that we
//! cannot enforce is recorded as a [`SpecError`] and compiled to the
//! *closed* meaning (a rule that admits nothing, a pod selector that selects
//! every pod of the namespace), so a policy we do not understand isolates
//! its pods instead of leaving them open.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A namespaced object's identity: (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The name within the namespace.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Something in an API object the controller cannot enforce as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An object without the name (or namespace) that identifies it.
    #[error("object without metadata.name or metadata.namespace")]
    MissingName,
    /// A matchExpressions entry with an unknown operator or wrong values.
    #[error("label selector requirement on {key:?}: {reason}")]
    BadRequirement {
        /// The label key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A protocol other than TCP, UDP or SCTP.
    #[error("unsupported protocol {0:?}")]
    BadProtocol(String),
    /// A port number, range or name that cannot be valid.
    #[error("bad port: {0}")]
    BadPort(String),
    /// An ipBlock whose CIDR or except list does not parse or does not nest.
    #[error("bad ipBlock: {0}")]
    BadIpBlock(String),
    /// A peer with no selector and no ipBlock, or an ipBlock mixed with selectors.
    #[error("bad peer: {0}")]
    BadPeer(String),
    /// A policyTypes entry other than Ingress or Egress.
    #[error("unknown policyType {0:?}")]
    BadPolicyType(String),
}

/// One matchExpressions requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The label is present with one of the values.
    In(String, Vec<String>),
    /// The label is absent or has none of the values.
    NotIn(String, Vec<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A compiled label selector: all of `labels` and all of `requirements`
/// must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// matchLabels.
    pub labels: Labels,
    /// matchExpressions.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Compiles a LabelSelector.
    pub fn compile(sel: &LabelSelector) -> Result<Selector, SpecError> {
        let mut requirements = Vec::new();
        for req in sel.match_expressions.iter().flatten() {
            let values = req.values.clone().unwrap_or_default();
            let bad = |reason: &str| SpecError::BadRequirement {
                key: req.key.clone(),
                reason: reason.to_string(),
            };
            let compiled = match req.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(bad("In and NotIn need at least one value"));
                }
                "In" => Requirement::In(req.key.clone(), values),
                "NotIn" => Requirement::NotIn(req.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad("Exists and DoesNotExist take no values"));
                }
                "Exists" => Requirement::Exists(req.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(req.key.clone()),
                other => return Err(bad(&format!("unknown operator {other:?}"))),
            };
            requirements.push(compiled);
        }
        Ok(Selector {
            labels: sel.match_labels.clone().unwrap_or_default(),
            requirements,
        })
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// A transport protocol NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// All three, in a fixed order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling; absent means TCP.
    pub fn parse(s: Option<&str>) -> Result<Protocol, SpecError> {
        match s {
            None | Some("TCP") => Ok(Protocol::Tcp),
            Some("UDP") => Ok(Protocol::Udp),
            Some("SCTP") => Ok(Protocol::Sctp),
            Some(other) => Err(SpecError::BadProtocol(other.to_string())),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol with IP protocol number `n`, if it is one of ours.
    pub fn from_number(n: u8) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.number() == n)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol (port omitted).
    AnyPort(Protocol),
    /// Ports `first..=last` (a single port, or port..endPort).
    Range(Protocol, u16, u16),
    /// A named port, resolved on the destination pod.
    Named(Protocol, String),
}

impl PortMatch {
    fn compile(p: &NetworkPolicyPort) -> Result<PortMatch, SpecError> {
        let proto = Protocol::parse(p.protocol.as_deref())?;
        let number = |n: i32| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| SpecError::BadPort(format!("{n} is not a port number")))
        };
        match (&p.port, p.end_port) {
            (None, None) => Ok(PortMatch::AnyPort(proto)),
            (None, Some(_)) => Err(SpecError::BadPort("endPort without port".into())),
            (Some(IntOrString::Int(n)), end) => {
                let first = number(*n)?;
                let last = end.map(number).transpose()?.unwrap_or(first);
                if last < first {
                    return Err(SpecError::BadPort(format!("endPort {last} < port {first}")));
                }
                Ok(PortMatch::Range(proto, first, last))
            }
            (Some(IntOrString::String(_)), Some(_)) => {
                Err(SpecError::BadPort("endPort with a named port".into()))
            }
            (Some(IntOrString::String(name)), None) => {
                if name.is_empty() {
                    return Err(SpecError::BadPort("empty port name".into()));
                }
                Ok(PortMatch::Named(proto, name.clone()))
            }
        }
    }

    /// Whether traffic `proto`/`port` to `dst` (a pod, when it is one) matches.
    pub fn matches(&self, proto: Protocol, port: u16, dst: Option<&Pod>) -> bool {
        match self {
            PortMatch::AnyPort(p) => *p == proto,
            PortMatch::Range(p, lo, hi) => *p == proto && (*lo..=*hi).contains(&port),
            PortMatch::Named(p, name) => {
                *p == proto
                    && dst.is_some_and(|pod| {
                        pod.ports
                            .iter()
                            .any(|cp| cp.name == *name && cp.protocol == proto && cp.port == port)
                    })
            }
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// The policy's own namespace (no namespaceSelector).
    Own,
    /// Namespaces whose labels match.
    Selected(Selector),
}

/// One compiled peer (`from` / `to` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods matching `pods` in the namespaces of `namespaces` (both = AND).
    Pods {
        /// Where to look.
        namespaces: NamespaceScope,
        /// Which pods there (empty = all).
        pods: Selector,
    },
    /// Addresses: the CIDR minus the excepts, as sorted disjoint inclusive ranges.
    Block(Vec<(Ipv4Addr, Ipv4Addr)>),
}

impl Peer {
    fn compile(p: &NetworkPolicyPeer) -> Result<Peer, SpecError> {
        match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
            (Some(block), None, None) => {
                let except = block.except.clone().unwrap_or_default();
                Ok(Peer::Block(block_ranges(&block.cidr, &except)?))
            }
            (Some(_), _, _) => Err(SpecError::BadPeer(
                "ipBlock together with a selector".into(),
            )),
            (None, None, None) => Err(SpecError::BadPeer("empty peer".into())),
            (None, ns, pods) => Ok(Peer::Pods {
                namespaces: match ns {
                    None => NamespaceScope::Own,
                    Some(sel) => NamespaceScope::Selected(Selector::compile(sel)?),
                },
                pods: pods
                    .as_ref()
                    .map(Selector::compile)
                    .transpose()?
                    .unwrap_or_default(),
            }),
        }
    }

    /// Whether the pod `pod` in a namespace labelled `ns_labels` is a peer
    /// of a policy in `policy_ns`.
    pub fn matches_pod(&self, policy_ns: &str, pod: &Pod, ns_labels: &Labels) -> bool {
        match self {
            Peer::Pods { namespaces, pods } => {
                let ns_ok = match namespaces {
                    NamespaceScope::Own => pod.key.namespace == policy_ns,
                    NamespaceScope::Selected(sel) => sel.matches(ns_labels),
                };
                ns_ok && pods.matches(&pod.labels)
            }
            Peer::Block(_) => false,
        }
    }

    /// Whether the address is in this peer's ipBlock.
    pub fn matches_ip(&self, ip: Ipv4Addr) -> bool {
        match self {
            Peer::Block(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&ip)),
            Peer::Pods { .. } => false,
        }
    }
}

/// `cidr` minus every `except`, as sorted disjoint inclusive IPv4 ranges. An
/// IPv6 block yields no IPv4 range (we enforce IPv4 only, as Weave did).
pub fn block_ranges(cidr: &str, except: &[String]) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>, SpecError> {
    let parse = |s: &str| {
        s.parse::<IpNet>()
            .map_err(|e| SpecError::BadIpBlock(format!("{s:?}: {e}")))
    };
    let net = parse(cidr)?;
    let IpNet::V4(net) = net else {
        for e in except {
            if !matches!(parse(e)?, IpNet::V6(_)) {
                return Err(SpecError::BadIpBlock(format!("{e} not within {cidr}")));
            }
        }
        return Ok(Vec::new());
    };
    let mut ranges = vec![(u32::from(net.network()), u32::from(net.broadcast()))];
    for e in except {
        let IpNet::V4(ex) = parse(e)? else {
            return Err(SpecError::BadIpBlock(format!("{e} not within {cidr}")));
        };
        if !net.contains(&ex) {
            return Err(SpecError::BadIpBlock(format!("{e} not within {cidr}")));
        }
        let (elo, ehi) = (u32::from(ex.network()), u32::from(ex.broadcast()));
        let mut next = Vec::new();
        for (lo, hi) in ranges {
            if ehi < lo || elo > hi {
                next.push((lo, hi));
                continue;
            }
            if elo > lo {
                next.push((lo, elo - 1));
            }
            if ehi < hi {
                next.push((ehi + 1, hi));
            }
        }
        ranges = next;
    }
    Ok(ranges
        .into_iter()
        .map(|(lo, hi)| (Ipv4Addr::from(lo), Ipv4Addr::from(hi)))
        .collect())
}

/// One compiled rule: `peers` None = every peer; `ports` None = every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `from` / `to`.
    pub peers: Option<Vec<Peer>>,
    /// `ports`.
    pub ports: Option<Vec<PortMatch>>,
}

impl Rule {
    fn compile(
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
    ) -> Result<Rule, SpecError> {
        let peers = match peers {
            Some(list) if !list.is_empty() => {
                Some(list.iter().map(Peer::compile).collect::<Result<_, _>>()?)
            }
            _ => None,
        };
        let ports = match ports {
            Some(list) if !list.is_empty() => Some(
                list.iter()
                    .map(PortMatch::compile)
                    .collect::<Result<_, _>>()?,
            ),
            _ => None,
        };
        Ok(Rule { peers, ports })
    }

    /// Whether the ports part admits `proto`/`port` towards `dst`.
    pub fn ports_match(&self, proto: Protocol, port: u16, dst: Option<&Pod>) -> bool {
        match &self.ports {
            None => true,
            Some(ports) => ports.iter().any(|p| p.matches(proto, port, dst)),
        }
    }
}

/// The rules of one direction of a policy, or of a direction it does not
/// affect (`None`).
pub type DirectionRules = Option<Vec<Option<Rule>>>;

/// A compiled NetworkPolicy. Rules that failed to compile are `None` (they
/// admit nothing) and are described in `errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// namespace/name.
    pub key: ObjectKey,
    /// spec.podSelector (all pods of the namespace if it was invalid).
    pub selector: Selector,
    /// Ingress rules if the policy affects ingress.
    pub ingress: DirectionRules,
    /// Egress rules if the policy affects egress.
    pub egress: DirectionRules,
    /// What could not be compiled.
    pub errors: Vec<SpecError>,
}

impl Policy {
    /// Compiles a NetworkPolicy.
    pub fn compile(np: &NetworkPolicy) -> Result<Policy, SpecError> {
        let key = object_key(&np.metadata)?;
        let default = NetworkPolicySpec::default();
        let spec = np.spec.as_ref().unwrap_or(&default);
        let mut errors = Vec::new();
        let selector = match spec.pod_selector.as_ref().map(Selector::compile) {
            None => Selector::default(),
            Some(Ok(sel)) => sel,
            Some(Err(e)) => {
                errors.push(e);
                Selector::default()
            }
        };
        let ingress_rules = spec.ingress.clone().unwrap_or_default();
        let egress_rules = spec.egress.clone().unwrap_or_default();
        let (affects_ingress, affects_egress) = match &spec.policy_types {
            None => (true, !egress_rules.is_empty()),
            Some(types) if types.is_empty() => (true, !egress_rules.is_empty()),
            Some(types) => {
                let mut ing = false;
                let mut eg = false;
                for t in types {
                    match t.as_str() {
                        "Ingress" => ing = true,
                        "Egress" => eg = true,
                        other => {
                            errors.push(SpecError::BadPolicyType(other.to_string()));
                            ing = true;
                            eg = true;
                        }
                    }
                }
                (ing, eg)
            }
        };
        let mut compile_all = |rules: Vec<Option<Result<Rule, SpecError>>>| {
            rules
                .into_iter()
                .map(|r| match r {
                    Some(Ok(rule)) => Some(rule),
                    Some(Err(e)) => {
                        errors.push(e);
                        None
                    }
                    None => None,
                })
                .collect::<Vec<_>>()
        };
        let ingress = affects_ingress.then(|| {
            compile_all(
                ingress_rules
                    .iter()
                    .map(|r| Some(Rule::compile(r.from.as_ref(), r.ports.as_ref())))
                    .collect(),
            )
        });
        let egress = affects_egress.then(|| {
            compile_all(
                egress_rules
                    .iter()
                    .map(|r| Some(Rule::compile(r.to.as_ref(), r.ports.as_ref())))
                    .collect(),
            )
        });
        Ok(Policy {
            key,
            selector,
            ingress,
            egress,
            errors,
        })
    }

    /// Whether the policy selects `pod` (same namespace, selector matches).
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.key.namespace == self.key.namespace && self.selector.matches(&pod.labels)
    }
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its number.
    pub port: u16,
}

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// namespace/name.
    pub key: ObjectKey,
    /// Its labels.
    pub labels: Labels,
    /// Its IPv4 address, when it counts (has an IPv4 pod IP, is not
    /// hostNetwork, is not Succeeded or Failed); `None` otherwise.
    pub ip: Option<Ipv4Addr>,
    /// spec.nodeName.
    pub node: Option<String>,
    /// Its named container ports.
    pub ports: Vec<NamedPort>,
}

impl Pod {
    /// Compiles a Pod.
    pub fn compile(pod: &K8sPod) -> Result<Pod, SpecError> {
        let key = object_key(&pod.metadata)?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let finished = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|_| !host_network && !finished);
        let mut ports = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for cp in c.ports.iter().flatten() {
                let (Some(name), Ok(port)) = (&cp.name, u16::try_from(cp.container_port)) else {
                    continue;
                };
                // An unknown protocol cannot be named by a policy either.
                let Ok(protocol) = Protocol::parse(cp.protocol.as_deref()) else {
                    continue;
                };
                ports.push(NamedPort {
                    name: name.clone(),
                    protocol,
                    port,
                });
            }
        }
        Ok(Pod {
            key,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node: spec.and_then(|s| s.node_name.clone()),
            ports,
        })
    }
}

/// A namespace: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// metadata.name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

impl Namespace {
    /// Compiles a Namespace.
    pub fn compile(ns: &K8sNamespace) -> Result<Namespace, SpecError> {
        Ok(Namespace {
            name: ns.metadata.name.clone().ok_or(SpecError::MissingName)?,
            labels: ns.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<ObjectKey, SpecError> {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(name)) => Ok(ObjectKey::new(ns.clone(), name.clone())),
        _ => Err(SpecError::MissingName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_minus_excepts() {
        let r = block_ranges(
            "10.0.0.0/24",
            &["10.0.0.16/28".into(), "10.0.0.0/32".into()],
        )
        .unwrap_or_default();
        let want = vec![
            ("10.0.0.1".parse().unwrap(), "10.0.0.15".parse().unwrap()),
            ("10.0.0.32".parse().unwrap(), "10.0.0.255".parse().unwrap()),
        ];
        assert_eq!(r, want);
        assert!(block_ranges("10.0.0.0/24", &["10.0.1.0/28".into()]).is_err());
        assert_eq!(block_ranges("fd00::/64", &[]), Ok(vec![]));
        assert!(block_ranges("0.0.0.0/0", &["10.0.0.0/8".into()]).is_ok_and(|r| r.len() == 2));
    }
}
