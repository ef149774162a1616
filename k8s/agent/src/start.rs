//! How the router starts: its peers, how its IP ring begins, and whether
//! its saved state must go first. Pure: it decides from the Node list, the
//! registry and what is on disk.
//!
//! ## Not seeding a second ring (Weave #3908)
//!
//! Weave 2.8.1 started every router with `consensus=<number of Nodes
//! listed>`. A node whose LIST showed only part of the cluster (nodes
//! joining at the same time) could reach that small quorum with the few
//! peers it saw and seed a ring of its own, which later clashed with the
//! cluster's ("IP allocation was seeded by different peers").
//!
//! weave-rs's rule: **the quorum is never smaller than the registry
//! says, and a router never starts while the registry lists a live peer
//! it cannot connect to.** Concretely:
//!
//! 1. The consensus size is the larger of the number of Nodes with an
//!    address and the number of registered peers whose Node still exists
//!    (this router counted once). Peers that registered are routers that
//!    ran; a partial Node list cannot shrink the quorum below them.
//! 2. If the registry lists another peer whose Node exists, at least one
//!    of those Nodes must have an address among this router's peers;
//!    otherwise the agent waits and lists again. Joining that peer, the
//!    router receives the existing ring by gossip instead of seeding one.
//!
//! The agent registers itself before the router starts, so routers that
//! start together count each other in, and the quorum stays reachable
//! when every router restarts at once (each is registered).
//!
//! `IPALLOC_INIT` and `KUBE_PEERS` given by hand are taken as they are.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::nodes::{NodeInfo, peer_addresses};
use crate::registry::{PeerEntry, PeerList};

/// Who this agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// The router's peer name.
    pub peer: String,
    /// This Node's name.
    pub node: String,
    /// This Node's UID, once the Node was read.
    pub node_uid: Option<String>,
}

/// What the decision reads.
#[derive(Debug, Clone)]
pub struct StartInputs<'a> {
    /// This agent.
    pub me: &'a Me,
    /// Every Node.
    pub nodes: &'a [NodeInfo],
    /// This host's own IPv4 addresses.
    pub local: &'a BTreeSet<Ipv4Addr>,
    /// The registry's peer list.
    pub registry: &'a PeerList,
    /// `IPALLOC_INIT`, if given.
    pub configured_init: Option<&'a str>,
    /// `KUBE_PEERS`, if given.
    pub configured_peers: Option<&'a [String]>,
    /// Whether the router's data file exists.
    pub have_data: bool,
    /// Whether that data was made by a registered router (the marker).
    pub registered_before: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Start the router.
    Run {
        /// Its peers.
        peers: Vec<String>,
        /// Its `--ipalloc-init`.
        ipalloc_init: String,
        /// Delete its saved state first: another peer reclaimed this one
        /// (its data would clash with the ring that took its space back).
        fresh_state: bool,
    },
    /// Not yet: list again later.
    Wait {
        /// Why.
        reason: String,
    },
}

/// Whether a registry entry's Node still exists: same name and, when the
/// entry recorded a UID, the same UID (a recreated Node has a new one).
pub fn node_exists(entry: &PeerEntry, nodes: &[NodeInfo]) -> bool {
    nodes.iter().any(|n| {
        n.name == entry.node_name
            && match (&entry.node_uid, &n.uid) {
                (Some(recorded), Some(current)) => recorded == current,
                _ => true,
            }
    })
}

/// Whether this router's saved data must go: it exists, it was made by a
/// registered router (`registered_before`), and the registry no longer
/// lists this peer — another peer reclaimed it (Weave's `peer-reclaim`
/// flag and `-check-peer-new`).
pub fn was_reclaimed(
    have_data: bool,
    registered_before: bool,
    registry: &PeerList,
    peer: &str,
) -> bool {
    have_data && registered_before && !registry.contains(peer)
}

/// Decides how the router starts.
pub fn decide(inputs: &StartInputs<'_>) -> Start {
    let me = inputs.me;
    let fresh_state = was_reclaimed(
        inputs.have_data,
        inputs.registered_before,
        inputs.registry,
        &me.peer,
    );
    let peers: Vec<String> = match inputs.configured_peers {
        Some(peers) => peers.to_vec(),
        None => peer_addresses(inputs.nodes, &me.node, inputs.local)
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    if let Some(init) = inputs.configured_init {
        return Start::Run {
            peers,
            ipalloc_init: init.to_string(),
            fresh_state,
        };
    }
    let live: Vec<&PeerEntry> = inputs
        .registry
        .peers
        .iter()
        .filter(|e| e.peer_name != me.peer && e.node_name != me.node)
        .filter(|e| node_exists(e, inputs.nodes))
        .collect();
    if !live.is_empty() && inputs.configured_peers.is_none() {
        let reachable = live.iter().any(|e| {
            inputs
                .nodes
                .iter()
                .filter(|n| n.name == e.node_name)
                .filter_map(|n| n.addr)
                .any(|a| peers.contains(&a.to_string()))
        });
        if !reachable {
            let names: Vec<&str> = live.iter().map(|e| e.node_name.as_str()).collect();
            return Start::Wait {
                reason: format!(
                    "the registry lists running peers on Nodes {names:?}, none of which has an \
                     address yet: waiting to join their ring rather than seed another"
                ),
            };
        }
    }
    let with_addr = inputs
        .nodes
        .iter()
        .filter(|n| n.name != me.node && n.addr.is_some())
        .count();
    let quorum = (with_addr.max(live.len())) + 1;
    Start::Run {
        peers,
        ipalloc_init: format!("consensus={quorum}"),
        fresh_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Me {
        Me {
            peer: "aa:00:00:00:00:01".into(),
            node: "n1".into(),
            node_uid: Some("u1".into()),
        }
    }

    fn node(name: &str, addr: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            uid: Some(format!("u{}", &name[1..])),
            addr: addr.map(|a| a.parse().unwrap()),
        }
    }

    fn entry(peer: &str, node: &str, uid: Option<&str>) -> PeerEntry {
        PeerEntry {
            peer_name: peer.into(),
            node_name: node.into(),
            node_uid: uid.map(str::to_string),
        }
    }

    fn inputs<'a>(me: &'a Me, nodes: &'a [NodeInfo], reg: &'a PeerList) -> StartInputs<'a> {
        static EMPTY: BTreeSet<Ipv4Addr> = BTreeSet::new();
        StartInputs {
            me,
            nodes,
            local: &EMPTY,
            registry: reg,
            configured_init: None,
            configured_peers: None,
            have_data: false,
            registered_before: false,
        }
    }

    #[test]
    fn fresh_cluster_counts_the_nodes() {
        let me = me();
        let nodes = [
            node("n1", Some("10.0.0.1")),
            node("n2", Some("10.0.0.2")),
            node("n3", Some("10.0.0.3")),
        ];
        let reg = PeerList::default();
        let start = decide(&inputs(&me, &nodes, &reg));
        assert_eq!(
            start,
            Start::Run {
                peers: vec!["10.0.0.2".into(), "10.0.0.3".into()],
                ipalloc_init: "consensus=3".into(),
                fresh_state: false,
            }
        );
        // Alone: a quorum of one.
        let alone = [node("n1", Some("10.0.0.1"))];
        assert!(matches!(
            decide(&inputs(&me, &alone, &reg)),
            Start::Run { ipalloc_init, .. } if ipalloc_init == "consensus=1"
        ));
    }

    #[test]
    fn partial_node_list_does_not_shrink_the_quorum() {
        // Five peers registered and running; this node's LIST shows only
        // itself and one other (#3908): the quorum stays at six.
        let me = me();
        let nodes = [
            node("n1", Some("10.0.0.1")),
            node("n2", Some("10.0.0.2")),
            node("n3", None),
            node("n4", None),
            node("n5", None),
            node("n6", None),
        ];
        let reg = PeerList {
            peers: (2..=6)
                .map(|i| entry(&format!("aa:00:00:00:00:0{i}"), &format!("n{i}"), None))
                .collect(),
        };
        assert!(matches!(
            decide(&inputs(&me, &nodes, &reg)),
            Start::Run { ipalloc_init, peers, .. }
                if ipalloc_init == "consensus=6" && peers == ["10.0.0.2"]
        ));
    }

    #[test]
    fn waits_while_no_registered_peer_is_reachable() {
        let me = me();
        let nodes = [
            node("n1", Some("10.0.0.1")),
            node("n2", None),
            node("n7", Some("10.0.0.7")),
        ];
        let reg = PeerList {
            peers: vec![entry("aa:00:00:00:00:02", "n2", Some("u2"))],
        };
        let Start::Wait { reason } = decide(&inputs(&me, &nodes, &reg)) else {
            panic!("must wait");
        };
        assert!(reason.contains("n2"), "{reason}");
        // A registered peer whose Node is gone (or was recreated: other
        // UID) is reclaim's business, not a ring to join.
        let reg = PeerList {
            peers: vec![
                entry("aa:00:00:00:00:02", "n2", Some("u-old")),
                entry("aa:00:00:00:00:09", "n9", None),
            ],
        };
        assert!(matches!(
            decide(&inputs(&me, &nodes, &reg)),
            Start::Run { ipalloc_init, .. } if ipalloc_init == "consensus=2"
        ));
    }

    #[test]
    fn reclaimed_peer_starts_fresh() {
        let me = me();
        let nodes = [node("n1", Some("10.0.0.1")), node("n2", Some("10.0.0.2"))];
        let reg = PeerList {
            peers: vec![entry("aa:00:00:00:00:02", "n2", None)],
        };
        let mut i = inputs(&me, &nodes, &reg);
        i.have_data = true;
        i.registered_before = true;
        assert!(matches!(
            decide(&i),
            Start::Run {
                fresh_state: true,
                ..
            }
        ));
        // Data from before any registration (or a first start) is kept.
        i.registered_before = false;
        assert!(matches!(
            decide(&i),
            Start::Run {
                fresh_state: false,
                ..
            }
        ));
        // Still listed: kept.
        let reg = PeerList {
            peers: vec![entry(&me.peer, "n1", None)],
        };
        let mut i = inputs(&me, &nodes, &reg);
        i.have_data = true;
        i.registered_before = true;
        assert!(matches!(
            decide(&i),
            Start::Run {
                fresh_state: false,
                ..
            }
        ));
    }

    #[test]
    fn configured_values_win() {
        let me = me();
        let nodes = [node("n1", Some("10.0.0.1")), node("n2", None)];
        let reg = PeerList {
            peers: vec![entry("aa:00:00:00:00:02", "n2", None)],
        };
        let peers = vec!["192.168.1.1".to_string()];
        let mut i = inputs(&me, &nodes, &reg);
        i.configured_peers = Some(&peers);
        i.configured_init = Some("observer");
        assert_eq!(
            decide(&i),
            Start::Run {
                peers,
                ipalloc_init: "observer".into(),
                fresh_state: false
            }
        );
    }
}
