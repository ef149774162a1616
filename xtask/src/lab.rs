//! `cargo xtask lab`: the local multi-node lab.
//!
//! It builds `weave-router`, the CNI plugins and `weave-lab` (in
//! `tests/src/bin`), then runs `weave-lab`, which does the work: hosts as
//! network namespaces, a router on each, pods through CNI, a status
//! summary and a ping table. Sleeve mode runs on this machine. Fastdp mode
//! needs the kernel's openvswitch module: it runs here when the kernel has
//! it, and otherwise in the VM of `cargo xtask vm`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::guest;
use crate::setup;

/// The data plane of the lab's routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The kernel Open vSwitch datapath with VXLAN.
    Fastdp,
    /// The userspace overlay (Bridge mode).
    Sleeve,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Fastdp => "fastdp",
            Mode::Sleeve => "sleeve",
        }
    }
}

/// Options of `cargo xtask lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Number of hosts.
    #[arg(long, default_value_t = 3)]
    pub nodes: u8,
    /// Data plane: fastdp (in the VM unless this kernel has openvswitch)
    /// or sleeve (on this machine).
    #[arg(long, value_enum, default_value_t = Mode::Fastdp)]
    pub mode: Mode,
    /// Pods per host.
    #[arg(long, default_value_t = 2)]
    pub pods: u8,
    /// Leave the lab up until Ctrl-C, with instructions to enter a node
    /// (not possible in the VM).
    #[arg(long)]
    pub keep: bool,
    /// The lab as a Kubernetes user sees it: the API server test double,
    /// containerd and a test kubelet per node, pods as Pod objects (Bridge
    /// mode on this machine; --mode is ignored).
    #[arg(long)]
    pub kube: bool,
}

/// `cargo xtask lab`.
pub fn run(args: &LabArgs) -> Result<ExitCode> {
    let status = run_once(args)?;
    Ok(ExitCode::from(
        u8::try_from(status.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Builds what the lab needs and runs it once; returns its exit status.
pub fn run_once(args: &LabArgs) -> Result<i32> {
    if args.kube {
        return run_kube(args);
    }
    let in_vm = args.mode == Mode::Fastdp && !host_has_openvswitch();
    if in_vm && args.keep {
        bail!(
            "--keep: this kernel has no openvswitch module, so the fastdp lab runs in a VM \
             that ends with the run; use --mode sleeve to keep a lab on this machine"
        );
    }
    // Idempotent and quick when everything is there; on a fresh machine
    // this is what makes `cargo xtask lab` work as the first command.
    if in_vm {
        setup::vm()?;
    }
    setup::host()?;
    let bin = build(&["weave-router", "weave-cni", "weave-tests"])?;
    let mut argv: Vec<String> = vec![
        bin.join("weave-lab").to_string_lossy().into_owned(),
        "--nodes".into(),
        args.nodes.to_string(),
        "--mode".into(),
        args.mode.name().into(),
        "--pods".into(),
        args.pods.to_string(),
        "--router".into(),
        bin.join("weave-router").to_string_lossy().into_owned(),
        "--cni-dir".into(),
        bin.to_string_lossy().into_owned(),
    ];
    if args.keep {
        argv.push("--keep".into());
    }
    if in_vm {
        println!(
            "==> this kernel has no openvswitch module: running the fastdp lab in the VM \
             (QEMU without KVM: slow to boot)"
        );
        let outcome = guest::Kernel::Qemu.run("3G", 900, argv)?;
        return Ok(outcome.status);
    }
    run_here(&argv, args.keep)
}

/// `cargo xtask lab --kube`: builds everything `weave-kube-lab` runs and
/// runs it on this machine.
fn run_kube(args: &LabArgs) -> Result<i32> {
    setup::host()?;
    setup::kube()?;
    let bin = build(&[
        "weave-router",
        "weave-cni",
        "weave-k8s-apiserver",
        "weave-k8s-testbed",
    ])?;
    let path = |name: &str| bin.join(name).to_string_lossy().into_owned();
    let mut argv: Vec<String> = vec![
        path("weave-kube-lab"),
        "--nodes".into(),
        args.nodes.to_string(),
        "--pods".into(),
        args.pods.to_string(),
        "--router".into(),
        path("weave-router"),
        "--cni-dir".into(),
        bin.to_string_lossy().into_owned(),
        "--kubelet".into(),
        path("weave-test-kubelet"),
        "--apiserver".into(),
        path("weave-k8s-apiserver"),
    ];
    if args.keep {
        argv.push("--keep".into());
    }
    run_here(&argv, args.keep)
}

/// Whether this kernel has the openvswitch datapath loaded (or built in).
fn host_has_openvswitch() -> bool {
    Path::new("/sys/module/openvswitch").exists()
}

/// Builds the binaries of `packages` (debug profile); returns the
/// directory holding them.
fn build(packages: &[&str]) -> Result<PathBuf> {
    println!("==> building the binaries of {}", packages.join(", "));
    let mut cargo = Command::new(env!("CARGO"));
    cargo.arg("build").arg("--bins");
    for package in packages {
        cargo.args(["--package", package]);
    }
    let status = cargo
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(crate::target_dir().join("debug"))
}

/// Runs a lab program on this machine; with `keep` it reads the terminal
/// (it waits for Ctrl-C). Returns its exit status.
fn run_here(argv: &[String], keep: bool) -> Result<i32> {
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(if keep {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .status()
        .with_context(|| format!("starting {}", argv[0]))?;
    Ok(status.code().unwrap_or(1))
}
