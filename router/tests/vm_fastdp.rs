//! Fastdp against the kernel datapath: two netlab hosts, each with a
//! datapath, a VXLAN vport made by the executor and one "container" on a
//! netdev vport, driven by two fastdp state machines in this process (the
//! TCP connection between them is simulated: control messages are handed
//! over directly). Shows heartbeats crossing real VXLAN, proactive flows
//! carrying the first ping with no upcall, and the reactive path for an
//! address outside every known prefix. The host kernel has no openvswitch:
//! `cargo xtask vm` runs these.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use odp::handle::{DatapathOptions, Ovs, VportSpec};
use odp::wire::flow::FlowInfo;
use weave_router::fastdp::executor::{Executor, Feedback};
use weave_router::fastdp::forwarder::ConnectionParams;
use weave_router::fastdp::machine::FLOW_SWEEP_INTERVAL;
use weave_router::fastdp::proactive::is_proactive_ufid;
use weave_router::fastdp::{Fastdp, FastdpConfig, Output, Topology};
use weave_router::mesh::identity::{PeerName, ShortId};
use weave_router::net::netns::{in_netns, named};
use weave_tests::{Command, Lab};

const DATAPATH: &str = "datapath";
const MTU: usize = 1376;
const CONN_UID: u64 = 0x5eed_f00d;

fn require_openvswitch() -> Result<()> {
    ensure!(
        Path::new("/sys/module/openvswitch").exists(),
        "the openvswitch module is not loaded: run this test with `cargo xtask vm`"
    );
    Ok(())
}

fn peer(i: usize) -> PeerName {
    PeerName::from_u64(i as u64 + 1)
}

/// One simulated router: its state machine, its executor, and what it saw.
struct Router {
    fastdp: Fastdp,
    exec: Executor,
    netns: String,
    /// Misses handed to the state machine: (ethertype, zero MACs?).
    misses: Vec<(Option<u16>, bool)>,
    established: bool,
    failures: Vec<String>,
}

impl Router {
    fn feedback(&mut self, fb: Vec<Feedback>, now: Instant) {
        for f in fb {
            match f {
                Feedback::PortAdded {
                    port_no,
                    name,
                    kind,
                } => self.fastdp.port_added(port_no, &name, kind),
                Feedback::PortRemoved { port_no } => self.fastdp.port_removed(port_no),
                Feedback::VxlanFailed { udp_port, error } => {
                    self.failures.push(format!("vxlan {udp_port}: {error}"));
                    self.fastdp.vxlan_failed(udp_port);
                }
                Feedback::FlowDump(flows) => self.fastdp.sweep_flows(now, flows),
                Feedback::Failed(e) => self.failures.push(e.to_string()),
            }
        }
    }

    /// (missed, hit, lost) of the datapath.
    fn datapath_stats(&self) -> Result<(u64, u64, u64)> {
        let s = in_netns(&named(&self.netns), || -> Result<_> {
            let mut ovs = Ovs::connect()?;
            let s = ovs.datapaths().get(DATAPATH)?.stats.unwrap_or_default();
            Ok((s.n_missed, s.n_hit, s.n_lost))
        })??;
        Ok(s)
    }
}

/// Runs both routers once: outputs applied, control messages delivered,
/// upcalls and vport events fed back.
fn pump(routers: &mut [Router; 2]) -> Result<()> {
    let now = Instant::now();
    for i in 0..2 {
        let mut control = Vec::new();
        for _ in 0..4 {
            let r = &mut routers[i];
            r.fastdp.poll(now);
            let mut ops = Vec::new();
            for o in r.fastdp.drain_outputs() {
                match o {
                    Output::Datapath(op) => ops.push(op),
                    Output::Control { tag, msg, .. } => control.push((tag, msg)),
                    Output::Established { .. } => r.established = true,
                    Output::Health { .. } => {}
                    Output::Sleeve { .. } => bail!("no sleeve in this test"),
                }
            }
            if ops.is_empty() {
                break;
            }
            let fb = r.exec.apply(ops);
            r.feedback(fb, now);
        }
        let r = &mut routers[i];
        let events = r.exec.recv_port_events()?;
        r.feedback(events, now);
        for up in r.exec.recv_upcalls()? {
            let zero = up
                .key
                .ethernet()
                .is_some_and(|e| e.src.0 == [0; 6] && e.dst.0 == [0; 6]);
            r.misses.push((up.key.eth_type(), zero));
            r.fastdp.handle_miss(up.packet, &up.key, now);
        }
        let other = &mut routers[1 - i];
        for (tag, msg) in control {
            other.fastdp.control_message(peer(i), tag, &msg, now);
        }
    }
    Ok(())
}

fn pump_until(
    routers: &mut [Router; 2],
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&mut [Router; 2]) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        pump(routers)?;
        if done(routers)? {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut report = String::new();
            for r in routers.iter_mut() {
                let stats = r.datapath_stats().ok();
                let ifindex = r.exec.dp_ifindex();
                let vports = r.exec.ovs().vports(ifindex).list();
                let links = Command::new("ip")
                    .args(["-s", "-d", "link", "show"])
                    .in_netns(&r.netns)
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                report.push_str(&format!(
                    "\n{}: failures {:?}\nstatus {:?}\nmisses {:?}\nstats (missed, hit, lost) {stats:?}\nvports {vports:#?}\n{links}",
                    r.netns,
                    r.failures,
                    r.fastdp.status(),
                    r.misses,
                ));
            }
            bail!("timed out waiting for {what}:{report}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Pings `dst` once from namespace `from`, pumping the routers meanwhile.
fn ping(lab: &Lab, routers: &mut [Router; 2], from: &str, dst: &str) -> Result<String> {
    let mut p = Command::new("ping")
        .args(["-c", "1", "-W", "3", dst])
        .in_netns(from)
        .spawn(lab.dir().join(format!("ping-{dst}.log")))?;
    let mut status = None;
    pump_until(routers, Duration::from_secs(6), "ping to exit", |_| {
        status = p.try_status()?;
        Ok(status.is_some())
    })?;
    let log = p.log();
    ensure!(
        status.is_some_and(|s| s.success()),
        "ping {dst} from {from} failed:\n{log}"
    );
    Ok(log)
}

/// Container `i`: a namespace on host `i` behind veth `vc<i>`, IPv6 off so
/// it sends nothing unasked.
fn container(lab: &Lab, i: usize, addr: &str) -> Result<(String, String)> {
    let host = lab.host(i).netns().to_string();
    let c = lab.add_netns(&format!("c{i}"))?;
    let veth = format!("vc{i}");
    lab.connect(&host, &veth, &c, "eth0")?;
    for knob in ["all", "default"] {
        lab.run_in(
            &c,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{knob}.disable_ipv6=1"),
            ],
        )?;
    }
    lab.run_in(&c, &["ip", "link", "set", "eth0", "mtu", &MTU.to_string()])?;
    lab.run_in(&c, &["ip", "addr", "add", addr, "dev", "eth0"])?;
    lab.run_in(&c, &["ip", "link", "set", "eth0", "up"])?;
    lab.run_in(&host, &["ip", "link", "set", &veth, "up"])?;
    let mac = lab
        .run_in(&c, &["cat", "/sys/class/net/eth0/address"])?
        .stdout
        .trim()
        .to_string();
    Ok((c, mac))
}

fn start_router(lab: &Lab, i: usize, now: Instant) -> Result<Router> {
    let host = lab.host(i);
    let netns = host.netns().to_string();
    let veth = format!("vc{i}");
    let (exec, ports) = in_netns(&named(&netns), move || -> Result<_> {
        let mut ovs = Ovs::connect()?;
        let dp = ovs
            .datapaths()
            .create(DATAPATH, &DatapathOptions::default())?;
        ovs.vports(dp.dp_ifindex)
            .create(&VportSpec::netdev(&veth))?;
        Ok(Executor::open(DATAPATH)?)
    })??;
    let mut fastdp = Fastdp::new(FastdpConfig::new(peer(i), MTU), now);
    let mut topology = Topology::default();
    let other = 1 - i;
    for j in 0..2 {
        topology
            .short_ids
            .insert(peer(j), ShortId::new(j as u16 + 1));
    }
    topology.unicast.insert(peer(other), peer(other));
    topology.broadcast.insert(peer(i), vec![peer(other)]);
    topology.broadcast.insert(peer(other), vec![]);
    fastdp.set_topology(topology);
    fastdp.add_connection(ConnectionParams {
        peer: peer(other),
        conn_uid: CONN_UID,
        local_ip: host.underlay_ip(),
        remote_tcp: SocketAddrV4::new(lab.host(other).underlay_ip(), 6783),
        outbound: i == 0,
    })?;
    fastdp.set_selected(peer(other), true)?;
    let mut r = Router {
        fastdp,
        exec,
        netns,
        misses: Vec::new(),
        established: false,
        failures: Vec::new(),
    };
    r.feedback(ports, now);
    Ok(r)
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_fastdp_proactive_first_ping_and_reactive_fallback() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(2)?;
    let (c0, mac0) = container(&lab, 0, "10.32.0.5/8")?;
    let (c1, mac1) = container(&lab, 1, "10.40.0.5/8")?;
    // An address outside every ring prefix, assigned by hand.
    lab.run_in(&c1, &["ip", "addr", "add", "10.99.0.9/8", "dev", "eth0"])?;

    let now = Instant::now();
    let mut routers = [start_router(&lab, 0, now)?, start_router(&lab, 1, now)?];
    for (i, r) in routers.iter_mut().enumerate() {
        r.fastdp
            .confirm_connection(peer(1 - i), now)
            .map_err(|e| anyhow!("{e}"))?;
    }

    // Heartbeats cross the real VXLAN tunnel and are acknowledged.
    pump_until(
        &mut routers,
        Duration::from_secs(10),
        "fastdp established",
        |r| Ok(r[0].established && r[1].established),
    )?;
    for r in &routers {
        ensure!(r.failures.is_empty(), "failures: {:?}", r.failures);
        ensure!(
            r.misses.iter().any(|(_, zero)| *zero),
            "no heartbeat upcall"
        );
    }

    // Proactive flows: the ring is split between the two peers; each
    // container's address is delivered to its vport.
    let cidrs = vec![
        ("10.32.0.0/13".parse()?, peer(0)),
        ("10.40.0.0/13".parse()?, peer(1)),
    ];
    for (i, addr) in ["10.32.0.5/32", "10.40.0.5/32"].iter().enumerate() {
        let r = &mut routers[i];
        r.fastdp.set_cidr_view(cidrs.clone());
        r.fastdp
            .add_local_destination(addr.parse()?, &format!("vc{i}"));
    }
    pump(&mut routers)?;
    for r in &mut routers {
        let flows = r.exec.flows().context("dumping flows")?;
        let proactive = flows
            .iter()
            .filter(|f| f.ufid.as_ref().is_some_and(is_proactive_ufid))
            .count();
        // Egress from the internal port and the container's vport, and
        // delivery from the tunnel and from the internal port.
        ensure!(
            proactive == 4,
            "{} proactive flows in {}: {flows:#?}; failures {:?}",
            proactive,
            r.netns,
            r.failures
        );
        ensure!(r.failures.is_empty(), "failures: {:?}", r.failures);
    }

    // No ARP for the first ping: the neighbours are known.
    lab.run_in(
        &c0,
        &[
            "ip",
            "neigh",
            "replace",
            "10.40.0.5",
            "lladdr",
            &mac1,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )?;
    lab.run_in(
        &c1,
        &[
            "ip",
            "neigh",
            "replace",
            "10.32.0.5",
            "lladdr",
            &mac0,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )?;
    let before: Vec<(u64, u64, u64)> = routers
        .iter()
        .map(Router::datapath_stats)
        .collect::<Result<_>>()?;
    let seen_before: Vec<usize> = routers.iter().map(|r| r.misses.len()).collect();
    ping(&lab, &mut routers, &c0, "10.40.0.5")?;
    pump(&mut routers)?;
    for (i, r) in routers.iter().enumerate() {
        let (missed, hit, _) = r.datapath_stats()?;
        let new = &r.misses[seen_before[i]..];
        let heartbeats = new.iter().filter(|(_, zero)| *zero).count() as u64;
        ensure!(
            !new.iter().any(|(t, _)| *t == Some(0x0800)),
            "an IPv4 upcall on host {i}: {new:?}"
        );
        ensure!(
            missed - before[i].0 == heartbeats,
            "host {i}: {} misses during the ping, {heartbeats} of them heartbeats",
            missed - before[i].0
        );
        ensure!(hit - before[i].1 >= 2, "host {i}: the ping hit no flow");
    }
    // The egress flow of host 0 counted the echo request.
    let used = routers[0]
        .exec
        .flows()?
        .into_iter()
        .filter(|f| f.ufid.as_ref().is_some_and(is_proactive_ufid))
        .filter(|f| {
            f.key
                .as_ref()
                .is_some_and(|k| k.get(odp::wire::key::attr::TUNNEL).is_none())
        })
        .map(|f| f.stats.map_or(0, |s| s.n_packets))
        .sum::<u64>();
    ensure!(used >= 1, "no proactive egress flow counted the ping");

    // Reactive: 10.99.0.9 is in no prefix; ARP and the ping go through
    // upcalls, MAC learning and reactive flows.
    ping(&lab, &mut routers, &c0, "10.99.0.9")?;
    for (i, r) in routers.iter().enumerate() {
        ensure!(
            r.misses[seen_before[i]..]
                .iter()
                .any(|(t, _)| *t == Some(0x0806)),
            "host {i} saw no ARP upcall"
        );
        ensure!(r.failures.is_empty(), "failures: {:?}", r.failures);
    }
    let reactive = routers[0]
        .exec
        .flows()?
        .into_iter()
        .filter(|f| f.ufid.is_none())
        .filter(|f| f.key.as_ref().is_some_and(|k| k.in_port().is_some()))
        .count();
    ensure!(reactive >= 1, "no reactive flow on host 0");
    // A second ping to it is served by those flows.
    let missed_before = routers[0].datapath_stats()?.0;
    let seen = routers[0].misses.len();
    ping(&lab, &mut routers, &c0, "10.99.0.9")?;
    let ipv4_misses = routers[0].misses[seen..]
        .iter()
        .filter(|(t, _)| *t == Some(0x0800))
        .count();
    ensure!(
        ipv4_misses == 0,
        "the second reactive ping missed {ipv4_misses} times (datapath misses {} → {})",
        missed_before,
        routers[0].datapath_stats()?.0
    );

    // Idle reactive flows go at the second sweep; proactive flows stay.
    let t = Instant::now();
    for k in 1..=2 {
        routers[0].fastdp.poll(t + k * FLOW_SWEEP_INTERVAL);
        pump(&mut routers)?;
    }
    let flows = routers[0].exec.flows()?;
    let proactive = |f: &&FlowInfo| f.ufid.as_ref().is_some_and(is_proactive_ufid);
    ensure!(
        flows.iter().all(|f| f.ufid.is_some()),
        "idle reactive flows survived the sweeps: {flows:#?}"
    );
    ensure!(flows.iter().filter(proactive).count() == 4, "{flows:#?}");

    // Peer 1's prefix leaves the CIDR view and comes back: its egress flows
    // are deleted (by UFID) and installed again.
    for (view, want) in [(vec![cidrs[0]], 2), (cidrs.clone(), 4)] {
        routers[0].fastdp.set_cidr_view(view);
        pump(&mut routers)?;
        let flows = routers[0].exec.flows()?;
        ensure!(flows.iter().filter(proactive).count() == want, "{flows:#?}");
    }

    // Peer 1 is lost: its flows go, the local ones stay.
    let mut alone = Topology::default();
    alone.short_ids.insert(peer(0), ShortId::new(1));
    routers[0].fastdp.set_topology(alone);
    pump(&mut routers)?;
    let flows = routers[0].exec.flows()?;
    ensure!(flows.iter().filter(proactive).count() == 2, "{flows:#?}");
    ensure!(
        flows
            .iter()
            .all(|f| f.actions.as_ref().is_some_and(|a| a.len() == 1)),
        "a flow still tunnels to the lost peer: {flows:#?}"
    );
    ensure!(routers[0].failures.is_empty(), "{:?}", routers[0].failures);
    Ok(())
}

#[test]
#[ignore = "needs the kernel openvswitch datapath: cargo xtask test runs it in the VM"]
fn vm_fastdp_vxlan_port_in_use_is_reported() -> Result<()> {
    require_openvswitch()?;
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    // A socket made in the host's namespace stays there: it holds the port.
    let _holder = in_netns(&named(host.netns()), || {
        std::net::UdpSocket::bind(("0.0.0.0", 6784))
    })??;
    let feedback = in_netns(&named(host.netns()), || -> Result<Vec<String>> {
        let mut ovs = Ovs::connect()?;
        ovs.datapaths()
            .create(DATAPATH, &DatapathOptions::default())?;
        let (mut exec, _) = Executor::open(DATAPATH)?;
        let mut fastdp = Fastdp::new(FastdpConfig::new(peer(0), MTU), Instant::now());
        let ops: Vec<_> = fastdp
            .drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Datapath(op) => Some(op),
                _ => None,
            })
            .collect();
        let vports = exec.vports()?;
        let mut out: Vec<String> = exec
            .apply(ops)
            .into_iter()
            .map(|f| match f {
                Feedback::VxlanFailed { udp_port, error } => {
                    format!("failed {udp_port} errno {:?}", error.source.errno())
                }
                other => format!("{other:?}"),
            })
            .collect();
        let after = exec.vports()?;
        out.push(format!("vports {} -> {}", vports.len(), after.len()));
        Ok(out)
    })??;
    ensure!(
        feedback
            == vec![
                format!("failed 6784 errno {:?}", Some(libc::EADDRINUSE)),
                "vports 1 -> 1".to_string()
            ],
        "{feedback:?}"
    );
    Ok(())
}
