//! Builds the state machine's inputs from the mesh and IPAM structures the
//! daemon holds.

use ipnet::Ipv4Net;

use super::machine::Topology;
use crate::ipam::ring::Ring;
use crate::mesh::identity::PeerName;
use crate::mesh::peers::Peers;
use crate::mesh::routes::Routes;

/// The fastdp view of the mesh: ShortIDs of the peers that have one, the
/// unicast next hops over established connections (ourself excluded), and
/// the broadcast next hops for frames from every known peer.
pub fn topology(peers: &Peers, routes: &mut Routes) -> Topology {
    let mut t = Topology::default();
    for p in peers.iter() {
        if p.has_short_id {
            t.short_ids.insert(p.name, p.short_id);
        }
    }
    for (dst, hop) in &routes.unicast {
        if *hop != PeerName::UNKNOWN && *dst != peers.ourself_name() {
            t.unicast.insert(*dst, *hop);
        }
    }
    let names: Vec<PeerName> = peers.iter().map(|p| p.name).collect();
    for src in names {
        t.broadcast.insert(src, routes.broadcast(peers, src));
    }
    t
}

/// The CIDR view of the whole ring: every range as aligned prefixes, each
/// with its owner (IPAM's peer name, the same 48 bits as the mesh's).
pub fn cidr_view(ring: &Ring) -> Vec<(Ipv4Net, PeerName)> {
    let mut out = Vec::new();
    for info in ring.all_range_info() {
        for c in info.range.cidrs() {
            if let Ok(net) = Ipv4Net::new(c.addr.to_ipv4(), c.prefix_len) {
                out.push((net, PeerName::from_u64(info.peer.0)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::address::Address;

    #[test]
    fn ring_split_between_two_peers() {
        let a = crate::ipam::peer::PeerName(1);
        let b = crate::ipam::peer::PeerName(2);
        let start: Address = "10.32.0.0".parse().unwrap();
        let end: Address = "10.48.0.0".parse().unwrap();
        let mut ring = Ring::new(start, end, a).unwrap();
        ring.claim_for_peers(&[a, b]).unwrap();
        let mut view = cidr_view(&ring);
        view.sort();
        let owners: Vec<PeerName> = view.iter().map(|(_, o)| *o).collect();
        assert!(
            owners.contains(&PeerName::from_u64(1)) && owners.contains(&PeerName::from_u64(2)),
            "{view:?}"
        );
        let total: u64 = view
            .iter()
            .map(|(n, _)| 1u64 << (32 - n.prefix_len()))
            .sum();
        assert_eq!(total, 1 << 20);
    }

    #[test]
    fn topology_of_a_lone_peer() {
        use crate::mesh::identity::{PeerUid, ShortId};
        use crate::mesh::peers::Peer;
        let me = PeerName::from_u64(7);
        let peers = Peers::new(Peer::new(me, "me", PeerUid(1), 1, ShortId::new(9)));
        let mut routes = Routes::calculate(&peers);
        let t = topology(&peers, &mut routes);
        assert_eq!(t.short_ids.get(&me), Some(&ShortId::new(9)));
        assert!(t.unicast.is_empty());
        assert_eq!(t.broadcast.get(&me), Some(&vec![]));
    }
}
