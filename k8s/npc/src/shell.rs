//! The thin I/O shell of the `weave-npc` binary: kube-rs watchers feed the
//! [`Core`]; its batches go to the [`Enforcer`]; a small HTTP server serves
//! Prometheus metrics.
//!
//! Watch events go through one channel to one thread that owns the core and
//! the netlink socket, so the kernel sees batches in event order. The first
//! full listing of Namespaces, Pods and NetworkPolicies is enforced in one
//! reset transaction (no flushed window); a watcher's relist (after a 410
//! Gone) deletes what the new listing no longer has. A batch the kernel
//! refuses is followed by a reset transaction of the whole ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::core::{Config, Core, Event, Object};
use crate::nft::{Enforcer, NftError};

/// What stops the controller.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// No Kubernetes client configuration (KUBECONFIG or in-cluster).
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The Kubernetes configuration could not be inferred.
    #[error("Kubernetes configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// nftables refused or the socket failed.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// The metrics listener.
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Bridged traffic would bypass our ip-family hooks.
    #[error(
        "net.bridge.bridge-nf-call-iptables is not 1 (or br_netfilter is not loaded): \
         bridged pod traffic would not be filtered; refusing to run"
    )]
    NoBrNetfilter,
    /// The event loop ended.
    #[error("the policy thread stopped")]
    Stopped,
}

/// Counters exported on /metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Policy parts we could not enforce (Weave's name).
    pub enforcement_errors: AtomicU64,
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Transactions the kernel refused.
    pub transaction_failures: AtomicU64,
    /// Watch events handled.
    pub events: AtomicU64,
    /// NetworkPolicies currently known.
    pub policies: AtomicU64,
    /// Pods currently known.
    pub pods: AtomicU64,
    /// Set elements found wrong (missing or extra) by the self-check.
    pub drift_elements: AtomicU64,
    /// Rebuilds made because of drift.
    pub drift_repairs: AtomicU64,
    /// Elements in our sets (after the last self-check).
    pub set_elements: AtomicU64,
    /// Seconds from receiving an event to its transaction's commit (last).
    pub last_enforcement_micros: AtomicU64,
    /// Dropped packets by (protocol, destination port), from NFLOG.
    pub blocked: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut out = String::from(
            "# HELP weavenpc_blocked_connections_total Connection attempts dropped by policy (from NFLOG).\n\
             # TYPE weavenpc_blocked_connections_total counter\n",
        );
        if let Ok(map) = self.blocked.lock() {
            for ((proto, dport), n) in map.iter() {
                out += &format!(
                    "weavenpc_blocked_connections_total{{protocol=\"{proto}\",dport=\"{dport}\"}} {n}\n"
                );
            }
        }
        let latency = self.last_enforcement_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let rows = [
            (
                "weavenpc_policy_enforcement_errors",
                "counter",
                "Policy parts that could not be enforced as written (their pods are isolated instead).",
                g(&self.enforcement_errors),
            ),
            (
                "weavenpc_transactions_total",
                "counter",
                "nftables transactions committed.",
                g(&self.transactions),
            ),
            (
                "weavenpc_transaction_failures_total",
                "counter",
                "nftables transactions the kernel refused.",
                g(&self.transaction_failures),
            ),
            (
                "weavenpc_events_total",
                "counter",
                "Watch events handled.",
                g(&self.events),
            ),
            (
                "weavenpc_policies",
                "gauge",
                "NetworkPolicies known.",
                g(&self.policies),
            ),
            ("weavenpc_pods", "gauge", "Pods known.", g(&self.pods)),
            (
                "weavenpc_drift_elements_total",
                "counter",
                "Set elements the self-check found wrong in the kernel.",
                g(&self.drift_elements),
            ),
            (
                "weavenpc_drift_repairs_total",
                "counter",
                "Ruleset rebuilds after drift.",
                g(&self.drift_repairs),
            ),
            (
                "weavenpc_set_elements",
                "gauge",
                "Elements in the controller's nftables sets (at the last self-check).",
                g(&self.set_elements),
            ),
            (
                "weavenpc_enforcement_latency_seconds",
                "gauge",
                "From receiving the last watch event to committing its transaction.",
                latency.to_string(),
            ),
        ];
        for (name, ty, help, value) in rows {
            out += &format!("# HELP {name} {help}\n# TYPE {name} {ty}\n{name} {value}\n");
        }
        out
    }
}

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The core's configuration (node name, bridge, multicast).
    pub core: Config,
    /// Where /metrics is served.
    pub metrics_addr: SocketAddr,
    /// Skip the br_netfilter check (for hosts that hook bridged traffic otherwise).
    pub skip_br_netfilter_check: bool,
    /// How often the kernel's sets are compared with what they must hold.
    pub self_check_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Pod,
    Policy,
}

enum Feed {
    Init(Kind),
    Apply(Kind, Object, bool),
    Delete(Kind, Object),
    InitDone(Kind),
    Blocked(crate::nflog::Blocked),
    SelfCheck,
}

fn key_of(o: &Object) -> (Option<String>, Option<String>) {
    let meta = match o {
        Object::Namespace(n) => &n.metadata,
        Object::Pod(p) => &p.metadata,
        Object::Policy(p) => &p.metadata,
    };
    (meta.namespace.clone(), meta.name.clone())
}

/// Runs the controller until a fatal error.
pub async fn run(settings: Settings) -> Result<(), ShellError> {
    if !settings.skip_br_netfilter_check && !crate::nft::bridge_nf_call_iptables().unwrap_or(false)
    {
        return Err(ShellError::NoBrNetfilter);
    }
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| ShellError::Metrics {
            addr: settings.metrics_addr,
            source,
        })?;
    let m = metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move { m.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server: {e}");
        }
    });

    let (tx, rx) = mpsc::unbounded_channel();
    spawn_watch(
        Api::<Namespace>::all(client.clone()),
        Kind::Namespace,
        |o| Object::Namespace(Box::new(o)),
        tx.clone(),
    );
    spawn_watch(
        Api::<Pod>::all(client.clone()),
        Kind::Pod,
        |o| Object::Pod(Box::new(o)),
        tx.clone(),
    );
    let tx_log = tx.clone();
    let tx_tick = tx.clone();
    let every = settings.self_check_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx_tick.send(Feed::SelfCheck).is_err() {
                return;
            }
        }
    });
    spawn_watch(
        Api::<NetworkPolicy>::all(client),
        Kind::Policy,
        |o| Object::Policy(Box::new(o)),
        tx,
    );
    let enforcer = Enforcer::open()?;
    match crate::nflog::Reader::open(crate::nflog::GROUP) {
        Ok(reader) => {
            let (m, tx) = (metrics.clone(), tx_log);
            std::thread::spawn(move || read_blocked(reader, &m, &tx));
        }
        Err(e) => tracing::error!(
            "NFLOG group {} unavailable, blocked connections will not be logged: {e}",
            crate::nflog::GROUP
        ),
    }
    let core = Core::new(settings.core);
    let worker = std::thread::spawn(move || policy_loop(rx, core, enforcer, &metrics));
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(Err(ShellError::Stopped))
}

/// Log lines about blocked connections per second, at most.
const BLOCKED_LOG_RATE: u32 = 20;

/// Counts every dropped packet; forwards at most [`BLOCKED_LOG_RATE`] a
/// second to the policy thread to be logged with pod names.
fn read_blocked(
    mut reader: crate::nflog::Reader,
    metrics: &Metrics,
    tx: &mpsc::UnboundedSender<Feed>,
) {
    let mut window = Instant::now();
    let mut sent = 0u32;
    let mut suppressed = 0u64;
    loop {
        let packets = match reader.read() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reading NFLOG: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for b in packets {
            let proto = match crate::spec::Protocol::from_number(b.proto) {
                Some(p) => p.to_string().to_lowercase(),
                None => b.proto.to_string(),
            };
            if let Ok(mut map) = metrics.blocked.lock() {
                *map.entry((proto, b.dport.unwrap_or(0))).or_default() += 1;
            }
            if window.elapsed() >= Duration::from_secs(1) {
                if suppressed > 0 {
                    tracing::warn!("{suppressed} more blocked connections not logged");
                }
                window = Instant::now();
                sent = 0;
                suppressed = 0;
            }
            if sent < BLOCKED_LOG_RATE {
                sent += 1;
                if tx.send(Feed::Blocked(b)).is_err() {
                    return;
                }
            } else {
                suppressed += 1;
            }
        }
    }
}

fn spawn_watch<K>(api: Api<K>, kind: Kind, wrap: fn(K) -> Object, tx: mpsc::UnboundedSender<Feed>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let feed = match ev {
                Ok(watcher::Event::Init) => Feed::Init(kind),
                Ok(watcher::Event::InitApply(o)) => Feed::Apply(kind, wrap(o), true),
                Ok(watcher::Event::InitDone) => Feed::InitDone(kind),
                Ok(watcher::Event::Apply(o)) => Feed::Apply(kind, wrap(o), false),
                Ok(watcher::Event::Delete(o)) => Feed::Delete(kind, wrap(o)),
                Err(e) => {
                    // The watcher retries by itself; back off a little.
                    tracing::warn!(?kind, "watch error: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if tx.send(feed).is_err() {
                return;
            }
        }
    });
}

fn policy_loop(
    mut rx: mpsc::UnboundedReceiver<Feed>,
    mut core: Core,
    mut enforcer: Enforcer,
    metrics: &Metrics,
) -> Result<(), ShellError> {
    type Key = (Option<String>, Option<String>);
    let mut known: BTreeMap<Kind, BTreeMap<Key, Object>> = BTreeMap::new();
    let mut relisting: BTreeMap<Kind, BTreeSet<Key>> = BTreeMap::new();
    let mut synced: BTreeSet<Kind> = BTreeSet::new();
    let mut started = false;
    while let Some(feed) = rx.blocking_recv() {
        let mut events = Vec::new();
        let received = Instant::now();
        match feed {
            Feed::SelfCheck => {
                if started {
                    self_check(&mut enforcer, &core, metrics);
                }
                continue;
            }
            Feed::Blocked(b) => {
                let name = |ip| {
                    core.pod_at(ip)
                        .map(|p| p.key.to_string())
                        .unwrap_or_else(|| format!("{ip}"))
                };
                let ingress = b.prefix.ends_with("ingress");
                let policies: Vec<String> = core
                    .isolated_by(b.saddr, b.daddr, ingress)
                    .iter()
                    .map(|k| k.to_string())
                    .collect();
                tracing::warn!(
                    src = %name(b.saddr),
                    dst = %name(b.daddr),
                    proto = b.proto,
                    dport = b.dport.unwrap_or(0),
                    "blocked: {} isolated by {:?} and no rule admits it",
                    if ingress { "destination's ingress" } else { "source's egress" },
                    policies
                );
                continue;
            }
            Feed::Init(kind) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                relisting.insert(kind, BTreeSet::new());
            }
            Feed::Apply(kind, obj, initial) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                let key = key_of(&obj);
                if initial && let Some(seen) = relisting.get_mut(&kind) {
                    seen.insert(key.clone());
                }
                known.entry(kind).or_default().insert(key, obj.clone());
                events.push(Event::Apply(obj));
            }
            Feed::Delete(kind, obj) => {
                metrics.events.fetch_add(1, Ordering::Relaxed);
                known.entry(kind).or_default().remove(&key_of(&obj));
                events.push(Event::Delete(obj));
            }
            Feed::InitDone(kind) => {
                let seen = relisting.remove(&kind).unwrap_or_default();
                let objs = known.entry(kind).or_default();
                let gone: Vec<Key> = objs
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(obj) = objs.remove(&k) {
                        events.push(Event::Delete(obj));
                    }
                }
                synced.insert(kind);
            }
        }
        for ev in events {
            let out = core.apply(ev);
            for e in &out.errors {
                metrics.enforcement_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    object = ?e.object.as_ref().map(|k| k.to_string()),
                    "cannot enforce as written, isolating the selected pods: {}",
                    e.error
                );
            }
            if started && !out.batch.is_empty() {
                commit(&mut enforcer, &core, &out.batch, metrics);
                let micros = received.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                metrics
                    .last_enforcement_micros
                    .store(micros, Ordering::Relaxed);
            }
        }
        let count = |k: Kind| known.get(&k).map(|m| m.len() as u64).unwrap_or(0);
        metrics
            .policies
            .store(count(Kind::Policy), Ordering::Relaxed);
        metrics.pods.store(count(Kind::Pod), Ordering::Relaxed);
        if !started && synced.len() == 3 {
            let batch = core.start();
            enforcer.apply(&batch)?;
            metrics.transactions.fetch_add(1, Ordering::Relaxed);
            started = true;
            tracing::info!(
                pods = count(Kind::Pod),
                policies = count(Kind::Policy),
                "initial ruleset enforced"
            );
        }
    }
    Err(ShellError::Stopped)
}

/// Compares every set in the kernel with what it must hold; on any
/// difference (an element missing or extra, a set gone) counts it and
/// rebuilds the whole ruleset in one transaction.
fn self_check(enforcer: &mut Enforcer, core: &Core, metrics: &Metrics) {
    let mut drift = 0u64;
    let mut total = 0u64;
    for (name, (kind, want)) in core.expected_sets() {
        total += want.len() as u64;
        match enforcer.set_elements(&name, kind) {
            Ok(Some(have)) => {
                let n = have.symmetric_difference(&want).count() as u64;
                if n > 0 {
                    tracing::error!(set = %name, missing = want.difference(&have).count(),
                        extra = have.difference(&want).count(), "kernel set drifted");
                }
                drift += n;
            }
            Ok(None) => {
                tracing::error!(set = %name, "kernel set missing");
                drift += want.len() as u64 + 1;
            }
            Err(e) => {
                tracing::error!(set = %name, "reading kernel set: {e}");
                return;
            }
        }
    }
    metrics.set_elements.store(total, Ordering::Relaxed);
    if drift > 0 {
        metrics.drift_elements.fetch_add(drift, Ordering::Relaxed);
        metrics.drift_repairs.fetch_add(1, Ordering::Relaxed);
        match enforcer.apply(&core.full()) {
            Ok(()) => {
                metrics.transactions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(drift, "ruleset rebuilt after drift");
            }
            Err(e) => {
                metrics.transaction_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("rebuild after drift refused: {e}");
            }
        }
    }
}

fn commit(enforcer: &mut Enforcer, core: &Core, batch: &crate::model::Batch, metrics: &Metrics) {
    match enforcer.apply(batch) {
        Ok(()) => {
            metrics.transactions.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            metrics.transaction_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("transaction refused, rebuilding the whole ruleset: {e}");
            match enforcer.apply(&core.full()) {
                Ok(()) => {
                    metrics.transactions.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.transaction_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("rebuild refused too: {e}");
                }
            }
        }
    }
}
