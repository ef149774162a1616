//! `weave-k8s-apiserver`: the Kubernetes API server test double as a
//! process, for the lab and for tests that need it in another namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use weave_k8s_apiserver::{ApiServer, Config, kubeconfig, listen_in_netns};

/// A Kubernetes API server test double (not a real API server).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen: `ADDR:PORT`, or `NETNS@ADDR:PORT` to listen inside
    /// the network namespace /run/netns/NETNS. Repeatable.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: Vec<String>,
    /// Write a kubeconfig for the first address here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Events kept for watches resuming from a resourceVersion.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 5)]
    bookmark_interval: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut listeners = Vec::new();
    for spec in &args.listen {
        let (netns, addr) = match spec.split_once('@') {
            Some((ns, addr)) => (Some(ns), addr),
            None => (None, spec.as_str()),
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--listen {spec}: not ADDR:PORT"))?;
        let listener = match netns {
            Some(ns) => listen_in_netns(ns, addr),
            None => std::net::TcpListener::bind(addr),
        }
        .with_context(|| format!("listening on {spec}"))?;
        listeners.push(listener);
    }
    let server = ApiServer::serve(
        listeners,
        Config {
            history: args.history,
            bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
            ..Config::default()
        },
    )?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, kubeconfig(&server.url()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(server);
    Ok(())
}
