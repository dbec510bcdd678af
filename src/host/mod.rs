//! The proxy-wasm adapter: the only module that names `proxy_wasm`. It reads the policy and
//! requests from Envoy, asks the engine, and carries out its decisions. Host calls go through
//! `proxy_wasm::hostcalls` (which return `Result`) rather than the trait helpers that unwrap.

mod http;
mod metrics;
mod probe;
mod store;

use crate::codes::Counter;
use crate::engine::exchange::Level;
use crate::engine::{Engine, VmState};
use crate::jwt::remote::{self, FetchFailure};
use metrics::Metrics;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use store::HostStore;

/// On this period, on every worker: counters are handed to Envoy, and remote JWKS state is
/// checked (and fetched when due).
const TICK: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

pub(crate) fn log(level: Level, message: &str) {
    let _ = hostcalls::log(log_level(level), message);
}

fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// Seconds since the epoch from Envoy's clock (not the wasm runtime's).
pub(crate) fn now() -> Option<u64> {
    now_ms().map(|ms| ms / 1000)
}

/// Milliseconds since the epoch from Envoy's clock.
pub(crate) fn now_ms() -> Option<u64> {
    let t = hostcalls::get_current_time().ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// The process-wide secret rate-limit keys are hashed with: created once in shared data by the
/// first VM (create-if-absent), read by every other. Randomness comes from std's `RandomState`,
/// which the WASI target seeds from the host's `random_get`.
fn limit_secret() -> Vec<u8> {
    use crate::store::SharedStore;
    use std::hash::{BuildHasher, Hasher};
    let store = HostStore;
    if let Ok(Some((secret, _))) = store.get(crate::ratelimit::SECRET_KEY) {
        return secret;
    }
    let mut fresh = Vec::with_capacity(32);
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i ^ now_ms().unwrap_or(0));
        fresh.extend_from_slice(&h.finish().to_le_bytes());
    }
    let _ = store.create(crate::ratelimit::SECRET_KEY, &fresh);
    match store.get(crate::ratelimit::SECRET_KEY) {
        Ok(Some((secret, _))) => secret,
        _ => {
            log(Level::Warn,
                "tollgate: shared data unavailable: this worker hashes rate-limit keys with its own secret, so its buckets are not shared",
            );
            fresh
        }
    }
}

/// Everything an HTTP context needs, shared with the root context of its VM.
pub(crate) struct Shared {
    pub engine: Engine,
    pub state: RefCell<VmState>,
    pub metrics: Metrics,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    /// In-flight JWKS calls: token -> provider index.
    calls: HashMap<u32, usize>,
}

impl Root {
    fn tick(&mut self, shared: &Rc<Shared>) {
        let Some(now) = now() else { return };
        let store = HostStore;
        for (index, provider, spec) in shared.engine.remote_providers() {
            {
                let mut state = shared.state.borrow_mut();
                let Some(slot) = state.remote.get_mut(index) else {
                    continue;
                };
                if let Ok(true) = remote::sync(&store, spec, &provider.algorithms, slot) {
                    shared.metrics.add(Counter::JwksInstalled, 1);
                }
            }
            if self.calls.values().any(|i| *i == index) {
                continue;
            }
            if !matches!(remote::claim_fetch(&store, spec, now), Ok(true)) {
                continue;
            }
            let headers = vec![
                (":method", "GET"),
                (":path", spec.path.as_str()),
                (":authority", spec.authority.as_str()),
                (":scheme", spec.scheme.as_str()),
                ("accept", "application/json"),
            ];
            let timeout = Duration::from_millis(spec.timeout_ms);
            match hostcalls::dispatch_http_call(&spec.cluster, headers, None, vec![], timeout) {
                Ok(token) => {
                    self.calls.insert(token, index);
                }
                Err(status) => {
                    log(Level::Warn,
                        &format!("tollgate: jwks fetch for provider `{}` could not be dispatched to cluster `{}` ({status:?})", provider.name, spec.cluster),
                    );
                    self.finish(shared, index, now, Err(FetchFailure::Unreachable));
                }
            }
        }
    }

    fn finish(
        &self,
        shared: &Rc<Shared>,
        index: usize,
        now: u64,
        outcome: Result<&[u8], FetchFailure>,
    ) {
        let Some(provider) = shared.engine.providers.get(index) else {
            return;
        };
        let crate::engine::ProviderKeys::Remote(spec) = &provider.keys else {
            return;
        };
        let mut state = shared.state.borrow_mut();
        let Some(slot) = state.remote.get_mut(index) else {
            return;
        };
        match remote::complete_fetch(&HostStore, spec, &provider.algorithms, now, outcome, slot) {
            Ok(Ok(())) => {
                shared.metrics.add(Counter::JwksFetchOk, 1);
                let (generation, keys) = slot
                    .as_ref()
                    .map_or((0, 0), |i| (i.generation, i.keys.len()));
                log(Level::Info,
                    &format!("tollgate: jwks for provider `{}` fetched: {keys} usable keys, generation {generation}", provider.name),
                );
            }
            Ok(Err(failure)) => {
                shared.metrics.add(Counter::JwksFetchFailed, 1);
                log(Level::Warn,
                    &format!("tollgate: jwks fetch for provider `{}` failed: {failure}; keeping the last good key set", provider.name),
                );
            }
            Err(e) => log(
                Level::Warn,
                &format!(
                    "tollgate: shared data unavailable for provider `{}`: {e:?}",
                    provider.name
                ),
            ),
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
        let Some(index) = self.calls.remove(&token_id) else {
            return;
        };
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = now().unwrap_or(0);
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let max = match shared.engine.providers.get(index).map(|p| &p.keys) {
            Some(crate::engine::ProviderKeys::Remote(spec)) => spec.max_bytes,
            _ => 0,
        };
        let body;
        let outcome = match status.as_deref().map(str::parse::<u32>) {
            None | Some(Err(_)) => Err(FetchFailure::Unreachable),
            Some(Ok(200)) if body_size > max => Err(FetchFailure::TooLarge),
            Some(Ok(200)) => {
                body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Ok(body.as_slice())
            }
            Some(Ok(code)) => Err(FetchFailure::Status(code)),
        };
        self.finish(&shared, index, now, outcome);
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
                engine.providers.len(),
                engine.routes.len(),
                match (started, now_ms()) {
                    (Some(a), Some(b)) => b.saturating_sub(a),
                    _ => 0,
                }
            ),
        );
        let mut state = engine.new_state();
        // Rate-limit and brute-force slots are hashed with the secret.
        if !engine.limits.is_empty() || engine.brute_force.is_some() {
            state.limit_secret = limit_secret();
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
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(http::Http::new(shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// The adapter's own logic, natively (`cargo test --lib --features lint-host`): nothing here may
// call into Envoy, whose host functions exist only inside its VM.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_reaches_envoy_as_itself() {
        let pairs = [
            (Level::Trace, LogLevel::Trace),
            (Level::Debug, LogLevel::Debug),
            (Level::Info, LogLevel::Info),
            (Level::Warn, LogLevel::Warn),
            (Level::Error, LogLevel::Error),
        ];
        for (ours, envoys) in pairs {
            assert_eq!(log_level(ours) as u32, envoys as u32, "{ours:?}");
        }
    }
}
