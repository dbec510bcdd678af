//! Per-request adapter: request headers in, engine decision out, applied to Envoy.

use super::{log, now_ms, store::HostStore, Shared};
use crate::codes::DenialCode;
use crate::engine::{Decision, Denial, ProviderKeys, Request};
use crate::jwt::remote;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::rc::Rc;

pub(crate) struct Http {
    shared: Rc<Shared>,
    /// Added to the upstream's response (rate-limit headers).
    response_headers: Vec<(String, String)>,
    /// Request rules the body must pass, and the route name, while the body is buffered.
    body_check: Option<(usize, String)>,
    /// Response rules of the matched route, and the route name.
    response_check: Option<(usize, String)>,
    /// While a response body is buffered: rules, status, largest body checked.
    checking_response: Option<(usize, u16, usize)>,
}

impl Http {
    pub fn new(shared: Rc<Shared>) -> Http {
        Http {
            shared,
            response_headers: vec![],
            body_check: None,
            response_check: None,
            checking_response: None,
        }
    }

    fn reply(&self, denial: &Denial) -> Action {
        self.shared.metrics.denied(denial.code);
        let headers: Vec<(&str, &str)> = denial
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        if hostcalls::send_http_response(
            u32::from(denial.status),
            headers,
            Some(denial.body.as_bytes()),
        )
        .is_err()
        {
            log(LogLevel::Error, "tollgate: could not send a local reply");
        }
        Action::Pause
    }

    fn finish_body(&mut self, rules: usize, route: &str, body: &[u8]) -> Action {
        self.body_check = None;
        match self.shared.engine.check_body(rules, route, body) {
            Ok(()) => {
                self.shared.metrics.allowed();
                Action::Continue
            }
            Err(d) => self.reply(&d),
        }
    }

    fn judge_response(
        &mut self,
        rules: usize,
        status: u16,
        route: &str,
        body: &[u8],
        size: usize,
    ) -> Action {
        use crate::payload::response::Verdict;
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
        match self.shared.engine.check_response(rules, status, body) {
            Verdict::Pass => Action::Continue,
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
                    Some(route.to_string()),
                );
                self.reply(&d)
            }
        }
    }

    fn internal_error(&self) -> Action {
        let denial =
            crate::problem::denial(&self.shared.engine.realm, DenialCode::InternalError, None);
        self.reply(&denial)
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (Ok(headers), Some(now_ms)) =
            (hostcalls::get_map(MapType::HttpRequestHeaders), now_ms())
        else {
            return self.internal_error();
        };
        let now = now_ms / 1000;
        let peer = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
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
        let outcome = match self.shared.state.try_borrow_mut() {
            Ok(mut state) => self
                .shared
                .engine
                .decide_at(&request, now_ms, &mut state, &HostStore),
            // INVARIANT: contexts of one VM run one at a time, so the state is never borrowed here.
            Err(_) => return self.internal_error(),
        };
        if let Some(hit) = outcome.effects.cache_hit {
            self.shared.metrics.cache(hit);
        }
        self.shared.metrics.limits(&outcome.effects);
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
        match &outcome.decision {
            Decision::Allow(allow) => {
                for name in &allow.remove_headers {
                    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
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
                self.response_headers = allow.response_headers.clone();
                self.response_check = allow.response_check.map(|r| (r, allow.route.clone()));
                if let Some(rules) = allow.body_check {
                    if end_of_stream {
                        return self.finish_body(rules, &allow.route, &[]);
                    }
                    // Envoy holds the headers (`allow_on_headers_stop_iteration: true`) until the
                    // body has passed, so nothing reaches the upstream before the check.
                    self.body_check = Some((rules, allow.route.clone()));
                    return Action::Pause;
                }
                self.shared.metrics.allowed();
                Action::Continue
            }
            Decision::Deny(denial) => {
                log(
                    LogLevel::Debug,
                    &format!(
                        "tollgate: denied route={} code={}",
                        denial.route.as_deref().unwrap_or("-"),
                        denial.code.as_str()
                    ),
                );
                self.reply(denial)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((rules, route)) = self.body_check.clone() else {
            return Action::Continue;
        };
        if body_size > self.shared.engine.max_body_bytes(rules) {
            // Decided as soon as the size is known: nothing more is buffered.
            self.body_check = None;
            let d = crate::problem::denial(
                &self.shared.engine.realm,
                DenialCode::PayloadTooLarge,
                Some(route),
            );
            return self.reply(&d);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => return self.internal_error(),
        };
        self.finish_body(rules, &route, &body)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        for (name, value) in &self.response_headers {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
        }
        let Some((rules, route)) = self.response_check.clone() else {
            return Action::Continue;
        };
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let Some(max) = self.shared.engine.response_applies(rules, status) else {
            return Action::Continue;
        };
        let declared = hostcalls::get_map_value(MapType::HttpResponseHeaders, "content-length")
            .ok()
            .flatten()
            .and_then(|l| l.parse::<usize>().ok());
        if declared.is_some_and(|l| l > max) {
            log(LogLevel::Warn, &format!("tollgate: response on route `{route}` larger than its `max_body_bytes`: not checked"));
            return Action::Continue;
        }
        if end_of_stream {
            return self.judge_response(rules, status, &route, &[], 0);
        }
        // Hold the response headers until the body is judged, so a blocked response really
        // changes the status and a redacted one gets a correct content-length.
        self.checking_response = Some((rules, status, max));
        Action::Pause
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((rules, status, max)) = self.checking_response else {
            return Action::Continue;
        };
        let route = self
            .response_check
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        if body_size > max {
            self.checking_response = None;
            log(LogLevel::Warn, &format!("tollgate: response on route `{route}` larger than its `max_body_bytes`: not checked"));
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.checking_response = None;
        let body = match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => return Action::Continue,
        };
        self.judge_response(rules, status, &route, &body, body_size)
    }
}
