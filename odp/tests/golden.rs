//! Real kernel messages (captured from Linux 6.1 by `vm_golden.rs` into
//! `tests/golden/`) decode to the expected values and re-encode byte for byte;
//! requests ovs-dpctl sent (captured on an nlmon device) are reproduced
//! byte for byte by our encoder.
//!
//! To refresh the files, build the VM test and run it with `ODP_GOLDEN_DIR`:
//! `cargo test -p odp --test vm_golden --no-run`, then
//! `cargo xtask vm -- sh -c 'ODP_GOLDEN_DIR=$PWD/odp/tests/golden target/debug/deps/vm_golden-<hash> --include-ignored --test-threads=1'`.
//! The assertions below then need the new names/values only where they
//! check captured names.

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

/// Encodes `m` and returns the body (after the netlink header).
fn body<A: OvsFamily>(m: &OvsMessage<A>) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut buf, 0, 0, 0).unwrap();
    buf.split_off(16)
}

const DPCTL_DP_NEW: &[u8] = include_bytes!("golden/dpctl_dp_new.bin");

/// ovs-dpctl's requests (captured on an nlmon device) decode and re-encode
/// byte for byte, and our typed builders produce the same bytes for the same
/// content.
#[test]
fn ovs_dpctl_datapath_and_vport_requests() {
    let m: DatapathMessage = round_trip(DPCTL_DP_NEW);
    let name = DatapathInfo::from_message(&m).unwrap().name;
    // ovs-dpctl asks for UNALIGNED | per-CPU dispatch, like our negotiation's first choice.
    let ours = DatapathMessage::new(
        ObjCmd::New,
        0,
        vec![
            DatapathAttr::Name(name),
            DatapathAttr::UpcallPid(0),
            DatapathAttr::UserFeatures(odp::handle::NEGOTIATION_ORDER[0]),
        ],
    );
    assert_eq!(body(&ours), DPCTL_DP_NEW);

    let raw = include_bytes!("golden/dpctl_vport_new_internal.bin");
    let m: VportMessage = round_trip(raw);
    let VportAttr::Name(name) = &m.attrs[1] else {
        panic!("{m:?}")
    };
    let ours = VportMessage::new(
        ObjCmd::New,
        m.dp_ifindex,
        vec![
            VportAttr::Type(VportType::Internal),
            VportAttr::Name(name.clone()),
            VportAttr::UpcallPids(vec![0]),
        ],
    );
    assert_eq!(body(&ours), raw);
    // For VXLAN, ovs-dpctl makes the device over rtnetlink and adds it as a netdev.
    let m: VportMessage = round_trip(include_bytes!("golden/dpctl_vport_new_vxlan.bin"));
    assert!(m.attrs.contains(&VportAttr::Type(VportType::Netdev)));
    assert!(m.attrs.contains(&VportAttr::Name("vxlan_sys_4796".into())));
}

#[test]
fn ovs_dpctl_flow_requests() {
    use odp::wire::key::{EthernetKey, FlowKey, Ipv4Key, PortsKey};
    use odp::wire::types::{Be16, MacAddr};
    let raw = include_bytes!("golden/dpctl_flow_new_exact.bin");
    let m: FlowMessage = round_trip(raw);
    let mac1 = MacAddr([2, 0, 0, 0, 0, 1]);
    let mac2 = MacAddr([2, 0, 0, 0, 0, 2]);
    let key = FlowKey::new()
        .with(KeyAttr::InPort(1))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: mac1,
            dst: mac2,
        }))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            proto: 17,
            tos: 0,
            ttl: 64,
            frag: 0,
        }))
        .with(KeyAttr::Udp(PortsKey {
            src: Be16(1000),
            dst: Be16(53),
        }));
    let mask = FlowKey::new()
        .with(KeyAttr::InPort(u32::MAX))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr::BROADCAST,
            dst: MacAddr::BROADCAST,
        }))
        .with(KeyAttr::EtherType(Be16(0xffff)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            src: Ipv4Addr::BROADCAST,
            dst: Ipv4Addr::BROADCAST,
            proto: 0xff,
            tos: 0xff,
            ttl: 0xff,
            frag: 0xff,
        }))
        .with(KeyAttr::Udp(PortsKey {
            src: Be16(0xffff),
            dst: Be16(0xffff),
        }));
    let ours = FlowMessage::new(
        ObjCmd::New,
        m.dp_ifindex,
        vec![
            FlowAttr::Key(key),
            FlowAttr::Mask(mask),
            FlowAttr::Actions(vec![Action::Output(2)]),
        ],
    );
    assert_eq!(body(&ours), raw);

    let raw = include_bytes!("golden/dpctl_flow_new_tunnel.bin");
    let m: FlowMessage = round_trip(raw);
    let key = FlowKey::new()
        .with(KeyAttr::InPort(1))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr([0; 6]),
            dst: mac2,
        }))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::new(10, 32, 0, 0),
            ..Default::default()
        }));
    let mask = FlowKey::new()
        .with(KeyAttr::InPort(u32::MAX))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr([0; 6]),
            dst: MacAddr::BROADCAST,
        }))
        .with(KeyAttr::EtherType(Be16(0xffff)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            dst: Ipv4Addr::new(255, 240, 0, 0),
            ..Default::default()
        }));
    let actions = vec![
        Action::Set(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(5)),
            TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2)),
            TunnelKeyAttr::Ttl(64),
            TunnelKeyAttr::DontFragment,
        ])),
        Action::Output(2),
    ];
    let ours = FlowMessage::new(
        ObjCmd::New,
        m.dp_ifindex,
        vec![
            FlowAttr::Key(key.clone()),
            FlowAttr::Mask(mask.clone()),
            FlowAttr::Actions(actions.clone()),
        ],
    );
    assert_eq!(body(&ours), raw);
    // And our validator accepts what ovs-dpctl (and the kernel) accepted.
    odp::wire::validate::validate_flow(&key.0, Some(&mask.0), &actions).unwrap();
}
