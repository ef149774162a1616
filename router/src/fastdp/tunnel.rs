//! VXLAN facts shared with Weave Net 2.8.1: the tunnel id layout, the vport
//! name, and the tunnel metadata a frame is sent with.
//!
//! - The 24-bit VNI carries both ends of a forwarded frame: the source
//!   peer's ShortID in the low 12 bits and the destination peer's ShortID
//!   in the high 12 bits. The destination is the frame's final peer, not
//!   the next hop, so a relay can tell where the frame is going.
//! - The VXLAN UDP port is the mesh port plus one (6784 by default) and the
//!   vport for UDP port `p` is named `vxlan-<p>`.
//! - Frames leave with TTL 64, TOS 0, DF set and no outer UDP checksum.

use std::net::Ipv4Addr;

use odp::wire::action::Action;
use odp::wire::key::{KeyAttr, TunnelKeyAttr};
use odp::wire::types::Be64;

use crate::mesh::identity::ShortId;

/// The mesh's default TCP port; VXLAN uses the port after it.
pub const DEFAULT_MESH_PORT: u16 = 6783;
/// Outer TTL of every tunnelled frame.
pub const TUNNEL_TTL: u8 = 64;
/// Mask of the destination ShortID inside a tunnel id.
pub const DST_SHORT_ID_MASK: u64 = 0xfff << 12;
/// Mask of the source ShortID inside a tunnel id.
pub const SRC_SHORT_ID_MASK: u64 = 0xfff;

/// The VXLAN UDP port for a mesh port (`port + 1`), or `None` at 65535.
pub fn vxlan_port(mesh_port: u16) -> Option<u16> {
    mesh_port.checked_add(1)
}

/// The name of the VXLAN vport listening on `udp_port`.
pub fn vxlan_vport_name(udp_port: u16) -> String {
    format!("vxlan-{udp_port}")
}

/// The tunnel id of a frame from peer `src` to peer `dst`.
pub fn tunnel_id(src: ShortId, dst: ShortId) -> u64 {
    u64::from(src.get()) | (u64::from(dst.get()) << 12)
}

/// The (source, destination) ShortIDs a tunnel id carries. Bits above the
/// 24-bit VNI are ignored, as Weave ignores them.
pub fn split_tunnel_id(id: u64) -> (ShortId, ShortId) {
    // Both values are masked to 12 bits, so the casts cannot truncate.
    let src = (id & SRC_SHORT_ID_MASK) as u16;
    let dst = ((id >> 12) & SRC_SHORT_ID_MASK) as u16;
    (ShortId::new(src), ShortId::new(dst))
}

/// Where a tunnelled frame goes: the tunnel id and the outer addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelTarget {
    /// VNI (source | destination << 12).
    pub id: u64,
    /// Our underlay address on the connection to the next hop.
    pub local_ip: Ipv4Addr,
    /// The next hop's underlay address.
    pub remote_ip: Ipv4Addr,
    /// The VXLAN vport to output on.
    pub vport: u32,
}

impl TunnelTarget {
    /// `set(tunnel(...))` then `output(vport)`, as Weave sends frames.
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::Set(KeyAttr::Tunnel(vec![
                TunnelKeyAttr::Id(Be64(self.id)),
                TunnelKeyAttr::Ipv4Src(self.local_ip),
                TunnelKeyAttr::Ipv4Dst(self.remote_ip),
                TunnelKeyAttr::Tos(0),
                TunnelKeyAttr::Ttl(TUNNEL_TTL),
                TunnelKeyAttr::DontFragment,
            ])),
            Action::Output(self.vport),
        ]
    }
}

/// The tunnel id, outer source and outer destination of a received frame's
/// tunnel key, when it has all three (IPv4 only, as Weave).
pub fn received_tunnel(attrs: &[TunnelKeyAttr]) -> Option<(u64, Ipv4Addr, Ipv4Addr)> {
    let mut id = None;
    let mut src = None;
    let mut dst = None;
    for a in attrs {
        match a {
            TunnelKeyAttr::Id(v) => id = Some(v.get()),
            TunnelKeyAttr::Ipv4Src(v) => src = Some(*v),
            TunnelKeyAttr::Ipv4Dst(v) => dst = Some(*v),
            _ => {}
        }
    }
    Some((id?, src?, dst?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_id_layout_matches_weave() {
        let id = tunnel_id(ShortId::new(0x123), ShortId::new(0xabc));
        assert_eq!(id, 0xabc123);
        assert_eq!(
            split_tunnel_id(id),
            (ShortId::new(0x123), ShortId::new(0xabc))
        );
        assert_eq!(
            split_tunnel_id(0xffff_fff0_0001),
            (ShortId::new(1), ShortId::new(0xf00))
        );
        assert_eq!(
            tunnel_id(ShortId::new(0xfff), ShortId::new(0xfff)),
            0xffffff
        );
    }

    #[test]
    fn vport_name_and_port() {
        assert_eq!(vxlan_port(DEFAULT_MESH_PORT), Some(6784));
        assert_eq!(vxlan_port(u16::MAX), None);
        assert_eq!(vxlan_vport_name(6784), "vxlan-6784");
    }

    #[test]
    fn actions_carry_ttl_df_and_output() {
        let t = TunnelTarget {
            id: 5,
            local_ip: Ipv4Addr::new(192, 0, 2, 1),
            remote_ip: Ipv4Addr::new(192, 0, 2, 2),
            vport: 3,
        };
        let a = t.actions();
        odp::wire::validate::validate_actions_only(&a).unwrap();
        assert_eq!(a.last(), Some(&Action::Output(3)));
        let Some(Action::Set(KeyAttr::Tunnel(tun))) = a.first() else {
            panic!("{a:?}")
        };
        assert!(tun.contains(&TunnelKeyAttr::Ttl(64)));
        assert!(tun.contains(&TunnelKeyAttr::DontFragment));
        assert_eq!(
            received_tunnel(tun),
            Some((5, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)))
        );
    }
}
