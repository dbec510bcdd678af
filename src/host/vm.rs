//! What every context of one VM shares: the compiled engine, its per-VM state and counters, and
//! the host services all of them use (Envoy's clock and log).

use super::metrics::Metrics;
use crate::engine::exchange::Level;
use crate::engine::{Engine, VmState};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::cell::RefCell;
use std::time::UNIX_EPOCH;

/// Everything an HTTP context needs, shared with the root context of its VM.
pub(crate) struct Shared {
    pub engine: Engine,
    pub state: RefCell<VmState>,
    pub metrics: Metrics,
}

pub(crate) fn log(level: Level, message: &str) {
    super::probe::host_call();
    let _ = hostcalls::log(log_level(level), message);
}

pub(crate) fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// Milliseconds since the epoch from Envoy's clock (not the wasm runtime's).
pub(crate) fn now_ms() -> Option<u64> {
    super::probe::host_call();
    let t = hostcalls::get_current_time().ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
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
