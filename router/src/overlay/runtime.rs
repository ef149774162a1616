//! The control plane's handle on the data plane: bridge set-up, starting
//! the thread, and the small calls the router task makes.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::{info, warn};

use super::dataplane::{
    Command, ConnOverlayStatus, ConnSpec, Dataplane, LOCAL_OVERLAYS, OverlayEvent, Sockets,
    StatusMap,
};
use super::sockets::{PMTUDISC_DO, PMTUDISC_DONT, PacketSocket, UdpSocket, Waker};
use super::switching::RouteTable;
use crate::mesh::codec::Features;
use crate::mesh::identity::PeerName;
use crate::mesh::router::{ConnHandle, MeshRouter, Output};
use crate::mesh::wire::ProtocolTag;
use crate::net::ethtool;
use crate::net::link::MacAddr;
use crate::net::plan::{BRIDGE_IF, BridgeConfig, BridgePlan, OdpSupport, PCAP_IF};
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

/// Sets up the weave bridge in Bridge mode (blocking: run it with
/// `spawn_blocking`), with checksums and segmentation done by the kernel
/// before frames reach the capture end (see the module docs).
pub fn setup_bridge(
    name: PeerName,
    bridge: &str,
    mtu: Option<u32>,
) -> Result<BridgePlan, StartError> {
    let mut rtnl = Rtnl::open().map_err(|e| StartError::Rtnl(e.to_string()))?;
    let sysctl = Sysctl::new("/proc");
    let mut config = BridgeConfig::new(MacAddr(name.to_bytes()));
    config.weave_bridge = bridge.to_string();
    config.no_fastdp = true;
    config.mtu = mtu;
    let odp = OdpSupport::Missing("the fastdp data plane is not built yet".into());
    let plan = ensure_bridge(&mut rtnl, &sysctl, None, &config, &odp)?;
    match ethtool::tx_checksum(BRIDGE_IF) {
        Ok(true) => {
            if let Err(error) = ethtool::tx_checksum_off(BRIDGE_IF) {
                warn!(%error, "could not turn tx checksum offload off on {BRIDGE_IF}; completing checksums in userspace");
            }
        }
        Ok(false) => {}
        Err(error) => warn!(%error, "reading tx checksum offload of {BRIDGE_IF}"),
    }
    Ok(plan)
}

/// Sets up the bridge (on a blocking thread) and starts the data plane:
/// what the daemon runs at start-up in Bridge mode.
pub async fn start_bridge_mode(
    ourself: PeerName,
    bridge: String,
    mtu: Option<u32>,
    port: u16,
    events: Box<dyn Fn(OverlayEvent) + Send>,
) -> Result<Overlay, StartError> {
    let plan = tokio::task::spawn_blocking(move || setup_bridge(ourself, &bridge, mtu))
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
    info!(
        bridge = %plan.bridge,
        bridge_type = %plan.bridge_type,
        mtu = plan.mtu,
        "bridge ready"
    );
    Overlay::start(ourself, port, events)
}

/// The features the overlay adds to the mesh handshake.
pub fn overlay_features() -> Features {
    let mut features = Features::new();
    features.insert(
        OVERLAYS_FEATURE.to_string(),
        overlays_feature(LOCAL_OVERLAYS),
    );
    features
}

/// The running data plane, as the router task holds it.
pub struct Overlay {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    status: StatusMap,
    thread: Option<JoinHandle<()>>,
    fingerprint: Vec<(PeerName, u64, u64)>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").finish_non_exhaustive()
    }
}

impl Overlay {
    /// Opens the capture socket on `vethwe-pcap` and the sleeve sockets
    /// on UDP `port`, and starts the data-plane thread for peer `ourself`.
    /// `events` is called from that thread.
    pub fn start(
        ourself: PeerName,
        port: u16,
        events: Box<dyn Fn(OverlayEvent) + Send>,
    ) -> Result<Overlay, StartError> {
        let sockets = Sockets {
            capture: PacketSocket::open(PCAP_IF).map_err(|source| StartError::Socket {
                what: "capture socket on vethwe-pcap",
                source,
            })?,
            udp: UdpSocket::bind(port, PMTUDISC_DONT).map_err(|source| StartError::Socket {
                what: "sleeve UDP socket",
                source,
            })?,
            udp_df: UdpSocket::bind(port, PMTUDISC_DO).map_err(|source| StartError::Socket {
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
        let dataplane = Dataplane::new(
            ourself,
            sockets,
            waker.clone(),
            queue,
            events,
            status.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("sleeve".into())
            .spawn(move || dataplane.run())
            .map_err(|source| StartError::Socket {
                what: "data-plane thread",
                source,
            })?;
        info!(port, "sleeve data plane capturing on {PCAP_IF}");
        Ok(Overlay {
            commands,
            waker,
            status,
            thread: Some(thread),
            fingerprint: Vec::new(),
        })
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
        let routes = mesh.routes().clone();
        let table = RouteTable::from_mesh(mesh.peers(), &routes);
        self.send(Command::Routes(table));
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
