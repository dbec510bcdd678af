//! One request/response exchange: the per-stream state machine that drives a request and its
//! response through the engine. A host (the proxy-wasm adapter, the CLI) feeds it the stream's
//! events and carries out the [`Step`] each event answers with; everything the exchange needs
//! from the host, or asks of it on the way (header edits, buffered bodies, counters, log lines),
//! goes through the small [`Io`] trait. Dry-run handling, 5xx masking, body limits, response
//! verdicts and the audit line live here and nowhere else, so Envoy and `tollgate explain` run the
//! very same code.

use super::audit::{AuditLevel, AuditRecord};
use super::Request;
use super::VmState;
use super::{BodyCheck, Decision, Denial, Diagnostics, Engine, GlobalAsk, Mode};
use crate::codes::{Counter, DenialCode};
use crate::payload::response::{Unchecked, Verdict};
use crate::payload::Violation;
use crate::ratelimit::rls;
use crate::store::SharedStore;

/// Upstream error text kept for the log when a 5xx body is masked.
pub const MASKED_DETAIL_BYTES: usize = 512;

/// Where the exchange stands. Each state says what the next event may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No request headers yet.
    Init,
    /// The request's headers are held and its body buffered until it passes these request rules.
    RequestBody { rules: BodyCheck },
    /// The request is held (its body buffered) while an outgoing call is out: the rate-limit
    /// service decides its `global` limits. [`Exchange::on_call_reply`] goes on.
    Calling,
    /// The request went upstream; its response has not been judged yet.
    Forwarded,
    /// An upstream 5xx is being replaced: its body is read (for the log), then a problem is sent.
    Masking { status: u16 },
    /// The response's headers are held and its body buffered until it is judged.
    ResponseBody {
        rules: usize,
        status: u16,
        max: usize,
    },
    /// Tollgate answered with its own reply (never masked nor checked).
    Responded,
    /// The response went on to the client; nothing is left to judge.
    Complete,
}

/// What the host does after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Let the stream go on.
    Continue,
    /// Hold the stream: more of the body is needed before anything can be judged.
    Pause,
    /// Send this local reply instead of what the stream carries; nothing of it goes on.
    Reply(Reply),
    /// Replace the buffered response body (its first `size` bytes, i.e. all of it) with `body`,
    /// then go on. If the host cannot, it reports [`Exchange::on_host_error`].
    ReplaceBody { size: usize, body: Vec<u8> },
    /// Hold the stream and make this call; its answer (or its failure) is the next event,
    /// [`Exchange::on_call_reply`]. A call the host cannot make is reported the same way
    /// ([`CallReply::NotSent`]).
    Call(GrpcCall),
}

/// An outgoing gRPC call (unary) through an Envoy cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCall {
    pub cluster: String,
    pub service: &'static str,
    pub method: &'static str,
    /// The request message, protobuf-encoded.
    pub message: Vec<u8>,
    pub timeout_ms: u32,
}

/// How an outgoing call ended, as the host saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallReply {
    /// gRPC status OK with a message of `size` bytes ([`Body::GrpcResponse`]).
    Answered { size: usize },
    /// Another gRPC status (`4`: the timeout passed; `14`: unreachable).
    Failed { grpc_status: u32 },
    /// The host could not make the call (for example, an unknown cluster).
    NotSent,
}

/// A request held while the rate-limit service is asked.
#[derive(Debug)]
struct Pending {
    waiting: Waiting,
    /// When the call was made (host clock) and how long it may take: Envoy reports a call that
    /// ran out of time as `UNAVAILABLE`, like one that found no service.
    sent_ms: u64,
    timeout_ms: u32,
}

/// What the service's answer decides.
#[derive(Debug)]
enum Waiting {
    /// The request's `global` limits.
    Limits {
        ask: GlobalAsk,
        /// Request rules the body must pass once the service let the request through.
        body_check: Option<BodyCheck>,
        /// The request's body (or trailers) ended while the call was out.
        request_ended: bool,
    },
    /// An authentication failure counted across proxies (`brute_force.global`): the refusal is
    /// sent once the service has said whether `subject` is now over `max_failures`.
    Failure { subject: String, denial: Denial },
}

/// A local reply: status, headers (security headers included) and an `application/problem+json`
/// body, rendered only now that it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// What the problem says (`upstream_error` for a masked 5xx, which is no refusal); for the
    /// CLI's report, the host sends only status, headers and body.
    pub code: DenialCode,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Which body a host buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    Request,
    Response,
    /// The answer to an outgoing HTTP call ([`super::refresh::Call`]).
    CallResponse,
    /// The message of a gRPC call's answer ([`Step::Call`]).
    GrpcResponse,
}

/// A header change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Replace every value of the header (add it when absent).
    Set(&'a str, &'a str),
    /// Add a value, keeping those already there.
    Add(&'a str, &'a str),
    Remove(&'a str),
}

/// A count the host keeps (Envoy counters; the CLI lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric<'a> {
    /// A plain counter, by `n`.
    Add(Counter, u32),
    /// A request let through (`route` empty: no route matched).
    Allowed { route: &'a str },
    /// A request refused with `code`.
    Denied { code: DenialCode, route: &'a str },
    /// A request a dry run let through that `code` would have refused.
    DryRun { code: DenialCode, route: &'a str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What the exchange needs from its host besides the events themselves.
pub trait Io {
    /// Changes a header of the request on its way upstream (only while it is held).
    fn request_header(&mut self, edit: Edit<'_>) -> Result<(), HostError>;
    /// Changes a header of the response on its way to the client (only while it is held).
    fn response_header(&mut self, edit: Edit<'_>);
    /// The first `size` bytes of a buffered body; `None` when the host cannot give all of them
    /// (then nothing is judged as if it had been read).
    fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>>;
    fn count(&mut self, metric: Metric<'_>);
    fn log(&mut self, level: Level, message: &str);
    /// The downstream peer (`ip:port`); asked only for an audit line that is written.
    fn peer(&mut self) -> Option<String>;
    /// The shared data, for what is counted after the request headers (a refusal of the body
    /// counted by `detection`); `None`: not counted.
    fn store(&self) -> Option<&dyn SharedStore> {
        None
    }
}

/// The VM-wide state a request decision reads and updates: its caches and the shared data.
pub struct Vm<'a> {
    pub state: &'a mut VmState,
    pub store: &'a dyn SharedStore,
}

/// The host could not carry out what it was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError;

/// The response's headers as the exchange reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    declared: Option<usize>,
    /// A content coding other than `identity` was applied.
    encoded: bool,
}

/// The per-stream state of one exchange. Create one per stream with [`Exchange::new`].
#[derive(Debug)]
pub struct Exchange {
    state: State,
    /// Name of the matched route (empty: none), for metrics and logs of later phases.
    route: String,
    mode: Mode,
    authenticated: bool,
    /// Added to the response (rate-limit and lifecycle headers).
    response_headers: Vec<(String, String)>,
    /// Response rules of the matched route.
    response_check: Option<usize>,
    /// The signed `Content-Digest` the request body must match.
    content_digest: Option<String>,
    /// Bytes of the request and response bodies buffered so far (read again when trailers end
    /// the stream instead of a data frame).
    request_body_size: usize,
    response_body_size: usize,
    /// The status sent to the client, as last seen.
    status: u16,
    /// Who passed authentication (also on a later refusal).
    principal: Option<String>,
    /// The last refusal: its code, and whether it was carried out (`false`: a dry run).
    refusal: Option<(DenialCode, bool)>,
    unknown_route: bool,
    /// Started with the request (its time, id, address, method and path), completed when the
    /// stream ends; `None` when the audit log is off.
    audit: Option<AuditRecord>,
    /// How the headers were judged; only for an exchange made by [`Exchange::explained`].
    diagnostics: Option<Diagnostics>,
    /// What the request waits for in [`State::Calling`].
    pending: Option<Pending>,
    /// The request as `detection` counted it, for a refusal of its body.
    counted: Option<super::detect::Counted>,
}

impl Default for Exchange {
    fn default() -> Exchange {
        Exchange::new()
    }
}

fn describe(v: &[Violation]) -> String {
    v.iter()
        .map(|x| {
            let at = if x.pointer.is_empty() {
                "/"
            } else {
                &x.pointer
            };
            format!("{at} {}", x.keyword)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts and logs what deciding the headers did besides the decision (cache, buckets, blocks,
/// deprecation), and asks for an early key refresh when a token named an unknown key.
fn report_effects(
    engine: &Engine,
    effects: &super::Effects,
    now_ms: u64,
    store: &dyn SharedStore,
    io: &mut dyn Io,
) {
    if let Some(hit) = effects.cache_hit {
        io.count(Metric::Add(
            if hit {
                Counter::JwtCacheHit
            } else {
                Counter::JwtCacheMiss
            },
            1,
        ));
    }
    if effects.host_signatures > 0 {
        io.count(Metric::Add(
            Counter::JwtHostSignatures,
            effects.host_signatures,
        ));
    }
    if effects.cas_retries > 0 {
        io.count(Metric::Add(
            Counter::RatelimitCasRetries,
            effects.cas_retries,
        ));
    }
    if effects.cas_exhausted {
        io.count(Metric::Add(Counter::RatelimitCasExhausted, 1));
    }
    for name in &effects.shadow_limited {
        io.count(Metric::Add(Counter::RatelimitShadowLimited, 1));
        io.log(
            Level::Info,
            &format!("tollgate: shadow limit `{name}` would have refused this request"),
        );
    }
    if effects.block_started {
        io.count(Metric::Add(Counter::BruteForceBlocks, 1));
        io.log(Level::Warn, "tollgate: brute-force protection blocked a client after repeated authentication failures");
    }
    if effects.deprecated {
        io.count(Metric::Add(Counter::DeprecatedRequests, 1));
    }
    if let Some(source) = effects.early_refresh {
        if let Some(spec) = engine.remote_spec(source) {
            // The next tick of any worker fetches; a store failure only delays that.
            let _ = crate::jwt::remote::request_early(store, spec, now_ms / 1000);
        }
    }
}

/// Counts and logs what detectors found (`detection`).
fn report_detection(reports: super::detect::Reports, io: &mut dyn Io) {
    for (counter, line) in reports {
        io.count(Metric::Add(counter, 1));
        if !line.is_empty() {
            io.log(Level::Warn, &line);
        }
    }
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            state: State::Init,
            route: String::new(),
            mode: Mode::Enforce,
            authenticated: false,
            response_headers: Vec::new(),
            response_check: None,
            content_digest: None,
            request_body_size: 0,
            response_body_size: 0,
            status: 0,
            principal: None,
            refusal: None,
            unknown_route: false,
            audit: None,
            diagnostics: None,
            pending: None,
            counted: None,
        }
    }

    /// An exchange that also keeps how the engine decided ([`Exchange::diagnostics`]), for
    /// `tollgate explain`. Envoy's streams never pay for it.
    pub fn explained() -> Exchange {
        Exchange {
            diagnostics: Some(Diagnostics::default()),
            ..Exchange::new()
        }
    }

    /// How the request's headers were judged (route, credential, each requirement).
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        self.diagnostics.as_ref()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The status sent to the client, as last seen (0 before a response).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The matched route's name (empty: none matched).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Who passed authentication, also when a later check refused the request.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// The last refusal: its code and whether it was carried out (`false`: reported by a dry run).
    pub fn refusal(&self) -> Option<(DenialCode, bool)> {
        self.refusal
    }

    /// No route matched and `default.action: allow` let the request through.
    pub fn unknown_route(&self) -> bool {
        self.unknown_route
    }

    /// The mode that applied to the request.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The matched route's name for log lines, `-` when none matched.
    fn route_label(&self) -> &str {
        if self.route.is_empty() {
            "-"
        } else {
            &self.route
        }
    }

    /// Event: the request's headers (`end_of_stream`: the request has no body), judged at
    /// `now_ms` (the host's clock) with the VM's caches and the shared data.
    pub fn on_request_headers(
        &mut self,
        engine: &Engine,
        req: &Request<'_>,
        end_of_stream: bool,
        now_ms: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) -> Step {
        let Vm { state, store } = vm;
        if engine.audit.enabled {
            self.audit = Some(AuditRecord::new(
                now_ms,
                req.header_values("x-request-id").next(),
                engine.client_ip(req),
                req.method,
                req.path_only(),
                Mode::Enforce,
            ));
        }
        let outcome = match self.diagnostics.as_mut() {
            None => engine.decide_at(req, now_ms, state, store),
            Some(d) => {
                let (outcome, diagnostics) = engine.decide_explained(req, now_ms, state, store);
                *d = diagnostics;
                outcome
            }
        };
        report_effects(engine, &outcome.effects, now_ms, store, io);
        let (counted, reports) =
            super::detect::record(engine, req, &outcome, now_ms, &state.limit_secret, store);
        self.counted = counted;
        report_detection(reports, io);
        if let Some(record) = self.audit.as_mut() {
            let unmatched = match &outcome.decision {
                Decision::Allow(allow) => allow.unknown_route,
                Decision::Deny(d) | Decision::WouldDeny(d) => d.code == DenialCode::RouteNotFound,
            };
            // Normalised a second time only for requests outside the policy: the decision does
            // not carry the path, and the matched ones (nearly all) never need it.
            if unmatched {
                if let Some(path) = super::path::normalize(req.path) {
                    record.unmatched(&path);
                }
            }
        }
        let failure_subject = outcome.effects.failure_subject;
        match outcome.decision {
            Decision::Allow(allow) => {
                self.route = allow.route;
                self.mode = allow.mode;
                self.authenticated = allow.authenticated;
                self.principal = allow.principal;
                self.unknown_route = allow.unknown_route;
                for name in &allow.remove_headers {
                    if req.headers.iter().any(|(k, _)| k == name) {
                        // Removing a header the host holds cannot fail in a way that lets a
                        // forged value through: the identity headers are set again below.
                        let _ = io.request_header(Edit::Remove(name));
                    }
                }
                for (name, value) in &allow.set_headers {
                    if io.request_header(Edit::Set(name, value)).is_err() {
                        return self.internal_error(engine, io);
                    }
                }
                if allow.unknown_route {
                    // The policy is the API inventory: a request outside it is always visible.
                    io.log(
                        Level::Warn,
                        &format!(
                            "tollgate: unknown endpoint allowed by `default.action`: {} {}",
                            req.method,
                            req.path_only()
                        ),
                    );
                }
                self.response_headers = allow.response_headers;
                self.response_check = allow.response_check;
                self.content_digest = allow.content_digest;
                if let Some(ask) = allow.global {
                    let Some(service) = engine.rate_limit_service() else {
                        return self.internal_error(engine, io);
                    };
                    let message = rls::encode_request(&service.domain, &ask.descriptors, ask.hits);
                    self.pending = Some(Pending {
                        waiting: Waiting::Limits {
                            ask,
                            body_check: allow.body_check,
                            request_ended: end_of_stream,
                        },
                        sent_ms: now_ms,
                        timeout_ms: service.timeout_ms,
                    });
                    self.state = State::Calling;
                    io.count(Metric::Add(Counter::RatelimitServiceCalls, 1));
                    return Step::Call(GrpcCall {
                        cluster: service.cluster.clone(),
                        service: rls::SERVICE,
                        method: rls::METHOD,
                        message,
                        timeout_ms: service.timeout_ms,
                    });
                }
                if let Some(rules) = allow.body_check {
                    if end_of_stream {
                        return self.finish_body(engine, rules, &[], io);
                    }
                    // The host holds the headers (Envoy: `allow_on_headers_stop_iteration`)
                    // until the body has passed, so nothing reaches the upstream before the check.
                    self.state = State::RequestBody { rules };
                    return Step::Pause;
                }
                self.state = State::Forwarded;
                io.count(Metric::Allowed { route: &self.route });
                Step::Continue
            }
            Decision::WouldDeny(denial) => {
                self.route = denial.route.unwrap_or_default();
                self.principal = denial.principal;
                self.mode = Mode::DryRun;
                // Headers clients could forge are removed as on any request that goes on.
                for name in engine.removed_headers(req) {
                    if req.headers.iter().any(|(k, _)| *k == name) {
                        let _ = io.request_header(Edit::Remove(&name));
                    }
                }
                self.pass_dry_run(engine, denial.code, io)
            }
            Decision::Deny(denial) => {
                self.route = denial.route.clone().unwrap_or_default();
                self.principal.clone_from(&denial.principal);
                io.log(
                    Level::Debug,
                    &format!(
                        "tollgate: denied route={} code={}",
                        self.route_label(),
                        denial.code.as_str()
                    ),
                );
                let call = failure_subject.and_then(|subject| {
                    let service = engine.rate_limit_service()?;
                    let descriptor = engine.brute_force.as_ref()?.descriptor(&subject)?;
                    let message = rls::encode_request(&service.domain, &[descriptor], 1);
                    self.pending = Some(Pending {
                        waiting: Waiting::Failure {
                            subject,
                            denial: denial.clone(),
                        },
                        sent_ms: now_ms,
                        timeout_ms: service.timeout_ms,
                    });
                    Some(GrpcCall {
                        cluster: service.cluster.clone(),
                        service: rls::SERVICE,
                        method: rls::METHOD,
                        message,
                        timeout_ms: service.timeout_ms,
                    })
                });
                match call {
                    Some(call) => {
                        // The refusal waits for the service: it says whether this failure
                        // completes a block across proxies.
                        self.state = State::Calling;
                        io.count(Metric::Add(Counter::RatelimitServiceCalls, 1));
                        Step::Call(call)
                    }
                    None => self.reply(engine, &denial, io),
                }
            }
        }
    }

    /// Event: `size` bytes of the request body are buffered so far (`end_of_stream`: all of it).
    pub fn on_request_body(
        &mut self,
        engine: &Engine,
        size: usize,
        end_of_stream: bool,
        io: &mut dyn Io,
    ) -> Step {
        if let (State::Calling, Some(p)) = (self.state, self.pending.as_mut()) {
            // Nothing goes upstream before the service has answered: buffer.
            self.request_body_size = size;
            if let Waiting::Limits { request_ended, .. } = &mut p.waiting {
                *request_ended = end_of_stream;
            }
            return Step::Pause;
        }
        let State::RequestBody { rules } = self.state else {
            return Step::Continue;
        };
        self.request_body_size = size;
        if size > engine.max_body_bytes(rules) {
            // Decided as soon as the size is known: nothing more is buffered.
            self.state = State::Forwarded;
            let d = crate::problem::denial(
                &engine.realm,
                DenialCode::PayloadTooLarge,
                Some(self.route.clone()),
            );
            return self.refuse_late(engine, d, io);
        }
        if !end_of_stream {
            return Step::Pause;
        }
        let Some(body) = io.body(Body::Request, size) else {
            return self.internal_error(engine, io);
        };
        self.finish_body(engine, rules, &body, io)
    }

    /// Event: trailers ended the request instead of a data frame (HTTP/2, chunked HTTP/1.1): the
    /// body buffered so far is complete and is judged now, before anything reaches the upstream.
    pub fn on_request_trailers(&mut self, engine: &Engine, io: &mut dyn Io) -> Step {
        if let (State::Calling, Some(p)) = (self.state, self.pending.as_mut()) {
            if let Waiting::Limits { request_ended, .. } = &mut p.waiting {
                *request_ended = true;
            }
            return Step::Pause;
        }
        let State::RequestBody { rules } = self.state else {
            return Step::Continue;
        };
        let Some(body) = io.body(Body::Request, self.request_body_size) else {
            return self.internal_error(engine, io);
        };
        self.finish_body(engine, rules, &body, io)
    }

    /// Event: the response's headers (`headers` as the host holds them, `:status` included).
    /// Rate-limit and lifecycle headers are set, security headers the response lacks added,
    /// implementation-revealing headers removed - on Tollgate's own replies too.
    pub fn on_response_headers(
        &mut self,
        engine: &Engine,
        headers: &[(String, String)],
        end_of_stream: bool,
        io: &mut dyn Io,
    ) -> Step {
        let head = self.edit_response_headers(engine, headers, io);
        self.status = head.status;
        if self.state == State::Responded {
            return Step::Continue;
        }
        if head.status >= 500 && engine.responses.mask_upstream_errors {
            if end_of_stream {
                return self.mask(engine, head.status, &[], io);
            }
            // Hold the headers: the whole response is replaced once the body has been read.
            self.state = State::Masking {
                status: head.status,
            };
            return Step::Pause;
        }
        self.state = State::Complete;
        let Some(rules) = self.response_check else {
            return Step::Continue;
        };
        let Some(max) = engine.response_applies(rules, head.status) else {
            return Step::Continue;
        };
        if head.encoded {
            // Tollgate asked for an uncompressed response (`accept-encoding` removed); bytes it
            // cannot read are not passed as if they had been checked.
            return self.unchecked_response(engine, rules, Unchecked::Encoded, io);
        }
        if head.declared.is_some_and(|l| l > max) {
            return self.unchecked_response(engine, rules, Unchecked::TooLarge, io);
        }
        if end_of_stream {
            return self.judge_response(engine, rules, head.status, &[], 0, io);
        }
        // Hold the response headers until the body is judged, so a blocked response really
        // changes the status and a redacted one gets a correct content-length.
        self.state = State::ResponseBody {
            rules,
            status: head.status,
            max,
        };
        Step::Pause
    }

    /// Event: `size` bytes of the response body are buffered so far.
    pub fn on_response_body(
        &mut self,
        engine: &Engine,
        size: usize,
        end_of_stream: bool,
        io: &mut dyn Io,
    ) -> Step {
        self.response_body_size = size;
        match self.state {
            State::Masking { .. } if !end_of_stream && size < MASKED_DETAIL_BYTES => Step::Pause,
            State::ResponseBody { rules, max, .. } if size > max => {
                self.state = State::Complete;
                self.unchecked_response(engine, rules, Unchecked::TooLarge, io)
            }
            State::ResponseBody { .. } if !end_of_stream => Step::Pause,
            _ => self.response_complete(engine, io),
        }
    }

    /// Event: the upstream ended its response with trailers: the buffered body is complete.
    pub fn on_response_trailers(&mut self, engine: &Engine, io: &mut dyn Io) -> Step {
        self.response_complete(engine, io)
    }

    /// The buffered response body is all there is (its last data frame or its trailers came):
    /// a masked 5xx is replaced, a checked body judged.
    fn response_complete(&mut self, engine: &Engine, io: &mut dyn Io) -> Step {
        let size = self.response_body_size;
        match self.state {
            State::Masking { status } => {
                let detail = io
                    .body(Body::Response, size.min(MASKED_DETAIL_BYTES))
                    .unwrap_or_default();
                self.mask(engine, status, &detail, io)
            }
            State::ResponseBody { rules, status, .. } => {
                self.state = State::Complete;
                match io.body(Body::Response, size) {
                    Some(body) => self.judge_response(engine, rules, status, &body, size, io),
                    None => self.unchecked_response(engine, rules, Unchecked::NotJson, io),
                }
            }
            _ => Step::Continue,
        }
    }

    /// Event: the outgoing call of [`Step::Call`] ended, at `now_ms` (host clock). The step
    /// answers for the held request: `Continue` lets it go on (the host resumes it), `Pause`
    /// keeps holding it (its body is still arriving for a body check), `Reply` refuses it.
    pub fn on_call_reply(
        &mut self,
        engine: &Engine,
        reply: CallReply,
        now_ms: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) -> Step {
        let (State::Calling, Some(pending)) = (self.state, self.pending.take()) else {
            // Not waiting for a call (the stream was answered meanwhile): nothing changes.
            return Step::Pause;
        };
        let answer = match reply {
            CallReply::Answered { size } => io
                .body(Body::GrpcResponse, size)
                .and_then(|b| rls::decode_response(&b))
                .ok_or(Counter::RatelimitServiceMalformed),
            // Envoy's timer may fire a little before the host clock says the time is up: within
            // the last tenth of the timeout it counts as the timeout.
            CallReply::Failed { grpc_status }
                if grpc_status == rls::GRPC_DEADLINE_EXCEEDED
                    || now_ms.saturating_sub(pending.sent_ms).saturating_mul(10)
                        >= u64::from(pending.timeout_ms).saturating_mul(9) =>
            {
                Err(Counter::RatelimitServiceTimeout)
            }
            CallReply::Failed { .. } | CallReply::NotSent => Err(Counter::RatelimitServiceError),
        };
        let why = |failure: Counter| match (failure, reply) {
            (Counter::RatelimitServiceTimeout, _) => "timeout".to_string(),
            (Counter::RatelimitServiceMalformed, _) => "malformed answer".into(),
            (_, CallReply::Failed { grpc_status }) => format!("gRPC status {grpc_status}"),
            _ => "call not made".into(),
        };
        let (ask, body_check, request_ended) = match pending.waiting {
            Waiting::Limits {
                ask,
                body_check,
                request_ended,
            } => (ask, body_check, request_ended),
            Waiting::Failure { subject, denial } => {
                match answer {
                    Ok(a) if a.overall == rls::Code::OverLimit => {
                        self.block_across_proxies(engine, &subject, now_ms, vm, io);
                    }
                    Ok(_) => {}
                    Err(failure) => {
                        // Counted here only: the block of this proxy still works.
                        io.count(Metric::Add(failure, 1));
                        io.log(
                            Level::Warn,
                            &format!(
                                "tollgate: rate-limit service failed ({}) counting an authentication failure",
                                why(failure)
                            ),
                        );
                    }
                }
                return self.reply(engine, &denial, io);
            }
        };
        let verdict = answer.and_then(|a| {
            engine
                .judge_global(&self.route, &ask, &a)
                .ok_or(Counter::RatelimitServiceMalformed)
        });
        match verdict {
            Err(failure) => {
                io.count(Metric::Add(failure, 1));
                let refusal = engine.global_failure(&self.route, &ask);
                io.log(
                    Level::Warn,
                    &format!(
                        "tollgate: rate-limit service failed ({}) route={}: {}",
                        why(failure),
                        self.route_label(),
                        if refusal.is_some() {
                            "refused (on_service_failure: deny)"
                        } else {
                            "let through (on_service_failure: allow)"
                        }
                    ),
                );
                match refusal {
                    Some(denial) => return self.refuse_late(engine, denial, io),
                    None => io.count(Metric::Add(Counter::RatelimitServiceFailedOpen, 1)),
                }
            }
            Ok(verdict) => {
                if !verdict.shadow_limited.is_empty() || verdict.result.is_err() {
                    io.count(Metric::Add(Counter::RatelimitServiceOverLimit, 1));
                }
                for name in &verdict.shadow_limited {
                    io.count(Metric::Add(Counter::RatelimitShadowLimited, 1));
                    io.log(
                        Level::Info,
                        &format!("tollgate: shadow limit `{name}` would have refused this request"),
                    );
                }
                match verdict.result {
                    Err(denial) => {
                        let mut step = self.refuse_late(engine, denial, io);
                        if let Step::Reply(reply) = &mut step {
                            reply.headers.extend(verdict.service_headers);
                        }
                        return step;
                    }
                    Ok(ratelimit) => {
                        if let Some(value) = ratelimit {
                            self.response_headers.retain(|(k, _)| k != "ratelimit");
                            self.response_headers.push(("ratelimit".into(), value));
                        }
                        self.response_headers.extend(verdict.service_headers);
                    }
                }
            }
        }
        match body_check {
            Some(rules) if request_ended => {
                let Some(body) = io.body(Body::Request, self.request_body_size) else {
                    return self.internal_error(engine, io);
                };
                self.finish_body(engine, rules, &body, io)
            }
            Some(rules) => {
                // The rest of the body is judged as it arrives, as if there had been no call.
                self.state = State::RequestBody { rules };
                Step::Pause
            }
            None => {
                self.state = State::Forwarded;
                io.count(Metric::Allowed { route: &self.route });
                Step::Continue
            }
        }
    }

    /// The service found `subject`'s authentication failures across proxies over
    /// `max_failures`: this proxy blocks it too.
    fn block_across_proxies(
        &self,
        engine: &Engine,
        subject: &str,
        now_ms: u64,
        vm: Vm<'_>,
        io: &mut dyn Io,
    ) {
        let Some(bf) = &engine.brute_force else {
            return;
        };
        // A store failure only loses this proxy's copy of the block: the next failure asks again.
        if let Ok(true) = bf.start_block(vm.store, &vm.state.limit_secret, subject, now_ms) {
            io.count(Metric::Add(Counter::BruteForceBlocks, 1));
            io.log(
                Level::Warn,
                "tollgate: brute-force protection blocked a client after repeated authentication failures across proxies",
            );
        }
    }

    /// Event: the host could not carry out the last step (a body it could not replace, headers
    /// it could not read): a generic 500, never a pass.
    pub fn on_host_error(&mut self, engine: &Engine, io: &mut dyn Io) -> Step {
        self.internal_error(engine, io)
    }

    /// Event: the stream is over. Returns the audit line to write, at its level, if any.
    pub fn on_done(&mut self, engine: &Engine, io: &mut dyn Io) -> Option<(Level, String)> {
        let mut record = self.audit.take()?;
        let options = &engine.audit;
        // Refusals and requests outside the policy (also those `default.action: allow` lets
        // through) are always written: sampling only thins out the routine traffic.
        if self.refusal.is_none() && !self.unknown_route && !options.sampled(&record.sampling_key())
        {
            return None;
        }
        record.status = self.status;
        record.mode = self.mode;
        record.route = (!self.route.is_empty()).then(|| self.route.clone());
        record.principal.clone_from(&self.principal);
        if let Some((code, carried_out)) = self.refusal {
            record.refused(code, carried_out);
        }
        // Only for a line that is written: Envoy answers this property slowly.
        if record.client_ip.is_none() && engine.limit_options.trusted_hops == 0 {
            record.client_ip = io.peer().map(|p| {
                super::request::client_ip(Some(&p), None, 0)
                    .unwrap_or_default()
                    .to_string()
            });
        }
        let level = match options.level {
            AuditLevel::Trace => Level::Trace,
            AuditLevel::Debug => Level::Debug,
            AuditLevel::Info => Level::Info,
            AuditLevel::Warn => Level::Warn,
        };
        Some((level, format!("tollgate.audit {}", record.to_json())))
    }

    /// Sends Tollgate's own reply, with the security headers it lacks; counted and audited.
    fn reply(&mut self, engine: &Engine, denial: &Denial, io: &mut dyn Io) -> Step {
        io.count(Metric::Denied {
            code: denial.code,
            route: &self.route,
        });
        self.refusal = Some((denial.code, true));
        let headers = denial
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.send(engine, denial.code, denial.status, headers, denial.body())
    }

    fn send(
        &mut self,
        engine: &Engine,
        code: DenialCode,
        status: u16,
        mut headers: Vec<(String, String)>,
        body: String,
    ) -> Step {
        for (k, v) in &engine.responses.security_headers {
            if !headers.iter().any(|(h, _)| h == k) {
                headers.push((k.clone(), v.clone()));
            }
        }
        self.state = State::Responded;
        self.status = status;
        Step::Reply(Reply {
            code,
            status,
            headers,
            body,
        })
    }

    /// A dry run lets through what `code` would have refused: counted, logged, audited.
    fn would_deny(&mut self, code: DenialCode, io: &mut dyn Io) {
        io.count(Metric::DryRun {
            code,
            route: &self.route,
        });
        self.refusal = Some((code, false));
        io.log(
            Level::Info,
            &format!(
                "tollgate: dry run: route={} would refuse with {}",
                self.route_label(),
                code.as_str()
            ),
        );
    }

    /// A refusal found after the request headers (body checks): carried out, or in dry-run
    /// reported while the request goes on.
    fn refuse_late(&mut self, engine: &Engine, denial: Denial, io: &mut dyn Io) -> Step {
        if let Some(counted) = &self.counted {
            let dry_run = self.mode == Mode::DryRun;
            let reports = io
                .store()
                .map(|store| super::detect::record_late(engine, counted, &denial, dry_run, store));
            report_detection(reports.unwrap_or_default(), io);
        }
        if self.mode != Mode::DryRun {
            return self.reply(engine, &denial, io);
        }
        self.pass_dry_run(engine, denial.code, io)
    }

    /// A dry run lets the request through that `code` refuses: reported (counted, logged,
    /// audited), marked for the upstream with `dry_run_header` while the request headers are
    /// still held (on the headers, or while a body check pauses them), and counted as allowed.
    fn pass_dry_run(&mut self, engine: &Engine, code: DenialCode, io: &mut dyn Io) -> Step {
        self.would_deny(code, io);
        if let Some(h) = &engine.dry_run_header {
            if io.request_header(Edit::Set(h, code.as_str())).is_err() {
                return self.internal_error(engine, io);
            }
        }
        self.state = State::Forwarded;
        io.count(Metric::Allowed { route: &self.route });
        Step::Continue
    }

    fn finish_body(
        &mut self,
        engine: &Engine,
        rules: BodyCheck,
        body: &[u8],
        io: &mut dyn Io,
    ) -> Step {
        self.state = State::Forwarded;
        let digest = self.content_digest.take();
        match engine.check_request_body(rules, &self.route, digest.as_deref(), body) {
            Ok(()) => {
                io.count(Metric::Allowed { route: &self.route });
                Step::Continue
            }
            Err(d) => self.refuse_late(engine, d, io),
        }
    }

    fn edit_response_headers(
        &self,
        engine: &Engine,
        headers: &[(String, String)],
        io: &mut dyn Io,
    ) -> ResponseHead {
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        for (name, v) in &self.response_headers {
            // `Link` is a list the upstream may use too (pagination): added, not replaced.
            if name == "link" || value(name).is_none() {
                io.response_header(Edit::Add(name, v));
            } else {
                io.response_header(Edit::Set(name, v));
            }
        }
        let policy = &engine.responses;
        for name in &policy.remove_headers {
            if value(name).is_some() {
                io.response_header(Edit::Remove(name));
            }
        }
        for (name, v) in &policy.security_headers {
            if value(name).is_none() {
                io.response_header(Edit::Add(name, v));
            }
        }
        if self.authenticated && policy.no_store_authenticated && value("cache-control").is_none() {
            io.response_header(Edit::Add("cache-control", "no-store"));
        }
        ResponseHead {
            status: value(":status")
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0),
            declared: value("content-length").and_then(|l| l.parse::<usize>().ok()),
            encoded: headers.iter().any(|(k, v)| {
                k == "content-encoding"
                    && v.split(',').any(|c| {
                        let c = c.trim();
                        !c.is_empty() && !c.eq_ignore_ascii_case("identity")
                    })
            }),
        }
    }

    /// Replaces an upstream 5xx with a generic problem; the upstream's text goes to the log.
    fn mask(&mut self, engine: &Engine, status: u16, detail: &[u8], io: &mut dyn Io) -> Step {
        io.count(Metric::Add(Counter::UpstreamMasked, 1));
        let route = self.route_label();
        io.log(
            Level::Warn,
            &format!("tollgate: upstream answered {status} on route `{route}`; body replaced by a generic problem"),
        );
        // The upstream's own text may hold internals (stack traces, connection strings): only at
        // debug level, for whoever debugs the upstream.
        let cut = detail
            .get(..detail.len().min(MASKED_DETAIL_BYTES))
            .unwrap_or_default();
        io.log(
            Level::Debug,
            &format!(
                "tollgate: masked upstream {status} body on route `{route}`: {:?}",
                String::from_utf8_lossy(cut)
            ),
        );
        let mut headers = vec![
            (
                "content-type".to_string(),
                crate::problem::CONTENT_TYPE.to_string(),
            ),
            ("cache-control".to_string(), "no-store".to_string()),
        ];
        headers.append(&mut self.response_headers);
        let body = crate::problem::upstream_error(status);
        self.send(engine, DenialCode::UpstreamError, status, headers, body)
    }

    /// A response the route's checks cannot judge: refused (502) or passed as the engine says.
    fn unchecked_response(
        &mut self,
        engine: &Engine,
        rules: usize,
        why: Unchecked,
        io: &mut dyn Io,
    ) -> Step {
        let verdict = engine.unchecked_response(rules, why);
        self.apply_verdict(engine, verdict, 0, io)
    }

    fn judge_response(
        &mut self,
        engine: &Engine,
        rules: usize,
        status: u16,
        body: &[u8],
        size: usize,
        io: &mut dyn Io,
    ) -> Step {
        let verdict = engine.check_response(rules, status, body);
        self.apply_verdict(engine, verdict, size, io)
    }

    fn apply_verdict(
        &mut self,
        engine: &Engine,
        verdict: Verdict,
        size: usize,
        io: &mut dyn Io,
    ) -> Step {
        let dry_run = self.mode == Mode::DryRun;
        match verdict {
            Verdict::Pass => Step::Continue,
            Verdict::Unchecked { why, refuse } => {
                io.count(Metric::Add(Counter::ResponseUnchecked, 1));
                let outcome = match (refuse, dry_run) {
                    (false, _) => "passed",
                    (true, true) => "dry run, passed",
                    (true, false) => "refused",
                };
                io.log(
                    Level::Warn,
                    &format!(
                        "tollgate: response on route `{}` could not be checked ({}): {outcome}",
                        self.route,
                        why.as_str()
                    ),
                );
                self.refuse_response(engine, refuse, DenialCode::ResponseUnchecked, io)
            }
            Verdict::Replace(body, v) => {
                if !v.is_empty() {
                    io.count(Metric::Add(Counter::ResponseInvalid, 1));
                    io.log(
                        Level::Warn,
                        &format!(
                            "tollgate: response on route `{}` breaks its schema (redacted): {}",
                            self.route,
                            describe(&v)
                        ),
                    );
                }
                io.count(Metric::Add(Counter::ResponseRedacted, 1));
                io.response_header(Edit::Set("content-length", &body.len().to_string()));
                Step::ReplaceBody { size, body }
            }
            Verdict::Report(v) => {
                io.count(Metric::Add(Counter::ResponseInvalid, 1));
                io.log(
                    Level::Warn,
                    &format!(
                        "tollgate: response on route `{}` breaks its schema (reported): {}",
                        self.route,
                        describe(&v)
                    ),
                );
                Step::Continue
            }
            Verdict::Block(v) => {
                io.count(Metric::Add(Counter::ResponseInvalid, 1));
                let outcome = if dry_run {
                    "dry run, passed"
                } else {
                    "blocked"
                };
                io.log(
                    Level::Warn,
                    &format!(
                        "tollgate: response on route `{}` breaks its schema ({outcome}): {}",
                        self.route,
                        describe(&v)
                    ),
                );
                self.refuse_response(engine, true, DenialCode::ResponseInvalid, io)
            }
        }
    }

    /// A response refused (`refuse`) with `code`: a 502 problem, or in dry-run a report.
    fn refuse_response(
        &mut self,
        engine: &Engine,
        refuse: bool,
        code: DenialCode,
        io: &mut dyn Io,
    ) -> Step {
        if !refuse {
            return Step::Continue;
        }
        if self.mode == Mode::DryRun {
            self.would_deny(code, io);
            return Step::Continue;
        }
        let d = crate::problem::denial(&engine.realm, code, Some(self.route.clone()));
        self.reply(engine, &d, io)
    }

    fn internal_error(&mut self, engine: &Engine, io: &mut dyn Io) -> Step {
        let d = crate::problem::denial(&engine.realm, DenialCode::InternalError, None);
        self.reply(engine, &d, io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const POLICY: &str = r#"{
        "dry_run_header": "x-tollgate-dry-run",
        "responses": {"mask_upstream_errors": true},
        "routes": [
            {"name": "health", "path": "/health", "methods": ["GET"], "public": true},
            {"name": "echo", "path": "/echo", "methods": ["POST"], "public": true,
             "request": {"body": {"type": "object", "required": ["a"]}, "max_body_bytes": 16}},
            {"name": "shadow", "path": "/shadow", "methods": ["POST"], "public": true,
             "mode": "dry-run", "request": {"body": {"type": "object", "required": ["a"]}}},
            {"name": "block", "path": "/block", "methods": ["GET"], "public": true,
             "response": {"schemas": {"200": {"type": "object", "required": ["id"]}}}},
            {"name": "redact", "path": "/redact", "methods": ["GET"], "public": true,
             "response": {"schemas": {"200": {"type": "object", "properties": {"id": {}},
                          "additionalProperties": false}}, "mode": "redact"}},
            {"name": "dryq", "path": "/dryq", "methods": ["GET"], "public": true, "mode": "dry-run",
             "request": {"required_query": ["q"]}},
            {"name": "report", "path": "/report", "methods": ["GET"], "public": true,
             "mode": "dry-run",
             "response": {"schemas": {"200": {"type": "object", "required": ["id"]}}}}
        ]
    }"#;

    /// Records what the exchange asks of its host; bodies come from `request` / `response`.
    #[derive(Default)]
    struct Host {
        request: Vec<u8>,
        response: Vec<u8>,
        upstream: Vec<String>,
        downstream: Vec<String>,
        metrics: Vec<String>,
        logs: Vec<(Level, String)>,
        fail_edits: bool,
    }

    impl Io for Host {
        fn request_header(&mut self, edit: Edit<'_>) -> Result<(), HostError> {
            if self.fail_edits {
                return Err(HostError);
            }
            self.upstream.push(format!("{edit:?}"));
            Ok(())
        }
        fn response_header(&mut self, edit: Edit<'_>) {
            self.downstream.push(format!("{edit:?}"));
        }
        fn body(&mut self, which: Body, size: usize) -> Option<Vec<u8>> {
            let b = match which {
                Body::Request => &self.request,
                Body::Response | Body::CallResponse | Body::GrpcResponse => &self.response,
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
            Some("10.0.0.9:1234".into())
        }
    }

    struct Run {
        engine: Engine,
        state: VmState,
        store: MemoryStore,
    }

    impl Run {
        fn new() -> Run {
            let engine = Engine::compile(POLICY.as_bytes()).unwrap();
            let state = engine.new_state();
            Run {
                engine,
                state,
                store: MemoryStore::default(),
            }
        }

        /// Request headers for `method path`; `body`: whether a body follows.
        fn start(
            &mut self,
            ex: &mut Exchange,
            host: &mut Host,
            method: &str,
            path: &str,
            body: bool,
        ) -> Step {
            let headers = vec![
                (":authority".to_string(), "api".to_string()),
                (":method".to_string(), method.to_string()),
                (":path".to_string(), path.to_string()),
                ("content-type".to_string(), "application/json".to_string()),
                ("x-tollgate-principal".to_string(), "forged".to_string()),
            ];
            let req = Request {
                method,
                path,
                headers: &headers,
                peer: None,
                connection: None,
            };
            let vm = Vm {
                state: &mut self.state,
                store: &self.store,
            };
            ex.on_request_headers(&self.engine, &req, !body, 1_800_000_000_000, vm, host)
        }

        fn respond(&self, ex: &mut Exchange, host: &mut Host, status: u16, body: &[u8]) -> Step {
            host.response = body.to_vec();
            let headers = vec![(":status".to_string(), status.to_string())];
            match ex.on_response_headers(&self.engine, &headers, body.is_empty(), host) {
                Step::Pause => ex.on_response_body(&self.engine, body.len(), true, host),
                other => other,
            }
        }
    }

    fn status(step: &Step) -> Option<u16> {
        match step {
            Step::Reply(r) => Some(r.status),
            _ => None,
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_plain_request_goes_on_and_forged_identity_is_removed() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        assert_eq!(
            run.start(&mut ex, &mut host, "GET", "/health", false),
            Step::Continue
        );
        assert_eq!(ex.state(), State::Forwarded);
        assert!(host
            .upstream
            .contains(&"Remove(\"x-tollgate-principal\")".to_string()));
        assert_eq!(run.respond(&mut ex, &mut host, 200, b""), Step::Continue);
        assert_eq!(ex.state(), State::Complete);
        // Security headers the response lacks are added.
        assert!(host
            .downstream
            .iter()
            .any(|e| e.contains("x-content-type-options")));
        let (level, line) = ex.on_done(&run.engine, &mut host).unwrap();
        assert_eq!(level, Level::Info);
        assert!(
            line.contains("\"decision\":\"allow\"") && line.contains("\"status\":200"),
            "{line}"
        );
        assert!(line.contains("\"client_ip\":\"10.0.0.9\""), "{line}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_body_is_held_until_it_passes() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.request = br#"{"a": 1}"#.to_vec();
        assert_eq!(
            run.start(&mut ex, &mut host, "POST", "/echo", true),
            Step::Pause
        );
        assert!(matches!(ex.state(), State::RequestBody { .. }));
        assert_eq!(
            ex.on_request_body(&run.engine, 3, false, &mut host),
            Step::Pause
        );
        assert!(!host.metrics.iter().any(|m| m.starts_with("Allowed")));
        assert_eq!(
            ex.on_request_body(&run.engine, 8, true, &mut host),
            Step::Continue
        );
        assert!(host.metrics.iter().any(|m| m.starts_with("Allowed")));

        // Refused on size as soon as it is known, on content once complete.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "POST", "/echo", true);
        let step = ex.on_request_body(&run.engine, 17, false, &mut host);
        assert_eq!(status(&step), Some(413));
        assert_eq!(ex.refusal(), Some((DenialCode::PayloadTooLarge, true)));
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.request = br#"{"b": 1}"#.to_vec();
        run.start(&mut ex, &mut host, "POST", "/echo", true);
        // Trailers end the body instead of a data frame.
        ex.on_request_body(&run.engine, 8, false, &mut host);
        let step = ex.on_request_trailers(&run.engine, &mut host);
        let Step::Reply(reply) = step else {
            panic!("{step:?}")
        };
        assert_eq!(ex.refusal(), Some((DenialCode::RequestInvalid, true)));
        assert!(reply.body.contains("\"violations\""));
        assert!(reply.headers.iter().any(|(k, _)| k == "x-frame-options"));
        // A body the host cannot give back is never judged as if read.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "POST", "/echo", true);
        assert_eq!(
            status(&ex.on_request_body(&run.engine, 8, true, &mut host)),
            Some(500)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_dry_run_reports_a_body_refusal_and_goes_on() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.request = b"{}".to_vec();
        run.start(&mut ex, &mut host, "POST", "/shadow", true);
        assert_eq!(
            ex.on_request_body(&run.engine, 2, true, &mut host),
            Step::Continue
        );
        assert_eq!(ex.refusal(), Some((DenialCode::RequestInvalid, false)));
        assert!(host
            .upstream
            .contains(&"Set(\"x-tollgate-dry-run\", \"request_invalid\")".to_string()));
        assert!(host.metrics.iter().any(|m| m.starts_with("DryRun")));
        let (_, line) = ex.on_done(&run.engine, &mut host).unwrap();
        assert!(line.contains("\"decision\":\"would_deny\""), "{line}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn upstream_5xx_is_masked_once_its_text_is_read() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/health", false);
        host.response = b"db password=hunter2 stack trace".to_vec();
        let headers = vec![(":status".to_string(), "503".to_string())];
        assert_eq!(
            ex.on_response_headers(&run.engine, &headers, false, &mut host),
            Step::Pause
        );
        assert_eq!(ex.state(), State::Masking { status: 503 });
        let step = ex.on_response_body(&run.engine, host.response.len(), true, &mut host);
        let Step::Reply(reply) = step else {
            panic!("{step:?}")
        };
        assert_eq!((reply.status, reply.code), (503, DenialCode::UpstreamError));
        assert!(!reply.body.contains("hunter2") && reply.body.contains("upstream_error"));
        assert!(host
            .logs
            .iter()
            .any(|(l, m)| *l == Level::Debug && m.contains("hunter2")));
        assert!(!host
            .logs
            .iter()
            .any(|(l, m)| *l > Level::Debug && m.contains("hunter2")));
        // Tollgate's own reply passes through the response phase untouched.
        let own = vec![(":status".to_string(), "503".to_string())];
        assert_eq!(
            ex.on_response_headers(&run.engine, &own, false, &mut host),
            Step::Continue
        );
        assert_eq!(ex.state(), State::Responded);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn responses_are_blocked_redacted_or_reported() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/block", false);
        assert_eq!(
            status(&run.respond(&mut ex, &mut host, 200, br#"{"x": 1}"#)),
            Some(502)
        );
        assert_eq!(ex.refusal(), Some((DenialCode::ResponseInvalid, true)));

        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/redact", false);
        let step = run.respond(&mut ex, &mut host, 200, br#"{"id": 1, "secret": 2}"#);
        assert_eq!(
            step,
            Step::ReplaceBody {
                size: 22,
                body: br#"{"id":1}"#.to_vec()
            }
        );
        assert!(host
            .downstream
            .contains(&"Set(\"content-length\", \"8\")".to_string()));
        // If the host cannot replace it, a generic 500 goes out, never the original.
        assert_eq!(status(&ex.on_host_error(&run.engine, &mut host)), Some(500));

        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/report", false);
        assert_eq!(run.respond(&mut ex, &mut host, 200, b"{}"), Step::Continue);
        assert_eq!(ex.refusal(), Some((DenialCode::ResponseInvalid, false)));
        // Not JSON: the block route refuses what it cannot check.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/block", false);
        assert_eq!(
            status(&run.respond(&mut ex, &mut host, 200, b"<html>")),
            Some(502)
        );
        assert_eq!(ex.refusal(), Some((DenialCode::ResponseUnchecked, true)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refusals_are_replies_and_host_failures_are_500s() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        let step = run.start(&mut ex, &mut host, "GET", "/nowhere", false);
        assert_eq!(status(&step), Some(404));
        assert_eq!(ex.state(), State::Responded);
        assert!(host.metrics.iter().any(|m| m.contains("RouteNotFound")));
        // A header Tollgate must set that the host refuses is never skipped.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.fail_edits = true;
        let headers = vec![(":method".to_string(), "GET".to_string())];
        let req = Request {
            method: "GET",
            path: "/health/../health",
            headers: &headers,
            peer: None,
            connection: None,
        };
        let vm = Vm {
            state: &mut run.state,
            store: &run.store,
        };
        let step = ex.on_request_headers(&run.engine, &req, true, 0, vm, &mut host);
        assert_eq!(status(&step), Some(500), "{step:?}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn diagnostics_only_when_explained() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/x/../health", false);
        assert!(ex.diagnostics().is_none());
        let (mut ex, mut host) = (Exchange::explained(), Host::default());
        run.start(&mut ex, &mut host, "GET", "/x/../health", false);
        let d = ex.diagnostics().unwrap();
        assert_eq!(d.normalized_path.as_deref(), Some("/health"));
        let hit = d.route.as_ref().unwrap();
        assert_eq!((hit.index, hit.name.as_str()), (0, "health"));
        assert_eq!(d.authentication, None, "public route");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_dry_run_lets_a_header_refusal_through_marked_and_without_forgeries() {
        let mut run = Run::new();
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        assert_eq!(
            run.start(&mut ex, &mut host, "GET", "/dryq", false),
            Step::Continue
        );
        assert_eq!(ex.refusal(), Some((DenialCode::RequestInvalid, false)));
        assert_eq!((ex.mode(), ex.route()), (Mode::DryRun, "dryq"));
        assert_eq!(
            host.upstream,
            [
                "Remove(\"x-tollgate-principal\")",
                "Set(\"x-tollgate-dry-run\", \"request_invalid\")"
            ]
        );
        assert!(host.metrics.iter().any(|m| m.starts_with("DryRun")));
        assert!(host.metrics.iter().any(|m| m.starts_with("Allowed")));
        // A mark the host refuses to set is never skipped.
        let (mut ex, mut host) = (Exchange::new(), Host::default());
        host.fail_edits = true;
        let step = run.start(&mut ex, &mut host, "GET", "/dryq", false);
        assert_eq!(status(&step), Some(500));
    }
}
