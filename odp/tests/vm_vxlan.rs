//! Traffic through two kernel datapaths joined by VXLAN: set(tunnel) on the
//! way out, tunnel-key matches on the way in. Each datapath lives in its own
//! network namespace (run in the VM).

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use common::{sh, sh_quiet};
use odp::handle::{DatapathOptions, FlowId, FlowSpec, Ovs, VportSpec};
use odp::wire::action::Action;
use odp::wire::flow::Ufid;
use odp::wire::key::{EthernetKey, FlowKey, Ipv4Key, KeyAttr, TunnelKeyAttr};
use odp::wire::types::{Be16, Be64, MacAddr};

/// Runs `f` on a thread that has entered network namespace `ns`; sockets
/// opened there stay bound to that namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            // SAFETY: setns takes a valid namespace fd (kept open by `file`)
            // and only changes this thread's network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn nsh(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    sh("ip", &all)
}

struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            sh_quiet("ip", &["netns", "del", n]);
        }
    }
}

struct Side {
    ovs: Ovs,
    dp: i32,
    int_port: u32,
    vx_port: u32,
    mac: MacAddr,
}

fn setup(ns: &str, int: &str, addr: &str) -> Side {
    let mut ovs = in_netns(ns, || Ovs::connect().unwrap());
    let dp = ovs
        .datapaths()
        .create("dpvx", &DatapathOptions::default())
        .unwrap()
        .dp_ifindex;
    let int_port = ovs
        .vports(dp)
        .create(&VportSpec::internal(int))
        .unwrap()
        .port_no;
    let vx_port = ovs
        .vports(dp)
        .create(&VportSpec::vxlan("vxlan_sys", 4789))
        .unwrap()
        .port_no;
    nsh(ns, &["ip", "addr", "add", addr, "dev", int]);
    nsh(ns, &["ip", "link", "set", int, "up"]);
    let mac_text = nsh(ns, &["cat", &format!("/sys/class/net/{int}/address")]);
    let mut mac = [0u8; 6];
    for (i, part) in mac_text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).unwrap();
    }
    Side {
        ovs,
        dp,
        int_port,
        vx_port,
        mac: MacAddr(mac),
    }
}

fn ip_any(in_port: u32) -> (FlowKey, FlowKey) {
    let key = FlowKey::new()
        .with(KeyAttr::InPort(in_port))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key::default()));
    let mask = FlowKey::new()
        .with(KeyAttr::InPort(u32::MAX))
        .with(KeyAttr::Ethernet(EthernetKey::default()))
        .with(KeyAttr::EtherType(Be16(0xffff)))
        .with(KeyAttr::Ipv4(Ipv4Key::default()));
    (key, mask)
}

/// Out: IPv4 from the internal port gets VNI 0x5 towards `remote`.
/// In: VNI 0x5 from `remote` to `local` goes to the internal port.
fn install(side: &mut Side, local: Ipv4Addr, remote: Ipv4Addr) -> (Ufid, Ufid) {
    let (key, mask) = ip_any(side.int_port);
    let out = FlowSpec::new(
        key,
        vec![
            Action::Set(KeyAttr::Tunnel(vec![
                TunnelKeyAttr::Id(Be64(0x5)),
                TunnelKeyAttr::Ipv4Dst(remote),
                TunnelKeyAttr::Ttl(64),
            ])),
            Action::Output(side.vx_port),
        ],
    )
    .with_mask(mask)
    .with_ufid(Ufid::from_u128(1));
    let (key, mask) = ip_any(side.vx_port);
    let tun_key = vec![
        TunnelKeyAttr::Id(Be64(0x5)),
        TunnelKeyAttr::Ipv4Src(remote),
        TunnelKeyAttr::Ipv4Dst(local),
        TunnelKeyAttr::Ttl(0),
    ];
    let tun_mask = vec![
        TunnelKeyAttr::Id(Be64(u64::MAX)),
        TunnelKeyAttr::Ipv4Src(Ipv4Addr::BROADCAST),
        TunnelKeyAttr::Ipv4Dst(Ipv4Addr::BROADCAST),
        TunnelKeyAttr::Ttl(0),
    ];
    let mut key = key;
    key.0.insert(0, KeyAttr::Tunnel(tun_key));
    let mut mask = mask;
    mask.0.insert(0, KeyAttr::Tunnel(tun_mask));
    let inbound = FlowSpec::new(key, vec![Action::Output(side.int_port)])
        .with_mask(mask)
        .with_ufid(Ufid::from_u128(2));
    side.ovs.flows(side.dp).create(&out).unwrap();
    side.ovs.flows(side.dp).create(&inbound).unwrap();
    (Ufid::from_u128(1), Ufid::from_u128(2))
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_vxlan_between_two_datapaths() {
    let tag = std::process::id() % 100_000;
    let (ns1, ns2) = (format!("odpvx1-{tag}"), format!("odpvx2-{tag}"));
    sh("ip", &["netns", "add", &ns1]);
    let _g = Netns(vec![ns1.clone()]);
    sh("ip", &["netns", "add", &ns2]);
    let _g2 = Netns(vec![ns2.clone()]);
    // Underlay: a veth pair between the namespaces.
    sh(
        "ip",
        &[
            "link", "add", "u1", "netns", &ns1, "type", "veth", "peer", "name", "u2", "netns", &ns2,
        ],
    );
    nsh(&ns1, &["ip", "addr", "add", "192.168.77.1/24", "dev", "u1"]);
    nsh(&ns2, &["ip", "addr", "add", "192.168.77.2/24", "dev", "u2"]);
    nsh(&ns1, &["ip", "link", "set", "u1", "up"]);
    nsh(&ns2, &["ip", "link", "set", "u2", "up"]);

    let mut a = setup(&ns1, "i1", "10.40.0.1/24");
    let mut b = setup(&ns2, "i2", "10.40.0.2/24");
    // Static neighbours: only IPv4 crosses the tunnel.
    nsh(
        &ns1,
        &[
            "ip",
            "neigh",
            "add",
            "10.40.0.2",
            "lladdr",
            &b.mac.to_string(),
            "dev",
            "i1",
        ],
    );
    nsh(
        &ns2,
        &[
            "ip",
            "neigh",
            "add",
            "10.40.0.1",
            "lladdr",
            &a.mac.to_string(),
            "dev",
            "i2",
        ],
    );
    let (ua_out, ua_in) = install(
        &mut a,
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    );
    let (_, ub_in) = install(
        &mut b,
        Ipv4Addr::new(192, 168, 77, 2),
        Ipv4Addr::new(192, 168, 77, 1),
    );

    nsh(
        &ns1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.40.0.2"],
    );

    let stats = |s: &mut Side, u: &Ufid| {
        s.ovs
            .flows(s.dp)
            .get(&FlowId::Ufid(u.clone()))
            .unwrap()
            .stats
    };
    assert!(
        stats(&mut a, &ua_out).is_some_and(|s| s.n_packets >= 3),
        "outbound flow on a"
    );
    assert!(
        stats(&mut b, &ub_in).is_some_and(|s| s.n_packets >= 3),
        "tunnel-matched flow on b"
    );
    assert!(
        stats(&mut a, &ua_in).is_some_and(|s| s.n_packets >= 3),
        "replies matched on a"
    );

    // Drop flow: replacing b's inbound actions with nothing stops the ping.
    let inbound = b.ovs.flows(b.dp).get(&FlowId::Ufid(ub_in.clone())).unwrap();
    let spec = FlowSpec {
        key: inbound.key.clone().unwrap(),
        mask: inbound.mask.clone(),
        actions: vec![],
        ufid: Some(ub_in.clone()),
    };
    b.ovs.flows(b.dp).modify(&spec).unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns1,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.40.0.2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "ping went through a drop flow");
    for s in [&mut a, &mut b] {
        s.ovs.datapaths().delete("dpvx").unwrap();
    }
}
