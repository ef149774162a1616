//! Routes over the peer graph: breadth-first from ourself, in name order at
//! each level so every peer computes the same routes from the same data.
//! Unicast routes give the next hop towards a peer; broadcast routes give,
//! for a broadcast from a given source, the neighbours we pass it on to.

use std::collections::BTreeMap;

use rand::{Rng, RngCore};

use super::identity::PeerName;
use super::peers::{Peer, Peers};

/// Next hop per destination; ourself maps to [`PeerName::UNKNOWN`].
pub type UnicastRoutes = BTreeMap<PeerName, PeerName>;

/// Calls `f` for each neighbour of `peer` not in `exclude`. With
/// `established_symmetric`, only established connections that the neighbour
/// also reports (established) back to `peer` count.
fn for_each_connected<'a>(
    peers: &'a Peers,
    peer: &'a Peer,
    established_symmetric: bool,
    exclude: &UnicastRoutes,
    mut f: impl FnMut(&'a Peer),
) {
    for (remote_name, conn) in &peer.connections {
        if established_symmetric && !conn.established {
            continue;
        }
        if exclude.contains_key(remote_name) {
            continue;
        }
        let Some(remote) = peers.get(remote_name) else {
            continue;
        };
        let ok = !established_symmetric
            || remote
                .connections
                .get(&peer.name)
                .is_some_and(|back| back.established);
        if ok {
            f(remote);
        }
    }
}

/// Breadth-first walk from `start`. Returns whether `stop_at` was reached
/// (the walk stops there) and the next-hop map built so far.
pub fn walk(
    peers: &Peers,
    start: PeerName,
    stop_at: Option<PeerName>,
    established_symmetric: bool,
) -> (bool, UnicastRoutes) {
    let mut routes = UnicastRoutes::new();
    let Some(start_peer) = peers.get(&start) else {
        return (false, routes);
    };
    routes.insert(start, PeerName::UNKNOWN);
    let mut next: Vec<&Peer> = vec![start_peer];
    while !next.is_empty() {
        let mut work = std::mem::take(&mut next);
        work.sort_by_key(|p| p.name);
        for cur in work {
            if Some(cur.name) == stop_at {
                return (true, routes);
            }
            let mut found = Vec::new();
            for_each_connected(peers, cur, established_symmetric, &routes, |remote| {
                found.push(remote);
            });
            for remote in found {
                let hop = if cur.name == start {
                    remote.name
                } else {
                    routes.get(&cur.name).copied().unwrap_or(PeerName::UNKNOWN)
                };
                routes.insert(remote.name, hop);
                next.push(remote);
            }
        }
    }
    (false, routes)
}

/// For a broadcast that started at `source`, the neighbours of ours that
/// should receive it from us: those not already reached by the time the
/// walk from `source` arrives at us.
pub fn broadcast_hops(
    peers: &Peers,
    source: PeerName,
    established_symmetric: bool,
) -> Vec<PeerName> {
    let ourself = peers.ourself_name();
    let (found, reached) = walk(peers, source, Some(ourself), established_symmetric);
    let mut hops = Vec::new();
    if found {
        for_each_connected(
            peers,
            peers.ourself(),
            established_symmetric,
            &reached,
            |p| {
                hops.push(p.name);
            },
        );
    }
    hops
}

/// Routes computed from one state of the peers table, with broadcast
/// routes filled in on demand.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Over established, symmetric connections.
    pub unicast: UnicastRoutes,
    /// Over all connections.
    pub unicast_all: UnicastRoutes,
    broadcast: BTreeMap<PeerName, Vec<PeerName>>,
    broadcast_all: BTreeMap<PeerName, Vec<PeerName>>,
}

impl Routes {
    /// Computes the unicast routes and our own broadcast routes.
    pub fn calculate(peers: &Peers) -> Self {
        let me = peers.ourself_name();
        let mut r = Routes {
            unicast: walk(peers, me, None, true).1,
            unicast_all: walk(peers, me, None, false).1,
            broadcast: BTreeMap::new(),
            broadcast_all: BTreeMap::new(),
        };
        r.broadcast.insert(me, broadcast_hops(peers, me, true));
        r.broadcast_all.insert(me, broadcast_hops(peers, me, false));
        r
    }

    /// Broadcast next hops for `source` over established, symmetric links.
    pub fn broadcast(&mut self, peers: &Peers, source: PeerName) -> Vec<PeerName> {
        self.broadcast
            .entry(source)
            .or_insert_with(|| broadcast_hops(peers, source, true))
            .clone()
    }

    /// Broadcast next hops for `source` over all connections.
    pub fn broadcast_all(&mut self, peers: &Peers, source: PeerName) -> Vec<PeerName> {
        self.broadcast_all
            .entry(source)
            .or_insert_with(|| broadcast_hops(peers, source, false))
            .clone()
    }

    /// Picks up to 2·log2(number of peers) neighbours at random, weighted by
    /// how many destinations each one is the next hop for (so neighbours
    /// behind bottlenecks are favoured); `except` is never chosen.
    pub fn random_neighbours(&self, except: PeerName, rng: &mut dyn RngCore) -> Vec<PeerName> {
        let mut weights: BTreeMap<PeerName, u64> = BTreeMap::new();
        let mut total: u64 = 0;
        for hop in self.unicast_all.values() {
            if *hop != PeerName::UNKNOWN && *hop != except {
                total += 1;
                *weights.entry(*hop).or_default() += 1;
            }
        }
        let n = self.unicast_all.len().max(1) as f64;
        let wanted = ((2.0 * n.log2()).floor().max(0.0) as usize).min(weights.len());
        let mut out = Vec::with_capacity(wanted);
        while out.len() < wanted && total > 0 {
            let mut pick = rng.gen_range(0..total);
            let mut chosen = None;
            for (name, count) in &weights {
                if pick < *count {
                    chosen = Some((*name, *count));
                    break;
                }
                pick -= count;
            }
            let Some((name, count)) = chosen else {
                break;
            };
            weights.remove(&name);
            total -= count;
            out.push(name);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::identity::{PeerUid, ShortId};
    use crate::mesh::peers::PeerConnection;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn n(i: u64) -> PeerName {
        PeerName::from_u64(i)
    }

    /// Builds a table from the view of peer 1 with the given symmetric,
    /// established edges, plus one-way edges.
    pub(crate) fn table(edges: &[(u64, u64)], one_way: &[(u64, u64)]) -> Peers {
        use crate::mesh::codec::{ConnectionSummary, PeerSummary, TopologyEntry};
        let mut peers = Peers::new(Peer::new(n(1), "p1", PeerUid(1), 1, ShortId::new(1)));
        let mut adj: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (a, b) in edges {
            adj.entry(*a).or_default().push(*b);
            adj.entry(*b).or_default().push(*a);
        }
        for (a, b) in one_way {
            adj.entry(*a).or_default().push(*b);
        }
        let mut entries = Vec::new();
        for (a, bs) in &adj {
            if *a == 1 {
                for b in bs {
                    peers.add_local_connection(PeerConnection {
                        remote: n(*b),
                        remote_tcp_addr: format!("10.0.0.{b}:6783"),
                        outbound: true,
                        established: true,
                    });
                }
                continue;
            }
            entries.push(TopologyEntry {
                peer: PeerSummary {
                    name_byte: n(*a).to_bytes().to_vec(),
                    nickname: format!("p{a}"),
                    uid: *a,
                    version: 1,
                    short_id: *a as u16,
                    has_short_id: true,
                },
                connections: bs
                    .iter()
                    .map(|b| ConnectionSummary {
                        name_byte: n(*b).to_bytes().to_vec(),
                        remote_tcp_addr: format!("10.0.0.{b}:6783"),
                        outbound: a < b,
                        established: true,
                    })
                    .collect(),
            });
        }
        peers.apply_update(&entries);
        peers
    }

    #[test]
    fn unicast_is_breadth_first_in_name_order() {
        // 1 - 2 - 4, 1 - 3 - 4, 4 - 5
        let peers = table(&[(1, 2), (1, 3), (2, 4), (3, 4), (4, 5)], &[]);
        let r = Routes::calculate(&peers);
        assert_eq!(r.unicast[&n(1)], PeerName::UNKNOWN);
        assert_eq!(r.unicast[&n(2)], n(2));
        assert_eq!(r.unicast[&n(4)], n(2), "lower-named path wins");
        assert_eq!(r.unicast[&n(5)], n(2));
    }

    #[test]
    fn asymmetric_links_only_count_for_all_routes() {
        // 1 - 2 symmetric; 2 -> 3 only reported by 2.
        let peers = table(&[(1, 2)], &[(2, 3)]);
        let r = Routes::calculate(&peers);
        assert!(!r.unicast.contains_key(&n(3)));
        assert_eq!(r.unicast_all[&n(3)], n(2));
    }

    #[test]
    fn broadcast_reaches_everyone_once() {
        // A ring of 6 plus a chord; every peer's broadcast must be relayed so
        // that each peer gets it exactly once: check from peer 1's view that
        // the hop sets of all sources partition correctly for source 1.
        let peers = table(
            &[(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1), (2, 5)],
            &[],
        );
        let mut r = Routes::calculate(&peers);
        let mine = r.broadcast(&peers, n(1));
        assert_eq!(mine, vec![n(2), n(6)]);
        // A broadcast from 2 reaches 1 directly; 1 has no one left to tell
        // except 6 if 6 was not reached earlier in the walk from 2.
        let from2 = r.broadcast(&peers, n(2));
        assert!(from2.iter().all(|h| *h != n(2)));
    }

    #[test]
    fn random_neighbours_respects_count_and_exclusion() {
        let edges: Vec<(u64, u64)> = (2..=20).map(|i| (1, i)).collect();
        let peers = table(&edges, &[]);
        let r = Routes::calculate(&peers);
        let mut rng = StdRng::seed_from_u64(3);
        let pick = r.random_neighbours(n(5), &mut rng);
        // 20 peers: 2·log2(20) = 8.6 → 8 neighbours.
        assert_eq!(pick.len(), 8);
        assert!(!pick.contains(&n(5)));
        let mut sorted = pick.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
    }
}
