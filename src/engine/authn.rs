//! Authentication of one request: find exactly one credential among the sources the route accepts
//! (JWT sources of its providers, the API-key header or parameter), verify it (or answer from the
//! token cache), and describe who passed as a [`Principal`].

use super::{Access, Effects};
use super::{Engine, Provider, ProviderKeys, Request, VmState};
use crate::codes::DenialCode;
use crate::jwt::cache::{self, Verified};
use crate::jwt::extract::Source;
use crate::jwt::verify::{self, claim_value, Claims};
use serde_json::{Map, Value};
use std::rc::Rc;

/// Longest header value Tollgate forwards from a claim.
const MAX_FORWARDED_VALUE: usize = 4096;

/// Who passed authentication. Built once per verified token (then cached) or once per API key
/// at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `jwt:<provider>:<sub>`, `api_key:<id>` or `mtls:<identity>`, forwarded in the identity
    /// header.
    pub id: String,
    /// Whether the credential was a bearer token (for RFC 6750 challenges).
    pub bearer: bool,
    /// Sorted, deduplicated.
    pub scopes: Vec<String>,
    /// The token's claims (registered and custom); empty for API keys.
    pub claims: Map<String, Value>,
    /// Upstream headers derived from the claims.
    pub forward: Vec<(String, String)>,
}

impl Principal {
    /// A workload known by its verified client certificate; `id` is `mtls:<identity>`.
    pub fn workload(id: String) -> Principal {
        Principal {
            id,
            bearer: false,
            scopes: vec![],
            claims: Map::new(),
            forward: vec![],
        }
    }

    pub fn api_key(id: &str, scopes: Vec<String>) -> Principal {
        Principal {
            id: format!("api_key:{id}"),
            bearer: false,
            scopes,
            claims: Map::new(),
            forward: vec![],
        }
    }
}

/// The outcome of authentication: the principal, and how the credential leaves the request.
pub struct Authenticated {
    pub principal: Rc<Principal>,
    /// A signed request: the covered `Content-Digest` its body must match (`None` inside: the
    /// body must be empty).
    pub signed_body: Option<Option<String>>,
    pub remove_headers: Vec<String>,
    /// Query parameter to strip from `:path`.
    pub strip_query: Option<String>,
    /// Cookie to strip from `cookie`.
    pub strip_cookie: Option<String>,
}

enum Found<'a> {
    Jwt(&'a Source),
    ApiKey(&'a Source),
}

/// What authentication reads besides the request: the time and the shared store (nonces of
/// signed requests).
pub struct Context<'a> {
    pub now_ms: u64,
    pub store: &'a dyn crate::store::SharedStore,
}

/// Finds and verifies the one credential `access` accepts. Called by `Engine::decide_at`; public so
/// that `tollgate explain` can show who passed (or why not) with the engine's own code.
pub fn authenticate(
    engine: &Engine,
    access: &Access,
    req: &Request<'_>,
    cx: &Context<'_>,
    state: &mut VmState,
    effects: &mut Effects,
) -> Result<Authenticated, DenialCode> {
    let now = cx.now_ms / 1000;
    let Access::Authenticated {
        providers: ids,
        api_keys,
        signers,
    } = access
    else {
        return Err(DenialCode::InternalError);
    };
    // A signature is a credential too: with a token or key beside it, the request carries two.
    let signed = !signers.is_empty()
        && req
            .headers
            .iter()
            .any(|(k, _)| k == "signature-input" || k == "signature");
    let providers: Vec<(usize, &Provider)> = ids
        .iter()
        .filter_map(|i| engine.providers.get(*i).map(|p| (*i, p)))
        .collect();
    let mut jwt_sources: Vec<&Source> = Vec::new();
    for (_, p) in &providers {
        for s in &p.sources {
            if !jwt_sources.contains(&s) {
                jwt_sources.push(s);
            }
        }
    }
    let key_sources: &[Source] = match (&engine.api_keys, api_keys) {
        (Some(k), true) => &k.sources,
        _ => &[],
    };
    let mut found: Option<(Found<'_>, &str)> = None;
    let mut scratch = Vec::new();
    let candidates = jwt_sources
        .iter()
        .map(|s| Found::Jwt(s))
        .chain(key_sources.iter().map(Found::ApiKey));
    for candidate in candidates {
        scratch.clear();
        match &candidate {
            Found::Jwt(s) | Found::ApiKey(s) => s.find(req, &mut scratch),
        }
        if scratch.len() > 1 || ((found.is_some() || signed) && !scratch.is_empty()) {
            return Err(DenialCode::MultipleTokens);
        }
        if let Some(t) = scratch.first() {
            found = Some((candidate, t));
        }
    }
    if signed {
        return authenticate_signature(engine, signers, req, cx, state, effects);
    }
    let Some((found, credential)) = found else {
        return Err(if !providers.is_empty() {
            DenialCode::TokenMissing
        } else if *api_keys {
            DenialCode::ApiKeyMissing
        } else {
            DenialCode::MessageSignatureMissing
        });
    };
    let (principal, source, forward_token) = match found {
        Found::ApiKey(source) => {
            let keys = engine.api_keys.as_ref().ok_or(DenialCode::InternalError)?;
            let key = keys
                .check(credential, now)
                .ok_or(DenialCode::ApiKeyInvalid)?;
            (Rc::clone(&key.principal), source, false)
        }
        Found::Jwt(source) => {
            let (principal, provider) =
                authenticate_jwt(&providers, source, credential, now, state, effects)?;
            (principal, source, provider.forward_token)
        }
    };
    let mut out = Authenticated {
        principal,
        signed_body: None,
        remove_headers: vec![],
        strip_query: None,
        strip_cookie: None,
    };
    if !forward_token {
        match source {
            Source::Header { name, .. } => out.remove_headers.push(name.clone()),
            Source::Query(name) => out.strip_query = Some(name.clone()),
            Source::Cookie(name) => out.strip_cookie = Some(name.clone()),
        }
    }
    Ok(out)
}

/// The request's signature by one of `signers` (indices into `Engine::signers`): the first
/// signature (in `Signature-Input` order) whose `keyid` one of them holds is the credential.
fn authenticate_signature(
    engine: &Engine,
    signers: &[usize],
    req: &Request<'_>,
    cx: &Context<'_>,
    state: &VmState,
    effects: &mut Effects,
) -> Result<Authenticated, DenialCode> {
    let first = |name: &str| req.header_values(name).next().unwrap_or("");
    let view = crate::httpsig::SignedRequest {
        method: req.method,
        scheme: match first(":scheme") {
            "" => "http",
            s => s,
        },
        authority: first(":authority"),
        path_and_query: req.path,
        headers: req.headers,
    };
    let sigs = crate::httpsig::Signatures::from_request(&view)
        .map_err(|_| DenialCode::MessageSignatureInvalid)?;
    // Each signer's keys: its own, or the set fetched into this VM (none yet: `None`).
    let keys = |i: usize| match engine.signers.get(i).map(|s| &s.keys) {
        Some(super::signers::SignerKeys::Inline(keys)) => Some(keys),
        Some(super::signers::SignerKeys::Remote(_)) => state
            .signer_keys
            .get(i)
            .and_then(|k| k.as_ref())
            .map(|k| &*k.keys),
        None => None,
    };
    let found = sigs.iter().find_map(|sig| {
        let kid = sig.keyid()?;
        signers.iter().find_map(|i| {
            let set = keys(*i)?;
            set.contains_key(kid)
                .then(|| engine.signers.get(*i).map(|s| (s, set, sig)))
                .flatten()
        })
    });
    let Some((signer, set, sig)) = found else {
        // A key the signers do not hold - unless one of them has not loaded its keys yet.
        if signers.iter().any(|i| keys(*i).is_none()) {
            return Err(DenialCode::KeysUnavailable);
        }
        // Perhaps a key published since the last fetch: ask for an early one (rate-limited).
        effects.early_refresh = signers
            .iter()
            .find(|i| {
                matches!(
                    engine.signers.get(**i).map(|s| &s.keys),
                    Some(super::signers::SignerKeys::Remote(_))
                )
            })
            .map(|i| super::decision::KeySource::Signer(*i));
        return Err(DenialCode::MessageSignatureInvalid);
    };
    let has_body = req.header_values("transfer-encoding").next().is_some()
        || req.header_values("content-length").any(|v| v.trim() != "0");
    let signed = signer.check(
        set,
        sig,
        &view,
        has_body,
        cx.now_ms,
        &engine.replay,
        cx.store,
        &state.limit_secret,
    )?;
    Ok(Authenticated {
        principal: Rc::new(Principal::workload(signed.principal)),
        signed_body: Some(signed.content_digest),
        remove_headers: vec![],
        strip_query: None,
        strip_cookie: None,
    })
}

fn authenticate_jwt<'p>(
    providers: &[(usize, &'p Provider)],
    source: &Source,
    token: &str,
    now: u64,
    state: &mut VmState,
    effects: &mut Effects,
) -> Result<(Rc<Principal>, &'p Provider), DenialCode> {
    let candidates: Vec<(usize, &Provider)> = providers
        .iter()
        .copied()
        .filter(|(_, p)| p.sources.contains(source))
        .collect();
    let largest = candidates
        .iter()
        .map(|(_, p)| p.max_token_bytes)
        .max()
        .unwrap_or(0);
    if token.len() > largest {
        return Err(DenialCode::TokenTooLarge);
    }
    let (index, provider) = match candidates.as_slice() {
        [one] => *one,
        many => {
            let iss = verify::peek_issuer(token).ok_or(DenialCode::IssuerMismatch)?;
            many.iter()
                .copied()
                .find(|(_, p)| p.rules.issuer == iss)
                .ok_or(DenialCode::IssuerMismatch)?
        }
    };
    if token.len() > provider.max_token_bytes {
        return Err(DenialCode::TokenTooLarge);
    }
    let key = cache::hash(token);
    let remote = &state.remote;
    let hit = state
        .cache
        .get(&key, now, |i| {
            remote
                .get(i)
                .and_then(|r| r.as_ref())
                .map_or(0, |r| r.generation)
        })
        .filter(|v| v.provider == index);
    effects.cache_hit = Some(hit.is_some());
    let verified = match hit {
        Some(v) => v,
        None => {
            let v = verify_fresh(index, provider, token, now, state, effects)?;
            state.cache.insert(key, v.clone());
            v
        }
    };
    Ok((verified.principal, provider))
}

fn verify_fresh(
    index: usize,
    provider: &Provider,
    token: &str,
    now: u64,
    state: &VmState,
    effects: &mut Effects,
) -> Result<Verified<Principal>, DenialCode> {
    let header = verify::parse_header(token)?;
    // Refused before any key is touched: no algorithm confusion.
    if !provider.algorithms.contains(&header.alg) {
        return Err(DenialCode::AlgorithmNotAllowed);
    }
    let (keys, generation) = match &provider.keys {
        ProviderKeys::Inline(keys) => (Rc::clone(keys), 0),
        ProviderKeys::Remote(_) => match state.remote.get(index).and_then(|i| i.as_ref()) {
            Some(installed) => (Rc::clone(&installed.keys), installed.generation),
            None => return Err(DenialCode::KeysUnavailable),
        },
    };
    let Some(candidates) = keys.candidates(header.alg, header.kid.as_deref()) else {
        if matches!(provider.keys, ProviderKeys::Remote(_)) {
            effects.early_refresh = Some(super::decision::KeySource::Provider(index));
        }
        return Err(DenialCode::UnknownKey);
    };
    let mut outcome = Err(DenialCode::UnknownKey);
    let host = state.signatures.as_deref();
    for candidate in candidates {
        let (verdict, by_host) = verify::verify_candidate(candidate, host, token);
        if by_host {
            effects.host_signatures += 1;
        }
        match verdict {
            Ok(claims) => {
                outcome = Ok(claims);
                break;
            }
            // Keep the most telling failure across keys (a bad signature beats "no key").
            Err(code) if matches!(outcome, Err(DenialCode::UnknownKey)) => outcome = Err(code),
            Err(_) => {}
        }
    }
    let claims = outcome?;
    let window = provider.rules.check(&claims, now)?;
    Ok(Verified {
        provider: index,
        generation,
        window,
        principal: Rc::new(principal(provider, &claims)),
    })
}

fn safe_header_value(text: &str) -> bool {
    text.len() <= MAX_FORWARDED_VALUE && !text.chars().any(char::is_control)
}

fn principal(provider: &Provider, claims: &Claims) -> Principal {
    let mut map = claims.custom.clone();
    for name in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"] {
        if let Some(v) = claim_value(claims, name) {
            map.insert(name.to_string(), v);
        }
    }
    let mut scopes = Vec::new();
    for name in &provider.scope_claims {
        match map.get(name) {
            Some(Value::String(s)) => {
                scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(String::from))
            }
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(|v| v.as_str()).map(String::from))
            }
            _ => {}
        }
    }
    scopes.sort();
    scopes.dedup();
    let mut forward = Vec::with_capacity(provider.forward.len());
    for (claim, header) in &provider.forward {
        let text = match map.get(claim) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => other.to_string(),
        };
        // A claim is signed, not necessarily well-behaved: never emit a control character (header
        // injection) or an unbounded value.
        if safe_header_value(&text) {
            forward.push((header.clone(), text));
        }
    }
    let id = match claims.subject.as_deref().filter(|s| safe_header_value(s)) {
        Some(sub) => format!("jwt:{}:{sub}", provider.name),
        None => format!("jwt:{}", provider.name),
    };
    Principal {
        id,
        bearer: true,
        scopes,
        claims: map,
        forward,
    }
}
