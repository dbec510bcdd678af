//! Every example policy in `policies/` compiles in the engine (the end-to-end suite also loads
//! each one into a real Envoy).

use std::fs;
use tollgate::engine::Engine;

#[test]
fn every_example_policy_compiles() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let mut seen = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // tollgate-policy.schema.json is the format's JSON Schema, not a policy.
        if path.extension().and_then(|e| e.to_str()) != Some("json")
            || path.to_string_lossy().ends_with(".schema.json")
        {
            continue;
        }
        let bytes = fs::read(&path).unwrap();
        if let Err(errors) = Engine::compile(&bytes) {
            panic!("{}: {errors:#?}", path.display());
        }
        seen += 1;
    }
    assert!(seen > 0, "no policies found in {dir}");
}
