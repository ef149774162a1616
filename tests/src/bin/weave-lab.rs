//! `weave-lab`: the local multi-node lab that `cargo xtask lab` runs.
//!
//! It builds N hosts as network namespaces on one underlay (netlab),
//! starts a real `weave-router` on each with the other hosts as peers,
//! creates pods (namespaces) through the real `weave-net` CNI plugin, then
//! prints every router's status and a table saying whether each pod
//! reaches every other pod, and how long the first reply took. It exits 0
//! only if every pod reaches every other one.
//!
//! It needs root. In `fastdp` mode it needs the kernel's openvswitch
//! module, so `cargo xtask lab` runs it inside the VM when the host kernel
//! lacks it; in `sleeve` mode it runs anywhere.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use weave_tests::cni::{Attachment, netns_path};
use weave_tests::{Host, Lab, Process, wait_for};

/// The data plane the routers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The kernel Open vSwitch datapath with VXLAN (BridgedFastdp).
    Fastdp,
    /// The userspace overlay over UDP 6783 (Bridge mode, `--no-fastdp`).
    Sleeve,
}

/// Command line of `weave-lab`.
#[derive(Debug, Parser)]
#[command(name = "weave-lab", about = "A local multi-node weave-rs lab")]
struct Args {
    /// Number of hosts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    nodes: u8,
    /// Data plane.
    #[arg(long, value_enum, default_value_t = Mode::Sleeve)]
    mode: Mode,
    /// Pods per host.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=20))]
    pods: u8,
    /// Leave the lab up until interrupted (Ctrl-C), with instructions.
    #[arg(long)]
    keep: bool,
    /// The `weave-router` binary.
    #[arg(long)]
    router: PathBuf,
    /// The directory holding the `weave-net` and `weave-ipam` plugins.
    #[arg(long)]
    cni_dir: PathBuf,
    /// How long a pod may take to reach another before it counts as a
    /// failure, in seconds.
    #[arg(long, default_value_t = 30)]
    reach_timeout: u64,
}

/// The range the lab's routers share.
const IPALLOC_RANGE: &str = "10.32.0.0/12";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("weave-lab: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A pod: a namespace attached to the `weave` bridge of its node by CNI.
struct Pod {
    name: String,
    node: usize,
    netns: String,
    container_id: String,
    address: String,
    /// The network configuration and ADD result, for DEL.
    add_result: Value,
}

fn run(args: &Args) -> Result<bool> {
    let started = Instant::now();
    let nodes = usize::from(args.nodes);
    let mode_name = match args.mode {
        Mode::Fastdp => "fastdp",
        Mode::Sleeve => "sleeve",
    };
    step(&format!(
        "building {nodes} hosts ({mode_name}) with {} pods each",
        args.pods
    ));
    if args.keep {
        // Ctrl-C reaches the terminal's whole process group: with SIGINT
        // blocked here, before any process starts, the routers and the
        // rest inherit the block and keep running until the lab is torn
        // down in order; this process takes the signal in sigwait.
        block(&[libc::SIGINT])?;
    }
    let lab = Lab::new(nodes)?;
    let mut routers = Vec::new();
    for host in lab.hosts() {
        routers.push(start_router(&lab, host, args)?);
    }
    step("waiting for the routers to answer HTTP");
    for host in lab.hosts() {
        wait_for(Duration::from_secs(90), "the router's HTTP API", || {
            Ok(http(host, "GET", "/status").is_ok())
        })
        .with_context(|| format!("node{}", host.index()))?;
    }
    step("waiting for the mesh: every router connected to every other");
    for host in lab.hosts() {
        wait_for(Duration::from_secs(90), "a full mesh", || {
            Ok(established(host)? + 1 >= nodes)
        })
        .with_context(|| format!("node{}: {}", host.index(), router_tail(&routers)))?;
    }
    if args.mode == Mode::Fastdp {
        for host in lab.hosts() {
            let report = report(host)?;
            if !uses_fastdp(&report) {
                bail!(
                    "node{} is not running the fast datapath: {}",
                    host.index(),
                    summary_line(host, "FastDP").unwrap_or_else(|| "no FastDP line".into())
                );
            }
        }
    }

    step("creating pods through the weave-net CNI plugin");
    let mut pods = Vec::new();
    for host in lab.hosts() {
        for p in 0..args.pods {
            let pod = add_pod(&lab, host, p, args)?;
            println!("    {:<10} node{}  {}", pod.name, pod.node, pod.address);
            pods.push(pod);
        }
    }

    step("router status");
    for host in lab.hosts() {
        println!("--- node{} ({}) ---", host.index(), host.underlay_ip());
        match http(host, "GET", "/status") {
            Ok(text) => {
                for line in text.lines() {
                    println!("    {line}");
                }
            }
            Err(error) => println!("    (no status: {error:#})"),
        }
        if let Ok(text) = http(host, "GET", "/status/connections") {
            println!("    connections:");
            for line in text.lines() {
                println!("      {line}");
            }
        }
    }

    step("reachability: every pod pings every other pod");
    let ok = reach_matrix(&pods, Duration::from_secs(args.reach_timeout))?;

    if args.keep {
        keep_until_interrupted(&lab, &pods)?;
    }
    step("removing the pods (CNI DEL)");
    for pod in &pods {
        if let Err(error) = del_pod(&lab, pod, args) {
            println!("    {}: DEL failed: {error:#}", pod.name);
        }
    }
    if !ok {
        println!("\nrouter logs (last lines):\n{}", router_tail(&routers));
    }
    drop(routers);
    drop(lab);
    println!(
        "\nweave-lab: {} in {:.1}s",
        if ok {
            "every pod reaches every other pod"
        } else {
            "FAILED: some pods do not reach each other"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

fn step(what: &str) {
    println!("==> {what}");
}

/// A router named after its node, peered with every other node.
fn start_router(lab: &Lab, host: &Host, args: &Args) -> Result<Process> {
    let index = host.index();
    let db = lab.dir().join(format!("node{index}"));
    std::fs::create_dir_all(&db)?;
    let mut argv: Vec<String> = vec![
        args.router.to_string_lossy().into_owned(),
        "--name".into(),
        format!("aa:00:00:00:00:{:02x}", index + 1),
        "--nickname".into(),
        format!("node{index}"),
        "--db-prefix".into(),
        format!("{}/weave", db.display()),
        "--ipalloc-range".into(),
        IPALLOC_RANGE.into(),
    ];
    if args.mode == Mode::Sleeve {
        argv.push("--no-fastdp".into());
    }
    for peer in lab.hosts() {
        if peer.index() != index {
            argv.push(peer.underlay_ip().to_string());
        }
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

/// `GET`/`POST` on the router of `host`, through curl inside its namespace.
fn http(host: &Host, method: &str, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:6784{path}");
    Ok(host
        .run(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--fail-with-body",
            "-X",
            method,
            &url,
        ])?
        .stdout)
}

fn report(host: &Host) -> Result<Value> {
    let text = http(host, "GET", "/report")?;
    serde_json::from_str(&text).with_context(|| format!("/report is not JSON: {text}"))
}

/// How many established connections the router of `host` has.
fn established(host: &Host) -> Result<usize> {
    let report = report(host)?;
    let me = report["Router"]["Name"].clone();
    let peers = report["Router"]["Peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(peers
        .iter()
        .find(|p| p["Name"] == me)
        .and_then(|p| p["Connections"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["Established"] == true)
        .count())
}

/// Whether `/report` says the fast datapath is enabled.
fn uses_fastdp(report: &Value) -> bool {
    report["Dataplane"]["FastDPEnabled"] == true
}

/// The line of `/status` that starts with `label`, trimmed.
fn summary_line(host: &Host, label: &str) -> Option<String> {
    let text = http(host, "GET", "/status").ok()?;
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with(label))
        .map(str::to_string)
}

/// The single-plugin network configuration the lab's runtime passes.
fn net_config() -> Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "weave",
        "type": "weave-net",
        "hairpinMode": true,
    })
}

fn attachment(host: &Host, args: &Args, container_id: &str, netns: &str) -> Attachment {
    Attachment {
        plugin: args.cni_dir.join("weave-net"),
        cni_path: args.cni_dir.to_string_lossy().into_owned(),
        container_id: container_id.to_string(),
        netns: netns_path(netns),
        ifname: "eth0".into(),
        host_netns: Some(host.netns().to_string()),
    }
}

fn add_pod(lab: &Lab, host: &Host, index: u8, args: &Args) -> Result<Pod> {
    let name = format!("n{}p{index}", host.index());
    let netns = lab.add_netns(&name)?;
    let container_id = format!("weave-lab-{}-{name}", std::process::id());
    let result = attachment(host, args, &container_id, &netns).call("ADD", &net_config())?;
    let address = result["ips"][0]["address"]
        .as_str()
        .with_context(|| format!("CNI ADD of {name}: no ips in {result}"))?
        .to_string();
    Ok(Pod {
        name,
        node: host.index(),
        netns,
        container_id,
        address,
        add_result: result,
    })
}

fn del_pod(lab: &Lab, pod: &Pod, args: &Args) -> Result<()> {
    let host = lab.host(pod.node);
    let mut config = net_config();
    config["prevResult"] = pod.add_result.clone();
    attachment(host, args, &pod.container_id, &pod.netns).call("DEL", &config)?;
    Ok(())
}

/// The address without its prefix length.
fn bare(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

/// Pings every pod from every other and prints the table; true if all
/// reached.
fn reach_matrix(pods: &[Pod], timeout: Duration) -> Result<bool> {
    let mut all = true;
    let header: Vec<String> = pods.iter().map(|p| format!("{:>9}", p.name)).collect();
    let mut rows = Vec::new();
    for from in pods {
        let mut cells = Vec::new();
        for to in pods {
            if from.name == to.name {
                cells.push(format!("{:>9}", "-"));
                continue;
            }
            let start = Instant::now();
            let mut reached = false;
            while start.elapsed() < timeout {
                let out = weave_tests::Command::new("ping")
                    .args(["-c", "1", "-W", "1", bare(&to.address)])
                    .in_netns(&from.netns)
                    .output()?;
                if out.status.success() {
                    reached = true;
                    break;
                }
            }
            let cell = if reached {
                format!("{:.0}ms", start.elapsed().as_secs_f64() * 1000.0)
            } else {
                all = false;
                "FAIL".to_string()
            };
            cells.push(format!("{cell:>9}"));
        }
        rows.push(format!(
            "{:<6} {:<16} {}",
            from.name,
            from.address,
            cells.join("")
        ));
    }
    println!("{:<6} {:<16} {}", "from", "address", header.join(""));
    for row in rows {
        println!("{row}");
    }
    println!("(each cell: time until the first ping reply, retries included)");
    Ok(all)
}

/// Prints how to look around, then waits for SIGINT or SIGTERM.
fn keep_until_interrupted(lab: &Lab, pods: &[Pod]) -> Result<()> {
    println!("\nThe lab is up. In another shell, as root:");
    for host in lab.hosts() {
        println!(
            "  node{}:  ip netns exec {} bash      (router: curl 127.0.0.1:6784/status)",
            host.index(),
            host.netns()
        );
    }
    if let Some(pod) = pods.first() {
        println!(
            "  a pod:  ip netns exec {} ping {}",
            pod.netns,
            pods.last().map(|p| bare(&p.address)).unwrap_or_default()
        );
    }
    println!("  router logs: {}", lab.dir().display());
    println!("Press Ctrl-C to tear it down.");
    wait_for_signal()
}

fn wait_for_signal() -> Result<()> {
    let set = block(&[libc::SIGINT, libc::SIGTERM])?;
    let mut signal = 0;
    // SAFETY: sigwait on a signal set we own; the signals are blocked, so
    // they wait for it instead of killing the process before the lab is
    // cleaned up.
    unsafe { libc::sigwait(&set, &mut signal) };
    println!("\ninterrupted: tearing the lab down");
    Ok(())
}

/// Blocks `signals` in the calling thread (and in processes it starts
/// later, which inherit the mask); returns them as a set.
fn block(signals: &[libc::c_int]) -> Result<libc::sigset_t> {
    // SAFETY: plain libc calls on a zeroed sigset_t that we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("blocking signals failed");
        }
        Ok(set)
    }
}

/// The last lines of every router's log, for failures.
fn router_tail(routers: &[Process]) -> String {
    let mut text = String::new();
    for (index, router) in routers.iter().enumerate() {
        let log = router.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        text.push_str(&format!(
            "--- node{index} router ---\n{}\n",
            tail.join("\n")
        ));
    }
    text
}
