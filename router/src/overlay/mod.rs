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
//! # Capture: AF_PACKET with `recvmmsg` and `PACKET_VNET_HDR`, not a ring
//!
//! The capture socket is a plain `SOCK_RAW` AF_PACKET socket bound to
//! `vethwe-pcap`, read 32 frames per `recvmmsg`, with `PACKET_VNET_HDR`
//! (each frame comes behind a `virtio_net_hdr` saying whether it is a GSO
//! super-frame and where its partial checksum lives), `PACKET_AUXDATA`
//! and `PACKET_IGNORE_OUTGOING` (our own injections are not read back).
//! Injection is `sendmmsg` on the same socket, each frame behind a vnet
//! header too. Why this and not a TPACKET_V3 ring:
//!
//! - profiles (`perf record -a` during `cargo xtask bench dataplane`,
//!   release router) show the data-plane threads spending about 90 % of
//!   their time in the kernel, on the path each packet drives: the bridge
//!   with its netfilter hooks, veth, UDP/IP, the receiving TCP stack. Our
//!   own code and libc were about 8 % of their samples and the capture
//!   copy (`packet_recvmsg`, `_copy_to_iter`) about 3 %. A ring saves that copy
//!   and the syscall, which `recvmmsg` already amortises; it does not
//!   touch the per-packet kernel path. Fewer, larger packets do;
//! - a TPACKET_V3 block is handed over when full or when its retire
//!   timer fires (milliseconds): sparse traffic (pings, handshakes) waits
//!   unless the timer is tuned down, which wastes blocks; `recvmmsg`
//!   returns whatever is queued at once. A ring would also need 64 KiB
//!   slots for super-frames;
//! - so the work went into packet counts, measured one by one on the
//!   host's two-host lab (sleeve, pod MTU 1376, iperf3; the machine was
//!   shared with builds and a VM, load average about 10, so figures move
//!   by ±20 % from run to run):
//!   - before: 0.36–0.51 Gbit/s; the receiving router made one
//!     `sendmmsg` per datagram (53 000 in 3 s under strace);
//!   - UDP GRO on receive and merging of received TCP segments into GSO
//!     frames before injection ([`crate::sleeve::offload::Coalescer`]):
//!     0.53–0.57 Gbit/s; 3 700 injections in the same 3 s, each a
//!     ~64 KiB frame; the data-plane threads' share of all CPU samples
//!     fell from 32 % to 17 %;
//!   - GSO super-frames taken from the capture and cut in userspace
//!     ([`crate::sleeve::offload::segment_tcp`]): 1.07 Gbit/s when the
//!     sending pod's `eth0` has TX checksum offload on (so its TCP uses
//!     TSO); the capture then reads 64 952-byte frames instead of 1 400.
//!     A pod attached with TX checksum offload off (as Weave's CNI does
//!     in Bridge mode, for pcap's sake) sends ready-made segments and
//!     gets no gain from this step.
//!
//! # Checksums and segmentation
//!
//! A container's TCP stack hands the bridge frames whose checksum is left
//! to offload and, with TSO, segments up to 64 KiB. The capture takes
//! both as they are: the vnet header marks a partial checksum
//! (`NEEDS_CSUM` with its offsets), which is completed with
//! [`crate::sleeve::checksum::complete_checksum`], and a TCP super-frame
//! (`GSO_TCPV4`/`GSO_TCPV6`), which is cut into MSS-sized segments with
//! their checksums, exactly what the kernel's software segmentation would
//! send, so the wire carries ordinary frames and Weave peers see nothing
//! new. A vnet header cannot describe every GSO kind on every kernel (UDP
//! GSO only from Linux 6.2; reading such a frame fails with `EINVAL`), so
//! the set-up turns off every segmentation offload of `vethwe-bridge` but
//! TCP's ([`sockets::capture_keeps_offload`]): the kernel segments UDP,
//! SCTP and tunnel GSO before the capture. If the features cannot be
//! set, TX checksum offload goes off on `vethwe-bridge` instead (the old
//! way: the kernel then completes checksums and segments everything).
//!
//! On injection, consecutive received segments of one TCP/IPv4 flow
//! (contiguous sequence numbers, same headers otherwise, checksums
//! verified) are merged into one frame with a `GSO_TCPV4` vnet header and
//! a partial checksum, as GRO would: the bridge, the container's veth and
//! its TCP stack then handle one packet per batch instead of one per
//! segment, and the container acknowledges less often.
//!
//! ## Passes over the payload
//!
//! The kernel copies each payload byte once into our capture buffer and
//! once out of a datagram, and once into a UDP receive buffer and once
//! out towards the bridge; fastdp copies none (a VXLAN GSO packet crosses
//! the veths whole). What our own code adds is kept to one copy per side,
//! and checksum sums ride along with a copy or read the bytes once:
//!
//! - send: [`crate::sleeve::offload::segment_tcp_parts`] builds each
//!   segment's headers apart and hands the payload over as a slice of the
//!   capture buffer; the payload is read once to sum the TCP checksum and
//!   copied once, straight into the datagram (no scratch copy of the
//!   segment);
//! - receive: the [`crate::sleeve::offload::Coalescer`] copies each
//!   segment's payload into the injection queue and sums it in the same
//!   loop ([`crate::sleeve::checksum::extend_and_sum`]); a segment whose
//!   checksum fails is taken back out and queued on its own, unmerged and
//!   unchanged, so no frame with a bad checksum is ever marked partial;
//! - sums are taken over native-endian 64-bit words split in 32-bit
//!   halves ([`crate::sleeve::checksum::sum_words`]), with no per-byte or
//!   per-16-bit-word work.
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
//! included) see nothing different. Both sockets have `UDP_GRO`: such a
//! run, kept whole across veths and bridges (or rebuilt by a NIC's GRO),
//! is read as one message and cut back into datagrams by its segment
//! size.
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
