//! The allocator state machine: ring, space, Paxos and pending requests.
//!
//! Drive it with [`Allocator::handle`], passing the current time and one
//! [`Input`]; it returns the [`Output`]s to carry out, in order. Apply every
//! [`Output::Persist`] durably before sending anything that follows it, so a
//! crash never leaves the store behind what other peers were told.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::address::{Address, Cidr, Range, cidr_view};
use super::messages::{
    GossipState, Input, OpError, OpId, Output, OwnedData, PaxosSnapshot, PendingReason,
    PersistWrite, Persisted, Reply, UnicastMsg, UpdateError,
};
use super::paxos::{NodeId, Participant, PaxosNode, PaxosStatus, normalize_consensus};
use super::peer::{PeerName, SeededRng};
use super::ring::{Ring, RingError};
use super::space::Space;

/// How often the driver should send [`Input::Tick`].
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a dead container keeps its addresses.
pub const CONTAINER_DIED_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a claim retries an unreachable owner before failing.
pub const MAX_CLAIM_TRIES: u32 = 5;
/// The identifier meaning "no container".
pub const NO_CONTAINER_ID: &str = "_";

/// How the ring is first created (`--ipalloc-init`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitMode {
    /// `consensus[=N]`: Paxos among electors; quorum N/2+1, or guessed
    /// from the number of configured peer addresses.
    Consensus {
        /// N, when given.
        peer_count: Option<u32>,
    },
    /// `seed=<names>`: divide the ring among these peers without a vote.
    Seed(Vec<PeerName>),
    /// `observer`: never vote; get the ring from others.
    Observer,
}

/// An address found in use before the allocator started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreClaim {
    /// The holder.
    pub ident: String,
    /// True for a container id.
    pub is_container: bool,
    /// The address.
    pub cidr: Cidr,
}

/// Allocator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our peer name.
    pub our_name: PeerName,
    /// Our UID for this run.
    pub our_uid: u64,
    /// Our nickname.
    pub our_nickname: String,
    /// The allocation range (`--ipalloc-range`); must not reach 255.255.255.255.
    pub universe: Cidr,
    /// `--ipalloc-init`.
    pub mode: InitMode,
    /// Number of configured peer addresses (for the quorum guess).
    pub target_count: u32,
    /// Addresses already in use at start.
    pub pre_claims: Vec<PreClaim>,
    /// Seed for the choice of peers to ask for space.
    pub rng_seed: u64,
}

/// A bad [`Config`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The universe cannot be a ring.
    #[error("bad allocation range: {0}")]
    Range(#[from] super::address::AddressError),
    /// The ring could not be built.
    #[error("bad allocation range: {0}")]
    Ring(#[from] RingError),
}

/// One ring range, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryStatus {
    /// First address.
    pub token: Address,
    /// Number of addresses.
    pub size: u32,
    /// Owner.
    pub peer: PeerName,
    /// Owner's nickname, if known.
    pub nickname: Option<String>,
    /// True when the router knows the owner.
    pub is_known_peer: bool,
    /// Entry version.
    pub version: u32,
}

/// A pending request, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingStatus {
    /// The identifier.
    pub ident: String,
    /// Subnet (allocate) or address (claim).
    pub cidr: Cidr,
    /// Why it waits.
    pub reason: PendingReason,
}

/// What `/status/ipam` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpamStatus {
    /// Our peer name.
    pub our_name: PeerName,
    /// Paxos progress while awaiting consensus.
    pub paxos: Option<PaxosStatus>,
    /// The allocation range.
    pub range: Cidr,
    /// Its size.
    pub range_num_ips: u64,
    /// Addresses allocated here.
    pub active_ips: u64,
    /// Every ring range.
    pub entries: Vec<EntryStatus>,
    /// Waiting claims.
    pub pending_claims: Vec<PendingStatus>,
    /// Waiting allocations.
    pub pending_allocates: Vec<PendingStatus>,
    /// Our owned ranges as aligned prefixes.
    pub cidr_view: Vec<Cidr>,
}

impl IpamStatus {
    /// The `Status:` line of the IPAM section of `/status`, in Weave's words.
    pub fn status_line(&self) -> String {
        if !self.entries.is_empty() {
            if self.entries.iter().all(|e| e.size == 0 || !e.is_known_peer) {
                "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead".into()
            } else if !self.pending_allocates.is_empty() {
                "waiting for IP(s) to become available".into()
            } else {
                "ready".into()
            }
        } else if let Some(p) = &self.paxos {
            if p.elector {
                format!(
                    "awaiting consensus (quorum: {}, known: {})",
                    p.quorum, p.known_nodes
                )
            } else {
                "priming".into()
            }
        } else {
            "idle".into()
        }
    }

    /// The body of `/status/ipam`: one line per owning peer (ours first)
    /// with its share of the range, in Weave's layout.
    pub fn ranges_text(&self) -> String {
        // Peer -> (nickname, reachable, addresses owned).
        let mut per_peer: BTreeMap<PeerName, (String, bool, u64)> = BTreeMap::new();
        for e in &self.entries {
            let slot = per_peer
                .entry(e.peer)
                .or_insert_with(|| (e.nickname.clone().unwrap_or_default(), e.is_known_peer, 0));
            slot.2 += u64::from(e.size);
        }
        let total = self.range_num_ips.max(1) as f64;
        let line = |name: PeerName, (nick, _, ips): &(String, bool, u64), info: &str| {
            let display = format!("{name}({nick})");
            let pct = *ips as f64 * 100.0 / total;
            format!("{display:<37} {ips:>8} IPs ({pct:04.1}% of total) {info}\n")
        };
        let mut out = String::new();
        if let Some(ours) = per_peer.get(&self.our_name) {
            out.push_str(&line(
                self.our_name,
                ours,
                &format!("({} active)", self.active_ips),
            ));
        }
        for (p, st) in &per_peer {
            if *p != self.our_name {
                out.push_str(&line(*p, st, if st.1 { "" } else { "- unreachable!" }));
            }
        }
        out
    }
}

/// Numbers for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpamMetrics {
    /// `weave_ips`: addresses allocated here.
    pub ips: u64,
    /// `weave_max_ips`: size of the allocation range.
    pub max_ips: u64,
    /// `weave_ipam_unreachable_count`: ring ranges owned by unknown peers.
    pub unreachable_count: u64,
    /// `weave_ipam_pending_allocates`.
    pub pending_allocates: u64,
}

#[derive(Clone, Debug)]
struct PendingAllocate {
    op: OpId,
    ident: String,
    subnet: Cidr,
    is_container: bool,
    reason: PendingReason,
}

#[derive(Clone, Debug)]
struct PendingClaim {
    op: Option<OpId>,
    replied: bool,
    tries: u32,
    ident: String,
    cidr: Cidr,
    is_container: bool,
    no_error_on_unknown: bool,
    reason: PendingReason,
}

/// The allocator.
#[derive(Debug)]
pub struct Allocator {
    our_name: PeerName,
    universe: Cidr,
    universe_range: Range,
    ring: Ring,
    space: Space,
    owned: BTreeMap<String, OwnedData>,
    nicknames: BTreeMap<PeerName, String>,
    pending_allocates: Vec<PendingAllocate>,
    pending_claims: Vec<PendingClaim>,
    pending_primes: Vec<OpId>,
    dead: BTreeMap<String, Duration>,
    participant: Participant,
    awaiting_consensus: bool,
    shutting_down: bool,
    known_peers: BTreeSet<PeerName>,
    peer_count: Option<u32>,
    target_count: u32,
    rng: SeededRng,
    now: Duration,
    retry_pending: bool,
    out: Vec<Output>,
}

impl Allocator {
    /// Starts an allocator from its configuration and whatever the store
    /// held; returns it with the outputs of starting (store clean-up, a
    /// seeded ring's broadcast).
    pub fn new(
        config: Config,
        persisted: Persisted,
        now: Duration,
    ) -> Result<(Allocator, Vec<Output>), ConfigError> {
        let universe_range = config.universe.checked_range()?;
        let ring = Ring::new(universe_range.start, universe_range.end, config.our_name)?;
        let node_id = NodeId {
            name: config.our_name,
            uid: config.our_uid,
        };
        let participant = match (&config.mode, &persisted.paxos) {
            (InitMode::Observer, _) => Participant::Observer,
            (_, Some(snap)) if snap.peer_name == config.our_name => {
                Participant::Elector(PaxosNode::restore(snap.id, snap.knows.clone()))
            }
            _ => Participant::Elector(PaxosNode::new(node_id)),
        };
        let peer_count = match &config.mode {
            InitMode::Consensus { peer_count } => peer_count.filter(|n| *n > 0),
            _ => None,
        };
        let mut nicknames = BTreeMap::new();
        nicknames.insert(config.our_name, config.our_nickname.clone());
        let mut a = Allocator {
            our_name: config.our_name,
            universe: config.universe,
            universe_range,
            ring,
            space: Space::new(),
            owned: BTreeMap::new(),
            nicknames,
            pending_allocates: Vec::new(),
            pending_claims: config
                .pre_claims
                .iter()
                .map(|c| PendingClaim {
                    op: None,
                    replied: true,
                    tries: 0,
                    ident: c.ident.clone(),
                    cidr: c.cidr,
                    is_container: c.is_container,
                    no_error_on_unknown: false,
                    reason: PendingReason::NotTried,
                })
                .collect(),
            pending_primes: Vec::new(),
            dead: BTreeMap::new(),
            participant,
            awaiting_consensus: false,
            shutting_down: false,
            known_peers: BTreeSet::new(),
            peer_count,
            target_count: config.target_count,
            rng: SeededRng::new(config.rng_seed),
            now,
            retry_pending: false,
            out: Vec::new(),
        };
        let loaded = a.load_persisted(persisted);
        match &config.mode {
            InitMode::Seed(seed) if !loaded && !seed.is_empty() => a.create_ring(seed),
            _ => {}
        }
        if loaded {
            a.try_pending_claims();
        }
        a.finish();
        let out = std::mem::take(&mut a.out);
        Ok((a, out))
    }

    /// Handles one input at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Output> {
        self.now = now;
        match input {
            Input::Allocate {
                op,
                ident,
                subnet,
                is_container,
            } => {
                let mut p = PendingAllocate {
                    op,
                    ident,
                    subnet,
                    is_container,
                    reason: PendingReason::NotTried,
                };
                if self.shutting_down {
                    self.cancel_allocate(&p);
                } else if !self.try_allocate(&mut p) {
                    self.pending_allocates.push(p);
                }
            }
            Input::Claim {
                op,
                ident,
                cidr,
                is_container,
                no_error_on_unknown,
            } => {
                let mut c = PendingClaim {
                    op: Some(op),
                    replied: false,
                    tries: 0,
                    ident,
                    cidr,
                    is_container,
                    no_error_on_unknown,
                    reason: PendingReason::NotTried,
                };
                if self.shutting_down {
                    self.cancel_claim(&mut c);
                } else if !self.try_claim(&mut c) {
                    self.pending_claims.push(c);
                }
            }
            Input::Delete { op, ident } => {
                let result = self.delete(&ident).map(|()| Reply::Freed);
                self.out.push(Output::Reply { op, result });
            }
            Input::Free { op, ident, addr } => {
                let result = if self.remove_owned(&ident, addr) {
                    let _ = self.space.free(addr);
                    Ok(Reply::Freed)
                } else {
                    Err(OpError::NotFound { ident, addr })
                };
                self.out.push(Output::Reply { op, result });
            }
            Input::Cancel { op } => self.cancel_op(op),
            Input::Prime { op } => {
                if self.shutting_down {
                    self.out.push(Output::Reply {
                        op,
                        result: Err(OpError::Cancelled {
                            kind: "Prime",
                            ident: String::new(),
                        }),
                    });
                } else if !self.try_prime(op) {
                    self.pending_primes.push(op);
                }
            }
            Input::ContainerDied { ident } => {
                if self.has_owned_by_container(&ident) {
                    self.dead.insert(ident.clone(), self.now);
                }
                self.cancel_ops_for(&ident);
            }
            Input::ContainerDestroyed { ident } => {
                if self.has_owned_by_container(&ident) {
                    let _ = self.delete(&ident);
                    self.dead.remove(&ident);
                }
            }
            Input::ContainerStarted { ident } => {
                self.dead.remove(&ident);
            }
            Input::PruneOwned { ids } => self.prune_owned(&ids),
            Input::GossipBroadcast { sender, state } => {
                if let Err(error) = self.update(Some(sender), &state) {
                    self.out.push(Output::GossipRejected {
                        sender: Some(sender),
                        error,
                    });
                }
            }
            Input::GossipPeriodic { state } => {
                if let Err(error) = self.update(None, &state) {
                    self.out.push(Output::GossipRejected {
                        sender: None,
                        error,
                    });
                }
            }
            Input::Unicast { sender, msg } => self.on_unicast(sender, msg),
            Input::PeersChanged { known } => self.known_peers = known,
            Input::TargetsChanged { count } => self.target_count = count,
            Input::PeerGone { peer } => {
                if !self.ring.peer_names().contains(&peer) {
                    self.nicknames.remove(&peer);
                }
            }
            Input::AdminTakeover { op, peer } => {
                let result = self.admin_takeover(&peer);
                self.out.push(Output::Reply { op, result });
            }
            Input::Shutdown { op } => {
                let heir = self.shutdown();
                self.out.push(Output::Reply {
                    op,
                    result: Ok(Reply::ShutDown(heir)),
                });
            }
            Input::Tick => self.tick(),
        }
        self.finish();
        std::mem::take(&mut self.out)
    }

    // ----- queries -----

    /// The addresses `ident` holds inside `r`.
    pub fn lookup(&self, ident: &str, r: Range) -> Vec<Cidr> {
        self.owned
            .get(ident)
            .map(|d| {
                d.cidrs
                    .iter()
                    .filter(|c| r.contains(c.addr))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ring replica.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Every identifier's addresses.
    pub fn owned(&self) -> &BTreeMap<String, OwnedData> {
        &self.owned
    }

    /// The allocation range.
    pub fn universe(&self) -> Cidr {
        self.universe
    }

    /// Our ranges, adjacent ones joined, in address order.
    pub fn owned_ranges(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for r in self.ring.owned_ranges() {
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// The CIDR view: our owned ranges as the minimal list of aligned
    /// prefixes (one data-plane flow each).
    pub fn cidr_view(&self) -> Vec<Cidr> {
        cidr_view(&self.owned_ranges())
    }

    /// What to send in periodic gossip.
    pub fn gossip_state(&self) -> GossipState {
        GossipState {
            now: self.now.as_secs() as i64,
            nicknames: self.nicknames.clone(),
            // Gob leaves out an empty map, so an elector that has not
            // voted yet looks like an observer on the wire; say so here too.
            paxos: if self.ring.is_empty() {
                self.participant.state().filter(|m| !m.is_empty()).cloned()
            } else {
                None
            },
            ring: (!self.ring.is_empty()).then(|| self.ring.clone()),
        }
    }

    /// True when the ring exists.
    pub fn has_ring(&self) -> bool {
        !self.ring.is_empty()
    }

    /// True while waiting for the initial consensus.
    pub fn awaiting_consensus(&self) -> bool {
        self.awaiting_consensus
    }

    /// The quorum we would use now.
    pub fn quorum(&self) -> u32 {
        match self.peer_count {
            Some(n) => n / 2 + 1,
            None => {
                // The configured peers plus ourselves.
                let cluster = self.target_count.saturating_add(1);
                cluster / 2 + 1
            }
        }
    }

    /// The status page's IPAM section.
    pub fn status(&self) -> IpamStatus {
        let paxos = self.awaiting_consensus.then(|| self.participant.status());
        let entries = if self.ring.is_empty() {
            Vec::new()
        } else {
            self.ring
                .all_range_info()
                .into_iter()
                .map(|ri| EntryStatus {
                    token: ri.range.start,
                    size: ri.range.size(),
                    peer: ri.peer,
                    nickname: self.nicknames.get(&ri.peer).cloned(),
                    is_known_peer: self.is_known_peer(ri.peer),
                    version: ri.version,
                })
                .collect()
        };
        IpamStatus {
            our_name: self.our_name,
            paxos,
            range: self.universe,
            range_num_ips: self.universe.size64(),
            active_ips: self.space.num_used(),
            entries,
            pending_claims: self
                .pending_claims
                .iter()
                .map(|c| PendingStatus {
                    ident: c.ident.clone(),
                    cidr: c.cidr,
                    reason: c.reason.clone(),
                })
                .collect(),
            pending_allocates: self
                .pending_allocates
                .iter()
                .map(|p| PendingStatus {
                    ident: p.ident.clone(),
                    cidr: p.subnet,
                    reason: p.reason.clone(),
                })
                .collect(),
            cidr_view: self.cidr_view(),
        }
    }

    /// Numbers for `/metrics`.
    pub fn metrics(&self) -> IpamMetrics {
        let unreachable_count = self
            .ring
            .all_range_info()
            .iter()
            .filter(|ri| !self.is_known_peer(ri.peer))
            .count() as u64;
        IpamMetrics {
            ips: self.space.num_used(),
            max_ips: self.universe.size64(),
            unreachable_count,
            pending_allocates: self.pending_allocates.len() as u64,
        }
    }

    /// Checks that the space holds exactly the ranges the ring gives us and
    /// every owned address inside the range is allocated in the space.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.ring.check().map_err(|e| e.to_string())?;
        let mut want = Space::new();
        for r in self.ring.owned_ranges() {
            want.add_free(r);
        }
        if !self.shutting_down && want.owned_ranges() != self.space.owned_ranges() {
            return Err(format!(
                "space {:?} differs from ring's ranges {:?}",
                self.space.owned_ranges(),
                want.owned_ranges()
            ));
        }
        if !self.shutting_down {
            // Each of our entries reports exactly the space's free count.
            let entries = &self.ring.entries;
            for (i, e) in entries.iter().enumerate() {
                if e.peer != self.our_name {
                    continue;
                }
                let next = entries[(i + 1) % entries.len()].token;
                let free: u64 = self
                    .ring
                    .make_ranges(e.token, next)
                    .iter()
                    .map(|r| u64::from(self.space.num_free_in(*r)))
                    .sum();
                if free != u64::from(e.free) {
                    return Err(format!(
                        "entry {} reports {} free, space has {free}",
                        e.token, e.free
                    ));
                }
            }
            for (ident, d) in &self.owned {
                for c in &d.cidrs {
                    if self.universe_range.contains(c.addr) && !self.space.is_used(c.addr) {
                        return Err(format!("{ident} holds {c} but the space has it not in use"));
                    }
                }
            }
        }
        Ok(())
    }

    // ----- helpers -----

    fn is_known_peer(&self, p: PeerName) -> bool {
        p == self.our_name || self.known_peers.contains(&p)
    }

    fn can_send(&self, p: PeerName) -> bool {
        p != self.our_name && self.known_peers.contains(&p)
    }

    fn finish(&mut self) {
        let mut rounds = 0;
        while std::mem::take(&mut self.retry_pending) && rounds < 4 {
            self.try_pending_ops();
            rounds += 1;
        }
        self.report_free_space();
    }

    fn broadcast(&mut self) {
        let s = self.gossip_state();
        self.out.push(Output::Broadcast(s));
    }

    fn unicast(&mut self, to: PeerName, msg: UnicastMsg) {
        self.out.push(Output::Unicast { to, msg });
    }

    fn persist_ring(&mut self) {
        self.out.push(Output::Persist(PersistWrite::Ring {
            peer_name: self.our_name,
            ring: self.ring.clone(),
        }));
    }

    fn persist_owned_entry(&mut self, ident: &str) {
        self.out.push(Output::Persist(PersistWrite::OwnedEntry {
            ident: ident.to_string(),
            data: self.owned.get(ident).cloned(),
        }));
    }

    fn persist_owned(&mut self) {
        self.out
            .push(Output::Persist(PersistWrite::Owned(self.owned.clone())));
    }

    fn persist_paxos(&mut self) {
        if let Participant::Elector(node) = &self.participant {
            self.out
                .push(Output::Persist(PersistWrite::Paxos(PaxosSnapshot {
                    peer_name: self.our_name,
                    id: node.id(),
                    knows: node.state().clone(),
                })));
        }
    }

    fn load_persisted(&mut self, p: Persisted) -> bool {
        let ring = match p.ring {
            Some((name, ring)) if name == self.our_name && !ring.is_empty() => ring,
            Some((name, _)) if name != self.our_name => {
                self.out.push(Output::Warn(format!(
                    "deleting persisted IPAM data for peer name {name}"
                )));
                self.persist_ring();
                self.persist_owned();
                return false;
            }
            _ => {
                self.persist_ring();
                self.persist_owned();
                return false;
            }
        };
        if ring.start != self.ring.start || ring.end != self.ring.end || ring.check().is_err() {
            self.out.push(Output::Warn(format!(
                "deleting persisted IPAM data for range {}; our range is {}",
                Range::new(ring.start, ring.end).as_cidr_string(),
                self.universe
            )));
            self.persist_ring();
            self.persist_owned();
            return false;
        }
        self.ring = Ring {
            peer: self.our_name,
            ..ring
        };
        let _ = self.space.set_ranges(&self.ring.owned_ranges());
        if let Some(owned) = p.owned {
            for d in owned.values() {
                for c in &d.cidrs {
                    let _ = self.space.claim(c.addr);
                }
            }
            self.owned = owned;
        }
        true
    }

    fn ring_updated(&mut self) {
        self.awaiting_consensus = false;
        self.persist_ring();
        let stray = self.space.set_ranges(&self.ring.owned_ranges());
        for a in stray {
            self.out.push(Output::Warn(format!(
                "address {a} is allocated here but the ring no longer gives it to us"
            )));
        }
        self.retry_pending = true;
    }

    fn establish_ring(&mut self) {
        if !self.ring.is_empty() || self.awaiting_consensus {
            return;
        }
        self.awaiting_consensus = true;
        let q = self.quorum();
        self.participant.set_quorum(q);
        self.propose();
        if let Some(v) = self.participant.consensus() {
            self.create_ring(&v.value);
        }
    }

    fn propose(&mut self) {
        if let Err(e) = self.participant.propose() {
            self.out.push(Output::Warn(e.to_string()));
        }
        self.persist_paxos();
        self.broadcast();
    }

    fn create_ring(&mut self, peers: &[PeerName]) {
        let peers = normalize_consensus(peers);
        if let Err(e) = self.ring.claim_for_peers(&peers) {
            self.out
                .push(Output::Warn(format!("cannot create the ring: {e}")));
            return;
        }
        self.ring_updated();
        self.broadcast();
    }

    fn has_allocations(space: &Space, ranges: &[Range]) -> bool {
        ranges.iter().any(|r| space.num_free_in(*r) != r.size())
    }

    fn update(&mut self, sender: Option<PeerName>, state: &GossipState) -> Result<(), UpdateError> {
        for (p, n) in &state.nicknames {
            self.nicknames.insert(*p, n.clone());
        }
        if let Some(theirs) = &state.ring {
            let space = &self.space;
            let report = self
                .ring
                .merge(theirs, |rs| Self::has_allocations(space, rs))?;
            for c in &report.conflicts {
                self.out.push(Output::Warn(format!(
                    "conflicting ring entries for {}: ours {} v{}, theirs {} v{}; kept {}",
                    c.mine.token,
                    c.mine.peer,
                    c.mine.version,
                    c.theirs.peer,
                    c.theirs.version,
                    c.kept.peer
                )));
            }
            if report.updated {
                self.prune_nicknames();
                self.ring_updated();
            }
        } else if !self.ring.is_empty() {
            if let Some(s) = sender {
                let st = self.gossip_state();
                self.unicast(s, UnicastMsg::RingUpdate(st));
            }
        } else if let Some(paxos) = &state.paxos {
            if self.participant.update(paxos) {
                if self.participant.think() {
                    self.persist_paxos();
                    self.broadcast();
                }
                if let Some(v) = self.participant.consensus() {
                    self.create_ring(&v.value);
                }
            }
        } else if self.participant.is_elector() && sender.is_some() {
            // An observer asks for a ring; help form one.
            self.establish_ring();
        }
        Ok(())
    }

    fn on_unicast(&mut self, sender: PeerName, msg: UnicastMsg) {
        match msg {
            UnicastMsg::SpaceRequest(r) => {
                if !self.ring.is_empty() && !self.shutting_down {
                    self.donate_space(r, sender);
                }
            }
            UnicastMsg::SpaceRequestDenied(r) => self.space_request_denied(sender, r),
            UnicastMsg::RingUpdate(state) => {
                if let Err(error) = self.update(Some(sender), &state) {
                    self.out.push(Output::GossipRejected {
                        sender: Some(sender),
                        error,
                    });
                }
            }
        }
    }

    fn donate_space(&mut self, r: Range, to: PeerName) {
        match self.space.donate(r) {
            None => {
                self.unicast(to, UnicastMsg::SpaceRequestDenied(r));
            }
            Some(chunk) => match self.ring.grant_range_to_host(chunk.start, chunk.end, to) {
                Ok(()) => {
                    self.persist_ring();
                    self.broadcast();
                }
                Err(e) => {
                    self.space.add_free(chunk);
                    self.out
                        .push(Output::Warn(format!("could not donate {chunk:?}: {e}")));
                }
            },
        }
        let st = self.gossip_state();
        self.unicast(to, UnicastMsg::RingUpdate(st));
    }

    fn space_request_denied(&mut self, sender: PeerName, r: Range) {
        let claims = std::mem::take(&mut self.pending_claims);
        for mut c in claims {
            if r.contains(c.cidr.addr) {
                self.denied_by(&mut c, sender, None);
            } else {
                self.pending_claims.push(c);
            }
        }
    }

    fn report_free_space(&mut self) {
        let ranges = self.ring.owned_ranges();
        if ranges.is_empty() {
            return;
        }
        let free: BTreeMap<Address, u32> = ranges
            .iter()
            .map(|r| (r.start, self.space.num_free_in(*r)))
            .collect();
        match self.ring.report_free(free) {
            Ok(true) => self.persist_ring(),
            Ok(false) => {}
            Err(e) => self
                .out
                .push(Output::Warn(format!("free-space report failed: {e}"))),
        }
    }

    fn prune_nicknames(&mut self) {
        let in_ring = self.ring.peer_names();
        let known = self.known_peers.clone();
        let me = self.our_name;
        self.nicknames
            .retain(|p, _| *p == me || in_ring.contains(p) || known.contains(p));
    }

    fn lookup_peername(&self, name: &str) -> Result<PeerName, OpError> {
        if let Some((p, _)) = self.nicknames.iter().find(|(_, n)| n.as_str() == name) {
            return Ok(*p);
        }
        name.parse::<PeerName>()
            .map_err(|_| OpError::UnknownPeer(name.to_string()))
    }

    fn admin_takeover(&mut self, peer: &str) -> Result<Reply, OpError> {
        let name = self.lookup_peername(peer)?;
        if name == self.our_name {
            self.out.push(Output::Warn(
                "attempt to take over range from ourself".into(),
            ));
            return Ok(Reply::TakenOver(0));
        }
        let moved = self.ring.transfer(name, self.our_name);
        if moved.is_empty() {
            return Ok(Reply::TakenOver(0));
        }
        let before = self.space.num_free();
        self.ring_updated();
        let after = self.space.num_free();
        self.broadcast();
        Ok(Reply::TakenOver(after.saturating_sub(before)))
    }

    fn pick_heir(&self) -> Option<PeerName> {
        let known = |p: PeerName| self.known_peers.contains(&p);
        let nick = |valid: &dyn Fn(PeerName) -> bool| {
            self.nicknames
                .keys()
                .copied()
                .find(|p| *p != self.our_name && valid(*p))
        };
        self.ring
            .pick_peer_for_transfer(known)
            .or_else(|| nick(&known))
            .or_else(|| self.ring.pick_peer_for_transfer(|_| true))
            .or_else(|| nick(&|_| true))
    }

    fn shutdown(&mut self) -> Option<PeerName> {
        self.shutting_down = true;
        for mut c in std::mem::take(&mut self.pending_claims) {
            self.cancel_claim(&mut c);
        }
        for p in std::mem::take(&mut self.pending_allocates) {
            self.cancel_allocate(&p);
        }
        for op in std::mem::take(&mut self.pending_primes) {
            self.out.push(Output::Reply {
                op,
                result: Err(OpError::Cancelled {
                    kind: "Prime",
                    ident: String::new(),
                }),
            });
        }
        let heir = self.pick_heir();
        self.ring
            .transfer(self.our_name, heir.unwrap_or(PeerName::UNKNOWN));
        self.space.clear();
        if heir.is_some() {
            self.persist_ring();
            self.broadcast();
        }
        heir
    }

    fn tick(&mut self) {
        if self.awaiting_consensus {
            self.propose();
            // A quorum of one (or news heard meanwhile) may already decide.
            if let Some(v) = self.participant.consensus() {
                if self.ring.is_empty() {
                    self.create_ring(&v.value);
                }
            }
        } else if self.has_pending_ops() {
            if self.ring.is_empty() {
                self.establish_ring();
            } else {
                self.try_pending_ops();
            }
        }
        self.remove_dead_containers();
    }

    fn has_pending_ops(&self) -> bool {
        !self.pending_allocates.is_empty()
            || !self.pending_claims.is_empty()
            || !self.pending_primes.is_empty()
    }

    fn remove_dead_containers(&mut self) {
        let now = self.now;
        let expired: Vec<String> = self
            .dead
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) > CONTAINER_DIED_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for ident in expired {
            let _ = self.delete(&ident);
            self.dead.remove(&ident);
        }
    }

    fn try_pending_ops(&mut self) {
        for op in std::mem::take(&mut self.pending_primes) {
            if !self.try_prime(op) {
                self.pending_primes.push(op);
            }
        }
        self.try_pending_claims();
        let ops = std::mem::take(&mut self.pending_allocates);
        let mut keep = Vec::new();
        for mut p in ops {
            if !self.try_allocate(&mut p) {
                keep.push(p);
            }
        }
        keep.append(&mut self.pending_allocates);
        self.pending_allocates = keep;
    }

    fn try_pending_claims(&mut self) {
        let ops = std::mem::take(&mut self.pending_claims);
        let mut keep = Vec::new();
        for mut c in ops {
            if !self.try_claim(&mut c) {
                keep.push(c);
            }
        }
        keep.append(&mut self.pending_claims);
        self.pending_claims = keep;
    }

    fn waiting_reason(&self) -> PendingReason {
        if self.participant.is_elector() {
            let st = self.participant.status();
            PendingReason::AwaitingConsensus {
                known_nodes: st.known_nodes,
                quorum: st.quorum,
            }
        } else {
            PendingReason::AwaitingRingAsObserver
        }
    }

    fn try_prime(&mut self, op: OpId) -> bool {
        if !self.ring.is_empty() {
            self.out.push(Output::Reply {
                op,
                result: Ok(Reply::Primed),
            });
            return true;
        }
        self.establish_ring();
        if !self.ring.is_empty() {
            self.out.push(Output::Reply {
                op,
                result: Ok(Reply::Primed),
            });
            return true;
        }
        false
    }

    fn try_allocate(&mut self, p: &mut PendingAllocate) -> bool {
        if let Some(c) = self.lookup(&p.ident, p.subnet.range()).first().copied() {
            self.dead.remove(&p.ident);
            self.out.push(Output::Reply {
                op: p.op,
                result: Ok(Reply::Allocated(c)),
            });
            return true;
        }
        if !self.universe_range.overlaps(&p.subnet.range()) {
            self.out.push(Output::Reply {
                op: p.op,
                result: Err(OpError::OutOfBounds {
                    subnet: p.subnet,
                    universe: self.universe,
                }),
            });
            return true;
        }
        self.establish_ring();
        if self.ring.is_empty() {
            p.reason = self.waiting_reason();
            return false;
        }
        if let Some(addr) = self.space.allocate(p.subnet.host_range()) {
            let cidr = Cidr {
                addr,
                prefix_len: p.subnet.prefix_len,
            };
            let ident = if p.ident == NO_CONTAINER_ID {
                addr.to_string()
            } else {
                p.ident.clone()
            };
            self.add_owned(&ident, cidr, p.is_container);
            self.out.push(Output::Reply {
                op: p.op,
                result: Ok(Reply::Allocated(cidr)),
            });
            return true;
        }
        // Ask only for addresses usable in this subnet (Weave asks for the
        // whole subnet, which lets two waiting peers hand its unusable
        // network/broadcast addresses back and forth).
        let want = p.subnet.host_range();
        let donors = self
            .ring
            .choose_peers_to_ask_for_space(want.start, want.end, &mut self.rng);
        p.reason = PendingReason::NoPeerWithSpace;
        if let Some(d) = donors.into_iter().find(|d| self.can_send(*d)) {
            self.unicast(d, UnicastMsg::SpaceRequest(want));
            p.reason = PendingReason::AskedForSpace(d);
        }
        false
    }

    fn send_claim_result(&mut self, c: &mut PendingClaim, result: Result<Reply, OpError>) {
        match (c.op, c.replied) {
            (Some(op), false) => {
                c.replied = true;
                self.out.push(Output::Reply { op, result });
            }
            _ => {
                if let Err(e) = result {
                    self.out.push(Output::Warn(e.to_string()));
                }
            }
        }
    }

    fn denied_by(&mut self, c: &mut PendingClaim, owner: PeerName, reason: Option<String>) {
        let err = OpError::OwnedByOtherPeer {
            cidr: c.cidr,
            peer: owner,
            nickname: self.nicknames.get(&owner).cloned(),
            reason,
        };
        self.send_claim_result(c, Err(err));
    }

    fn claim_add_owned(&mut self, c: &PendingClaim) {
        let ident = if c.ident == NO_CONTAINER_ID {
            c.cidr.addr.to_string()
        } else {
            c.ident.clone()
        };
        self.add_owned(&ident, c.cidr, c.is_container);
    }

    fn try_claim(&mut self, c: &mut PendingClaim) -> bool {
        c.tries += 1;
        let addr = c.cidr.addr;
        if !self.ring.contains(addr) {
            // Outside our range: just record it.
            match self.find_owner(addr) {
                None => self.claim_add_owned(c),
                Some(prev) if prev == c.ident || c.ident == NO_CONTAINER_ID => {}
                Some(prev) if self.dead.contains_key(&prev) => {
                    self.remove_owned(&prev, addr);
                    self.claim_add_owned(c);
                }
                Some(prev) => {
                    self.send_claim_result(
                        c,
                        Err(OpError::AlreadyOwned {
                            cidr: c.cidr,
                            by: prev,
                        }),
                    );
                }
            }
            self.send_claim_result(c, Ok(Reply::Claimed));
            return true;
        }
        self.establish_ring();
        self.dead.remove(&c.ident);
        match self.ring.owner(addr) {
            Some(o) if o == self.our_name => {}
            None => {
                c.reason = self.waiting_reason();
                if c.no_error_on_unknown {
                    self.send_claim_result(c, Ok(Reply::Claimed));
                }
                return false;
            }
            Some(owner) => {
                c.reason = PendingReason::AskedOwner(owner);
                if self.can_send(owner) {
                    self.unicast(owner, UnicastMsg::SpaceRequest(Range::sized(addr, 1)));
                } else if c.no_error_on_unknown {
                    self.send_claim_result(c, Ok(Reply::Claimed));
                } else if c.tries > MAX_CLAIM_TRIES {
                    self.denied_by(c, owner, Some(format!("no route to peer {owner}")));
                    return true;
                }
                return false;
            }
        }
        let addr_ident = addr.to_string();
        let result = match self.find_owner(addr) {
            None => match self.space.claim(addr) {
                Ok(()) => {
                    self.claim_add_owned(c);
                    Ok(Reply::Claimed)
                }
                Err(_) => Err(OpError::NotFree(c.cidr)),
            },
            Some(e) if e == c.ident || (c.ident == NO_CONTAINER_ID && e == addr_ident) => {
                Ok(Reply::Claimed)
            }
            Some(e) if e == addr_ident => Err(OpError::AlreadyInUse(c.cidr)),
            Some(_) if c.ident == NO_CONTAINER_ID => Ok(Reply::Claimed),
            Some(e) => Err(OpError::AlreadyOwned {
                cidr: c.cidr,
                by: e,
            }),
        };
        self.send_claim_result(c, result);
        true
    }

    fn cancel_allocate(&mut self, p: &PendingAllocate) {
        self.out.push(Output::Reply {
            op: p.op,
            result: Err(OpError::Cancelled {
                kind: "Allocate",
                ident: p.ident.clone(),
            }),
        });
    }

    fn cancel_claim(&mut self, c: &mut PendingClaim) {
        let err = OpError::Cancelled {
            kind: "Claim",
            ident: c.ident.clone(),
        };
        self.send_claim_result(c, Err(err));
    }

    fn cancel_op(&mut self, op: OpId) {
        if let Some(i) = self.pending_allocates.iter().position(|p| p.op == op) {
            let p = self.pending_allocates.remove(i);
            self.cancel_allocate(&p);
        }
        if let Some(i) = self.pending_claims.iter().position(|c| c.op == Some(op)) {
            let mut c = self.pending_claims.remove(i);
            self.cancel_claim(&mut c);
        }
        if let Some(i) = self.pending_primes.iter().position(|p| *p == op) {
            self.pending_primes.remove(i);
            self.out.push(Output::Reply {
                op,
                result: Err(OpError::Cancelled {
                    kind: "Prime",
                    ident: String::new(),
                }),
            });
        }
    }

    fn cancel_ops_for(&mut self, ident: &str) {
        let ops = std::mem::take(&mut self.pending_allocates);
        for p in ops {
            if p.ident == ident {
                self.cancel_allocate(&p);
            } else {
                self.pending_allocates.push(p);
            }
        }
        let claims = std::mem::take(&mut self.pending_claims);
        for mut c in claims {
            if c.ident == ident {
                self.cancel_claim(&mut c);
            } else {
                self.pending_claims.push(c);
            }
        }
    }

    // ----- owned addresses -----

    fn has_owned_by_container(&self, ident: &str) -> bool {
        self.owned.get(ident).is_some_and(|d| d.is_container)
    }

    fn add_owned(&mut self, ident: &str, cidr: Cidr, is_container: bool) {
        let d = self.owned.entry(ident.to_string()).or_default();
        d.is_container = is_container;
        d.cidrs.push(cidr);
        self.persist_owned_entry(ident);
    }

    fn remove_owned(&mut self, ident: &str, addr: Address) -> bool {
        let Some(d) = self.owned.get_mut(ident) else {
            return false;
        };
        let Some(i) = d.cidrs.iter().position(|c| c.addr == addr) else {
            return false;
        };
        d.cidrs.remove(i);
        if d.cidrs.is_empty() {
            self.owned.remove(ident);
        }
        self.persist_owned_entry(ident);
        true
    }

    fn delete(&mut self, ident: &str) -> Result<(), OpError> {
        let Some(d) = self.owned.remove(ident) else {
            return Err(OpError::NoAddresses(ident.to_string()));
        };
        self.persist_owned_entry(ident);
        for c in d.cidrs {
            let _ = self.space.free(c.addr);
        }
        Ok(())
    }

    fn find_owner(&self, addr: Address) -> Option<String> {
        self.owned
            .iter()
            .find(|(_, d)| d.cidrs.iter().any(|c| c.addr == addr))
            .map(|(k, _)| k.clone())
    }

    fn prune_owned(&mut self, ids: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .owned
            .iter()
            .filter(|(k, d)| d.is_container && !ids.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for k in gone {
            if let Some(d) = self.owned.remove(&k) {
                for c in d.cidrs {
                    let _ = self.space.free(c.addr);
                }
            }
            self.persist_owned_entry(&k);
        }
    }
}
