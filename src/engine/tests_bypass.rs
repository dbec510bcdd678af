//! Regression tables for the bypasses of issue 13 that the engine decides: host spellings and
//! repeated hosts, underscore spellings of protected headers, override headers, owner checks on
//! non-UTF-8 parameters, duplicate JSON keys and the `accept-encoding` a checked response needs.
//! Each case was a request that got past the policy before the fix.

use super::*;
use crate::codes::DenialCode;
use crate::policy::ConfigError;
use crate::testkit::{self, Mint};
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_795_395_723;

fn policy(extra: Value) -> Value {
    let mut p = json!({
        "providers": {"corp": {
            "issuer": testkit::ISSUER, "audiences": [testkit::AUDIENCE], "algorithms": ["RS256"],
            "jwks": {"keys": [testkit::public_jwk("rsa-1")]},
            "forward_claims": {"sub": "x-user-id"}
        }},
        "routes": [
            {"name": "admin", "prefix": "/", "host": "admin.example.test", "providers": ["corp"]},
            {"name": "public", "prefix": "/", "public": true},
            {"name": "user", "path": "/users/{id}", "providers": ["corp"], "owner": {"param": "id"}},
            {"name": "submit", "path": "/submit", "methods": ["POST"], "public": true,
             "request": {"body": {"type": "object", "properties": {"qty": {"type": "integer"}}}}},
            {"name": "profile", "path": "/profile", "public": true,
             "response": {"schemas": {"200": {"type": "object"}}, "mode": "redact"}},
        ],
    });
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

fn engine(extra: Value) -> Engine {
    Engine::compile(policy(extra).to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// The configuration errors of the policy with `extra`.
fn config_errors(extra: Value) -> Vec<ConfigError> {
    match Engine::compile(policy(extra).to_string().as_bytes()) {
        Ok(_) => panic!("the policy compiled"),
        Err(e) => e,
    }
}

fn run(e: &Engine, method: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.decide(
        &Request {
            method,
            path,
            headers: &headers,
            peer: None,
            connection: None,
        },
        NOW,
        &mut e.new_state(),
    )
}

/// `Ok(route)` or `Err(code)`.
fn verdict(o: &Outcome) -> Result<&str, DenialCode> {
    match &o.decision {
        Decision::Allow(a) => Ok(a.route.as_str()),
        Decision::Deny(d) | Decision::WouldDeny(d) => Err(d.code),
    }
}

fn allow(o: Outcome) -> Allow {
    match o.decision {
        Decision::Allow(a) => a,
        Decision::Deny(d) | Decision::WouldDeny(d) => panic!("refused: {:?}", d.code),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn host_spellings_reach_the_host_route() {
    let e = engine(json!({}));
    for host in [
        "admin.example.test",
        "admin.example.test.",
        "ADMIN.Example.Test",
        "admin.example.test:10000",
        "admin.example.test.:10000",
    ] {
        // The host route needs a token: without one, the request must not land on `public`.
        let o = run(&e, "GET", "/x", &[(":authority", host)]);
        assert_eq!(verdict(&o), Err(DenialCode::TokenMissing), "{host}");
    }
    let o = run(&e, "GET", "/x", &[(":authority", "api.example.test")]);
    assert_eq!(verdict(&o), Ok("public"));
}

#[wasm_bindgen_test(unsupported = test)]
fn ambiguous_hosts_are_refused() {
    let e = engine(json!({}));
    for headers in [
        // Two HTTP/1 `Host` headers, as Envoy joins them.
        vec![(":authority", "127.0.0.1,admin.example.test")],
        vec![
            (":authority", "127.0.0.1"),
            (":authority", "admin.example.test"),
        ],
        vec![(":authority", "127.0.0.1"), ("host", "admin.example.test")],
        vec![(":authority", "ａdmin.example.test")],
        vec![(":authority", "admin.example.test:x")],
    ] {
        let o = run(&e, "GET", "/x", &headers);
        assert_eq!(
            verdict(&o),
            Err(DenialCode::RequestAmbiguous),
            "{headers:?}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn underscore_spellings_of_protected_headers_are_removed() {
    let e = engine(json!({}));
    let a = allow(run(
        &e,
        "GET",
        "/x",
        &[
            (":authority", "api.example.test"),
            ("x_tollgate_principal", "jwt:corp:root"),
            ("x_user_id", "root"),
            ("X_Tollgate_Principal", "jwt:corp:root"),
            ("x-user_id", "root"),
            ("x_other", "kept"),
        ],
    ));
    for h in [
        "x-tollgate-principal",
        "x-user-id",
        "x_tollgate_principal",
        "x_user_id",
        "X_Tollgate_Principal",
        "x-user_id",
    ] {
        assert!(
            a.remove_headers.iter().any(|r| r == h),
            "{h} not removed: {:?}",
            a.remove_headers
        );
    }
    assert!(!a.remove_headers.iter().any(|r| r == "x_other"));
    // Also on the unknown-route path and in a dry run.
    let e = engine(json!({"default": {"action": "allow"}, "mode": "dry-run"}));
    let headers = [(":authority", "x"), ("x_user_id", "root")];
    let o = run(&e, "GET", "/users/a", &headers);
    assert!(matches!(o.decision, Decision::WouldDeny(_)), "{o:?}");
    // What the exchange removes from a request a dry run lets through.
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = Request {
        method: "GET",
        path: "/users/a",
        headers: &owned,
        peer: None,
        connection: None,
    };
    assert!(
        e.removed_headers(&req).iter().any(|r| r == "x_user_id"),
        "dry run"
    );
    let a = allow(run(&e, "GET", "/nowhere", &headers));
    assert!(
        a.remove_headers.iter().any(|r| r == "x_user_id"),
        "unknown route"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn override_headers_are_stripped_refused_or_allowed() {
    let headers = |name| vec![(":authority", "api.example.test"), (name, "DELETE")];
    let e = engine(json!({}));
    for name in headers::OVERRIDE_HEADERS {
        let a = allow(run(&e, "POST", "/x", &headers(name)));
        assert!(a.remove_headers.iter().any(|r| r == name), "{name}");
    }
    let a = allow(run(&e, "POST", "/x", &headers("x_http_method_override")));
    assert!(a
        .remove_headers
        .iter()
        .any(|r| r == "x_http_method_override"));
    let e = engine(json!({"requests": {"override_headers": "refuse"}}));
    for name in ["x-http-method-override", "x-original-url", "x_rewrite_url"] {
        let o = run(&e, "POST", "/x", &headers(name));
        assert_eq!(verdict(&o), Err(DenialCode::RequestAmbiguous), "{name}");
    }
    let e = engine(json!({"requests": {"override_headers": "allow"}}));
    let a = allow(run(&e, "POST", "/x", &headers("x-http-method-override")));
    assert!(!a
        .remove_headers
        .iter()
        .any(|r| r == "x-http-method-override"));
    let errors = config_errors(json!({"requests": {"override_headers": "drop"}}));
    assert_eq!(errors[0].path, "requests.override_headers");
}

#[wasm_bindgen_test(unsupported = test)]
fn owner_checks_compare_exact_text() {
    let e = engine(json!({}));
    let token = Mint::new(crate::jwt::Alg::RS256, "rsa-1")
        .now(NOW)
        .claim("sub", json!("x\u{fffd}"))
        .sign();
    let auth = format!("Bearer {token}");
    for path in ["/users/x%FF", "/users/x%FE", "/users/x%ff"] {
        let o = run(
            &e,
            "GET",
            path,
            &[(":authority", "api.example.test"), ("authorization", &auth)],
        );
        assert_eq!(verdict(&o), Err(DenialCode::PathInvalid), "{path}");
    }
    let o = run(
        &e,
        "GET",
        "/users/x%EF%BF%BD",
        &[(":authority", "api.example.test"), ("authorization", &auth)],
    );
    assert_eq!(verdict(&o), Ok("user"), "the real U+FFFD is that user");
}

#[wasm_bindgen_test(unsupported = test)]
fn duplicate_body_keys_are_refused_by_default() {
    let body = br#"{"qty": "bad", "qty": 1}"#;
    let e = engine(json!({}));
    let a = allow(run(
        &e,
        "POST",
        "/submit",
        &[(":authority", "a"), ("content-type", "application/json")],
    ));
    let rules = a.body_check.and_then(|c| c.rules).unwrap();
    assert_eq!(
        e.check_body(rules, "submit", body).unwrap_err().code,
        DenialCode::BodyMalformed
    );
    assert!(e.check_body(rules, "submit", br#"{"qty": 1}"#).is_ok());
    let e = engine(json!({"payload_options": {"duplicate_keys": "allow"}}));
    assert!(
        e.check_body(rules, "submit", body).is_ok(),
        "last value checked"
    );
    let errors = config_errors(json!({"payload_options": {"duplicate_keys": "first"}}));
    assert_eq!(errors[0].path, "payload_options.duplicate_keys");
}

#[wasm_bindgen_test(unsupported = test)]
fn checked_responses_are_asked_for_uncompressed() {
    let e = engine(json!({}));
    let a = allow(run(
        &e,
        "GET",
        "/profile",
        &[(":authority", "a"), ("accept-encoding", "gzip, br")],
    ));
    assert!(a.response_check.is_some());
    assert!(a.remove_headers.iter().any(|r| r == "accept-encoding"));
    let a = allow(run(
        &e,
        "GET",
        "/other",
        &[(":authority", "a"), ("accept-encoding", "gzip")],
    ));
    assert!(
        !a.remove_headers.iter().any(|r| r == "accept-encoding"),
        "unchecked routes keep compression"
    );
}
