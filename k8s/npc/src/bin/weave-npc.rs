//! `weave-npc`: the NetworkPolicy controller, configured as Weave's was.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use weave_npc::core::Config;
use weave_npc::shell::{Settings, run};

/// Enforces Kubernetes NetworkPolicies on this node with nftables.
#[derive(Debug, Parser)]
#[command(name = "weave-npc", version)]
struct Args {
    /// This node's name (Weave's DaemonSet passes it as HOSTNAME).
    #[arg(long, env = "HOSTNAME")]
    node_name: String,
    /// Where Prometheus metrics are served.
    #[arg(long, default_value = "0.0.0.0:6781")]
    metrics_addr: SocketAddr,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Let isolated pods send multicast (224.0.0.0/4).
    #[arg(long)]
    allow_mcast: bool,
    /// The pod bridge.
    #[arg(long, default_value = "weave")]
    bridge: String,
    /// Run even if net.bridge.bridge-nf-call-iptables is off (bridged pod
    /// traffic is then not filtered).
    #[arg(long)]
    skip_br_netfilter_check: bool,
    /// Seconds between comparisons of the kernel's sets with what they must
    /// hold (drift is counted and repaired).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    self_check_interval: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("weave-npc: bad --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let settings = Settings {
        core: Config {
            node_name: args.node_name,
            bridge: args.bridge,
            allow_mcast: args.allow_mcast,
        },
        metrics_addr: args.metrics_addr,
        skip_br_netfilter_check: args.skip_br_netfilter_check,
        self_check_interval: std::time::Duration::from_secs(args.self_check_interval),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weave-npc: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
