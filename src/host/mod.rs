//! The proxy-wasm adapter: the only module that names `proxy_wasm`. The root context loads the
//! policy and turns its tick and call answers into events of the engine's key refresh; each HTTP
//! stream is translated by `http.rs`. Host calls go through `proxy_wasm::hostcalls` (which return
//! `Result`) rather than the trait helpers that unwrap.

mod crypto;
mod http;
mod io;
mod metrics;
mod probe;
mod store;
mod vm;

use crate::engine::exchange::{Level, Vm};
use crate::engine::refresh::{Call, CallReply, KeyRefresh};
use crate::engine::Engine;
use io::HostIo;
use metrics::Metrics;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use store::HostStore;
use vm::{log, now_ms, Shared};

/// On this period, on every worker: counters are handed to Envoy, and remote JWKS state is
/// checked (and fetched when due).
const TICK: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Random bytes for the process secret, from std's `RandomState`, which the WASI target seeds
/// from the host's `random_get`.
fn random_secret() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut fresh = Vec::with_capacity(32);
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i ^ now_ms().unwrap_or(0));
        fresh.extend_from_slice(&h.finish().to_le_bytes());
    }
    fresh
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    refresh: KeyRefresh,
}

fn dispatch(call: &Call) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let timeout = Duration::from_millis(call.timeout_ms);
    probe::host_call();
    hostcalls::dispatch_http_call(&call.cluster, headers, None, vec![], timeout)
        .map_err(|status| format!("{status:?}"))
}

impl Root {
    fn tick(&mut self, shared: &Shared) {
        let Some(now) = now_ms().map(|ms| ms / 1000) else {
            return;
        };
        let Ok(mut state) = shared.state.try_borrow_mut() else {
            return;
        };
        let mut io = HostIo::root(shared);
        let vm = Vm {
            state: &mut state,
            store: &HostStore,
        };
        let calls = self.refresh.on_tick(&shared.engine, now, vm, &mut io);
        for (source, call) in calls {
            match dispatch(&call) {
                Ok(id) => self.refresh.dispatched(id, source),
                Err(why) => {
                    let vm = Vm {
                        state: &mut state,
                        store: &HostStore,
                    };
                    self.refresh
                        .on_dispatch_failed(&shared.engine, source, &why, now, vm, &mut io);
                }
            }
        }
    }
}

impl Context for Root {
    /// The VM is going away (Envoy stops or replaces the plugin): counts not flushed yet.
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            shared.metrics.flush();
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Ok(mut state) = shared.state.try_borrow_mut() else {
            return;
        };
        let now = now_ms().map_or(0, |ms| ms / 1000);
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let mut io = HostIo::root(&shared);
        let vm = Vm {
            state: &mut state,
            store: &HostStore,
        };
        let reply = CallReply {
            id: token_id,
            status: status.as_deref(),
            body_size,
        };
        self.refresh
            .on_reply(&shared.engine, reply, now, vm, &mut io);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
            _ => {
                log(Level::Error, "tollgate: invalid policy: the plugin has no configuration; put the policy in the filter's `configuration`");
                return false;
            }
        };
        probe::configure();
        let started = now_ms();
        let engine = match Engine::compile(&config) {
            Ok(engine) => engine,
            Err(errors) => {
                for e in &errors {
                    log(Level::Error, &format!("tollgate: invalid policy: {e}"));
                }
                log(
                    Level::Error,
                    &format!(
                        "tollgate: refusing to start: {} policy error(s)",
                        errors.len()
                    ),
                );
                return false;
            }
        };
        log(
            Level::Info,
            &format!(
                "tollgate: policy loaded: {} providers, {} routes, compiled in {} ms",
                engine.providers().len(),
                engine.routes().len(),
                match (started, now_ms()) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                }
            ),
        );
        let mut state = engine.new_state();
        if engine.host_signatures() {
            match crypto::EnvoyCrypto::probe() {
                Some(host) => state.signatures = Some(Box::new(host)),
                None => log(
                    Level::Info,
                    "tollgate: the host has no working `verify_signature`: Tollgate verifies token signatures itself",
                ),
            }
        }
        // Rate-limit and brute-force slots are hashed with the secret.
        if engine.uses_slots() {
            let fresh = random_secret();
            state.limit_secret = crate::store::slots::process_secret(
                &HostStore,
                crate::ratelimit::SECRET_KEY,
                &fresh,
            )
            .unwrap_or_else(|| {
                log(Level::Warn, "tollgate: shared data unavailable: this worker hashes rate-limit keys with its own secret, so its buckets are not shared");
                fresh
            });
        }
        let state = RefCell::new(state);
        let shared = Rc::new(Shared {
            metrics: Metrics::define(),
            engine,
            state,
        });
        self.shared = Some(shared);
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            shared.metrics.flush();
            self.tick(&shared);
            probe::report();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        probe::entry(probe::Callback::Create);
        let shared = self.shared.clone()?;
        Some(Box::new(http::Http::new(shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
