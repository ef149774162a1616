//! The tokio API against the kernel datapath (run in the VM by
//! `cargo xtask test`): create, dump and delete through streams and batches,
//! vport events, geneve and gre vports, upcalls, and the error variants.
#![cfg(feature = "tokio")]

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::{Veth, sh, sh_quiet, unique};
use odp::handle::aio::{AsyncOvs, VportEvent, VportEvents};
use odp::handle::{DatapathOptions, Features, FlowId, FlowSpec, Ovs, VportSpec};
use odp::transport::Error;
use odp::wire::action::Action;
use odp::wire::datapath::{DatapathAttr, UserFeatures};
use odp::wire::flow::{Ufid, UfidFlags};
use odp::wire::key::{EthernetKey, FlowKey, IcmpKey, Ipv4Key, KeyAttr};
use odp::wire::ovs::ObjCmd;
use odp::wire::packet::PacketCmd;
use odp::wire::types::{Be16, MacAddr};
use odp::wire::validate::FlowError;
use odp::wire::vport::VportType;

/// Deletes the datapath (through the sync API) when dropped.
struct DpGuard(String);

impl Drop for DpGuard {
    fn drop(&mut self) {
        if let Ok(mut ovs) = Ovs::connect() {
            let _ = ovs.datapaths().delete(&self.0);
        }
    }
}

async fn create_dp(ovs: &mut AsyncOvs, tag: &str, opts: &DatapathOptions) -> (DpGuard, i32) {
    let name = unique(tag);
    let _ = ovs.datapaths().delete(&name).await;
    let info = ovs.datapaths().create(&name, opts).await.unwrap();
    assert_eq!(info.name, name);
    (DpGuard(name), info.dp_ifindex)
}

fn icmp_flow(in_port: u32, i: u32) -> FlowSpec {
    let key = FlowKey::new()
        .with(KeyAttr::InPort(in_port))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
        }))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::from(0x0a40_0000 + i),
            proto: 1,
            tos: 0,
            ttl: 64,
            frag: 0,
        }))
        .with(KeyAttr::Icmp(IcmpKey {
            icmp_type: 8,
            code: 0,
        }));
    FlowSpec::new(key, vec![Action::Output(in_port)]).with_ufid(Ufid::from_u128(u128::from(i) + 1))
}

/// Waits for a vport event matching `cmd` and `name` (other datapaths' events
/// may be interleaved).
async fn event(events: &mut VportEvents, cmd: ObjCmd, name: &str) -> VportEvent {
    let wait = async {
        loop {
            match events.next().await {
                Some(Ok(e)) if e.cmd == cmd && e.vport.name == name => return e,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("vport event stream: {e}"),
                None => panic!("vport event stream ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {cmd:?} event for {name}"))
}

#[tokio::test]
#[ignore = "needs the VM: run by cargo xtask test"]
async fn vm_async_create_dump_delete() {
    let mut ovs = AsyncOvs::connect().await.unwrap();
    let (dp, ifindex) = create_dp(&mut ovs, "as", &DatapathOptions::default()).await;
    let stats = ovs.datapaths().stats(&dp.0).await.unwrap();
    assert_eq!(stats.packets.n_flows, 0);
    assert!(
        ovs.datapaths()
            .list()
            .await
            .unwrap()
            .iter()
            .any(|d| d.name == dp.0 && d.dp_ifindex == ifindex)
    );
    assert_eq!(
        ovs.datapaths().get_by_ifindex(ifindex).await.unwrap().name,
        dp.0
    );

    let int_name = unique("asi");
    let port = ovs
        .vports(ifindex)
        .create(&VportSpec::internal(&int_name))
        .await
        .unwrap();
    assert_eq!(port.kind, VportType::Internal);
    // Vport dump as a stream: the local port and ours.
    let mut names = Vec::new();
    let mut dump = ovs.vports(ifindex).dump().await.unwrap();
    while let Some(v) = dump.next().await {
        names.push(v.unwrap().name);
    }
    assert!(
        names.contains(&dp.0) && names.contains(&int_name),
        "{names:?}"
    );

    // Batched create, then the flows come back through the dump stream.
    let n = 300u32;
    let specs: Vec<FlowSpec> = (0..n).map(|i| icmp_flow(port.port_no, i)).collect();
    let out = ovs.flows(ifindex).create_batch(&specs).await.unwrap();
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    let again = ovs.flows(ifindex).create_batch(&specs[..10]).await.unwrap();
    assert!(again.iter().all(|r| matches!(r, Err(Error::Exists { .. }))));
    let dup = ovs.flows(ifindex).create(&specs[0]).await.unwrap_err();
    assert!(matches!(dup, Error::Exists { .. }), "{dup:?}");
    let mut dump = ovs.flows(ifindex).dump(UfidFlags(0)).await.unwrap();
    let mut full = 0;
    while let Some(f) = dump.next().await {
        let f = f.unwrap();
        assert!(f.key.is_some() && f.actions.is_some(), "{f:?}");
        full += 1;
    }
    assert_eq!(full, n);
    // Terse: UFIDs only.
    let terse = ovs
        .flows(ifindex)
        .dump(UfidFlags::TERSE)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(terse.len(), n as usize);
    assert!(terse.iter().all(|f| f.key.is_none() && f.ufid.is_some()));
    assert_eq!(
        ovs.datapaths().stats(&dp.0).await.unwrap().packets.n_flows,
        u64::from(n)
    );

    // Get one, modify it, then delete half by UFID in one batch.
    let id = FlowId::Ufid(Ufid::from_u128(5));
    let f = ovs.flows(ifindex).get(&id).await.unwrap();
    assert_eq!(f.actions, Some(vec![Action::Output(port.port_no)]));
    let mut dropping = specs[4].clone();
    dropping.actions = vec![];
    ovs.flows(ifindex).modify(&dropping).await.unwrap();
    assert_eq!(
        ovs.flows(ifindex).get(&id).await.unwrap().actions,
        Some(vec![])
    );
    let ids: Vec<FlowId> = (0..n)
        .step_by(2)
        .map(|i| FlowId::Ufid(Ufid::from_u128(u128::from(i) + 1)))
        .collect();
    let del = ovs.flows(ifindex).delete_batch(&ids).await.unwrap();
    assert!(del.iter().all(|r| r.is_ok()), "{del:?}");
    let del = ovs.flows(ifindex).delete_batch(&ids[..5]).await.unwrap();
    assert!(
        del.iter().all(|r| matches!(r, Err(Error::NotFound { .. }))),
        "{del:?}"
    );
    let left = ovs
        .flows(ifindex)
        .dump(UfidFlags::TERSE)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(left.len(), (n / 2) as usize);
    // Flows installed with a UFID are addressed by it: on 6.1 a DEL by key
    // does not find them (ENOENT).
    let by_key = ovs
        .flows(ifindex)
        .delete(&FlowId::Key(specs[1].key.clone()))
        .await
        .unwrap_err();
    assert!(matches!(by_key, Error::NotFound { .. }), "{by_key:?}");
    ovs.flows(ifindex)
        .delete(&FlowId::Ufid(Ufid::from_u128(2)))
        .await
        .unwrap();
    ovs.flows(ifindex).flush().await.unwrap();
    assert_eq!(
        ovs.datapaths().stats(&dp.0).await.unwrap().packets.n_flows,
        0
    );

    // The sync handles agree (flow batch delete and stats there too).
    let mut sync = Ovs::connect().unwrap();
    let plain: Vec<FlowSpec> = specs[..20]
        .iter()
        .map(|s| FlowSpec::new(s.key.clone(), s.actions.clone()))
        .collect();
    let out = sync.flows(ifindex).create_batch(&plain).unwrap();
    assert!(out.iter().all(|r| r.is_ok()));
    let ids: Vec<FlowId> = plain.iter().map(|s| FlowId::Key(s.key.clone())).collect();
    let del = sync.flows(ifindex).delete_batch(&ids).unwrap();
    assert!(del.iter().all(|r| r.is_ok()), "{del:?}");
    assert_eq!(sync.datapaths().stats(&dp.0).unwrap().packets.n_flows, 0);
    assert_eq!(sync.vports(ifindex).stats(&int_name).unwrap().rx_errors, 0);

    ovs.vports(ifindex).delete(&int_name).await.unwrap();
    ovs.datapaths().delete(&dp.0).await.unwrap();
    let gone = ovs.datapaths().get(&dp.0).await.unwrap_err();
    assert!(matches!(gone, Error::NoDevice { .. }), "{gone:?}");
}

#[tokio::test]
#[ignore = "needs the VM: run by cargo xtask test"]
async fn vm_async_vport_events_add_and_delete() {
    let mut ovs = AsyncOvs::connect().await.unwrap();
    let mut events = ovs.vport_events().await.unwrap();
    let (_dp, ifindex) = create_dp(&mut ovs, "ae", &DatapathOptions::default()).await;
    let name = unique("aev");
    let created = ovs
        .vports(ifindex)
        .create(&VportSpec::internal(&name))
        .await
        .unwrap();
    let new = event(&mut events, ObjCmd::New, &name).await;
    assert_eq!(new.vport.port_no, created.port_no);
    assert_eq!(new.vport.dp_ifindex, ifindex);
    assert_eq!(new.vport.kind, VportType::Internal);
    let set = ovs
        .vports(ifindex)
        .set_upcall_pids(&name, vec![4321])
        .await
        .unwrap();
    assert_eq!(set.upcall_pids.first(), Some(&4321));
    let changed = event(&mut events, ObjCmd::Set, &name).await;
    assert_eq!(changed.vport.upcall_pids.first(), Some(&4321));
    ovs.vports(ifindex).delete(&name).await.unwrap();
    let del = event(&mut events, ObjCmd::Del, &name).await;
    assert_eq!(del.vport.port_no, created.port_no);

    // A netdev vport goes away with its device: the kernel says DEL too.
    let veth = Veth::new("ae");
    ovs.vports(ifindex)
        .create(&VportSpec::netdev(&veth.a))
        .await
        .unwrap();
    event(&mut events, ObjCmd::New, &veth.a).await;
    sh("ip", &["link", "del", &veth.a]);
    event(&mut events, ObjCmd::Del, &veth.a).await;
}

#[tokio::test]
#[ignore = "needs the VM: run by cargo xtask test"]
async fn vm_async_geneve_and_gre_vports() {
    // The kernel loads vport modules on demand; load them up front so a
    // guest without module autoloading still runs the test.
    sh_quiet("modprobe", &["vport-geneve"]);
    sh_quiet("modprobe", &["vport-gre"]);
    let mut ovs = AsyncOvs::connect().await.unwrap();
    let (dp, ifindex) = create_dp(&mut ovs, "ag", &DatapathOptions::default()).await;
    let gnv = unique("agnv");
    let gre = unique("agre");
    let g = ovs
        .vports(ifindex)
        .create(&VportSpec::geneve(&gnv, 6091))
        .await
        .unwrap();
    assert_eq!((g.kind, g.dst_port()), (VportType::Geneve, Some(6091)));
    let r = ovs
        .vports(ifindex)
        .create(&VportSpec::gre(&gre))
        .await
        .unwrap();
    assert_eq!(r.kind, VportType::Gre);
    let listed = ovs.vports(ifindex).list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|v| v.name == gnv && v.dst_port() == Some(6091))
    );
    assert!(
        listed
            .iter()
            .any(|v| v.name == gre && v.kind == VportType::Gre)
    );
    // The kernel made metadata-mode tunnel netdevs named after the vports.
    let link = sh("ip", &["-d", "link", "show", &gnv]);
    assert!(
        link.contains("geneve") && link.contains("external") && link.contains("dstport 6091"),
        "{link}"
    );
    let link = sh("ip", &["-d", "link", "show", &gre]);
    assert!(
        link.contains("gretap") && link.contains("external"),
        "{link}"
    );
    let show = sh("ovs-dpctl", &["show", &format!("system@{}", dp.0)]);
    assert!(
        show.contains(&format!("{gnv} (geneve: dst_port=6091)"))
            || show.contains(&format!("{gnv} (geneve")),
        "{show}"
    );
    assert!(show.contains(&format!("{gre} (gre")), "{show}");
    // The same through the sync API on the same datapath.
    let mut sync = Ovs::connect().unwrap();
    let g2 = unique("sgnv");
    let v = sync
        .vports(ifindex)
        .create(&VportSpec::geneve(&g2, 6092))
        .unwrap();
    assert_eq!(v.dst_port(), Some(6092));
    ovs.vports(ifindex).delete(&gnv).await.unwrap();
    ovs.vports(ifindex).delete_by_port(r.port_no).await.unwrap();
    sync.vports(ifindex).delete(&g2).unwrap();
}

#[tokio::test]
#[ignore = "needs the VM: run by cargo xtask test"]
async fn vm_async_error_variants() {
    let mut ovs = AsyncOvs::connect().await.unwrap();
    let (dp, ifindex) = create_dp(&mut ovs, "ax", &DatapathOptions::default()).await;
    // Duplicate datapath.
    let dup = ovs
        .datapaths()
        .create(&dp.0, &DatapathOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::Exists { .. }), "{dup:?}");
    // Missing vport, by name and by number; vport on a missing datapath.
    let missing = ovs
        .vports(ifindex)
        .get(&unique("axnone"))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NoDevice { .. }), "{missing:?}");
    let missing = ovs.vports(ifindex).get_by_port(4000).await.unwrap_err();
    assert!(
        matches!(missing, Error::NoDevice { .. } | Error::NotFound { .. }),
        "{missing:?}"
    );
    let missing = ovs
        .vports(ifindex)
        .delete(&unique("axnone"))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NoDevice { .. }), "{missing:?}");
    let nodp = ovs
        .vports(0x7fff_0001)
        .create(&VportSpec::internal(&unique("axnd")))
        .await
        .unwrap_err();
    assert!(matches!(nodp, Error::NoDevice { .. }), "{nodp:?}");
    // Invalid key combination: named before anything is sent.
    let key = FlowKey::new()
        .with(KeyAttr::InPort(1))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0x0800)));
    let bad = ovs
        .flows(ifindex)
        .create(&FlowSpec::new(key.clone(), vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad,
            Error::Flow(FlowError::MissingKey { needed: "ipv4", .. })
        ),
        "{bad:?}"
    );
    let mut batch = vec![icmp_flow(1, 1), FlowSpec::new(key, vec![]), icmp_flow(1, 2)];
    batch[0].ufid = None;
    let out = ovs.flows(ifindex).create_batch(&batch).await.unwrap();
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(matches!(out[1], Err(Error::Flow(_))), "{out:?}");
    // Missing flow.
    let none = ovs
        .flows(ifindex)
        .delete(&FlowId::Ufid(Ufid::from_u128(0xdead)))
        .await
        .unwrap_err();
    assert!(matches!(none, Error::NotFound { .. }), "{none:?}");
    let none = ovs
        .flows(ifindex)
        .modify(&icmp_flow(1, 77))
        .await
        .unwrap_err();
    assert!(matches!(none, Error::NotFound { .. }), "{none:?}");
    // Unknown feature bits.
    let bogus = DatapathOptions {
        features: Features::Exactly(UserFeatures(1 << 30)),
        ..Default::default()
    };
    let err = ovs
        .datapaths()
        .create(&unique("axf"), &bogus)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
}

#[tokio::test]
#[ignore = "needs the VM: run by cargo xtask test"]
async fn vm_async_upcalls_set_and_execute() {
    let mut ovs = AsyncOvs::connect().await.unwrap();
    let opts = DatapathOptions {
        features: Features::Exactly(UserFeatures::UNALIGNED),
        ..Default::default()
    };
    let (dp, ifindex) = create_dp(&mut ovs, "au", &opts).await;
    let mut upcalls = ovs.upcalls().unwrap();
    let veth = Veth::new("au");
    // No IPv6 autoconfiguration traffic of its own on the datapath's side,
    // so that its tx counter moves only with what the test sends.
    sh(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", veth.a)],
    );
    let port = ovs
        .vports(ifindex)
        .create(&VportSpec::netdev(&veth.a).with_upcall_pids(vec![upcalls.pid()]))
        .await
        .unwrap()
        .port_no;
    sh("ip", &["addr", "add", "10.196.0.1/24", "dev", &veth.b]);
    sh(
        "ip",
        &[
            "neigh",
            "add",
            "10.196.0.2",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            &veth.b,
        ],
    );
    // UDP datagrams leave veth.b and miss in the datapath.
    let sender = UdpSocket::bind("10.196.0.1:0").unwrap();
    for _ in 0..20 {
        sender.send_to(b"odp async upcall", "10.196.0.2:9").unwrap();
    }
    let mut misses = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while misses.len() < 20 {
            let u = upcalls.next().await.unwrap().unwrap();
            if u.cmd == PacketCmd::Miss && u.key.eth_type() == Some(0x0800) {
                misses.push(u);
            }
        }
    })
    .await;
    assert!(got.is_ok(), "only {} misses", misses.len());
    let m = &misses[0];
    assert_eq!((m.dp_ifindex, m.key.in_port()), (ifindex, Some(port)));
    assert!(m.packet.ends_with(b"odp async upcall"));
    let st = ovs.datapaths().stats(&dp.0).await.unwrap();
    assert!(st.packets.n_missed >= 20, "{st:?}");

    // Execute sends the frame back out; the vport counts it.
    let before = ovs.vports(ifindex).stats(&veth.a).await.unwrap().tx_packets;
    ovs.packets(ifindex)
        .execute(
            &m.packet,
            FlowKey::new().with(KeyAttr::InPort(port)),
            vec![Action::Output(port)],
        )
        .await
        .unwrap();
    let after = ovs.vports(ifindex).stats(&veth.a).await.unwrap().tx_packets;
    assert_eq!(after, before + 1);
    let short = ovs
        .packets(ifindex)
        .execute(&[0; 4], FlowKey::new(), vec![])
        .await
        .unwrap_err();
    assert!(matches!(short, Error::PacketTooShort(4)));

    // Datapath set through the async handle (our own datapath).
    let set = ovs
        .datapaths()
        .set(
            &dp.0,
            vec![
                DatapathAttr::UserFeatures(
                    UserFeatures::UNALIGNED | UserFeatures::DISPATCH_UPCALL_PER_CPU,
                ),
                DatapathAttr::PerCpuPids(vec![upcalls.pid(); 2]),
            ],
        )
        .await
        .unwrap();
    assert!(
        set.user_features
            .is_some_and(|f| f.contains(UserFeatures::DISPATCH_UPCALL_PER_CPU)),
        "{set:?}"
    );
    // Per-CPU dispatch now: misses still reach the same stream.
    sender.send_to(b"per-cpu", "10.196.0.2:9").unwrap();
    let per_cpu = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let u = upcalls.next().await.unwrap().unwrap();
            if u.packet.ends_with(b"per-cpu") {
                return u;
            }
        }
    })
    .await
    .expect("a per-CPU miss upcall");
    assert_eq!(per_cpu.key.in_port(), Some(port));
}
