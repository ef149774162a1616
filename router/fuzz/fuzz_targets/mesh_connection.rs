//! Fuzz target: a mesh connection's intro and message state machine (plain and encrypted) must never panic on arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run mesh_connection` from `router/`. The same body
//! runs on stable in the crate's unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_router::mesh::connection::fuzz_connection(data);
});
