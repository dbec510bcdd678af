//! The policy engine: compiled once from the policy document, then asked for a decision per
//! request. Host-independent: a request view, the current time and per-VM state go in, an
//! [`Outcome`] comes out.

mod apikeys;
pub mod audit;
mod authn;
mod authz;
mod decision;
pub mod exchange;
pub mod hardening;
pub mod headers;
pub mod lifecycle;
mod limits;
pub mod path;
pub(crate) mod request;
mod routes;
pub mod timefmt;

pub use apikeys::ApiKeys;
pub use authn::{authenticate, Authenticated, Principal};
pub use authz::Check;
pub use decision::{Allow, Decision, Denial, Effects, Mode, Outcome};
pub use exchange::{Exchange, Step};
pub use request::{normalize_host, Request};
pub use routes::{Access, Matched, Route, RouteTable};
pub use timefmt::parse_rfc3339;

use crate::abuse::brute::{self, BruteForce};
use crate::abuse::cidr::IpList;
use crate::codes::DenialCode;
use crate::jwt::cache::TokenCache;
use crate::jwt::extract::{default_sources, strip_cookie, strip_query, Source};
use crate::jwt::jwks::KeySet;
use crate::jwt::remote::{Installed, RemoteSpec};
use crate::jwt::verify::ClaimRules;
use crate::jwt::Alg;
use crate::payload::{Failure, Options as PayloadOptions};
use crate::policy::{self, ConfigError, PolicyDoc, ProviderDoc};
use crate::ratelimit::{Limit, Options as LimitOptions};
use crate::store::SharedStore;
use audit::AuditOptions;
use hardening::ResponsePolicy;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

/// Largest clock skew a policy may allow.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
/// Bounds for `max_token_bytes`.
pub const TOKEN_BYTES_RANGE: (usize, usize) = (256, 64 * 1024);
pub const MAX_TOKEN_CACHE_ENTRIES: usize = 100_000;

/// Default upstream header for the authenticated identity.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-tollgate-principal";
/// Scope claims read by default: OAuth's `scope`, Azure's `scp`, Auth0's `permissions`.
pub const DEFAULT_SCOPE_CLAIMS: [&str; 3] = ["scope", "scp", "permissions"];

/// Headers a policy may not forward claims into: they carry routing, framing or credentials.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];

/// Where a provider's keys come from.
pub enum ProviderKeys {
    Inline(Rc<KeySet>),
    Remote(RemoteSpec),
}

/// One compiled JWT provider.
pub struct Provider {
    pub name: String,
    pub algorithms: Vec<Alg>,
    pub keys: ProviderKeys,
    pub rules: ClaimRules,
    pub sources: Vec<Source>,
    /// `(claim, header)`, header lowercase.
    pub forward: Vec<(String, String)>,
    pub forward_token: bool,
    pub max_token_bytes: usize,
    pub scope_claims: Vec<String>,
}

/// The compiled `api_keys` section with its credential sources.
pub struct ApiKeyConfig {
    pub keys: ApiKeys,
    pub sources: Vec<Source>,
}

impl std::ops::Deref for ApiKeyConfig {
    type Target = ApiKeys;
    fn deref(&self) -> &ApiKeys {
        &self.keys
    }
}

/// The compiled policy. Immutable; shared by every HTTP context of a VM.
pub struct Engine {
    pub realm: String,
    pub providers: Vec<Provider>,
    pub routes: RouteTable,
    pub token_cache_entries: usize,
    /// Removed from every request: every header Tollgate writes upstream (forwarded claims, the
    /// identity header) so clients cannot forge them, and the API-key header, a secret.
    pub forwarded_headers: Vec<String>,
    pub identity_header: String,
    pub api_keys: Option<ApiKeyConfig>,
    /// Let requests that match no route through (logged as unknown endpoints).
    pub allow_unknown: bool,
    pub limits: Vec<Limit>,
    pub limit_options: LimitOptions,
    pub payload_options: PayloadOptions,
    /// The policy's mode; routes may override it.
    pub mode: Mode,
    /// Upstream header naming the code a dry run would have refused with.
    pub dry_run_header: Option<String>,
    pub audit: AuditOptions,
    pub responses: ResponsePolicy,
    /// Checked on every request, before route matching.
    pub ip_access: Option<IpList>,
    pub brute_force: Option<BruteForce>,
    /// Whether decisions read the downstream peer address (the host skips fetching it if not).
    pub uses_peer: bool,
    pub override_headers: headers::OverrideAction,
}

/// What evaluation learnt that the dry-run conversion needs.
struct Trace {
    mode: Mode,
    principal: Option<String>,
}

/// Mutable per-VM state: the token cache and the remote key sets installed in this VM.
pub struct VmState {
    pub cache: TokenCache,
    /// Indexed like `Engine::providers`; `None` for inline providers and remote ones not loaded yet.
    pub remote: Vec<Option<Installed>>,
    /// Process-wide secret that rate-limit keys are hashed with (from shared data).
    pub limit_secret: Vec<u8>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Engine({} providers, {} routes)",
            self.providers.len(),
            self.routes.len()
        )
    }
}

/// A lowercase header name Tollgate may write.
fn valid_header_name(h: &str) -> bool {
    crate::policy::is_identifier(h) && !h.bytes().any(|b| b.is_ascii_uppercase())
}

fn compile_provider(
    name: &str,
    doc: &ProviderDoc,
    errors: &mut Vec<ConfigError>,
) -> Option<Provider> {
    let at = format!("providers.{name}");
    let start = errors.len();
    if !crate::policy::is_identifier(name) {
        errors.push(ConfigError::new(
            &at,
            format!("provider name `{name}` may hold only letters, digits, `-` and `_`"),
        ));
    }
    if doc.issuer.is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.issuer"),
            "must not be empty",
        ));
    }
    if doc.audiences.is_empty() || doc.audiences.iter().any(String::is_empty) {
        errors.push(ConfigError::new(
            format!("{at}.audiences"),
            "list at least one non-empty audience; tokens minted for other APIs must not pass",
        ));
    }
    let mut algorithms = Vec::new();
    if doc.algorithms.is_empty() {
        errors.push(ConfigError::new(
            format!("{at}.algorithms"),
            format!("list at least one of [{}]", Alg::allowed_list()),
        ));
    }
    for (i, a) in doc.algorithms.iter().enumerate() {
        match Alg::parse(a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => errors.push(ConfigError::new(
                format!("{at}.algorithms[{i}]"),
                format!("`{a}` is listed twice"),
            )),
            None if a.eq_ignore_ascii_case("none") => errors.push(ConfigError::new(
                format!("{at}.algorithms[{i}]"),
                "`none` means unsigned tokens and is never accepted",
            )),
            None => errors.push(ConfigError::new(
                format!("{at}.algorithms[{i}]"),
                format!(
                    "unsupported algorithm `{a}`; expected one of [{}]",
                    Alg::allowed_list()
                ),
            )),
        }
    }
    let keys = match (&doc.jwks, &doc.remote_jwks) {
        (Some(jwks), None) => {
            let path = format!("{at}.jwks.keys");
            if jwks.keys.is_empty() {
                errors.push(ConfigError::new(&path, "list at least one key"));
                None
            } else {
                match KeySet::from_policy(&jwks.keys, &algorithms, &path) {
                    Ok(set) => Some(ProviderKeys::Inline(Rc::new(set))),
                    Err(msgs) => {
                        for m in msgs {
                            // `m` starts with the key's own path in backticks.
                            let (p, rest) = m
                                .strip_prefix('`')
                                .and_then(|r| r.split_once("`: "))
                                .unwrap_or((path.as_str(), m.as_str()));
                            errors.push(ConfigError::new(p, rest));
                        }
                        None
                    }
                }
            }
        }
        (None, Some(remote)) => {
            RemoteSpec::compile(name, remote, &format!("{at}.remote_jwks"), errors)
                .map(ProviderKeys::Remote)
        }
        (a, b) => {
            let found = usize::from(a.is_some()) + usize::from(b.is_some());
            errors.push(ConfigError::new(
                &at,
                format!("a provider needs exactly one of `jwks`, `remote_jwks`; found {found}"),
            ));
            None
        }
    };
    let skew = doc
        .clock_skew_seconds
        .unwrap_or(policy::DEFAULT_CLOCK_SKEW_SECONDS);
    if skew > MAX_CLOCK_SKEW_SECONDS {
        errors.push(ConfigError::new(
            format!("{at}.clock_skew_seconds"),
            format!("{skew} is out of range; expected 0 to {MAX_CLOCK_SKEW_SECONDS}"),
        ));
    }
    if doc.max_token_age_seconds == Some(0) {
        errors.push(ConfigError::new(
            format!("{at}.max_token_age_seconds"),
            "must be at least 1",
        ));
    }
    let max_token_bytes = doc
        .max_token_bytes
        .unwrap_or(policy::DEFAULT_MAX_TOKEN_BYTES);
    if !(TOKEN_BYTES_RANGE.0..=TOKEN_BYTES_RANGE.1).contains(&max_token_bytes) {
        errors.push(ConfigError::new(
            format!("{at}.max_token_bytes"),
            format!(
                "{max_token_bytes} is out of range; expected {} to {}",
                TOKEN_BYTES_RANGE.0, TOKEN_BYTES_RANGE.1
            ),
        ));
    }
    for (i, c) in doc.required_claims.iter().enumerate() {
        if c.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.required_claims[{i}]"),
                "must not be empty",
            ));
        }
    }
    let sources = match &doc.sources {
        None => default_sources(),
        Some(list) if list.is_empty() => {
            errors.push(ConfigError::new(
                format!("{at}.sources"),
                "list at least one source, or leave it out for `Authorization: Bearer`",
            ));
            vec![]
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Source::compile(s, &format!("{at}.sources[{i}]"), errors))
            .collect(),
    };
    let mut forward = Vec::new();
    for (claim, header) in &doc.forward_claims {
        let path = format!("{at}.forward_claims.{claim}");
        let lower = header.to_ascii_lowercase();
        if !valid_header_name(&lower) {
            errors.push(ConfigError::new(
                path,
                format!("`{header}` is not a valid header name"),
            ));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.push(ConfigError::new(path, format!("`{header}` is reserved; forward claims into a header of your own, such as `x-user-id`")));
        } else if forward.iter().any(|(_, h)| *h == lower) {
            errors.push(ConfigError::new(
                path,
                format!("header `{header}` already receives another claim"),
            ));
        } else {
            forward.push((claim.clone(), lower));
        }
    }
    let scope_claims: Vec<String> = match &doc.scope_claims {
        None => DEFAULT_SCOPE_CLAIMS.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            if list.is_empty() || list.iter().any(String::is_empty) {
                errors.push(ConfigError::new(
                    format!("{at}.scope_claims"),
                    "list at least one non-empty claim name",
                ));
            }
            list.clone()
        }
    };
    if errors.len() > start {
        return None;
    }
    Some(Provider {
        scope_claims,
        name: name.to_string(),
        algorithms,
        keys: keys?,
        rules: ClaimRules {
            issuer: doc.issuer.clone(),
            audiences: doc.audiences.iter().cloned().collect::<HashSet<_>>(),
            skew,
            max_age: doc.max_token_age_seconds,
            require_exp: doc.require_expiration.unwrap_or(true),
            required_claims: doc.required_claims.clone(),
        },
        sources,
        forward,
        forward_token: doc.forward_token.unwrap_or(false),
        max_token_bytes,
    })
}

impl Engine {
    /// Parses and compiles a policy. Every problem found is returned, each naming its JSON path.
    pub fn compile(bytes: &[u8]) -> Result<Engine, Vec<ConfigError>> {
        let doc = policy::parse(bytes).map_err(|e| vec![e])?;
        Engine::from_doc(&doc)
    }

    pub fn from_doc(doc: &PolicyDoc) -> Result<Engine, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let realm = doc
            .realm
            .clone()
            .unwrap_or_else(|| policy::DEFAULT_REALM.to_string());
        if realm.is_empty()
            || realm
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
        {
            errors.push(ConfigError::new(
                "realm",
                "must be non-empty printable ascii without `\"` or `\\`",
            ));
        }
        let mut providers = Vec::new();
        let mut ids = BTreeMap::new();
        for (name, p) in &doc.providers {
            ids.insert(name.clone(), ids.len());
            if let Some(p) = compile_provider(name, p, &mut errors) {
                providers.push(p);
            }
        }
        let api_keys = doc.api_keys.as_ref().and_then(|d| {
            let keys = ApiKeys::compile(d, &mut errors)?;
            let mut sources = vec![Source::Header { name: keys.header.clone(), prefix: String::new() }];
            if let Some(q) = &keys.query {
                if q.is_empty() || !q.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                    errors.push(ConfigError::new("api_keys.query", format!("`{q}` is not a valid query parameter name")));
                }
                sources.push(Source::Query(q.clone()));
            }
            // A header (whatever its prefix) or parameter read both as a token and as an API key
            // would make every request carry "two credentials".
            let place = |s: &Source| match s {
                Source::Header { name, .. } => format!("header `{name}`"),
                Source::Query(q) => format!("query parameter `{q}`"),
                Source::Cookie(c) => format!("cookie `{c}`"),
            };
            for p in &providers {
                for ks in &sources {
                    if p.sources.iter().any(|ps| place(ps) == place(ks)) {
                        errors.push(ConfigError::new(
                            "api_keys",
                            format!("provider `{}` reads tokens from the same {} as API keys; use distinct places", p.name, place(ks)),
                        ));
                    }
                }
            }
            Some(ApiKeyConfig { keys, sources })
        });
        let identity_header = doc
            .identity_header
            .clone()
            .unwrap_or_else(|| DEFAULT_IDENTITY_HEADER.into())
            .to_ascii_lowercase();
        if !valid_header_name(&identity_header)
            || RESERVED_HEADERS.contains(&identity_header.as_str())
        {
            errors.push(ConfigError::new(
                "identity_header",
                format!("`{identity_header}` is not a header Tollgate may write"),
            ));
        }
        if providers
            .iter()
            .any(|p| p.forward.iter().any(|(_, h)| *h == identity_header))
        {
            errors.push(ConfigError::new(
                "identity_header",
                format!("`{identity_header}` also receives a forwarded claim"),
            ));
        }
        let allow_unknown = match doc.default.as_ref().map(|d| d.action.as_str()) {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => {
                errors.push(ConfigError::new(
                    "default.action",
                    format!("`{other}` is not an action; expected one of [`deny`, `allow`]"),
                ));
                false
            }
        };
        let mut limits = Vec::new();
        let mut limit_ids = BTreeMap::new();
        for (name, l) in &doc.rate_limits {
            limit_ids.insert(name.clone(), (limit_ids.len(), l.burst));
            if let Some(l) = Limit::compile(name, l, &mut errors) {
                limits.push(l);
            }
        }
        let limit_options = LimitOptions::compile(doc.rate_limit_options.as_ref(), &mut errors);
        let payload_options = PayloadOptions::compile(doc.payload_options.as_ref(), &mut errors);
        for name in doc.schemas.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                errors.push(ConfigError::new(
                    format!("schemas.{name}"),
                    "schema names may hold only letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        let compiler = crate::payload::Compiler {
            schemas: &doc.schemas,
            options: &payload_options,
        };
        let routes = RouteTable::compile(
            &doc.routes,
            &ids,
            &limit_ids,
            &compiler,
            doc.api_keys.is_some(),
            &mut errors,
        );
        let mode = match doc.mode.as_deref() {
            None => Mode::Enforce,
            Some(m) => Mode::parse(m).unwrap_or_else(|| {
                errors.push(ConfigError::new(
                    "mode",
                    format!("`{m}` is not a mode; expected one of [`enforce`, `dry-run`]"),
                ));
                Mode::Enforce
            }),
        };
        let dry_run_header = doc.dry_run_header.as_ref().map(|h| h.to_ascii_lowercase());
        if let Some(h) = &dry_run_header {
            if !valid_header_name(h)
                || RESERVED_HEADERS.contains(&h.as_str())
                || *h == identity_header
                || providers
                    .iter()
                    .any(|p| p.forward.iter().any(|(_, f)| f == h))
            {
                errors.push(ConfigError::new(
                    "dry_run_header",
                    format!("`{h}` is not a header Tollgate may write"),
                ));
            }
        }
        let override_headers = headers::OverrideAction::compile(doc.requests.as_ref(), &mut errors);
        let audit = AuditOptions::compile(doc.audit.as_ref(), &mut errors);
        let responses = ResponsePolicy::compile(doc.responses.as_ref(), &mut errors);
        let ip_access = doc
            .ip_access
            .as_ref()
            .map(|d| IpList::compile(d, "ip_access", &mut errors));
        let brute_force = doc
            .brute_force
            .as_ref()
            .and_then(|d| BruteForce::compile(d, "brute_force", &mut errors));
        let token_cache_entries = doc
            .token_cache
            .as_ref()
            .map_or(policy::DEFAULT_TOKEN_CACHE_ENTRIES, |c| c.max_entries);
        if token_cache_entries > MAX_TOKEN_CACHE_ENTRIES {
            errors.push(ConfigError::new(
                "token_cache.max_entries",
                format!("{token_cache_entries} is out of range; expected 0 to {MAX_TOKEN_CACHE_ENTRIES}"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut forwarded_headers: Vec<String> = providers
            .iter()
            .flat_map(|p| p.forward.iter().map(|(_, h)| h.clone()))
            .collect();
        forwarded_headers.push(identity_header.clone());
        forwarded_headers.extend(dry_run_header.iter().cloned());
        if override_headers == headers::OverrideAction::Strip {
            forwarded_headers.extend(headers::OVERRIDE_HEADERS.iter().map(|h| h.to_string()));
        }
        // An API key is a secret: it never reaches an upstream, whatever the route.
        if let Some(k) = &api_keys {
            forwarded_headers.push(k.header.clone());
        }
        forwarded_headers.sort();
        forwarded_headers.dedup();
        let uses_peer = limit_options.trusted_hops == 0
            && (ip_access.is_some()
                || brute_force.is_some()
                || routes.any_ip_access()
                || limits
                    .iter()
                    .any(|l| l.key.contains(&crate::ratelimit::KeyPart::ClientIp)));
        Ok(Engine {
            realm,
            providers,
            routes,
            token_cache_entries,
            forwarded_headers,
            identity_header,
            api_keys,
            allow_unknown,
            limits,
            limit_options,
            payload_options,
            mode,
            dry_run_header,
            audit,
            responses,
            uses_peer,
            override_headers,
            ip_access,
            brute_force,
        })
    }

    /// The client address (see `rate_limit_options.trusted_hops`).
    pub fn client_ip<'a>(&self, req: &Request<'a>) -> Option<&'a str> {
        let xff = req.header_values("x-forwarded-for").last();
        request::client_ip(req.peer, xff, self.limit_options.trusted_hops)
    }

    pub fn new_state(&self) -> VmState {
        VmState {
            cache: TokenCache::new(self.token_cache_entries),
            remote: self.providers.iter().map(|_| None).collect(),
            limit_secret: Vec::new(),
        }
    }

    /// Providers whose keys are fetched: `(index, provider, spec)`.
    pub fn remote_providers(&self) -> impl Iterator<Item = (usize, &Provider, &RemoteSpec)> {
        self.providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.keys {
                ProviderKeys::Remote(spec) => Some((i, p, spec)),
                ProviderKeys::Inline(_) => None,
            })
    }

    /// Decides one request at `now` (seconds) with a throwaway store: for tests of routes that
    /// have no rate limits.
    #[cfg(test)]
    pub fn decide(&self, req: &Request<'_>, now: u64, state: &mut VmState) -> Outcome {
        self.decide_at(
            req,
            now.saturating_mul(1000),
            state,
            &crate::store::MemoryStore::default(),
        )
    }

    /// Decides one request at `now_ms` (milliseconds since the epoch, host clock), with `store`
    /// holding the shared rate-limit buckets.
    pub fn decide_at(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
    ) -> Outcome {
        let mut trace = Trace {
            mode: self.mode,
            principal: None,
        };
        let mut outcome = self.evaluate(req, now_ms, state, store, &mut trace);
        match &mut outcome.decision {
            Decision::Allow(allow) => allow.mode = trace.mode,
            Decision::Deny(denial) if trace.mode == Mode::DryRun => {
                // Everything was evaluated (and counted: buckets, failures); only the refusal is
                // not carried out. Headers clients could forge are still removed.
                let set_headers = self
                    .dry_run_header
                    .iter()
                    .map(|h| (h.clone(), denial.code.as_str().to_string()))
                    .collect();
                outcome.decision = Decision::Allow(Allow {
                    route: denial.route.take().unwrap_or_default(),
                    principal: trace.principal.take(),
                    remove_headers: self.removed_headers(req),
                    set_headers,
                    would_deny: Some(denial.code),
                    mode: Mode::DryRun,
                    ..Allow::default()
                });
            }
            Decision::Deny(denial) => denial.principal = trace.principal.take(),
        }
        outcome
    }

    fn evaluate(
        &self,
        req: &Request<'_>,
        now_ms: u64,
        state: &mut VmState,
        store: &dyn SharedStore,
        trace: &mut Trace,
    ) -> Outcome {
        let now = now_ms / 1000;
        let mut effects = Effects::default();
        let Some(path) = path::normalize(req.path) else {
            return self.deny(DenialCode::PathInvalid, None, effects);
        };
        let client_ip = self.client_ip(req);
        if self
            .ip_access
            .as_ref()
            .is_some_and(|l| !l.permits(client_ip))
        {
            return self.deny(DenialCode::IpDenied, None, effects);
        }
        let Ok(host) = req.host() else {
            return self.deny(DenialCode::RequestAmbiguous, None, effects);
        };
        if self.override_headers == headers::OverrideAction::Refuse
            && req.headers.iter().any(|(name, _)| {
                headers::OVERRIDE_HEADERS
                    .iter()
                    .any(|o| headers::folds_to(name, o))
            })
        {
            return self.deny(DenialCode::RequestAmbiguous, None, effects);
        }
        let Some(Matched { route, params }) = self.routes.find(&host, req.method, &path) else {
            if self.allow_unknown {
                let allow = Allow {
                    remove_headers: self.removed_headers(req),
                    set_headers: self
                        .path_rewrite(req.path, &path, None)
                        .into_iter()
                        .collect(),
                    unknown_route: true,
                    ..Allow::default()
                };
                return Outcome {
                    decision: Decision::Allow(allow),
                    effects,
                };
            }
            return self.deny(DenialCode::RouteNotFound, None, effects);
        };
        // Only a refusal needs its own copy of the name.
        let route_name = || Some(route.name.clone());
        trace.mode = route.mode.unwrap_or(self.mode);
        if route
            .ip_access
            .as_ref()
            .is_some_and(|l| !l.permits(client_ip))
        {
            return self.deny(DenialCode::IpDenied, route_name(), effects);
        }
        if let Some(l) = route.lifecycle.as_ref().filter(|l| l.is_retired(now)) {
            let mut d = crate::problem::denial(&self.realm, DenialCode::RouteRetired, route_name());
            if let Some(link) = &l.link {
                d.headers.push(("link", link.clone()));
            }
            return Outcome {
                decision: Decision::Deny(d),
                effects,
            };
        }
        // Brute-force subject: the client's canonical address, IPv6 by its /64 (one host usually
        // owns the whole prefix and could otherwise change address on every attempt). An address
        // that cannot be parsed is not tracked.
        let subject = match (&self.brute_force, client_ip) {
            (Some(_), Some(ip)) if route.access != Access::Public => {
                crate::abuse::cidr::parse_client_ip(ip).map(|addr| match addr {
                    std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
                    std::net::IpAddr::V6(v6) => {
                        let [a, b, c, d, ..] = v6.segments();
                        format!("ip6:{a:x}:{b:x}:{c:x}:{d:x}::/64")
                    }
                })
            }
            _ => None,
        };
        if let (Some(bf), Some(subject)) = (&self.brute_force, &subject) {
            // A store failure does not block: the limit is a brake, not the lock.
            if let Ok(Some(retry)) = bf.blocked(store, &state.limit_secret, subject, now_ms) {
                let mut d =
                    crate::problem::denial(&self.realm, DenialCode::ClientBlocked, route_name());
                d.headers.push(("retry-after", retry.to_string()));
                return Outcome {
                    decision: Decision::Deny(d),
                    effects,
                };
            }
        }
        let mut remove_headers = self.removed_headers(req);
        let mut set_headers = Vec::new();
        let mut strip = None;
        let principal = if route.access == Access::Public {
            None
        } else {
            let who = match authn::authenticate(self, &route.access, req, now, state, &mut effects)
            {
                Ok(who) => who,
                Err(code) => {
                    if let (Some(bf), Some(subject), true) =
                        (&self.brute_force, &subject, code.is_failed_attempt())
                    {
                        if let Ok(brute::Failure::Blocked { .. }) =
                            bf.record_failure(store, &state.limit_secret, subject, now_ms)
                        {
                            effects.block_started = true;
                        }
                    }
                    return self.deny(code, route_name(), effects);
                }
            };
            // For the audit line of a later refusal (scope, owner, limit) and of a dry run.
            trace.principal = Some(who.principal.id.clone());
            match route.rules.check(&who.principal, req, &params) {
                Ok(()) => {}
                Err(authz::Refusal::MissingScopes(scopes)) => {
                    let d = crate::problem::insufficient_scope(
                        &self.realm,
                        route_name(),
                        &scopes,
                        who.principal.bearer,
                    );
                    return Outcome {
                        decision: Decision::Deny(d),
                        effects,
                    };
                }
                Err(authz::Refusal::Forbidden) => {
                    return self.deny(DenialCode::Forbidden, route_name(), effects)
                }
            }
            remove_headers.extend(who.remove_headers);
            set_headers.extend(who.principal.forward.iter().cloned());
            set_headers.push((self.identity_header.clone(), who.principal.id.clone()));
            strip = who.strip_query;
            if let Some(name) = &who.strip_cookie {
                let joined: Vec<&str> = req.header_values("cookie").collect();
                match strip_cookie(&joined.join("; "), name) {
                    Some(rest) => set_headers.push(("cookie".into(), rest)),
                    None => remove_headers.push("cookie".into()),
                }
            }
            Some(who.principal)
        };
        let response_headers = match limits::check(
            self,
            route,
            principal.as_deref(),
            req,
            now_ms,
            state,
            store,
            &mut effects,
        ) {
            Ok(headers) => headers,
            Err(denial) => {
                return Outcome {
                    decision: Decision::Deny(denial),
                    effects,
                }
            }
        };
        let mut response_headers = response_headers;
        if let Some(l) = &route.lifecycle {
            response_headers.extend(l.headers.iter().cloned());
            effects.deprecated = l.deprecated.is_some_and(|d| now >= d);
        }
        let mut body_check = None;
        if let Some(index) = route.request {
            let Some(rules) = self.routes.request_rules.get(index) else {
                return self.deny(DenialCode::InternalError, route_name(), effects);
            };
            let header = |name: &str| {
                req.header_values(name)
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            if let Err(f) = rules.check_head(&self.payload_options, &params, req.path, &header) {
                return Outcome {
                    decision: Decision::Deny(self.payload_denial(f, route_name())),
                    effects,
                };
            }
            if rules.has_body() {
                body_check = Some(index);
            }
        }
        set_headers.extend(self.path_rewrite(req.path, &path, strip.as_deref()));
        if route.response.is_some() {
            // Tollgate judges JSON, not gzip: the upstream is asked for an uncompressed response
            // (one it compresses anyway is not checked: `on_unchecked`). A compressor filter
            // after Tollgate can still compress for the client.
            remove_headers.push("accept-encoding".into());
        }
        let allow = Allow {
            response_check: route.response,
            body_check,
            route: route.name.clone(),
            principal: trace.principal.take(),
            remove_headers,
            set_headers,
            unknown_route: false,
            response_headers,
            authenticated: route.access != Access::Public,
            ..Allow::default()
        };
        Outcome {
            decision: Decision::Allow(allow),
            effects,
        }
    }

    /// Headers removed from a request before the upstream: every header Tollgate writes and
    /// every override header it strips, plus the spellings of those the request actually carries
    /// that an upstream framework would read as the same header (`x_user_id`).
    fn removed_headers(&self, req: &Request<'_>) -> Vec<String> {
        let mut out = self.forwarded_headers.clone();
        for (name, _) in req.headers {
            if headers::is_variant_of(name, &self.forwarded_headers) && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// `:path` to send upstream when it must change: the normalised path (so the upstream serves
    /// what was authorised) and the query without a stripped credential.
    fn path_rewrite(
        &self,
        raw: &str,
        normalized: &str,
        strip: Option<&str>,
    ) -> Option<(String, String)> {
        let (raw_path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        if strip.is_none() && raw_path == normalized {
            // The common case: nothing to rewrite, nothing to allocate.
            return None;
        }
        let with_query = match query {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.to_string(),
        };
        let new = match strip {
            Some(name) => strip_query(&with_query, name),
            None => with_query,
        };
        (new != raw).then(|| (":path".to_string(), new))
    }

    /// Checks a complete request body for the rules named by `Allow::body_check`.
    pub fn check_body(&self, rules: usize, route: &str, body: &[u8]) -> Result<(), Denial> {
        let Some(r) = self.routes.request_rules.get(rules) else {
            return Err(crate::problem::denial(
                &self.realm,
                DenialCode::InternalError,
                Some(route.to_string()),
            ));
        };
        r.check_body(&self.payload_options, body)
            .map_err(|f| self.payload_denial(f, Some(route.to_string())))
    }

    /// Whether a response with `status` is checked by the rules named in `Allow::response_check`,
    /// and the largest body that is buffered for it.
    pub fn response_applies(&self, rules: usize, status: u16) -> Option<usize> {
        let r = self.routes.response_rules.get(rules)?;
        r.applies(status).then_some(r.max_body_bytes)
    }

    /// Judges a buffered upstream response.
    pub fn check_response(
        &self,
        rules: usize,
        status: u16,
        body: &[u8],
    ) -> crate::payload::response::Verdict {
        match self.routes.response_rules.get(rules) {
            Some(r) => r.check(&self.payload_options, status, body),
            None => crate::payload::response::Verdict::Pass,
        }
    }

    /// The verdict on a response the rules named in `Allow::response_check` could not check.
    pub fn unchecked_response(
        &self,
        rules: usize,
        why: crate::payload::response::Unchecked,
    ) -> crate::payload::response::Verdict {
        match self.routes.response_rules.get(rules) {
            Some(r) => r.unchecked(why),
            None => crate::payload::response::Verdict::Pass,
        }
    }

    /// Largest body the rules named by `Allow::body_check` accept (the host stops buffering there).
    pub fn max_body_bytes(&self, rules: usize) -> usize {
        self.routes
            .request_rules
            .get(rules)
            .map_or(0, |r| r.max_body_bytes)
    }

    fn payload_denial(&self, failure: Failure, route: Option<String>) -> Denial {
        match failure {
            Failure::UnsupportedMediaType => {
                crate::problem::denial(&self.realm, DenialCode::UnsupportedMediaType, route)
            }
            Failure::TooLarge => {
                crate::problem::denial(&self.realm, DenialCode::PayloadTooLarge, route)
            }
            Failure::Malformed => {
                crate::problem::denial(&self.realm, DenialCode::BodyMalformed, route)
            }
            Failure::Invalid(v) => {
                crate::problem::invalid(&self.realm, route, self.payload_options.invalid_status, v)
            }
        }
    }

    fn deny(&self, code: DenialCode, route: Option<String>, effects: Effects) -> Outcome {
        Outcome {
            decision: Decision::Deny(crate::problem::denial(&self.realm, code, route)),
            effects,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_authz;

#[cfg(test)]
mod tests_limits;

#[cfg(test)]
mod tests_operations;

#[cfg(test)]
mod tests_bypass;
