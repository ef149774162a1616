//! Applies the fastdp state machine's [`DpOp`]s to the kernel datapath
//! through the `odp` crate, and brings back what the kernel says: miss
//! upcalls, vport changes and flow dumps.
//!
//! Upcalls: a datapath with per-CPU dispatch (the default on recent
//! kernels) sends misses to the PIDs in its per-CPU table and ignores the
//! vports' PIDs, so [`Executor::open`] points that table at our upcall
//! socket (one PID serves every CPU); otherwise every vport, existing or
//! new, gets our PID. Either way this takes the datapath's upcalls for
//! ourselves, which is right only for a datapath the router owns.
//!
//! Like Weave, opening deletes the datapath's VXLAN vports (a previous run
//! may have left them) so that ours are created with our settings. Some
//! kernels report success creating a VXLAN vport whose UDP port is taken,
//! leaving its netdev down; as Weave does, such a vport is deleted and the
//! creation counts as `EADDRINUSE` (retried a few times, since the kernel
//! frees the port of a deleted vport asynchronously).

use std::thread::sleep;
use std::time::Duration;

use odp::handle::{FlowId, FlowSpec, Ovs, VportSpec};
use odp::transport::{Error as OdpError, OvsRequest, UpcallSocket};
use odp::wire::datapath::{DatapathAttr, DpStats, UserFeatures};
use odp::wire::flow::{FlowAttr, FlowInfo, FlowMessage};
use odp::wire::ovs::ObjCmd;
use odp::wire::packet::{PacketCmd, Upcall};
use odp::wire::vport::{VportInfo, VportType};

use super::machine::{DpOp, PortKind};
use super::tunnel::vxlan_vport_name;
use crate::net::rtnl::Rtnl;

/// How often creating a VXLAN vport is tried while its UDP port is still
/// held by a vport being deleted (the kernel frees it asynchronously).
const VXLAN_TRIES: u32 = 5;
/// Pause between those tries.
const VXLAN_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Most upcalls read in one [`Executor::recv_upcalls`] call.
const MAX_UPCALLS_PER_READ: usize = 64;

/// A datapath operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct ExecError {
    /// What was being done.
    pub op: String,
    /// The kernel's or the transport's answer.
    #[source]
    pub source: OdpError,
}

fn ctx(op: impl Into<String>) -> impl FnOnce(OdpError) -> ExecError {
    let op = op.into();
    move |source| ExecError { op, source }
}

/// What the kernel reported back, for the state machine.
#[derive(Debug)]
pub enum Feedback {
    /// A vport fastdp must know (feed [`super::Fastdp::port_added`]).
    PortAdded {
        /// Port number.
        port_no: u32,
        /// Name.
        name: String,
        /// Kind.
        kind: PortKind,
    },
    /// A vport went away (feed [`super::Fastdp::port_removed`]).
    PortRemoved {
        /// Port number.
        port_no: u32,
    },
    /// Creating a VXLAN vport failed (feed [`super::Fastdp::vxlan_failed`]).
    VxlanFailed {
        /// Its UDP port.
        udp_port: u16,
        /// Why.
        error: ExecError,
    },
    /// The flows, for [`super::Fastdp::sweep_flows`].
    FlowDump(Vec<FlowInfo>),
    /// An operation failed; the others went ahead.
    Failed(ExecError),
}

/// Turns GRO off on the netdev of VXLAN vport `name`, so that one TCP
/// flow's packets leave the tunnel in the order they entered it.
///
/// The kernel's VXLAN receive path gives a decapsulated packet to the
/// netdev's GRO cell, a NAPI queue of its own, unless the packet is a clone
/// (or GRO is off), in which case it goes to the CPU's backlog queue
/// instead (`gro_cells_receive`). Over the datapath some packets of a flow
/// reach it as clones and some do not (a packet the sender's TCP still
/// holds for retransmission stays a clone unless something on the way
/// reallocates its header; a tap on the underlay clones too), and the two
/// queues are drained in their own order: measured in User-Mode Linux, a
/// 10 s iperf3 stream saw 260–450 segments queued out of order at the
/// receiver and as many spurious fast retransmits (DSACKed), with nothing
/// lost; with GRO off, none (docs/benchmarks.md). The outer UDP packets are
/// still aggregated by the underlay device's GRO before they are
/// decapsulated, so little is lost. A kernel VXLAN device (Flannel's) does
/// not show it: its packets are routed, and forwarding makes their header
/// private before encapsulation. Failure is logged, not fatal: the overlay
/// works either way.
fn vxlan_gro_off(name: &str) {
    match crate::overlay::sockets::disable_netdev_features(name, |feature| feature == "rx-gro") {
        Ok(_) => tracing::debug!(vport = name, "GRO off on the VXLAN vport"),
        Err(error) => tracing::warn!(
            vport = name,
            %error,
            "cannot turn GRO off on the VXLAN vport: TCP over fastdp may see reordering"
        ),
    }
}

fn port_kind(v: &VportInfo) -> Option<PortKind> {
    match v.kind {
        VportType::Netdev | VportType::Internal => Some(PortKind::Local),
        VportType::Vxlan => v.dst_port().map(|udp_port| PortKind::Vxlan { udp_port }),
        _ => None,
    }
}

fn port_added(v: &VportInfo) -> Option<Feedback> {
    port_kind(v).map(|kind| Feedback::PortAdded {
        port_no: v.port_no,
        name: v.name.clone(),
        kind,
    })
}

/// The kernel side of fastdp on one datapath.
#[derive(Debug)]
pub struct Executor {
    ovs: Ovs,
    name: String,
    dp_ifindex: i32,
    upcalls: UpcallSocket,
    events: UpcallSocket,
    per_cpu: bool,
    /// For the VXLAN link check; `None` if rtnetlink could not be opened.
    rtnl: Option<Rtnl>,
}

impl Executor {
    /// Takes over datapath `name` (made by the bridge set-up): upcalls to
    /// us, its VXLAN vports deleted. Returns the executor and its current
    /// vports for the state machine.
    pub fn open(name: &str) -> Result<(Executor, Vec<Feedback>), ExecError> {
        let mut ovs = Ovs::connect().map_err(ctx("connecting to the kernel datapath"))?;
        let info = ovs
            .datapaths()
            .get(name)
            .map_err(ctx(format!("looking up datapath {name}")))?;
        let upcalls = UpcallSocket::open().map_err(ctx("opening the upcall socket"))?;
        upcalls
            .set_nonblocking(true)
            .map_err(ctx("making the upcall socket non-blocking"))?;
        let events = ovs
            .vport_events()
            .map_err(ctx("subscribing to vport notifications"))?;
        events
            .set_nonblocking(true)
            .map_err(ctx("making the vport socket non-blocking"))?;
        let features = info.user_features.unwrap_or_default();
        let per_cpu = features.contains(UserFeatures::DISPATCH_UPCALL_PER_CPU);
        let mut ex = Executor {
            ovs,
            name: name.to_string(),
            dp_ifindex: info.dp_ifindex,
            upcalls,
            events,
            per_cpu,
            rtnl: Rtnl::open().ok(),
        };
        if per_cpu {
            let pid = ex.upcalls.pid();
            ex.ovs
                .datapaths()
                .set(
                    name,
                    // A SET without the features attribute clears them.
                    vec![
                        DatapathAttr::UserFeatures(features),
                        DatapathAttr::PerCpuPids(vec![pid]),
                    ],
                )
                .map_err(ctx(format!("pointing {name}'s per-CPU upcalls at us")))?;
        }
        let vports = ex
            .ovs
            .vports(ex.dp_ifindex)
            .list()
            .map_err(ctx(format!("listing the vports of {name}")))?;
        let mut found = Vec::new();
        for v in vports {
            if v.kind == VportType::Vxlan {
                match ex.ovs.vports(ex.dp_ifindex).delete_by_port(v.port_no) {
                    Ok(()) | Err(OdpError::NotFound { .. }) | Err(OdpError::NoDevice { .. }) => {}
                    Err(e) => return Err(ctx(format!("deleting stale vport {}", v.name))(e)),
                }
                continue;
            }
            ex.take_upcalls(&v)?;
            found.extend(port_added(&v));
        }
        Ok((ex, found))
    }

    /// The datapath's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The datapath's ifindex.
    pub fn dp_ifindex(&self) -> i32 {
        self.dp_ifindex
    }

    /// The upcall socket's descriptor, to wait on.
    pub fn upcall_fd(&self) -> std::os::fd::RawFd {
        self.upcalls.raw_fd()
    }

    /// The vport notification socket's descriptor, to wait on.
    pub fn vport_events_fd(&self) -> std::os::fd::RawFd {
        self.events.raw_fd()
    }

    /// The handle, for status and tests.
    pub fn ovs(&mut self) -> &mut Ovs {
        &mut self.ovs
    }

    fn take_upcalls(&mut self, v: &VportInfo) -> Result<(), ExecError> {
        if self.per_cpu || v.upcall_pids == [self.upcalls.pid()] {
            return Ok(());
        }
        let pid = self.upcalls.pid();
        self.ovs
            .vports(self.dp_ifindex)
            .set_upcall_pids(&v.name, vec![pid])
            .map(drop)
            .map_err(ctx(format!("sending {}'s upcalls to us", v.name)))
    }

    /// The datapath's hit/miss/lost counters.
    pub fn stats(&mut self) -> Result<DpStats, ExecError> {
        let name = self.name.clone();
        let info = self
            .ovs
            .datapaths()
            .get(&name)
            .map_err(ctx(format!("reading {name}'s statistics")))?;
        Ok(info.stats.unwrap_or_default())
    }

    /// Miss upcalls waiting on the socket (never blocks; at most a
    /// batch). An overrun (upcalls lost) is reported as an error; the
    /// socket stays usable.
    pub fn recv_upcalls(&mut self) -> Result<Vec<Upcall>, ExecError> {
        let family = self.ovs.packet_family();
        let mut out = Vec::new();
        while out.len() < MAX_UPCALLS_PER_READ {
            let batch = self
                .upcalls
                .recv_upcalls(family)
                .map_err(ctx("receiving upcalls"))?;
            if batch.is_empty() {
                break;
            }
            out.extend(
                batch
                    .into_iter()
                    .filter(|u| u.cmd == PacketCmd::Miss && u.dp_ifindex == self.dp_ifindex),
            );
        }
        Ok(out)
    }

    /// Vports created or deleted on our datapath since the last call
    /// (never blocks).
    pub fn recv_port_events(&mut self) -> Result<Vec<Feedback>, ExecError> {
        let family = self.ovs.vport_family();
        let mut out = Vec::new();
        loop {
            let msgs = self
                .events
                .recv_vport_events(family)
                .map_err(ctx("receiving vport notifications"))?;
            if msgs.is_empty() {
                return Ok(out);
            }
            for m in msgs {
                if m.dp_ifindex != self.dp_ifindex {
                    continue;
                }
                let Ok(v) = VportInfo::from_message(&m) else {
                    continue;
                };
                match m.cmd {
                    ObjCmd::New => {
                        self.take_upcalls(&v)?;
                        out.extend(port_added(&v));
                    }
                    ObjCmd::Del => out.push(Feedback::PortRemoved { port_no: v.port_no }),
                    _ => {}
                }
            }
        }
    }

    fn create_vxlan(&mut self, udp_port: u16) -> Result<VportInfo, ExecError> {
        let name = vxlan_vport_name(udp_port);
        let pids = if self.per_cpu {
            Vec::new()
        } else {
            vec![self.upcalls.pid()]
        };
        let spec = VportSpec::vxlan(&name, udp_port).with_upcall_pids(pids);
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self
                .ovs
                .vports(self.dp_ifindex)
                .create(&spec)
                .and_then(|v| {
                    if self.vxlan_link_down(&name) {
                        let _ = self.ovs.vports(self.dp_ifindex).delete_by_port(v.port_no);
                        return Err(OdpError::from_errno(
                            libc::EADDRINUSE,
                            Some(format!("the netdev of {name} stayed down")),
                        ));
                    }
                    Ok(v)
                });
            match result {
                Ok(v) => {
                    vxlan_gro_off(&name);
                    return Ok(v);
                }
                Err(e) if e.errno() == Some(libc::EADDRINUSE) && tries < VXLAN_TRIES => {
                    sleep(VXLAN_RETRY_PAUSE)
                }
                Err(e) => return Err(ctx(format!("creating vport {name}"))(e)),
            }
        }
    }

    /// Whether the VXLAN vport's netdev exists and is down (its UDP port
    /// could not be bound).
    fn vxlan_link_down(&mut self, name: &str) -> bool {
        let Some(rtnl) = self.rtnl.as_mut() else {
            return false;
        };
        matches!(rtnl.link(name), Ok(Some(link)) if !link.up)
    }

    fn create_flows(&mut self, specs: &[FlowSpec], out: &mut Vec<Feedback>) {
        if specs.is_empty() {
            return;
        }
        match self.ovs.flows(self.dp_ifindex).create_batch(specs) {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(()) | Err(OdpError::Exists { .. }) => {}
                        Err(e) => out.push(Feedback::Failed(ctx("creating a flow")(e))),
                    }
                }
            }
            Err(e) => out.push(Feedback::Failed(ctx("creating flows")(e))),
        }
    }

    fn delete_flows(&mut self, ids: &[FlowId], out: &mut Vec<Feedback>) {
        if ids.is_empty() {
            return;
        }
        let family = self.ovs.flow_family();
        let msgs: Vec<FlowMessage> = ids
            .iter()
            .map(|id| {
                let attr = match id {
                    FlowId::Key(k) => FlowAttr::Key(k.clone()),
                    FlowId::Ufid(u) => FlowAttr::Ufid(u.clone()),
                };
                FlowMessage::new(ObjCmd::Del, self.dp_ifindex, vec![attr])
            })
            .collect();
        let reqs: Vec<OvsRequest<'_, FlowAttr>> = msgs
            .iter()
            .map(|msg| OvsRequest {
                family,
                flags: 0,
                msg,
            })
            .collect();
        match self.ovs.connection().transact(&reqs) {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) | Err(OdpError::NotFound { .. }) => {}
                        Err(e) => out.push(Feedback::Failed(ctx("deleting a flow")(e))),
                    }
                }
            }
            Err(e) => out.push(Feedback::Failed(ctx("deleting flows")(e))),
        }
    }

    /// Applies operations in order; runs of flow creations and of flow
    /// deletions each go to the kernel as one batch. Failures are reported
    /// and do not stop the rest.
    pub fn apply(&mut self, ops: Vec<DpOp>) -> Vec<Feedback> {
        let mut out = Vec::new();
        let mut creates: Vec<FlowSpec> = Vec::new();
        let mut deletes: Vec<FlowId> = Vec::new();
        for op in ops {
            match op {
                DpOp::CreateFlow(spec) => {
                    self.delete_flows(&deletes, &mut out);
                    deletes.clear();
                    creates.push(spec);
                    continue;
                }
                DpOp::DeleteFlow(id) => {
                    self.create_flows(&creates, &mut out);
                    creates.clear();
                    deletes.push(id);
                    continue;
                }
                _ => {}
            }
            self.create_flows(&creates, &mut out);
            creates.clear();
            self.delete_flows(&deletes, &mut out);
            deletes.clear();
            match op {
                DpOp::CreateFlow(_) | DpOp::DeleteFlow(_) => {}
                DpOp::CreateVxlanVport { udp_port } => match self.create_vxlan(udp_port) {
                    Ok(v) => out.extend(port_added(&v)),
                    Err(error) => out.push(Feedback::VxlanFailed { udp_port, error }),
                },
                DpOp::FlushFlows => {
                    if let Err(e) = self.ovs.flows(self.dp_ifindex).flush() {
                        out.push(Feedback::Failed(ctx("flushing the flows")(e)));
                    }
                }
                DpOp::Execute {
                    packet,
                    key,
                    actions,
                } => {
                    if let Err(e) = self
                        .ovs
                        .packets(self.dp_ifindex)
                        .execute(&packet, key, actions)
                    {
                        out.push(Feedback::Failed(ctx("executing a packet")(e)));
                    }
                }
                DpOp::SweepFlows => match self.ovs.flows(self.dp_ifindex).dump() {
                    Ok(flows) => out.push(Feedback::FlowDump(flows)),
                    Err(e) => out.push(Feedback::Failed(ctx("dumping the flows")(e))),
                },
            }
        }
        self.create_flows(&creates, &mut out);
        self.delete_flows(&deletes, &mut out);
        out
    }

    /// Makes the netdev `ifname` a port of the datapath (a container's
    /// host veth in Fastdp mode), unless it is one already; its upcalls
    /// come to us. Returns the port for the state machine.
    pub fn attach_netdev(&mut self, ifname: &str) -> Result<Feedback, ExecError> {
        let existing = match self.ovs.vports(self.dp_ifindex).get(ifname) {
            Ok(v) => Some(v),
            Err(OdpError::NotFound { .. }) | Err(OdpError::NoDevice { .. }) => None,
            Err(e) => return Err(ctx(format!("looking up vport {ifname}"))(e)),
        };
        let v = match existing {
            Some(v) => v,
            None => {
                let pids = if self.per_cpu {
                    Vec::new()
                } else {
                    vec![self.upcalls.pid()]
                };
                let spec = VportSpec::netdev(ifname).with_upcall_pids(pids);
                self.ovs
                    .vports(self.dp_ifindex)
                    .create(&spec)
                    .map_err(ctx(format!("adding {ifname} to {}", self.name)))?
            }
        };
        self.take_upcalls(&v)?;
        Ok(Feedback::PortAdded {
            port_no: v.port_no,
            name: v.name.clone(),
            kind: PortKind::Local,
        })
    }

    /// Every vport of the datapath, for `/report`.
    pub fn vports(&mut self) -> Result<Vec<VportInfo>, ExecError> {
        self.ovs
            .vports(self.dp_ifindex)
            .list()
            .map_err(ctx("listing the vports"))
    }

    /// Every flow, for `/report` and `odp dump-flows`-like views.
    pub fn flows(&mut self) -> Result<Vec<FlowInfo>, ExecError> {
        self.ovs
            .flows(self.dp_ifindex)
            .dump()
            .map_err(ctx("dumping the flows"))
    }
}
