//! The router task: the one place that owns the sans-IO cores.
//!
//! Sockets and HTTP handlers send it [`Event`]s over a channel; it feeds
//! them to the cores with the current time, sleeps until the cores' next
//! timeout, and carries out what the cores ask for (write bytes, close a
//! connection, dial an address). Each TCP connection has a reader task and
//! a writer task that only move bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::persist;
use super::status::Snapshot;
use crate::mesh::connection_maker::DirectPeer;
use crate::mesh::router::{ConnHandle, MeshRouter, Output};
use crate::overlay::dataplane::OverlayEvent;
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
        }
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
        loop {
            let deadline = self.mesh.poll_timeout();
            let event = match deadline {
                Some(deadline) => {
                    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
                    tokio::select! {
                        event = queue.recv() => event,
                        () = sleep => {
                            self.mesh.handle_timeout(Instant::now());
                            self.drain();
                            continue;
                        }
                    }
                }
                None => queue.recv().await,
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
                let failed = self.overlay.as_ref().and_then(|o| o.on_event(event, &mut self.mesh, now));
                if let Some((conn, reason)) = failed {
                    self.handle(Event::Closed(conn, reason));
                }
            }
        }
    }

    fn control(&mut self, control: Control, now: Instant) {
        match control {
            Control::Status(reply) => {
                let snapshot = Snapshot {
                    version: self.version.clone(),
                    mesh: self.mesh.status(now),
                    counters: self.mesh.counters(),
                    overlay: self.overlay.as_ref().map(Overlay::status).unwrap_or_default(),
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
                let _ = reply.send(());
            }
            Control::Forget { peers, reply } => {
                self.mesh.forget_connections(&peers, now);
                self.save_targets();
                let _ = reply.send(());
            }
        }
    }

    /// Carries out everything the mesh asked for.
    fn drain(&mut self) {
        while let Some(output) = self.mesh.poll_output() {
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
