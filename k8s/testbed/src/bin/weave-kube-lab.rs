//! `weave-kube-lab`: the lab as a Kubernetes user sees it (`cargo xtask
//! lab --kube`). The API server test double, N nodes (netlab hosts) each
//! with containerd, weave-router (Bridge mode), the weave-net CNI plugin
//! and the test kubelet; pods created as Pod objects; then the ping table.
//! With `--keep` it prints kubectl commands that work against the running
//! lab and waits for Ctrl-C. It needs root.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use weave_k8s_testbed::image::build_pause_image;
use weave_k8s_testbed::node::{Binaries, KubeNode};
use weave_tests::{Lab, Process, wait_for};

/// The hub's address on the underlay, where the API double listens for
/// the nodes.
const API_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 254);

/// Command line of `weave-kube-lab`.
#[derive(Debug, Parser)]
#[command(
    name = "weave-kube-lab",
    about = "A local Kubernetes-shaped weave-rs lab"
)]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    nodes: u8,
    /// Pods per node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=20))]
    pods: u8,
    /// Leave the lab up until interrupted (Ctrl-C), with kubectl commands.
    #[arg(long)]
    keep: bool,
    /// The `weave-router` binary.
    #[arg(long)]
    router: PathBuf,
    /// The directory holding the `weave-net` and `weave-ipam` plugins.
    #[arg(long)]
    cni_dir: PathBuf,
    /// The `weave-test-kubelet` binary.
    #[arg(long)]
    kubelet: PathBuf,
    /// The `weave-k8s-apiserver` binary.
    #[arg(long)]
    apiserver: PathBuf,
    /// How long a pod may take to reach another, in seconds.
    #[arg(long, default_value_t = 30)]
    reach_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("weave-kube-lab: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn step(what: &str) {
    println!("==> {what}");
}

/// A pod as the lab tracks it.
struct LabPod {
    name: String,
    node: usize,
    ip: String,
    pid: i32,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn start_apiserver(lab: &Lab, args: &Args) -> Result<(Process, String, String)> {
    lab.run_in(
        lab.hub_netns(),
        &[
            "ip",
            "addr",
            "add",
            &format!("{API_IP}/24"),
            "dev",
            "underlay",
        ],
    )?;
    let kubeconfig = lab.dir().join("kubeconfig");
    let process = weave_tests::Command::new(&args.apiserver.to_string_lossy())
        .args(["--listen", "127.0.0.1:0", "--listen"])
        .arg(format!("{}@{API_IP}:6443", lab.hub_netns()))
        .arg("--kubeconfig")
        .arg(kubeconfig.to_string_lossy())
        .spawn(lab.dir().join("apiserver.log"))?;
    let mut urls = Vec::new();
    wait_for(Duration::from_secs(20), "the API server listening", || {
        urls = process
            .log()
            .lines()
            .filter_map(|l| l.strip_prefix("listening on "))
            .map(str::to_owned)
            .collect();
        Ok(urls.len() >= 2)
    })?;
    Ok((process, urls[0].clone(), urls[1].clone()))
}

fn run(args: &Args) -> Result<bool> {
    let started = Instant::now();
    let n = usize::from(args.nodes);
    step(&format!(
        "building {n} nodes (containerd, weave-router in Bridge mode, weave-net, test kubelet) with {} pods each",
        args.pods
    ));
    if args.keep {
        // As weave-lab: children inherit the block and keep running until
        // the lab is torn down in order.
        block(&[libc::SIGINT])?;
    }
    let lab = Lab::new(n)?;
    let (apiserver, local_url, node_url) = start_apiserver(&lab, args)?;
    println!("    API server test double: {local_url} (nodes use {node_url})");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _enter = rt.enter();
    let client = kube::Client::try_from(kube::Config::new(local_url.parse()?))?;
    let pause = build_pause_image(lab.dir())?;
    let bins = Binaries {
        router: args.router.clone(),
        plugins: args.cni_dir.clone(),
        kubelet: args.kubelet.clone(),
    };
    let peers: Vec<Ipv4Addr> = lab.hosts().iter().map(|h| h.underlay_ip()).collect();
    let mut nodes = Vec::new();
    for host in lab.hosts() {
        nodes.push(KubeNode::start(
            &lab, host, &bins, &node_url, &pause, &peers,
        )?);
    }

    step("creating Pods on the API server (nodeName set: no scheduler)");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut names = Vec::new();
    for node in 0..n {
        for p in 0..args.pods {
            let name = format!("n{node}p{p}");
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "weave-lab"}},
                "spec": {"nodeName": format!("node{node}"),
                    "containers": [{"name": "main", "image": "weave.test/pause:1"}]},
            }))?;
            rt.block_on(pods_api.create(&PostParams::default(), &pod))?;
            names.push((name, node));
        }
    }
    let mut pods = Vec::new();
    for (name, node) in names {
        let mut ip = String::new();
        let mut uid = String::new();
        wait_for(Duration::from_secs(120), "status.podIP", || {
            let p = rt.block_on(pods_api.get(&name))?;
            uid = p.metadata.uid.unwrap_or_default();
            ip = p.status.and_then(|s| s.pod_ip).unwrap_or_default();
            Ok(!ip.is_empty())
        })
        .with_context(|| format!("{name}: {}", nodes[node].kubelet_log()))?;
        let (_, pid) = nodes[node]
            .sandbox_of(&uid)?
            .with_context(|| format!("{name} has no sandbox"))?;
        println!("    {name:<8} node{node}  {ip}");
        pods.push(LabPod {
            name,
            node,
            ip,
            pid,
        });
    }

    step("reachability: every pod pings every other pod (from inside its sandbox)");
    let ok = reach_matrix(&pods, Duration::from_secs(args.reach_timeout))?;

    step("memory");
    if let Some(kib) = rss_kib(apiserver.pid()) {
        println!("    API server double: {} MiB RSS", kib / 1024);
    }
    if let Some(kib) = nodes[0].containerd().pid().and_then(rss_kib) {
        println!("    containerd (node0): {} MiB RSS", kib / 1024);
    }
    println!("    up in {:.1}s", started.elapsed().as_secs_f64());

    if args.keep {
        let kubeconfig = lab.dir().join("kubeconfig");
        println!("\nThe lab is up. In another shell, as root:");
        println!("  export KUBECONFIG={}", kubeconfig.display());
        println!("  kubectl get nodes -o wide");
        println!("  kubectl get pods -o wide --show-labels");
        println!("  kubectl get pods -w");
        println!("  kubectl get pod n0p0 -o jsonpath='{{.status.podIP}}{{\"\\n\"}}'");
        println!("  kubectl label pod n0p0 tier=front");
        println!("  kubectl delete pod n0p0");
        println!(
            "  printf 'apiVersion: v1\\nkind: Pod\\nmetadata: {{name: extra}}\\nspec: {{nodeName: node{}, containers: [{{name: main, image: weave.test/pause:1}}]}}\\n' | kubectl apply -f -",
            n - 1
        );
        if let (Some(a), Some(b)) = (pods.first(), pods.last()) {
            println!(
                "  nsenter -t {} -n ping {}     # from {} to {}",
                a.pid, b.ip, a.name, b.name
            );
        }
        for host in lab.hosts() {
            println!(
                "  node{}: ip netns exec {} curl -s 127.0.0.1:6784/status",
                host.index(),
                host.netns()
            );
        }
        println!("  logs: {}", lab.dir().display());
        println!("Press Ctrl-C to tear it down.");
        wait_for_signal()?;
    }
    step("tearing down (sandboxes through the CRI, containerd, routers)");
    drop(nodes);
    drop(apiserver);
    drop(lab);
    println!(
        "\nweave-kube-lab: {} in {:.1}s",
        if ok {
            "every pod reaches every other pod"
        } else {
            "FAILED: some pods do not reach each other"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

fn reach_matrix(pods: &[LabPod], timeout: Duration) -> Result<bool> {
    let mut all = true;
    let header: Vec<String> = pods.iter().map(|p| format!("{:>8}", p.name)).collect();
    println!(
        "{:<8} {:<6} {:<12} {}",
        "from",
        "node",
        "address",
        header.join("")
    );
    for from in pods {
        let mut cells = Vec::new();
        for to in pods {
            if from.name == to.name {
                cells.push(format!("{:>8}", "-"));
                continue;
            }
            let start = Instant::now();
            let mut reached = false;
            while start.elapsed() < timeout {
                let out = weave_tests::Command::new("nsenter")
                    .args([
                        "-t",
                        &from.pid.to_string(),
                        "-n",
                        "ping",
                        "-c",
                        "1",
                        "-W",
                        "1",
                        &to.ip,
                    ])
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
                "FAIL".to_owned()
            };
            cells.push(format!("{cell:>8}"));
        }
        println!(
            "{:<8} {:<6} {:<12} {}",
            from.name,
            format!("node{}", from.node),
            from.ip,
            cells.join("")
        );
    }
    println!("(each cell: time until the first ping reply, retries included)");
    Ok(all)
}

fn wait_for_signal() -> Result<()> {
    let set = block(&[libc::SIGINT, libc::SIGTERM])?;
    let mut signal = 0;
    // SAFETY: sigwait on a signal set we own; the signals are blocked, so
    // they wait for it instead of killing the process before teardown.
    unsafe { libc::sigwait(&set, &mut signal) };
    println!("\ninterrupted: tearing the lab down");
    Ok(())
}

/// Blocks `signals` in the calling thread (and in processes it starts
/// later); returns them as a set.
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
