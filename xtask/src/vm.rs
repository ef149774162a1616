//! `cargo xtask vm`: one command, as root, in a VM with the kernel datapath.
//!
//! The VM boots Debian's stock kernel with virtme-ng under QEMU in software
//! emulation (KVM guests hang on our machines). virtme-ng shares the host's
//! root filesystem read-only over 9p, so the workspace is at the same path
//! inside; the workspace (and the target directory) are made writable.
//!
//! The guest runs a small script from a per-run directory under
//! `target/vm/runs/`: it loads the modules, runs the command with stdout and
//! stderr redirected to files in that directory, and writes the exit status
//! there last. The host streams those files while the VM runs and takes the
//! status from the file, never from the console, which only serves to
//! explain a failed boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::{self, VmTools};
use crate::shell::quote;

/// Modules the guest loads before running the command.
const MODULES: &[&str] = &["openvswitch", "vport-vxlan", "veth", "dummy", "bridge"];

/// Environment variables passed through to the command in the guest, on top
/// of every `WEAVE_*` variable.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "RUST_MIN_STACK",
    "CARGO_TARGET_DIR",
];

/// Options of `cargo xtask vm`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Guest memory, as QEMU takes it (`2G`, `4096M`).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Give up (and kill the VM) after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Keep the run directory (script, console log, outputs) even on success.
    #[arg(long)]
    pub keep: bool,
    /// The command to run in the VM, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// How a command in the VM ended.
#[derive(Debug)]
pub struct VmOutcome {
    /// The command's exit status (128 + signal when it was killed).
    pub status: i32,
    /// Everything it wrote to stdout (also streamed to ours).
    pub stdout: Vec<u8>,
}

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
    let runs = target.join("vm").join("runs");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = runs.join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cwd = std::env::current_dir().context("current directory")?;
    let script = dir.join("guest.sh");
    std::fs::write(&script, guest_script(&dir, &cwd, &args.command))?;

    let console_path = dir.join("console.log");
    let console = File::create(&console_path)?;
    let mut vng = Command::new(&tools.vng);
    vng.arg("--run")
        .arg(&tools.kernel.image)
        .args(["--disable-kvm", "--force-9p", "--verbose"])
        .args(["--memory", &args.memory])
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
    let mut child = vng
        .spawn()
        .with_context(|| format!("starting {}", tools.vng.display()))?;

    let mut stdout = Tail::new(dir.join("stdout"));
    let mut stderr = Tail::new(dir.join("stderr"));
    let mut captured = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut timed_out = false;
    let vng_status = loop {
        stdout.forward(&mut std::io::stdout(), Some(&mut captured))?;
        stderr.forward(&mut std::io::stderr(), None)?;
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(child.id());
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stdout.forward(&mut std::io::stdout(), Some(&mut captured))?;
    stderr.forward(&mut std::io::stderr(), None)?;

    let status = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    let Some(status) = status else {
        let why = if timed_out {
            format!("timed out after {} s", args.timeout)
        } else {
            format!("vng exited ({vng_status}) without a status from the guest")
        };
        bail!(
            "the VM did not run the command: {why}\n--- guest harness log ---\n{}--- last console lines ({}) ---\n{}",
            std::fs::read_to_string(dir.join("harness.log")).unwrap_or_default(),
            console_path.display(),
            tail_lines(&console_path, 40)
        );
    };
    if status == 125 {
        eprintln!(
            "xtask vm: the guest harness failed:\n{}",
            std::fs::read_to_string(dir.join("harness.log")).unwrap_or_default()
        );
    }
    if args.keep || status != 0 {
        eprintln!("xtask vm: run directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(VmOutcome {
        status,
        stdout: captured,
    })
}

/// The script the guest runs: load modules, run the command, record status.
fn guest_script(dir: &Path, cwd: &Path, command: &[String]) -> String {
    let run = quote(&dir.to_string_lossy());
    let mut script =
        String::from("#!/bin/sh\n# Written by cargo xtask vm; runs inside the guest.\n");
    script.push_str(&format!("RUN={run}\n"));
    script.push_str(
        "fail() { echo \"$*\" >>\"$RUN/harness.log\"; echo 125 >\"$RUN/status\"; sync; exit 0; }\n",
    );
    for module in MODULES {
        script.push_str(&format!(
            "modprobe {module} 2>>\"$RUN/harness.log\" || fail \"modprobe {module} failed\"\n"
        ));
    }
    for (key, value) in std::env::vars() {
        if PASSED_ENV.contains(&key.as_str()) || key.starts_with("WEAVE_") {
            script.push_str(&format!("export {key}={}\n", quote(&value)));
        }
    }
    script.push_str("export WEAVE_IN_VM=1\n");
    script.push_str(&format!(
        "cd {} || fail \"cannot enter {}\"\n",
        quote(&cwd.to_string_lossy()),
        cwd.display()
    ));
    let words: Vec<String> = command.iter().map(|word| quote(word)).collect();
    script.push_str(&format!(
        "{} </dev/null >\"$RUN/stdout\" 2>\"$RUN/stderr\"\n",
        words.join(" ")
    ));
    script
        .push_str("echo $? >\"$RUN/status.tmp\" && mv \"$RUN/status.tmp\" \"$RUN/status\"\nsync\n");
    script
}

/// Follows a file that another machine appends to.
struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail { path, offset: 0 }
    }

    /// Copies what was appended since the last call to `out` (and `copy`).
    fn forward(&mut self, out: &mut dyn Write, copy: Option<&mut Vec<u8>>) -> Result<()> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        if fresh.is_empty() {
            return Ok(());
        }
        self.offset += fresh.len() as u64;
        out.write_all(&fresh)?;
        out.flush()?;
        if let Some(copy) = copy {
            copy.extend_from_slice(&fresh);
        }
        Ok(())
    }
}

/// Kills the process group led by `pid` (vng and its QEMU).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

/// The last `count` lines of a file.
fn tail_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::guest_script;
    use std::path::Path;

    #[test]
    fn guest_script_quotes_the_command_and_records_status_last() {
        let script = guest_script(
            Path::new("/w/target/vm/runs/1"),
            Path::new("/w"),
            &["sh".into(), "-c".into(), "exit 3".into()],
        );
        assert!(script.contains("sh -c 'exit 3' </dev/null"));
        let run_at = script.find("sh -c 'exit 3'").unwrap_or(0);
        let status_at = script.rfind("status.tmp").unwrap_or(0);
        assert!(status_at > run_at);
        assert!(script.contains("modprobe openvswitch"));
    }
}
