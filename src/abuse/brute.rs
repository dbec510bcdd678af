//! Brute-force protection: repeated authentication failures from one subject within a fixed window
//! start a temporary block, kept in shared data so that every worker enforces it. Subjects are
//! strings the caller builds and prefixes by kind, e.g. `ip:10.1.2.3`, `key:reporting`.
//!
//! Bounded memory: a configuration owns a fixed number of [`Slots`] (`slots`, default 16384),
//! each holding a [`STATE_BYTES`]-byte value under a key `tollgate/v1/bf/<slot>`: at most
//! slots × 20 bytes of values (320 KiB by default, 20 MiB at the 2^20 maximum) plus the keys and
//! Envoy's per-entry overhead. A subject is hashed with the process-wide secret into one slot.
//! Colliding subjects share a slot: their failures add up, so they are blocked *more* than
//! configured, never less.
//!
//! Checking a block is one read. Counting a failure is a compare-and-swap with a bounded number of
//! attempts ([`Slots::update`]); when they run out the caller gets [`Failure::Contended`].
//!
//! Clock: `now_ms` is the host's wall clock. Workers read it at slightly different moments, and it
//! can step backwards. Stored times up to [`CLOCK_TOLERANCE_MS`] in the future are believed (a
//! block may then last that much longer); anything further out cannot have been written by this
//! configuration under this clock, so it is discarded rather than trusted to block until the clock
//! catches up.

use crate::policy::{BruteForceDoc, ConfigError};
use crate::ratelimit::rls::{Descriptor, Unit};
use crate::store::slots::{self, Missing, Outcome, Slots, Update};
use crate::store::{SharedStore, StoreError};

pub const DEFAULT_SLOTS: u32 = slots::DEFAULT_COUNT;
pub const MAX_SLOTS: u32 = slots::MAX_COUNT;
pub const DEFAULT_MAX_RETRIES: u32 = slots::DEFAULT_ATTEMPTS;
/// Size of one slot's value.
pub const STATE_BYTES: usize = 20;
/// How far in the future a stored time may lie and still be believed.
pub const CLOCK_TOLERANCE_MS: u64 = 60_000;
/// Shared-data key prefix of the slots.
const KEY_PREFIX: &str = "tollgate/v1/bf/";
/// Separates these slots from rate-limit slots hashed with the same secret: a limit's hash domain
/// is its name, an identifier, which never starts with 0x1e.
const HASH_DOMAIN: &[u8] = b"\x1ebrute_force";

/// Compiled `brute_force`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BruteForce {
    pub max_failures: u32,
    pub window_ms: u64,
    pub block_ms: u64,
    pub slots: u32,
    pub max_retries: u32,
    /// Failures are also counted in the rate-limit service (`global`), in fixed windows of
    /// this unit.
    pub global: Option<Unit>,
}

/// The first descriptor entry of a failure counted in the rate-limit service.
pub const GLOBAL_KEY: &str = "tollgate_brute_force";

/// What one slot holds, as stored: 20 bytes, little-endian `window_start_ms` (u64),
/// `blocked_until_ms` (u64), `failures` (u32). The zero state is a fresh slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Time of the first failure of the current window.
    pub window_start_ms: u64,
    /// Failures counted in the current window; 0 means no window is open.
    pub failures: u32,
    /// End of the current block; in the past (or 0) when not blocked.
    pub blocked_until_ms: u64,
}

impl State {
    pub fn encode(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        let (start, rest) = out.split_at_mut(8);
        let (until, failures) = rest.split_at_mut(8);
        start.copy_from_slice(&self.window_start_ms.to_le_bytes());
        until.copy_from_slice(&self.blocked_until_ms.to_le_bytes());
        failures.copy_from_slice(&self.failures.to_le_bytes());
        out
    }

    /// `None` unless `bytes` is exactly one encoded state; callers then start fresh.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        if bytes.len() != STATE_BYTES {
            return None;
        }
        let start: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let until: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        let failures: [u8; 4] = bytes.get(16..20)?.try_into().ok()?;
        Some(State {
            window_start_ms: u64::from_le_bytes(start),
            failures: u32::from_le_bytes(failures),
            blocked_until_ms: u64::from_le_bytes(until),
        })
    }
}

/// Result of counting one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Counted; `failures` so far in the current window (below `max_failures`).
    Counted { failures: u32 },
    /// The subject is blocked for `retry_after` more seconds: this failure started the block, or
    /// one was already running.
    Blocked { retry_after: u64 },
    /// Compare-and-swap attempts ran out; the failure was not counted.
    Contended,
}

/// `value` must lie in `lo..=hi`.
fn check_range(errors: &mut Vec<ConfigError>, at: &str, field: &str, value: u64, lo: u64, hi: u64) {
    if !(lo..=hi).contains(&value) {
        errors.push(ConfigError::new(
            format!("{at}.{field}"),
            format!("{value} is out of range; expected {lo} to {hi}"),
        ));
    }
}

/// Whole seconds, rounded up, at least 1: a client told to retry after 0 seconds would retry at once.
fn retry_after_seconds(left_ms: u64) -> u64 {
    left_ms.div_ceil(1000).max(1)
}

impl BruteForce {
    /// Compiles `doc`, found at JSON path `at` (e.g. `brute_force`); `None` after pushing errors.
    pub fn compile(
        doc: &BruteForceDoc,
        at: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<BruteForce> {
        let start = errors.len();
        let slots = doc.slots.unwrap_or(DEFAULT_SLOTS);
        let max_retries = doc.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        check_range(
            errors,
            at,
            "max_failures",
            doc.max_failures.into(),
            1,
            10_000,
        );
        check_range(errors, at, "window_seconds", doc.window_seconds, 1, 86_400);
        check_range(errors, at, "block_seconds", doc.block_seconds, 1, 86_400);
        check_range(errors, at, "slots", slots.into(), 1, MAX_SLOTS.into());
        check_range(
            errors,
            at,
            "max_retries",
            max_retries.into(),
            1,
            slots::MAX_ATTEMPTS.into(),
        );
        // The service counts in fixed windows of a unit.
        let global = match (doc.global, doc.window_seconds) {
            (false, _) => None,
            (true, 1) => Some(Unit::Second),
            (true, 60) => Some(Unit::Minute),
            (true, 3600) => Some(Unit::Hour),
            (true, 86_400) => Some(Unit::Day),
            (true, other) => {
                errors.push(ConfigError::new(
                    format!("{at}.window_seconds"),
                    format!("{other} is not a window the rate-limit service counts in; with `global` expected one of [1, 60, 3600, 86400]"),
                ));
                None
            }
        };
        if errors.len() > start {
            return None;
        }
        Some(BruteForce {
            max_failures: doc.max_failures,
            window_ms: doc.window_seconds.saturating_mul(1000),
            block_ms: doc.block_seconds.saturating_mul(1000),
            slots,
            max_retries,
            global,
        })
    }

    /// The slots this configuration counts in; borrows only constants, so building it per call
    /// allocates nothing.
    fn shared_slots(&self) -> Slots {
        Slots::new(KEY_PREFIX, HASH_DOMAIN, self.slots)
    }

    /// Shared-data key of the slot that counts `subject`'s failures.
    pub fn slot_key(&self, secret: &[u8], subject: &str) -> String {
        self.shared_slots().key(secret, &[subject])
    }

    /// Milliseconds of block left at `now_ms`, if `state` holds a block to believe.
    fn block_left_ms(&self, state: &State, now_ms: u64) -> Option<u64> {
        let left = state
            .blocked_until_ms
            .checked_sub(now_ms)
            .filter(|l| *l > 0)?;
        if left > self.block_ms.saturating_add(CLOCK_TOLERANCE_MS) {
            // Longer than any block this configuration starts: the clock stepped back, the slot
            // holds garbage, or an earlier configuration had longer blocks. See the module doc.
            return None;
        }
        // Within the tolerance a block may end a little later than `block_ms` from now; never
        // promise more than a full block.
        Some(left.min(self.block_ms))
    }

    /// Whether `state` has a window that `now_ms` still falls into.
    fn window_open(&self, state: &State, now_ms: u64) -> bool {
        state.failures > 0
            && now_ms < state.window_start_ms.saturating_add(self.window_ms)
            && state.window_start_ms <= now_ms.saturating_add(CLOCK_TOLERANCE_MS)
    }

    /// One failure at `now_ms` on top of `state`: the state to store (`None`: leave it as it is)
    /// and the outcome.
    pub fn apply_failure(&self, state: State, now_ms: u64) -> (Option<State>, Failure) {
        if let Some(left) = self.block_left_ms(&state, now_ms) {
            // A failure during a block does not extend it: the block ends when we said it would
            // (the `Retry-After` we gave stays true), blocked traffic costs a read and never a
            // write, and someone who can fail as a victim's subject (knowing an API-key id, or
            // sharing a slot) cannot keep the victim blocked by trickling failures; they have to
            // start a new block with `max_failures` failures after this one ends.
            return (
                None,
                Failure::Blocked {
                    retry_after: retry_after_seconds(left),
                },
            );
        }
        let (window_start_ms, failures) = if self.window_open(&state, now_ms) {
            (state.window_start_ms, state.failures.saturating_add(1))
        } else {
            (now_ms, 1)
        };
        if failures >= self.max_failures {
            // The count restarts from zero: once the block ends, counting starts afresh with a
            // new window at the next failure.
            let next = State {
                window_start_ms: now_ms,
                failures: 0,
                blocked_until_ms: now_ms.saturating_add(self.block_ms),
            };
            let retry_after = retry_after_seconds(self.block_ms);
            return (Some(next), Failure::Blocked { retry_after });
        }
        let next = State {
            window_start_ms,
            failures,
            blocked_until_ms: 0,
        };
        (Some(next), Failure::Counted { failures })
    }

    /// The descriptor that counts one failure of `subject` in the rate-limit service: it is over
    /// its limit from the `max_failures`-th failure of a window on, across every proxy.
    pub fn descriptor(&self, subject: &str) -> Option<Descriptor> {
        let unit = self.global?;
        Some(Descriptor {
            entries: vec![
                (GLOBAL_KEY.to_string(), "failures".to_string()),
                ("client".to_string(), subject.to_string()),
            ],
            limit: Some((self.max_failures.saturating_sub(1), unit)),
        })
    }

    /// Blocks `subject` from `now_ms` for `block_ms` (the service found its failures over the
    /// limit across proxies); a block already running is kept as it is.
    pub fn start_block(
        &self,
        store: &dyn SharedStore,
        secret: &[u8],
        subject: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = self.slot_key(secret, subject);
        let outcome = Slots::update(store, &key, self.max_retries, Missing::Create, |stored| {
            let state = stored.and_then(State::decode).unwrap_or_default();
            if self.block_left_ms(&state, now_ms).is_some() {
                return Update::Keep(false);
            }
            let next = State {
                window_start_ms: now_ms,
                failures: 0,
                blocked_until_ms: now_ms.saturating_add(self.block_ms),
            };
            Update::Write(next.encode(), true)
        })?;
        Ok(matches!(outcome, Outcome::Done { value: true, .. }))
    }

    /// `Some(retry_after_seconds)` (rounded up, at least 1) while `subject` is blocked. Read-only;
    /// a slot never written, or holding garbage, is not blocked.
    pub fn blocked(
        &self,
        store: &dyn SharedStore,
        secret: &[u8],
        subject: &str,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.slot_key(secret, subject);
        let Some((bytes, _cas)) = store.get(&key)? else {
            return Ok(None);
        };
        let Some(state) = State::decode(&bytes) else {
            return Ok(None);
        };
        Ok(self.block_left_ms(&state, now_ms).map(retry_after_seconds))
    }

    /// Counts one authentication failure of `subject` with a bounded compare-and-swap loop
    /// (`max_retries` attempts).
    pub fn record_failure(
        &self,
        store: &dyn SharedStore,
        secret: &[u8],
        subject: &str,
        now_ms: u64,
    ) -> Result<Failure, StoreError> {
        let key = self.slot_key(secret, subject);
        // A missing slot is created by the first failure, already counted: no swap to lose.
        let outcome = Slots::update(store, &key, self.max_retries, Missing::Create, |stored| {
            // Missing or garbage: a fresh state.
            let state = stored.and_then(State::decode).unwrap_or_default();
            match self.apply_failure(state, now_ms) {
                (Some(next), failure) => Update::Write(next.encode(), failure),
                (None, failure) => Update::Keep(failure),
            }
        })?;
        Ok(match outcome {
            Outcome::Done { value, .. } => value,
            Outcome::Exhausted { .. } => Failure::Contended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use serde_json::json;
    use std::cell::Cell;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SECRET: &[u8] = b"test-secret";

    fn bf(v: serde_json::Value) -> BruteForce {
        let doc: BruteForceDoc = serde_json::from_value(v).unwrap();
        let mut errors = vec![];
        BruteForce::compile(&doc, "brute_force", &mut errors)
            .unwrap_or_else(|| panic!("{errors:?}"))
    }

    /// 3 failures within 60 s block for 60 s.
    fn three_per_minute() -> BruteForce {
        bf(json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60}))
    }

    fn fail(b: &BruteForce, store: &dyn SharedStore, subject: &str, now_ms: u64) -> Failure {
        b.record_failure(store, SECRET, subject, now_ms).unwrap()
    }

    fn blocked(b: &BruteForce, store: &dyn SharedStore, subject: &str, now_ms: u64) -> Option<u64> {
        b.blocked(store, SECRET, subject, now_ms).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compile_defaults() {
        let b = three_per_minute();
        assert_eq!(
            b,
            BruteForce {
                max_failures: 3,
                window_ms: 60_000,
                block_ms: 60_000,
                slots: DEFAULT_SLOTS,
                max_retries: DEFAULT_MAX_RETRIES,
                global: None,
            }
        );
        let b = bf(
            json!({"max_failures": 10_000, "window_seconds": 86_400, "block_seconds": 86_400, "slots": 1 << 20, "max_retries": 64}),
        );
        assert_eq!(
            (b.slots, b.max_retries, b.block_ms),
            (1 << 20, 64, 86_400_000)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compile_errors_name_path_and_range() {
        let mut errors = vec![];
        let doc: BruteForceDoc = serde_json::from_value(
            json!({"max_failures": 0, "window_seconds": 0, "block_seconds": 86_401, "slots": 0, "max_retries": 65}),
        )
        .unwrap();
        assert!(BruteForce::compile(&doc, "brute_force", &mut errors).is_none());
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "brute_force.max_failures",
                    "0 is out of range; expected 1 to 10000"
                ),
                (
                    "brute_force.window_seconds",
                    "0 is out of range; expected 1 to 86400"
                ),
                (
                    "brute_force.block_seconds",
                    "86401 is out of range; expected 1 to 86400"
                ),
                (
                    "brute_force.slots",
                    "0 is out of range; expected 1 to 1048576"
                ),
                (
                    "brute_force.max_retries",
                    "65 is out of range; expected 1 to 64"
                ),
            ]
        );

        let mut errors = vec![ConfigError::new("earlier", "unrelated")];
        let doc: BruteForceDoc = serde_json::from_value(
            json!({"max_failures": 10_001, "window_seconds": 86_401, "block_seconds": 0, "slots": (1 << 20) + 1, "max_retries": 0}),
        )
        .unwrap();
        assert!(BruteForce::compile(&doc, "routes[1].brute_force", &mut errors).is_none());
        assert_eq!(errors.len(), 6);
        assert_eq!(errors[1].path, "routes[1].brute_force.max_failures");
        assert_eq!(
            errors[4].message,
            "1048577 is out of range; expected 1 to 1048576"
        );

        // An earlier, unrelated error does not make a valid section fail.
        let doc: BruteForceDoc = serde_json::from_value(
            json!({"max_failures": 1, "window_seconds": 1, "block_seconds": 1}),
        )
        .unwrap();
        assert!(BruteForce::compile(&doc, "brute_force", &mut errors).is_some());

        for bad in [
            json!({"max_failures": 3, "window_seconds": 60}),
            json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "extra": 1}),
            json!({"max_failures": -1, "window_seconds": 60, "block_seconds": 60}),
        ] {
            assert!(
                serde_json::from_value::<BruteForceDoc>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn codec() {
        let st = State {
            window_start_ms: 1_795_395_723_000,
            failures: 7,
            blocked_until_ms: 1_795_395_783_000,
        };
        let bytes = st.encode();
        assert_eq!(bytes.len(), STATE_BYTES);
        assert_eq!(State::decode(&bytes), Some(st));
        assert_eq!(State::decode(&[1, 2, 3]), None);
        assert_eq!(State::decode(&[0; 21]), None);
        assert_eq!(State::decode(&[]), None);
        assert_eq!(State::decode(&[0; 20]), Some(State::default()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn slot_keys_are_bounded_and_keyed() {
        let b =
            bf(json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "slots": 64}));
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let key = b.slot_key(SECRET, &format!("ip:10.0.{}.{}", i / 256, i % 256));
            let slot: u32 = key
                .strip_prefix("tollgate/v1/bf/")
                .unwrap()
                .parse()
                .unwrap();
            assert!(slot < 64);
            seen.insert(key);
        }
        assert!(
            seen.len() > 50,
            "subjects spread over the slots: {}",
            seen.len()
        );
        let one =
            bf(json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "slots": 1}));
        assert_eq!(one.slot_key(SECRET, "ip:1.2.3.4"), "tollgate/v1/bf/0");
        let wide = bf(
            json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "slots": 1 << 20}),
        );
        let moved = (0..20)
            .filter(|i| {
                let s = format!("key:{i}");
                wide.slot_key(b"a", &s) != wide.slot_key(b"b", &s)
            })
            .count();
        assert!(moved > 15, "the secret changes the mapping");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn below_threshold_is_not_blocked() {
        let store = MemoryStore::default();
        let b = three_per_minute();
        assert_eq!(
            blocked(&b, &store, "ip:10.1.2.3", 1000),
            None,
            "missing slot"
        );
        assert_eq!(
            fail(&b, &store, "ip:10.1.2.3", 1000),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(blocked(&b, &store, "ip:10.1.2.3", 1000), None);
        assert_eq!(
            fail(&b, &store, "ip:10.1.2.3", 2000),
            Failure::Counted { failures: 2 }
        );
        assert_eq!(blocked(&b, &store, "ip:10.1.2.3", 2000), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn reaching_threshold_blocks_with_retry_after() {
        let store = MemoryStore::default();
        let b = three_per_minute();
        fail(&b, &store, "ip:10.1.2.3", 1000);
        fail(&b, &store, "ip:10.1.2.3", 2000);
        assert_eq!(
            fail(&b, &store, "ip:10.1.2.3", 3000),
            Failure::Blocked { retry_after: 60 }
        );
        assert_eq!(blocked(&b, &store, "ip:10.1.2.3", 3000), Some(60));
        assert_eq!(
            blocked(&b, &store, "ip:10.1.2.3", 3500),
            Some(60),
            "59.5 s rounds up"
        );
        assert_eq!(blocked(&b, &store, "ip:10.1.2.3", 62_000), Some(1));
        assert_eq!(
            blocked(&b, &store, "ip:10.1.2.3", 62_999),
            Some(1),
            "1 ms left is 1 s"
        );

        let once = bf(json!({"max_failures": 1, "window_seconds": 1, "block_seconds": 5}));
        let store = MemoryStore::default();
        assert_eq!(
            fail(&once, &store, "key:k", 0),
            Failure::Blocked { retry_after: 5 }
        );
        assert_eq!(blocked(&once, &store, "key:k", 0), Some(5));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn failures_while_blocked_do_not_extend_or_write() {
        let store = MemoryStore::default();
        let b = three_per_minute();
        for t in [0, 1, 2] {
            fail(&b, &store, "ip:a", t);
        }
        let key = b.slot_key(SECRET, "ip:a");
        let before = store.get(&key).unwrap().unwrap();
        assert_eq!(
            fail(&b, &store, "ip:a", 30_002),
            Failure::Blocked { retry_after: 30 }
        );
        assert_eq!(
            store.get(&key).unwrap().unwrap(),
            before,
            "no write, same CAS"
        );
        assert_eq!(blocked(&b, &store, "ip:a", 60_001), Some(1));
        assert_eq!(
            blocked(&b, &store, "ip:a", 60_002),
            None,
            "ends when first announced"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn expiry_unblocks_and_counting_starts_afresh() {
        let store = MemoryStore::default();
        let b = bf(json!({"max_failures": 2, "window_seconds": 600, "block_seconds": 10}));
        fail(&b, &store, "ip:a", 0);
        assert_eq!(
            fail(&b, &store, "ip:a", 1),
            Failure::Blocked { retry_after: 10 }
        );
        assert_eq!(blocked(&b, &store, "ip:a", 10_000), Some(1));
        assert_eq!(blocked(&b, &store, "ip:a", 10_001), None);
        // Still inside the 600 s window of the first failures, but they were spent on the block.
        assert_eq!(
            fail(&b, &store, "ip:a", 10_001),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(
            fail(&b, &store, "ip:a", 20_000),
            Failure::Blocked { retry_after: 10 }
        );
        assert_eq!(blocked(&b, &store, "ip:a", 29_999), Some(1));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn window_expiry_resets_the_count() {
        let store = MemoryStore::default();
        let b = three_per_minute();
        fail(&b, &store, "ip:a", 1000);
        assert_eq!(
            fail(&b, &store, "ip:a", 2000),
            Failure::Counted { failures: 2 }
        );
        // The window runs from the first failure: [1000, 61000).
        assert_eq!(
            fail(&b, &store, "ip:a", 61_000),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(
            fail(&b, &store, "ip:a", 62_000),
            Failure::Counted { failures: 2 }
        );
        assert_eq!(blocked(&b, &store, "ip:a", 62_000), None);
        assert_eq!(
            fail(&b, &store, "ip:a", 120_999),
            Failure::Blocked { retry_after: 60 },
            "last ms of the window"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn subjects_are_independent() {
        let store = MemoryStore::default();
        let b = bf(
            json!({"max_failures": 2, "window_seconds": 60, "block_seconds": 60, "slots": 1 << 20}),
        );
        assert_ne!(
            b.slot_key(SECRET, "ip:10.0.0.1"),
            b.slot_key(SECRET, "ip:10.0.0.2")
        );
        fail(&b, &store, "ip:10.0.0.1", 0);
        assert_eq!(
            fail(&b, &store, "ip:10.0.0.1", 0),
            Failure::Blocked { retry_after: 60 }
        );
        assert_eq!(blocked(&b, &store, "ip:10.0.0.2", 0), None);
        assert_eq!(
            fail(&b, &store, "ip:10.0.0.2", 0),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(blocked(&b, &store, "ip:10.0.0.1", 0), Some(60));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn colliding_subjects_share_a_slot() {
        let store = MemoryStore::default();
        let b =
            bf(json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "slots": 1}));
        assert_eq!(
            fail(&b, &store, "ip:10.0.0.1", 0),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(
            fail(&b, &store, "key:reporting", 0),
            Failure::Counted { failures: 2 }
        );
        assert_eq!(
            fail(&b, &store, "ip:10.0.0.1", 0),
            Failure::Blocked { retry_after: 60 }
        );
        assert_eq!(
            blocked(&b, &store, "key:reporting", 0),
            Some(60),
            "blocked more, never less"
        );
        assert_eq!(blocked(&b, &store, "ip:10.0.0.3", 0), Some(60));
    }

    /// A store where every compare-and-swap write loses; creating a missing key still works.
    struct AlwaysContended {
        inner: MemoryStore,
        sets: Cell<u32>,
    }

    impl SharedStore for AlwaysContended {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, _key: &str, _value: &[u8], _cas: u32) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            Err(StoreError::CasMismatch)
        }
        fn create(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.inner.create(key, value)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn contention_is_bounded() {
        let b = bf(
            json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "max_retries": 5}),
        );
        let store = AlwaysContended {
            inner: MemoryStore::default(),
            sets: Cell::new(0),
        };
        assert_eq!(
            fail(&b, &store, "ip:a", 0),
            Failure::Counted { failures: 1 },
            "creating the slot needs no compare-and-swap"
        );
        assert_eq!(fail(&b, &store, "ip:a", 0), Failure::Contended);
        assert_eq!(store.sets.get(), 5, "exactly max_retries attempts");
        assert_eq!(
            blocked(&b, &store, "ip:a", 0),
            None,
            "a contended failure is not counted"
        );
    }

    /// A store where another worker creates the key just before we do, once.
    struct CreationRace {
        inner: MemoryStore,
        raced: Cell<bool>,
    }

    impl SharedStore for CreationRace {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
        fn create(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            if !self.raced.replace(true) {
                let theirs = State {
                    window_start_ms: 0,
                    failures: 1,
                    blocked_until_ms: 0,
                };
                self.inner.create(key, &theirs.encode())?;
            }
            self.inner.create(key, value)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn losing_the_creation_race_counts_on_top() {
        let b = bf(
            json!({"max_failures": 3, "window_seconds": 60, "block_seconds": 60, "max_retries": 1}),
        );
        let store = CreationRace {
            inner: MemoryStore::default(),
            raced: Cell::new(false),
        };
        assert_eq!(
            fail(&b, &store, "ip:a", 0),
            Failure::Counted { failures: 2 },
            "the lost creation did not use the single attempt"
        );
    }

    struct Broken;

    impl SharedStore for Broken {
        fn get(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Err(StoreError::Unavailable)
        }
        fn set(&self, _key: &str, _value: &[u8], _cas: u32) -> Result<(), StoreError> {
            Err(StoreError::Unavailable)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn store_errors_are_returned() {
        let b = three_per_minute();
        assert_eq!(
            b.blocked(&Broken, SECRET, "ip:a", 0),
            Err(StoreError::Unavailable)
        );
        assert_eq!(
            b.record_failure(&Broken, SECRET, "ip:a", 0),
            Err(StoreError::Unavailable)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn garbage_in_the_slot_is_a_fresh_state() {
        let b = three_per_minute();
        let key = b.slot_key(SECRET, "ip:a");
        for garbage in [&b"junk"[..], &[], &[0xff; 20], &[0xff; 64]] {
            let store = MemoryStore::default();
            store.set(&key, garbage, 0).unwrap();
            assert_eq!(blocked(&b, &store, "ip:a", 5000), None, "{garbage:?}");
            assert_eq!(
                fail(&b, &store, "ip:a", 5000),
                Failure::Counted { failures: 1 },
                "{garbage:?}"
            );
            assert_eq!(
                fail(&b, &store, "ip:a", 5001),
                Failure::Counted { failures: 2 }
            );
            assert_eq!(
                fail(&b, &store, "ip:a", 5002),
                Failure::Blocked { retry_after: 60 }
            );
        }
        // A decodable count far above the threshold: the next failure blocks.
        let store = MemoryStore::default();
        let huge = State {
            window_start_ms: 5000,
            failures: u32::MAX,
            blocked_until_ms: 0,
        };
        store.set(&key, &huge.encode(), 0).unwrap();
        assert_eq!(
            fail(&b, &store, "ip:a", 5000),
            Failure::Blocked { retry_after: 60 }
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn clock_going_backwards() {
        let b = three_per_minute();
        let store = MemoryStore::default();
        let t = 1_000_000;
        for i in 0..3 {
            fail(&b, &store, "ip:a", t + i);
        }
        // A small step back (or a worker with a slightly older reading): still blocked, and
        // never told to wait longer than one block.
        assert_eq!(blocked(&b, &store, "ip:a", t - 5000), Some(60));
        assert_eq!(
            fail(&b, &store, "ip:a", t - 5000),
            Failure::Blocked { retry_after: 60 }
        );
        // A large step back: the block cannot be one this configuration wrote; not blocked
        // until the clock catches up.
        assert_eq!(blocked(&b, &store, "ip:a", 0), None);
        assert_eq!(
            fail(&b, &store, "ip:a", 0),
            Failure::Counted { failures: 1 }
        );
        assert_eq!(
            fail(&b, &store, "ip:a", 0),
            Failure::Counted { failures: 2 }
        );
        assert_eq!(
            fail(&b, &store, "ip:a", 0),
            Failure::Blocked { retry_after: 60 }
        );

        // Failures slightly out of order count in one window; a window that starts far in the
        // future is replaced.
        let store = MemoryStore::default();
        fail(&b, &store, "ip:b", 10_000);
        assert_eq!(
            fail(&b, &store, "ip:b", 9_000),
            Failure::Counted { failures: 2 }
        );
        let far = State {
            window_start_ms: t,
            failures: 2,
            blocked_until_ms: 0,
        };
        store
            .set(&b.slot_key(SECRET, "ip:b"), &far.encode(), 0)
            .unwrap();
        assert_eq!(
            fail(&b, &store, "ip:b", 0),
            Failure::Counted { failures: 1 }
        );

        // Extreme clocks do not panic.
        let store = MemoryStore::default();
        for now in [u64::MAX, 0, u64::MAX - 1, 1] {
            fail(&b, &store, "ip:c", now);
            blocked(&b, &store, "ip:c", now);
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn shorter_block_after_reload_is_honoured() {
        let store = MemoryStore::default();
        let long = bf(json!({"max_failures": 1, "window_seconds": 60, "block_seconds": 3600}));
        assert_eq!(
            fail(&long, &store, "ip:a", 0),
            Failure::Blocked { retry_after: 3600 }
        );
        let short = bf(json!({"max_failures": 1, "window_seconds": 60, "block_seconds": 60}));
        assert_eq!(
            blocked(&short, &store, "ip:a", 0),
            None,
            "an hour is beyond 60 s + tolerance"
        );
        let medium = bf(json!({"max_failures": 1, "window_seconds": 60, "block_seconds": 3570}));
        assert_eq!(
            blocked(&medium, &store, "ip:a", 0),
            Some(3570),
            "within tolerance, capped"
        );
    }
}
