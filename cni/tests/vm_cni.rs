//! Pods attached by weave-net on two hosts whose routers run fastdp reach
//! each other, in both fastdp modes:
//!
//! - BridgedFastdp: the Linux bridge `weave` joined to the ODP datapath;
//!   weave-net enslaves the host veth to the bridge;
//! - pure Fastdp (`--no-bridged-fastdp`): `weave` is the datapath itself;
//!   weave-net leaves the host veth alone and the router makes it a port of
//!   the datapath when the container is registered.
//!
//! Needs the kernel's openvswitch module: the VM stage of `cargo xtask
//! test` runs them.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use weave_tests::{Host, Lab, Process, counters, wait_for};

mod common;
use common::{Attachment, Runtime, http, start_router_with, wait_router};

/// Starts two routers with `extra` flags and waits for their APIs.
fn two_routers(lab: &Lab, extra: &[&str]) -> Result<(Process, Process)> {
    let mut args = vec!["--ipalloc-range", "10.32.0.0/12"];
    if std::env::var_os("WEAVE_IN_UML").is_some() {
        // Debian's User-Mode Linux has no nftables (see xtask/src/uml.rs).
        args.extend(["--iptables-backend", "legacy"]);
    }
    args.extend_from_slice(extra);
    let r0 = start_router_with(lab.host(0), &args, &[])?;
    let r1 = start_router_with(lab.host(1), &args, &[lab.host(0)])?;
    wait_router(lab.host(0), &r0)?;
    wait_router(lab.host(1), &r1)?;
    Ok((r0, r1))
}

fn conflist() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "weave",
        "plugins": [{"type": "weave-net"}],
    })
}

/// One pod per host through ADD and CHECK; returns (netns, address,
/// attachment, ADD result) per pod.
fn add_pods(lab: &Lab, tag: &str) -> Result<Vec<(String, String, Attachment, Value)>> {
    let mut pods = Vec::new();
    for (i, host) in lab.hosts().iter().enumerate() {
        let rt = Runtime::new(host.netns())?;
        let pod = lab.add_netns(&format!("pod{i}"))?;
        let a = Attachment::new(&format!("{tag}-pod-{i}"), &pod);
        let result = rt.add_list(&conflist(), &a)?;
        rt.check_list(&conflist(), &a, &result)?;
        let ip = result["ips"][0]["address"].as_str().context("address")?;
        let ip = ip.split('/').next().unwrap_or_default().to_string();
        pods.push((pod, ip, a, result));
    }
    Ok(pods)
}

/// Each pod pings the other.
fn ping_both_ways(
    pods: &[(String, String, Attachment, Value)],
    r0: &Process,
    r1: &Process,
) -> Result<()> {
    for (from, to) in [(0, 1), (1, 0)] {
        let pod = &pods[from].0;
        let ip = &pods[to].1;
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

/// The host veth names an ADD result lists.
fn host_veths(result: &Value) -> Vec<String> {
    result["interfaces"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|i| i.get("sandbox").is_none())
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn link_details(host: &Host, name: &str) -> Result<String> {
    Ok(host.run(&["ip", "-d", "link", "show", name])?.stdout)
}

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cni_fastdp_pods_on_two_hosts_ping() -> Result<()> {
    let lab = Lab::new(2)?;
    let (r0, r1) = two_routers(&lab, &[])?;
    for host in lab.hosts() {
        let status = http(host, "GET", "/status")?.unwrap_or_default();
        ensure!(
            status.contains("bridged_fastdp"),
            "not in fastdp:\n{status}"
        );
    }
    let pods = add_pods(&lab, "fastdp")?;
    ping_both_ways(&pods, &r0, &r1)
}

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cni_pure_fastdp_pods_on_two_hosts_ping_and_transfer() -> Result<()> {
    let lab = Lab::new(2)?;
    let (r0, r1) = two_routers(&lab, &["--no-bridged-fastdp"])?;
    for host in lab.hosts() {
        let weave = link_details(host, "weave")?;
        ensure!(
            weave.contains("openvswitch"),
            "weave is not the datapath:\n{weave}"
        );
        ensure!(
            host.run(&["ip", "link", "show", "datapath"]).is_err(),
            "a separate datapath exists in pure Fastdp mode"
        );
    }
    let pods = add_pods(&lab, "pure")?;
    // ADD returned only once the router had made the host veth a port of
    // the datapath: the kernel shows it enslaved to `weave` at once.
    for ((_, _, _, result), host) in pods.iter().zip(lab.hosts()) {
        let veths = host_veths(result);
        ensure!(veths.len() == 1, "host veths in {result}");
        let veth = link_details(host, &veths[0])?;
        ensure!(
            veth.contains("master weave") && veth.contains("openvswitch_slave"),
            "{} is not a datapath port:\n{veth}",
            veths[0]
        );
        let report = http(host, "GET", "/report")?.unwrap_or_default();
        ensure!(
            report.contains(veths[0].as_str()),
            "/report lists no vport {}:\n{report}",
            veths[0]
        );
    }
    ping_both_ways(&pods, &r0, &r1)?;
    // TCP with the pod veths' checksum offload left on: segments must
    // arrive with valid checksums across the tunnel.
    let server_log = lab.dir().join("iperf3-server.log");
    let _server = weave_tests::Command::new("iperf3")
        .args(["-s", "-1"])
        .in_netns(&pods[1].0)
        .spawn(&server_log)?;
    wait_for(Duration::from_secs(20), "a 4 MB TCP transfer", || {
        let run = weave_tests::Command::new("iperf3")
            .args(["-c", &pods[1].1, "-n", "4M", "-J"])
            .in_netns(&pods[0].0)
            .output()?;
        Ok(run.status.success() && !run.stdout.contains("\"error\""))
    })?;
    // DEL removes the host veth and with it the vport.
    let rt = Runtime::new(lab.host(0).netns())?;
    rt.del_list(&conflist(), &pods[0].2, Some(&pods[0].3))?;
    let veth = host_veths(&pods[0].3).remove(0);
    wait_for(Duration::from_secs(10), "the vport to go", || {
        let report = http(lab.host(0), "GET", "/report")?.unwrap_or_default();
        Ok(!report.contains(veth.as_str()))
    })?;
    Ok(())
}

/// A bulk TCP transfer between pods on two hosts arrives in order, in both
/// fastdp modes. It did not: the kernel's VXLAN receive path hands a
/// decapsulated packet to the vport netdev's GRO cell (a NAPI queue) unless
/// the packet is a clone, which it queues to the CPU's backlog instead, and
/// over the datapath some packets of one flow are clones and some are not;
/// the two queues drain in their own order. The router now turns GRO off on
/// its VXLAN vport (`fastdp/executor.rs`). The receiver's out-of-order
/// counter and the sender's reordering counter must not move; retransmits
/// alone are not asserted, as timer-driven tail-loss probes on a busy
/// emulated CPU are not a data-path defect.
#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cni_fastdp_bulk_tcp_arrives_in_order() -> Result<()> {
    for (tag, extra) in [("bridged", &[][..]), ("pure", &["--no-bridged-fastdp"][..])] {
        let lab = Lab::new(2)?;
        let (r0, r1) = two_routers(&lab, extra)?;
        let pods = add_pods(&lab, &format!("order-{tag}"))?;
        ping_both_ways(&pods, &r0, &r1)?;
        for host in lab.hosts() {
            let gro = host.run(&["ethtool", "-k", "vxlan-6784"])?.stdout;
            ensure!(
                gro.contains("generic-receive-offload: off"),
                "{tag}: GRO is still on for vxlan-6784:\n{gro}"
            );
        }
        let (client, server) = (&pods[0].0, &pods[1].0);
        let server_log = lab.dir().join("iperf3-server.log");
        let _server = weave_tests::Command::new("iperf3")
            .args(["-s", "-1"])
            .in_netns(server)
            .spawn(&server_log)?;
        let sent_before = counters::read(client)?;
        let received_before = counters::read(server)?;
        wait_for(Duration::from_secs(60), "a 128 MB TCP transfer", || {
            let run = weave_tests::Command::new("iperf3")
                .args(["-c", &pods[1].1, "-n", "128M", "-J"])
                .in_netns(client)
                .output()?;
            Ok(run.status.success() && !run.stdout.contains("\"error\""))
        })?;
        let sent = counters::read(client)?;
        let received = counters::read(server)?;
        let out_of_order = counters::delta(&received_before, &received, "TcpExtTCPOFOQueue");
        let reordered = counters::delta(&sent_before, &sent, "TcpExtTCPSACKReorder");
        let retransmitted = counters::delta(&sent_before, &sent, "TcpRetransSegs");
        eprintln!(
            "{tag}: out-of-order segments {out_of_order}, SACK reordering {reordered}, retransmits {retransmitted}"
        );
        ensure!(
            out_of_order == 0 && reordered == 0,
            "{tag}: segments arrived out of order (receiver TCPOFOQueue +{out_of_order}, \
             sender TCPSACKReorder +{reordered}, retransmits +{retransmitted})"
        );
    }
    Ok(())
}
