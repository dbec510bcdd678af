//! The shared-storage seam: what the engine needs from Envoy's proxy-wasm shared data (a
//! process-wide key/value map visible to every worker VM with the same `vm_id`), and an in-memory
//! implementation with the same semantics for tests. State kept in bounded, secret-keyed slots
//! goes through [`slots::Slots`].

pub mod slots;

use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (compare-and-swap lost).
    CasMismatch,
    /// The host refused the call.
    Unavailable,
}

/// Get and compare-and-swap set, as the proxy-wasm ABI offers them.
///
/// Semantics copied from Envoy (proxy-wasm-cpp-host `SharedData::set`): `cas == 0` writes
/// unconditionally; a non-zero `cas` must equal the key's current CAS, *but only if the key
/// exists* - a missing key is created whatever `cas` says. Keys can never be deleted.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;

    /// Creates `key` only if it does not exist yet. The ABI has no such call: writing with a CAS
    /// that no live key holds fails on an existing key and creates a missing one.
    // INVARIANT: a key's CAS equals `u32::MAX` only after ~4e9 writes process-wide; the worst
    // outcome then is that a creation overwrites, i.e. one duplicate JWKS fetch.
    fn create(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.set(key, value, u32::MAX)
    }
}

/// Process-local store with Envoy's semantics, for tests and native tools.
#[derive(Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

#[cfg(test)]
impl MemoryStore {
    /// How many keys it holds (bounded-memory tests).
    pub(crate) fn len(&self) -> usize {
        self.map.borrow().len()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let mut map = self.map.borrow_mut();
        let mut next = self.next_cas.borrow_mut();
        *next = next.wrapping_add(1).max(1);
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(StoreError::CasMismatch);
                }
                *entry = (value.to_vec(), *next);
            }
            None => {
                map.insert(key.to_string(), (value.to_vec(), *next));
            }
        }
        Ok(())
    }
}

/// Test stores shared by the users of shared data.
#[cfg(test)]
pub(crate) mod testing {
    use super::{MemoryStore, SharedStore, StoreError};
    use std::cell::Cell;

    /// Injected contention: another worker wins the next `losses` compare-and-swap writes
    /// (creations with `u32::MAX` pass); every other write is counted.
    pub(crate) struct Contended {
        pub(crate) inner: MemoryStore,
        pub(crate) losses: Cell<u32>,
        sets: Cell<u32>,
    }

    impl Contended {
        pub(crate) fn new(losses: u32) -> Contended {
            Contended {
                inner: MemoryStore::default(),
                losses: Cell::new(losses),
                sets: Cell::new(0),
            }
        }

        /// Writes other than creations, won or lost.
        pub(crate) fn sets(&self) -> u32 {
            self.sets.get()
        }
    }

    impl SharedStore for Contended {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if cas == u32::MAX {
                return self.inner.set(key, value, cas);
            }
            self.sets.set(self.sets.get() + 1);
            if self.losses.get() > 0 {
                self.losses.set(self.losses.get() - 1);
                // The other worker rewrote the value: same bytes, new CAS.
                let (v, _) = self.inner.get(key)?.ok_or(StoreError::Unavailable)?;
                self.inner.set(key, &v, 0)?;
                return Err(StoreError::CasMismatch);
            }
            self.inner.set(key, value, cas)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn cas_semantics_match_envoy() {
        let s = MemoryStore::default();
        assert_eq!(s.get("k").unwrap(), None);
        s.set("k", b"a", 12345).unwrap(); // missing key: created whatever the cas
        let (v, cas) = s.get("k").unwrap().unwrap();
        assert_eq!(v, b"a");
        assert_eq!(s.set("k", b"b", cas + 1), Err(StoreError::CasMismatch));
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", cas), Err(StoreError::CasMismatch));
        s.set("k", b"c", 0).unwrap();
        assert_eq!(s.create("k", b"d"), Err(StoreError::CasMismatch));
        assert_eq!(s.get("k").unwrap().unwrap().0, b"c");
        s.create("new", b"x").unwrap();
        assert_eq!(s.get("new").unwrap().unwrap().0, b"x");
    }
}
