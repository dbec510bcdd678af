//! Revocation lists: token ids, subjects, API keys, principals, client addresses and routes
//! withdrawn during an incident. The policy's own entries are compiled at load time; a remote list
//! (the same document shape) is read when a fetch brings one, and the engine checks both.
//!
//! Lookups are hash-set probes (and a scan of the CIDR blocks, which are few: single addresses
//! go into a set), so a list of tens of thousands of token ids costs the same per request as a
//! list of one.

use super::cidr::{parse_client_ip, Cidr};
use crate::jwt::remote::RemoteSpec;
use crate::policy::{ConfigError, RevocationListDoc, RevocationsDoc};
use std::collections::HashSet;
use std::net::IpAddr;

/// Most entries one list may hold (all kinds together); a remote list with more is refused.
pub const MAX_ENTRIES: usize = 100_000;

/// A fetched list may be this large unless `remote.max_bytes` says otherwise (the most a remote
/// document may be): tens of thousands of token ids.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// Compiled `revocations`: the policy's entries and where a remote list comes from.
#[derive(Debug)]
pub struct Revocations {
    pub inline: RevocationList,
    pub remote: Option<RemoteSpec>,
    /// `on_unavailable: allow`: requests pass while the remote list was never fetched.
    pub fail_open: bool,
}

impl Revocations {
    pub fn compile(doc: &RevocationsDoc, errors: &mut Vec<ConfigError>) -> Revocations {
        let at = "revocations";
        let inline = doc
            .revoked
            .as_ref()
            .map(|d| RevocationList::compile(d, &format!("{at}.revoked"), errors))
            .unwrap_or_default();
        let remote = doc.remote.as_ref().and_then(|r| {
            RemoteSpec::compile("revocations", r, &format!("{at}.remote"), errors).map(
                |mut spec| {
                    if r.max_bytes.is_none() {
                        spec.max_bytes = DEFAULT_MAX_BYTES;
                    }
                    spec.key_prefix = spec.key_prefix.replacen(
                        "tollgate/v1/jwks/",
                        "tollgate/v1/revocations/",
                        1,
                    );
                    spec
                },
            )
        });
        let fail_open = match doc.on_unavailable.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => {
                errors.push(ConfigError::new(
                    format!("{at}.on_unavailable"),
                    format!("`{other}` is not an action; expected `deny` or `allow`"),
                ));
                false
            }
        };
        if doc.on_unavailable.is_some() && doc.remote.is_none() {
            errors.push(ConfigError::new(
                format!("{at}.on_unavailable"),
                "only a `remote` list can be unavailable; remove it or add `remote`",
            ));
        }
        if doc.revoked.is_none() && doc.remote.is_none() {
            errors.push(ConfigError::new(
                at,
                "expected `revoked` (entries), `remote` (a list to fetch) or both",
            ));
        }
        Revocations {
            inline,
            remote,
            fail_open,
        }
    }
}

/// One compiled list.
#[derive(Debug, Default)]
pub struct RevocationList {
    token_ids: HashSet<String>,
    subjects: HashSet<String>,
    api_keys: HashSet<String>,
    principals: HashSet<String>,
    /// Single addresses, canonical (IPv4-mapped IPv6 as IPv4).
    hosts: HashSet<IpAddr>,
    blocks: Vec<Cidr>,
    routes: HashSet<String>,
}

/// What a credential is known by, for [`RevocationList::revokes`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Credential<'a> {
    /// The principal as the identity header names it.
    pub principal: &'a str,
    /// The workload of the connection (`mtls:…`), if any.
    pub workload: Option<&'a str>,
    /// A token's `jti` and `sub` claims.
    pub token_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    /// An API key's `id`.
    pub api_key: Option<&'a str>,
}

impl RevocationList {
    /// Compiles the policy's `revoked` object at `at`; bad entries are reported in `errors`.
    pub fn compile(doc: &RevocationListDoc, at: &str, errors: &mut Vec<ConfigError>) -> Self {
        match Self::build(doc) {
            Ok(list) => list,
            Err((field, i, message)) => {
                errors.push(ConfigError::new(format!("{at}.{field}[{i}]"), message));
                RevocationList::default()
            }
        }
    }

    /// Reads a fetched list document. `Err` says why it is refused (the last good list stays);
    /// it never quotes an entry.
    pub fn parse(body: &[u8]) -> Result<Self, &'static str> {
        let doc: RevocationListDoc = serde_json::from_slice(body)
            .map_err(|_| "the list is not a revocation list document")?;
        Self::build(&doc).map_err(|(_, _, _)| "the list has an invalid entry")
    }

    fn build(doc: &RevocationListDoc) -> Result<Self, (&'static str, usize, String)> {
        let total = doc.token_ids.len()
            + doc.subjects.len()
            + doc.api_keys.len()
            + doc.principals.len()
            + doc.addresses.len()
            + doc.routes.len();
        if total > MAX_ENTRIES {
            return Err((
                "token_ids",
                0,
                format!("{total} entries; a list holds at most {MAX_ENTRIES}"),
            ));
        }
        let set = |field: &'static str, list: &[String]| {
            let mut out = HashSet::with_capacity(list.len());
            for (i, entry) in list.iter().enumerate() {
                if entry.is_empty() {
                    return Err((field, i, "an empty entry; remove it".to_string()));
                }
                out.insert(entry.clone());
            }
            Ok(out)
        };
        let mut hosts = HashSet::new();
        let mut blocks = Vec::new();
        for (i, entry) in doc.addresses.iter().enumerate() {
            match (entry.contains('/'), parse_client_ip(entry)) {
                (false, Some(ip)) => {
                    hosts.insert(ip);
                }
                _ => blocks.push(Cidr::parse(entry).map_err(|m| ("addresses", i, m))?),
            }
        }
        Ok(RevocationList {
            token_ids: set("token_ids", &doc.token_ids)?,
            subjects: set("subjects", &doc.subjects)?,
            api_keys: set("api_keys", &doc.api_keys)?,
            principals: set("principals", &doc.principals)?,
            hosts,
            blocks,
            routes: set("routes", &doc.routes)?,
        })
    }

    /// Route names the list closes (for the load-time check that they exist).
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(String::as_str)
    }

    pub fn closes(&self, route: &str) -> bool {
        !self.routes.is_empty() && self.routes.contains(route)
    }

    /// Whether the client address (as `engine::request::client_ip` gives it) is revoked. A
    /// missing or unparsable address is not: the list names who to refuse, not who to admit.
    pub fn bars(&self, client_ip: Option<&str>) -> bool {
        if self.hosts.is_empty() && self.blocks.is_empty() {
            return false;
        }
        let Some(ip) = client_ip.and_then(parse_client_ip) else {
            return false;
        };
        self.hosts.contains(&ip) || self.blocks.iter().any(|b| b.contains(ip))
    }

    pub fn revokes(&self, c: &Credential<'_>) -> bool {
        let has = |set: &HashSet<String>, v: Option<&str>| v.is_some_and(|v| set.contains(v));
        has(&self.token_ids, c.token_id)
            || has(&self.subjects, c.subject)
            || has(&self.api_keys, c.api_key)
            || has(&self.principals, Some(c.principal))
            || has(&self.principals, c.workload)
    }

    pub fn len(&self) -> usize {
        self.token_ids.len()
            + self.subjects.len()
            + self.api_keys.len()
            + self.principals.len()
            + self.hosts.len()
            + self.blocks.len()
            + self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn list(v: serde_json::Value) -> RevocationList {
        RevocationList::parse(v.to_string().as_bytes()).unwrap()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn each_kind_of_entry_matches_only_its_own_field() {
        let l = list(json!({
            "token_ids": ["t-1"], "subjects": ["alice"], "api_keys": ["reporting"],
            "principals": ["mtls:spiffe://prod/ns/web/sa/old", "sig:partner:k1"],
            "addresses": ["203.0.113.7", "198.51.100.0/24", "2001:db8::/32"],
            "routes": ["orders"]
        }));
        assert_eq!(l.len(), 9);
        let base = Credential {
            principal: "jwt:idp:bob",
            ..Credential::default()
        };
        assert!(!l.revokes(&base));
        assert!(l.revokes(&Credential {
            token_id: Some("t-1"),
            ..base
        }));
        assert!(l.revokes(&Credential {
            subject: Some("alice"),
            ..base
        }));
        // A subject named like a token id is not revoked by the token id, and the reverse.
        assert!(!l.revokes(&Credential {
            subject: Some("t-1"),
            token_id: Some("alice"),
            ..base
        }));
        assert!(l.revokes(&Credential {
            api_key: Some("reporting"),
            ..base
        }));
        assert!(l.revokes(&Credential {
            principal: "sig:partner:k1",
            ..base
        }));
        assert!(l.revokes(&Credential {
            workload: Some("mtls:spiffe://prod/ns/web/sa/old"),
            ..base
        }));
        assert!(l.closes("orders") && !l.closes("orders2"));
        assert!(l.bars(Some("203.0.113.7")));
        assert!(l.bars(Some("::ffff:203.0.113.7")), "IPv4-mapped");
        assert!(l.bars(Some("198.51.100.200")));
        assert!(l.bars(Some("2001:db8::5")));
        assert!(!l.bars(Some("203.0.113.8")));
        assert!(!l.bars(None) && !l.bars(Some("not an address")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_documents_are_refused_without_quoting_them() {
        for (body, why) in [
            (
                &b"not json"[..],
                "the list is not a revocation list document",
            ),
            (
                br#"{"token_ids": "t-1"}"#,
                "the list is not a revocation list document",
            ),
            (
                br#"{"tokens": ["t-1"]}"#,
                "the list is not a revocation list document",
            ),
            (
                br#"{"addresses": ["10.0.0.300"]}"#,
                "the list has an invalid entry",
            ),
            (br#"{"subjects": [""]}"#, "the list has an invalid entry"),
        ] {
            assert_eq!(RevocationList::parse(body).unwrap_err(), why);
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("t{i}")).collect();
        let body = json!({ "token_ids": many }).to_string();
        assert!(RevocationList::parse(body.as_bytes()).is_err());
        assert!(list(json!({})).is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn policy_entries_are_named_by_path() {
        let doc: RevocationListDoc =
            serde_json::from_value(json!({"addresses": ["10.0.0.0/8", "10.0.0.1/33"]})).unwrap();
        let mut errors = Vec::new();
        RevocationList::compile(&doc, "revocations.revoked", &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "revocations.revoked.addresses[1]");
    }
}
