//! What the two kernels the tests boot have in common: the QEMU VM
//! (`vm.rs`, Debian's stock kernel, the correctness gate) and User-Mode
//! Linux (`uml.rs`, native speed, for benchmarks and quick iterations).
//!
//! Either guest runs a shell script from a per-run directory under
//! `target/<kind>/runs/`: it prepares the kernel (mounts, modules), runs the
//! command with stdout and stderr redirected to files in that directory,
//! and writes the exit status there last. The host streams those files
//! while the guest runs and takes the status from the file, never from the
//! console or the launcher's exit code (linux.uml always exits 0); the
//! console only serves to explain a failed boot.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::shell::quote;

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

/// The options every guest takes on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Guest memory (`2G`, `4096M`).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Give up (and kill the guest) after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Keep the run directory (script, console log, outputs) even on success.
    #[arg(long)]
    pub keep: bool,
    /// The command to run in the guest, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The kernel a guest command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian's stock kernel under QEMU (emulated CPU, SMP, nftables): the
    /// correctness gate.
    Qemu,
    /// User-Mode Linux (native speed, one CPU, no nftables): where
    /// throughput means something.
    Uml,
}

impl Kernel {
    /// What the kernel is called in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kernel::Qemu => "the VM (QEMU without KVM)",
            Kernel::Uml => "User-Mode Linux",
        }
    }

    /// Installs what the kernel needs, boots it and runs `command` as root.
    /// The QEMU VM gets two CPUs; UML has one.
    pub fn run(self, memory: &str, timeout: u64, command: Vec<String>) -> Result<Outcome> {
        let guest = GuestArgs {
            memory: memory.to_string(),
            timeout,
            keep: false,
            command,
        };
        match self {
            Kernel::Qemu => {
                crate::vm::run(&crate::setup::vm()?, &crate::vm::VmArgs { cpus: 2, guest })
            }
            Kernel::Uml => crate::uml::run(&crate::setup::uml()?, &guest),
        }
    }
}

/// How a command in a guest ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command's exit status (128 + signal when it was killed).
    pub status: i32,
    /// Everything it wrote to stdout (also streamed to ours).
    pub stdout: Vec<u8>,
}

/// A fresh run directory, `target/<kind>/runs/<time>-<pid>`.
pub fn run_dir(kind: &str) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = crate::target_dir()
        .join(kind)
        .join("runs")
        .join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The script a guest runs. `prepare` comes first (it may use `fail`);
/// `finish` runs last, after the status is written (UML powers off there).
/// `marker` is exported as `<marker>=1` so a test can tell where it runs.
pub fn script(
    dir: &Path,
    cwd: &Path,
    command: &[String],
    prepare: &str,
    finish: &str,
    marker: &str,
) -> String {
    let run = quote(&dir.to_string_lossy());
    let mut script = String::from("#!/bin/sh\n# Written by cargo xtask; runs inside the guest.\n");
    script.push_str(&format!("RUN={run}\n"));
    script.push_str(&format!(
        "fail() {{ echo \"$*\" >>\"$RUN/harness.log\"; echo 125 >\"$RUN/status\"; sync; {finish}; exit 0; }}\n"
    ));
    script.push_str(prepare);
    for (key, value) in std::env::vars() {
        if PASSED_ENV.contains(&key.as_str()) || key.starts_with("WEAVE_") {
            script.push_str(&format!("export {key}={}\n", quote(&value)));
        }
    }
    script.push_str(&format!("export {marker}=1\n"));
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
    script.push_str(finish);
    script.push('\n');
    script
}

/// Streams the guest's output while `child` (the launcher, leading its own
/// process group) runs, and returns how the command ended. `what` names the
/// guest in errors; the run directory is removed on success unless `keep`.
pub fn supervise(
    mut child: Child,
    dir: &Path,
    console: &Path,
    timeout: u64,
    keep: bool,
    what: &str,
) -> Result<Outcome> {
    let mut stdout = Tail::new(dir.join("stdout"));
    let mut stderr = Tail::new(dir.join("stderr"));
    let mut captured = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut timed_out = false;
    let launcher_status = loop {
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
            format!("timed out after {timeout} s")
        } else {
            format!("the launcher exited ({launcher_status}) without a status from the guest")
        };
        bail!(
            "the {what} did not run the command: {why}\n--- guest harness log ---\n{}--- last console lines ({}) ---\n{}",
            std::fs::read_to_string(dir.join("harness.log")).unwrap_or_default(),
            console.display(),
            tail_lines(console, 40)
        );
    };
    if status == 125 {
        eprintln!(
            "xtask: the {what}'s guest harness failed:\n{}",
            std::fs::read_to_string(dir.join("harness.log")).unwrap_or_default()
        );
    }
    if keep || status != 0 {
        eprintln!("xtask: {what} run directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(Outcome {
        status,
        stdout: captured,
    })
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
    use super::script;
    use std::path::Path;

    #[test]
    fn script_quotes_the_command_and_records_status_before_finishing() {
        let script = script(
            Path::new("/w/target/vm/runs/1"),
            Path::new("/w"),
            &["sh".into(), "-c".into(), "exit 3".into()],
            "modprobe openvswitch || fail nope\n",
            "poweroff -f -f",
            "WEAVE_IN_VM",
        );
        assert!(script.contains("sh -c 'exit 3' </dev/null"));
        let prepare_at = script.find("modprobe openvswitch").unwrap_or(usize::MAX);
        let run_at = script.find("sh -c 'exit 3'").unwrap_or(0);
        let status_at = script.rfind("status.tmp").unwrap_or(0);
        let finish_at = script.rfind("poweroff -f -f").unwrap_or(0);
        assert!(prepare_at < run_at && run_at < status_at && status_at < finish_at);
        assert!(script.contains("export WEAVE_IN_VM=1"));
    }
}
