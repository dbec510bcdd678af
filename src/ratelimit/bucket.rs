//! Token-bucket arithmetic on integer milli-tokens, as a pure function of the stored state and
//! `now` (milliseconds, host clock). No timers: refill is computed lazily on each request.

/// Milli-tokens per token: costs and capacities are whole tokens, refill is fractional.
pub const MILLI: u64 = 1000;

/// A bucket's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Tokens added per `period_ms`.
    pub rate: u64,
    pub period_ms: u64,
    /// Capacity in tokens.
    pub burst: u64,
}

/// What a bucket holds, as stored (16 bytes: two little-endian u64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub milli_tokens: u64,
    pub updated_ms: u64,
}

impl State {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let (a, b) = out.split_at_mut(8);
        a.copy_from_slice(&self.milli_tokens.to_le_bytes());
        b.copy_from_slice(&self.updated_ms.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<State> {
        let a: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let b: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        Some(State {
            milli_tokens: u64::from_le_bytes(a),
            updated_ms: u64::from_le_bytes(b),
        })
    }
}

/// The result of taking `cost` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Take {
    pub allowed: bool,
    /// State to store (refilled, and debited when allowed).
    pub next: State,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Milliseconds until `cost` tokens are available (0 when allowed).
    pub retry_after_ms: u64,
    /// Milliseconds until the bucket is full again.
    pub full_in_ms: u64,
}

impl Shape {
    pub fn capacity(&self) -> u64 {
        self.burst.saturating_mul(MILLI)
    }

    /// A new bucket starts full.
    pub fn fresh(&self, now_ms: u64) -> State {
        State {
            milli_tokens: self.capacity(),
            updated_ms: now_ms,
        }
    }

    /// Milli-tokens refilled over `elapsed_ms`.
    fn refill(&self, elapsed_ms: u64) -> u64 {
        let per = u128::from(self.period_ms.max(1));
        let added = u128::from(elapsed_ms) * u128::from(self.rate) * u128::from(MILLI) / per;
        u64::try_from(added).unwrap_or(u64::MAX)
    }

    /// Milliseconds to refill `missing` milli-tokens (rounded up).
    fn time_for(&self, missing: u64) -> u64 {
        if missing == 0 {
            return 0;
        }
        let per_ms = u128::from(self.rate.max(1)) * u128::from(MILLI);
        let ms = (u128::from(missing) * u128::from(self.period_ms)).div_ceil(per_ms);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    pub fn take(&self, stored: State, now_ms: u64, cost: u64) -> Take {
        // A clock that goes backwards refills nothing and never moves the stored time back.
        let elapsed = now_ms.saturating_sub(stored.updated_ms);
        let tokens = stored
            .milli_tokens
            .saturating_add(self.refill(elapsed))
            .min(self.capacity());
        let updated_ms = stored.updated_ms.max(now_ms);
        let need = cost.saturating_mul(MILLI);
        let allowed = tokens >= need;
        let left = if allowed { tokens - need } else { tokens };
        Take {
            allowed,
            next: State {
                milli_tokens: left,
                updated_ms,
            },
            remaining: left / MILLI,
            retry_after_ms: if allowed {
                0
            } else {
                self.time_for(need - tokens)
            },
            full_in_ms: self.time_for(self.capacity() - left),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    const S: Shape = Shape {
        rate: 10,
        period_ms: 1000,
        burst: 5,
    };

    #[wasm_bindgen_test(unsupported = test)]
    fn burst_then_refill() {
        let mut st = S.fresh(0);
        for i in 0..5 {
            let t = S.take(st, 0, 1);
            assert!(t.allowed, "burst {i}");
            st = t.next;
        }
        let t = S.take(st, 0, 1);
        assert!(!t.allowed);
        assert_eq!(t.retry_after_ms, 100, "one token per 100 ms");
        let t = S.take(st, 99, 1);
        assert!(!t.allowed);
        let t = S.take(st, 100, 1);
        assert!(t.allowed);
        assert_eq!(t.remaining, 0);
        // Long idle: capped at burst.
        let t = S.take(t.next, 1_000_000, 1);
        assert_eq!(t.remaining, 4);
        assert_eq!(t.full_in_ms, 100);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cost_and_fractions() {
        let st = S.fresh(0);
        let t = S.take(st, 0, 3);
        assert!(t.allowed && t.remaining == 2);
        let t2 = S.take(t.next, 0, 3);
        assert!(!t2.allowed);
        assert_eq!(t2.retry_after_ms, 100);
        assert_eq!(t2.next, t.next, "a refused request debits nothing");
        let t3 = S.take(t.next, 150, 3);
        assert!(t3.allowed, "2 + 1.5 tokens");
        assert_eq!(t3.next.milli_tokens, 500);
        let slow = Shape {
            rate: 1,
            period_ms: 3_600_000,
            burst: 1,
        };
        let t = slow.take(slow.fresh(0), 0, 1);
        let t = slow.take(t.next, 1_800_000, 1);
        assert!(!t.allowed);
        assert_eq!(t.retry_after_ms, 1_800_000);
        assert!(
            !S.take(S.fresh(0), 0, 6).allowed,
            "cost above burst never passes"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn clock_going_backwards() {
        let t = S.take(S.fresh(1000), 1000, 5);
        let back = S.take(t.next, 500, 1);
        assert!(!back.allowed, "no refill from a backwards step");
        assert_eq!(back.next.updated_ms, 1000, "stored time does not move back");
        assert!(S.take(back.next, 1100, 1).allowed);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn codec() {
        let st = State {
            milli_tokens: 123_456,
            updated_ms: 1_795_395_723_000,
        };
        assert_eq!(State::decode(&st.encode()), Some(st));
        assert_eq!(State::decode(&[1, 2, 3]), None);
    }
}
