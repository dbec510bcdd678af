//! `tollgate import openapi` through the built binary: the example document and its overlay
//! (policies/openapi/) import into a policy `check` accepts, byte for byte the same each time;
//! what is not enforced goes to stderr with its place, and `--strict` refuses it.

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;
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

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-import-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

const SPEC: &str = "policies/openapi/petstore.yaml";
const OVERLAY: &str = "policies/openapi/petstore.overlay.yaml";

#[test]
fn the_example_imports_into_a_policy_check_accepts() {
    let out = scratch("petstore.json", "");
    let o = tollgate(&[
        "import",
        "openapi",
        SPEC,
        "--overlay",
        OVERLAY,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "nothing left unenforced: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let c = tollgate(&["check", out.to_str().unwrap()]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        text.contains("valid (4 routes, 1 provider, 1 rate limit)"),
        "{text}"
    );
    assert!(
        text.contains("route `health` has no authentication"),
        "{text}"
    );
    // Deterministic: the same bytes on stdout as in the file.
    let again = tollgate(&["import", "openapi", SPEC, "--overlay", OVERLAY]);
    assert_eq!(again.stdout, std::fs::read(&out).unwrap());
}

#[test]
fn the_imported_policy_decides_as_the_document_says() {
    let out = scratch("petstore-explain.json", "");
    let o = tollgate(&[
        "import",
        "openapi",
        SPEC,
        "--overlay",
        OVERLAY,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let policy = out.to_str().unwrap();
    let explain = |req: &str, extra: &[&str]| {
        let mut args = vec!["explain", policy, "--request", req, "--json"];
        args.extend_from_slice(extra);
        let o = tollgate(&args);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    let code = |v: &serde_json::Value| v["decision"]["code"].as_str().unwrap_or("").to_string();
    // Unknown routes are refused (deny by default), the public health check passes.
    assert_eq!(code(&explain("GET /v1/cats", &[])), "route_not_found");
    assert_eq!(
        explain("GET /v1/health", &[])["decision"]["decision"],
        "allow"
    );
    // No token on a protected route.
    assert_eq!(code(&explain("GET /v1/pets", &[])), "token_missing");
    // A query parameter outside its schema.
    let token = tollgate(&[
        "token",
        "--key",
        "envoy/demo/demo-signing-key.pem",
        "--alg",
        "ES256",
        "--kid",
        "demo-1",
        "--claim",
        "iss=https://demo.tollgate.local",
        "--claim",
        "aud=demo-api",
        "--claim",
        "sub=alice",
        "--claim",
        "scope=pets:read",
    ]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let bearer = format!(
        "authorization: Bearer {}",
        String::from_utf8_lossy(&token.stdout).trim()
    );
    assert_eq!(
        explain("GET /v1/pets?limit=5", &["-H", &bearer])["decision"]["decision"],
        "allow"
    );
    assert_eq!(
        code(&explain("GET /v1/pets?limit=500", &["-H", &bearer])),
        "request_invalid"
    );
    // Creating a pet needs `pets:write`, which this token lacks.
    assert_eq!(
        code(&explain(
            "POST /v1/pets",
            &[
                "-H",
                &bearer,
                "-H",
                "content-type: application/json",
                "--data",
                "{\"name\": \"rex\"}"
            ]
        )),
        "insufficient_scope"
    );
}

#[test]
fn unenforced_constructs_are_reported_and_strict_refuses_them() {
    let spec = scratch(
        "cookie.yaml",
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      security: []\n      parameters:\n        - {name: sid, in: cookie, schema: {type: string}}\n      responses: {'200': {description: ok}}\n",
    );
    let o = tollgate(&["import", "openapi", spec.to_str().unwrap()]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cookie.yaml#/paths/~1a/get/parameters/0: not enforced: cookie parameters are not checked"),
        "{err}"
    );
    let o = tollgate(&["import", "openapi", spec.to_str().unwrap(), "--strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--strict: 1 construct(s) not enforced"));
}

#[test]
fn usage_and_broken_documents() {
    let o = tollgate(&["import", "swagger", SPEC]);
    assert_eq!(o.status.code(), Some(2));
    let o = tollgate(&["import", "openapi"]);
    assert_eq!(o.status.code(), Some(2));
    let bad = scratch("bad.json", "{\"openapi\": \"3.0.0\", \"paths\": [}");
    let o = tollgate(&["import", "openapi", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.json:1:"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let overlay = scratch("overlay.yaml", "polcy: {}\n");
    let o = tollgate(&[
        "import",
        "openapi",
        SPEC,
        "--overlay",
        overlay.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field `polcy`"));
}

#[test]
fn import_export_import_gives_the_same_policy() {
    let first = scratch("round-1.json", "");
    let exported = scratch("round.openapi.json", "");
    let o = tollgate(&[
        "import",
        "openapi",
        SPEC,
        "--overlay",
        OVERLAY,
        "-o",
        first.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let o = tollgate(&[
        "export",
        "openapi",
        first.to_str().unwrap(),
        "-o",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = tollgate(&[
        "import",
        "openapi",
        exported.to_str().unwrap(),
        "--overlay",
        OVERLAY,
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        std::fs::read_to_string(&first).unwrap()
    );
}
