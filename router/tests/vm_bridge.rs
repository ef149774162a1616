//! The datapath bridge types against the kernel Open vSwitch datapath:
//! BridgedFastdp and Fastdp set up in a netlab host, detected on restart,
//! and removed by `reset`. The host kernel has no openvswitch, so these are
//! ignored there; `cargo xtask test` runs them in the VM.

use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use odp::handle::DatapathOptions;
use weave_router::net::datapath::{DatapathOps, probe_openvswitch};
use weave_router::net::firewall::rules::FirewallConfig;
use weave_router::net::link::MacAddr;
use weave_router::net::netns::{in_netns, named};
use weave_router::net::odp_datapath::OdpDatapath;
use weave_router::net::plan::{BridgeConfig, BridgePlan, BridgeType, OdpSupport};
use weave_router::net::rtnl::Rtnl;
use weave_router::net::setup::ensure_bridge;
use weave_router::net::sysctl::Sysctl;
use weave_router::net::teardown;
use weave_tests::{Host, Lab};

const MAC: MacAddr = MacAddr([0x0a, 0x5e, 0x00, 0x00, 0x00, 0x02]);

fn require_openvswitch() -> Result<()> {
    ensure!(
        Path::new("/sys/module/openvswitch").exists(),
        "the openvswitch module is not loaded: run this test with `cargo xtask vm`"
    );
    Ok(())
}

fn on<T, F>(host: &Host, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    in_netns(&named(host.netns()), work)?
}

fn bring_up(host: &Host, config: BridgeConfig) -> Result<BridgePlan> {
    on(host, move || {
        let odp = probe_openvswitch();
        ensure!(odp == OdpSupport::Available, "probe says {odp:?}");
        let mut rtnl = Rtnl::open()?;
        let mut dp = OdpDatapath::connect(DatapathOptions::default())?;
        Ok(ensure_bridge(
            &mut rtnl,
            &Sysctl::default(),
            Some(&mut dp as &mut dyn DatapathOps),
            &config,
            &odp,
        )?)
    })
}

fn reset(host: &Host) -> Result<teardown::ResetReport> {
    on(host, || {
        let mut rtnl = Rtnl::open()?;
        let mut dp = OdpDatapath::connect(DatapathOptions::default())?;
        Ok(teardown::reset(
            &mut rtnl,
            Some(&mut dp as &mut dyn DatapathOps),
            &BridgeConfig::new(MAC),
            &FirewallConfig::new("weave"),
        )?)
    })
}

fn details(host: &Host, name: &str) -> Result<String> {
    Ok(host.run(&["ip", "-d", "link", "show", name])?.stdout)
}

fn link_names(host: &Host) -> Result<Vec<String>> {
    let out = host.run(&["ip", "-o", "link", "show"])?.stdout;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_bridged_fastdp_comes_up_is_detected_and_reset() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let plan = bring_up(host, BridgeConfig::new(MAC))?;
    ensure!(plan.bridge_type == BridgeType::BridgedFastdp, "{plan:?}");
    ensure!(plan.fallback.is_none() && plan.mtu == 1376, "{plan:?}");

    let dp = details(host, "datapath")?;
    ensure!(
        dp.contains("openvswitch") && dp.contains("mtu 1376"),
        "{dp}"
    );
    let weave = details(host, "weave")?;
    ensure!(
        weave.contains("bridge") && weave.contains("mtu 1376"),
        "{weave}"
    );
    let bridge_if = details(host, "vethwe-bridge")?;
    ensure!(bridge_if.contains("master weave"), "{bridge_if}");
    let dp_if = details(host, "vethwe-datapath")?;
    ensure!(dp_if.contains("master datapath"), "{dp_if}");
    ensure!(dp_if.contains("openvswitch_slave"), "{dp_if}");

    // A restart finds the same type and changes nothing.
    let before = link_names(host)?;
    let again = bring_up(host, BridgeConfig::new(MAC))?;
    ensure!(
        again.existing == Some(BridgeType::BridgedFastdp),
        "{again:?}"
    );
    ensure!(link_names(host)? == before);

    // Asking for Fastdp now is refused with the fix.
    let mut fastdp = BridgeConfig::new(MAC);
    fastdp.no_bridged_fastdp = true;
    let err = bring_up(host, fastdp)
        .err()
        .ok_or_else(|| anyhow!("a mismatch was accepted"))?;
    ensure!(
        format!("{err:#}").contains("exists as type bridged_fastdp but fastdp was asked for"),
        "{err:#}"
    );

    let report = reset(host)?;
    ensure!(report.removed.iter().any(|n| n == "datapath"), "{report:?}");
    ensure!(
        link_names(host)? == ["lo", "eth0"],
        "{:?}",
        link_names(host)?
    );
    let report = reset(host)?;
    ensure!(report.removed.is_empty(), "{report:?}");
    Ok(())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_fastdp_makes_weave_the_datapath() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let mut config = BridgeConfig::new(MAC);
    config.no_bridged_fastdp = true;
    config.mtu = Some(1410);
    let plan = bring_up(host, config)?;
    ensure!(plan.bridge_type == BridgeType::Fastdp, "{plan:?}");
    let weave = details(host, "weave")?;
    ensure!(
        weave.contains("openvswitch") && weave.contains("mtu 1410"),
        "{weave}"
    );
    ensure!(
        !link_names(host)?.iter().any(|n| n.starts_with("vethwe")),
        "Fastdp has no veths"
    );
    reset(host).context("reset")?;
    ensure!(
        link_names(host)? == ["lo", "eth0"],
        "{:?}",
        link_names(host)?
    );
    Ok(())
}
