//! Envoy counters for the names in `codes::metrics`. Envoy shows them as `wasmcustom.<name>`.
//!
//! A host call costs far more than the counting itself (about half a microsecond each through
//! V8), so increments are added up inside the VM and handed to Envoy on the root context's tick
//! (every second) or when many counters are pending: a request pays no host call for metrics.

use crate::codes::{metrics, DenialCode, Reason};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// Counters of one route, defined the first time the route is seen.
struct RouteCounters {
    allowed: Option<u32>,
    denied: Vec<Option<u32>>,
    dry_run: Vec<Option<u32>>,
}

/// `<route>` in metric names: letters, digits, `-` and `_`; anything else becomes `_`.
fn stat_segment(route: &str) -> String {
    if route.is_empty() {
        return metrics::UNMATCHED_ROUTE.to_string();
    }
    route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

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
    response_unchecked: Option<u32>,
    dry_run: Vec<(DenialCode, Option<u32>)>,
    brute_force_blocks: Option<u32>,
    upstream_masked: Option<u32>,
    deprecated: Option<u32>,
    routes: RefCell<HashMap<String, RouteCounters>>,
    /// Increments not yet handed to Envoy: counter id -> amount.
    pending: RefCell<HashMap<u32, i64>>,
}

/// Distinct counters pending before they are flushed without waiting for the tick; bounds the
/// memory a burst over many routes can take.
const MAX_PENDING: usize = 256;

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn find(list: &[(DenialCode, Option<u32>)], code: DenialCode) -> Option<u32> {
    list.iter()
        .find(|(c, _)| *c == code)
        .and_then(|(_, id)| *id)
}

impl Metrics {
    pub fn define() -> Metrics {
        let per_code = |prefix: &str| {
            DenialCode::ALL
                .iter()
                .map(|c| (*c, counter(&format!("{prefix}.{}", c.as_str()))))
                .collect()
        };
        Metrics {
            dry_run: per_code(metrics::REQUESTS_DRY_RUN_PREFIX),
            brute_force_blocks: counter(metrics::BRUTE_FORCE_BLOCKS),
            upstream_masked: counter(metrics::UPSTREAM_ERRORS_MASKED),
            deprecated: counter(metrics::DEPRECATED_REQUESTS),
            routes: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
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
            response_unchecked: counter(metrics::RESPONSE_UNCHECKED),
        }
    }

    /// Adds `n` to a counter (undefined counters are skipped).
    fn add(&self, id: Option<u32>, n: i64) {
        let Some(id) = id else { return };
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        *pending.entry(id).or_insert(0) += n;
        if pending.len() >= MAX_PENDING {
            drop(pending);
            self.flush();
        }
    }

    fn bump(&self, id: Option<u32>) {
        self.add(id, 1);
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        for (id, n) in pending.drain() {
            let _ = hostcalls::increment_metric(id, n);
        }
    }

    /// Bumps one counter of `route`, defining the route's counters on first use.
    fn route(&self, route: &str, pick: impl Fn(&RouteCounters) -> Option<u32>) {
        let Ok(mut routes) = self.routes.try_borrow_mut() else {
            return;
        };
        if let Some(c) = routes.get(route) {
            self.bump(pick(c));
            return;
        }
        let seg = stat_segment(route);
        let base = format!("{}.{seg}", metrics::ROUTE_PREFIX);
        let per_reason = |kind: &str| {
            Reason::ALL
                .iter()
                .map(|r| counter(&format!("{base}.{kind}.{}", r.as_str())))
                .collect()
        };
        let c = RouteCounters {
            allowed: counter(&format!("{base}.{}", metrics::ROUTE_ALLOWED)),
            denied: per_reason(metrics::ROUTE_DENIED),
            dry_run: per_reason(metrics::ROUTE_DRY_RUN),
        };
        self.bump(pick(&c));
        routes.insert(route.to_string(), c);
    }

    /// A request passed (`route` empty: no route matched).
    pub fn allowed(&self, route: &str) {
        self.bump(self.allowed);
        self.route(route, |c| c.allowed);
    }

    pub fn denied(&self, code: DenialCode, route: &str) {
        self.bump(find(&self.denied, code));
        let i = code.reason().index();
        self.route(route, |c| c.denied.get(i).copied().flatten());
    }

    /// A dry run let through what `code` would have refused.
    pub fn dry_run(&self, code: DenialCode, route: &str) {
        self.bump(find(&self.dry_run, code));
        let i = code.reason().index();
        self.route(route, |c| c.dry_run.get(i).copied().flatten());
    }

    pub fn block_started(&self) {
        self.bump(self.brute_force_blocks);
    }

    pub fn upstream_masked(&self) {
        self.bump(self.upstream_masked);
    }

    pub fn deprecated(&self) {
        self.bump(self.deprecated);
    }

    pub fn cache(&self, hit: bool) {
        self.bump(if hit { self.cache_hit } else { self.cache_miss });
    }

    pub fn jwks_fetched(&self, ok: bool) {
        self.bump(if ok { self.jwks_ok } else { self.jwks_failed });
    }

    pub fn limits(&self, effects: &crate::engine::Effects) {
        if effects.cas_retries > 0 {
            self.add(self.cas_retries, i64::from(effects.cas_retries));
        }
        if effects.cas_exhausted {
            self.bump(self.cas_exhausted);
        }
        for _ in &effects.shadow_limited {
            self.bump(self.shadow_limited);
        }
    }

    pub fn response(&self, invalid: bool, redacted: bool) {
        if invalid {
            self.bump(self.response_invalid);
        }
        if redacted {
            self.bump(self.response_redacted);
        }
    }

    /// A response its route's checks could not judge (refused or passed).
    pub fn response_unchecked(&self) {
        self.bump(self.response_unchecked);
    }

    pub fn jwks_installed(&self) {
        self.bump(self.jwks_installed);
    }
}
