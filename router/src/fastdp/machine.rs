//! The fastdp state machine: a virtual Ethernet bridge over the kernel
//! datapath whose ports are the datapath's local vports and the peers
//! reached through VXLAN (or, when the overlay switch prefers it, the
//! sleeve). It takes upcalls, mesh and IPAM news and the time, and returns
//! [`Output`]s: datapath operations for the executor and messages for the
//! rest of the router. No sockets, no clocks.
//!
//! The reactive path follows Weave Net 2.8.1 (`router/fastdp.go`,
//! `router/network_router.go`): every miss upcall teaches the source MAC's
//! location, and the frame is sent on (`execute`) with the actions a flow
//! for its MAC pair gets:
//!
//! - to a known local MAC: output to its port;
//! - to a MAC behind peer X: `set(tunnel)` to the unicast next hop towards
//!   X (tunnel id = source | X << 12) and output to the VXLAN vport;
//! - to a group or unknown MAC: flood to every local port but the input
//!   and to the broadcast next hops; only true group addresses get a flow
//!   (a flow for an unknown unicast MAC would outlive what we learn);
//! - from the tunnel to another peer: relayed to the next hop, keeping the
//!   tunnel id's source and destination;
//! - frames with zero MACs from the tunnel are heartbeats, never flows.
//!
//! Flows are flushed when routes, ShortIDs or local ports change, or when a
//! MAC moves; unused flows go at the periodic sweep. Proactive flows
//! ([`super::proactive`]) are reinstalled after every flush and updated by
//! difference otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use odp::handle::{FlowId, FlowSpec};
use odp::wire::action::Action;
use odp::wire::flow::FlowInfo;
use odp::wire::key::{EthernetKey, FlowKey, KeyAttr};
use odp::wire::types::MacAddr;

use super::flows::{STP_GROUP, TunnelMatch, frame_macs, is_group, reactive_flow};
use super::forwarder::{ConnectionParams, Forwarder};
use super::mac_table::{Learned, Location, MacTable};
use super::proactive::{ProactiveInputs, ProactiveTable, desired, is_proactive_ufid};
use super::tunnel::{TunnelTarget, received_tunnel, split_tunnel_id, tunnel_id};
use crate::mesh::identity::{PeerName, ShortId};
use crate::sleeve::fastdp_health::{FASTDP_HEARTBEAT_ACK, FastdpEvent, heartbeat_frame};

/// How often unused reactive flows are swept (Weave: 5 minutes).
pub const FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Settings of a fastdp instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastdpConfig {
    /// Our peer name.
    pub local: PeerName,
    /// The overlay MTU (heartbeats are padded to 14 + this).
    pub mtu: usize,
    /// Our VXLAN UDP port (mesh port + 1).
    pub vxlan_port: u16,
    /// Interval of the unused-flow sweep.
    pub sweep_interval: Duration,
    /// Whether proactive flows are installed (else every new destination
    /// costs a miss upcall, as in Weave; for measurements and debugging).
    pub proactive: bool,
}

impl FastdpConfig {
    /// Defaults: VXLAN port 6784, Weave's sweep interval.
    pub fn new(local: PeerName, mtu: usize) -> Self {
        FastdpConfig {
            local,
            mtu,
            vxlan_port: 6784,
            sweep_interval: FLOW_SWEEP_INTERVAL,
            proactive: true,
        }
    }
}

/// What the mesh knows that fastdp uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// ShortIDs of the peers that have one (us included).
    pub short_ids: BTreeMap<PeerName, ShortId>,
    /// Unicast next hop for each reachable destination.
    pub unicast: BTreeMap<PeerName, PeerName>,
    /// Broadcast next hops for frames that originated at each source.
    pub broadcast: BTreeMap<PeerName, Vec<PeerName>>,
}

/// The kinds of datapath ports fastdp cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A netdev or internal vport: a port of the virtual bridge.
    Local,
    /// A VXLAN vport on this UDP port.
    Vxlan {
        /// Its UDP port.
        udp_port: u16,
    },
}

/// An operation on the kernel datapath, for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpOp {
    /// Create the VXLAN vport `vxlan-<udp_port>` and report it with
    /// [`Fastdp::port_added`].
    CreateVxlanVport {
        /// Its UDP port.
        udp_port: u16,
    },
    /// Install a flow (an existing identical flow is not an error).
    CreateFlow(FlowSpec),
    /// Delete a flow (a missing one is not an error).
    DeleteFlow(FlowId),
    /// Delete every flow of the datapath.
    FlushFlows,
    /// Run actions on a packet.
    Execute {
        /// The frame.
        packet: Vec<u8>,
        /// Metadata (input port).
        key: FlowKey,
        /// The actions.
        actions: Vec<Action>,
    },
    /// Dump the flows and give them to [`Fastdp::sweep_flows`].
    SweepFlows,
}

/// Something fastdp wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A datapath operation.
    Datapath(DpOp),
    /// A fastdp control message for the connection to `peer` (the overlay
    /// switch wraps it as `OverlayControlMsg` `[fastdp index][tag][msg]`).
    Control {
        /// The connection's peer.
        peer: PeerName,
        /// The fastdp tag (0: heartbeat ack).
        tag: u8,
        /// The body.
        msg: Vec<u8>,
    },
    /// Forward this frame to `next_hop` by the sleeve (the overlay switch
    /// does not use fastdp on that connection).
    Sleeve {
        /// The connection to send on.
        next_hop: PeerName,
        /// The frame's source peer.
        src: PeerName,
        /// The frame's destination peer.
        dst: PeerName,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The peer acknowledged our heartbeat: fastdp is established.
    Established {
        /// The peer.
        peer: PeerName,
    },
    /// Fastdp health towards a peer changed (the overlay switch holds or
    /// resumes fastdp on it).
    Health {
        /// The peer.
        peer: PeerName,
        /// Healthy or not.
        healthy: bool,
    },
}

/// Errors of the state machine's inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FastdpError {
    /// A second fastdp connection to a peer.
    #[error("fastdp already has a connection to {0}")]
    DuplicateConnection(PeerName),
    /// The peer's VXLAN port does not exist (its mesh port is 65535).
    #[error("no VXLAN port follows the mesh port of {0}")]
    NoVxlanPort(PeerName),
    /// No connection to that peer.
    #[error("fastdp has no connection to {0}")]
    UnknownConnection(PeerName),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastdpCounters {
    /// Miss upcalls handled.
    pub misses: u64,
    /// Misses dropped without a decision (unknown port, peer or shape).
    pub ignored: u64,
    /// Reactive flows asked for.
    pub reactive_flows: u64,
    /// Flushes of the flow table.
    pub flushes: u64,
    /// Heartbeats received and valid.
    pub heartbeats: u64,
}

/// Fastdp towards one peer, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub peer: PeerName,
    /// Its VXLAN address.
    pub remote: SocketAddrV4,
    /// Whether the overlay switch sends through fastdp.
    pub selected: bool,
    /// Whether the peer acknowledged our heartbeat.
    pub established: bool,
    /// Whether heartbeats arrive.
    pub healthy: bool,
}

/// A snapshot for `/status` and `/report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastdpStatus {
    /// One entry per connection.
    pub peers: Vec<PeerStatus>,
    /// Proactive flows installed.
    pub proactive_flows: usize,
    /// MACs known.
    pub macs: usize,
    /// Counters.
    pub counters: FastdpCounters,
}

/// How a frame reaches a peer.
enum Via {
    Tunnel(TunnelTarget),
    Sleeve(PeerName),
    Nowhere,
}

/// The decision for one frame.
#[derive(Default)]
struct Verdict {
    actions: Vec<Action>,
    flow: bool,
    sleeve: Vec<(PeerName, PeerName, PeerName)>,
}

impl Verdict {
    fn veto() -> Self {
        Verdict::default()
    }
    fn add_via(&mut self, via: Via, src: PeerName, dst: PeerName) {
        match via {
            Via::Tunnel(t) => self.actions.extend(t.actions()),
            Via::Sleeve(hop) => self.sleeve.push((hop, src, dst)),
            Via::Nowhere => {}
        }
    }
}

/// Where a frame came in.
#[derive(Clone, Copy)]
enum Ingress {
    Local(u32),
    Tunnel(u32, TunnelMatch),
    Injected,
}

impl Ingress {
    fn in_port(self) -> Option<u32> {
        match self {
            Ingress::Local(p) | Ingress::Tunnel(p, _) => Some(p),
            Ingress::Injected => None,
        }
    }
}

/// The fastdp state machine.
#[derive(Debug)]
pub struct Fastdp {
    config: FastdpConfig,
    topology: Topology,
    by_short: BTreeMap<ShortId, PeerName>,
    ports: BTreeMap<u32, (String, PortKind)>,
    macs: MacTable,
    forwarders: BTreeMap<PeerName, Forwarder>,
    sleeve_peers: BTreeSet<PeerName>,
    cidrs: Vec<(Ipv4Net, PeerName)>,
    local_destinations: BTreeMap<Ipv4Net, String>,
    proactive: ProactiveTable,
    flow_packets: HashMap<FlowKey, u64>,
    next_sweep: Option<Instant>,
    pending_vxlan: BTreeSet<u16>,
    counters: FastdpCounters,
    out: VecDeque<Output>,
}

impl Fastdp {
    /// A fresh instance. It asks for its own VXLAN vport and a clean flow
    /// table first (Weave flushes the flows of a datapath it takes over).
    pub fn new(config: FastdpConfig, now: Instant) -> Self {
        let mut f = Fastdp {
            next_sweep: Some(now + config.sweep_interval),
            config,
            topology: Topology::default(),
            by_short: BTreeMap::new(),
            ports: BTreeMap::new(),
            macs: MacTable::default(),
            forwarders: BTreeMap::new(),
            sleeve_peers: BTreeSet::new(),
            cidrs: Vec::new(),
            local_destinations: BTreeMap::new(),
            proactive: ProactiveTable::new(),
            flow_packets: HashMap::new(),
            pending_vxlan: BTreeSet::new(),
            counters: FastdpCounters::default(),
            out: VecDeque::new(),
        };
        f.dp(DpOp::FlushFlows);
        f.ensure_vxlan(f.config.vxlan_port);
        f
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// All pending outputs.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.out.drain(..).collect()
    }

    fn dp(&mut self, op: DpOp) {
        self.out.push_back(Output::Datapath(op));
    }

    fn ensure_vxlan(&mut self, udp_port: u16) {
        let have = self
            .ports
            .values()
            .any(|(_, k)| *k == PortKind::Vxlan { udp_port });
        if !have && self.pending_vxlan.insert(udp_port) {
            self.dp(DpOp::CreateVxlanVport { udp_port });
        }
    }

    fn local_short(&self) -> Option<ShortId> {
        self.topology.short_ids.get(&self.config.local).copied()
    }

    fn vxlan_vport(&self, udp_port: u16) -> Option<u32> {
        self.ports
            .iter()
            .find(|(_, (_, k))| *k == PortKind::Vxlan { udp_port })
            .map(|(p, _)| *p)
    }

    fn local_ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports
            .iter()
            .filter(|(_, (_, k))| *k == PortKind::Local)
            .map(|(p, _)| *p)
    }

    // ----- inputs: datapath ports -----

    /// A vport exists (found at start-up, created, or announced by the
    /// kernel). A new local port invalidates the flows (broadcast flows
    /// must include it).
    pub fn port_added(&mut self, port_no: u32, name: &str, kind: PortKind) {
        if self.ports.get(&port_no) == Some(&(name.to_string(), kind)) {
            return;
        }
        self.ports.insert(port_no, (name.to_string(), kind));
        match kind {
            PortKind::Local => self.invalidate(),
            PortKind::Vxlan { udp_port } => {
                self.pending_vxlan.remove(&udp_port);
                self.refresh_proactive();
            }
        }
    }

    /// The VXLAN vport for `udp_port` could not be created: forget the
    /// request so a later connection asks again.
    pub fn vxlan_failed(&mut self, udp_port: u16) {
        self.pending_vxlan.remove(&udp_port);
    }

    /// A vport went away.
    pub fn port_removed(&mut self, port_no: u32) {
        if self.ports.remove(&port_no).is_some() {
            self.macs.forget(Location::Local(port_no));
            self.refresh_proactive();
        }
    }

    // ----- inputs: mesh and IPAM -----

    /// New routes or ShortIDs. Any change flushes the flows (Weave's
    /// InvalidateRoutes / InvalidateShortIDs); MACs behind peers that are
    /// gone are forgotten.
    pub fn set_topology(&mut self, topology: Topology) {
        if topology == self.topology {
            return;
        }
        let gone: Vec<PeerName> = self
            .topology
            .short_ids
            .keys()
            .filter(|p| !topology.short_ids.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            self.macs.forget(Location::Peer(p));
        }
        // On a ShortID collision (until the higher name picks another) the
        // lower name keeps the id, as mesh's lookup by ShortID does.
        self.by_short = BTreeMap::new();
        for (name, id) in &topology.short_ids {
            self.by_short.entry(*id).or_insert(*name);
        }
        self.topology = topology;
        self.invalidate();
    }

    /// The IPAM CIDR view: every ring prefix with its owner.
    pub fn set_cidr_view(&mut self, cidrs: Vec<(Ipv4Net, PeerName)>) {
        let cidrs: Vec<(Ipv4Net, PeerName)> =
            cidrs.into_iter().map(|(p, o)| (p.trunc(), o)).collect();
        if cidrs != self.cidrs {
            self.cidrs = cidrs;
            self.refresh_proactive();
        }
    }

    /// Delivers IPv4 destinations in `prefix` arriving over the tunnel (or
    /// from another local port) to the local port named `port`.
    pub fn add_local_destination(&mut self, prefix: Ipv4Net, port: &str) {
        self.local_destinations
            .insert(prefix.trunc(), port.to_string());
        self.refresh_proactive();
    }

    /// Stops proactive delivery of `prefix`.
    pub fn remove_local_destination(&mut self, prefix: Ipv4Net) {
        if self.local_destinations.remove(&prefix.trunc()).is_some() {
            self.refresh_proactive();
        }
    }

    /// A mesh connection offers fastdp (Weave's PrepareConnection).
    pub fn add_connection(&mut self, params: ConnectionParams) -> Result<(), FastdpError> {
        if self.forwarders.contains_key(&params.peer) {
            return Err(FastdpError::DuplicateConnection(params.peer));
        }
        let fwd = Forwarder::new(params, self.config.vxlan_port)
            .ok_or(FastdpError::NoVxlanPort(params.peer))?;
        self.ensure_vxlan(fwd.remote().port());
        self.sleeve_peers.remove(&params.peer);
        self.forwarders.insert(params.peer, fwd);
        Ok(())
    }

    /// The mesh confirmed the connection: heartbeats start.
    pub fn confirm_connection(&mut self, peer: PeerName, now: Instant) -> Result<(), FastdpError> {
        self.forwarders
            .get_mut(&peer)
            .ok_or(FastdpError::UnknownConnection(peer))?
            .confirm(now);
        self.poll(now);
        Ok(())
    }

    /// The connection ended.
    pub fn remove_connection(&mut self, peer: PeerName) {
        let sleeve = self.sleeve_peers.remove(&peer);
        if self.forwarders.remove(&peer).is_some() {
            self.refresh_proactive();
        } else if sleeve {
            self.invalidate();
        }
    }

    /// A mesh connection without fastdp (the peer offers only the sleeve):
    /// frames whose next hop is `peer` go out as [`Output::Sleeve`].
    pub fn add_sleeve_connection(&mut self, peer: PeerName) {
        if !self.forwarders.contains_key(&peer) && self.sleeve_peers.insert(peer) {
            // Flood flows built before it exist without it.
            self.invalidate();
        }
    }

    /// The overlay switch now sends to `peer` through fastdp (`true`) or
    /// another overlay (`false`).
    pub fn set_selected(&mut self, peer: PeerName, selected: bool) -> Result<(), FastdpError> {
        let f = self
            .forwarders
            .get_mut(&peer)
            .ok_or(FastdpError::UnknownConnection(peer))?;
        if f.selected() != selected {
            f.set_selected(selected);
            // Reactive flows may tunnel to it, or have been vetoed for it.
            self.invalidate();
        }
        Ok(())
    }

    /// A fastdp control message from `peer` (the switch has unwrapped it).
    pub fn control_message(&mut self, peer: PeerName, tag: u8, _msg: &[u8], now: Instant) {
        if tag != FASTDP_HEARTBEAT_ACK {
            // IPsec set-up and unknown tags: not supported, ignored.
            return;
        }
        let mut events = Vec::new();
        if let Some(f) = self.forwarders.get_mut(&peer) {
            f.on_ack(now, &mut events);
        }
        self.forwarder_events(peer, events);
    }

    fn forwarder_events(&mut self, peer: PeerName, events: Vec<FastdpEvent>) {
        for e in events {
            match e {
                FastdpEvent::SendHeartbeat => self.send_heartbeat(peer),
                FastdpEvent::AckPeer => self.out.push_back(Output::Control {
                    peer,
                    tag: FASTDP_HEARTBEAT_ACK,
                    msg: Vec::new(),
                }),
                FastdpEvent::Established => self.out.push_back(Output::Established { peer }),
                FastdpEvent::Health(healthy) => {
                    self.out.push_back(Output::Health { peer, healthy })
                }
            }
        }
    }

    fn send_heartbeat(&mut self, peer: PeerName) {
        let Some(f) = self.forwarders.get(&peer) else {
            return;
        };
        let (Some(src), Some(dst)) = (self.local_short(), self.topology.short_ids.get(&peer))
        else {
            return;
        };
        let Some(vport) = self.vxlan_vport(f.remote().port()) else {
            return;
        };
        let target = TunnelTarget {
            id: tunnel_id(src, *dst),
            local_ip: f.params().local_ip,
            remote_ip: *f.remote().ip(),
            vport,
        };
        let packet = heartbeat_frame(f.params().conn_uid, self.config.mtu);
        self.dp(DpOp::Execute {
            packet,
            key: FlowKey::new(),
            actions: target.actions(),
        });
    }

    // ----- timers -----

    /// When [`Fastdp::poll`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.forwarders
            .values()
            .filter_map(Forwarder::next_deadline)
            .chain(self.next_sweep)
            .min()
    }

    /// Runs heartbeats, health timeouts and the flow sweep that are due.
    pub fn poll(&mut self, now: Instant) {
        let peers: Vec<PeerName> = self.forwarders.keys().copied().collect();
        for peer in peers {
            let mut events = Vec::new();
            if let Some(f) = self.forwarders.get_mut(&peer) {
                f.poll(now, &mut events);
            }
            self.forwarder_events(peer, events);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = Some(now + self.config.sweep_interval);
            self.dp(DpOp::SweepFlows);
        }
    }

    /// The flow dump asked for by [`DpOp::SweepFlows`]: reactive flows
    /// that carried no packet since the previous sweep are deleted; the
    /// source MACs of busy ones are kept alive; old MACs expire.
    pub fn sweep_flows(&mut self, now: Instant, flows: Vec<FlowInfo>) {
        let mut seen = HashMap::new();
        for f in flows {
            if f.ufid.as_ref().is_some_and(is_proactive_ufid) {
                continue;
            }
            let Some(key) = f.key else {
                continue;
            };
            let packets = f.stats.map_or(0, |s| s.n_packets);
            if self.flow_packets.get(&key) == Some(&packets) {
                self.dp(DpOp::DeleteFlow(FlowId::Key(key)));
                continue;
            }
            if let Some(eth) = key.ethernet() {
                self.macs.touch(eth.src, now);
            }
            seen.insert(key, packets);
        }
        self.flow_packets = seen;
        self.macs.expire(now);
    }

    // ----- the data path -----

    fn invalidate(&mut self) {
        self.counters.flushes += 1;
        self.dp(DpOp::FlushFlows);
        self.flow_packets.clear();
        self.proactive.forget_all();
        self.refresh_proactive();
    }

    fn refresh_proactive(&mut self) {
        let local = self.config.local;
        let owners: BTreeSet<PeerName> = self.cidrs.iter().map(|(_, o)| *o).collect();
        let mut targets = BTreeMap::new();
        for owner in owners {
            if owner == local {
                continue;
            }
            if let Via::Tunnel(t) = self.unicast_via(local, owner) {
                targets.insert(owner, t);
            }
        }
        let by_name: BTreeMap<&str, u32> = self
            .ports
            .iter()
            .filter(|(_, (_, k))| *k == PortKind::Local)
            .map(|(p, (n, _))| (n.as_str(), *p))
            .collect();
        let inputs = ProactiveInputs {
            local_id: self.local_short(),
            local,
            cidrs: self.cidrs.clone(),
            targets,
            local_destinations: self
                .local_destinations
                .iter()
                .filter_map(|(p, n)| by_name.get(n.as_str()).map(|q| (*p, *q)))
                .collect(),
            local_ports: self.local_ports().collect(),
            vxlan_ports: self
                .ports
                .iter()
                .filter(|(_, (_, k))| matches!(k, PortKind::Vxlan { .. }))
                .map(|(p, _)| *p)
                .collect(),
        };
        let want = if self.config.proactive {
            desired(&inputs)
        } else {
            BTreeSet::new()
        };
        let diff = self.proactive.update(&want);
        for id in diff.delete {
            self.dp(DpOp::DeleteFlow(id));
        }
        for spec in diff.add {
            self.dp(DpOp::CreateFlow(spec));
        }
    }

    /// How a frame from `src` to `dst` leaves us through `hop`.
    fn via(&self, src: PeerName, dst: PeerName, hop: PeerName) -> Via {
        let (Some(s), Some(d)) = (
            self.topology.short_ids.get(&src),
            self.topology.short_ids.get(&dst),
        ) else {
            return Via::Nowhere;
        };
        let Some(f) = self.forwarders.get(&hop) else {
            if self.sleeve_peers.contains(&hop) {
                return Via::Sleeve(hop);
            }
            return Via::Nowhere;
        };
        if !f.selected() {
            return Via::Sleeve(hop);
        }
        let Some(vport) = self.vxlan_vport(f.remote().port()) else {
            return Via::Nowhere;
        };
        Via::Tunnel(TunnelTarget {
            id: tunnel_id(*s, *d),
            local_ip: f.params().local_ip,
            remote_ip: *f.remote().ip(),
            vport,
        })
    }

    fn unicast_via(&self, src: PeerName, dst: PeerName) -> Via {
        match self.topology.unicast.get(&dst) {
            Some(hop) => self.via(src, dst, *hop),
            None => Via::Nowhere,
        }
    }

    fn broadcast_from(&self, src: PeerName, v: &mut Verdict) {
        if let Some(hops) = self.topology.broadcast.get(&src) {
            for hop in hops {
                let via = self.via(src, *hop, *hop);
                v.add_via(via, src, *hop);
            }
        }
    }

    fn flood_local(&self, except: Option<u32>, v: &mut Verdict) {
        for p in self.local_ports() {
            if Some(p) != except {
                v.actions.push(Action::Output(p));
            }
        }
    }

    /// A miss upcall: the packet and the key the kernel extracted.
    pub fn handle_miss(&mut self, packet: Vec<u8>, key: &FlowKey, now: Instant) {
        self.counters.misses += 1;
        let (Some(in_port), Some(eth)) = (key.in_port(), key.ethernet()) else {
            self.counters.ignored += 1;
            return;
        };
        match self.ports.get(&in_port).map(|(_, k)| *k) {
            Some(PortKind::Local) => {
                let v = self.on_local_frame(in_port, eth, now);
                self.finish(packet, Ingress::Local(in_port), eth, v);
            }
            Some(PortKind::Vxlan { udp_port }) => {
                self.on_tunnel_frame(packet, key, in_port, udp_port, eth, now)
            }
            None => self.counters.ignored += 1,
        }
    }

    /// A frame made here for a local sender (an ICMP error such as
    /// fragmentation-needed): sent to the port its destination MAC was
    /// learnt on, else to every local port. Nothing is learnt from it.
    pub fn deliver_local(&mut self, frame: Vec<u8>) {
        let Some(eth) = frame_macs(&frame) else {
            self.counters.ignored += 1;
            return;
        };
        let mut v = Verdict::default();
        match self.macs.lookup(eth.dst) {
            Some(Location::Local(q)) => v.actions.push(Action::Output(q)),
            _ => self.flood_local(None, &mut v),
        }
        if !v.actions.is_empty() {
            self.dp(DpOp::Execute {
                packet: frame,
                key: FlowKey::new(),
                actions: v.actions,
            });
        }
    }

    /// A frame the sleeve received from `src`, addressed to peer `dst`
    /// (Weave's overlay consumer): delivered or relayed like a tunnelled
    /// frame, by `execute`, without flows.
    pub fn inject(&mut self, src: PeerName, dst: PeerName, frame: Vec<u8>, now: Instant) {
        let Some(eth) = frame_macs(&frame) else {
            self.counters.ignored += 1;
            return;
        };
        let v = self.forwarded(src, dst, eth, Ingress::Injected, now);
        self.finish(frame, Ingress::Injected, eth, v);
    }

    fn on_local_frame(&mut self, port: u32, eth: EthernetKey, now: Instant) -> Verdict {
        let local = self.config.local;
        match self.macs.learn_local(eth.src, port, now) {
            Learned::Conflict(_) => return Verdict::veto(),
            Learned::Moved(_) => self.invalidate(),
            Learned::New | Learned::Unchanged => {}
        }
        let mut v = Verdict::default();
        if eth.dst == STP_GROUP {
            self.flood_local(Some(port), &mut v);
            v.flow = true;
            return v;
        }
        match self.macs.lookup(eth.dst) {
            Some(Location::Local(q)) if q == port => Verdict::veto(),
            Some(Location::Local(q)) => {
                v.actions.push(Action::Output(q));
                v.flow = true;
                v
            }
            Some(Location::Peer(x)) if x != local => {
                let via = self.unicast_via(local, x);
                v.flow = matches!(via, Via::Tunnel(_));
                v.add_via(via, local, x);
                v
            }
            _ => {
                self.flood_local(Some(port), &mut v);
                self.broadcast_from(local, &mut v);
                v.flow = is_group(eth.dst);
                v
            }
        }
    }

    fn on_tunnel_frame(
        &mut self,
        packet: Vec<u8>,
        key: &FlowKey,
        in_port: u32,
        udp_port: u16,
        eth: EthernetKey,
        now: Instant,
    ) {
        let tunnel = match key.get(odp::wire::key::attr::TUNNEL) {
            Some(KeyAttr::Tunnel(t)) => received_tunnel(t),
            _ => None,
        };
        let Some((id, src_ip, dst_ip)) = tunnel else {
            self.counters.ignored += 1;
            return;
        };
        let (s, d) = split_tunnel_id(id);
        let (Some(src), Some(dst)) = (
            self.by_short.get(&s).copied(),
            self.by_short.get(&d).copied(),
        ) else {
            self.counters.ignored += 1;
            return;
        };
        if eth.src == MacAddr([0; 6]) && eth.dst == MacAddr([0; 6]) {
            let sender = SocketAddrV4::new(src_ip, udp_port);
            let mut events = Vec::new();
            let mut moved = false;
            if let Some(f) = self.forwarders.get_mut(&src) {
                let (valid, m) = f.on_special_frame(&packet, sender, now, &mut events);
                if valid {
                    self.counters.heartbeats += 1;
                }
                moved = m;
            }
            self.forwarder_events(src, events);
            if moved {
                self.invalidate();
            }
            return;
        }
        if src == self.config.local
            && self
                .forwarders
                .get(&dst)
                .is_some_and(|f| *f.remote().ip() == src_ip && f.params().local_ip == dst_ip)
            && is_frag_needed(&packet)
        {
            // Our own tunnel id with the outer addresses swapped: the
            // kernel's VXLAN transmit found a DF packet of ours too big for
            // the path, turned it into ICMP fragmentation-needed and handed
            // it back as if received. It is for the local sender.
            self.deliver_local(packet);
            return;
        }
        let tm = TunnelMatch {
            id,
            src: src_ip,
            dst: dst_ip,
        };
        let ingress = Ingress::Tunnel(in_port, tm);
        let v = self.forwarded(src, dst, eth, ingress, now);
        self.finish(packet, ingress, eth, v);
    }

    fn forwarded(
        &mut self,
        src: PeerName,
        dst: PeerName,
        eth: EthernetKey,
        ingress: Ingress,
        now: Instant,
    ) -> Verdict {
        let local = self.config.local;
        let mut v = Verdict::default();
        if dst != local {
            match self.unicast_via(src, dst) {
                Via::Tunnel(t) => {
                    if let Ingress::Tunnel(_, tm) = ingress
                        && t.id == tm.id
                        && t.local_ip == tm.dst
                        && t.remote_ip == tm.src
                    {
                        // Straight back where it came from.
                        return Verdict::veto();
                    }
                    v.actions.extend(t.actions());
                    v.flow = true;
                }
                via => v.add_via(via, src, dst),
            }
            return v;
        }
        if let Learned::Moved(_) = self.macs.learn_remote(eth.src, src, now) {
            self.invalidate();
        }
        match self.macs.lookup(eth.dst) {
            Some(Location::Local(q)) => {
                v.actions.push(Action::Output(q));
                v.flow = true;
            }
            _ => {
                self.flood_local(None, &mut v);
                self.broadcast_from(src, &mut v);
                v.flow = is_group(eth.dst);
            }
        }
        v
    }

    fn finish(&mut self, packet: Vec<u8>, ingress: Ingress, eth: EthernetKey, v: Verdict) {
        for (next_hop, src, dst) in &v.sleeve {
            self.out.push_back(Output::Sleeve {
                next_hop: *next_hop,
                src: *src,
                dst: *dst,
                frame: packet.clone(),
            });
        }
        let flow = v.flow && v.sleeve.is_empty();
        if flow && let Some(in_port) = ingress.in_port() {
            let tunnel = match ingress {
                Ingress::Tunnel(_, tm) => Some(tm),
                _ => None,
            };
            self.counters.reactive_flows += 1;
            self.dp(DpOp::CreateFlow(reactive_flow(
                in_port,
                tunnel,
                eth,
                v.actions.clone(),
            )));
        }
        if !v.actions.is_empty() {
            let mut key = FlowKey::new();
            if let Some(p) = ingress.in_port() {
                key.push(KeyAttr::InPort(p));
            }
            self.dp(DpOp::Execute {
                packet,
                key,
                actions: v.actions,
            });
        }
    }

    // ----- status -----

    /// Where a MAC is believed to live.
    pub fn mac_location(&self, mac: MacAddr) -> Option<Location> {
        self.macs.lookup(mac)
    }

    /// The settings this instance runs with.
    pub fn config(&self) -> &FastdpConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> FastdpCounters {
        self.counters
    }

    /// Fastdp towards one peer, if a connection to it offers fastdp.
    pub fn peer_status(&self, peer: PeerName) -> Option<PeerStatus> {
        self.forwarders.get(&peer).map(|f| PeerStatus {
            peer,
            remote: f.remote(),
            selected: f.selected(),
            established: f.health().established(),
            healthy: f.health().healthy(),
        })
    }

    /// A status snapshot.
    pub fn status(&self) -> FastdpStatus {
        FastdpStatus {
            peers: self
                .forwarders
                .values()
                .map(|f| PeerStatus {
                    peer: f.params().peer,
                    remote: f.remote(),
                    selected: f.selected(),
                    established: f.health().established(),
                    healthy: f.health().healthy(),
                })
                .collect(),
            proactive_flows: self.proactive.len(),
            macs: self.macs.len(),
            counters: self.counters,
        }
    }
}

/// Whether an Ethernet frame carries IPv4 ICMP "fragmentation needed"
/// (destination unreachable, code 4).
fn is_frag_needed(frame: &[u8]) -> bool {
    let (Some([0x08, 0x00]), Some(ip)) = (frame.get(12..14), frame.get(14..)) else {
        return false;
    };
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    vihl >> 4 == 4
        && ihl >= 20
        && ip.get(9) == Some(&1)
        && ip.get(ihl..ihl + 2) == Some(&[3, 4][..])
}
