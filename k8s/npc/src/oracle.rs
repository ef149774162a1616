//! The oracle: a pure evaluator of NetworkPolicy semantics. From the
//! cluster's objects and one connection (source, destination, protocol,
//! port) it says allow or deny, and which policy rules decided.
//!
//! It works on addresses, as the data path does: an address that belongs to
//! a counted pod is that pod, any other address is outside the pod network
//! (only ipBlocks can match it). Traffic from a pod to its own address never
//! leaves the pod and is always allowed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::spec::{Labels, Namespace, ObjectKey, Pod, Policy, Protocol, Rule};

/// The objects of a cluster, as compiled specs.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by namespace/name.
    pub pods: BTreeMap<ObjectKey, Pod>,
    /// Policies by namespace/name.
    pub policies: BTreeMap<ObjectKey, Policy>,
}

/// A policy rule: the policy and the rule's index in its direction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRef {
    /// The policy.
    pub policy: ObjectKey,
    /// Index into spec.ingress or spec.egress.
    pub index: usize,
}

/// The outcome for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The endpoint is not a counted pod, or no policy of this direction selects it.
    NotIsolated,
    /// Isolated, and these rules admit the connection.
    Allowed(Vec<RuleRef>),
    /// Isolated by these policies, and no rule of theirs admits it.
    Denied(Vec<ObjectKey>),
}

impl Decision {
    /// Whether this direction lets the connection through.
    pub fn allows(&self) -> bool {
        !matches!(self, Decision::Denied(_))
    }
}

/// The oracle's answer for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The source's egress side.
    pub egress: Decision,
    /// The destination's ingress side.
    pub ingress: Decision,
}

impl Verdict {
    /// Whether the connection is allowed (both sides allow it).
    pub fn allowed(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }
}

impl Cluster {
    /// The counted pod owning `ip`, if exactly one does.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        let mut found = self.pods.values().filter(|p| p.ip == Some(ip));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    fn ns_labels(&self, ns: &str) -> Labels {
        self.namespaces
            .get(ns)
            .map(|n| n.labels.clone())
            .unwrap_or_default()
    }

    /// Whether a connection from `src` to `dst` on `proto`/`port` is allowed.
    pub fn evaluate(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: Protocol, port: u16) -> Verdict {
        if src == dst {
            return Verdict {
                egress: Decision::NotIsolated,
                ingress: Decision::NotIsolated,
            };
        }
        let src_pod = self.pod_by_ip(src);
        let dst_pod = self.pod_by_ip(dst);
        let egress = match src_pod {
            None => Decision::NotIsolated,
            Some(pod) => self.decide(
                pod,
                |p| p.egress.as_ref(),
                |policy, rule| {
                    self.peer_admits(policy, rule, dst, dst_pod)
                        && rule.ports_match(proto, port, dst_pod)
                },
            ),
        };
        let ingress = match dst_pod {
            None => Decision::NotIsolated,
            Some(pod) => self.decide(
                pod,
                |p| p.ingress.as_ref(),
                |policy, rule| {
                    self.peer_admits(policy, rule, src, src_pod)
                        && rule.ports_match(proto, port, dst_pod)
                },
            ),
        };
        Verdict { egress, ingress }
    }

    /// Convenience: the verdict between two pods by key (pods must count).
    pub fn evaluate_pods(
        &self,
        src: &ObjectKey,
        dst: &ObjectKey,
        proto: Protocol,
        port: u16,
    ) -> Option<Verdict> {
        let s = self.pods.get(src)?.ip?;
        let d = self.pods.get(dst)?.ip?;
        Some(self.evaluate(s, d, proto, port))
    }

    fn decide(
        &self,
        pod: &Pod,
        rules_of: impl Fn(&Policy) -> Option<&Vec<Option<Rule>>>,
        admits: impl Fn(&Policy, &Rule) -> bool,
    ) -> Decision {
        let mut isolating = Vec::new();
        let mut allowed = Vec::new();
        for policy in self.policies.values().filter(|p| p.selects(pod)) {
            let Some(rules) = rules_of(policy) else {
                continue;
            };
            isolating.push(policy.key.clone());
            for (index, rule) in rules.iter().enumerate() {
                if rule.as_ref().is_some_and(|r| admits(policy, r)) {
                    allowed.push(RuleRef {
                        policy: policy.key.clone(),
                        index,
                    });
                }
            }
        }
        if isolating.is_empty() {
            Decision::NotIsolated
        } else if allowed.is_empty() {
            Decision::Denied(isolating)
        } else {
            Decision::Allowed(allowed)
        }
    }

    fn peer_admits(&self, policy: &Policy, rule: &Rule, ip: Ipv4Addr, pod: Option<&Pod>) -> bool {
        let Some(peers) = &rule.peers else {
            return true;
        };
        peers.iter().any(|peer| {
            peer.matches_ip(ip)
                || pod.is_some_and(|pod| {
                    peer.matches_pod(
                        &policy.key.namespace,
                        pod,
                        &self.ns_labels(&pod.key.namespace),
                    )
                })
        })
    }
}
