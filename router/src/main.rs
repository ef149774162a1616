//! `weave-router`: the weave-rs router daemon.

use clap::Parser;

/// Command-line options of `weave-router`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "The weave-rs router, wire-compatible with Weave Net 2.8.1"
)]
struct Options {}

fn main() -> anyhow::Result<()> {
    let _options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    anyhow::bail!("weave-router has no data plane yet: the mesh and fastdp issues add it")
}
