//! Per-VM cache of verified tokens: a repeated token skips signature verification. Keyed by the
//! BLAKE2b-256 hash of the token (the token itself is never stored), bounded in entries, and every hit
//! re-checks the token's validity window and the key-set generation it was verified with.

use super::verify::Window;
use crate::engine::Principal;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

pub type TokenHash = [u8; 32];

/// A collision-resistant hash, so that no other token can stand for a verified one. BLAKE2b
/// rather than SHA-256: it is computed for every presented token, and in wasm (no SHA
/// instructions) it costs less than half as much.
pub fn hash(token: &str) -> TokenHash {
    let digest = blake2b_simd::Params::new()
        .hash_length(32)
        .hash(token.as_bytes());
    let mut out = [0u8; 32];
    for (dst, src) in out.iter_mut().zip(digest.as_bytes()) {
        *dst = *src;
    }
    out
}

/// What a hit gives back: enough to allow the request without verifying again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub provider: usize,
    /// Key-set generation used for verification; a rotated set invalidates the entry.
    pub generation: u64,
    pub window: Window,
    /// Who the token identifies, with everything authorization and forwarding need.
    pub principal: Rc<Principal>,
}

pub struct TokenCache {
    capacity: usize,
    entries: HashMap<TokenHash, Verified>,
    /// Insertion order, for first-in-first-out eviction when full.
    order: VecDeque<TokenHash>,
    pub hits: u64,
    pub misses: u64,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: HashMap::with_capacity(capacity.min(4096)),
            order: VecDeque::with_capacity(capacity.min(4096)),
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A usable entry for `key` at `now` with `generation`; stale entries are dropped.
    pub fn get(
        &mut self,
        key: &TokenHash,
        now: u64,
        generation_of: impl Fn(usize) -> u64,
    ) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        let fresh = match self.entries.get(key) {
            Some(v) if v.window.contains(now) && generation_of(v.provider) == v.generation => {
                Some(v.clone())
            }
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        };
        match fresh {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        fresh
    }

    pub fn insert(&mut self, key: TokenHash, value: Verified) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(key, value).is_some() {
            return;
        }
        self.order.push_back(key);
        // INVARIANT: `order` holds every key of `entries` (plus keys dropped as stale), so popping
        // until `entries` fits always terminates.
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.entries.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn v(provider: usize, not_before: u64, not_after: u64) -> Verified {
        Verified {
            provider,
            generation: 0,
            window: Window {
                not_before,
                not_after,
            },
            principal: Rc::new(Principal::api_key("t", vec![])),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn honours_window_and_generation() {
        let mut c = TokenCache::new(4);
        let k = hash("t");
        c.insert(k, v(0, 100, 200));
        assert!(c.get(&k, 150, |_| 0).is_some());
        assert!(c.get(&k, 150, |_| 1).is_none(), "key set rotated");
        c.insert(k, v(0, 100, 200));
        assert!(c.get(&k, 201, |_| 0).is_none(), "expired");
        assert!(c.get(&k, 150, |_| 0).is_none(), "expired entry was dropped");
        c.insert(k, v(0, 100, 200));
        assert!(c.get(&k, 99, |_| 0).is_none(), "not yet valid");
        assert_eq!((c.hits, c.misses), (1, 4));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bounded() {
        let mut c = TokenCache::new(3);
        for i in 0..1000 {
            c.insert(hash(&i.to_string()), v(0, 0, u64::MAX));
            assert!(c.len() <= 3);
            assert!(c.order.len() <= 7);
        }
        assert!(c.get(&hash("999"), 1, |_| 0).is_some());
        assert!(c.get(&hash("0"), 1, |_| 0).is_none());
        let mut off = TokenCache::new(0);
        off.insert(hash("a"), v(0, 0, 10));
        assert!(off.get(&hash("a"), 1, |_| 0).is_none());
        assert!(off.is_empty());
    }
}
