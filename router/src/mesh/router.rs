//! The mesh router core: owns the connections' state machines, the peers
//! table, routes, gossip channels and the connection maker, and turns
//! received bytes and timer ticks into bytes to send and dials to make.
//!
//! Driving it: the shell reports sockets ([`MeshRouter::connection_opened`],
//! [`MeshRouter::receive`], [`MeshRouter::connection_closed`],
//! [`MeshRouter::dial_failed`]), calls [`MeshRouter::handle_timeout`] at
//! [`MeshRouter::poll_timeout`], and after every call drains
//! [`MeshRouter::poll_output`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;

use super::codec::{CodecError, Features, GossipEnvelope, MeshCodec};
use super::connection::{
    ConnError, ConnEvent, Connection, ConnectionParams, RemoteFeatures, make_features,
    parse_features,
};
use super::connection_maker::{
    ConnectionMaker, DirectPeer, OurConnection, TargetStatus, Termination,
};
use super::crypto::{KeyPair, SessionKey};
use super::gossip::{GossipData, GossipError, Gossiper, SurrogateGossiper};
use super::identity::{PeerName, PeerUid, ShortId};
use super::peers::{Peer, PeerConnection, Peers, PeersChanges};
use super::routes::{RecalcSchedule, Routes};
use super::wire::{PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION, ProtocolTag};

/// The name of the channel that carries topology.
pub const TOPOLOGY_CHANNEL: &str = "topology";

/// Default TCP port of the mesh.
pub const DEFAULT_PORT: u16 = 6783;

/// Default limit on connections.
pub const DEFAULT_CONN_LIMIT: usize = 200;

/// Default interval of periodic gossip.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_secs(30);

/// Local topology changes are gathered for this long before being sent.
pub const TOPOLOGY_UPDATE_DELAY: Duration = Duration::from_secs(1);

/// Unreachable peers are collected this long after a topology update.
pub const GC_DELAY: Duration = Duration::from_secs(1);

/// How the router is set up (Weave's `weaver` flags where they apply).
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Our name (`--name`).
    pub name: PeerName,
    /// Our nickname (`--nickname`).
    pub nickname: String,
    /// The mesh port (`--port`); used to complete targets given without one.
    pub port: u16,
    /// The password (`--password`); `None` for an unencrypted mesh.
    pub password: Option<Vec<u8>>,
    /// Connection limit (`--conn-limit`); 0 for none.
    pub conn_limit: usize,
    /// Lowest protocol version we accept (`--min-protocol-version`; 1 by
    /// default, as in Weave). Peers offering only version 1 are then spoken
    /// to in version 1.
    pub min_version: u8,
    /// Highest protocol version we offer (2, the highest we speak; lower it
    /// only to stand in for an old peer, as tests do).
    pub max_version: u8,
    /// Whether to dial peers we learn about (`--no-discovery` clears it).
    pub peer_discovery: bool,
    /// Peers in these subnets are trusted: no session key for the overlay
    /// (`--trusted-subnets`).
    pub trusted_subnets: Vec<IpNet>,
    /// Period of full gossip.
    pub gossip_interval: Duration,
    /// Features the overlay adds to the features map (e.g. `Overlays`).
    pub overlay_features: Features,
    /// Mark connections established as soon as they are added, as mesh does
    /// with no overlay. With an overlay, leave this off and call
    /// [`MeshRouter::connection_established`] when the overlay is up.
    pub auto_establish: bool,
    /// Flow control: when set, each connection has at most one batch of
    /// gossip in the shell's hands at a time; gossip queued meanwhile is
    /// merged per channel (as mesh's per-connection gossip senders do while
    /// a write blocks). The shell must then call
    /// [`MeshRouter::transmit_done`] once for every [`Output::Transmit`]
    /// when its bytes are written. When clear, gossip is sent at once.
    pub flow_control: bool,
}

impl MeshConfig {
    /// Weave's defaults for the given identity.
    pub fn new(name: PeerName, nickname: &str) -> Self {
        MeshConfig {
            name,
            nickname: nickname.to_owned(),
            port: DEFAULT_PORT,
            password: None,
            conn_limit: DEFAULT_CONN_LIMIT,
            min_version: PROTOCOL_MIN_VERSION,
            max_version: PROTOCOL_MAX_VERSION,
            peer_discovery: true,
            trusted_subnets: Vec::new(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            overlay_features: Features::new(),
            auto_establish: true,
            flow_control: false,
        }
    }
}

/// Our handle on one TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnHandle(pub u64);

/// Why the router closed a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The protocol state machine failed (includes a wrong password).
    #[error(transparent)]
    Protocol(#[from] ConnError),
    /// The features or a gossip envelope did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The connection led back to us.
    #[error("cannot connect to ourself")]
    ConnectToSelf,
    /// Another peer uses our name.
    #[error("local {local} and remote peer (UID {remote_uid}) names collision")]
    NameCollision {
        /// Our name.
        local: PeerName,
        /// The other UID.
        remote_uid: PeerUid,
    },
    /// A discovered address led to a peer we do not know.
    #[error("found unknown remote name: {name} at {addr}")]
    UnknownRemote {
        /// Its name.
        name: PeerName,
        /// Where.
        addr: SocketAddr,
    },
    /// A second connection to the same peer lost the tie-break.
    #[error("multiple connections to {0} added")]
    Duplicate(PeerName),
    /// Too many connections.
    #[error("connection limit reached ({0})")]
    ConnLimit(usize),
    /// A channel owner rejected a message.
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// The shell reported the socket closed or failed.
    #[error("{0}")]
    Socket(String),
}

/// What the shell must do, or may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the connection's socket.
    Transmit {
        /// Which connection.
        conn: ConnHandle,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close the socket (after writing anything already queued); the router
    /// has forgotten the connection.
    Close {
        /// Which connection.
        conn: ConnHandle,
        /// Why (log it).
        reason: CloseReason,
    },
    /// Dial this address, then call [`MeshRouter::connection_opened`] or
    /// [`MeshRouter::dial_failed`].
    Dial {
        /// Where.
        addr: SocketAddr,
    },
    /// A connection finished its intro and joined our topology: the
    /// overlay may start on it.
    ConnectionAdded {
        /// Which connection.
        conn: ConnHandle,
        /// The peer.
        remote: PeerName,
        /// Whether we dialled.
        outbound: bool,
        /// The peer's TCP address.
        remote_addr: SocketAddr,
        /// The connection's UID (both halves of the ConnID XORed).
        conn_uid: u64,
        /// The session key, only for links that are not trusted both ways.
        session_key: Option<SessionKey>,
        /// The peer's features map (for overlay negotiation).
        features: Features,
    },
    /// An added connection went away.
    ConnectionRemoved {
        /// Which connection.
        conn: ConnHandle,
        /// The peer it led to.
        remote: PeerName,
    },
    /// An overlay control message (tags 1–3 and 7) arrived.
    OverlayControl {
        /// Which connection.
        conn: ConnHandle,
        /// The tag.
        tag: ProtocolTag,
        /// The bytes after the tag.
        payload: Vec<u8>,
    },
    /// A peer became unreachable and was forgotten.
    PeerRemoved(PeerName),
    /// The mapping of short IDs to peers changed.
    ShortIdsChanged,
}

struct LocalConn {
    conn: Connection,
    remote_addr: SocketAddr,
    outbound: bool,
    conn_uid: u64,
    trust_remote: bool,
    trusted_by_remote: bool,
    accept_new_peer: bool,
    remote: Option<PeerName>,
    established: bool,
    added: bool,
    /// Transmits handed to the shell and not yet reported written.
    outstanding: u32,
    /// Gossip waiting for the connection to drain, per channel.
    queue: BTreeMap<String, Pending>,
}

/// Gossip queued on one connection for one channel.
#[derive(Default)]
struct Pending {
    gossip: Option<Data>,
    broadcasts: BTreeMap<PeerName, Data>,
}

/// How queued gossip is sent.
#[derive(Clone, Copy)]
enum Kind {
    Gossip,
    Broadcast(PeerName),
}

/// What a relay carries: topology (encoded from the table when sent) or a
/// channel's own messages.
#[derive(Clone, PartialEq, Eq)]
enum Data {
    Topology(BTreeSet<PeerName>),
    Raw(GossipData),
}

/// The gossip messages encoded last, kept so that the same data going to
/// further connections (a relay to several neighbours) is encoded once.
/// Valid while the peers table keeps its generation.
struct Encoded {
    generation: u64,
    channel: String,
    src: PeerName,
    data: Data,
    messages: Arc<Vec<Vec<u8>>>,
}

/// A local connection in the status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// The peer's address.
    pub address: String,
    /// Whether we dialled.
    pub outbound: bool,
    /// `established`, `pending`, `connecting`, `retrying`, `failed`, `waiting`.
    pub state: String,
    /// The peer (for connections) or the last error (for targets).
    pub info: String,
    /// The remote peer, for connections.
    pub remote: Option<(PeerName, String)>,
    /// Whether messages on it are encrypted and the link is untrusted.
    pub encrypted: bool,
    /// The protocol version the connection speaks (0 for targets).
    pub protocol_version: u8,
}

/// A peer in the status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub name: PeerName,
    /// Its nickname.
    pub nickname: String,
    /// Its UID.
    pub uid: PeerUid,
    /// Its short ID.
    pub short_id: ShortId,
    /// Its entry's version.
    pub version: u64,
    /// Its connections.
    pub connections: Vec<PeerConnection>,
}

/// A snapshot for `/status` and `/report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshStatus {
    /// Our name.
    pub name: PeerName,
    /// Our nickname.
    pub nickname: String,
    /// The mesh port.
    pub port: u16,
    /// Lowest protocol version.
    pub protocol_min_version: u8,
    /// Highest protocol version.
    pub protocol_max_version: u8,
    /// Whether a password is set.
    pub encryption: bool,
    /// Whether peer discovery is on.
    pub peer_discovery: bool,
    /// All peers.
    pub peers: Vec<PeerStatus>,
    /// Our connections and connection attempts.
    pub connections: Vec<ConnectionStatus>,
    /// Direct peers as given.
    pub targets: Vec<String>,
    /// Connections that ended.
    pub termination_count: u64,
    /// Unicast routes (destination, next hop).
    pub unicast_routes: Vec<(PeerName, PeerName)>,
    /// Our broadcast next hops.
    pub broadcast_routes: Vec<PeerName>,
    /// Trusted subnets.
    pub trusted_subnets: Vec<String>,
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshCounters {
    /// Gossip messages (tags 4–6) sent.
    pub gossip_sent: u64,
    /// Gossip messages received.
    pub gossip_received: u64,
    /// Periodic gossip rounds run.
    pub gossip_rounds: u64,
    /// Route recalculations run (after topology changes, coalesced).
    pub route_calculations: u64,
}

/// The mesh router state machine.
pub struct MeshRouter {
    config: MeshConfig,
    codec: Box<dyn MeshCodec>,
    rng: StdRng,
    peers: Peers,
    /// Routes as last calculated; they may lag the peers table while a
    /// recalculation is pending in `recalc` (as mesh's do).
    routes: Routes,
    recalc: RecalcSchedule,
    conns: BTreeMap<ConnHandle, LocalConn>,
    by_peer: BTreeMap<PeerName, ConnHandle>,
    next_handle: u64,
    channels: BTreeMap<String, Box<dyn Gossiper>>,
    maker: ConnectionMaker,
    dials: BTreeMap<SocketAddr, bool>,
    pending_topology: Option<(Instant, BTreeSet<PeerName>)>,
    gc_due: Option<Instant>,
    next_gossip: Instant,
    outputs: VecDeque<Output>,
    counters: MeshCounters,
    encoded: Option<Encoded>,
}

impl MeshRouter {
    /// A router with a fresh UID and short ID drawn from `rng` (which the
    /// shell seeds from the OS; tests seed it deterministically).
    pub fn new(
        config: MeshConfig,
        codec: Box<dyn MeshCodec>,
        mut rng: StdRng,
        now: Instant,
    ) -> Self {
        let uid = PeerUid::random(&mut rng);
        let short_id = ShortId::random(&mut rng);
        let me = Peer::new(config.name, &config.nickname, uid, 0, short_id);
        let maker = ConnectionMaker::new(config.port, config.peer_discovery);
        let next_gossip = now + config.gossip_interval;
        let peers = Peers::new(me);
        let routes = Routes::calculate(&peers);
        MeshRouter {
            config,
            codec,
            rng,
            peers,
            routes,
            recalc: RecalcSchedule::default(),
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            next_handle: 1,
            channels: BTreeMap::new(),
            maker,
            dials: BTreeMap::new(),
            pending_topology: None,
            gc_due: None,
            next_gossip,
            outputs: VecDeque::new(),
            counters: MeshCounters::default(),
            encoded: None,
        }
    }

    /// Our name.
    pub fn name(&self) -> PeerName {
        self.config.name
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// The peers table.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Counters.
    pub fn counters(&self) -> MeshCounters {
        self.counters
    }

    /// Current routes: a pending recalculation runs first, so they match
    /// the peers table (what mesh's `EnsureRecalculated` gives).
    pub fn routes(&mut self) -> &Routes {
        self.ensure_routes();
        &self.routes
    }

    /// Recalculates now if a recalculation is pending.
    fn ensure_routes(&mut self) {
        if self.recalc.cancel() {
            self.recalculate_routes();
        }
    }

    /// The routes for forwarding at `now`: recalculated first if the
    /// pending recalculation is due, otherwise as they are (possibly a
    /// little behind the peers table, as in mesh).
    fn routes_at(&mut self, now: Instant) -> &mut Routes {
        if self.recalc.take_due(now) {
            self.recalculate_routes();
        }
        &mut self.routes
    }

    fn recalculate_routes(&mut self) {
        self.counters.route_calculations += 1;
        self.routes = Routes::calculate(&self.peers);
    }

    /// The topology changed: routes are recalculated soon, once for all
    /// the changes made meanwhile.
    fn invalidate_routes(&mut self, now: Instant) {
        self.recalc.request(now);
    }

    /// Registers the owner of a gossip channel.
    pub fn register_channel(
        &mut self,
        name: &str,
        gossiper: Box<dyn Gossiper>,
    ) -> Result<(), GossipError> {
        if name == TOPOLOGY_CHANNEL || self.channels.contains_key(name) {
            return Err(GossipError(format!("duplicate channel {name}")));
        }
        self.channels.insert(name.to_owned(), gossiper);
        Ok(())
    }

    /// The owner of a channel, as its concrete type.
    pub fn gossiper_mut<T: 'static>(&mut self, name: &str) -> Option<&mut T> {
        self.channels
            .get_mut(name)
            .and_then(|g| g.as_any_mut().downcast_mut::<T>())
    }

    /// Next output for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ----- targets -----

    /// Adds direct peers (from the command line or `POST /connect`; with
    /// `replace` the previous ones are forgotten).
    pub fn initiate_connections(
        &mut self,
        peers: Vec<(String, DirectPeer)>,
        replace: bool,
        now: Instant,
    ) {
        self.maker.initiate_connections(peers, replace, now);
        self.after(now);
    }

    /// Forgets direct peers (`POST /forget`).
    pub fn forget_connections(&mut self, specs: &[String], now: Instant) {
        self.maker.forget_connections(specs, now);
        self.after(now);
    }

    /// The direct peers; `active_only` leaves out those never retried.
    pub fn targets(&self, active_only: bool) -> Vec<String> {
        self.maker.targets(active_only)
    }

    // ----- sockets -----

    fn trusts(&self, addr: &SocketAddr) -> bool {
        self.config
            .trusted_subnets
            .iter()
            .any(|n| n.contains(&addr.ip()))
    }

    /// A TCP connection exists: accepted (`outbound` false) or dialled after
    /// an [`Output::Dial`] for `remote_addr`.
    pub fn connection_opened(
        &mut self,
        remote_addr: SocketAddr,
        outbound: bool,
        now: Instant,
    ) -> ConnHandle {
        let handle = ConnHandle(self.next_handle);
        self.next_handle += 1;
        let conn_uid = rand::RngCore::next_u64(&mut self.rng);
        let trust_remote = self.trusts(&remote_addr);
        let accept_new_peer = if outbound {
            self.dials.remove(&remote_addr).unwrap_or(true)
        } else {
            true
        };
        let me = self.peers.ourself();
        let features = make_features(
            me.name,
            &me.nickname,
            me.short_id,
            me.uid,
            conn_uid,
            trust_remote,
            &self.config.overlay_features,
        );
        let crypto = self
            .config
            .password
            .clone()
            .map(|p| (p, KeyPair::generate(&mut self.rng)));
        let (encoded, encode_err) = match self.codec.encode_features(&features) {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let conn = Connection::new(
            ConnectionParams {
                outbound,
                min_version: self.config.min_version,
                max_version: self.config.max_version,
                crypto,
                features: encoded,
                features_v1: features,
            },
            now,
        );
        self.conns.insert(
            handle,
            LocalConn {
                conn,
                remote_addr,
                outbound,
                conn_uid,
                trust_remote,
                trusted_by_remote: false,
                accept_new_peer,
                remote: None,
                established: false,
                added: false,
                outstanding: 0,
                queue: BTreeMap::new(),
            },
        );
        if let Some(e) = encode_err {
            self.teardown(handle, e.into(), now);
        } else {
            self.flush(handle);
        }
        self.after(now);
        handle
    }

    /// A dial asked for by [`Output::Dial`] failed.
    pub fn dial_failed(&mut self, addr: SocketAddr, error: &str, now: Instant) {
        self.dials.remove(&addr);
        self.maker
            .connection_aborted(addr, error.to_owned(), now, &mut self.rng);
        self.after(now);
    }

    /// The socket was closed by the peer or failed.
    pub fn connection_closed(&mut self, conn: ConnHandle, error: &str, now: Instant) {
        if self.conns.contains_key(&conn) {
            self.teardown_quiet(conn, CloseReason::Socket(error.to_owned()), now);
        }
        self.after(now);
    }

    /// Bytes arrived on a connection.
    pub fn receive(&mut self, handle: ConnHandle, bytes: &[u8], now: Instant) {
        let Some(lc) = self.conns.get_mut(&handle) else {
            return;
        };
        let result = lc.conn.receive(bytes, now);
        self.flush(handle);
        match result {
            Err(e) => self.teardown(handle, e.into(), now),
            Ok(events) => {
                for ev in events {
                    if !self.conns.contains_key(&handle) {
                        break;
                    }
                    if let Err(reason) = self.on_event(handle, ev, now) {
                        self.teardown(handle, reason, now);
                        break;
                    }
                }
            }
        }
        self.after(now);
    }

    /// The overlay reports the connection working (only needed when
    /// `auto_establish` is off).
    pub fn connection_established(&mut self, handle: ConnHandle, now: Instant) {
        self.establish(handle, now);
        self.after(now);
    }

    /// Sends an overlay control message on a connection.
    pub fn send_overlay_control(
        &mut self,
        handle: ConnHandle,
        tag: ProtocolTag,
        payload: &[u8],
        now: Instant,
    ) {
        self.send_msg(handle, tag, payload, now);
        self.after(now);
    }

    // ----- timers -----

    /// The earliest time [`MeshRouter::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_gossip);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.pending_topology.as_ref().map(|(at, _)| *at));
        consider(self.gc_due);
        consider(self.recalc.due());
        consider(self.maker.poll_timeout());
        for lc in self.conns.values() {
            consider(lc.conn.poll_timeout());
        }
        t
    }

    /// Runs everything due at `now`: heartbeats and read deadlines, the
    /// deferred topology broadcast, garbage collection, periodic gossip and
    /// connection attempts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnHandle> = self
            .conns
            .iter()
            .filter(|(_, lc)| lc.conn.poll_timeout().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let Some(lc) = self.conns.get_mut(&h) else {
                continue;
            };
            let r = lc.conn.handle_timeout(now);
            self.flush(h);
            if let Err(e) = r {
                self.teardown(h, e.into(), now);
            }
        }
        if self.gc_due.is_some_and(|t| t <= now) {
            self.gc_due = None;
            let ch = self.peers.garbage_collect();
            self.apply_changes(ch, now);
        }
        self.routes_at(now);
        if self
            .pending_topology
            .as_ref()
            .is_some_and(|(at, _)| *at <= now)
        {
            if let Some((_, mut names)) = self.pending_topology.take() {
                names.insert(self.name());
                self.relay(TOPOLOGY_CHANNEL, self.name(), Data::Topology(names), now);
            }
        }
        if self.next_gossip <= now {
            self.next_gossip = now + self.config.gossip_interval;
            self.send_all_gossip(now);
        }
        self.after(now);
    }

    // ----- gossip API for channel owners -----

    /// Sends `msg` to `dst` on `channel`, along the unicast route.
    pub fn gossip_unicast(
        &mut self,
        channel: &str,
        dst: PeerName,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), GossipError> {
        let env = GossipEnvelope {
            channel: channel.to_owned(),
            src: self.name(),
            dst: Some(dst),
            payload: msg.to_vec(),
        };
        let bytes = self
            .codec
            .encode_envelope(&env)
            .map_err(|e| GossipError(e.to_string()))?;
        let r = self.relay_unicast(dst, &bytes, now);
        self.after(now);
        r
    }

    /// Broadcasts `data` on `channel` to every peer.
    pub fn gossip_broadcast(&mut self, channel: &str, data: GossipData, now: Instant) {
        self.relay_broadcast(channel, self.name(), Data::Raw(data), now);
        self.after(now);
    }

    /// Sends `data` on `channel` to a random subset of neighbours.
    pub fn gossip_neighbour_subset(&mut self, channel: &str, data: GossipData, now: Instant) {
        self.relay(channel, self.name(), Data::Raw(data), now);
        self.after(now);
    }

    // ----- status -----

    /// A snapshot for status pages.
    pub fn status(&mut self, now: Instant) -> MeshStatus {
        let _ = now;
        let me = self.name();
        self.ensure_routes();
        let peers = &self.peers;
        let routes = &mut self.routes;
        let unicast_routes: Vec<(PeerName, PeerName)> =
            routes.unicast.iter().map(|(a, b)| (*a, *b)).collect();
        let broadcast_routes = routes.broadcast(peers, me);
        let mut connections: Vec<ConnectionStatus> = self
            .conns
            .values()
            .filter(|lc| lc.added)
            .map(|lc| {
                let remote = lc.remote.map(|n| {
                    let nick = self
                        .peers
                        .get(&n)
                        .map(|p| p.nickname.clone())
                        .unwrap_or_default();
                    (n, nick)
                });
                ConnectionStatus {
                    address: lc.remote_addr.to_string(),
                    outbound: lc.outbound,
                    state: if lc.established {
                        "established"
                    } else {
                        "pending"
                    }
                    .into(),
                    info: remote
                        .as_ref()
                        .map(|(n, nick)| format!("{n}({nick})"))
                        .unwrap_or_default(),
                    remote,
                    encrypted: self.config.password.is_some()
                        && (!lc.trust_remote || !lc.trusted_by_remote),
                    protocol_version: lc.conn.version(),
                }
            })
            .collect();
        connections.extend(
            self.maker
                .target_statuses()
                .into_iter()
                .map(|t: TargetStatus| ConnectionStatus {
                    address: t.address.to_string(),
                    outbound: true,
                    state: t.state.into(),
                    info: t.info,
                    remote: None,
                    encrypted: false,
                    protocol_version: 0,
                }),
        );
        MeshStatus {
            name: self.name(),
            nickname: self.config.nickname.clone(),
            port: self.config.port,
            protocol_min_version: self.config.min_version,
            protocol_max_version: self.config.max_version,
            encryption: self.config.password.is_some(),
            peer_discovery: self.config.peer_discovery,
            peers: self
                .peers
                .iter()
                .map(|p| PeerStatus {
                    name: p.name,
                    nickname: p.nickname.clone(),
                    uid: p.uid,
                    short_id: p.short_id,
                    version: p.version,
                    connections: p.connections.values().cloned().collect(),
                })
                .collect(),
            connections,
            targets: self.maker.targets(false),
            termination_count: self.maker.termination_count(),
            unicast_routes,
            broadcast_routes,
            trusted_subnets: self
                .config
                .trusted_subnets
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }

    // ----- internals -----

    /// Work that follows every entry point: run the connection maker when
    /// it is due.
    fn after(&mut self, now: Instant) {
        if self.maker.poll_timeout().is_some_and(|t| t <= now) {
            let ours: Vec<OurConnection> = self
                .conns
                .values()
                .filter(|lc| lc.added)
                .filter_map(|lc| {
                    lc.remote.map(|remote| OurConnection {
                        remote,
                        remote_addr: lc.remote_addr,
                        outbound: lc.outbound,
                    })
                })
                .collect();
            let attempts = self.maker.check(now, &ours, &self.peers);
            for a in attempts {
                let limit = self.config.conn_limit;
                if limit != 0 && self.by_peer.len() >= limit {
                    self.maker.connection_aborted(
                        a.addr,
                        CloseReason::ConnLimit(limit).to_string(),
                        now,
                        &mut self.rng,
                    );
                    continue;
                }
                self.dials.insert(a.addr, a.accept_new_peer);
                self.outputs.push_back(Output::Dial { addr: a.addr });
            }
        }
    }

    fn flush(&mut self, handle: ConnHandle) {
        if let Some(lc) = self.conns.get_mut(&handle) {
            let bytes = lc.conn.take_output();
            if !bytes.is_empty() {
                if self.config.flow_control {
                    lc.outstanding += 1;
                }
                self.outputs.push_back(Output::Transmit {
                    conn: handle,
                    bytes,
                });
            }
        }
    }

    fn send_msg(&mut self, handle: ConnHandle, tag: ProtocolTag, payload: &[u8], now: Instant) {
        let Some(lc) = self.conns.get_mut(&handle) else {
            return;
        };
        match lc.conn.send(tag, payload) {
            Ok(()) => {
                if matches!(
                    tag,
                    ProtocolTag::Gossip | ProtocolTag::GossipUnicast | ProtocolTag::GossipBroadcast
                ) {
                    self.counters.gossip_sent += 1;
                }
                self.flush(handle);
            }
            Err(ConnError::Wire(e)) => {
                // Too large: the message is dropped, the stream is intact.
                tracing::warn!(conn = handle.0, "dropping message: {e}");
            }
            Err(e) => self.teardown(handle, e.into(), now),
        }
    }

    fn on_event(
        &mut self,
        handle: ConnHandle,
        ev: ConnEvent,
        now: Instant,
    ) -> Result<(), CloseReason> {
        match ev {
            ConnEvent::Ready {
                features,
                session_key,
                version,
            } => self.on_ready(handle, features, session_key, version, now),
            ConnEvent::Message { tag, payload } => match tag {
                ProtocolTag::Heartbeat => Ok(()),
                ProtocolTag::Gossip | ProtocolTag::GossipUnicast | ProtocolTag::GossipBroadcast => {
                    self.counters.gossip_received += 1;
                    self.handle_gossip(tag, &payload, now)
                }
                _ => {
                    self.outputs.push_back(Output::OverlayControl {
                        conn: handle,
                        tag,
                        payload,
                    });
                    Ok(())
                }
            },
            ConnEvent::UnknownTag(t) => {
                tracing::debug!(conn = handle.0, "ignoring unknown protocol tag {t}");
                Ok(())
            }
        }
    }

    fn on_ready(
        &mut self,
        handle: ConnHandle,
        features: RemoteFeatures,
        session_key: Option<SessionKey>,
        version: u8,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let features = match features {
            RemoteFeatures::Encoded(bytes) => self.codec.decode_features(&bytes)?,
            RemoteFeatures::Decoded(f) => f,
        };
        let intro = parse_features(features)?;
        let me = self.peers.ourself().clone();
        let Some(lc) = self.conns.get_mut(&handle) else {
            return Ok(());
        };
        lc.trusted_by_remote = intro.trusts_us;
        lc.conn_uid ^= intro.conn_id;
        let accept_new_peer = lc.accept_new_peer;
        let remote_addr = lc.remote_addr;
        // Register the remote peer (taking a reference on it).
        let known_uid = if accept_new_peer {
            let mut p = Peer::new(
                intro.name,
                &intro.nickname,
                intro.uid,
                0,
                intro.short_id.unwrap_or_default(),
            );
            p.has_short_id = intro.short_id.is_some();
            let (known, ch) = self.peers.fetch_with_default(p);
            if let Some(lc) = self.conns.get_mut(&handle) {
                lc.remote = Some(intro.name);
            }
            self.apply_changes(ch, now);
            known
        } else {
            match self.peers.fetch_and_add_ref(intro.name) {
                Some(uid) => {
                    if let Some(lc) = self.conns.get_mut(&handle) {
                        lc.remote = Some(intro.name);
                    }
                    Some(uid)
                }
                None => {
                    return Err(CloseReason::UnknownRemote {
                        name: intro.name,
                        addr: remote_addr,
                    });
                }
            }
        };
        if intro.name == me.name {
            if intro.uid != me.uid {
                return Err(CloseReason::NameCollision {
                    local: me.name,
                    remote_uid: intro.uid,
                });
            }
            return Err(CloseReason::ConnectToSelf);
        }
        let restarted = known_uid.is_some_and(|u| u != intro.uid);
        tracing::info!(
            conn = handle.0,
            "connection ready to {}({}) at {remote_addr}; using protocol version {version}",
            intro.name,
            intro.nickname
        );
        self.add_connection(handle, intro.name, restarted, now)?;
        let Some(lc) = self.conns.get(&handle) else {
            return Ok(());
        };
        let untrusted = !lc.trust_remote || !lc.trusted_by_remote;
        self.outputs.push_back(Output::ConnectionAdded {
            conn: handle,
            remote: intro.name,
            outbound: lc.outbound,
            remote_addr: lc.remote_addr,
            conn_uid: lc.conn_uid,
            session_key: if untrusted { session_key } else { None },
            features: intro.features,
        });
        if self.config.auto_establish {
            self.establish(handle, now);
        }
        Ok(())
    }

    fn add_connection(
        &mut self,
        handle: ConnHandle,
        remote: PeerName,
        restarted: bool,
        now: Instant,
    ) -> Result<(), CloseReason> {
        if let Some(&dup) = self.by_peer.get(&remote) {
            if dup == handle {
                return Ok(());
            }
            let mine = self.conns.get(&handle).map(|c| c.conn_uid).unwrap_or(0);
            let theirs = self.conns.get(&dup).map(|c| c.conn_uid).unwrap_or(0);
            if mine < theirs {
                self.teardown(dup, CloseReason::Duplicate(remote), now);
            } else if theirs < mine {
                return Err(CloseReason::Duplicate(remote));
            } else {
                self.teardown(dup, CloseReason::Duplicate(remote), now);
                return Err(CloseReason::Duplicate(remote));
            }
        }
        let limit = self.config.conn_limit;
        if limit != 0 && self.by_peer.len() >= limit {
            return Err(CloseReason::ConnLimit(limit));
        }
        let connected_before = self.routes_at(now).unicast.contains_key(&remote);
        let Some(lc) = self.conns.get_mut(&handle) else {
            return Ok(());
        };
        lc.added = true;
        let pc = PeerConnection {
            remote,
            remote_tcp_addr: lc.remote_addr.to_string(),
            outbound: lc.outbound,
            established: false,
        };
        let (outbound, addr) = (lc.outbound, lc.remote_addr);
        self.peers.add_local_connection(pc);
        self.by_peer.insert(remote, handle);
        if outbound {
            self.maker.connection_created(addr);
        }
        self.invalidate_routes(now);
        if restarted || !connected_before {
            self.send_all_gossip_down(handle, now);
        }
        self.broadcast_peer_update(&[remote], now);
        Ok(())
    }

    fn establish(&mut self, handle: ConnHandle, now: Instant) {
        let Some(lc) = self.conns.get_mut(&handle) else {
            return;
        };
        let Some(remote) = lc.remote else {
            return;
        };
        if !lc.added || lc.established || self.by_peer.get(&remote) != Some(&handle) {
            return;
        }
        lc.established = true;
        self.peers.local_connection_established(remote);
        self.invalidate_routes(now);
        self.broadcast_peer_update(&[], now);
    }

    /// Closes a connection, telling the shell.
    fn teardown(&mut self, handle: ConnHandle, reason: CloseReason, now: Instant) {
        if !self.conns.contains_key(&handle) {
            return;
        }
        self.flush(handle);
        self.outputs.push_back(Output::Close {
            conn: handle,
            reason: reason.clone(),
        });
        self.teardown_quiet(handle, reason, now);
    }

    /// Forgets a connection without an [`Output::Close`].
    fn teardown_quiet(&mut self, handle: ConnHandle, reason: CloseReason, now: Instant) {
        let Some(lc) = self.conns.remove(&handle) else {
            return;
        };
        match lc.remote {
            None => tracing::info!(
                "->[{}] connection shutting down due to error during handshake: {reason}",
                lc.remote_addr
            ),
            Some(r) => tracing::info!(
                "->[{}|{r}]: connection shutting down due to error: {reason}",
                lc.remote_addr
            ),
        }
        if let Some(remote) = lc.remote {
            self.peers.dereference(remote);
            if self.by_peer.get(&remote) == Some(&handle) {
                self.by_peer.remove(&remote);
                self.peers.delete_local_connection(remote);
                self.outputs.push_back(Output::ConnectionRemoved {
                    conn: handle,
                    remote,
                });
                let ch = self.peers.garbage_collect();
                self.apply_changes(ch, now);
                self.invalidate_routes(now);
                self.broadcast_peer_update(&[], now);
            }
        }
        let why = match &reason {
            CloseReason::ConnectToSelf => Termination::ConnectToSelf,
            CloseReason::NameCollision { .. } => Termination::NameCollision(reason.to_string()),
            _ => Termination::Error(reason.to_string()),
        };
        let target = lc.outbound.then_some(lc.remote_addr);
        self.maker
            .connection_terminated(target, why, now, &mut self.rng);
    }

    fn apply_changes(&mut self, ch: PeersChanges, now: Instant) {
        for n in &ch.removed {
            self.outputs.push_back(Output::PeerRemoved(*n));
            tracing::info!("Removed unreachable peer {n}");
        }
        if !ch.removed.is_empty() {
            self.invalidate_routes(now);
        }
        let mut broadcast = ch.local_modified;
        if ch.reassign_local_short_id {
            let (ok, ch2) = self.peers.reassign_local_short_id(&mut self.rng);
            if ok {
                broadcast = true;
                tracing::info!(
                    "short ID collision: now using {}",
                    self.peers.ourself().short_id
                );
            }
            if ch2.short_ids_changed {
                self.outputs.push_back(Output::ShortIdsChanged);
            }
        }
        if ch.short_ids_changed {
            self.outputs.push_back(Output::ShortIdsChanged);
        }
        if broadcast {
            self.broadcast_peer_update(&[], now);
        }
    }

    fn broadcast_peer_update(&mut self, names: &[PeerName], now: Instant) {
        let entry = self
            .pending_topology
            .get_or_insert_with(|| (now + TOPOLOGY_UPDATE_DELAY, BTreeSet::new()));
        entry.1.extend(names.iter().copied());
    }

    fn channel_mut(&mut self, name: &str) -> &mut Box<dyn Gossiper> {
        let interval = self.config.gossip_interval;
        self.channels.entry(name.to_owned()).or_insert_with(|| {
            tracing::info!("[gossip {name}]: created surrogate channel");
            Box::new(SurrogateGossiper::new(interval))
        })
    }

    fn handle_gossip(
        &mut self,
        tag: ProtocolTag,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), CloseReason> {
        let unicast = tag == ProtocolTag::GossipUnicast;
        let env = self.codec.decode_envelope(payload, unicast)?;
        let topology = env.channel == TOPOLOGY_CHANNEL;
        match tag {
            ProtocolTag::GossipUnicast => {
                let dst = env.dst.unwrap_or(PeerName::UNKNOWN);
                if dst == self.name() {
                    if topology {
                        return Err(GossipError("unexpected topology gossip unicast".into()).into());
                    }
                    self.channel_mut(&env.channel)
                        .on_gossip_unicast(env.src, &env.payload, now)?;
                } else if let Err(e) = self.relay_unicast(dst, payload, now) {
                    tracing::info!("[gossip {}]: {e}", env.channel);
                }
            }
            ProtocolTag::GossipBroadcast => {
                let data = if topology {
                    let entries = self.codec.decode_topology(&env.payload)?;
                    let r = self.peers.apply_update(&entries);
                    self.after_topology_update(&r.improved, r.changes, now);
                    (!r.received.is_empty()).then_some(Data::Topology(r.received))
                } else {
                    self.channel_mut(&env.channel)
                        .on_gossip_broadcast(env.src, &env.payload, now)?
                        .map(Data::Raw)
                };
                if let Some(d) = data {
                    self.relay_broadcast(&env.channel, env.src, d, now);
                }
            }
            _ => {
                let data = if topology {
                    let entries = self.codec.decode_topology(&env.payload)?;
                    let r = self.peers.apply_update(&entries);
                    let improved = r.improved.clone();
                    self.after_topology_update(&r.improved, r.changes, now);
                    (!improved.is_empty()).then_some(Data::Topology(improved))
                } else {
                    self.channel_mut(&env.channel)
                        .on_gossip(&env.payload, now)?
                        .map(Data::Raw)
                };
                if let Some(d) = data {
                    self.relay(&env.channel, env.src, d, now);
                }
            }
        }
        Ok(())
    }

    fn after_topology_update(
        &mut self,
        improved: &BTreeSet<PeerName>,
        ch: PeersChanges,
        now: Instant,
    ) {
        if !improved.is_empty() {
            self.maker.refresh(now);
            self.invalidate_routes(now);
        }
        if self.gc_due.is_none() {
            self.gc_due = Some(now + GC_DELAY);
        }
        self.apply_changes(ch, now);
    }

    /// The envelopes for `data` on `channel` from `src`, reused from the
    /// last call when nothing it depends on changed.
    fn encode_data(&mut self, channel: &str, src: PeerName, data: &Data) -> Arc<Vec<Vec<u8>>> {
        let generation = self.peers.generation();
        if let Some(e) = &self.encoded {
            if e.generation == generation && e.src == src && e.channel == channel && e.data == *data
            {
                return Arc::clone(&e.messages);
            }
        }
        let messages = Arc::new(self.encode_data_now(channel, src, data));
        self.encoded = Some(Encoded {
            generation,
            channel: channel.to_owned(),
            src,
            data: data.clone(),
            messages: Arc::clone(&messages),
        });
        messages
    }

    fn encode_data_now(&self, channel: &str, src: PeerName, data: &Data) -> Vec<Vec<u8>> {
        let messages: Vec<Vec<u8>> = match data {
            Data::Raw(m) => m.clone(),
            Data::Topology(names) => {
                match self
                    .codec
                    .encode_topology(&self.peers.encode_entries(names))
                {
                    Ok(b) => vec![b],
                    Err(e) => {
                        tracing::warn!("cannot encode topology: {e}");
                        Vec::new()
                    }
                }
            }
        };
        messages
            .into_iter()
            .filter_map(|payload| {
                self.codec
                    .encode_envelope(&GossipEnvelope {
                        channel: channel.to_owned(),
                        src,
                        dst: None,
                        payload,
                    })
                    .map_err(|e| tracing::warn!("cannot encode gossip: {e}"))
                    .ok()
            })
            .collect()
    }

    /// Queues (or, without flow control, sends) gossip on one connection.
    fn enqueue(&mut self, handle: ConnHandle, channel: &str, kind: Kind, data: Data, now: Instant) {
        if !self.config.flow_control {
            self.send_now(handle, channel, kind, &data, now);
            return;
        }
        let Some(lc) = self.conns.get_mut(&handle) else {
            return;
        };
        let p = lc.queue.entry(channel.to_owned()).or_default();
        match kind {
            Kind::Gossip => p.gossip = Some(merge(p.gossip.take(), data)),
            Kind::Broadcast(src) => {
                let e = p.broadcasts.remove(&src);
                p.broadcasts.insert(src, merge(e, data));
            }
        }
        self.pump(handle, now);
    }

    fn send_now(
        &mut self,
        handle: ConnHandle,
        channel: &str,
        kind: Kind,
        data: &Data,
        now: Instant,
    ) {
        let (tag, src) = match kind {
            Kind::Gossip => (ProtocolTag::Gossip, self.name()),
            Kind::Broadcast(src) => (ProtocolTag::GossipBroadcast, src),
        };
        for m in self.encode_data(channel, src, data).iter() {
            self.send_msg(handle, tag, m, now);
        }
    }

    /// Sends the next queued batch if the connection has drained.
    fn pump(&mut self, handle: ConnHandle, now: Instant) {
        loop {
            let Some(lc) = self.conns.get_mut(&handle) else {
                return;
            };
            if lc.outstanding > 0 {
                return;
            }
            let mut picked = None;
            for (channel, p) in lc.queue.iter_mut() {
                if let Some(d) = p.gossip.take() {
                    picked = Some((channel.clone(), Kind::Gossip, d));
                    break;
                }
                if let Some((src, d)) = p.broadcasts.pop_first() {
                    picked = Some((channel.clone(), Kind::Broadcast(src), d));
                    break;
                }
            }
            lc.queue
                .retain(|_, p| p.gossip.is_some() || !p.broadcasts.is_empty());
            let Some((channel, kind, data)) = picked else {
                return;
            };
            // If nothing goes out (encoding failed), the loop tries the
            // next batch; otherwise `outstanding` stops it.
            self.send_now(handle, &channel, kind, &data, now);
        }
    }

    /// With flow control: the bytes of one [`Output::Transmit`] on `conn`
    /// were written; queued gossip may go next.
    pub fn transmit_done(&mut self, handle: ConnHandle, now: Instant) {
        if let Some(lc) = self.conns.get_mut(&handle) {
            lc.outstanding = lc.outstanding.saturating_sub(1);
        }
        self.pump(handle, now);
        self.after(now);
    }

    /// Gossip to random neighbours (never back to `src`).
    fn relay(&mut self, channel: &str, src: PeerName, data: Data, now: Instant) {
        self.routes_at(now);
        let hops = self.routes.random_neighbours(src, &mut self.rng);
        for hop in hops {
            if let Some(&h) = self.by_peer.get(&hop) {
                self.enqueue(h, channel, Kind::Gossip, data.clone(), now);
            }
        }
    }

    fn relay_broadcast(&mut self, channel: &str, src: PeerName, data: Data, now: Instant) {
        self.routes_at(now);
        let hops = self.routes.broadcast_all(&self.peers, src);
        for hop in hops {
            if let Some(&h) = self.by_peer.get(&hop) {
                self.enqueue(h, channel, Kind::Broadcast(src), data.clone(), now);
            }
        }
    }

    fn relay_unicast(
        &mut self,
        dst: PeerName,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), GossipError> {
        let hop = self
            .routes_at(now)
            .unicast_all
            .get(&dst)
            .copied()
            .ok_or_else(|| GossipError(format!("unknown relay destination: {dst}")))?;
        let h =
            self.by_peer.get(&hop).copied().ok_or_else(|| {
                GossipError(format!("unable to find connection to relay peer {hop}"))
            })?;
        self.send_msg(h, ProtocolTag::GossipUnicast, bytes, now);
        Ok(())
    }

    fn send_all_gossip(&mut self, now: Instant) {
        self.counters.gossip_rounds += 1;
        let names = self.peers.names();
        self.relay(TOPOLOGY_CHANNEL, self.name(), Data::Topology(names), now);
        let channels: Vec<String> = self.channels.keys().cloned().collect();
        for c in channels {
            let data = self.channel_mut(&c).gossip(now);
            if let Some(d) = data {
                self.relay(&c, self.name(), Data::Raw(d), now);
            }
        }
    }

    fn send_all_gossip_down(&mut self, handle: ConnHandle, now: Instant) {
        let names = self.peers.names();
        self.enqueue(
            handle,
            TOPOLOGY_CHANNEL,
            Kind::Gossip,
            Data::Topology(names),
            now,
        );
        let channels: Vec<String> = self.channels.keys().cloned().collect();
        for c in channels {
            let data = self.channel_mut(&c).gossip(now);
            if let Some(d) = data {
                self.enqueue(handle, &c, Kind::Gossip, Data::Raw(d), now);
            }
        }
    }
}

/// Merges queued gossip: topology name sets unite; a channel's own
/// messages are kept in order (as mesh's stand-in channel merges them).
fn merge(old: Option<Data>, new: Data) -> Data {
    match (old, new) {
        (None, d) => d,
        (Some(Data::Topology(mut a)), Data::Topology(b)) => {
            a.extend(b);
            Data::Topology(a)
        }
        (Some(Data::Raw(mut a)), Data::Raw(b)) => {
            a.extend(b);
            Data::Raw(a)
        }
        (Some(_), d) => d,
    }
}

/// Fuzz entry point: completes a plain handshake on an inbound connection
/// (gob features, as a Weave peer would send), then feeds `data` as
/// gossip and overlay messages; the router must never panic.
pub fn fuzz_router_messages(data: &[u8]) {
    use super::codec::GobCodec;
    use super::wire;
    use rand::SeedableRng;
    let now = Instant::now();
    let cfg = MeshConfig::new(PeerName::from_u64(1), "fuzz");
    let mut r = MeshRouter::new(cfg, Box::new(GobCodec), StdRng::seed_from_u64(1), now);
    let h = r.connection_opened(
        "10.0.0.2:40000"
            .parse()
            .unwrap_or(SocketAddr::from(([10, 0, 0, 2], 40000))),
        false,
        now,
    );
    let features = make_features(
        PeerName::from_u64(2),
        "peer",
        ShortId::new(2),
        PeerUid(2),
        2,
        false,
        &Features::new(),
    );
    let mut intro = wire::header(1, 2).to_vec();
    intro.push(0);
    if let Ok(f) = GobCodec
        .encode_features(&features)
        .and_then(|b| wire::encode_frame(&b).map_err(|e| CodecError(e.to_string())))
    {
        intro.extend(f);
    }
    r.receive(h, &intro, now);
    // Split the input into messages: [len byte][tag choice][body...].
    let mut rest = data;
    let mut stream = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (body, tail) = tail.split_at(n);
        let mut msg = Vec::with_capacity(body.len() + 1);
        if let Some((&t, b)) = body.split_first() {
            msg.push(4 + t % 4);
            msg.extend_from_slice(b);
        }
        if let Ok(f) = wire::encode_frame(&msg) {
            stream.extend(f);
        }
        rest = tail;
    }
    r.receive(h, &stream, now);
    r.handle_timeout(now + Duration::from_secs(61));
    while r.poll_output().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_router_messages_never_panics() {
        let mut x: u64 = 7;
        for i in 0..2000 {
            let data: Vec<u8> = (0..(i % 200))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 16) as u8
                })
                .collect();
            fuzz_router_messages(&data);
        }
    }

    /// A peer that offers only protocol version 1 (as a Weave router run
    /// with a maximum of 1 would): the router answers in version 1, with
    /// the version-1 features in a gob stream and its messages as gob
    /// `[]byte` values.
    #[test]
    fn version_one_peer_is_spoken_to_in_version_one() {
        use super::super::codec::GobCodec;
        use super::super::connection::V1_FEATURES;
        use super::super::wire::{self, FrameReader, GobMessage};
        use rand::SeedableRng;
        let now = Instant::now();
        let cfg = MeshConfig::new(PeerName::from_u64(1), "me");
        let mut r = MeshRouter::new(cfg, Box::new(GobCodec), StdRng::seed_from_u64(1), now);
        let h = r.connection_opened("10.0.0.2:40000".parse().unwrap(), false, now);
        let mut theirs = make_features(
            PeerName::from_u64(2),
            "two",
            ShortId::new(2),
            PeerUid(22),
            9,
            false,
            &Features::new(),
        );
        theirs.retain(|k, _| V1_FEATURES.contains(&k.as_str()));
        let mut bytes = wire::header(1, 1).to_vec();
        bytes.extend(weave_gob::weave::mesh::encode_features(&theirs));
        r.receive(h, &bytes, now);
        let mut sent = Vec::new();
        let mut added = None;
        while let Some(o) = r.poll_output() {
            match o {
                Output::Transmit { conn, bytes } if conn == h => sent.extend(bytes),
                Output::ConnectionAdded { features, .. } => added = Some(features),
                Output::Close { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        assert_eq!(
            added,
            Some(theirs),
            "peer added with its version-1 features"
        );
        let st = r.status(now);
        assert_eq!(st.connections[0].protocol_version, 1);
        assert_eq!((st.protocol_min_version, st.protocol_max_version), (1, 2));
        // What went out: our header, our features as a gob stream (type
        // definition and value), then gossip as gob []byte values.
        assert_eq!(&sent[..wire::HEADER_LEN], b"weave\x01\x02");
        let mut rd = FrameReader::new();
        rd.push(&sent[wire::HEADER_LEN..]);
        let mut intro = Vec::new();
        for _ in 0..2 {
            let m = rd.next_gob_message().unwrap().unwrap();
            intro.extend(wire::gob_message_with_length(&m));
        }
        let ours = weave_gob::weave::mesh::decode_features(&intro).unwrap();
        let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["ConnID", "Name", "NickName", "PeerNameFlavour", "UID"]
        );
        assert_eq!(ours["Name"], "00:00:00:00:00:01");
        let m = rd.next_gob_message().unwrap().unwrap();
        let GobMessage::Bytes(msg) = wire::parse_gob_message(&m).unwrap() else {
            panic!("not a []byte value")
        };
        assert_eq!(msg.first(), Some(&ProtocolTag::Gossip.byte()));
        let env = GobCodec.decode_envelope(&msg[1..], false).unwrap();
        assert_eq!(env.channel, TOPOLOGY_CHANNEL);
        // A heartbeat in version-1 framing keeps the connection up.
        let heartbeat = [ProtocolTag::Heartbeat.byte()];
        r.receive(h, &wire::encode_v1_message(&heartbeat).unwrap(), now);
        while let Some(o) = r.poll_output() {
            assert!(!matches!(o, Output::Close { .. }), "{o:?}");
        }
        assert_eq!(r.peers().len(), 2);
    }

    #[test]
    fn gob_gossip_from_a_peer_is_applied() {
        use super::super::codec::{ConnectionSummary, GobCodec, PeerSummary, TopologyEntry};
        use super::super::wire;
        use rand::SeedableRng;
        let now = Instant::now();
        let cfg = MeshConfig::new(PeerName::from_u64(1), "me");
        let mut r = MeshRouter::new(cfg, Box::new(GobCodec), StdRng::seed_from_u64(1), now);
        let h = r.connection_opened("10.0.0.2:40000".parse().unwrap(), false, now);
        let features = make_features(
            PeerName::from_u64(2),
            "two",
            ShortId::new(2),
            PeerUid(22),
            9,
            false,
            &Features::new(),
        );
        let mut bytes = wire::header(1, 2).to_vec();
        bytes.push(0);
        bytes.extend(wire::encode_frame(&GobCodec.encode_features(&features).unwrap()).unwrap());
        // Topology gossip from peer 2 naming peer 3 behind it.
        let topo = GobCodec
            .encode_topology(&[
                TopologyEntry {
                    peer: PeerSummary {
                        name_byte: PeerName::from_u64(2).to_bytes().to_vec(),
                        nickname: "two".into(),
                        uid: 22,
                        version: 3,
                        short_id: 2,
                        has_short_id: true,
                    },
                    connections: vec![
                        ConnectionSummary {
                            name_byte: PeerName::from_u64(1).to_bytes().to_vec(),
                            remote_tcp_addr: "10.0.0.1:6783".into(),
                            outbound: true,
                            established: true,
                        },
                        ConnectionSummary {
                            name_byte: PeerName::from_u64(3).to_bytes().to_vec(),
                            remote_tcp_addr: "10.0.0.3:6783".into(),
                            outbound: true,
                            established: true,
                        },
                    ],
                },
                TopologyEntry {
                    peer: PeerSummary {
                        name_byte: PeerName::from_u64(3).to_bytes().to_vec(),
                        nickname: "three".into(),
                        uid: 33,
                        version: 1,
                        short_id: 3,
                        has_short_id: true,
                    },
                    connections: vec![ConnectionSummary {
                        name_byte: PeerName::from_u64(2).to_bytes().to_vec(),
                        remote_tcp_addr: "10.0.0.2:50000".into(),
                        outbound: false,
                        established: true,
                    }],
                },
            ])
            .unwrap();
        let env = GobCodec
            .encode_envelope(&GossipEnvelope {
                channel: TOPOLOGY_CHANNEL.into(),
                src: PeerName::from_u64(2),
                dst: None,
                payload: topo,
            })
            .unwrap();
        let mut msg = vec![ProtocolTag::Gossip.byte()];
        msg.extend(env);
        bytes.extend(wire::encode_frame(&msg).unwrap());
        r.receive(h, &bytes, now);
        let mut outs = Vec::new();
        while let Some(o) = r.poll_output() {
            outs.push(o);
        }
        assert!(outs.iter().any(|o| matches!(o, Output::ConnectionAdded { remote, .. } if *remote == PeerName::from_u64(2))));
        assert_eq!(r.peers().len(), 3);
        let routes = r.routes().clone();
        assert_eq!(
            routes.unicast.get(&PeerName::from_u64(3)),
            Some(&PeerName::from_u64(2))
        );
        // Discovery asks to dial peer 3 at its mesh port.
        assert!(outs.iter().any(
            |o| matches!(o, Output::Dial { addr } if *addr == "10.0.0.3:6783".parse().unwrap())
        ));
        // The router answered with its own gossip down the new connection.
        assert!(
            outs.iter()
                .any(|o| matches!(o, Output::Transmit { conn, .. } if *conn == h))
        );
    }
}
