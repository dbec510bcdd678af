//! Envoy counters for the names in `codes` ([`Counter`] and the per-code and per-route families).
//! Envoy shows them as `wasmcustom.<name>`.
//!
//! A host call costs far more than the counting itself (about half a microsecond each through
//! V8), so increments are added up inside the VM and handed to Envoy on the root context's tick
//! (every second) or when many counters are pending: a request pays no host call for metrics.

use crate::codes::{metrics, Counter, DenialCode, Reason};
use crate::engine::exchange::Metric;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// Counters of one route, defined the first time the route is seen; indexed by [`Reason`].
struct RouteCounters {
    allowed: Option<u32>,
    denied: Vec<Option<u32>>,
    dry_run: Vec<Option<u32>>,
}

pub(crate) struct Metrics {
    /// Indexed by [`Counter::index`].
    counters: Vec<Option<u32>>,
    /// Indexed like [`DenialCode::ALL`]; `None` for codes that are not refusals.
    denied: Vec<Option<u32>>,
    dry_run: Vec<Option<u32>>,
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

/// One counter per refusal code under `prefix`.
fn per_code(prefix: &str) -> Vec<Option<u32>> {
    DenialCode::ALL
        .iter()
        .map(|c| {
            c.refusal()
                .then(|| counter(&format!("{prefix}.{}", c.as_str())))
                .flatten()
        })
        .collect()
}

impl Metrics {
    pub fn define() -> Metrics {
        Metrics {
            counters: Counter::ALL.iter().map(|c| counter(c.name())).collect(),
            denied: per_code(metrics::REQUESTS_DENIED_PREFIX),
            dry_run: per_code(metrics::REQUESTS_DRY_RUN_PREFIX),
            routes: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
        }
    }

    /// Adds `n` to a counter id (undefined counters are skipped).
    fn add_id(&self, id: Option<u32>, n: i64) {
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

    pub fn add(&self, c: Counter, n: u32) {
        self.add_id(
            self.counters.get(c.index()).copied().flatten(),
            i64::from(n),
        );
    }

    /// Hands the pending increments to Envoy.
    pub fn flush(&self) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        for (id, n) in pending.drain() {
            super::probe::host_call();
            let _ = hostcalls::increment_metric(id, n);
        }
    }

    /// Bumps one counter of `route`, defining the route's counters on first use.
    fn route(&self, route: &str, pick: impl Fn(&RouteCounters) -> Option<u32>) {
        let Ok(mut routes) = self.routes.try_borrow_mut() else {
            return;
        };
        if let Some(c) = routes.get(route) {
            self.add_id(pick(c), 1);
            return;
        }
        let base = format!(
            "{}.{}",
            metrics::ROUTE_PREFIX,
            metrics::route_segment(route)
        );
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
        self.add_id(pick(&c), 1);
        routes.insert(route.to_string(), c);
    }

    /// Counts what the exchange reports.
    pub fn count(&self, metric: Metric<'_>) {
        match metric {
            Metric::Add(c, n) => self.add(c, n),
            Metric::Allowed { route } => {
                self.add(Counter::RequestsAllowed, 1);
                self.route(route, |c| c.allowed);
            }
            Metric::Denied { code, route } => {
                let id = self.denied.get(code.index()).copied().flatten();
                self.add_id(id, 1);
                let i = code.reason().index();
                self.route(route, |c| c.denied.get(i).copied().flatten());
            }
            Metric::DryRun { code, route } => {
                let id = self.dry_run.get(code.index()).copied().flatten();
                self.add_id(id, 1);
                let i = code.reason().index();
                self.route(route, |c| c.dry_run.get(i).copied().flatten());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counters_cover_every_reason() {
        // `denied` / `dry_run` of a route are indexed by `Reason::index`.
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}
