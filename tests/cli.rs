//! The built `tollgate` binary on the example policies and on broken ones: exit codes, and
//! problems reported at their line and column.

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tollgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Every policy in policies/ with its case file (`NAME.cases.yaml`), which every policy has.
fn example_policies() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("policies")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // policies/tollgate-policy.schema.json is the format's JSON Schema, not a policy.
        if name.ends_with(".schema.json") {
            continue;
        }
        if let Some(stem) = name.strip_suffix(".json") {
            let cases = format!("policies/{stem}.cases.yaml");
            assert!(
                Path::new(ROOT).join(&cases).exists(),
                "policies/{name} has no request cases ({cases})"
            );
            out.push((format!("policies/{name}"), cases));
        }
    }
    assert!(!out.is_empty());
    out.sort();
    out
}

#[test]
fn example_policies_check_and_pass_their_cases() {
    for (policy, cases) in example_policies() {
        let o = tollgate(&["check", &policy]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("{policy}: valid (")),
            "{}",
            text(&o)
        );
        let o = tollgate(&["test", &policy, &cases]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(" passed, 0 failed"), "{}", text(&o));
    }
}

#[test]
fn a_broken_policy_exits_1_with_line_and_column() {
    let path = scratch(
        "broken.json",
        r#"{
  "providers": {
    "corp": {"issuer": "https://idp", "audiences": ["api"], "algorithms": ["ES256", "none"],
             "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}}
  },
  "routes": [
    {"name": "a", "path": "/a", "methods": ["get"], "providers": ["corp"]},
    {"name": "b", "prefix": "/b/{id}", "providers": ["auth0"]}
  ]
}"#,
    );
    let p = path.to_str().unwrap();
    let o = tollgate(&["check", p]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    for want in [
        format!("{p}:3:85: providers.corp.algorithms[1]: `none` means unsigned tokens and is never accepted (found: \"none\")"),
        format!("{p}:7:45: routes[0].methods[0]: `get` is not a method; expected an uppercase token such as `GET` (found: \"get\")"),
        format!("{p}:8:29: routes[1].prefix: a prefix cannot hold `{{parameters}}`; use `path` for templates (found: \"/b/{{id}}\")"),
        format!("{p}:8:54: routes[1].providers[0]: unknown provider `auth0`; expected one of [`corp`] (found: \"auth0\")"),
    ] {
        assert!(out.contains(&want), "missing {want}\n{out}");
    }
    assert!(out.contains(&format!("{p}: invalid: ")), "{out}");

    let o = tollgate(&["check", "--json", p]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let methods = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "routes[0].methods[0]")
        .unwrap();
    assert_eq!(
        (methods["line"].as_u64(), methods["column"].as_u64()),
        (Some(7), Some(45))
    );
}

#[test]
fn a_broken_yaml_policy_is_placed_too() {
    let path = scratch(
        "broken.yaml",
        "routes:\n  - name: health\n    path: /health\n    public: true\n    scopes: {all: [\"a b\"]}\n  - name: health\n    prefix: /api/\n    public: true\n",
    );
    let p = path.to_str().unwrap();
    let o = tollgate(&["check", p]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains(&format!(
            "{p}:5:20: routes[0].scopes.all[0]: `a b` is not a scope token"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{p}:6:11: routes[1].name: `health` is already the name of routes[0]"
        )),
        "{out}"
    );
    // Structural errors stop parsing: one, at its key.
    let path = scratch(
        "typo.yaml",
        "routes:\n  - path: /x\n    public: yes-please\n",
    );
    let o = tollgate(&["check", path.to_str().unwrap()]);
    assert!(
        text(&o).contains(
            ":3:13: routes[0].public: invalid type: string \"yes-please\", expected a boolean"
        ),
        "{}",
        text(&o)
    );
}

#[test]
fn warnings_do_not_fail_unless_strict() {
    let o = tollgate(&["check", "policies/demo.json"]);
    assert!(o.status.success());
    assert!(text(&o).contains("warning: routes[0]: route `health` has no authentication"));
    let o = tollgate(&["check", "--strict", "policies/demo.json"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_failing_case_exits_1() {
    let cases = scratch(
        "wrong.cases.yaml",
        "cases:\n  - note: health needs no token\n    request: {path: /health}\n    want: {decision: deny, code: token_missing}\n",
    );
    let o = tollgate(&["test", "policies/demo.json", cases.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("0 passed, 1 failed"), "{}", text(&o));
    assert!(
        text(&o).contains("decision: want \"deny\", got \"allow\""),
        "{}",
        text(&o)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tollgate(&[]).status.code(), Some(2));
    assert_eq!(
        tollgate(&["explain", "policies/demo.json"]).status.code(),
        Some(2)
    );
    assert_eq!(tollgate(&["check", "--nope", "x"]).status.code(), Some(2));
}

#[test]
fn helpers_for_the_readme() {
    let o = tollgate(&["jwk", "envoy/demo/demo-signing-key.pem", "--kid", "demo-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let jwk: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("policies/demo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(jwk, policy["providers"]["demo"]["jwks"]["keys"][0]);

    let o = tollgate(&[
        "api-key",
        "--id",
        "reporting-batch",
        "--scopes",
        "orders:read",
        "--days",
        "90",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut lines = out.lines();
    let key = lines
        .next()
        .unwrap()
        .strip_prefix("key:         ")
        .unwrap()
        .to_string();
    let entry: serde_json::Value =
        serde_json::from_str(lines.next().unwrap().strip_prefix("policy line: ").unwrap()).unwrap();
    assert!(key.starts_with("tgk_"));
    assert_eq!(entry["id"], "reporting-batch");
    assert_eq!(entry["scopes"], serde_json::json!(["orders:read"]));
    assert!(entry["expires"].as_str().unwrap().ends_with('Z'));
    // The key and its line work: a policy with it accepts the key.
    let policy = scratch(
        "keyed.json",
        &serde_json::json!({"api_keys": {"keys": [entry]}, "routes": [{"name": "r", "path": "/r", "api_keys": true}]}).to_string(),
    );
    let header = format!("x-api-key: {key}");
    let o = tollgate(&[
        "explain",
        policy.to_str().unwrap(),
        "--request",
        "GET /r",
        "-H",
        &header,
        "--json",
    ]);
    let trace: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        trace["decision"]["principal"],
        "api_key:reporting-batch",
        "{}",
        text(&o)
    );

    let o = tollgate(&[
        "token",
        "--key",
        "envoy/demo/demo-signing-key.pem",
        "--kid",
        "demo-1",
        "--claim",
        "iss=https://demo.tollgate.local",
        "--claim",
        "aud=demo-api",
        "--claim",
        "sub=alice",
        "--claim",
        "scope=orders:read",
        "--ttl",
        "600",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8(o.stdout).unwrap();
    let header = format!("authorization: Bearer {}", token.trim());
    let o = tollgate(&[
        "explain",
        "policies/orders.json",
        "--request",
        "GET /orders/42",
        "-H",
        &header,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("ALLOW  route=get-order  principal=jwt:corp:alice"),
        "{}",
        text(&o)
    );
}

#[test]
fn render_prints_envoy_and_istio_configs() {
    let o = tollgate(&[
        "render",
        "envoy",
        "policies/orders.json",
        "--wasm",
        "/opt/tollgate.wasm",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("\nuse_remote_address: true\n"), "{out}");
    assert!(out.contains("\nhttp_filters:\n- name: tollgate\n"), "{out}");
    assert!(out.contains("filename: \"/opt/tollgate.wasm\""), "{out}");
    assert!(
        !out.contains("tollgate-policy.schema.json"),
        "`$schema` is for editors, not Envoy: {out}"
    );
    let o = tollgate(&[
        "render",
        "istio",
        "policies/demo.json",
        "--url",
        "oci://ghcr.io/acme/tollgate:1.0",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("kind: WasmPlugin\n"), "{out}");
    assert!(out.contains("  url: \"oci://ghcr.io/acme/tollgate:1.0\"\n  phase: AUTHN\n  failStrategy: FAIL_CLOSE\n  pluginConfig:\n"), "{out}");
    let o = tollgate(&[
        "render",
        "envoy-gateway",
        "policies/demo.json",
        "--url",
        "oci://ghcr.io/acme/tollgate:1.0",
        "--target-ref",
        "HTTPRoute/orders",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("kind: EnvoyExtensionPolicy\n"), "{out}");
    assert!(
        out.contains("    kind: HTTPRoute\n    name: orders\n"),
        "{out}"
    );
    assert!(out.contains("      type: Image\n      image:\n        url: \"ghcr.io/acme/tollgate:1.0\"\n    failOpen: false\n    config:\n"), "{out}");
    // A module over HTTP needs its checksum.
    let o = tollgate(&[
        "render",
        "envoy-gateway",
        "policies/demo.json",
        "--url",
        "https://m/t.wasm",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    // An invalid policy is never rendered.
    let bad = scratch("bad.json", r#"{"routes": []}"#);
    let o = tollgate(&["render", "envoy", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}
