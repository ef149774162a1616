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
//! 3. [`handle`]: typed synchronous datapath, vport, flow and packet handles
//!    behind one [`handle::Ovs`] connection, and the same for tokio in
//!    `handle::aio` (feature `tokio`, on by default), where dumps, vport
//!    events and upcalls are streams.
//!
//! [`text`] reads and prints keys, masks and actions in `ovs-dpctl`'s syntax.
//!
//! Tests that need the kernel datapath live in `tests/vm_*.rs`, are marked
//! `#[ignore]`, and run inside `cargo xtask vm` with `--include-ignored`.

pub mod handle;
pub mod text;
pub mod transport;
pub mod wire;
