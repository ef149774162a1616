//! Netlink sockets for the OVS families.
//!
//! Built on the [`netlink_sys`] crate, which the design card chose: it is the
//! socket layer of the rust-netlink project (the same project whose
//! `netlink-packet-core` our wire types are modelled on), it is small, has no
//! protocol opinions of its own, exposes the options we need
//! (`NETLINK_EXT_ACK`, `NETLINK_CAP_ACK`, multicast membership, `MSG_TRUNC`
//! receives, non-blocking mode), and has optional tokio/mio integration for a
//! later async API. Everything protocol-level (framing, sequence numbers,
//! batching, error mapping) is ours and lives in [`crate::wire`] and here.
//!
//! * [`Connection`]: request/response with family resolution (cached),
//!   sequence numbers, acks with extended-ack text, batches of many requests
//!   per `send` with replies matched by sequence number, and dumps;
//! * [`UpcallSocket`]: a socket that receives the kernel's unsolicited
//!   (sequence 0) messages: upcalls, or multicast notifications;
//! * [`aio`] (feature `tokio`, on by default): the same over tokio, with
//!   dumps and notifications as streams.

#[cfg(feature = "tokio")]
pub mod aio;
pub mod conn;
pub mod error;
pub mod pending;
pub mod socket;
pub mod upcall;

pub use conn::{Connection, OvsRequest, Request};
pub use error::Error;
pub use socket::GenlSocket;
pub use upcall::UpcallSocket;
