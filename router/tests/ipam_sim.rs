//! Seeded random schedules of 3–20 IPAM peers with allocations, frees,
//! claims, partitions, heals, restarts, rmpeer and reset. Every schedule
//! asserts that no address is ever held by two containers at once, and that
//! after healing every running peer holds the same ring.
//!
//! `IPAM_SIM_SCHEDULES` sets how many schedules run (default 200);
//! `IPAM_SIM_SEED` runs only that seed (to replay a failure).

mod ipam_support;

use ipam_support::{Life, Sim};
use weave_router::ipam::{Address, Cidr, InitMode, PeerName, SeededRng};

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Picks the cluster shape for a seed.
fn build(seed: u64) -> Sim {
    let mut rng = SeededRng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let n = 3 + rng.below(18) as usize;
    let prefix = 22 + rng.below(6) as u8;
    let base = 0x0a20_0000u32 + ((rng.below(16) as u32) << 10);
    let universe = Cidr {
        addr: Address(base & !((1u32 << (32 - prefix)) - 1)),
        prefix_len: prefix,
    };
    let kind = rng.below(20);
    let (modes, targets) = if kind < 3 {
        // seed=<some peers>
        let mut seeds: Vec<PeerName> = (0..n)
            .filter(|_| rng.below(3) == 0)
            .map(ipam_support::name)
            .collect();
        if seeds.is_empty() {
            seeds.push(ipam_support::name(0));
        }
        (vec![InitMode::Seed(seeds); n], n as u32 - 1)
    } else {
        let counted = kind >= 6;
        let observers = rng.below(3) as usize;
        let modes = (0..n)
            .map(|i| {
                if i >= n - observers.min(n - 2) {
                    InitMode::Observer
                } else if counted {
                    InitMode::Consensus {
                        peer_count: Some(n as u32),
                    }
                } else {
                    InitMode::Consensus { peer_count: None }
                }
            })
            .collect();
        (modes, n as u32 - 1)
    };
    Sim::new(seed, universe, modes, targets)
}

fn random_subnet(sim: &mut Sim) -> Cidr {
    let u = sim.universe;
    // Mostly the whole range; sometimes an aligned part of it.
    match sim.rng.below(4) {
        0 if u.prefix_len <= 28 => {
            let extra = 1 + sim.rng.below(2) as u8;
            let p = u.prefix_len + extra;
            let k = sim.rng.below(1 << extra) as u32;
            Cidr {
                addr: Address(u.addr.0 + (k << (32 - p))),
                prefix_len: p,
            }
        }
        _ => u,
    }
}

fn pick(sim: &mut Sim, from: &[usize]) -> Option<usize> {
    if from.is_empty() {
        None
    } else {
        Some(from[sim.rng.below(from.len() as u64) as usize])
    }
}

/// Runs one schedule; panics (with the seed) on any violation.
pub fn run_schedule(seed: u64) -> ipam_support::Stats {
    let mut sim = build(seed);
    let n = sim.nodes.len();
    let steps = 150 + sim.rng.below(250);
    for _ in 0..steps {
        let up = sim.up();
        let roll = sim.rng.below(1000);
        match roll {
            0..=279 => {
                if let Some(i) = pick(&mut sim, &up) {
                    let subnet = random_subnet(&mut sim);
                    sim.allocate(i, subnet);
                }
            }
            280..=379 => {
                let held: Vec<(usize, String)> = sim.holders.values().cloned().collect();
                if !held.is_empty() {
                    let k = sim.rng.below(held.len() as u64) as usize;
                    let (p, ident) = held[k].clone();
                    if sim.nodes[p].life == Life::Up {
                        sim.request(p, ipam_support::Req::Delete(ident.clone()), |op| {
                            weave_router::ipam::Input::Delete { op, ident }
                        });
                    }
                }
            }
            380..=459 => {
                if let Some(i) = pick(&mut sim, &up) {
                    let host = sim.universe.host_range();
                    let addr = host
                        .start
                        .offset(sim.rng.below(u64::from(host.size())) as u32);
                    sim.claim(i, addr);
                }
            }
            460..=719 => {
                let k = 1 + sim.rng.below(8);
                for _ in 0..k {
                    sim.deliver_random();
                }
            }
            720..=799 => sim.tick(),
            800..=859 => {
                if let (Some(i), Some(j)) = (pick(&mut sim, &up), pick(&mut sim, &up)) {
                    sim.periodic(i, j);
                }
            }
            860..=889 => {
                let k = 2 + sim.rng.below(2) as u32;
                sim.partition(k);
            }
            890..=919 => sim.heal(),
            920..=954 => {
                // Stop a peer, or restart a stopped one.
                let stopped: Vec<usize> = (0..n)
                    .filter(|&i| sim.nodes[i].life == Life::Stopped)
                    .collect();
                if !stopped.is_empty() && sim.rng.below(2) == 0 {
                    if let Some(i) = pick(&mut sim, &stopped) {
                        sim.stats.restarts += 1;
                        sim.start(i);
                        sim.peers_changed();
                    }
                } else if up.len() > 2 {
                    if let Some(i) = pick(&mut sim, &up) {
                        sim.stop(i, false);
                    }
                }
            }
            955..=974 => {
                // A host dies for good; later someone runs rmpeer on it.
                if up.len() > 2 {
                    if let Some(i) = pick(&mut sim, &up) {
                        sim.stop(i, true);
                    }
                }
            }
            975..=989 => {
                let gone: Vec<usize> = (0..n)
                    .filter(|&i| sim.nodes[i].life == Life::Gone)
                    .collect();
                if let (Some(d), Some(by)) = (pick(&mut sim, &gone), pick(&mut sim, &up)) {
                    sim.rmpeer(d, by);
                }
            }
            _ => {
                if up.len() > 2 {
                    if let Some(i) = pick(&mut sim, &up) {
                        sim.reset(i);
                    }
                }
            }
        }
    }

    // Bring stopped peers back, heal, and let everything settle.
    for i in 0..n {
        if sim.nodes[i].life == Life::Stopped {
            sim.start(i);
        }
    }
    sim.peers_changed();
    if !sim.settle(60) {
        let rings: Vec<String> = sim
            .nodes
            .iter()
            .filter_map(|x| x.alloc.as_ref().map(|a| a.ring().to_string()))
            .collect();
        sim.fail(&format!(
            "rings differ after healing; problems {:?}\n{}",
            sim.problems,
            rings.join("\n")
        ));
    }
    sim.check_no_duplicates();
    if !sim.problems.is_empty() {
        sim.fail(&format!("gossip rejected: {:?}", sim.problems));
    }
    sim.stats
}

#[test]
fn random_schedules_never_double_allocate_and_converge() {
    if let Some(seed) = env_u64("IPAM_SIM_SEED") {
        let st = run_schedule(seed);
        eprintln!("seed {seed}: {st:?}");
        return;
    }
    let count = env_u64("IPAM_SIM_SCHEDULES").unwrap_or(200);
    let mut total = ipam_support::Stats::default();
    for seed in 0..count {
        let st = run_schedule(seed);
        total.allocated += st.allocated;
        total.claimed += st.claimed;
        total.claim_refused += st.claim_refused;
        total.freed += st.freed;
        total.restarts += st.restarts;
        total.rmpeers += st.rmpeers;
        total.resets += st.resets;
        total.partitions += st.partitions;
        total.delivered += st.delivered;
        total.unicasts += st.unicasts;
    }
    eprintln!("{count} IPAM schedules passed: {total:?}");
    // The schedules must actually exercise the allocator.
    assert!(total.allocated > count * 10, "{total:?}");
}
