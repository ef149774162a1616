//! `cargo xtask vm`: one command, as root, in a VM with the kernel datapath.
//!
//! The VM boots Debian's stock kernel with virtme-ng under QEMU in software
//! emulation (KVM guests hang on our machines). virtme-ng shares the host's
//! root filesystem read-only over 9p, so the workspace is at the same path
//! inside; the workspace (and the target directory) are made writable.
//!
//! The guest's script and how its output comes back are in `guest.rs`,
//! shared with User-Mode Linux; here the script loads the modules first.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::guest;
use crate::setup::{self, VmTools};
use crate::shell::quote;

/// Modules the guest loads before running the command.
const MODULES: &[&str] = &["openvswitch", "vport-vxlan", "veth", "dummy", "bridge"];

/// Options of `cargo xtask vm`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Memory, timeout, the command.
    #[command(flatten)]
    pub guest: guest::GuestArgs,
}

/// How a command in the VM ended.
pub type VmOutcome = guest::Outcome;

/// `cargo xtask vm`: runs the command and exits with its status.
pub fn run_cli(args: &VmArgs) -> Result<ExitCode> {
    let tools = setup::vm()?;
    let outcome = run(&tools, args)?;
    Ok(ExitCode::from(
        u8::try_from(outcome.status.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Boots the VM, runs `args.command` in it and returns how it ended. The
/// command's stdout and stderr are streamed to ours as they arrive.
pub fn run(tools: &VmTools, args: &VmArgs) -> Result<VmOutcome> {
    let root = crate::workspace_root();
    let target = crate::target_dir();
    let dir = guest::run_dir("vm")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let script = dir.join("guest.sh");
    let prepare: String = MODULES
        .iter()
        .map(|module| {
            format!(
                "modprobe {module} 2>>\"$RUN/harness.log\" || fail \"modprobe {module} failed\"\n"
            )
        })
        .collect();
    std::fs::write(
        &script,
        guest::script(
            &dir,
            &cwd,
            &args.guest.command,
            &prepare,
            ":",
            "WEAVE_IN_VM",
        ),
    )?;

    let console_path = dir.join("console.log");
    let console = File::create(&console_path)?;
    let mut vng = Command::new(&tools.vng);
    vng.arg("--run")
        .arg(&tools.kernel.image)
        .args(["--disable-kvm", "--force-9p", "--verbose"])
        .args(["--memory", &args.guest.memory])
        .args(["--cpus", &args.cpus.to_string()])
        .arg("--rwdir")
        .arg(&root);
    if !target.starts_with(&root) {
        vng.arg("--rwdir").arg(&target);
    }
    vng.arg("--exec")
        .arg(format!("sh {}", quote(&script.to_string_lossy())));
    if let Ok(cpu) = std::env::var("WEAVE_VM_CPU") {
        // Greedy: must come last.
        vng.arg(format!("--qemu-opts=-cpu {cpu}"));
    }
    vng.current_dir(&root)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .process_group(0);
    let child = vng
        .spawn()
        .with_context(|| format!("starting {}", tools.vng.display()))?;
    guest::supervise(
        child,
        &dir,
        &console_path,
        args.guest.timeout,
        args.guest.keep,
        "VM",
    )
}
