//! `cargo xtask test`: every check the project has, in stages.
//!
//! Test targets are sorted into stages by name:
//! - `vm_*` integration-test targets need the kernel openvswitch datapath;
//!   their tests are `#[ignore]`d on the host and run (with
//!   `--include-ignored`) in one VM boot;
//! - `netns_*` targets need root and network namespaces on the host;
//! - everything else (lib, bin, other integration tests, doc tests) is a
//!   unit test;
//! - every cargo-fuzz target runs for a few seconds in the fuzz stage.
//!
//! Every stage runs even when an earlier one failed, and the run ends with
//! one summary line per stage and a total.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::guest::GuestArgs;
use crate::setup::{self, VmTools};
use crate::vm::{self, VmArgs};

/// Options of `cargo xtask test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// Run only these stages (setup, fmt, clippy, unit, fuzz, netns, vm, lab); repeatable.
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Do not install anything (assume the prerequisites are there).
    #[arg(long)]
    pub skip_setup: bool,
    /// Seconds each fuzz target runs in the fuzz stage.
    #[arg(long, default_value_t = 10)]
    pub fuzz_seconds: u64,
    /// Memory of the test VM.
    #[arg(long, default_value = "3G")]
    pub vm_memory: String,
}

/// The stages, in the order they run.
const STAGES: &[&str] = &[
    "setup", "fmt", "clippy", "unit", "fuzz", "netns", "vm", "lab",
];

/// Test counts parsed from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds the counts of one `test result:` line, if `line` is one.
    fn parse_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// How one stage ended.
#[derive(Debug)]
struct StageResult {
    name: &'static str,
    outcome: Result<Option<Counts>>,
    seconds: f64,
}

/// Runs the stages and prints the summary; fails when any stage failed.
pub fn run(args: &TestArgs) -> Result<ExitCode> {
    for stage in &args.stages {
        if !STAGES.contains(&stage.as_str()) {
            bail!("unknown stage {stage:?}; stages are {}", STAGES.join(", "));
        }
    }
    let wanted = |name: &str| args.stages.is_empty() || args.stages.iter().any(|s| s == name);
    let builds = ["clippy", "unit", "fuzz", "netns", "vm", "lab"];
    if builds.iter().any(|stage| wanted(stage)) {
        check_free_space()?;
    }
    let targets = test_targets()?;
    let mut results = Vec::new();
    let mut tools: Option<Result<VmTools>> = None;

    for &name in STAGES {
        if !wanted(name) {
            continue;
        }
        banner(name);
        let start = Instant::now();
        let outcome = match name {
            "setup" if args.skip_setup => Ok(None),
            "setup" => {
                let result = setup::all();
                let outcome = result
                    .as_ref()
                    .map(|_| None)
                    .map_err(|e| anyhow::anyhow!("{e:#}"));
                tools = Some(result);
                outcome
            }
            "fmt" => cargo(&["fmt", "--all", "--", "--check"], false).map(|_| None),
            "clippy" => cargo(
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                false,
            )
            .map(|_| None),
            "unit" => unit(&targets).map(Some),
            "fuzz" => crate::fuzz::smoke(args.fuzz_seconds).map(|count| {
                println!(
                    "fuzz: {count} targets ran {} s each without a crash",
                    args.fuzz_seconds
                );
                None
            }),
            "netns" => netns(&targets).map(Some),
            "vm" => {
                let tools = match tools.take() {
                    Some(tools) => tools,
                    None => setup::vm(),
                };
                tools
                    .map_err(|e| anyhow::anyhow!("the VM cannot run: {e:#}"))
                    .and_then(|tools| vm_stage(&tools, &targets, &args.vm_memory))
                    .map(Some)
            }
            "lab" => lab_stage().map(Some),
            _ => unreachable!("stage names are checked above"),
        };
        results.push(StageResult {
            name,
            outcome,
            seconds: start.elapsed().as_secs_f64(),
        });
    }

    println!("\n==> summary");
    let mut total = Counts::default();
    let mut failed = false;
    for result in &results {
        let (status, detail) = match &result.outcome {
            Ok(Some(counts)) => {
                total.add(*counts);
                let status = if counts.failed > 0 { "FAILED" } else { "ok" };
                (
                    status,
                    format!(
                        "{} passed, {} failed, {} ignored",
                        counts.passed, counts.failed, counts.ignored
                    ),
                )
            }
            Ok(None) => ("ok", String::new()),
            Err(error) => ("FAILED", first_line(&format!("{error:#}"))),
        };
        failed |= status == "FAILED";
        println!(
            "stage {:<7} {:<7} {:>7.1}s  {detail}",
            result.name, status, result.seconds
        );
    }
    println!(
        "total: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    for result in &results {
        if let Err(error) = &result.outcome {
            eprintln!("stage {} failed: {error:#}", result.name);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Free space a full run may need on the target directory's file system:
/// a fresh clone's run wrote about 7 GiB there (builds, fuzz builds, the
/// VM's kernel and packages).
const NEEDED_GIB: u64 = 8;

/// Fails before any stage when the target directory's file system has too
/// little room, so that a full disk is reported as that and not as a dozen
/// compiler and fuzzer errors.
fn check_free_space() -> Result<()> {
    let target = crate::target_dir();
    let mut probe = target.as_path();
    while !probe.exists() {
        match probe.parent() {
            Some(parent) => probe = parent,
            None => break,
        }
    }
    let path = probe.to_string_lossy();
    let Ok(report) = crate::shell::output("df", &["-Pk", &path]) else {
        eprintln!("xtask: could not ask df for the free space under {path}; going on");
        return Ok(());
    };
    let Some(free_kib) = df_available_kib(&report) else {
        eprintln!("xtask: could not read df's report for {path}; going on");
        return Ok(());
    };
    let free_gib = free_kib / (1024 * 1024);
    println!("disk: {free_gib} GiB free under {path}");
    if free_gib < NEEDED_GIB {
        bail!(
            "only {free_gib} GiB free under {path}; a full test run needs about {NEEDED_GIB} GiB \
             (free some, e.g. old build directories under target/, and run again)"
        );
    }
    Ok(())
}

/// The "Available" column (KiB) of `df -Pk`'s one data line.
fn df_available_kib(report: &str) -> Option<u64> {
    report
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

fn banner(stage: &str) {
    println!("\n==> stage {stage}");
    let _ = std::io::stdout().flush();
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect()
}

/// Integration-test targets of the workspace, by name.
#[derive(Debug, Default)]
struct Targets {
    vm: Vec<String>,
    netns: Vec<String>,
    other: Vec<String>,
}

fn test_targets() -> Result<Targets> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(crate::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut targets = Targets::default();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    for package in &packages {
        if package["name"] == "xtask" {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_test = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"));
            let Some(name) = target["name"].as_str().filter(|_| is_test) else {
                continue;
            };
            let list = if name.starts_with("vm_") {
                &mut targets.vm
            } else if name.starts_with("netns_") {
                &mut targets.netns
            } else {
                &mut targets.other
            };
            list.push(name.to_string());
        }
    }
    for list in [&mut targets.vm, &mut targets.netns, &mut targets.other] {
        list.sort();
        list.dedup();
    }
    Ok(targets)
}

/// Runs cargo in the workspace root, streaming its output; with `count`,
/// returns the test counts read from its stdout.
fn cargo(args: &[&str], count: bool) -> Result<Counts> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .stdout(if count {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .context("starting cargo")?;
    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            counts.parse_line(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        if count && counts.failed > 0 {
            // The counts say what failed; the summary shows them.
            return Ok(counts);
        }
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(counts)
}

fn test_args<'a>(base: &[&'a str], targets: &'a [String]) -> Vec<&'a str> {
    let mut args = base.to_vec();
    for target in targets {
        args.push("--test");
        args.push(target);
    }
    args
}

fn unit(targets: &Targets) -> Result<Counts> {
    let mut counts = cargo(
        &test_args(
            &["test", "--workspace", "--no-fail-fast", "--lib", "--bins"],
            &targets.other,
        ),
        true,
    )?;
    counts.add(cargo(
        &["test", "--workspace", "--no-fail-fast", "--doc"],
        true,
    )?);
    Ok(counts)
}

fn netns(targets: &Targets) -> Result<Counts> {
    if targets.netns.is_empty() {
        bail!("no netns_* test targets found");
    }
    if !crate::shell::is_root() {
        bail!("host-namespace tests need root");
    }
    cargo(
        &test_args(&["test", "--workspace", "--no-fail-fast"], &targets.netns),
        true,
    )
}

/// Runs `cargo xtask lab` once in each mode (sleeve on this machine,
/// fastdp in the VM unless this kernel has openvswitch), then the
/// Kubernetes lab (`--kube`); each run that ends with every pod reaching
/// every other counts as one passed test.
fn lab_stage() -> Result<Counts> {
    let mut counts = Counts::default();
    for (mode, kube) in [
        (crate::lab::Mode::Sleeve, false),
        (crate::lab::Mode::Fastdp, false),
        (crate::lab::Mode::Sleeve, true),
    ] {
        let args = crate::lab::LabArgs {
            nodes: 3,
            mode,
            pods: 2,
            keep: false,
            kube,
        };
        match crate::lab::run_once(&args) {
            Ok(0) => counts.passed += 1,
            Ok(status) => {
                eprintln!("lab ({mode:?}, kube: {kube}) exited with status {status}");
                counts.failed += 1;
            }
            Err(error) => {
                eprintln!("lab ({mode:?}, kube: {kube}) could not run: {error:#}");
                counts.failed += 1;
            }
        }
    }
    Ok(counts)
}

/// Builds the `vm_*` test binaries on the host and runs them all in one VM.
fn vm_stage(tools: &VmTools, targets: &Targets, memory: &str) -> Result<Counts> {
    if targets.vm.is_empty() {
        bail!("no vm_* test targets found");
    }
    let args = test_args(
        &[
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ],
        &targets.vm,
    );
    let out = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("building the VM tests")?;
    if !out.status.success() {
        bail!("building the VM tests failed ({})", out.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // Only the test harnesses: building a package's tests also builds
        // its binaries (for CARGO_BIN_EXE_*), which are artifacts too.
        let is_test = message["profile"]["test"] == true
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"));
        if message["reason"] == "compiler-artifact" && is_test {
            if let Some(executable) = message["executable"].as_str() {
                binaries.push(executable.to_string());
            }
        }
    }
    if binaries.is_empty() {
        bail!("cargo built no VM test binaries");
    }
    // One boot for all binaries: each runs its ignored (kernel) tests too,
    // one at a time, and a failure does not stop the others.
    let mut script = String::from("status=0\n");
    for binary in &binaries {
        let quoted = crate::shell::quote(binary);
        script.push_str(&format!(
            "echo \"     Running {quoted}\"\n{quoted} --include-ignored --test-threads=1 || status=1\n"
        ));
    }
    script.push_str("exit $status\n");
    let outcome = vm::run(
        tools,
        &VmArgs {
            cpus: 2,
            guest: GuestArgs {
                memory: memory.to_string(),
                timeout: 1800,
                keep: false,
                command: vec!["sh".into(), "-c".into(), script],
            },
        },
    )?;
    let mut counts = Counts::default();
    for line in String::from_utf8_lossy(&outcome.stdout).lines() {
        counts.parse_line(line);
    }
    if outcome.status != 0 && counts.failed == 0 {
        bail!("the VM tests exited with status {}", outcome.status);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::{Counts, df_available_kib};

    #[test]
    fn free_space_comes_from_dfs_available_column() {
        let report = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                      /dev/vda 264140800 46137344 50331648 48% /\n";
        assert_eq!(df_available_kib(report), Some(50_331_648));
        assert_eq!(df_available_kib("Filesystem\n"), None);
        assert_eq!(df_available_kib(""), None);
    }

    #[test]
    fn counts_come_from_libtest_result_lines() {
        let mut counts = Counts::default();
        counts.parse_line(
            "test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.18s",
        );
        counts.parse_line("test something ... ok");
        counts.parse_line(
            "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out",
        );
        assert_eq!((counts.passed, counts.failed, counts.ignored), (8, 1, 2));
    }
}
