//! cargo-fuzz target `paths`: see `tollgate_fuzz::paths`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::paths(data));
