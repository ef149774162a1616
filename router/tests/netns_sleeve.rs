//! The Bridge-mode data plane with real `weave-router` processes: each
//! router in its own namespace (no openvswitch on the host kernel, so
//! Bridge mode), two "containers" per host attached to the host's `weave`
//! bridge, traffic between them carried by the sleeve over UDP 6783.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use weave_tests::{Command, Host, Lab, LabBuilder, Process, wait_for};

const ROUTER: &str = env!("CARGO_BIN_EXE_weave-router");
const SETTLE: Duration = Duration::from_secs(40);
/// A string that must never show on the underlay when encrypted.
const MARKER: &str = "WEAVE-RS-SLEEVE-PLAINTEXT-MARKER";

/// The router binary: this build's, or `WEAVE_ROUTER_BIN` (e.g. a
/// release build for the throughput benchmark).
fn router_bin() -> String {
    std::env::var("WEAVE_ROUTER_BIN").unwrap_or_else(|_| ROUTER.to_string())
}

/// Starts a router on `host` named `00:00:00:00:00:0<index+1>`.
fn start(host: &Host, extra: &[&str], peers: &[&Host]) -> Result<Process> {
    let name = format!("00:00:00:00:00:{:02x}", host.index() + 1);
    let db = format!(
        "/tmp/netns-sleeve-{}-{}/weave",
        std::process::id(),
        host.netns()
    );
    let mut argv: Vec<String> = vec![
        router_bin(),
        "--name".into(),
        name,
        "--nickname".into(),
        format!("h{}", host.index()),
        "--db-prefix".into(),
        db,
        "--log-level".into(),
        "debug".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(peers.iter().map(|p| p.underlay_ip().to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    host.spawn("router", &argv)
}

fn http(host: &Host, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:6784{path}");
    Ok(host.run(&["curl", "-sS", "--fail-with-body", &url])?.stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn with_logs<T>(result: Result<T>, routers: &[Process]) -> Result<T> {
    result.map_err(|error| {
        let logs: Vec<String> = routers
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.description(), tail(&r.log(), 40)))
            .collect();
        error.context(logs.join("\n"))
    })
}

/// A container: a namespace with `eth0` on a host's weave bridge.
struct Container {
    netns: String,
    ip: String,
}

impl Container {
    fn run(&self, argv: &[&str]) -> Result<weave_tests::Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .run()
    }

    fn output(&self, argv: &[&str]) -> Result<weave_tests::Output> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .output()
    }

    fn spawn(&self, lab: &Lab, name: &str, argv: &[&str]) -> Result<Process> {
        let (program, args) = argv.split_first().context("empty command")?;
        Command::new(program)
            .args(args.iter().copied())
            .in_netns(&self.netns)
            .spawn(lab.dir().join(format!("{name}.log")))
    }
}

/// Waits for the router on `host` to make its bridge, then attaches
/// container `n` with address 10.32.<host>.<n>/12.
fn attach(lab: &Lab, host: &Host, n: usize) -> Result<Container> {
    wait_for(Duration::from_secs(20), "the weave bridge", || {
        Ok(host.run(&["ip", "link", "show", "weave"]).is_ok())
    })?;
    let netns = lab.add_netns(&format!("c{}{n}", host.index()))?;
    let host_if = format!("vc{n}");
    lab.connect(&netns, "eth0", host.netns(), &host_if)?;
    host.run(&["ip", "link", "set", &host_if, "master", "weave", "up"])?;
    let ip = format!("10.32.{}.{n}", host.index());
    let c = Container { netns, ip };
    c.run(&["ip", "addr", "add", &format!("{}/12", c.ip), "dev", "eth0"])?;
    c.run(&["ip", "link", "set", "eth0", "up"])?;
    c.run(&["ip", "link", "set", "lo", "up"])?;
    Ok(c)
}

/// Every router sees `n - 1` established connections.
fn wait_established(lab: &Lab, n: usize) -> Result<()> {
    wait_for(SETTLE, "every connection to be established", || {
        for host in lab.hosts() {
            let status = http(host, "/status")?;
            let want = format!("Connections: {} ({} established)", n - 1, n - 1);
            if !status.contains(&want) {
                return Ok(false);
            }
        }
        Ok(true)
    })
}

/// Three routers in a full mesh with two containers each.
fn three_hosts(lab: &Lab, extra: &[&str]) -> Result<(Vec<Process>, Vec<Container>)> {
    let mut routers = Vec::new();
    for i in 0..3 {
        let peers: Vec<&Host> = (0..i).map(|j| lab.host(j)).collect();
        routers.push(start(lab.host(i), extra, &peers)?);
    }
    let mut containers = Vec::new();
    for host in lab.hosts() {
        for n in 1..=2 {
            containers.push(with_logs(attach(lab, host, n), &routers)?);
        }
    }
    with_logs(wait_established(lab, 3), &routers)?;
    Ok((routers, containers))
}

fn ping_matrix(containers: &[Container]) -> Result<()> {
    for a in containers {
        for b in containers {
            if a.ip == b.ip {
                continue;
            }
            // The first ping of a pair may go while ARP is still flooding.
            wait_for(
                Duration::from_secs(15),
                &format!("{} to ping {}", a.ip, b.ip),
                || Ok(a.output(&["ping", "-c1", "-W1", &b.ip])?.status.success()),
            )?;
        }
    }
    Ok(())
}

const SERVER: &str = "import hashlib,socket\n\
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',7000));s.listen(1)\n\
c,_=s.accept();h=hashlib.sha256();n=0\n\
while True:\n d=c.recv(65536)\n if not d: break\n h.update(d);n+=len(d)\n\
print('received',n,h.hexdigest(),flush=True)\n";

/// Sends `mib` MiB of the marker from `a` to `b` over TCP; checks that
/// every byte arrived intact, and returns the throughput in Mbit/s.
fn tcp_transfer(lab: &Lab, a: &Container, b: &Container, mib: usize) -> Result<f64> {
    let server = b.spawn(lab, &format!("server-{}", b.ip), &["python3", "-c", SERVER])?;
    wait_for(Duration::from_secs(10), "the server to listen", || {
        Ok(b.run(&["ss", "-ltn", "sport = :7000"])?
            .stdout
            .contains("7000"))
    })?;
    let client = format!(
        "import hashlib,socket\n\
         chunk=(b'{MARKER} '*32768)[:1<<20]\n\
         s=socket.create_connection(('{}',7000))\n\
         h=hashlib.sha256()\n\
         for _ in range({mib}):\n s.sendall(chunk);h.update(chunk)\n\
         s.close()\n\
         print('sent',{mib}<<20,h.hexdigest())\n",
        b.ip
    );
    let started = Instant::now();
    let sent = a.run(&["python3", "-c", &client])?.stdout;
    let want = sent.trim().replacen("sent", "received", 1);
    wait_for(
        Duration::from_secs(60),
        "the server to receive everything",
        || Ok(server.log().contains(&want)),
    )
    .with_context(|| format!("client: {sent}; server: {}", server.log()))?;
    let secs = started.elapsed().as_secs_f64();
    Ok((mib as f64) * 8.0 * 1.048_576 / secs)
}

/// Captures UDP 6783 on `host`'s underlay interface while `work` runs,
/// and returns the capture's bytes.
fn capture_underlay(lab: &Lab, host: &Host, work: impl FnOnce() -> Result<()>) -> Result<Vec<u8>> {
    let file = lab.dir().join(format!("underlay-h{}.pcap", host.index()));
    let file_s = file.to_string_lossy().to_string();
    let mut dump = host.spawn(
        "tcpdump",
        &[
            "tcpdump",
            "-i",
            "eth0",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-w",
            &file_s,
            "udp",
            "port",
            "6783",
        ],
    )?;
    wait_for(Duration::from_secs(10), "tcpdump to start", || {
        Ok(dump.log().contains("listening on"))
    })?;
    let result = work();
    std::thread::sleep(Duration::from_millis(500));
    let _ = dump.stop(Duration::from_secs(5));
    eprintln!("tcpdump on host {}: {}", host.index(), dump.log().trim());
    result?;
    std::fs::read(&file).with_context(|| format!("reading {file_s}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn matrix_and_transfer(extra: &[&str], encrypted: bool) -> Result<()> {
    let lab = Lab::new(3)?;
    let (routers, c) = three_hosts(&lab, extra)?;
    with_logs(ping_matrix(&c), &routers)?;
    // Container 0 on host 0 to container 5 on host 2, captured on host 0.
    let mut rate = 0.0;
    let pcap = with_logs(
        capture_underlay(&lab, lab.host(0), || {
            rate = tcp_transfer(&lab, &c[0], &c[5], 16)?;
            Ok(())
        }),
        &routers,
    )?;
    eprintln!("sleeve TCP transfer: {rate:.0} Mbit/s (encrypted: {encrypted})");
    ensure!(
        pcap.len() > 16 << 20,
        "the capture holds the transfer ({} bytes)",
        pcap.len()
    );
    let seen = contains(&pcap, MARKER.as_bytes());
    if encrypted {
        ensure!(
            !seen,
            "plaintext payload on the underlay although encrypted"
        );
    } else {
        ensure!(
            seen,
            "the plain capture shows the payload (the check works)"
        );
    }
    with_logs(sleeve_counters_moved(&lab), &routers)?;
    // Same-host traffic stays on the bridge and still works.
    tcp_transfer(&lab, &c[2], &c[3], 1)?;
    let conns = http(lab.host(1), "/status/connections")?;
    eprintln!("/status/connections on host 1:\n{conns}");
    ensure!(
        conns
            .lines()
            .filter(|l| l.contains("established") && l.contains("sleeve"))
            .count()
            == 2,
        "/status/connections:\n{conns}"
    );
    ensure!(conns.contains("mtu="), "/status/connections:\n{conns}");
    if encrypted {
        ensure!(conns.contains("encrypted"), "/status/connections:\n{conns}");
    }
    Ok(())
}

/// One counter of `/report`'s `Dataplane.Sleeve` on `host`.
fn sleeve_counter(host: &Host, name: &str) -> Result<u64> {
    let report: serde_json::Value = serde_json::from_str(&http(host, "/report")?)?;
    report["Dataplane"]["Sleeve"][name]
        .as_u64()
        .with_context(|| format!("no Dataplane.Sleeve.{name} in /report"))
}

/// After the 16 MiB transfer from host 0 to host 2, the data-plane
/// counters (published once a second) show it: captured as TCP
/// super-frames and batched into few UDP sends on host 0, read in batches
/// and injected merged on host 2, nothing refused.
fn sleeve_counters_moved(lab: &Lab) -> Result<()> {
    let (sender, receiver) = (lab.host(0), lab.host(2));
    let datagrams = (16u64 << 20) / 1500;
    wait_for(
        Duration::from_secs(10),
        "the counters to show the transfer",
        || {
            Ok(sleeve_counter(sender, "DatagramsOut")? >= datagrams
                && sleeve_counter(receiver, "DatagramsIn")? >= datagrams)
        },
    )?;
    // Calls and what they carried: at least four datagrams a call.
    for (host, calls, items) in [
        (sender, "UDPSends", "DatagramsOut"),
        (receiver, "UDPReads", "DatagramsIn"),
    ] {
        let (c, n) = (sleeve_counter(host, calls)?, sleeve_counter(host, items)?);
        ensure!(c > 0 && c * 4 <= n, "batched: {calls} {c} for {items} {n}");
    }
    // Super-frames captured whole on one side, segments merged before
    // injection on the other.
    for (host, name) in [(sender, "GSOCaptured"), (receiver, "Coalesced")] {
        ensure!(sleeve_counter(host, name)? > 0, "{name} did not move");
    }
    for (host, name) in [(sender, "SendFailures"), (receiver, "InjectFailures")] {
        let refused = sleeve_counter(host, name)?;
        ensure!(refused == 0, "{name}: {refused}");
    }
    Ok(())
}

#[test]
fn netns_sleeve_three_hosts_ping_matrix_and_tcp() -> Result<()> {
    matrix_and_transfer(&[], false)
}

#[test]
fn netns_sleeve_three_hosts_encrypted_hides_payload() -> Result<()> {
    matrix_and_transfer(&["--password", "sleeve-secret"], true)
}

#[test]
fn netns_sleeve_pmtu_frag_needed_and_transfer() -> Result<()> {
    for extra in [&[][..], &["--password", "pmtu"][..]] {
        let lab = LabBuilder::new(2).mtu(1300).build()?;
        let r0 = start(lab.host(0), extra, &[])?;
        let r1 = start(lab.host(1), extra, &[lab.host(0)])?;
        let routers = [r0, r1];
        let a = with_logs(attach(&lab, lab.host(0), 1), &routers)?;
        let b = with_logs(attach(&lab, lab.host(1), 1), &routers)?;
        with_logs(wait_established(&lab, 2), &routers)?;
        // The sleeve's MTU: the underlay's less IP, UDP, sleeve and
        // Ethernet headers (62 in the clear, 86 encrypted).
        let mtu = if extra.is_empty() {
            1300 - 62
        } else {
            1300 - 86
        };
        with_logs(
            wait_for(SETTLE, "PMTU discovery to settle", || {
                Ok(http(lab.host(0), "/status/connections")?.contains(&format!("mtu={mtu}")))
            }),
            &routers,
        )?;
        let fits = (mtu - 28).to_string();
        with_logs(
            wait_for(Duration::from_secs(15), "a DF ping that fits", || {
                Ok(
                    a.output(&["ping", "-c1", "-W1", "-M", "do", "-s", &fits, &b.ip])?
                        .status
                        .success(),
                )
            }),
            &routers,
        )?;
        let big = a.output(&["ping", "-c2", "-W1", "-M", "do", "-s", "1400", &b.ip])?;
        let text = format!("{}{}", big.stdout, big.stderr);
        ensure!(
            !big.status.success(),
            "a DF ping over the MTU went through:\n{text}"
        );
        ensure!(
            text.contains(&format!("mtu = {mtu}")) || text.contains(&format!("mtu={mtu}")),
            "no fragmentation-needed with mtu {mtu}:\n{text}"
        );
        // The kernel learnt the PMTU towards b.
        let route = a.run(&["ip", "route", "get", &b.ip])?.stdout;
        ensure!(
            route.contains(&format!("mtu {mtu}")),
            "route cache: {route}"
        );
        // Non-DF pings larger than the MTU are fragmented and answered.
        a.run(&["ping", "-c1", "-W2", "-M", "dont", "-s", "3000", &b.ip])
            .context("a fragmented ping")?;
        with_logs(tcp_transfer(&lab, &a, &b, 4).map(|_| ()), &routers)?;
        let conns = http(lab.host(0), "/status/connections")?;
        ensure!(conns.contains("established"), "{conns}");
    }
    Ok(())
}

#[test]
fn netns_sleeve_relays_between_peers_without_a_direct_connection() -> Result<()> {
    // A line 0 - 1 - 2 without discovery: frames between containers on
    // hosts 0 and 2 are relayed by router 1.
    let lab = Lab::new(3)?;
    let no_discovery = ["--no-discovery"];
    let r0 = start(lab.host(0), &no_discovery, &[])?;
    let r1 = start(lab.host(1), &no_discovery, &[lab.host(0)])?;
    let r2 = start(lab.host(2), &no_discovery, &[lab.host(1)])?;
    let routers = [r0, r1, r2];
    let a = with_logs(attach(&lab, lab.host(0), 1), &routers)?;
    let b = with_logs(attach(&lab, lab.host(2), 1), &routers)?;
    with_logs(
        wait_for(SETTLE, "the line to be established", || {
            let middle = http(lab.host(1), "/status")?;
            let end = http(lab.host(0), "/status")?;
            Ok(middle.contains("Connections: 2 (2 established)")
                && end.contains("Connections: 1 (1 established)")
                && end.contains("Peers: 3"))
        }),
        &routers,
    )?;
    let conns = http(lab.host(0), "/status/connections")?;
    ensure!(
        conns.lines().count() == 1,
        "host 0 has one connection:\n{conns}"
    );
    with_logs(
        wait_for(
            Duration::from_secs(20),
            "a to ping b through host 1",
            || Ok(a.output(&["ping", "-c1", "-W1", &b.ip])?.status.success()),
        ),
        &routers,
    )?;
    with_logs(tcp_transfer(&lab, &a, &b, 4).map(|_| ()), &routers)?;
    Ok(())
}

/// TCP throughput from `a` to `b` with iperf3 (Mbit/s, receiver side).
fn iperf(lab: &Lab, a: &Container, b: &Container, secs: u32) -> Result<f64> {
    let mut server = b.spawn(lab, &format!("iperf-{}", b.ip), &["iperf3", "-s", "-1"])?;
    wait_for(Duration::from_secs(10), "iperf3 to listen", || {
        Ok(b.run(&["ss", "-ltn", "sport = :5201"])?
            .stdout
            .contains("5201"))
    })?;
    let out = a
        .run(&["iperf3", "-c", &b.ip, "-t", &secs.to_string(), "-f", "m"])?
        .stdout;
    let _ = server.stop(Duration::from_secs(2));
    let line = out
        .lines()
        .find(|l| l.contains("receiver"))
        .with_context(|| format!("no receiver line in:\n{out}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Mbits/sec")
        .context("no rate")?;
    words
        .get(at.wrapping_sub(1))
        .context("no rate")?
        .parse()
        .with_context(|| format!("rate in {line}"))
}

/// Throughput of the sleeve between two hosts, plain and encrypted, and
/// of a direct veth path between two namespaces for comparison. Run with
/// a release router: `WEAVE_ROUTER_BIN=target/release/weave-router cargo
/// test -p weave-router --test netns_sleeve -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run by hand with a release router"]
fn netns_sleeve_throughput() -> Result<()> {
    let lab = Lab::new(1)?;
    let x = lab.add_netns("direct-x")?;
    let y = lab.add_netns("direct-y")?;
    lab.connect(&x, "eth0", &y, "eth0")?;
    let (x, y) = (
        Container {
            netns: x,
            ip: "10.99.0.1".into(),
        },
        Container {
            netns: y,
            ip: "10.99.0.2".into(),
        },
    );
    for c in [&x, &y] {
        c.run(&["ip", "addr", "add", &format!("{}/24", c.ip), "dev", "eth0"])?;
        c.run(&["ip", "link", "set", "eth0", "up"])?;
    }
    let direct = iperf(&lab, &x, &y, 5)?;
    eprintln!("direct veth: {direct:.0} Mbit/s");
    for extra in [&[][..], &["--password", "bench"][..]] {
        let lab = Lab::new(2)?;
        let r0 = start(lab.host(0), extra, &[])?;
        let r1 = start(lab.host(1), extra, &[lab.host(0)])?;
        let routers = [r0, r1];
        let a = with_logs(attach(&lab, lab.host(0), 1), &routers)?;
        let b = with_logs(attach(&lab, lab.host(1), 1), &routers)?;
        with_logs(wait_established(&lab, 2), &routers)?;
        with_logs(
            wait_for(Duration::from_secs(15), "ping", || {
                Ok(a.output(&["ping", "-c1", "-W1", &b.ip])?.status.success())
            }),
            &routers,
        )?;
        let rate = with_logs(iperf(&lab, &a, &b, 5), &routers)?;
        eprintln!(
            "sleeve{}: {rate:.0} Mbit/s ({:.2} of direct veth)",
            if extra.is_empty() { "" } else { " encrypted" },
            rate / direct
        );
    }
    Ok(())
}

/// The UDP payloads of the IPv4 packets in a pcap file (Ethernet link
/// type), in order.
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(header) = pcap.get(at..at + 16) {
        let incl = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let Some(packet) = pcap.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        let Some(ip) = packet.get(14..) else { continue };
        let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
        if ip.get(9) != Some(&17) {
            continue;
        }
        if let Some(payload) = ip.get(ihl + 8..) {
            out.push(payload.to_vec());
        }
    }
    out
}

#[test]
fn netns_sleeve_replayed_datagram_is_dropped() -> Result<()> {
    let lab = Lab::new(2)?;
    let extra = ["--password", "replay"];
    let r0 = start(lab.host(0), &extra, &[])?;
    let r1 = start(lab.host(1), &extra, &[lab.host(0)])?;
    let routers = [r0, r1];
    let a = with_logs(attach(&lab, lab.host(0), 1), &routers)?;
    let b = with_logs(attach(&lab, lab.host(1), 1), &routers)?;
    with_logs(wait_established(&lab, 2), &routers)?;
    with_logs(
        wait_for(Duration::from_secs(15), "a to ping b", || {
            Ok(a.output(&["ping", "-c1", "-W1", &b.ip])?.status.success())
        }),
        &routers,
    )?;
    // Record the sealed datagrams of a few 1000-byte pings as they arrive.
    let pcap = capture_underlay(&lab, lab.host(1), || {
        a.run(&["ping", "-c3", "-i0.2", "-s", "1000", &b.ip])?;
        Ok(())
    })?;
    let from_a: Vec<Vec<u8>> = udp_payloads(&pcap)
        .into_iter()
        .filter(|p| p.len() > 1000 && p.starts_with(&[0, 0, 0, 0, 0, 1]))
        .collect();
    let replay = from_a.last().with_context(|| {
        let sizes: Vec<usize> = udp_payloads(&pcap).iter().map(Vec::len).collect();
        format!(
            "no sealed ping datagram among {} bytes of capture: {sizes:?}",
            pcap.len()
        )
    })?;
    // Replay it to router 1 from host 0 while container b watches for
    // echo requests.
    let mut watch = b.spawn(
        &lab,
        "b-icmp",
        &[
            "tcpdump",
            "-i",
            "eth0",
            "--immediate-mode",
            "-n",
            "-l",
            "icmp[icmptype] = icmp-echo",
        ],
    )?;
    wait_for(Duration::from_secs(10), "tcpdump in b", || {
        Ok(watch.log().contains("listening on"))
    })?;
    let hex: String = replay.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.sendto(bytes.fromhex('{hex}'),('{}',6783))\n",
        lab.host(1).underlay_ip()
    );
    lab.host(0).run(&["python3", "-c", &script])?;
    with_logs(
        wait_for(
            Duration::from_secs(10),
            "router 1 to drop the replay",
            || Ok(routers[1].log().contains("duplicate or stale datagram")),
        ),
        &routers,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.stop(Duration::from_secs(2));
    let seen = watch.log();
    ensure!(
        !seen.contains("ICMP echo request"),
        "the replayed ping reached the container:\n{seen}"
    );
    // And the link still works afterwards.
    a.run(&["ping", "-c1", "-W2", &b.ip])?;
    Ok(())
}

/// The router's listening sockets on `host`, from `ss -lntup`: (netid,
/// local address) of each socket weave-router holds.
fn router_listeners(host: &Host) -> Result<Vec<(String, String)>> {
    let ss = host.run(&["ss", "-lntupH"])?.stdout;
    Ok(ss
        .lines()
        .filter(|line| line.contains("\"weave-router\""))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(4)?.to_string()))
        })
        .collect())
}

/// With `--host`, every socket the router listens on is bound to that
/// address: the TCP mesh listener and both sleeve UDP sockets (Bridge
/// mode here: no openvswitch; fastdp's VXLAN port is the kernel's, not
/// the router's). The two routers still connect and carry traffic.
#[test]
fn netns_sleeve_host_flag_binds_every_listener() -> Result<()> {
    let lab = Lab::new(2)?;
    let ips: Vec<String> = lab
        .hosts()
        .iter()
        .map(|h| h.underlay_ip().to_string())
        .collect();
    let r0 = start(lab.host(0), &["--no-fastdp", "--host", &ips[0]], &[])?;
    let r1 = start(
        lab.host(1),
        &["--no-fastdp", "--host", &ips[1]],
        &[lab.host(0)],
    )?;
    let routers = [r0, r1];
    let a = with_logs(attach(&lab, lab.host(0), 1), &routers)?;
    let b = with_logs(attach(&lab, lab.host(1), 1), &routers)?;
    with_logs(wait_established(&lab, 2), &routers)?;
    with_logs(ping_matrix(&[a, b]), &routers)?;
    for (host, ip) in lab.hosts().iter().zip(&ips) {
        let listeners = router_listeners(host)?;
        eprintln!("host {} listeners: {listeners:?}", host.index());
        let mesh = format!("{ip}:6783");
        let count = |netid: &str| {
            listeners
                .iter()
                .filter(|(n, local)| n == netid && *local == mesh)
                .count()
        };
        ensure!(
            count("tcp") == 1,
            "no TCP listener on {mesh}: {listeners:?}"
        );
        ensure!(
            count("udp") == 2,
            "not both sleeve sockets on {mesh}: {listeners:?}"
        );
        let wildcard: Vec<_> = listeners
            .iter()
            .filter(|(_, local)| {
                local.starts_with("0.0.0.0:")
                    || local.starts_with("*:")
                    || local.starts_with("[::]:")
            })
            .collect();
        ensure!(wildcard.is_empty(), "wildcard listeners: {wildcard:?}");
    }
    Ok(())
}

/// `/report`'s `Router.Connections[]` as Weave writes them: `Info` starts
/// with the overlay (after `encrypted` padded to 11 when the router has a
/// password) and `Attrs` holds the overlay's `name` and `mtu` (and
/// `encrypted: true`); our `Dataplane.Connections` names the overlay too.
#[test]
fn netns_sleeve_report_names_the_overlay() -> Result<()> {
    for (extra, encrypted) in [
        (&["--no-fastdp"][..], false),
        (&["--no-fastdp", "--password", "report-secret"][..], true),
    ] {
        let lab = Lab::new(2)?;
        let r0 = start(lab.host(0), extra, &[])?;
        let r1 = start(lab.host(1), extra, &[lab.host(0)])?;
        let routers = [r0, r1];
        with_logs(wait_established(&lab, 2), &routers)?;
        let mut conn = serde_json::Value::Null;
        let mut report = serde_json::Value::Null;
        with_logs(
            wait_for(SETTLE, "the sleeve in /report", || {
                report = serde_json::from_str(&http(lab.host(0), "/report")?)?;
                conn = report["Router"]["Connections"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["State"] == "established").cloned())
                    .unwrap_or_default();
                Ok(conn["Attrs"]["name"] == "sleeve")
            }),
            &routers,
        )
        .with_context(|| format!("connection: {conn}"))?;
        let want = if encrypted {
            "encrypted   sleeve 00:00:00:00:00:02(h1)"
        } else {
            "sleeve 00:00:00:00:00:02(h1)"
        };
        ensure!(
            conn["Info"] == want,
            "Info {} (want {want:?})",
            conn["Info"]
        );
        ensure!(
            conn["Attrs"]["mtu"].as_u64().is_some_and(|m| m > 1000),
            "Attrs {}",
            conn["Attrs"]
        );
        ensure!(
            conn["Attrs"].get("encrypted").cloned().unwrap_or_default()
                == if encrypted {
                    serde_json::Value::Bool(true)
                } else {
                    serde_json::Value::Null
                },
            "Attrs {}",
            conn["Attrs"]
        );
        let ours = &report["Dataplane"]["Connections"][0];
        ensure!(
            ours["Overlay"] == "sleeve" && ours["Peer"] == "00:00:00:00:00:02",
            "Dataplane.Connections: {}",
            report["Dataplane"]["Connections"]
        );
        let text = http(lab.host(0), "/status/connections")?;
        ensure!(text.contains(want), "/status/connections:\n{text}");
    }
    Ok(())
}
