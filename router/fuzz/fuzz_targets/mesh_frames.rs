//! Fuzz target: the mesh's version-2 frame reader and protocol header check must never panic on arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run mesh_frames` from `router/`. The same body
//! runs on stable in the crate's unit tests.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_router::mesh::wire::fuzz_frames(data);
});
