//! weave-kube: the Kubernetes node agent of weave-rs, the entrypoint of
//! the `weave-net` DaemonSet (Weave Net 2.8.1's `launch.sh`, `init.sh`
//! and `kube-utils` in one Rust binary).
//!
//! Layout: pure parts — [`config`] (the environment), [`nodes`] (peers
//! from Node objects), [`registry`] (Weave's ConfigMap registry),
//! [`netcheck`] (the range against host routes), [`start`] (how the router starts, without Weave's ring race) and
//! [`reclaim`] (registration and reclaim as a state machine) — and a thin
//! tokio shell: [`kube_api`] (the API calls), [`router_api`] (the local
//! router's HTTP API), [`run`] (the run mode) and [`init`] (the init
//! container).
//!
//! Crates: `kube` with `k8s-openapi` is the maintained Rust Kubernetes
//! client (typed objects, watchers that relist on 410 Gone, in-cluster and
//! kubeconfig configuration); the router's HTTP API is reached with the
//! small blocking client the CNI plugin already uses (`weave_cni::http`).

pub mod config;
pub mod init;
pub mod kube_api;
pub mod netcheck;
pub mod nodes;
pub mod reclaim;
pub mod registry;
pub mod router_api;
pub mod run;
pub mod start;
