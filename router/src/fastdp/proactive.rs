//! The proactive flow set: megaflows computed from what the router already
//! knows, installed before any traffic, so that the first IPv4 packet to a
//! known destination is switched in the kernel without an upcall.
//!
//! # Inputs
//!
//! - the IPAM CIDR view: every prefix of the ring with its owner peer;
//! - for every owner, how a frame reaches it: the tunnel target through the
//!   unicast next hop (tunnel id = our ShortID | owner ShortID << 12, outer
//!   destination = the next hop), present only while fastdp is the overlay
//!   in use towards that next hop and knows its address;
//! - local destinations: prefixes delivered to one local port (in
//!   BridgedFastdp our own ring prefixes go to `vethwe-datapath`; in Fastdp
//!   each container's address goes to its vport);
//! - the datapath's local ports and VXLAN vports.
//!
//! # Flows
//!
//! - **Egress**, per local port L and remote prefix P owned by X:
//!   `in_port(L), eth(dst unicast), eth_type(0x0800), ipv4(dst=P/len)` →
//!   `set(tunnel(id, src, dst, ttl 64, DF)), output(vxlan)`. Matching on
//!   the input port keeps frames arriving from the tunnel (relayed traffic,
//!   whose tunnel id must keep its source ShortID) out of these flows.
//! - **Ingress**, per VXLAN vport V and local destination (P, q):
//!   `in_port(V), tunnel(id & 0xfff000 = our ShortID << 12), eth(dst unicast),
//!   eth_type(0x0800), ipv4(dst=P/len)` → `output(q)`. Any source peer,
//!   any outer address.
//! - **Local**, per local port L ≠ q and local destination (P, q): the same
//!   without the tunnel, for container-to-container traffic on one host.
//!
//! The kernel gives overlapping megaflows no priority, so every frame that
//! two flows can match must get the same treatment from both. Proactive
//! prefixes are disjoint ring ranges; a remote prefix that contains a local
//! destination (an address moved by hand) is left to the reactive path.
//! Reactive flows match MAC pairs and agree with these as long as a MAC
//! lives where its IPv4 address's owner is, which IPAM guarantees for
//! addresses it hands out.
//!
//! Only frames to unicast MACs match (the mask tests the group bit of the
//! destination MAC), so IPv4 broadcast and multicast are flooded by the
//! reactive path as Weave floods them.
//!
//! ARP and other broadcasts stay on the reactive path: an ARP request is
//! flooded to every host, and the broadcast megaflow Weave installs for
//! each source MAC serves every later request from that container, while
//! ARP replies are unicast and get MAC-pair flows. Proactive ARP would need
//! the target's MAC, which only the owning host knows.
//!
//! Frames delivered by ingress flows teach the receiver nothing about the
//! sender's MAC. The reactive path still learns it: before two containers
//! exchange IPv4 each resolves the other with ARP, whose requests and
//! replies always reach userspace on a miss, and the periodic sweep keeps
//! MACs alive while flows built on them carry traffic.
//!
//! Flows carry UFIDs whose top 64 bits are [`UFID_TAG`], so a flow dump
//! tells proactive flows from reactive ones (the reactive sweep leaves
//! them alone), even after a restart.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use odp::handle::{FlowId, FlowSpec};
use odp::wire::action::Action;
use odp::wire::flow::Ufid;

use super::flows::{prefix_match, tunnel_prefix_match};
use super::tunnel::TunnelTarget;
use crate::mesh::identity::{PeerName, ShortId};

/// The top 64 bits of every proactive flow's UFID ("weave-rs").
pub const UFID_TAG: u64 = 0x7765_6176_652d_7273;

/// Whether a UFID marks a proactive flow.
pub fn is_proactive_ufid(ufid: &Ufid) -> bool {
    ufid.as_bytes().get(..8) == Some(&UFID_TAG.to_be_bytes()[..])
}

/// One proactive flow, by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProactiveFlow {
    /// Local port → tunnel to the prefix's owner.
    Egress {
        /// Input port.
        in_port: u32,
        /// Destination prefix.
        prefix: Ipv4Net,
        /// The owner.
        owner: PeerName,
        /// Where frames go.
        target: TunnelTarget,
    },
    /// Tunnel addressed to us → local port.
    Ingress {
        /// The VXLAN vport.
        in_port: u32,
        /// Our ShortID (the destination half of the tunnel id).
        local_id: ShortId,
        /// Destination prefix.
        prefix: Ipv4Net,
        /// Output port.
        out_port: u32,
    },
    /// Local port → local port.
    Local {
        /// Input port.
        in_port: u32,
        /// Destination prefix.
        prefix: Ipv4Net,
        /// Output port.
        out_port: u32,
    },
}

impl ProactiveFlow {
    /// The flow as the kernel takes it, with this UFID.
    pub fn spec(&self, ufid: u128) -> FlowSpec {
        let ((key, mask), actions) = match *self {
            ProactiveFlow::Egress {
                in_port,
                prefix,
                target,
                ..
            } => (prefix_match(in_port, prefix), target.actions()),
            ProactiveFlow::Ingress {
                in_port,
                local_id,
                prefix,
                out_port,
            } => (
                tunnel_prefix_match(in_port, u64::from(local_id.get()) << 12, prefix),
                vec![Action::Output(out_port)],
            ),
            ProactiveFlow::Local {
                in_port,
                prefix,
                out_port,
            } => (
                prefix_match(in_port, prefix),
                vec![Action::Output(out_port)],
            ),
        };
        FlowSpec::new(key, actions)
            .with_mask(mask)
            .with_ufid(Ufid::from_u128(ufid))
    }
}

/// What the proactive set is computed from.
#[derive(Debug, Clone, Default)]
pub struct ProactiveInputs {
    /// Our ShortID, when we have one.
    pub local_id: Option<ShortId>,
    /// Us.
    pub local: PeerName,
    /// The IPAM CIDR view: (prefix, owner).
    pub cidrs: Vec<(Ipv4Net, PeerName)>,
    /// How to reach each owner by tunnel (owners missing here get none).
    pub targets: BTreeMap<PeerName, TunnelTarget>,
    /// Prefixes delivered to a local port.
    pub local_destinations: Vec<(Ipv4Net, u32)>,
    /// The datapath's local (netdev and internal) ports.
    pub local_ports: BTreeSet<u32>,
    /// The VXLAN vports.
    pub vxlan_ports: BTreeSet<u32>,
}

/// The flows the inputs call for.
pub fn desired(inputs: &ProactiveInputs) -> BTreeSet<ProactiveFlow> {
    let mut out = BTreeSet::new();
    let dests: Vec<(Ipv4Net, u32)> = inputs
        .local_destinations
        .iter()
        .map(|(p, q)| (p.trunc(), *q))
        .filter(|(_, q)| inputs.local_ports.contains(q))
        .collect();
    for (prefix, owner) in &inputs.cidrs {
        let prefix = prefix.trunc();
        if *owner == inputs.local {
            continue;
        }
        let Some(target) = inputs.targets.get(owner) else {
            continue;
        };
        if dests
            .iter()
            .any(|(d, _)| prefix.contains(d) || d.contains(&prefix))
        {
            continue;
        }
        for &in_port in &inputs.local_ports {
            out.insert(ProactiveFlow::Egress {
                in_port,
                prefix,
                owner: *owner,
                target: *target,
            });
        }
    }
    for &(prefix, out_port) in &dests {
        if let Some(local_id) = inputs.local_id {
            for &in_port in &inputs.vxlan_ports {
                out.insert(ProactiveFlow::Ingress {
                    in_port,
                    local_id,
                    prefix,
                    out_port,
                });
            }
        }
        for &in_port in &inputs.local_ports {
            if in_port != out_port {
                out.insert(ProactiveFlow::Local {
                    in_port,
                    prefix,
                    out_port,
                });
            }
        }
    }
    out
}

/// Changes to the datapath's proactive flows: delete first, then add (a
/// flow whose actions change is deleted and added again, and the kernel
/// refuses a second flow with the same masked key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProactiveDiff {
    /// Flows to delete, by UFID.
    pub delete: Vec<FlowId>,
    /// Flows to add.
    pub add: Vec<FlowSpec>,
}

impl ProactiveDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }
}

/// The proactive flows believed installed, with their UFIDs.
#[derive(Debug, Clone, Default)]
pub struct ProactiveTable {
    installed: BTreeMap<ProactiveFlow, u128>,
    serial: u64,
}

impl ProactiveTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The flows believed installed.
    pub fn installed(&self) -> impl Iterator<Item = &ProactiveFlow> {
        self.installed.keys()
    }

    /// How many flows are installed.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// The datapath's flows were flushed: nothing is installed any more.
    pub fn forget_all(&mut self) {
        self.installed.clear();
    }

    /// Moves the table to `desired` and returns what the datapath must do.
    pub fn update(&mut self, desired: &BTreeSet<ProactiveFlow>) -> ProactiveDiff {
        let mut diff = ProactiveDiff::default();
        self.installed.retain(|flow, ufid| {
            let keep = desired.contains(flow);
            if !keep {
                diff.delete.push(FlowId::Ufid(Ufid::from_u128(*ufid)));
            }
            keep
        });
        for flow in desired {
            if !self.installed.contains_key(flow) {
                self.serial += 1;
                let ufid = (u128::from(UFID_TAG) << 64) | u128::from(self.serial);
                self.installed.insert(*flow, ufid);
                diff.add.push(flow.spec(ufid));
            }
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn peer(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    fn target(id: u64, last: u8) -> TunnelTarget {
        TunnelTarget {
            id,
            local_ip: Ipv4Addr::new(192, 168, 77, 1),
            remote_ip: Ipv4Addr::new(192, 168, 77, last),
            vport: 2,
        }
    }

    fn inputs() -> ProactiveInputs {
        ProactiveInputs {
            local_id: Some(ShortId::new(1)),
            local: peer(1),
            cidrs: vec![
                ("10.32.0.0/13".parse().unwrap(), peer(1)),
                ("10.40.0.0/13".parse().unwrap(), peer(2)),
                ("10.48.0.0/12".parse().unwrap(), peer(3)),
            ],
            targets: [(peer(2), target(0x2001, 2)), (peer(3), target(0x3001, 3))].into(),
            local_destinations: vec![("10.32.0.0/13".parse().unwrap(), 1)],
            local_ports: [0, 1].into(),
            vxlan_ports: [2].into(),
        }
    }

    #[test]
    fn flows_for_remote_prefixes_and_local_delivery() {
        let want = desired(&inputs());
        let egress = want
            .iter()
            .filter(|f| matches!(f, ProactiveFlow::Egress { .. }))
            .count();
        // Two remote prefixes from two local ports.
        assert_eq!(egress, 4);
        assert!(want.contains(&ProactiveFlow::Ingress {
            in_port: 2,
            local_id: ShortId::new(1),
            prefix: "10.32.0.0/13".parse().unwrap(),
            out_port: 1,
        }));
        // Port 0 → port 1 locally, never port 1 → itself.
        assert!(want.contains(&ProactiveFlow::Local {
            in_port: 0,
            prefix: "10.32.0.0/13".parse().unwrap(),
            out_port: 1,
        }));
        assert_eq!(want.len(), 6);
        for (i, f) in want.iter().enumerate() {
            f.spec(i as u128 + 1).validate().unwrap();
        }
    }

    #[test]
    fn overlapping_local_destination_leaves_prefix_reactive() {
        let mut i = inputs();
        i.local_destinations
            .push(("10.41.0.7/32".parse().unwrap(), 0));
        let want = desired(&i);
        assert!(!want.iter().any(|f| matches!(
            f,
            ProactiveFlow::Egress { owner, .. } if *owner == peer(2)
        )));
    }

    #[test]
    fn diff_adds_then_deletes_what_changed() {
        let mut table = ProactiveTable::new();
        let mut i = inputs();
        let first = table.update(&desired(&i));
        assert_eq!(first.add.len(), 6);
        assert!(first.delete.is_empty());
        assert!(
            first
                .add
                .iter()
                .all(|s| s.ufid.as_ref().is_some_and(is_proactive_ufid))
        );
        assert!(table.update(&desired(&i)).is_empty());
        // Peer 3's next hop changes: its two flows are replaced.
        i.targets.insert(peer(3), target(0x3001, 9));
        let d = table.update(&desired(&i));
        assert_eq!((d.delete.len(), d.add.len()), (2, 2));
        // Peer 2 becomes unreachable: its two flows go.
        i.targets.remove(&peer(2));
        let d = table.update(&desired(&i));
        assert_eq!((d.delete.len(), d.add.len()), (2, 0));
        assert_eq!(table.len(), 4);
        table.forget_all();
        assert_eq!(table.update(&desired(&i)).add.len(), 4);
        assert!(!is_proactive_ufid(&Ufid::from_u128(7)));
    }
}
