//! Typed Rust definitions of the values Weave Net 2.8.1 and
//! weaveworks/mesh put on the wire, each encoding to the bytes Go writes.
//!
//! - [`mesh`]: peer names, the connection features map, the gossip
//!   envelope and the `topology` channel's peer and connection summaries.
//! - [`ipam`]: the `IPallocation` channel: the gossip state (Paxos claims or
//!   the ring) and the unicast space request / ring update / denial messages.
//! - [`dns`]: the `nameserver` channel's DNS entries.

pub mod dns;
pub mod ipam;
pub mod mesh;
