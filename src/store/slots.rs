//! Bounded, secret-keyed slots in shared data and the bounded compare-and-swap loop that updates
//! one: the primitive under rate-limit buckets, brute-force failure counters and any other
//! per-subject state kept in shared data.
//!
//! Bounded memory: proxy-wasm shared-data keys can never be deleted, so each user of shared data
//! owns a *fixed* number of slots (`<prefix><n>`, `n` below the count) and hashes every subject
//! (an identity, a client address, a tuple of request parts) into one of them with a process-wide
//! random secret. Colliding subjects share a slot; each user makes that err on the safe side
//! (limited or blocked more, never less), and without the secret an attacker cannot aim a
//! collision at someone else's slot.
//!
//! Contention: workers update a slot with a read and a compare-and-swap write. A lost swap is
//! retried a bounded number of times, so a hot slot costs bounded work per request; running out
//! is reported ([`Outcome::Exhausted`]) and the caller decides (deny, allow, do not count). The
//! value's encoding belongs to the caller: the loop hands it the stored bytes and stores the bytes
//! it returns.

use super::{SharedStore, StoreError};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Slots per user unless configured.
pub const DEFAULT_COUNT: u32 = 16_384;
/// Most slots one user may configure: with keys never deleted, this bounds its memory.
pub const MAX_COUNT: u32 = 1 << 20;
/// Compare-and-swap attempts per update unless configured.
pub const DEFAULT_ATTEMPTS: u32 = 8;
/// Most attempts one update may be configured to make.
pub const MAX_ATTEMPTS: u32 = 64;

/// Precedes each part of a subject in the hash, so that parts cannot run into each other.
const PART_SEPARATOR: u8 = 0x1f;

/// A fixed set of shared-data slots that subjects are hashed into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slots {
    /// Shared-data key prefix; a slot's key is the prefix followed by its number.
    prefix: Cow<'static, str>,
    /// Hashed between the secret and the subject, so that users sharing the secret map the same
    /// subject to unrelated slots.
    // INVARIANT: holds no `PART_SEPARATOR` byte, so that distinct domains hash distinct inputs
    // (rate limits use their name, an identifier; other users start with 0x1e).
    domain: Cow<'static, [u8]>,
    /// At least 1.
    count: u32,
}

/// What an update makes of a slot's current value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update<B, R> {
    /// Store `B` and answer `R`. A missing slot is created; an existing one is compare-and-swapped
    /// against the value the update was given.
    Write(B, R),
    /// Store nothing and answer `R`: nothing is written, so no swap can be lost.
    Keep(R),
}

/// How an update treats a slot that does not exist yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing<'a> {
    /// The update is given `None`, and its `Write` creates the slot: the first writer needs no
    /// swap. If another worker creates the slot first, the update runs again on their value.
    Create,
    /// The slot is created holding these bytes (unless another worker just created it) and read
    /// back: the update is never given `None`.
    Seed(&'a [u8]),
}

/// The end of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// The update's answer, after its write (if any) went through. `retries` counts the times it
    /// ran again because another worker had written the slot first.
    Done { value: R, retries: u32 },
    /// Every attempt lost its swap: nothing was written.
    Exhausted { retries: u32 },
}

impl Slots {
    /// `count` slots (at least 1) under keys `<prefix><n>`, hashed with `domain` (which must not
    /// hold the byte 0x1f).
    pub fn new(
        prefix: impl Into<Cow<'static, str>>,
        domain: impl Into<Cow<'static, [u8]>>,
        count: u32,
    ) -> Slots {
        Slots {
            prefix: prefix.into(),
            domain: domain.into(),
            count: count.max(1),
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Shared-data key of the slot that `parts` (one subject, already resolved) hash into.
    pub fn key(&self, secret: &[u8], parts: &[&str]) -> String {
        let mut h = Sha256::new();
        h.update(secret);
        h.update(&self.domain);
        for part in parts {
            h.update([PART_SEPARATOR]);
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        for (dst, src) in first.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        let slot = u64::from_le_bytes(first) % u64::from(self.count);
        format!("{}{slot}", self.prefix)
    }

    /// Read-modify-write of the slot at `key` with at most `attempts` compare-and-swap writes.
    /// `update` is given the stored bytes (`None`: missing, see [`Missing`]) and may run several
    /// times; creating a missing slot does not use up an attempt. Store errors other than a lost
    /// swap end the update.
    pub fn update<B: AsRef<[u8]>, R>(
        store: &dyn SharedStore,
        key: &str,
        attempts: u32,
        missing: Missing<'_>,
        mut update: impl FnMut(Option<&[u8]>) -> Update<B, R>,
    ) -> Result<Outcome<R>, StoreError> {
        let mut retries = 0;
        for _ in 0..attempts {
            let (bytes, cas) = match store.get(key)? {
                Some(found) => found,
                None => {
                    match missing {
                        Missing::Seed(seed) => {
                            // Whoever created it, the slot now exists.
                            create(store, key, seed)?;
                        }
                        Missing::Create => match update(None) {
                            Update::Keep(value) => return Ok(Outcome::Done { value, retries }),
                            Update::Write(next, value) => {
                                if create(store, key, next.as_ref())? {
                                    return Ok(Outcome::Done { value, retries });
                                }
                                retries += 1;
                            }
                        },
                    }
                    store.get(key)?.ok_or(StoreError::Unavailable)?
                }
            };
            match update(Some(&bytes)) {
                Update::Keep(value) => return Ok(Outcome::Done { value, retries }),
                Update::Write(next, value) => match store.set(key, next.as_ref(), cas) {
                    Ok(()) => return Ok(Outcome::Done { value, retries }),
                    Err(StoreError::CasMismatch) => retries += 1,
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(Outcome::Exhausted { retries })
    }
}

/// Creates `key` holding `value`; `false` when another worker created it first.
fn create(store: &dyn SharedStore, key: &str, value: &[u8]) -> Result<bool, StoreError> {
    match store.create(key, value) {
        Ok(()) => Ok(true),
        Err(StoreError::CasMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The process-wide secret slot keys are hashed with, kept at `key`: the first VM to get here
/// creates it from `fresh` (its own random bytes), every other VM reads that one, so all workers
/// of a process hash alike. `None`: shared data is unavailable, and the caller's buckets are its
/// own.
pub fn process_secret(store: &dyn SharedStore, key: &str, fresh: &[u8]) -> Option<Vec<u8>> {
    if let Ok(Some((secret, _))) = store.get(key) {
        return Some(secret);
    }
    let _ = store.create(key, fresh);
    store.get(key).ok().flatten().map(|(secret, _)| secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::Contended;
    use crate::store::MemoryStore;
    use std::collections::HashSet;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// A one-byte counter: `None` or garbage counts from 0; `at_most` keeps it from growing.
    fn increment(at_most: u8) -> impl FnMut(Option<&[u8]>) -> Update<[u8; 1], u8> {
        move |current| {
            let n = match current {
                Some([n]) => *n,
                _ => 0,
            };
            if n >= at_most {
                Update::Keep(n)
            } else {
                Update::Write([n + 1], n + 1)
            }
        }
    }

    fn value(store: &dyn SharedStore, key: &str) -> Option<Vec<u8>> {
        store.get(key).unwrap().map(|(v, _)| v)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn keys_are_bounded_spread_and_keyed() {
        let s = Slots::new("t/x/", &b"\x1ex"[..], 64);
        let mut seen = HashSet::new();
        for i in 0..10_000 {
            let key = s.key(b"secret", &[&i.to_string()]);
            let slot: u32 = key.strip_prefix("t/x/").unwrap().parse().unwrap();
            assert!(slot < 64, "{key}");
            seen.insert(slot);
        }
        assert!(seen.len() > 50, "subjects spread: {}", seen.len());

        for (count, want) in [(0, 1), (1, 1), (MAX_COUNT, MAX_COUNT)] {
            assert_eq!(Slots::new("p/", &b""[..], count).count(), want);
        }
        let one = Slots::new("p/", &b""[..], 0);
        assert!((0..100).all(|i| one.key(b"s", &[&i.to_string()]) == "p/0"));

        // With 2^20 slots, a different input lands elsewhere almost surely.
        let wide = |domain: &'static [u8]| Slots::new("p/", domain, MAX_COUNT);
        let a = wide(b"a");
        let moved = |f: &dyn Fn(&str) -> bool| (0..20).filter(|i| f(&i.to_string())).count();
        assert!(
            moved(&|i| a.key(b"s1", &[i]) != a.key(b"s2", &[i])) > 15,
            "secret"
        );
        assert!(
            moved(&|i| a.key(b"s", &[i]) != wide(b"b").key(b"s", &[i])) > 15,
            "domain"
        );
        assert!(
            moved(&|i| a.key(b"s", &["x", i]) != a.key(b"s", &[&format!("x{i}")])) > 15,
            "parts do not run into each other"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn key_format_is_stable() {
        // Shared data outlives configuration reloads and upgrades: the keys that rate limiting and
        // brute force wrote before this type existed must not move.
        let bf = Slots::new("tollgate/v1/bf/", &b"\x1ebrute_force"[..], DEFAULT_COUNT);
        assert_eq!(
            bf.key(b"test-secret", &["ip:10.1.2.3"]),
            "tollgate/v1/bf/542"
        );
        let rl = Slots::new(
            "tollgate/v1/rl/per-user/",
            b"per-user".to_vec(),
            DEFAULT_COUNT,
        );
        assert_eq!(
            rl.key(b"test-secret", &["alice", "GET"]),
            "tollgate/v1/rl/per-user/12260"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_slot_is_created_without_a_swap() {
        // Every swap loses, yet a creation goes through.
        let store = Contended::new(u32::MAX);
        let got = Slots::update(&store, "k", 3, Missing::Create, increment(9));
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 1,
                retries: 0
            })
        );
        assert_eq!(value(&store, "k"), Some(vec![1]));
        assert_eq!(store.sets(), 0);

        // Keep on a missing slot leaves it missing.
        let store = MemoryStore::default();
        let got = Slots::update(&store, "k", 3, Missing::Create, increment(0));
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 0,
                retries: 0
            })
        );
        assert_eq!(value(&store, "k"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn seeded_slot_is_updated_from_the_seed() {
        let store = MemoryStore::default();
        let mut seen = vec![];
        let got = Slots::update(&store, "k", 1, Missing::Seed(&[5]), |current| {
            seen.push(current.map(<[u8]>::to_vec));
            increment(9)(current)
        });
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 6,
                retries: 0
            })
        );
        assert_eq!(seen, [Some(vec![5])], "never given None");
        assert_eq!(value(&store, "k"), Some(vec![6]));

        // An existing slot is not reseeded.
        let got = Slots::update(&store, "k", 1, Missing::Seed(&[0]), increment(9));
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 7,
                retries: 0
            })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lost_creation_runs_the_update_on_theirs() {
        /// Another worker creates the key (holding 4) just before we do.
        struct Race(MemoryStore);
        impl SharedStore for Race {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.0.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                if cas == u32::MAX {
                    self.0.create(key, &[4])?;
                }
                self.0.set(key, value, cas)
            }
        }
        for missing in [Missing::Create, Missing::Seed(&[0])] {
            let store = Race(MemoryStore::default());
            let got = Slots::update(&store, "k", 1, missing, increment(9));
            let retries = u32::from(missing == Missing::Create);
            assert_eq!(got, Ok(Outcome::Done { value: 5, retries }), "{missing:?}");
            assert_eq!(value(&store, "k"), Some(vec![5]));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lost_swaps_are_retried_and_counted() {
        let store = Contended::new(0);
        store.inner.set("k", &[1], 0).unwrap();
        store.losses.set(3);
        let got = Slots::update(&store, "k", 4, Missing::Create, increment(9));
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 2,
                retries: 3
            })
        );
        assert_eq!(value(&store, "k"), Some(vec![2]), "counted once");
        assert_eq!(store.sets(), 4);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn exhaustion_is_bounded_and_reported() {
        let store = Contended::new(u32::MAX);
        store.inner.set("k", &[1], 0).unwrap();
        let got = Slots::update(&store, "k", 5, Missing::Create, increment(9));
        assert_eq!(got, Ok(Outcome::Exhausted { retries: 5 }));
        assert_eq!(store.sets(), 5, "exactly `attempts` swaps");
        assert_eq!(value(&store, "k"), Some(vec![1]), "nothing written");

        let got = Slots::update(&store, "k", 0, Missing::Create, increment(9));
        assert_eq!(got, Ok(Outcome::Exhausted { retries: 0 }));
        assert_eq!(store.sets(), 5, "no attempts, no swaps");

        // Keep never swaps, so contention cannot exhaust it.
        let got = Slots::update(&store, "k", 1, Missing::Create, increment(1));
        assert_eq!(
            got,
            Ok(Outcome::Done {
                value: 1,
                retries: 0
            })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn store_errors_end_the_update() {
        /// Reads work only when `reads`; every write is refused.
        struct Refusing {
            inner: MemoryStore,
            reads: bool,
        }
        impl SharedStore for Refusing {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                if self.reads {
                    self.inner.get(key)
                } else {
                    Err(StoreError::Unavailable)
                }
            }
            fn set(&self, _key: &str, _value: &[u8], _cas: u32) -> Result<(), StoreError> {
                Err(StoreError::Unavailable)
            }
        }
        /// Says the key exists when asked to create it, yet never returns it.
        struct Forgetful;
        impl SharedStore for Forgetful {
            fn get(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                Ok(None)
            }
            fn set(&self, _key: &str, _value: &[u8], _cas: u32) -> Result<(), StoreError> {
                Err(StoreError::CasMismatch)
            }
        }
        for missing in [Missing::Create, Missing::Seed(&[0])] {
            for (reads, existing) in [(false, false), (false, true), (true, false), (true, true)] {
                let store = Refusing {
                    inner: MemoryStore::default(),
                    reads,
                };
                if existing {
                    store.inner.set("k", &[1], 0).unwrap();
                }
                assert_eq!(
                    Slots::update(&store, "k", 8, missing, increment(9)),
                    Err(StoreError::Unavailable),
                    "{missing:?}, reads {reads}, existing {existing}"
                );
            }
            assert_eq!(
                Slots::update(&Forgetful, "k", 8, missing, increment(9)),
                Err(StoreError::Unavailable),
                "{missing:?}: created yet missing"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_first_secret_wins_for_every_vm() {
        let store = MemoryStore::default();
        assert_eq!(process_secret(&store, "s", b"one"), Some(b"one".to_vec()));
        assert_eq!(process_secret(&store, "s", b"two"), Some(b"one".to_vec()));
    }
}
