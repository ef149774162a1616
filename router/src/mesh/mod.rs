//! The mesh: peers, connections and gossip, wire-compatible with Weave Net
//! 2.8.1 (its `weaveworks/mesh` library).
//!
//! Everything here is sans-IO: state machines that take bytes, events and
//! the current time, and return what to send and when to wake up next. A
//! thin tokio shell owns the sockets and timers.
//!
//! Layers, bottom up: [`identity`] (names, UIDs, short IDs), [`wire`]
//! (header, framing, tags), [`crypto`] (key exchange, session key,
//! secretbox), [`connection`] (one connection's intro and messages),
//! [`codec`] (message contents; gob through `weave-gob`), [`peers`] and
//! [`routes`] (topology), [`gossip`] (channel interface),
//! [`connection_maker`] (whom to dial) and [`router`] (all of it together).
//!
//! # Driving [`router::MeshRouter`] from a shell
//!
//! - Create it with a [`rand::rngs::StdRng`] seeded from the OS (it makes
//!   UIDs, connection IDs and Curve25519 keys) and [`codec::GobCodec`].
//! - Accepted sockets: `connection_opened(peer_addr, false, now)`. For each
//!   [`router::Output::Dial`], connect, then `connection_opened(addr, true,
//!   now)` or `dial_failed(addr, err, now)`.
//! - Bytes read: `receive(conn, bytes, now)`; EOF or error:
//!   `connection_closed(conn, err, now)`.
//! - [`router::Output::Transmit`]: write the bytes in order;
//!   [`router::Output::Close`]: flush and close (the router already forgot
//!   the connection). With `flow_control` on, report each finished write
//!   with `transmit_done`.
//! - Call `handle_timeout(now)` whenever `poll_timeout()` passes, and drain
//!   `poll_output()` after every call.
//! - Overlays: [`router::Output::ConnectionAdded`] carries what an overlay
//!   needs (remote, connection UID, session key, features); report the
//!   overlay working with `connection_established` (set `auto_establish`
//!   off then), and pass control messages both ways
//!   ([`router::Output::OverlayControl`], `send_overlay_control`).

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
