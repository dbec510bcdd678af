//! One request through the engine's exchange, as the filter runs it in Envoy (the same state
//! machine: headers, body, response headers, audit line). Shared by `explain` and `test`.

use crate::codes::{metrics, Counter, DenialCode};
use crate::engine::exchange::{Body, CallReply, Edit, HostError, Io, Level, Metric, Reply};
use crate::engine::exchange::{State, Vm};
use crate::engine::{Diagnostics, Engine, Exchange, Mode, Request, Step, VmState};
use crate::jwt::jwks::KeySet;
use crate::jwt::remote::Installed;
use crate::ratelimit::rls;
use crate::store::MemoryStore;
use serde_json::{json, Value};
use std::rc::Rc;

/// The peer address Envoy reports when none is given (loopback, as in the end-to-end tests).
pub const DEFAULT_PEER: &str = "127.0.0.1:40000";
/// `:authority` when no `host` header is given.
pub const DEFAULT_AUTHORITY: &str = "localhost";

/// A request as the user describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    pub method: String,
    /// `:path`, query included, exactly as sent.
    pub path: String,
    /// Names as given; lowercased when the request is built, as Envoy's header maps are.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub peer: Option<String>,
    /// The connection's TLS state and client certificate; `None`: plaintext.
    pub connection: Option<crate::engine::Connection>,
    /// What the upstream answers if the request reaches it; `None`: a `200` without a body is
    /// assumed and only its headers are judged.
    pub response: Option<Upstream>,
    /// What the rate-limit service answers, for routes with `global` limits (no network).
    pub rate_limit_service: ServiceAnswer,
}

/// The connection a request arrives on, as Envoy would report it: `version` (`TLSv1.3`), and a
/// client certificate when any of its identities is given (TLS 1.3 unless `version` says
/// otherwise). Nothing given: plaintext (`None`).
pub fn connection(
    version: Option<&str>,
    uri_san: Option<&str>,
    dns_san: Option<&str>,
    subject: Option<&str>,
) -> Option<crate::engine::Connection> {
    let peer_certificate = uri_san.is_some() || dns_san.is_some() || subject.is_some();
    if version.is_none() && !peer_certificate {
        return None;
    }
    Some(crate::engine::Connection {
        tls_version: Some(version.unwrap_or("TLSv1.3").to_string()),
        peer_certificate,
        uri_san: uri_san.map(String::from),
        dns_san: dns_san.map(String::from),
        subject: subject.map(String::from),
    })
}

/// The rate-limit service's answer in a simulated exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// Every descriptor is within its limit.
    #[default]
    Ok,
    /// Every descriptor is over its limit (reset after one period).
    OverLimit,
    /// No answer within `timeout_ms`.
    Timeout,
    /// Unreachable (gRPC `UNAVAILABLE`).
    Unavailable,
    /// Bytes that are not a rate-limit response.
    Malformed,
}

impl ServiceAnswer {
    pub const NAMES: [&'static str; 5] =
        ["ok", "over_limit", "timeout", "unavailable", "malformed"];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAnswer::Ok => "ok",
            ServiceAnswer::OverLimit => "over_limit",
            ServiceAnswer::Timeout => "timeout",
            ServiceAnswer::Unavailable => "unavailable",
            ServiceAnswer::Malformed => "malformed",
        }
    }

    pub fn parse(text: &str) -> Result<ServiceAnswer, String> {
        Ok(match text {
            "ok" => ServiceAnswer::Ok,
            "over_limit" => ServiceAnswer::OverLimit,
            "timeout" => ServiceAnswer::Timeout,
            "unavailable" => ServiceAnswer::Unavailable,
            "malformed" => ServiceAnswer::Malformed,
            other => {
                return Err(format!(
                    "`{other}` is not an answer of the rate-limit service; expected one of [{}]",
                    ServiceAnswer::NAMES
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        })
    }

    /// How the call ends, and the message bytes of an answer, for `descriptors`.
    fn reply(self, descriptors: &[rls::Descriptor]) -> (CallReply, Vec<u8>) {
        let answer = |code| rls::Answer {
            overall: code,
            statuses: descriptors
                .iter()
                .map(|d| rls::Status {
                    code,
                    requests_per_unit: None,
                    limit_remaining: 0,
                    reset_seconds: d.limit.map_or(60, |(_, unit)| unit.seconds()),
                })
                .collect(),
            response_headers: vec![],
        };
        let message = match self {
            ServiceAnswer::Ok => rls::encode_response(&answer(rls::Code::Ok)),
            ServiceAnswer::OverLimit => rls::encode_response(&answer(rls::Code::OverLimit)),
            ServiceAnswer::Malformed => vec![0xff; 4],
            ServiceAnswer::Timeout => {
                return (
                    CallReply::Failed {
                        grpc_status: rls::GRPC_DEADLINE_EXCEEDED,
                    },
                    vec![],
                )
            }
            ServiceAnswer::Unavailable => return (CallReply::Failed { grpc_status: 14 }, vec![]),
        };
        (
            CallReply::Answered {
                size: message.len(),
            },
            message,
        )
    }
}

/// The upstream's response, as the user describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub status: u16,
    /// Names as given; lowercased when the response is built, as Envoy's header maps are.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Upstream {
    /// The header list the filter sees: `:status` first, names lowercase, and `content-length`
    /// for the body unless given, as Envoy's HTTP/1 codec hands an upstream response on.
    pub fn envoy_headers(&self) -> Vec<(String, String)> {
        let mut out = vec![(":status".to_string(), self.status.to_string())];
        for (k, v) in &self.headers {
            let k = k.to_ascii_lowercase();
            if !k.starts_with(':') {
                out.push((k, v.clone()));
            }
        }
        if !out.iter().any(|(k, _)| k == "content-length") {
            out.push(("content-length".into(), self.body.len().to_string()));
        }
        out
    }
}

impl Spec {
    /// `GET /orders/42` (a method and a path).
    pub fn parse_line(line: &str) -> Result<(String, String), String> {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(p), None) => Ok((m.to_string(), p.to_string())),
            (Some(p), None, None) if p.starts_with('/') => Ok(("GET".into(), p.to_string())),
            _ => Err(format!(
                "`{line}` is not a request; expected a method and a path, e.g. `GET /orders/42`"
            )),
        }
    }

    /// The header list the filter sees: pseudo-headers first, names lowercase, `host` as
    /// `:authority`, and `content-length` for a body, as an HTTP/1.1 client and Envoy produce.
    pub fn envoy_headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // Envoy's HTTP/1 codec joins repeated `Host` headers with a comma, which the engine
        // refuses as ambiguous: the CLI hands it the same value.
        let hosts: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host") || k == ":authority")
            .map(|(_, v)| v.as_str())
            .collect();
        let authority = if hosts.is_empty() {
            DEFAULT_AUTHORITY.to_string()
        } else {
            hosts.join(",")
        };
        out.push((":authority".to_string(), authority));
        out.push((":path".to_string(), self.path.clone()));
        out.push((":method".to_string(), self.method.clone()));
        let scheme = if self.connection.is_some() {
            "https"
        } else {
            "http"
        };
        out.push((":scheme".to_string(), scheme.to_string()));
        for (k, v) in &self.headers {
            let k = k.to_ascii_lowercase();
            if k == "host" || k.starts_with(':') {
                continue;
            }
            out.push((k, v.clone()));
        }
        if let Some(body) = &self.body {
            if !out.iter().any(|(k, _)| k == "content-length") {
                out.push(("content-length".into(), body.len().to_string()));
            }
        }
        out
    }
}

/// A header change the exchange made, as the CLI reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Set(String, String),
    Add(String, String),
    Remove(String),
}

impl Change {
    fn of(edit: Edit<'_>) -> Change {
        match edit {
            Edit::Set(k, v) => Change::Set(k.into(), v.into()),
            Edit::Add(k, v) => Change::Add(k.into(), v.into()),
            Edit::Remove(k) => Change::Remove(k.into()),
        }
    }
}

/// What the client gets from the response phase, when the spec gives the upstream's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The upstream's response went on (its headers changed as [`Verdict::response`] says).
    Upstream { status: u16, body: Vec<u8> },
    /// The upstream's status with the body Tollgate rewrote (`redact`).
    Redacted { status: u16, body: Vec<u8> },
    /// Tollgate's own reply instead of the upstream's response (a blocked or unchecked response,
    /// a masked 5xx).
    Replaced(Reply),
}

impl Delivered {
    /// The status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            Delivered::Upstream { status, .. } | Delivered::Redacted { status, .. } => *status,
            Delivered::Replaced(reply) => reply.status,
        }
    }

    /// Tollgate's code, when it replaced the response.
    pub fn code(&self) -> Option<DenialCode> {
        match self {
            Delivered::Replaced(reply) => Some(reply.code),
            _ => None,
        }
    }

    /// The body the client receives.
    pub fn body(&self) -> &[u8] {
        match self {
            Delivered::Upstream { body, .. } | Delivered::Redacted { body, .. } => body,
            Delivered::Replaced(reply) => reply.body.as_bytes(),
        }
    }

    /// `upstream`, `redacted` or `replaced`.
    pub fn how(&self) -> &'static str {
        match self {
            Delivered::Upstream { .. } => "upstream",
            Delivered::Redacted { .. } => "redacted",
            Delivered::Replaced(_) => "replaced",
        }
    }
}

/// What one request did in the exchange, as Envoy would have carried it out.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Tollgate's own reply to the request (a refusal before anything reached the upstream).
    pub reply: Option<Reply>,
    /// What the client got from the response phase: only when the spec gives the upstream's
    /// response and the request reached it.
    pub delivered: Option<Delivered>,
    /// The refusal's code, or in a dry run the code it would have had.
    pub refusal: Option<(DenialCode, bool)>,
    /// Name of the matched route (empty: none).
    pub route: String,
    pub principal: Option<String>,
    pub unknown_route: bool,
    pub mode: Mode,
    /// Changes to the request on its way upstream.
    pub upstream: Vec<Change>,
    /// Changes to the upstream response's headers (a simulated `200` without a spec'd response).
    pub response: Vec<Change>,
    /// Whether the request body was checked, and the code of its refusal if any.
    pub body_checked: Option<Result<(), DenialCode>>,
    /// Counters the exchange bumped, by name.
    pub metrics: Vec<String>,
    /// Log lines the exchange wrote (the audit line included).
    pub logs: Vec<(Level, String)>,
    /// How the engine judged the headers.
    pub diagnostics: Diagnostics,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.reply.is_none()
    }

    /// The request's refusal that was carried out, if any.
    pub fn denied(&self) -> Option<DenialCode> {
        self.reply.as_ref().map(|r| r.code)
    }

    pub fn would_deny(&self) -> Option<DenialCode> {
        self.refusal.filter(|(_, done)| !*done).map(|(c, _)| c)
    }

    fn route_name(&self) -> Option<String> {
        (!self.route.is_empty()).then(|| self.route.clone())
    }

    /// `{decision, code, status, route, principal, would_deny}` of the request, and
    /// `{response_status, response_code, response_body}` of the response phase (`null` when it
    /// did not run): what `test` compares.
    pub fn summary(&self) -> Value {
        let mut out = self.request_summary();
        if let Value::Object(map) = &mut out {
            map.insert("descriptors".into(), self.descriptors());
        }
        if let (Value::Object(map), Some(d)) = (&mut out, &self.delivered) {
            map.insert("response_status".into(), d.status().into());
            map.insert("response_code".into(), json!(d.code().map(|c| c.as_str())));
            map.insert(
                "response_body".into(),
                String::from_utf8_lossy(d.body()).into_owned().into(),
            );
        } else if let Value::Object(map) = &mut out {
            for k in ["response_status", "response_code", "response_body"] {
                map.insert(k.into(), Value::Null);
            }
        }
        out
    }

    /// The descriptors sent to the rate-limit service, each as `["key=value", ...]`; `null`
    /// when the service was not asked.
    fn descriptors(&self) -> Value {
        match &self.diagnostics.global {
            None => Value::Null,
            Some(g) => g
                .descriptors
                .iter()
                .map(|d| {
                    d.entries
                        .iter()
                        .map(|(k, v)| Value::from(format!("{k}={v}")))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }
    }

    fn request_summary(&self) -> Value {
        match &self.reply {
            None => json!({
                "decision": "allow",
                "code": null,
                "status": null,
                "route": self.route_name(),
                "principal": self.principal,
                "would_deny": self.would_deny().map(|c| c.as_str()),
            }),
            Some(reply) => json!({
                "decision": "deny",
                "code": self.denied().map(|c| c.as_str()),
                "status": reply.status,
                "route": self.route_name(),
                "principal": null,
                "would_deny": null,
            }),
        }
    }
}

/// [`Io`] for one request described on the command line: records what Envoy would do.
struct Recorder<'a> {
    spec: &'a Spec,
    verdict: &'a mut Verdict,
    /// The simulated answer of the rate-limit service.
    call_answer: Vec<u8>,
    /// The session's shared data.
    store: &'a MemoryStore,
}

impl Io for Recorder<'_> {
    fn request_header(&mut self, edit: Edit<'_>) -> Result<(), HostError> {
        self.verdict.upstream.push(Change::of(edit));
        Ok(())
    }

    fn response_header(&mut self, edit: Edit<'_>) {
        self.verdict.response.push(Change::of(edit));
    }

    fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>> {
        match which {
            Body::Request => {
                let body = self.spec.body.as_deref().unwrap_or_default();
                body.get(..size).map(<[u8]>::to_vec)
            }
            Body::Response => {
                let body = self.spec.response.as_ref().map(|r| r.body.as_slice());
                body.unwrap_or_default().get(..size).map(<[u8]>::to_vec)
            }
            Body::GrpcResponse => self.call_answer.get(..size).map(<[u8]>::to_vec),
            Body::CallResponse => None,
        }
    }

    fn count(&mut self, metric: Metric<'_>) {
        let name = match metric {
            Metric::Add(c, n) => format!("{} +{n}", c.name()),
            Metric::Allowed { route } => {
                format!("{} (route `{route}`)", Counter::RequestsAllowed.name())
            }
            Metric::Denied { code, .. } => {
                format!("{}.{}", metrics::REQUESTS_DENIED_PREFIX, code.as_str())
            }
            Metric::DryRun { code, .. } => {
                format!("{}.{}", metrics::REQUESTS_DRY_RUN_PREFIX, code.as_str())
            }
        };
        self.verdict.metrics.push(name);
    }

    fn log(&mut self, level: Level, message: &str) {
        self.verdict.logs.push((level, message.to_string()));
    }

    fn store(&self) -> Option<&dyn crate::store::SharedStore> {
        Some(self.store)
    }

    fn peer(&mut self) -> Option<String> {
        Some(
            self.spec
                .peer
                .as_deref()
                .unwrap_or(DEFAULT_PEER)
                .to_string(),
        )
    }
}

/// Per-VM state and shared data for a run of requests: a fresh engine state, remote key sets
/// given on the command line installed, and an empty store (every bucket starts full).
pub struct Session<'e> {
    pub engine: &'e Engine,
    pub state: VmState,
    pub store: MemoryStore,
}

impl<'e> Session<'e> {
    pub fn new(engine: &'e Engine, jwks: &[(String, Vec<u8>)]) -> Result<Session<'e>, String> {
        let mut state = engine.new_state();
        for (name, body) in jwks {
            // A provider's `remote_jwks`, or a signer's `remote_keys`, of that name.
            let mut found = false;
            let provider = engine
                .providers()
                .iter()
                .enumerate()
                .find(|(_, p)| p.name == *name);
            if let Some((index, provider)) = provider {
                let keys = KeySet::from_fetched(body, &provider.algorithms)
                    .map_err(|e| format!("key set for provider `{name}`: {e}"))?;
                if let Some(slot) = state.remote.get_mut(index) {
                    *slot = Some(Installed {
                        generation: 1,
                        keys: Rc::new(keys),
                    });
                }
                found = true;
            }
            if let Some((index, signer, _)) =
                engine.remote_signers().find(|(_, s, _)| s.name == *name)
            {
                let keys = signer
                    .parse_keys(body)
                    .map_err(|e| format!("key set for signer `{name}`: {e}"))?;
                if let Some(slot) = state.signer_keys.get_mut(index) {
                    *slot = Some(Installed {
                        generation: 1,
                        keys: Rc::new(keys),
                    });
                }
                found = true;
            }
            if !found {
                return Err(format!(
                    "the policy has no provider or signer with remote keys named `{name}`"
                ));
            }
        }
        Ok(Session {
            engine,
            state,
            store: MemoryStore::default(),
        })
    }

    /// Installs `body` as the fetched list of the policy's `revocations.remote` (what Envoy
    /// would have fetched), so that cases see it; refused as the filter would refuse the fetch.
    pub fn install_revocations(&mut self, body: &[u8]) -> Result<(), String> {
        use crate::engine::KeySource;
        if self.engine.remote_spec(KeySource::Revocations).is_none() {
            return Err("the policy has no remote revocation list (`revocations.remote`)".into());
        }
        let list = crate::abuse::revoke::RevocationList::parse(body)
            .map_err(|e| format!("revocation list: {e}"))?;
        self.state.revocations = Some(Installed {
            generation: 1,
            keys: Rc::new(list),
        });
        Ok(())
    }

    /// Runs `spec` through the engine's exchange at `now_ms`, as Envoy does: the headers, then
    /// the body when the decision holds the request for it, then - if the request went upstream -
    /// the response's headers and, when they are held, its whole body. Without a response in the
    /// spec, a `200` without a body is assumed and only its headers are judged.
    pub fn decide(&mut self, spec: &Spec, now_ms: u64) -> Verdict {
        let headers = spec.envoy_headers();
        let req = Request {
            method: &spec.method,
            path: &spec.path,
            headers: &headers,
            peer: Some(spec.peer.as_deref().unwrap_or(DEFAULT_PEER)),
            connection: spec.connection.as_ref(),
        };
        let mut verdict = Verdict::default();
        let mut exchange = Exchange::explained();
        let mut io = Recorder {
            spec,
            verdict: &mut verdict,
            call_answer: Vec::new(),
            store: &self.store,
        };
        let body = spec.body.as_deref().unwrap_or_default();
        let mut step = exchange.on_request_headers(
            self.engine,
            &req,
            spec.body.is_none(),
            now_ms,
            Vm {
                state: &mut self.state,
                store: &self.store,
            },
            &mut io,
        );
        if let Step::Call(_) = step {
            let descriptors = exchange
                .diagnostics()
                .and_then(|d| d.global.as_ref())
                .map_or(&[][..], |g| g.descriptors.as_slice());
            let (reply, message) = spec.rate_limit_service.reply(descriptors);
            io.call_answer = message;
            let vm = Vm {
                state: &mut self.state,
                store: &self.store,
            };
            step = exchange.on_call_reply(self.engine, reply, now_ms, vm, &mut io);
        }
        if let State::RequestBody { .. } = exchange.state() {
            step = exchange.on_request_body(self.engine, body.len(), true, &mut io);
            let refused = exchange.refusal().map(|(c, _)| c);
            io.verdict.body_checked = Some(refused.map_or(Ok(()), Err));
        }
        if let Step::Reply(reply) = step {
            io.verdict.reply = Some(reply);
        } else if let Some(upstream) = &spec.response {
            io.verdict.delivered = Some(respond(self.engine, &mut exchange, upstream, &mut io));
        } else {
            let upstream = [(":status".to_string(), "200".to_string())];
            exchange.on_response_headers(self.engine, &upstream, false, &mut io);
        }
        if let Some(line) = exchange.on_done(self.engine, &mut io) {
            io.verdict.logs.push(line);
        }
        verdict.refusal = exchange.refusal();
        verdict.route = exchange.route().to_string();
        verdict.principal = exchange.principal().map(String::from);
        verdict.unknown_route = exchange.unknown_route();
        verdict.mode = exchange.mode();
        verdict.diagnostics = exchange.diagnostics().cloned().unwrap_or_default();
        verdict
    }
}

/// The response phase as Envoy's HTTP/1 codec drives it: the headers (ending the stream when
/// there is no body), then the whole body in one buffer with the end of the stream, unless the
/// headers already decided. Returns what the client gets.
fn respond(
    engine: &Engine,
    exchange: &mut Exchange,
    upstream: &Upstream,
    io: &mut Recorder<'_>,
) -> Delivered {
    let headers = upstream.envoy_headers();
    let body = &upstream.body;
    let mut step = exchange.on_response_headers(engine, &headers, body.is_empty(), io);
    if step == Step::Pause {
        step = exchange.on_response_body(engine, body.len(), true, io);
    }
    match step {
        Step::Reply(reply) => Delivered::Replaced(reply),
        Step::ReplaceBody { body, .. } => Delivered::Redacted {
            status: upstream.status,
            body,
        },
        // Every state the exchange pauses in is left by a whole body that ends the stream; the
        // response phase makes no calls.
        Step::Continue | Step::Pause | Step::Call(_) => Delivered::Upstream {
            status: upstream.status,
            body: body.clone(),
        },
    }
}

/// `--now`: seconds since the epoch, or `YYYY-MM-DDTHH:MM:SSZ` / `YYYY-MM-DD`.
pub fn parse_time(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .or_else(|| crate::engine::parse_rfc3339(text))
        .ok_or_else(|| {
            format!("`{text}` is not a time; expected seconds since 1970 or `YYYY-MM-DDTHH:MM:SSZ`")
        })
}

/// The clock, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `name: value` (`-H`).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .filter(|(n, _)| !n.trim().is_empty())
        .ok_or_else(|| format!("`{text}` is not a header; expected `name: value`"))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{"routes": [
        {"name": "health", "path": "/health", "methods": ["GET"], "public": true},
        {"name": "echo", "path": "/echo", "methods": ["POST"], "public": true,
         "request": {"body": {"type": "object", "required": ["a"]}, "max_body_bytes": 16}},
        {"name": "shadow", "path": "/shadow", "methods": ["POST"], "public": true, "mode": "dry-run",
         "request": {"body": {"type": "object", "required": ["a"]}}}
    ]}"#;

    fn spec(method: &str, path: &str, body: Option<&str>) -> Spec {
        Spec {
            method: method.into(),
            path: path.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.map(|b| b.as_bytes().to_vec()),
            peer: None,
            connection: None,
            response: None,
            rate_limit_service: Default::default(),
        }
    }

    #[test]
    fn headers_then_body_as_the_host_does() {
        let engine = Engine::compile(POLICY.as_bytes()).unwrap();
        let mut s = Session::new(&engine, &[]).unwrap();
        let now = 1_800_000_000_000;
        assert!(s.decide(&spec("GET", "/health", None), now).allowed());
        assert_eq!(
            s.decide(&spec("GET", "/nope", None), now).summary()["code"],
            "route_not_found"
        );
        let ok = s.decide(&spec("POST", "/echo", Some(r#"{"a": 1}"#)), now);
        assert!(ok.allowed() && ok.body_checked == Some(Ok(())));
        let bad = s.decide(&spec("POST", "/echo", Some(r#"{"b": 1}"#)), now);
        assert_eq!(bad.summary()["code"], "request_invalid");
        let big = s.decide(
            &spec("POST", "/echo", Some(r#"{"a": "0123456789abcdef"}"#)),
            now,
        );
        assert_eq!(big.summary()["code"], "payload_too_large");
        // Dry run: the body's refusal is reported, the request goes on.
        let dry = s.decide(&spec("POST", "/shadow", Some("{}")), now);
        assert!(dry.allowed());
        assert_eq!(dry.summary()["would_deny"], "request_invalid");
    }

    const RESPONSES: &str = r#"{"responses": {"mask_upstream_errors": true}, "routes": [
        {"name": "block", "path": "/block", "methods": ["GET"], "public": true,
         "response": {"schemas": {"200": {"type": "object", "required": ["id"]}}}},
        {"name": "redact", "path": "/redact", "methods": ["GET"], "public": true,
         "response": {"schemas": {"200": {"type": "object", "properties": {"id": {}},
                      "additionalProperties": false}}, "mode": "redact"}},
        {"name": "shadow", "path": "/shadow", "methods": ["GET"], "public": true, "mode": "dry-run",
         "response": {"schemas": {"200": {"type": "object", "required": ["id"]}}}}
    ]}"#;

    fn answered(path: &str, status: u16, headers: &[(&str, &str)], body: &str) -> Spec {
        Spec {
            response: Some(Upstream {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.as_bytes().to_vec(),
            }),
            ..spec("GET", path, None)
        }
    }

    #[test]
    fn the_upstream_response_goes_through_the_response_phase() {
        let engine = Engine::compile(RESPONSES.as_bytes()).unwrap();
        let mut s = Session::new(&engine, &[]).unwrap();
        let now = 1_800_000_000_000;
        let ok = s.decide(&answered("/block", 200, &[], r#"{"id": 1}"#), now);
        assert_eq!(
            ok.delivered,
            Some(Delivered::Upstream {
                status: 200,
                body: br#"{"id": 1}"#.to_vec()
            })
        );
        let summary = ok.summary();
        assert_eq!(
            (&summary["decision"], &summary["response_status"]),
            (&json!("allow"), &json!(200))
        );
        assert!(summary["response_code"].is_null());

        let bad = s.decide(&answered("/block", 200, &[], "{}"), now);
        let summary = bad.summary();
        assert_eq!(
            summary["decision"], "allow",
            "the request itself went through"
        );
        assert!(summary["code"].is_null() && bad.denied().is_none());
        assert_eq!(summary["response_status"], 502);
        assert_eq!(summary["response_code"], "response_invalid");
        // Bytes the route cannot read are refused, also when only the headers say so.
        let gzip = answered(
            "/block",
            200,
            &[("Content-Encoding", "gzip")],
            r#"{"id":1}"#,
        );
        assert_eq!(
            s.decide(&gzip, now).summary()["response_code"],
            "response_unchecked"
        );

        let redacted = s.decide(&answered("/redact", 200, &[], r#"{"id":1,"x":2}"#), now);
        assert_eq!(
            redacted.delivered,
            Some(Delivered::Redacted {
                status: 200,
                body: br#"{"id":1}"#.to_vec()
            })
        );
        assert!(redacted
            .response
            .contains(&Change::Set("content-length".into(), "8".into())));

        let masked = s.decide(&answered("/redact", 503, &[], "stack trace"), now);
        let summary = masked.summary();
        assert_eq!(
            (&summary["response_status"], &summary["response_code"]),
            (&json!(503), &json!("upstream_error"))
        );
        assert!(!summary["response_body"]
            .as_str()
            .unwrap()
            .contains("stack trace"));

        let dry = s
            .decide(&answered("/shadow", 200, &[], "{}"), now)
            .summary();
        assert_eq!(
            (&dry["would_deny"], &dry["response_status"]),
            (&json!("response_invalid"), &json!(200))
        );

        // A refused request never reaches the upstream: no response phase.
        let refused = s.decide(&answered("/nowhere", 200, &[], "{}"), now);
        assert!(refused.delivered.is_none());
        assert!(refused.summary()["response_status"].is_null());
        // Without a response in the spec, only a `200`'s headers are judged, as before.
        let plain = s.decide(&spec("GET", "/block", None), now);
        assert!(plain.delivered.is_none() && plain.refusal.is_none());
    }

    #[test]
    fn upstream_headers_are_lowercase_with_status_and_length() {
        let u = Upstream {
            status: 404,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"gone".to_vec(),
        };
        assert_eq!(
            u.envoy_headers(),
            [
                (":status".to_string(), "404".to_string()),
                ("content-type".into(), "text/plain".into()),
                ("content-length".into(), "4".into())
            ]
        );
    }

    #[test]
    fn envoy_headers_are_lowercase_with_pseudo_headers() {
        let mut s = spec("POST", "/x?y=1", Some("{}"));
        s.headers.push(("Host".into(), "api.example:8443".into()));
        let h = s.envoy_headers();
        assert_eq!(h[0], (":authority".into(), "api.example:8443".into()));
        assert!(h.contains(&("content-type".into(), "application/json".into())));
        assert!(h.contains(&("content-length".into(), "2".into())));
        assert!(!h.iter().any(|(k, _)| k == "host"));
    }

    #[test]
    fn parsing_helpers() {
        assert_eq!(
            Spec::parse_line("DELETE /orders/9").unwrap(),
            ("DELETE".into(), "/orders/9".into())
        );
        assert_eq!(Spec::parse_line("/x").unwrap().0, "GET");
        assert!(Spec::parse_line("GET /a b").is_err());
        assert_eq!(parse_time("2026-01-01T00:00:00Z").unwrap(), 1_767_225_600);
        assert_eq!(parse_time("12").unwrap(), 12);
        assert!(parse_time("tomorrow").is_err());
        assert_eq!(
            parse_header("Authorization: Bearer a:b").unwrap(),
            ("Authorization".into(), "Bearer a:b".into())
        );
        assert!(parse_header("nocolon").is_err());
    }

    #[test]
    fn remote_key_sets_can_be_installed() {
        let policy = r#"{"providers": {"idp": {"issuer": "i", "audiences": ["a"], "algorithms": ["ES256"],
            "remote_jwks": {"cluster": "c", "uri": "https://idp/jwks"}}},
            "routes": [{"path": "/x", "providers": ["idp"]}]}"#;
        let engine = Engine::compile(policy.as_bytes()).unwrap();
        let jwks = format!(r#"{{"keys": [{}]}}"#, crate::testkit::public_jwk("ec256"));
        let s = Session::new(&engine, &[("idp".into(), jwks.into_bytes())]).unwrap();
        assert!(s.state.remote[0].is_some());
        assert!(Session::new(&engine, &[("nope".into(), b"{}".to_vec())]).is_err());

        let policy = r#"{"signers": {"partner": {"algorithms": ["ed25519"],
            "remote_keys": {"cluster": "c", "uri": "https://partner/keys"}}},
            "routes": [{"path": "/x", "signers": ["partner"]}]}"#;
        let engine = Engine::compile(policy.as_bytes()).unwrap();
        let public = include_str!("../../envoy/demo/partner-signing-key.jwk.json")
            .replace("\"d\"", "\"unused\"");
        let set = format!(r#"{{"keys": [{public}]}}"#);
        let s = Session::new(&engine, &[("partner".into(), set.into_bytes())]).unwrap();
        assert!(s.state.signer_keys[0].is_some());
        let none = br#"{"keys": []}"#.to_vec();
        let e = Session::new(&engine, &[("partner".into(), none)])
            .err()
            .unwrap();
        assert!(e.contains("signer `partner`"), "{e}");
    }

    #[test]
    fn a_fetched_revocation_list_can_be_installed() {
        let policy = r#"{"api_keys": {"keys": [{"id": "ci", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}]},
            "revocations": {"remote": {"cluster": "c", "uri": "https://lists/revoked.json"}},
            "routes": [{"path": "/x", "api_keys": true}]}"#;
        let engine = Engine::compile(policy.as_bytes()).unwrap();
        let mut s = Session::new(&engine, &[]).unwrap();
        let e = s.install_revocations(br#"{"api_keys": ["ci"], "extra": 1}"#);
        assert!(e.unwrap_err().contains("not a revocation list"));
        assert!(s.state.revocations.is_none());
        s.install_revocations(br#"{"api_keys": ["ci"]}"#).unwrap();
        assert_eq!(s.state.revocations.as_ref().map(|i| i.keys.len()), Some(1));

        let policy = r#"{"routes": [{"path": "/x", "public": true}]}"#;
        let engine = Engine::compile(policy.as_bytes()).unwrap();
        let mut s = Session::new(&engine, &[]).unwrap();
        let e = s.install_revocations(b"{}").unwrap_err();
        assert!(e.contains("revocations.remote"), "{e}");
    }
}
