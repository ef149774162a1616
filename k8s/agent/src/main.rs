//! `weave-kube`: the entrypoint of the `weave-net` DaemonSet.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use weave_kube::config::Config;

/// weave-kube: the weave-rs node agent for Kubernetes, configured by
/// Weave Net's environment variables (IPALLOC_RANGE, CONN_LIMIT, …).
#[derive(Debug, Parser)]
#[command(name = "weave-kube", version)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The init container's work: br_netfilter, bridge-nf-call-iptables,
    /// the CNI plugins and 10-weave.conflist (only if absent) under
    /// HOST_ROOT.
    Init {
        /// Where weave-net and weave-ipam are (default: next to this
        /// executable).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Run the router with peers from the Node list, keep them current,
    /// and reclaim the address space of removed peers.
    Run {
        /// The weave-router executable (default: next to this one, else
        /// on PATH).
        #[arg(long)]
        router: Option<PathBuf>,
        /// Seconds between diffs of the registry against the Nodes.
        #[arg(long, default_value_t = 300)]
        reclaim_period: u64,
    },
    /// Check the environment and print the router's command line it
    /// implies (peers and ring start as given), then exit.
    Check,
}

fn default_router() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("weave-router")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("weave-router"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("weave-kube: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Init { from } => match weave_kube::init::run(&config, from.as_deref()) {
            Ok(report) => {
                println!(
                    "CNI plugins in {}; {} {}",
                    report.plugin_dir.display(),
                    if report.installed.wrote_conflist {
                        "wrote"
                    } else {
                        "kept the existing"
                    },
                    report.conf_dir.join("10-weave.conflist").display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("weave-kube init: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Check => {
            let init = config
                .ipalloc_init
                .clone()
                .unwrap_or_else(|| "consensus".into());
            let peers = config.kube_peers.clone().unwrap_or_default();
            println!(
                "{}",
                config.router_args("<peer name>", &init, &peers).join(" ")
            );
            ExitCode::SUCCESS
        }
        Command::Run {
            router,
            reclaim_period,
        } => {
            let options = weave_kube::run::RunOptions {
                router_bin: router.unwrap_or_else(default_router),
                reclaim_period: Duration::from_secs(reclaim_period.max(1)),
                seed: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
                    .unwrap_or(1),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("weave-kube: starting the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(weave_kube::run::run(config, options)) {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(error) => {
                    eprintln!("weave-kube: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
