//! `cargo xtask bench odp [--kernel qemu|uml]`: builds
//! `odp/examples/odp_bench.rs` in release mode on the host, boots the VM
//! (or User-Mode Linux) once and runs it there: 100,000
//! exact-match flow installs batched against one request per flow (go-odp's
//! way), dump rates, batched deletes and miss-upcall throughput, each with
//! its ratio to a baseline measured in the same run. The table is also saved
//! to `target/bench/odp.md`.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::guest::Kernel;

/// Options of `cargo xtask bench odp`.
#[derive(Debug, Clone, clap::Args)]
pub struct OdpArgs {
    /// Flows to install in each install run.
    #[arg(long, default_value_t = 100_000)]
    pub flows: u32,
    /// Packets to send into the datapath in each upcall run.
    #[arg(long, default_value_t = 50_000)]
    pub packets: u32,
    /// The kernel to run on: `uml` runs natively, `qemu` emulates the CPU.
    #[arg(long, value_enum, default_value = "qemu")]
    pub kernel: Kernel,
    /// Guest memory (`2G`, `4096M`).
    #[arg(long, default_value = "2G")]
    pub memory: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 2400)]
    pub timeout: u64,
}

/// Builds an example in release mode and returns its executable.
fn build_example(package: &str, example: &str) -> Result<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            package,
            "--example",
            example,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(crate::workspace_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("building the benchmark")?;
    if !out.status.success() {
        bail!(
            "building {package} example {example} failed ({})",
            out.status
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == example {
            if let Some(executable) = message["executable"].as_str() {
                return Ok(executable.to_string());
            }
        }
    }
    bail!("cargo built no executable for example {example}")
}

/// Runs the benchmark in one VM boot.
pub fn run(args: &OdpArgs) -> Result<ExitCode> {
    let exe = build_example("odp", "odp_bench")?;
    let outcome = args.kernel.run(
        &args.memory,
        args.timeout,
        vec![
            exe,
            "--flows".into(),
            args.flows.to_string(),
            "--packets".into(),
            args.packets.to_string(),
        ],
    )?;
    if outcome.status != 0 {
        bail!("the benchmark exited with status {}", outcome.status);
    }
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let saved = dir.join(match args.kernel {
        Kernel::Qemu => "odp.md",
        Kernel::Uml => "odp-uml.md",
    });
    std::fs::write(&saved, &outcome.stdout)
        .with_context(|| format!("writing {}", saved.display()))?;
    eprintln!(
        "xtask bench: table saved to {} (measured in {})",
        saved.display(),
        args.kernel.describe()
    );
    Ok(ExitCode::SUCCESS)
}
