//! Fuzz target: `weave_router::sleeve::fuzz::fuzz_offload` must never panic
//! (and its internal property checks must hold) on arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run sleeve_offload` from `router/`. The same
//! body runs on stable in the unit test `sleeve::fuzz::tests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_router::sleeve::fuzz::fuzz_offload(data);
});
