//! The weave-rs CNI plugins, `weave-net` and `weave-ipam`, for CNI spec
//! 1.1.0 (and the 0.3.0–1.0.0 layouts).
//!
//! Both binaries follow the CNI protocol: the command in `CNI_COMMAND`, the
//! network configuration on stdin, a JSON result (or the spec's error
//! object, with a non-zero exit) on stdout, logs on stderr. Addresses come
//! from weave-router's IPAM over its HTTP API (`WEAVE_HTTP_ADDR`, default
//! 127.0.0.1:6784); `weave-net` puts the container on the router's Linux
//! bridge through a veth pair named as Weave named them.

pub mod attach;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod fuzz;
pub mod http;
pub mod install;
pub mod ipam;
pub mod netns;
pub mod pending;
pub mod plugin;
pub mod result;
pub mod router;
pub mod rtnl;
pub mod sys;
pub mod version;

pub use error::{CniError, Code};
pub use plugin::{Plugin, invoke};
