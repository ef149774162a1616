//! `odp`: a driver for the Linux kernel Open vSwitch datapath.
//!
//! The kernel exposes its datapath through four generic-netlink families:
//! `ovs_datapath`, `ovs_vport`, `ovs_flow` and `ovs_packet`. This crate speaks
//! them in three layers:
//!
//! 1. [`wire`]: pure encoding and decoding of messages and attributes, with
//!    no sockets, so every byte layout can be tested and fuzzed on any kernel;
//! 2. [`transport`]: netlink sockets, sequence numbers, acknowledgements,
//!    batching and multicast groups;
//! 3. handles: typed `Datapath`, `Vport`, `Flow` and `Packet` APIs.

pub mod transport;
pub mod wire;
