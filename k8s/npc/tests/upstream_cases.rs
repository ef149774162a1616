//! The upstream e2e model's cases against the oracle: for every step of
//! every case, the oracle's matrix must equal the case's stated matrix.

mod common;

use common::{Model, Reach, cases, oracle_matrix, pod_ip};

/// Runs every case and reports all mismatches with their diff tables.
#[test]
fn oracle_matches_upstream_matrices() {
    let mut failures = Vec::new();
    let mut probes = 0;
    let all = cases();
    for case in &all {
        let mut model = Model::new();
        for (n, step) in case.steps.iter().enumerate() {
            for c in &step.changes {
                model.change(c);
            }
            let cluster = model.cluster();
            let ips: [_; 9] = std::array::from_fn(|i| Some(pod_ip(i)));
            for (proto, port, want) in &step.probes {
                probes += 1;
                let want: Reach = want.clone().with_loopback();
                let got = oracle_matrix(&cluster, &ips, *proto, *port);
                if got != want {
                    failures.push(format!(
                        "{} step {n} {proto}/{port} (X = oracle differs):\n{}",
                        case.name,
                        want.diff(&got)
                    ));
                }
            }
        }
    }
    assert!(all.len() >= 40, "only {} cases", all.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} cases, {probes} matrices", all.len());
}

/// The same cases through the policy core: the ruleset built from its
/// batches (started before the first step, so every change is incremental)
/// gives the stated matrices when evaluated in process.
#[test]
fn core_ruleset_matches_upstream_matrices() {
    use weave_npc::core::{Config, Core};
    use weave_npc::model::{Hook, Packet, Ruleset};

    let mut failures = Vec::new();
    for case in cases() {
        let mut model = Model::new();
        let mut core = Core::new(Config {
            node_name: common::NODE.into(),
            bridge: "weave".into(),
            allow_mcast: false,
        });
        for ev in model.listing() {
            core.apply(ev);
        }
        let mut rs = Ruleset::default();
        rs.apply(&core.start()).expect("start batch");
        for (n, step) in case.steps.iter().enumerate() {
            for c in &step.changes {
                let out = core.apply(model.change(c));
                rs.apply(&out.batch).expect("incremental batch");
            }
            for (proto, port, want) in &step.probes {
                let want = want.clone().with_loopback();
                let mut got = Reach::all(true);
                for f in 0..9 {
                    for t in 0..9 {
                        if f != t {
                            let pkt = Packet {
                                iif: "weave".into(),
                                oif: "weave".into(),
                                saddr: pod_ip(f),
                                daddr: pod_ip(t),
                                proto: proto.number(),
                                dport: *port,
                            };
                            got.0[f][t] = rs.admits(Hook::Forward, &pkt);
                        }
                    }
                }
                if got != want {
                    failures.push(format!(
                        "{} step {n} {proto}/{port} (X = ruleset differs):\n{}",
                        case.name,
                        want.diff(&got)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
