//! Command-line arguments (`ovs-dpctl`'s verbs and options).

use clap::{Parser, Subcommand};

/// Manage kernel Open vSwitch datapaths, vports and flows (like ovs-dpctl).
#[derive(Debug, Parser)]
#[command(name = "odp", version, about)]
pub struct Cli {
    /// Increase verbosity (dump-flows: show wildcarded fields, UFIDs, port
    /// names).
    #[arg(short = 'm', long = "more", action = clap::ArgAction::Count, global = true)]
    pub more: u8,
    /// show: print per-port statistics.
    #[arg(short = 's', long = "statistics", global = true)]
    pub statistics: bool,
    /// Print port names instead of numbers (default with -m).
    #[arg(long, global = true, overrides_with = "no_names")]
    pub names: bool,
    /// Print port numbers (default without -m).
    #[arg(long, global = true)]
    pub no_names: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

impl Cli {
    /// Whether ports print as names, as ovs-dpctl decides it.
    pub fn use_names(&self) -> bool {
        if self.names {
            true
        } else if self.no_names {
            false
        } else {
            self.more > 0
        }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show datapaths (all, or the ones named) with their ports.
    Show {
        /// Datapath names (`dp0` or `system@dp0`).
        dps: Vec<String>,
    },
    /// Print the names of all datapaths.
    DumpDps,
    /// Create a datapath, optionally with interfaces.
    AddDp {
        /// Datapath name.
        dp: String,
        /// Interfaces, as for add-if.
        ifaces: Vec<String>,
    },
    /// Delete a datapath.
    DelDp {
        /// Datapath name.
        dp: String,
    },
    /// Add interfaces: `NAME[,type=TYPE][,port_no=N][,dst_port=P][,exts=gbp]`.
    AddIf {
        /// Datapath name.
        dp: String,
        /// Interfaces.
        #[arg(required = true)]
        ifaces: Vec<String>,
    },
    /// Check or change interfaces: `NAME[,type=TYPE][,port_no=N][,upcall_pid=PID]`.
    SetIf {
        /// Datapath name.
        dp: String,
        /// Interfaces.
        #[arg(required = true)]
        ifaces: Vec<String>,
    },
    /// Delete interfaces (by name).
    DelIf {
        /// Datapath name.
        dp: String,
        /// Interface names.
        #[arg(required = true)]
        ifaces: Vec<String>,
    },
    /// Print the flows of a datapath.
    DumpFlows {
        /// Datapath name (optional when there is only one).
        dp: Option<String>,
        /// Ask the kernel to leave out key, mask and actions of flows that
        /// have a UFID.
        #[arg(long)]
        terse: bool,
    },
    /// Add a flow: `[DP] FLOW ACTIONS`. An existing flow is an error.
    AddFlow {
        /// `[DP] FLOW ACTIONS`.
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
    },
    /// Change a flow's actions: `[DP] FLOW ACTIONS`.
    ModFlow {
        /// `[DP] FLOW ACTIONS`.
        #[arg(num_args = 2..=3, required = true)]
        args: Vec<String>,
        /// Create the flow if it does not exist.
        #[arg(long)]
        may_create: bool,
        /// Reset the flow's statistics.
        #[arg(long)]
        clear: bool,
    },
    /// Print one flow: `[DP] ufid:UFID` or `[DP] FLOW`.
    GetFlow {
        /// `[DP] FLOW-OR-UFID`.
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Delete one flow: `[DP] FLOW` (a `ufid:` prefix selects by UFID).
    DelFlow {
        /// `[DP] FLOW`.
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// Delete every flow of a datapath.
    DelFlows {
        /// Datapath name (optional when there is only one).
        dp: Option<String>,
    },
    /// Print upcalls and vport events as they arrive.
    Listen {
        /// Datapath whose upcalls to receive (its vports, or its CPUs when
        /// it dispatches per CPU, are pointed at this program: the
        /// datapath's owner stops getting them). Without it, only vport
        /// events are printed.
        dp: Option<String>,
        /// Only vport events, even with a datapath.
        #[arg(long)]
        no_upcalls: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}
