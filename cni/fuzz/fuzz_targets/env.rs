#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weave_cni::fuzz::fuzz_env(data));
