//! Envoy counters for the names in `codes::metrics`. Envoy shows them as `wasmcustom.<name>`.

use crate::codes::{metrics, DenialCode};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub(crate) struct Metrics {
    allowed: Option<u32>,
    denied: Vec<(DenialCode, Option<u32>)>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    jwks_ok: Option<u32>,
    jwks_failed: Option<u32>,
    jwks_installed: Option<u32>,
    cas_retries: Option<u32>,
    cas_exhausted: Option<u32>,
    shadow_limited: Option<u32>,
    response_invalid: Option<u32>,
    response_redacted: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            allowed: counter(metrics::REQUESTS_ALLOWED),
            denied: DenialCode::ALL
                .iter()
                .map(|c| {
                    (
                        *c,
                        counter(&format!(
                            "{}.{}",
                            metrics::REQUESTS_DENIED_PREFIX,
                            c.as_str()
                        )),
                    )
                })
                .collect(),
            cache_hit: counter(metrics::JWT_CACHE_HIT),
            cache_miss: counter(metrics::JWT_CACHE_MISS),
            jwks_ok: counter(metrics::JWKS_FETCH_OK),
            jwks_failed: counter(metrics::JWKS_FETCH_FAILED),
            jwks_installed: counter(metrics::JWKS_INSTALLED),
            cas_retries: counter(metrics::RATELIMIT_CAS_RETRIES),
            cas_exhausted: counter(metrics::RATELIMIT_CAS_EXHAUSTED),
            shadow_limited: counter(metrics::RATELIMIT_SHADOW_LIMITED),
            response_invalid: counter(metrics::RESPONSE_INVALID),
            response_redacted: counter(metrics::RESPONSE_REDACTED),
        }
    }

    pub fn allowed(&self) {
        bump(self.allowed);
    }

    pub fn denied(&self, code: DenialCode) {
        bump(
            self.denied
                .iter()
                .find(|(c, _)| *c == code)
                .and_then(|(_, id)| *id),
        );
    }

    pub fn cache(&self, hit: bool) {
        bump(if hit { self.cache_hit } else { self.cache_miss });
    }

    pub fn jwks_fetched(&self, ok: bool) {
        bump(if ok { self.jwks_ok } else { self.jwks_failed });
    }

    pub fn limits(&self, effects: &crate::engine::Effects) {
        if effects.cas_retries > 0 {
            if let Some(id) = self.cas_retries {
                let _ = hostcalls::increment_metric(id, i64::from(effects.cas_retries));
            }
        }
        if effects.cas_exhausted {
            bump(self.cas_exhausted);
        }
        for _ in &effects.shadow_limited {
            bump(self.shadow_limited);
        }
    }

    pub fn response(&self, invalid: bool, redacted: bool) {
        if invalid {
            bump(self.response_invalid);
        }
        if redacted {
            bump(self.response_redacted);
        }
    }

    pub fn jwks_installed(&self) {
        bump(self.jwks_installed);
    }
}
