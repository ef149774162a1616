//! What the agent takes from Node objects: each Node's name, UID and the
//! address its router is reached at, chosen as Weave 2.8.1's kube-peers
//! chose it (the first IPv4 `InternalIP`, else the first IPv4
//! `ExternalIP`), and the list of peers to connect to (every other Node).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

/// One Node as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid` (absent only in hand-made objects).
    pub uid: Option<String>,
    /// The router's address on it, if it has a usable one yet.
    pub addr: Option<Ipv4Addr>,
}

/// Reads a Node; `None` for an object without a name.
pub fn node_info(node: &Node) -> Option<NodeInfo> {
    let name = node.metadata.name.clone()?;
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let first = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a.type_ == kind)
            .find_map(|a| a.address.trim().parse::<Ipv4Addr>().ok())
    };
    Some(NodeInfo {
        name,
        uid: node.metadata.uid.clone(),
        addr: first("InternalIP").or_else(|| first("ExternalIP")),
    })
}

/// The peers of the router on Node `me`: the addresses of every other Node
/// that has one, skipping any address that is this host's own (`local`),
/// sorted and without duplicates.
pub fn peer_addresses(nodes: &[NodeInfo], me: &str, local: &BTreeSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = nodes
        .iter()
        .filter(|n| n.name != me)
        .filter_map(|n| n.addr)
        .filter(|a| !local.contains(a))
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, addrs: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: (*t).into(),
                            address: (*a).into(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn internal_ipv4_first_then_external() {
        let n = node(
            "a",
            &[
                ("Hostname", "a"),
                ("ExternalIP", "203.0.113.5"),
                ("InternalIP", "fd00::5"),
                ("InternalIP", "10.0.0.5"),
                ("InternalIP", "10.0.0.6"),
            ],
        );
        assert_eq!(
            node_info(&n).unwrap().addr,
            Some("10.0.0.5".parse().unwrap())
        );
        let n = node(
            "b",
            &[("InternalIP", "fd00::5"), ("ExternalIP", "203.0.113.5")],
        );
        assert_eq!(
            node_info(&n).unwrap().addr,
            Some("203.0.113.5".parse().unwrap())
        );
        let n = node("c", &[("Hostname", "c"), ("InternalIP", "not-an-ip")]);
        let info = node_info(&n).unwrap();
        assert_eq!((info.addr, info.uid.as_deref()), (None, Some("uid-c")));
        assert!(node_info(&Node::default()).is_none());
    }

    #[test]
    fn peers_skip_me_and_my_addresses() {
        let nodes: Vec<NodeInfo> = [
            node("a", &[("InternalIP", "10.0.0.1")]),
            node("b", &[("InternalIP", "10.0.0.2")]),
            node("c", &[("InternalIP", "10.0.0.3")]),
            node("d", &[]),
            node("e", &[("InternalIP", "10.0.0.2")]),
        ]
        .iter()
        .filter_map(node_info)
        .collect();
        let local = BTreeSet::from(["10.0.0.3".parse().unwrap()]);
        let peers = peer_addresses(&nodes, "a", &local);
        assert_eq!(peers, ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
    }
}
