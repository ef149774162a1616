//! Pods attached by weave-net on two hosts whose routers run fastdp
//! (BridgedFastdp: the Linux bridge `weave` joined to the ODP datapath)
//! reach each other. Needs the kernel's openvswitch module: the VM stage of
//! `cargo xtask test` runs it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use weave_tests::{Lab, wait_for};

mod common;
use common::{Attachment, Runtime, http, start_router_with, wait_router};

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cni_fastdp_pods_on_two_hosts_ping() -> Result<()> {
    let lab = Lab::new(2)?;
    let range = ["--ipalloc-range", "10.32.0.0/12"];
    let r0 = start_router_with(lab.host(0), &range, &[])?;
    let r1 = start_router_with(lab.host(1), &range, &[lab.host(0)])?;
    wait_router(lab.host(0), &r0)?;
    wait_router(lab.host(1), &r1)?;
    for host in lab.hosts() {
        let status = http(host, "GET", "/status")?.unwrap_or_default();
        ensure!(
            status.contains("bridged_fastdp"),
            "not in fastdp:\n{status}"
        );
    }
    let list = json!({
        "cniVersion": "1.1.0",
        "name": "weave",
        "plugins": [{"type": "weave-net"}],
    });
    let mut pods = Vec::new();
    for (i, host) in lab.hosts().iter().enumerate() {
        let rt = Runtime::new(host.netns())?;
        let pod = lab.add_netns(&format!("pod{i}"))?;
        let a = Attachment::new(&format!("fastdp-pod-{i}"), &pod);
        let result = rt.add_list(&list, &a)?;
        rt.check_list(&list, &a, &result)?;
        let ip = result["ips"][0]["address"].as_str().context("address")?;
        pods.push((pod, ip.split('/').next().unwrap_or_default().to_string()));
    }
    for (from, to) in [(0, 1), (1, 0)] {
        let (pod, _) = &pods[from];
        let (_, ip) = &pods[to];
        wait_for(
            Duration::from_secs(30),
            &format!("pod{from} to ping {ip}"),
            || {
                Ok(weave_tests::Command::new("ping")
                    .args(["-c1", "-W1", ip])
                    .in_netns(pod)
                    .output()?
                    .status
                    .success())
            },
        )
        .with_context(|| {
            format!(
                "logs:\n{}\n{}",
                common::tail(&r0.log(), 20),
                common::tail(&r1.log(), 20)
            )
        })?;
    }
    Ok(())
}
