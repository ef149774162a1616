//! The data plane: the shell that runs the [`crate::sleeve`] and
//! [`crate::fastdp`] state machines over real sockets, between the `weave`
//! bridge (or datapath) and the underlay.
//!
//! # Shape
//!
//! - [`runtime`]: what the router task calls. [`runtime::start`] probes
//!   the kernel for openvswitch, plans and builds the bridge in the mode
//!   the options and the kernel allow (BridgedFastdp by default, Fastdp
//!   with `--no-bridged-fastdp`, Bridge with `--no-fastdp` or without
//!   openvswitch, saying why), and starts the data-plane thread;
//!   [`runtime::Overlay`] forwards mesh events to it (connection
//!   added/removed, overlay control messages, routes, the IPAM CIDR view,
//!   containers).
//! - [`fastdp_plane`]: with a datapath, the fastdp machine and its
//!   executor, upcall and vport sockets. Fastdp is then the bridge: the
//!   sleeve's frames are injected through it and frames it sends by the
//!   sleeve (peers without fastdp, or whose switch fell back) come from its
//!   misses; no capture socket is used.
//! - [`dataplane`]: one thread, one `poll(2)` loop over the capture
//!   socket, the two sleeve UDP sockets and an eventfd for commands. It
//!   owns every sleeve connection and the [`switching::Switch`]; nothing
//!   on the per-packet path takes a lock or crosses a channel.
//! - [`switching`]: the sans-IO forwarding decision (MAC learning, unicast
//!   next hops, floods along broadcast routes, relaying).
//! - [`sockets`]: AF_PACKET, UDP, `recvmmsg`/`sendmmsg`, eventfd and
//!   `poll`, on `libc`.
//!
//! # Capture: AF_PACKET with `recvmmsg`, not a TPACKET_V3 ring
//!
//! The capture socket is a plain `SOCK_RAW` AF_PACKET socket bound to
//! `vethwe-pcap`, read 32 frames per `recvmmsg`, with `PACKET_AUXDATA` (so
//! each frame says whether its transport checksum was left to offload)
//! and `PACKET_IGNORE_OUTGOING` (so our own injections are not read back).
//! Injection is `sendmmsg` on the same socket. Why not the mmap ring:
//!
//! - the per-frame cost of this data plane is dominated by what follows
//!   the capture: one UDP datagram per 1.4 KB frame through the kernel's
//!   UDP/IP stack, and with a password a secretbox per datagram. A ring
//!   saves one copy of the frame and amortises the syscall, which
//!   `recvmmsg` already amortises over the batch;
//! - a TPACKET_V3 block is handed over when full or when its retire
//!   timer fires (milliseconds): for sparse traffic such as pings and TCP
//!   handshakes that adds latency unless the timer is tuned down, which
//!   in turn wastes blocks. `recvmmsg` returns whatever is queued at once;
//! - frames we complete checksums on or answer with ICMP need a writable
//!   buffer anyway, and the ring would have to be sized for 64 KiB frames
//!   (the Bridge-mode MTU is 65535).
//!
//! Measured on this project's 2-core host (`netns_sleeve_throughput`,
//! release router, iperf3 between containers on two hosts; the machine was
//! shared with other builds and a VM, so take these as rough): 470–580
//! Mbit/s in the clear and 270–330 Mbit/s encrypted, against 9–12 Gbit/s
//! for a direct veth pair between two namespaces (which moves 64 KiB GSO
//! segments). A `perf` profile of the data-plane thread shows about 10 % of
//! its samples in our code; the rest is the kernel path its syscalls drive
//! synchronously (the bridge, veth and the receiving TCP stack behind each
//! injection; UDP/IP, veth and the underlay bridge behind each send;
//! segmentation on `vethwe-bridge`). The capture syscalls are a small
//! share, so a ring would buy little; fewer, larger packets do: runs of
//! equal-sized DF datagrams to one peer leave as one UDP GSO send
//! (`UDP_SEGMENT`; 10–25 % more here). UDP GRO on receive, and taking
//! GSO frames from the capture with `PACKET_VNET_HDR` instead of having
//! the kernel segment them, are the next steps.
//!
//! # Checksums and segmentation
//!
//! A container's TCP stack hands the bridge frames whose checksum is left
//! to offload and, with TSO, segments up to 64 KiB. Captured as they are,
//! the first arrive at the far end with wrong checksums and the second are
//! far over the sleeve MTU. The set-up turns TX checksum offload off on
//! `vethwe-bridge` (the bridge's end of the capture pair): the kernel then
//! completes checksums and segments GSO packets in software just before
//! handing them to `vethwe-pcap`. A frame that still comes up flagged
//! `TP_STATUS_CSUMNOTREADY` (the ethtool call failed, or someone turned
//! offload back on) gets its checksum completed here with
//! [`crate::sleeve::checksum::complete_checksum`].
//!
//! # UDP: two sockets on one port
//!
//! Sleeve sends DF and non-DF datagrams from port 6783. Linux has no
//! per-datagram DF switch for UDP, so two sockets share the port with
//! `SO_REUSEPORT`: one with `IP_PMTUDISC_DONT` (never DF; the kernel
//! fragments) and one with `IP_PMTUDISC_DO` (always DF; an oversize send
//! fails with `EMSGSIZE`). Both are read. On `EMSGSIZE` the path MTU is
//! read as `IP_MTU` from a throw-away socket connected to the peer (the
//! kernel's PMTU cache is per destination, shared by all sockets) and
//! handed to [`crate::sleeve::connection::SleeveConnection::on_msg_too_big`].
//! Weave used a raw socket per remote address for the DF stream; this
//! needs no raw sockets and no UDP header of our own.
//!
//! Sends are batched: `sendmmsg` per flush, and runs of equal-sized DF
//! datagrams to one peer (a bulk TCP stream) as one UDP GSO send; the
//! kernel cuts them into ordinary datagrams, so receivers (Weave's
//! included) see nothing different.
//!
//! # Overlays negotiated
//!
//! The `Overlays` feature is `fastdp sleeve` with a datapath (unless a
//! password is set: fastdp has no IPsec here, so the encrypted sleeve
//! carries traffic) and `sleeve` in Bridge mode. Every overlay both ends
//! list starts; each connection's [`crate::sleeve::overlay_switch`] sends
//! by the best healthy one (fastdp first) and falls back to the sleeve
//! when fastdp heartbeats stop for 60 s. A peer with no `Overlays` feature
//! gets the bare legacy control tags.

pub mod dataplane;
pub mod fastdp_plane;
pub mod runtime;
pub mod sockets;
pub mod switching;
