//! The engine's hot path, natively: nanoseconds per decision for the requests `make bench` sends
//! through Envoy (JWT only with a repeated token; the full pipeline with scope, rate limit and body
//! schema). Run by `make bench` (and under callgrind by `make profile`); ignored by `cargo test`.
//! The keys are the TEST-ONLY fixtures in tests/fixtures/keys.

// A benchmark harness: failing loudly on a broken fixture is what it should do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::time::Instant;
use tollgate::engine::{Decision, Engine, Request};
use tollgate::store::MemoryStore;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api.test";
const BODY: &[u8] = br#"{"item": "book-1234", "quantity": 2}"#;

fn jwk(kid: &str) -> Value {
    let text = include_str!("fixtures/keys/public.jwks.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .clone()
}

fn policy(full: bool) -> Value {
    let mut route = json!({"name": "orders-create", "path": "/orders", "methods": ["POST"], "providers": ["corp"]});
    let mut p = json!({
        "providers": {"corp": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256", "ES256"],
                               "jwks": {"keys": [jwk("rsa-1"), jwk("ec256")]}}},
        "routes": [],
    });
    if full {
        route["scopes"] = json!({"all": ["orders:write"]});
        route["limits"] = json!(["per-client"]);
        route["request"] = json!({"body": {
            "type": "object", "required": ["item", "quantity"], "additionalProperties": false,
            "properties": {"item": {"type": "string", "maxLength": 64},
                           "quantity": {"type": "integer", "minimum": 1, "maximum": 100}}}});
        p["rate_limits"] = json!({"per-client": {"rate": 1_000_000, "per": "second", "burst": 1_000_000, "key": ["identity"]}});
    }
    p["routes"] = json!([route]);
    p
}

fn token(alg: &str, now: u64) -> String {
    let claims = Claims::with_custom_claims(
        json!({"scope": "orders:read orders:write"}),
        Duration::from_secs(86_400),
    )
    .with_issuer(ISSUER)
    .with_audience(AUDIENCE)
    .with_subject("alice");
    let _ = now;
    match alg {
        "RS256" => RS256KeyPair::from_pem(include_str!("fixtures/keys/rsa-1.pem"))
            .unwrap()
            .with_key_id("rsa-1")
            .sign(claims)
            .unwrap(),
        _ => ES256KeyPair::from_pem(include_str!("fixtures/keys/ec256.pem"))
            .unwrap()
            .with_key_id("ec256")
            .sign(claims)
            .unwrap(),
    }
}

fn measure(name: &str, full: bool, alg: &str) {
    let engine = Engine::compile(policy(full).to_string().as_bytes()).unwrap();
    let mut state = engine.new_state();
    state.limit_secret = b"bench".to_vec();
    let store = MemoryStore::default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let t = token(alg, now_ms / 1000);
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/orders"),
        (":authority", "bench"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("content-length", "36"),
        ("user-agent", "wrk"),
        ("x-request-id", "4f6c2a56-0b1e-4d7e-9a55-3b2f0f1b9f10"),
        ("authorization", &format!("Bearer {t}")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let req = Request {
        method: "POST",
        path: "/orders",
        headers: &headers,
        peer: Some("127.0.0.1:40000"),
        connection: None,
    };
    let run = |state: &mut tollgate::engine::VmState| {
        let out = engine.decide_at(&req, now_ms, state, &store);
        let Decision::Allow(a) = out.decision else {
            panic!("{name}: denied: {:?}", out.decision)
        };
        if let Some(check) = a.body_check {
            engine
                .check_request_body(check, &a.route, a.content_digest.as_deref(), BODY)
                .unwrap();
        }
    };
    for _ in 0..1000 {
        run(&mut state);
    }
    let n = std::env::var("TOLLGATE_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000u32);
    let start = Instant::now();
    for _ in 0..n {
        run(&mut state);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("engine {name:24} {ns:8.0} ns/request");
}

#[test]
#[ignore = "a benchmark: make bench"]
fn hot_path() {
    let only = std::env::var("TOLLGATE_BENCH_ONLY").unwrap_or_default();
    for (name, full, alg) in [
        ("jwt-only-rs256", false, "RS256"),
        ("full-rs256", true, "RS256"),
        ("full-es256", true, "ES256"),
    ] {
        if only.is_empty() || only == name {
            measure(name, full, alg);
        }
    }
}
