//! The shapes of the flows fastdp installs, as keys, masks and actions the
//! kernel accepts (see `odp-facts`: every key carries `ethernet()`; an L3
//! mask needs an exact ethertype; a tunnel key needs a destination and a
//! TTL attribute even when the mask ignores them).
//!
//! Reactive flows (one per MAC pair, as Weave makes them) match the input
//! port and both Ethernet addresses exactly, plus the tunnel id and outer
//! addresses when the frame came from a VXLAN vport. The outer TTL, TOS,
//! flags and UDP ports are wildcarded: routers on the underlay may change
//! the TTL, and a flow that matched it exactly would miss for ever after.
//!
//! Proactive flows match IPv4 destinations by prefix (see
//! [`super::proactive`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use odp::handle::FlowSpec;
use odp::wire::action::Action;
use odp::wire::key::{EthernetKey, FlowKey, Ipv4Key, KeyAttr, TunnelKeyAttr};
use odp::wire::types::{Be16, Be64, MacAddr};

use super::tunnel::TUNNEL_TTL;

/// The IPv4 ethertype.
pub const ETH_P_IP: u16 = 0x0800;
/// An exact in_port mask.
const EXACT_PORT: u32 = u32::MAX;

/// The tunnel fields a reactive flow from a VXLAN vport matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelMatch {
    /// The tunnel id (VNI).
    pub id: u64,
    /// Outer source address.
    pub src: Ipv4Addr,
    /// Outer destination address.
    pub dst: Ipv4Addr,
}

/// The key and mask of a reactive flow: input port and MAC pair exact, the
/// tunnel id and outer addresses exact when `tunnel` is given.
pub fn reactive_match(
    in_port: u32,
    tunnel: Option<TunnelMatch>,
    eth: EthernetKey,
) -> (FlowKey, FlowKey) {
    let mut key = FlowKey::new().with(KeyAttr::InPort(in_port));
    let mut mask = FlowKey::new().with(KeyAttr::InPort(EXACT_PORT));
    if let Some(t) = tunnel {
        key.push(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(t.id)),
            TunnelKeyAttr::Ipv4Src(t.src),
            TunnelKeyAttr::Ipv4Dst(t.dst),
            TunnelKeyAttr::Ttl(TUNNEL_TTL),
        ]));
        mask.push(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(u64::MAX)),
            TunnelKeyAttr::Ipv4Src(Ipv4Addr::BROADCAST),
            TunnelKeyAttr::Ipv4Dst(Ipv4Addr::BROADCAST),
        ]));
    }
    key.push(KeyAttr::Ethernet(eth));
    mask.push(KeyAttr::Ethernet(EthernetKey {
        src: MacAddr::BROADCAST,
        dst: MacAddr::BROADCAST,
    }));
    (key, mask)
}

/// A reactive flow.
pub fn reactive_flow(
    in_port: u32,
    tunnel: Option<TunnelMatch>,
    eth: EthernetKey,
    actions: Vec<Action>,
) -> FlowSpec {
    let (key, mask) = reactive_match(in_port, tunnel, eth);
    FlowSpec::new(key, actions).with_mask(mask)
}

fn ipv4_prefix(key: &mut FlowKey, mask: &mut FlowKey, prefix: Ipv4Net) {
    key.push(KeyAttr::EtherType(Be16(ETH_P_IP)));
    mask.push(KeyAttr::EtherType(Be16(0xffff)));
    key.push(KeyAttr::Ipv4(Ipv4Key {
        dst: prefix.network(),
        ..Default::default()
    }));
    mask.push(KeyAttr::Ipv4(Ipv4Key {
        dst: prefix.netmask(),
        ..Default::default()
    }));
}

/// The Ethernet mask of proactive flows: only the group bit of the
/// destination MAC is matched (to be 0), so broadcast and multicast frames
/// (an IPv4 directed broadcast, say) stay on the reactive path, which
/// floods them.
pub const UNICAST_DST_MASK: EthernetKey = EthernetKey {
    src: MacAddr([0; 6]),
    dst: MacAddr([1, 0, 0, 0, 0, 0]),
};

/// A megaflow: IPv4 frames entering on `in_port` to a unicast MAC whose
/// destination address lies in `prefix`.
pub fn prefix_match(in_port: u32, prefix: Ipv4Net) -> (FlowKey, FlowKey) {
    let mut key = FlowKey::new().with(KeyAttr::InPort(in_port));
    let mut mask = FlowKey::new().with(KeyAttr::InPort(EXACT_PORT));
    key.push(KeyAttr::Ethernet(EthernetKey::default()));
    mask.push(KeyAttr::Ethernet(UNICAST_DST_MASK));
    ipv4_prefix(&mut key, &mut mask, prefix);
    (key, mask)
}

/// A megaflow: IPv4 frames to a unicast MAC arriving on VXLAN vport
/// `in_port` with a tunnel id whose destination half is `dst_id_bits` (the
/// source half, outer addresses, TTL and flags are ignored), destination
/// in `prefix`.
pub fn tunnel_prefix_match(in_port: u32, dst_id_bits: u64, prefix: Ipv4Net) -> (FlowKey, FlowKey) {
    let mut key = FlowKey::new().with(KeyAttr::InPort(in_port));
    let mut mask = FlowKey::new().with(KeyAttr::InPort(EXACT_PORT));
    // The kernel wants a non-zero destination and a TTL in every tunnel
    // key; the mask makes both irrelevant.
    key.push(KeyAttr::Tunnel(vec![
        TunnelKeyAttr::Id(Be64(dst_id_bits & super::tunnel::DST_SHORT_ID_MASK)),
        TunnelKeyAttr::Ipv4Dst(Ipv4Addr::BROADCAST),
        TunnelKeyAttr::Ttl(TUNNEL_TTL),
    ]));
    mask.push(KeyAttr::Tunnel(vec![TunnelKeyAttr::Id(Be64(
        super::tunnel::DST_SHORT_ID_MASK,
    ))]));
    key.push(KeyAttr::Ethernet(EthernetKey::default()));
    mask.push(KeyAttr::Ethernet(UNICAST_DST_MASK));
    ipv4_prefix(&mut key, &mut mask, prefix);
    (key, mask)
}

/// The source and destination MAC of a frame, if it has an Ethernet header.
pub fn frame_macs(frame: &[u8]) -> Option<EthernetKey> {
    let dst: [u8; 6] = frame.get(0..6)?.try_into().ok()?;
    let src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    Some(EthernetKey {
        src: MacAddr(src),
        dst: MacAddr(dst),
    })
}

/// Whether a MAC is a group (broadcast or multicast) address.
pub fn is_group(mac: MacAddr) -> bool {
    mac.0[0] & 1 == 1
}

/// The bridge-group address 802.1D reserves for STP; Weave never forwards
/// it to peers.
pub const STP_GROUP: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]);

#[cfg(test)]
mod tests {
    use super::*;
    use odp::wire::validate::validate_flow;

    fn check(key: &FlowKey, mask: &FlowKey) {
        validate_flow(&key.0, Some(&mask.0), &[Action::Output(1)]).unwrap();
    }

    #[test]
    fn shapes_pass_the_kernel_rules() {
        let eth = EthernetKey {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
        };
        let (k, m) = reactive_match(3, None, eth);
        check(&k, &m);
        let t = TunnelMatch {
            id: 0x002001,
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
        };
        let (k, m) = reactive_match(4, Some(t), eth);
        check(&k, &m);
        let p: Ipv4Net = "10.32.0.0/13".parse().unwrap();
        let (k, m) = prefix_match(3, p);
        check(&k, &m);
        let (k, m) = tunnel_prefix_match(4, 0x5 << 12, p);
        check(&k, &m);
        assert!(k.0.contains(&KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::new(10, 32, 0, 0),
            ..Default::default()
        })));
        assert!(m.0.contains(&KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::new(255, 248, 0, 0),
            ..Default::default()
        })));
    }

    #[test]
    fn macs_of_frames() {
        let f = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 8, 6];
        let e = frame_macs(&f).unwrap();
        assert!(is_group(e.dst));
        assert!(!is_group(e.src));
        assert_eq!(frame_macs(&f[..11]), None);
    }
}
