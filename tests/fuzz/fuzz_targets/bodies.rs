//! cargo-fuzz target `bodies`: see `tollgate_fuzz::bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::bodies(data));
