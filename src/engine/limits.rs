//! Applying a route's rate limits: build each limit's key from the request and principal, take
//! tokens from its shared bucket, and answer `429` (or count a shadow hit). `global` limits
//! become descriptors for the rate-limit service, and its answer (or its failure) is judged
//! here too.

use super::{Effects, Engine, GlobalAsk, Principal, Request, Route, VmState};
use crate::codes::DenialCode;
use crate::engine::Denial;
use crate::ratelimit::rls::{Answer, Code};
use crate::ratelimit::{self, KeyPart, Verdict};
use crate::store::SharedStore;
use serde_json::Value;

/// What the local buckets decided: the response headers, and what the service must still be
/// asked.
pub(super) struct Checked {
    pub headers: Vec<(String, String)>,
    pub global: Option<GlobalAsk>,
}

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

/// Checks `route`'s limits in order. Ok: headers for the response, and the descriptors of its
/// `global` limits; Err: the `429` to send. Tokens taken from earlier limits are not refunded
/// when a later one refuses; a local refusal never asks the service.
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
) -> Result<Checked, Denial> {
    if route.limits.is_empty() {
        return Ok(Checked {
            headers: vec![],
            global: None,
        });
    }
    let mut policies = Vec::with_capacity(route.limits.len());
    // The most constrained enforced limit: (remaining, name, seconds until full).
    let mut tightest: Option<(u64, &str, u64)> = None;
    let mut global: Option<GlobalAsk> = None;
    for (index, cost) in &route.limits {
        let Some(limit) = engine.limits.get(*index) else {
            continue;
        };
        policies.push(limit.policy_header.as_str());
        let values: Vec<String> = limit
            .key
            .iter()
            .map(|p| key_material(engine, p, route, who, req))
            .collect();
        if limit.backend.global() {
            let send_limits = engine
                .rate_limit_service
                .as_ref()
                .is_some_and(|s| s.send_limits);
            let ask = global.get_or_insert_with(|| GlobalAsk {
                limits: Vec::new(),
                descriptors: Vec::new(),
                hits: u32::try_from(*cost).unwrap_or(u32::MAX),
                local_remaining: None,
            });
            ask.limits.push(*index);
            ask.descriptors.push(limit.descriptor(&values, send_limits));
        }
        if !limit.backend.local() {
            continue;
        }
        let parts: Vec<&str> = values.iter().map(String::as_str).collect();
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
                        &route.name,
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
                &route.name,
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
    if let Some(ask) = global.as_mut() {
        ask.local_remaining = tightest.map(|(r, _, _)| r);
    }
    if !engine.limit_options.response_headers {
        return Ok(Checked {
            headers: vec![],
            global,
        });
    }
    let mut headers = vec![("ratelimit-policy".to_string(), policies.join(", "))];
    if let Some((remaining, name, reset)) = tightest {
        headers.push((
            "ratelimit".to_string(),
            format!("\"{name}\";r={remaining};t={reset}"),
        ));
    }
    Ok(Checked { headers, global })
}

/// What the rate-limit service's answer means for a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GlobalVerdict {
    /// Ok: let it through, with the `RateLimit` value that replaces the local one (the
    /// service's tightest limit had less left); Err: the `429` to send.
    pub result: Result<Option<String>, Denial>,
    /// Shadow limits the service found over their budget.
    pub shadow_limited: Vec<String>,
    /// The service's own response headers the policy passes on (to the `429` too).
    pub service_headers: Vec<(String, String)>,
}

/// The service's headers that `rate_limit_service.response_headers` passes on.
fn passed_headers(engine: &Engine, answer: &Answer) -> Vec<(String, String)> {
    let Some(service) = &engine.rate_limit_service else {
        return vec![];
    };
    answer
        .response_headers
        .iter()
        .filter(|(k, _)| service.response_headers.contains(&k.to_ascii_lowercase()))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

impl Engine {
    /// Judges the service's answer to `ask` for a request on `route`. `None`: the answer says
    /// neither yes nor no (an unknown code), which is a failure of the service.
    pub(crate) fn judge_global(
        &self,
        route: &str,
        ask: &GlobalAsk,
        answer: &Answer,
    ) -> Option<GlobalVerdict> {
        let limit_at = |i: usize| ask.limits.get(i).and_then(|l| self.limits.get(*l));
        let mut shadow_limited = Vec::new();
        let mut refusal: Option<Denial> = None;
        let mut tightest: Option<(u32, &str, u64)> = None;
        match answer.overall {
            Code::Unknown => return None,
            Code::OverLimit if answer.statuses.len() != ask.descriptors.len() => {
                // Over, but not saying which: the first enforced limit refuses.
                let limit = ask
                    .limits
                    .iter()
                    .filter_map(|l| self.limits.get(*l))
                    .find(|l| !l.shadow);
                match limit {
                    Some(l) => {
                        refusal = Some(too_many(
                            self,
                            route,
                            &l.name,
                            &l.policy_header,
                            l.unit.seconds(),
                            0,
                        ))
                    }
                    None => shadow_limited.extend(
                        ask.limits
                            .iter()
                            .filter_map(|l| self.limits.get(*l))
                            .map(|l| l.name.clone()),
                    ),
                }
            }
            _ => {
                for (i, status) in answer.statuses.iter().enumerate() {
                    let Some(limit) = limit_at(i) else { continue };
                    match status.code {
                        Code::OverLimit if limit.shadow => shadow_limited.push(limit.name.clone()),
                        Code::OverLimit if refusal.is_none() => {
                            let reset = if status.reset_seconds == 0 {
                                limit.unit.seconds()
                            } else {
                                status.reset_seconds
                            };
                            refusal = Some(too_many(
                                self,
                                route,
                                &limit.name,
                                &limit.policy_header,
                                reset,
                                0,
                            ));
                        }
                        Code::Ok
                            if !limit.shadow
                                && status.requests_per_unit.is_some()
                                && tightest.is_none_or(|(r, _, _)| status.limit_remaining < r) =>
                        {
                            tightest = Some((
                                status.limit_remaining,
                                limit.name.as_str(),
                                status.reset_seconds,
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        let result = match refusal {
            Some(denial) => Err(denial),
            None => Ok(tightest
                .filter(|(r, _, _)| {
                    self.limit_options.response_headers
                        && ask.local_remaining.is_none_or(|l| u64::from(*r) < l)
                })
                .map(|(r, name, t)| format!("\"{name}\";r={r};t={t}"))),
        };
        Some(GlobalVerdict {
            result,
            shadow_limited,
            service_headers: passed_headers(self, answer),
        })
    }

    /// The service failed (`None`: no limit of `ask` refuses then): the refusal to send, when
    /// one of the enforced limits of `ask` says `deny` on failure.
    pub(crate) fn global_failure(&self, route: &str, ask: &GlobalAsk) -> Option<Denial> {
        let default = self
            .rate_limit_service
            .as_ref()
            .is_none_or(|s| s.deny_on_failure);
        let refuses = ask
            .limits
            .iter()
            .filter_map(|l| self.limits.get(*l))
            .any(|l| !l.shadow && l.deny_on_service_failure.unwrap_or(default));
        refuses.then(|| {
            let mut d = crate::problem::denial(
                &self.realm,
                DenialCode::RateLimitUnavailable,
                Some(route.to_string()),
            );
            d.headers.push(("retry-after", "1".to_string()));
            d
        })
    }
}

fn too_many(
    engine: &Engine,
    route: &str,
    name: &str,
    policy: &str,
    retry_after: u64,
    remaining: u64,
) -> Denial {
    let mut d = crate::problem::denial(
        &engine.realm,
        DenialCode::RateLimited,
        Some(route.to_string()),
    );
    d.headers.push(("retry-after", retry_after.to_string()));
    d.headers.push(("ratelimit-policy", policy.to_string()));
    d.headers.push((
        "ratelimit",
        format!("\"{name}\";r={remaining};t={retry_after}"),
    ));
    d
}
