//! Replay protection for signed requests (RFC 9421 `nonce`): a nonce seen within its window is
//! refused, whichever worker saw it first. Nonces live in bounded shared-data slots
//! ([`crate::store::slots`]): each slot holds up to [`PER_SLOT`] nonces with the time they may be
//! forgotten. A nonce that finds its slot full of other live nonces cannot be remembered, and so
//! cannot be protected: it is refused ([`Seen::Full`]), never let through unrecorded.
//!
//! Only requests whose signature verified reach this store, so filling it takes a signer's key;
//! its capacity is `slots * PER_SLOT` nonces per window (65,536 by default).

use crate::store::slots::{Missing, Outcome, Slots, Update};
use crate::store::SharedStore;
use sha2::{Digest, Sha256};

/// Nonces one slot remembers.
pub const PER_SLOT: usize = 4;
/// One remembered nonce: 8 bytes of fingerprint, 8 bytes of "forget after" (ms, little-endian).
const ENTRY: usize = 16;
const KEY_PREFIX: &str = "tollgate.nonce.";
/// 0x1e first, as every non-limit user of the slots (see `Slots::domain`).
const HASH_DOMAIN: &[u8] = b"\x1enonce";
/// Keeps the fingerprint independent of the slot choice.
const FINGERPRINT_DOMAIN: &[u8] = b"\x1enonce-fingerprint";

/// What the store says about a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within its window; now remembered until its window ends.
    Fresh,
    /// Seen before, and its window has not ended.
    Replayed,
    /// Its slot is full of other live nonces: not remembered, so refused.
    Full,
    /// Shared data failed or every compare-and-swap was lost: not remembered, so refused.
    Unavailable,
}

/// The nonce slots of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    slots: u32,
    attempts: u32,
}

impl Replay {
    pub fn new(slots: u32, attempts: u32) -> Replay {
        Replay {
            slots: slots.max(1),
            attempts: attempts.max(1),
        }
    }

    /// Records `parts` (the signer, the key and the nonce) unless it is live already; `forget_ms`
    /// is when the signature it came with stops being accepted.
    pub fn check(
        &self,
        store: &dyn SharedStore,
        secret: &[u8],
        parts: &[&str],
        now_ms: u64,
        forget_ms: u64,
    ) -> Seen {
        let slots = Slots::new(KEY_PREFIX, HASH_DOMAIN, self.slots);
        let key = slots.key(secret, parts);
        let print = fingerprint(secret, parts);
        let outcome = Slots::update(store, &key, self.attempts, Missing::Create, |current| {
            let mut live: Vec<[u8; ENTRY]> = entries(current.unwrap_or_default())
                .filter(|e| forget_after(e) > now_ms)
                .collect();
            if live.iter().any(|e| e.get(..8) == Some(&print[..])) {
                return Update::Keep(Seen::Replayed);
            }
            if live.len() >= PER_SLOT {
                return Update::Keep(Seen::Full);
            }
            let mut entry = [0u8; ENTRY];
            entry[..8].copy_from_slice(&print);
            entry[8..].copy_from_slice(&forget_ms.to_le_bytes());
            live.push(entry);
            Update::Write(live.concat(), Seen::Fresh)
        });
        match outcome {
            Ok(Outcome::Done { value, .. }) => value,
            Ok(Outcome::Exhausted { .. }) | Err(_) => Seen::Unavailable,
        }
    }
}

/// The entries of a slot's value; a trailing partial entry (never written by Tollgate) is
/// ignored.
fn entries(bytes: &[u8]) -> impl Iterator<Item = [u8; ENTRY]> + '_ {
    bytes.chunks_exact(ENTRY).filter_map(|c| c.try_into().ok())
}

fn forget_after(entry: &[u8; ENTRY]) -> u64 {
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&entry[8..]);
    u64::from_le_bytes(ms)
}

fn fingerprint(secret: &[u8], parts: &[&str]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(secret);
    h.update(FINGERPRINT_DOMAIN);
    for part in parts {
        h.update([0x1f]);
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut out = [0u8; 8];
    for (dst, src) in out.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SECRET: &[u8] = b"process secret";

    #[wasm_bindgen_test(unsupported = test)]
    fn a_nonce_is_refused_again_until_its_window_ends() {
        let store = MemoryStore::default();
        let r = Replay::new(16, 8);
        let n = ["partner", "key-1", "abc"];
        assert_eq!(r.check(&store, SECRET, &n, 1_000, 61_000), Seen::Fresh);
        assert_eq!(r.check(&store, SECRET, &n, 30_000, 91_000), Seen::Replayed);
        assert_eq!(r.check(&store, SECRET, &n, 60_999, 120_000), Seen::Replayed);
        // The window is over: the signature it came with is refused by its age anyway.
        assert_eq!(r.check(&store, SECRET, &n, 61_000, 121_000), Seen::Fresh);
        // The same nonce under another key or signer is another nonce.
        assert_eq!(
            r.check(
                &store,
                SECRET,
                &["partner", "key-2", "abc"],
                61_000,
                121_000
            ),
            Seen::Fresh
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_full_slot_refuses_rather_than_forgets() {
        let store = MemoryStore::default();
        let r = Replay::new(1, 8);
        for i in 0..PER_SLOT {
            let nonce = format!("n{i}");
            assert_eq!(
                r.check(&store, SECRET, &["s", "k", &nonce], 0, 1_000),
                Seen::Fresh
            );
        }
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "late"], 10, 1_000),
            Seen::Full
        );
        // Every remembered nonce is still refused; once they expire, room is made.
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "n0"], 10, 1_000),
            Seen::Replayed
        );
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "late"], 1_000, 2_000),
            Seen::Fresh
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn garbage_in_a_slot_is_not_trusted_as_a_nonce() {
        let store = MemoryStore::default();
        let r = Replay::new(1, 8);
        let key = Slots::new(KEY_PREFIX, HASH_DOMAIN, 1).key(SECRET, &["s", "k", "n"]);
        store.set(&key, b"short", 0).unwrap();
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "n"], 0, 10),
            Seen::Fresh
        );
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "n"], 1, 10),
            Seen::Replayed
        );
    }

    /// Shared data the host refuses.
    struct Down;
    impl SharedStore for Down {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, crate::store::StoreError> {
            Err(crate::store::StoreError::Unavailable)
        }
        fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), crate::store::StoreError> {
            Err(crate::store::StoreError::Unavailable)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_failing_or_contended_store_refuses() {
        let r = Replay::new(4, 2);
        assert_eq!(
            r.check(&Down, SECRET, &["s", "k", "n"], 0, 10),
            Seen::Unavailable
        );
        // Every swap lost (one slot: after the first nonce created it, each write is a
        // compare-and-swap).
        let r = Replay::new(1, 2);
        let store = crate::store::testing::Contended::new(u32::MAX);
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "a"], 0, 10),
            Seen::Fresh
        );
        assert_eq!(
            r.check(&store, SECRET, &["s", "k", "b"], 0, 10),
            Seen::Unavailable
        );
    }
}
