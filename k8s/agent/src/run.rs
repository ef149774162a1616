//! `weave-kube run`: the DaemonSet's main container. A thin tokio shell
//! around the pure parts:
//!
//! 1. Find this router's peer name (`weave-router print-peer-name`) and
//!    this Node (its UID).
//! 2. If this router's data belongs to a registered peer that the
//!    registry no longer lists, another peer reclaimed it: delete the data
//!    so it starts fresh instead of clashing with the ring.
//! 3. Register in the registry, then decide the peers and how the ring
//!    starts ([`crate::start`]), waiting while that says so.
//! 4. Start `weave-router` as a child (the password in its environment),
//!    wait for its API, run a reclaim, expose the bridge and set the Node
//!    condition `NetworkUnavailable=False` (reason `WeaveIsUp`).
//! 5. Watch Nodes: keep the router's peer list equal to the other Nodes'
//!    addresses (`POST /connect?replace=true`); run a reclaim after a Node
//!    is deleted (after a random 0–5 s, so agents do not all contend at
//!    once) and every `reclaim_period` (deletions missed while no agent
//!    ran). Every reclaim is recorded as a Kubernetes Event.
//! 6. Exit with the router's status when it exits; pass SIGTERM/SIGINT on.
//!
//! No API failure is fatal after start: each call is retried with backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;
use crate::kube_api::KubeApi;
use crate::nodes::{NodeInfo, node_info, peer_addresses};
use crate::reclaim::{Input, Note, Reclaim, Request};
use crate::router_api::RouterApi;
use crate::start::{Me, Start, StartInputs, decide};

/// Options of the run mode that are not Weave's environment.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `weave-router` executable.
    pub router_bin: PathBuf,
    /// How often the registry is diffed against the Nodes.
    pub reclaim_period: Duration,
    /// Seed of the agent's randomness (jitter); from the clock normally.
    pub seed: u64,
}

/// This host's IPv4 addresses.
pub fn local_addresses() -> BTreeSet<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return BTreeSet::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect()
}

/// Asks `weave-router` which peer name it will use.
pub async fn print_peer_name(router_bin: &Path, config: &Config) -> Result<String> {
    let out = tokio::process::Command::new(router_bin)
        .arg(format!("--db-prefix={}", config.db_prefix.display()))
        .arg("print-peer-name")
        .output()
        .await
        .with_context(|| format!("running {} print-peer-name", router_bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} print-peer-name failed: {}",
            router_bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        bail!("{} print-peer-name printed nothing", router_bin.display());
    }
    Ok(name)
}

/// Runs one registration-or-reclaim machine to its end against the API
/// and the router; returns its notes (also logged and, for reclaims,
/// recorded as Events).
pub async fn drive(
    mut machine: Reclaim,
    kube: &mut KubeApi,
    router: &RouterApi,
    me: &Me,
) -> Vec<Note> {
    let mut all = Vec::new();
    let mut out = machine.start();
    loop {
        for note in &out.notes {
            log_note(note);
            if let Note::Reclaimed {
                victim,
                node,
                result,
            } = note
            {
                let message = format!(
                    "peer {victim} of Node {node} reclaimed by peer {} on Node {}: {result}",
                    me.peer, me.node
                );
                if let Err(error) = kube.record_event("PeerReclaimed", &message, &me.node).await {
                    warn!(?error, "recording the reclaim as an Event");
                }
            }
        }
        all.append(&mut out.notes);
        let input = match &out.request {
            Request::Done => return all,
            Request::ReadRegistry => Input::Registry(kube.read_registry().await),
            Request::ListNodes => Input::Nodes(kube.list_nodes().await),
            Request::WriteRegistry(reg) => Input::Written(kube.write_registry(reg.clone()).await),
            Request::RmPeer(victim) => {
                Input::RmPeer(router.rmpeer(victim).await.map_err(|e| e.to_string()))
            }
            Request::Sleep(after) => {
                tokio::time::sleep(*after).await;
                Input::Woke
            }
        };
        out = machine.step(input);
    }
}

fn log_note(note: &Note) {
    match note {
        Note::Registered => info!("registered in kube-system/weave-net"),
        Note::Reclaimed {
            victim,
            node,
            result,
        } => info!(%victim, %node, %result, "reclaimed the address space of a removed peer"),
        Note::LockedByOther { victim, holder } => {
            info!(%victim, %holder, "another peer is reclaiming")
        }
        Note::Retrying { what, error, after } => {
            warn!(%what, %error, ?after, "failed; retrying")
        }
        Note::Unreadable(error) => warn!(%error, "registry unreadable; reclaim skipped"),
    }
}

/// Retries `call` with exponential backoff (1 s to 30 s) until it succeeds.
async fn retry<T, E: std::fmt::Debug, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut wait = Duration::from_secs(1);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) => {
                warn!(%what, ?error, ?wait, "failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow!("removing {}: {e}", path.display())),
    }
}

/// The run mode.
pub async fn run(config: Config, options: RunOptions) -> Result<i32> {
    let node_name = config.require_node_name()?.to_string();
    let routes = crate::netcheck::parse_routes(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
    );
    if let Some(route) = crate::netcheck::overlap(config.ipalloc_range, &routes, "weave") {
        bail!(
            "IPALLOC_RANGE {} overlaps the host's route to {} via {}: choose another range",
            config.ipalloc_range,
            route.dest,
            route.iface
        );
    }
    let client = kube::Client::try_default()
        .await
        .context("configuring the Kubernetes client (KUBECONFIG or in-cluster)")?;
    let mut kube = KubeApi::new(client);
    let router = RouterApi::new(&config.http_addr.to_string());
    let mut rng = StdRng::seed_from_u64(options.seed);

    let peer = print_peer_name(&options.router_bin, &config).await?;
    let my_node: NodeInfo = retry("reading this Node", || {
        let kube = kube.clone();
        let name = node_name.clone();
        async move {
            match kube.node(&name).await {
                Ok(Some(node)) => Ok(node),
                Ok(None) => Err(format!("Node {name} not found")),
                Err(e) => Err(format!("{e:?}")),
            }
        }
    })
    .await;
    let me = Me {
        peer: peer.clone(),
        node: node_name.clone(),
        node_uid: my_node.uid.clone(),
    };
    info!(peer = %me.peer, node = %me.node, uid = ?me.node_uid, "weave-kube starting");
    let local = local_addresses();

    // Restart safety: reclaimed while away → fresh state.
    let before = retry("reading the registry", || {
        let mut kube = kube.clone();
        async move { kube.read_registry().await }
    })
    .await;
    let marker = config.registered_marker();
    // An unreadable list reclaims nobody: keep the data.
    let reclaimed = before.peers().is_ok_and(|list| {
        crate::start::was_reclaimed(config.db_file().exists(), marker.exists(), &list, &peer)
    });
    if reclaimed {
        warn!(
            data = %config.db_file().display(),
            "this peer was reclaimed by another while it was down: starting with fresh IPAM data"
        );
        remove_if_exists(&config.db_file())?;
        remove_if_exists(&weave_router::daemon::persist::targets_path(
            &config.db_prefix,
        ))?;
    }
    // Register before the router starts, so routers starting together
    // count each other in (see `start`).
    let registration =
        Reclaim::new(me.clone(), true, StdRng::seed_from_u64(rng.r#gen())).register_only();
    drive(registration, &mut kube, &router, &me).await;

    let (peers, ipalloc_init) = loop {
        let registry = retry("reading the registry", || {
            let mut kube = kube.clone();
            async move { kube.read_registry().await }
        })
        .await;
        let nodes = retry("listing Nodes", || {
            let kube = kube.clone();
            async move { kube.list_nodes().await }
        })
        .await;
        let list = registry.peers().unwrap_or_default();
        if list.contains(&peer) && !marker.exists() {
            if let Some(dir) = marker.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&marker, format!("{peer}\n"))
                .with_context(|| format!("writing {}", marker.display()))?;
        }
        let inputs = StartInputs {
            me: &me,
            nodes: &nodes,
            local: &local,
            registry: &list,
            configured_init: config.ipalloc_init.as_deref(),
            configured_peers: config.kube_peers.as_deref(),
            have_data: false,
            registered_before: false,
        };
        match decide(&inputs) {
            Start::Run {
                peers,
                ipalloc_init,
                ..
            } => break (peers, ipalloc_init),
            Start::Wait { reason } => {
                info!(%reason, "not starting the router yet");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };

    let args = config.router_args(&peer, &ipalloc_init, &peers);
    info!(router = %options.router_bin.display(), ?args, "starting weave-router");
    let mut command = tokio::process::Command::new(&options.router_bin);
    command.args(&args).kill_on_drop(true);
    match &config.password {
        Some(password) => command.env("WEAVE_PASSWORD", password.expose()),
        None => command.env_remove("WEAVE_PASSWORD"),
    };
    command.env_remove("WEAVE_PASSWORD_FILE");
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", options.router_bin.display()))?;
    let child_pid = child.id();

    // Wait for the API (or the router's early exit).
    loop {
        if router.is_up().await {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("weave-router exited before its API came up: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    info!("weave-router is up");

    // Reclaims: one worker, triggers coalesced.
    let (trigger, mut triggers) = mpsc::unbounded_channel::<Duration>();
    {
        let mut kube = kube.clone();
        let router = router.clone();
        let mut me = me.clone();
        let mut rng = StdRng::seed_from_u64(rng.r#gen());
        tokio::spawn(async move {
            while let Some(delay) = triggers.recv().await {
                tokio::time::sleep(delay).await;
                while triggers.try_recv().is_ok() {}
                // A Node recreated under this name has a new UID: the
                // registration (first step of the run) records it.
                if let Ok(Some(node)) = kube.node(&me.node).await {
                    me.node_uid = node.uid;
                }
                let machine = Reclaim::new(me.clone(), true, StdRng::seed_from_u64(rng.r#gen()));
                drive(machine, &mut kube, &router, &me).await;
            }
        });
    }
    let _ = trigger.send(Duration::ZERO);

    // Peers: one worker applying the latest wanted list.
    let (want_peers, mut wanted) = watch::channel(peers.clone());
    {
        let router = router.clone();
        tokio::spawn(async move {
            let mut applied: Option<Vec<String>> = Some(wanted.borrow().clone());
            loop {
                let want = wanted.borrow_and_update().clone();
                if applied.as_ref() != Some(&want) {
                    match router.replace_peers(&want).await {
                        Ok(()) => {
                            info!(peers = ?want, "router peers replaced");
                            applied = Some(want);
                        }
                        Err(error) => {
                            warn!(%error, "replacing the router's peers; retrying");
                            applied = None;
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            continue;
                        }
                    }
                }
                if wanted.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    // Expose the bridge, then tell Kubernetes the network is up.
    {
        let kube = kube.clone();
        let router = router.clone();
        let expose = config.expose;
        let range = config.ipalloc_range;
        let node = node_name.clone();
        tokio::spawn(async move {
            let addr = retry("exposing the bridge", || router.expose(expose, range)).await;
            info!(%addr, "bridge exposed");
            retry("setting NetworkUnavailable=False", || {
                kube.set_network_available(&node)
            })
            .await;
            info!("Node condition NetworkUnavailable=False (WeaveIsUp) set");
        });
    }

    let nodes_api: kube::Api<Node> = kube::Api::all(kube.client().clone());
    let mut events = Box::pin(watcher(nodes_api, watcher::Config::default()));
    let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, NodeInfo>> = None;
    let mut my_uid = me.node_uid.clone();
    let mut period = tokio::time::interval(options.reclaim_period);
    period.tick().await;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let publish = |nodes: &BTreeMap<String, NodeInfo>| {
        if config.kube_peers.is_some() {
            return;
        }
        let list: Vec<NodeInfo> = nodes.values().cloned().collect();
        let peers: Vec<String> = peer_addresses(&list, &node_name, &local)
            .iter()
            .map(ToString::to_string)
            .collect();
        want_peers.send_if_modified(|old| {
            if *old == peers {
                false
            } else {
                *old = peers;
                true
            }
        });
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                warn!(%status, "weave-router exited");
                return Ok(status.code().unwrap_or(1));
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = period.tick() => {
                let _ = trigger.send(Duration::ZERO);
            }
            event = events.next() => {
                match event {
                    None => bail!("the Node watch ended"),
                    Some(Err(error)) => warn!(%error, "watching Nodes (the watcher retries)"),
                    Some(Ok(watcher::Event::Init)) => init = Some(BTreeMap::new()),
                    Some(Ok(watcher::Event::InitApply(node))) => {
                        if let (Some(map), Some(info)) = (init.as_mut(), node_info(&node)) {
                            map.insert(info.name.clone(), info);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(map) = init.take() {
                            let lost = nodes.keys().any(|k| !map.contains_key(k));
                            nodes = map;
                            publish(&nodes);
                            if lost {
                                let _ = trigger.send(Duration::from_millis(rng.gen_range(0..5000)));
                            }
                        }
                    }
                    Some(Ok(watcher::Event::Apply(node))) => {
                        if let Some(info) = node_info(&node) {
                            // This Node recreated: register its new UID at once.
                            if info.name == node_name && info.uid != my_uid {
                                my_uid = info.uid.clone();
                                let _ = trigger.send(Duration::ZERO);
                            }
                            nodes.insert(info.name.clone(), info);
                            publish(&nodes);
                        }
                    }
                    Some(Ok(watcher::Event::Delete(node))) => {
                        if let Some(name) = node.metadata.name {
                            info!(node = %name, "Node deleted");
                            nodes.remove(&name);
                            publish(&nodes);
                            let _ = trigger.send(Duration::from_millis(rng.gen_range(0..5000)));
                        }
                    }
                }
            }
        }
    }
    info!("stopping weave-router");
    if let Some(pid) = child_pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(status) => Ok(status?.code().unwrap_or(0)),
        Err(_) => {
            child.kill().await?;
            Ok(1)
        }
    }
}
