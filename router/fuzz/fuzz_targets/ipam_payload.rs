//! Arbitrary bytes as an `IPallocation` gossip payload and unicast, fed to
//! a live allocator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weave_router::ipam::wire::fuzz_ipam_payload(data);
});
