//! `weave-dp-bench`: container-to-container TCP throughput across two
//! hosts, for weave-rs's data planes and for baselines built in the same
//! run. `cargo xtask bench dataplane` runs it on this machine (variants
//! that need no openvswitch) and in the VM (all of them).
//!
//! Variants (each in a fresh two-host lab):
//! - `veth`: two namespaces joined by one veth pair (the host's ceiling);
//! - `flannel`: a Flannel-style VXLAN overlay built by hand from kernel
//!   parts: a Linux bridge per host, a `vxlan` device with static fdb and
//!   neighbour entries, and routes between the hosts' pod subnets;
//! - `fastdp`: weave-router (BridgedFastdp) with pods attached by weave-net;
//! - `sleeve`: weave-router with `--no-fastdp`;
//! - `sleeve-encrypted`: the same with `--password`.
//!
//! Every variant uses the same pod MTU (weave's default, 1376), so the
//! ratios compare data paths, not packet sizes. Throughput is iperf3's
//! receiver-side figure for a single TCP stream.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use weave_tests::cni::{Attachment, netns_path};
use weave_tests::{Command, Host, Lab, Process, wait_for};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    Veth,
    Flannel,
    Fastdp,
    Sleeve,
    SleeveEncrypted,
}

/// Command line of `weave-dp-bench`.
#[derive(Debug, Parser)]
#[command(name = "weave-dp-bench")]
struct Args {
    /// Variants to run, in order; ratios are taken to the first.
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    variants: Vec<Variant>,
    /// Seconds each iperf3 run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The `weave-router` binary.
    #[arg(long)]
    router: PathBuf,
    /// The directory holding `weave-net` and `weave-ipam`.
    #[arg(long)]
    cni_dir: PathBuf,
    /// Where to append the results as a Markdown table row per variant.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The pod MTU of every variant.
const MTU: u32 = 1376;

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weave-dp-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let mut results: Vec<(Variant, f64)> = Vec::new();
    for &variant in &args.variants {
        println!("==> {variant:?}");
        let start = Instant::now();
        let bps = measure(variant, args).with_context(|| format!("variant {variant:?}"))?;
        println!(
            "    {:.3} Gbit/s ({:.0}s)",
            bps / 1e9,
            start.elapsed().as_secs_f64()
        );
        results.push((variant, bps));
    }
    let base = results.first().map(|(_, bps)| *bps).unwrap_or(f64::NAN);
    let base_name = results
        .first()
        .map(|(v, _)| format!("{v:?}"))
        .unwrap_or_default();
    println!(
        "\n{:<18} {:>12} {:>14}",
        "variant",
        "Gbit/s",
        format!("÷ {base_name}")
    );
    let mut markdown = String::new();
    for (variant, bps) in &results {
        println!(
            "{:<18} {:>12.3} {:>14.3}",
            format!("{variant:?}"),
            bps / 1e9,
            bps / base
        );
        markdown.push_str(&format!(
            "| {variant:?} | {:.3} | {:.3} |\n",
            bps / 1e9,
            bps / base
        ));
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown)?;
    }
    Ok(())
}

fn measure(variant: Variant, args: &Args) -> Result<f64> {
    match variant {
        Variant::Veth => {
            let lab = Lab::new(1)?;
            let a = lab.add_netns("a")?;
            let b = lab.add_netns("b")?;
            lab.connect(&a, "eth0", &b, "eth0")?;
            for (ns, ip) in [(&a, "10.250.0.1/24"), (&b, "10.250.0.2/24")] {
                lab.run_in(ns, &["ip", "addr", "add", ip, "dev", "eth0"])?;
                lab.run_in(
                    ns,
                    &["ip", "link", "set", "eth0", "mtu", &MTU.to_string(), "up"],
                )?;
            }
            iperf(&lab, &a, &b, "10.250.0.2", args.seconds)
        }
        Variant::Flannel => {
            let lab = Lab::new(2)?;
            let pods = flannel(&lab)?;
            iperf(&lab, &pods[0].0, &pods[1].0, &pods[1].1, args.seconds)
        }
        Variant::Fastdp | Variant::Sleeve | Variant::SleeveEncrypted => {
            let lab = Lab::new(2)?;
            let mut extra: Vec<&str> = Vec::new();
            if variant != Variant::Fastdp {
                extra.push("--no-fastdp");
            }
            if variant == Variant::SleeveEncrypted {
                extra.extend(["--password", "weave-dp-bench"]);
            }
            let _routers = start_routers(&lab, args, &extra)?;
            let mut pods = Vec::new();
            for host in lab.hosts() {
                pods.push(weave_pod(&lab, host, args)?);
            }
            // The first packets may ride the slow path while the overlay
            // settles: wait until the pods reach each other.
            wait_for(
                Duration::from_secs(60),
                "the pods to reach each other",
                || {
                    Ok(Command::new("ping")
                        .args(["-c", "1", "-W", "1", &pods[1].1])
                        .in_netns(&pods[0].0)
                        .output()?
                        .status
                        .success())
                },
            )?;
            if variant == Variant::Fastdp {
                let status = http(lab.host(0), "/status")?;
                let fastdp_line = status
                    .lines()
                    .map(str::trim)
                    .find(|line| line.to_ascii_lowercase().contains("fastdp"))
                    .unwrap_or("")
                    .to_string();
                println!("    {fastdp_line}");
                let connections = http(lab.host(0), "/status/connections")?;
                if !connections.contains("fastdp") {
                    bail!("the connection does not use fastdp:\n{connections}");
                }
            }
            iperf(&lab, &pods[0].0, &pods[1].0, &pods[1].1, args.seconds)
        }
    }
}

/// Runs an iperf3 server in `server_ns` and a client in `client_ns`;
/// returns the receiver's bits per second.
fn iperf(
    lab: &Lab,
    client_ns: &str,
    server_ns: &str,
    server_ip: &str,
    seconds: u32,
) -> Result<f64> {
    let log = lab.dir().join(format!("iperf3-server-{server_ns}.log"));
    let _server: Process = Command::new("iperf3")
        .args(["-s", "-1"])
        .in_netns(server_ns)
        .spawn(&log)?;
    let mut out = None;
    wait_for(Duration::from_secs(10), "iperf3 to connect", || {
        let run = Command::new("iperf3")
            .args(["-c", server_ip, "-t", &seconds.to_string(), "-J"])
            .in_netns(client_ns)
            .output()?;
        // iperf3 -J can exit 0 with an "error" member (server not yet up).
        let ok = run.status.success() && !run.stdout.contains("\"error\"");
        out = Some(run);
        Ok(ok)
    })?;
    let out = out.context("iperf3 did not run")?;
    let report: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("iperf3 printed no JSON: {}{}", out.stdout, out.stderr))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no sum_received in {report}"))
}

/// Builds the Flannel-style overlay; returns each host's pod (namespace,
/// address).
fn flannel(lab: &Lab) -> Result<Vec<(String, String)>> {
    let hosts = lab.hosts();
    let mac = |i: usize| format!("0a:58:0a:f4:{i:02x}:01");
    let mut pods = Vec::new();
    for host in hosts {
        let i = host.index();
        let run = |argv: &[&str]| host.run(argv).map(|_| ());
        run(&["ip", "link", "add", "cni0", "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.244.{i}.1/24"),
            "dev",
            "cni0",
        ])?;
        run(&["ip", "link", "set", "cni0", "mtu", &MTU.to_string(), "up"])?;
        run(&[
            "ip",
            "link",
            "add",
            "flannel.1",
            "address",
            &mac(i),
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &host.underlay_ip().to_string(),
            "dstport",
            "8472",
            "nolearning",
        ])?;
        run(&[
            "ip",
            "link",
            "set",
            "flannel.1",
            "mtu",
            &MTU.to_string(),
            "up",
        ])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.244.{i}.0/32"),
            "dev",
            "flannel.1",
        ])?;
        run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for peer in hosts.iter().filter(|p| p.index() != i) {
            let j = peer.index();
            let gw = format!("10.244.{j}.0");
            run(&[
                "ip",
                "neigh",
                "add",
                &gw,
                "lladdr",
                &mac(j),
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ])?;
            run(&[
                "bridge",
                "fdb",
                "append",
                &mac(j),
                "dev",
                "flannel.1",
                "dst",
                &peer.underlay_ip().to_string(),
            ])?;
            run(&[
                "ip",
                "route",
                "add",
                &format!("10.244.{j}.0/24"),
                "via",
                &gw,
                "dev",
                "flannel.1",
                "onlink",
            ])?;
        }
        let pod = lab.add_netns(&format!("fl{i}"))?;
        host.run(&[
            "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ])?;
        run(&[
            "ip",
            "link",
            "set",
            "veth0",
            "master",
            "cni0",
            "mtu",
            &MTU.to_string(),
            "up",
        ])?;
        let address = format!("10.244.{i}.2");
        lab.run_in(
            &pod,
            &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
        )?;
        lab.run_in(
            &pod,
            &["ip", "link", "set", "eth0", "mtu", &MTU.to_string(), "up"],
        )?;
        lab.run_in(
            &pod,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.244.{i}.1"),
            ],
        )?;
        pods.push((pod, address));
    }
    Ok(pods)
}

fn start_routers(lab: &Lab, args: &Args, extra: &[&str]) -> Result<Vec<Process>> {
    let mut routers = Vec::new();
    for host in lab.hosts() {
        let db = lab.dir().join(format!("db{}", host.index()));
        std::fs::create_dir_all(&db)?;
        let mut argv: Vec<String> = vec![
            args.router.to_string_lossy().into_owned(),
            "--nickname".into(),
            format!("bench{}", host.index()),
            "--db-prefix".into(),
            format!("{}/weave", db.display()),
            "--mtu".into(),
            MTU.to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        for peer in lab.hosts().iter().filter(|p| p.index() != host.index()) {
            argv.push(peer.underlay_ip().to_string());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        routers.push(host.spawn("router", &argv)?);
    }
    for host in lab.hosts() {
        wait_for(Duration::from_secs(90), "the router's HTTP API", || {
            Ok(http(host, "/status").is_ok())
        })?;
    }
    Ok(routers)
}

fn http(host: &Host, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:6784{path}");
    Ok(host
        .run(&["curl", "-sS", "--max-time", "5", "--fail-with-body", &url])?
        .stdout)
}

/// A pod attached by weave-net; returns (namespace, address).
fn weave_pod(lab: &Lab, host: &Host, args: &Args) -> Result<(String, String)> {
    let pod = lab.add_netns(&format!("w{}", host.index()))?;
    let attachment = Attachment {
        plugin: args.cni_dir.join("weave-net"),
        cni_path: args.cni_dir.to_string_lossy().into_owned(),
        container_id: format!("dp-bench-{}-{}", std::process::id(), host.index()),
        netns: netns_path(&pod),
        ifname: "eth0".into(),
        host_netns: Some(host.netns().to_string()),
    };
    let config = json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-net"});
    // IPAM needs the ring: the first allocation waits for consensus.
    let mut result = Value::Null;
    wait_for(Duration::from_secs(60), "CNI ADD", || {
        result = attachment.call("ADD", &config)?;
        Ok(true)
    })?;
    let address = result["ips"][0]["address"]
        .as_str()
        .context("no address in the ADD result")?;
    Ok((
        pod,
        address.split('/').next().unwrap_or(address).to_string(),
    ))
}
