//! A Kubernetes API server **test double**.
//!
//! No real API server can be installed on the machines weave-rs is tested
//! on (Debian, PyPI, npm and crates.io ship none), so the tests and the lab
//! run this one: a real HTTP server that kube-rs and kubectl talk to, for
//! core/v1 Nodes, Namespaces, Pods (with `status`), ConfigMaps, Events,
//! events.k8s.io/v1 Events and networking.k8s.io/v1 NetworkPolicies. It is
//! strict where the real one is strict: objects are decoded with the real
//! types (k8s-openapi) and validated, stale resourceVersions get 409,
//! missing objects 404, invalid ones 422, too-old watches 410, and errors
//! carry the real server's `Status` bodies. It can inject faults (drop
//! watches, force a 409, stall, restart losing watch history).
//!
//! The store ([`store::Store`]) is sans-IO: objects, the resourceVersion
//! counter, the watch history, selectors and patches, all plain data. The
//! HTTP shell (axum, already the router's HTTP stack) is thin.

pub mod discovery;
pub mod error;
mod http;
pub mod patch;
pub mod resource;
pub mod selector;
pub mod store;
pub mod validate;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

pub use http::Config;

/// A running API server double. Dropping it stops it.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<http::Shared>,
    addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves on already bound listeners (see [`listen_in_netns`]).
    pub fn serve(listeners: Vec<TcpListener>, config: Config) -> std::io::Result<ApiServer> {
        let shared = Arc::new(http::Shared::new(config));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for listener in listeners {
            listener.set_nonblocking(true)?;
            addrs.push(listener.local_addr()?);
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = http::router(shared.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("API server listener failed: {e}");
                }
            }));
        }
        Ok(ApiServer {
            shared,
            addrs,
            tasks,
        })
    }

    /// Serves on `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr, config: Config) -> std::io::Result<ApiServer> {
        ApiServer::serve(vec![TcpListener::bind(addr)?], config)
    }

    /// The addresses served, in the order given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `http://` URL of the first address.
    pub fn url(&self) -> String {
        self.addrs
            .first()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.resource_version()
    }

    /// Ends every open watch (clients resume from their last version).
    pub fn drop_watches(&self) {
        self.shared.drop_watches();
    }

    /// The next `count` PUT/PATCH/DELETE requests fail with 409 Conflict.
    pub fn conflict_next(&self, count: u32) {
        self.shared.conflict_next(count);
    }

    /// The next `count` requests wait `delay` before being served.
    pub fn stall_next(&self, delay: Duration, count: u32) {
        self.shared.stall_next(delay, count);
    }

    /// Acts as a restart over compacted storage: watches end and resuming
    /// from any earlier resourceVersion gets 410 Gone.
    pub fn restart(&self) {
        self.shared.restart();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `addr` inside the network namespace `/run/netns/<netns>` (the
/// socket stays in that namespace; the calling thread does not move).
pub fn listen_in_netns(netns: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                TcpListener::bind(addr)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("netns bind thread panicked")))
    })
}

/// A kubeconfig for `server` (an `http://` URL), for kubectl and kube-rs.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: weave-double\n  cluster:\n    server: {server}\ncontexts:\n- name: weave-double\n  context:\n    cluster: weave-double\n    user: weave-double\n    namespace: default\ncurrent-context: weave-double\nusers:\n- name: weave-double\n  user: {{}}\npreferences: {{}}\n"
    )
}
