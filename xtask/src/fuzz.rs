//! Fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain.
//!
//! Every `<crate>/fuzz/` package with `cargo-fuzz = true` metadata is a fuzz
//! package; each of its `[[bin]]` targets is a fuzz target. cargo-fuzz needs
//! nightly-only compiler flags (sanitizers); the machine has one stable
//! toolchain, so the runs set `RUSTC_BOOTSTRAP=1`, which lets stable rustc
//! accept them. Builds go to `target/fuzz`, corpora to `<crate>/fuzz/corpus`.
//!
//! `cargo xtask test` runs every target for a few seconds (a smoke run that
//! catches a decoder that panics on shallow inputs); `cargo xtask fuzz
//! <target> --seconds N` runs one target for as long as wanted.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::shell;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Clone, clap::Args)]
pub struct FuzzArgs {
    /// Targets to run, as `<package>/<target>` or just `<target>` (default: all).
    pub targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Sanitizer to build with (address, none, …, as cargo fuzz takes it).
    #[arg(long, default_value = "address")]
    pub sanitizer: String,
}

/// One fuzz target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The crate directory holding `fuzz/`.
    pub crate_dir: PathBuf,
    /// The fuzz package's name.
    pub package: String,
    /// The target (binary) name.
    pub name: String,
}

impl Target {
    fn label(&self) -> String {
        format!("{}/{}", self.package, self.name)
    }
}

/// `cargo xtask fuzz`.
pub fn run_cli(args: &FuzzArgs) -> Result<ExitCode> {
    ensure_cargo_fuzz()?;
    let all = targets()?;
    let chosen: Vec<&Target> = if args.targets.is_empty() {
        all.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for wanted in &args.targets {
            let found: Vec<&Target> = all
                .iter()
                .filter(|t| t.label() == *wanted || t.name == *wanted)
                .collect();
            if found.is_empty() {
                let known: Vec<String> = all.iter().map(Target::label).collect();
                bail!("no fuzz target {wanted:?}; known: {}", known.join(", "));
            }
            chosen.extend(found);
        }
        chosen
    };
    for target in chosen {
        run_target(target, args.seconds, &args.sanitizer)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs every fuzz target for `seconds`; returns how many ran. The smoke
/// run builds without a sanitizer (the code under test is safe Rust, and a
/// panic is what it looks for), with debug assertions for overflow checks.
pub fn smoke(seconds: u64) -> Result<usize> {
    ensure_cargo_fuzz()?;
    let all = targets()?;
    if all.is_empty() {
        bail!("no fuzz targets found");
    }
    let mut failures = Vec::new();
    for target in &all {
        if let Err(error) = run_target(target, seconds, "none") {
            eprintln!("{error:#}");
            failures.push(target.label());
        }
    }
    if !failures.is_empty() {
        bail!("fuzz targets failed: {}", failures.join(", "));
    }
    Ok(all.len())
}

fn run_target(target: &Target, seconds: u64, sanitizer: &str) -> Result<()> {
    println!(
        "fuzz: {} for {seconds}s (sanitizer {sanitizer})",
        target.label()
    );
    // Build first, so that a failed build (a compile error, a full disk) is
    // not reported as a crash: only `run` can find a crashing input.
    let built = fuzz_command(target, "build", sanitizer)
        .status()
        .context("starting cargo fuzz build")?;
    if !built.success() {
        bail!(
            "building fuzz target {} failed ({built}); no input ran, the compiler's error is above",
            target.label()
        );
    }
    let status = fuzz_command(target, "run", sanitizer)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .status()
        .context("starting cargo fuzz run")?;
    if !status.success() {
        bail!(
            "fuzz target {} failed ({status}); the crashing input is under {}/fuzz/artifacts/{}",
            target.label(),
            target.crate_dir.display(),
            target.name
        );
    }
    Ok(())
}

/// `cargo fuzz <verb>` for `target` with the project's build options; the
/// same options for `build` and `run` so that `run` reuses the build.
fn fuzz_command(target: &Target, verb: &str, sanitizer: &str) -> Command {
    let mut command = Command::new("cargo");
    command
        .args(["fuzz", verb, "--fuzz-dir", "fuzz", "--debug-assertions"])
        .args(["--sanitizer", sanitizer, &target.name])
        .arg("--target-dir")
        .arg(crate::target_dir().join("fuzz"))
        .current_dir(&target.crate_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

/// All fuzz targets of the workspace.
pub fn targets() -> Result<Vec<Target>> {
    let root = crate::workspace_root();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let crate_dir = entry?.path();
        let manifest = crate_dir.join("fuzz").join("Cargo.toml");
        if manifest.is_file() {
            found.extend(parse_manifest(&crate_dir, &manifest)?);
        }
    }
    found.sort_by_key(Target::label);
    Ok(found)
}

/// Reads the package name and `[[bin]]` names of a cargo-fuzz manifest. The
/// manifests are ours and simple, so a line-based reading is enough.
fn parse_manifest(crate_dir: &Path, manifest: &Path) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    if !text.contains("cargo-fuzz = true") {
        return Ok(Vec::new());
    }
    let mut package = None;
    let mut section = String::new();
    let mut targets = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some(value) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_string())
        else {
            continue;
        };
        match section.as_str() {
            "[package]" => package = Some(value),
            "[[bin]]" => targets.push(value),
            _ => {}
        }
    }
    let package = package.with_context(|| format!("{} names no package", manifest.display()))?;
    Ok(targets
        .into_iter()
        .map(|name| Target {
            crate_dir: crate_dir.to_path_buf(),
            package: package.clone(),
            name,
        })
        .collect())
}

/// Installs cargo-fuzz with `cargo install` unless it is there.
fn ensure_cargo_fuzz() -> Result<()> {
    let listed = shell::output("cargo", &["--list"]).unwrap_or_default();
    if listed
        .lines()
        .any(|line| line.split_whitespace().next() == Some("fuzz"))
    {
        return Ok(());
    }
    eprintln!("xtask: cargo install cargo-fuzz");
    shell::run("cargo", &["install", "--locked", "cargo-fuzz"])?;
    crate::undo::record(crate::undo::CARGO_RECORD, &["cargo-fuzz".to_string()])
}
