//! Fuzzes every gob decoder of weave-gob (`cargo +nightly fuzz run decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weave_gob::fuzz_decode(data);
});
