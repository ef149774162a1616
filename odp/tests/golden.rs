//! Real kernel messages (captured from Linux 6.1 by `vm_golden.rs` into
//! `tests/golden/`) decode to the expected values and re-encode byte for byte.

use std::net::Ipv4Addr;

use odp::wire::action::{Action, CtAttr};
use odp::wire::datapath::{DatapathAttr, DatapathInfo, DatapathMessage, UserFeatures};
use odp::wire::flow::{FlowAttr, FlowInfo, FlowMessage, Ufid};
use odp::wire::key::{KeyAttr, TunnelKeyAttr};
use odp::wire::ovs::{ObjCmd, OvsFamily, OvsMessage};
use odp::wire::packet::{PacketAttr, PacketCmd, Upcall};
use odp::wire::types::Be64;
use odp::wire::vport::{TunnelOption, VportAttr, VportInfo, VportMessage, VportType, VxlanExt};

fn round_trip<A: OvsFamily + std::fmt::Debug>(body: &[u8]) -> OvsMessage<A> {
    let m = OvsMessage::<A>::decode(body).unwrap();
    let mut buf = Vec::new();
    m.encode(&mut buf, 0, 0, 0).unwrap();
    let re = &buf[16..];
    assert!(re.len() >= body.len() && re.len() - body.len() < 4);
    assert_eq!(&re[..body.len()], body);
    assert!(re[body.len()..].iter().all(|&b| b == 0));
    m
}

#[test]
fn datapath_get_reply() {
    let m: DatapathMessage = round_trip(include_bytes!("golden/dp_get.bin"));
    // Kernels from 4.19 answer GET with the GET command.
    assert!(matches!(m.cmd, ObjCmd::Get | ObjCmd::New));
    let info = DatapathInfo::from_message(&m).unwrap();
    assert!(info.name.starts_with("ogold"));
    assert_eq!(info.user_features, Some(UserFeatures::UNALIGNED));
    assert!(info.stats.is_some() && info.megaflow_stats.is_some());
    assert!(
        m.attrs
            .iter()
            .any(|a| matches!(a, DatapathAttr::MasksCacheSize(_)))
    );
}

#[test]
fn vport_get_replies() {
    let int = VportInfo::from_message(&round_trip::<VportAttr>(include_bytes!(
        "golden/vport_internal.bin"
    )))
    .unwrap();
    assert_eq!(int.kind, VportType::Internal);
    assert!(int.ifindex.is_some());
    let nd = VportInfo::from_message(&round_trip::<VportAttr>(include_bytes!(
        "golden/vport_netdev.bin"
    )))
    .unwrap();
    assert_eq!(nd.kind, VportType::Netdev);
    assert_eq!(nd.upcall_pids.len(), 1);
    let m: VportMessage = round_trip(include_bytes!("golden/vport_vxlan_gbp.bin"));
    let vx = VportInfo::from_message(&m).unwrap();
    assert_eq!(vx.kind, VportType::Vxlan);
    assert_eq!(vx.dst_port(), Some(4797));
    assert!(
        vx.options
            .contains(&TunnelOption::Extension(vec![VxlanExt::Gbp]))
    );
}

#[test]
fn flow_get_reply() {
    let m: FlowMessage = round_trip(include_bytes!("golden/flow_get.bin"));
    let f = FlowInfo::from_message(&m);
    assert_eq!(
        f.ufid,
        Some(Ufid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677))
    );
    let mask = f.mask.unwrap();
    assert!(
        mask.0
            .iter()
            .any(|a| matches!(a, KeyAttr::Ipv4(k) if k.dst == Ipv4Addr::new(255, 240, 0, 0)))
    );
    let key = f.key.unwrap();
    assert_eq!(key.eth_type(), Some(0x0800));
    let actions = f.actions.unwrap();
    assert_eq!(actions.first(), Some(&Action::Ct(vec![CtAttr::Zone(7)])));
    let Some(Action::Set(KeyAttr::Tunnel(t))) = actions.get(1) else {
        panic!("{actions:?}")
    };
    assert!(t.contains(&TunnelKeyAttr::Id(Be64(5))));
    assert!(t.contains(&TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2))));
    assert!(t.contains(&TunnelKeyAttr::Ttl(64)));
    assert!(t.contains(&TunnelKeyAttr::DontFragment));
    assert!(matches!(actions.get(2), Some(Action::Output(_))));
    assert!(m.attrs.iter().any(|a| matches!(a, FlowAttr::Ufid(_))));
}

#[test]
fn unaligned_miss_upcall() {
    let body = include_bytes!("golden/upcall_miss_arp.bin");
    assert_ne!(body.len() % 4, 0, "captured with the UNALIGNED feature");
    round_trip::<PacketAttr>(body);
    let up = Upcall::decode(body).unwrap();
    assert_eq!(up.cmd, PacketCmd::Miss);
    assert_eq!(up.packet.len(), 42);
    assert_eq!(up.key.eth_type(), Some(0x0806));
    assert!(
        up.key
            .0
            .iter()
            .any(|a| matches!(a, KeyAttr::Arp(arp) if arp.tip == Ipv4Addr::new(10, 197, 0, 2)))
    );
}
