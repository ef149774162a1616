//! The control plane's handle on the data plane: bridge set-up, starting
//! the thread, and the small calls the router task makes.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::{info, warn};

use ipnet::Ipv4Net;
use odp::handle::DatapathOptions;

use super::dataplane::{
    Command, ConnOverlayStatus, ConnSpec, ContainerSpec, Counters, CountersCell, Dataplane,
    FastdpReport, FastdpReportCell, OverlayEvent, Sockets, StatusMap,
};
use super::fastdp_plane::FastdpPlane;
use super::sockets::{
    PMTUDISC_DO, PMTUDISC_DONT, PacketSocket, UdpSocket, Waker, capture_keeps_offload,
    disable_netdev_features,
};
use super::switching::RouteTable;
use crate::fastdp::executor::Executor;
use crate::fastdp::{Fastdp, FastdpConfig};
use crate::mesh::codec::Features;
use crate::mesh::identity::PeerName;
use crate::mesh::router::{ConnHandle, MeshRouter, Output};
use crate::mesh::wire::ProtocolTag;
use crate::net::datapath::{DatapathOps, probe_openvswitch};
use crate::net::ethtool;
use crate::net::odp_datapath::OdpDatapath;
use crate::net::plan::{BRIDGE_IF, BridgeConfig, BridgePlan, BridgeType, OdpSupport, PCAP_IF};
use crate::net::rtnl::Rtnl;
use crate::net::setup::{SetupError, ensure_bridge};
use crate::net::sysctl::Sysctl;
use crate::sleeve::overlay_switch::{OVERLAYS_FEATURE, overlays_feature};

/// Why the overlay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The bridge set-up failed.
    #[error("setting up the bridge: {0}")]
    Bridge(#[from] SetupError),
    /// Opening rtnetlink failed.
    #[error("rtnetlink: {0}")]
    Rtnl(String),
    /// The kernel datapath could not be driven.
    #[error("fastdp: {0}")]
    Datapath(String),
    /// The blocking set-up task failed.
    #[error("bridge set-up task: {0}")]
    Task(String),
    /// A socket could not be opened.
    #[error("{what}: {source}")]
    Socket {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How the data plane runs, for the log and the status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneMode {
    /// The bridge type set up.
    pub bridge_type: BridgeType,
    /// The type the options asked for.
    pub requested: BridgeType,
    /// Why fastdp is off although it was asked for (no openvswitch).
    pub fallback: Option<String>,
    /// Why the fastdp overlay is not offered to peers even though the
    /// bridge has a datapath (e.g. encryption).
    pub overlay_note: Option<String>,
    /// The MTU of the bridge devices (and of fastdp's heartbeats).
    pub mtu: u32,
    /// The bridge's name.
    pub bridge: String,
    /// The datapath's name, if the type has one.
    pub datapath: Option<String>,
    /// The overlays offered to peers, most preferred first.
    pub overlays: Vec<&'static str>,
}

impl DataplaneMode {
    /// The `FastDP:` line of `/status`: enabled, or disabled and why.
    pub fn fastdp_line(&self) -> String {
        if self.overlays.contains(&"fastdp") {
            return format!(
                "enabled ({}, datapath {}, mtu {})",
                self.bridge_type,
                self.datapath.as_deref().unwrap_or("?"),
                self.mtu
            );
        }
        let why = match (&self.fallback, &self.overlay_note) {
            (Some(why), _) => format!("unavailable: {why}"),
            (None, Some(why)) => why.clone(),
            (None, None) => "disabled by --no-fastdp".to_string(),
        };
        format!("disabled ({why})")
    }
}

/// Sets up the bridge for `config` (blocking: run it with
/// `spawn_blocking`). Probes the kernel for openvswitch; without it a
/// fastdp request falls back to Bridge (the plan says why). In Bridge mode
/// checksums and segmentation are left to the kernel before frames reach
/// the capture end (see the module docs).
pub fn setup_bridge(config: &BridgeConfig) -> Result<BridgePlan, StartError> {
    let mut rtnl = Rtnl::open().map_err(|e| StartError::Rtnl(e.to_string()))?;
    let sysctl = Sysctl::new("/proc");
    let odp = probe_openvswitch();
    let mut driver = match &odp {
        OdpSupport::Available => Some(
            OdpDatapath::connect(DatapathOptions::default())
                .map_err(|e| StartError::Datapath(e.to_string()))?,
        ),
        OdpSupport::Missing(_) => None,
    };
    let plan = ensure_bridge(
        &mut rtnl,
        &sysctl,
        driver.as_mut().map(|d| d as &mut dyn DatapathOps),
        config,
        &odp,
    )?;
    if plan.bridge_type == BridgeType::Bridge {
        // TCP super-frames go up to the capture whole (it cuts them, see
        // the overlay docs); other GSO kinds are segmented by the kernel.
        // If that cannot be arranged, checksum offload goes off, which
        // makes the kernel segment everything.
        match disable_netdev_features(BRIDGE_IF, |name| !capture_keeps_offload(name)) {
            Ok(names) => {
                info!(
                    ?names,
                    "offloads off on {BRIDGE_IF}; TCP segmentation left on"
                );
                return Ok(plan);
            }
            Err(error) => {
                warn!(%error, "could not choose offloads of {BRIDGE_IF}; turning checksum offload off")
            }
        }
        match ethtool::tx_checksum(BRIDGE_IF) {
            Ok(true) => {
                if let Err(error) = ethtool::tx_checksum_off(BRIDGE_IF) {
                    warn!(%error, "could not turn tx checksum offload off on {BRIDGE_IF}; completing checksums in userspace");
                }
            }
            Ok(false) => {}
            Err(error) => warn!(%error, "reading tx checksum offload of {BRIDGE_IF}"),
        }
    }
    Ok(plan)
}

/// What the daemon needs to start the data plane.
#[derive(Debug, Clone)]
pub struct StartConfig {
    /// Our peer name.
    pub ourself: PeerName,
    /// The bridge options.
    pub bridge: BridgeConfig,
    /// The mesh port (sleeve UDP; VXLAN on port + 1).
    pub port: u16,
    /// The address the sleeve sockets bind (`--host`; unspecified: all).
    /// The kernel's VXLAN vport takes no local address through the
    /// datapath interface, so fastdp's UDP port is not bound to it.
    pub host: Ipv4Addr,
    /// Whether a password encrypts the overlay: fastdp (which would need
    /// IPsec) is then not offered and traffic goes by the encrypted sleeve.
    pub encrypted: bool,
    /// Whether fastdp installs proactive flows.
    pub proactive_flows: bool,
}

/// Sets up the bridge (on a blocking thread) and starts the data plane in
/// the mode the set-up chose: what the daemon runs at start-up.
pub async fn start(
    config: StartConfig,
    events: Box<dyn Fn(OverlayEvent) + Send>,
) -> Result<Overlay, StartError> {
    let bridge = config.bridge.clone();
    let (plan, executor) = tokio::task::spawn_blocking(move || {
        let plan = setup_bridge(&bridge)?;
        let executor = match &plan.datapath {
            Some(dp) if plan.bridge_type.is_fastdp() => {
                Some(Executor::open(dp).map_err(|e| StartError::Datapath(e.to_string()))?)
            }
            _ => None,
        };
        Ok::<_, StartError>((plan, executor))
    })
    .await
    .map_err(|e| StartError::Task(e.to_string()))??;
    let mut overlay_note = None;
    let overlays: Vec<&'static str> = if plan.bridge_type.is_fastdp() {
        if config.encrypted {
            overlay_note = Some(
                "encryption is on and fastdp has no IPsec here: traffic goes by the encrypted sleeve"
                    .to_string(),
            );
            vec!["sleeve"]
        } else {
            vec!["fastdp", "sleeve"]
        }
    } else {
        vec!["sleeve"]
    };
    let mode = DataplaneMode {
        bridge_type: plan.bridge_type,
        requested: plan.requested,
        fallback: plan.fallback.clone(),
        overlay_note,
        mtu: plan.mtu,
        bridge: plan.bridge.clone(),
        datapath: plan.datapath.clone(),
        overlays,
    };
    match &mode.fallback {
        Some(why) => warn!(
            requested = %plan.requested,
            "fastdp unavailable, falling back to Bridge mode (sleeve only): {why}"
        ),
        None => info!(
            bridge = %plan.bridge,
            bridge_type = %plan.bridge_type,
            mtu = plan.mtu,
            "bridge ready"
        ),
    }
    if let Some(note) = &mode.overlay_note {
        warn!("fastdp overlay not offered: {note}");
    }
    let fastdp = match executor {
        Some((exec, ports)) => {
            let vxlan_port = config.port.checked_add(1).ok_or_else(|| {
                StartError::Datapath("no VXLAN port after mesh port 65535".into())
            })?;
            let mut fc = FastdpConfig::new(config.ourself, mode.mtu as usize);
            fc.vxlan_port = vxlan_port;
            fc.proactive = config.proactive_flows;
            Some(FastdpPlane::new(
                Fastdp::new(fc, Instant::now()),
                exec,
                ports,
                mode.bridge_type,
                mode.overlays.contains(&"fastdp"),
            ))
        }
        None => None,
    };
    Overlay::start(
        config.ourself,
        SocketAddrV4::new(config.host, config.port),
        mode,
        fastdp,
        events,
    )
}

/// The features the overlay adds to the mesh handshake.
pub fn overlay_features(overlays: &[&str]) -> Features {
    let mut features = Features::new();
    features.insert(OVERLAYS_FEATURE.to_string(), overlays_feature(overlays));
    features
}

/// The running data plane, as the router task holds it.
pub struct Overlay {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    status: StatusMap,
    report: FastdpReportCell,
    counters: CountersCell,
    mode: DataplaneMode,
    thread: Option<JoinHandle<()>>,
    fingerprint: Vec<(PeerName, u64, u64)>,
    cidr_view: Vec<(Ipv4Net, PeerName)>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// Opens the sleeve sockets on UDP `bind` (and, in Bridge mode, the
    /// capture socket on `vethwe-pcap`), and starts the data-plane thread
    /// for peer `ourself`, with the fastdp machine when the mode has a
    /// datapath. `events` is called from that thread.
    pub fn start(
        ourself: PeerName,
        bind: SocketAddrV4,
        mode: DataplaneMode,
        fastdp: Option<FastdpPlane>,
        events: Box<dyn Fn(OverlayEvent) + Send>,
    ) -> Result<Overlay, StartError> {
        let capture = if fastdp.is_none() {
            Some(
                PacketSocket::open(PCAP_IF).map_err(|source| StartError::Socket {
                    what: "capture socket on vethwe-pcap",
                    source,
                })?,
            )
        } else {
            None
        };
        let sockets = Sockets {
            capture,
            udp: UdpSocket::bind(bind, PMTUDISC_DONT).map_err(|source| StartError::Socket {
                what: "sleeve UDP socket",
                source,
            })?,
            udp_df: UdpSocket::bind(bind, PMTUDISC_DO).map_err(|source| StartError::Socket {
                what: "sleeve UDP socket (DF)",
                source,
            })?,
        };
        let waker = Arc::new(Waker::new().map_err(|source| StartError::Socket {
            what: "eventfd",
            source,
        })?);
        let (commands, queue) = channel();
        let status: StatusMap = Arc::new(Mutex::new(BTreeMap::new()));
        let report: FastdpReportCell = Arc::new(Mutex::new(None));
        let counters: CountersCell = Arc::default();
        let dataplane = Dataplane::new(
            ourself,
            sockets,
            waker.clone(),
            queue,
            events,
            status.clone(),
            mode.overlays.clone(),
            fastdp.map(|f| (f, report.clone())),
            counters.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || dataplane.run())
            .map_err(|source| StartError::Socket {
                what: "data-plane thread",
                source,
            })?;
        info!(%bind, bridge_type = %mode.bridge_type, overlays = ?mode.overlays, "data plane started");
        Ok(Overlay {
            commands,
            waker,
            status,
            report,
            counters,
            mode,
            thread: Some(thread),
            fingerprint: Vec::new(),
            cidr_view: Vec::new(),
        })
    }

    /// How the data plane runs.
    pub fn mode(&self) -> &DataplaneMode {
        &self.mode
    }

    /// The features to offer in the mesh handshake.
    pub fn features(&self) -> Features {
        overlay_features(&self.mode.overlays)
    }

    /// The latest fastdp report (vports, flows), when fastdp runs.
    pub fn fastdp_report(&self) -> Option<FastdpReport> {
        self.report.lock().ok().and_then(|r| r.clone())
    }

    /// The allocator's view of the whole ring changed (or may have):
    /// hands it to fastdp when it differs from the last one.
    pub fn set_cidr_view(&mut self, view: Vec<(Ipv4Net, PeerName)>) {
        if view != self.cidr_view {
            self.cidr_view = view.clone();
            self.send(Command::CidrView(view));
        }
    }

    /// The data plane's counters as last published (about once a
    /// second).
    pub fn counters(&self) -> Counters {
        self.counters.lock().map(|c| *c).unwrap_or_default()
    }

    /// A container was attached (`PUT /container/{id}`).
    pub fn container_added(&self, container: ContainerSpec) {
        self.send(Command::ContainerAdded(container));
    }

    /// A container was detached (`DELETE /container/{id}`).
    pub fn container_removed(&self, id: String) {
        self.send(Command::ContainerRemoved(id));
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.waker.wake();
        }
    }

    /// The mesh added a connection: start the sleeve on it.
    pub fn connection_added(&self, spec: ConnSpec) {
        self.send(Command::Add(spec));
    }

    /// The mesh removed a connection.
    pub fn connection_removed(&self, conn: ConnHandle, remote: PeerName) {
        self.send(Command::Remove { conn, remote });
    }

    /// An overlay control message arrived.
    pub fn control(&self, conn: ConnHandle, tag: ProtocolTag, payload: Vec<u8>) {
        self.send(Command::Control { conn, tag, payload });
    }

    /// A peer was forgotten.
    pub fn peer_removed(&self, peer: PeerName) {
        self.send(Command::PeerGone(peer));
    }

    /// Hands the data plane fresh routes when the topology changed since
    /// the last call (cheap otherwise: one pass over the peers).
    pub fn sync_routes(&mut self, mesh: &mut MeshRouter) {
        let fingerprint: Vec<(PeerName, u64, u64)> = mesh
            .peers()
            .iter()
            .map(|p| (p.name, p.uid.0, p.version))
            .collect();
        if fingerprint == self.fingerprint {
            return;
        }
        self.fingerprint = fingerprint;
        let mut routes = mesh.routes().clone();
        let table = RouteTable::from_mesh(mesh.peers(), &routes);
        let topology = crate::fastdp::inputs::topology(mesh.peers(), &mut routes);
        self.send(Command::Routes(table, topology));
    }

    /// Passes the mesh outputs the overlay cares about to the data plane
    /// (the caller still handles every output itself).
    pub fn on_output(&self, output: &Output) {
        match output {
            Output::ConnectionAdded {
                conn,
                remote,
                outbound,
                remote_addr,
                conn_uid,
                session_key,
                features,
            } => self.connection_added(ConnSpec {
                conn: *conn,
                remote: *remote,
                outbound: *outbound,
                remote_addr: *remote_addr,
                conn_uid: *conn_uid,
                session_key: session_key.clone(),
                features: features.clone(),
            }),
            Output::ConnectionRemoved { conn, remote } => self.connection_removed(*conn, *remote),
            Output::OverlayControl { conn, tag, payload } => {
                self.control(*conn, *tag, payload.clone())
            }
            Output::PeerRemoved(peer) => self.peer_removed(*peer),
            _ => {}
        }
    }

    /// Carries out what the data plane asked of the mesh. Returns the
    /// connection to close, and why, when the overlay failed on it.
    pub fn on_event(
        &self,
        event: OverlayEvent,
        mesh: &mut MeshRouter,
        now: Instant,
    ) -> Option<(ConnHandle, String)> {
        match event {
            OverlayEvent::Control { conn, tag, payload } => {
                mesh.send_overlay_control(conn, tag, &payload, now);
                None
            }
            OverlayEvent::Established { conn } => {
                mesh.connection_established(conn, now);
                None
            }
            OverlayEvent::Failed { conn, reason } => Some((conn, reason)),
        }
    }

    /// The overlay state of each connection, by peer.
    pub fn status(&self) -> BTreeMap<PeerName, ConnOverlayStatus> {
        self.status.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(bridge_type: BridgeType, overlays: Vec<&'static str>) -> DataplaneMode {
        DataplaneMode {
            bridge_type,
            requested: BridgeType::BridgedFastdp,
            fallback: None,
            overlay_note: None,
            mtu: 1376,
            bridge: "weave".into(),
            datapath: Some("datapath".into()),
            overlays,
        }
    }

    #[test]
    fn fastdp_line_says_why_it_is_off() {
        let on = mode(BridgeType::BridgedFastdp, vec!["fastdp", "sleeve"]);
        assert_eq!(
            on.fastdp_line(),
            "enabled (bridged_fastdp, datapath datapath, mtu 1376)"
        );
        let mut off = mode(BridgeType::Bridge, vec!["sleeve"]);
        off.fallback = Some("no openvswitch".into());
        assert_eq!(off.fastdp_line(), "disabled (unavailable: no openvswitch)");
        let mut encrypted = mode(BridgeType::BridgedFastdp, vec!["sleeve"]);
        encrypted.overlay_note = Some("encryption".into());
        assert_eq!(encrypted.fastdp_line(), "disabled (encryption)");
        let asked_off = mode(BridgeType::Bridge, vec!["sleeve"]);
        assert_eq!(
            asked_off.fastdp_line(),
            "disabled (disabled by --no-fastdp)"
        );
        assert_eq!(
            overlay_features(&on.overlays)
                .get(OVERLAYS_FEATURE)
                .map(String::as_str),
            Some("fastdp sleeve")
        );
    }
}
