//! `global` limits through the exchange: the descriptors a request sends (from verified facts
//! only), the pause while the rate-limit service answers, its answers and its failures.

use super::exchange::{Body, CallReply, Edit, HostError, Io, Level, Metric, State, Vm};
use super::*;
use crate::codes::{Counter, DenialCode};
use crate::jwt::Alg;
use crate::ratelimit::rls::{self, Answer, Code, Descriptor, Status, Unit};
use crate::store::MemoryStore;
use crate::testkit::{self, Mint};
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_800_000_000;

fn policy() -> Value {
    json!({
        "providers": {"main": {
            "issuer": testkit::ISSUER, "audiences": [testkit::AUDIENCE], "algorithms": ["ES256"],
            "jwks": {"keys": [testkit::public_jwk("ec256")]}}},
        "rate_limit_service": {"cluster": "ratelimit", "domain": "tollgate", "timeout_ms": 40,
                               "response_headers": ["X-RateLimit-Limit"]},
        "rate_limits": {
            "per-caller": {"rate": 100, "per": "minute", "burst": 100, "key": ["identity", {"claim": "tenant"}],
                           "backend": "global"},
            "shield": {"rate": 1, "per": "hour", "burst": 2, "key": ["identity"], "backend": "local+global"},
            "open": {"rate": 5, "per": "second", "burst": 5, "key": [{"header": "x-team"}], "backend": "global",
                     "on_service_failure": "allow"},
            "watch": {"rate": 1, "per": "hour", "burst": 1, "key": ["route"], "backend": "global", "shadow": true},
        },
        "routes": [
            {"name": "orders", "path": "/orders", "providers": ["main"], "limits": ["per-caller"]},
            {"name": "shielded", "path": "/shielded", "providers": ["main"], "limits": ["shield"]},
            {"name": "open", "path": "/open", "public": true, "limits": ["open"]},
            {"name": "watched", "path": "/watched", "public": true, "limits": ["watch"]},
            {"name": "upload", "path": "/upload", "methods": ["POST"], "public": true, "limits": ["open"],
             "request": {"body": {"type": "object", "required": ["a"]}}},
            {"name": "dry", "path": "/dry", "public": true, "mode": "dry-run", "limits": ["per-caller"]},
        ],
    })
}

#[derive(Default)]
struct Host {
    request: Vec<u8>,
    answer: Vec<u8>,
    metrics: Vec<String>,
    logs: Vec<(Level, String)>,
}

impl Io for Host {
    fn request_header(&mut self, _edit: Edit<'_>) -> Result<(), HostError> {
        Ok(())
    }
    fn response_header(&mut self, _edit: Edit<'_>) {}
    fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>> {
        let b = match which {
            Body::Request => &self.request,
            Body::GrpcResponse => &self.answer,
            Body::Response | Body::CallResponse => return None,
        };
        b.get(..size).map(<[u8]>::to_vec)
    }
    fn count(&mut self, metric: Metric<'_>) {
        self.metrics.push(format!("{metric:?}"));
    }
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
    fn peer(&mut self) -> Option<String> {
        None
    }
}

impl Host {
    fn counted(&self, c: Counter) -> usize {
        let name = format!("Add({c:?}, 1)");
        self.metrics.iter().filter(|m| **m == name).count()
    }
}

struct Run {
    engine: Engine,
    state: VmState,
    store: MemoryStore,
}

impl Run {
    fn new(policy: Value) -> Run {
        let engine = Engine::compile(policy.to_string().as_bytes()).unwrap();
        let state = engine.new_state();
        Run {
            engine,
            state,
            store: MemoryStore::default(),
        }
    }

    fn start(
        &mut self,
        ex: &mut Exchange,
        host: &mut Host,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: bool,
    ) -> Step {
        let mut h = vec![
            (":authority".to_string(), "api".to_string()),
            (":method".to_string(), method.to_string()),
            (":path".to_string(), path.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let req = Request {
            method,
            path,
            headers: &h,
            peer: Some("10.0.0.9:1234"),
            connection: None,
        };
        let vm = Vm {
            state: &mut self.state,
            store: &self.store,
        };
        ex.on_request_headers(&self.engine, &req, !body, NOW * 1000, vm, host)
    }

    /// The call of `ex` ended with `reply` at `now_ms`.
    fn reply(&mut self, ex: &mut Exchange, host: &mut Host, reply: CallReply, now_ms: u64) -> Step {
        let vm = Vm {
            state: &mut self.state,
            store: &self.store,
        };
        ex.on_call_reply(&self.engine, reply, now_ms, vm, host)
    }
}

fn token(tenant: &str) -> String {
    let t = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("tenant", json!(tenant))
        .sign();
    format!("Bearer {t}")
}

/// The descriptors of a request message, decoded the way a service reads them.
fn sent(step: &Step) -> (String, Vec<Descriptor>) {
    let Step::Call(call) = step else {
        panic!("no call: {step:?}")
    };
    assert_eq!(
        (call.cluster.as_str(), call.service, call.method),
        (
            "ratelimit",
            "envoy.service.ratelimit.v3.RateLimitService",
            "ShouldRateLimit"
        )
    );
    assert_eq!(call.timeout_ms, 40);
    decode_request(&call.message)
}

/// A minimal reader of `RateLimitRequest` (domain, descriptors), independent of the encoder.
fn decode_request(buf: &[u8]) -> (String, Vec<Descriptor>) {
    fn read_len(b: &[u8], at: &mut usize) -> usize {
        let mut n = 0;
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            n |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return n;
            }
        }
    }
    fn fields(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = vec![];
        let mut at = 0;
        while at < b.len() {
            let key = b[at];
            at += 1;
            if key & 7 == 0 {
                let v = read_len(b, &mut at);
                out.push((key >> 3, vec![v as u8]));
            } else {
                let n = read_len(b, &mut at);
                out.push((key >> 3, b[at..at + n].to_vec()));
                at += n;
            }
        }
        out
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let mut domain = String::new();
    let mut descriptors = vec![];
    for (f, v) in fields(buf) {
        match f {
            1 => domain = text(&v),
            2 => {
                let mut d = Descriptor {
                    entries: vec![],
                    limit: None,
                };
                for (f, v) in fields(&v) {
                    let inner = fields(&v);
                    match f {
                        1 => d.entries.push((text(&inner[0].1), text(&inner[1].1))),
                        2 => {
                            let unit = match inner[1].1[0] {
                                1 => Unit::Second,
                                2 => Unit::Minute,
                                _ => Unit::Hour,
                            };
                            d.limit = Some((u32::from(inner[0].1[0]), unit));
                        }
                        _ => panic!("field {f}"),
                    }
                }
                descriptors.push(d);
            }
            _ => {}
        }
    }
    (domain, descriptors)
}

fn answer(overall: Code, statuses: &[(Code, u32, u64)]) -> Vec<u8> {
    rls::encode_response(&Answer {
        overall,
        statuses: statuses
            .iter()
            .map(|(code, remaining, reset)| Status {
                code: *code,
                requests_per_unit: Some(100),
                limit_remaining: *remaining,
                reset_seconds: *reset,
            })
            .collect(),
        response_headers: vec![
            ("x-ratelimit-limit".into(), "100".into()),
            ("x-internal".into(), "secret".into()),
        ],
    })
}

fn reply_of(step: &Step) -> &exchange::Reply {
    match step {
        Step::Reply(r) => r,
        other => panic!("no reply: {other:?}"),
    }
}

fn header<'a>(r: &'a exchange::Reply, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[wasm_bindgen_test(unsupported = test)]
fn descriptors_carry_verified_facts_and_the_request_waits() {
    let mut run = Run::new(policy());
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let step = run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &token("acme"))],
        false,
    );
    let (domain, d) = sent(&step);
    assert_eq!(domain, "tollgate");
    assert_eq!(
        d,
        [Descriptor {
            entries: vec![
                ("tollgate_limit".into(), "per-caller".into()),
                ("identity".into(), "jwt:main:alice".into()),
                ("claim.tenant".into(), "acme".into()),
            ],
            limit: Some((100, Unit::Minute)),
        }]
    );
    assert_eq!(ex.state(), State::Calling);
    assert_eq!(host.counted(Counter::RatelimitServiceCalls), 1);
    assert!(!host.metrics.iter().any(|m| m.starts_with("Allowed")));

    host.answer = answer(Code::Ok, &[(Code::Ok, 41, 30)]);
    let size = host.answer.len();
    let step = run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    assert_eq!(step, Step::Continue);
    assert_eq!(ex.state(), State::Forwarded);
    assert!(host.metrics.iter().any(|m| m.starts_with("Allowed")));
    // A late second reply changes nothing.
    assert_eq!(
        run.reply(&mut ex, &mut host, CallReply::NotSent, NOW * 1000),
        Step::Pause
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_forged_token_never_reaches_the_service() {
    let mut run = Run::new(policy());
    let forged = testkit::tamper_payload(
        token("acme").trim_start_matches("Bearer "),
        json!({"sub": "mallory", "tenant": "victim"}),
    );
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let step = run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &format!("Bearer {forged}"))],
        false,
    );
    assert_eq!(reply_of(&step).code, DenialCode::SignatureInvalid);
    assert_eq!(host.counted(Counter::RatelimitServiceCalls), 0);
    // Without any token, no descriptor either.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let step = run.start(&mut ex, &mut host, "GET", "/orders", &[], false);
    assert_eq!(reply_of(&step).code, DenialCode::TokenMissing);
}

#[wasm_bindgen_test(unsupported = test)]
fn over_limit_is_a_429_with_the_services_reset() {
    let mut run = Run::new(policy());
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &token("acme"))],
        false,
    );
    host.answer = answer(Code::OverLimit, &[(Code::OverLimit, 0, 17)]);
    let size = host.answer.len();
    let step = run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    let r = reply_of(&step);
    assert_eq!((r.status, r.code), (429, DenialCode::RateLimited));
    assert_eq!(header(r, "retry-after"), Some("17"));
    assert_eq!(header(r, "ratelimit"), Some("\"per-caller\";r=0;t=17"));
    assert_eq!(
        header(r, "ratelimit-policy"),
        Some("\"per-caller\";q=100;w=60")
    );
    // The service's headers pass only when the policy lists them.
    assert_eq!(header(r, "x-ratelimit-limit"), Some("100"));
    assert_eq!(header(r, "x-internal"), None);
    assert_eq!(host.counted(Counter::RatelimitServiceOverLimit), 1);
    assert_eq!(ex.refusal(), Some((DenialCode::RateLimited, true)));
}

#[wasm_bindgen_test(unsupported = test)]
fn failures_do_what_the_limit_says() {
    let mut run = Run::new(policy());
    let failures = [
        (
            CallReply::Failed { grpc_status: 4 },
            Counter::RatelimitServiceTimeout,
        ),
        (
            CallReply::Failed { grpc_status: 14 },
            Counter::RatelimitServiceError,
        ),
        (CallReply::NotSent, Counter::RatelimitServiceError),
        (
            CallReply::Answered { size: 4 },
            Counter::RatelimitServiceMalformed,
        ),
    ];
    for (reply, counter) in failures {
        // `per-caller` takes the service's default: deny.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.answer = vec![0xff; 4];
        run.start(
            &mut ex,
            &mut host,
            "GET",
            "/orders",
            &[("authorization", &token("acme"))],
            false,
        );
        let step = run.reply(&mut ex, &mut host, reply, NOW * 1000);
        let r = reply_of(&step);
        assert_eq!(
            (r.status, r.code),
            (503, DenialCode::RateLimitUnavailable),
            "{reply:?}"
        );
        assert_eq!(header(r, "retry-after"), Some("1"));
        assert_eq!(host.counted(counter), 1, "{reply:?}");
        assert!(host
            .logs
            .iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("rate-limit service failed")));
        // `open` says allow: the request goes on, counted.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.answer = vec![0xff; 4];
        run.start(
            &mut ex,
            &mut host,
            "GET",
            "/open",
            &[("x-team", "a")],
            false,
        );
        assert_eq!(
            run.reply(&mut ex, &mut host, reply, NOW * 1000),
            Step::Continue
        );
        assert_eq!(host.counted(Counter::RatelimitServiceFailedOpen), 1);
        assert_eq!(host.counted(counter), 1);
    }
    // Envoy reports a call that ran out of time as UNAVAILABLE: past `timeout_ms` it is a
    // timeout.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &token("acme"))],
        false,
    );
    // 36 of 40 ms: Envoy's timer fires a little early by the host clock.
    let late = NOW * 1000 + 36;
    run.reply(
        &mut ex,
        &mut host,
        CallReply::Failed { grpc_status: 14 },
        late,
    );
    assert_eq!(host.counted(Counter::RatelimitServiceTimeout), 1);
    assert!(host.logs.iter().any(|(_, m)| m.contains("(timeout)")));
    // An answer that says neither yes nor no is a failure too.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &token("acme"))],
        false,
    );
    host.answer = answer(Code::Unknown, &[]);
    let size = host.answer.len();
    let step = run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    assert_eq!(reply_of(&step).code, DenialCode::RateLimitUnavailable);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_local_bucket_shields_the_service() {
    let mut run = Run::new(policy());
    let auth = token("acme");
    let mut calls = 0;
    for i in 0..5 {
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        let step = run.start(
            &mut ex,
            &mut host,
            "GET",
            "/shielded",
            &[("authorization", &auth)],
            false,
        );
        if i < 2 {
            // Within the local burst: the service is asked.
            sent(&step);
            calls += host.counted(Counter::RatelimitServiceCalls);
        } else {
            let r = reply_of(&step);
            assert_eq!(r.code, DenialCode::RateLimited, "request {i}");
            assert_eq!(host.counted(Counter::RatelimitServiceCalls), 0);
        }
    }
    assert_eq!(calls, 2);
}

#[wasm_bindgen_test(unsupported = test)]
fn the_tighter_budget_is_announced() {
    let mut run = Run::new(policy());
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(
        &mut ex,
        &mut host,
        "GET",
        "/shielded",
        &[("authorization", &token("acme"))],
        false,
    );
    // Local bucket: 1 of 2 left; the service has 0 of its budget left: its figure is shown.
    host.answer = answer(Code::Ok, &[(Code::Ok, 0, 1200)]);
    let size = host.answer.len();
    run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    let mut down = Host::default();
    let headers = vec![(":status".to_string(), "200".to_string())];
    struct Edits(Vec<String>, Host);
    impl Io for Edits {
        fn request_header(&mut self, e: Edit<'_>) -> Result<(), HostError> {
            self.1.request_header(e)
        }
        fn response_header(&mut self, edit: Edit<'_>) {
            self.0.push(format!("{edit:?}"));
        }
        fn body(&mut self, w: Body, s: usize) -> Option<Vec<u8>> {
            self.1.body(w, s)
        }
        fn count(&mut self, m: Metric<'_>) {
            self.1.count(m)
        }
        fn log(&mut self, l: Level, m: &str) {
            self.1.log(l, m)
        }
        fn peer(&mut self) -> Option<String> {
            None
        }
    }
    let mut edits = Edits(vec![], std::mem::take(&mut down));
    ex.on_response_headers(&run.engine, &headers, true, &mut edits);
    assert!(
        edits
            .0
            .contains(&"Add(\"ratelimit\", \"\\\"shield\\\";r=0;t=1200\")".to_string()),
        "{:?}",
        edits.0
    );
    assert!(
        edits
            .0
            .iter()
            .any(|e| e.contains("x-ratelimit-limit") && e.contains("100")),
        "{:?}",
        edits.0
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_body_arriving_during_the_call_is_held_then_judged() {
    let mut run = Run::new(policy());
    for (body, refused) in [(&br#"{"a": 1}"#[..], false), (&br#"{"b": 1}"#[..], true)] {
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.request = body.to_vec();
        let step = run.start(
            &mut ex,
            &mut host,
            "POST",
            "/upload",
            &[("x-team", "a")],
            true,
        );
        sent(&step);
        assert_eq!(
            ex.on_request_body(&run.engine, 3, false, &mut host),
            Step::Pause
        );
        assert_eq!(
            ex.on_request_body(&run.engine, body.len(), true, &mut host),
            Step::Pause,
            "nothing goes on before the service answers"
        );
        host.answer = answer(Code::Ok, &[(Code::Ok, 3, 1)]);
        let size = host.answer.len();
        let step = run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
        if refused {
            assert_eq!(reply_of(&step).code, DenialCode::RequestInvalid);
        } else {
            assert_eq!(step, Step::Continue);
        }
    }
    // The body still arriving when the answer comes: judged as it completes.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    host.request = br#"{"a": 1}"#.to_vec();
    run.start(
        &mut ex,
        &mut host,
        "POST",
        "/upload",
        &[("x-team", "a")],
        true,
    );
    host.answer = answer(Code::Ok, &[(Code::Ok, 3, 1)]);
    let size = host.answer.len();
    assert_eq!(
        run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000),
        Step::Pause
    );
    assert!(matches!(ex.state(), State::RequestBody { .. }));
    assert_eq!(
        ex.on_request_body(&run.engine, 8, true, &mut host),
        Step::Continue
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn dry_run_and_shadow_report_without_refusing() {
    let mut run = Run::new(policy());
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(&mut ex, &mut host, "GET", "/dry", &[], false);
    host.answer = answer(Code::OverLimit, &[(Code::OverLimit, 0, 5)]);
    let size = host.answer.len();
    assert_eq!(
        run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000),
        Step::Continue
    );
    assert_eq!(ex.refusal(), Some((DenialCode::RateLimited, false)));

    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let (_, d) = sent(&run.start(&mut ex, &mut host, "GET", "/watched", &[], false));
    assert_eq!(
        d[0].entries[1],
        ("route".to_string(), "watched".to_string())
    );
    host.answer = answer(Code::OverLimit, &[(Code::OverLimit, 0, 5)]);
    let size = host.answer.len();
    assert_eq!(
        run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000),
        Step::Continue
    );
    assert_eq!(host.counted(Counter::RatelimitShadowLimited), 1);
    assert_eq!(ex.refusal(), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn configuration_is_checked() {
    let refused = |change: &dyn Fn(&mut Value)| -> Vec<String> {
        let mut p = policy();
        change(&mut p);
        match Engine::compile(p.to_string().as_bytes()) {
            Ok(_) => panic!("accepted"),
            Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
        }
    };
    let e = refused(&|p| {
        p.as_object_mut().unwrap().remove("rate_limit_service");
    });
    assert!(
        e.iter()
            .any(|m| m.contains("rate_limits.per-caller.backend")
                && m.contains("needs `rate_limit_service`")),
        "{e:?}"
    );
    let e = refused(&|p| {
        p["rate_limit_service"] =
            json!({"cluster": "", "domain": "", "timeout_ms": 0, "on_failure": "maybe"})
    });
    for field in ["cluster", "domain", "timeout_ms", "on_failure"] {
        assert!(
            e.iter()
                .any(|m| m.contains(&format!("rate_limit_service.{field}"))),
            "{field}: {e:?}"
        );
    }
    let e = refused(&|p| p["rate_limits"]["per-caller"]["backend"] = json!("remote"));
    assert!(
        e.iter().any(|m| m.contains("`remote` is not a backend")),
        "{e:?}"
    );
    let e = refused(&|p| {
        p["rate_limits"]["local"] = json!({"rate": 1, "per": "second", "burst": 1,
            "key": ["route"], "on_service_failure": "allow"})
    });
    assert!(
        e.iter()
            .any(|m| m.contains("rate_limits.local.on_service_failure")),
        "{e:?}"
    );
    let e = refused(&|p| {
        p["routes"][2]["limits"] = json!(["open", {"limit": "per-caller", "cost": 2}])
    });
    assert!(
        e.iter()
            .any(|m| m.contains("routes[2].limits") && m.contains("same cost")),
        "{e:?}"
    );
    // Global-only policies keep no local buckets.
    let mut p = policy();
    p["rate_limits"].as_object_mut().unwrap().remove("shield");
    p["routes"].as_array_mut().unwrap().remove(1);
    assert!(!Engine::compile(p.to_string().as_bytes())
        .unwrap()
        .uses_slots());
}

#[wasm_bindgen_test(unsupported = test)]
fn brute_force_failures_count_across_proxies() {
    let mut p = policy();
    p["brute_force"] = json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 30,
                              "global": true});
    let mut run = Run::new(p.clone());
    let forged = testkit::tamper_payload(
        token("acme").trim_start_matches("Bearer "),
        json!({"sub": "mallory"}),
    );
    let bad = format!("Bearer {forged}");
    // The refusal waits for the service, which counts the failure.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let step = run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &bad)],
        false,
    );
    let (_, d) = sent(&step);
    assert_eq!(
        d,
        [Descriptor {
            entries: vec![
                ("tollgate_brute_force".into(), "failures".into()),
                ("client".into(), "ip:10.0.0.9".into()),
            ],
            // Over from the third failure on.
            limit: Some((2, Unit::Minute)),
        }]
    );
    host.answer = answer(Code::Ok, &[(Code::Ok, 1, 60)]);
    let size = host.answer.len();
    let step = run.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    assert_eq!(reply_of(&step).code, DenialCode::SignatureInvalid);
    // A service that fails does not change the refusal.
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    run.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &bad)],
        false,
    );
    let step = run.reply(&mut ex, &mut host, CallReply::NotSent, NOW * 1000);
    assert_eq!(reply_of(&step).code, DenialCode::SignatureInvalid);
    assert_eq!(host.counted(Counter::RatelimitServiceError), 1);

    // Another proxy (a fresh store) sees its first failure of this client, but the service has
    // counted the others: it blocks too.
    let mut other = Run::new(p);
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    other.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &bad)],
        false,
    );
    host.answer = answer(Code::OverLimit, &[(Code::OverLimit, 0, 40)]);
    let size = host.answer.len();
    let step = other.reply(&mut ex, &mut host, CallReply::Answered { size }, NOW * 1000);
    assert_eq!(reply_of(&step).code, DenialCode::SignatureInvalid);
    assert_eq!(host.counted(Counter::BruteForceBlocks), 1);
    let (mut ex, mut host) = (Exchange::new(), Host::default());
    let step = other.start(
        &mut ex,
        &mut host,
        "GET",
        "/orders",
        &[("authorization", &token("acme"))],
        false,
    );
    let r = reply_of(&step);
    assert_eq!(r.code, DenialCode::ClientBlocked);
    assert_eq!(header(r, "retry-after"), Some("30"));

    // `global` needs the service and a window the service counts in.
    let mut p = policy();
    p["brute_force"] = json!({"max_failures": 3, "window_seconds": 90, "block_seconds": 30,
                              "global": true});
    let e = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.to_string().contains("brute_force.window_seconds")),
        "{e:?}"
    );
    p["brute_force"]["window_seconds"] = json!(60);
    p.as_object_mut().unwrap().remove("rate_limit_service");
    for l in p["rate_limits"].as_object_mut().unwrap().values_mut() {
        l["backend"] = json!("local");
        l.as_object_mut().unwrap().remove("on_service_failure");
    }
    let e = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    assert!(
        e.iter()
            .any(|e| e.to_string().contains("brute_force.global")),
        "{e:?}"
    );
}
