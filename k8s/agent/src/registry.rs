//! The peer registry Weave Net 2.8.1 keeps in the annotations of the
//! ConfigMap `kube-system/weave-net`, with its exact keys and JSON, so that
//! weave-rs agents and Weave 2.8.1 agents share one registry and one lock
//! protocol during a rolling update.
//!
//! - `kube-peers.weave.works/peers` holds `{"Peers":[{"PeerName":…,
//!   "NodeName":…}]}`: every peer that registered, with its Node.
//! - `kube-peers.weave.works/<peer>` (the peer name with every character
//!   outside `[A-Za-z0-9._-]` made `_`, as Weave cleans keys) is the lock
//!   on reclaiming that peer; its value is the reclaiming peer's name.
//!
//! weave-rs adds `NodeUID` to each entry: the UID of the Node object the
//! peer ran on, so a Node deleted and recreated under the same name is
//! told apart. Weave 2.8.1 decodes with Go's `encoding/json`, which ignores
//! fields it does not know, so it still reads the list; when it rewrites
//! the list it drops them, and an entry without `NodeUID` is judged by
//! its Node name alone, as Weave does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The registry ConfigMap's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The registry ConfigMap's name.
pub const NAME: &str = "weave-net";
/// The prefix of every annotation key of the registry.
pub const PREFIX: &str = "kube-peers.weave.works/";
/// The annotation holding the peer list.
pub const PEERS_KEY: &str = "kube-peers.weave.works/peers";

/// A registry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The peer list annotation is not the JSON Weave writes.
    #[error("annotation {PEERS_KEY} of {NAMESPACE}/{NAME} is not a peer list: {0}")]
    BadPeerList(String),
}

/// One registered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The router's peer name (a MAC-like string).
    #[serde(rename = "PeerName", alias = "peerName", alias = "peername")]
    pub peer_name: String,
    /// The Kubernetes Node it runs on.
    #[serde(rename = "NodeName", alias = "nodeName", alias = "nodename", default)]
    pub node_name: String,
    /// The UID of that Node object, when a weave-rs agent wrote the entry
    /// (Weave 2.8.1 neither writes nor keeps it).
    #[serde(
        rename = "NodeUID",
        alias = "nodeUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_uid: Option<String>,
}

/// The peer list, as JSON `{"Peers":[…]}` (Go writes `null` for none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The entries, in registration order.
    #[serde(
        rename = "Peers",
        alias = "peers",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub peers: Vec<PeerEntry>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PeerEntry>, D::Error> {
    Ok(Option::<Vec<PeerEntry>>::deserialize(d)?.unwrap_or_default())
}

impl PeerList {
    /// Whether `peer` is listed.
    pub fn contains(&self, peer: &str) -> bool {
        self.peers.iter().any(|p| p.peer_name == peer)
    }

    /// The entry of `peer`.
    pub fn get(&self, peer: &str) -> Option<&PeerEntry> {
        self.peers.iter().find(|p| p.peer_name == peer)
    }

    /// Removes every entry of `peer`; whether there was one.
    pub fn remove(&mut self, peer: &str) -> bool {
        let before = self.peers.len();
        self.peers.retain(|p| p.peer_name != peer);
        self.peers.len() != before
    }
}

/// The lock annotation key on reclaiming `peer`, as Weave's `cleanKey`
/// makes it.
pub fn lock_key(peer: &str) -> String {
    let clean: String = peer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{PREFIX}{clean}")
}

/// One read of the registry ConfigMap: what the protocol works on. Writes
/// go back with `resource_version`, so a concurrent change makes them fail
/// with 409 Conflict instead of being lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// The ConfigMap's `metadata.resourceVersion` (None: it does not exist
    /// yet and is to be created).
    pub resource_version: Option<String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Registry {
    /// The peer list (empty when the annotation is absent).
    pub fn peers(&self) -> Result<PeerList, RegistryError> {
        match self.annotations.get(PEERS_KEY) {
            None => Ok(PeerList::default()),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| RegistryError::BadPeerList(e.to_string()))
            }
        }
    }

    /// Replaces the peer list.
    pub fn set_peers(&mut self, list: &PeerList) {
        let text = serde_json::to_string(list).unwrap_or_else(|_| r#"{"Peers":null}"#.into());
        self.annotations.insert(PEERS_KEY.to_string(), text);
    }

    /// Who holds the lock on reclaiming `victim`.
    pub fn lock_holder(&self, victim: &str) -> Option<&str> {
        self.annotations.get(&lock_key(victim)).map(String::as_str)
    }

    /// Takes the lock on reclaiming `victim` for `me`.
    pub fn set_lock(&mut self, victim: &str, me: &str) {
        self.annotations.insert(lock_key(victim), me.to_string());
    }

    /// Forgets `victim` entirely: its entry, the lock on it, and every lock
    /// it held (Weave's steps 7aa, 7a and 7b in one write).
    pub fn forget(&mut self, victim: &str) -> Result<(), RegistryError> {
        let mut list = self.peers()?;
        list.remove(victim);
        self.annotations
            .retain(|key, value| !(key.starts_with(PREFIX) && key != PEERS_KEY && value == victim));
        self.annotations.remove(&lock_key(victim));
        self.set_peers(&list);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_weave_writes() {
        let mut reg = Registry::default();
        reg.annotations.insert(
            PEERS_KEY.into(),
            r#"{"Peers":[{"PeerName":"aa:bb:cc:dd:ee:01","NodeName":"node-1"}]}"#.into(),
        );
        let list = reg.peers().unwrap();
        assert_eq!(list.peers[0].peer_name, "aa:bb:cc:dd:ee:01");
        assert_eq!(list.peers[0].node_name, "node-1");
        assert_eq!(list.peers[0].node_uid, None);
        // Go marshals an empty list as null.
        reg.annotations
            .insert(PEERS_KEY.into(), r#"{"Peers":null}"#.into());
        assert!(reg.peers().unwrap().peers.is_empty());
        reg.annotations.insert(PEERS_KEY.into(), "{}".into());
        assert!(reg.peers().unwrap().peers.is_empty());
        reg.annotations.insert(PEERS_KEY.into(), "[1,2]".into());
        assert!(matches!(reg.peers(), Err(RegistryError::BadPeerList(_))));
    }

    #[test]
    fn writes_what_weave_reads() {
        let mut reg = Registry::default();
        let list = PeerList {
            peers: vec![
                PeerEntry {
                    peer_name: "aa:bb:cc:dd:ee:01".into(),
                    node_name: "node-1".into(),
                    node_uid: Some("uid-1".into()),
                },
                PeerEntry {
                    peer_name: "aa:bb:cc:dd:ee:02".into(),
                    node_name: "node-2".into(),
                    node_uid: None,
                },
            ],
        };
        reg.set_peers(&list);
        // Key names and order as Go's encoding/json writes peerInfo; the
        // extra NodeUID is a field Go's decoder skips.
        assert_eq!(
            reg.annotations[PEERS_KEY],
            r#"{"Peers":[{"PeerName":"aa:bb:cc:dd:ee:01","NodeName":"node-1","NodeUID":"uid-1"},{"PeerName":"aa:bb:cc:dd:ee:02","NodeName":"node-2"}]}"#
        );
        assert_eq!(reg.peers().unwrap(), list);
    }

    #[test]
    fn locks_use_weaves_clean_keys() {
        assert_eq!(
            lock_key("aa:bb:cc:dd:ee:01"),
            "kube-peers.weave.works/aa_bb_cc_dd_ee_01"
        );
        let mut reg = Registry::default();
        let list = PeerList {
            peers: vec![
                PeerEntry {
                    peer_name: "v".into(),
                    node_name: "n1".into(),
                    node_uid: None,
                },
                PeerEntry {
                    peer_name: "w".into(),
                    node_name: "n2".into(),
                    node_uid: None,
                },
            ],
        };
        reg.set_peers(&list);
        reg.set_lock("v", "me");
        reg.set_lock("x", "v"); // a lock v held
        reg.annotations.insert("other/key".into(), "v".into());
        assert_eq!(reg.lock_holder("v"), Some("me"));
        reg.forget("v").unwrap();
        assert_eq!(reg.lock_holder("v"), None);
        assert_eq!(reg.lock_holder("x"), None);
        assert_eq!(reg.annotations["other/key"], "v", "not ours: left alone");
        let left = reg.peers().unwrap();
        assert!(!left.contains("v") && left.contains("w"));
    }
}
