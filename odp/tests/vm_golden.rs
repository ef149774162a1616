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

/// Netlink messages in a pcap file of an nlmon device (data link type
/// NETLINK; each record is one message, possibly behind a 16-byte cooked
/// header).
fn pcap_netlink_messages(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = u32::from_ne_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        let rec = &pcap[off + 16..(off + 16 + incl).min(pcap.len())];
        off += 16 + incl;
        for skip in [0usize, 16] {
            if rec.len() >= skip + 16 {
                let len = u32::from_ne_bytes(rec[skip..skip + 4].try_into().unwrap()) as usize;
                if len >= 16 && skip + len <= rec.len() && rec.len() - (skip + len) < 4 {
                    out.push(rec[skip..skip + len].to_vec());
                    break;
                }
            }
        }
    }
    out
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_golden_ovs_dpctl_requests() {
    sh("modprobe", &["nlmon"]);
    sh_quiet("ip", &["link", "del", "odpmon0"]);
    sh("ip", &["link", "add", "odpmon0", "type", "nlmon"]);
    sh("ip", &["link", "set", "odpmon0", "up"]);
    let pcap = std::env::temp_dir().join("odp-dpctl.pcap");
    let mut dump = std::process::Command::new("tcpdump")
        .args(["-i", "odpmon0", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let name = unique("dpct");
    let dpn = format!("system@{name}");
    sh_quiet("ovs-dpctl", &["del-dp", &dpn]);
    sh("ovs-dpctl", &["add-dp", &dpn]);
    sh(
        "ovs-dpctl",
        &["add-if", &dpn, &format!("{},type=internal", unique("dpci"))],
    );
    sh(
        "ovs-dpctl",
        &[
            "add-if",
            &dpn,
            &format!("{},type=vxlan,remote_ip=flow,dst_port=4796", unique("dpcv")),
        ],
    );
    sh(
        "ovs-dpctl",
        &[
            "add-flow",
            &dpn,
            "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800),\
             ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),udp(src=1000,dst=53)",
            "2",
        ],
    );
    sh(
        "ovs-dpctl",
        &[
            "add-flow",
            &dpn,
            "in_port(1),eth(dst=02:00:00:00:00:02),eth_type(0x0800),ipv4(dst=10.32.0.0/255.240.0.0)",
            "set(tunnel(tun_id=0x5,dst=192.0.2.2,ttl=64,flags(df))),2",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    dump.wait().unwrap();
    sh_quiet("ovs-dpctl", &["del-dp", &dpn]);
    sh_quiet("ip", &["link", "del", "odpmon0"]);

    let ovs = Ovs::connect().unwrap();
    let (dpf, vpf, flf) = (ovs.datapath_family(), ovs.vport_family(), ovs.flow_family());
    let msgs = pcap_netlink_messages(&std::fs::read(&pcap).unwrap());
    let requests: Vec<(u16, Vec<u8>)> = msgs
        .iter()
        .filter_map(|m| {
            let h = odp::wire::netlink::NlMsgHeader::parse(m).ok()?;
            let is_req = h.flags & odp::wire::netlink::NLM_F_REQUEST != 0;
            (is_req && m.get(16) == Some(&1)).then(|| (h.kind, m[16..].to_vec()))
        })
        .collect();
    let pick = |family: u16| -> Vec<Vec<u8>> {
        requests
            .iter()
            .filter(|(k, _)| *k == family)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let dp_new = pick(dpf);
    let vport_new = pick(vpf);
    let flow_new = pick(flf);
    eprintln!(
        "captured {} messages: {} dp NEW, {} vport NEW, {} flow NEW",
        msgs.len(),
        dp_new.len(),
        vport_new.len(),
        flow_new.len()
    );
    assert!(!dp_new.is_empty() && vport_new.len() >= 2 && flow_new.len() >= 2);
    // Feature probes come first; the commands we ran are the last ones.
    let (dp_new, vport_new, flow_new) = (
        &dp_new[dp_new.len() - 1..],
        &vport_new[vport_new.len() - 2..],
        &flow_new[flow_new.len() - 2..],
    );
    check_and_store::<DatapathAttr>("dpctl_dp_new", &dp_new[0]);
    check_and_store::<VportAttr>("dpctl_vport_new_internal", &vport_new[0]);
    check_and_store::<VportAttr>("dpctl_vport_new_vxlan", &vport_new[1]);
    check_and_store::<FlowAttr>("dpctl_flow_new_exact", &flow_new[0]);
    check_and_store::<FlowAttr>("dpctl_flow_new_tunnel", &flow_new[1]);
}
