//! The sleeve: Weave's own UDP encapsulation, used where the kernel
//! datapath (fastdp) is missing or its port is blocked, wire-compatible
//! with Weave Net 2.8.1 (`router/sleeve.go`, `router/frame_crypto.go`,
//! `router/overlay_switch.go`).
//!
//! Everything here is sans-IO: codecs and state machines that take bytes,
//! events and the current time and return what to send. The shell owns the
//! capture socket, the UDP sockets and the timers.
//!
//! # Modules
//!
//! - [`frame`]: the datagram and frame-record layout;
//! - [`crypto`]: per-datagram NaCl secretbox, nonces, replay windows;
//! - [`secretbox`]: the secretbox itself (XSalsa20, four blocks at a
//!   time, and Poly1305);
//! - [`ethernet`]: how frames are classified, ICMP "fragmentation
//!   needed", IPv4 fragmentation;
//! - [`checksum`]: Internet checksums and completing `CHECKSUM_PARTIAL`
//!   frames from a capture;
//! - [`pmtu`], [`heartbeat`]: the per-connection path MTU search and
//!   heartbeat/health timing;
//! - [`connection`]: one sleeve connection, tying the above together;
//! - [`overlay_switch`], [`fastdp_health`]: choosing between fastdp and
//!   sleeve per connection;
//! - [`fuzz`]: fuzz-target bodies.
//!
//! # What the shell does
//!
//! - **Sockets.** One UDP socket on port 6783 with `IP_MTU_DISCOVER =
//!   IP_PMTUDISC_DONT` carries non-DF datagrams and receives everything.
//!   DF datagrams ([`connection::SleeveAction::Send`] with `df`) must leave
//!   from the same source port with DF set and the kernel's PMTU
//!   discovery on (Weave uses a raw `IPPROTO_UDP` socket per remote IP with
//!   `IP_PMTUDISC_DO`, writing the UDP header itself with a zero
//!   checksum). On `EMSGSIZE` it reads `IP_MTU` and calls
//!   [`connection::SleeveConnection::on_msg_too_big`].
//! - **Receiving.** [`frame::split_sender`] names the sending peer; its
//!   connection (registered once confirmed) gets the rest through
//!   [`connection::SleeveConnection::receive`]. Errors are logged and the
//!   datagram dropped (replays quietly). Delivered frames are checked for
//!   known source/destination peers, feed MAC learning, and are relayed
//!   when addressed to another peer.
//! - **Sending.** For each captured frame the router picks the connection
//!   of the next hop, offers the frame to the overlays in
//!   [`overlay_switch::OverlaySwitch::send_order`], and for the sleeve
//!   calls [`connection::SleeveConnection::forward`]; an ICMP reply it
//!   returns is injected locally as if from the destination peer. After a
//!   capture batch it calls `flush` on the connections it used, then
//!   drains their actions.
//! - **Control messages.** Under the switch, mesh tag 7 bodies go through
//!   [`overlay_switch::unwrap_control`] to the overlay with that index,
//!   and an overlay's control messages go out through
//!   [`overlay_switch::wrap_control`]. With a peer that sent no `Overlays`
//!   feature, sleeve tags 1–3 are bare mesh tags.
//! - **Lifecycle.** When the mesh confirms the connection, every running
//!   overlay is confirmed. `Established`, `Failed` and fastdp health
//!   reports go to the switch (`on_established`, `on_error`, `on_health`);
//!   `NoWorkingForwarders` ends the mesh connection. Timers: call
//!   `handle_timeout` at `poll_timeout`.
//! - **Keys and addresses.** The session key is the mesh connection's, and
//!   only when the connection is untrusted (a password is set and the
//!   peer is not in a trusted subnet on either side). The dialling side
//!   knows the peer's UDP address: the TCP peer address (same port).
//! - **Checksums.** Frames captured with `TP_STATUS_CSUMNOTREADY` get
//!   [`checksum::complete_checksum`] before forwarding.
//! - **Status.** `/status/connections` shows
//!   [`overlay_switch::OverlaySwitch::status`] with the in-use overlay's
//!   attributes (`name`, `mtu`, and `encrypted` as Weave adds it).

pub mod checksum;
pub mod connection;
pub mod crypto;
pub mod ethernet;
pub mod fastdp_health;
pub mod frame;
pub mod fuzz;
pub mod heartbeat;
pub mod offload;
pub mod overlay_switch;
pub mod pmtu;
pub mod secretbox;
