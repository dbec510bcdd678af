//! cargo-fuzz target `hosts`: see `tollgate_fuzz::hosts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::hosts(data));
