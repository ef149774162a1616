//! Pure encoding and decoding of the OVS generic-netlink messages: no
//! sockets, no I/O.
//!
//! # Layout
//!
//! * [`netlink`]: `nlmsghdr`, `genlmsghdr`, `ovs_header`, acks and errors;
//! * [`nla`]: the attribute reader and writer;
//! * [`ctrl`]: the `nlctrl` family (family and multicast group lookup);
//! * [`datapath`], [`vport`], [`flow`], [`packet`]: the four OVS families;
//! * [`key`] and [`action`]: flow keys, masks and actions;
//! * [`validate`]: the kernel's flow rules, checked before sending.
//!
//! Every attribute set decodes into a `#[non_exhaustive]` enum whose last
//! variant is `Other { kind, data }`: attributes this crate does not know are
//! kept as raw bytes and re-encoded unchanged, never rejected.
//!
//! Netlink framing fields are host byte order (`u16`/`u32`/`u64`); fields
//! copied from packet headers are network byte order and use [`types::Be16`],
//! [`types::Be32`], [`types::Be64`], [`std::net::Ipv4Addr`] and friends.
//!
//! # No-panic contract
//!
//! Every decoder in this module takes `&[u8]` and returns
//! `Result<_, DecodeError>`. For any input whatsoever it returns (an error
//! for malformed bytes) and never panics, never reads out of bounds, never
//! allocates more than a small multiple of its input, and never recurses more
//! than [`nla::MAX_DEPTH`] levels. All offsets are checked (`get`, checked
//! arithmetic); there is no indexing on untrusted data. Encoders never panic
//! either; a payload too long for netlink's 16-bit attribute length is an
//! [`nla::EncodeError`]. The `decode` fuzz target ([`fuzz::fuzz_decode`])
//! exercises all decoders.

pub mod action;
pub mod ctrl;
pub mod datapath;
pub mod error;
pub mod flow;
pub mod fuzz;
pub mod key;
pub mod netlink;
pub mod nla;
pub mod ovs;
pub mod packet;
pub mod types;
pub mod validate;
pub mod vport;

pub use error::DecodeError;
pub use nla::EncodeError;
