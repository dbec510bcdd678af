//! cargo-fuzz target `jwks`: see `tollgate_fuzz::jwks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::jwks(data));
