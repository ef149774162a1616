//! `cargo xtask setup --undo`: takes the machine back to what it was before
//! setup ran, so that "a fresh machine" can be checked on a used one.
//!
//! What setup leaves behind, and how each is found again:
//! - Debian packages: from apt's own journal, `/var/log/apt/history.log`.
//!   Setup always calls apt-get with its archive cache under
//!   `target/cache/apt`, so every install it made (the packages asked for
//!   and their automatic dependencies) is an entry whose command line names
//!   that cache. Nothing else on the machine installs that way, and the
//!   journal also covers runs made before this command existed.
//! - Python packages (virtme-ng and what pip pulled in with it) and cargo
//!   tools (cargo-fuzz): the lists setup wrote under [`RECORD_DIR`] when it
//!   installed them.
//! - Kernel modules copied under `/lib/modules/<release>`: each carries
//!   the marker file [`MODULES_MARKER`]; `/lib/modules` itself goes when it
//!   is left empty (a real host always has its running kernel's modules
//!   there, so an empty one is ours).
//! - Downloads and unpacked kernels: `target/cache`, `target/vm` and
//!   `target/uml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::shell;

/// Where setup records what it installed outside the Debian package system.
pub const RECORD_DIR: &str = "/var/lib/weave-rs-xtask";

/// The record of Python distributions setup's pip install added.
pub const PIP_RECORD: &str = "pip-installed";

/// The record of cargo tools setup installed with `cargo install`.
pub const CARGO_RECORD: &str = "cargo-installed";

/// File setup puts in every module tree it copies under `/lib/modules`.
pub const MODULES_MARKER: &str = ".weave-rs-xtask";

/// apt's journal of installs and removals.
const APT_HISTORY: &str = "/var/log/apt/history.log";

/// The part of setup's apt-get command line that marks its installs.
const APT_MARK: &str = "/target/cache/apt";

/// Adds `names` to the record `name` under [`RECORD_DIR`] (one per line).
pub fn record(name: &str, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(RECORD_DIR).with_context(|| format!("creating {RECORD_DIR}"))?;
    let path = Path::new(RECORD_DIR).join(name);
    let mut all = read_record(&path);
    all.extend(names.iter().cloned());
    let text: String = all.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn read_record(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Removes everything setup installed; prints what it removed.
pub fn run() -> Result<()> {
    if !shell::is_root() {
        bail!("setup --undo needs root: run cargo xtask as root");
    }
    let records = Path::new(RECORD_DIR);
    remove_debian_packages()?;
    remove_pip_packages(&records.join(PIP_RECORD))?;
    remove_cargo_tools(&records.join(CARGO_RECORD))?;
    remove_modules()?;
    for dir in ["cache", "vm", "uml"] {
        let path = crate::target_dir().join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
            eprintln!("xtask: undo: removed {}", path.display());
        }
    }
    if records.exists() {
        std::fs::remove_dir_all(records).with_context(|| format!("removing {RECORD_DIR}"))?;
        eprintln!("xtask: undo: removed {RECORD_DIR}");
    }
    Ok(())
}

/// Purges the packages setup's apt-get installs brought in, as far as they
/// are still installed.
fn remove_debian_packages() -> Result<()> {
    let journal = std::fs::read_to_string(APT_HISTORY).unwrap_or_default();
    let ours: Vec<String> = installs_by_setup(&journal)
        .into_iter()
        .filter(|package| crate::setup::installed(package))
        .collect();
    if ours.is_empty() {
        eprintln!("xtask: undo: no Debian package of setup's is installed");
        return Ok(());
    }
    eprintln!("xtask: undo: apt-get purge {}", ours.join(" "));
    let status = Command::new("apt-get")
        .args(["purge", "-y", "-q"])
        .args(&ours)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("starting apt-get purge")?;
    if !status.success() {
        bail!("apt-get purge failed ({status})");
    }
    Ok(())
}

/// The packages (with their architecture) installed by apt-get runs that
/// used setup's archive cache, in journal order, each once.
fn installs_by_setup(journal: &str) -> Vec<String> {
    let mut ours = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in journal.split("\n\n") {
        let by_setup = entry.lines().any(|line| {
            line.starts_with("Commandline:")
                && line.contains("Dir::Cache::archives=")
                && line.contains(APT_MARK)
        });
        if !by_setup {
            continue;
        }
        for line in entry.lines() {
            let Some(list) = line.strip_prefix("Install: ") else {
                continue;
            };
            for package in journal_packages(list) {
                if seen.insert(package.clone()) {
                    ours.push(package);
                }
            }
        }
    }
    ours
}

/// Names in one `Install:` list: `name:arch (version[, automatic]), …`.
fn journal_packages(list: &str) -> Vec<String> {
    list.split("), ")
        .filter_map(|item| item.split(" (").next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

fn remove_pip_packages(record: &Path) -> Result<()> {
    let mut names: Vec<String> = read_record(record).into_iter().collect();
    if names.is_empty() {
        // A setup from before the record existed installed virtme-ng alone.
        names.push("virtme-ng".to_string());
    }
    let present: Vec<String> = names
        .into_iter()
        .filter(|name| {
            Command::new("python3")
                .args(["-m", "pip", "show", "-q", name])
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: undo: pip uninstall {}", present.join(" "));
    let mut args = vec![
        "-m",
        "pip",
        "uninstall",
        "-y",
        "-q",
        "--root-user-action=ignore",
    ];
    args.extend(present.iter().map(String::as_str));
    shell::run("python3", &args)
}

fn remove_cargo_tools(record: &Path) -> Result<()> {
    for tool in read_record(record) {
        eprintln!("xtask: undo: cargo uninstall {tool}");
        if let Err(error) = shell::run("cargo", &["uninstall", &tool]) {
            eprintln!("xtask: undo: {error:#} (already gone?)");
        }
    }
    Ok(())
}

/// Removes the module trees setup copied under `/lib/modules`, and the
/// directory itself when that leaves it empty.
fn remove_modules() -> Result<()> {
    let root = Path::new("/lib/modules");
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let ours: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join(MODULES_MARKER).exists())
        .collect();
    for tree in ours {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
        eprintln!("xtask: undo: removed {}", tree.display());
    }
    if std::fs::read_dir(root).is_ok_and(|mut rest| rest.next().is_none()) {
        std::fs::remove_dir(root).context("removing the empty /lib/modules")?;
        eprintln!("xtask: undo: removed the empty /lib/modules");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: &str = "\
Start-Date: 2026-12-04  18:20:01
Commandline: apt-get install -y nodejs
Install: nodejs:amd64 (20.20.2-1nodesource1)
End-Date: 2026-12-04  18:20:09

Start-Date: 2026-12-04  18:26:01
Commandline: apt-get install -y -q --no-install-recommends -o Dir::Cache::archives=/work/main/target/cache/apt -o APT::Sandbox::User=root vagrant
Install: ruby-sdbm:amd64 (1.0.0-5+b1, automatic), vagrant:all (2.3.4+dfsg-1), qemu-system-x86:amd64 (1:7.2+dfsg-7+deb12u18+b3)
End-Date: 2026-12-04  18:26:30

Start-Date: 2026-12-04  18:27:01
Commandline: apt-get install -y -q -o Dir::Cache::archives=/work/wt-15/target/cache/apt containerd
Install: containerd:amd64 (1.6.20~ds1-1+b1), vagrant:all (2.3.4+dfsg-1)
End-Date: 2026-12-04  18:27:30
";

    #[test]
    fn finds_exactly_setups_installs_with_their_dependencies() {
        assert_eq!(
            installs_by_setup(JOURNAL),
            [
                "ruby-sdbm:amd64",
                "vagrant:all",
                "qemu-system-x86:amd64",
                "containerd:amd64"
            ]
        );
    }

    #[test]
    fn an_empty_or_foreign_journal_names_nothing() {
        assert!(installs_by_setup("").is_empty());
        assert!(
            installs_by_setup("Commandline: apt-get install x\nInstall: x:amd64 (1)").is_empty()
        );
    }
}
