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
//! Without the feature `stop_at` is a constant `false` and the optimiser removes the checks.

#[cfg(feature = "stage-probe")]
mod imp {
    use proxy_wasm::hostcalls;
    use std::cell::Cell;

    thread_local! {
        static STOP: Cell<u8> = const { Cell::new(0) };
    }

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
        super::super::vm::log(
            crate::engine::exchange::Level::Warn,
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
}

pub(crate) use imp::{configure, stop_at, stopped_before};
