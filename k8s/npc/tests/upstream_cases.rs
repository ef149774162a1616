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
