//! Network namespaces made with `ip netns`, deleted on drop.

use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::process::Command;

/// Fails with a clear message unless the process runs as root, which
/// creating namespaces and links needs.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("netlab needs root to create network namespaces (running as uid {euid})");
    }
    Ok(())
}

/// A named network namespace. Dropping it kills every process still inside
/// and deletes it, which also deletes the links it holds.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<Netns> {
        require_root()?;
        Command::new("ip")
            .args(["netns", "add", name])
            .run()
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.cmd("ip").args(["link", "set", "lo", "up"]).run()?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn cmd(&self, program: &str) -> Command {
        Command::new(program).in_netns(&self.name)
    }

    /// Runs `argv` inside the namespace and fails unless it exits 0.
    pub fn run(&self, argv: &[&str]) -> Result<crate::Output> {
        let (program, args) = argv.split_first().context("empty command line")?;
        self.cmd(program).args(args.iter().copied()).run()
    }

    /// The process ids currently running inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Process ids inside namespace `name` (empty when it has none or is gone).
fn pids_in(name: &str) -> Vec<i32> {
    std::process::Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills everything inside namespace `name` and deletes it, quietly: this
/// runs from destructors, where there is nobody to report an error to.
pub(crate) fn remove_namespace(name: &str) {
    for _ in 0..50 {
        let pids = pids_in(name);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Names of all namespaces `ip netns` lists.
pub(crate) fn list_namespaces() -> Vec<String> {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| line.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
