//! Fuzz target: the mesh router's handling of gob gossip and overlay messages after an intro must never panic on arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run mesh_router_messages` from `router/`. The same body
//! runs on stable in the crate's unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_router::mesh::router::fuzz_router_messages(data);
});
