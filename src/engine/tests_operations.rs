//! Operating features through the engine: dry-run (global and per route), IP lists, brute-force
//! blocks, API lifecycle, and their configuration errors.

use super::*;
use crate::codes::DenialCode;
use crate::store::MemoryStore;
use crate::testkit::{self, Mint};
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_795_395_723;

fn policy(extra: Value) -> Value {
    let mut p = json!({
        "providers": {"corp": {
            "issuer": testkit::ISSUER, "audiences": [testkit::AUDIENCE], "algorithms": ["RS256"],
            "jwks": {"keys": [testkit::public_jwk("rsa-1")]}
        }},
        "rate_limit_options": {"trusted_hops": 1},
        "routes": [
            {"name": "items", "path": "/items", "providers": ["corp"]},
            {"name": "trial", "path": "/trial", "providers": ["corp"], "mode": "dry-run"},
            {"name": "strict", "path": "/strict", "providers": ["corp"], "mode": "enforce"},
            {"name": "internal", "prefix": "/internal/", "public": true, "ip_access": {"allow": ["10.0.0.0/8"]}},
            {"name": "v1", "prefix": "/v1/", "public": true, "lifecycle": {
                "deprecated": "2026-01-01T00:00:00Z", "sunset": "2027-01-01T00:00:00Z", "successor": "/v2/"}},
            {"name": "v0", "prefix": "/v0/", "public": true, "lifecycle": {"retired": true}},
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
    Engine::compile(policy(extra).to_string().as_bytes()).unwrap()
}

struct Client<'a> {
    e: &'a Engine,
    s: VmState,
    store: MemoryStore,
}

impl<'a> Client<'a> {
    fn new(e: &'a Engine) -> Client<'a> {
        let mut s = e.new_state();
        s.limit_secret = b"secret".to_vec();
        Client {
            e,
            s,
            store: MemoryStore::default(),
        }
    }

    fn run(&mut self, path: &str, ip: &str, token: Option<&str>, now: u64) -> Outcome {
        let mut h = vec![("x-forwarded-for".to_string(), ip.to_string())];
        if let Some(t) = token {
            h.push(("authorization".into(), format!("Bearer {t}")));
        }
        self.e.decide_at(
            &Request {
                method: "GET",
                path,
                headers: &h,
                peer: Some("127.0.0.1:5000"),
                connection: None,
            },
            now * 1000,
            &mut self.s,
            &self.store,
        )
    }
}

fn allow(o: &Outcome) -> &Allow {
    match &o.decision {
        Decision::Allow(a) => a,
        Decision::Deny(d) | Decision::WouldDeny(d) => panic!("denied: {:?}", d.code),
    }
}

/// A dry run's refusal (the exchange lets it through, tests_exchange checks how).
fn would_deny(o: &Outcome) -> &Denial {
    match &o.decision {
        Decision::WouldDeny(d) => d,
        other => panic!("not a dry-run refusal: {other:?}"),
    }
}

fn token() -> String {
    Mint::new(Alg::RS256, "rsa-1").now(NOW).sign()
}

#[wasm_bindgen_test(unsupported = test)]
fn dry_run_route_passes_what_it_would_deny() {
    let e = engine(json!({}));
    let mut c = Client::new(&e);
    let o = c.run("/trial", "192.0.2.1", None, NOW);
    let d = would_deny(&o);
    assert_eq!(d.code, DenialCode::TokenMissing);
    assert_eq!(d.route.as_deref(), Some("trial"));
    let o = c.run("/trial", "192.0.2.1", Some(&token()), NOW);
    assert_eq!(allow(&o).mode, Mode::DryRun);
    assert_eq!(
        c.run("/items", "192.0.2.1", None, NOW)
            .decision
            .denial_code(),
        Some(DenialCode::TokenMissing)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn global_dry_run_with_header_and_route_override() {
    let e = engine(json!({"mode": "dry-run", "dry_run_header": "X-Dry-Run"}));
    let mut c = Client::new(&e);
    for (path, ip, code) in [
        ("/items", "192.0.2.1", DenialCode::TokenMissing),
        ("/nowhere", "192.0.2.1", DenialCode::RouteNotFound),
        ("/internal/x", "192.0.2.1", DenialCode::IpDenied),
        ("/v0/x", "192.0.2.1", DenialCode::RouteRetired),
        ("/a/../../x", "192.0.2.1", DenialCode::PathInvalid),
    ] {
        let o = c.run(path, ip, None, NOW);
        assert_eq!(would_deny(&o).code, code, "{path}");
    }
    assert!(
        e.removed_headers(&crate::engine::Request {
            method: "GET",
            path: "/",
            headers: &[],
            peer: None,
            connection: None,
        })
        .contains(&"x-dry-run".to_string()),
        "clients cannot forge the dry-run header"
    );
    assert_eq!(
        c.run("/strict", "192.0.2.1", None, NOW)
            .decision
            .denial_code(),
        Some(DenialCode::TokenMissing),
        "a route in enforce mode overrides a global dry run"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn ip_lists_global_and_per_route() {
    let e = engine(json!({"ip_access": {"deny": ["198.51.100.0/24"]}}));
    let mut c = Client::new(&e);
    let t = token();
    assert_eq!(
        c.run("/items", "198.51.100.9", Some(&t), NOW)
            .decision
            .denial_code(),
        Some(DenialCode::IpDenied)
    );
    assert_eq!(
        c.run("/nowhere", "198.51.100.9", None, NOW)
            .decision
            .denial_code(),
        Some(DenialCode::IpDenied),
        "the global list is checked before routes"
    );
    assert_eq!(
        c.run("/items", "192.0.2.1", Some(&t), NOW)
            .decision
            .denial_code(),
        None
    );
    assert_eq!(
        c.run("/internal/a", "192.0.2.1", None, NOW)
            .decision
            .denial_code(),
        Some(DenialCode::IpDenied)
    );
    assert_eq!(
        c.run("/internal/a", "10.9.9.9", None, NOW)
            .decision
            .denial_code(),
        None
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn brute_force_blocks_then_expires() {
    let e = engine(
        json!({"brute_force": {"max_failures": 3, "window_seconds": 60, "block_seconds": 30}}),
    );
    let mut c = Client::new(&e);
    let good = token();
    let bad = Mint::new(Alg::RS256, "rsa-1").key("rsa-2").now(NOW).sign();
    for _ in 0..2 {
        let o = c.run("/items", "203.0.113.1", Some(&bad), NOW);
        assert_eq!(o.decision.denial_code(), Some(DenialCode::SignatureInvalid));
        assert!(!o.effects.block_started);
    }
    // Missing credentials are not attempts.
    for _ in 0..5 {
        c.run("/items", "203.0.113.1", None, NOW);
    }
    let o = c.run("/items", "203.0.113.1", Some(&bad), NOW);
    assert!(o.effects.block_started);
    let o = c.run("/items", "203.0.113.1", Some(&good), NOW + 1);
    let Decision::Deny(d) = &o.decision else {
        panic!("not blocked")
    };
    assert_eq!((d.code, d.status), (DenialCode::ClientBlocked, 429));
    assert!(d.headers.contains(&("retry-after", "29".to_string())));
    assert_eq!(
        c.run("/items", "203.0.113.2", Some(&good), NOW + 1)
            .decision
            .denial_code(),
        None,
        "another client is not blocked"
    );
    assert_eq!(
        c.run("/v1/x", "203.0.113.1", None, NOW + 1)
            .decision
            .denial_code(),
        None,
        "public routes are not blocked"
    );
    assert_eq!(
        c.run("/items", "203.0.113.1", Some(&good), NOW + 31)
            .decision
            .denial_code(),
        None,
        "the block expires"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn lifecycle_headers_and_retirement() {
    let e = engine(json!({}));
    let mut c = Client::new(&e);
    let o = c.run("/v1/orders", "192.0.2.1", None, NOW);
    let a = allow(&o);
    assert!(a
        .response_headers
        .contains(&("deprecation".to_string(), "@1767225600".to_string())));
    assert!(a.response_headers.contains(&(
        "sunset".to_string(),
        "Fri, 01 Jan 2027 00:00:00 GMT".to_string()
    )));
    assert!(o.effects.deprecated);
    // After the sunset the route is retired.
    let o = c.run("/v1/orders", "192.0.2.1", None, 1_798_761_600);
    let Decision::Deny(d) = &o.decision else {
        panic!("served after sunset")
    };
    assert_eq!((d.code, d.status), (DenialCode::RouteRetired, 410));
    assert!(d
        .headers
        .contains(&("link", "</v2/>; rel=\"successor-version\"".to_string())));
    assert_eq!(
        c.run("/v0/a", "192.0.2.1", None, NOW)
            .decision
            .denial_code(),
        Some(DenialCode::RouteRetired)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn configuration_errors_name_fields() {
    let errs = Engine::compile(
        policy(json!({
            "mode": "audit",
            "dry_run_header": "authorization",
            "audit": {"level": "loud"},
            "responses": {"remove_headers": ["content-length"]},
            "ip_access": {"allow": ["10.0.0.1/8"]},
            "brute_force": {"max_failures": 0, "window_seconds": 60, "block_seconds": 60}
        }))
        .to_string()
        .as_bytes(),
    )
    .unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "mode",
        "dry_run_header",
        "audit.level",
        "responses.remove_headers[0]",
        "ip_access.allow[0]",
        "brute_force.max_failures",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    let mut p = policy(json!({}));
    p["routes"][0]["mode"] = json!("shadow");
    p["routes"][1]["lifecycle"] = json!({"sunset": "someday"});
    let errs = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["routes[0].mode", "routes[1].lifecycle.sunset"]);
}

/// A host that only keeps the log lines; enough to see an exchange's audit line.
#[derive(Default)]
struct AuditHost {
    logs: Vec<String>,
}

impl exchange::Io for AuditHost {
    fn request_header(&mut self, _edit: exchange::Edit<'_>) -> Result<(), exchange::HostError> {
        Ok(())
    }
    fn response_header(&mut self, _edit: exchange::Edit<'_>) {}
    fn body(&mut self, _which: exchange::Body, _size: usize) -> Option<Vec<u8>> {
        None
    }
    fn count(&mut self, _metric: exchange::Metric<'_>) {}
    fn log(&mut self, _level: exchange::Level, message: &str) {
        self.logs.push(message.to_string());
    }
    fn peer(&mut self) -> Option<String> {
        None
    }
}

/// The audit line of one GET through the exchange (answered 200 when it goes upstream), as JSON;
/// `None` when no line is written.
fn audit_line(e: &Engine, path: &str) -> Option<Value> {
    let mut c = Client::new(e);
    let (mut ex, mut host) = (Exchange::new(), AuditHost::default());
    let h = vec![
        ("x-request-id".to_string(), "req-1".to_string()),
        ("x-forwarded-for".to_string(), "10.1.2.3".to_string()),
    ];
    let req = Request {
        method: "GET",
        path,
        headers: &h,
        peer: Some("127.0.0.1:5000"),
        connection: None,
    };
    let vm = exchange::Vm {
        state: &mut c.s,
        store: &c.store,
    };
    if ex.on_request_headers(e, &req, true, NOW * 1000, vm, &mut host) == Step::Continue {
        let status = vec![(":status".to_string(), "200".to_string())];
        ex.on_response_headers(e, &status, true, &mut host);
    }
    let (_, line) = ex.on_done(e, &mut host)?;
    serde_json::from_str(line.strip_prefix("tollgate.audit ")?).ok()
}

#[wasm_bindgen_test(unsupported = test)]
fn unmatched_requests_carry_their_normalized_path() {
    // Refused by deny-by-default: the path as sent, and the one routes were matched against;
    // the query string (here a token) is in neither.
    let e = engine(json!({}));
    let v = audit_line(&e, "/v2//users/./%31%32?access_token=secret").unwrap();
    assert_eq!(v["reason"], "route_not_found");
    assert_eq!(v["reason_category"], "unknown_route");
    assert_eq!(v["path"], "/v2//users/./%31%32");
    assert_eq!(v["normalized_path"], "/v2/users/12");
    assert!(!v.to_string().contains("secret"), "{v}");
    // A matched request (even one refused later) has no such field.
    let v = audit_line(&e, "/items").unwrap();
    assert_eq!(v["reason"], "token_missing");
    assert!(v.get("normalized_path").is_none(), "{v}");
    // A path that cannot be normalised is refused before any route is looked up.
    let v = audit_line(&e, "/a/%2F/b").unwrap();
    assert_eq!(v["reason"], "path_invalid");
    assert!(v.get("normalized_path").is_none(), "{v}");
    // Cut like `path`.
    let long = format!("/x/{}", "a".repeat(700));
    let v = audit_line(&e, &long).unwrap();
    let cut = v["normalized_path"].as_str().unwrap();
    assert_eq!(cut.len(), audit::MAX_LOGGED_PATH);
    assert!(long.starts_with(cut));
}

#[wasm_bindgen_test(unsupported = test)]
fn unmatched_requests_are_audited_even_when_allowed_and_unsampled() {
    // `default.action: allow` and a sample rate of 0: routine allowed traffic is not written,
    // a request outside the policy always is.
    let e = engine(json!({
        "default": {"action": "allow"},
        "audit": {"sample_allowed": 0.0},
    }));
    let v = audit_line(&e, "/v2/users/7/../8/").unwrap();
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["normalized_path"], "/v2/users/8/");
    assert_eq!(audit_line(&e, "/internal/x"), None, "sampled out");
    // A dry-run policy reports the refusal it did not carry out, with the path too.
    let e = engine(json!({"mode": "dry-run"}));
    let v = audit_line(&e, "/v2/users/9").unwrap();
    assert_eq!(v["decision"], "would_deny");
    assert_eq!(v["reason"], "route_not_found");
    assert_eq!(v["normalized_path"], "/v2/users/9");
}
