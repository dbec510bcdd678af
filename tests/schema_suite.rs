//! The official JSON-Schema-Test-Suite (draft 2020-12 and draft 7) run through Tollgate's own
//! request-body path: each schema is compiled as a route's `request.body`, each instance is checked
//! as a request body. Fetched by `make test-schema-suite` (from the python-jsonschema sdist, which
//! carries the suite), never committed. Ignored by a plain `cargo test`.

// A test harness: panicking on a broken suite file is the right outcome.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use tollgate::payload::{Compiler, Options};
use tollgate::policy::RequestCheckDoc;

struct Tally {
    passed: usize,
    failed: Vec<String>,
    skipped: Vec<String>,
}

fn run_draft(dir: &Path, schema_uri: &str) -> Tally {
    let mut t = Tally {
        passed: 0,
        failed: vec![],
        skipped: vec![],
    };
    let schemas = BTreeMap::new();
    let options = Options::compile(None, &mut vec![]);
    let compiler = Compiler {
        schemas: &schemas,
        options: &options,
    };
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let groups: Vec<Value> = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        for group in groups {
            let desc = format!("{name}: {}", group["description"].as_str().unwrap_or(""));
            let mut schema = group["schema"].clone();
            if schema.to_string().contains("localhost:1234") || name == "refRemote" {
                t.skipped.push(format!(
                    "{desc} (remote $ref: Tollgate never resolves references over the network)"
                ));
                continue;
            }
            if let Value::Object(m) = &mut schema {
                m.entry("$schema").or_insert_with(|| json!(schema_uri));
            }
            let doc: RequestCheckDoc = serde_json::from_value(json!({ "body": schema })).unwrap();
            let mut errors = vec![];
            let rules = compiler.compile(&doc, &[], "suite", &mut errors);
            for case in group["tests"].as_array().unwrap() {
                let want = case["valid"].as_bool().unwrap();
                let data = serde_json::to_vec(&case["data"]).unwrap();
                let got = errors.is_empty() && rules.check_body(&options, &data).is_ok();
                if got == want && errors.is_empty() {
                    t.passed += 1;
                } else {
                    t.failed.push(format!(
                        "{desc} / {}",
                        case["description"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    t
}

#[test]
#[ignore = "needs the suite: run `make test-schema-suite`"]
fn official_json_schema_test_suite() {
    let root = std::env::var("TOLLGATE_SCHEMA_SUITE")
        .expect("TOLLGATE_SCHEMA_SUITE: the suite's `tests` directory (make test-schema-suite)");
    let mut report = serde_json::Map::new();
    for (draft, uri, floor) in [
        (
            "draft2020-12",
            "https://json-schema.org/draft/2020-12/schema",
            0.97,
        ),
        ("draft7", "http://json-schema.org/draft-07/schema#", 0.97),
    ] {
        let t = run_draft(&Path::new(&root).join(draft), uri);
        let total = t.passed + t.failed.len();
        let ratio = t.passed as f64 / total as f64;
        println!(
            "{draft}: {} of {total} passed ({:.1}%), {} groups skipped",
            t.passed,
            ratio * 100.0,
            t.skipped.len()
        );
        for s in &t.skipped {
            println!("  skipped: {s}");
        }
        for f in &t.failed {
            println!("  failed: {f}");
        }
        report.insert(
            draft.into(),
            json!({"passed": t.passed, "total": total, "failed": t.failed, "skipped": t.skipped}),
        );
        assert!(
            ratio >= floor,
            "{draft}: pass rate {ratio:.3} below {floor}"
        );
    }
    let out = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/schema-suite-report.json"
    );
    fs::write(
        out,
        serde_json::to_string_pretty(&Value::Object(report)).unwrap(),
    )
    .unwrap();
}
