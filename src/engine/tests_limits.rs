//! Rate limits through the engine: keys, costs, shadow mode, headers, independence of keys.

use super::*;
use crate::codes::DenialCode;
use crate::store::MemoryStore;
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const T0: u64 = 1_795_395_723_000;

fn policy() -> Value {
    json!({
        "rate_limits": {
            "per-client": {"rate": 2, "per": "second", "burst": 3, "key": [{"header": "x-client"}]},
            "per-ip": {"rate": 1, "per": "minute", "burst": 2, "key": ["client_ip"], "slots": 1024},
            "global": {"rate": 100, "per": "second", "burst": 100, "key": [{"constant": "all"}]},
            "shadow": {"rate": 1, "per": "hour", "burst": 1, "key": ["route"], "shadow": true},
        },
        "rate_limit_options": {"trusted_hops": 1},
        "routes": [
            {"name": "search", "path": "/search", "public": true, "limits": ["per-client", "global"]},
            {"name": "export", "path": "/export", "public": true, "limits": [{"limit": "per-client", "cost": 3}]},
            {"name": "login", "path": "/login", "public": true, "limits": ["per-ip"]},
            {"name": "watched", "path": "/watched", "public": true, "limits": ["shadow"]},
        ],
    })
}

fn run(
    e: &Engine,
    s: &mut VmState,
    store: &MemoryStore,
    path: &str,
    headers: &[(&str, &str)],
    now_ms: u64,
) -> Outcome {
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    e.decide_at(
        &Request {
            method: "GET",
            path,
            headers: &h,
            peer: Some("10.0.0.9:4242"),
            connection: None,
        },
        now_ms,
        s,
        store,
    )
}

fn denied(o: &Outcome) -> bool {
    o.decision.denial_code() == Some(DenialCode::RateLimited)
}

#[wasm_bindgen_test(unsupported = test)]
fn burst_refill_and_independent_keys() {
    let e = Engine::compile(policy().to_string().as_bytes()).unwrap();
    let mut s = e.new_state();
    s.limit_secret = b"test-secret".to_vec();
    let store = MemoryStore::default();
    let a = [("x-client", "a")];
    let b = [("x-client", "b")];
    let allowed = (0..10)
        .filter(|_| !denied(&run(&e, &mut s, &store, "/search", &a, T0)))
        .count();
    assert_eq!(allowed, 3, "burst");
    assert!(
        !denied(&run(&e, &mut s, &store, "/search", &b, T0)),
        "another key has its own bucket"
    );
    assert!(
        !denied(&run(&e, &mut s, &store, "/search", &a, T0 + 500)),
        "2/s: one token after 500 ms"
    );
    assert!(denied(&run(&e, &mut s, &store, "/search", &a, T0 + 600)));
}

#[wasm_bindgen_test(unsupported = test)]
fn denial_headers_and_allowed_headers() {
    let e = Engine::compile(policy().to_string().as_bytes()).unwrap();
    let mut s = e.new_state();
    let store = MemoryStore::default();
    let h = [("x-client", "c")];
    let Decision::Allow(a) = run(&e, &mut s, &store, "/search", &h, T0).decision else {
        panic!()
    };
    assert_eq!(
        a.response_headers,
        vec![
            (
                "ratelimit-policy".to_string(),
                "\"per-client\";q=3;w=2, \"global\";q=100;w=1".to_string()
            ),
            (
                "ratelimit".to_string(),
                "\"per-client\";r=2;t=1".to_string()
            ),
        ]
    );
    run(&e, &mut s, &store, "/search", &h, T0);
    run(&e, &mut s, &store, "/search", &h, T0);
    let Decision::Deny(d) = run(&e, &mut s, &store, "/search", &h, T0).decision else {
        panic!()
    };
    assert_eq!(d.status, 429);
    let get = |k: &str| {
        d.headers
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("retry-after").as_deref(), Some("1"));
    assert_eq!(get("ratelimit").as_deref(), Some("\"per-client\";r=0;t=1"));
    assert_eq!(
        get("ratelimit-policy").as_deref(),
        Some("\"per-client\";q=3;w=2")
    );
    assert_eq!(
        get("content-type").as_deref(),
        Some("application/problem+json")
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn cost_client_ip_and_shadow() {
    let e = Engine::compile(policy().to_string().as_bytes()).unwrap();
    let mut s = e.new_state();
    let store = MemoryStore::default();
    let h = [("x-client", "d")];
    assert!(
        !denied(&run(&e, &mut s, &store, "/export", &h, T0)),
        "cost 3 = whole burst"
    );
    assert!(
        denied(&run(&e, &mut s, &store, "/export", &h, T0 + 1000)),
        "only 2 tokens back"
    );
    // client_ip with one trusted hop: the last x-forwarded-for entry, not the peer.
    let ip1 = [("x-forwarded-for", "203.0.113.7, 198.51.100.1")];
    let ip2 = [("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
    assert!(!denied(&run(&e, &mut s, &store, "/login", &ip1, T0)));
    assert!(!denied(&run(&e, &mut s, &store, "/login", &ip1, T0)));
    assert!(denied(&run(&e, &mut s, &store, "/login", &ip1, T0)));
    assert!(!denied(&run(&e, &mut s, &store, "/login", &ip2, T0)));
    // Shadow: never refuses, reports.
    assert!(run(&e, &mut s, &store, "/watched", &[], T0)
        .effects
        .shadow_limited
        .is_empty());
    let o = run(&e, &mut s, &store, "/watched", &[], T0);
    assert!(!denied(&o));
    assert_eq!(o.effects.shadow_limited, vec!["shadow".to_string()]);
}

#[wasm_bindgen_test(unsupported = test)]
fn identity_and_claims_key_authenticated_callers() {
    let mut p: Value = serde_json::from_str(include_str!("../../policies/orders.json")).unwrap();
    p["rate_limits"]["tight"] = json!({"rate": 1, "per": "hour", "burst": 1, "key": ["identity"]});
    p["routes"][2]["limits"] = json!(["tight"]);
    let e = Engine::compile(p.to_string().as_bytes()).unwrap();
    let mut s = e.new_state();
    let store = MemoryStore::default();
    let call = |s: &mut VmState, key: &str| {
        let h = vec![("x-api-key".to_string(), key.to_string())];
        e.decide_at(
            &Request {
                method: "GET",
                path: "/orders",
                headers: &h,
                peer: None,
                connection: None,
            },
            T0,
            s,
            &store,
        )
    };
    assert!(!denied(&call(&mut s, "demo-key-reporting-2026q1")));
    assert!(denied(&call(&mut s, "demo-key-reporting-2026q1")));
    assert!(
        !denied(&call(&mut s, "demo-key-reporting-2026q2")),
        "another identity"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn route_limit_errors() {
    let mut p = policy();
    p["routes"][0]["limits"] = json!(["nope", {"limit": "per-client", "cost": 4}]);
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(got[0].0, "routes[0].limits[0]");
    assert!(
        got[0]
            .1
            .starts_with("unknown limit `nope`; expected one of [`global`, `per-client`"),
        "{}",
        got[0].1
    );
    assert_eq!(
        got[1],
        (
            "routes[0].limits[1].cost",
            "4 is out of range; expected 1 to the limit's burst (3)"
        )
    );
}
