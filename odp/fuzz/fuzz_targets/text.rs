//! Fuzz target: the ovs-dpctl text parser (`odp::text`) on arbitrary bytes
//! must return, never panic; whatever parses is printed again.
//!
//! Run with `cargo +nightly fuzz run text` from `odp/`. The same body runs on
//! stable as the unit test `text::tests::fuzz_parse_survives_pseudo_random_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    odp::text::fuzz_parse(data);
});
