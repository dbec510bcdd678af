//! `tollgate export openapi`, the built binary: every example policy exports to an OpenAPI 3.1
//! document that lists each of its routes, the same bytes every time; the fixture in
//! tests/fixtures/export/ exports to the document beside it; an invalid policy is refused.

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code too.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use serde_json::Value;
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

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example_policies() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".schema.json"))
        .map(|n| format!("policies/{n}"))
        .collect();
    assert!(!out.is_empty());
    out.sort();
    out
}

/// Where a policy's route is in the exported document: its operations (by `x-tollgate-route`,
/// checked against `operationId`), or whole in one of the top-level route arrays.
fn assert_route_exported(doc: &Value, route: &Value, index: usize, policy: &str) {
    let name = route["name"]
        .as_str()
        .map_or_else(|| format!("routes[{index}]"), String::from);
    let kept = |member: &str| {
        doc.get(member)
            .and_then(Value::as_array)
            .is_some_and(|a| a.contains(route))
    };
    let Some(path) = route["path"].as_str() else {
        assert!(
            kept("x-tollgate-prefix-routes"),
            "{policy}: prefix route `{name}`"
        );
        return;
    };
    if kept("x-tollgate-other-routes") {
        return;
    }
    let item = doc["paths"][path].as_object();
    assert!(
        item.is_some(),
        "{policy}: no path item `{path}` for route `{name}`"
    );
    let ops: Vec<(&String, &Value)> = item
        .unwrap()
        .iter()
        .filter(|(_, op)| op["x-tollgate-route"] == name.as_str())
        .collect();
    let methods: Vec<String> = match route["methods"].as_array() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|m| m.as_str().unwrap().to_ascii_lowercase())
            .collect(),
        _ => ["get", "put", "post", "delete", "patch", "head", "options"]
            .map(String::from)
            .to_vec(),
    };
    let mut got: Vec<&str> = ops.iter().map(|(m, _)| m.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = methods.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want, "{policy}: operations of route `{name}`");
    for (method, op) in ops {
        let id = if methods.len() == 1 {
            name.clone()
        } else {
            format!("{name}-{method}")
        };
        assert_eq!(op["operationId"], id.as_str(), "{policy}: `{name}`");
    }
}

#[test]
fn every_example_policy_exports_its_routes_the_same_every_time() {
    let dir = scratch_dir();
    for policy in example_policies() {
        let first = tollgate(&["export", "openapi", &policy]);
        assert!(first.status.success(), "{policy}: {}", stderr(&first));
        let doc: Value = serde_json::from_str(&stdout(&first)).unwrap();
        assert_eq!(doc["openapi"], "3.1.0", "{policy}");
        assert_eq!(doc["info"]["version"], "tollgate-export", "{policy}");
        let source: Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(&policy)).unwrap())
                .unwrap();
        for (i, route) in source["routes"].as_array().unwrap().iter().enumerate() {
            assert_route_exported(&doc, route, i, &policy);
        }
        let second = tollgate(&["export", "openapi", &policy]);
        assert_eq!(first.stdout, second.stdout, "{policy}: not byte-identical");
        assert_eq!(first.stderr, second.stderr, "{policy}");

        // `-o FILE` writes the same bytes and prints nothing on stdout.
        let file = dir.join(format!(
            "{}.openapi.json",
            Path::new(&policy).file_stem().unwrap().to_string_lossy()
        ));
        let o = tollgate(&["export", "openapi", &policy, "-o", file.to_str().unwrap()]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
        assert_eq!(std::fs::read(&file).unwrap(), first.stdout, "{policy}");
    }
}

#[test]
fn the_readme_command_writes_the_orders_inventory() {
    // policies/README.md, "Exporting the inventory".
    let dir = scratch_dir();
    let o = Command::new(BIN)
        .args([
            "export",
            "openapi",
            &format!("{ROOT}/policies/orders.json"),
            "-o",
            "orders.openapi.json",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "route `catalog` (prefix `/public/`) has no OpenAPI path: kept in `x-tollgate-prefix-routes`"
        ),
        "{err}"
    );
    assert!(err.contains("not exported (not per route; an import takes them from its overlay): api_keys (all but where keys are read: the keys), "), "{err}");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("orders.openapi.json")).unwrap())
            .unwrap();
    assert_eq!(doc["info"]["title"], "orders");
    let op = &doc["paths"]["/orders/{id}"]["get"];
    assert_eq!(op["operationId"], "get-order");
    assert_eq!(
        op["security"],
        serde_json::json!([{"corp": ["orders:admin"]}, {"corp": ["orders:read"]},
                           {"api_key": ["orders:admin"]}, {"api_key": ["orders:read"]}])
    );
    let text = std::fs::read_to_string(dir.join("orders.openapi.json")).unwrap();
    assert!(!text.contains("sha256"), "key hashes are not exported");
}

#[test]
fn the_fixture_exports_to_the_document_beside_it() {
    // To update after a deliberate change:
    // tollgate export openapi tests/fixtures/export/edge.json -o tests/fixtures/export/edge.openapi.json
    let o = tollgate(&["export", "openapi", "tests/fixtures/export/edge.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/export/edge.openapi.json"))
            .unwrap();
    assert_eq!(stdout(&o), want);
    assert_eq!(
        stderr(&o),
        "tollgate export: route `static` (prefix `/static/`) has no OpenAPI path: kept in `x-tollgate-prefix-routes`\n\
         tollgate export: route `item-legacy`: `GET /items/{sku}` is already another route's operation: kept in `x-tollgate-other-routes`\n\
         tollgate export: not exported (not per route; an import takes them from its overlay): api_keys (all but where keys are read: the keys), providers (all but each `issuer`), rate_limits\n"
    );
}

#[test]
fn an_invalid_policy_is_refused_with_checks_report() {
    let o = tollgate(&["export", "openapi", "tests/fixtures/export/invalid.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(err.contains("the policy is invalid"), "{err}");
    assert!(
        err.contains("tests/fixtures/export/invalid.json:3:77: routes[0].providers[0]: unknown provider `auth0`"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["export"][..],
        &["export", "openapi"],
        &["export", "swagger", "policies/demo.json"],
        &["export", "openapi", "policies/demo.json", "--json"],
    ] {
        let o = tollgate(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}
