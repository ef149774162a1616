//! Fastdp in the real daemon: `weave-router` processes in netlab hosts of
//! the VM (each host its own network namespace, so its own datapath), two
//! "containers" per host with addresses from the router's IPAM over HTTP,
//! registered with `PUT /container/{id}`. Checks, for BridgedFastdp and
//! Fastdp: the mode in `/status`; proactive flows for the other peers'
//! prefixes before any traffic, read with the `odp dump-flows` tool; a
//! full ping matrix over fastdp; a TCP transfer; the MTU, both the
//! container's own and a narrower path (ICMP fragmentation-needed back to
//! the sender); and the flows of a killed peer going away. A second test
//! blocks the VXLAN port on the underlay and watches the connection fall
//! back to the sleeve within 60 s and return. The host kernel has no
//! openvswitch: `cargo xtask vm` runs these (build the `odp` tool first:
//! `cargo build -p odp --bin odp`).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ipnet::Ipv4Net;
use odp::text::format_ufid;
use weave_router::fastdp::proactive::UFID_TAG;
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

/// The `odp` command-line tool of this build: next to the router binary
/// (cargo puts every workspace binary in the same directory; build it with
/// `cargo build -p odp --bin odp`), or `WEAVE_ODP_BIN`.
fn odp_bin() -> String {
    std::env::var("WEAVE_ODP_BIN").unwrap_or_else(|_| {
        Path::new(&router_bin())
            .with_file_name("odp")
            .display()
            .to_string()
    })
}

/// `odp dump-flows -m <datapath>` run in `host`'s namespace: the flows as
/// text in ovs-dpctl's syntax, one per line. The tool only reads (GET and
/// DUMP, never a feature SET that could take the router's upcalls).
fn dump_flows(host: &Host, datapath: &str) -> Result<String> {
    let bin = odp_bin();
    ensure!(
        Path::new(&bin).exists(),
        "{bin} is missing: build it with `cargo build -p odp --bin odp`"
    );
    Ok(host.run(&[&bin, "dump-flows", "-m", datapath])?.stdout)
}

/// The UFID text every proactive flow starts with: the router's tag in
/// the first 8 bytes, printed as OVS prints UFIDs.
fn proactive_ufid_prefix() -> String {
    let full = format_ufid(&UFID_TAG.to_be_bytes());
    // "ufid:" and the first 8 bytes: "xxxxxxxx-xxxx-xxxx-".
    full[..5 + 19].to_string()
}

/// The value of `field=` inside the first `name(...)` group of `text`.
fn group_field<'a>(text: &'a str, name: &str, field: &str) -> Option<&'a str> {
    let start = text.find(&format!("{name}("))? + name.len() + 1;
    let body = &text[start..];
    let body = &body[..body.find(')')?];
    body.split(',')
        .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
}

/// An ipv4 address as dumped: `a.b.c.d` (exact) or `a.b.c.d/m.m.m.m`.
fn parse_masked(text: &str) -> Option<Ipv4Net> {
    let (addr, len) = match text.split_once('/') {
        Some((a, m)) => (a, u32::from(m.parse::<Ipv4Addr>().ok()?).leading_ones()),
        None => (text, 32),
    };
    Ipv4Net::new(addr.parse().ok()?, u8::try_from(len).ok()?).ok()
}

/// The destination prefixes of the proactive egress flows in an
/// `odp dump-flows -m` listing: lines with the proactive UFID, no
/// `tunnel(...)` match in the key, a `set(tunnel(...))` action, and an
/// `ipv4(dst=...)` prefix.
fn egress_prefixes(dump: &str) -> Vec<Ipv4Net> {
    let tag = proactive_ufid_prefix();
    let mut out = Vec::new();
    for line in dump.lines() {
        if !line.starts_with(&tag) {
            continue;
        }
        let Some((key, actions)) = line.split_once(", actions:") else {
            continue;
        };
        if key.contains("tunnel(") || !actions.contains("set(tunnel(") {
            continue;
        }
        if let Some(net) = group_field(key, "ipv4", "dst").and_then(parse_masked) {
            out.push(net);
        }
    }
    out
}

/// The egress prefixes of `host`'s datapath, through the CLI.
fn host_prefixes(host: &Host, datapath: &str) -> Result<Vec<Ipv4Net>> {
    Ok(egress_prefixes(&dump_flows(host, datapath)?))
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

/// The container's own limit: a DF ping of exactly the weave MTU goes
/// through; one byte more is refused by the sender's kernel with
/// "message too long" (its interface has the weave MTU, as CNI sets it)
/// and never leaves the container.
fn check_mtu(a: &Container, b: &Container) -> Result<()> {
    let text = df_ping_edge(a, b, MTU)?;
    ensure!(
        (text.contains("too long") || text.contains("Frag needed"))
            && text.contains(&MTU.to_string()),
        "a DF ping of {} bytes was not refused with the MTU: {text}",
        MTU + 1
    );
    Ok(())
}

/// Sends `a` → `b` one DF ping of exactly `mtu` bytes (IP packet size),
/// which must pass, and one of `mtu + 1`, which must fail; returns what
/// ping printed for the second, for the caller to check the reason.
fn df_ping_edge(a: &Container, b: &Container, mtu: u32) -> Result<String> {
    // ICMP echo payload = IP packet - 20 (IPv4 header) - 8 (ICMP header).
    let fits = (mtu - 28).to_string();
    let over = (mtu - 27).to_string();
    let dst = b.ip.to_string();
    let ok = a.output(&["ping", "-M", "do", "-c1", "-W2", "-s", &fits, &dst])?;
    ensure!(
        ok.status.success(),
        "a DF ping of exactly {mtu} bytes failed: {}{}",
        ok.stdout,
        ok.stderr
    );
    let big = a.output(&["ping", "-M", "do", "-c1", "-W2", "-s", &over, &dst])?;
    let text = format!("{}{}", big.stdout, big.stderr);
    ensure!(
        !big.status.success(),
        "a DF ping of {} bytes passed a path of {mtu}: {text}",
        mtu + 1
    );
    Ok(text)
}

/// VXLAN over IPv4: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet
/// (14).
const VXLAN_OVERHEAD: u32 = 50;
/// The underlay MTU towards the far host while the path check runs.
const NARROW_UNDERLAY: u32 = 1400;

/// A path narrower than the weave MTU: host `ah`'s route to host `bh`'s
/// underlay address gets MTU 1400, so the path for container traffic is
/// 1400 - 50 = 1350 bytes while the containers' interfaces still say 1376.
/// A DF ping of exactly 1350 bytes passes; one of 1351 leaves the
/// container and comes back as ICMP fragmentation-needed (mtu = 1350),
/// after which the sender's kernel has learnt the path MTU.
///
/// Where the ICMP comes from: the kernel's VXLAN transmit (what the
/// datapath's `vxlan-6784` vport calls) compares an inner packet with the
/// route to the tunnel's destination. Since Linux 5.9, for a VXLAN device
/// that is a bridge or Open vSwitch port, an oversize IPv4 packet with DF
/// is turned into an ICMP fragmentation-needed reply (source: the
/// original destination; MACs swapped) and handed back to the same device
/// as if received, with the tunnel's source and destination swapped and
/// the same tunnel id. The datapath sees it arrive on the VXLAN vport
/// under our own outgoing tunnel id; nothing matches it, so it comes up
/// as a miss, and the router delivers it to the local port that owns the
/// destination MAC (the original sender). A router that dropped it would
/// leave the sender timing out: a silent black hole.
fn check_path_mtu(ah: &Host, bh: &Host, a: &Container, b: &Container) -> Result<()> {
    let path = NARROW_UNDERLAY - VXLAN_OVERHEAD;
    let route = format!("{}/32", bh.underlay_ip());
    ah.run(&[
        "ip",
        "route",
        "add",
        &route,
        "dev",
        "eth0",
        "mtu",
        "lock",
        &NARROW_UNDERLAY.to_string(),
    ])?;
    let result = (|| -> Result<()> {
        let text = df_ping_edge(a, b, path)?;
        ensure!(
            text.contains("Frag needed") && text.contains(&format!("mtu = {path}")),
            "a DF ping of {} bytes (path MTU {path}) got no ICMP fragmentation-needed: {text}",
            path + 1
        );
        let dst = b.ip.to_string();
        // The sender's kernel took the ICMP in: it now knows the path MTU
        // to that destination and refuses the next big DF ping itself.
        let learnt = a.run(&["ip", "route", "get", &dst])?.stdout;
        ensure!(
            learnt.contains(&format!("mtu {path}")),
            "the sender did not learn the path MTU: {learnt}"
        );
        eprintln!("path MTU {path}: {}", text.trim());
        Ok(())
    })();
    ah.run(&["ip", "route", "del", &route])?;
    // Forget the learnt PMTU so later traffic uses the whole weave MTU.
    a.run(&["ip", "route", "flush", "cache"])?;
    result
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
        // traffic between containers, as `odp dump-flows` shows them.
        wait_for(
            Duration::from_secs(30),
            "proactive egress flows for every remote container",
            || {
                for host in lab.hosts() {
                    let prefixes = host_prefixes(host, datapath)?;
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
        let dump = dump_flows(lab.host(0), datapath)?;
        eprintln!(
            "{want_type}: proactive egress flows of host 0 (odp dump-flows -m):\n{}",
            dump.lines()
                .filter(|l| l.starts_with(&proactive_ufid_prefix()) && l.contains("set(tunnel("))
                .collect::<Vec<_>>()
                .join("\n")
        );
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
        // Weave's fields name the overlay of each connection: Info starts
        // with it, Attrs holds its name and MTU.
        let conns = report["Router"]["Connections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let live: Vec<_> = conns
            .iter()
            .filter(|c| c["State"] == "established")
            .collect();
        ensure!(
            !live.is_empty()
                && live.iter().all(|c| {
                    c["Attrs"]["name"] == "fastdp"
                        && c["Attrs"]["mtu"].as_u64().is_some()
                        && c["Info"].as_str().is_some_and(|i| i.starts_with("fastdp "))
                }),
            "{want_type}: Router.Connections without fastdp: {conns:?}"
        );
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

        // Host 2's router is killed: its prefixes' egress flows go from
        // the others once their connections to it close.
        routers[2].kill()?;
        let killed = Instant::now();
        wait_for(
            Duration::from_secs(30),
            "the stopped peer's flows to go",
            || {
                for host in lab.hosts().iter().take(2) {
                    let prefixes = host_prefixes(host, datapath)?;
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
        eprintln!(
            "{want_type}: the killed peer's egress flows were gone after {:?}",
            killed.elapsed()
        );
        // Traffic between the remaining two still flows.
        ensure!(
            containers[0]
                .output(&["ping", "-c1", "-W2", &containers[3].ip.to_string()])?
                .status
                .success(),
            "ping between the remaining hosts failed"
        );
        // Last, so that a failure here hides none of the checks above.
        check_path_mtu(lab.host(0), lab.host(1), &containers[1], &containers[2])?;
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

/// `GET path` on `host`'s router API straight from the test process: the
/// socket is opened inside the host's namespace and used from here, so a
/// poll costs no process start (under emulation, `ip netns exec curl`
/// takes about a second, which showed up in the measured fallback).
fn quick_get(host: &Host, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = in_netns(&named(host.netns()), || {
        std::net::TcpStream::connect(("127.0.0.1", 6784))
    })??;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_string())
}

/// The overlay in use towards the other host, from `/status/connections`.
fn overlay_in_use(host: &Host) -> Result<String> {
    let text = quick_get(host, "/status/connections")?;
    Ok(text
        .lines()
        .find(|l| l.contains("established"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("")
        .to_string())
}

/// Polls `check` every 100 ms until it holds or `timeout` passes; returns
/// when it first held.
fn poll_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<Instant> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(Instant::now());
        }
        ensure!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds since midnight UTC of the wall clock now.
fn utc_day_secs_now() -> f64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_nanos()) / 1e9
}

/// Seconds since midnight UTC of a router log line's timestamp
/// (`2026-11-26T00:55:52.812736Z ...`).
fn log_day_secs(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// How long after `since` (seconds since midnight UTC) the router's log
/// first says it switched its connection to the sleeve.
fn switched_to_sleeve_after(router: &Process, since: f64) -> Option<Duration> {
    router
        .log()
        .lines()
        .filter(|l| l.contains("using overlay") && l.contains("overlay=sleeve"))
        .filter_map(log_day_secs)
        // Across midnight the day seconds wrap.
        .map(|t| (t - since).rem_euclid(86_400.0))
        .filter(|d| *d < 3_600.0)
        .map(Duration::from_secs_f64)
        .min()
}

fn block_vxlan(host: &Host, on: bool) -> Result<()> {
    // Both rules in one iptables-restore transaction: both directions stop
    // at the same instant.
    let op = if on { "-I" } else { "-D" };
    let rules = format!(
        "*filter\n{op} INPUT -p udp --dport 6784 -j DROP\n\
         {op} OUTPUT -p udp --dport 6784 -j DROP\nCOMMIT\n"
    );
    let file = std::env::temp_dir().join(format!("block-vxlan-{}", std::process::id()));
    std::fs::write(&file, rules)?;
    let path = file.display().to_string();
    let result = host.run(&["iptables-restore", "--noflush", &path]);
    let _ = std::fs::remove_file(&file);
    result.map(|_| ())
}

/// Fastdp heartbeat loss and recovery between two routers. Fastdp counts
/// 60 s of silence from the last heartbeat it received (heartbeats come
/// every 10 s once acknowledged); the health deadline is polled exactly,
/// and the switch picks the sleeve in the same step. So once UDP 6784 is
/// blocked, each router switches at most 60 s later: how much less
/// depends on where in the 10 s heartbeat cycle the block fell. The time
/// is taken from the routers' own log stamps (same clock as the test),
/// and also observed through `/status/connections` polled every 100 ms.
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
        let blocked_at = utc_day_secs_now();
        let seen =
            poll_until(Duration::from_secs(120), "both ends on the sleeve", || {
                Ok(overlay_in_use(lab.host(0))? == "sleeve"
                    && overlay_in_use(lab.host(1))? == "sleeve")
            })?;
        let observed = seen - blocked;
        let switched: Vec<Duration> = routers
            .iter()
            .map(|r| {
                switched_to_sleeve_after(r, blocked_at)
                    .context("no switch to the sleeve in the router's log")
            })
            .collect::<Result<_>>()?;
        let fell = switched.iter().copied().max().unwrap_or_default();
        let text = connections(lab.host(0))?;
        ensure!(text.contains("fastdp on hold"), "{text}");
        wait_for(Duration::from_secs(20), "a ping over the sleeve", || {
            once(&a)
        })?;

        block_vxlan(lab.host(0), false)?;
        let unblocked = Instant::now();
        let seen =
            poll_until(Duration::from_secs(60), "both ends back on fastdp", || {
                Ok(overlay_in_use(lab.host(0))? == "fastdp"
                    && overlay_in_use(lab.host(1))? == "fastdp")
            })?;
        let back = seen - unblocked;
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
            "fallback to sleeve {switched:?} after blocking (router logs; seen in /status after {observed:?}), \
             back on fastdp {back:?} after unblocking; continuous ping: {summary}"
        );
        ensure!(
            fell <= Duration::from_secs(60),
            "a router switched to the sleeve {fell:?} after the block"
        );
        // Polling adds at most a request and a 100 ms pause.
        ensure!(
            observed <= Duration::from_secs(61),
            "the status showed the sleeve only {observed:?} after the block"
        );
        // Once acknowledged, heartbeats come every 10 s: the first one
        // after the unblock restores fastdp.
        ensure!(
            back <= Duration::from_secs(15),
            "back on fastdp after {back:?}"
        );
        Ok(())
    })();
    with_logs(result, &routers)
}

/// The parser of `odp dump-flows -m` lines, on the host (no VM needed).
#[test]
fn egress_prefixes_from_dump_text() {
    let tag = proactive_ufid_prefix();
    assert_eq!(tag, "ufid:76616577-7372-2d65-");
    let dump = format!(
        "{tag}0000-000000000001, recirc_id(0),in_port(vethwe-datapath),\
         eth(src=00:00:00:00:00:00/00:00:00:00:00:00,dst=00:00:00:00:00:00/00:00:00:00:00:00),\
         eth_type(0x0800),ipv4(src=0.0.0.0/0.0.0.0,dst=10.40.0.0/255.248.0.0,proto=0/0,tos=0/0,ttl=0/0,frag=no), \
         packets:0, bytes:0, used:never, dp:ovs, \
         actions:set(tunnel(tun_id=0x2001,src=192.168.77.1,dst=192.168.77.2,ttl=64,tp_dst=6784,flags(df))),vxlan-6784\n\
         {tag}0000-000000000002, tunnel(tun_id=0x1002,src=192.168.77.2,dst=192.168.77.1,ttl=64,flags(-df)),\
         in_port(vxlan-6784),eth_type(0x0800),ipv4(dst=10.32.0.0/255.248.0.0), \
         packets:0, bytes:0, used:never, dp:ovs, actions:vethwe-datapath\n\
         ufid:0a000000-0000-0000-0000-000000000000, in_port(vethwe-datapath),eth_type(0x0800),\
         ipv4(dst=10.48.0.0/255.248.0.0), packets:0, bytes:0, used:never, dp:ovs, \
         actions:set(tunnel(tun_id=0x3001,dst=192.168.77.3,ttl=64)),vxlan-6784\n\
         {tag}0000-000000000003, in_port(vethwe-datapath),eth_type(0x0800),ipv4(dst=10.44.1.2), \
         packets:0, bytes:0, used:never, dp:ovs, actions:set(tunnel(tun_id=0x3001,dst=192.168.77.3,ttl=64)),vxlan-6784\n"
    );
    let got = egress_prefixes(&dump);
    let want: Vec<Ipv4Net> = vec![
        "10.40.0.0/13".parse().unwrap(),
        "10.44.1.2/32".parse().unwrap(),
    ];
    assert_eq!(got, want);
}
