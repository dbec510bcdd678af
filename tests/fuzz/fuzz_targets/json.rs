//! cargo-fuzz target `json`: see `tollgate_fuzz::json_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_fuzz::json_bodies(data));
