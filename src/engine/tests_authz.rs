//! Authorization decision tables over the example policy `policies/orders.json`: scopes, claim
//! conditions, owner (BOLA) checks, API keys, unknown routes and path-normalisation attacks.

use super::*;
use crate::codes::DenialCode;
use crate::testkit::Mint;
use serde_json::json;
use wasm_bindgen_test::wasm_bindgen_test;

const ORDERS: &str = include_str!("../../policies/orders.json");
/// 2026-11-23: inside the overlap of the two rotated reporting keys.
const NOW: u64 = 1_795_395_723;

fn engine() -> Engine {
    Engine::compile(ORDERS.as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
}

fn req(method: &'static str, path: &str) -> Req {
    Req {
        method,
        path: path.to_string(),
        headers: vec![(":authority".into(), "api.example".into())],
    }
}

impl Req {
    fn token(mut self, m: Mint) -> Req {
        self.headers
            .push(("authorization".into(), format!("Bearer {}", m.sign())));
        self
    }
    fn key(mut self, k: &str) -> Req {
        self.headers.push(("x-api-key".into(), k.into()));
        self
    }
    fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn run(&self, e: &Engine, s: &mut VmState) -> Outcome {
        e.decide(
            &Request {
                method: self.method,
                path: &self.path,
                headers: &self.headers,
                peer: None,
                connection: None,
            },
            NOW,
            s,
        )
    }
}

fn user(sub: &str, scope: &str) -> Mint {
    Mint::demo(NOW)
        .claim("sub", json!(sub))
        .claim("scope", json!(scope))
}

#[wasm_bindgen_test(unsupported = test)]
fn decision_table() {
    let e = engine();
    let mut s = e.new_state();
    use DenialCode::*;
    let cases: Vec<(&str, Req, Option<DenialCode>)> = vec![
        ("public health", req("GET", "/health"), None),
        ("public prefix", req("GET", "/public/catalog/1"), None),
        (
            "unknown route denied",
            req("GET", "/internal/debug"),
            Some(RouteNotFound),
        ),
        (
            "known path, unlisted method",
            req("PATCH", "/orders"),
            Some(RouteNotFound),
        ),
        // scopes
        (
            "read scope lists orders",
            req("GET", "/orders").token(user("alice", "orders:read")),
            None,
        ),
        (
            "no scope",
            req("GET", "/orders").token(user("alice", "profile")),
            Some(InsufficientScope),
        ),
        (
            "write needs orders:write",
            req("POST", "/orders").token(user("alice", "orders:read")),
            Some(InsufficientScope),
        ),
        (
            "write allowed",
            req("POST", "/orders")
                .header("content-type", "application/json")
                .token(user("alice", "orders:read orders:write")),
            None,
        ),
        (
            "any-of: admin reads an order",
            req("GET", "/orders/42").token(user("a", "orders:admin")),
            None,
        ),
        (
            "scp array claim",
            req("GET", "/orders/42").token(Mint::demo(NOW).claim("scp", json!(["orders:read"]))),
            None,
        ),
        (
            "permissions claim",
            req("GET", "/orders/42")
                .token(Mint::demo(NOW).claim("permissions", json!(["orders:read"]))),
            None,
        ),
        // claim conditions
        (
            "cancel needs role support",
            req("DELETE", "/orders/42").token(user("a", "orders:write")),
            Some(Forbidden),
        ),
        (
            "cancel with role",
            req("DELETE", "/orders/42")
                .token(user("a", "orders:write").claim("roles", json!(["support"]))),
            None,
        ),
        (
            "admin by role",
            req("GET", "/admin/stats")
                .token(user("a", "orders:admin").claim("roles", json!(["admin"]))),
            None,
        ),
        (
            "admin by group",
            req("GET", "/admin/stats")
                .token(user("a", "orders:admin").claim("groups", json!("ops"))),
            None,
        ),
        (
            "admin scope without role or group",
            req("GET", "/admin/stats").token(user("a", "orders:admin")),
            Some(Forbidden),
        ),
        (
            "admin role without scope",
            req("GET", "/admin/stats").token(user("a", "x").claim("roles", json!(["admin"]))),
            Some(InsufficientScope),
        ),
        // claim from header + owner on a path parameter
        (
            "tenant matches header and path",
            req("GET", "/tenants/t1/orders")
                .header("x-tenant-id", "t1")
                .token(user("a", "orders:read").claim("tenant", json!("t1"))),
            None,
        ),
        (
            "tenant header differs",
            req("GET", "/tenants/t1/orders")
                .header("x-tenant-id", "t2")
                .token(user("a", "orders:read").claim("tenant", json!("t1"))),
            Some(Forbidden),
        ),
        (
            "tenant header missing",
            req("GET", "/tenants/t1/orders")
                .token(user("a", "orders:read").claim("tenant", json!("t1"))),
            Some(Forbidden),
        ),
        (
            "other tenant in path",
            req("GET", "/tenants/t2/orders")
                .header("x-tenant-id", "t1")
                .token(user("a", "orders:read").claim("tenant", json!("t1"))),
            Some(Forbidden),
        ),
        // BOLA
        (
            "own profile",
            req("GET", "/users/alice").token(user("alice", "")),
            None,
        ),
        (
            "someone else's profile",
            req("GET", "/users/bob").token(user("alice", "")),
            Some(Forbidden),
        ),
        (
            "encoded own id",
            req("GET", "/users/al%69ce").token(user("alice", "")),
            None,
        ),
        (
            "admin override",
            req("PUT", "/users/bob").token(user("alice", "users:admin")),
            None,
        ),
        (
            "own key",
            req("DELETE", "/users/alice/keys/k1").token(user("alice", "")),
            None,
        ),
        (
            "other's key",
            req("DELETE", "/users/bob/keys/k1").token(user("alice", "")),
            Some(Forbidden),
        ),
        // API keys
        (
            "current key",
            req("GET", "/orders").key("demo-key-reporting-2026q1"),
            None,
        ),
        (
            "rotated key, overlap",
            req("GET", "/orders/7").key("demo-key-reporting-2026q2"),
            None,
        ),
        (
            "expired key",
            req("GET", "/orders").key("demo-key-legacy-import"),
            Some(ApiKeyInvalid),
        ),
        (
            "disabled key",
            req("GET", "/orders").key("demo-key-revoked-partner"),
            Some(ApiKeyInvalid),
        ),
        (
            "unknown key",
            req("GET", "/orders").key("guess"),
            Some(ApiKeyInvalid),
        ),
        (
            "key on a JWT-only route",
            req("POST", "/orders").key("demo-key-reporting-2026q1"),
            Some(TokenMissing),
        ),
        (
            "key and token together",
            req("GET", "/orders")
                .key("demo-key-reporting-2026q1")
                .token(user("a", "orders:read")),
            Some(MultipleTokens),
        ),
        (
            "no credentials on a mixed route",
            req("GET", "/orders"),
            Some(TokenMissing),
        ),
        // normalisation
        (
            "encoded admin",
            req("GET", "/%61dmin/stats").token(user("a", "orders:read")),
            Some(InsufficientScope),
        ),
        (
            "dot-dot into admin",
            req("GET", "/public/../admin/stats"),
            Some(TokenMissing),
        ),
        (
            "double slash",
            req("GET", "//admin//stats").token(user("a", "orders:read")),
            Some(InsufficientScope),
        ),
        (
            "encoded slash",
            req("GET", "/public%2F..%2Fadmin/stats"),
            Some(PathInvalid),
        ),
        (
            "climb above root",
            req("GET", "/../admin"),
            Some(PathInvalid),
        ),
        (
            "backslash",
            req("GET", "/public\\..\\admin"),
            Some(PathInvalid),
        ),
    ];
    for (note, r, want) in cases {
        assert_eq!(r.run(&e, &mut s).decision.denial_code(), want, "{note}");
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn insufficient_scope_challenge_names_missing_scopes_only() {
    let e = engine();
    let out = req("POST", "/orders")
        .token(user("a", "orders:read"))
        .run(&e, &mut e.new_state());
    let Decision::Deny(d) = out.decision else {
        panic!()
    };
    assert_eq!(d.status, 403);
    assert!(d.headers.contains(&(
        "www-authenticate",
        "Bearer realm=\"orders\", error=\"insufficient_scope\", scope=\"orders:write\"".into()
    )));
    // API-key callers get no Bearer challenge.
    let out = req("GET", "/admin/x")
        .key("demo-key-reporting-2026q1")
        .run(&e, &mut e.new_state());
    assert_eq!(
        out.decision.denial_code(),
        Some(DenialCode::TokenMissing),
        "admin does not take keys"
    );
    let mut p: serde_json::Value = serde_json::from_str(ORDERS).unwrap();
    p["routes"][2]["scopes"] = json!({"all": ["orders:export"]});
    let e = Engine::compile(p.to_string().as_bytes()).unwrap();
    let out = req("GET", "/orders")
        .key("demo-key-reporting-2026q1")
        .run(&e, &mut e.new_state());
    let Decision::Deny(d) = out.decision else {
        panic!()
    };
    assert_eq!(d.code, DenialCode::InsufficientScope);
    assert!(!d.headers.iter().any(|(k, _)| *k == "www-authenticate"));
}

#[wasm_bindgen_test(unsupported = test)]
fn identity_is_forwarded_and_not_forgeable() {
    let e = engine();
    let mut s = e.new_state();
    let out = req("GET", "/orders")
        .key("demo-key-reporting-2026q1")
        .header("x-tollgate-principal", "api_key:root")
        .run(&e, &mut s);
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert!(a
        .remove_headers
        .contains(&"x-tollgate-principal".to_string()));
    assert!(
        a.remove_headers.contains(&"x-api-key".to_string()),
        "the key never reaches the upstream"
    );
    assert!(a.set_headers.contains(&(
        "x-tollgate-principal".into(),
        "api_key:reporting-2026q1".into()
    )));
    let out = req("GET", "/users/alice")
        .token(user("alice", ""))
        .run(&e, &mut s);
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert!(a
        .set_headers
        .contains(&("x-tollgate-principal".into(), "jwt:corp:alice".into())));
    let out = req("GET", "/health")
        .header("x-tollgate-principal", "jwt:corp:root")
        .run(&e, &mut s);
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert!(a
        .remove_headers
        .contains(&"x-tollgate-principal".to_string()));
}

#[wasm_bindgen_test(unsupported = test)]
fn normalised_path_is_what_the_upstream_gets() {
    let e = engine();
    let out = req("GET", "/public/a/../b//c?x=1").run(&e, &mut e.new_state());
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert_eq!(
        a.set_headers,
        vec![(":path".to_string(), "/public/b/c?x=1".to_string())]
    );
    let out = req("GET", "/public/b?x=1").run(&e, &mut e.new_state());
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert!(a.set_headers.is_empty(), "already normal: untouched");
}

#[wasm_bindgen_test(unsupported = test)]
fn default_allow_lets_unknown_routes_through_marked() {
    let mut p: serde_json::Value = serde_json::from_str(ORDERS).unwrap();
    p["default"] = json!({"action": "allow"});
    let e = Engine::compile(p.to_string().as_bytes()).unwrap();
    let out = req("GET", "/internal/debug")
        .header("x-tollgate-principal", "forged")
        .run(&e, &mut e.new_state());
    let Decision::Allow(a) = out.decision else {
        panic!()
    };
    assert!(a.unknown_route);
    assert!(a
        .remove_headers
        .contains(&"x-tollgate-principal".to_string()));
    p["default"] = json!({"action": "maybe"});
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    assert_eq!(errors[0].path, "default.action");
}

#[wasm_bindgen_test(unsupported = test)]
fn config_errors_for_authorization() {
    let mut p: serde_json::Value = serde_json::from_str(ORDERS).unwrap();
    p["routes"][2]["scopes"] = json!({"all": ["bad scope"]});
    p["routes"][5]["claims"] = json!({"all": [{"claim": "roles", "equals": "a", "contains": "b"}]});
    p["routes"][7]["owner"] = json!({"param": "id"});
    p["api_keys"]["header"] = json!("authorization");
    p["providers"]["corp"]["sources"] = json!([{"header": "authorization"}]);
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "routes[2].scopes.all[0]",
        "routes[5].claims.all[0]",
        "routes[7].owner.param",
        "api_keys",
    ] {
        assert!(paths.contains(&want), "missing {want}: {errors:#?}");
    }
    let mut p: serde_json::Value = serde_json::from_str(ORDERS).unwrap();
    p.as_object_mut().unwrap().remove("api_keys");
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.path == "routes[2].api_keys"),
        "{errors:#?}"
    );
}
