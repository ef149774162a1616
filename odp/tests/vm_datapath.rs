//! Datapath and vport handles against the kernel datapath (run in the VM:
//! `cargo xtask vm -- target/debug/deps/vm_datapath-<hash> --include-ignored --test-threads=1`).

mod common;

use std::time::Duration;

use common::{TestDp, Veth, sh, unique, wait_for};
use odp::handle::{DatapathOptions, Features, Ovs, VportSpec};
use odp::transport::Error;
use odp::wire::datapath::{DatapathAttr, UserFeatures};
use odp::wire::ovs::ObjCmd;
use odp::wire::vport::{TunnelOption, VportAttr, VportType, VxlanExt};

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_datapath_create_get_list_delete() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "dp", &DatapathOptions::default());
    let name = dp.name().to_owned();
    assert!(dp.ifindex() > 0);
    let f = dp.info.user_features.expect("features in the reply");
    // Kernel 6.1 has per-CPU dispatch: negotiation takes the best set.
    assert!(
        f.contains(UserFeatures::UNALIGNED | UserFeatures::DISPATCH_UPCALL_PER_CPU),
        "{f:?}"
    );
    assert!(dp.info.stats.is_some() && dp.info.megaflow_stats.is_some());

    let by_name = ovs.datapaths().get(&name).unwrap();
    assert_eq!(by_name.dp_ifindex, dp.ifindex());
    let by_index = ovs.datapaths().get_by_ifindex(dp.ifindex()).unwrap();
    assert_eq!(by_index.name, name);
    assert!(
        ovs.datapaths()
            .list()
            .unwrap()
            .iter()
            .any(|d| d.name == name)
    );

    let again = ovs
        .datapaths()
        .create(&name, &DatapathOptions::default())
        .unwrap_err();
    assert!(matches!(again, Error::Exists { .. }), "{again:?}");

    // ovs-dpctl (an independent implementation) sees it; the test owns it.
    let show = sh("ovs-dpctl", &["show", &format!("system@{name}")]);
    assert!(show.contains(&format!("system@{name}:")), "{show}");

    ovs.datapaths().delete(&name).unwrap();
    let gone = ovs.datapaths().get(&name).unwrap_err();
    assert!(matches!(gone, Error::NoDevice { .. }), "{gone:?}");
    let gone = ovs.datapaths().delete(&name).unwrap_err();
    assert!(matches!(gone, Error::NoDevice { .. }), "{gone:?}");
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_datapath_features_and_set() {
    let mut ovs = Ovs::connect().unwrap();
    let name = unique("dpf");
    let bogus = DatapathOptions {
        features: Features::Exactly(UserFeatures(1 << 30)),
        ..Default::default()
    };
    let err = ovs.datapaths().create(&name, &bogus).unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err:?}");
    assert!(matches!(
        ovs.datapaths().get(&name),
        Err(Error::NoDevice { .. })
    ));

    let opts = DatapathOptions {
        features: Features::Exactly(UserFeatures::UNALIGNED),
        ..Default::default()
    };
    let dp = TestDp::create(&mut ovs, "dpf", &opts);
    assert_eq!(dp.info.user_features, Some(UserFeatures::UNALIGNED));
    let set = ovs
        .datapaths()
        .set(
            dp.name(),
            vec![
                DatapathAttr::UserFeatures(
                    UserFeatures::UNALIGNED | UserFeatures::DISPATCH_UPCALL_PER_CPU,
                ),
                DatapathAttr::PerCpuPids(vec![4242, 4243]),
            ],
        )
        .unwrap();
    assert_eq!(
        set.user_features,
        Some(UserFeatures::UNALIGNED | UserFeatures::DISPATCH_UPCALL_PER_CPU)
    );
    assert_eq!(
        set.per_cpu_pids.as_deref().map(|p| &p[..2]),
        Some(&[4242, 4243][..])
    );
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_vport_lifecycle() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "dpv", &DatapathOptions::default());
    let veth = Veth::new("v");
    let int_name = unique("int");
    let vx_name = unique("vx");
    let gbp_name = unique("gbp");

    let mut vports = ovs.vports(dp.ifindex());
    let int = vports.create(&VportSpec::internal(&int_name)).unwrap();
    assert_eq!(int.kind, VportType::Internal);
    assert!(int.port_no > 0);
    assert!(
        int.ifindex.is_some_and(|i| i > 0),
        "6.1 reports the internal port's ifindex: {int:?}"
    );
    let nd = vports
        .create(&VportSpec::netdev(&veth.a).with_upcall_pids(vec![77]))
        .unwrap();
    assert_eq!(
        (nd.kind, nd.upcall_pids.clone()),
        (VportType::Netdev, vec![77])
    );
    let vx = vports.create(&VportSpec::vxlan(&vx_name, 4799)).unwrap();
    assert_eq!(vx.kind, VportType::Vxlan);
    assert_eq!(vx.dst_port(), Some(4799));
    let gbp = vports
        .create(&VportSpec::vxlan_gbp(&gbp_name, 4798))
        .unwrap();
    assert!(
        gbp.options
            .contains(&TunnelOption::Extension(vec![VxlanExt::Gbp])),
        "{gbp:?}"
    );

    let dup = vports.create(&VportSpec::internal(&int_name)).unwrap_err();
    assert!(matches!(dup, Error::Exists { .. }), "{dup:?}");

    let list = vports.list().unwrap();
    let names: Vec<&str> = list.iter().map(|v| v.name.as_str()).collect();
    for n in [
        dp.name(),
        int_name.as_str(),
        veth.a.as_str(),
        vx_name.as_str(),
        gbp_name.as_str(),
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    assert_eq!(vports.get(&vx_name).unwrap().port_no, vx.port_no);
    assert_eq!(vports.get_by_port(int.port_no).unwrap().name, int_name);
    let upd = vports.set_upcall_pids(&veth.a, vec![5, 6]).unwrap();
    // Without the VPORT_PIDS feature the kernel keeps and reports only one.
    let multi = dp
        .info
        .user_features
        .is_some_and(|f| f.contains(UserFeatures::VPORT_PIDS));
    assert_eq!(upd.upcall_pids, if multi { vec![5, 6] } else { vec![5] });

    let show = sh("ovs-dpctl", &["show", &format!("system@{}", dp.name())]);
    assert!(
        show.contains(&format!("port {}: {vx_name} (vxlan", vx.port_no)),
        "{show}"
    );
    // The kernel made metadata-mode VXLAN netdevs with our options.
    let link = sh("ip", &["-d", "link", "show", &vx_name]);
    assert!(
        link.contains("external") && link.contains("dstport 4799"),
        "{link}"
    );
    let link = sh("ip", &["-d", "link", "show", &gbp_name]);
    assert!(
        link.contains("dstport 4798") && link.contains("gbp"),
        "{link}"
    );
    assert!(
        show.contains(&format!("port {}: {int_name} (internal)", int.port_no)),
        "{show}"
    );
    assert!(
        show.contains(&format!("port {}: {}", nd.port_no, veth.a)),
        "{show}"
    );

    vports.delete(&vx_name).unwrap();
    vports.delete_by_port(gbp.port_no).unwrap();
    let gone = vports.get(&vx_name).unwrap_err();
    assert!(matches!(gone, Error::NoDevice { .. }), "{gone:?}");
    let gone = vports.delete(&vx_name).unwrap_err();
    assert!(matches!(gone, Error::NoDevice { .. }), "{gone:?}");
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_vport_on_missing_datapath_is_nodevice() {
    let mut ovs = Ovs::connect().unwrap();
    let err = ovs
        .vports(0x7fff_0000)
        .create(&VportSpec::internal(&unique("nodp")))
        .unwrap_err();
    assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_vport_events_arrive() {
    let mut ovs = Ovs::connect().unwrap();
    let dp = TestDp::create(&mut ovs, "dpe", &DatapathOptions::default());
    let mut events = ovs.vport_events().unwrap();
    let family = ovs.vport_family();
    let name = unique("evt");
    ovs.vports(dp.ifindex())
        .create(&VportSpec::internal(&name))
        .unwrap();
    let has = |cmd: ObjCmd, name: &str, msgs: &[odp::wire::vport::VportMessage]| {
        msgs.iter()
            .any(|m| m.cmd == cmd && m.attrs.contains(&VportAttr::Name(name.to_owned())))
    };
    let got_new = wait_for(&mut events, Duration::from_secs(3), |s| {
        let msgs = s.recv_vport_events(family)?;
        Ok(has(ObjCmd::New, &name, &msgs).then_some(()))
    });
    assert!(got_new.is_some(), "no NEW notification for {name}");
    ovs.vports(dp.ifindex()).delete(&name).unwrap();
    let got_del = wait_for(&mut events, Duration::from_secs(3), |s| {
        let msgs = s.recv_vport_events(family)?;
        Ok(has(ObjCmd::Del, &name, &msgs).then_some(()))
    });
    assert!(got_del.is_some(), "no DEL notification for {name}");
}
