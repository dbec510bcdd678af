//! API keys: the policy stores only the SHA-256 of each key. A presented key is hashed and looked
//! up; the stored hash is then compared in constant time. SHA-256 suits high-entropy generated keys
//! (guessing one is infeasible, so a slow hash adds nothing), whereas bcrypt/Argon2 would cost tens
//! of milliseconds per request and hand any client a CPU-exhaustion lever on every worker.

use super::authn::Principal;
use super::timefmt::parse_rfc3339;
use crate::policy::{ApiKeysDoc, ConfigError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::rc::Rc;

pub const DEFAULT_HEADER: &str = "x-api-key";
/// Longest key accepted; longer input is refused before hashing.
pub const MAX_KEY_BYTES: usize = 512;

pub struct ApiKey {
    pub id: String,
    hash: [u8; 32],
    not_before: Option<u64>,
    expires: Option<u64>,
    disabled: bool,
    pub principal: Rc<Principal>,
}

pub struct ApiKeys {
    /// Lowercase header name.
    pub header: String,
    pub query: Option<String>,
    by_hash: HashMap<[u8; 32], usize>,
    keys: Vec<ApiKey>,
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl ApiKeys {
    pub fn compile(doc: &ApiKeysDoc, errors: &mut Vec<ConfigError>) -> Option<ApiKeys> {
        let start = errors.len();
        let header = doc
            .header
            .clone()
            .unwrap_or_else(|| DEFAULT_HEADER.into())
            .to_ascii_lowercase();
        // Lowercased above, so an identifier is exactly a valid header name here.
        if !crate::policy::is_identifier(&header) {
            errors.push(ConfigError::new(
                "api_keys.header",
                format!("`{header}` is not a valid header name"),
            ));
        }
        if doc.keys.is_empty() {
            errors.push(ConfigError::new(
                "api_keys.keys",
                "list at least one key (or remove `api_keys`)",
            ));
        }
        let mut keys = Vec::new();
        let mut by_hash = HashMap::new();
        let mut ids = HashMap::new();
        for (i, k) in doc.keys.iter().enumerate() {
            let at = format!("api_keys.keys[{i}]");
            if k.id.is_empty() || !k.id.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    "must be non-empty printable ascii without spaces",
                ));
            }
            if let Some(other) = ids.insert(k.id.clone(), i) {
                errors.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("`{}` is already the id of api_keys.keys[{other}]", k.id),
                ));
            }
            let Some(hash) = parse_hex32(&k.sha256) else {
                errors.push(ConfigError::new(
                    format!("{at}.sha256"),
                    "expected 64 hex digits: the SHA-256 of the key (`make api-key` prints one)",
                ));
                continue;
            };
            if let Some(other) = by_hash.insert(hash, keys.len()) {
                errors.push(ConfigError::new(
                    format!("{at}.sha256"),
                    format!("same hash as api_keys.keys[{other}]"),
                ));
            }
            let time = |field: &str, v: &Option<String>, errors: &mut Vec<ConfigError>| match v {
                None => None,
                Some(text) => {
                    let t = parse_rfc3339(text);
                    if t.is_none() {
                        errors.push(ConfigError::new(
                            format!("{at}.{field}"),
                            format!("`{text}` is not a UTC time; expected `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DD`"),
                        ));
                    }
                    t
                }
            };
            let not_before = time("not_before", &k.not_before, errors);
            let expires = time("expires", &k.expires, errors);
            if let (Some(a), Some(b)) = (not_before, expires) {
                if a >= b {
                    errors.push(ConfigError::new(
                        format!("{at}.expires"),
                        "must be later than `not_before`",
                    ));
                }
            }
            let scopes =
                super::authz::compile_scope_list(&k.scopes, &format!("{at}.scopes"), errors);
            keys.push(ApiKey {
                id: k.id.clone(),
                hash,
                not_before,
                expires,
                disabled: k.disabled,
                principal: Rc::new(Principal::api_key(&k.id, scopes)),
            });
        }
        (errors.len() == start).then_some(ApiKeys {
            header,
            query: doc.query.clone(),
            by_hash,
            keys,
        })
    }

    /// The key matching `presented` if it is usable at `now`. Unknown, disabled, expired and
    /// not-yet-valid keys are one answer, so a caller learns nothing about which it was.
    pub fn check(&self, presented: &str, now: u64) -> Option<&ApiKey> {
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let key = self.keys.get(*self.by_hash.get(&hash)?)?;
        if !constant_time_eq(&key.hash, &hash) || key.disabled {
            return None;
        }
        if key.not_before.is_some_and(|t| now < t) || key.expires.is_some_and(|t| now >= t) {
            return None;
        }
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ApiKeyDoc;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn sha(s: &str) -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn key(id: &str, secret: &str) -> ApiKeyDoc {
        ApiKeyDoc {
            id: id.into(),
            sha256: sha(secret),
            scopes: vec!["orders:read".into()],
            not_before: None,
            expires: None,
            disabled: false,
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn lifecycle() {
        let mut old = key("old", "secret-old");
        old.expires = Some("2026-01-01".into());
        let mut new = key("new", "secret-new");
        new.not_before = Some("2025-12-01".into());
        let mut off = key("off", "secret-off");
        off.disabled = true;
        let doc = ApiKeysDoc {
            header: None,
            query: None,
            keys: vec![old, new, off],
        };
        let mut errors = vec![];
        let keys = ApiKeys::compile(&doc, &mut errors).unwrap();
        assert_eq!(keys.header, "x-api-key");
        let overlap = parse_rfc3339("2025-12-15").unwrap();
        assert_eq!(
            keys.check("secret-old", overlap).map(|k| k.id.as_str()),
            Some("old")
        );
        assert_eq!(
            keys.check("secret-new", overlap).map(|k| k.id.as_str()),
            Some("new")
        );
        let later = parse_rfc3339("2026-01-01").unwrap();
        assert!(
            keys.check("secret-old", later).is_none(),
            "expired at `expires`"
        );
        assert!(
            keys.check("secret-new", overlap - 30 * 86_400).is_none(),
            "not yet valid"
        );
        assert!(keys.check("secret-off", overlap).is_none(), "disabled");
        assert!(keys.check("nope", overlap).is_none());
        assert!(keys.check("", overlap).is_none());
        assert!(keys.check(&"x".repeat(10_000), overlap).is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn config_errors() {
        let mut a = key("a", "1");
        a.sha256 = "abc".into();
        let mut b = key("b", "2");
        b.expires = Some("tomorrow".into());
        let c = key("b", "3");
        let d = key("d", "3");
        let mut e = key("e", "5");
        e.not_before = Some("2026-02-01".into());
        e.expires = Some("2026-01-01".into());
        let doc = ApiKeysDoc {
            header: Some("bad header".into()),
            query: None,
            keys: vec![a, b, c, d, e],
        };
        let mut errors = vec![];
        assert!(ApiKeys::compile(&doc, &mut errors).is_none());
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "api_keys.header",
                "api_keys.keys[0].sha256",
                "api_keys.keys[1].expires",
                "api_keys.keys[2].id",
                "api_keys.keys[3].sha256",
                "api_keys.keys[4].expires"
            ]
        );
    }
}
