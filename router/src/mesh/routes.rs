//! Routes over the peer graph: breadth-first from ourself, in name order at
//! each level so every peer computes the same routes from the same data.
//! Unicast routes give the next hop towards a peer; broadcast routes give,
//! for a broadcast from a given source, the neighbours we pass it on to.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use super::identity::PeerName;
use super::peers::{Peer, Peers};

/// Next hop per destination; ourself maps to [`PeerName::UNKNOWN`].
pub type UnicastRoutes = BTreeMap<PeerName, PeerName>;

/// Calls `f` for each neighbour of `peer` for which `excluded` is false.
/// With `established_symmetric`, only established connections that the
/// neighbour also reports (established) back to `peer` count.
fn for_each_connected<'a>(
    peers: &'a Peers,
    peer: &'a Peer,
    established_symmetric: bool,
    excluded: impl Fn(&PeerName) -> bool,
    mut f: impl FnMut(&'a Peer),
) {
    for (remote_name, conn) in &peer.connections {
        if established_symmetric && !conn.established {
            continue;
        }
        if excluded(remote_name) {
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

/// A hasher for peer names in the walk's scratch map: names are already
/// well spread 48-bit values, so one multiply mixes them enough (and costs
/// far less than the default SipHash, which matters on large meshes).
#[derive(Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
}

/// A hash map keyed by peer name, with a cheap hasher.
pub(crate) type NameMap<V> = HashMap<PeerName, V, BuildHasherDefault<NameHasher>>;

/// Breadth-first walk from `start`. Returns whether `stop_at` was reached
/// (the walk stops there) and the next-hop map built so far.
pub fn walk(
    peers: &Peers,
    start: PeerName,
    stop_at: Option<PeerName>,
    established_symmetric: bool,
) -> (bool, UnicastRoutes) {
    let (found, hops) = walk_hops(peers, start, stop_at, established_symmetric);
    (found, hops.into_iter().collect())
}

/// [`walk`] into a hash map (the caller orders it if it needs to).
pub(crate) fn walk_hops(
    peers: &Peers,
    start: PeerName,
    stop_at: Option<PeerName>,
    established_symmetric: bool,
) -> (bool, NameMap<PeerName>) {
    let mut routes = NameMap::default();
    let Some(start_peer) = peers.get(&start) else {
        return (false, routes);
    };
    routes.reserve(peers.len());
    routes.insert(start, PeerName::UNKNOWN);
    let mut next: Vec<&Peer> = vec![start_peer];
    let mut work: Vec<&Peer> = Vec::new();
    let mut found: Vec<&Peer> = Vec::new();
    while !next.is_empty() {
        std::mem::swap(&mut work, &mut next);
        work.sort_unstable_by_key(|p| p.name);
        for cur in work.drain(..) {
            if Some(cur.name) == stop_at {
                return (true, routes);
            }
            found.clear();
            for_each_connected(
                peers,
                cur,
                established_symmetric,
                |n| routes.contains_key(n),
                |remote| found.push(remote),
            );
            let hop = if cur.name == start {
                None
            } else {
                Some(routes.get(&cur.name).copied().unwrap_or(PeerName::UNKNOWN))
            };
            for remote in found.drain(..) {
                routes.insert(remote.name, hop.unwrap_or(remote.name));
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
    let (found, reached) = walk_hops(peers, source, Some(ourself), established_symmetric);
    let mut hops = Vec::new();
    if found {
        for_each_connected(
            peers,
            peers.ourself(),
            established_symmetric,
            |n| reached.contains_key(n),
            |p| hops.push(p.name),
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
    /// Per neighbour (in name order), how many destinations in
    /// `unicast_all` it is the next hop for.
    hop_weights: Vec<(PeerName, u64)>,
}

impl Routes {
    /// Computes the unicast routes and our own broadcast routes.
    pub fn calculate(peers: &Peers) -> Self {
        let me = peers.ourself_name();
        let unicast_all = walk(peers, me, None, false).1;
        let mut weights: BTreeMap<PeerName, u64> = BTreeMap::new();
        for hop in unicast_all.values() {
            if *hop != PeerName::UNKNOWN {
                *weights.entry(*hop).or_default() += 1;
            }
        }
        let mut r = Routes {
            unicast: walk(peers, me, None, true).1,
            unicast_all,
            broadcast: BTreeMap::new(),
            broadcast_all: BTreeMap::new(),
            hop_weights: weights.into_iter().collect(),
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
        let mut weights: Vec<(PeerName, u64)> = self
            .hop_weights
            .iter()
            .filter(|(hop, _)| *hop != except)
            .copied()
            .collect();
        let mut total: u64 = weights.iter().map(|(_, c)| *c).sum();
        let n = self.unicast_all.len().max(1) as f64;
        let wanted = ((2.0 * n.log2()).floor().max(0.0) as usize).min(weights.len());
        let mut out = Vec::with_capacity(wanted);
        while out.len() < wanted && total > 0 {
            let mut pick = rng.gen_range(0..total);
            let mut chosen = None;
            for (i, (name, count)) in weights.iter().enumerate() {
                if pick < *count {
                    chosen = Some((i, *name, *count));
                    break;
                }
                pick -= count;
            }
            let Some((i, name, count)) = chosen else {
                break;
            };
            weights.remove(i);
            total -= count;
            out.push(name);
        }
        out
    }
}

/// Time between route recalculations once the burst allowance is spent
/// (mesh allows two per second).
pub const RECALC_INTERVAL: Duration = Duration::from_millis(500);

/// How many recalculations may run back to back after a quiet spell (mesh
/// allows bursts of four).
pub const RECALC_BURST: u32 = 4;

/// Decides when routes are recalculated after the topology changed.
///
/// Requests made while one is pending merge into it. Recalculations are
/// spaced by a token bucket (refilled at one per [`RECALC_INTERVAL`],
/// holding up to [`RECALC_BURST`]), as mesh spaces them; where mesh drops a
/// request that finds the bucket empty (leaving routes stale until the
/// next change), this one postpones it until a token is there, so routes
/// always catch up. Time comes in as `now`, so it is deterministic.
#[derive(Debug, Clone)]
pub struct RecalcSchedule {
    /// Saved-up time, at most `RECALC_BURST` intervals; a recalculation
    /// costs one interval.
    credit: Duration,
    /// When `credit` was last brought up to date.
    at: Option<Instant>,
    /// When the pending recalculation may run.
    due: Option<Instant>,
}

impl Default for RecalcSchedule {
    fn default() -> Self {
        RecalcSchedule {
            credit: RECALC_INTERVAL * RECALC_BURST,
            at: None,
            due: None,
        }
    }
}

impl RecalcSchedule {
    fn refill(&mut self, now: Instant) {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.credit = (self.credit + elapsed).min(RECALC_INTERVAL * RECALC_BURST);
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// Asks for a recalculation; returns when it may run (at once, i.e.
    /// `now`, while the bucket holds a token).
    pub fn request(&mut self, now: Instant) -> Instant {
        if let Some(due) = self.due {
            return due;
        }
        self.refill(now);
        let due = now + RECALC_INTERVAL.saturating_sub(self.credit);
        self.due = Some(due);
        due
    }

    /// When the pending recalculation may run, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Whether a recalculation is pending.
    pub fn pending(&self) -> bool {
        self.due.is_some()
    }

    /// Whether the pending recalculation should run now; if so it is taken
    /// (the caller recalculates) and paid for.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.due.is_none_or(|d| d > now) {
            return false;
        }
        self.due = None;
        self.refill(now);
        self.credit = self.credit.saturating_sub(RECALC_INTERVAL);
        true
    }

    /// Forgets the pending recalculation because the caller recalculated
    /// out of turn (to answer with up-to-date routes); returns whether one
    /// was pending. Such a recalculation is not charged to the bucket.
    pub fn cancel(&mut self) -> bool {
        self.due.take().is_some()
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
    fn recalculations_merge_and_are_spaced_after_a_burst() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut s = RecalcSchedule::default();
        assert!(!s.pending());
        // A full bucket: the first RECALC_BURST run at once.
        for _ in 0..RECALC_BURST {
            assert_eq!(s.request(t0), t0);
            assert_eq!(s.request(t0), t0, "a second request merges");
            assert!(s.take_due(t0));
            assert!(!s.pending());
        }
        // Empty bucket: the next one waits for a token, and requests made
        // meanwhile merge into it.
        assert_eq!(s.request(t0), t0 + RECALC_INTERVAL);
        assert_eq!(s.request(ms(100)), t0 + RECALC_INTERVAL);
        assert!(!s.take_due(ms(499)));
        assert_eq!(s.due(), Some(t0 + RECALC_INTERVAL));
        assert!(s.take_due(ms(500)));
        assert!(!s.take_due(ms(501)), "nothing pending");
        // Steady demand runs at one per interval.
        assert_eq!(s.request(ms(600)), ms(1000));
        assert!(s.take_due(ms(1000)));
        // A quiet spell refills the bucket (up to the burst).
        assert_eq!(s.request(ms(60_000)), ms(60_000));
        assert!(s.cancel(), "recalculated out of turn");
        assert!(!s.cancel());
        for _ in 0..RECALC_BURST {
            assert_eq!(s.request(ms(60_000)), ms(60_000));
            assert!(s.take_due(ms(60_000)));
        }
        assert_eq!(s.request(ms(60_000)), ms(60_500));
    }

    #[test]
    fn walk_matches_a_plain_breadth_first_search() {
        // A ring of 30 with chords; compare against a direct BFS that
        // visits each level in name order.
        let mut edges: Vec<(u64, u64)> = (1..30).map(|i| (i, i + 1)).collect();
        edges.push((30, 1));
        edges.extend([(1, 15), (7, 22), (3, 27), (10, 11)]);
        let peers = table(&edges, &[(5, 40)]);
        let r = Routes::calculate(&peers);
        let mut adj: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (a, b) in &edges {
            adj.entry(*a).or_default().push(*b);
            adj.entry(*b).or_default().push(*a);
        }
        let mut expect: BTreeMap<u64, u64> = BTreeMap::from([(1, 0)]);
        let mut level = vec![1u64];
        while !level.is_empty() {
            level.sort();
            let mut next = Vec::new();
            for cur in level {
                let mut ns = adj[&cur].clone();
                ns.sort();
                let hop = if cur == 1 {
                    None
                } else {
                    expect.get(&cur).copied()
                };
                for m in ns {
                    if let std::collections::btree_map::Entry::Vacant(e) = expect.entry(m) {
                        e.insert(hop.unwrap_or(m));
                        next.push(m);
                    }
                }
            }
            level = next;
        }
        let got: BTreeMap<u64, u64> = r
            .unicast
            .iter()
            .map(|(d, h)| (d.as_u64(), h.as_u64()))
            .collect();
        assert_eq!(got, expect);
        // The one-way edge to 40 only shows in the all-connections routes.
        assert!(!r.unicast.contains_key(&n(40)));
        assert_eq!(r.unicast_all[&n(40)], r.unicast[&n(5)]);
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
