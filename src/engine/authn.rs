//! JWT authentication of one request: find exactly one token, choose the provider, consult the
//! cache, verify, and derive the upstream header changes.

use super::{Allow, Effects, Engine, Provider, ProviderKeys, Request, VmState};
use crate::codes::DenialCode;
use crate::jwt::cache::{self, Verified};
use crate::jwt::extract::{strip_cookie, strip_query, Source};
use crate::jwt::verify::{self, claim_value, Claims};
use serde_json::Value;
use std::rc::Rc;

/// Longest header value Tollgate forwards from a claim.
const MAX_FORWARDED_VALUE: usize = 4096;

pub(super) fn authenticate(
    engine: &Engine,
    ids: &[usize],
    req: &Request<'_>,
    now: u64,
    state: &mut VmState,
    effects: &mut Effects,
) -> Result<Allow, DenialCode> {
    let providers: Vec<(usize, &Provider)> = ids
        .iter()
        .filter_map(|i| engine.providers.get(*i).map(|p| (*i, p)))
        .collect();
    // Every distinct source the route's providers read, and every token found there.
    let mut sources: Vec<&Source> = Vec::new();
    for (_, p) in &providers {
        for s in &p.sources {
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
    }
    let mut found: Option<(&Source, &str)> = None;
    let mut scratch = Vec::new();
    for s in &sources {
        scratch.clear();
        s.find(req, &mut scratch);
        for t in &scratch {
            if found.is_some() {
                return Err(DenialCode::MultipleTokens);
            }
            found = Some((s, t));
        }
    }
    let Some((source, token)) = found else {
        return Err(DenialCode::TokenMissing);
    };
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
            let v = verify_fresh(engine, index, provider, token, now, state, effects)?;
            state.cache.insert(key, v.clone());
            v
        }
    };
    Ok(allow(engine, provider, source, req, &verified))
}

fn verify_fresh(
    _engine: &Engine,
    index: usize,
    provider: &Provider,
    token: &str,
    now: u64,
    state: &VmState,
    effects: &mut Effects,
) -> Result<Verified, DenialCode> {
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
            effects.early_refresh = Some(index);
        }
        return Err(DenialCode::UnknownKey);
    };
    let mut outcome = Err(DenialCode::UnknownKey);
    for verifier in candidates {
        match verify::verify_signature(verifier, token) {
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
        forward: Rc::new(forward_headers(provider, &claims)),
    })
}

/// `(header, value)` for each configured claim present in the token.
fn forward_headers(provider: &Provider, claims: &Claims) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(provider.forward.len());
    for (claim, header) in &provider.forward {
        let Some(value) = claim_value(claims, claim) else {
            continue;
        };
        let text = match value {
            Value::String(s) => s,
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            Value::Null => continue,
            other => other.to_string(),
        };
        // A claim is signed, not necessarily well-behaved: never emit a control character (header
        // injection) or an unbounded value.
        if text.len() > MAX_FORWARDED_VALUE || text.chars().any(|c| c.is_control()) {
            continue;
        }
        out.push((header.clone(), text));
    }
    out
}

fn allow(
    engine: &Engine,
    provider: &Provider,
    source: &Source,
    req: &Request<'_>,
    verified: &Verified,
) -> Allow {
    let mut remove_headers = engine.forwarded_headers.clone();
    let mut set_headers: Vec<(String, String)> = verified.forward.as_ref().clone();
    if !provider.forward_token {
        match source {
            Source::Header { name, .. } => remove_headers.push(name.clone()),
            Source::Query(name) => set_headers.push((":path".into(), strip_query(req.path, name))),
            Source::Cookie(name) => {
                let joined: Vec<&str> = req.header_values("cookie").collect();
                match strip_cookie(&joined.join("; "), name) {
                    Some(rest) => set_headers.push(("cookie".into(), rest)),
                    None => remove_headers.push("cookie".into()),
                }
            }
        }
    }
    let sub = verified
        .forward
        .iter()
        .find(|(h, _)| provider.forward.iter().any(|(c, fh)| c == "sub" && fh == h))
        .map(|(_, v)| v.clone());
    Allow {
        route: String::new(),
        principal: Some(match sub {
            Some(sub) => format!("{}:{sub}", provider.name),
            None => provider.name.clone(),
        }),
        remove_headers,
        set_headers,
    }
}
