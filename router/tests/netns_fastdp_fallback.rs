//! The data-plane mode on a kernel without openvswitch (this host's): the
//! router asked for fastdp (the default) comes up in Bridge mode and says
//! why in `/status` and `/report`; `weave-router reset` removes what it
//! set up; a link of a foreign type under the bridge's name is refused
//! with a message naming the fix.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use weave_tests::{Lab, wait_for};

use common::{ROUTER, http, report, reset_removes_bridge, start, with_logs};

#[test]
fn netns_fastdp_unavailable_falls_back_to_bridge_and_says_why() -> Result<()> {
    ensure!(
        !std::path::Path::new("/sys/module/openvswitch").exists(),
        "this test needs a kernel without openvswitch (the host's)"
    );
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let mut router = start(host, &[], &[])?;
    let checked = (|| -> Result<()> {
        let mut status = String::new();
        wait_for(Duration::from_secs(30), "/status", || {
            status = http(host, "GET", "/status", &[]).unwrap_or_default();
            Ok(status.contains("FastDP:"))
        })?;
        ensure!(status.contains("BridgeType: bridge"), "{status}");
        ensure!(
            status.contains("FastDP: disabled (unavailable: ") && status.contains("ovs_datapath"),
            "{status}"
        );
        let report = report(host)?;
        let dp = &report["Dataplane"];
        ensure!(dp["BridgeType"] == "bridge", "{dp}");
        ensure!(dp["Requested"] == "bridged_fastdp", "{dp}");
        ensure!(
            dp["FallbackReason"]
                .as_str()
                .is_some_and(|r| r.contains("openvswitch")),
            "{dp}"
        );
        ensure!(dp["Fastdp"].is_null(), "{dp}");
        ensure!(
            router
                .log()
                .contains("fastdp unavailable, falling back to Bridge mode"),
            "the log does not say it"
        );
        Ok(())
    })();
    with_logs(checked, &[&router])?;
    router.stop(Duration::from_secs(10))?;

    // reset removes the bridge and its veths; a second run finds nothing.
    reset_removes_bridge(host)?;
    ensure!(host.run(&["ip", "link", "show", "vethwe-pcap"]).is_err());
    let again = host.run(&[ROUTER, "reset"])?.stdout;
    ensure!(!again.contains("removed"), "{again}");

    // A veth called like the bridge: refused, with the fix named.
    host.run(&[
        "ip", "link", "add", "weave", "type", "veth", "peer", "name", "weaveb",
    ])?;
    let mut router = start(host, &[], &[])?;
    let exited = router.wait_timeout(Duration::from_secs(30))?;
    let log = router.log();
    ensure!(
        exited.is_some_and(|s| !s.success()),
        "the router did not refuse: {log}"
    );
    ensure!(
        log.contains("link weave exists as type veth") && log.contains("--weave-bridge"),
        "{log}"
    );
    Ok(())
}
