//! The `weave-router` daemon: the tokio shell around the sans-IO cores.
//!
//! [`run`] reads the configuration, builds the cores with an RNG seeded
//! from the OS (the seed is logged, so a run can be replayed in the
//! simulator), binds the mesh listener and the HTTP interfaces, and hands
//! everything to the router task ([`actor::RouterTask`]).

pub mod actor;
pub mod config;
pub mod host_rules;
pub mod http;
pub mod identity;
pub mod ipam;
pub mod ipam_store;
pub mod pending;
pub mod persist;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use ipnet::IpNet;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::mesh::codec::GobCodec;
use crate::mesh::identity::PeerName;
use crate::mesh::router::{MeshConfig, MeshRouter};
use actor::{Event, RouterTask};
use config::{Action, Options};
use ipam_store::IpamStore;

use crate::ipam::Cidr;

/// Our version, as `/status` shows it.
pub const VERSION: &str = concat!("weave-rs ", env!("CARGO_PKG_VERSION"));

/// `weave-router reset`: removes the bridge, the datapath, weave's veths
/// and the host firewall rules.
/// `weave-router install-cni`: copies the plugins (from `from`, or the
/// directory of this executable) and writes the network configuration.
fn install_cni(
    from: Option<&std::path::Path>,
    plugin_dir: &std::path::Path,
    conf_dir: &std::path::Path,
) -> Result<()> {
    let from = match from {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_exe()
            .context("finding this executable")?
            .parent()
            .map(std::path::Path::to_path_buf)
            .context("this executable has no directory")?,
    };
    weave_cni::install::install(plugin_dir, conf_dir, &from)
        .map_err(|error| anyhow!("installing the CNI plugins: {error}"))?;
    info!(
        from = %from.display(),
        plugins = %plugin_dir.display(),
        conf = %conf_dir.display(),
        "installed weave-net, weave-ipam and 10-weave.conflist"
    );
    println!(
        "installed weave-net and weave-ipam in {} and 10-weave.conflist in {}",
        plugin_dir.display(),
        conf_dir.display()
    );
    Ok(())
}

fn reset(options: &Options, name: PeerName) -> Result<()> {
    use crate::net::datapath::{DatapathOps, probe_openvswitch};
    use crate::net::odp_datapath::OdpDatapath;
    use crate::net::plan::OdpSupport;

    let config = options.bridge_config(crate::net::link::MacAddr(name.to_bytes()));
    let mut rtnl = crate::net::rtnl::Rtnl::open().context("opening rtnetlink")?;
    let mut driver = match probe_openvswitch() {
        OdpSupport::Available => Some(
            OdpDatapath::connect(odp::handle::DatapathOptions::default())
                .map_err(|error| anyhow!("{error}"))?,
        ),
        OdpSupport::Missing(_) => None,
    };
    let report = crate::net::teardown::reset(
        &mut rtnl,
        driver.as_mut().map(|d| d as &mut dyn DatapathOps),
        &config,
        &host_rules::reset_config(options),
    )
    .context("reset")?;
    for removed in &report.removed {
        println!("removed {removed}");
    }
    for (name, kind) in &report.left {
        println!("left {name} alone: it is of type {kind}, which weave does not create");
    }
    Ok(())
}

/// Runs `weave-router` with parsed options until it is stopped.
pub fn run(options: Options) -> Result<()> {
    if let Some(Action::InstallCni {
        from,
        plugin_dir,
        conf_dir,
    }) = &options.command
    {
        return install_cni(from.as_deref(), plugin_dir, conf_dir);
    }
    let name = match &options.name {
        Some(name) => name
            .parse::<PeerName>()
            .map_err(|error| anyhow!("--name: {error}"))?,
        None => identity::default_name(&options.weave_bridge).map_err(|error| anyhow!(error))?,
    };
    match options.command {
        Some(Action::PrintPeerName) => {
            println!("{name}");
            return Ok(());
        }
        Some(Action::Reset) => return reset(&options, name),
        Some(Action::InstallCni { .. }) | None => {}
    }
    if options.resume && !options.peers.is_empty() {
        return Err(anyhow!(
            "--resume reconnects to the peers of the last run: do not also give peers"
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(options, name))
}

async fn serve(options: Options, name: PeerName) -> Result<()> {
    let nickname = options
        .nickname
        .clone()
        .unwrap_or_else(identity::default_nickname);
    let http_addr = options.http_addr().map_err(|error| anyhow!(error))?;
    let status_addr = options.status_addr().map_err(|error| anyhow!(error))?;
    let metrics_addr = options.metrics_addr().map_err(|error| anyhow!(error))?;

    let mut config = MeshConfig::new(name, &nickname);
    config.port = options.port;
    config.password = options.password.clone().map(String::into_bytes);
    config.conn_limit = options.conn_limit as usize;
    config.peer_discovery = !options.no_discovery;
    config.trusted_subnets = options
        .trusted_subnets
        .iter()
        .map(|net| IpNet::V4(*net))
        .collect();
    // Every listening socket follows --host (the sleeve is IPv4 only).
    let sleeve_host = match options.host {
        None => Ipv4Addr::UNSPECIFIED,
        Some(IpAddr::V4(host)) => host,
        Some(IpAddr::V6(host)) => {
            return Err(anyhow!(
                "--host {host}: the sleeve runs over IPv4; give an IPv4 address"
            ));
        }
    };
    // The data plane first: the bridge type decides the overlays offered.
    let (events, queue) = mpsc::unbounded_channel();
    let overlay_events = events.clone();
    let overlay = crate::overlay::runtime::start(
        crate::overlay::runtime::StartConfig {
            ourself: name,
            bridge: options.bridge_config(crate::net::link::MacAddr(name.to_bytes())),
            port: options.port,
            host: sleeve_host,
            encrypted: options.password.is_some(),
            proactive_flows: !options.no_proactive_flows,
        },
        Box::new(move |event| {
            let _ = overlay_events.send(Event::Overlay(event));
        }),
    )
    .await
    .context("starting the data plane")?;
    info!(fastdp = %overlay.mode().fastdp_line(), "data plane mode");
    // The bridge exists now: the host rules can name it. They go in in the
    // background (iptables can take tens of seconds on a slow machine).
    let host_options = options.clone();
    let host_rules = tokio::task::spawn_blocking(move || host_rules::HostRules::new(&host_options))
        .await
        .context("setting up the host firewall rules")??;
    let host_rules = std::sync::Arc::new(host_rules);
    let host_rules_task = tokio::spawn(host_rules::HostRules::run(host_rules.clone()));
    // The overlays establish connections (not the handshake).
    config.overlay_features = overlay.features();
    config.auto_establish = false;
    if config.password.is_some() {
        info!("communication between peers via untrusted networks is encrypted");
    } else {
        info!("communication between peers is unencrypted");
    }

    let seed: u64 = rand::random();
    info!(%name, %nickname, seed, "starting {VERSION}");
    let rng = StdRng::seed_from_u64(seed);
    let mesh = MeshRouter::new(config, Box::new(GobCodec), rng, Instant::now());

    // The allocator, with whatever the store kept from earlier runs.
    let universe = Cidr::parse(&options.ipalloc_range.to_string())
        .map_err(|error| anyhow!("--ipalloc-range: {error}"))?;
    let default_subnet = match options.ipalloc_default_subnet {
        Some(subnet) => Cidr::parse_subnet(&subnet.to_string())
            .map_err(|error| anyhow!("--ipalloc-default-subnet: {error}"))?,
        None => universe,
    };
    let (ipam_store, persisted) = IpamStore::open(&ipam_store::store_path(&options.db_prefix))?;
    let clock = ipam::Clock::new();
    let ipam_config = crate::ipam::Config {
        our_name: ipam::ipam_name(name),
        our_uid: mesh.peers().ourself().uid.0,
        our_nickname: nickname.clone(),
        universe,
        mode: ipam::parse_init_mode(options.ipalloc_init.as_deref()).map_err(|e| anyhow!(e))?,
        target_count: u32::try_from(options.peers.len()).unwrap_or(u32::MAX),
        pre_claims: Vec::new(),
        rng_seed: seed,
    };
    let (allocator, startup) =
        crate::ipam::Allocator::new(ipam_config, persisted, clock.wall(Instant::now()))
            .map_err(|error| anyhow!("IP allocation: {error}"))?;
    let ipam_channel = ipam::IpamChannel::new(allocator, clock, startup);

    // Releases the CNI plugin left while we were down go first: queued
    // before the HTTP API can take an allocation.
    let pending_dir = weave_cni::pending::PendingDir::new(&options.pending_release_dir);
    match pending::queue(&pending_dir, &events).await {
        Ok(Some(queued)) => {
            tokio::spawn(pending::finish(queued));
        }
        Ok(None) => {}
        Err(error) => warn!(%error, "draining deferred releases at start"),
    }
    tokio::spawn(pending::drain_forever(pending_dir, events.clone()));

    let bind_ip = options.host.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let listener = TcpListener::bind(SocketAddr::new(bind_ip, options.port))
        .await
        .with_context(|| format!("listening on TCP port {}", options.port))?;

    tokio::spawn(actor::accept_loop(listener, events.clone()));
    if let Some(addr) = http_addr {
        let router = http::api_router(events.clone(), default_subnet, Some(host_rules.clone()));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HTTP API to {addr}"))?;
        info!(%addr, "HTTP API listening");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                warn!(%error, "HTTP API stopped");
            }
        });
    }
    if let Some(addr) = status_addr {
        let router = http::status_router(events.clone(), default_subnet, Some(host_rules.clone()));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the status interface to {addr}"))?;
        info!(%addr, "status interface listening");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                warn!(%error, "status interface stopped");
            }
        });
    }

    if let Some(addr) = metrics_addr {
        let router = http::metrics_router(events.clone(), default_subnet);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics interface to {addr}"))?;
        info!(%addr, "metrics interface listening");
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                warn!(%error, "metrics interface stopped");
            }
        });
    }

    let targets_file = persist::targets_path(&options.db_prefix);
    let initial = if options.resume {
        let saved = persist::load_targets(&targets_file)?;
        info!(peers = ?saved, "resuming connections to the peers of the last run");
        saved
    } else {
        options.peers.clone()
    };
    // Sent even when empty: it records this run's peers for a later --resume.
    match http::resolve_all(&initial).await {
        Ok(peers) => {
            let (reply, _done) = tokio::sync::oneshot::channel();
            let control = actor::Control::Connect {
                peers,
                replace: true,
                reply,
            };
            let _ = events.send(Event::Control(control));
        }
        Err(errors) => return Err(anyhow!("initial peers: {}", errors.join("; "))),
    }

    let task = RouterTask::new(mesh, VERSION.to_string(), events)
        .persist_targets(targets_file)
        .with_overlay(overlay)
        .with_ipam(ipam_channel, ipam_store)?;
    tokio::select! {
        () = task.run(queue) => {}
        _ = tokio::signal::ctrl_c() => info!("interrupted: stopping"),
        () = terminated() => info!("terminated: stopping"),
    }
    host_rules_task.abort();
    let _ = tokio::task::spawn_blocking(move || host_rules.stop()).await;
    Ok(())
}

/// Resolves when SIGTERM arrives.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
