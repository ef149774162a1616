//! The odp benchmark: flow installs batched against one request per flow
//! (the way go-odp installs flows), dump rates, batched deletes and
//! miss-upcall throughput, all on one datapath this program creates and
//! deletes. It needs root and the openvswitch module: `cargo xtask bench odp`
//! builds it and runs it in the VM.
//!
//! ```text
//! odp_bench [--flows N] [--packets N]
//! ```
//!
//! It prints a Markdown table; every rate is compared with its baseline
//! measured in the same run.

use std::error::Error as StdError;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use odp::handle::aio::AsyncOvs;
use odp::handle::{DatapathOptions, Features, FlowId, FlowSpec, Ovs, VportSpec};
use odp::transport::{Error, UpcallSocket};
use odp::wire::action::Action;
use odp::wire::datapath::UserFeatures;
use odp::wire::flow::{Ufid, UfidFlags};
use odp::wire::key::{EthernetKey, FlowKey, IcmpKey, Ipv4Key, KeyAttr};
use odp::wire::packet::{PacketCmd, Upcall};
use odp::wire::types::{Be16, MacAddr};

type Res<T> = Result<T, Box<dyn StdError>>;

struct Args {
    flows: u32,
    packets: u32,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        flows: 100_000,
        packets: 50_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = |it: &mut dyn Iterator<Item = String>| -> Res<u32> {
            Ok(it.next().ok_or(format!("{a} needs a value"))?.parse()?)
        };
        match a.as_str() {
            "--flows" => args.flows = value(&mut it)?,
            "--packets" => args.packets = value(&mut it)?,
            "-h" | "--help" => {
                println!("odp_bench [--flows N] [--packets N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// One exact-match flow (no mask: every key attribute given is exact),
/// distinct by IPv4 destination.
fn flow(port: u32, i: u32, ufid: bool) -> FlowSpec {
    let key = FlowKey::new()
        .with(KeyAttr::InPort(port))
        .with(KeyAttr::Ethernet(EthernetKey {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
        }))
        .with(KeyAttr::EtherType(Be16(0x0800)))
        .with(KeyAttr::Ipv4(Ipv4Key {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::from(0x0b00_0000 + i),
            proto: 1,
            tos: 0,
            ttl: 64,
            frag: 0,
        }))
        .with(KeyAttr::Icmp(IcmpKey {
            icmp_type: 8,
            code: 0,
        }));
    let spec = FlowSpec::new(key, vec![Action::Output(port)]);
    if ufid {
        spec.with_ufid(Ufid::from_u128(u128::from(i) + 1))
    } else {
        spec
    }
}

fn sh(cmd: &str, args: &[&str]) -> Res<()> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// One measured row of the table.
struct Row {
    what: &'static str,
    count: u64,
    secs: f64,
    /// Index of the baseline row, if this row is compared with one.
    baseline: Option<usize>,
}

impl Row {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.count as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn all_ok(what: &str, out: &[Result<(), Error>]) -> Res<()> {
    match out.iter().position(|r| r.is_err()) {
        None => Ok(()),
        Some(i) => Err(format!("{what}: request {i} failed: {:?}", out[i]).into()),
    }
}

/// Deletes the datapath and the veth pair when dropped.
struct Cleanup {
    dp: String,
    veth: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(v) = &self.veth {
            let _ = sh("ip", &["link", "del", v]);
        }
        if let Ok(mut ovs) = Ovs::connect() {
            let _ = ovs.datapaths().delete(&self.dp);
        }
    }
}

/// What one upcall run saw.
struct UpcallRun {
    received: u64,
    secs: f64,
    /// How long the sender took to send every datagram.
    send_secs: f64,
}

const PAYLOAD: u8 = 0x5a;
const SENTINEL: u8 = 0xa5;

/// Sends `n` UDP datagrams out of the veth peer (each misses in the
/// datapath), then a sentinel datagram every 10 ms until `stop` is set, so
/// that a blocking reader learns that the run is over. Returns how long the
/// `n` sends took.
fn send_packets(n: u32, stop: &AtomicBool) -> Res<Duration> {
    let sock = UdpSocket::bind("10.195.0.1:0")?;
    let send = |byte: u8| -> Res<()> {
        loop {
            match sock.send_to(&[byte; 64], "10.195.0.2:9") {
                Ok(_) => return Ok(()),
                // A full device queue: try again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let t = Instant::now();
    for _ in 0..n {
        send(PAYLOAD)?;
    }
    let took = t.elapsed();
    let give_up = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        send(SENTINEL)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(took)
}

/// What an upcall is to the benchmark.
enum Seen {
    /// A miss for one of the measured datagrams.
    Ours,
    /// The end of the run.
    Sentinel,
    /// Something else (e.g. an IPv6 router solicitation from the new veth).
    Other,
}

fn classify(u: &Upcall) -> Seen {
    if u.cmd != PacketCmd::Miss || u.key.eth_type() != Some(0x0800) {
        Seen::Other
    } else if u.packet.ends_with(&[PAYLOAD; 8]) {
        Seen::Ours
    } else if u.packet.ends_with(&[SENTINEL; 8]) {
        Seen::Sentinel
    } else {
        Seen::Other
    }
}

/// Runs `read` (which counts upcalls until the sentinel) against a sender
/// thread.
fn with_sender(packets: u32, read: impl FnOnce() -> Res<(u64, Instant)>) -> Res<UpcallRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let sender_stop = stop.clone();
    let sender =
        std::thread::spawn(move || send_packets(packets, &sender_stop).map_err(|e| e.to_string()));
    let start = Instant::now();
    let read = read();
    stop.store(true, Ordering::SeqCst);
    let sent = sender
        .join()
        .map_err(|_| "sender panicked")?
        .map_err(|e| format!("sender: {e}"))?;
    let (received, last) = read?;
    Ok(UpcallRun {
        received,
        secs: last.saturating_duration_since(start).as_secs_f64(),
        send_secs: sent.as_secs_f64(),
    })
}

/// Baseline reader: a blocking socket, one `recv` and decode per upcall, as
/// go-odp's consumer does.
fn upcalls_sync(sock: &mut UpcallSocket, family: u16, packets: u32) -> Res<UpcallRun> {
    sock.set_nonblocking(false)?;
    with_sender(packets, || {
        let mut received = 0u64;
        let mut last = Instant::now();
        loop {
            let batch = match sock.recv_upcalls(family) {
                Ok(b) => b,
                Err(Error::Overrun) => continue,
                Err(e) => return Err(e.into()),
            };
            for u in &batch {
                match classify(u) {
                    Seen::Ours => {
                        received += 1;
                        last = Instant::now();
                    }
                    Seen::Sentinel => return Ok((received, last)),
                    Seen::Other => {}
                }
            }
        }
    })
}

/// The async stream reader, on a current-thread runtime.
fn upcalls_async(
    rt: &tokio::runtime::Runtime,
    stream: &mut odp::handle::aio::Upcalls,
    packets: u32,
) -> Res<UpcallRun> {
    with_sender(packets, || {
        rt.block_on(async {
            let mut received = 0u64;
            let mut last = Instant::now();
            loop {
                match stream.next().await {
                    Some(Ok(u)) => match classify(&u) {
                        Seen::Ours => {
                            received += 1;
                            last = Instant::now();
                        }
                        Seen::Sentinel => return Ok((received, last)),
                        Seen::Other => {}
                    },
                    Some(Err(Error::Overrun)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("the upcall stream ended".into()),
                }
            }
        })
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odp_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    let n = args.flows;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ovs = Ovs::connect()?;
    let tag = std::process::id() % 100_000;
    let dp_name = format!("obench{tag}");
    let _ = ovs.datapaths().delete(&dp_name);
    // Per-vport upcall PIDs, so the upcall runs can move the vport's PID
    // from one reader to the other.
    let opts = DatapathOptions {
        features: Features::Exactly(UserFeatures::UNALIGNED),
        ..Default::default()
    };
    let dp = ovs.datapaths().create(&dp_name, &opts)?;
    let mut cleanup = Cleanup {
        dp: dp_name.clone(),
        veth: None,
    };
    let ifx = dp.dp_ifindex;
    let port = ovs
        .vports(ifx)
        .create(&VportSpec::internal(&format!("obp{tag}")))?
        .port_no;

    let mut rows: Vec<Row> = Vec::new();
    let mut row = |what, count: u64, d: Duration, baseline| {
        rows.push(Row {
            what,
            count,
            secs: d.as_secs_f64(),
            baseline,
        });
        rows.len() - 1
    };
    let count = u64::from(n);
    let plain: Vec<FlowSpec> = (0..n).map(|i| flow(port, i, false)).collect();
    let with_ufid: Vec<FlowSpec> = (0..n).map(|i| flow(port, i, true)).collect();

    // Warm-up, not reported: the first install pays for growing the
    // kernel's flow and mask caches, which would favour whatever runs later.
    eprintln!("warm-up: installing and flushing {n} flows...");
    all_ok("warm-up", &ovs.flows(ifx).create_batch(&plain)?)?;
    ovs.flows(ifx).flush()?;

    // Baseline first: one request per flow, each waiting for its ack.
    eprintln!("installing {n} flows one request at a time...");
    let t = Instant::now();
    for s in &plain {
        ovs.flows(ifx).create(s)?;
    }
    let base = row(
        "install, one request per flow, waiting for each ack (go-odp's way)",
        count,
        t.elapsed(),
        None,
    );
    let t = Instant::now();
    let mut seen = 0u64;
    ovs.flows(ifx).dump_each(UfidFlags(0), |_| {
        seen += 1;
        Ok(())
    })?;
    if seen != count {
        return Err(format!("full dump saw {seen} flows, not {count}").into());
    }
    let dump_base = row("dump, full flows (sync)", count, t.elapsed(), None);
    let t = Instant::now();
    ovs.flows(ifx).flush()?;
    row("flush (one request)", count, t.elapsed(), None);

    eprintln!("installing {n} flows batched (sync)...");
    let t = Instant::now();
    let out = ovs.flows(ifx).create_batch(&plain)?;
    let d = t.elapsed();
    all_ok("sync batch", &out)?;
    row("install, batched (sync)", count, d, Some(base));
    let ids: Vec<FlowId> = plain.iter().map(|s| FlowId::Key(s.key.clone())).collect();
    let t = Instant::now();
    let out = ovs.flows(ifx).delete_batch(&ids)?;
    let d = t.elapsed();
    all_ok("sync batched delete", &out)?;
    row("delete by key, batched (sync)", count, d, None);

    eprintln!("installing {n} flows with UFIDs batched (async)...");
    rt.block_on(async {
        let mut aovs = AsyncOvs::connect().await?;
        let t = Instant::now();
        let out = aovs.flows(ifx).create_batch(&with_ufid).await?;
        let d = t.elapsed();
        all_ok("async batch", &out)?;
        row("install with UFIDs, batched (async)", count, d, Some(base));
        let t = Instant::now();
        let mut dump = aovs.flows(ifx).dump(UfidFlags(0)).await?;
        let mut seen = 0u64;
        while let Some(f) = dump.next().await {
            f?;
            seen += 1;
        }
        if seen != count {
            return Err(format!("async dump saw {seen} flows, not {count}").into());
        }
        row(
            "dump, full flows (async stream)",
            count,
            t.elapsed(),
            Some(dump_base),
        );
        let t = Instant::now();
        let mut dump = aovs.flows(ifx).dump(UfidFlags::TERSE).await?;
        let mut seen = 0u64;
        while let Some(f) = dump.next().await {
            f?;
            seen += 1;
        }
        if seen != count {
            return Err(format!("terse dump saw {seen} flows, not {count}").into());
        }
        row(
            "dump, terse UFIDs only (async stream)",
            count,
            t.elapsed(),
            Some(dump_base),
        );
        let ids: Vec<FlowId> = (0..n)
            .map(|i| FlowId::Ufid(Ufid::from_u128(u128::from(i) + 1)))
            .collect();
        let t = Instant::now();
        let out = aovs.flows(ifx).delete_batch(&ids).await?;
        let d = t.elapsed();
        all_ok("async batched delete", &out)?;
        row("delete by UFID, batched (async)", count, d, None);
        Ok::<(), Box<dyn StdError>>(())
    })?;

    // Miss upcalls: UDP datagrams leave a veth peer and enter the datapath
    // on a netdev vport with no flows.
    let va = format!("obva{tag}");
    let vb = format!("obvb{tag}");
    let _ = sh("ip", &["link", "del", &va]);
    sh(
        "ip",
        &["link", "add", &va, "type", "veth", "peer", "name", &vb],
    )?;
    cleanup.veth = Some(va.clone());
    sh("ip", &["link", "set", &va, "up"])?;
    sh("ip", &["link", "set", &vb, "up"])?;
    sh("ip", &["addr", "add", "10.195.0.1/24", "dev", &vb])?;
    sh(
        "ip",
        &[
            "neigh",
            "add",
            "10.195.0.2",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            &vb,
        ],
    )?;
    let mut sync_sock = UpcallSocket::open()?;
    ovs.vports(ifx)
        .create(&VportSpec::netdev(&va).with_upcall_pids(vec![sync_sock.pid()]))?;
    let packets = args.packets;
    eprintln!("sending {packets} packets into a vport without flows (sync reader)...");
    let lost_before = ovs.datapaths().stats(&dp_name)?.packets.n_lost;
    let s = upcalls_sync(&mut sync_sock, ovs.packet_family(), packets)?;
    let lost_sync = ovs.datapaths().stats(&dp_name)?.packets.n_lost - lost_before;
    let up_base = row(
        "miss upcalls received, sync reader (one recv per upcall, go-odp's way)",
        s.received,
        Duration::from_secs_f64(s.secs),
        None,
    );
    eprintln!("sending {packets} packets into a vport without flows (async stream)...");
    let mut stream = rt.block_on(async { AsyncOvs::connect().await?.upcalls() })?;
    ovs.vports(ifx).set_upcall_pids(&va, vec![stream.pid()])?;
    let lost_before = ovs.datapaths().stats(&dp_name)?.packets.n_lost;
    let a = upcalls_async(&rt, &mut stream, packets)?;
    let lost_async = ovs.datapaths().stats(&dp_name)?.packets.n_lost - lost_before;
    row(
        "miss upcalls received, async stream",
        a.received,
        Duration::from_secs_f64(a.secs),
        Some(up_base),
    );

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "odp benchmark: {n} exact-match flows, {packets} packets; kernel {}, {cpus} CPUs",
        kernel.trim()
    );
    println!();
    println!("| measurement | items | seconds | items/s | vs baseline |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let vs = match r.baseline.and_then(|b| rows.get(b)) {
            Some(b) if b.rate() > 0.0 => format!("{:.2}×", r.rate() / b.rate()),
            _ => "baseline".into(),
        };
        let vs = if r.baseline.is_none()
            && !r.what.starts_with("install, one")
            && !r.what.starts_with("dump, full flows (sync)")
            && !r.what.starts_with("miss upcalls received, sync")
        {
            "–".into()
        } else {
            vs
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            r.what,
            r.count,
            r.secs,
            r.rate(),
            vs
        );
    }
    println!();
    println!(
        "upcalls: {packets} sent per run; received {} (sync) and {} (async); \
         datapath n_lost grew by {lost_sync} and {lost_async}; the sender took {:.2} s and \
         {:.2} s",
        s.received, a.received, s.send_secs, a.send_secs
    );
    drop(cleanup);
    Ok(())
}
