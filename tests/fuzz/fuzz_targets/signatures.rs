//! cargo-fuzz target `signatures`: see `tollgate_fuzz::signatures`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::signatures(data));
