//! Flow and packet handles against the kernel datapath, with ovs-dpctl as an
//! independent peer (run in the VM).

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{TestDp, Veth, sh, sh_quiet, unique, wait_for};
use odp::handle::{DatapathOptions, Features, FlowId, FlowSpec, Ovs, VportSpec};
use odp::transport::{Error, OvsRequest, UpcallSocket};
use odp::wire::action::{Action, UserspaceAttr};
use odp::wire::datapath::UserFeatures;
use odp::wire::flow::{FlowAttr, FlowMessage, Ufid, UfidFlags};
use odp::wire::key::{ArpKey, EthernetKey, FlowKey, IcmpKey, Ipv4Key, KeyAttr, PortsKey};
use odp::wire::netlink::NLM_F_CREATE;
use odp::wire::ovs::ObjCmd;
use odp::wire::packet::PacketCmd;
use odp::wire::types::{Be16, MacAddr};
use odp::wire::validate::FlowError;

const MAC1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
const MAC2: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

fn icmp_key(in_port: u32, src: Ipv4Addr, dst: Ipv4Addr) -> FlowKey {
    FlowKey::new()
        .with(KeyAttr::InPort(in_port))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MAC1,
            dst: MAC2,
        }))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            src,
            dst,
            proto: 1,
            tos: 0,
            ttl: 64,
            frag: 0,
        }))
        .with(KeyAttr::Icmp(IcmpKey {
            icmp_type: 8,
            code: 0,
        }))
}

fn subnet_flow(in_port: u32, out: u32) -> FlowSpec {
    let key = FlowKey::new()
        .with(KeyAttr::InPort(in_port))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MAC1,
            dst: MAC2,
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
    FlowSpec::new(key, vec![Action::Output(out)])
        .with_mask(mask)
        .with_ufid(Ufid::from_u128(0xabcdef))
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_flow_create_get_dump_modify_delete() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "fl", &DatapathOptions::default());
    let p1 = ovs
        .vports(dp.ifindex())
        .create(&VportSpec::internal(&unique("flp1")))
        .unwrap()
        .port_no;
    let p2 = ovs
        .vports(dp.ifindex())
        .create(&VportSpec::internal(&unique("flp2")))
        .unwrap()
        .port_no;
    let mut flows = ovs.flows(dp.ifindex());

    let exact_key = icmp_key(p1, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let exact = FlowSpec::new(exact_key.clone(), vec![Action::Output(p2)]);
    flows.create(&exact).unwrap();
    let dup = flows.create(&exact).unwrap_err();
    assert!(matches!(dup, Error::Exists { .. }), "{dup:?}");
    let masked = subnet_flow(p1, p2);
    flows.create(&masked).unwrap();

    let got = flows.get(&FlowId::Key(exact_key.clone())).unwrap();
    let key = got.key.expect("key in GET reply");
    assert_eq!(key.in_port(), Some(p1));
    assert_eq!(key.eth_type(), Some(0x0800));
    assert_eq!(
        key.ethernet(),
        Some(EthernetKey {
            src: MAC1,
            dst: MAC2
        })
    );
    assert_eq!(got.actions, Some(vec![Action::Output(p2)]));

    let got = flows.get(&FlowId::Ufid(Ufid::from_u128(0xabcdef))).unwrap();
    let mask = got.mask.expect("mask in GET reply");
    assert!(
        mask.0
            .iter()
            .any(|a| matches!(a, KeyAttr::Ipv4(m) if m.dst == Ipv4Addr::new(255, 240, 0, 0))),
        "{mask:?}"
    );
    assert_eq!(got.ufid, Some(Ufid::from_u128(0xabcdef)));

    let all = flows.dump().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    // Terse dump: the UFID flow comes back without key, mask and actions.
    let mut terse = Vec::new();
    flows
        .dump_each(UfidFlags::TERSE, |f| {
            terse.push(f);
            Ok(())
        })
        .unwrap();
    let t = terse
        .iter()
        .find(|f| f.ufid.is_some())
        .expect("ufid flow in terse dump");
    assert!(t.key.is_none() && t.actions.is_none(), "{t:?}");

    // ovs-dpctl, an independent decoder, prints what we installed.
    let text = sh(
        "ovs-dpctl",
        &["dump-flows", &format!("system@{}", dp.name())],
    );
    assert!(
        text.contains("ipv4(src=10.0.0.1,dst=10.0.0.2,proto=1,tos=0,ttl=64,frag=no)"),
        "{text}"
    );
    assert!(text.contains("dst=10.32.0.0/255.240.0.0"), "{text}");
    assert!(
        text.contains("eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02)"),
        "{text}"
    );
    assert!(text.contains(&format!("actions:{p2}")), "{text}");

    // Modify: drop (empty actions).
    flows
        .modify(&FlowSpec::new(exact_key.clone(), vec![]))
        .unwrap();
    assert_eq!(
        flows.get(&FlowId::Key(exact_key.clone())).unwrap().actions,
        Some(vec![])
    );
    let missing = flows.modify(&FlowSpec::new(
        icmp_key(p1, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST),
        vec![],
    ));
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );

    flows.delete(&FlowId::Key(exact_key.clone())).unwrap();
    let gone = flows.get(&FlowId::Key(exact_key)).unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone:?}");
    flows.flush().unwrap();
    assert!(flows.dump().unwrap().is_empty());
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_flow_invalid_key_is_typed() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "flx", &DatapathOptions::default());
    let key = FlowKey::new()
        .with(KeyAttr::InPort(1))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0x0800)));
    let spec = FlowSpec::new(key.clone(), vec![]);
    // Caught before sending, with a name for the rule...
    let err = ovs.flows(dp.ifindex()).create(&spec).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Flow(FlowError::MissingKey { needed: "ipv4", .. })
        ),
        "{err:?}"
    );
    // ...and the kernel agrees: sent anyway, it answers EINVAL.
    let family = ovs.flow_family();
    let msg = FlowMessage::new(
        ObjCmd::New,
        dp.ifindex(),
        vec![FlowAttr::Key(key), FlowAttr::Actions(vec![])],
    );
    let err = ovs
        .connection()
        .request(&OvsRequest {
            family,
            flags: NLM_F_CREATE,
            msg: &msg,
        })
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_flow_batch_create() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "flb", &DatapathOptions::default());
    let p1 = ovs
        .vports(dp.ifindex())
        .create(&VportSpec::internal(&unique("fbp1")))
        .unwrap()
        .port_no;
    let n = 5000u32;
    let specs: Vec<FlowSpec> = (0..n)
        .map(|i| {
            let dst = Ipv4Addr::from(0x0a40_0000 + i);
            FlowSpec::new(
                icmp_key(p1, Ipv4Addr::new(10, 0, 0, 1), dst),
                vec![Action::Output(p1)],
            )
        })
        .collect();
    let t = Instant::now();
    let out = ovs.flows(dp.ifindex()).create_batch(&specs).unwrap();
    let batched = t.elapsed();
    assert_eq!(out.len(), n as usize);
    assert!(
        out.iter().all(|r| r.is_ok()),
        "{:?}",
        out.iter().find(|r| r.is_err())
    );
    assert_eq!(ovs.flows(dp.ifindex()).dump().unwrap().len(), n as usize);
    // The same flows again: every one is reported as existing, matched by seq.
    let again = ovs.flows(dp.ifindex()).create_batch(&specs).unwrap();
    assert!(again.iter().all(|r| matches!(r, Err(Error::Exists { .. }))));
    // A mixed batch: odd ones new, even ones existing.
    ovs.flows(dp.ifindex()).flush().unwrap();
    let odd: Vec<FlowSpec> = specs.iter().skip(1).step_by(2).cloned().collect();
    ovs.flows(dp.ifindex()).create_batch(&odd).unwrap();
    let mixed = ovs.flows(dp.ifindex()).create_batch(&specs[..100]).unwrap();
    for (i, r) in mixed.iter().enumerate() {
        assert_eq!(r.is_ok(), i % 2 == 0, "flow {i}: {r:?}");
    }
    // One request per flow, waiting for each ack, for comparison.
    ovs.flows(dp.ifindex()).flush().unwrap();
    let t = Instant::now();
    for s in &specs {
        ovs.flows(dp.ifindex()).create(s).unwrap();
    }
    let serial = t.elapsed();
    eprintln!(
        "{n} flows: batched {:?} ({:.0}/s), one by one {:?} ({:.0}/s), ratio {:.1}",
        batched,
        f64::from(n) / batched.as_secs_f64(),
        serial,
        f64::from(n) / serial.as_secs_f64(),
        serial.as_secs_f64() / batched.as_secs_f64()
    );
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_reads_what_ovs_dpctl_created() {
    let name = unique("dpc");
    let port = unique("dpcp");
    sh_quiet("ovs-dpctl", &["del-dp", &format!("system@{name}")]);
    sh("ovs-dpctl", &["add-dp", &format!("system@{name}")]);
    let _cleanup = DpctlDp(name.clone());
    sh(
        "ovs-dpctl",
        &[
            "add-if",
            &format!("system@{name}"),
            &format!("{port},type=internal"),
        ],
    );
    sh(
        "ovs-dpctl",
        &[
            "add-flow",
            &format!("system@{name}"),
            "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800),\
             ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),udp(src=1000,dst=53)",
            "0",
        ],
    );
    let mut ovs = Ovs::connect().unwrap();
    let dp = ovs.datapaths().get(&name).unwrap();
    let vports = ovs.vports(dp.dp_ifindex).list().unwrap();
    let p = vports
        .iter()
        .find(|v| v.name == port)
        .expect("ovs-dpctl's port");
    assert_eq!(p.port_no, 1);
    let flows = ovs.flows(dp.dp_ifindex).dump().unwrap();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let f = &flows[0];
    let key = f.key.as_ref().unwrap();
    assert_eq!(key.in_port(), Some(1));
    assert!(
        key.0.contains(&KeyAttr::Udp(PortsKey {
            src: Be16(1000),
            dst: Be16(53)
        })),
        "{key:?}"
    );
    assert!(key.0.contains(&KeyAttr::Ipv4(Ipv4Key {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
        proto: 17,
        tos: 0,
        ttl: 64,
        frag: 0
    })));
    assert_eq!(f.actions, Some(vec![Action::Output(0)]));
}

struct DpctlDp(String);
impl Drop for DpctlDp {
    fn drop(&mut self) {
        sh_quiet("ovs-dpctl", &["del-dp", &format!("system@{}", self.0)]);
    }
}

fn arp_upcall(
    sock: &mut UpcallSocket,
    family: u16,
    cmd: PacketCmd,
) -> Option<odp::wire::packet::Upcall> {
    wait_for(sock, Duration::from_secs(5), |s| {
        Ok(s.recv_upcalls(family)?
            .into_iter()
            .find(|u| u.cmd == cmd && u.key.eth_type() == Some(0x0806)))
    })
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_upcalls_and_execute() {
    let mut ovs = Ovs::connect().unwrap();
    // Per-vport upcall PIDs (no per-CPU dispatch) so the vport's PID is used.
    let opts = DatapathOptions {
        features: Features::Exactly(UserFeatures::UNALIGNED),
        ..Default::default()
    };
    let dp = TestDp::create(&mut ovs, "up", &opts);
    let mut sock = UpcallSocket::open().unwrap();
    let veth = Veth::new("u");
    let port = ovs
        .vports(dp.ifindex())
        .create(&VportSpec::netdev(&veth.a).with_upcall_pids(vec![sock.pid()]))
        .unwrap()
        .port_no;
    let family = ovs.packet_family();
    sh("ip", &["addr", "add", "10.199.0.1/24", "dev", &veth.b]);
    // An ARP request leaves veth.b, enters the datapath on veth.a: a miss.
    sh_quiet("ping", &["-c", "1", "-W", "1", "-I", &veth.b, "10.199.0.2"]);
    let miss =
        arp_upcall(&mut sock, family, PacketCmd::Miss).expect("a MISS upcall for the ARP request");
    assert_eq!(miss.dp_ifindex, dp.ifindex());
    assert_eq!(miss.key.in_port(), Some(port));
    assert_eq!(miss.packet.len(), 42, "an ARP frame, received unpadded");
    assert_eq!(&miss.packet[12..14], &[0x08, 0x06]);
    assert!(
        miss.key
            .0
            .iter()
            .any(|a| matches!(a, KeyAttr::Arp(arp) if arp.tip == Ipv4Addr::new(10, 199, 0, 2)))
    );

    // Execute: send the frame back out of the same port; the vport counts it.
    let before = ovs
        .vports(dp.ifindex())
        .get(&veth.a)
        .unwrap()
        .stats
        .unwrap()
        .tx_packets;
    ovs.packets(dp.ifindex())
        .execute(
            &miss.packet,
            FlowKey::new().with(KeyAttr::InPort(port)),
            vec![Action::Output(port)],
        )
        .unwrap();
    let after = ovs
        .vports(dp.ifindex())
        .get(&veth.a)
        .unwrap()
        .stats
        .unwrap()
        .tx_packets;
    assert_eq!(after, before + 1);
    assert!(matches!(
        ovs.packets(dp.ifindex())
            .execute(&[0; 10], FlowKey::new(), vec![]),
        Err(Error::PacketTooShort(10))
    ));

    // A userspace action: ACTION upcalls carry our cookie.
    let key = FlowKey::new()
        .with(KeyAttr::InPort(port))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0x0806)))
        .with(KeyAttr::Arp(ArpKey::default()));
    let mask = FlowKey::new()
        .with(KeyAttr::InPort(u32::MAX))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0xffff)))
        .with(KeyAttr::Arp(ArpKey::default()));
    let actions = vec![Action::Userspace(vec![
        UserspaceAttr::Pid(sock.pid()),
        UserspaceAttr::Userdata(vec![1, 2, 3, 4]),
    ])];
    let ufid = Ufid::from_u128(0x5eed);
    ovs.flows(dp.ifindex())
        .create(
            &FlowSpec::new(key, actions)
                .with_mask(mask)
                .with_ufid(ufid.clone()),
        )
        .unwrap();
    sh_quiet("ping", &["-c", "1", "-W", "1", "-I", &veth.b, "10.199.0.3"]);
    let act = arp_upcall(&mut sock, family, PacketCmd::Action).expect("an ACTION upcall");
    assert_eq!(act.userdata, Some(vec![1, 2, 3, 4]));
    assert_eq!(act.key.in_port(), Some(port));
    // The flow counted the packet and its last use.
    let f = ovs.flows(dp.ifindex()).get(&FlowId::Ufid(ufid)).unwrap();
    assert!(
        f.stats.is_some_and(|s| s.n_packets >= 1 && s.n_bytes >= 42),
        "{f:?}"
    );
    assert!(f.used.is_some_and(|u| u > 0), "{f:?}");
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_upcalls_per_cpu_dispatch() {
    let mut ovs = Ovs::connect().unwrap();
    let mut sock = UpcallSocket::open().unwrap();
    // Negotiated features (per-CPU dispatch on 6.1); one PID serves every CPU.
    let opts = DatapathOptions {
        per_cpu_pids: vec![sock.pid()],
        ..Default::default()
    };
    let dp = TestDp::create(&mut ovs, "upc", &opts);
    let f = dp.info.user_features.unwrap();
    assert!(f.contains(UserFeatures::DISPATCH_UPCALL_PER_CPU), "{f:?}");
    assert_eq!(
        dp.info.per_cpu_pids.as_deref().map(|p| p[0]),
        Some(sock.pid())
    );
    let veth = Veth::new("c");
    // The vport's own PID is ignored in per-CPU mode.
    let port = ovs
        .vports(dp.ifindex())
        .create(&VportSpec::netdev(&veth.a))
        .unwrap()
        .port_no;
    sh("ip", &["addr", "add", "10.198.0.1/24", "dev", &veth.b]);
    sh_quiet("ping", &["-c", "1", "-W", "1", "-I", &veth.b, "10.198.0.2"]);
    let family = ovs.packet_family();
    let miss = arp_upcall(&mut sock, family, PacketCmd::Miss).expect("a per-CPU MISS upcall");
    assert_eq!(miss.key.in_port(), Some(port));
}
