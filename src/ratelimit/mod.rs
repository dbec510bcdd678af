//! Rate limiting: named token buckets kept in shared data so every worker sees the same counts.
//!
//! Bounded memory: each limit owns a fixed number of [`Slots`] (`slots`, default 16384) under
//! `tollgate/v1/rl/<name>/`. A request's key (identity, claim, header, client IP, route, constant)
//! is hashed with the process-wide secret into one slot. Colliding keys share a bucket: they can
//! be limited *more* than configured, never less. Resetting a bucket on collision would instead
//! let two colliding keys refill each other forever.
//!
//! Updates are compare-and-swap with a bounded number of attempts ([`Slots::update`]); when they
//! run out the limit's `on_contention` decides (deny by default).
//!
//! [`Backend`] names where a limit is counted: here, in Envoy's rate-limit service
//! ([`service`], over the [`rls`] protocol) so every proxy shares one budget, or both (the local
//! bucket shields the service).

pub mod bucket;
pub mod rls;
pub mod service;

use crate::policy::{ConfigError, KeyPartDoc, LimitDoc, RateLimitOptionsDoc};
use crate::store::slots::{self, Missing, Outcome, Slots, Update};
use crate::store::{SharedStore, StoreError};
use bucket::{Shape, State, Take};

pub const DEFAULT_SLOTS: u32 = slots::DEFAULT_COUNT;
pub const MAX_SLOTS: u32 = slots::MAX_COUNT;
pub const DEFAULT_MAX_RETRIES: u32 = slots::DEFAULT_ATTEMPTS;
/// Shared-data key of the slot-hashing secret.
pub const SECRET_KEY: &str = "tollgate/v1/rl/secret";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    Identity,
    ClientIp,
    Route,
    Claim(String),
    Header(String),
    Constant(String),
}

impl KeyPart {
    /// The descriptor entry key of this part in a request to the rate-limit service.
    pub fn entry_key(&self) -> String {
        match self {
            KeyPart::Identity => "identity".into(),
            KeyPart::ClientIp => "client_ip".into(),
            KeyPart::Route => "route".into(),
            KeyPart::Claim(c) => format!("claim.{c}"),
            KeyPart::Header(h) => format!("header.{h}"),
            KeyPart::Constant(_) => "constant".into(),
        }
    }
}

/// The unit of a `per` the policy accepts.
fn unit_of(period_ms: u64) -> rls::Unit {
    match period_ms {
        60_000 => rls::Unit::Minute,
        3_600_000 => rls::Unit::Hour,
        _ => rls::Unit::Second,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Proxy-wasm shared data of this Envoy process.
    Local,
    /// The policy's `rate_limit_service`, shared by every proxy that asks it.
    Global,
    /// The local bucket first; the service is asked only for requests it lets through.
    LocalAndGlobal,
}

impl Backend {
    pub const fn local(self) -> bool {
        matches!(self, Backend::Local | Backend::LocalAndGlobal)
    }

    pub const fn global(self) -> bool {
        matches!(self, Backend::Global | Backend::LocalAndGlobal)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Global => "global",
            Backend::LocalAndGlobal => "local+global",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limit {
    pub name: String,
    pub shape: Shape,
    pub key: Vec<KeyPart>,
    /// `tollgate/v1/rl/<name>/<n>`, hashed with the name.
    pub slots: Slots,
    pub shadow: bool,
    pub deny_on_contention: bool,
    pub backend: Backend,
    /// The service failed (no answer in time, an error, garbage): refuse? `None`: the service's
    /// `on_failure` decides.
    pub deny_on_service_failure: Option<bool>,
    /// The period as the service's unit (a global limit counts `rate` per unit, fixed windows).
    pub unit: rls::Unit,
    /// `RateLimit-Policy` item: `"name";q=<burst>;w=<seconds to refill the burst>` (global:
    /// `q=<rate>;w=<period>`).
    pub policy_header: String,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub trusted_hops: u32,
    pub response_headers: bool,
    pub max_retries: u32,
}

impl Options {
    pub fn compile(doc: Option<&RateLimitOptionsDoc>, errors: &mut Vec<ConfigError>) -> Options {
        let o = Options {
            trusted_hops: doc.and_then(|d| d.trusted_hops).unwrap_or(0),
            response_headers: doc.and_then(|d| d.response_headers).unwrap_or(true),
            max_retries: doc
                .and_then(|d| d.max_retries)
                .unwrap_or(DEFAULT_MAX_RETRIES),
        };
        if o.trusted_hops > 16 {
            errors.push(ConfigError::new(
                "rate_limit_options.trusted_hops",
                format!("{} is out of range; expected 0 to 16", o.trusted_hops),
            ));
        }
        if !(1..=slots::MAX_ATTEMPTS).contains(&o.max_retries) {
            errors.push(ConfigError::new(
                "rate_limit_options.max_retries",
                format!(
                    "{} is out of range; expected 1 to {}",
                    o.max_retries,
                    slots::MAX_ATTEMPTS
                ),
            ));
        }
        o
    }
}

impl Limit {
    pub fn compile(name: &str, doc: &LimitDoc, errors: &mut Vec<ConfigError>) -> Option<Limit> {
        let at = format!("rate_limits.{name}");
        let start = errors.len();
        if !crate::policy::is_identifier(name) {
            errors.push(ConfigError::new(
                &at,
                format!("limit name `{name}` may hold only letters, digits, `-` and `_`"),
            ));
        }
        let period_ms = match doc.per.as_str() {
            "second" => 1000,
            "minute" => 60_000,
            "hour" => 3_600_000,
            other => {
                errors.push(ConfigError::new(
                    format!("{at}.per"),
                    format!(
                        "`{other}` is not a period; expected one of [`second`, `minute`, `hour`]"
                    ),
                ));
                1000
            }
        };
        if !(1..=1_000_000).contains(&doc.rate) {
            errors.push(ConfigError::new(
                format!("{at}.rate"),
                format!("{} is out of range; expected 1 to 1000000", doc.rate),
            ));
        }
        if !(1..=1_000_000).contains(&doc.burst) {
            errors.push(ConfigError::new(
                format!("{at}.burst"),
                format!("{} is out of range; expected 1 to 1000000", doc.burst),
            ));
        }
        let count = doc.slots.unwrap_or(DEFAULT_SLOTS);
        if !(1..=MAX_SLOTS).contains(&count) {
            errors.push(ConfigError::new(
                format!("{at}.slots"),
                format!("{count} is out of range; expected 1 to {MAX_SLOTS}"),
            ));
        }
        let deny_on_contention = match doc.on_contention.as_deref() {
            None | Some("deny") => true,
            Some("allow") => false,
            Some(other) => {
                errors.push(ConfigError::new(
                    format!("{at}.on_contention"),
                    format!("`{other}` is not a choice; expected one of [`deny`, `allow`]"),
                ));
                true
            }
        };
        let backend = match doc.backend.as_deref() {
            None | Some("local") => Backend::Local,
            Some("global") => Backend::Global,
            Some("local+global") => Backend::LocalAndGlobal,
            Some(other) => {
                errors.push(ConfigError::new(
                    format!("{at}.backend"),
                    format!("`{other}` is not a backend; expected one of [`local`, `global`, `local+global`]"),
                ));
                Backend::Local
            }
        };
        let deny_on_service_failure = service::failure_mode(
            doc.on_service_failure.as_deref(),
            &format!("{at}.on_service_failure"),
            errors,
        );
        if doc.on_service_failure.is_some() && !backend.global() {
            errors.push(ConfigError::new(
                format!("{at}.on_service_failure"),
                "applies to limits with `backend: global` or `local+global` only",
            ));
        }
        if doc.key.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.key"),
                "list at least one part, e.g. [\"identity\"] or [{\"constant\": \"all\"}]",
            ));
        }
        let mut key = Vec::new();
        for (i, part) in doc.key.iter().enumerate() {
            let p = match part {
                KeyPartDoc::Named(n) => match n.as_str() {
                    "identity" => KeyPart::Identity,
                    "client_ip" => KeyPart::ClientIp,
                    "route" => KeyPart::Route,
                    other => {
                        errors.push(ConfigError::new(
                            format!("{at}.key[{i}]"),
                            format!("`{other}` is not a key part; expected one of [`identity`, `client_ip`, `route`] or {{\"claim\"|\"header\"|\"constant\": ...}}"),
                        ));
                        continue;
                    }
                },
                KeyPartDoc::Claim { claim } => KeyPart::Claim(claim.clone()),
                KeyPartDoc::Header { header } => KeyPart::Header(header.to_ascii_lowercase()),
                KeyPartDoc::Constant { constant } => KeyPart::Constant(constant.clone()),
            };
            key.push(p);
        }
        if errors.len() > start {
            return None;
        }
        let shape = Shape {
            rate: doc.rate,
            period_ms,
            burst: doc.burst,
        };
        let window =
            (u128::from(doc.burst) * u128::from(period_ms)).div_ceil(u128::from(doc.rate) * 1000);
        let unit = unit_of(period_ms);
        // The service's budget is what every proxy shares, so it is the one announced.
        let policy_header = if backend.global() {
            format!("\"{name}\";q={};w={}", doc.rate, unit.seconds())
        } else {
            format!("\"{name}\";q={};w={window}", doc.burst)
        };
        Some(Limit {
            name: name.to_string(),
            policy_header,
            unit,
            deny_on_service_failure,
            shape,
            key,
            // The name is an identifier, so it never holds the separator byte the domain must not.
            slots: Slots::new(
                format!("tollgate/v1/rl/{name}/"),
                name.as_bytes().to_vec(),
                count,
            ),
            shadow: doc.shadow,
            deny_on_contention,
            backend,
        })
    }

    /// The descriptor of this limit for a request whose key parts resolved to `values` (in the
    /// order of `key`): `(tollgate_limit, <name>)`, then one entry per key part.
    pub fn descriptor(&self, values: &[String], send_limit: bool) -> rls::Descriptor {
        let mut entries = Vec::with_capacity(self.key.len() + 1);
        entries.push((service::LIMIT_KEY.to_string(), self.name.clone()));
        for (part, value) in self.key.iter().zip(values) {
            let value = if value.is_empty() {
                service::EMPTY_VALUE.to_string()
            } else {
                value.clone()
            };
            entries.push((part.entry_key(), value));
        }
        rls::Descriptor {
            entries,
            limit: send_limit.then(|| {
                (
                    u32::try_from(self.shape.rate).unwrap_or(u32::MAX),
                    self.unit,
                )
            }),
        }
    }

    /// Shared-data key of the bucket for `key_material` (already-resolved key parts).
    pub fn slot_key(&self, secret: &[u8], key_material: &[&str]) -> String {
        self.slots.key(secret, key_material)
    }
}

/// Result of one limit check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Taken {
        take: Take,
        retries: u32,
    },
    /// CAS attempts ran out.
    Contended {
        retries: u32,
    },
}

/// Takes `cost` tokens from the bucket at `slot_key` with a bounded compare-and-swap loop.
pub fn acquire(
    store: &dyn SharedStore,
    limit: &Limit,
    slot_key: &str,
    cost: u64,
    now_ms: u64,
    max_retries: u32,
) -> Result<Verdict, StoreError> {
    // First use of a slot creates it full, then takes from it like from any other.
    let fresh = limit.shape.fresh(now_ms).encode();
    let outcome = Slots::update(
        store,
        slot_key,
        max_retries,
        Missing::Seed(&fresh),
        |stored| {
            let stored = stored
                .and_then(State::decode)
                .unwrap_or_else(|| limit.shape.fresh(now_ms));
            let take = limit.shape.take(stored, now_ms, cost);
            if take.allowed {
                Update::Write(take.next.encode(), take)
            } else {
                // Nothing to debit: refill is recomputed from the stored state next time.
                Update::Keep(take)
            }
        },
    )?;
    Ok(match outcome {
        Outcome::Done { value, retries } => Verdict::Taken {
            take: value,
            retries,
        },
        Outcome::Exhausted { retries } => Verdict::Contended { retries },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::Contended;
    use crate::store::MemoryStore;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn limit(v: serde_json::Value) -> Limit {
        let doc: LimitDoc = serde_json::from_value(v).unwrap();
        let mut errors = vec![];
        Limit::compile("l", &doc, &mut errors).unwrap_or_else(|| panic!("{errors:?}"))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compile_and_headers() {
        let l = limit(
            json!({"rate": 10, "per": "second", "burst": 20, "key": ["identity", {"header": "X-Client"}]}),
        );
        assert_eq!(l.policy_header, "\"l\";q=20;w=2");
        assert_eq!(
            l.key,
            vec![KeyPart::Identity, KeyPart::Header("x-client".into())]
        );
        let doc: LimitDoc = serde_json::from_value(json!({"rate": 0, "per": "day", "burst": 0, "key": ["who"], "slots": 0, "on_contention": "maybe"})).unwrap();
        let mut errors = vec![];
        assert!(Limit::compile("l", &doc, &mut errors).is_none());
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "rate_limits.l.per",
                "rate_limits.l.rate",
                "rate_limits.l.burst",
                "rate_limits.l.slots",
                "rate_limits.l.on_contention",
                "rate_limits.l.key[0]"
            ]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn slots_are_bounded_and_keyed() {
        let l = limit(
            json!({"rate": 1, "per": "second", "burst": 1, "key": ["identity"], "slots": 64}),
        );
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            seen.insert(l.slot_key(b"secret", &[&i.to_string()]));
        }
        assert!(seen.len() <= 64, "{}", seen.len());
        assert!(seen.len() > 50, "keys spread over the slots");
        assert_ne!(
            l.slot_key(b"a", &["x"]),
            l.slot_key(b"b", &["x"]).replace("zz", ""),
            "secret changes the mapping (almost surely)"
        );
        assert_ne!(
            l.slot_key(b"s", &["ab", "c"]),
            l.slot_key(b"s", &["a", "bc"])
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn shared_bucket_across_workers() {
        let store = MemoryStore::default();
        let l = limit(json!({"rate": 1, "per": "minute", "burst": 3, "key": ["identity"]}));
        let key = l.slot_key(b"s", &["alice"]);
        let allowed = (0..10)
            .filter(|_| matches!(acquire(&store, &l, &key, 1, 1000, 8).unwrap(), Verdict::Taken { take, .. } if take.allowed))
            .count();
        assert_eq!(allowed, 3);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn cas_retries_are_bounded() {
        let l = limit(json!({"rate": 1, "per": "second", "burst": 5, "key": ["route"]}));
        let store = Contended::new(3);
        match acquire(&store, &l, "k", 1, 0, 8).unwrap() {
            Verdict::Taken { take, retries } => assert!(take.allowed && retries == 3),
            v => panic!("{v:?}"),
        }
        let store = Contended::new(100);
        // Creating the slot is not an attempt: all 8 attempts lose their CAS.
        assert_eq!(
            acquire(&store, &l, "k", 1, 0, 8).unwrap(),
            Verdict::Contended { retries: 8 }
        );
    }
}
