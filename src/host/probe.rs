//! Stage probe for `make bench` (feature `stage-probe`; release builds never have it). Envoy's
//! binary has no symbols and `perf` cannot name V8's wasm frames, so the benchmark measures what
//! each stage of a request costs inside Envoy by stopping requests early: a plugin named
//! `tollgate-stage-N` lets every request through after stage N.
//!
//! 1. the callbacks only (Envoy enters the VM, Tollgate returns at once);
//! 2. request headers and the clock read;
//! 3. the audit record started and the engine's decision;
//! 4. the decision carried out on the request (headers, counters);
//! 5. the response headers read (the security headers are not added).
//!
//! The probe build also counts, per request, the VM entries (the stream callbacks Envoy calls),
//! the host calls Tollgate makes and the allocations inside the VM (which include the copies
//! Envoy makes into it, each one more VM entry through `proxy_on_memory_allocate`), and logs the
//! averages on the tick: `make bench` reads them for its table of calls per request.
//!
//! Without the feature every function here is an empty inline and the optimiser removes them.

/// The stream callbacks Envoy enters the VM for, in the order of [`CALLBACKS`].
#[derive(Clone, Copy)]
#[allow(dead_code)] // only the probe build reads them
pub(crate) enum Callback {
    Create,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    CallReply,
    Log,
    Done,
    Delete,
}

#[cfg(feature = "stage-probe")]
const CALLBACKS: [&str; 11] = [
    "create",
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
    "call_reply",
    "log",
    "done",
    "delete",
];

#[cfg(feature = "stage-probe")]
mod imp {
    // Full paths: `super::` in this file would name the host module, and the layers test reads
    // that as a circle (host -> probe -> host).
    use crate::host::probe::{Callback, CALLBACKS};
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::LogLevel;
    use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
    use std::alloc::System;
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    thread_local! {
        static STOP: Cell<u8> = const { Cell::new(0) };
    }

    static ENTRIES: [AtomicU64; CALLBACKS.len()] = [const { AtomicU64::new(0) }; CALLBACKS.len()];
    static HOST_CALLS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// The allocator's totals at the last report.
        static LAST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }
    static REQUESTS: AtomicU64 = AtomicU64::new(0);

    /// The system allocator, counting (without `unsafe` of our own).
    #[global_allocator]
    static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

    /// Reads the stage from the plugin's name (`tollgate-stage-N`); other names run everything.
    pub fn configure() {
        let name = hostcalls::get_property(vec!["plugin_name"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let stage = name
            .strip_prefix("tollgate-stage-")
            .and_then(|n| n.parse::<u8>().ok())
            .unwrap_or(0);
        STOP.with(|s| s.set(stage));
        let _ = hostcalls::log(
            LogLevel::Warn,
            &format!("tollgate: stage probe: requests stop after stage {stage} (0: none)"),
        );
    }

    /// Whether requests stop after `stage`.
    pub fn stop_at(stage: u8) -> bool {
        STOP.with(|s| s.get() == stage)
    }

    /// Whether requests stopped at a stage before `stage`.
    pub fn stopped_before(stage: u8) -> bool {
        STOP.with(|s| (1..stage).contains(&s.get()))
    }

    /// Envoy entered the VM for a stream callback.
    pub fn entry(callback: Callback) {
        if let Some(n) = ENTRIES.get(callback as usize) {
            n.fetch_add(1, Relaxed);
        }
    }

    /// Tollgate called into Envoy.
    pub fn host_call() {
        HOST_CALLS.fetch_add(1, Relaxed);
    }

    /// A stream ended (its log callback ran).
    pub fn request_done() {
        REQUESTS.fetch_add(1, Relaxed);
    }

    /// Logs the averages per request since the last report (root tick), then starts again.
    /// Work done on the tick itself (counters handed to Envoy) is spread over the requests.
    pub fn report() {
        let requests = REQUESTS.swap(0, Relaxed);
        let by: Vec<u64> = ENTRIES.iter().map(|n| n.swap(0, Relaxed)).collect();
        let entries: u64 = by.iter().sum();
        let calls = HOST_CALLS.swap(0, Relaxed);
        let stats = ALLOCATOR.stats();
        let total = (
            stats.allocations + stats.reallocations,
            stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize,
        );
        let (allocations, bytes) = LAST.with(|l| {
            let last = l.replace(total);
            (
                total.0.saturating_sub(last.0) as u64,
                total.1.saturating_sub(last.1) as u64,
            )
        });
        if requests == 0 {
            return;
        }
        let per = |n: u64| n as f64 / requests as f64;
        let _ = hostcalls::log(
            LogLevel::Warn,
            &format!(
                "tollgate: probe: requests={requests} entries={:.2} host_calls={:.2} allocations={:.2} bytes={:.0} by={}",
                per(entries),
                per(calls),
                per(allocations),
                per(bytes),
                CALLBACKS
                    .iter()
                    .zip(&by)
                    .filter(|(_, n)| **n > 0)
                    .map(|(name, n)| format!("{name}:{:.2}", per(*n)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
    }
}

#[cfg(not(feature = "stage-probe"))]
mod imp {
    pub fn configure() {}

    #[inline(always)]
    pub fn stop_at(_stage: u8) -> bool {
        false
    }

    #[inline(always)]
    pub fn stopped_before(_stage: u8) -> bool {
        false
    }

    #[inline(always)]
    pub fn entry(_callback: crate::host::probe::Callback) {}

    #[inline(always)]
    pub fn host_call() {}

    #[inline(always)]
    pub fn request_done() {}

    #[inline(always)]
    pub fn report() {}
}

pub(crate) use imp::{configure, entry, host_call, report, request_done, stop_at, stopped_before};
