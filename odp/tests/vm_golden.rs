//! Captures real kernel replies and upcalls, checks that each decodes and
//! re-encodes byte for byte, and (with `ODP_GOLDEN_DIR` set) stores them as
//! golden files for the host test `golden.rs`. Run in the VM.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{TestDp, Veth, sh, sh_quiet, unique, wait_for};
use odp::handle::{DatapathOptions, Features, FlowSpec, Ovs, VportSpec};
use odp::transport::{OvsRequest, UpcallSocket};
use odp::wire::action::{Action, CtAttr};
use odp::wire::datapath::{DatapathAttr, DatapathMessage, UserFeatures};
use odp::wire::flow::{FlowAttr, FlowMessage, Ufid};
use odp::wire::key::{EthernetKey, FlowKey, Ipv4Key, KeyAttr, TunnelKeyAttr};
use odp::wire::ovs::{ObjCmd, OvsFamily, OvsMessage};
use odp::wire::types::{Be16, Be64, MacAddr};
use odp::wire::vport::{VportAttr, VportMessage};

fn check_and_store<A: OvsFamily + std::fmt::Debug>(name: &str, body: &[u8]) {
    let m = OvsMessage::<A>::decode(body).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut buf = Vec::new();
    m.encode(&mut buf, 0, 0, 0).unwrap();
    let re = &buf[16..];
    // Only the final attribute's padding may differ (UNALIGNED upcalls).
    assert!(
        re.len() >= body.len() && re.len() - body.len() < 4,
        "{name}: {} vs {}",
        re.len(),
        body.len()
    );
    assert_eq!(
        &re[..body.len()],
        body,
        "{name}: re-encoding differs\n{m:?}"
    );
    if let Ok(dir) = std::env::var("ODP_GOLDEN_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.bin"), body).unwrap();
    }
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_golden_replies_round_trip() {
    let mut ovs = Ovs::connect().unwrap();
    let mut sock = UpcallSocket::open().unwrap();
    let opts = DatapathOptions {
        features: Features::Exactly(UserFeatures::UNALIGNED),
        ..Default::default()
    };
    let dp = TestDp::create(&mut ovs, "gold", &opts);
    let ifx = dp.ifindex();
    let int = ovs
        .vports(ifx)
        .create(&VportSpec::internal(&unique("gint")))
        .unwrap();
    let vx = ovs
        .vports(ifx)
        .create(&VportSpec::vxlan_gbp(&unique("gvx"), 4797))
        .unwrap();
    let veth = Veth::new("g");
    let nd = ovs
        .vports(ifx)
        .create(&VportSpec::netdev(&veth.a).with_upcall_pids(vec![sock.pid()]))
        .unwrap();

    let (dpf, vpf, flf) = (ovs.datapath_family(), ovs.vport_family(), ovs.flow_family());
    let conn = ovs.connection();
    let get = DatapathMessage::new(
        ObjCmd::Get,
        0,
        vec![DatapathAttr::Name(dp.name().to_owned())],
    );
    let r = conn
        .request(&OvsRequest {
            family: dpf,
            flags: 0,
            msg: &get,
        })
        .unwrap();
    check_and_store::<DatapathAttr>("dp_get", &r[0]);
    for (name, port) in [
        ("vport_internal", int.port_no),
        ("vport_vxlan_gbp", vx.port_no),
        ("vport_netdev", nd.port_no),
    ] {
        let get = VportMessage::new(ObjCmd::Get, ifx, vec![VportAttr::PortNo(port)]);
        let r = conn
            .request(&OvsRequest {
                family: vpf,
                flags: 0,
                msg: &get,
            })
            .unwrap();
        check_and_store::<VportAttr>(name, &r[0]);
    }

    // A miss upcall (before ovs-dpctl opens the datapath: it SETs features
    // and would take the upcalls away), 42-byte ARP frame: its last attribute is unpadded.
    sh("ip", &["addr", "add", "10.197.0.1/24", "dev", &veth.b]);
    sh_quiet("ping", &["-c", "1", "-W", "1", "-I", &veth.b, "10.197.0.2"]);
    let pf = ovs.packet_family();
    let body = wait_for(&mut sock, Duration::from_secs(5), |s| {
        Ok(s.recv_raw(pf)?.into_iter().find(|b| {
            odp::wire::packet::Upcall::decode(b).is_ok_and(|u| u.key.eth_type() == Some(0x0806))
        }))
    })
    .expect("an ARP miss upcall");
    assert_ne!(
        body.len() % 4,
        0,
        "the upcall should end with an unpadded attribute"
    );
    check_and_store::<odp::wire::packet::PacketAttr>("upcall_miss_arp", &body);

    // A masked flow with a UFID, a tunnel set and conntrack.
    let key = FlowKey::new()
        .with(KeyAttr::InPort(int.port_no))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
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
        Action::Ct(vec![CtAttr::Zone(7)]),
        Action::Set(KeyAttr::Tunnel(vec![
            TunnelKeyAttr::Id(Be64(0x5)),
            TunnelKeyAttr::Ipv4Src(Ipv4Addr::new(192, 0, 2, 1)),
            TunnelKeyAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 2)),
            TunnelKeyAttr::Ttl(64),
            TunnelKeyAttr::DontFragment,
        ])),
        Action::Output(vx.port_no),
    ];
    let ufid = Ufid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    ovs.flows(ifx)
        .create(
            &FlowSpec::new(key, actions)
                .with_mask(mask)
                .with_ufid(ufid.clone()),
        )
        .unwrap();
    let get = FlowMessage::new(ObjCmd::Get, ifx, vec![FlowAttr::Ufid(ufid)]);
    let r = ovs
        .connection()
        .request(&OvsRequest {
            family: flf,
            flags: 0,
            msg: &get,
        })
        .unwrap();
    check_and_store::<FlowAttr>("flow_get", &r[0]);
    let text = sh(
        "ovs-dpctl",
        &["dump-flows", &format!("system@{}", dp.name())],
    );
    std::fs::write(std::env::temp_dir().join("odp-golden-dump.txt"), &text).ok();
    assert!(
        text.contains("set(tunnel(tun_id=0x5,src=192.0.2.1,dst=192.0.2.2,ttl=64"),
        "{text}"
    );
    assert!(text.contains("ct(zone=7)"), "{text}");
}
