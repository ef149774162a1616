//! `odp`: a command-line tool for the kernel Open vSwitch datapath with
//! `ovs-dpctl`'s verbs and output format, built on the `odp` crate.
//!
//! ```text
//! odp add-dp dp0
//! odp add-if dp0 veth0 vxlan0,type=vxlan,dst_port=4789
//! odp add-flow dp0 'in_port(1),eth(),eth_type(0x0800),ipv4(dst=10.32.0.0/255.240.0.0)' 2
//! odp dump-flows dp0
//! odp listen dp0
//! ```

mod args;
mod commands;
mod iface;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let mut out = std::io::stdout().lock();
    match commands::run(&cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odp: {e}");
            ExitCode::FAILURE
        }
    }
}
