//! The router task: the one place that owns the sans-IO cores.
//!
//! Sockets and HTTP handlers send it [`Event`]s over a channel; it feeds
//! them to the cores with the current time, sleeps until the cores' next
//! timeout, and carries out what the cores ask for (write bytes, close a
//! connection, dial an address). Each TCP connection has a reader task and
//! a writer task that only move bytes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::ipam::{CHANNEL, IpamChannel, ipam_name, mesh_name};
use super::ipam_store::IpamStore;
use super::persist;
use super::status::Snapshot;
use crate::ipam::{self as alloc, Address, Cidr, Input, OpError, OpId, Range, Reply};
use crate::mesh::connection_maker::DirectPeer;
use crate::mesh::identity::PeerName;
use crate::mesh::router::{ConnHandle, MeshRouter, Output};
use crate::overlay::dataplane::{ContainerSpec, OverlayEvent};
use crate::overlay::runtime::Overlay;

/// How long a dial may take before it counts as failed.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests from the HTTP API.
#[derive(Debug)]
pub enum Control {
    /// A status snapshot.
    Status(oneshot::Sender<Snapshot>),
    /// Add direct peers (`POST /connect`); hosts are already resolved.
    Connect {
        /// The peers as given, with their resolved addresses.
        peers: Vec<(String, DirectPeer)>,
        /// Forget the previous direct peers first.
        replace: bool,
        /// Answered once the targets are recorded.
        reply: oneshot::Sender<()>,
    },
    /// Forget direct peers (`POST /forget`).
    Forget {
        /// The peers as given.
        peers: Vec<String>,
        /// Answered once they are forgotten.
        reply: oneshot::Sender<()>,
    },
    /// An allocator operation, answered when the allocator replies.
    Ipam {
        /// The operation.
        call: IpamCall,
        /// Its result; an error when the router runs no allocator.
        reply: oneshot::Sender<Result<Reply, String>>,
    },
    /// The addresses an identifier holds within a range (`GET /ip/{id}`).
    Lookup {
        /// Identifier.
        ident: String,
        /// Range to look in.
        range: Range,
        /// The addresses (none without an allocator).
        reply: oneshot::Sender<Vec<Cidr>>,
    },
    /// Every identifier and its addresses (`GET /ip`).
    Owned(oneshot::Sender<Vec<(String, Vec<Cidr>)>>),
    /// A container was attached (`PUT /container/{id}`): the data plane
    /// installs its delivery flows. Answered once handed over.
    ContainerAdded {
        /// The container.
        spec: ContainerSpec,
        /// Answered with whether a data plane took it.
        reply: oneshot::Sender<bool>,
    },
    /// A container was detached (`DELETE /container/{id}`).
    ContainerRemoved {
        /// Its identifier.
        id: String,
        /// Answered with whether a data plane took it.
        reply: oneshot::Sender<bool>,
    },
}

/// An allocator operation from the HTTP API.
#[derive(Debug)]
pub enum IpamCall {
    /// `POST /ip/{id}[/{ip}/{prefix}]`.
    Allocate {
        /// Identifier.
        ident: String,
        /// Subnet to allocate in.
        subnet: Cidr,
        /// Whether the identifier is a container (`check-alive`).
        is_container: bool,
    },
    /// `PUT /ip/{id}/{ip}/{prefix}`.
    Claim {
        /// Identifier.
        ident: String,
        /// The address.
        cidr: Cidr,
        /// Whether the identifier is a container (`check-alive`).
        is_container: bool,
        /// `noErrorOnUnknown`.
        no_error_on_unknown: bool,
    },
    /// `DELETE /ip/{id}`.
    Delete {
        /// Identifier.
        ident: String,
    },
    /// `DELETE /ip/{id}/{ip}`.
    Free {
        /// Identifier.
        ident: String,
        /// The address.
        addr: Address,
    },
    /// `GET /ring`: wait for the ring.
    Prime,
    /// `DELETE /peer/{name}` (rmpeer).
    Takeover {
        /// Peer name or nickname.
        peer: String,
    },
    /// `DELETE /peer` (reset).
    Shutdown,
}

impl IpamCall {
    fn into_input(self, op: OpId) -> Input {
        match self {
            IpamCall::Allocate {
                ident,
                subnet,
                is_container,
            } => Input::Allocate {
                op,
                ident,
                subnet,
                is_container,
            },
            IpamCall::Claim {
                ident,
                cidr,
                is_container,
                no_error_on_unknown,
            } => Input::Claim {
                op,
                ident,
                cidr,
                is_container,
                no_error_on_unknown,
            },
            IpamCall::Delete { ident } => Input::Delete { op, ident },
            IpamCall::Free { ident, addr } => Input::Free { op, ident, addr },
            IpamCall::Prime => Input::Prime { op },
            IpamCall::Takeover { peer } => Input::AdminTakeover { op, peer },
            IpamCall::Shutdown => Input::Shutdown { op },
        }
    }
}

/// Everything the router task reacts to.
#[derive(Debug)]
pub enum Event {
    /// A peer connected to us.
    Accepted(TcpStream, SocketAddr),
    /// A dial we were asked for finished.
    Dialled(SocketAddr, Result<TcpStream, String>),
    /// Bytes arrived on a connection.
    Bytes(ConnHandle, Vec<u8>),
    /// A connection's socket closed or failed.
    Closed(ConnHandle, String),
    /// An API request.
    Control(Control),
    /// The data plane asks something of the mesh.
    Overlay(OverlayEvent),
}

/// A live socket as the router task sees it.
struct Socket {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: JoinHandle<()>,
}

/// The router task's state.
pub struct RouterTask {
    mesh: MeshRouter,
    version: String,
    sockets: HashMap<ConnHandle, Socket>,
    events: mpsc::UnboundedSender<Event>,
    targets_file: Option<PathBuf>,
    overlay: Option<Overlay>,
    store: Option<IpamStore>,
    pending: HashMap<OpId, oneshot::Sender<Result<Reply, String>>>,
    next_op: u64,
    known_peers: BTreeSet<PeerName>,
    has_ipam: bool,
}

impl RouterTask {
    /// A task around `mesh`; `events` is the sending side of its own queue.
    pub fn new(mesh: MeshRouter, version: String, events: mpsc::UnboundedSender<Event>) -> Self {
        RouterTask {
            mesh,
            version,
            sockets: HashMap::new(),
            events,
            targets_file: None,
            overlay: None,
            store: None,
            pending: HashMap::new(),
            next_op: 1,
            known_peers: BTreeSet::new(),
            has_ipam: false,
        }
    }

    /// Runs the allocator: registers its gossip channel on the mesh and
    /// applies its writes to `store`.
    pub fn with_ipam(mut self, channel: IpamChannel, store: IpamStore) -> anyhow::Result<Self> {
        self.mesh
            .register_channel(CHANNEL, Box::new(channel))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        self.store = Some(store);
        self.has_ipam = true;
        Ok(self)
    }

    fn ipam(&mut self) -> Option<&mut IpamChannel> {
        if !self.has_ipam {
            return None;
        }
        self.mesh.gossiper_mut::<IpamChannel>(CHANNEL)
    }

    fn ipam_input(&mut self, now: Instant, input: Input) {
        if let Some(channel) = self.ipam() {
            channel.handle(now, input);
        }
    }

    /// Carries out the allocator's outputs, in order: a store write is
    /// durable before anything after it happens. Returns whether there were
    /// any.
    fn pump_ipam(&mut self) -> bool {
        let Some(outputs) = self.ipam().map(IpamChannel::take_outputs) else {
            return false;
        };
        if outputs.is_empty() {
            return false;
        }
        let now = Instant::now();
        for output in outputs {
            match output {
                alloc::Output::Persist(write) => {
                    if let Some(store) = &self.store {
                        if let Err(error) = store.apply(&write) {
                            // Acting on later outputs without this write
                            // could hand an address out twice after a
                            // restart: stop instead.
                            error!("cannot write the IPAM store, stopping: {error:#}");
                            std::process::exit(1);
                        }
                    }
                }
                alloc::Output::Reply { op, result } => {
                    if let Some(reply) = self.pending.remove(&op) {
                        let _ = reply.send(result.map_err(|e: OpError| e.to_string()));
                    }
                }
                alloc::Output::Broadcast(state) => {
                    let bytes = crate::ipam::wire::encode_gossip(&state);
                    self.mesh.gossip_broadcast(CHANNEL, vec![bytes], now);
                }
                alloc::Output::Unicast { to, msg } => {
                    let bytes = crate::ipam::wire::encode_unicast(&msg);
                    if let Err(error) =
                        self.mesh
                            .gossip_unicast(CHANNEL, mesh_name(to), &bytes, now)
                    {
                        debug!(%error, "IPAM unicast not sent");
                    }
                }
                alloc::Output::GossipRejected { sender, error } => {
                    warn!(sender = ?sender.map(mesh_name), "IPAM: rejected gossip: {error}");
                }
                alloc::Output::Warn(text) => warn!("IPAM: {text}"),
            }
        }
        true
    }

    /// Tells the allocator when the set of known peers changed.
    fn sync_peers(&mut self, now: Instant) {
        if !self.has_ipam {
            return;
        }
        let names = self.mesh.peers().names();
        if names != self.known_peers {
            let gone: Vec<PeerName> = self.known_peers.difference(&names).copied().collect();
            for peer in gone {
                self.ipam_input(
                    now,
                    Input::PeerGone {
                        peer: ipam_name(peer),
                    },
                );
            }
            let known = names.iter().copied().map(ipam_name).collect();
            self.known_peers = names;
            self.ipam_input(now, Input::PeersChanged { known });
        }
    }

    fn sync_targets(&mut self, now: Instant) {
        let count = u32::try_from(self.mesh.targets(false).len()).unwrap_or(u32::MAX);
        self.ipam_input(now, Input::TargetsChanged { count });
    }

    /// The allocator's periodic retry (every [`alloc::TICK_INTERVAL`]).
    pub fn tick_ipam(&mut self) {
        self.ipam_input(Instant::now(), Input::Tick);
        self.drain();
    }

    /// Runs the data plane `overlay` on the mesh's connections.
    pub fn with_overlay(mut self, overlay: Overlay) -> Self {
        self.overlay = Some(overlay);
        self
    }

    /// Keeps the direct peers in `path` whenever they change, for `--resume`.
    pub fn persist_targets(mut self, path: PathBuf) -> Self {
        self.targets_file = Some(path);
        self
    }

    fn save_targets(&self) {
        if let Some(path) = &self.targets_file {
            if let Err(error) = persist::save_targets(path, &self.mesh.targets(false)) {
                warn!("could not save the peer list for --resume: {error:#}");
            }
        }
    }

    /// Runs until the event queue closes.
    pub async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Event>) {
        self.drain();
        let mut tick = tokio::time::interval(alloc::TICK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Without a mesh deadline, wake up at the next IPAM tick anyway.
            let deadline = self
                .mesh
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + alloc::TICK_INTERVAL);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            let event = tokio::select! {
                event = queue.recv() => event,
                _ = tick.tick() => {
                    self.tick_ipam();
                    continue;
                }
                () = sleep => {
                    self.mesh.handle_timeout(Instant::now());
                    self.drain();
                    continue;
                }
            };
            let Some(event) = event else {
                return;
            };
            self.handle(event);
            self.drain();
        }
    }

    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Accepted(stream, addr) => {
                debug!(%addr, "accepted a mesh connection");
                let handle = self.mesh.connection_opened(addr, false, now);
                self.attach(handle, stream);
            }
            Event::Dialled(addr, Ok(stream)) => {
                debug!(%addr, "connected");
                let handle = self.mesh.connection_opened(addr, true, now);
                self.attach(handle, stream);
            }
            Event::Dialled(addr, Err(error)) => {
                info!(%addr, %error, "could not connect");
                self.mesh.dial_failed(addr, &error, now);
            }
            Event::Bytes(handle, bytes) => self.mesh.receive(handle, &bytes, now),
            Event::Closed(handle, error) => {
                if let Some(socket) = self.sockets.remove(&handle) {
                    socket.reader.abort();
                    self.mesh.connection_closed(handle, &error, now);
                }
            }
            Event::Control(control) => self.control(control, now),
            Event::Overlay(event) => {
                let failed = self
                    .overlay
                    .as_ref()
                    .and_then(|o| o.on_event(event, &mut self.mesh, now));
                if let Some((conn, reason)) = failed {
                    self.handle(Event::Closed(conn, reason));
                }
            }
        }
    }

    fn control(&mut self, control: Control, now: Instant) {
        match control {
            Control::Status(reply) => {
                let (ipam, ipam_metrics) = match self.ipam() {
                    Some(channel) => (
                        Some(channel.allocator().status()),
                        Some(channel.allocator().metrics()),
                    ),
                    None => (None, None),
                };
                let snapshot = Snapshot {
                    version: self.version.clone(),
                    mesh: self.mesh.status(now),
                    counters: self.mesh.counters(),
                    ipam,
                    ipam_metrics,
                    overlay: self
                        .overlay
                        .as_ref()
                        .map(Overlay::status)
                        .unwrap_or_default(),
                    dataplane: self.overlay.as_ref().map(|o| o.mode().clone()),
                    fastdp: self.overlay.as_ref().and_then(Overlay::fastdp_report),
                    sleeve: self.overlay.as_ref().map(Overlay::counters),
                };
                let _ = reply.send(snapshot);
            }
            Control::Connect {
                peers,
                replace,
                reply,
            } => {
                self.mesh.initiate_connections(peers, replace, now);
                self.save_targets();
                self.sync_targets(now);
                let _ = reply.send(());
            }
            Control::Forget { peers, reply } => {
                self.mesh.forget_connections(&peers, now);
                self.save_targets();
                self.sync_targets(now);
                let _ = reply.send(());
            }
            Control::Ipam { call, reply } => {
                if !self.has_ipam {
                    let _ = reply.send(Err("IP address allocation is not running".into()));
                    return;
                }
                let op = OpId(self.next_op);
                self.next_op += 1;
                self.pending.insert(op, reply);
                self.ipam_input(now, call.into_input(op));
            }
            Control::Lookup {
                ident,
                range,
                reply,
            } => {
                let found = self
                    .ipam()
                    .map(|channel| channel.allocator().lookup(&ident, range))
                    .unwrap_or_default();
                let _ = reply.send(found);
            }
            Control::ContainerAdded { spec, reply } => {
                let taken = match &self.overlay {
                    Some(overlay) => {
                        overlay.container_added(spec);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(taken);
            }
            Control::ContainerRemoved { id, reply } => {
                let taken = match &self.overlay {
                    Some(overlay) => {
                        overlay.container_removed(id);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(taken);
            }
            Control::Owned(reply) => {
                let owned = self
                    .ipam()
                    .map(|channel| {
                        channel
                            .allocator()
                            .owned()
                            .iter()
                            .map(|(ident, data)| (ident.clone(), data.cidrs.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = reply.send(owned);
            }
        }
    }

    /// Carries out everything the mesh and the allocator asked for, until
    /// neither has anything left.
    fn drain(&mut self) {
        loop {
            let mesh = self.drain_mesh();
            self.sync_peers(Instant::now());
            let ipam = self.pump_ipam();
            if !mesh && !ipam {
                break;
            }
        }
        self.sync_cidr_view();
    }

    /// Hands the data plane the whole ring's CIDR view (every peer's
    /// owned ranges as aligned prefixes); the overlay passes it on only
    /// when it changed.
    fn sync_cidr_view(&mut self) {
        if self.overlay.is_none() {
            return;
        }
        let Some(view) = self
            .ipam()
            .map(|channel| crate::fastdp::inputs::cidr_view(channel.allocator().ring()))
        else {
            return;
        };
        if let Some(overlay) = &mut self.overlay {
            overlay.set_cidr_view(view);
        }
    }

    /// Carries out everything the mesh asked for; returns whether it had
    /// anything.
    fn drain_mesh(&mut self) -> bool {
        let mut any = false;
        while let Some(output) = self.mesh.poll_output() {
            any = true;
            if let Some(overlay) = &self.overlay {
                overlay.on_output(&output);
            }
            match output {
                Output::Transmit { conn, bytes } => {
                    if let Some(socket) = self.sockets.get(&conn) {
                        let _ = socket.writer.send(bytes);
                    }
                }
                Output::Close { conn, reason } => {
                    info!(%reason, "closing connection {}", conn.0);
                    // Dropping the writer's queue makes it flush and shut
                    // the socket down; the reader stops now.
                    if let Some(socket) = self.sockets.remove(&conn) {
                        socket.reader.abort();
                    }
                }
                Output::Dial { addr } => {
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let result = match tokio::time::timeout(
                            DIAL_TIMEOUT,
                            TcpStream::connect(addr),
                        )
                        .await
                        {
                            Ok(Ok(stream)) => Ok(stream),
                            Ok(Err(error)) => Err(error.to_string()),
                            Err(_) => Err("timed out".to_string()),
                        };
                        let _ = events.send(Event::Dialled(addr, result));
                    });
                }
                Output::ConnectionAdded {
                    remote,
                    outbound,
                    remote_addr,
                    ..
                } => {
                    info!(%remote, %remote_addr, outbound, "connection added");
                }
                Output::ConnectionRemoved { remote, .. } => {
                    info!(%remote, "connection removed");
                }
                Output::OverlayControl { conn, tag, .. } => {
                    debug!(?tag, "overlay control message on connection {}", conn.0);
                }
                Output::PeerRemoved(name) => info!(%name, "peer removed: unreachable"),
                Output::ShortIdsChanged => debug!("short ids changed"),
            }
        }
        if let Some(overlay) = &mut self.overlay {
            overlay.sync_routes(&mut self.mesh);
        }
        any
    }

    /// Starts the reader and writer tasks of a new socket.
    fn attach(&mut self, handle: ConnHandle, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (writer, mut outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                if let Err(error) = write.write_all(&bytes).await {
                    let _ = events.send(Event::Closed(handle, error.to_string()));
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        let events = self.events.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) => {
                        let _ =
                            events.send(Event::Closed(handle, "connection closed by peer".into()));
                        return;
                    }
                    Ok(n) => {
                        if events
                            .send(Event::Bytes(handle, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = events.send(Event::Closed(handle, error.to_string()));
                        return;
                    }
                }
            }
        });
        self.sockets.insert(handle, Socket { writer, reader });
        // The mesh may already have queued the intro for this handle.
        self.drain();
    }
}

/// Accepts mesh connections forever, handing them to the router task.
pub async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if events.send(Event::Accepted(stream, addr)).is_err() {
                    return;
                }
            }
            Err(error) => {
                warn!(%error, "accepting a mesh connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
