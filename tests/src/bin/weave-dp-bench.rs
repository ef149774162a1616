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
//! - `fastdp-pure`: weave-router in pure Fastdp (`--no-bridged-fastdp`:
//!   the `weave` device is the datapath, pod veths are its ports);
//! - `sleeve`: weave-router with `--no-fastdp`;
//! - `sleeve-encrypted`: the same with `--password`.
//!
//! Every variant uses the same pod MTU (weave's default, 1376), so the
//! ratios compare data paths, not packet sizes. Throughput is iperf3's
//! receiver-side figure for a single TCP stream. With `--rounds N` the
//! variants run N times, interleaved (round 1 runs every variant, then
//! round 2, …), and the table gives the median with the spread, so noise
//! shows.
//!
//! For the fastdp variants the run also prints what explains a number:
//! the datapath's hit/missed/lost counters over the iperf3 run (from the
//! router's `/report`), the flows (`odp dump-flows`, with `--odp`) and the
//! offloads and MTUs of every interface on the path (`ethtool -k`).
//!
//! `--first-ping-trials N` measures the time to the first reply of the
//! first ping to a new destination: a fresh pod on the other host, then one
//! ping from the same source pod; once with proactive flows (the default),
//! once with `--no-proactive-flows` (reactive only, as Weave). Each trial
//! is timed twice: cold (the source resolves the new address with ARP
//! first, which is reactive in both modes) and with the neighbour entries
//! put in both pods beforehand (no ARP at all), which isolates the IPv4
//! path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use weave_tests::cni::{Attachment, netns_path};
use weave_tests::counters;
use weave_tests::{Command, Host, Lab, Process, wait_for};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    Veth,
    Flannel,
    Fastdp,
    FastdpPure,
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
    /// How many times each variant runs (interleaved); the median is
    /// reported.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// The `odp` CLI, to dump the flows of the fastdp variants.
    #[arg(long)]
    odp: Option<PathBuf>,
    /// First-ping trials per mode (proactive, reactive only); 0 skips.
    #[arg(long, default_value_t = 0)]
    first_ping_trials: u32,
    /// For experiments: a shell command run in every host's namespace of
    /// the weave variants once the pods reach each other, before iperf3
    /// (e.g. `ethtool -K vxlan-6784 gro off`). Repeatable.
    #[arg(long = "host-tweak", value_name = "SHELL")]
    host_tweaks: Vec<String>,
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
    let kernel = kernel_copy_ns()?;
    println!(
        "copy cost on this machine: {kernel:.2} ns per byte copied by the kernel (through a pipe), {:.2} ns in userspace (copy_from_slice of 1408 bytes)",
        user_copy_ns()
    );
    let mut samples: Vec<(Variant, Vec<f64>)> =
        args.variants.iter().map(|v| (*v, Vec::new())).collect();
    for round in 1..=args.rounds.max(1) {
        for (variant, list) in &mut samples {
            println!("==> {variant:?} (round {round})");
            let start = Instant::now();
            let stream = measure(*variant, args, round == 1)
                .with_context(|| format!("variant {variant:?}"))?;
            println!("{}", stream.cpu_line(kernel_copies(*variant), kernel));
            println!(
                "    {:.3} Gbit/s ({:.0}s)",
                stream.bps / 1e9,
                start.elapsed().as_secs_f64()
            );
            list.push(stream.bps);
        }
    }
    let base = samples.first().map(|(_, l)| median(l)).unwrap_or(f64::NAN);
    let base_name = samples
        .first()
        .map(|(v, _)| format!("{v:?}"))
        .unwrap_or_default();
    println!(
        "\n{:<18} {:>12} {:>24} {:>14}",
        "variant",
        "median Gbit/s",
        "runs (Gbit/s)",
        format!("÷ {base_name}")
    );
    let mut markdown = String::new();
    for (variant, list) in &samples {
        let runs = list
            .iter()
            .map(|b| format!("{:.3}", b / 1e9))
            .collect::<Vec<_>>()
            .join(", ");
        let m = median(list);
        println!(
            "{:<18} {:>12.3} {:>24} {:>14.3}",
            format!("{variant:?}"),
            m / 1e9,
            runs,
            m / base
        );
        markdown.push_str(&format!(
            "| {variant:?} | {:.3} | {runs} | {:.3} |\n",
            m / 1e9,
            m / base
        ));
    }
    if args.first_ping_trials > 0 {
        markdown.push_str(&first_ping(args)?);
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown)?;
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One throughput run; `diagnose`: also print the flows and offloads.
fn measure(variant: Variant, args: &Args, diagnose: bool) -> Result<Stream> {
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
            if diagnose {
                offloads(&lab, &[lab.host(0).netns(), &pods[0].0]);
            }
            iperf(&lab, &pods[0].0, &pods[1].0, &pods[1].1, args.seconds)
        }
        Variant::Fastdp | Variant::FastdpPure | Variant::Sleeve | Variant::SleeveEncrypted => {
            let lab = Lab::new(2)?;
            let fastdp = matches!(variant, Variant::Fastdp | Variant::FastdpPure);
            let mut extra: Vec<&str> = Vec::new();
            if !fastdp {
                extra.push("--no-fastdp");
            }
            if variant == Variant::FastdpPure {
                extra.push("--no-bridged-fastdp");
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
            for tweak in &args.host_tweaks {
                for host in lab.hosts() {
                    let out = host.run(&["sh", "-c", tweak])?;
                    println!(
                        "    host{} tweak `{tweak}`: {}",
                        host.index(),
                        out.stdout.trim()
                    );
                }
            }
            if fastdp {
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
            if !fastdp {
                let before: Vec<(Value, Value)> = lab.hosts().iter().map(sleeve_stats).collect();
                let cpu_before = thread_times();
                let stream = iperf(&lab, &pods[0].0, &pods[1].0, &pods[1].1, args.seconds)?;
                println!(
                    "    CPU during iperf3: {}",
                    cpu_report(&cpu_before, &thread_times())
                );
                for (host, b) in lab.hosts().iter().zip(&before) {
                    let a = sleeve_stats(host);
                    println!(
                        "    host{} during iperf3: {}",
                        host.index(),
                        deltas(&b.0, &a.0)
                    );
                    println!("      kernel: {}", deltas(&b.1, &a.1));
                }
                return Ok(stream);
            }
            let before: Vec<Counters> = lab.hosts().iter().map(counters).collect();
            let stream = iperf(&lab, &pods[0].0, &pods[1].0, &pods[1].1, args.seconds)?;
            for (host, b) in lab.hosts().iter().zip(&before) {
                let a = counters(host);
                println!(
                    "    host{}: during iperf3 hit {} missed {} lost {}; flows {} (proactive {}), router misses {}",
                    host.index(),
                    a.hit.saturating_sub(b.hit),
                    a.missed.saturating_sub(b.missed),
                    a.lost.saturating_sub(b.lost),
                    a.flows,
                    a.proactive,
                    a.misses.saturating_sub(b.misses),
                );
            }
            if diagnose {
                if let Some(odp) = &args.odp {
                    for host in lab.hosts() {
                        match host.run(&[&odp.to_string_lossy(), "dump-flows", "-m"]) {
                            Ok(out) => {
                                println!("    host{} flows:\n{}", host.index(), indent(&out.stdout))
                            }
                            Err(e) => println!("    host{} dump-flows: {e:#}", host.index()),
                        }
                    }
                }
                offloads(&lab, &[lab.host(0).netns(), &pods[0].0]);
            }
            Ok(stream)
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
) -> Result<Stream> {
    let log = lab.dir().join(format!("iperf3-server-{server_ns}.log"));
    let _server: Process = Command::new("iperf3")
        .args(["-s", "-1"])
        .in_netns(server_ns)
        .spawn(&log)?;
    let mut out = None;
    let mut watched: Vec<&str> = vec![client_ns, server_ns];
    watched.extend(lab.hosts().iter().map(|host| host.netns()));
    let counters_before = path_counters(&watched);
    let busy_before = machine_busy_ticks();
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
    let busy = machine_busy_ticks().saturating_sub(busy_before);
    println!("    loss and reordering counters that moved (client, server, hosts):");
    print_path_deltas(&counters_before, &path_counters(&watched));
    let out = out.context("iperf3 did not run")?;
    let report: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("iperf3 printed no JSON: {}{}", out.stdout, out.stderr))?;
    if let Some(retransmits) = report["end"]["sum_sent"]["retransmits"].as_u64() {
        println!("    iperf3 sender retransmits: {retransmits}");
    }
    let cpu = &report["end"]["cpu_utilization_percent"];
    if let (Some(sender), Some(receiver)) =
        (cpu["host_total"].as_f64(), cpu["remote_total"].as_f64())
    {
        println!("    iperf3 CPU: sender {sender:.0} %, receiver {receiver:.0} %");
    }
    let received = &report["end"]["sum_received"];
    Ok(Stream {
        bps: received["bits_per_second"]
            .as_f64()
            .with_context(|| format!("no sum_received in {report}"))?,
        bytes: received["bytes"].as_f64().unwrap_or(0.0),
        busy_ns: busy as f64 * 1e9 / clock_ticks_per_second(),
    })
}

/// One iperf3 run: the receiver's rate and bytes, and the CPU time the
/// whole machine was busy meanwhile.
struct Stream {
    bps: f64,
    bytes: f64,
    busy_ns: f64,
}

impl Stream {
    /// The machine's CPU per byte received, and the share of it that
    /// `copies` kernel copies per byte at `copy_ns` each explain.
    fn cpu_line(&self, copies: u32, copy_ns: f64) -> String {
        if self.bytes <= 0.0 {
            return "    machine CPU: nothing received".into();
        }
        let per_byte = self.busy_ns / self.bytes;
        let cost = f64::from(copies) * copy_ns;
        format!(
            "    machine CPU: {per_byte:.1} ns per byte received ({:.1} CPU-s busy for {:.0} MB); \
             its {copies} kernel copies per byte at {copy_ns:.2} ns: {cost:.1} ns ({:.0} %)",
            self.busy_ns / 1e9,
            self.bytes / 1e6,
            100.0 * cost / per_byte
        )
    }
}

/// How many times the kernel copies each byte of the stream on its way
/// from the sending iperf3 to the receiving one. Every variant has the
/// two of TCP itself (`write` into the socket, `read` out of it); the
/// kernel's VXLAN and the datapath move pages without copying them. The
/// sleeve adds four: the capture (`recvmmsg` on the packet socket), the
/// UDP send, the UDP receive and the injection (`sendmmsg` on the packet
/// socket).
fn kernel_copies(variant: Variant) -> u32 {
    match variant {
        Variant::Veth | Variant::Flannel | Variant::Fastdp | Variant::FastdpPure => 2,
        Variant::Sleeve | Variant::SleeveEncrypted => 6,
    }
}

/// The clock ticks of `/proc/stat`'s first line: user, nice, system,
/// idle, iowait, irq, softirq, steal.
fn cpu_ticks() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

/// The machine's busy clock ticks so far (all but idle and iowait).
fn machine_busy_ticks() -> u64 {
    let ticks = cpu_ticks();
    let idle: u64 = ticks.iter().skip(3).take(2).sum();
    ticks.iter().sum::<u64>().saturating_sub(idle)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// What a byte copied by the kernel costs, in ns: 32 KiB chunks written
/// into a pipe and read back by one thread, 64 MiB in all, two copies per
/// byte (`copy_from_user` in, `copy_to_user` out).
fn kernel_copy_ns() -> Result<f64> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: both descriptors were just opened and are owned by nothing
    // else; each File closes its own.
    let (mut reader, mut writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let chunk = vec![0x5au8; 32 << 10];
    let mut buf = vec![0u8; chunk.len()];
    let total = 64usize << 20;
    let start = Instant::now();
    let mut moved = 0;
    while moved < total {
        writer.write_all(&chunk)?;
        reader.read_exact(&mut buf)?;
        moved += chunk.len();
    }
    Ok(start.elapsed().as_nanos() as f64 / (2.0 * total as f64))
}

/// What a byte copied in userspace costs, in ns: `copy_from_slice` of
/// segment-sized pieces (1408 bytes, as the sleeve copies a segment's
/// payload), 256 MiB in all.
fn user_copy_ns() -> f64 {
    let chunk = vec![0x5au8; 1408];
    let mut buf = vec![0u8; chunk.len()];
    let total = 256usize << 20;
    let start = Instant::now();
    let mut moved = 0;
    while moved < total {
        buf.copy_from_slice(std::hint::black_box(&chunk));
        std::hint::black_box(&mut buf);
        moved += chunk.len();
    }
    start.elapsed().as_nanos() as f64 / total as f64
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

/// A pod attached by weave-net.
struct Pod {
    netns: String,
    address: String,
    mac: String,
}

/// A pod attached by weave-net; returns (namespace, address).
fn weave_pod(lab: &Lab, host: &Host, args: &Args) -> Result<(String, String)> {
    let pod = weave_pod_named(lab, host, args, "w")?;
    Ok((pod.netns, pod.address))
}

/// A pod named `<tag><host>` attached by weave-net on `host`.
fn weave_pod_named(lab: &Lab, host: &Host, args: &Args, tag: &str) -> Result<Pod> {
    let pod = lab.add_netns(&format!("{tag}{}", host.index()))?;
    let attachment = Attachment {
        plugin: args.cni_dir.join("weave-net"),
        cni_path: args.cni_dir.to_string_lossy().into_owned(),
        container_id: format!("dp-bench-{}-{tag}-{}", std::process::id(), host.index()),
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
    let mac = result["interfaces"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i.get("sandbox").is_some()))
        .and_then(|i| i["mac"].as_str())
        .context("no container interface in the ADD result")?
        .to_string();
    Ok(Pod {
        netns: pod,
        address: address.split('/').next().unwrap_or(address).to_string(),
        mac,
    })
}

/// The datapath counters and flow counts `/report` shows.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    hit: u64,
    missed: u64,
    lost: u64,
    flows: u64,
    proactive: u64,
    misses: u64,
}

/// The router's `/report`, or `Null` when it cannot be had.
fn report(host: &Host) -> Value {
    http(host, "/report")
        .ok()
        .and_then(|body| serde_json::from_str::<Value>(&body).ok())
        .unwrap_or(Value::Null)
}

fn counters(host: &Host) -> Counters {
    let report = report(host);
    let f = &report["Dataplane"]["Fastdp"];
    let n = |k: &str| f[k].as_u64().unwrap_or(0);
    Counters {
        hit: n("Hit"),
        missed: n("Missed"),
        lost: n("Lost"),
        flows: n("Flows"),
        proactive: n("ProactiveFlows"),
        misses: n("Misses"),
    }
}

/// Clock ticks of every thread on the machine (user and system apart,
/// from `/proc/*/task/*/stat`) by (tid, comm and which), and the machine's totals from
/// `/proc/stat` under the names `cpu:user`, `cpu:system`, ….
fn thread_times() -> std::collections::BTreeMap<(u64, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    let names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq"];
    for (name, ticks) in names.iter().zip(cpu_ticks()) {
        out.insert((0, format!("cpu:{name}")), ticks);
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for proc in procs.flatten() {
        let Ok(tasks) = std::fs::read_dir(proc.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // "tid (comm) state ppid … utime(14) stime(15) …"
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let tid = stat[..open].trim().parse().unwrap_or(0);
            let comm = stat[open + 1..close].to_string();
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert((tid, format!("{comm} user")), ticks(11));
            out.insert((tid, format!("{comm} sys")), ticks(12));
        }
    }
    out
}

/// The machine's CPU split and the busiest threads between two
/// [`thread_times`] snapshots, in clock ticks.
fn cpu_report(
    before: &std::collections::BTreeMap<(u64, String), u64>,
    after: &std::collections::BTreeMap<(u64, String), u64>,
) -> String {
    // The machine's totals (tid 0) first, then the busiest threads.
    let mut rows: Vec<(bool, u64, String)> = after
        .iter()
        .map(|((tid, name), a)| {
            let d = a.saturating_sub(*before.get(&(*tid, name.clone())).unwrap_or(&0));
            let label = if *tid == 0 {
                format!("{name} {d}")
            } else {
                format!("{name}[{tid}] {d}")
            };
            (*tid != 0, d, label)
        })
        .filter(|(_, d, _)| *d > 0)
        .collect();
    rows.sort_by_key(|(thread, d, _)| (*thread, std::cmp::Reverse(*d)));
    rows.into_iter()
        .take(16)
        .map(|(_, _, label)| label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The router's data-plane counters (`/report`'s `Dataplane.Sleeve`) and
/// the kernel's UDP and IP counters of the host's namespace.
fn sleeve_stats(host: &Host) -> (Value, Value) {
    let mut kernel = serde_json::Map::new();
    if let Ok(out) = host.run(&["cat", "/proc/net/snmp"]) {
        for (name, value) in counters::parse_proc_net(&out.stdout, &["Udp", "Ip"]) {
            kernel.insert(name, json!(value));
        }
    }
    (
        report(host)["Dataplane"]["Sleeve"].clone(),
        Value::Object(kernel),
    )
}

/// What tells reordering from loss on a path, per namespace: TCP's
/// retransmission and reordering counters (TcpExt: out-of-order queueing
/// at the receiver, DSACKs and SACK reordering at the sender, which mean
/// the "lost" segment was only late), UDP and IP errors (the VXLAN
/// underlay), and every link's drop counters.
fn path_counters(namespaces: &[&str]) -> Vec<(String, Value)> {
    namespaces
        .iter()
        .map(|ns| {
            let mut counters: serde_json::Map<String, Value> = counters::read(ns)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name, json!(value)))
                .collect();
            if let Ok(out) = Command::new("ip")
                .args(["-s", "-j", "link"])
                .in_netns(ns)
                .output()
            {
                let links: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
                for link in links.as_array().into_iter().flatten() {
                    let name = link["ifname"].as_str().unwrap_or("?");
                    for dir in ["rx", "tx"] {
                        for what in ["dropped", "errors"] {
                            if let Some(v) = link["stats64"][dir][what].as_u64() {
                                counters.insert(format!("{name}.{dir}_{what}"), json!(v));
                            }
                        }
                    }
                }
            }
            (ns.to_string(), Value::Object(counters))
        })
        .collect()
}

/// Counters whose movement during a bulk TCP transfer points at loss or
/// reordering; the rest (segment counts and the like) always move.
fn interesting(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "TcpRetransSegs",
        "TcpExtTCPOFOQueue",
        "TcpExtTCPOFODrop",
        "TcpExtTCPOFOMerge",
        "TcpExtTCPDSACKRecv",
        "TcpExtTCPDSACKOldSent",
        "TcpExtTCPDSACKUndo",
        "TcpExtTCPSACKReorder",
        "TcpExtTCPTSReorder",
        "TcpExtTCPRenoReorder",
        "TcpExtTCPLostRetransmit",
        "TcpExtTCPFastRetrans",
        "TcpExtTCPSlowStartRetrans",
        "TcpExtTCPTimeouts",
        "TcpExtTCPLossProbes",
        "TcpExtTCPLossProbeRecovery",
        "TcpExtTCPSpuriousRTOs",
        "TcpExtTCPBacklogDrop",
        "TcpExtTCPRcvQDrop",
        "TcpExtTCPZeroWindowDrop",
        "TcpExtPruneCalled",
        "TcpExtRcvPruned",
        "TcpExtListenDrops",
        "UdpInErrors",
        "UdpRcvbufErrors",
        "UdpSndbufErrors",
        "IpInDiscards",
        "IpOutDiscards",
        "IpReasmFails",
    ];
    NAMES.contains(&name) || name.ends_with("_dropped") || name.ends_with("_errors")
}

/// Prints, per namespace, the interesting counters that moved.
fn print_path_deltas(before: &[(String, Value)], after: &[(String, Value)]) {
    for ((ns, b), (_, a)) in before.iter().zip(after) {
        let Some(a_map) = a.as_object() else { continue };
        let moved: Vec<String> = a_map
            .iter()
            .filter(|(name, _)| interesting(name))
            .filter_map(|(name, value)| {
                let now = value.as_u64()?;
                let then = b[name].as_u64().unwrap_or(0);
                (now != then).then(|| format!("{name} +{}", now.saturating_sub(then)))
            })
            .collect();
        if !moved.is_empty() {
            println!("    {ns}: {}", moved.join(", "));
        }
    }
}

/// The counters of `after` that moved since `before`, as `name +delta`.
fn deltas(before: &Value, after: &Value) -> String {
    let Some(after) = after.as_object() else {
        return "(none)".into();
    };
    after
        .iter()
        .filter_map(|(name, value)| {
            let a = value.as_u64()?;
            let b = before[name].as_u64().unwrap_or(0);
            (a != b).then(|| format!("{name} +{}", a.saturating_sub(b)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints MTU and the offloads that matter for TCP throughput of every
/// interface in `namespaces`.
fn offloads(lab: &Lab, namespaces: &[&str]) {
    const FEATURES: [(&str, &str); 7] = [
        ("tx-checksumming", "csum"),
        ("scatter-gather", "sg"),
        ("tcp-segmentation-offload", "tso"),
        ("generic-segmentation-offload", "gso"),
        ("generic-receive-offload", "gro"),
        ("tx-udp_tnl-segmentation", "udp_tnl"),
        ("rx-checksumming", "rxcsum"),
    ];
    for ns in namespaces {
        let Ok(links) = lab.run_in(ns, &["ip", "-o", "link", "show"]) else {
            continue;
        };
        for line in links.stdout.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_), Some(name)) = (fields.next(), fields.next()) else {
                continue;
            };
            let name = name.trim_end_matches(':');
            let name = name.split('@').next().unwrap_or(name);
            if name == "lo" {
                continue;
            }
            let mtu = line
                .split_whitespace()
                .skip_while(|w| *w != "mtu")
                .nth(1)
                .unwrap_or("?");
            let features = lab
                .run_in(ns, &["ethtool", "-k", name])
                .map(|o| o.stdout)
                .unwrap_or_default();
            let mut shown = Vec::new();
            for (feature, short) in FEATURES {
                let value = features
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{feature}: ")))
                    .map(|v| v.split_whitespace().next().unwrap_or("?"))
                    .unwrap_or("-");
                shown.push(format!("{short}={value}"));
            }
            println!("    {ns} {name} mtu {mtu}: {}", shown.join(" "));
        }
    }
}

/// The first-ping measurement in both modes; returns Markdown rows.
fn first_ping(args: &Args) -> Result<String> {
    let mut rows = String::new();
    println!(
        "\n==> first ping to a new destination ({} trials per mode)",
        args.first_ping_trials
    );
    for (name, extra) in [
        ("proactive", &[][..]),
        ("reactive only", &["--no-proactive-flows"][..]),
    ] {
        let (cold, warm) =
            first_ping_mode(args, extra).with_context(|| format!("first ping, {name}"))?;
        let show = |v: &[f64]| {
            v.iter()
                .map(|ms| format!("{ms:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "    {name}: cold (with ARP) median {:.2} ms [{}]; neighbour known median {:.2} ms [{}]",
            median(&cold),
            show(&cold),
            median(&warm),
            show(&warm)
        );
        rows.push_str(&format!(
            "| first ping, {name} | {:.2} ms | {:.2} ms | {} / {} |\n",
            median(&cold),
            median(&warm),
            show(&cold),
            show(&warm)
        ));
    }
    Ok(rows)
}

/// Trials of one mode: (cold, neighbour-known) first-reply times in ms.
fn first_ping_mode(args: &Args, extra: &[&str]) -> Result<(Vec<f64>, Vec<f64>)> {
    let lab = Lab::new(2)?;
    let _routers = start_routers(&lab, args, extra)?;
    let source = weave_pod_named(&lab, lab.host(0), args, "src")?;
    // The first pod on the far host settles the overlay (fastdp chosen,
    // heartbeats acknowledged) before any trial.
    let first = weave_pod_named(&lab, lab.host(1), args, "t0")?;
    wait_for(
        Duration::from_secs(60),
        "the pods to reach each other",
        || {
            Ok(Command::new("ping")
                .args(["-c", "1", "-W", "1", &first.address])
                .in_netns(&source.netns)
                .output()?
                .status
                .success())
        },
    )?;
    let connections = http(lab.host(0), "/status/connections")?;
    if !connections.contains("fastdp") {
        bail!("the connection does not use fastdp:\n{connections}");
    }
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for trial in 1..=args.first_ping_trials {
        let target = weave_pod_named(&lab, lab.host(1), args, &format!("c{trial}"))?;
        cold.push(ping_once(&source.netns, &target.address)?);
        let target = weave_pod_named(&lab, lab.host(1), args, &format!("w{trial}"))?;
        for (from, to) in [(&source, &target), (&target, &source)] {
            let argv = [
                "ip",
                "neigh",
                "replace",
                &to.address,
                "lladdr",
                &to.mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ];
            lab.run_in(&from.netns, &argv)?;
        }
        warm.push(ping_once(&source.netns, &target.address)?);
    }
    Ok((cold, warm))
}

/// One ping; the reply's round-trip time in ms.
fn ping_once(netns: &str, address: &str) -> Result<f64> {
    let out = Command::new("ping")
        .args(["-n", "-c", "1", "-W", "10", address])
        .in_netns(netns)
        .output()?;
    if !out.status.success() {
        bail!("no reply from {address}: {}{}", out.stdout, out.stderr);
    }
    out.stdout
        .split("time=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .with_context(|| format!("no time in {}", out.stdout))
}
