//! `tollgate discover` (the built binary) on an Envoy log with audit lines
//! (tests/fixtures/discover/envoy.log): endpoints grouped and templated, the lines a policy now
//! matches left out, drafts that `tollgate check` accepts once their authentication is chosen,
//! and its errors.

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const LOG: &str = "tests/fixtures/discover/envoy.log";
const POLICY: &str = "tests/fixtures/discover/policy.json";

fn tollgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-discover-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn discover_json(args: &[&str]) -> Value {
    let mut all = vec!["discover"];
    all.extend_from_slice(args);
    all.push("--json");
    let o = tollgate(&all);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `(method, template, count)` of each endpoint, in the order printed.
fn rows(v: &Value) -> Vec<(String, String, u64)> {
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["template"].as_str().unwrap().to_string(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(method: &str, template: &str, count: u64) -> (String, String, u64) {
    (method.into(), template.into(), count)
}

#[test]
fn groups_unmatched_requests_into_endpoints() {
    let v = discover_json(&[LOG]);
    assert_eq!(
        (
            &v["audit_lines"],
            &v["broken_lines"],
            &v["unmatched"],
            &v["already_matched"]
        ),
        (&json!(7), &json!(1), &json!(5), &json!(0))
    );
    assert_eq!(
        rows(&v),
        [
            row("GET", "/v2/users/{id}", 3),
            row("POST", "/internal/jobs/{id}", 1),
            row("GET", "/v2/users/{id}/orders", 1),
        ]
    );
    let users = &v["endpoints"][0];
    // Lines out of order in the log: first and last by their `time`.
    assert_eq!(users["first_seen"], "2026-03-01T10:01:00.000Z");
    assert_eq!(users["last_seen"], "2026-03-01T10:05:00.000Z");
    // Raw paths as sent; the grouping used the normalised ones.
    assert_eq!(
        users["examples"],
        json!([
            "/v2/users/456",
            "/v2//users/./123",
            "/v2/users/3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
        ])
    );
    assert_eq!(
        users["route"],
        json!({"name": "get-v2-users-id", "path": "/v2/users/{id}", "methods": ["GET"],
               "providers": ["CHANGE-ME"]})
    );

    // People get the same, and are told to edit the placeholder.
    let o = tollgate(&["discover", LOG]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.starts_with(
            "5 requests outside the policy, 3 endpoints (7 audit lines; 1 unreadable line skipped)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\nGET /v2/users/{id}\n  requests    3\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"  draft route {"name":"get-v2-users-id","path":"/v2/users/{id}","methods":["GET"],"providers":["CHANGE-ME"]}"#),
        "{text}"
    );
    assert!(text.contains("replace `CHANGE-ME`"), "{text}");
}

#[test]
fn with_a_policy_drafts_use_its_providers_and_skip_what_it_matches() {
    let v = discover_json(&[LOG, "--policy", POLICY]);
    assert_eq!(v["already_matched"], 1, "{v}");
    assert_eq!(
        rows(&v),
        [
            row("GET", "/v2/users/{id}", 3),
            row("POST", "/internal/jobs/{id}", 1),
        ]
    );
    // The example in policies/README.md ("Discovering shadow APIs") is this very output.
    let o = tollgate(&["discover", LOG, "--policy", POLICY]);
    let readme = std::fs::read_to_string(format!("{ROOT}/policies/README.md")).unwrap();
    assert!(
        readme.contains(&format!("```text\n{}```", stdout(&o))),
        "policies/README.md, Discovering shadow APIs: update the example to\n{}",
        stdout(&o)
    );
    // Pasted into the policy, every draft passes `tollgate check`.
    let mut policy: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/{POLICY}")).unwrap())
            .unwrap();
    for e in v["endpoints"].as_array().unwrap() {
        assert_eq!(e["route"]["providers"], json!(["corp", "partner"]));
        policy["routes"]
            .as_array_mut()
            .unwrap()
            .push(e["route"].clone());
    }
    let pasted = scratch("pasted.json", &policy.to_string());
    let o = tollgate(&["check", pasted.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    // ... and then no request of the log is left outside it.
    let v = discover_json(&[LOG, "--policy", pasted.to_str().unwrap()]);
    assert_eq!((&v["already_matched"], rows(&v).len()), (&json!(5), 0));
    let o = tollgate(&["discover", LOG, "--policy", pasted.to_str().unwrap()]);
    assert_eq!(
        stdout(&o),
        "no requests outside the policy (7 audit lines; 1 unreadable line skipped; 5 requests the policy now matches left out)\n"
    );
}

#[test]
fn several_files_nothing_to_report_and_errors() {
    // Two files add up.
    let v = discover_json(&[LOG, LOG]);
    assert_eq!(rows(&v)[0], row("GET", "/v2/users/{id}", 6));
    // A log without unmatched requests says so and succeeds.
    let quiet = scratch(
        "quiet.log",
        "[info] starting\n[info][wasm] wasm log tollgate: tollgate.audit {\"time\":\"2026-03-01T10:00:00.000Z\",\"method\":\"GET\",\"route\":\"health\",\"path\":\"/health\",\"decision\":\"allow\",\"reason\":null,\"reason_category\":null}\n",
    );
    let o = tollgate(&["discover", quiet.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "no requests outside the policy (1 audit line)\n"
    );
    // An unreadable file: exit 1, named.
    let o = tollgate(&["discover", LOG, "tests/fixtures/discover/missing.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.log"),
        "{o:?}"
    );
    // No file: a usage error.
    assert_eq!(tollgate(&["discover"]).status.code(), Some(2));
    assert_eq!(
        tollgate(&["discover", LOG, "--bogus"]).status.code(),
        Some(2)
    );
}
