//! Detection through the exchange: callers probing objects, credentials, endpoints and schemas
//! are counted where the outcome is known and refused by the gate once a detector blocks or
//! throttles them; others on the same route are not; dry-run only reports.

use super::exchange::{self, Body, Edit, HostError, Io, Level, Metric, Step};
use super::*;
use crate::codes::{Counter, DenialCode};
use crate::store::{MemoryStore, SharedStore};
use crate::testkit::{self, Mint};
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_795_395_723;

fn engine(detection: Value, mode: &str) -> Engine {
    let p = json!({
        "providers": {"corp": {
            "issuer": testkit::ISSUER, "audiences": [testkit::AUDIENCE], "algorithms": ["RS256"],
            "jwks": {"keys": [testkit::public_jwk("rsa-1")]}
        }},
        "rate_limit_options": {"trusted_hops": 1},
        "mode": mode,
        "detection": detection,
        "routes": [
            {"name": "profile", "path": "/users/{uid}", "providers": ["corp"],
             "owner": {"param": "uid", "claim": "sub"}},
            {"name": "notes", "path": "/notes", "methods": ["POST"], "providers": ["corp"],
             "request": {"body": {"type": "object", "required": ["text"]}}},
            {"name": "home", "path": "/home", "public": true, "detection": {"interactive": true}},
        ],
    });
    Engine::compile(p.to_string().as_bytes()).unwrap()
}

/// The host: keeps counters and log lines, hands out the request body and the shared data.
struct Host<'s> {
    store: &'s MemoryStore,
    body: Vec<u8>,
    counters: Vec<Counter>,
    logs: Vec<String>,
}

impl Io for Host<'_> {
    fn request_header(&mut self, _edit: Edit<'_>) -> Result<(), HostError> {
        Ok(())
    }
    fn response_header(&mut self, _edit: Edit<'_>) {}
    fn body(&mut self, _which: Body, size: usize) -> Option<Vec<u8>> {
        self.body.get(..size).map(<[u8]>::to_vec)
    }
    fn count(&mut self, metric: Metric<'_>) {
        if let Metric::Add(c, _) = metric {
            self.counters.push(c);
        }
    }
    fn log(&mut self, _level: Level, message: &str) {
        self.logs.push(message.to_string());
    }
    fn peer(&mut self) -> Option<String> {
        None
    }
    fn store(&self) -> Option<&dyn SharedStore> {
        Some(self.store)
    }
}

struct Proxy {
    e: Engine,
    state: VmState,
    store: MemoryStore,
    counters: Vec<Counter>,
    logs: Vec<String>,
}

/// What the client got: `Ok(())` when the request went upstream, else the refusal's code and
/// its `retry-after`.
type Got = Result<(), (DenialCode, Option<String>)>;

impl Proxy {
    fn new(e: Engine) -> Proxy {
        let mut state = e.new_state();
        state.limit_secret = b"secret".to_vec();
        Proxy {
            e,
            state,
            store: MemoryStore::default(),
            counters: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        ip: &str,
        sub: Option<&str>,
        body: Option<&str>,
        at_ms: u64,
    ) -> Got {
        let mut h = vec![("x-forwarded-for".to_string(), ip.to_string())];
        if let Some(s) = sub {
            let t = Mint::new(crate::jwt::Alg::RS256, "rsa-1")
                .now(NOW)
                .claim("sub", json!(s))
                .sign();
            h.push(("authorization".into(), format!("Bearer {t}")));
        }
        if body.is_some() {
            h.push(("content-type".into(), "application/json".into()));
        }
        let req = Request {
            method,
            path,
            headers: &h,
            peer: Some("127.0.0.1:5000"),
            connection: None,
        };
        let mut host = Host {
            store: &self.store,
            body: body.unwrap_or_default().as_bytes().to_vec(),
            counters: Vec::new(),
            logs: Vec::new(),
        };
        let mut ex = Exchange::new();
        let vm = exchange::Vm {
            state: &mut self.state,
            store: &self.store,
        };
        let mut step = ex.on_request_headers(&self.e, &req, body.is_none(), at_ms, vm, &mut host);
        if step == Step::Pause {
            let size = host.body.len();
            step = ex.on_request_body(&self.e, size, true, &mut host);
        }
        self.counters.append(&mut host.counters);
        self.logs.append(&mut host.logs);
        match step {
            Step::Reply(r) => Err((
                r.code,
                r.headers
                    .iter()
                    .find(|(k, _)| k == "retry-after")
                    .map(|(_, v)| v.clone()),
            )),
            _ => match ex.refusal() {
                Some((code, false)) => Err((code, Some("dry-run".into()))),
                _ => Ok(()),
            },
        }
    }

    fn get(&mut self, path: &str, ip: &str, sub: Option<&str>, at_ms: u64) -> Got {
        self.send("GET", path, ip, sub, None, at_ms)
    }

    fn count(&self, c: Counter) -> usize {
        self.counters.iter().filter(|x| **x == c).count()
    }
}

const T: u64 = NOW * 1000;

#[wasm_bindgen_test(unsupported = test)]
fn an_object_prober_is_blocked_and_a_normal_caller_on_the_route_is_not() {
    let mut p = Proxy::new(engine(
        json!({"object_probing": {"min_refusals": 5, "ratio": 0.5, "action": "block", "period_seconds": 120}}),
        "enforce",
    ));
    for i in 0..5 {
        let got = p.get(&format!("/users/u{i}"), "10.0.0.9", Some("mallory"), T + i);
        assert_eq!(got, Err((DenialCode::Forbidden, None)));
        assert_eq!(
            p.get("/users/alice", "10.0.0.8", Some("alice"), T + i),
            Ok(())
        );
        if i < 2 {
            // A normal caller's occasional refusal.
            let got = p.get("/users/u1", "10.0.0.8", Some("alice"), T + i);
            assert_eq!(got, Err((DenialCode::Forbidden, None)));
        }
    }
    // Blocked, on its own objects too, from any address: the caller is the principal.
    assert_eq!(
        p.get("/users/mallory", "10.9.9.9", Some("mallory"), T + 10),
        Err((DenialCode::CallerBlocked, Some("120".into())))
    );
    assert_eq!(
        p.get("/users/alice", "10.0.0.9", Some("alice"), T + 10),
        Ok(())
    );
    assert_eq!(p.count(Counter::DetectionObjectProbing), 1);
    assert_eq!(p.count(Counter::DetectionBlocks), 1);
    let line = p.logs.iter().find(|l| l.contains("detection")).unwrap();
    assert_eq!(
        line,
        "tollgate: detection `object_probing` caller=`p:jwt:corp:mallory` action=block for 120 s: 5 of 5 requests in the 60 s window refused"
    );
    assert!(!line.contains("eyJ"), "no token in the log");
    // The block lifts after its period.
    assert_eq!(
        p.get("/users/mallory", "10.0.0.9", Some("mallory"), T + 120_005),
        Ok(())
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn in_dry_run_detection_only_reports() {
    let mut p = Proxy::new(engine(
        json!({"object_probing": {"min_refusals": 3, "ratio": 0.5, "action": "block"}}),
        "dry-run",
    ));
    for i in 0..3 {
        let got = p.get(&format!("/users/u{i}"), "10.0.0.9", Some("mallory"), T + i);
        assert_eq!(got, Err((DenialCode::Forbidden, Some("dry-run".into()))));
    }
    assert_eq!(
        p.get("/users/mallory", "10.0.0.9", Some("mallory"), T + 10),
        Err((DenialCode::CallerBlocked, Some("dry-run".into())))
    );
    assert_eq!(p.count(Counter::DetectionObjectProbing), 1);
    assert_eq!(p.count(Counter::DetectionBlocks), 0);
}

#[wasm_bindgen_test(unsupported = test)]
fn credential_probing_blocks_the_address_before_authentication() {
    let mut p = Proxy::new(engine(
        json!({"credential_probing": {"min_refusals": 4, "ratio": 0.5, "action": "block", "period_seconds": 60}}),
        "enforce",
    ));
    for i in 0..4 {
        assert_eq!(
            p.get("/users/alice", "2001:db8::1", None, T + i),
            Err((DenialCode::TokenMissing, None))
        );
    }
    // Another address of the same /64, now with a valid token.
    assert_eq!(
        p.get("/users/alice", "2001:db8::2", Some("alice"), T + 5),
        Err((DenialCode::CallerBlocked, Some("60".into())))
    );
    assert_eq!(
        p.get("/users/alice", "2001:db9::1", Some("alice"), T + 5),
        Ok(())
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn enumeration_blocks_unknown_and_known_routes() {
    let mut p = Proxy::new(engine(
        json!({"enumeration": {"min_refusals": 3, "ratio": 0.5, "action": "block"}}),
        "enforce",
    ));
    for path in ["/admin", "/.env", "/backup.zip"] {
        assert_eq!(
            p.get(path, "10.0.0.7", None, T),
            Err((DenialCode::RouteNotFound, None))
        );
    }
    assert_eq!(
        p.get("/wp-login.php", "10.0.0.7", None, T).unwrap_err().0,
        DenialCode::CallerBlocked
    );
    assert_eq!(
        p.get("/home", "10.0.0.7", None, T).unwrap_err().0,
        DenialCode::CallerBlocked
    );
    assert_eq!(p.get("/home", "10.0.0.6", None, T), Ok(()));
}

#[wasm_bindgen_test(unsupported = test)]
fn body_schema_refusals_count_as_fuzzing_and_throttle() {
    let mut p = Proxy::new(engine(
        json!({
            "fuzzing": {"min_refusals": 3, "ratio": 0.5, "action": "throttle", "period_seconds": 60},
            "throttle": {"requests": 1, "per_seconds": 30}
        }),
        "enforce",
    ));
    for body in ["{}", "[1]", "\"x\""] {
        let got = p.send("POST", "/notes", "10.0.0.5", Some("fuzz"), Some(body), T);
        assert_eq!(got.unwrap_err().0, DenialCode::RequestInvalid, "{body}");
    }
    assert_eq!(p.count(Counter::DetectionFuzzing), 1);
    assert_eq!(p.count(Counter::DetectionThrottles), 1);
    let ok = "{\"text\": \"hi\"}";
    // The reduced bucket: one request, then 429 until the next one is due.
    assert_eq!(
        p.send("POST", "/notes", "10.0.0.5", Some("fuzz"), Some(ok), T + 1),
        Ok(())
    );
    assert_eq!(
        p.send("POST", "/notes", "10.0.0.5", Some("fuzz"), Some(ok), T + 2),
        Err((DenialCode::CallerThrottled, Some("30".into())))
    );
    assert_eq!(
        p.send("POST", "/notes", "10.0.0.4", Some("other"), Some(ok), T + 2),
        Ok(())
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn automated_client_signals_report_and_never_refuse() {
    let mut p = Proxy::new(engine(
        json!({"missing_headers": {"min_requests": 2}, "regular_cadence": {"requests": 5}}),
        "enforce",
    ));
    for i in 0..6 {
        assert_eq!(p.get("/home", "10.0.0.3", None, T + i * 1000), Ok(()));
    }
    assert_eq!(p.count(Counter::DetectionMissingHeaders), 1);
    assert_eq!(p.count(Counter::DetectionRegularCadence), 1);
    assert_eq!(
        p.count(Counter::DetectionBlocks) + p.count(Counter::DetectionThrottles),
        0
    );
}
