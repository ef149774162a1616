//! Specific IPAM behaviours, driven through the in-process network.

mod ipam_support;

use std::time::Duration;

use ipam_support::{Life, Req, Sim, name};
use weave_router::ipam::{
    Address, Allocator, Cidr, Config, InitMode, Input, OpError, OpId, Output, PendingReason,
    Persisted, Reply, UpdateError,
};

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn addr(s: &str) -> Address {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn consensus(n: usize, count: u32) -> Vec<InitMode> {
    vec![
        InitMode::Consensus {
            peer_count: Some(count)
        };
        n
    ]
}

fn alloc(sim: &Sim, i: usize) -> &Allocator {
    sim.nodes[i]
        .alloc
        .as_ref()
        .unwrap_or_else(|| panic!("peer {i} not running"))
}

fn held_by(sim: &Sim, ident: &str) -> Option<Address> {
    sim.holders
        .iter()
        .find(|(_, (_, w))| w == ident)
        .map(|(a, _)| *a)
}

#[test]
fn allocation_waits_for_consensus_and_status_says_why() {
    let mut sim = Sim::new(1, cidr("10.32.0.0/24"), consensus(3, 3), 2);
    sim.partition(1); // one partition: everyone together ...
    for i in 0..3 {
        sim.part[i] = i as u32; // ... then each peer alone.
    }
    sim.peers_changed();
    let c = sim.allocate(0, cidr("10.32.0.0/24"));
    sim.drain();
    assert_eq!(held_by(&sim, &c), None);
    let st = alloc(&sim, 0).status();
    assert_eq!(st.pending_allocates.len(), 1);
    assert_eq!(
        st.pending_allocates[0].reason,
        PendingReason::AwaitingConsensus {
            known_nodes: 1,
            quorum: 2
        }
    );
    assert!(st.paxos.is_some_and(|p| p.elector && p.quorum == 2));
    assert!(
        st.pending_allocates[0]
            .reason
            .to_string()
            .contains("awaiting consensus")
    );
    assert_eq!(alloc(&sim, 0).metrics().pending_allocates, 1);
    assert_eq!(st.status_line(), "awaiting consensus (quorum: 2, known: 1)");

    sim.heal();
    sim.tick();
    sim.drain();
    let a = held_by(&sim, &c).unwrap_or_else(|| panic!("not allocated after heal"));
    assert!(cidr("10.32.0.0/24").host_range().contains(a));
    assert!(sim.settle(10));
    let ring = alloc(&sim, 1).ring();
    assert!(ring.seeds.len() >= 2, "{:?}", ring.seeds);
    let st = alloc(&sim, 0).status();
    assert!(st.paxos.is_none());
    assert_eq!(st.status_line(), "ready");
    let text = st.ranges_text();
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("00:00:00:00:00:01(host1)"), "{text}");
    assert!(first.ends_with("(1 active)"), "{text}");
    assert!(text.contains("% of total)"), "{text}");
    assert_eq!(
        text.lines().count(),
        st.entries
            .iter()
            .map(|e| e.peer)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}

#[test]
fn quorum_of_one_allocates_at_once() {
    let mut sim = Sim::new(2, cidr("10.32.0.0/24"), consensus(1, 1), 0);
    let c = sim.allocate(0, cidr("10.32.0.0/24"));
    assert_eq!(held_by(&sim, &c), Some(addr("10.32.0.1")));
    let a = alloc(&sim, 0);
    assert_eq!(a.ring().seeds, vec![name(0)]);
    assert_eq!(a.cidr_view(), vec![cidr("10.32.0.0/24")]);
    assert_eq!(a.metrics().ips, 1);
    assert_eq!(a.metrics().max_ips, 256);
}

#[test]
fn space_is_requested_and_donated_when_short() {
    // Peer 0 seeds the whole ring; peer 1 has nothing and must ask.
    let modes = vec![InitMode::Seed(vec![name(0)]); 2];
    let mut sim = Sim::new(3, cidr("10.32.0.0/24"), modes, 1);
    let c = sim.allocate(1, cidr("10.32.0.0/24"));
    assert_eq!(held_by(&sim, &c), None);
    sim.drain();
    let a = held_by(&sim, &c).unwrap_or_else(|| panic!("no donation"));
    let ring = alloc(&sim, 0).ring();
    assert_eq!(ring.owner(a), Some(name(1)));
    // The donation is CIDR-aligned: the biggest block of the requested
    // host range [.1, .255), which is half of its free space or less.
    assert_eq!(alloc(&sim, 1).cidr_view(), vec![cidr("10.32.0.128/26")]);
    assert!(sim.settle(5));
}

#[test]
fn claim_of_address_owned_by_another_peer_is_transferred() {
    let modes = vec![InitMode::Seed(vec![name(0), name(1)]); 2];
    let mut sim = Sim::new(4, cidr("10.32.0.0/24"), modes, 1);
    // Peer 1 owns 10.32.0.128/25.
    assert_eq!(
        alloc(&sim, 0).ring().owner(addr("10.32.0.200")),
        Some(name(1))
    );
    let c = sim.claim(0, addr("10.32.0.200"));
    sim.drain();
    assert_eq!(held_by(&sim, &c), Some(addr("10.32.0.200")));
    assert_eq!(
        alloc(&sim, 1).ring().owner(addr("10.32.0.200")),
        Some(name(0))
    );

    // An address the other peer has given out is refused.
    let other = sim.allocate(1, cidr("10.32.0.0/24"));
    let taken = held_by(&sim, &other).unwrap_or_else(|| panic!("no address"));
    let ident = sim.new_container();
    let id2 = ident.clone();
    let op = OpId(9_999);
    sim.pending.insert((0, op), Req::Claim(ident, taken));
    let outs = {
        let now = sim.now;
        let a = sim.nodes[0]
            .alloc
            .as_mut()
            .unwrap_or_else(|| panic!("down"));
        a.handle(
            now,
            Input::Claim {
                op,
                ident: id2,
                cidr: Cidr {
                    addr: taken,
                    prefix_len: 24,
                },
                is_container: true,
                no_error_on_unknown: false,
            },
        )
    };
    // It asks the owner; deliver the request and the denial by hand.
    assert!(outs.iter().any(|o| matches!(o, Output::Unicast { .. })));
    let mut replies = Vec::new();
    for o in outs {
        if let Output::Unicast { msg, .. } = o {
            let now = sim.now;
            let owner = sim.nodes[1]
                .alloc
                .as_mut()
                .unwrap_or_else(|| panic!("down"));
            for o2 in owner.handle(
                now,
                Input::Unicast {
                    sender: name(0),
                    msg,
                },
            ) {
                if let Output::Unicast { msg, .. } = o2 {
                    let a = sim.nodes[0]
                        .alloc
                        .as_mut()
                        .unwrap_or_else(|| panic!("down"));
                    replies.extend(a.handle(
                        now,
                        Input::Unicast {
                            sender: name(1),
                            msg,
                        },
                    ));
                }
            }
        }
    }
    let refused = replies.iter().find_map(|o| match o {
        Output::Reply { op: got, result } if *got == op => Some(result.clone()),
        _ => None,
    });
    match refused {
        Some(Err(e @ OpError::OwnedByOtherPeer { .. })) => {
            assert!(e.to_string().contains("(host2)"), "{e}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn rmpeer_gives_a_dead_peers_space_to_the_caller() {
    let modes = vec![InitMode::Seed(vec![name(0), name(1), name(2)]); 3];
    let mut sim = Sim::new(5, cidr("10.32.0.0/24"), modes, 2);
    let dead_range = alloc(&sim, 0).ring().owned_ranges_of(name(2));
    let size: u32 = dead_range.iter().map(|r| r.size()).sum();
    assert_eq!(size, 64);
    sim.drain(); // nicknames travel with gossip
    sim.stop(2, true);
    let op = OpId(77);
    sim.pending.insert((0, op), Req::Takeover);
    let now = sim.now;
    let outs = sim.nodes[0]
        .alloc
        .as_mut()
        .unwrap_or_else(|| panic!("down"))
        .handle(
            now,
            Input::AdminTakeover {
                op,
                peer: "host3".into(),
            },
        );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Reply { result: Ok(Reply::TakenOver(n)), .. } if *n == u64::from(size)
    )));
    assert!(outs.iter().any(|o| matches!(o, Output::Broadcast(_))));
    assert!(alloc(&sim, 0).ring().owned_ranges_of(name(2)).is_empty());
    // Unknown names are refused.
    let now = sim.now;
    let outs = sim.nodes[0]
        .alloc
        .as_mut()
        .unwrap_or_else(|| panic!("down"))
        .handle(
            now,
            Input::AdminTakeover {
                op: OpId(78),
                peer: "nobody".into(),
            },
        );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Reply {
            result: Err(OpError::UnknownPeer(_)),
            ..
        }
    )));
}

#[test]
fn restart_keeps_every_containers_address() {
    let mut sim = Sim::new(6, cidr("10.32.0.0/24"), consensus(3, 3), 2);
    let cs: Vec<String> = (0..5)
        .map(|_| sim.allocate(1, cidr("10.32.0.0/24")))
        .collect();
    sim.drain();
    sim.tick();
    sim.drain();
    let before: Vec<Option<Address>> = cs.iter().map(|c| held_by(&sim, c)).collect();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    sim.stop(1, false);
    assert_eq!(sim.nodes[1].life, Life::Stopped);
    sim.start(1);
    sim.peers_changed();
    let range = cidr("10.32.0.0/24").range();
    for (c, a) in cs.iter().zip(&before) {
        let got = alloc(&sim, 1).lookup(c, range);
        assert_eq!(got.first().map(|x| x.addr), *a);
    }
    // Allocating again for the same container returns its address.
    let again = sim.allocate(1, cidr("10.32.0.0/24"));
    assert!(held_by(&sim, &again).is_some());
    assert!(sim.settle(10));
    sim.check_no_duplicates();
}

#[test]
fn rings_seeded_differently_are_refused_with_advice() {
    let mk = |me: u64, seed: u64| {
        let cfg = Config {
            our_name: weave_router::ipam::PeerName(me),
            our_uid: me,
            our_nickname: format!("n{me}"),
            universe: cidr("10.32.0.0/24"),
            mode: InitMode::Seed(vec![weave_router::ipam::PeerName(seed)]),
            target_count: 1,
            pre_claims: vec![],
            rng_seed: 0,
        };
        Allocator::new(cfg, Persisted::default(), Duration::ZERO)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    };
    let mut a = mk(1, 1);
    let b = mk(2, 2);
    let outs = a.handle(
        Duration::ZERO,
        Input::GossipBroadcast {
            sender: weave_router::ipam::PeerName(2),
            state: b.gossip_state(),
        },
    );
    let err = outs.iter().find_map(|o| match o {
        Output::GossipRejected { error, .. } => Some(error.clone()),
        _ => None,
    });
    match err {
        Some(e @ UpdateError::Merge(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("seeded by different peers"), "{msg}");
            assert!(msg.contains("delete its persisted IPAM data"), "{msg}");
        }
        None => panic!("not rejected"),
    }
    // A different range is refused too.
    let cfg = Config {
        our_name: weave_router::ipam::PeerName(3),
        our_uid: 3,
        our_nickname: "n3".into(),
        universe: cidr("10.40.0.0/24"),
        mode: InitMode::Seed(vec![weave_router::ipam::PeerName(1)]),
        target_count: 1,
        pre_claims: vec![],
        rng_seed: 0,
    };
    let (mut c, _) =
        Allocator::new(cfg, Persisted::default(), Duration::ZERO).unwrap_or_else(|e| panic!("{e}"));
    let outs = c.handle(
        Duration::ZERO,
        Input::GossipPeriodic {
            state: a.gossip_state(),
        },
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::GossipRejected { error, .. }
        if error.to_string().contains("--ipalloc-range")))
    );
}

#[test]
fn observer_gets_the_ring_from_electors() {
    let modes = vec![
        InitMode::Consensus {
            peer_count: Some(2),
        },
        InitMode::Consensus {
            peer_count: Some(2),
        },
        InitMode::Observer,
    ];
    let mut sim = Sim::new(7, cidr("10.32.0.0/24"), modes, 2);
    let c = sim.allocate(2, cidr("10.32.0.0/24"));
    assert_eq!(
        alloc(&sim, 2).status().pending_allocates[0].reason,
        PendingReason::AwaitingRingAsObserver
    );
    for _ in 0..5 {
        sim.drain();
        sim.tick();
    }
    sim.drain();
    assert!(held_by(&sim, &c).is_some());
    let seeds = &alloc(&sim, 2).ring().seeds;
    assert!(
        !seeds.contains(&name(2)),
        "observer must not be a seed: {seeds:?}"
    );
}

#[test]
fn reset_hands_ranges_to_a_living_peer() {
    let modes = vec![InitMode::Seed(vec![name(0), name(1)]); 2];
    let mut sim = Sim::new(8, cidr("10.32.0.0/24"), modes, 1);
    sim.reset(1);
    sim.drain();
    let ring = alloc(&sim, 0).ring();
    assert!(ring.owned_ranges_of(name(1)).is_empty());
    assert_eq!(alloc(&sim, 0).cidr_view(), vec![cidr("10.32.0.0/24")]);
}

#[test]
fn dead_container_addresses_are_released_after_timeout() {
    let mut sim = Sim::new(9, cidr("10.32.0.0/24"), consensus(1, 1), 0);
    let c = sim.allocate(0, cidr("10.32.0.0/24"));
    assert!(held_by(&sim, &c).is_some());
    sim.input(0, Input::ContainerDied { ident: c.clone() });
    for _ in 0..5 {
        sim.tick();
    }
    assert!(alloc(&sim, 0).owned().contains_key(&c));
    for _ in 0..3 {
        sim.tick();
    }
    assert!(!alloc(&sim, 0).owned().contains_key(&c));
    assert_eq!(alloc(&sim, 0).metrics().ips, 0);
}

#[test]
fn restart_during_consensus_keeps_the_paxos_identity() {
    // Peer 0 proposes while alone, restarts, and must come back as the same
    // acceptor (same node id, same promise), not as a fresh voter.
    let mut sim = Sim::new(10, cidr("10.32.0.0/24"), consensus(3, 3), 2);
    for i in 0..3 {
        sim.part[i] = i as u32;
    }
    sim.peers_changed();
    sim.allocate(0, cidr("10.32.0.0/24"));
    let before = alloc(&sim, 0)
        .gossip_state()
        .paxos
        .unwrap_or_else(|| panic!("no paxos state"));
    assert_eq!(before.len(), 1);
    sim.stop(0, false);
    sim.start(0);
    sim.peers_changed();
    let after = alloc(&sim, 0)
        .gossip_state()
        .paxos
        .unwrap_or_else(|| panic!("no paxos state"));
    assert_eq!(before, after);
    // A new proposal after the restart uses the old identity.
    sim.allocate(0, cidr("10.32.0.0/24"));
    let again = alloc(&sim, 0).gossip_state().paxos.unwrap_or_default();
    assert_eq!(again.len(), 1);
    assert_eq!(again.keys().next(), before.keys().next());
    // Healing still reaches one ring.
    assert!(sim.settle(10));
}
