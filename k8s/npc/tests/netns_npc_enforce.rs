//! The core and the nftables enforcer on a real kernel: a network namespace
//! "node" with a Linux bridge `weave` (br_netfilter on, as Weave's DaemonSet
//! sets it) and the upstream model's nine pods in namespaces on veths, with
//! real TCP and UDP servers on 80 and 81. For each case the controller's
//! reset batch replaces the previous ruleset atomically, each step's changes
//! go in as incremental transactions, and every pod pair is probed with real
//! connects; the result must equal both the case's stated matrix and the
//! oracle's.

mod common;

use std::fs::File;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Model, Reach, cases, oracle_matrix, pod_ip, pod_name};
use weave_npc::core::{Config, Core};
use weave_npc::nft::Enforcer;
use weave_npc::spec::Protocol;
use weave_tests::Netns;

const BRIDGE_IP: &str = "10.40.0.1";

/// Moves the calling thread into network namespace `name`.
fn enter(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}")).with_context(|| format!("netns {name}"))?;
    // SAFETY: setns on an open namespace fd; it only changes this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(rc == 0, "setns {name}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.to_string();
    thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {} panicked", "netns"))?
}

struct Node {
    node: Netns,
    pods: Vec<Netns>,
}

fn build() -> Result<Node> {
    let pid = std::process::id();
    let node = Netns::create(&format!("npc-node-{pid}"))?;
    node.run(&["ip", "link", "add", "weave", "type", "bridge"])?;
    node.run(&[
        "ip",
        "addr",
        "add",
        &format!("{BRIDGE_IP}/24"),
        "dev",
        "weave",
    ])?;
    node.run(&["ip", "link", "set", "weave", "up"])?;
    node.run(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])?;
    let mut pods = Vec::new();
    for i in 0..9 {
        let pod = Netns::create(&format!("npc-pod{i}-{pid}"))?;
        let veth = format!("vp{i}");
        node.run(&[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ])?;
        node.run(&["ip", "link", "set", &veth, "master", "weave", "up"])?;
        pod.run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pod_ip(i)),
            "dev",
            "eth0",
        ])?;
        pod.run(&["ip", "link", "set", "eth0", "up"])?;
        pod.run(&["ip", "route", "add", "default", "via", BRIDGE_IP])?;
        pods.push(pod);
    }
    Ok(Node { node, pods })
}

/// TCP and UDP servers on 80 and 81 in every pod (accept / echo).
fn serve(node: &Node) -> Result<()> {
    for (i, pod) in node.pods.iter().enumerate() {
        let ip = pod_ip(i);
        let (tcp, udp) = in_netns(pod.name(), move || {
            let mut tcp = Vec::new();
            let mut udp = Vec::new();
            for port in [80u16, 81] {
                tcp.push(TcpListener::bind((ip, port))?);
                udp.push(UdpSocket::bind((ip, port))?);
            }
            Ok((tcp, udp))
        })?;
        for l in tcp {
            thread::spawn(move || {
                for conn in l.incoming() {
                    drop(conn);
                }
            });
        }
        for s in udp {
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            });
        }
    }
    Ok(())
}

fn probe_one(dst: Ipv4Addr, proto: Protocol, port: u16) -> bool {
    let addr = SocketAddr::from((dst, port));
    match proto {
        Protocol::Tcp => TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok(),
        Protocol::Udp => {
            let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
                return false;
            };
            if s.set_read_timeout(Some(Duration::from_millis(300)))
                .is_err()
            {
                return false;
            }
            let mut buf = [0u8; 8];
            (0..3).any(|_| {
                s.send_to(b"probe", addr).is_ok()
                    && matches!(s.recv_from(&mut buf), Ok((5, from)) if from == addr)
            })
        }
        Protocol::Sctp => false,
    }
}

/// The real reachability matrix, probing all pairs in parallel.
fn probe(node: &Node, proto: Protocol, port: u16) -> Result<Reach> {
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (f, pod) in node.pods.iter().enumerate() {
        let tx = tx.clone();
        let ns = pod.name().to_string();
        handles.push(thread::spawn(move || -> Result<()> {
            enter(&ns)?;
            let inner: Vec<_> = (0..9)
                .map(|t| {
                    let tx = tx.clone();
                    // Threads inherit the creating thread's namespace.
                    thread::spawn(move || {
                        let ok = t == f || probe_one(pod_ip(t), proto, port);
                        let _ = tx.send((f, t, ok));
                    })
                })
                .collect();
            for h in inner {
                let _ = h.join();
            }
            Ok(())
        }));
    }
    drop(tx);
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("prober panicked"))??;
    }
    let mut r = Reach::all(false);
    for (f, t, ok) in rx {
        r.0[f][t] = ok;
    }
    Ok(r)
}

fn sctp_available() -> bool {
    // SAFETY: socket(2) with constant arguments; the fd is closed at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) };
    if fd >= 0 {
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

const CASES: [&str; 12] = [
    "default-deny-ingress",
    "default-deny-all",
    "allow from pods within server namespace by podSelector",
    "podSelector and namespaceSelector",
    "ingress on one named port",
    "named UDP port",
    "ingress from updated pod",
    "endPort",
    "except clause in a CIDR block",
    "ingress ipBlock with except",
    "deny egress from all pods in a namespace",
    "stop enforcing after deletion",
];

#[test]
fn netns_npc_enforces_upstream_cases() -> Result<()> {
    weave_tests::require_root()?;
    let node = build()?;
    serve(&node)?;
    let mut enforcer = in_netns(node.node.name(), || Ok(Enforcer::open()?))?;
    if !sctp_available() {
        println!(
            "SCTP probes skipped: this kernel has no SCTP (socket(IPPROTO_SCTP) fails); SCTP rules are still loaded"
        );
    }
    // Before any policy: everything reaches everything.
    let open = probe(&node, Protocol::Tcp, 80)?;
    ensure!(
        open == Reach::all(true),
        "baseline:\n{}",
        Reach::all(true).diff(&open)
    );

    let all = cases();
    let mut failures = Vec::new();
    for name in CASES {
        let case = all.iter().find(|c| c.name == name).context(name)?;
        let mut model = Model::new();
        let mut core = Core::new(Config {
            node_name: common::NODE.into(),
            bridge: "weave".into(),
            allow_mcast: false,
        });
        for ev in model.listing() {
            core.apply(ev);
        }
        // Replaces the previous case's table in one transaction.
        enforcer
            .apply(&core.start())
            .with_context(|| format!("{name}: start"))?;
        for (n, step) in case.steps.iter().enumerate() {
            for c in &step.changes {
                let out = core.apply(model.change(c));
                ensure!(out.errors.is_empty(), "{name}: {:?}", out.errors);
                enforcer
                    .apply(&out.batch)
                    .with_context(|| format!("{name} step {n}: {:?}", out.batch))?;
            }
            let cluster = model.cluster();
            let ips: [_; 9] = std::array::from_fn(|i| Some(pod_ip(i)));
            for (proto, port, want) in &step.probes {
                // Servers listen on 80 and 81 only; SCTP has no kernel here.
                if *proto == Protocol::Sctp || !(80..=81).contains(port) {
                    continue;
                }
                let want = want.clone().with_loopback();
                let oracle = oracle_matrix(&cluster, &ips, *proto, *port);
                ensure!(oracle == want, "{name}: oracle disagrees with the case");
                let got = probe(&node, *proto, *port)?;
                if got != want {
                    failures.push(format!(
                        "{name} step {n} {proto}/{port} (X = kernel differs):\n{}",
                        want.diff(&got)
                    ));
                }
            }
        }
        // Connections from the node itself (kubelet probes) stay allowed.
        if name == "default-deny-all" {
            let ok = in_netns(node.node.name(), || {
                Ok(TcpStream::connect_timeout(
                    &SocketAddr::from((pod_ip(0), 80)),
                    Duration::from_secs(1),
                )
                .is_ok())
            })?;
            if !ok {
                failures.push(format!("{name}: node could not reach {}", pod_name(0)));
            }
        }
    }
    enforcer.remove_all()?;
    let table = node.node.cmd("nft").args(["list", "tables"]).output()?;
    ensure!(
        !table.stdout.contains("weave-npc"),
        "table left after remove_all: {}",
        table.stdout
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// The kernel refuses an invalid transaction whole: nothing of it applies.
#[test]
fn netns_npc_refused_batch_applies_nothing() -> Result<()> {
    use weave_npc::model::{Batch, Elem, Op, SetKind};
    weave_tests::require_root()?;
    let ns = Netns::create(&format!("npc-tx-{}", std::process::id()))?;
    let mut enforcer = in_netns(ns.name(), || Ok(Enforcer::open()?))?;
    let mut core = Core::new(Config {
        node_name: "n".into(),
        bridge: "weave".into(),
        allow_mcast: true,
    });
    enforcer.apply(&core.start())?;
    let bad = Batch {
        reset: false,
        ops: vec![
            Op::AddSet("extra".into(), SetKind::Addr),
            Op::DelElems(
                "ing-iso".into(),
                vec![Elem::Addr(Ipv4Addr::new(10, 9, 9, 9))],
            ),
        ],
    };
    match enforcer.apply(&bad) {
        Err(weave_npc::nft::NftError::Refused { source, .. }) => {
            ensure!(source.kind() == ErrorKind::NotFound, "{source}");
        }
        other => bail!("expected a refusal, got {other:?}"),
    }
    let sets = ns.cmd("nft").args(["list", "sets"]).output()?;
    ensure!(sets.stdout.contains("ing-iso"), "{}", sets.stdout);
    ensure!(
        !sets.stdout.contains("extra"),
        "half-applied: {}",
        sets.stdout
    );
    enforcer.remove_all()?;
    Ok(())
}
