//! The text syntax of `ovs-dpctl` for flow keys, masks and actions.
//!
//! * [`format_flow_key`] and [`format_actions`] print what the kernel
//!   returns exactly as `ovs-dpctl dump-flows` (Open vSwitch 3.1) prints it,
//!   including which wildcarded fields are left out and how partial masks
//!   are written (`dst=10.32.0.0/255.240.0.0`, `flags(-df+csum)`);
//! * [`parse_flow`] and [`parse_actions`] read the same syntax, so
//!   `parse(format(x))` gives `x` back for what both sides cover.
//!
//! Printing follows OVS's rules rather than a tidier scheme of our own, so
//! that output can be compared with `ovs-dpctl` text byte for byte.

mod error;
mod format;
mod parse;

pub use error::ParseError;
pub use format::{PortNames, format_actions, format_flow_key, format_stats, format_ufid};
pub use parse::{MAX_NESTING, ParsedFlow, PortLookup, parse_actions, parse_flow, parse_ufid};

/// The body of the `text` fuzz target: parses arbitrary bytes as a flow and
/// as an action list and prints whatever parses, tersely and verbosely.
/// Must never panic, for any input.
pub fn fuzz_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = parse_flow(s, None) {
        let verbose = format_flow_key(&f.key, Some(&f.mask), None, true);
        let _ = format_flow_key(&f.key, Some(&f.mask), None, false);
        let _ = format_flow_key(&f.key, None, None, false);
        let _ = parse_flow(&verbose, None);
    }
    if let Ok(a) = parse_actions(s, None) {
        let _ = parse_actions(&format_actions(&a, None), None);
    }
}

#[cfg(test)]
mod tests;
