//! Host-namespace tests of the bridge set-up, `reset` and `expose`: each
//! test runs the library's functions on a thread moved into a netlab host's
//! namespace and checks the result with iproute2 and iptables. They need
//! root; the host kernel has no openvswitch, so fastdp requests fall back to
//! Bridge here (the VM stage covers the datapath types).

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use weave_router::net::firewall::rules::FirewallConfig;
use weave_router::net::firewall::{Firewall, iptables::Variant};
use weave_router::net::link::MacAddr;
use weave_router::net::netns::{in_netns, named};
use weave_router::net::plan::{BridgeConfig, BridgeType, OdpSupport, PlanError};
use weave_router::net::rtnl::Rtnl;
use weave_router::net::setup::{SetupError, ensure_bridge, plan_for_host};
use weave_router::net::sysctl::Sysctl;
use weave_router::net::{datapath, ethtool, expose, teardown};
use weave_tests::{Host, Lab};

const MAC: MacAddr = MacAddr([0x0a, 0x5e, 0x00, 0x00, 0x00, 0x01]);

/// Runs `work` inside `host`'s network namespace.
fn on<T, F>(host: &Host, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    in_netns(&named(host.netns()), work)?
}

fn link_details(host: &Host, name: &str) -> Result<String> {
    Ok(host.run(&["ip", "-d", "link", "show", name])?.stdout)
}

fn sysctl_value(host: &Host, path: &str) -> Result<String> {
    Ok(host
        .run(&["cat", &format!("/proc/sys/{path}")])?
        .stdout
        .trim()
        .to_string())
}

fn links(host: &Host) -> Result<Vec<String>> {
    let out = host.run(&["ip", "-o", "link", "show"])?.stdout;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

fn bridge_up(host: &Host, config: BridgeConfig) -> Result<weave_router::net::plan::BridgePlan> {
    on(host, move || {
        let odp = datapath::probe_openvswitch();
        let mut rtnl = Rtnl::open()?;
        Ok(ensure_bridge(
            &mut rtnl,
            &Sysctl::default(),
            None,
            &config,
            &odp,
        )?)
    })
}

#[test]
fn netns_bridge_mode_comes_up_with_weave_names_and_settings() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);

    // Default options ask for bridged fastdp; this kernel has no
    // openvswitch, so the set-up falls back to Bridge and says why.
    let plan = bridge_up(host, BridgeConfig::new(MAC))?;
    assert_eq!(plan.requested, BridgeType::BridgedFastdp);
    assert_eq!(plan.bridge_type, BridgeType::Bridge);
    let note = plan.status_note().context("a fallback note")?;
    assert!(
        note.starts_with("fastdp unavailable: ") && note.contains("ovs_datapath"),
        "{note}"
    );

    let weave = link_details(host, "weave")?;
    assert!(weave.contains("mtu 65535"), "{weave}");
    assert!(weave.contains("link/ether 0a:5e:00:00:00:01"), "{weave}");
    assert!(weave.contains("bridge forward_delay"), "{weave}");
    assert!(weave.contains("stp_state 0"), "{weave}");
    // The flags between < and >, in whatever order ip prints them.
    let flags = weave
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags)
        .unwrap_or_default();
    assert!(flags.split(',').any(|flag| flag == "UP"), "{weave}");

    let bridge_if = link_details(host, "vethwe-bridge")?;
    assert!(
        bridge_if.contains("vethwe-bridge@vethwe-pcap"),
        "{bridge_if}"
    );
    assert!(bridge_if.contains("master weave"), "{bridge_if}");
    assert!(bridge_if.contains("mtu 65535"), "{bridge_if}");
    assert!(bridge_if.contains("state UP"), "{bridge_if}");
    let pcap = link_details(host, "vethwe-pcap")?;
    assert!(pcap.contains("mtu 65535"), "{pcap}");
    assert!(!pcap.contains("master"), "{pcap}");
    assert!(pcap.contains("state UP"), "{pcap}");

    assert_eq!(
        sysctl_value(host, "net/ipv4/neigh/weave/base_reachable_time")?,
        "5"
    );
    assert_eq!(
        sysctl_value(host, "net/ipv4/neigh/weave/delay_first_probe_time")?,
        "2"
    );
    assert_eq!(
        sysctl_value(host, "net/ipv4/neigh/weave/ucast_solicit")?,
        "1"
    );
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        assert_eq!(sysctl_value(host, "net/ipv6/conf/weave/accept_ra")?, "0");
        assert_eq!(
            sysctl_value(host, "net/ipv6/conf/vethwe-pcap/accept_ra")?,
            "0"
        );
    }
    let tx = on(host, || Ok(ethtool::tx_checksum("weave")?))?;
    assert!(!tx, "tx checksum offload should be off on the bridge");

    // The library reads back what it made.
    let (kind, mac) = on(host, || {
        let mut rtnl = Rtnl::open()?;
        Ok((rtnl.link_kind("weave")?, rtnl.link_mac("weave")?))
    })?;
    assert_eq!(kind, Some(weave_router::net::link::LinkKind::Bridge));
    assert_eq!(mac, Some(MAC));

    // A second start finds the bridge, accepts it and changes nothing.
    let before = links(host)?;
    let again = bridge_up(host, BridgeConfig::new(MAC))?;
    assert_eq!(again.existing, Some(BridgeType::Bridge));
    assert_eq!(links(host)?, before);
    Ok(())
}

#[test]
fn netns_explicit_mtu_reaches_every_device() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let mut config = BridgeConfig::new(MAC);
    config.no_fastdp = true;
    config.mtu = Some(1410);
    let plan = bridge_up(host, config)?;
    assert_eq!(plan.fallback, None, "--no-fastdp is not a fallback");
    for name in ["weave", "vethwe-bridge", "vethwe-pcap"] {
        let details = link_details(host, name)?;
        assert!(details.contains("mtu 1410"), "{details}");
    }
    // A container veth with a smaller MTU does not drag the bridge down:
    // its MTU was set by hand.
    host.run(&[
        "ip",
        "link",
        "add",
        "vethwepl1",
        "mtu",
        "1300",
        "type",
        "veth",
        "peer",
        "name",
        "vethwepg1",
    ])?;
    host.run(&["ip", "link", "set", "vethwepl1", "master", "weave", "up"])?;
    assert!(link_details(host, "weave")?.contains("mtu 1410"));
    Ok(())
}

#[test]
fn netns_mismatches_are_detected_and_refused() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    bridge_up(host, BridgeConfig::new(MAC))?;

    // With openvswitch present, bridged fastdp would be built; the Bridge
    // that exists must not be silently reused or replaced.
    let err = on(host, || {
        let mut rtnl = Rtnl::open()?;
        match plan_for_host(&mut rtnl, &BridgeConfig::new(MAC), &OdpSupport::Available) {
            Err(SetupError::Plan(e)) => Ok(e),
            other => Err(anyhow!("expected a refusal, got {other:?}")),
        }
    })?;
    assert!(matches!(
        err,
        PlanError::Mismatch {
            existing: BridgeType::Bridge,
            wanted: BridgeType::BridgedFastdp,
            ..
        }
    ));
    let text = err.to_string();
    assert!(
        text.starts_with("bridge weave exists as type bridge but bridged_fastdp was asked for"),
        "{text}"
    );
    assert!(text.contains("`weave-router reset`"), "{text}");

    // A link of a kind weave never makes, under the bridge's name.
    host.run(&[
        "ip", "link", "add", "wv0", "type", "veth", "peer", "name", "wv1",
    ])?;
    let err = on(host, || {
        let mut config = BridgeConfig::new(MAC);
        config.weave_bridge = "wv0".into();
        let mut rtnl = Rtnl::open()?;
        match ensure_bridge(
            &mut rtnl,
            &Sysctl::default(),
            None,
            &config,
            &datapath::probe_openvswitch(),
        ) {
            Err(SetupError::Plan(e)) => Ok(e),
            other => Err(anyhow!("expected a refusal, got {other:?}")),
        }
    })?;
    assert!(
        err.to_string()
            .starts_with("link wv0 exists as type veth, which weave does not create"),
        "{err}"
    );

    // A bridge under the datapath's name without one under the bridge's.
    host.run(&["ip", "link", "add", "dp0", "type", "bridge"])?;
    let err = on(host, || {
        let mut config = BridgeConfig::new(MAC);
        config.weave_bridge = "wv9".into();
        config.datapath = "dp0".into();
        let mut rtnl = Rtnl::open()?;
        match plan_for_host(&mut rtnl, &config, &OdpSupport::Available) {
            Err(SetupError::Plan(e)) => Ok(e),
            other => Err(anyhow!("expected a refusal, got {other:?}")),
        }
    })?;
    assert!(matches!(err, PlanError::Inconsistent { .. }), "{err}");
    Ok(())
}

#[test]
fn netns_reset_removes_everything_and_is_idempotent() -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let fw_config = FirewallConfig::new("weave");
    let fw = fw_config.clone();
    let variant = on(host, move || {
        let mut rtnl = Rtnl::open()?;
        ensure_bridge(
            &mut rtnl,
            &Sysctl::default(),
            None,
            &BridgeConfig::new(MAC),
            &datapath::probe_openvswitch(),
        )?;
        let firewall = Firewall::detect()?;
        firewall.setup(&fw, &[])?;
        expose::expose(&mut rtnl, &firewall, &fw, "10.32.0.1/12".parse()?, false)?;
        Ok(firewall.variant())
    })?;
    // A container's host-side veth, as the CNI plugin would leave it.
    host.run(&[
        "ip",
        "link",
        "add",
        "vethwepl9",
        "type",
        "veth",
        "peer",
        "name",
        "vethwepg9",
    ])?;
    host.run(&["ip", "link", "set", "vethwepl9", "master", "weave"])?;
    let save = format!("iptables-{}-save", variant.suffix());
    assert!(host.run(&[&save])?.stdout.contains("WEAVE"));

    for round in 0..2 {
        let fw = fw_config.clone();
        let report = on(host, move || {
            let mut rtnl = Rtnl::open()?;
            Ok(teardown::reset(
                &mut rtnl,
                None,
                &BridgeConfig::new(MAC),
                &fw,
            )?)
        })?;
        if round == 0 {
            for name in ["weave", "vethwe-bridge", "vethwepl9"] {
                assert!(report.removed.iter().any(|r| r == name), "{report:?}");
            }
        } else {
            assert!(report.removed.is_empty(), "{report:?}");
        }
        assert_eq!(links(host)?, ["lo", "eth0"]);
        for variant in Variant::ALL {
            let save = format!("iptables-{}-save", variant.suffix());
            let out = host.run(&[&save])?.stdout;
            assert!(!out.contains("WEAVE"), "{save}:\n{out}");
            assert!(!out.contains("weave"), "{save}:\n{out}");
        }
    }
    Ok(())
}

#[test]
fn netns_expose_adds_the_address_and_masquerades() -> Result<()> {
    // Host 0 runs the bridge; a "container" namespace hangs off it. Host 1
    // has no route to the weave subnet, so a container reaching it proves
    // the masquerade; the FORWARD policy is DROP (as Docker sets it), so it
    // also proves the FORWARD acceptance.
    let lab = Lab::new(2)?;
    let (h0, h1) = (lab.host(0), lab.host(1));
    h0.run(&["sysctl", "-w", "net.ipv4.ip_forward=1"])?;
    h0.run(&["iptables", "-P", "FORWARD", "DROP"])?;
    let addr: Ipv4Net = "10.32.0.1/12".parse()?;
    let fw_config = FirewallConfig::new("weave");
    let fw = fw_config.clone();
    let exposed = on(h0, move || {
        let mut config = BridgeConfig::new(MAC);
        config.no_fastdp = true;
        let mut rtnl = Rtnl::open()?;
        ensure_bridge(
            &mut rtnl,
            &Sysctl::default(),
            None,
            &config,
            &OdpSupport::Missing("not needed".into()),
        )?;
        let firewall = Firewall::detect()?;
        firewall.setup(&fw, &[])?;
        for _ in 0..2 {
            expose::expose(&mut rtnl, &firewall, &fw, addr, false)?;
        }
        Ok((expose::exposed(&mut rtnl, "weave")?, firewall.variant()))
    })?;
    let (exposed, variant) = exposed;
    let ipt = format!("iptables-{}", variant.suffix());
    assert_eq!(exposed, [addr]);
    let shown = h0
        .run(&["ip", "-4", "-o", "addr", "show", "dev", "weave"])?
        .stdout;
    assert!(shown.contains("inet 10.32.0.1/12"), "{shown}");
    assert_eq!(shown.lines().count(), 1, "{shown}");

    let nat = h0.run(&[&ipt, "-t", "nat", "-S", "WEAVE"])?.stdout;
    for rule in [
        "-A WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN",
        "-A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE",
        "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE",
    ] {
        assert_eq!(
            nat.lines().filter(|l| *l == rule).count(),
            1,
            "{rule}\n{nat}"
        );
    }
    let expose_chain = h0.run(&[&ipt, "-S", "WEAVE-EXPOSE"])?.stdout;
    assert_eq!(
        expose_chain
            .lines()
            .filter(|l| *l == "-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT")
            .count(),
        1,
        "{expose_chain}"
    );

    let c1 = lab.add_netns("c1")?;
    lab.connect(h0.netns(), "vethwepl1", &c1, "eth0")?;
    h0.run(&["ip", "link", "set", "vethwepl1", "master", "weave", "up"])?;
    lab.run_in(&c1, &["ip", "addr", "add", "10.32.0.5/12", "dev", "eth0"])?;
    lab.run_in(&c1, &["ip", "link", "set", "eth0", "up"])?;
    lab.run_in(&c1, &["ip", "route", "add", "default", "via", "10.32.0.1"])?;
    let target = h1.underlay_ip().to_string();
    let out = lab.run_in(&c1, &["ping", "-c", "2", "-W", "3", &target])?;
    assert!(out.stdout.contains("2 received"), "{}", out.stdout);
    // The container reaches the host through its exposed address, too.
    lab.run_in(&c1, &["ping", "-c", "1", "-W", "3", "10.32.0.1"])?;
    Ok(())
}
