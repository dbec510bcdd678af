//! Per-stream adapter: Envoy's HTTP callbacks become events of the engine's [`Exchange`], and
//! the steps it answers with become Envoy calls. No policy decision is made here.

use super::io::{connection, peer_address, HostIo};
use super::vm::{log, now_ms, Shared};
use super::{probe, store::HostStore};
use crate::engine::exchange::{CallReply, GrpcCall, Io, Level, Reply, Vm};
use crate::engine::{Exchange, Request, Step};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;
use std::time::Duration;

pub(crate) struct Http {
    shared: Rc<Shared>,
    exchange: Exchange,
}

/// The request view of Envoy's header map: pseudo-headers read once, an absent one empty.
fn request_view<'a>(
    headers: &'a [(String, String)],
    peer: Option<&'a str>,
    conn: Option<&'a crate::engine::Connection>,
) -> Request<'a> {
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    Request {
        method: pseudo(":method"),
        path: pseudo(":path"),
        headers,
        peer,
        connection: conn,
    }
}

/// Sends a local reply; Envoy then ends the stream, so the filter chain stops here.
fn send(reply: &Reply) -> Action {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    probe::host_call();
    if hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    )
    .is_err()
    {
        log(Level::Error, "tollgate: could not send a local reply");
    }
    Action::Pause
}

/// Makes a gRPC call; its answer arrives in [`Context::on_grpc_call_response`].
fn dispatch(call: &GrpcCall) -> bool {
    probe::host_call();
    hostcalls::dispatch_grpc_call(
        &call.cluster,
        call.service,
        call.method,
        Vec::new(),
        Some(&call.message),
        Duration::from_millis(u64::from(call.timeout_ms)),
    )
    .is_ok()
}

impl Http {
    pub fn new(shared: Rc<Shared>) -> Http {
        Http {
            shared,
            exchange: Exchange::new(),
        }
    }

    /// Carries out a step. A response body that cannot be replaced becomes a generic 500.
    fn apply(&mut self, step: Step) -> Action {
        match step {
            Step::Continue => Action::Continue,
            Step::Pause => Action::Pause,
            Step::Reply(reply) => send(&reply),
            Step::ReplaceBody { size, body } => {
                probe::host_call();
                if hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, &body).is_ok() {
                    return Action::Continue;
                }
                let step = self.with_io(|ex, engine, io| ex.on_host_error(engine, io));
                self.apply(step)
            }
            Step::Call(call) => {
                if dispatch(&call) {
                    return Action::Pause;
                }
                let step = self.call_ended(CallReply::NotSent);
                self.apply(step)
            }
        }
    }

    /// Carries out the step that answers a call's reply: the stream is held, so going on means
    /// resuming it.
    fn resume(&mut self, step: Step) {
        match step {
            Step::Continue => {
                probe::host_call();
                if hostcalls::resume_http_request().is_err() {
                    log(Level::Error, "tollgate: could not resume a held request");
                }
            }
            Step::Pause | Step::ReplaceBody { .. } => {}
            Step::Reply(reply) => {
                send(&reply);
            }
            Step::Call(call) => {
                if !dispatch(&call) {
                    let step = self.call_ended(CallReply::NotSent);
                    self.resume(step);
                }
            }
        }
    }

    /// Tells the exchange how its call ended, with the VM's state and the shared data.
    fn call_ended(&mut self, reply: CallReply) -> Step {
        let shared = Rc::clone(&self.shared);
        let mut io = HostIo::stream(&shared);
        // Without a clock the failure is not taken for a timeout.
        let now = now_ms().unwrap_or(0);
        // INVARIANT: contexts of one VM run one at a time, so the state is never borrowed here.
        let step = match shared.state.try_borrow_mut() {
            Ok(mut state) => {
                let vm = Vm {
                    state: &mut state,
                    store: &HostStore,
                };
                self.exchange
                    .on_call_reply(&shared.engine, reply, now, vm, &mut io)
            }
            Err(_) => self.exchange.on_host_error(&shared.engine, &mut io),
        };
        step
    }

    /// Runs `f` on the exchange with the engine and the stream's [`Io`].
    fn with_io(
        &mut self,
        f: impl FnOnce(&mut Exchange, &crate::engine::Engine, &mut dyn Io) -> Step,
    ) -> Step {
        let shared = Rc::clone(&self.shared);
        let mut io = HostIo::stream(&shared);
        f(&mut self.exchange, &shared.engine, &mut io)
    }
}

impl Drop for Http {
    /// `proxy_on_delete`: the SDK drops the context.
    fn drop(&mut self) {
        probe::entry(probe::Callback::Delete);
    }
}

impl Context for Http {
    /// `proxy_on_done`: nothing to finish (the log callback wrote the audit line).
    fn on_done(&mut self) -> bool {
        probe::entry(probe::Callback::Done);
        true
    }

    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, response_size: usize) {
        probe::entry(probe::Callback::CallReply);
        let reply = if status_code == 0 {
            CallReply::Answered {
                size: response_size,
            }
        } else {
            CallReply::Failed {
                grpc_status: status_code,
            }
        };
        let step = self.call_ended(reply);
        self.resume(step);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        probe::entry(probe::Callback::RequestHeaders);
        if probe::stop_at(1) {
            return Action::Continue;
        }
        let shared = Rc::clone(&self.shared);
        let mut io = HostIo::stream(&shared);
        let engine = &shared.engine;
        probe::host_call();
        let (Ok(headers), Some(now_ms)) =
            (hostcalls::get_map(MapType::HttpRequestHeaders), now_ms())
        else {
            let step = self.exchange.on_host_error(engine, &mut io);
            return self.apply(step);
        };
        if probe::stop_at(2) {
            return Action::Continue;
        }
        // A host call per request, so only when a decision needs it; the audit line asks for it
        // when it is written.
        let peer = if engine.uses_peer() {
            peer_address()
        } else {
            None
        };
        let conn = engine.uses_connection().then(connection);
        let request = request_view(&headers, peer.as_deref(), conn.as_ref());
        // INVARIANT: contexts of one VM run one at a time, so the state is never borrowed here.
        let step = match shared.state.try_borrow_mut() {
            Ok(mut state) => self.exchange.on_request_headers(
                engine,
                &request,
                end_of_stream,
                now_ms,
                Vm {
                    state: &mut state,
                    store: &HostStore,
                },
                &mut io,
            ),
            Err(_) => self.exchange.on_host_error(engine, &mut io),
        };
        if probe::stop_at(3) {
            return Action::Continue;
        }
        self.apply(step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        probe::entry(probe::Callback::RequestBody);
        let step =
            self.with_io(|ex, engine, io| ex.on_request_body(engine, body_size, end_of_stream, io));
        self.apply(step)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        probe::entry(probe::Callback::RequestTrailers);
        let step = self.with_io(|ex, engine, io| ex.on_request_trailers(engine, io));
        self.apply(step)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        probe::entry(probe::Callback::ResponseHeaders);
        if probe::stopped_before(5) {
            return Action::Continue;
        }
        probe::host_call();
        let headers = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
        if probe::stop_at(5) {
            return Action::Continue;
        }
        let step = self
            .with_io(|ex, engine, io| ex.on_response_headers(engine, &headers, end_of_stream, io));
        self.apply(step)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        probe::entry(probe::Callback::ResponseBody);
        let step = self
            .with_io(|ex, engine, io| ex.on_response_body(engine, body_size, end_of_stream, io));
        self.apply(step)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        probe::entry(probe::Callback::ResponseTrailers);
        let step = self.with_io(|ex, engine, io| ex.on_response_trailers(engine, io));
        self.apply(step)
    }

    fn on_log(&mut self) {
        probe::entry(probe::Callback::Log);
        probe::request_done();
        let shared = Rc::clone(&self.shared);
        let mut io = HostIo::stream(&shared);
        if let Some((level, line)) = self.exchange.on_done(&shared.engine, &mut io) {
            log(level, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_view_reads_pseudo_headers() {
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), "/a?b=1".to_string()),
            ("x".to_string(), "y".to_string()),
        ];
        let r = request_view(&headers, Some("10.0.0.1:5"), None);
        assert_eq!(
            (r.method, r.path, r.peer),
            ("POST", "/a?b=1", Some("10.0.0.1:5"))
        );
        assert_eq!(r.headers.len(), 3);
        let none = request_view(&[], None, None);
        assert_eq!((none.method, none.path), ("", ""));
    }
}
