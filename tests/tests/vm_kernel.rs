//! Tests against the kernel Open vSwitch datapath. The host kernel has no
//! openvswitch module, so these are ignored on the host; `cargo xtask test`
//! runs them inside the VM (`cargo xtask vm`) with `--include-ignored`.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use weave_tests::Lab;

/// Fails with a clear message when the openvswitch module is not loaded.
fn require_openvswitch() -> Result<()> {
    ensure!(
        Path::new("/sys/module/openvswitch").exists(),
        "the openvswitch module is not loaded: run this test with `cargo xtask vm`"
    );
    Ok(())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_modules_are_loaded() -> Result<()> {
    let modules = std::fs::read_to_string("/proc/modules")?;
    for module in ["openvswitch", "vport_vxlan", "veth", "dummy"] {
        ensure!(
            modules
                .lines()
                .any(|line| line.starts_with(&format!("{module} "))),
            "module {module} missing from /proc/modules"
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_ovs_dpctl_creates_a_datapath_in_a_lab_host() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(2)?;
    let host = lab.host(0);
    host.run(&["ovs-dpctl", "add-dp", "dp0"])
        .context("ovs-dpctl add-dp")?;
    let show = host.run(&["ovs-dpctl", "show"])?.stdout;
    ensure!(show.contains("system@dp0"), "ovs-dpctl show:\n{show}");
    // The datapath's internal port is a netdev of type openvswitch, in that
    // host only: datapaths belong to their network namespace.
    let link = host.run(&["ip", "-d", "link", "show", "dp0"])?.stdout;
    ensure!(link.contains("openvswitch"), "ip -d link show dp0:\n{link}");
    let other = lab
        .host(1)
        .cmd("ip")
        .args(["link", "show", "dp0"])
        .output()?;
    ensure!(!other.status.success(), "dp0 leaked into the other host");
    host.run(&["ovs-dpctl", "del-dp", "dp0"])?;
    let show = host.run(&["ovs-dpctl", "show"])?.stdout;
    ensure!(!show.contains("dp0"), "dp0 still there:\n{show}");
    Ok(())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_lab_hosts_exchange_traffic_in_the_vm() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(3)?;
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let target = lab.host(b).underlay_ip().to_string();
        let out = lab
            .host(a)
            .run(&["ping", "-c", "2", "-i", "0.2", "-W", "3", &target])?;
        ensure!(out.stdout.contains("2 received"), "{}", out.stdout);
    }
    Ok(())
}
