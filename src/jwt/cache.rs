//! Per-VM cache of verified tokens: a repeated token skips signature verification. Keyed by the
//! BLAKE2b-256 hash of the token (the token itself is never stored), bounded in entries, and every hit
//! re-checks the token's validity window and the key-set generation it was verified with.

use super::verify::Window;
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

/// Group orders of the ECDSA curves, big-endian: an ECDSA signature `(r, s)` has a twin
/// `(r, n - s)` that verifies as well, so one token has two spellings.
#[rustfmt::skip]
const P256_N: [u8; 32] = [0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51];
#[rustfmt::skip]
const P384_N: [u8; 48] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73];
#[rustfmt::skip]
const P521_N: [u8; 66] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa, 0x51, 0x86, 0x87, 0x83, 0xbf, 0x2f, 0x96, 0x6b, 0x7f, 0xcc, 0x01, 0x48, 0xf7, 0x09, 0xa5, 0xd0, 0x3b, 0xb5, 0xc9, 0xb8, 0x89, 0x9c, 0x47, 0xae, 0xbb, 0x6f, 0xb7, 0x1e, 0x91, 0x38, 0x64, 0x09];

/// `n - s`, big-endian, `s` and `n` of the same length (`0 < s < n`).
fn twin_of(s: &[u8], n: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; s.len()];
    let mut borrow = 0i16;
    for ((o, sb), nb) in out.iter_mut().zip(s).zip(n).rev() {
        let v = i16::from(*nb) - i16::from(*sb) - borrow;
        borrow = i16::from(v < 0);
        *o = v.rem_euclid(256) as u8;
    }
    out
}

/// The low one of `s` and `n - s`, so both twins read the same.
fn low_s(s: &mut [u8], n: &[u8]) {
    let twin = twin_of(s, n);
    // Same length, big-endian: byte order is numeric order.
    if twin.as_slice() < &*s {
        s.copy_from_slice(&twin);
    }
}

/// The identity of a token for lists that must hold whatever spelling a client sends (a
/// revocation list; issue 19): BLAKE2b-256 over the signing input and the decoded signature,
/// with an ECDSA `s` in its low form. Not the cache key: the cache is keyed on the exact bytes
/// because a spelling it does not know is simply verified again, and reading the header first
/// would cost every request a decode.
pub fn canonical_id(alg: super::Alg, token: &str) -> Option<TokenHash> {
    use base64::Engine as _;
    let (input, sig_b64) = token.rsplit_once('.')?;
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig_b64)
        .ok()?;
    let n: &[u8] = match alg {
        super::Alg::ES256 => &P256_N,
        super::Alg::ES384 => &P384_N,
        super::Alg::ES512 => &P521_N,
        _ => &[],
    };
    if !n.is_empty() {
        if sig.len() != 2 * n.len() {
            return None;
        }
        let s = sig.get_mut(n.len()..)?;
        low_s(s, n);
    }
    let digest = blake2b_simd::Params::new()
        .hash_length(32)
        .to_state()
        .update(input.as_bytes())
        .update(b".")
        .update(&sig)
        .finalize();
    let mut out = [0u8; 32];
    for (dst, src) in out.iter_mut().zip(digest.as_bytes()) {
        *dst = *src;
    }
    Some(out)
}

/// What a hit gives back: enough to allow the request without verifying again. `P` is the
/// engine's principal; the cache only stores it (generic so that `jwt` does not import `engine`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<P> {
    pub provider: usize,
    /// Key-set generation used for verification; a rotated set invalidates the entry.
    pub generation: u64,
    pub window: Window,
    /// Who the token identifies, with everything authorization and forwarding need.
    pub principal: Rc<P>,
}

pub struct TokenCache<P> {
    capacity: usize,
    entries: HashMap<TokenHash, Verified<P>>,
    /// Insertion order, for first-in-first-out eviction when full.
    order: VecDeque<TokenHash>,
    pub hits: u64,
    pub misses: u64,
}

impl<P: Clone> TokenCache<P> {
    pub fn new(capacity: usize) -> TokenCache<P> {
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
    ) -> Option<Verified<P>> {
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

    pub fn insert(&mut self, key: TokenHash, value: Verified<P>) {
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
    use crate::engine::Principal;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// The token with its ECDSA `s` replaced by `n - s` (the high-S twin, or back).
    fn twin(token: &str, n: &[u8]) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let twin = twin_of(&sig[n.len()..], n);
        sig[n.len()..].copy_from_slice(&twin);
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ecdsa_twins_have_one_canonical_id() {
        use crate::jwt::jwks::KeySet;
        use crate::jwt::verify::verify_signature;
        use crate::jwt::Alg;
        use crate::testkit::{self, Mint};
        let keys = KeySet::from_policy(&testkit::public_jwks(), &Alg::ALL, "k").unwrap();
        for (alg, kid, n) in [
            (Alg::ES256, "ec256", &P256_N[..]),
            (Alg::ES384, "ec384", &P384_N[..]),
            (Alg::ES512, "ec521", &P521_N[..]),
        ] {
            let token = Mint::new(alg, kid).now(1_800_000_000).sign();
            let other = twin(&token, n);
            let verifier = keys.candidates(alg, Some(kid)).unwrap().next().unwrap();
            // Both spellings verify (which also checks the curve orders above).
            assert!(verify_signature(verifier.verifier, &token).is_ok(), "{alg}");
            assert!(
                verify_signature(verifier.verifier, &other).is_ok(),
                "{alg} twin"
            );
            assert_ne!(
                hash(&token),
                hash(&other),
                "the cache sees two tokens; each is verified"
            );
            assert_eq!(
                canonical_id(alg, &token),
                canonical_id(alg, &other),
                "{alg}"
            );
            assert!(canonical_id(alg, &token).is_some());
        }
        // The same byte change on an HMAC signature is another (invalid) token with another id.
        let token = Mint::new(Alg::HS512, "hmac").now(1_800_000_000).sign();
        let other = twin(&token, &P256_N);
        assert_ne!(
            canonical_id(Alg::HS512, &token),
            canonical_id(Alg::HS512, &other)
        );
        assert_eq!(canonical_id(Alg::ES256, "a.b.!!"), None);
    }

    fn v(provider: usize, not_before: u64, not_after: u64) -> Verified<Principal> {
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
