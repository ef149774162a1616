//! The data-plane thread: one poll loop over the capture socket, the two
//! sleeve UDP sockets and a wake-up eventfd, owning the sleeve
//! connections and the [`Switch`].
//!
//! The control plane (the router task) talks to it through [`Command`]s
//! and hears back through [`OverlayEvent`]s; per-connection status is
//! published in a shared map the status pages read without a round trip.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::fastdp_plane::FastdpPlane;
pub use super::fastdp_plane::{ContainerSpec, FastdpReport, VportSummary};
use super::sockets::{PacketSocket, RecvBatch, UdpSocket, Waker, path_mtu, poll_readable};
use super::switching::{Decision, Mac, Switch};
use crate::fastdp::forwarder::ConnectionParams;
use crate::fastdp::{Output as FastdpOutput, Topology};
use crate::mesh::codec::Features;
use crate::mesh::crypto::SessionKey;
use crate::mesh::identity::PeerName;
use crate::mesh::router::ConnHandle;
use crate::mesh::wire::ProtocolTag;
use crate::sleeve::checksum::{PartialHint, complete_checksum};
use crate::sleeve::connection::{ForwardOutcome, SleeveAction, SleeveConnection, SleeveParams};
use crate::sleeve::frame::split_sender;
use crate::sleeve::offload::{
    Coalescer, GSO_ECN, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM, VNET_HDR_LEN, segment_tcp_parts,
};
use crate::sleeve::overlay_switch::{
    OVERLAYS_FEATURE, OverlaySwitch, SwitchEvent, SwitchSetup, negotiate, unwrap_control,
    wrap_control,
};

use super::switching::RouteTable;

/// How often the fastdp report (vports, flow count) is refreshed.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Frames or datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Buffer per frame or datagram: the largest IP packet plus an Ethernet
/// header, rounded up.
const BUF_SIZE: usize = 65536 + 64;
/// How often MAC entries are checked for expiry.
const MAC_EXPIRY_CHECK: Duration = Duration::from_secs(60);

/// A connection the mesh added, for the overlay to start on.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// The mesh connection.
    pub conn: ConnHandle,
    /// The peer.
    pub remote: PeerName,
    /// Whether we dialled.
    pub outbound: bool,
    /// The peer's TCP address (its UDP address too when we dialled).
    pub remote_addr: SocketAddr,
    /// The connection UID both ends share.
    pub conn_uid: u64,
    /// The session key when the link is encrypted.
    pub session_key: Option<SessionKey>,
    /// The peer's features map.
    pub features: Features,
}

/// What the control plane tells the data plane.
#[derive(Debug)]
pub enum Command {
    /// Start the overlay on a new connection.
    Add(ConnSpec),
    /// A connection went away.
    Remove {
        /// Which.
        conn: ConnHandle,
        /// Its peer.
        remote: PeerName,
    },
    /// An overlay control message arrived on a connection.
    Control {
        /// Which connection.
        conn: ConnHandle,
        /// The mesh tag (1–3 or 7).
        tag: ProtocolTag,
        /// The message after the tag.
        payload: Vec<u8>,
    },
    /// New routes, for the sleeve's switch and for fastdp.
    Routes(RouteTable, Topology),
    /// The IPAM CIDR view of the whole ring (prefix, owner).
    CidrView(Vec<(ipnet::Ipv4Net, PeerName)>),
    /// A container was attached.
    ContainerAdded(ContainerSpec),
    /// A container was detached.
    ContainerRemoved(String),
    /// A peer was forgotten: drop its MAC entries.
    PeerGone(PeerName),
    /// End the thread.
    Stop,
}

/// What the data plane asks of the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    /// Send this overlay control message on the connection.
    Control {
        /// Which connection.
        conn: ConnHandle,
        /// The mesh tag.
        tag: ProtocolTag,
        /// The message after the tag.
        payload: Vec<u8>,
    },
    /// The overlay works on the connection: mark it established.
    Established {
        /// Which connection.
        conn: ConnHandle,
    },
    /// The overlay failed on the connection: close it.
    Failed {
        /// Which connection.
        conn: ConnHandle,
        /// Why.
        reason: String,
    },
}

/// The overlay state of one connection, for `/status/connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOverlayStatus {
    /// The mesh connection.
    pub conn: ConnHandle,
    /// The overlay carrying traffic (`sleeve`), if any.
    pub overlay: Option<String>,
    /// Why that one, in words.
    pub reason: String,
    /// Weave's attributes of the overlay in use, e.g. `mtu`.
    pub attrs: Vec<(String, String)>,
    /// Whether the overlay has been established.
    pub established: bool,
}

/// The shared per-peer status map.
pub type StatusMap = Arc<Mutex<BTreeMap<PeerName, ConnOverlayStatus>>>;

/// The shared fastdp report, refreshed by the data-plane thread.
pub type FastdpReportCell = Arc<Mutex<Option<FastdpReport>>>;

/// Counters of the data plane (logged at debug level; kept for tests and
/// status).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Frames captured on the bridge.
    pub captured: u64,
    /// Captured frames whose checksum was completed here.
    pub checksums_completed: u64,
    /// Captured GSO super-frames cut into segments here.
    pub gso_captured: u64,
    /// Captured GSO super-frames of a kind not cut here (dropped).
    pub gso_dropped: u64,
    /// Received segments merged into a GSO frame before injection.
    pub coalesced: u64,
    /// Frames injected into the bridge.
    pub injected: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Frames dropped by the switch or a connection.
    pub dropped: u64,
    /// Datagrams that could not be opened or parsed.
    pub bad_datagrams: u64,
    /// Reads of the capture socket that returned frames (`recvmmsg`).
    pub capture_reads: u64,
    /// Reads of the UDP sockets that returned datagrams (`recvmmsg`).
    pub udp_reads: u64,
    /// Sends on the UDP sockets (`sendmsg` with GSO, or `sendmmsg`).
    pub udp_sends: u64,
    /// Injection batches into the bridge (`sendmmsg` on the capture
    /// socket).
    pub inject_sends: u64,
    /// Datagrams the kernel refused (a full socket buffer, an error), not
    /// counting DF datagrams over the path MTU (which PMTU discovery
    /// handles).
    pub send_failures: u64,
    /// Frames the kernel refused to inject.
    pub inject_failures: u64,
    /// Frames the kernel dropped before the capture socket read them
    /// (`PACKET_STATISTICS`).
    pub capture_drops: u64,
}

/// The data plane's counters, published about once a second.
pub type CountersCell = Arc<Mutex<Counters>>;

struct Conn {
    handle: ConnHandle,
    /// The overlays negotiated, in switch order (empty: compat sleeve).
    names: Vec<String>,
    sleeve: SleeveConnection,
    /// `None`: the peer predates the overlay switch (bare control tags).
    switch: Option<OverlaySwitch>,
    dirty: bool,
}

impl Conn {
    /// The index of overlay `name` in this connection's switch.
    fn index_of(&self, name: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| u8::try_from(i).ok())
    }
}

/// Our address on the route to `remote` (the outer source of our VXLAN
/// frames to it), asked of the kernel with an unbound UDP connect.
fn local_ip_towards(remote: std::net::Ipv4Addr) -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((remote, 9)).ok()?;
    match socket.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

struct Outgoing {
    peer: PeerName,
    df: bool,
    to: SocketAddrV4,
    datagram: Vec<u8>,
}

/// Everything but the sockets and their buffers.
struct State {
    ourself: PeerName,
    switch: Switch,
    conns: HashMap<PeerName, Conn>,
    out: Vec<Outgoing>,
    /// Frames for local delivery made here (ICMP), before they are queued.
    inject: Vec<Vec<u8>>,
    /// Frames for the bridge, merged where they continue a TCP flow.
    to_bridge: Coalescer,
    events: Box<dyn Fn(OverlayEvent) + Send>,
    status: StatusMap,
    counters: Counters,
    overlays: Vec<&'static str>,
    fastdp: Option<FastdpPlane>,
}

/// The sockets of the data plane.
#[derive(Debug)]
pub struct Sockets {
    /// Capture and injection on `vethwe-pcap` (Bridge mode only; with a
    /// datapath, frames come and go through fastdp's upcalls and
    /// executes).
    pub capture: Option<PacketSocket>,
    /// UDP without DF (the kernel may fragment).
    pub udp: UdpSocket,
    /// UDP with DF and PMTU discovery.
    pub udp_df: UdpSocket,
}

/// The data-plane loop.
pub struct Dataplane {
    state: State,
    sockets: Sockets,
    waker: Arc<Waker>,
    commands: Receiver<Command>,
    cap_batch: RecvBatch,
    udp_batch: RecvBatch,
    report: Option<FastdpReportCell>,
    /// Where the counters are published.
    counters_cell: CountersCell,
    /// Where captured GSO frames are cut into segments.
    segment: Vec<u8>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("ourself", &self.state.ourself)
            .field("conns", &self.state.conns.len())
            .finish()
    }
}

impl Dataplane {
    /// A loop for peer `ourself` over `sockets`, offering `overlays` to
    /// peers, with the fastdp machine (and the cell its report goes to)
    /// when the bridge has a datapath.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ourself: PeerName,
        sockets: Sockets,
        waker: Arc<Waker>,
        commands: Receiver<Command>,
        events: Box<dyn Fn(OverlayEvent) + Send>,
        status: StatusMap,
        overlays: Vec<&'static str>,
        fastdp: Option<(FastdpPlane, FastdpReportCell)>,
        counters_cell: CountersCell,
    ) -> Self {
        let (fastdp, report) = match fastdp {
            Some((plane, cell)) => (Some(plane), Some(cell)),
            None => (None, None),
        };
        let vnet = sockets
            .capture
            .as_ref()
            .is_some_and(PacketSocket::has_vnet_hdr);
        Dataplane {
            state: State {
                ourself,
                switch: Switch::new(ourself),
                conns: HashMap::new(),
                out: Vec::new(),
                inject: Vec::new(),
                to_bridge: if vnet {
                    Coalescer::new()
                } else {
                    Coalescer::without_merging()
                },
                events,
                status,
                counters: Counters::default(),
                overlays,
                fastdp,
            },
            sockets,
            waker,
            commands,
            cap_batch: RecvBatch::new(BATCH, BUF_SIZE).with_vnet_hdr(vnet),
            udp_batch: RecvBatch::new(BATCH, BUF_SIZE),
            report,
            counters_cell,
            segment: Vec::with_capacity(BUF_SIZE),
        }
    }

    /// Runs until [`Command::Stop`] or the command channel closes.
    pub fn run(mut self) {
        let mut next_expiry = Instant::now() + MAC_EXPIRY_CHECK;
        let mut next_report = Instant::now();
        // Slots: waker, udp, udp_df, then capture or the two fastdp sockets.
        let mut fds = vec![
            self.waker.raw_fd(),
            self.sockets.udp.raw_fd(),
            self.sockets.udp_df.raw_fd(),
        ];
        if let Some(capture) = &self.sockets.capture {
            fds.push(capture.raw_fd());
        }
        if let Some(f) = &self.state.fastdp {
            fds.push(f.upcall_fd());
            fds.push(f.vport_events_fd());
        }
        self.settle(Instant::now());
        loop {
            let now = Instant::now();
            let mut deadline = self
                .state
                .next_deadline()
                .map_or(next_expiry, |d| d.min(next_expiry));
            deadline = deadline.min(next_report);
            let wait = deadline.saturating_duration_since(now);
            // Round up so a deadline is not polled for just before it.
            let ms = i32::try_from(wait.as_millis() + 1).unwrap_or(i32::MAX);
            let ready = match poll_readable(&fds, ms) {
                Ok(r) => r,
                Err(error) => {
                    warn!(%error, "data plane: poll failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if ready.first() == Some(&true) {
                self.waker.clear();
            }
            if !self.commands() {
                info!(counters = ?self.state.counters, "data plane stopped");
                return;
            }
            let now = Instant::now();
            if ready.get(1) == Some(&true) {
                self.receive(false, now);
            }
            if ready.get(2) == Some(&true) {
                self.receive(true, now);
            }
            if self.sockets.capture.is_some() {
                if ready.get(3) == Some(&true) {
                    self.capture(now);
                }
            } else if let Some(f) = &mut self.state.fastdp {
                if ready.get(3) == Some(&true) {
                    f.on_upcalls(now);
                }
                if ready.get(4) == Some(&true) {
                    f.on_port_events(now);
                }
            }
            self.state.timers(now);
            if now >= next_expiry {
                next_expiry = now + MAC_EXPIRY_CHECK;
                for (mac, location) in self.state.switch.macs_mut().expire(now) {
                    debug!(mac = %fmt_mac(&mac), ?location, "expired MAC");
                }
            }
            self.settle(now);
            if now >= next_report {
                next_report = now + REPORT_INTERVAL;
                if let Some(capture) = &self.sockets.capture {
                    self.state.counters.capture_drops += capture.take_drops();
                }
                if let Ok(mut slot) = self.counters_cell.lock() {
                    *slot = self.state.counters;
                }
                if let (Some(cell), Some(f)) = (&self.report, &mut self.state.fastdp) {
                    let report = f.report();
                    if let Ok(mut slot) = cell.lock() {
                        *slot = Some(report);
                    }
                }
            }
        }
    }

    /// Runs fastdp's outputs and the connections' actions until neither
    /// has anything left, sending what they queued.
    fn settle(&mut self, now: Instant) {
        for _ in 0..16 {
            let busy = self.state.pump_fastdp(now);
            self.state.flush(&self.sockets, now);
            if !busy {
                return;
            }
        }
    }

    /// Applies queued commands; false on Stop.
    fn commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(command) => self.state.command(command, Instant::now()),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn capture(&mut self, now: Instant) {
        let Some(fd) = self.sockets.capture.as_ref().map(PacketSocket::raw_fd) else {
            return;
        };
        // A few batches per wake-up, so the UDP side gets its turn.
        for _ in 0..4 {
            let n = match self.cap_batch.recv(fd) {
                Ok(n) => n,
                Err(error) => {
                    // A capture interface that went away keeps the socket
                    // readable with an error: do not spin on it.
                    warn!(%error, "capture failed");
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            };
            if n > 0 {
                self.state.counters.capture_reads += 1;
            }
            for i in 0..n {
                if let Some(c) = self.cap_batch.captured(i) {
                    if c.outgoing || c.truncated {
                        continue;
                    }
                    self.state.counters.captured += 1;
                    let Some(vnet) = c.vnet else {
                        if c.csum_not_ready && complete_checksum(c.frame, None).is_ok() {
                            self.state.counters.checksums_completed += 1;
                        }
                        self.state.on_captured(c.frame, now);
                        continue;
                    };
                    if vnet.is_gso() {
                        // A super-frame from a sender's TSO: cut it here,
                        // each segment with its checksums done.
                        let state = &mut self.state;
                        let kind = vnet.gso_type & !GSO_ECN;
                        let cut = (kind == GSO_TCPV4 || kind == GSO_TCPV6)
                            .then(|| {
                                segment_tcp_parts(
                                    c.frame,
                                    usize::from(vnet.gso_size),
                                    &mut self.segment,
                                    |head, payload| state.on_captured_parts([head, payload], now),
                                )
                            })
                            .and_then(Result::ok);
                        if cut.is_some() {
                            state.counters.gso_captured += 1;
                        } else {
                            state.counters.gso_dropped += 1;
                            debug!(gso_type = vnet.gso_type, "captured GSO frame not cut");
                        }
                        continue;
                    }
                    if vnet.flags & VNET_F_NEEDS_CSUM != 0 {
                        let hint = PartialHint {
                            csum_start: vnet.csum_start,
                            csum_offset: vnet.csum_offset,
                        };
                        if complete_checksum(c.frame, Some(hint)).is_ok() {
                            self.state.counters.checksums_completed += 1;
                        }
                    }
                    self.state.on_captured(c.frame, now);
                }
            }
            self.settle(now);
            if n < BATCH {
                return;
            }
        }
    }

    fn receive(&mut self, df: bool, now: Instant) {
        let fd = if df {
            self.sockets.udp_df.raw_fd()
        } else {
            self.sockets.udp.raw_fd()
        };
        for _ in 0..4 {
            let n = match self.udp_batch.recv(fd) {
                Ok(n) => n,
                Err(error) => {
                    // ICMP errors surface here on some kernels; not fatal.
                    debug!(%error, "UDP receive");
                    return;
                }
            };
            if n > 0 {
                self.state.counters.udp_reads += 1;
            }
            for i in 0..n {
                let segment = self.udp_batch.segment_size(i);
                if let Some((from, data, truncated)) = self.udp_batch.datagram(i) {
                    if truncated {
                        self.state.counters.datagrams_in += 1;
                        self.state.counters.bad_datagrams += 1;
                        continue;
                    }
                    // With UDP GRO one message may hold a run of
                    // datagrams of `segment` bytes each.
                    let size = segment.unwrap_or(data.len()).max(1);
                    for datagram in data.chunks_mut(size) {
                        self.state.counters.datagrams_in += 1;
                        self.state.on_datagram(from, datagram, now);
                    }
                }
            }
            self.settle(now);
            if n < BATCH {
                return;
            }
        }
    }
}

/// Most datagrams in one UDP GSO send (the kernel's limit).
const GSO_MAX_SEGMENTS: usize = 64;

/// How many datagrams from the start of `batch` can go as one UDP GSO
/// send: same destination, same size (the last may be shorter), at most
/// 64 of them and 64 KiB in all.
fn gso_run(batch: &[&Outgoing]) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    let size = first.datagram.len();
    let mut total = 0;
    let mut n = 0;
    for o in batch.iter().take(GSO_MAX_SEGMENTS) {
        let len = o.datagram.len();
        if o.to != first.to || len > size || len == 0 || total + len > 65000 {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            break;
        }
    }
    n
}

fn fmt_mac(mac: &Mac) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn macs_of(frame: &[u8]) -> Option<(Mac, Mac)> {
    let dst: Mac = frame.get(0..6)?.try_into().ok()?;
    let src: Mac = frame.get(6..12)?.try_into().ok()?;
    if frame.len() < 14 {
        return None;
    }
    Some((src, dst))
}

impl State {
    fn emit(&self, event: OverlayEvent) {
        (self.events)(event);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let fastdp = self
            .fastdp
            .as_ref()
            .and_then(|f| f.machine_ref().next_deadline());
        self.conns
            .values()
            .filter_map(|c| c.sleeve.poll_timeout())
            .chain(fastdp)
            .min()
    }

    /// Carries out the fastdp machine's outputs (datapath operations
    /// through the executor, whose results may produce more). Returns
    /// whether there were any.
    fn pump_fastdp(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..64 {
            let Some(f) = &mut self.fastdp else {
                return any;
            };
            let outputs = f.machine().drain_outputs();
            if outputs.is_empty() {
                return any;
            }
            any = true;
            let mut ops = Vec::new();
            for output in outputs {
                match output {
                    FastdpOutput::Datapath(op) => ops.push(op),
                    FastdpOutput::Control { peer, tag, msg } => {
                        if let Some(c) = self.conns.get(&peer)
                            && let Some(index) = c.index_of("fastdp")
                        {
                            let event = OverlayEvent::Control {
                                conn: c.handle,
                                tag: ProtocolTag::OverlayControl,
                                payload: wrap_control(index, tag, &msg),
                            };
                            self.emit(event);
                        }
                    }
                    FastdpOutput::Established { peer } => {
                        info!(%peer, "fastdp established");
                        self.with_fastdp_switch(peer, |s, i| s.on_established(i));
                    }
                    FastdpOutput::Health { peer, healthy } => {
                        if healthy {
                            info!(%peer, "fastdp healthy");
                        } else {
                            warn!(%peer, "fastdp unhealthy: no heartbeat for 60 s");
                        }
                        self.with_fastdp_switch(peer, |s, i| s.on_health(i, healthy));
                    }
                    FastdpOutput::Sleeve {
                        next_hop,
                        src,
                        dst,
                        frame,
                    } => {
                        let broadcast = frame.first().is_some_and(|b| b & 1 == 1);
                        self.forward_to(next_hop, src, dst, &frame, broadcast);
                    }
                }
            }
            if let Some(f) = &mut self.fastdp {
                f.apply(ops, now);
            }
        }
        any
    }

    /// Runs `op` on the switch of the connection to `peer` with fastdp's
    /// index in it, and republishes the connection's status.
    fn with_fastdp_switch(&mut self, peer: PeerName, op: impl FnOnce(&mut OverlaySwitch, usize)) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        let Some(index) = c.index_of("fastdp") else {
            return;
        };
        if let Some(switch) = &mut c.switch {
            op(switch, usize::from(index));
        }
        c.dirty = true;
        self.publish(peer);
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Add(spec) => self.add(spec, now),
            Command::Remove { conn, remote } => {
                if self.conns.get(&remote).is_some_and(|c| c.handle == conn) {
                    self.conns.remove(&remote);
                    if let Some(f) = &mut self.fastdp {
                        f.machine().remove_connection(remote);
                    }
                    if let Ok(mut map) = self.status.lock() {
                        map.remove(&remote);
                    }
                    info!(%remote, "sleeve stopped");
                }
            }
            Command::Control { conn, tag, payload } => self.control(conn, tag, &payload, now),
            Command::Routes(routes, topology) => {
                self.switch.set_routes(routes);
                if let Some(f) = &mut self.fastdp {
                    f.machine().set_topology(topology);
                }
            }
            Command::CidrView(view) => {
                let ourself = self.ourself;
                if let Some(f) = &mut self.fastdp {
                    f.set_cidr_view(view, ourself);
                }
            }
            Command::ContainerAdded(spec) => {
                if let Some(f) = &mut self.fastdp {
                    f.container_added(spec, now);
                }
            }
            Command::ContainerRemoved(id) => {
                if let Some(f) = &mut self.fastdp {
                    f.container_removed(&id);
                }
            }
            Command::PeerGone(peer) => {
                let n = self.switch.macs_mut().forget_peer(peer);
                debug!(%peer, n, "forgot the MACs of a removed peer");
            }
            Command::Stop => {}
        }
    }

    fn add(&mut self, spec: ConnSpec, now: Instant) {
        let setup = match negotiate(
            &self.overlays,
            spec.features.get(OVERLAYS_FEATURE).map(String::as_str),
        ) {
            Ok(setup) => setup,
            Err(error) => {
                self.emit(OverlayEvent::Failed {
                    conn: spec.conn,
                    reason: error.to_string(),
                });
                return;
            }
        };
        let names = match &setup {
            SwitchSetup::Compat => Vec::new(),
            SwitchSetup::Switch(names) => names.clone(),
        };
        let fastdp_started = if names.iter().any(|n| n == "fastdp") {
            self.start_fastdp(&spec, now)
        } else {
            if let Some(f) = &mut self.fastdp {
                f.machine().remove_connection(spec.remote);
                f.machine().add_sleeve_connection(spec.remote);
            }
            Err("not offered".to_string())
        };
        if let Err(error) = &fastdp_started
            && names.iter().any(|n| n == "fastdp")
        {
            warn!(remote = %spec.remote, %error, "fastdp could not start on the connection");
        }
        let switch = match setup {
            SwitchSetup::Compat => None,
            SwitchSetup::Switch(names) => Some(OverlaySwitch::new(
                names
                    .into_iter()
                    .map(|name| {
                        let started = match name.as_str() {
                            "sleeve" => Ok(()),
                            "fastdp" => fastdp_started.clone(),
                            _ => Err(format!("{name} is not available")),
                        };
                        (name, started)
                    })
                    .collect(),
            )),
        };
        let remote_addr = spec.outbound.then_some(spec.remote_addr);
        let mut sleeve = SleeveConnection::new(SleeveParams {
            local: self.ourself.to_bytes(),
            remote: spec.remote.to_bytes(),
            outbound: spec.outbound,
            conn_uid: spec.conn_uid,
            session_key: spec.session_key,
            remote_addr,
        });
        sleeve.confirm(now);
        info!(
            remote = %spec.remote,
            encrypted = sleeve.status().encrypted,
            ?remote_addr,
            overlays = ?names,
            "overlays started"
        );
        self.conns.insert(
            spec.remote,
            Conn {
                handle: spec.conn,
                names,
                sleeve,
                switch,
                dirty: true,
            },
        );
        self.publish(spec.remote);
    }

    /// Starts fastdp on a new connection: its VXLAN address and heartbeats.
    fn start_fastdp(&mut self, spec: &ConnSpec, now: Instant) -> Result<(), String> {
        let Some(f) = &mut self.fastdp else {
            return Err("no datapath".into());
        };
        let SocketAddr::V4(remote_tcp) = spec.remote_addr else {
            return Err("no IPv6 underlay for fastdp".into());
        };
        let local_ip = local_ip_towards(*remote_tcp.ip())
            .ok_or_else(|| format!("no route to {}", remote_tcp.ip()))?;
        let m = f.machine();
        m.remove_connection(spec.remote);
        m.add_connection(ConnectionParams {
            peer: spec.remote,
            conn_uid: spec.conn_uid,
            local_ip,
            remote_tcp,
            outbound: spec.outbound,
        })
        .map_err(|e| e.to_string())?;
        m.confirm_connection(spec.remote, now)
            .map_err(|e| e.to_string())
    }

    fn control(&mut self, conn: ConnHandle, tag: ProtocolTag, payload: &[u8], now: Instant) {
        let Some((peer, c)) = self.conns.iter_mut().find(|(_, c)| c.handle == conn) else {
            return;
        };
        let peer = *peer;
        let (overlay, sub_tag, msg) = if tag == ProtocolTag::OverlayControl {
            match unwrap_control(payload) {
                Ok(m) if c.switch.is_some() => match c.names.get(usize::from(m.index)) {
                    Some(name) => (name.as_str(), m.tag, m.msg),
                    None => {
                        debug!(%peer, index = m.index, "control message for an overlay we do not run");
                        return;
                    }
                },
                Ok(m) => {
                    debug!(%peer, index = m.index, "wrapped control message on a compat connection");
                    return;
                }
                Err(error) => {
                    debug!(%peer, %error, "bad overlay control message");
                    return;
                }
            }
        } else {
            ("sleeve", tag.byte(), payload)
        };
        match overlay {
            "sleeve" => {
                if let Err(error) = c.sleeve.on_control(now, sub_tag, msg) {
                    debug!(%peer, %error, "sleeve control message ignored");
                }
            }
            "fastdp" => {
                if let Some(f) = &mut self.fastdp {
                    f.machine().control_message(peer, sub_tag, msg, now);
                }
            }
            other => debug!(%peer, overlay = other, "control message ignored"),
        }
    }

    fn timers(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            if c.sleeve.poll_timeout().is_some_and(|t| t <= now) {
                c.sleeve.handle_timeout(now);
            }
        }
        if let Some(f) = &mut self.fastdp
            && f.machine_ref().next_deadline().is_some_and(|t| t <= now)
        {
            f.machine().poll(now);
        }
    }

    fn forward_to(
        &mut self,
        via: PeerName,
        src: PeerName,
        dst: PeerName,
        frame: &[u8],
        broadcast: bool,
    ) {
        self.forward_parts_to(via, src, dst, [frame, &[]], broadcast);
    }

    /// [`Self::forward_to`] for a frame in two pieces (a segment's
    /// headers and its payload), copied once, into the datagram.
    fn forward_parts_to(
        &mut self,
        via: PeerName,
        src: PeerName,
        dst: PeerName,
        frame: [&[u8]; 2],
        broadcast: bool,
    ) {
        let Some(c) = self.conns.get_mut(&via) else {
            self.counters.dropped += 1;
            return;
        };
        match c
            .sleeve
            .forward_parts(&src.to_bytes(), &dst.to_bytes(), frame, broadcast)
        {
            ForwardOutcome::Queued => c.dirty = true,
            ForwardOutcome::FragNeeded(icmp) => self.inject.push(icmp),
            ForwardOutcome::Dropped(reason) => {
                self.counters.dropped += 1;
                debug!(%via, ?reason, "frame not sent");
            }
        }
    }

    fn on_captured(&mut self, frame: &[u8], now: Instant) {
        self.on_captured_parts([frame, &[]], now);
    }

    /// A captured frame in two pieces, its concatenation: the first holds
    /// the headers.
    fn on_captured_parts(&mut self, frame: [&[u8]; 2], now: Instant) {
        let Some((src_mac, dst_mac)) = macs_of(frame[0]) else {
            return;
        };
        match self.switch.captured(src_mac, dst_mac, now) {
            Decision::Drop(reason) => {
                self.counters.dropped += 1;
                debug!(?reason, src = %fmt_mac(&src_mac), dst = %fmt_mac(&dst_mac), "captured frame dropped");
            }
            Decision::Unicast(send) => {
                self.forward_parts_to(send.via, send.src, send.dst, frame, false)
            }
            Decision::Flood { src, .. } => {
                let hops = self.switch.broadcast_hops(src).to_vec();
                for hop in hops {
                    self.forward_parts_to(hop, src, hop, frame, true);
                }
            }
            Decision::Inject => self.inject.push(frame.concat()),
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &mut [u8], now: Instant) {
        let Ok((sender, _)) = split_sender(data) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let sender = PeerName::from_bytes_lenient(&sender);
        let Some(c) = self.conns.get_mut(&sender) else {
            self.counters.bad_datagrams += 1;
            return;
        };
        let Some(body) = data.get_mut(6..) else {
            return;
        };
        // Frames are decrypted in place: remember where each one lies.
        let base = body.as_ptr() as usize;
        let mut records: Vec<(PeerName, PeerName, usize, usize)> = Vec::new();
        let result = c.sleeve.receive(now, from, body, |f| {
            let offset = (f.frame.as_ptr() as usize).wrapping_sub(base);
            records.push((
                PeerName::from_bytes_lenient(&f.src),
                PeerName::from_bytes_lenient(&f.dst),
                offset,
                f.frame.len(),
            ));
        });
        if let Err(error) = result {
            self.counters.bad_datagrams += 1;
            debug!(%sender, %error, "datagram dropped");
        }
        if let Some(f) = &mut self.fastdp {
            // With a datapath, fastdp is the bridge: it delivers, relays
            // or floods what the sleeve brought, as it would a tunnelled
            // frame.
            for (src, dst, offset, len) in records {
                if let Some(frame) = body.get(offset..offset.saturating_add(len)) {
                    f.machine().inject(src, dst, frame.to_vec(), now);
                }
            }
            return;
        }
        for (src, dst, offset, len) in records {
            let Some(frame) = body.get(offset..offset.saturating_add(len)) else {
                continue;
            };
            let Some((src_mac, dst_mac)) = macs_of(frame) else {
                continue;
            };
            if !self.switch.knows(src) {
                self.counters.dropped += 1;
                continue;
            }
            match self.switch.forwarded(src, dst, src_mac, dst_mac, now) {
                Decision::Drop(reason) => {
                    self.counters.dropped += 1;
                    debug!(?reason, "forwarded frame dropped");
                }
                Decision::Unicast(send) => {
                    self.forward_to(send.via, send.src, send.dst, frame, false)
                }
                Decision::Inject => self.to_bridge.push(frame),
                Decision::Flood { src, inject } => {
                    if inject {
                        self.to_bridge.push(frame);
                    }
                    let hops = self.switch.broadcast_hops(src).to_vec();
                    for hop in hops {
                        self.forward_to(hop, src, hop, frame, true);
                    }
                }
            }
        }
    }

    /// Seals pending datagrams, carries out the connections' actions and
    /// sends everything queued, until nothing new comes up.
    fn flush(&mut self, sockets: &Sockets, now: Instant) {
        for _ in 0..8 {
            let peers: Vec<PeerName> = self.conns.keys().copied().collect();
            for peer in peers {
                self.drain(peer);
            }
            if !self.inject.is_empty() {
                let frames = std::mem::take(&mut self.inject);
                match (&sockets.capture, &mut self.fastdp) {
                    (Some(_), _) => {
                        for frame in &frames {
                            self.to_bridge.push(frame);
                        }
                    }
                    (None, Some(f)) => {
                        // ICMP for a local sender: fastdp delivers it to
                        // the port its destination MAC was learnt on.
                        for frame in frames {
                            self.counters.injected += 1;
                            f.machine().deliver_local(frame);
                        }
                    }
                    (None, None) => {}
                }
            }
            if let Some(capture) = &sockets.capture
                && !self.to_bridge.is_empty()
            {
                // Without PACKET_VNET_HDR the queue's (zero) headers are
                // not sent.
                let skip = if capture.has_vnet_hdr() {
                    0
                } else {
                    VNET_HDR_LEN
                };
                let frames = self.to_bridge.frames().filter_map(|f| f.get(skip..));
                let (sent, errors) = capture.inject(frames);
                self.counters.inject_sends += 1;
                self.counters.inject_failures += errors.len() as u64;
                self.counters.injected += sent as u64;
                self.counters.coalesced += self.to_bridge.merged() as u64;
                if let Some((_, error)) = errors.first() {
                    debug!(%error, "injecting into the bridge failed");
                }
                self.to_bridge.clear();
            } else if sockets.capture.is_none() {
                self.to_bridge.clear();
            }
            if self.out.is_empty() {
                return;
            }
            let out = std::mem::take(&mut self.out);
            for df in [false, true] {
                let batch: Vec<&Outgoing> = out.iter().filter(|o| o.df == df).collect();
                if batch.is_empty() {
                    continue;
                }
                let socket = if df { &sockets.udp_df } else { &sockets.udp };
                let mut errors = Vec::new();
                // DF datagrams are sized by the path MTU, so runs of equal
                // size to one peer can go as one UDP GSO send; anything
                // else, or a run the kernel refuses, goes datagram by
                // datagram (which also tells which one was too big).
                let mut singles: Vec<usize> = Vec::new();
                let mut i = 0;
                while i < batch.len() {
                    let run = if df { gso_run(&batch[i..]) } else { 1 };
                    if run >= 2 {
                        self.send_singles(socket, &batch, &mut singles, &mut errors);
                        let parts: Vec<&[u8]> = batch[i..i + run]
                            .iter()
                            .map(|o| o.datagram.as_slice())
                            .collect();
                        let size = batch[i].datagram.len();
                        self.counters.udp_sends += 1;
                        match socket.send_gso(batch[i].to, size, &parts) {
                            Ok(()) => self.counters.datagrams_out += run as u64,
                            Err(error) => {
                                debug!(%error, "UDP GSO send refused; sending one by one");
                                singles.extend(i..i + run);
                            }
                        }
                    } else {
                        singles.extend(i..i + run);
                    }
                    i += run;
                }
                self.send_singles(socket, &batch, &mut singles, &mut errors);
                for (index, error) in errors {
                    let Some(o) = batch.get(index) else { continue };
                    if df && error.raw_os_error() == Some(libc::EMSGSIZE) {
                        match path_mtu(o.to) {
                            Ok(pmtu) => {
                                if let Some(c) = self.conns.get_mut(&o.peer) {
                                    c.sleeve.on_msg_too_big(now, pmtu);
                                }
                            }
                            Err(e) => debug!(error = %e, "reading the path MTU"),
                        }
                    } else {
                        self.counters.send_failures += 1;
                        debug!(%error, to = %o.to, "sending a datagram failed");
                    }
                }
            }
        }
    }

    /// Sends the datagrams of `batch` listed in `singles` (then clears
    /// it), collecting failures by index into `batch`.
    fn send_singles(
        &mut self,
        socket: &UdpSocket,
        batch: &[&Outgoing],
        singles: &mut Vec<usize>,
        errors: &mut Vec<(usize, std::io::Error)>,
    ) {
        if singles.is_empty() {
            return;
        }
        let items: Vec<(SocketAddrV4, &[u8])> = singles
            .iter()
            .filter_map(|i| batch.get(*i))
            .map(|o| (o.to, o.datagram.as_slice()))
            .collect();
        let (sent, failed) = socket.send(&items);
        self.counters.udp_sends += 1;
        self.counters.datagrams_out += sent as u64;
        for (k, error) in failed {
            if let Some(index) = singles.get(k) {
                errors.push((*index, error));
            }
        }
        singles.clear();
    }

    /// Seals what a connection has pending and carries out its actions.
    fn drain(&mut self, peer: PeerName) {
        let mut events = Vec::new();
        let mut changed = false;
        let mut selected = None;
        {
            let Some(c) = self.conns.get_mut(&peer) else {
                return;
            };
            let sleeve_index = c.index_of("sleeve").unwrap_or(0);
            if c.dirty {
                c.sleeve.flush();
                c.dirty = false;
            }
            while let Some(action) = c.sleeve.poll_action() {
                match action {
                    SleeveAction::Send { to, df, datagram } => match to {
                        SocketAddr::V4(to) => self.out.push(Outgoing {
                            peer,
                            df,
                            to,
                            datagram,
                        }),
                        SocketAddr::V6(to) => debug!(%to, "no IPv6 underlay"),
                    },
                    SleeveAction::Control { tag, body } => {
                        let event = match &c.switch {
                            Some(_) => OverlayEvent::Control {
                                conn: c.handle,
                                tag: ProtocolTag::OverlayControl,
                                payload: wrap_control(sleeve_index, tag, &body),
                            },
                            None => match ProtocolTag::from_byte(tag) {
                                Some(tag) => OverlayEvent::Control {
                                    conn: c.handle,
                                    tag,
                                    payload: body,
                                },
                                None => continue,
                            },
                        };
                        events.push(event);
                    }
                    SleeveAction::Established => {
                        changed = true;
                        info!(%peer, "sleeve established");
                        match &mut c.switch {
                            Some(switch) => switch.on_established(usize::from(sleeve_index)),
                            None => events.push(OverlayEvent::Established { conn: c.handle }),
                        }
                    }
                    SleeveAction::MtuVerified(mtu) => {
                        changed = true;
                        info!(%peer, mtu, "sleeve: effective MTU verified");
                    }
                    SleeveAction::Failed(error) => {
                        changed = true;
                        warn!(%peer, %error, "sleeve failed");
                        match &mut c.switch {
                            Some(switch) => {
                                switch.on_error(usize::from(sleeve_index), error.to_string())
                            }
                            None => events.push(OverlayEvent::Failed {
                                conn: c.handle,
                                reason: error.to_string(),
                            }),
                        }
                    }
                }
            }
            if let Some(switch) = &mut c.switch {
                while let Some(event) = switch.poll_event() {
                    match event {
                        SwitchEvent::Established => {
                            events.push(OverlayEvent::Established { conn: c.handle })
                        }
                        SwitchEvent::Using { name, .. } => {
                            changed = true;
                            info!(%peer, overlay = %name, "using overlay");
                            selected = Some(name == "fastdp");
                        }
                        SwitchEvent::Stop(_) => {}
                        SwitchEvent::NoWorkingForwarders => events.push(OverlayEvent::Failed {
                            conn: c.handle,
                            reason: "no working forwarders".into(),
                        }),
                    }
                }
            }
        }
        for event in events {
            self.emit(event);
        }
        if let (Some(selected), Some(f)) = (selected, &mut self.fastdp)
            && let Err(error) = f.machine().set_selected(peer, selected)
        {
            debug!(%peer, %error, "fastdp selection");
        }
        if changed {
            self.publish(peer);
        }
    }

    fn publish(&self, peer: PeerName) {
        let Some(c) = self.conns.get(&peer) else {
            return;
        };
        let mut attrs: Vec<(String, String)> = c
            .sleeve
            .attrs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Some(p) = self
            .fastdp
            .as_ref()
            .and_then(|f| f.machine_ref().peer_status(peer))
        {
            let health = match (p.established, p.healthy) {
                (false, _) => "starting",
                (true, true) => "healthy",
                (true, false) => "unhealthy",
            };
            attrs.push(("fastdp".into(), health.into()));
            attrs.push(("vxlan".into(), p.remote.to_string()));
        }
        let status = match &c.switch {
            Some(switch) => {
                let s = switch.status();
                if s.overlay.as_deref() == Some("fastdp")
                    && let Some(f) = &self.fastdp
                {
                    // As Weave: the attributes are those of the overlay in
                    // use, and fastdp's MTU is the datapath's, not the
                    // sleeve's probed one.
                    set_attr(&mut attrs, "name", "fastdp".into());
                    set_attr(&mut attrs, "mtu", f.machine_ref().config().mtu.to_string());
                }
                ConnOverlayStatus {
                    conn: c.handle,
                    overlay: s.overlay,
                    reason: s.reason.to_string(),
                    attrs,
                    established: switch.is_established(),
                }
            }
            None => ConnOverlayStatus {
                conn: c.handle,
                overlay: Some("sleeve".into()),
                reason: "peer without overlay switch".into(),
                attrs,
                established: c.sleeve.is_established(),
            },
        };
        if let Ok(mut map) = self.status.lock() {
            map.insert(peer, status);
        }
    }
}

/// Sets `key` in a list of attributes, in place if present.
fn set_attr(attrs: &mut Vec<(String, String)>, key: &str, value: String) {
    match attrs.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => attrs.push((key.to_string(), value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(to: u8, len: usize) -> Outgoing {
        Outgoing {
            peer: PeerName::from_u64(u64::from(to)),
            df: true,
            to: SocketAddrV4::new([10, 0, 0, to].into(), 6783),
            datagram: vec![0; len],
        }
    }

    #[test]
    fn gso_runs_are_same_peer_same_size_with_a_shorter_tail() {
        let batch = [out(1, 1400), out(1, 1400), out(1, 600), out(1, 1400)];
        let refs: Vec<&Outgoing> = batch.iter().collect();
        assert_eq!(gso_run(&refs), 3, "a shorter datagram ends the run");
        assert_eq!(gso_run(&refs[3..]), 1);
        assert_eq!(gso_run(&[]), 0);
        let batch = [out(1, 1000), out(2, 1000), out(1, 1200)];
        let refs: Vec<&Outgoing> = batch.iter().collect();
        assert_eq!(gso_run(&refs), 1, "another peer ends the run");
        let batch = [out(1, 600), out(1, 1400)];
        let refs: Vec<&Outgoing> = batch.iter().collect();
        assert_eq!(gso_run(&refs), 1, "a longer datagram cannot follow");
        let many: Vec<Outgoing> = (0..100).map(|_| out(1, 1400)).collect();
        let refs: Vec<&Outgoing> = many.iter().collect();
        assert_eq!(gso_run(&refs), 46, "at most 64 KiB");
        let small: Vec<Outgoing> = (0..100).map(|_| out(1, 100)).collect();
        let refs: Vec<&Outgoing> = small.iter().collect();
        assert_eq!(gso_run(&refs), GSO_MAX_SEGMENTS);
    }
}
