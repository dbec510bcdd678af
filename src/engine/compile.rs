//! Compiling a policy document into an [`Engine`]: providers, routes, keys, limits and options,
//! with every configuration error named by its JSON path. Runs once per configuration.

use super::audit::AuditOptions;
use super::hardening::ResponsePolicy;
use super::{headers, ApiKeyConfig, ApiKeys, Engine, Mode, Provider, ProviderKeys, RouteTable};
use crate::abuse::brute::BruteForce;
use crate::abuse::cidr::IpList;
use crate::jwt::extract::{default_sources, Source};
use crate::jwt::jwks::KeySet;
use crate::jwt::remote::RemoteSpec;
use crate::jwt::verify::ClaimRules;
use crate::jwt::Alg;
use crate::payload::Options as PayloadOptions;
use crate::policy::{self, ConfigError, PolicyDoc, ProviderDoc};
use crate::ratelimit::service::Service;
use crate::ratelimit::{Limit, Options as LimitOptions};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

/// Largest clock skew a policy may allow.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
/// Bounds for `max_token_bytes`.
pub const TOKEN_BYTES_RANGE: (usize, usize) = (256, 64 * 1024);
pub const MAX_TOKEN_CACHE_ENTRIES: usize = 100_000;

/// Default upstream header for the authenticated identity.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-tollgate-principal";
/// Upstream header naming the verified client certificate's workload (`mtls:<id>`).
pub const DEFAULT_PEER_HEADER: &str = "x-tollgate-peer";
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

/// One request to the rate-limit service carries one `hits_addend`: the `global` limits of a
/// route must cost the same.
fn global_costs_agree(routes: &RouteTable, limits: &[Limit], errors: &mut Vec<ConfigError>) {
    for (i, route) in routes.iter().enumerate() {
        let mut costs = route
            .limits
            .iter()
            .filter(|(l, _)| limits.get(*l).is_some_and(|l| l.backend.global()))
            .map(|(_, cost)| *cost);
        if let Some(first) = costs.next() {
            if costs.any(|c| c != first) {
                errors.push(ConfigError::new(
                    format!("routes[{i}].limits"),
                    "the `global` limits of one route must have the same cost (the rate-limit service takes one `hits_addend` per request)",
                ));
            }
        }
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
        let peer_header = doc
            .peer_header
            .clone()
            .unwrap_or_else(|| DEFAULT_PEER_HEADER.into())
            .to_ascii_lowercase();
        if !valid_header_name(&peer_header)
            || RESERVED_HEADERS.contains(&peer_header.as_str())
            || peer_header == identity_header
            || providers
                .iter()
                .any(|p| p.forward.iter().any(|(_, h)| *h == peer_header))
        {
            errors.push(ConfigError::new(
                "peer_header",
                format!("`{peer_header}` is not a header Tollgate may write (nor the identity header or a forwarded claim's)"),
            ));
        }
        let forwarded_from = doc.forwarded_client_cert.as_ref().map(|f| {
            super::peer::PeerRules::compile(&f.from, "forwarded_client_cert.from", &mut errors)
        });
        let tls = doc
            .tls
            .as_ref()
            .map(|d| super::peer::TlsRules::compile(d, "tls", &mut errors))
            .unwrap_or_default();
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
        let rate_limit_service = doc
            .rate_limit_service
            .as_ref()
            .and_then(|d| Service::compile(d, &mut errors));
        if doc.rate_limit_service.is_none() {
            if doc.brute_force.as_ref().is_some_and(|b| b.global) {
                errors.push(ConfigError::new(
                    "brute_force.global",
                    "needs `rate_limit_service` ({\"cluster\": ..., \"domain\": ...})",
                ));
            }
            for l in limits.iter().filter(|l| l.backend.global()) {
                errors.push(ConfigError::new(
                    format!("rate_limits.{}.backend", l.name),
                    format!(
                        "`{}` needs `rate_limit_service` ({{\"cluster\": ..., \"domain\": ...}})",
                        l.backend.as_str()
                    ),
                ));
            }
        }
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
        let mut signers = Vec::new();
        let mut signer_ids = BTreeMap::new();
        for (name, s) in &doc.signers {
            signer_ids.insert(name.clone(), signer_ids.len());
            if let Some(s) = super::signers::Signer::compile(name, s, &mut errors) {
                signers.push(s);
            }
        }
        let routes = RouteTable::compile(
            &doc.routes,
            &ids,
            &limit_ids,
            &compiler,
            doc.api_keys.is_some(),
            &signer_ids,
            tls,
            &mut errors,
        );
        if routes.len() == doc.routes.len() {
            global_costs_agree(&routes, &limits, &mut errors);
        }
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
                || *h == peer_header
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
        let revocations = doc
            .revocations
            .as_ref()
            .map(|d| crate::abuse::revoke::Revocations::compile(d, &mut errors));
        // A route the policy closes must exist (a remote list may name any: routes come and go).
        for name in revocations.iter().flat_map(|r| r.inline.routes()) {
            if !routes.iter().any(|r| r.name == name) {
                errors.push(ConfigError::new(
                    "revocations.revoked.routes",
                    format!("no route is named `{name}`"),
                ));
            }
        }
        let detection = doc.detection.as_ref().and_then(|d| {
            let routes: Vec<_> = doc.routes.iter().map(|r| r.detection.as_ref()).collect();
            crate::abuse::detect::Detection::compile(d, "detection", &routes, &mut errors)
        });
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
        let host_signatures = match doc.signature_verification.as_deref() {
            None | Some("auto") => true,
            Some("builtin") => false,
            Some(other) => {
                errors.push(ConfigError::new(
                    "signature_verification",
                    format!("`{other}` is not a choice; expected one of [`auto`, `builtin`]"),
                ));
                false
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut forwarded_headers: Vec<String> = providers
            .iter()
            .flat_map(|p| p.forward.iter().map(|(_, h)| h.clone()))
            .collect();
        forwarded_headers.push(identity_header.clone());
        forwarded_headers.push(peer_header.clone());
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
                || revocations.is_some()
                || detection.is_some()
                || routes.any_ip_access()
                || limits
                    .iter()
                    .any(|l| l.key.contains(&crate::ratelimit::KeyPart::ClientIp)));
        let uses_connection = routes.any_connection_rules() || forwarded_from.is_some();
        Ok(Engine {
            realm,
            signers,
            replay: crate::abuse::replay::Replay::new(
                super::signers::REPLAY_SLOTS,
                super::signers::REPLAY_ATTEMPTS,
            ),
            uses_connection,
            peer_header,
            forwarded_from,
            providers,
            routes,
            token_cache_entries,
            host_signatures,
            forwarded_headers,
            identity_header,
            api_keys,
            allow_unknown,
            limits,
            limit_options,
            rate_limit_service,
            payload_options,
            mode,
            dry_run_header,
            audit,
            responses,
            uses_peer,
            override_headers,
            ip_access,
            brute_force,
            revocations,
            detection,
        })
    }
}
