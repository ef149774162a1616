//! `cargo xtask bench <what>`: benchmarks. They are not tests: each prints
//! its numbers and the ratio to a baseline measured in the same run; the
//! results are recorded in `docs/benchmarks.md` with the command.
//!
//! - `cni`: sequential ADD+DEL latency of weave-net + weave-ipam against
//!   Debian's bridge + host-local (`weave-cni-bench`, on this machine).
//! - `dataplane`: container-to-container TCP throughput across two hosts
//!   (`weave-dp-bench`): on this machine sleeve ÷ a direct veth pair and
//!   ÷ the Flannel-style kernel VXLAN overlay (this machine's kernel has
//!   no openvswitch, and in the VM that overlay and fastdp are level); in
//!   the VM fastdp (BridgedFastdp and pure Fastdp) ÷ a Flannel-style
//!   kernel VXLAN overlay, and sleeve (plain and encrypted), each over
//!   several interleaved rounds (median reported), then the first ping to
//!   a new destination with proactive flows and reactive only. Every run
//!   also prints what a kernel copy costs on the machine and the machine's
//!   CPU per byte delivered, which is what bounds the sleeve in the VM.
//! - `odp`: the kernel datapath driver in the VM ([`odp`]).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

mod odp;

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub what: Bench,
}

/// The benchmarks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Bench {
    /// CNI ADD+DEL latency: weave-net + weave-ipam ÷ bridge + host-local.
    Cni {
        /// ADD+DEL pairs per plugin.
        #[arg(long, default_value_t = 1000)]
        iterations: u32,
    },
    /// Container-to-container TCP throughput: fastdp ÷ a Flannel-style
    /// overlay and sleeve ÷ fastdp (in the VM), sleeve ÷ veth (here).
    Dataplane {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Only the part on this machine (no VM).
        #[arg(long)]
        host_only: bool,
        /// Interleaved rounds of every variant, on this machine and in the
        /// VM (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// First-ping trials per mode in the VM (0: skip).
        #[arg(long, default_value_t = 5)]
        first_ping_trials: u32,
        /// The variants run in the VM, in order (ratios are to the first).
        #[arg(
            long,
            default_value = "flannel,fastdp,fastdp-pure,sleeve,sleeve-encrypted"
        )]
        vm_variants: String,
        /// The kernel with the datapath the VM part runs on: `uml` runs
        /// natively (meaningful throughput), `qemu` emulates the CPU.
        #[arg(long, value_enum, default_value = "qemu")]
        kernel: crate::guest::Kernel,
    },
    /// The kernel datapath driver in the VM: batched flow installs ÷ one
    /// request per flow, dump rates, miss-upcall throughput.
    Odp(odp::OdpArgs),
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    match &args.what {
        Bench::Cni { iterations } => {
            crate::setup::all()?;
            let bin = build_release(&["weave-router", "weave-cni", "weave-tests"])?;
            let status = Command::new(bin.join("weave-cni-bench"))
                .args(["--iterations", &iterations.to_string()])
                .arg("--router")
                .arg(bin.join("weave-router"))
                .arg("--cni-dir")
                .arg(&bin)
                .stdin(Stdio::null())
                .status()
                .context("running weave-cni-bench")?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Bench::Dataplane {
            seconds,
            host_only,
            rounds,
            first_ping_trials,
            vm_variants,
            kernel,
        } => dataplane(
            *seconds,
            *host_only,
            *rounds,
            *first_ping_trials,
            vm_variants,
            *kernel,
        ),
        Bench::Odp(args) => odp::run(args),
    }
}

fn dataplane(
    seconds: u32,
    host_only: bool,
    rounds: u32,
    first_ping_trials: u32,
    vm_variants: &str,
    kernel: crate::guest::Kernel,
) -> Result<ExitCode> {
    crate::setup::host()?;
    let bin = build_release(&["weave-router", "weave-cni", "weave-tests", "odp"])?;
    let argv = |variants: &str| -> Vec<String> {
        vec![
            bin.join("weave-dp-bench").to_string_lossy().into_owned(),
            "--variants".into(),
            variants.into(),
            "--seconds".into(),
            seconds.to_string(),
            "--router".into(),
            bin.join("weave-router").to_string_lossy().into_owned(),
            "--cni-dir".into(),
            bin.to_string_lossy().into_owned(),
        ]
    };
    println!("==> on this machine: sleeve ÷ a direct veth pair (and ÷ Flannel-style VXLAN)");
    let mut host = argv("veth,flannel,sleeve,sleeve-encrypted");
    host.extend(["--rounds".into(), rounds.to_string()]);
    let status = Command::new(&host[0])
        .args(&host[1..])
        .stdin(Stdio::null())
        .status()
        .context("running weave-dp-bench")?;
    let mut ok = status.success();
    if !host_only {
        println!(
            "==> in {}: fastdp ÷ Flannel-style VXLAN, sleeve ÷ fastdp",
            kernel.describe()
        );
        let mut command = argv(vm_variants);
        command.extend([
            "--rounds".into(),
            rounds.to_string(),
            "--first-ping-trials".into(),
            first_ping_trials.to_string(),
            "--odp".into(),
            bin.join("odp").to_string_lossy().into_owned(),
        ]);
        let outcome = kernel.run("3G", 3600, command)?;
        ok &= outcome.status == 0;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the binaries of `packages` with the release profile (benchmarks
/// measure optimised code) and returns the directory holding them.
pub(crate) fn build_release(packages: &[&str]) -> Result<PathBuf> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--release", "--bins"]);
    for package in packages {
        cargo.args(["--package", package]);
    }
    let status = cargo
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .status()
        .context("running cargo build --release")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok(crate::target_dir().join("release"))
}
