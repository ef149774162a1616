//! `weave-test-kubelet`: the test bed's kubelet (see
//! `weave_k8s_testbed::kubelet`), one per test host.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use weave_k8s_testbed::kubelet::{Kubelet, Options};

/// A test kubelet: Pods bound to this node become CRI pod sandboxes.
#[derive(Debug, Parser)]
struct Args {
    /// This node's name.
    #[arg(long)]
    node: String,
    /// This node's address.
    #[arg(long)]
    node_ip: Ipv4Addr,
    /// The API server, e.g. http://192.168.77.254:6443.
    #[arg(long)]
    api: String,
    /// containerd's socket.
    #[arg(long)]
    cri: PathBuf,
    /// Where sandbox logs go.
    #[arg(long)]
    log_dir: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = kube::Config::new(args.api.parse().context("--api is not a URL")?);
    let client = kube::Client::try_from(config)?;
    let kubelet = Kubelet::new(
        Options {
            node: args.node,
            node_ip: args.node_ip,
            cri_socket: args.cri,
            log_dir: args.log_dir,
        },
        client,
    )
    .await?;
    kubelet.run().await
}
