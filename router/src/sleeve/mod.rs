//! The sleeve: Weave's own UDP encapsulation, used where the kernel
//! datapath (fastdp) is missing or its port is blocked, wire-compatible
//! with Weave Net 2.8.1 (`router/sleeve.go`, `router/frame_crypto.go`,
//! `router/overlay_switch.go`).
//!
//! Everything here is sans-IO: codecs and state machines that take bytes,
//! events and the current time and return what to send. The shell owns the
//! capture socket, the UDP sockets and the timers.

pub mod checksum;
pub mod connection;
pub mod crypto;
pub mod ethernet;
pub mod fastdp_health;
pub mod frame;
pub mod fuzz;
pub mod heartbeat;
pub mod overlay_switch;
pub mod pmtu;
