//! Remote JWKS: one fetch per Envoy process, shared with every worker through shared data.
//!
//! Each provider with `remote_jwks` owns two shared-data keys under `RemoteSpec::key_prefix`
//! (`tollgate/v1/jwks/<provider>/<fingerprint>`, since shared data is namespaced by `vm_id` only):
//! - `.../state`: a small JSON [`State`] updated by compare-and-swap - the
//!   installed generation, when the next fetch is due, who holds the fetch lease, whether an early
//!   refresh was asked for;
//! - `.../keys`: `<generation>\n<jwks body>`, the last good document.
//!
//! Every worker's root context calls [`sync`] and [`claim_fetch`] on its timer; the one that wins the
//! lease dispatches the HTTP call and reports with [`complete_fetch`]. A failed or invalid fetch
//! never replaces the last good keys. Requests with an unknown `kid` call [`request_early`], which
//! allows one early fetch per `min_refresh_seconds`.

use super::alg::Alg;
use super::jwks::KeySet;
use crate::policy::{ConfigError, RemoteJwksDoc};
use crate::store::{SharedStore, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::rc::Rc;

pub const DEFAULT_REFRESH_SECONDS: u64 = 300;
pub const DEFAULT_RETRY_SECONDS: u64 = 10;
pub const DEFAULT_MIN_REFRESH_SECONDS: u64 = 30;
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Bound on compare-and-swap attempts for one state change; contention here is a handful of
/// workers ticking once a second, so losing this many times in a row means something is wrong.
const CAS_ATTEMPTS: usize = 16;

/// Where and how often to fetch, compiled from `remote_jwks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `tollgate/v1/jwks/<provider>/<fingerprint of cluster and uri>`: two policies that share a
    /// `vm_id` and a provider name but fetch from different places never share key sets.
    pub key_prefix: String,
    pub cluster: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub refresh_seconds: u64,
    pub retry_seconds: u64,
    pub min_refresh_seconds: u64,
    pub timeout_ms: u64,
    pub max_bytes: usize,
}

impl RemoteSpec {
    pub fn compile(
        provider: &str,
        doc: &RemoteJwksDoc,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<RemoteSpec> {
        let start = errors.len();
        if doc.cluster.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.cluster"),
                "must name an envoy cluster",
            ));
        }
        let (scheme, rest) = match doc.uri.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            _ => {
                errors.push(ConfigError::new(
                    format!("{path}.uri"),
                    format!(
                        "`{}` is not an absolute uri; expected `http://` or `https://host/path`",
                        doc.uri
                    ),
                ));
                ("http", "")
            }
        };
        let (authority, req_path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
            None => (rest, "/"),
        };
        if errors.len() == start && authority.is_empty() {
            errors.push(ConfigError::new(format!("{path}.uri"), "uri has no host"));
        }
        let refresh_seconds = doc.refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECONDS);
        let retry_seconds = doc.retry_seconds.unwrap_or(DEFAULT_RETRY_SECONDS);
        let min_refresh_seconds = doc
            .min_refresh_seconds
            .unwrap_or(DEFAULT_MIN_REFRESH_SECONDS);
        let timeout_ms = doc.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        let max_bytes = doc.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        let ranges: [(&str, u64, u64, u64); 5] = [
            ("refresh_seconds", refresh_seconds, 1, 86_400),
            ("retry_seconds", retry_seconds, 1, 86_400),
            ("min_refresh_seconds", min_refresh_seconds, 1, 86_400),
            ("timeout_ms", timeout_ms, 1, 60_000),
            ("max_bytes", max_bytes as u64, 256, 1 << 20),
        ];
        for (field, value, lo, hi) in ranges {
            if value < lo || value > hi {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    format!("{value} is out of range; expected {lo} to {hi}"),
                ));
            }
        }
        let fingerprint = Sha256::digest(format!("{}\n{}", doc.cluster, doc.uri).as_bytes());
        let fingerprint: String = fingerprint
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        (errors.len() == start).then(|| RemoteSpec {
            key_prefix: format!("tollgate/v1/jwks/{provider}/{fingerprint}"),
            cluster: doc.cluster.clone(),
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path: req_path.to_string(),
            refresh_seconds,
            retry_seconds,
            min_refresh_seconds,
            timeout_ms,
            max_bytes,
        })
    }

    /// How long a fetch lease is held: the call's timeout plus a second of slack.
    fn lease_seconds(&self) -> u64 {
        self.timeout_ms.div_ceil(1000) + 1
    }
}

/// Shared per-provider state. Times are seconds since the epoch (host clock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Generation of the last good key set in shared data; 0 = none yet.
    pub generation: u64,
    /// When the next periodic fetch is due.
    pub next_fetch: u64,
    /// A fetch is in flight until this time (a lease that expires if its holder vanishes).
    pub lease_until: u64,
    /// An unknown `kid` asked for an early fetch.
    pub early_wanted: bool,
    /// No early fetch before this time.
    pub early_after: u64,
    /// Consecutive failed fetches.
    pub failures: u32,
}

/// A key set installed in this VM, with the generation it came from: a JWKS of a provider
/// (`KeySet`), or the keys of a signer of HTTP message signatures.
pub struct Installed<K = KeySet> {
    pub generation: u64,
    pub keys: Rc<K>,
}

/// Reads a fetched document into the keys it holds; `Err` says why there are none usable.
pub type Parse<'a, K> = &'a dyn Fn(&[u8]) -> Result<K, &'static str>;

fn state_key(spec: &RemoteSpec) -> String {
    format!("{}/state", spec.key_prefix)
}

fn keys_key(spec: &RemoteSpec) -> String {
    format!("{}/keys", spec.key_prefix)
}

fn read_state(store: &dyn SharedStore, spec: &RemoteSpec) -> Result<(State, u32), StoreError> {
    let key = state_key(spec);
    if let Some((bytes, cas)) = store.get(&key)? {
        // A value we cannot read (older format) is replaced on the next successful CAS.
        return Ok((serde_json::from_slice(&bytes).unwrap_or_default(), cas));
    }
    let fresh = serde_json::to_vec(&State::default()).map_err(|_| StoreError::Unavailable)?;
    match store.create(&key, &fresh) {
        Ok(()) | Err(StoreError::CasMismatch) => {}
        Err(e) => return Err(e),
    }
    let (bytes, cas) = store.get(&key)?.ok_or(StoreError::Unavailable)?;
    Ok((serde_json::from_slice(&bytes).unwrap_or_default(), cas))
}

/// Applies `change` to the provider's state with a bounded CAS loop. `change` returns `None` to
/// leave the state alone; the result says whether this call wrote it.
fn update_state(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    mut change: impl FnMut(&State) -> Option<State>,
) -> Result<bool, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (state, cas) = read_state(store, spec)?;
        let Some(next) = change(&state) else {
            return Ok(false);
        };
        let bytes = serde_json::to_vec(&next).map_err(|_| StoreError::Unavailable)?;
        match store.set(&state_key(spec), &bytes, cas) {
            Ok(()) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Installs the shared key set in this VM if shared data holds a newer generation.
/// Returns `true` when a new set was installed.
pub fn sync(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    algs: &[Alg],
    installed: &mut Option<Installed>,
) -> Result<bool, StoreError> {
    sync_with(
        store,
        spec,
        &|body| KeySet::from_fetched(body, algs),
        installed,
    )
}

/// [`sync`] for keys of any kind, read by `parse`.
pub fn sync_with<K>(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    parse: Parse<'_, K>,
    installed: &mut Option<Installed<K>>,
) -> Result<bool, StoreError> {
    let Some((bytes, _)) = store.get(&state_key(spec))? else {
        return Ok(false);
    };
    let state: State = serde_json::from_slice(&bytes).unwrap_or_default();
    let current = installed.as_ref().map_or(0, |i| i.generation);
    if state.generation == 0 || state.generation == current {
        return Ok(false);
    }
    let Some((entry, _)) = store.get(&keys_key(spec))? else {
        return Ok(false);
    };
    let Some((generation, body)) = split_entry(&entry) else {
        return Ok(false);
    };
    if generation == current {
        return Ok(false);
    }
    match parse(body) {
        Ok(keys) => {
            *installed = Some(Installed {
                generation,
                keys: Rc::new(keys),
            });
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}

fn split_entry(entry: &[u8]) -> Option<(u64, &[u8])> {
    let nl = entry.iter().position(|b| *b == b'\n')?;
    let generation = std::str::from_utf8(entry.get(..nl)?).ok()?.parse().ok()?;
    Some((generation, entry.get(nl + 1..)?))
}

/// Whether this VM should fetch now: a fetch is due (periodic, or an allowed early refresh) and
/// this call won the lease. At most one VM in the process wins it.
pub fn claim_fetch(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    now: u64,
) -> Result<bool, StoreError> {
    update_state(store, spec, |s| {
        let periodic = now >= s.next_fetch;
        let early = s.early_wanted && now >= s.early_after;
        if !(periodic || early) || now < s.lease_until {
            return None;
        }
        let mut next = s.clone();
        next.lease_until = now + spec.lease_seconds();
        if early {
            next.early_wanted = false;
            next.early_after = now + spec.min_refresh_seconds;
        }
        Some(next)
    })
}

/// Why a fetch produced no keys; for the operator's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// The call could not be dispatched or timed out.
    Unreachable,
    Status(u32),
    TooLarge,
    Invalid(&'static str),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Unreachable => f.write_str("no response"),
            FetchFailure::Status(s) => write!(f, "http status {s}"),
            FetchFailure::TooLarge => f.write_str("response larger than `max_bytes`"),
            FetchFailure::Invalid(why) => f.write_str(why),
        }
    }
}

/// Records a fetch's outcome: a good body becomes the shared key set (and this VM's), anything
/// else keeps the last good set and schedules a retry. Returns the failure, if any, for logging.
pub fn complete_fetch(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    algs: &[Alg],
    now: u64,
    outcome: Result<&[u8], FetchFailure>,
    installed: &mut Option<Installed>,
) -> Result<Result<(), FetchFailure>, StoreError> {
    let parse = |body: &[u8]| KeySet::from_fetched(body, algs);
    complete_fetch_with(store, spec, &parse, now, outcome, installed)
}

/// [`complete_fetch`] for keys of any kind, read by `parse`.
pub fn complete_fetch_with<K>(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    parse: Parse<'_, K>,
    now: u64,
    outcome: Result<&[u8], FetchFailure>,
    installed: &mut Option<Installed<K>>,
) -> Result<Result<(), FetchFailure>, StoreError> {
    let checked = outcome.and_then(|body| {
        if body.len() > spec.max_bytes {
            return Err(FetchFailure::TooLarge);
        }
        parse(body)
            .map(|keys| (body, keys))
            .map_err(FetchFailure::Invalid)
    });
    match checked {
        Ok((body, keys)) => {
            let previous = store.get(&keys_key(spec))?;
            let same = previous
                .as_ref()
                .and_then(|(entry, _)| split_entry(entry))
                .filter(|(_, old)| *old == body)
                .map(|(generation, _)| generation);
            let generation = match same {
                Some(generation) => generation,
                None => {
                    let (state, _) = read_state(store, spec)?;
                    let generation = state.generation.max(previous_generation(&previous)) + 1;
                    let mut entry = format!("{generation}\n").into_bytes();
                    entry.extend_from_slice(body);
                    // The lease holder is the only writer of this key, so no CAS is needed; the
                    // state below is written after it, so readers never see a generation whose
                    // keys are not there yet.
                    store.set(&keys_key(spec), &entry, 0)?;
                    generation
                }
            };
            update_state(store, spec, |s| {
                let mut next = s.clone();
                next.generation = generation;
                next.next_fetch = now + spec.refresh_seconds;
                next.lease_until = 0;
                next.failures = 0;
                Some(next)
            })?;
            if installed
                .as_ref()
                .is_none_or(|i| i.generation != generation)
            {
                *installed = Some(Installed {
                    generation,
                    keys: Rc::new(keys),
                });
            }
            Ok(Ok(()))
        }
        Err(failure) => {
            update_state(store, spec, |s| {
                let mut next = s.clone();
                next.next_fetch = now + spec.retry_seconds.min(spec.refresh_seconds);
                next.lease_until = 0;
                next.failures = s.failures.saturating_add(1);
                Some(next)
            })?;
            Ok(Err(failure))
        }
    }
}

fn previous_generation(previous: &Option<(Vec<u8>, u32)>) -> u64 {
    previous
        .as_ref()
        .and_then(|(entry, _)| split_entry(entry))
        .map_or(0, |(generation, _)| generation)
}

/// Asks for an early fetch after a token named a `kid` we do not hold. Rate-limited: at most one
/// early fetch per `min_refresh_seconds`, however many such tokens arrive.
pub fn request_early(
    store: &dyn SharedStore,
    spec: &RemoteSpec,
    now: u64,
) -> Result<bool, StoreError> {
    update_state(store, spec, |s| {
        if s.early_wanted || now < s.early_after {
            return None;
        }
        let mut next = s.clone();
        next.early_wanted = true;
        Some(next)
    })
}

/// Reads the shared state (for tests and diagnostics).
pub fn state(store: &dyn SharedStore, spec: &RemoteSpec) -> Result<Option<State>, StoreError> {
    Ok(store
        .get(&state_key(spec))?
        .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::testkit;
    use serde_json::json;
    use std::cell::Cell;
    use wasm_bindgen_test::wasm_bindgen_test;

    const T0: u64 = 1_800_000_000;

    fn spec() -> RemoteSpec {
        let doc = RemoteJwksDoc {
            cluster: "idp".into(),
            uri: "https://idp.test/.well-known/jwks.json".into(),
            refresh_seconds: Some(300),
            retry_seconds: Some(10),
            min_refresh_seconds: Some(30),
            timeout_ms: Some(2500),
            max_bytes: Some(8192),
        };
        let mut errors = vec![];
        RemoteSpec::compile("idp", &doc, "p", &mut errors).unwrap()
    }

    fn jwks(kids: &[&str]) -> Vec<u8> {
        let keys: Vec<_> = kids.iter().map(|k| testkit::public_jwk(k)).collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    const ALGS: &[Alg] = &[Alg::RS256, Alg::ES256];

    #[wasm_bindgen_test(unsupported = test)]
    fn spec_parses_uri_and_reports_bad_fields() {
        let s = spec();
        assert_eq!(
            (s.scheme.as_str(), s.authority.as_str(), s.path.as_str()),
            ("https", "idp.test", "/.well-known/jwks.json")
        );
        assert_eq!(s.lease_seconds(), 4);
        assert!(
            s.key_prefix.starts_with("tollgate/v1/jwks/idp/") && s.key_prefix.len() == 21 + 12,
            "{}",
            s.key_prefix
        );
        let doc = RemoteJwksDoc {
            cluster: "".into(),
            uri: "idp.test/jwks".into(),
            refresh_seconds: Some(0),
            retry_seconds: None,
            min_refresh_seconds: None,
            timeout_ms: None,
            max_bytes: Some(10 << 20),
        };
        let mut errors = vec![];
        assert!(
            RemoteSpec::compile("idp", &doc, "providers.idp.remote_jwks", &mut errors).is_none()
        );
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "providers.idp.remote_jwks.cluster",
                "providers.idp.remote_jwks.uri",
                "providers.idp.remote_jwks.refresh_seconds",
                "providers.idp.remote_jwks.max_bytes"
            ]
        );
    }

    /// Four workers tick against one store: exactly one fetches, all install the same keys.
    #[wasm_bindgen_test(unsupported = test)]
    fn one_fetch_per_process_shared_with_every_worker() {
        let store = MemoryStore::default();
        let s = spec();
        let mut workers: Vec<Option<Installed>> = (0..4).map(|_| None).collect();
        let winners: Vec<bool> = (0..4)
            .map(|_| claim_fetch(&store, &s, T0).unwrap())
            .collect();
        assert_eq!(winners, [true, false, false, false]);
        let body = jwks(&["rsa-1"]);
        complete_fetch(&store, &s, ALGS, T0 + 1, Ok(&body), &mut workers[0])
            .unwrap()
            .unwrap();
        for w in workers.iter_mut().skip(1) {
            assert!(sync(&store, &s, ALGS, w).unwrap());
        }
        for w in &workers {
            let i = w.as_ref().unwrap();
            assert_eq!(i.generation, 1);
            assert!(i.keys.candidates(Alg::RS256, Some("rsa-1")).is_some());
        }
        // Nothing is due until the refresh interval has passed.
        assert!(!claim_fetch(&store, &s, T0 + 300).unwrap());
        assert!(claim_fetch(&store, &s, T0 + 301).unwrap());
        // Same body again: generation unchanged, nobody reinstalls (cached tokens stay valid).
        complete_fetch(&store, &s, ALGS, T0 + 302, Ok(&body), &mut workers[1])
            .unwrap()
            .unwrap();
        assert_eq!(state(&store, &s).unwrap().unwrap().generation, 1);
        assert!(!sync(&store, &s, ALGS, &mut workers[2]).unwrap());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn failures_keep_last_good_keys_and_retry() {
        let store = MemoryStore::default();
        let s = spec();
        let mut w = None;
        assert!(claim_fetch(&store, &s, T0).unwrap());
        complete_fetch(&store, &s, ALGS, T0, Ok(&jwks(&["rsa-1"])), &mut w)
            .unwrap()
            .unwrap();
        let t = T0 + 301;
        for (i, outcome) in [
            Err(FetchFailure::Status(503)),
            Err(FetchFailure::Unreachable),
            Ok(&b"not json"[..]),
            Ok(&br#"{"keys": []}"#[..]),
        ]
        .into_iter()
        .enumerate()
        {
            let now = t + 10 * i as u64;
            assert!(claim_fetch(&store, &s, now).unwrap(), "attempt {i}");
            assert!(complete_fetch(&store, &s, ALGS, now, outcome, &mut w)
                .unwrap()
                .is_err());
            let st = state(&store, &s).unwrap().unwrap();
            assert_eq!(
                (st.generation, st.next_fetch, st.failures),
                (1, now + 10, i as u32 + 1)
            );
            assert_eq!(w.as_ref().unwrap().generation, 1);
        }
        let big = vec![b' '; 9000];
        assert!(claim_fetch(&store, &s, t + 40).unwrap());
        assert_eq!(
            complete_fetch(&store, &s, ALGS, t + 40, Ok(&big), &mut w).unwrap(),
            Err(FetchFailure::TooLarge)
        );
        // Recovery installs the rotated set.
        assert!(claim_fetch(&store, &s, t + 50).unwrap());
        complete_fetch(&store, &s, ALGS, t + 50, Ok(&jwks(&["rsa-2"])), &mut w)
            .unwrap()
            .unwrap();
        let w = w.unwrap();
        assert_eq!(w.generation, 2);
        assert!(w.keys.candidates(Alg::RS256, Some("rsa-1")).is_none());
        assert_eq!(state(&store, &s).unwrap().unwrap().failures, 0);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lease_blocks_concurrent_fetch_until_it_expires() {
        let store = MemoryStore::default();
        let s = spec();
        assert!(claim_fetch(&store, &s, T0).unwrap());
        assert!(!claim_fetch(&store, &s, T0 + 3).unwrap());
        // The holder vanished: after the lease (timeout + 1 s) another worker takes over.
        assert!(claim_fetch(&store, &s, T0 + 4).unwrap());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn early_refresh_is_rate_limited() {
        let store = MemoryStore::default();
        let s = spec();
        let mut w = None;
        assert!(claim_fetch(&store, &s, T0).unwrap());
        complete_fetch(&store, &s, ALGS, T0, Ok(&jwks(&["rsa-1"])), &mut w)
            .unwrap()
            .unwrap();
        assert!(!claim_fetch(&store, &s, T0 + 5).unwrap());
        assert!(request_early(&store, &s, T0 + 5).unwrap());
        assert!(
            !request_early(&store, &s, T0 + 5).unwrap(),
            "already wanted"
        );
        assert!(claim_fetch(&store, &s, T0 + 6).unwrap());
        complete_fetch(&store, &s, ALGS, T0 + 6, Ok(&jwks(&["rsa-1"])), &mut w)
            .unwrap()
            .unwrap();
        // A second unknown kid within min_refresh_seconds does not cause another fetch.
        assert!(!request_early(&store, &s, T0 + 20).unwrap());
        assert!(!claim_fetch(&store, &s, T0 + 20).unwrap());
        assert!(request_early(&store, &s, T0 + 36).unwrap());
        assert!(claim_fetch(&store, &s, T0 + 36).unwrap());
    }

    /// A store whose CAS always loses: the loop gives up instead of spinning.
    #[wasm_bindgen_test(unsupported = test)]
    fn cas_loop_is_bounded() {
        struct Hostile {
            inner: MemoryStore,
            sets: Cell<usize>,
        }
        impl SharedStore for Hostile {
            fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                self.inner.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
                self.sets.set(self.sets.get() + 1);
                if cas == 0 || cas == u32::MAX {
                    return self.inner.set(key, value, cas);
                }
                Err(StoreError::CasMismatch)
            }
        }
        let store = Hostile {
            inner: MemoryStore::default(),
            sets: Cell::new(0),
        };
        assert_eq!(
            claim_fetch(&store, &spec(), T0),
            Err(StoreError::CasMismatch)
        );
        assert!(store.sets.get() <= 2 * CAS_ATTEMPTS);
    }
}
