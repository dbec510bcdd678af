//! Signed requests (RFC 9421 HTTP Message Signatures) as a credential: the policy's `signers`,
//! compiled once (keys, algorithms, the components every signature must cover), and the check of
//! one request's signature. The body, when there is one, is bound by a covered `Content-Digest`
//! (RFC 9530) that the exchange checks once the body is buffered ([`super::BodyCheck::digest`]).

use crate::abuse::replay::{Replay, Seen};
use crate::codes::DenialCode;
use crate::httpsig::{self, Algorithm, Component, SignedRequest, VerifyingKey};
use crate::jwt::remote::RemoteSpec;
use crate::policy::{is_identifier, ConfigError, SignerDoc};
use crate::store::SharedStore;
use std::collections::BTreeMap;

/// Components a signature must cover when the policy names none.
pub const DEFAULT_COMPONENTS: [&str; 3] = ["@method", "@target-uri", "@authority"];
pub const DEFAULT_MAX_AGE_SECONDS: u64 = 300;
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// Nonce slots in shared data (each remembers four nonces) and update attempts.
pub const REPLAY_SLOTS: u32 = 16_384;
pub const REPLAY_ATTEMPTS: u32 = 8;
/// Most keys one signer may list (the work of finding one is a map lookup either way).
const MAX_KEYS: usize = 256;

/// A signer's keys by `kid`.
pub type KeyMap = BTreeMap<String, VerifyingKey>;

/// Where a signer's keys come from.
pub enum SignerKeys {
    Inline(KeyMap),
    /// Fetched into each VM (`VmState::signer_keys`).
    Remote(RemoteSpec),
}

/// One compiled signer.
pub struct Signer {
    pub name: String,
    pub keys: SignerKeys,
    algorithms: Vec<Algorithm>,
    /// As the policy wrote them (checked at load), compared with the signature's covered
    /// components.
    components: Vec<String>,
    max_age_s: u64,
    skew_s: u64,
    require_nonce: bool,
    tag: Option<String>,
}

/// A verified signature: who signed, and what the body must match.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    /// `sig:<signer>:<keyid>`.
    pub principal: String,
    /// The covered `Content-Digest` value the body must match; `None`: the body must be empty.
    pub content_digest: Option<String>,
}

impl Signer {
    pub fn compile(name: &str, doc: &SignerDoc, errors: &mut Vec<ConfigError>) -> Option<Signer> {
        let at = format!("signers.{name}");
        let start = errors.len();
        if !is_identifier(name) {
            errors.push(ConfigError::new(
                &at,
                "signer names may hold only letters, digits, `-` and `_`",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, a) in doc.algorithms.iter().enumerate() {
            match Algorithm::from_name(a) {
                Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Ok(_) => errors.push(ConfigError::new(
                    format!("{at}.algorithms[{i}]"),
                    format!("`{a}` is listed twice"),
                )),
                Err(e) => errors.push(ConfigError::new(
                    format!("{at}.algorithms[{i}]"),
                    e.to_string(),
                )),
            }
        }
        if doc.algorithms.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.algorithms"),
                "list at least one of [`hmac-sha256`, `ed25519`, `ecdsa-p256-sha256`, `rsa-pss-sha512`]",
            ));
        }
        let keys = match (&doc.keys, &doc.remote_keys) {
            (Some(jwks), None) => {
                let mut keys = BTreeMap::new();
                if jwks.keys.is_empty() || jwks.keys.len() > MAX_KEYS {
                    errors.push(ConfigError::new(
                        format!("{at}.keys.keys"),
                        format!("expected 1 to {MAX_KEYS} JWK objects"),
                    ));
                }
                for (i, jwk) in jwks.keys.iter().enumerate() {
                    let here = format!("{at}.keys.keys[{i}]");
                    match VerifyingKey::from_jwk(jwk) {
                        Ok(key)
                            if !algorithms.is_empty() && !algorithms.contains(&key.algorithm()) =>
                        {
                            errors.push(ConfigError::new(
                                here,
                                format!(
                                    "a key for `{}`, which `algorithms` does not list",
                                    key.algorithm()
                                ),
                            ));
                        }
                        Ok(key) => {
                            let kid = key.kid().to_string();
                            if keys.insert(kid.clone(), key).is_some() {
                                errors.push(ConfigError::new(
                                    format!("{here}.kid"),
                                    format!("`{kid}` is the `kid` of another key of this signer"),
                                ));
                            }
                        }
                        Err(e) => errors.push(ConfigError::new(here, e.to_string())),
                    }
                }
                SignerKeys::Inline(keys)
            }
            (None, Some(remote)) => {
                // A shared secret is not published: fetched key sets hold public keys only.
                if algorithms.contains(&Algorithm::HmacSha256) {
                    errors.push(ConfigError::new(
                        format!("{at}.algorithms"),
                        "`hmac-sha256` keys are secrets and cannot come from `remote_keys`; list them in `keys`",
                    ));
                }
                match RemoteSpec::compile(name, remote, &format!("{at}.remote_keys"), errors) {
                    // Shared-data keys of its own, apart from a provider of the same name.
                    Some(mut spec) => {
                        spec.key_prefix = spec.key_prefix.replacen("/jwks/", "/signer-keys/", 1);
                        SignerKeys::Remote(spec)
                    }
                    None => SignerKeys::Inline(BTreeMap::new()),
                }
            }
            (both, _) => {
                let found = if both.is_some() { 2 } else { 0 };
                errors.push(ConfigError::new(
                    &at,
                    format!("a signer needs exactly one of `keys`, `remote_keys`; found {found}"),
                ));
                SignerKeys::Inline(BTreeMap::new())
            }
        };
        let names: Vec<String> = match &doc.components {
            Some(list) => list.clone(),
            None => DEFAULT_COMPONENTS.iter().map(|c| c.to_string()).collect(),
        };
        let mut parsed: Vec<Component> = Vec::new();
        for (i, text) in names.iter().enumerate() {
            match Component::parse(text) {
                Ok(c) if parsed.contains(&c) => errors.push(ConfigError::new(
                    format!("{at}.components[{i}]"),
                    format!("`{text}` is listed twice"),
                )),
                Ok(c) => parsed.push(c),
                Err(e) => errors.push(ConfigError::new(
                    format!("{at}.components[{i}]"),
                    e.to_string(),
                )),
            }
        }
        // RFC 9421 section 7.2.1: without the method, target and authority, a signature can be
        // moved to another request.
        let covers = |name: &str| parsed.iter().any(|c| c.name() == name && c.is_plain());
        let target = covers("@target-uri") || (covers("@path") && covers("@query"));
        if !covers("@method") || !target || !covers("@authority") {
            errors.push(ConfigError::new(
                format!("{at}.components"),
                "must include `@method`, `@authority`, and `@target-uri` (or `@path` and `@query`): otherwise a signature can be replayed against another request",
            ));
        }
        let max_age_s = doc.max_age_seconds.unwrap_or(DEFAULT_MAX_AGE_SECONDS);
        if !(1..=86_400).contains(&max_age_s) {
            errors.push(ConfigError::new(
                format!("{at}.max_age_seconds"),
                format!("{max_age_s} is out of range; expected 1 to 86400"),
            ));
        }
        let skew_s = doc.clock_skew_seconds.unwrap_or(DEFAULT_CLOCK_SKEW_SECONDS);
        if skew_s > 600 {
            errors.push(ConfigError::new(
                format!("{at}.clock_skew_seconds"),
                format!("{skew_s} is out of range; expected 0 to 600"),
            ));
        }
        if let Some(tag) = &doc.tag {
            if tag.is_empty()
                || !tag
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                errors.push(ConfigError::new(
                    format!("{at}.tag"),
                    "expected printable ASCII without `\"` or `\\`",
                ));
            }
        }
        if errors.len() > start {
            return None;
        }
        Some(Signer {
            name: name.to_string(),
            keys,
            algorithms,
            components: names,
            max_age_s,
            skew_s,
            require_nonce: doc.require_nonce.unwrap_or(true),
            tag: doc.tag.clone(),
        })
    }

    /// Checks the signature in `sigs` that names one of this signer's keys, at `now_ms`: the
    /// algorithm, the components the policy requires (and `content-digest` when the request has
    /// a body), `created` / `expires`, the `tag`, the signature itself, and last the nonce, so
    /// that only signatures that verify are remembered.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &self,
        keys: &KeyMap,
        sig: &httpsig::Signature,
        req: &SignedRequest<'_>,
        has_body: bool,
        now_ms: u64,
        replay: &Replay,
        store: &dyn SharedStore,
        secret: &[u8],
    ) -> Result<Signed, DenialCode> {
        let kid = sig.keyid().ok_or(DenialCode::MessageSignatureInvalid)?;
        let key = keys.get(kid).ok_or(DenialCode::MessageSignatureInvalid)?;
        if !self.algorithms.contains(&key.algorithm()) {
            return Err(DenialCode::MessageSignatureInvalid);
        }
        if !self.components.iter().all(|c| sig.covers(c)) {
            return Err(DenialCode::MessageSignatureInvalid);
        }
        // The body cannot be judged now: a covered digest binds it and is checked once the body
        // is buffered; without one, the body must be empty (HTTP/2 may send one without saying
        // so in the headers).
        let content_digest = if sig.covers("content-digest") {
            let values: Vec<&str> = req
                .headers
                .iter()
                .filter(|(k, _)| k == "content-digest")
                .map(|(_, v)| v.as_str())
                .collect();
            Some(values.join(", "))
        } else if has_body {
            return Err(DenialCode::MessageSignatureInvalid);
        } else {
            None
        };
        if self.tag.is_some() && sig.tag() != self.tag.as_deref() {
            return Err(DenialCode::MessageSignatureInvalid);
        }
        let nonce = match (sig.nonce(), self.require_nonce) {
            (None, true) => return Err(DenialCode::MessageSignatureInvalid),
            (nonce, _) => nonce,
        };
        let now = now_ms / 1000;
        let created = sig.created().ok_or(DenialCode::MessageSignatureInvalid)?;
        if created > now.saturating_add(self.skew_s)
            || now
                > created
                    .saturating_add(self.max_age_s)
                    .saturating_add(self.skew_s)
        {
            return Err(DenialCode::MessageSignatureExpired);
        }
        if sig
            .expires()
            .is_some_and(|e| now > e.saturating_add(self.skew_s))
        {
            return Err(DenialCode::MessageSignatureExpired);
        }
        sig.verify(req, key)
            .map_err(|_| DenialCode::MessageSignatureInvalid)?;
        if let (Some(nonce), true) = (nonce, self.require_nonce) {
            // Remembered as long as the signature would be accepted.
            let mut until = created.saturating_add(self.max_age_s);
            if let Some(e) = sig.expires() {
                until = until.min(e);
            }
            let forget_ms = until.saturating_add(self.skew_s).saturating_mul(1000);
            match replay.check(store, secret, &[&self.name, kid, nonce], now_ms, forget_ms) {
                Seen::Fresh => {}
                Seen::Replayed => return Err(DenialCode::MessageSignatureReplayed),
                Seen::Full | Seen::Unavailable => return Err(DenialCode::ReplayCheckUnavailable),
            }
        }
        Ok(Signed {
            principal: format!("sig:{}:{kid}", self.name),
            content_digest,
        })
    }

    /// The keys of a fetched document (`{"keys": [...]}`) this signer can use: keys for an
    /// algorithm it does not accept, or that do not load, are left out (as RFC 7517 asks of
    /// unknown members); a document without any usable key is refused (the last good set stays).
    pub fn parse_keys(&self, body: &[u8]) -> Result<KeyMap, &'static str> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the key set is not JSON")?;
        let list = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or("the key set has no `keys` array")?;
        let mut keys = KeyMap::new();
        for jwk in list.iter().take(MAX_KEYS) {
            if let Ok(key) = VerifyingKey::from_jwk(jwk) {
                if self.algorithms.contains(&key.algorithm()) {
                    keys.entry(key.kid().to_string()).or_insert(key);
                }
            }
        }
        if keys.is_empty() {
            return Err("the key set has no key this signer can use");
        }
        Ok(keys)
    }

    /// Whether nonces are checked against shared data (the host then provides the secret).
    pub fn uses_replay_store(&self) -> bool {
        self.require_nonce
    }
}
