//! Benchmarks, not tests (ignored by default; run in release):
//!
//! ```text
//! cargo test --release -p weave-router --test ipam_bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use weave_router::ipam::{
    Address, Allocator, Cidr, Config, InitMode, Input, OpId, Output, PeerName, Persisted, SeededRng,
};

fn config(i: u64, n: u32, universe: Cidr) -> Config {
    Config {
        our_name: PeerName(i + 1),
        our_uid: i + 1,
        our_nickname: format!("h{i}"),
        universe,
        mode: InitMode::Consensus {
            peer_count: Some(n),
        },
        target_count: n.saturating_sub(1),
        pre_claims: Vec::new(),
        rng_seed: i,
    }
}

/// 1,000 peers start; one gets an allocation request. Each gossip round
/// every peer sends its state to three random peers (broadcasts are spread
/// the same way); a tick comes every ten rounds. Counts rounds until every
/// peer holds the same ring.
#[test]
#[ignore = "benchmark, not a test: run with --release -- --ignored --nocapture"]
fn bench_1000_peers_reach_one_ring() {
    let n = 1000usize;
    let universe = Cidr {
        addr: Address(0x0a20_0000),
        prefix_len: 12,
    };
    let started = Instant::now();
    let mut peers: Vec<Allocator> = (0..n)
        .map(|i| {
            Allocator::new(
                config(i as u64, n as u32, universe),
                Persisted::default(),
                Duration::ZERO,
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .0
        })
        .collect();
    let all: std::collections::BTreeSet<PeerName> =
        (0..n as u64).map(|i| PeerName(i + 1)).collect();
    for p in peers.iter_mut() {
        p.handle(Duration::ZERO, Input::PeersChanged { known: all.clone() });
    }
    let mut rng = SeededRng::new(1);
    let mut now = Duration::ZERO;
    let mut inbox: Vec<Vec<Input>> = vec![Vec::new(); n];
    let outs = peers[0].handle(
        now,
        Input::Allocate {
            op: OpId(1),
            ident: "first".into(),
            subnet: universe,
            is_container: true,
        },
    );
    let mut pending_outs = vec![(0usize, outs)];
    let mut rounds = 0;
    let mut messages = 0u64;
    loop {
        rounds += 1;
        now += Duration::from_millis(500);
        // Route outputs of the previous round.
        for (from, outs) in pending_outs.drain(..) {
            for o in outs {
                match o {
                    Output::Broadcast(state) => {
                        for _ in 0..3 {
                            let j = rng.below(n as u64) as usize;
                            inbox[j].push(Input::GossipBroadcast {
                                sender: PeerName(from as u64 + 1),
                                state: state.clone(),
                            });
                        }
                    }
                    Output::Unicast { to, msg } => {
                        let j = (to.0 - 1) as usize;
                        inbox[j].push(Input::Unicast {
                            sender: PeerName(from as u64 + 1),
                            msg,
                        });
                    }
                    _ => {}
                }
            }
        }
        for p in &peers {
            for _ in 0..3 {
                let j = rng.below(n as u64) as usize;
                inbox[j].push(Input::GossipPeriodic {
                    state: p.gossip_state(),
                });
            }
        }
        for i in 0..n {
            let mut outs = Vec::new();
            for input in std::mem::take(&mut inbox[i]) {
                messages += 1;
                outs.extend(peers[i].handle(now, input));
            }
            if rounds % 10 == 0 {
                outs.extend(peers[i].handle(now, Input::Tick));
            }
            pending_outs.push((i, outs));
        }
        let agree = peers[0].has_ring()
            && peers
                .windows(2)
                .all(|w| w[0].ring().same_contents(w[1].ring()));
        if agree || rounds >= 200 {
            eprintln!(
                "1000 peers: one agreed ring after {rounds} gossip rounds ({messages} messages, {:?}); \
                 agreed={agree}, seeds={}",
                started.elapsed(),
                peers[0].ring().seeds.len()
            );
            assert!(agree);
            break;
        }
    }
}

/// Allocations per second on one peer that owns the whole /12.
#[test]
#[ignore = "benchmark, not a test: run with --release -- --ignored --nocapture"]
fn bench_local_allocations_per_second() {
    let universe = Cidr {
        addr: Address(0x0a20_0000),
        prefix_len: 12,
    };
    let mut cfg = config(0, 1, universe);
    cfg.mode = InitMode::Consensus {
        peer_count: Some(1),
    };
    let (mut a, _) =
        Allocator::new(cfg, Persisted::default(), Duration::ZERO).unwrap_or_else(|e| panic!("{e}"));
    let count = 100_000u64;
    let start = Instant::now();
    for k in 0..count {
        let outs = a.handle(
            Duration::ZERO,
            Input::Allocate {
                op: OpId(k),
                ident: format!("c{k}"),
                subnet: universe,
                is_container: true,
            },
        );
        assert!(
            outs.iter()
                .any(|o| matches!(o, Output::Reply { result: Ok(_), .. }))
        );
    }
    let el = start.elapsed();
    eprintln!(
        "{count} local allocations in {el:?}: {:.0} per second",
        count as f64 / el.as_secs_f64()
    );
    let start = Instant::now();
    for k in 0..count {
        a.handle(
            Duration::ZERO,
            Input::Delete {
                op: OpId(k),
                ident: format!("c{k}"),
            },
        );
    }
    let el = start.elapsed();
    eprintln!(
        "{count} frees in {el:?}: {:.0} per second",
        count as f64 / el.as_secs_f64()
    );
}
