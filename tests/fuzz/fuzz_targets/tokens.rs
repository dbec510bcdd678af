//! cargo-fuzz target `tokens`: see `tollgate_fuzz::tokens`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::tokens(data));
