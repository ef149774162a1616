//! Fuzz target: `weave_router::net::firewall::saved::fuzz_parse` must never
//! panic on arbitrary bytes read as an `iptables-save` listing, and planning
//! the router's rules against whatever parsed must not panic either.
//!
//! Run with `cargo xtask fuzz iptables_save` (or `cargo fuzz run
//! iptables_save` from `router/`). The same body runs in the unit test
//! `net::firewall::saved::tests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_router::net::firewall::saved::fuzz_parse(data);
});
