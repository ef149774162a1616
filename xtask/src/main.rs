//! `cargo xtask`: automation for the weave-rs workspace.
//!
//! - `cargo xtask test`: installs what the tests need, then runs every stage
//!   (fmt, clippy, unit, host-namespace and VM tests) and prints a summary.
//! - `cargo xtask vm -- <command>`: runs a command as root in a VM booted from
//!   Debian's stock kernel, with the openvswitch datapath loaded.
//! - `cargo xtask uml -- <command>`: the same in User-Mode Linux, whose
//!   kernel runs at native speed (benchmarks, quick iterations).
//! - `cargo xtask fuzz [TARGET…] [--seconds N]`: longer fuzz runs.
//! - `cargo xtask setup [--undo]`: only the installation step of `test`,
//!   or its reversal.
//! - `cargo xtask bench <what>`: benchmarks (see `bench.rs`).
//! - `cargo xtask lab [--nodes N] [--mode fastdp|sleeve] [--pods N] [--keep]`:
//!   the local multi-node lab: routers, pods through CNI, a ping table.

mod bench;
mod fuzz;
mod guest;
mod lab;
mod setup;
mod shell;
mod test;
mod uml;
mod undo;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Automation for the weave-rs workspace")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install prerequisites, then run every test stage and print a summary.
    Test(test::TestArgs),
    /// Run a command as root in a VM with the kernel openvswitch datapath.
    Vm(vm::VmArgs),
    /// Run a command as root in User-Mode Linux (native speed, one CPU,
    /// the Open vSwitch datapath; no nftables).
    Uml(guest::GuestArgs),
    /// Run fuzz targets for a while (default: all, 60 s each).
    Fuzz(fuzz::FuzzArgs),
    /// Install what the tests and the VM need (idempotent), or with
    /// `--undo` remove all of it again.
    Setup(SetupArgs),
    /// Run a benchmark (not a test): numbers and ratios to a baseline.
    Bench(bench::BenchArgs),
    /// Run the local multi-node lab: routers, pods through CNI, a ping table.
    Lab(lab::LabArgs),
}

/// Options of `cargo xtask setup`.
#[derive(Debug, clap::Args)]
struct SetupArgs {
    /// Remove what setup installed (Debian packages, pip and cargo tools,
    /// kernel modules under /lib/modules, the caches under target/), so
    /// the next run starts as on a fresh machine.
    #[arg(long)]
    undo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Vm(args) => vm::run_cli(&args),
        Command::Uml(args) => uml::run_cli(&args),
        Command::Fuzz(args) => fuzz::run_cli(&args),
        Command::Setup(args) if args.undo => undo::run().map(|()| ExitCode::SUCCESS),
        Command::Setup(_) => setup::all().map(|_| ExitCode::SUCCESS),
        Command::Lab(args) => lab::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// The workspace's target directory (honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}
