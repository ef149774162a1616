//! `cargo xtask bench <what>`: benchmarks. They are not tests: each prints
//! its numbers and the ratio to a baseline measured in the same run; the
//! results are recorded in `docs/benchmarks.md` with the command.
//!
//! - `cni`: sequential ADD+DEL latency of weave-net + weave-ipam against
//!   Debian's bridge + host-local (`weave-cni-bench`, on this machine).

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

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
    }
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
