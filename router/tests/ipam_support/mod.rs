//! A deterministic in-process network of IPAM allocators for tests: seeded
//! message ordering, partitions, restarts from the persisted store,
//! permanent deaths with rmpeer, and a ground-truth record of which
//! container holds which address.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use weave_router::ipam::{
    Address, Allocator, Cidr, Config, GossipState, InitMode, Input, OpError, OpId, Output,
    PeerName, Persisted, Range, Reply, SeededRng, TICK_INTERVAL, UnicastMsg,
};

/// What a request was, so its reply can be checked.
#[derive(Clone, Debug)]
pub enum Req {
    /// Allocate for a container.
    Allocate(String),
    /// Claim an address for a container.
    Claim(String, Address),
    /// Delete a container's addresses.
    Delete(String),
    /// rmpeer.
    Takeover,
    /// reset.
    Shutdown,
}

/// A message in flight.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A broadcast copy for one receiver.
    Broadcast {
        /// Sender index.
        from: usize,
        /// Receiver index.
        to: usize,
        /// Payload.
        state: GossipState,
    },
    /// A unicast.
    Unicast {
        /// Sender index.
        from: usize,
        /// Receiver index.
        to: usize,
        /// Payload.
        msg: UnicastMsg,
    },
}

impl Msg {
    fn ends(&self) -> (usize, usize) {
        match self {
            Msg::Broadcast { from, to, .. } | Msg::Unicast { from, to, .. } => (*from, *to),
        }
    }
}

/// Lifecycle of a simulated peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Running.
    Up,
    /// Stopped; may restart from its store.
    Stopped,
    /// Gone for good (killed or reset).
    Gone,
}

/// One simulated router.
pub struct Node {
    /// The allocator while running.
    pub alloc: Option<Allocator>,
    /// The persistent store.
    pub store: Persisted,
    /// Lifecycle.
    pub life: Life,
    /// `--ipalloc-init` for this peer.
    pub mode: InitMode,
    /// Restarts so far (for fresh UIDs).
    pub runs: u64,
}

/// The simulated cluster.
pub struct Sim {
    /// Schedule seed.
    pub seed: u64,
    /// Peers; index i has name i+1.
    pub nodes: Vec<Node>,
    /// Messages in flight.
    pub queue: VecDeque<Msg>,
    /// Partition id per peer; peers talk only within a partition.
    pub part: Vec<u32>,
    /// Simulated time.
    pub now: Duration,
    /// Randomness for the schedule.
    pub rng: SeededRng,
    /// The allocation range.
    pub universe: Cidr,
    /// Outstanding requests.
    pub pending: BTreeMap<(usize, OpId), Req>,
    /// Ground truth: address to (peer, container).
    pub holders: BTreeMap<Address, (usize, String)>,
    /// Gossip rejections and other failures seen.
    pub problems: Vec<String>,
    /// Counters for the report.
    pub stats: Stats,
    next_op: u64,
    next_container: u64,
    target_count: u32,
}

/// What happened during a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Successful allocations.
    pub allocated: u64,
    /// Successful claims.
    pub claimed: u64,
    /// Failed claims (owned elsewhere, in use ...).
    pub claim_refused: u64,
    /// Frees.
    pub freed: u64,
    /// Restarts.
    pub restarts: u64,
    /// rmpeer operations.
    pub rmpeers: u64,
    /// Resets.
    pub resets: u64,
    /// Partitions.
    pub partitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Space donations (ring updates delivered by unicast).
    pub unicasts: u64,
}

/// Name of peer `i`.
pub fn name(i: usize) -> PeerName {
    PeerName(i as u64 + 1)
}

impl Sim {
    /// A cluster of peers with the given modes, all running.
    pub fn new(seed: u64, universe: Cidr, modes: Vec<InitMode>, target_count: u32) -> Sim {
        let n = modes.len();
        let mut s = Sim {
            seed,
            nodes: modes
                .into_iter()
                .map(|mode| Node {
                    alloc: None,
                    store: Persisted::default(),
                    life: Life::Stopped,
                    mode,
                    runs: 0,
                })
                .collect(),
            queue: VecDeque::new(),
            part: vec![0; n],
            now: Duration::from_secs(1_700_000_000),
            rng: SeededRng::new(seed),
            universe,
            pending: BTreeMap::new(),
            holders: BTreeMap::new(),
            problems: Vec::new(),
            stats: Stats::default(),
            next_op: 1,
            next_container: 1,
            target_count,
        };
        for i in 0..n {
            s.start(i);
        }
        s.peers_changed();
        s
    }

    /// Fails with the seed and a description.
    pub fn fail(&self, what: &str) -> ! {
        panic!("IPAM simulation seed {} failed: {what}", self.seed)
    }

    /// Indexes of running peers.
    pub fn up(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].life == Life::Up)
            .collect()
    }

    /// Starts (or restarts) peer `i` from its store.
    pub fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.runs += 1;
        let config = Config {
            our_name: name(i),
            our_uid: (i as u64 + 1) * 1_000_003 + node.runs,
            our_nickname: format!("host{}", i + 1),
            universe: self.universe,
            mode: node.mode.clone(),
            target_count: self.target_count,
            pre_claims: Vec::new(),
            rng_seed: self.seed ^ ((i as u64) << 32) ^ node.runs,
        };
        match Allocator::new(config, node.store.clone(), self.now) {
            Ok((a, outs)) => {
                node.alloc = Some(a);
                node.life = Life::Up;
                self.apply(i, outs);
            }
            Err(e) => self.fail(&format!("allocator {i} would not start: {e}")),
        }
    }

    /// Stops peer `i` (its unsent work is lost; its store is kept).
    pub fn stop(&mut self, i: usize, gone: bool) {
        self.nodes[i].alloc = None;
        self.nodes[i].life = if gone { Life::Gone } else { Life::Stopped };
        self.queue.retain(|m| m.ends().1 != i);
        self.pending.retain(|(p, _), _| *p != i);
        if gone {
            // Its containers go with it.
            self.holders.retain(|_, (p, _)| *p != i);
        }
        self.peers_changed();
    }

    /// Tells every running peer which peers it can reach.
    pub fn peers_changed(&mut self) {
        for i in self.up() {
            let known: BTreeSet<PeerName> = self
                .up()
                .into_iter()
                .filter(|&j| self.part[j] == self.part[i])
                .map(name)
                .collect();
            self.input(i, Input::PeersChanged { known });
        }
    }

    /// Feeds an input to peer `i` and carries out its outputs.
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        let Some(a) = self.nodes[i].alloc.as_mut() else {
            return;
        };
        let outs = a.handle(now, input);
        if let Err(e) = a.check_invariants() {
            self.fail(&format!("peer {i} invariant: {e}"));
        }
        self.apply(i, outs);
    }

    fn new_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    /// A fresh container id.
    pub fn new_container(&mut self) -> String {
        self.next_container += 1;
        format!("c{}", self.next_container)
    }

    /// Sends a request to peer `i`.
    pub fn request(&mut self, i: usize, req: Req, input_for: impl FnOnce(OpId) -> Input) {
        let op = self.new_op();
        self.pending.insert((i, op), req);
        self.input(i, input_for(op));
    }

    /// Asks peer `i` to allocate in `subnet` for a new container.
    pub fn allocate(&mut self, i: usize, subnet: Cidr) -> String {
        let ident = self.new_container();
        let id2 = ident.clone();
        self.request(i, Req::Allocate(ident.clone()), |op| Input::Allocate {
            op,
            ident: id2,
            subnet,
            is_container: true,
        });
        ident
    }

    /// Asks peer `i` to claim `addr` for a new container.
    pub fn claim(&mut self, i: usize, addr: Address) -> String {
        let ident = self.new_container();
        let id2 = ident.clone();
        let cidr = Cidr {
            addr,
            prefix_len: self.universe.prefix_len,
        };
        self.request(i, Req::Claim(ident.clone(), addr), |op| Input::Claim {
            op,
            ident: id2,
            cidr,
            is_container: true,
            no_error_on_unknown: false,
        });
        ident
    }

    fn record_hold(&mut self, i: usize, ident: &str, addr: Address) {
        match self.holders.get(&addr) {
            Some((p, who)) if *p == i && who == ident => {}
            Some((p, who)) => self.fail(&format!(
                "address {addr} given to {ident} on peer {i} while {who} on peer {p} holds it"
            )),
            None => {
                self.holders.insert(addr, (i, ident.to_string()));
            }
        }
    }

    fn apply(&mut self, i: usize, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Persist(w) => self.nodes[i].store.apply(&w),
                Output::Broadcast(state) => {
                    for j in self.up() {
                        if j != i && self.part[j] == self.part[i] {
                            self.queue.push_back(Msg::Broadcast {
                                from: i,
                                to: j,
                                state: state.clone(),
                            });
                        }
                    }
                }
                Output::Unicast { to, msg } => {
                    let j = (to.0 as usize).wrapping_sub(1);
                    if j < self.nodes.len() {
                        self.queue.push_back(Msg::Unicast {
                            from: i,
                            to: j,
                            msg,
                        });
                    }
                }
                Output::Reply { op, result } => self.on_reply(i, op, result),
                Output::GossipRejected { sender, error } => self
                    .problems
                    .push(format!("peer {i} rejected gossip from {sender:?}: {error}")),
                Output::Warn(_) => {}
            }
        }
    }

    fn on_reply(&mut self, i: usize, op: OpId, result: Result<Reply, OpError>) {
        let Some(req) = self.pending.remove(&(i, op)) else {
            return;
        };
        match (req, result) {
            (Req::Allocate(ident), Ok(Reply::Allocated(c))) => {
                if !self.universe.range().contains(c.addr) {
                    self.fail(&format!("allocated {c} outside {}", self.universe));
                }
                self.stats.allocated += 1;
                self.record_hold(i, &ident, c.addr);
            }
            (Req::Claim(ident, addr), Ok(Reply::Claimed)) => {
                self.stats.claimed += 1;
                self.record_hold(i, &ident, addr);
            }
            (Req::Claim(..), Err(_)) => self.stats.claim_refused += 1,
            (Req::Delete(ident), Ok(_)) => {
                self.stats.freed += 1;
                self.holders
                    .retain(|_, (p, who)| !(*p == i && *who == ident));
            }
            _ => {}
        }
    }

    /// Delivers the message at `idx` of the queue (if its ends can talk).
    pub fn deliver_at(&mut self, idx: usize) {
        let Some(m) = self.queue.remove(idx) else {
            return;
        };
        let (from, to) = m.ends();
        if self.nodes[to].life != Life::Up || self.part[from] != self.part[to] {
            return;
        }
        self.stats.delivered += 1;
        match m {
            Msg::Broadcast { state, .. } => self.input(
                to,
                Input::GossipBroadcast {
                    sender: name(from),
                    state,
                },
            ),
            Msg::Unicast { msg, .. } => {
                self.stats.unicasts += 1;
                self.input(
                    to,
                    Input::Unicast {
                        sender: name(from),
                        msg,
                    },
                )
            }
        }
    }

    /// Delivers one random message.
    pub fn deliver_random(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let idx = self.rng.below(self.queue.len() as u64) as usize;
        self.deliver_at(idx);
    }

    /// Delivers messages in random order until none is left (bounded).
    pub fn drain(&mut self) {
        let mut budget = 200_000;
        while !self.queue.is_empty() && budget > 0 {
            self.deliver_random();
            budget -= 1;
        }
        if budget == 0 {
            let sample: Vec<String> = self
                .queue
                .iter()
                .take(12)
                .map(|m| match m {
                    Msg::Broadcast { from, to, state } => format!(
                        "bcast {from}->{to} ring={} paxos={:?}",
                        state.ring.is_some(),
                        state.paxos.as_ref().map(|p| p
                            .values()
                            .map(|c| (c.promise.round, c.promise.proposer.name.0, c.accepted.round))
                            .collect::<Vec<_>>())
                    ),
                    Msg::Unicast { from, to, msg } => format!("uni {from}->{to} tag {}", msg.tag()),
                })
                .collect();
            self.fail(&format!(
                "messages kept flowing without end: {}",
                sample.join("\n")
            ));
        }
    }

    /// Advances time one tick and ticks every running peer.
    pub fn tick(&mut self) {
        self.now += TICK_INTERVAL;
        for i in self.up() {
            self.input(i, Input::Tick);
        }
    }

    /// Periodic gossip from `i` to `j` (if they can talk).
    pub fn periodic(&mut self, i: usize, j: usize) {
        if i == j || self.part[i] != self.part[j] {
            return;
        }
        let Some(state) = self.nodes[i].alloc.as_ref().map(|a| a.gossip_state()) else {
            return;
        };
        self.input(j, Input::GossipPeriodic { state });
    }

    /// Periodic gossip between every pair of running peers.
    pub fn gossip_all(&mut self) {
        let up = self.up();
        for &i in &up {
            for &j in &up {
                self.periodic(i, j);
            }
        }
    }

    /// Puts every peer in one partition.
    pub fn heal(&mut self) {
        self.part.iter_mut().for_each(|p| *p = 0);
        self.peers_changed();
    }

    /// Splits the peers randomly into `k` partitions.
    pub fn partition(&mut self, k: u32) {
        for i in 0..self.part.len() {
            self.part[i] = self.rng.below(u64::from(k)) as u32;
        }
        self.stats.partitions += 1;
        self.peers_changed();
    }

    /// Heals, then alternates ticks, deliveries and full gossip until every
    /// running peer holds the same ring (or gives up).
    pub fn settle(&mut self, rounds: usize) -> bool {
        self.heal();
        for _ in 0..rounds {
            self.drain();
            self.gossip_all();
            self.drain();
            if self.rings_agree() {
                return true;
            }
            self.tick();
        }
        self.rings_agree()
    }

    /// True when all running peers hold the same ring.
    pub fn rings_agree(&self) -> bool {
        let rings: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.alloc.as_ref().map(|a| a.ring()))
            .collect();
        rings.windows(2).all(|w| w[0].same_contents(w[1]))
    }

    /// Checks that no address is held twice across running peers' records
    /// and that their records match the ground truth.
    pub fn check_no_duplicates(&self) {
        let mut seen: BTreeMap<Address, (usize, String)> = BTreeMap::new();
        let range: Range = self.universe.range();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(a) = n.alloc.as_ref() else { continue };
            for (ident, d) in a.owned() {
                for c in &d.cidrs {
                    if !range.contains(c.addr) {
                        continue;
                    }
                    if let Some((p, who)) = seen.insert(c.addr, (i, ident.clone())) {
                        self.fail(&format!(
                            "address {} recorded by {ident} on peer {i} and by {who} on peer {p}",
                            c.addr
                        ));
                    }
                }
            }
        }
        for (addr, (p, who)) in &self.holders {
            if self.nodes[*p].life == Life::Up && seen.get(addr) != Some(&(*p, who.clone())) {
                self.fail(&format!(
                    "ground truth says {who} on peer {p} holds {addr}, its allocator disagrees"
                ));
            }
        }
    }

    /// rmpeer of `dead` run on `by`, after restarting stopped peers,
    /// healing and quiescing, so that `by` knows everything the dead peer
    /// told anyone (Weave's documented precondition for a safe rmpeer: a
    /// transfer the dead peer made that has not reached `by` yields an
    /// inconsistent ring).
    pub fn rmpeer(&mut self, dead: usize, by: usize) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].life == Life::Stopped {
                self.stats.restarts += 1;
                self.start(i);
            }
        }
        self.heal();
        self.drain();
        self.gossip_all();
        self.drain();
        let peer = name(dead).to_string();
        self.stats.rmpeers += 1;
        self.request(by, Req::Takeover, |op| Input::AdminTakeover { op, peer });
    }

    /// reset of peer `i`: its containers are removed, it hands its ranges
    /// on, then leaves for good.
    pub fn reset(&mut self, i: usize) {
        let mine: Vec<String> = self
            .holders
            .values()
            .filter(|(p, _)| *p == i)
            .map(|(_, w)| w.clone())
            .collect();
        for ident in mine {
            self.request(i, Req::Delete(ident.clone()), |op| Input::Delete {
                op,
                ident,
            });
        }
        self.stats.resets += 1;
        self.request(i, Req::Shutdown, |op| Input::Shutdown { op });
        self.stop(i, true);
    }
}
