//! What the engine decides, as data. The host turns it into Envoy calls in one place; the
//! problem bodies of denials are built and rendered in `crate::problem`.

use crate::codes::DenialCode;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Denial),
    /// A refusal that a dry run (of the policy or of the route) does not carry out: the exchange
    /// reports it and lets the request through with the headers clients could forge removed.
    WouldDeny(Denial),
}

/// Let the request through, after these header changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    /// Name of the matched route.
    pub route: String,
    /// Who passed: `jwt:<provider>:<sub>` or `api_key:<id>`; `None` on public routes.
    pub principal: Option<String>,
    /// Removed before `set_headers` are applied: every header Tollgate forwards (so clients cannot
    /// forge them) and, unless forwarding is enabled, the token's own header.
    pub remove_headers: Vec<String>,
    /// Set (replacing any value): forwarded claims, and `:path` / `cookie` when a token is
    /// stripped from the query string or a cookie.
    pub set_headers: Vec<(String, String)>,
    /// No route matched and the policy's `default.action` is `allow`.
    pub unknown_route: bool,
    /// Added to the upstream's response (`RateLimit`, `RateLimit-Policy`).
    pub response_headers: Vec<(String, String)>,
    /// The body must pass these checks (`Engine::check_request_body`) before the request goes
    /// on; the host holds the headers and buffers the body.
    pub body_check: Option<BodyCheck>,
    /// The `Content-Digest` a verified message signature covers: the body must match it
    /// (`body_check.digest`).
    pub content_digest: Option<String>,
    /// The upstream's response must be checked with these response rules.
    pub response_check: Option<usize>,
    /// The mode that applied: in `dry-run`, body and response refusals are reported, not sent.
    pub mode: Mode,
    /// A credential was verified (responses get `Cache-Control: no-store`).
    pub authenticated: bool,
    /// `global` limits: the rate-limit service decides before the request goes on.
    pub global: Option<GlobalAsk>,
}

/// What a request body must pass before the request goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyCheck {
    /// The route's request rules (schema, size), when it has a body schema.
    pub rules: Option<usize>,
    /// The body must match the signed `Content-Digest` ([`Allow::content_digest`]).
    pub digest: bool,
}

/// What the rate-limit service is asked for one request (its `global` limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalAsk {
    /// Indices of the limits (`Engine::limits`), in the order of `descriptors`.
    pub limits: Vec<usize>,
    pub descriptors: Vec<crate::ratelimit::rls::Descriptor>,
    /// The route's cost of these limits (`hits_addend`).
    pub hits: u32,
    /// What the tightest local limit had left (its `RateLimit` header), if any.
    pub local_remaining: Option<u64>,
}

/// Refuse with a local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub code: DenialCode,
    /// Name of the matched route, if any.
    pub route: Option<String>,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// For `request_invalid`: what the request broke (pointer, keyword, masked message). The
    /// problem body is rendered from the code, the status and these only when it is sent
    /// ([`Denial::body`]); a dry run never renders it.
    pub violations: Vec<crate::payload::Violation>,
    /// Who was refused, when authentication had passed (scope, owner, limit refusals); for the
    /// audit log.
    pub principal: Option<String>,
}

/// Which remote document (a key set, the revocation list) a fetch or early refresh is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A JWT provider's `remote_jwks` (index into `Engine::providers`).
    Provider(usize),
    /// A signer's `remote_keys` (index into `Engine::signers`).
    Signer(usize),
    /// The remote revocation list (`revocations.remote`).
    Revocations,
}

/// Side effects the host carries out after the decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// A credential named a `kid` this remote key set lacks: ask for an early refresh.
    pub early_refresh: Option<KeySource>,
    /// Whether the token cache answered (`Some(true)`), was consulted and missed (`Some(false)`).
    pub cache_hit: Option<bool>,
    /// Signatures the host's crypto checked (src/jwt/offload.rs).
    pub host_signatures: u32,
    /// Compare-and-swap attempts lost while updating rate-limit buckets.
    pub cas_retries: u32,
    /// A limit ran out of CAS attempts.
    pub cas_exhausted: bool,
    /// Shadow limits that would have refused this request.
    pub shadow_limited: Vec<String>,
    /// This authentication failure started a brute-force block.
    pub block_started: bool,
    /// This authentication failure is also counted in the rate-limit service
    /// (`brute_force.global`): the client's subject.
    pub failure_subject: Option<String>,
    /// The route is deprecated (counted).
    pub deprecated: bool,
    /// What the request showed its route's automated-client signals (`detection`).
    pub observed: crate::abuse::detect::Observed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub effects: Effects,
}

/// Whether the policy or a route refuses (`enforce`) or only reports what it would have refused
/// (`dry-run`). Serialised as the policy spells it, for the audit log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Mode {
    #[default]
    #[serde(rename = "enforce")]
    Enforce,
    #[serde(rename = "dry-run")]
    DryRun,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "enforce" => Some(Mode::Enforce),
            "dry-run" => Some(Mode::DryRun),
            _ => None,
        }
    }
}

impl Decision {
    pub fn denial_code(&self) -> Option<DenialCode> {
        match self {
            Decision::Allow(_) | Decision::WouldDeny(_) => None,
            Decision::Deny(d) => Some(d.code),
        }
    }
}

/// How the engine reached its decision on a request's headers, for `tollgate explain`: which
/// route, which credential, which requirement passed or failed. Collected only when asked for
/// ([`super::Engine::decide_explained`]); the request path of Envoy never builds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// The path routes are matched against; `None`: it cannot be normalised safely.
    pub normalized_path: Option<String>,
    /// The route that matched.
    pub route: Option<RouteHit>,
    /// The route's credential check: who passed, or why not. `None`: not reached, or public.
    pub authentication: Option<Result<Passed, DenialCode>>,
    /// Each requirement of the route and whether the caller met it.
    pub authorization: Vec<Check>,
    /// The descriptors the rate-limit service is asked about (`global` limits).
    pub global: Option<GlobalAsk>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHit {
    /// Position in the policy's `routes` ([`super::RouteTable::get`]).
    pub index: usize,
    pub name: String,
    /// Decoded path parameters.
    pub params: Vec<(String, String)>,
}

/// A caller who passed authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// `jwt:<provider>:<sub>` or `api_key:<id>`.
    pub principal: String,
    /// Sorted, deduplicated.
    pub scopes: Vec<String>,
}

/// One requirement of a route, judged for one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub requirement: String,
    pub passed: bool,
}
