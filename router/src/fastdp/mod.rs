//! Fast datapath: container traffic between hosts switched by the kernel's
//! Open vSwitch datapath and carried in VXLAN, wire-compatible with Weave
//! Net 2.8.1's fastdp (same VNI layout, heartbeats and control messages),
//! so a weave-rs router and a Weave router talk fastdp to each other.
//!
//! - [`tunnel`]: VNI layout, vport names, the tunnel actions;
//! - [`mac_table`]: MAC learning;
//! - [`forwarder`]: one connection's VXLAN address, heartbeats and health;
//! - [`flows`]: flow keys and masks the kernel accepts;
//! - [`proactive`]: flows computed from IPAM and routes, before traffic
//!   (the design is explained there);
//! - [`inputs`]: those inputs built from mesh and IPAM structures;
//! - [`machine`]: the sans-IO state machine ([`machine::Fastdp`]);
//! - [`executor`]: applies its datapath operations through the `odp` crate.

pub mod executor;
pub mod flows;
pub mod forwarder;
pub mod inputs;
pub mod mac_table;
pub mod machine;
pub mod proactive;
#[cfg(test)]
mod scenarios;
pub mod tunnel;

pub use machine::{DpOp, Fastdp, FastdpConfig, Output, PortKind, Topology};
