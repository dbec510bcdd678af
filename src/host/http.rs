//! Per-request adapter: request headers in, engine decision out, applied to Envoy.

use super::{log, now_ms, probe, store::HostStore, Shared};
use crate::codes::DenialCode;
use crate::engine::audit::{AuditLevel, AuditRecord, Verdict as AuditVerdict};
use crate::engine::{Decision, Denial, Mode, ProviderKeys, Request};
use crate::jwt::remote;
use crate::payload::response::{Unchecked, Verdict};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::rc::Rc;

pub(crate) struct Http {
    shared: Rc<Shared>,
    /// Added to the upstream's response (rate-limit headers).
    response_headers: Vec<(String, String)>,
    /// Request rules the body must pass, while the body is buffered.
    body_check: Option<usize>,
    /// Response rules of the matched route.
    response_check: Option<usize>,
    /// While a response body is buffered: rules, status, largest body checked.
    checking_response: Option<(usize, u16, usize)>,
    /// Bytes of the request and response bodies buffered so far (read again when trailers end
    /// the stream instead of a data frame).
    request_body_size: usize,
    response_body_size: usize,
    /// Name of the matched route (empty: none), for metrics and logs of later phases.
    route: String,
    mode: Mode,
    authenticated: bool,
    /// Tollgate answered with its own reply: it is not masked.
    replied: bool,
    /// An upstream 5xx whose body is being replaced: its status.
    masking: Option<u16>,
    /// The status sent to the client, as last seen.
    status: u16,
    audit: Option<AuditRecord>,
}

/// Upstream error text kept for the log when a 5xx body is masked.
const MASKED_DETAIL_BYTES: usize = 512;

impl Http {
    pub fn new(shared: Rc<Shared>) -> Http {
        Http {
            shared,
            response_headers: vec![],
            body_check: None,
            response_check: None,
            checking_response: None,
            request_body_size: 0,
            response_body_size: 0,
            route: String::new(),
            mode: Mode::Enforce,
            authenticated: false,
            replied: false,
            masking: None,
            status: 0,
            audit: None,
        }
    }

    /// Sends Tollgate's own response, with the security headers it lacks.
    fn send(&mut self, status: u16, headers: Vec<(&str, &str)>, body: &str) -> Action {
        let shared = Rc::clone(&self.shared);
        let mut all: Vec<(&str, &str)> = headers.clone();
        for (k, v) in &shared.engine.responses.security_headers {
            if !headers.iter().any(|(h, _)| h == k) {
                all.push((k.as_str(), v.as_str()));
            }
        }
        self.replied = true;
        self.status = status;
        if hostcalls::send_http_response(u32::from(status), all, Some(body.as_bytes())).is_err() {
            log(LogLevel::Error, "tollgate: could not send a local reply");
        }
        Action::Pause
    }

    fn reply(&mut self, denial: &Denial) -> Action {
        self.shared.metrics.denied(denial.code, &self.route);
        if let Some(a) = self.audit.as_mut() {
            a.refused(denial.code, true);
        }
        let headers: Vec<(&str, &str)> = denial
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        self.send(denial.status, headers, &denial.body)
    }

    /// The matched route's name for log lines, `-` when none matched.
    fn route_label(&self) -> &str {
        if self.route.is_empty() {
            "-"
        } else {
            &self.route
        }
    }

    /// A dry run lets through what `code` would have refused: counted, logged, audited.
    fn would_deny(&mut self, code: DenialCode) {
        self.shared.metrics.dry_run(code, &self.route);
        if let Some(a) = self.audit.as_mut() {
            a.refused(code, false);
        }
        log(
            LogLevel::Info,
            &format!(
                "tollgate: dry run: route={} would refuse with {}",
                self.route_label(),
                code.as_str()
            ),
        );
    }

    /// A refusal found after the request headers (body checks): carried out, or in dry-run
    /// reported while the request goes on.
    fn refuse_late(&mut self, denial: &Denial) -> Action {
        if self.mode != Mode::DryRun {
            return self.reply(denial);
        }
        self.would_deny(denial.code);
        if let Some(h) = &self.shared.engine.dry_run_header {
            // The request headers are still held (body checks pause them), so this reaches the
            // upstream.
            let _ = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                h,
                Some(denial.code.as_str()),
            );
        }
        self.shared.metrics.allowed(&self.route);
        Action::Continue
    }

    fn finish_body(&mut self, rules: usize, body: &[u8]) -> Action {
        self.body_check = None;
        match self.shared.engine.check_body(rules, &self.route, body) {
            Ok(()) => {
                self.shared.metrics.allowed(&self.route);
                Action::Continue
            }
            Err(d) => self.refuse_late(&d),
        }
    }

    /// Replaces an upstream 5xx with a generic problem; the upstream's text goes to the log.
    fn mask(&mut self, status: u16, detail: &[u8]) -> Action {
        self.masking = None;
        self.shared.metrics.upstream_masked();
        let route = self.route_label();
        log(
            LogLevel::Warn,
            &format!("tollgate: upstream answered {status} on route `{route}`; body replaced by a generic problem"),
        );
        // The upstream's own text may hold internals (stack traces, connection strings): only at
        // debug level, for whoever debugs the upstream.
        let cut = detail
            .get(..detail.len().min(MASKED_DETAIL_BYTES))
            .unwrap_or_default();
        log(
            LogLevel::Debug,
            &format!(
                "tollgate: masked upstream {status} body on route `{route}`: {:?}",
                String::from_utf8_lossy(cut)
            ),
        );
        let body = crate::problem::upstream_error(status);
        let extra = std::mem::take(&mut self.response_headers);
        let mut headers = vec![
            ("content-type", crate::problem::CONTENT_TYPE),
            ("cache-control", "no-store"),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.send(status, headers, &body)
    }

    /// Rate-limit and lifecycle headers set, security headers the response lacks added,
    /// implementation-revealing headers removed. Reads the header map once (host calls are the
    /// cost here) and returns the status, declared length and whether a content coding other
    /// than `identity` was applied.
    fn edit_response_headers(&self) -> (u16, Option<usize>, bool) {
        let headers = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
        if probe::stop_at(5) {
            return (0, None, false);
        }
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let map = MapType::HttpResponseHeaders;
        for (name, v) in &self.response_headers {
            // `Link` is a list the upstream may use too (pagination): added, not replaced.
            let _ = if name == "link" || value(name).is_none() {
                hostcalls::add_map_value(map, name, v)
            } else {
                hostcalls::set_map_value(map, name, Some(v))
            };
        }
        let policy = &self.shared.engine.responses;
        for name in &policy.remove_headers {
            if value(name).is_some() {
                let _ = hostcalls::remove_map_value(map, name);
            }
        }
        for (name, v) in &policy.security_headers {
            if value(name).is_none() {
                let _ = hostcalls::add_map_value(map, name, v);
            }
        }
        if self.authenticated && policy.no_store_authenticated && value("cache-control").is_none() {
            let _ = hostcalls::add_map_value(map, "cache-control", "no-store");
        }
        let status = value(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let length = value("content-length").and_then(|l| l.parse::<usize>().ok());
        let encoded = headers.iter().any(|(k, v)| {
            k == "content-encoding"
                && v.split(',').any(|c| {
                    let c = c.trim();
                    !c.is_empty() && !c.eq_ignore_ascii_case("identity")
                })
        });
        (status, length, encoded)
    }

    /// A response the route's checks cannot judge: refused (502) or passed as the engine says.
    fn unchecked_response(&mut self, rules: usize, why: Unchecked) -> Action {
        let verdict = self.shared.engine.unchecked_response(rules, why);
        self.apply_response_verdict(verdict, 0)
    }

    fn judge_response(&mut self, rules: usize, status: u16, body: &[u8], size: usize) -> Action {
        let verdict = self.shared.engine.check_response(rules, status, body);
        self.apply_response_verdict(verdict, size)
    }

    fn apply_response_verdict(&mut self, verdict: Verdict, size: usize) -> Action {
        let route = self.route.clone();
        let describe = |v: &[crate::payload::Violation]| {
            v.iter()
                .map(|x| {
                    format!(
                        "{} {}",
                        if x.pointer.is_empty() {
                            "/"
                        } else {
                            &x.pointer
                        },
                        x.keyword
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match verdict {
            Verdict::Pass => Action::Continue,
            Verdict::Unchecked { why, refuse } => {
                self.shared.metrics.response_unchecked();
                let outcome = match (refuse, self.mode) {
                    (false, _) => "passed",
                    (true, Mode::DryRun) => "dry run, passed",
                    (true, _) => "refused",
                };
                log(
                    LogLevel::Warn,
                    &format!("tollgate: response on route `{route}` could not be checked ({}): {outcome}", why.as_str()),
                );
                if !refuse {
                    return Action::Continue;
                }
                if self.mode == Mode::DryRun {
                    self.would_deny(DenialCode::ResponseUnchecked);
                    return Action::Continue;
                }
                let d = crate::problem::denial(
                    &self.shared.engine.realm,
                    DenialCode::ResponseUnchecked,
                    Some(route),
                );
                self.reply(&d)
            }
            Verdict::Replace(new, v) => {
                self.shared.metrics.response(!v.is_empty(), true);
                if !v.is_empty() {
                    log(LogLevel::Warn, &format!("tollgate: response on route `{route}` breaks its schema (redacted): {}", describe(&v)));
                }
                if hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, &new).is_err() {
                    return self.internal_error();
                }
                let _ = hostcalls::set_map_value(
                    MapType::HttpResponseHeaders,
                    "content-length",
                    Some(&new.len().to_string()),
                );
                Action::Continue
            }
            Verdict::Report(v) => {
                self.shared.metrics.response(true, false);
                log(
                    LogLevel::Warn,
                    &format!(
                        "tollgate: response on route `{route}` breaks its schema (reported): {}",
                        describe(&v)
                    ),
                );
                Action::Continue
            }
            Verdict::Block(v) if self.mode == Mode::DryRun => {
                self.shared.metrics.response(true, false);
                log(
                    LogLevel::Warn,
                    &format!(
                        "tollgate: response on route `{route}` breaks its schema (dry run, passed): {}",
                        describe(&v)
                    ),
                );
                self.would_deny(DenialCode::ResponseInvalid);
                Action::Continue
            }
            Verdict::Block(v) => {
                self.shared.metrics.response(true, false);
                log(
                    LogLevel::Warn,
                    &format!(
                        "tollgate: response on route `{route}` breaks its schema (blocked): {}",
                        describe(&v)
                    ),
                );
                let d = crate::problem::denial(
                    &self.shared.engine.realm,
                    DenialCode::ResponseInvalid,
                    Some(route),
                );
                self.reply(&d)
            }
        }
    }

    /// The first `size` bytes of a buffered body; `None` if the host cannot give all of them
    /// (then nothing is judged as if it had been read).
    fn buffered(&self, which: BufferType, size: usize) -> Option<Vec<u8>> {
        if size == 0 {
            return Some(Vec::new());
        }
        let body = hostcalls::get_buffer(which, 0, size).ok()??;
        (body.len() == size).then_some(body)
    }

    fn internal_error(&mut self) -> Action {
        let denial =
            crate::problem::denial(&self.shared.engine.realm, DenialCode::InternalError, None);
        self.reply(&denial)
    }
}

impl Context for Http {}

/// The downstream peer, `ip:port`.
fn peer_address() -> Option<String> {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if probe::stop_at(1) {
            return Action::Continue;
        }
        let (Ok(headers), Some(now_ms)) =
            (hostcalls::get_map(MapType::HttpRequestHeaders), now_ms())
        else {
            return self.internal_error();
        };
        if probe::stop_at(2) {
            return Action::Continue;
        }
        let now = now_ms / 1000;
        // A host call per request, so only when a decision needs it; the audit line fetches it
        // when it is written.
        let peer = if self.shared.engine.uses_peer {
            peer_address()
        } else {
            None
        };
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let request = Request {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            peer: peer.as_deref(),
        };
        if self.shared.engine.audit.enabled {
            self.audit = Some(AuditRecord::new(
                now_ms,
                request.header_values("x-request-id").next(),
                self.shared.engine.client_ip(&request),
                request.method,
                request.path_only(),
                Mode::Enforce,
            ));
        }
        let decided = match self.shared.state.try_borrow_mut() {
            Ok(mut state) => Some(
                self.shared
                    .engine
                    .decide_at(&request, now_ms, &mut state, &HostStore),
            ),
            // INVARIANT: contexts of one VM run one at a time, so the state is never borrowed here.
            Err(_) => None,
        };
        let Some(outcome) = decided else {
            return self.internal_error();
        };
        if probe::stop_at(3) {
            return Action::Continue;
        }
        if let Some(hit) = outcome.effects.cache_hit {
            self.shared.metrics.cache(hit);
        }
        self.shared.metrics.limits(&outcome.effects);
        if outcome.effects.block_started {
            self.shared.metrics.block_started();
            log(LogLevel::Warn, "tollgate: brute-force protection blocked a client after repeated authentication failures");
        }
        if outcome.effects.deprecated {
            self.shared.metrics.deprecated();
        }
        for name in &outcome.effects.shadow_limited {
            log(
                LogLevel::Info,
                &format!("tollgate: shadow limit `{name}` would have refused this request"),
            );
        }
        if let Some(index) = outcome.effects.early_refresh {
            if let Some(ProviderKeys::Remote(spec)) =
                self.shared.engine.providers.get(index).map(|p| &p.keys)
            {
                let _ = remote::request_early(&HostStore, spec, now);
            }
        }
        match outcome.decision {
            Decision::Allow(allow) => {
                self.route = allow.route;
                self.mode = allow.mode;
                self.authenticated = allow.authenticated;
                if let Some(a) = self.audit.as_mut() {
                    a.mode = allow.mode;
                    a.route = (!self.route.is_empty()).then(|| self.route.clone());
                    a.principal = allow.principal;
                }
                if let Some(code) = allow.would_deny {
                    self.would_deny(code);
                }
                for name in &allow.remove_headers {
                    if headers.iter().any(|(k, _)| k == name) {
                        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
                    }
                }
                for (name, value) in &allow.set_headers {
                    if hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                        .is_err()
                    {
                        return self.internal_error();
                    }
                }
                if allow.unknown_route {
                    // The policy is the API inventory: a request outside it is always visible.
                    log(
                        LogLevel::Warn,
                        &format!(
                            "tollgate: unknown endpoint allowed by `default.action`: {} {}",
                            request.method,
                            request.path_only()
                        ),
                    );
                }
                self.response_headers = allow.response_headers;
                self.response_check = allow.response_check;
                if let Some(rules) = allow.body_check {
                    if end_of_stream {
                        return self.finish_body(rules, &[]);
                    }
                    // Envoy holds the headers (`allow_on_headers_stop_iteration: true`) until the
                    // body has passed, so nothing reaches the upstream before the check.
                    self.body_check = Some(rules);
                    return Action::Pause;
                }
                self.shared.metrics.allowed(&self.route);
                Action::Continue
            }
            Decision::Deny(denial) => {
                self.route = denial.route.clone().unwrap_or_default();
                if let Some(a) = self.audit.as_mut() {
                    a.route.clone_from(&denial.route);
                    a.principal.clone_from(&denial.principal);
                }
                log(
                    LogLevel::Debug,
                    &format!(
                        "tollgate: denied route={} code={}",
                        denial.route.as_deref().unwrap_or("-"),
                        denial.code.as_str()
                    ),
                );
                self.reply(&denial)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(rules) = self.body_check else {
            return Action::Continue;
        };
        self.request_body_size = body_size;
        if body_size > self.shared.engine.max_body_bytes(rules) {
            // Decided as soon as the size is known: nothing more is buffered.
            self.body_check = None;
            let d = crate::problem::denial(
                &self.shared.engine.realm,
                DenialCode::PayloadTooLarge,
                Some(self.route.clone()),
            );
            return self.refuse_late(&d);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => return self.internal_error(),
        };
        self.finish_body(rules, &body)
    }

    /// Trailers end the request instead of a data frame (HTTP/2, chunked HTTP/1.1): the body
    /// buffered so far is complete and is judged now, before anything reaches the upstream.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(rules) = self.body_check else {
            return Action::Continue;
        };
        let Some(body) = self.buffered(BufferType::HttpRequestBody, self.request_body_size) else {
            return self.internal_error();
        };
        self.finish_body(rules, &body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if probe::stopped_before(5) {
            return Action::Continue;
        }
        let (status, declared, encoded) = self.edit_response_headers();
        self.status = status;
        if status >= 500 && !self.replied && self.shared.engine.responses.mask_upstream_errors {
            if end_of_stream {
                return self.mask(status, &[]);
            }
            // Hold the headers: the whole response is replaced once the body has been read.
            self.masking = Some(status);
            return Action::Pause;
        }
        let Some(rules) = self.response_check else {
            return Action::Continue;
        };
        let Some(max) = self.shared.engine.response_applies(rules, status) else {
            return Action::Continue;
        };
        if encoded {
            // Tollgate asked for an uncompressed response (`accept-encoding` removed); bytes it
            // cannot read are not passed as if they had been checked.
            return self.unchecked_response(rules, Unchecked::Encoded);
        }
        if declared.is_some_and(|l| l > max) {
            return self.unchecked_response(rules, Unchecked::TooLarge);
        }
        if end_of_stream {
            return self.judge_response(rules, status, &[], 0);
        }
        // Hold the response headers until the body is judged, so a blocked response really
        // changes the status and a redacted one gets a correct content-length.
        self.checking_response = Some((rules, status, max));
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body_size = body_size;
        if let Some(status) = self.masking {
            if !end_of_stream && body_size < MASKED_DETAIL_BYTES {
                return Action::Pause;
            }
            let detail = hostcalls::get_buffer(
                BufferType::HttpResponseBody,
                0,
                body_size.min(MASKED_DETAIL_BYTES),
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            return self.mask(status, &detail);
        }
        let Some((rules, status, max)) = self.checking_response else {
            return Action::Continue;
        };
        if body_size > max {
            self.checking_response = None;
            return self.unchecked_response(rules, Unchecked::TooLarge);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.checking_response = None;
        let Some(body) = self.buffered(BufferType::HttpResponseBody, body_size) else {
            return self.unchecked_response(rules, Unchecked::NotJson);
        };
        self.judge_response(rules, status, &body, body_size)
    }

    /// The upstream ended its response with trailers: the buffered body is complete.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let size = self.response_body_size;
        if let Some(status) = self.masking {
            let detail = self
                .buffered(BufferType::HttpResponseBody, size.min(MASKED_DETAIL_BYTES))
                .unwrap_or_default();
            return self.mask(status, &detail);
        }
        let Some((rules, status, _)) = self.checking_response.take() else {
            return Action::Continue;
        };
        let Some(body) = self.buffered(BufferType::HttpResponseBody, size) else {
            return self.unchecked_response(rules, Unchecked::NotJson);
        };
        self.judge_response(rules, status, &body, size)
    }

    fn on_log(&mut self) {
        let Some(mut record) = self.audit.take() else {
            return;
        };
        let options = &self.shared.engine.audit;
        if record.decision == AuditVerdict::Allow && !options.sampled(&record.sampling_key()) {
            return;
        }
        record.status = self.status;
        // Only for a line that is written: the property is a host call Envoy answers slowly.
        if record.client_ip.is_none() && self.shared.engine.limit_options.trusted_hops == 0 {
            record.client_ip = peer_address().map(|p| {
                crate::ratelimit::client_ip(Some(&p), None, 0)
                    .unwrap_or_default()
                    .to_string()
            });
        }
        let level = match options.level {
            AuditLevel::Trace => LogLevel::Trace,
            AuditLevel::Debug => LogLevel::Debug,
            AuditLevel::Info => LogLevel::Info,
            AuditLevel::Warn => LogLevel::Warn,
        };
        log(level, &format!("tollgate.audit {}", record.to_json()));
    }
}
