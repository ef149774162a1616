//! `weave-cni-bench`: sequential CNI ADD+DEL latency of `weave-net` (with
//! `weave-ipam` and a real `weave-router`) against Debian's reference
//! `bridge` plugin with `host-local` IPAM, measured in the same run on the
//! same kind of namespace. `cargo xtask bench cni` runs it.
//!
//! The two are interleaved (one weave ADD+DEL, then one reference ADD+DEL)
//! so that drift in the machine's load affects both alike. It prints p50
//! and p99 of ADD and DEL for each, and the ratios weave ÷ reference.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};
use weave_tests::cni::{Attachment, netns_path};
use weave_tests::{Lab, wait_for};

/// Command line of `weave-cni-bench`.
#[derive(Debug, Parser)]
#[command(name = "weave-cni-bench")]
struct Args {
    /// ADD+DEL pairs per plugin.
    #[arg(long, default_value_t = 1000)]
    iterations: u32,
    /// Untimed pairs first, per plugin.
    #[arg(long, default_value_t = 20)]
    warmup: u32,
    /// The `weave-router` binary.
    #[arg(long)]
    router: PathBuf,
    /// The directory holding `weave-net` and `weave-ipam`.
    #[arg(long)]
    cni_dir: PathBuf,
    /// The directory holding Debian's reference plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    reference_dir: PathBuf,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weave-cni-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Timings of one plugin, in seconds.
#[derive(Default)]
struct Timings {
    add: Vec<f64>,
    del: Vec<f64>,
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn run(args: &Args) -> Result<()> {
    let lab = Lab::new(1)?;
    let host = lab.host(0);
    let db = lab.dir().join("db");
    std::fs::create_dir_all(&db)?;
    let router = args.router.to_string_lossy().into_owned();
    let db_prefix = format!("{}/weave", db.display());
    let _router = host.spawn(
        "router",
        &[
            &router,
            "--no-fastdp",
            "--db-prefix",
            &db_prefix,
            "--ipalloc-range",
            "10.32.0.0/12",
        ],
    )?;
    wait_for(Duration::from_secs(60), "the router's HTTP API", || {
        Ok(host
            .run(&["curl", "-sSf", "http://127.0.0.1:6784/status"])
            .is_ok())
    })?;
    let pod = lab.add_netns("pod")?;

    let weave_config = json!({
        "cniVersion": "1.0.0",
        "name": "weave",
        "type": "weave-net",
        "hairpinMode": true,
    });
    let reference_config = json!({
        "cniVersion": "1.0.0",
        "name": "reference",
        "type": "bridge",
        "bridge": "cnibench0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "subnet": "10.99.0.0/16",
            "dataDir": lab.dir().join("host-local").to_string_lossy(),
        },
    });
    let attachment = |dir: &PathBuf, plugin: &str, id: String| Attachment {
        plugin: dir.join(plugin),
        cni_path: dir.to_string_lossy().into_owned(),
        container_id: id,
        netns: netns_path(&pod),
        ifname: "eth0".into(),
        // The plugins are started from this thread, which is inside the
        // node's namespace (see below), as a runtime starts them: no
        // `ip netns exec` in the measured time.
        host_netns: None,
    };
    let node = EnteredNetns::enter(&netns_path(host.netns()))?;
    let mut weave = Timings::default();
    let mut reference = Timings::default();
    let total = args.warmup + args.iterations;
    println!(
        "==> {} ADD+DEL pairs each (after {} untimed), interleaved",
        args.iterations, args.warmup
    );
    for i in 0..total {
        let timed = i >= args.warmup;
        for (timings, att, config) in [
            (
                &mut weave,
                attachment(&args.cni_dir, "weave-net", format!("bench-weave-{i}")),
                &weave_config,
            ),
            (
                &mut reference,
                attachment(&args.reference_dir, "bridge", format!("bench-ref-{i}")),
                &reference_config,
            ),
        ] {
            let start = Instant::now();
            let result = att.call("ADD", config)?;
            let add = start.elapsed().as_secs_f64();
            let mut del_config: Value = config.clone();
            del_config["prevResult"] = result;
            let start = Instant::now();
            att.call("DEL", &del_config)
                .with_context(|| format!("DEL {}", att.container_id))?;
            let del = start.elapsed().as_secs_f64();
            if timed {
                timings.add.push(add);
                timings.del.push(del);
            }
        }
        if (i + 1) % 100 == 0 {
            println!("    {}/{total}", i + 1);
        }
    }
    drop(node);
    let ms = |s: f64| s * 1000.0;
    println!(
        "\n{:<28} {:>9} {:>9} {:>9} {:>9}",
        "plugin", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    for (name, t) in [
        ("weave-net + weave-ipam", &weave),
        ("bridge + host-local", &reference),
    ] {
        println!(
            "{name:<28} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            ms(percentile(&t.add, 50.0)),
            ms(percentile(&t.add, 99.0)),
            ms(percentile(&t.del, 50.0)),
            ms(percentile(&t.del, 99.0)),
        );
    }
    println!(
        "ratio weave ÷ reference: ADD p50 {:.2}, ADD p99 {:.2}, DEL p50 {:.2}, DEL p99 {:.2} (goal for ADD: ≤ 0.5)",
        percentile(&weave.add, 50.0) / percentile(&reference.add, 50.0),
        percentile(&weave.add, 99.0) / percentile(&reference.add, 99.0),
        percentile(&weave.del, 50.0) / percentile(&reference.del, 50.0),
        percentile(&weave.del, 99.0) / percentile(&reference.del, 99.0),
    );
    Ok(())
}

/// The calling thread moved into another network namespace; dropping it
/// moves the thread back (before the lab, which kills what runs in its
/// namespaces, is dropped).
struct EnteredNetns {
    original: std::fs::File,
}

impl EnteredNetns {
    fn enter(path: &str) -> Result<EnteredNetns> {
        use std::os::fd::AsRawFd;
        let original = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening this thread's network namespace")?;
        let target = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a valid namespace descriptor; it affects only
        // the calling thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the node");
        }
        Ok(EnteredNetns { original })
    }
}

impl Drop for EnteredNetns {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `enter`.
        if unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "weave-cni-bench: could not return to the original namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
