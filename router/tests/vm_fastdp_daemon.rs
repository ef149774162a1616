//! Fastdp in the real daemon: `weave-router` processes in netlab hosts of
//! the VM (each host its own network namespace, so its own datapath), two
//! "containers" per host with addresses from the router's IPAM over HTTP,
//! registered with `PUT /container/{id}`. Checks, for BridgedFastdp and
//! Fastdp: the mode in `/status`, proactive flows for the other peers'
//! prefixes before any traffic, a full ping matrix over fastdp, a TCP
//! transfer, the MTU, and the flows of a stopped peer going away. A second
//! test blocks the VXLAN port on the underlay and watches the connection
//! fall back to the sleeve and return. The host kernel has no
//! openvswitch: `cargo xtask vm` runs these.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ipnet::Ipv4Net;
use odp::handle::Ovs;
use odp::wire::action::Action;
use odp::wire::flow::FlowInfo;
use odp::wire::key::{KeyAttr, attr};
use weave_router::fastdp::proactive::is_proactive_ufid;
use weave_router::net::netns::{in_netns, named};
use weave_tests::{Command, Host, Lab, Process, wait_for};

use common::{ROUTER, tail};

const MTU: u32 = 1376;
const SETTLE: Duration = Duration::from_secs(90);
const MARKER: &str = "WEAVE-RS-FASTDP-MARKER";
/// The system's Python (a pyenv shim on PATH does not work in the VM).
const PYTHON: &str = "/usr/bin/python3";

fn require_openvswitch() -> Result<()> {
    ensure!(
        Path::new("/sys/module/openvswitch").exists(),
        "the openvswitch module is not loaded: run this test with `cargo xtask vm`"
    );
    Ok(())
}

/// The router binary: this build's, or `WEAVE_ROUTER_BIN` (a copy that
/// another build in the shared target directory cannot replace mid-run).
fn router_bin() -> String {
    std::env::var("WEAVE_ROUTER_BIN").unwrap_or_else(|_| ROUTER.to_string())
}

fn name_of(i: usize) -> String {
    format!("00:00:00:00:00:{:02x}", i + 1)
}

/// Starts the router of host `i` with every other host as a peer and the
/// ring seeded among all `n` routers.
fn start(lab: &Lab, i: usize, n: usize, extra: &[&str]) -> Result<Process> {
    let host = lab.host(i);
    let db = lab.dir().join(format!("db{i}"));
    std::fs::create_dir_all(&db)?;
    let seeds: Vec<String> = (0..n).map(name_of).collect();
    let mut argv: Vec<String> = vec![
        router_bin(),
        "--name".into(),
        name_of(i),
        "--nickname".into(),
        format!("h{i}"),
        "--db-prefix".into(),
        format!("{}/weave", db.display()),
        "--log-level".into(),
        "debug".into(),
        "--ipalloc-init".into(),
        format!("seed={}", seeds.join(",")),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    for j in 0..n {
        if j != i {
            argv.push(lab.host(j).underlay_ip().to_string());
        }
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

fn http(host: &Host, method: &str, path: &str, body: Option<&str>) -> Result<String> {
    let url = format!("http://127.0.0.1:6784{path}");
    let mut argv = vec!["curl", "-sS", "--fail-with-body", "-X", method, &url];
    if let Some(body) = body {
        argv.extend(["-H", "Content-Type: application/json", "--data", body]);
    }
    Ok(host.run(&argv)?.stdout)
}

fn with_logs<T>(result: Result<T>, routers: &[Process]) -> Result<T> {
    result.map_err(|error| {
        let logs: Vec<String> = routers
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.description(), tail(&r.log(), 60)))
            .collect();
        error.context(logs.join("\n"))
    })
}

struct Container {
    netns: String,
    ip: Ipv4Addr,
}

impl Container {
    fn output(&self, argv: &[&str]) -> Result<weave_tests::Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .output()
    }

    fn run(&self, argv: &[&str]) -> Result<weave_tests::Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .run()
    }

    fn spawn(&self, lab: &Lab, name: &str, argv: &[&str]) -> Result<Process> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .spawn(lab.dir().join(format!("{name}.log")))
    }
}

/// Container `n` of host `host`: a namespace with `eth0`, its host end
/// `vethwepl<h><n>` on the weave bridge (BridgedFastdp) or left for the
/// router to put on the datapath (Fastdp), an address from IPAM, and the
/// registration.
fn attach(lab: &Lab, host: &Host, n: usize, bridged: bool) -> Result<Container> {
    wait_for(Duration::from_secs(60), "the weave bridge", || {
        Ok(host.run(&["ip", "link", "show", "weave"]).is_ok())
    })?;
    // The bridge comes before the HTTP API: wait for that too.
    wait_for(Duration::from_secs(60), "the router's HTTP API", || {
        Ok(http(host, "GET", "/status", None).is_ok())
    })?;
    let id = format!("c{}{n}", host.index());
    let netns = lab.add_netns(&id)?;
    let host_if = format!("vethwepl{}{n}", host.index());
    lab.connect(&netns, "eth0", host.netns(), &host_if)?;
    host.run(&["ip", "link", "set", &host_if, "mtu", &MTU.to_string()])?;
    if bridged {
        host.run(&["ip", "link", "set", &host_if, "master", "weave"])?;
    }
    host.run(&["ip", "link", "set", &host_if, "up"])?;
    let cidr = http(host, "POST", &format!("/ip/{id}"), None)?;
    let cidr = cidr.trim().to_string();
    let net: Ipv4Net = cidr
        .parse()
        .with_context(|| format!("IPAM answered {cidr:?}"))?;
    let c = Container {
        netns,
        ip: net.addr(),
    };
    for knob in ["all", "default"] {
        c.run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{knob}.disable_ipv6=1"),
        ])?;
    }
    c.run(&["ip", "link", "set", "eth0", "mtu", &MTU.to_string()])?;
    c.run(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
    c.run(&["ip", "link", "set", "eth0", "up"])?;
    c.run(&["ip", "link", "set", "lo", "up"])?;
    let mac = c
        .run(&["cat", "/sys/class/net/eth0/address"])?
        .stdout
        .trim()
        .to_string();
    let body = format!(r#"{{"ips":["{cidr}"],"mac":"{mac}","host_veth":"{host_if}"}}"#);
    http(host, "PUT", &format!("/container/{id}"), Some(&body))?;
    Ok(c)
}

/// The flows of `datapath` on `host`, read with the odp crate (GET and
/// DUMP only: never a feature SET, which could take the router's upcalls).
fn flows(host: &Host, datapath: &str) -> Result<Vec<FlowInfo>> {
    let dp = datapath.to_string();
    in_netns(&named(host.netns()), move || -> Result<Vec<FlowInfo>> {
        let mut ovs = Ovs::connect()?;
        let info = ovs.datapaths().get(&dp)?;
        Ok(ovs.flows(info.dp_ifindex).dump()?)
    })?
}

/// The prefixes of the proactive egress flows (no tunnel match, a tunnel
/// set, an IPv4 destination prefix).
fn egress_prefixes(flows: &[FlowInfo]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for f in flows {
        if !f.ufid.as_ref().is_some_and(is_proactive_ufid) {
            continue;
        }
        let (Some(key), Some(mask), Some(actions)) = (&f.key, &f.mask, &f.actions) else {
            continue;
        };
        if key.get(attr::TUNNEL).is_some() || !actions.iter().any(|a| matches!(a, Action::Set(_))) {
            continue;
        }
        let (Some(KeyAttr::Ipv4(k)), Some(KeyAttr::Ipv4(m))) =
            (key.get(attr::IPV4), mask.get(attr::IPV4))
        else {
            continue;
        };
        let len = u32::from(m.dst).leading_ones() as u8;
        if let Ok(net) = Ipv4Net::new(k.dst, len) {
            out.push(net);
        }
    }
    out
}

fn status(host: &Host) -> Result<String> {
    http(host, "GET", "/status", None)
}

fn connections(host: &Host) -> Result<String> {
    http(host, "GET", "/status/connections", None)
}

/// Every router has `n - 1` established connections, all on fastdp and
/// healthy.
fn wait_fastdp(lab: &Lab, n: usize) -> Result<()> {
    wait_for(SETTLE, "every connection on healthy fastdp", || {
        for host in lab.hosts().iter().take(n) {
            let text = connections(host)?;
            let good = text
                .lines()
                .filter(|l| l.contains("established") && l.contains("fastdp=healthy"))
                .filter(|l| l.split_whitespace().nth(3) == Some("fastdp"))
                .count();
            if good != n - 1 {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

fn ping_matrix(containers: &[Container]) -> Result<Duration> {
    let started = Instant::now();
    for a in containers {
        for b in containers {
            if a.ip == b.ip {
                continue;
            }
            wait_for(
                Duration::from_secs(20),
                &format!("{} to ping {}", a.ip, b.ip),
                || {
                    Ok(a.output(&["ping", "-c1", "-W1", &b.ip.to_string()])?
                        .status
                        .success())
                },
            )?;
        }
    }
    Ok(started.elapsed())
}

const SERVER: &str = "import hashlib,socket\n\
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',7000));s.listen(1)\n\
c,_=s.accept();h=hashlib.sha256();n=0\n\
while True:\n d=c.recv(65536)\n if not d: break\n h.update(d);n+=len(d)\n\
print('received',n,h.hexdigest(),flush=True)\n";

/// Sends `mib` MiB from `a` to `b` over TCP; checks every byte arrived
/// intact; returns Mbit/s.
fn tcp_transfer(lab: &Lab, a: &Container, b: &Container, mib: usize) -> Result<f64> {
    let server = b.spawn(lab, &format!("server-{}", b.ip), &[PYTHON, "-c", SERVER])?;
    wait_for(Duration::from_secs(60), "the server to listen", || {
        Ok(b.run(&["ss", "-ltn", "sport = :7000"])?
            .stdout
            .contains("7000"))
    })
    .with_context(|| format!("server: {}", server.log()))?;
    let client = format!(
        "import hashlib,socket\n\
         chunk=(b'{MARKER} '*65536)[:1<<20]\n\
         s=socket.create_connection(('{}',7000))\n\
         h=hashlib.sha256()\n\
         for _ in range({mib}):\n s.sendall(chunk);h.update(chunk)\n\
         s.close()\n\
         print('sent',{mib}<<20,h.hexdigest())\n",
        b.ip
    );
    let started = Instant::now();
    let sent = a.run(&[PYTHON, "-c", &client])?.stdout;
    let want = sent.trim().replacen("sent", "received", 1);
    wait_for(
        Duration::from_secs(120),
        "the server to receive everything",
        || Ok(server.log().contains(&want)),
    )
    .with_context(|| format!("client: {sent}; server: {}", server.log()))?;
    let secs = started.elapsed().as_secs_f64();
    Ok((mib * 8 * 1024 * 1024) as f64 / secs / 1e6)
}

/// A DF ping of exactly the MTU goes through; one byte more is refused
/// with "message too long" (the container's own MTU, which CNI sets to
/// the weave MTU) and never sent.
fn check_mtu(a: &Container, b: &Container) -> Result<()> {
    let fits = (MTU - 28).to_string();
    let over = (MTU - 27).to_string();
    let dst = b.ip.to_string();
    let ok = a.output(&["ping", "-M", "do", "-c1", "-W2", "-s", &fits, &dst])?;
    ensure!(
        ok.status.success(),
        "a DF ping of {MTU} bytes failed: {}{}",
        ok.stdout,
        ok.stderr
    );
    let big = a.output(&["ping", "-M", "do", "-c1", "-W2", "-s", &over, &dst])?;
    let text = format!("{}{}", big.stdout, big.stderr);
    ensure!(
        !big.status.success()
            && (text.contains("too long") || text.contains("Frag needed"))
            && text.contains(&MTU.to_string()),
        "a DF ping of {} bytes was not refused with the MTU: {text}",
        MTU + 1
    );
    Ok(())
}

/// The whole scenario for one bridge type.
fn three_hosts(extra: &[&str], bridged: bool, datapath: &str, want_type: &str) -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(3)?;
    let mut routers = Vec::new();
    for i in 0..3 {
        routers.push(start(&lab, i, 3, extra)?);
    }
    let result = (|| -> Result<()> {
        let t0 = Instant::now();
        let mut containers = Vec::new();
        for host in lab.hosts() {
            for n in 1..=2 {
                containers.push(attach(&lab, host, n, bridged)?);
            }
        }
        for host in lab.hosts() {
            let s = status(host)?;
            ensure!(
                s.contains(&format!("BridgeType: {want_type}"))
                    && s.contains(&format!("FastDP: enabled ({want_type}")),
                "host {}: {s}",
                host.index()
            );
        }
        wait_fastdp(&lab, 3)?;
        let established = t0.elapsed();

        // Proactive flows for the other hosts' containers, before any
        // traffic between containers.
        wait_for(
            Duration::from_secs(30),
            "proactive egress flows for every remote container",
            || {
                for host in lab.hosts() {
                    let prefixes = egress_prefixes(&flows(host, datapath)?);
                    for (k, c) in containers.iter().enumerate() {
                        let remote = k / 2 != host.index();
                        let covered = prefixes.iter().any(|p| p.contains(&c.ip));
                        if remote != covered {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            },
        )?;
        let report = http(lab.host(0), "GET", "/report", None)?;
        let report: serde_json::Value = serde_json::from_str(&report)?;
        let fastdp = &report["Dataplane"]["Fastdp"];
        ensure!(
            fastdp["Vports"]
                .as_array()
                .is_some_and(|v| v.iter().any(|p| p["Name"] == "vxlan-6784")),
            "no vxlan-6784 in /report: {fastdp}"
        );
        let flow_count = fastdp["Flows"].as_u64().unwrap_or(0);
        ensure!(flow_count > 0, "/report counts no flows: {fastdp}");
        let metrics = http(lab.host(0), "GET", "/metrics", None)?;
        ensure!(metrics.contains("weave_flows "), "{metrics}");

        eprintln!(
            "{want_type}: /status/connections of host 0:\n{}",
            connections(lab.host(0))?
        );
        let matrix = ping_matrix(&containers)?;
        let mbits = tcp_transfer(&lab, &containers[0], &containers[5], 16)?;
        check_mtu(&containers[1], &containers[2])?;
        eprintln!(
            "{want_type}: fastdp established after {established:?}, ping matrix (30 pairs) in {matrix:?}, TCP {mbits:.0} Mbit/s, {flow_count} flows on host 0"
        );

        // Host 2 stops: its prefixes' egress flows go from the others.
        routers[2].stop(Duration::from_secs(10))?;
        wait_for(
            Duration::from_secs(30),
            "the stopped peer's flows to go",
            || {
                for host in lab.hosts().iter().take(2) {
                    let prefixes = egress_prefixes(&flows(host, datapath)?);
                    for c in &containers[4..] {
                        if prefixes.iter().any(|p| p.contains(&c.ip)) {
                            return Ok(false);
                        }
                    }
                    for c in &containers[..4] {
                        let remote = containers
                            .iter()
                            .position(|x| x.ip == c.ip)
                            .is_some_and(|k| k / 2 != host.index());
                        if remote && !prefixes.iter().any(|p| p.contains(&c.ip)) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            },
        )?;
        // Traffic between the remaining two still flows.
        ensure!(
            containers[0]
                .output(&["ping", "-c1", "-W2", &containers[3].ip.to_string()])?
                .status
                .success(),
            "ping between the remaining hosts failed"
        );
        Ok(())
    })();
    with_logs(result, &routers)
}

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_fastdp_daemon_bridged_fastdp() -> Result<()> {
    three_hosts(&[], true, "datapath", "bridged_fastdp")
}

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_fastdp_daemon_fastdp() -> Result<()> {
    three_hosts(&["--no-bridged-fastdp"], false, "weave", "fastdp")
}

/// The overlay in use towards the other host, from `/status/connections`.
fn overlay_in_use(host: &Host) -> Result<String> {
    let text = connections(host)?;
    Ok(text
        .lines()
        .find(|l| l.contains("established"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("")
        .to_string())
}

fn block_vxlan(host: &Host, on: bool) -> Result<()> {
    let op = if on { "-I" } else { "-D" };
    for (chain, dir) in [("INPUT", "--dport"), ("OUTPUT", "--dport")] {
        host.run(&[
            "iptables", op, chain, "-p", "udp", dir, "6784", "-j", "DROP",
        ])?;
    }
    Ok(())
}

#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_fastdp_daemon_falls_back_to_sleeve_and_returns() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(2)?;
    let routers = vec![start(&lab, 0, 2, &[])?, start(&lab, 1, 2, &[])?];
    let result = (|| -> Result<()> {
        let a = attach(&lab, lab.host(0), 1, true)?;
        let b = attach(&lab, lab.host(1), 1, true)?;
        wait_fastdp(&lab, 2)?;
        let dst = b.ip.to_string();
        let once = |c: &Container| -> Result<bool> {
            Ok(c.output(&["ping", "-c1", "-W1", &dst])?.status.success())
        };
        wait_for(Duration::from_secs(20), "a first ping", || once(&a))?;
        let pinger = a.spawn(&lab, "pinger", &["ping", "-i", "0.5", "-W", "1", &dst])?;

        block_vxlan(lab.host(0), true)?;
        let blocked = Instant::now();
        wait_for(Duration::from_secs(120), "both ends on the sleeve", || {
            Ok(
                overlay_in_use(lab.host(0))? == "sleeve"
                    && overlay_in_use(lab.host(1))? == "sleeve",
            )
        })?;
        let fell = blocked.elapsed();
        let text = connections(lab.host(0))?;
        ensure!(text.contains("fastdp on hold"), "{text}");
        wait_for(Duration::from_secs(20), "a ping over the sleeve", || {
            once(&a)
        })?;

        block_vxlan(lab.host(0), false)?;
        let unblocked = Instant::now();
        wait_for(Duration::from_secs(60), "both ends back on fastdp", || {
            Ok(
                overlay_in_use(lab.host(0))? == "fastdp"
                    && overlay_in_use(lab.host(1))? == "fastdp",
            )
        })?;
        let back = unblocked.elapsed();
        wait_for(Duration::from_secs(20), "a ping over fastdp", || once(&a))?;
        pinger.signal(libc::SIGINT)?;
        std::thread::sleep(Duration::from_secs(1));
        let summary = pinger
            .log()
            .lines()
            .filter(|l| l.contains("packets transmitted"))
            .collect::<Vec<_>>()
            .join("");
        eprintln!(
            "fallback to sleeve after {fell:?}, back on fastdp {back:?} after unblocking; continuous ping: {summary}"
        );
        ensure!(fell <= Duration::from_secs(75), "fallback took {fell:?}");
        Ok(())
    })();
    with_logs(result, &routers)
}
