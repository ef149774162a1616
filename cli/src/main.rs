//! `weave`: the operator command line (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weave_cli::{CliError, DEFAULT_ADDR, Weave, bridge_mac, ps_lines, reset_host};

/// weave: operate the local weave-rs router (Weave Net's `weave` commands).
#[derive(Debug, Parser)]
#[command(name = "weave", version)]
struct Cli {
    /// Accepted for Weave's `weave --local …`: weave-rs always talks to the
    /// local router.
    #[arg(long, global = true)]
    local: bool,
    /// The router's HTTP API.
    #[arg(long, env = "WEAVE_HTTP_ADDR", default_value = DEFAULT_ADDR, global = true)]
    http_addr: String,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The router's status, or one of its pages.
    Status {
        /// targets, connections, peers or ipam.
        page: Option<String>,
    },
    /// The router's full report (JSON).
    Report,
    /// Take over the address space of peers that are gone for good.
    Rmpeer {
        /// Peer names (or nicknames).
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Connect to more peers.
    Connect {
        /// Replace the list of peers instead of adding to it.
        #[arg(long)]
        replace: bool,
        /// Addresses or host names, optionally with :port.
        peers: Vec<String>,
    },
    /// Stop connecting to peers.
    Forget {
        /// As given to connect.
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Give the bridge an address so the host reaches the containers.
    Expose {
        /// An address/prefix to claim, or a subnet (network address) to
        /// allocate in; default: the default subnet.
        cidr: Option<String>,
        /// Do not masquerade the subnet's traffic leaving the host.
        #[arg(long)]
        without_masquerade: bool,
    },
    /// Take the bridge's address away again.
    Hide {
        /// The address/prefix; default: every exposed address.
        cidr: Option<String>,
    },
    /// Hand this router's address space to the others, then remove the
    /// bridge, datapath and host rules (and the data under --db-prefix).
    /// Stop the router afterwards.
    Reset {
        /// Go on with the local half when the router does not answer.
        #[arg(long)]
        force: bool,
        /// The weave-router executable for the local half.
        #[arg(long, default_value = "weave-router")]
        router: PathBuf,
        /// The router's data prefix, whose files are removed.
        #[arg(long)]
        db_prefix: Option<PathBuf>,
    },
    /// The identities with addresses on this router.
    Ps {
        /// The bridge whose MAC is shown for weave:expose.
        #[arg(long, default_value = "weave")]
        bridge: String,
    },
}

fn run(cli: Cli) -> Result<(), CliError> {
    let weave = Weave::new(&cli.http_addr);
    match cli.command {
        Command::Status { page } => print!("{}", weave.status(page.as_deref())?),
        Command::Report => print!("{}", weave.report()?),
        Command::Rmpeer { peers } => {
            for peer in peers {
                print!("{}", weave.rmpeer(&peer)?);
            }
        }
        Command::Connect { replace, peers } => weave.connect(replace, &peers)?,
        Command::Forget { peers } => weave.forget(&peers)?,
        Command::Expose {
            cidr,
            without_masquerade,
        } => {
            // Weave printed the address without its prefix length.
            let addr = weave.expose(cidr.as_deref(), without_masquerade)?;
            println!("{}", addr.split('/').next().unwrap_or(&addr));
        }
        Command::Hide { cidr } => {
            for addr in weave.hide(cidr.as_deref())? {
                println!("{}", addr.split('/').next().unwrap_or(&addr));
            }
        }
        Command::Reset {
            force,
            router,
            db_prefix,
        } => {
            match weave.leave() {
                Ok(()) => {}
                Err(error @ CliError::NotRunning { .. }) if force => {
                    eprintln!("weave: {error}; resetting the host anyway (--force)");
                }
                Err(error) => return Err(error),
            }
            print!("{}", reset_host(&router, db_prefix.as_deref())?);
        }
        Command::Ps { bridge } => {
            let owned = weave.ps()?;
            for line in ps_lines(&owned, bridge_mac(&bridge).as_deref()) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weave: {error}");
            ExitCode::FAILURE
        }
    }
}
