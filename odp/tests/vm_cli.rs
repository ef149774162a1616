//! The `odp` CLI and the `odp::text` syntax against Debian's `ovs-dpctl`
//! (Open vSwitch 3.1), both ways, on datapaths these tests own (run in the
//! VM: `cargo xtask test`, or build with
//! `cargo test -p odp --test vm_cli --no-run` and run the binary inside
//! `cargo xtask vm` with `--include-ignored --test-threads=1`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Veth, sh, sh_quiet, unique};
use odp::handle::Ovs;
use odp::text::{format_flow_key, parse_flow};
use odp::wire::key::{FlowKey, KeyAttr};
use odp::wire::nla::Nla;

const ODP: &str = env!("CARGO_BIN_EXE_odp");

/// Runs a tool; returns (success, stdout, stderr).
fn run(tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a tool that must succeed; returns its stdout.
fn ok(tool: &str, args: &[&str]) -> String {
    let (good, out, err) = run(tool, args);
    assert!(good, "{tool} {args:?} failed:\n{out}\n{err}");
    out
}

fn odp(args: &[&str]) -> String {
    ok(ODP, args)
}

fn dpctl(args: &[&str]) -> String {
    ok("ovs-dpctl", args)
}

/// A datapath made with `odp add-dp`, deleted (by name) when dropped.
struct CliDp {
    name: String,
}

impl CliDp {
    fn new(tag: &str, ifaces: &[&str]) -> CliDp {
        let name = unique(tag);
        sh_quiet(ODP, &["del-dp", &name]);
        let mut args = vec!["add-dp", name.as_str()];
        args.extend_from_slice(ifaces);
        odp(&args);
        CliDp { name }
    }
}

impl Drop for CliDp {
    fn drop(&mut self) {
        sh_quiet(ODP, &["del-dp", &self.name]);
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
}

/// Flows put with `odp add-flow`; the comment says what each covers.
const ODP_FLOWS: &[(&str, &str)] = &[
    // Partial IPv4 mask, exact Ethernet.
    (
        "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02),eth_type(0x0800),ipv4(dst=10.32.0.0/255.240.0.0)",
        "2",
    ),
    // set(tunnel) with the DF flag; wildcarded Ethernet prints as eth().
    (
        "in_port(2),eth(),eth_type(0x0806),arp()",
        "set(tunnel(tun_id=0x5,dst=192.0.2.2,ttl=64,flags(df))),3",
    ),
    // Exact L3/L4, TCP flags, userspace with a cookie, push_vlan.
    (
        "in_port(1),eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:03),eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0,ttl=64,frag=no),tcp(dst=80),tcp_flags(syn)",
        "userspace(pid=1234,userdata(0102)),push_vlan(vid=5,pcp=1),2",
    ),
    // Tunnel key match with masked flags; an empty action list.
    (
        "in_port(3),tunnel(tun_id=0x5,src=192.0.2.1,dst=192.0.2.2,ttl=64,tp_dst=4789,flags(-df+csum)),eth(),eth_type(0x0800),ipv4()",
        "drop",
    ),
    // IPv6 neighbour discovery; conntrack with zone and mark; recirc.
    (
        "in_port(2),eth(src=02:00:00:00:00:0a,dst=33:33:ff:00:00:01),eth_type(0x86dd),ipv6(src=fe80::1,dst=ff02::1:ff00:1,proto=58,hlimit=255),icmpv6(type=135,code=0),nd(target=fe80::2)",
        "ct(commit,zone=5,mark=0x1/0xff),recirc(0x7)",
    ),
    // A UFID; masked TCP flags; clone with a masked set; sample.
    (
        "ufid:01020304-0506-0708-090a-0b0c0d0e0f10 in_port(1),eth(),eth_type(0x0800),ipv4(src=10.5.0.0/255.255.0.0,proto=6),tcp(dst=443),tcp_flags(+syn-ack)",
        "clone(set(ipv4(ttl=9)),2),sample(sample=50.0%,actions(userspace(pid=7))),3",
    ),
    // skb_mark and priority with masks; UDP; several outputs.
    (
        "skb_priority(0x3),skb_mark(0x5/0xff),in_port(1),eth(src=02:00:00:00:00:07,dst=02:00:00:00:00:08),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17,frag=no),udp(dst=53)",
        "2,3,pop_vlan",
    ),
    // VXLAN group-based-policy options, matched and set.
    (
        "in_port(3),tunnel(tun_id=0x9,src=192.0.2.1,dst=192.0.2.2,ttl=64,vxlan(gbp(id=10,flags=0x1)),flags(+key)),eth(),eth_type(0x0800),ipv4()",
        "set(tunnel(tun_id=0x9,dst=192.0.2.2,ttl=64,vxlan(gbp(id=7)),flags(df))),3",
    ),
];

/// Flows put with `ovs-dpctl add-flow`. (ovs-dpctl pads userspace cookies
/// shorter than 8 bytes with zeros, so the cookie here has 8.)
const DPCTL_FLOWS: &[(&str, &str)] = &[
    (
        "in_port(1),eth(src=02:00:00:00:00:07,dst=02:00:00:00:00:08),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17),udp(dst=53)",
        "2,3",
    ),
    (
        "in_port(2),eth(),eth_type(0x0800),ipv4(dst=10.9.0.0/255.255.0.0)",
        "set(ipv4(dst=10.9.0.9)),set(eth(src=02:00:00:00:00:aa,dst=02:00:00:00:00:bb)),1",
    ),
    (
        "in_port(1),eth(),eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),ipv4())",
        "pop_vlan,2",
    ),
    (
        "skb_mark(0x5/0xff),in_port(1),eth(),eth_type(0x0806),arp(sip=10.0.0.1,op=1)",
        "trunc(100),2",
    ),
    (
        "in_port(2),eth(src=02:00:00:00:00:0b),eth_type(0x86dd),ipv6(dst=fe80::/ffff::,proto=17),udp(src=546)",
        "userspace(pid=9,userdata(cafe0000cafe0000)),1",
    ),
];

fn ports_of(name: &str, veth: &Veth) -> Vec<String> {
    vec![
        veth.a.clone(),
        format!("{name}i,type=internal"),
        format!("{name}x,type=vxlan,dst_port=8472"),
    ]
}

/// What odp adds, `ovs-dpctl dump-flows` prints exactly as `odp dump-flows`
/// does (terse and with -m), and the terse text is the text given.
#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cli_odp_flows_print_the_same_in_ovs_dpctl() {
    let veth = Veth::new("cf");
    let tag = unique("cf");
    let ifaces = ports_of(&tag, &veth);
    let refs: Vec<&str> = ifaces.iter().map(String::as_str).collect();
    let dp = CliDp::new("cf", &refs);
    for (flow, acts) in ODP_FLOWS {
        odp(&["add-flow", &dp.name, flow, acts]);
    }
    // Adding an existing flow again is an error that names EEXIST.
    let (good, _, err) = run(ODP, &["add-flow", &dp.name, ODP_FLOWS[0].0, "2"]);
    assert!(!good && err.contains("already exists"), "{err}");

    let ours = odp(&["dump-flows", &dp.name]);
    let theirs = dpctl(&["dump-flows", &dp.name]);
    eprintln!("odp dump-flows:\n{ours}\novs-dpctl dump-flows:\n{theirs}");
    assert_eq!(lines(&ours).len(), ODP_FLOWS.len(), "{ours}");
    assert_eq!(lines(&ours), lines(&theirs));
    let ours_m = odp(&["dump-flows", "-m", &dp.name]);
    let theirs_m = dpctl(&["dump-flows", "-m", &dp.name]);
    // ovs-dpctl -m names a UFID for every flow (it hashes one for flows
    // without); compare after the UFID prefix.
    let strip = |l: &str| -> String {
        match l.strip_prefix("ufid:") {
            Some(r) => r.split_once(", ").map_or(l, |x| x.1).to_owned(),
            None => l.to_owned(),
        }
    };
    let a: Vec<String> = lines(&ours_m).into_iter().map(strip).collect();
    let b: Vec<String> = lines(&theirs_m).into_iter().map(strip).collect();
    assert_eq!(a, b);
    // The UFID we gave is the one ovs-dpctl prints.
    assert!(
        theirs_m.contains("ufid:01020304-0506-0708-090a-0b0c0d0e0f10, "),
        "{theirs_m}"
    );
    assert!(
        ours_m.contains("ufid:01020304-0506-0708-090a-0b0c0d0e0f10, "),
        "{ours_m}"
    );

    // get-flow by UFID: the same line from both tools.
    let ufid = "ufid:01020304-0506-0708-090a-0b0c0d0e0f10";
    let g_ours = odp(&["get-flow", &dp.name, ufid]);
    let g_theirs = dpctl(&["get-flow", &dp.name, ufid]);
    assert_eq!(lines(&g_ours), lines(&g_theirs));

    // mod-flow: new actions show in ovs-dpctl.
    odp(&["mod-flow", &dp.name, ODP_FLOWS[0].0, "3,2"]);
    let theirs = dpctl(&["dump-flows", &dp.name]);
    assert!(
        theirs
            .lines()
            .any(|l| l.starts_with(ODP_FLOWS[0].0) && l.ends_with("actions:3,2")),
        "{theirs}"
    );
    // del-flow by key and by UFID; ovs-dpctl sees them gone.
    odp(&["del-flow", &dp.name, ODP_FLOWS[0].0]);
    odp(&["del-flow", &dp.name, ufid]);
    let theirs = dpctl(&["dump-flows", &dp.name]);
    assert_eq!(lines(&theirs).len(), ODP_FLOWS.len() - 2, "{theirs}");
    assert!(!theirs.contains("10.32.0.0"), "{theirs}");
    // del-flows empties the table.
    odp(&["del-flows", &dp.name]);
    assert_eq!(dpctl(&["dump-flows", &dp.name]).trim(), "");
}

/// The kernel keeps the ARP opcode in 8 bits: a 16-bit mask comes back
/// narrowed to 0x00ff.
fn kernel_view(m: &KeyAttr) -> KeyAttr {
    match m {
        KeyAttr::Arp(a) => {
            let mut a = *a;
            a.op = odp::wire::types::Be16(a.op.get() & 0xff);
            KeyAttr::Arp(a)
        }
        other => other.clone(),
    }
}

/// For every attribute given (`key`, `mask`), the kernel's key and mask
/// (`dkey`, `dmask`) hold the same values (nested encap compared the same
/// way). The kernel adds attributes of its own (recirc_id, dp_hash, ...).
fn assert_same(what: &str, key: &[KeyAttr], mask: &[KeyAttr], dkey: &[KeyAttr], dmask: &[KeyAttr]) {
    for (k, m) in key.iter().zip(mask) {
        let dk = dkey
            .iter()
            .find(|a| a.kind() == k.kind())
            .unwrap_or_else(|| panic!("{what}: kernel key lacks {k:?}: {dkey:?}"));
        let dm = dmask
            .iter()
            .find(|a| a.kind() == k.kind())
            .unwrap_or_else(|| panic!("{what}: kernel mask lacks {m:?}: {dmask:?}"));
        match (k, m, dk, dm) {
            (KeyAttr::Encap(k), KeyAttr::Encap(m), KeyAttr::Encap(dk), KeyAttr::Encap(dm)) => {
                assert_same(what, k, m, dk, dm)
            }
            // OVS's text makes recirc_id exact; the kernel may wildcard it.
            (KeyAttr::RecircId(_), ..) => {}
            _ => {
                assert_eq!(dm, &kernel_view(m), "{what}: mask of {}", k.kind());
                assert_eq!(dk, k, "{what}: key of {}", k.kind());
            }
        }
    }
}

fn assert_reads_back(given: &str, key: &FlowKey, mask: &FlowKey) {
    let p = parse_flow(given, None).unwrap_or_else(|e| panic!("{given}: {e}"));
    assert_same(given, &p.key.0, &p.mask.0, &key.0, &mask.0);
}

/// What ovs-dpctl adds, odp reads back equal (through the library and the
/// CLI), and odp's text for it is ovs-dpctl's.
#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cli_ovs_dpctl_flows_read_back_equal() {
    let veth = Veth::new("cr");
    let tag = unique("cr");
    let ifaces = ports_of(&tag, &veth);
    let refs: Vec<&str> = ifaces.iter().map(String::as_str).collect();
    let dp = CliDp::new("cr", &refs);
    for (flow, acts) in DPCTL_FLOWS {
        dpctl(&["add-flow", &dp.name, flow, acts]);
    }
    let mut ovs = Ovs::connect().unwrap();
    let info = ovs.datapaths().get(&dp.name).unwrap();
    let flows = ovs.flows(info.dp_ifindex).dump().unwrap();
    assert_eq!(flows.len(), DPCTL_FLOWS.len());
    for (flow, acts) in DPCTL_FLOWS {
        // Each test flow has its own actions: find it by them.
        let want = odp::text::parse_actions(acts, None).unwrap();
        let found = flows
            .iter()
            .find(|f| f.actions.as_ref() == Some(&want))
            .unwrap_or_else(|| panic!("no flow with actions {acts}: {flows:#?}"));
        assert_reads_back(
            flow,
            found.key.as_ref().unwrap(),
            found.mask.as_ref().unwrap(),
        );
        assert_eq!(
            odp::text::format_actions(found.actions.as_ref().unwrap(), None),
            *acts
        );
        // The terse text parses back to the kernel's key and mask.
        let text = format_flow_key(
            found.key.as_ref().unwrap(),
            found.mask.as_ref(),
            None,
            false,
        );
        eprintln!("{flow}\n  reads back as {text}");
    }
    let ours = odp(&["dump-flows", &dp.name]);
    let theirs = dpctl(&["dump-flows", &dp.name]);
    eprintln!("odp:\n{ours}\novs-dpctl:\n{theirs}");
    assert_eq!(lines(&ours), lines(&theirs));
    let ours = odp(&["dump-flows", "-m", &dp.name]);
    let theirs = dpctl(&["dump-flows", "-m", &dp.name]);
    let strip = |l: &str| -> String {
        match l.strip_prefix("ufid:") {
            Some(r) => r.split_once(", ").map_or(l, |x| x.1).to_owned(),
            None => l.to_owned(),
        }
    };
    let a: Vec<String> = lines(&ours).into_iter().map(strip).collect();
    let b: Vec<String> = lines(&theirs).into_iter().map(strip).collect();
    assert_eq!(a, b);
    // odp deletes a flow ovs-dpctl put, by the same key text: the kernel
    // finds it by its unmasked key, so both parsers built the same key.
    odp(&["del-flow", &dp.name, DPCTL_FLOWS[1].0]);
    let theirs = dpctl(&["dump-flows", &dp.name]);
    assert_eq!(lines(&theirs).len(), DPCTL_FLOWS.len() - 1, "{theirs}");
    assert!(!theirs.contains("10.9.0.0"), "{theirs}");
}

/// `odp show` and `ovs-dpctl show` print the same datapath and ports;
/// ports added and removed by either tool show in both.
#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cli_show_lists_the_same_ports() {
    let veth = Veth::new("cs");
    let tag = unique("cs");
    let ifaces = ports_of(&tag, &veth);
    let refs: Vec<&str> = ifaces.iter().map(String::as_str).collect();
    let dp = CliDp::new("cs", &refs);
    let extra = format!("{tag}j");
    dpctl(&["add-if", &dp.name, &format!("{extra},type=internal")]);
    let ours = odp(&["show", &dp.name]);
    let theirs = dpctl(&["show", &dp.name]);
    eprintln!("odp show:\n{ours}\novs-dpctl show:\n{theirs}");
    // Identical but for the lookup counters, which move between the two
    // runs (IPv6 autoconfiguration sends packets into the datapath).
    let no_counters = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("  lookups:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(no_counters(&ours), no_counters(&theirs));
    assert_eq!(
        ours.lines().filter(|l| l.starts_with("  lookups:")).count(),
        1
    );
    for want in [
        format!("system@{}:", dp.name),
        format!("  port 0: {} (internal)", dp.name),
        format!("  port 1: {}", veth.a),
        format!("  port 2: {tag}i (internal)"),
        format!("  port 3: {tag}x (vxlan: packet_type=ptap)"),
        format!("  port 4: {extra} (internal)"),
    ] {
        assert!(ours.lines().any(|l| l == want), "{want:?} not in\n{ours}");
    }
    // The kernel vport has the UDP port odp asked for.
    let mut ovs = Ovs::connect().unwrap();
    let info = ovs.datapaths().get(&dp.name).unwrap();
    let vx = ovs.vports(info.dp_ifindex).get(&format!("{tag}x")).unwrap();
    assert_eq!(vx.dst_port(), Some(8472));
    // del-if by odp, gone for ovs-dpctl; set-if checks type and port.
    odp(&["del-if", &dp.name, &extra]);
    assert!(!dpctl(&["show", &dp.name]).contains(&extra));
    odp(&[
        "set-if",
        &dp.name,
        &format!("{tag}i,type=internal,port_no=2"),
    ]);
    let (good, _, err) = run(ODP, &["set-if", &dp.name, &format!("{tag}i,type=vxlan")]);
    assert!(!good && err.contains("can't change type"), "{err}");
    // dump-dps lists it in both.
    let ours = odp(&["dump-dps"]);
    let theirs = dpctl(&["dump-dps"]);
    assert!(ours.lines().any(|l| l == format!("system@{}", dp.name)));
    assert_eq!(lines(&ours), lines(&theirs));
    // Errors: an existing datapath, a missing vport.
    let (good, _, err) = run(ODP, &["add-dp", &dp.name]);
    assert!(!good && err.contains("already exists"), "{err}");
    let (good, _, err) = run(ODP, &["del-if", &dp.name, "nosuchport"]);
    assert!(!good, "{err}");
}

/// `odp listen` prints vport events and miss upcalls as they arrive.
#[test]
#[ignore = "needs the VM: run by cargo xtask test"]
fn vm_cli_listen_prints_upcalls_and_vport_events() {
    let veth = Veth::new("cl");
    let tag = unique("cl");
    let dp = CliDp::new("cl", &[&veth.a]);
    let mut child = Command::new(ODP)
        .args(["listen", &dp.name, "--count", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(format!("stderr: {l}"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&str) -> bool, what: &str| {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = pred(&l);
                    seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no {what}; saw {seen:#?}"),
            }
        }
    };
    wait_for(&|l| l.contains("now come to this program"), "start-up line");
    let port = format!("{tag}i");
    odp(&["add-if", &dp.name, &format!("{port},type=internal")]);
    let want = format!(": {port} (internal)");
    wait_for(
        &|l| l.starts_with("vport new:") && l.ends_with(&want),
        "vport new event",
    );
    odp(&["del-if", &dp.name, &port]);
    wait_for(
        &|l| l.starts_with("vport del:") && l.ends_with(&want),
        "vport del event",
    );
    sh("ip", &["addr", "add", "10.197.0.1/24", "dev", &veth.b]);
    sh_quiet("ping", &["-c", "2", "-W", "1", "-I", &veth.b, "10.197.0.2"]);
    let inport = format!("in_port({})", veth.a);
    wait_for(
        &|l| l.starts_with("miss: ") && l.contains(&inport) && l.contains("eth_type(0x0806)"),
        "ARP miss upcall",
    );
    let _ = child.kill();
    let _ = child.wait();
}
