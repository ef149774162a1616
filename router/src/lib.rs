//! The weave-rs router library: everything `weave-router` runs.
//!
//! Protocol and CRDT logic live in sans-IO state machines (they take
//! messages and the current time, and return actions); the tokio shell that
//! drives them with sockets and timers is kept thin.

pub mod daemon;
pub mod fastdp;
pub mod ipam;
pub mod mesh;
pub mod net;
pub mod overlay;
pub mod sleeve;
