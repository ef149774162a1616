//! Property tests of the ring CRDT on states reachable by its own
//! operations: merge is commutative, associative and idempotent; every
//! replica stays well-formed (owned ranges tile the range without overlap,
//! free counts within range sizes).

use proptest::prelude::*;
use weave_router::ipam::{Address, PeerName, Range, Ring};

const START: u32 = 0x0a00_0000;
const SIZE: u32 = 256;

#[derive(Clone, Debug)]
enum Op {
    /// Peer gives part of one of its ranges to another peer.
    Grant {
        p: u8,
        to: u8,
        which: u16,
        off: u16,
        len: u16,
    },
    /// Peer reports free counts for its ranges.
    Report { p: u8, salt: u16 },
    /// Peer merges another's replica.
    Merge { p: u8, q: u8 },
    /// Peer takes over a dead peer's ranges (each dead peer once).
    Kill { p: u8, dead: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(p, to, which, off, len)| Op::Grant { p, to, which, off, len }),
        2 => (any::<u8>(), any::<u16>()).prop_map(|(p, salt)| Op::Report { p, salt }),
        4 => (any::<u8>(), any::<u8>()).prop_map(|(p, q)| Op::Merge { p, q }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(p, dead)| Op::Kill { p, dead }),
    ]
}

fn no_allocs(_: &[Range]) -> bool {
    false
}

/// Replays `ops` over `n` replicas seeded with `seeds` of them.
fn history(n: usize, seeds: usize, ops: &[Op]) -> Vec<Ring> {
    let names: Vec<PeerName> = (1..=n as u64).map(PeerName).collect();
    let mut rings: Vec<Ring> = names
        .iter()
        .map(|&p| {
            let mut r = Ring::new(Address(START), Address(START + SIZE), p)
                .unwrap_or_else(|e| panic!("{e}"));
            r.claim_for_peers(&names[..seeds.clamp(1, n)])
                .unwrap_or_else(|e| panic!("{e}"));
            r
        })
        .collect();
    let mut dead = vec![false; n];
    for o in ops {
        match *o {
            Op::Grant {
                p,
                to,
                which,
                off,
                len,
            } => {
                let (p, to) = (p as usize % n, to as usize % n);
                // Only live peers ask for (and so receive) space.
                if dead[p] || dead[to] || p == to {
                    continue;
                }
                let owned = rings[p].owned_ranges();
                if owned.is_empty() {
                    continue;
                }
                let r = owned[which as usize % owned.len()];
                let start = r.start.0 + u32::from(off) % r.size();
                let len = 1 + u32::from(len) % (r.end.0 - start);
                let res =
                    rings[p].grant_range_to_host(Address(start), Address(start + len), names[to]);
                assert!(res.is_ok(), "grant failed: {res:?}");
            }
            Op::Report { p, salt } => {
                let p = p as usize % n;
                if dead[p] {
                    continue;
                }
                // One count per owned entry: the first owned range at each
                // token, sized by the whole entry.
                let mut free = std::collections::BTreeMap::new();
                let ring = &rings[p];
                for (i, e) in ring.entries.iter().enumerate() {
                    if e.peer != ring.peer {
                        continue;
                    }
                    let next = ring.entries[(i + 1) % ring.entries.len()].token;
                    let size: u32 = ring
                        .make_ranges(e.token, next)
                        .iter()
                        .map(|r| r.size())
                        .sum();
                    free.insert(e.token, (u32::from(salt) + e.token.0) % (size + 1));
                }
                // Pass counts keyed by token (no wrap fold needed: tokens are entries).
                let res = rings[p].report_free(free);
                assert!(res.is_ok(), "report failed: {res:?}");
            }
            Op::Merge { p, q } => {
                let (p, q) = (p as usize % n, q as usize % n);
                if dead[p] {
                    continue;
                }
                let other = rings[q].clone();
                let res = rings[p].merge(&other, no_allocs);
                assert!(res.is_ok(), "merge failed: {res:?}");
            }
            Op::Kill { p, dead: d } => {
                let (p, d) = (p as usize % n, d as usize % n);
                if p == d || dead[p] || dead[d] || dead.iter().filter(|x| !**x).count() <= 2 {
                    continue;
                }
                // rmpeer is only safe when the peer running it knows
                // everything the dead peer told anyone: hear everyone first.
                for q in 0..n {
                    let other = rings[q].clone();
                    let res = rings[p].merge(&other, no_allocs);
                    assert!(res.is_ok(), "merge failed: {res:?}");
                }
                dead[d] = true;
                rings[p].transfer(names[d], names[p]);
            }
        }
    }
    rings
}

fn join(a: &Ring, b: &Ring) -> Ring {
    let mut x = a.clone();
    let res = x.merge(b, no_allocs);
    assert!(res.is_ok(), "merge failed: {res:?}");
    x
}

fn well_formed(r: &Ring) {
    assert!(r.check().is_ok(), "{:?}", r.check());
    // Owned ranges of all peers tile the range exactly once.
    let mut all: Vec<Range> = r
        .peer_names()
        .into_iter()
        .flat_map(|p| r.owned_ranges_of(p))
        .collect();
    all.sort();
    let mut at = START;
    for x in &all {
        assert_eq!(x.start.0, at, "gap or overlap at {at:#x}: {all:?}");
        at = x.end.0;
    }
    assert_eq!(at, START + SIZE);
    // Free counts never exceed the entry's range.
    for (i, e) in r.entries.iter().enumerate() {
        let next = r.entries[(i + 1) % r.entries.len()].token;
        let size: u32 = r.make_ranges(e.token, next).iter().map(|x| x.size()).sum();
        assert!(e.free <= size);
    }
}

proptest! {
    // PROPTEST_CASES raises the count for longer runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn merge_is_a_join(
        n in 3usize..7,
        seeds in 1usize..7,
        ops in prop::collection::vec(op(), 0..60),
        pick in any::<(u8, u8, u8)>(),
    ) {
        let rings = history(n, seeds, &ops);
        for r in &rings {
            well_formed(r);
        }
        let a = &rings[pick.0 as usize % n];
        let b = &rings[pick.1 as usize % n];
        let c = &rings[pick.2 as usize % n];

        // Idempotent.
        let mut aa = a.clone();
        let rep = aa.merge(a, no_allocs);
        prop_assert!(rep.as_ref().is_ok_and(|r| !r.updated), "{rep:?}");
        prop_assert!(aa.same_contents(a));

        // Commutative.
        let ab = join(a, b);
        let ba = join(b, a);
        prop_assert_eq!(&ab.entries, &ba.entries);
        prop_assert_eq!(&ab.seeds, &ba.seeds);
        well_formed(&ab);

        // Associative.
        let ab_c = join(&ab, c);
        let bc = join(b, c);
        let a_bc = join(a, &bc);
        prop_assert_eq!(&ab_c.entries, &a_bc.entries);
        well_formed(&ab_c);
    }
}
