//! `cargo xtask uml`: one command, as root, in User-Mode Linux: a Linux
//! kernel with the Open vSwitch datapath that runs as an ordinary process,
//! so kernel code runs at the real CPU's speed.
//!
//! The QEMU VM (`vm.rs`) emulates its CPU, and a byte copied by the kernel
//! costs about fifty times what it costs natively there; every data-plane
//! ratio measured in it is distorted. UML is the kernel for benchmarks and
//! quick iterations. It is not the correctness gate: it has one CPU (no SMP
//! races), no nftables, and Debian's UML build rather than the stock kernel.
//!
//! How it boots (facts in `shared/reference/uml-facts.md`):
//! - `linux.uml` comes from Debian's `user-mode-linux` package, unpacked
//!   under `target/uml/root` by setup, never installed.
//! - On hosts whose CPU has AVX-512 or AMX, stock UML 6.1 dies at once: it
//!   moves FPU state with a compiled-in 832-byte XSAVE buffer, and the host
//!   kernel accepts only the full size. `xtask/uml/xstate_preload.c`,
//!   preloaded, bridges the two sizes.
//! - The guest's root is the host's, read-only over hostfs; /run, /tmp and
//!   /var/tmp are tmpfs, and the workspace and target directory are mounted
//!   writable at their own paths (a read-write root would let every guest
//!   write land on the host).
//! - Modules: an overlay on /usr/lib makes `/lib/modules/<release>` point at
//!   the unpacked tree, so a plain `modprobe` works, as on a real host.
//! - The script (`guest.rs`) is the kernel's init; it powers off at the end.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::guest::{self, GuestArgs};
use crate::setup::{self, UmlTools};
use crate::shell::quote;

/// Modules the guest loads before running the command.
const MODULES: &[&str] = &["openvswitch", "vport-vxlan", "veth", "bridge"];

/// `cargo xtask uml`: runs the command and exits with its status.
pub fn run_cli(args: &GuestArgs) -> Result<ExitCode> {
    let tools = setup::uml()?;
    let outcome = run(&tools, args)?;
    Ok(ExitCode::from(
        u8::try_from(outcome.status.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Boots UML, runs `args.command` in it and returns how it ended. The
/// command's stdout and stderr are streamed to ours as they arrive.
pub fn run(tools: &UmlTools, args: &GuestArgs) -> Result<guest::Outcome> {
    let root = crate::workspace_root();
    let target = crate::target_dir();
    let dir = guest::run_dir("uml")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let mut writable = vec![root.clone()];
    if !target.starts_with(&root) {
        writable.push(target);
    }
    let script = dir.join("init.sh");
    std::fs::write(
        &script,
        guest::script(
            &dir,
            &cwd,
            &args.command,
            &prepare(tools, &writable),
            "poweroff -f -f",
            "WEAVE_IN_UML",
        ),
    )?;
    make_executable(&script)?;

    let console_path = dir.join("console.log");
    let console = File::create(&console_path)?;
    let mut linux = Command::new(&tools.linux);
    linux
        .arg(format!("mem={}", args.memory))
        .args(["rootfstype=hostfs", "rootflags=/", "ro"])
        .arg(format!("init={}", script.display()))
        .args(["con0=null,fd:1", "con=null", "quiet"])
        .env("LD_PRELOAD", &tools.preload)
        // UML backs guest memory with a file in TMPDIR.
        .env("TMPDIR", std::env::temp_dir())
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .process_group(0);
    let child = linux
        .spawn()
        .with_context(|| format!("starting {}", tools.linux.display()))?;
    guest::supervise(child, &dir, &console_path, args.timeout, args.keep, "UML")
}

/// The start of the init script: file systems, the writable directories,
/// the module tree, and what the tests expect of a host.
fn prepare(tools: &UmlTools, writable: &[std::path::PathBuf]) -> String {
    let mut script = String::from(
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PATH\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /dev/pts /dev/shm\n\
         mount -t devpts devpts /dev/pts\n\
         mount -t tmpfs tmpfs /dev/shm\n\
         for dir in /run /tmp /var/tmp; do mount -t tmpfs tmpfs $dir; done\n",
    );
    for dir in writable {
        let dir = quote(&dir.to_string_lossy());
        // `fail` cannot report before the run directory is writable: a
        // failure here shows as a missing status and the console's tail.
        script.push_str(&format!(
            "mount -t hostfs -o {dir} hostfs {dir} || echo \"cannot mount {dir}\"\n"
        ));
    }
    let modules = quote(&tools.modules.to_string_lossy());
    let overlay = quote(
        &tools
            .modules
            .join("kernel/fs/overlayfs/overlay.ko")
            .to_string_lossy(),
    );
    script.push_str(&format!(
        "insmod {overlay} 2>>\"$RUN/harness.log\" || fail \"cannot load overlay.ko\"\n\
         mkdir -p /run/xtask-lib/upper /run/xtask-lib/work\n\
         mount -t overlay overlay -o lowerdir=/usr/lib,upperdir=/run/xtask-lib/upper,workdir=/run/xtask-lib/work /usr/lib \
         2>>\"$RUN/harness.log\" || fail \"cannot overlay /usr/lib\"\n\
         mkdir -p /usr/lib/modules && rm -rf /usr/lib/modules/{release} && ln -s {modules} /usr/lib/modules/{release}\n",
        release = tools.release,
    ));
    for module in MODULES {
        script.push_str(&format!(
            "modprobe {module} 2>>\"$RUN/harness.log\" || fail \"modprobe {module} failed\"\n"
        ));
    }
    // Without this every new namespace gets gre0/gretap0/erspan0 once
    // ip_gre loads.
    script.push_str(
        "sysctl -q -w net.core.fb_tunnels_only_for_init_net=2 2>>\"$RUN/harness.log\"\n\
         ip link set lo up\n",
    );
    script
}

fn make_executable(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}
