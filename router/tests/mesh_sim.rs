//! Deterministic, single-process simulation of many mesh routers talking
//! Weave's protocol (gob-encoded, as on the real wire) over a simulated,
//! seeded network.
//!
//! The 1,000-peer run and the other measurements are ignored in the normal
//! (debug) run; run them with:
//! `cargo test --release -p weave-router --test mesh_sim -- --ignored sim_1000 --nocapture`
//! or all of them with `... -- --ignored --nocapture`. Their numbers are in
//! docs/benchmarks.md ("mesh convergence").

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use weave_router::mesh::codec::{GobCodec, MeshCodec, PlainCodec};
use weave_router::mesh::connection::ConnError;
use weave_router::mesh::connection_maker::DirectPeer;
use weave_router::mesh::gossip::{GossipData, GossipError, Gossiper};
use weave_router::mesh::identity::{PeerName, PeerUid, ShortId};
use weave_router::mesh::router::{CloseReason, ConnHandle, MeshConfig, MeshRouter, Output};

/// A grow-only set of numbers gossiped on channel "set", counting how
/// often each broadcast and unicast arrived.
#[derive(Default)]
struct SetGossiper {
    items: BTreeSet<u64>,
    broadcasts_seen: BTreeMap<u64, u32>,
    unicasts: Vec<(PeerName, Vec<u8>)>,
}

fn encode_set(s: &BTreeSet<u64>) -> Vec<u8> {
    s.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn decode_set(b: &[u8]) -> Result<BTreeSet<u64>, GossipError> {
    if b.len() % 8 != 0 {
        return Err(GossipError("bad set".into()));
    }
    Ok(b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_be_bytes(a)
        })
        .collect())
}

impl Gossiper for SetGossiper {
    fn on_gossip_unicast(
        &mut self,
        src: PeerName,
        msg: &[u8],
        _now: Instant,
    ) -> Result<(), GossipError> {
        self.unicasts.push((src, msg.to_vec()));
        Ok(())
    }
    fn on_gossip_broadcast(
        &mut self,
        _src: PeerName,
        update: &[u8],
        _now: Instant,
    ) -> Result<Option<GossipData>, GossipError> {
        let s = decode_set(update)?;
        for v in &s {
            *self.broadcasts_seen.entry(*v).or_default() += 1;
        }
        self.items.extend(s);
        Ok(Some(vec![update.to_vec()]))
    }
    fn gossip(&mut self, _now: Instant) -> Option<GossipData> {
        (!self.items.is_empty()).then(|| vec![encode_set(&self.items)])
    }
    fn on_gossip(&mut self, msg: &[u8], _now: Instant) -> Result<Option<GossipData>, GossipError> {
        let s = decode_set(msg)?;
        let new: BTreeSet<u64> = s.difference(&self.items).copied().collect();
        if new.is_empty() {
            return Ok(None);
        }
        self.items.extend(new.iter().copied());
        Ok(Some(vec![encode_set(&new)]))
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct Node {
    router: MeshRouter,
    addr: SocketAddr,
    alive: bool,
    closes: Vec<CloseReason>,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        node: usize,
        conn: ConnHandle,
        bytes: Vec<u8>,
    },
    Closed {
        node: usize,
        conn: ConnHandle,
    },
    Start {
        node: usize,
    },
    WriteDone {
        node: usize,
        conn: ConnHandle,
    },
}

#[derive(Clone, Copy)]
struct NetOpts {
    min_latency_ms: u64,
    max_latency_ms: u64,
    /// Probability of losing a chunk after the intro.
    loss: f64,
    /// Whether chunks after the intro may overtake each other.
    reorder: bool,
    /// Model socket writes (50 µs plus 10 ns per byte, one at a time per
    /// connection) and run the routers with flow control, so that gossip
    /// queued behind a busy connection is merged as mesh does.
    flow: bool,
    /// Encode message contents with the crate's own compact codec instead
    /// of gob (for runs where gob's cost in debug builds matters; framing,
    /// handshake and protocol logic are the same).
    plain_codec: bool,
}

impl Default for NetOpts {
    fn default() -> Self {
        NetOpts {
            min_latency_ms: 1,
            max_latency_ms: 20,
            loss: 0.0,
            reorder: false,
            flow: false,
            plain_codec: false,
        }
    }
}

struct LinkEnd {
    node: usize,
    conn: ConnHandle,
    sent: u32,
    last_at: Instant,
    write_free_at: Instant,
}

struct Sim {
    t0: Instant,
    now: Instant,
    rng: StdRng,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// Router timers, earliest first, lowest node first on ties. An entry
    /// counts only while it matches `timer_at` for its node (later calls
    /// push a fresh entry instead of finding the old one).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Each node's `poll_timeout` as of its last call.
    timer_at: Vec<Option<Instant>>,
    events: HashMap<usize, Ev>,
    seq: u64,
    links: HashMap<(usize, ConnHandle), LinkEnd>,
    /// Group id per node; links between groups are cut.
    group: Vec<u32>,
    opts: NetOpts,
    ephemeral: u16,
    delivered: u64,
    /// Bytes handed to the network (TCP payload, lost chunks included).
    bytes_sent: u64,
    pending_targets: HashMap<usize, Vec<(String, DirectPeer)>>,
}

fn node_addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 6783)
}

fn node_name(i: usize) -> PeerName {
    PeerName::from_u64(0x0200_0000_0000 + i as u64 + 1)
}

impl Sim {
    fn new(seed: u64, opts: NetOpts) -> Self {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            timer_at: Vec::new(),
            events: HashMap::new(),
            seq: 0,
            links: HashMap::new(),
            group: Vec::new(),
            opts,
            ephemeral: 30000,
            delivered: 0,
            bytes_sent: 0,
            pending_targets: HashMap::new(),
        }
    }

    fn add_node(&mut self, cfg: impl FnOnce(&mut MeshConfig), seed: u64) -> usize {
        let i = self.nodes.len();
        let mut c = MeshConfig::new(node_name(i), &format!("n{i}"));
        c.flow_control = self.opts.flow;
        cfg(&mut c);
        let codec: Box<dyn MeshCodec> = if self.opts.plain_codec {
            Box::new(PlainCodec)
        } else {
            Box::new(GobCodec)
        };
        let mut router = MeshRouter::new(c, codec, StdRng::seed_from_u64(seed), self.now);
        router
            .register_channel("set", Box::new(SetGossiper::default()))
            .expect("channel");
        self.nodes.push(Node {
            router,
            addr: node_addr(i),
            alive: false,
            closes: Vec::new(),
        });
        self.group.push(0);
        self.timer_at.push(None);
        i
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq as usize, ev);
        self.queue.push(Reverse((at, self.seq, self.seq as usize)));
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(
            self.rng
                .gen_range(self.opts.min_latency_ms..=self.opts.max_latency_ms),
        )
    }

    fn start_at(&mut self, node: usize, at: Instant, targets: &[usize]) {
        let peers: Vec<(String, DirectPeer)> = targets
            .iter()
            .map(|t| {
                (
                    node_addr(*t).ip().to_string(),
                    DirectPeer {
                        ip: node_addr(*t).ip(),
                        port: None,
                    },
                )
            })
            .collect();
        // Targets are registered at start time.
        self.pending_targets.insert(node, peers);
        self.schedule(at, Ev::Start { node });
    }

    /// Files `node`'s next timer after a call into its router.
    fn reschedule(&mut self, node: usize) {
        let t = self.nodes[node].router.poll_timeout();
        if t != self.timer_at[node] {
            self.timer_at[node] = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, node)));
            }
        }
    }

    /// The earliest live timer of an alive node (stale entries dropped).
    fn next_timer(&mut self) -> Option<(Instant, usize)> {
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if self.nodes[i].alive && self.timer_at[i] == Some(t) {
                return Some((t, i));
            }
            self.timers.pop();
        }
        None
    }

    fn drain(&mut self, node: usize) {
        self.drain_outputs(node);
        self.reschedule(node);
    }

    fn drain_outputs(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].router.poll_output() {
            match out {
                Output::Transmit { conn, bytes } => {
                    self.bytes_sent += bytes.len() as u64;
                    let lat = self.latency();
                    let Some(end) = self.links.get(&(node, conn)) else {
                        continue;
                    };
                    let (pn, pc, sent, last) = (end.node, end.conn, end.sent, end.last_at);
                    let mut sent_at = self.now;
                    if self.opts.flow {
                        let start = self.now.max(end.write_free_at);
                        let done = start
                            + Duration::from_micros(50)
                            + Duration::from_nanos(10 * bytes.len() as u64);
                        if let Some(e) = self.links.get_mut(&(node, conn)) {
                            e.write_free_at = done;
                        }
                        self.schedule(done, Ev::WriteDone { node, conn });
                        sent_at = done;
                    }
                    let after_intro = sent >= 3;
                    if after_intro && self.opts.loss > 0.0 && self.rng.gen_bool(self.opts.loss) {
                        if let Some(e) = self.links.get_mut(&(node, conn)) {
                            e.sent += 1;
                        }
                        continue;
                    }
                    let mut at = sent_at + lat;
                    if !(after_intro && self.opts.reorder) && at < last {
                        at = last;
                    }
                    if let Some(e) = self.links.get_mut(&(node, conn)) {
                        e.sent += 1;
                        e.last_at = e.last_at.max(at);
                    }
                    self.schedule(
                        at,
                        Ev::Deliver {
                            node: pn,
                            conn: pc,
                            bytes,
                        },
                    );
                }
                Output::Close { conn, reason } => {
                    self.nodes[node].closes.push(reason);
                    if let Some(end) = self.links.remove(&(node, conn)) {
                        self.links.remove(&(end.node, end.conn));
                        // The FIN follows the data already in flight.
                        let lat = self.latency();
                        let at = (self.now + lat).max(end.last_at);
                        self.schedule(
                            at,
                            Ev::Closed {
                                node: end.node,
                                conn: end.conn,
                            },
                        );
                    }
                }
                Output::Dial { addr } => {
                    let target = self.nodes.iter().position(|n| n.addr == addr);
                    let reachable = target
                        .filter(|t| self.nodes[*t].alive && self.group[*t] == self.group[node]);
                    match reachable {
                        None => {
                            let now = self.now;
                            self.nodes[node]
                                .router
                                .dial_failed(addr, "connection refused", now);
                        }
                        Some(t) => {
                            self.ephemeral = self.ephemeral.wrapping_add(1).max(30000);
                            let from = SocketAddr::new(self.nodes[node].addr.ip(), self.ephemeral);
                            let now = self.now;
                            let ha = self.nodes[node].router.connection_opened(addr, true, now);
                            let hb = self.nodes[t].router.connection_opened(from, false, now);
                            self.links.insert(
                                (node, ha),
                                LinkEnd {
                                    node: t,
                                    conn: hb,
                                    sent: 0,
                                    last_at: now,
                                    write_free_at: now,
                                },
                            );
                            self.links.insert(
                                (t, hb),
                                LinkEnd {
                                    node,
                                    conn: ha,
                                    sent: 0,
                                    last_at: now,
                                    write_free_at: now,
                                },
                            );
                            // Outputs of the accepting side were queued before
                            // the link existed on the dialling side's map;
                            // drain both now that both ends are linked.
                            self.drain(t);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs until `until` (simulated).
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_ev = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let next_timer = self.next_timer();
            let t_ev = next_ev.unwrap_or(until + Duration::from_secs(1));
            let t_tm = next_timer
                .map(|(t, _)| t)
                .unwrap_or(until + Duration::from_secs(1));
            let t = t_ev.min(t_tm);
            if t > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(t);
            if t_ev <= t_tm {
                let Some(Reverse((_, _, id))) = self.queue.pop() else {
                    continue;
                };
                let Some(ev) = self.events.remove(&id) else {
                    continue;
                };
                self.handle(ev);
            } else if let Some((_, i)) = next_timer {
                self.timers.pop();
                self.timer_at[i] = None;
                let now = self.now;
                self.nodes[i].router.handle_timeout(now);
                self.drain(i);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Start { node } => {
                self.nodes[node].alive = true;
                let peers = self.pending_targets.remove(&node).unwrap_or_default();
                self.nodes[node]
                    .router
                    .initiate_connections(peers, false, now);
                self.drain(node);
            }
            Ev::Deliver { node, conn, bytes } => {
                if !self.nodes[node].alive {
                    return;
                }
                self.delivered += 1;
                self.nodes[node].router.receive(conn, &bytes, now);
                self.drain(node);
            }
            Ev::WriteDone { node, conn } => {
                if self.nodes[node].alive {
                    self.nodes[node].router.transmit_done(conn, now);
                    self.drain(node);
                }
            }
            Ev::Closed { node, conn } => {
                self.nodes[node].router.connection_closed(conn, "EOF", now);
                self.drain(node);
            }
        }
    }

    /// Cuts every link between different groups.
    fn partition(&mut self, group: Vec<u32>) {
        self.group = group;
        let cut: Vec<(usize, ConnHandle)> = self
            .links
            .iter()
            .filter(|((a, _), end)| self.group[*a] != self.group[end.node])
            .map(|(k, _)| *k)
            .collect();
        let now = self.now;
        for (n, c) in cut {
            if self.links.remove(&(n, c)).is_some() {
                self.nodes[n]
                    .router
                    .connection_closed(c, "network partition", now);
                self.drain(n);
            }
        }
    }

    /// Whether every alive node in `members` sees exactly `members`, with
    /// identical entries, and each entry matches that node's own view.
    fn converged(&self, members: &[usize]) -> bool {
        let names: BTreeSet<PeerName> = members.iter().map(|i| node_name(*i)).collect();
        let truth: BTreeMap<PeerName, PeerView> = members
            .iter()
            .map(|i| {
                let me = self.nodes[*i].router.peers().ourself();
                (
                    me.name,
                    (
                        me.uid,
                        me.version,
                        me.connections
                            .values()
                            .map(|c| (c.remote, c.established))
                            .collect(),
                    ),
                )
            })
            .collect();
        for i in members {
            let peers = self.nodes[*i].router.peers();
            if peers.names() != names {
                return false;
            }
            for p in peers.iter() {
                let v = (
                    p.uid,
                    p.version,
                    p.connections
                        .values()
                        .map(|c| (c.remote, c.established))
                        .collect::<Vec<_>>(),
                );
                if truth.get(&p.name) != Some(&v) {
                    return false;
                }
            }
        }
        true
    }

    /// Steps time until `members` converge; returns the time it took or
    /// `None` after `limit`.
    fn run_until_converged(
        &mut self,
        members: &[usize],
        step: Duration,
        limit: Duration,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            let next = self.now + step;
            self.run_until(next);
            if self.converged(members) {
                return Some(self.now - start);
            }
        }
        None
    }

    fn gossip_rounds(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.router.counters().gossip_rounds)
            .max()
            .unwrap_or(0)
    }

    fn route_calculations(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.router.counters().route_calculations)
            .sum()
    }

    fn gossip_sent(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.router.counters().gossip_sent)
            .sum()
    }
}

/// A peer's entry as compared for convergence: UID, version, connections.
type PeerView = (PeerUid, u64, Vec<(PeerName, bool)>);

struct Report {
    peers: usize,
    /// Simulated time from the last join to convergence.
    converge: Duration,
    /// Simulated time from the first join to convergence.
    total: Duration,
    rounds: u64,
    /// Route recalculations, all peers together.
    recalcs: u64,
    messages: u64,
    bytes: u64,
    wall: Duration,
    /// CPU time of the whole test process while this run went (the
    /// machine is shared, so wall clock time says little).
    cpu: Duration,
}

/// User plus system CPU time of this process so far, from
/// `/proc/self/stat` (zero where that is unavailable).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, in clock ticks (100 per second).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Starts `n` peers at random times within `spread`, each pointing at up to
/// `k` random earlier peers; returns the simulation once they converged.
fn join_random(
    n: usize,
    k: usize,
    seed: u64,
    opts: NetOpts,
    discovery: bool,
    spread: Duration,
) -> (Sim, Report) {
    let wall = std::time::Instant::now();
    let cpu = process_cpu();
    let mut sim = Sim::new(seed, opts);
    let mut order: Vec<usize> = Vec::new();
    for i in 0..n {
        sim.add_node(
            |c| c.peer_discovery = discovery,
            seed.wrapping_mul(1000).wrapping_add(i as u64),
        );
        order.push(i);
    }
    // Random join order.
    for i in (1..order.len()).rev() {
        let j = sim.rng.gen_range(0..=i);
        order.swap(i, j);
    }
    let spread_ms = spread.as_millis() as u64;
    for (pos, &node) in order.iter().enumerate() {
        let at = sim.t0 + Duration::from_millis(spread_ms * pos as u64 / n.max(1) as u64);
        let mut targets = Vec::new();
        for _ in 0..k.min(pos) {
            let t = order[sim.rng.gen_range(0..pos)];
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        sim.start_at(node, at, &targets);
    }
    sim.run_until(sim.t0 + spread);
    let all: Vec<usize> = (0..n).collect();
    let took = sim
        .run_until_converged(&all, Duration::from_millis(500), Duration::from_secs(3600))
        .unwrap_or_else(|| panic!("{n} peers did not converge"));
    let report = Report {
        peers: n,
        converge: took,
        total: sim.now - sim.t0,
        rounds: sim.gossip_rounds(),
        recalcs: sim.route_calculations(),
        messages: sim.gossip_sent(),
        bytes: sim.bytes_sent,
        wall: wall.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
    };
    (sim, report)
}

fn print(label: &str, r: &Report, sim: &Sim) {
    println!(
        "{label}: {} peers converged {:.1} s after the last join ({:.1} s simulated in all, \
         {:.2} gossip intervals after the last join); periodic gossip rounds (max per peer): {}; \
         gossip messages sent: {}; bytes sent: {}; chunks delivered: {}; route recalculations \
         (all peers): {}; wall clock {:.1} s; CPU {:.1} s",
        r.peers,
        r.converge.as_secs_f64(),
        r.total.as_secs_f64(),
        r.converge.as_secs_f64() / 30.0,
        r.rounds,
        r.messages,
        r.bytes,
        sim.delivered,
        r.recalcs,
        r.wall.as_secs_f64(),
        r.cpu.as_secs_f64()
    );
}

/// Every peer knows all `n` peers, has a unicast route to each other one,
/// and all views agree (checked by `join_random` already).
fn assert_one_topology(sim: &mut Sim, n: usize) {
    let all: Vec<usize> = (0..n).collect();
    assert!(sim.converged(&all));
    for (i, node) in sim.nodes.iter_mut().enumerate() {
        assert_eq!(node.router.peers().len(), n, "peer {i}");
        let routes = node.router.routes().unicast.clone();
        for j in 0..n {
            if j != i {
                assert!(routes.contains_key(&node_name(j)), "{i} has a route to {j}");
            }
        }
    }
}

/// Peers join with discovery on and must end in a full mesh.
fn full_mesh_join(n: usize, seed: u64) {
    let (sim, r) = join_random(
        n,
        2,
        seed,
        NetOpts::default(),
        true,
        Duration::from_secs(60),
    );
    print(&format!("join-{n} (discovery on: full mesh)"), &r, &sim);
    for node in &sim.nodes {
        assert_eq!(node.router.peers().len(), n);
        assert_eq!(
            node.router.peers().ourself().connections.len(),
            n - 1,
            "full mesh"
        );
    }
    // Short IDs are unique once converged.
    let ids: BTreeSet<ShortId> = sim
        .nodes
        .iter()
        .map(|n| n.router.peers().ourself().short_id)
        .collect();
    assert_eq!(ids.len(), n);
}

#[test]
fn peers_join_with_discovery_and_form_a_full_mesh() {
    full_mesh_join(16, 1);
}

#[test]
#[ignore = "slow in debug builds: run with --release --ignored --nocapture"]
fn hundred_peers_join_with_discovery_and_form_a_full_mesh() {
    full_mesh_join(100, 1);
}

#[test]
fn flow_controlled_full_mesh_converges() {
    let opts = NetOpts {
        flow: true,
        ..NetOpts::default()
    };
    let (sim, r) = join_random(16, 2, 4, opts, true, Duration::from_secs(30));
    print("join-16 (full mesh, flow control)", &r, &sim);
    assert_eq!(sim.nodes[0].router.peers().ourself().connections.len(), 15);
}

#[test]
#[ignore = "measurement: 100 peers, full mesh, flow control, release mode"]
fn hundred_peers_full_mesh_with_flow_control() {
    let opts = NetOpts {
        flow: true,
        ..NetOpts::default()
    };
    let (sim, r) = join_random(100, 2, 1, opts, true, Duration::from_secs(60));
    print("join-100 (full mesh, flow control)", &r, &sim);
}

#[test]
#[ignore = "measurement: full-mesh sizes 16..48 in release mode"]
fn full_mesh_scaling_measurement() {
    for n in [16, 24, 32, 48] {
        full_mesh_join(n, 1);
    }
}

/// Peers join without discovery (each dials 3 random earlier peers); then
/// a broadcast must reach every peer exactly once and a unicast must be
/// relayed to a far peer.
fn sparse_join_and_route(n: usize, seed: u64) {
    let (mut sim, r) = join_random(
        n,
        3,
        seed,
        NetOpts::default(),
        false,
        Duration::from_secs(30),
    );
    print(
        &format!("join-{n} (no discovery, 3 targets each)"),
        &r,
        &sim,
    );
    // Broadcast from one peer reaches each other peer exactly once.
    let now = sim.now;
    sim.nodes[0]
        .router
        .gossip_broadcast("set", vec![encode_set(&BTreeSet::from([4242]))], now);
    sim.drain(0);
    // Unicast to the peer farthest away arrives.
    let far = n - 7;
    let dst = node_name(far);
    sim.nodes[3]
        .router
        .gossip_unicast("set", dst, b"hello", now)
        .expect("route");
    sim.drain(3);
    sim.run_until(now + Duration::from_secs(5));
    for (i, n) in sim.nodes.iter_mut().enumerate() {
        let g = n.router.gossiper_mut::<SetGossiper>("set").expect("set");
        if i != 0 {
            assert_eq!(
                g.broadcasts_seen.get(&4242),
                Some(&1),
                "peer {i} saw the broadcast once"
            );
        }
        if i == far {
            assert_eq!(g.unicasts, vec![(node_name(3), b"hello".to_vec())]);
        } else {
            assert!(g.unicasts.is_empty());
        }
    }
}

#[test]
fn sparse_mesh_converges_and_routes_broadcast_and_unicast() {
    sparse_join_and_route(40, 2);
}

#[test]
#[ignore = "slow in debug builds: run with --release --ignored --nocapture"]
fn hundred_peers_sparse_mesh_converges_and_routes() {
    sparse_join_and_route(100, 2);
}

#[test]
fn partition_splits_and_heals() {
    let n = 12;
    let (mut sim, _) = join_random(n, 2, 3, NetOpts::default(), true, Duration::from_secs(20));
    let group: Vec<u32> = (0..n).map(|i| u32::from(i >= n / 2)).collect();
    let a: Vec<usize> = (0..n / 2).collect();
    let b: Vec<usize> = (n / 2..n).collect();
    sim.partition(group);
    let ta = sim
        .run_until_converged(&a, Duration::from_millis(500), Duration::from_secs(600))
        .expect("side A converges");
    assert!(sim.converged(&b), "side B converged too");
    println!(
        "partition: each side converged {:.1} s after the split",
        ta.as_secs_f64()
    );
    for i in &a {
        assert_eq!(
            sim.nodes[*i].router.peers().len(),
            n / 2,
            "peers of the other side were collected"
        );
    }
    // Heal: cross links come back as direct targets are retried (backoff
    // caps at 6 minutes).
    sim.partition(vec![0; n]);
    let all: Vec<usize> = (0..n).collect();
    let th = sim
        .run_until_converged(&all, Duration::from_secs(1), Duration::from_secs(1800))
        .expect("heals");
    println!(
        "partition: healed and converged {:.1} s after the heal",
        th.as_secs_f64()
    );
}

#[test]
fn short_id_collision_resolves() {
    // Find two router seeds that draw the same short ID.
    let short_of = |seed: u64| {
        let mut r = StdRng::seed_from_u64(seed);
        let _ = PeerUid::random(&mut r);
        ShortId::random(&mut r)
    };
    let first = short_of(1);
    let second = (2..1_000_000u64)
        .find(|s| short_of(*s) == first)
        .expect("a colliding seed");
    let mut sim = Sim::new(9, NetOpts::default());
    let a = sim.add_node(|_| {}, 1);
    let b = sim.add_node(|_| {}, second);
    assert_eq!(
        sim.nodes[a].router.peers().ourself().short_id,
        sim.nodes[b].router.peers().ourself().short_id
    );
    let t0 = sim.t0;
    sim.start_at(a, t0, &[]);
    sim.start_at(b, t0, &[a]);
    sim.run_until(t0 + Duration::from_secs(10));
    let sa = sim.nodes[a].router.peers().ourself().short_id;
    let sb = sim.nodes[b].router.peers().ourself().short_id;
    assert_eq!(sa, first, "the lower name keeps its short ID");
    assert_ne!(sb, first, "the higher name moved");
    assert!(sim.converged(&[a, b]));
    for n in &sim.nodes {
        let p = n.router.peers();
        assert_eq!(p.by_short_id(sa).map(|x| x.name), Some(node_name(a)));
        assert_eq!(p.by_short_id(sb).map(|x| x.name), Some(node_name(b)));
    }
}

#[test]
fn simultaneous_duplicate_connections_leave_exactly_one() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed, NetOpts::default());
        let a = sim.add_node(|_| {}, 100 + seed);
        let b = sim.add_node(|_| {}, 200 + seed);
        let t0 = sim.t0;
        // Both listen before either dials, so both dials succeed.
        sim.nodes[a].alive = true;
        sim.nodes[b].alive = true;
        sim.start_at(a, t0, &[b]);
        sim.start_at(b, t0, &[a]);
        sim.run_until(t0 + Duration::from_secs(20));
        assert!(sim.converged(&[a, b]), "seed {seed}");
        let ca = sim.nodes[a].router.status(sim.now);
        let cb = sim.nodes[b].router.status(sim.now);
        let est_a: Vec<_> = ca
            .connections
            .iter()
            .filter(|c| c.state == "established")
            .collect();
        let est_b: Vec<_> = cb
            .connections
            .iter()
            .filter(|c| c.state == "established")
            .collect();
        assert_eq!(est_a.len(), 1, "seed {seed}: {:?}", ca.connections);
        assert_eq!(est_b.len(), 1, "seed {seed}: {:?}", cb.connections);
        // Both ends kept the same TCP connection.
        assert_eq!(sim.links.len(), 2, "seed {seed}: one live link (two ends)");
        assert_ne!(est_a[0].outbound, est_b[0].outbound);
        let dups = sim.nodes[a]
            .closes
            .iter()
            .chain(&sim.nodes[b].closes)
            .filter(|r| matches!(r, CloseReason::Duplicate(_)))
            .count();
        assert!(dups >= 1, "seed {seed}: a duplicate was refused");
    }
}

#[test]
fn loss_and_reordering_do_not_break_convergence() {
    let opts = NetOpts {
        min_latency_ms: 1,
        max_latency_ms: 200,
        loss: 0.05,
        reorder: true,
        flow: false,
        plain_codec: false,
    };
    let (sim, r) = join_random(16, 2, 5, opts, true, Duration::from_secs(30));
    print("join-16 with 5% loss and reordering", &r, &sim);
}

#[test]
fn encrypted_mesh_converges_and_wrong_password_is_refused() {
    let mut sim = Sim::new(11, NetOpts::default());
    let mut ids = Vec::new();
    for i in 0..6u64 {
        ids.push(sim.add_node(|c| c.password = Some(b"s3cret".to_vec()), 500 + i));
    }
    let intruder = sim.add_node(|c| c.password = Some(b"guess".to_vec()), 999);
    let t0 = sim.t0;
    for (k, id) in ids.iter().enumerate() {
        let targets: Vec<usize> = if k == 0 { vec![] } else { vec![ids[k - 1]] };
        sim.start_at(*id, t0 + Duration::from_millis(10 * k as u64), &targets);
    }
    sim.start_at(intruder, t0, &[ids[0]]);
    sim.run_until(t0 + Duration::from_secs(30));
    assert!(sim.converged(&ids));
    assert_eq!(sim.nodes[intruder].router.peers().len(), 1);
    assert!(
        sim.nodes[intruder]
            .closes
            .contains(&CloseReason::Protocol(ConnError::PasswordMismatch)),
        "{:?}",
        sim.nodes[intruder].closes
    );
    assert!(
        sim.nodes[ids[0]]
            .closes
            .contains(&CloseReason::Protocol(ConnError::PasswordMismatch)),
        "the other side says so too: {:?}",
        sim.nodes[ids[0]].closes
    );
    let st = sim.nodes[ids[0]].router.status(sim.now);
    assert!(st.encryption && st.connections.iter().any(|c| c.encrypted));
}

#[test]
fn dead_peer_is_collected_and_line_reroutes() {
    // 0 - 1 - 2 plus 0 - 2 via discovery; kill 1: the others keep a direct link.
    let mut sim = Sim::new(21, NetOpts::default());
    for i in 0..3 {
        sim.add_node(|_| {}, 300 + i);
    }
    let t0 = sim.t0;
    sim.start_at(0, t0, &[]);
    sim.start_at(1, t0, &[0]);
    sim.start_at(2, t0, &[1]);
    sim.run_until(t0 + Duration::from_secs(10));
    assert!(sim.converged(&[0, 1, 2]));
    assert_eq!(
        sim.nodes[0].router.peers().ourself().connections.len(),
        2,
        "discovery linked 0 and 2"
    );
    // Kill 1.
    sim.nodes[1].alive = false;
    let ends: Vec<(usize, ConnHandle)> = sim
        .links
        .iter()
        .filter(|((n, _), _)| *n == 1)
        .map(|(_, e)| (e.node, e.conn))
        .collect();
    let now = sim.now;
    for (n, c) in ends {
        sim.nodes[n]
            .router
            .connection_closed(c, "connection reset", now);
        sim.drain(n);
    }
    sim.links.retain(|(n, _), e| *n != 1 && e.node != 1);
    sim.run_until(now + Duration::from_secs(5));
    assert!(sim.converged(&[0, 2]));
    let r = sim.nodes[0].router.routes().unicast.clone();
    assert_eq!(r.get(&node_name(2)), Some(&node_name(2)));
    assert!(!r.contains_key(&node_name(1)));
}

/// 100 peers start in a random order within a minute, each given up to
/// three random earlier peers as targets, and end with one topology. About
/// 175,000 gossip messages go out on the way, which takes 50–90 s of CPU in
/// a debug build; the normal run covers random-order joins with 16 and 40
/// peers instead.
#[test]
#[ignore = "50-90 s of CPU in debug builds: run with --release -- --ignored sim_100 --nocapture"]
fn sim_100_peers_random_join_converge() {
    let opts = NetOpts {
        flow: true,
        ..NetOpts::default()
    };
    let (mut sim, r) = join_random(100, 3, 1, opts, false, Duration::from_secs(60));
    print(
        "sim_100 (random order, no discovery, 3 targets, flow control)",
        &r,
        &sim,
    );
    assert_one_topology(&mut sim, 100);
}

/// 1,000 peers, same shape as `sim_100` (join window 120 s, seed 7). With
/// route recalculation coalesced the cost is mostly gossip volume (about
/// n² messages); a release run took 25 min of CPU (see docs/benchmarks.md,
/// "mesh convergence"), far too long for the unit stage.
#[test]
#[ignore = "about 25 min of CPU in release: cargo test --release -p weave-router --test mesh_sim -- --ignored sim_1000 --nocapture"]
fn sim_1000_peers_random_join_converge() {
    let opts = NetOpts {
        flow: true,
        ..NetOpts::default()
    };
    let (mut sim, r) = join_random(1000, 3, 7, opts, false, Duration::from_secs(120));
    print(
        "sim_1000 (random order, no discovery, 3 targets, flow control)",
        &r,
        &sim,
    );
    assert_one_topology(&mut sim, 1000);
}

/// Peers limited to protocol version 1 (as an old Weave router) join a
/// mesh of version-2 peers: all converge, and each connection speaks
/// version 1 exactly when one of its ends cannot speak 2. Plain and
/// encrypted; also with loss and reordering after the intro.
#[test]
fn version_one_peers_join_a_version_two_mesh() {
    let old = [2usize, 5, 6];
    for (seed, password, loss) in [
        (31, None, 0.0),
        (32, Some(b"pw".to_vec()), 0.0),
        (33, None, 0.05),
    ] {
        let opts = NetOpts {
            loss,
            reorder: loss > 0.0,
            max_latency_ms: if loss > 0.0 { 200 } else { 20 },
            ..NetOpts::default()
        };
        let mut sim = Sim::new(seed, opts);
        for i in 0..8 {
            let pw = password.clone();
            sim.add_node(
                |c| {
                    c.password = pw;
                    if old.contains(&i) {
                        c.max_version = 1;
                    }
                },
                700 + i as u64,
            );
        }
        let t0 = sim.t0;
        for i in 0..8 {
            let targets: Vec<usize> = if i == 0 { vec![] } else { vec![i - 1] };
            sim.start_at(i, t0 + Duration::from_millis(50 * i as u64), &targets);
        }
        let all: Vec<usize> = (0..8).collect();
        sim.run_until(t0 + Duration::from_secs(1));
        sim.run_until_converged(&all, Duration::from_millis(500), Duration::from_secs(600))
            .unwrap_or_else(|| panic!("seed {seed}: mixed-version mesh did not converge"));
        let mut seen = BTreeSet::new();
        for i in 0..8 {
            let st = sim.nodes[i].router.status(sim.now);
            assert_eq!(
                st.protocol_max_version,
                if old.contains(&i) { 1 } else { 2 }
            );
            for c in st.connections.iter().filter(|c| c.state == "established") {
                let (remote, _) = c.remote.clone().expect("remote");
                let j = (0..8)
                    .find(|j| node_name(*j) == remote)
                    .expect("known peer");
                let expect = if old.contains(&i) || old.contains(&j) {
                    1
                } else {
                    2
                };
                assert_eq!(c.protocol_version, expect, "seed {seed}: {i}-{j}");
                assert_eq!(c.encrypted, password.is_some());
                seen.insert(c.protocol_version);
            }
            // Discovery made it a full mesh across versions.
            assert_eq!(st.connections.len(), 7, "seed {seed}: peer {i}");
        }
        assert_eq!(seen, BTreeSet::from([1, 2]));
    }
}

#[test]
#[ignore = "measurement: prints the 100-peer numbers in release mode"]
fn hundred_peers_measurement() {
    for seed in 1..=3 {
        let (sim, r) = join_random(
            100,
            3,
            seed,
            NetOpts::default(),
            false,
            Duration::from_secs(60),
        );
        print(&format!("join-100 seed {seed} (no discovery)"), &r, &sim);
    }
}

/// The same run as `sim_100`/`sim_1000` with the size and seed taken from
/// `MESH_SIM_PEERS` (default 200) and `MESH_SIM_SEED` (default 7), for
/// measuring other sizes by hand; the join window is 60 s up to 500 peers
/// and 120 s above.
#[test]
#[ignore = "measurement: MESH_SIM_PEERS=n cargo test --release -p weave-router --test mesh_sim -- --ignored sim_n --nocapture"]
fn sim_n_peers_random_join_converge() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(d)
    };
    let n = env("MESH_SIM_PEERS", 200) as usize;
    let seed = env("MESH_SIM_SEED", 7);
    let spread = Duration::from_secs(if n > 500 { 120 } else { 60 });
    let opts = NetOpts {
        flow: true,
        ..NetOpts::default()
    };
    let (mut sim, r) = join_random(n, 3, seed, opts, false, spread);
    print(
        &format!("sim_{n} seed {seed} (random order, no discovery, 3 targets, flow control)"),
        &r,
        &sim,
    );
    assert_one_topology(&mut sim, n);
}
