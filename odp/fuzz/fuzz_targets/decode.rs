//! Fuzz target: every `odp::wire` decoder on arbitrary bytes must return, never panic.
//!
//! Run with `cargo +nightly fuzz run decode` from `odp/`. The same body runs
//! on stable as the unit test `wire::fuzz::tests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    odp::wire::fuzz::fuzz_decode(data);
});
