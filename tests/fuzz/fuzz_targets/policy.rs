//! cargo-fuzz target `policy`: see `tollgate_fuzz::policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::policy(data));
