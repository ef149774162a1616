//! The fastdp half of the data-plane thread: the [`Fastdp`] state machine
//! with the [`Executor`] that carries out its datapath operations, the
//! upcall and vport-notification sockets, and what the router tells it
//! about IPAM and containers.
//!
//! The machine's other outputs (control messages, health, frames for the
//! sleeve) concern the connections and are handled by the data-plane loop
//! ([`super::dataplane`]), which owns the overlay switch of each
//! connection.
//!
//! Local destinations (the proactive ingress and local flows):
//!
//! - BridgedFastdp: every prefix of the ring we own, and every registered
//!   container address, is delivered to `vethwe-datapath`; the Linux
//!   bridge takes it from there by its own MAC learning;
//! - Fastdp: each registered container's addresses are delivered to its
//!   host veth, which is made a port of the datapath when registered.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::RawFd;
use std::time::Instant;

use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use crate::fastdp::executor::{Executor, Feedback};
use crate::fastdp::machine::FastdpStatus;
use crate::fastdp::{DpOp, Fastdp};
use crate::mesh::identity::PeerName;
use crate::net::plan::{BridgeType, DATAPATH_IF};

/// A container registered over HTTP (`PUT /container/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's identifier.
    pub id: String,
    /// Its IPv4 addresses (the prefix length is the subnet's; delivery
    /// matches the address alone).
    pub ips: Vec<Ipv4Net>,
    /// Its MAC, if given.
    pub mac: Option<String>,
    /// The host end of its veth, if given.
    pub host_veth: Option<String>,
}

/// One vport, for `/report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VportSummary {
    /// Port number.
    pub port_no: u32,
    /// Name.
    pub name: String,
    /// Type, in the kernel's words (`netdev`, `internal`, `vxlan`).
    pub kind: String,
}

/// What `/report` and `/metrics` show of fastdp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastdpReport {
    /// The datapath's name.
    pub datapath: String,
    /// Its vports.
    pub vports: Vec<VportSummary>,
    /// Flows in the kernel table.
    pub flows: u64,
    /// Packets that hit a flow, missed, or were lost on the way up.
    pub hit_missed_lost: (u64, u64, u64),
    /// The machine's view.
    pub status: FastdpStatus,
    /// Registered containers.
    pub containers: usize,
    /// Datapath operations that failed since start.
    pub failures: u64,
}

/// The fastdp machine and its kernel side.
#[derive(Debug)]
pub struct FastdpPlane {
    machine: Fastdp,
    exec: Executor,
    bridge_type: BridgeType,
    offered: bool,
    local: Option<PeerName>,
    own: BTreeSet<Ipv4Net>,
    containers: BTreeMap<String, ContainerSpec>,
    failures: u64,
}

impl FastdpPlane {
    /// Wraps a machine and the executor opened on its datapath; `ports`
    /// are the vports the executor found. `offered`: whether the fastdp
    /// overlay is offered to peers (else only the sleeve carries traffic,
    /// through this machine's misses).
    pub fn new(
        machine: Fastdp,
        exec: Executor,
        ports: Vec<Feedback>,
        bridge_type: BridgeType,
        offered: bool,
    ) -> Self {
        let mut plane = FastdpPlane {
            machine,
            exec,
            bridge_type,
            offered,
            local: None,
            own: BTreeSet::new(),
            containers: BTreeMap::new(),
            failures: 0,
        };
        plane.feedback(ports, Instant::now());
        plane
    }

    /// Whether the fastdp overlay is offered to peers.
    pub fn offered(&self) -> bool {
        self.offered
    }

    /// The state machine.
    pub fn machine(&mut self) -> &mut Fastdp {
        &mut self.machine
    }

    /// The machine, read-only.
    pub fn machine_ref(&self) -> &Fastdp {
        &self.machine
    }

    /// The upcall socket, to poll.
    pub fn upcall_fd(&self) -> RawFd {
        self.exec.upcall_fd()
    }

    /// The vport notification socket, to poll.
    pub fn vport_events_fd(&self) -> RawFd {
        self.exec.vport_events_fd()
    }

    /// Feeds what the kernel reported back into the machine.
    pub fn feedback(&mut self, feedback: Vec<Feedback>, now: Instant) {
        for f in feedback {
            match f {
                Feedback::PortAdded {
                    port_no,
                    name,
                    kind,
                } => {
                    debug!(port_no, %name, ?kind, "datapath port");
                    self.machine.port_added(port_no, &name, kind);
                }
                Feedback::PortRemoved { port_no } => self.machine.port_removed(port_no),
                Feedback::VxlanFailed { udp_port, error } => {
                    self.failures += 1;
                    warn!(udp_port, %error, "creating the VXLAN vport failed");
                    self.machine.vxlan_failed(udp_port);
                }
                Feedback::FlowDump(flows) => self.machine.sweep_flows(now, flows),
                Feedback::Failed(error) => {
                    self.failures += 1;
                    debug!(%error, "datapath operation failed");
                }
            }
        }
    }

    /// Carries out datapath operations and feeds back the results.
    pub fn apply(&mut self, ops: Vec<DpOp>, now: Instant) {
        if ops.is_empty() {
            return;
        }
        let feedback = self.exec.apply(ops);
        self.feedback(feedback, now);
    }

    /// Reads waiting miss upcalls into the machine.
    pub fn on_upcalls(&mut self, now: Instant) {
        match self.exec.recv_upcalls() {
            Ok(upcalls) => {
                for up in upcalls {
                    self.machine.handle_miss(up.packet, &up.key, now);
                }
            }
            Err(error) => {
                self.failures += 1;
                debug!(%error, "reading upcalls");
            }
        }
    }

    /// Reads vport notifications into the machine.
    pub fn on_port_events(&mut self, now: Instant) {
        match self.exec.recv_port_events() {
            Ok(events) => self.feedback(events, now),
            Err(error) => {
                self.failures += 1;
                debug!(%error, "reading vport notifications");
            }
        }
    }

    /// The whole ring's CIDR view; `local` is our own peer name.
    pub fn set_cidr_view(&mut self, view: Vec<(Ipv4Net, PeerName)>, local: PeerName) {
        self.local = Some(local);
        if self.bridge_type == BridgeType::BridgedFastdp {
            let own: BTreeSet<Ipv4Net> = view
                .iter()
                .filter(|(_, o)| *o == local)
                .map(|(p, _)| p.trunc())
                .collect();
            for gone in self.own.difference(&own) {
                if !self.container_prefixes().contains(gone) {
                    self.machine.remove_local_destination(*gone);
                }
            }
            for new in own.difference(&self.own) {
                self.machine.add_local_destination(*new, DATAPATH_IF);
            }
            self.own = own;
        }
        self.machine.set_cidr_view(view);
    }

    fn container_prefixes(&self) -> BTreeSet<Ipv4Net> {
        self.containers
            .values()
            .flat_map(|c| c.ips.iter().map(host_prefix))
            .collect()
    }

    /// The port a container's addresses are delivered to.
    fn port_of(&self, c: &ContainerSpec) -> Option<String> {
        match self.bridge_type {
            BridgeType::BridgedFastdp => Some(DATAPATH_IF.to_string()),
            BridgeType::Fastdp => c.host_veth.clone(),
            BridgeType::Bridge => None,
        }
    }

    /// A container was attached: its addresses get delivery flows at once
    /// (in Fastdp mode its host veth becomes a datapath port first).
    pub fn container_added(&mut self, spec: ContainerSpec, now: Instant) {
        if let Some(old) = self.containers.remove(&spec.id) {
            self.forget_container(&old);
        }
        if self.bridge_type == BridgeType::Fastdp
            && let Some(veth) = &spec.host_veth
        {
            match self.exec.attach_netdev(veth) {
                Ok(port) => self.feedback(vec![port], now),
                Err(error) => {
                    self.failures += 1;
                    warn!(container = %spec.id, %error, "attaching the container's veth");
                }
            }
        }
        if let Some(port) = self.port_of(&spec) {
            for ip in &spec.ips {
                self.machine.add_local_destination(host_prefix(ip), &port);
            }
        }
        info!(container = %spec.id, ips = ?spec.ips, "container registered with fastdp");
        self.containers.insert(spec.id.clone(), spec);
    }

    /// A container went away.
    pub fn container_removed(&mut self, id: &str) {
        if let Some(old) = self.containers.remove(id) {
            self.forget_container(&old);
        }
    }

    fn forget_container(&mut self, c: &ContainerSpec) {
        let still: BTreeSet<Ipv4Net> = self.container_prefixes();
        for ip in &c.ips {
            let p = host_prefix(ip);
            if still.contains(&p) {
                continue;
            }
            if self.bridge_type == BridgeType::BridgedFastdp && self.own.contains(&p) {
                continue;
            }
            self.machine.remove_local_destination(p);
        }
    }

    /// A fresh report (dumps the vports and reads the datapath's counters).
    pub fn report(&mut self) -> FastdpReport {
        let vports = match self.exec.vports() {
            Ok(list) => list
                .into_iter()
                .map(|v| VportSummary {
                    port_no: v.port_no,
                    name: v.name,
                    kind: format!("{:?}", v.kind).to_lowercase(),
                })
                .collect(),
            Err(error) => {
                debug!(%error, "listing vports");
                Vec::new()
            }
        };
        let stats = self.exec.stats().unwrap_or_default();
        FastdpReport {
            datapath: self.exec.name().to_string(),
            vports,
            flows: stats.n_flows,
            hit_missed_lost: (stats.n_hit, stats.n_missed, stats.n_lost),
            status: self.machine.status(),
            containers: self.containers.len(),
            failures: self.failures,
        }
    }
}

/// The /32 of an address.
fn host_prefix(ip: &Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(ip.addr(), 32).unwrap_or(*ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefix_is_the_address_alone() {
        let ip: Ipv4Net = "10.32.0.5/12".parse().unwrap();
        assert_eq!(host_prefix(&ip).to_string(), "10.32.0.5/32");
    }
}
