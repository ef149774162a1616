//! The reclaim machine against an in-process registry that is strict as
//! the API server is: every write carries the resourceVersion it read and
//! fails with 409 Conflict when the ConfigMap moved on.

use std::collections::BTreeMap;

use rand::SeedableRng;

use super::*;
use crate::registry::{PEERS_KEY, PeerList, lock_key};

/// The cluster: the ConfigMap, the Nodes, and every rmpeer any agent ran.
#[derive(Debug, Default)]
struct Cluster {
    configmap: Option<(u64, BTreeMap<String, String>)>,
    nodes: Vec<NodeInfo>,
    rmpeers: Vec<(String, String)>,
    /// Calls to fail before answering (to test backoff).
    fail_next: u32,
    /// Random faults: (generator, percent of calls that fail).
    chaos: Option<(StdRng, u32)>,
}

impl Cluster {
    fn with_nodes(names: &[&str]) -> Cluster {
        Cluster {
            nodes: names.iter().map(|n| node(n)).collect(),
            ..Cluster::default()
        }
    }

    fn registry(&self) -> Registry {
        match &self.configmap {
            None => Registry::default(),
            Some((rv, annotations)) => Registry {
                resource_version: Some(rv.to_string()),
                annotations: annotations.clone(),
            },
        }
    }

    fn peers(&self) -> PeerList {
        self.registry().peers().unwrap()
    }

    fn seed(&mut self, entries: &[(&str, &str, Option<&str>)]) {
        let mut reg = self.registry();
        reg.set_peers(&PeerList {
            peers: entries
                .iter()
                .map(|(p, n, u)| PeerEntry {
                    peer_name: (*p).into(),
                    node_name: (*n).into(),
                    node_uid: u.map(str::to_string),
                })
                .collect(),
        });
        let rv = self.configmap.as_ref().map_or(1, |(rv, _)| rv + 1);
        self.configmap = Some((rv, reg.annotations));
    }

    fn write(&mut self, reg: Registry) -> Result<Registry, ApiError> {
        let current = self.configmap.as_ref().map(|(rv, _)| rv.to_string());
        if reg.resource_version != current {
            return Err(ApiError::Conflict);
        }
        let rv = self.configmap.as_ref().map_or(1, |(rv, _)| rv + 1);
        self.configmap = Some((rv, reg.annotations));
        Ok(self.registry())
    }

    /// Performs `request` for agent `who`.
    fn serve(&mut self, who: &str, request: &Request) -> Input {
        if self.fail_next > 0 && !matches!(request, Request::Sleep(_)) {
            self.fail_next -= 1;
            let error = ApiError::Other("503 Service Unavailable".into());
            return match request {
                Request::ReadRegistry => Input::Registry(Err(error)),
                Request::ListNodes => Input::Nodes(Err(error)),
                Request::WriteRegistry(_) => Input::Written(Err(error)),
                Request::RmPeer(_) => Input::RmPeer(Err("connection refused".into())),
                _ => Input::Woke,
            };
        }
        if let Some((rng, percent)) = self.chaos.as_mut() {
            let roll = rng.gen_range(0..100);
            if roll < *percent {
                let lost_reply = rng.gen_bool(0.5);
                let error = ApiError::Other("timeout".into());
                return match request {
                    Request::ReadRegistry => Input::Registry(Err(error)),
                    Request::ListNodes => Input::Nodes(Err(error)),
                    // Half the failed writes were applied, only the answer
                    // was lost: the writer cannot tell.
                    Request::WriteRegistry(reg) => {
                        if lost_reply {
                            let _ = self.write(reg.clone());
                        }
                        Input::Written(Err(error))
                    }
                    Request::RmPeer(_) => Input::RmPeer(Err("connection refused".into())),
                    _ => Input::Woke,
                };
            }
            if roll < *percent * 2 && matches!(request, Request::WriteRegistry(_)) {
                // A 409 although the version matched (another writer in
                // between, as the real server can answer).
                return Input::Written(Err(ApiError::Conflict));
            }
        }
        match request {
            Request::ReadRegistry => Input::Registry(Ok(self.registry())),
            Request::ListNodes => Input::Nodes(Ok(self.nodes.clone())),
            Request::WriteRegistry(reg) => Input::Written(self.write(reg.clone())),
            Request::RmPeer(victim) => {
                self.rmpeers.push((who.to_string(), victim.clone()));
                Input::RmPeer(Ok(format!("256 IPs taken over from {victim}\n")))
            }
            Request::Sleep(_) | Request::Done => Input::Woke,
        }
    }
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        addr: None,
    }
}

fn me(peer: &str, node: &str) -> Me {
    Me {
        peer: peer.into(),
        node: node.into(),
        node_uid: Some(format!("uid-{node}")),
    }
}

struct Agent {
    name: String,
    machine: Reclaim,
    pending: Request,
    notes: Vec<Note>,
}

impl Agent {
    fn new(peer: &str, node_name: &str, seed: u64) -> Agent {
        let mut machine = Reclaim::new(me(peer, node_name), true, StdRng::seed_from_u64(seed));
        let out = machine.start();
        Agent {
            name: peer.into(),
            machine,
            pending: out.request,
            notes: out.notes,
        }
    }

    fn feed(&mut self, input: Input) {
        let out = self.machine.step(input);
        self.pending = out.request;
        self.notes.extend(out.notes);
    }

    fn reclaimed(&self) -> Vec<String> {
        self.notes
            .iter()
            .filter_map(|n| match n {
                Note::Reclaimed { victim, .. } => Some(victim.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Runs `agents` to completion, interleaving their calls in an order
/// drawn from `seed`; each call is atomic, as one API request is.
fn run(cluster: &mut Cluster, agents: &mut [Agent], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..100_000 {
        let live: Vec<usize> = (0..agents.len())
            .filter(|&i| agents[i].pending != Request::Done)
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[rng.gen_range(0..live.len())];
        let request = agents[i].pending.clone();
        let input = cluster.serve(&agents[i].name.clone(), &request);
        agents[i].feed(input);
    }
    panic!("agents did not finish");
}

const A: &str = "aa:00:00:00:00:0a";
const B: &str = "aa:00:00:00:00:0b";
const C: &str = "aa:00:00:00:00:0c";
const X: &str = "aa:00:00:00:00:99";
const Y: &str = "aa:00:00:00:00:98";

#[test]
fn registers_and_reclaims_a_deleted_nodes_peer() {
    let mut cluster = Cluster::with_nodes(&["n1", "n2"]);
    cluster.seed(&[(B, "n2", None), (X, "gone", None)]);
    let mut agents = [Agent::new(A, "n1", 1)];
    run(&mut cluster, &mut agents, 1);
    assert_eq!(cluster.rmpeers, [(A.to_string(), X.to_string())]);
    let peers = cluster.peers();
    assert!(peers.contains(A) && peers.contains(B) && !peers.contains(X));
    assert_eq!(peers.get(A).unwrap().node_uid.as_deref(), Some("uid-n1"));
    let (_, annotations) = cluster.configmap.as_ref().unwrap();
    assert_eq!(
        annotations.len(),
        1,
        "only the peer list is left: {annotations:?}"
    );
    assert!(agents[0].notes.contains(&Note::Registered));
    assert_eq!(agents[0].reclaimed(), [X]);
}

#[test]
fn creates_the_registry_when_absent() {
    let mut cluster = Cluster::with_nodes(&["n1"]);
    let mut agents = [Agent::new(A, "n1", 2)];
    run(&mut cluster, &mut agents, 2);
    assert!(cluster.peers().contains(A));
    assert!(cluster.rmpeers.is_empty());
}

#[test]
fn racing_agents_never_reclaim_twice() {
    for seed in 0..400 {
        let mut cluster = Cluster::with_nodes(&["n1", "n2", "n3"]);
        cluster.seed(&[
            (A, "n1", Some("uid-n1")),
            (B, "n2", Some("uid-n2")),
            (C, "n3", None),
            (X, "n4", Some("uid-n4")),
            (Y, "n5", None),
        ]);
        let mut agents = [
            Agent::new(A, "n1", seed),
            Agent::new(B, "n2", seed + 1000),
            Agent::new(C, "n3", seed + 2000),
        ];
        run(&mut cluster, &mut agents, seed);
        let mut victims: Vec<&str> = cluster.rmpeers.iter().map(|(_, v)| v.as_str()).collect();
        victims.sort();
        assert_eq!(victims, [Y, X], "seed {seed}: {:?}", cluster.rmpeers);
        let peers = cluster.peers();
        assert_eq!(peers.peers.len(), 3, "seed {seed}: {peers:?}");
        let (_, annotations) = cluster.configmap.as_ref().unwrap();
        assert_eq!(
            annotations.len(),
            1,
            "seed {seed}: locks left {annotations:?}"
        );
    }
}

#[test]
fn node_recreated_under_the_same_name_is_told_apart_by_uid() {
    // X ran on n2 before n2 was deleted and recreated (new UID); B runs
    // on the new n2 now. A (on n1) reclaims X although "n2" exists.
    let mut cluster = Cluster::with_nodes(&["n1", "n2"]);
    cluster.seed(&[
        (A, "n1", Some("uid-n1")),
        (X, "n2", Some("uid-old")),
        (B, "n2", Some("uid-n2")),
    ]);
    let mut agents = [Agent::new(A, "n1", 3)];
    run(&mut cluster, &mut agents, 3);
    assert_eq!(cluster.rmpeers, [(A.to_string(), X.to_string())]);
    assert!(cluster.peers().contains(B));
}

#[test]
fn without_uids_only_the_node_itself_reclaims_its_old_peer() {
    // Weave's rule (#3394): entries under my Node name that are not me.
    let mut cluster = Cluster::with_nodes(&["n1", "n2"]);
    cluster.seed(&[(A, "n1", None), (X, "n2", None)]);
    let mut a = [Agent::new(A, "n1", 4)];
    run(&mut cluster, &mut a, 4);
    assert!(
        cluster.rmpeers.is_empty(),
        "n2 exists: X is not A's to judge"
    );
    let mut b = [Agent::new(B, "n2", 5)];
    run(&mut cluster, &mut b, 5);
    assert_eq!(cluster.rmpeers, [(B.to_string(), X.to_string())]);
}

#[test]
fn stale_lock_of_an_unlisted_peer_is_taken_over() {
    let mut cluster = Cluster::with_nodes(&["n1"]);
    cluster.seed(&[(A, "n1", None), (X, "n9", None)]);
    let mut reg = cluster.registry();
    reg.set_lock(X, "aa:00:00:00:00:77"); // a reclaimer that is gone
    cluster.write(reg).unwrap();
    let mut agents = [Agent::new(A, "n1", 6)];
    run(&mut cluster, &mut agents, 6);
    assert_eq!(cluster.rmpeers, [(A.to_string(), X.to_string())]);
    assert_eq!(cluster.registry().lock_holder(X), None);
}

#[test]
fn lock_of_a_live_peer_is_respected_then_freed_by_reclaiming_it() {
    // B locked X, then crashed; B's Node still exists, so A leaves X
    // alone (three quiet rounds). Once B's Node is deleted, A reclaims B,
    // which drops B's lock, and then X: each exactly once.
    let mut cluster = Cluster::with_nodes(&["n1", "n2"]);
    cluster.seed(&[(A, "n1", None), (B, "n2", None), (X, "n9", None)]);
    let mut reg = cluster.registry();
    reg.set_lock(X, B);
    cluster.write(reg).unwrap();
    let mut agents = [Agent::new(A, "n1", 7)];
    run(&mut cluster, &mut agents, 7);
    assert!(cluster.rmpeers.is_empty());
    assert!(agents[0].notes.contains(&Note::LockedByOther {
        victim: X.into(),
        holder: B.into()
    }));
    cluster.nodes.retain(|n| n.name != "n2");
    let mut agents = [Agent::new(A, "n1", 8)];
    run(&mut cluster, &mut agents, 8);
    let victims: Vec<&str> = cluster.rmpeers.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(victims.len(), 2);
    assert!(victims.contains(&B) && victims.contains(&X));
    assert_eq!(cluster.peers().peers.len(), 1);
}

#[test]
fn restart_mid_reclaim_finishes_with_its_own_lock() {
    let mut cluster = Cluster::with_nodes(&["n1"]);
    cluster.seed(&[(A, "n1", None), (X, "n9", None)]);
    let mut reg = cluster.registry();
    reg.set_lock(X, A);
    cluster.write(reg).unwrap();
    let mut agents = [Agent::new(A, "n1", 9)];
    run(&mut cluster, &mut agents, 9);
    assert_eq!(cluster.rmpeers, [(A.to_string(), X.to_string())]);
}

#[test]
fn a_node_list_without_me_reclaims_nothing() {
    let mut cluster = Cluster::with_nodes(&["n2"]);
    cluster.seed(&[(A, "n1", None), (B, "n2", None), (X, "n9", None)]);
    let mut agent = Agent::new(A, "n1", 10);
    for _ in 0..50 {
        let request = agent.pending.clone();
        let input = cluster.serve(A, &request);
        agent.feed(input);
    }
    assert!(cluster.rmpeers.is_empty());
    assert_ne!(
        agent.pending,
        Request::Done,
        "it keeps trying, never gives up"
    );
    assert!(
        agent
            .notes
            .iter()
            .any(|n| matches!(n, Note::Retrying { error, .. } if error.contains("does not show")))
    );
}

#[test]
fn failures_back_off_and_are_never_fatal() {
    let mut cluster = Cluster::with_nodes(&["n1"]);
    cluster.seed(&[(A, "n1", None), (X, "n9", None)]);
    cluster.fail_next = 6;
    let mut agents = [Agent::new(A, "n1", 11)];
    run(&mut cluster, &mut agents, 11);
    assert_eq!(cluster.rmpeers, [(A.to_string(), X.to_string())]);
    let waits: Vec<Duration> = agents[0]
        .notes
        .iter()
        .filter_map(|n| match n {
            Note::Retrying { after, .. } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 6);
    assert!(
        waits[0] >= BACKOFF_MIN && waits[5] >= BACKOFF_MIN * 32,
        "{waits:?}"
    );
    assert!(waits.iter().all(|w| *w <= BACKOFF_MAX * 3 / 2));
}

#[test]
fn keeps_a_registry_written_by_weave_readable_by_weave() {
    let mut cluster = Cluster::with_nodes(&["n1", "n2"]);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        PEERS_KEY.to_string(),
        format!(r#"{{"Peers":[{{"PeerName":"{B}","NodeName":"n2"}},{{"PeerName":"{X}","NodeName":"n3"}}]}}"#),
    );
    annotations.insert(lock_key(Y), B.to_string());
    cluster.configmap = Some((5, annotations));
    let mut agents = [Agent::new(A, "n1", 12)];
    run(&mut cluster, &mut agents, 12);
    let (_, annotations) = cluster.configmap.as_ref().unwrap();
    assert_eq!(
        annotations[PEERS_KEY],
        format!(
            r#"{{"Peers":[{{"PeerName":"{B}","NodeName":"n2"}},{{"PeerName":"{A}","NodeName":"n1","NodeUID":"uid-n1"}}]}}"#
        )
    );
    // The lock B holds on Y (not listed) is B's business.
    assert_eq!(annotations[&lock_key(Y)], B);
}

#[test]
fn an_unreadable_registry_stops_the_run_without_writing() {
    let mut cluster = Cluster::with_nodes(&["n1"]);
    let mut annotations = BTreeMap::new();
    annotations.insert(PEERS_KEY.to_string(), "not json".to_string());
    cluster.configmap = Some((1, annotations));
    let mut agents = [Agent::new(A, "n1", 13)];
    run(&mut cluster, &mut agents, 13);
    assert!(matches!(agents[0].notes.last(), Some(Note::Unreadable(_))));
    assert_eq!(cluster.configmap.as_ref().unwrap().0, 1);
}

#[test]
fn racing_agents_with_faults_reclaim_each_victim_by_one_agent() {
    for seed in 0..300 {
        let mut cluster = Cluster::with_nodes(&["n1", "n2", "n3", "n4"]);
        cluster.seed(&[
            (A, "n1", None),
            (B, "n2", Some("uid-n2")),
            (X, "n7", Some("uid-n7")),
            (Y, "n3", Some("uid-old")), // n3 recreated
            ("aa:00:00:00:00:97", "n8", None),
        ]);
        cluster.chaos = Some((StdRng::seed_from_u64(seed ^ 0x5eed), 15));
        let mut agents = [
            Agent::new(A, "n1", seed),
            Agent::new(B, "n2", seed + 7),
            Agent::new(C, "n3", seed + 13),
            Agent::new("aa:00:00:00:00:0d", "n4", seed + 17),
        ];
        run(&mut cluster, &mut agents, seed);
        let mut pairs: Vec<(String, String)> = cluster.rmpeers.clone();
        pairs.sort();
        pairs.dedup();
        let mut victims: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
        victims.sort();
        assert_eq!(
            victims,
            ["aa:00:00:00:00:97", Y, X],
            "seed {seed}: each victim by exactly one agent: {:?}",
            cluster.rmpeers
        );
        // Whatever failed, the registry ends consistent: the four agents
        // listed with their UIDs, no lock left.
        let peers = cluster.peers();
        assert_eq!(peers.peers.len(), 4, "seed {seed}: {peers:?}");
        assert!(
            peers.peers.iter().all(|p| p.node_uid.is_some()),
            "seed {seed}: {peers:?}"
        );
        let (_, annotations) = cluster.configmap.as_ref().unwrap();
        assert_eq!(annotations.len(), 1, "seed {seed}: {annotations:?}");
    }
}
