//! weave-npc: the NetworkPolicy controller of weave-rs.
//!
//! It replaces Weave Net's weave-npc, which failed open on what it did not
//! understand (a policy with a named port left its pods open), ignored
//! `endPort`, and rebuilt ipsets and iptables one process per change. Here:
//!
//! - [`spec`] compiles the API objects once; anything invalid or not
//!   enforceable compiles to its *closed* meaning and is reported.
//! - [`oracle`] is a pure evaluator of networking.k8s.io/v1 semantics: the
//!   tests' source of expected reachability.
//! - [`model`] is our nftables ruleset as data (sets keyed by address, chains
//!   of rules), the batches of operations that change it, and an in-process
//!   evaluator of a packet against it.
//! - [`core`] is the sans-IO policy core: object events in, batches of
//!   ruleset operations out, incrementally (a pod change is set elements).
//! - [`nft`] speaks nf_tables netlink to apply a batch as one atomic
//!   transaction.

pub mod core;
pub mod model;
pub mod nflog;
pub mod nft;
pub mod oracle;
pub mod shell;
pub mod spec;
