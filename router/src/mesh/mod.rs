//! The mesh: peers, connections and gossip, wire-compatible with Weave Net
//! 2.8.1 (its `weaveworks/mesh` library).
//!
//! Everything here is sans-IO: state machines that take bytes, events and
//! the current time, and return what to send and when to wake up next. A
//! thin tokio shell owns the sockets and timers.

pub mod codec;
pub mod connection;
pub mod connection_maker;
pub mod crypto;
pub mod gossip;
pub mod identity;
pub mod peers;
pub mod router;
pub mod routes;
pub mod wire;
