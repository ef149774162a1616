//! The allocator's inputs and outputs, and the plain-Rust form of what
//! crosses the wire (the `IPallocation` gossip state and the unicast
//! messages). [`super::wire`] converts them to and from Weave's gob bytes;
//! nothing here knows about bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::address::{Address, Cidr, Range};
use super::paxos::{NodeId, PaxosState};
use super::peer::PeerName;
use super::ring::{MergeError, Ring};

/// The `IPallocation` gossip payload (Weave's `gossipState`): the sender's
/// wall-clock time in Unix seconds (informational), the nicknames it knows,
/// and either its Paxos state (while it has no ring) or its ring.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GossipState {
    /// Sender's clock, Unix seconds (Weave keeps it for compatibility only).
    pub now: i64,
    /// Peer name to nickname.
    pub nicknames: BTreeMap<PeerName, String>,
    /// Paxos claims, sent while the ring is empty; `None` from an observer.
    pub paxos: Option<PaxosState>,
    /// The ring, once there is one.
    pub ring: Option<Ring>,
}

/// A unicast on the `IPallocation` channel. On the wire: one tag byte
/// ([`UnicastMsg::tag`]) then a gob-encoded `Range` or `gossipState`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnicastMsg {
    /// Tag 0: "please give me space in this range".
    SpaceRequest(Range),
    /// Tag 1: the sender's whole state, after a donation or on request.
    RingUpdate(GossipState),
    /// Tag 2: "I have nothing free in this range".
    SpaceRequestDenied(Range),
}

impl UnicastMsg {
    /// The tag byte Weave puts before the payload.
    pub fn tag(&self) -> u8 {
        match self {
            UnicastMsg::SpaceRequest(_) => 0,
            UnicastMsg::RingUpdate(_) => 1,
            UnicastMsg::SpaceRequestDenied(_) => 2,
        }
    }
}

/// Identifies a caller's request so its reply can be matched up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// The addresses a container (or other identifier) holds; persisted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OwnedData {
    /// True when the identifier is a container id (subject to container
    /// death and pruning).
    pub is_container: bool,
    /// The addresses, each with the prefix length of the subnet it came from.
    pub cidrs: Vec<Cidr>,
}

/// Everything the allocator reacts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// `POST /ip/{id}` or `POST /ip/{id}/{ip}/{prefix}`: an address in `subnet`.
    Allocate {
        /// Reply handle.
        op: OpId,
        /// Container id, other identifier, or `_` for none.
        ident: String,
        /// The subnet to allocate in.
        subnet: Cidr,
        /// True for a container id.
        is_container: bool,
    },
    /// `PUT /ip/{id}/{ip}/{prefix}`: this specific address.
    Claim {
        /// Reply handle.
        op: OpId,
        /// Container id, other identifier, or `_` for none.
        ident: String,
        /// Address and prefix.
        cidr: Cidr,
        /// True for a container id.
        is_container: bool,
        /// Reply OK at once when the owner is unknown or unreachable, and
        /// keep trying in the background.
        no_error_on_unknown: bool,
    },
    /// `DELETE /ip/{id}`: release everything the identifier holds.
    Delete {
        /// Reply handle.
        op: OpId,
        /// The identifier.
        ident: String,
    },
    /// `DELETE /ip/{id}/{ip}`: release one address.
    Free {
        /// Reply handle.
        op: OpId,
        /// The identifier.
        ident: String,
        /// The address.
        addr: Address,
    },
    /// The caller of a pending request went away.
    Cancel {
        /// The request.
        op: OpId,
    },
    /// Wait until the ring exists (forcing consensus if needed).
    Prime {
        /// Reply handle.
        op: OpId,
    },
    /// A container died; its addresses go after [`super::CONTAINER_DIED_TIMEOUT`].
    ContainerDied {
        /// Container id.
        ident: String,
    },
    /// A container was destroyed; its addresses go now.
    ContainerDestroyed {
        /// Container id.
        ident: String,
    },
    /// A container (re)started; forget that it died.
    ContainerStarted {
        /// Container id.
        ident: String,
    },
    /// Drop addresses of containers not in this list.
    PruneOwned {
        /// Container ids that exist.
        ids: BTreeSet<String>,
    },
    /// A broadcast on the `IPallocation` channel from `sender`.
    GossipBroadcast {
        /// The originating peer.
        sender: PeerName,
        /// The decoded payload.
        state: GossipState,
    },
    /// Periodic gossip (sender unknown) on the `IPallocation` channel.
    GossipPeriodic {
        /// The decoded payload.
        state: GossipState,
    },
    /// A unicast on the `IPallocation` channel.
    Unicast {
        /// The sending peer.
        sender: PeerName,
        /// The decoded message.
        msg: UnicastMsg,
    },
    /// The peers the router currently knows (and can route to).
    PeersChanged {
        /// Their names (ours may be included).
        known: BTreeSet<PeerName>,
    },
    /// The number of peer addresses configured, used to guess the quorum
    /// when `consensus` was given no count.
    TargetsChanged {
        /// How many.
        count: u32,
    },
    /// The router forgot a peer: drop its nickname unless it owns ranges.
    PeerGone {
        /// The peer.
        peer: PeerName,
    },
    /// `DELETE /peer/{name}` (rmpeer): take over a dead peer's ranges.
    AdminTakeover {
        /// Reply handle.
        op: OpId,
        /// Peer name or nickname.
        peer: String,
    },
    /// `DELETE /peer` (reset): hand our ranges to a living peer and stop.
    Shutdown {
        /// Reply handle.
        op: OpId,
    },
    /// Every [`super::TICK_INTERVAL`]: retry what may have been lost.
    Tick,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The address allocated, with the subnet's prefix length.
    Allocated(Cidr),
    /// The claim holds (or, with `no_error_on_unknown`, will be retried).
    Claimed,
    /// The addresses were released.
    Freed,
    /// The ring exists.
    Primed,
    /// rmpeer moved this many addresses to us.
    TakenOver(u64),
    /// Our ranges were handed on (to the named peer, if any).
    ShutDown(Option<PeerName>),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The request was cancelled (caller gone, container died, shutdown).
    #[error("{kind} request for {ident} cancelled")]
    Cancelled {
        /// Allocate, Claim or Prime.
        kind: &'static str,
        /// The identifier.
        ident: String,
    },
    /// The subnet lies outside the allocation range.
    #[error("range {subnet} out of bounds: {universe}")]
    OutOfBounds {
        /// The subnet asked for.
        subnet: Cidr,
        /// The allocation range.
        universe: Cidr,
    },
    /// The address is held by another identifier here.
    #[error("address {cidr} is already owned by {by}")]
    AlreadyOwned {
        /// The address.
        cidr: Cidr,
        /// Its holder.
        by: String,
    },
    /// The address was allocated without an identifier.
    #[error("address {0} already in use")]
    AlreadyInUse(Cidr),
    /// The address is not free in our space.
    #[error("address {0} is not free to claim")]
    NotFree(Cidr),
    /// Another peer owns the address and did not give it to us.
    #[error("address {cidr} is owned by other peer {peer}{nick}{reason}",
        nick = nickname.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
        reason = reason.as_ref().map(|r| format!(" - {r}")).unwrap_or_default())]
    OwnedByOtherPeer {
        /// The address.
        cidr: Cidr,
        /// The owning peer.
        peer: PeerName,
        /// Its nickname, if known.
        nickname: Option<String>,
        /// Why we could not get it, if known.
        reason: Option<String>,
    },
    /// `DELETE /ip/{id}` for an identifier holding nothing.
    #[error("Delete: no addresses for {0}")]
    NoAddresses(String),
    /// `DELETE /ip/{id}/{ip}` for an address the identifier does not hold.
    #[error("Free: address {addr} not found for {ident}")]
    NotFound {
        /// The identifier.
        ident: String,
        /// The address.
        addr: Address,
    },
    /// rmpeer of a name or nickname we never heard of.
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
}

/// What a gossip message could not do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The received ring could not be merged.
    #[error(transparent)]
    Merge(#[from] MergeError),
}

/// A write for the persistent store. Apply each write (durably) before
/// acting on any output that follows it in the same batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistWrite {
    /// Key `ring` (with our peer name, checked on load).
    Ring {
        /// Our peer name.
        peer_name: PeerName,
        /// The ring.
        ring: Ring,
    },
    /// Key `ownedAddresses`: replace every identifier's addresses.
    Owned(BTreeMap<String, OwnedData>),
    /// One identifier's addresses changed (`None`: it holds none now). A
    /// store may keep one record per identifier; Weave rewrites the whole
    /// `ownedAddresses` map instead.
    OwnedEntry {
        /// The identifier.
        ident: String,
        /// Its addresses, if any.
        data: Option<OwnedData>,
    },
    /// Our Paxos identity and knowledge (a weave-rs addition; Weave Net
    /// keeps it in memory only).
    Paxos(PaxosSnapshot),
}

/// Persisted Paxos state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosSnapshot {
    /// Our peer name when written.
    pub peer_name: PeerName,
    /// The acceptor identity to keep using.
    pub id: NodeId,
    /// What we knew.
    pub knows: PaxosState,
}

/// What was read back from the store at start.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Persisted {
    /// The last [`PersistWrite::Ring`].
    pub ring: Option<(PeerName, Ring)>,
    /// The addresses as the [`PersistWrite::Owned`] and
    /// [`PersistWrite::OwnedEntry`] writes left them.
    pub owned: Option<BTreeMap<String, OwnedData>>,
    /// The last [`PersistWrite::Paxos`].
    pub paxos: Option<PaxosSnapshot>,
}

impl Persisted {
    /// Applies a write, as a store would.
    pub fn apply(&mut self, w: &PersistWrite) {
        match w {
            PersistWrite::Ring { peer_name, ring } => self.ring = Some((*peer_name, ring.clone())),
            PersistWrite::Owned(o) => self.owned = Some(o.clone()),
            PersistWrite::OwnedEntry { ident, data } => {
                let owned = self.owned.get_or_insert_with(BTreeMap::new);
                match data {
                    Some(d) => {
                        owned.insert(ident.clone(), d.clone());
                    }
                    None => {
                        owned.remove(ident);
                    }
                }
            }
            PersistWrite::Paxos(p) => self.paxos = Some(p.clone()),
        }
    }
}

/// Everything the allocator asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The result of a request.
    Reply {
        /// The request.
        op: OpId,
        /// Its result.
        result: Result<Reply, OpError>,
    },
    /// Broadcast our state on the `IPallocation` channel.
    Broadcast(GossipState),
    /// Send a unicast on the `IPallocation` channel.
    Unicast {
        /// Destination peer.
        to: PeerName,
        /// The message.
        msg: UnicastMsg,
    },
    /// Store this (before acting on later outputs).
    Persist(PersistWrite),
    /// A received gossip message was rejected.
    GossipRejected {
        /// The sender, when known.
        sender: Option<PeerName>,
        /// Why.
        error: UpdateError,
    },
    /// Something an operator should see in the log.
    Warn(String),
}

/// Why a request is still waiting, for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// The ring does not exist yet and consensus is under way.
    AwaitingConsensus {
        /// Nodes whose Paxos claims we know.
        known_nodes: usize,
        /// How many must agree.
        quorum: u32,
    },
    /// We are an observer and wait for a peer to send us the ring.
    AwaitingRingAsObserver,
    /// No free space here; we asked this peer for some.
    AskedForSpace(PeerName),
    /// No free space here and no reachable peer reports free space.
    NoPeerWithSpace,
    /// We asked the owner of a claimed address to hand it over.
    AskedOwner(PeerName),
    /// Not tried yet.
    NotTried,
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::AwaitingConsensus {
                known_nodes,
                quorum,
            } => write!(
                f,
                "awaiting consensus on the initial ring: {known_nodes} peer(s) heard, quorum {quorum}"
            ),
            PendingReason::AwaitingRingAsObserver => {
                write!(f, "observer: waiting for another peer to send the ring")
            }
            PendingReason::AskedForSpace(p) => write!(f, "out of space; asked peer {p} for some"),
            PendingReason::NoPeerWithSpace => {
                write!(f, "out of space; no reachable peer reports free space")
            }
            PendingReason::AskedOwner(p) => write!(f, "asked owner {p} to hand the address over"),
            PendingReason::NotTried => write!(f, "not tried yet"),
        }
    }
}
