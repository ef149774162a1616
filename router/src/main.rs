//! `weave-router`: the weave-rs router daemon.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use weave_router::daemon::{self, config::Options};

fn main() -> ExitCode {
    let options = Options::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&options.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match daemon::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("weave-router: {error:#}");
            ExitCode::FAILURE
        }
    }
}
