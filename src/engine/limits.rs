//! Applying a route's rate limits: build each limit's key from the request and principal, take
//! tokens from its shared bucket, and answer `429` (or count a shadow hit).

use super::{Effects, Engine, Principal, Request, Route, VmState};
use crate::codes::DenialCode;
use crate::engine::Denial;
use crate::ratelimit::{self, KeyPart, Verdict};
use crate::store::SharedStore;
use serde_json::Value;

/// Key material for anonymous callers on public routes.
const ANONYMOUS: &str = "anonymous";

fn key_material<'a>(
    engine: &Engine,
    part: &'a KeyPart,
    route: &'a Route,
    who: Option<&'a Principal>,
    req: &Request<'a>,
) -> String {
    match part {
        KeyPart::Identity => who.map_or(ANONYMOUS, |p| p.id.as_str()).to_string(),
        KeyPart::Route => route.name.clone(),
        KeyPart::Constant(c) => c.clone(),
        KeyPart::Header(h) => req.header_values(h).next().unwrap_or("").to_string(),
        KeyPart::Claim(c) => match who.and_then(|p| p.claims.get(c)) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        },
        KeyPart::ClientIp => {
            let xff = req.header_values("x-forwarded-for").last();
            super::request::client_ip(req.peer, xff, engine.limit_options.trusted_hops)
                .unwrap_or("")
                .to_string()
        }
    }
}

fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Checks `route`'s limits in order. Ok: headers for the response; Err: the `429` to send.
/// Tokens taken from earlier limits are not refunded when a later one refuses.
#[allow(clippy::too_many_arguments)]
pub(super) fn check(
    engine: &Engine,
    route: &Route,
    who: Option<&Principal>,
    req: &Request<'_>,
    now_ms: u64,
    state: &VmState,
    store: &dyn SharedStore,
    effects: &mut Effects,
) -> Result<Vec<(String, String)>, Denial> {
    if route.limits.is_empty() {
        return Ok(vec![]);
    }
    let mut policies = Vec::with_capacity(route.limits.len());
    // The most constrained enforced limit: (remaining, name, seconds until full).
    let mut tightest: Option<(u64, &str, u64)> = None;
    for (index, cost) in &route.limits {
        let Some(limit) = engine.limits.get(*index) else {
            continue;
        };
        policies.push(limit.policy_header.as_str());
        let parts: Vec<String> = limit
            .key
            .iter()
            .map(|p| key_material(engine, p, route, who, req))
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let slot = limit.slot_key(&state.limit_secret, &parts);
        let verdict = ratelimit::acquire(
            store,
            limit,
            &slot,
            *cost,
            now_ms,
            engine.limit_options.max_retries,
        );
        let take = match verdict {
            Ok(Verdict::Taken { take, retries }) => {
                effects.cas_retries += retries;
                take
            }
            // Out of CAS attempts, or shared data unavailable: the limit's `on_contention` decides.
            contended => {
                if let Ok(Verdict::Contended { retries }) = contended {
                    effects.cas_retries += retries;
                }
                effects.cas_exhausted = true;
                if limit.deny_on_contention && !limit.shadow {
                    return Err(too_many(
                        engine,
                        route,
                        &limit.name,
                        &limit.policy_header,
                        1,
                        0,
                    ));
                }
                continue;
            }
        };
        if !take.allowed {
            if limit.shadow {
                effects.shadow_limited.push(limit.name.clone());
                continue;
            }
            return Err(too_many(
                engine,
                route,
                &limit.name,
                &limit.policy_header,
                secs(take.retry_after_ms).max(1),
                take.remaining,
            ));
        }
        if !limit.shadow && tightest.is_none_or(|(r, _, _)| take.remaining < r) {
            tightest = Some((take.remaining, limit.name.as_str(), secs(take.full_in_ms)));
        }
    }
    if !engine.limit_options.response_headers {
        return Ok(vec![]);
    }
    let mut headers = vec![("ratelimit-policy".to_string(), policies.join(", "))];
    if let Some((remaining, name, reset)) = tightest {
        headers.push((
            "ratelimit".to_string(),
            format!("\"{name}\";r={remaining};t={reset}"),
        ));
    }
    Ok(headers)
}

fn too_many(
    engine: &Engine,
    route: &Route,
    name: &str,
    policy: &str,
    retry_after: u64,
    remaining: u64,
) -> Denial {
    let mut d = crate::problem::denial(
        &engine.realm,
        DenialCode::RateLimited,
        Some(route.name.clone()),
    );
    d.headers.push(("retry-after", retry_after.to_string()));
    d.headers.push(("ratelimit-policy", policy.to_string()));
    d.headers.push((
        "ratelimit",
        format!("\"{name}\";r={remaining};t={retry_after}"),
    ));
    d
}
