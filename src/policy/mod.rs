//! The policy document as users write it (wire structs) and its parsing. `engine::Engine::compile`
//! turns a parsed document into runtime structures; this module knows nothing about requests.

mod detection;
mod error;
mod hints;
pub mod pbstruct;
mod revocations;
pub use detection::{
    AutomationDoc, CadenceDoc, DetectionDoc, MissingHeadersDoc, RefusalsDoc, RouteDetectionDoc,
    SpikeDoc, ThrottleDoc,
};
pub use error::ConfigError;
pub use revocations::{RevocationListDoc, RevocationsDoc};

use serde::Deserialize;
use std::collections::BTreeMap;

/// Default allowed clock skew for `exp`, `nbf` and `iat`, as Envoy's `jwt_authn`.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// Default maximum size of a token, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default number of verified tokens remembered per VM.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 1024;
pub const DEFAULT_REALM: &str = "tollgate";

/// The whole policy document.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// The JSON Schema editors check the policy against (`tollgate schema` prints it); ignored
    /// by the engine.
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// `realm` in `WWW-Authenticate` challenges.
    #[serde(default)]
    pub realm: Option<String>,
    /// JWT providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderDoc>,
    /// The API's routes. A request that matches none is refused (`route_not_found`).
    pub routes: Vec<RouteDoc>,
    #[serde(default)]
    pub token_cache: Option<TokenCacheDoc>,
    /// `auto` (default): RSA PKCS#1 v1.5 and ECDSA token signatures are checked by the host's
    /// crypto where it has some (Envoy's BoringSSL), by Tollgate's own code elsewhere;
    /// `builtin`: always by Tollgate's own code.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::signature_verification")
    )]
    pub signature_verification: Option<String>,
    /// Signers of HTTP message signatures (RFC 9421) by name, that routes accept in `signers`.
    #[serde(default)]
    pub signers: BTreeMap<String, SignerDoc>,
    /// API keys, stored as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Option<ApiKeysDoc>,
    /// Upstream header that receives the authenticated identity (`jwt:<provider>:<sub>` or
    /// `api_key:<id>`); any incoming copy is removed. Default `x-tollgate-principal`.
    #[serde(default)]
    pub identity_header: Option<String>,
    /// What happens to requests that match no route.
    #[serde(default)]
    pub default: Option<DefaultDoc>,
    /// Named token-bucket limits that routes refer to.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, LimitDoc>,
    #[serde(default)]
    pub rate_limit_options: Option<RateLimitOptionsDoc>,
    /// The rate-limit service (Envoy's RLS v3 protocol) that counts `global` limits.
    #[serde(default)]
    pub rate_limit_service: Option<RateLimitServiceDoc>,
    /// Named JSON Schemas, referenced as `{"$ref": "#/$defs/<name>"}`.
    #[serde(default)]
    pub schemas: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub payload_options: Option<PayloadOptionsDoc>,
    /// `enforce` (default) or `dry-run`: evaluate everything, log and count what would be
    /// refused, let it through. A route's own `mode` overrides this.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::mode")
    )]
    pub mode: Option<String>,
    /// In `dry-run`, upstream request header that receives the code a request would have been
    /// refused with (off unless set).
    #[serde(default)]
    pub dry_run_header: Option<String>,
    #[serde(default)]
    pub audit: Option<AuditDoc>,
    /// Security headers added to responses, upstream headers removed, 5xx masking.
    #[serde(default)]
    pub responses: Option<ResponsesDoc>,
    /// Client addresses allowed or refused on every route (checked before the route's own list).
    #[serde(default)]
    pub ip_access: Option<IpAccessDoc>,
    /// Temporary blocks after repeated authentication failures from one client.
    #[serde(default)]
    pub brute_force: Option<BruteForceDoc>,
    /// Behaviour baselines per caller: detectors and what they do when they trip.
    #[serde(default)]
    pub detection: Option<DetectionDoc>,
    /// How requests that could change after they were judged are handled.
    #[serde(default)]
    pub requests: Option<RequestsDoc>,
    /// Transport requirements of every route without its own `tls`.
    #[serde(default)]
    pub tls: Option<TlsDoc>,
    /// Trust `x-forwarded-client-cert` from these hops, and only from them: a front proxy that
    /// terminates the caller's mutual TLS and connects with its own certificate.
    #[serde(default)]
    pub forwarded_client_cert: Option<ForwardedCertDoc>,
    /// Upstream header that receives the verified client certificate's workload principal
    /// (`mtls:<id>`); any incoming copy is removed. Default `x-tollgate-peer`.
    #[serde(default)]
    pub peer_header: Option<String>,
    /// Token ids, subjects, API keys, principals, addresses and routes withdrawn during an
    /// incident, inline and from a remote list.
    #[serde(default)]
    pub revocations: Option<RevocationsDoc>,
}

/// Who may sign requests (RFC 9421 HTTP Message Signatures) and what a signature must cover.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignerDoc {
    /// Verification keys as JWK objects (`{"keys": [...]}`), each with the `kid` a signature
    /// names in its `keyid`. Exactly one of `keys` and `remote_keys`.
    #[serde(default)]
    pub keys: Option<JwksDoc>,
    /// The same, fetched from a URI through an Envoy cluster and refreshed (as `remote_jwks`).
    #[serde(default)]
    pub remote_keys: Option<RemoteJwksDoc>,
    /// Accepted algorithms: `hmac-sha256`, `ed25519`, `ecdsa-p256-sha256`, `rsa-pss-sha512`.
    pub algorithms: Vec<String>,
    /// Components every signature must cover (default `@method`, `@target-uri`, `@authority`);
    /// `content-digest` is required besides on requests with a body.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// Oldest `created` accepted, in seconds (default 300; 1 to 86400).
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// Allowed clock difference for `created` and `expires` (default 60).
    #[serde(default)]
    pub clock_skew_seconds: Option<u64>,
    /// Require a `nonce` and refuse one seen within the signature's window (default true).
    #[serde(default)]
    pub require_nonce: Option<bool>,
    /// Required `tag` parameter (an application's signature profile), if any.
    #[serde(default)]
    pub tag: Option<String>,
}

/// Which hops may say who their client was in `x-forwarded-client-cert`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ForwardedCertDoc {
    /// The hops, by their own verified client certificate (as `peers` names workloads).
    pub from: PeersDoc,
}

/// What the downstream connection must be: TLS, a minimum version, a client certificate.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TlsDoc {
    /// Refuse plaintext connections (default false; `min_version` and `client_certificate`
    /// imply it).
    #[serde(default)]
    pub required: bool,
    /// `"1.2"` or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Require a client certificate that Envoy validated (mutual TLS).
    #[serde(default)]
    pub client_certificate: bool,
}

/// The workloads a route accepts, by their verified client certificate. Every field given must
/// match (any of its values), as the fields of an Istio `source` do.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PeersDoc {
    /// URI SAN patterns: `spiffe://prod/ns/web/sa/frontend`, Istio's form without the scheme
    /// (`prod/ns/web/sa/frontend`), `*`, `prefix*` or `*suffix`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// SPIFFE namespaces (`/ns/<namespace>/`), with the same patterns.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// SPIFFE trust domains, exact.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// DNS SAN patterns: `billing.internal`, `*.internal`.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Certificate subjects as Envoy writes them (RFC 2253: `CN=billing,O=Example`), exact.
    #[serde(default)]
    pub subjects: Vec<String>,
}

/// Request hardening that applies to every route.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestsDoc {
    /// `X-HTTP-Method-Override`, `X-Original-URL` and the like: `strip` (default), `refuse` or
    /// `allow`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::override_headers")
    )]
    pub override_headers: Option<String>,
}

/// The audit log: one JSON line per decision through Envoy's log.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditDoc {
    /// Default true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Log level of audit lines: `trace`, `debug`, `info` (default), `warn`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::log_level")
    )]
    pub level: Option<String>,
    /// Fraction of allowed requests logged, 0.0 to 1.0 (default 1.0). Denials, and requests a
    /// dry run would have denied, are always logged.
    #[serde(default)]
    pub sample_allowed: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponsesDoc {
    /// Headers added to every response that lacks them, merged over the defaults; an empty value
    /// turns a default off.
    #[serde(default)]
    pub security_headers: BTreeMap<String, String>,
    /// Upstream response headers removed (default `server`, `x-powered-by`, `x-aspnet-version`,
    /// `x-aspnetmvc-version`); replaces the default list.
    #[serde(default)]
    pub remove_headers: Option<Vec<String>>,
    /// `Cache-Control: no-store` on authenticated responses that set no `Cache-Control` (default
    /// true).
    #[serde(default)]
    pub no_store_authenticated: Option<bool>,
    /// Replace the body of upstream 5xx responses with a generic problem (default false).
    #[serde(default)]
    pub mask_upstream_errors: bool,
}

/// Deprecation and retirement of a route (RFC 9745 `Deprecation`, RFC 8594 `Sunset`).
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LifecycleDoc {
    /// RFC 3339 UTC time the route is (or will be) deprecated from.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// RFC 3339 UTC time after which the route is retired (refused with 410).
    #[serde(default)]
    pub sunset: Option<String>,
    /// URI of the replacement, sent as `Link: <uri>; rel="successor-version"`.
    #[serde(default)]
    pub successor: Option<String>,
    /// Refuse now with 410.
    #[serde(default)]
    pub retired: bool,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PayloadOptionsDoc {
    /// Default body limit for routes with a body check (default 1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Deepest nesting of arrays/objects accepted in a body (default 32).
    #[serde(default)]
    pub max_depth: Option<usize>,
    /// Violations listed in a response (default 10).
    #[serde(default)]
    pub max_violations: Option<usize>,
    /// Status for a body that breaks its schema: 400 (default) or 422.
    #[serde(default)]
    pub invalid_status: Option<u16>,
    /// A body object with the same key twice: `refuse` (default; parsers disagree on which value
    /// wins) or `allow` (the last one is checked).
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::refuse_or_allow")
    )]
    pub duplicate_keys: Option<String>,
}

/// Checks on a route's request before it reaches the upstream.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestCheckDoc {
    /// JSON Schema for the body; the body must then be JSON (`application/json`, `*/*+json`).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Treat properties the schema does not name as errors (mass-assignment protection).
    #[serde(default)]
    pub reject_unknown_properties: bool,
    /// Schemas for path template parameters, by name.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Schemas for query parameters, by name.
    #[serde(default)]
    pub query: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub required_query: Vec<String>,
    /// Schemas for request headers, by (case-insensitive) name.
    #[serde(default)]
    pub headers: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub required_headers: Vec<String>,
}

/// A token bucket: `rate` tokens per `per`, holding at most `burst`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitDoc {
    pub rate: u64,
    /// `second`, `minute` or `hour`.
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::per")
    )]
    pub per: String,
    pub burst: u64,
    /// What one bucket is for; parts are joined.
    pub key: Vec<KeyPartDoc>,
    /// Fixed number of buckets keys hash into (the memory bound); default 16384.
    #[serde(default)]
    pub slots: Option<u32>,
    /// Count and log, never refuse.
    #[serde(default)]
    pub shadow: bool,
    /// When the compare-and-swap retries run out: `deny` (default) or `allow`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::deny_or_allow")
    )]
    pub on_contention: Option<String>,
    /// Where the limit is counted: `local` (default: this Envoy's shared data), `global` (the
    /// `rate_limit_service`), or `local+global` (the local bucket first, the service only for
    /// requests it lets through).
    #[serde(default)]
    pub backend: Option<String>,
    /// A `global` limit whose service does not answer in time or answers garbage: `deny` or
    /// `allow` (default: the service's `on_failure`).
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::deny_or_allow")
    )]
    pub on_service_failure: Option<String>,
}

/// Envoy's rate-limit service (RLS v3 gRPC, as served by envoyproxy/ratelimit and Limitador).
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceDoc {
    /// The Envoy cluster of the service (HTTP/2).
    pub cluster: String,
    /// The `domain` of every request to the service.
    pub domain: String,
    /// How long a request waits for the answer, in milliseconds (default 50).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// What a `global` limit does when the service fails: `deny` (default) or `allow`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::deny_or_allow")
    )]
    pub on_failure: Option<String>,
    /// Send each limit's rate as the descriptor's `limit` override, so the service needs no
    /// numbers of its own (default true).
    #[serde(default)]
    pub send_limits: Option<bool>,
    /// Headers of the service's answer (`response_headers_to_add`) passed on to the client.
    #[serde(default)]
    pub response_headers: Vec<String>,
}

/// `"identity"`, `"client_ip"`, `"route"`, `{"claim": ..}`, `{"header": ..}` or `{"constant": ..}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum KeyPartDoc {
    Named(String),
    Claim { claim: String },
    Header { header: String },
    Constant { constant: String },
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitOptionsDoc {
    /// Proxies in front of Envoy that append to `x-forwarded-for`; 0 uses the peer address.
    #[serde(default)]
    pub trusted_hops: Option<u32>,
    /// Add `RateLimit` / `RateLimit-Policy` to allowed responses (default true).
    #[serde(default)]
    pub response_headers: Option<bool>,
    /// Compare-and-swap attempts per bucket update (default 8).
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// A route's use of a limit: its name, or `{"limit": name, "cost": n}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum RouteLimitDoc {
    Name(String),
    WithCost { limit: String, cost: u64 },
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DefaultDoc {
    /// `deny` (default: 404 `route_not_found`) or `allow` (passed through, logged as unknown).
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::default_action")
    )]
    pub action: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeysDoc {
    /// Header carrying the key (default `x-api-key`).
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter carrying the key (off unless set).
    #[serde(default)]
    pub query: Option<String>,
    pub keys: Vec<ApiKeyDoc>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDoc {
    pub id: String,
    /// Hex SHA-256 of the key (either case).
    pub sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// RFC 3339 UTC time (`2026-01-31T00:00:00Z`) before which the key is refused.
    #[serde(default)]
    pub not_before: Option<String>,
    /// RFC 3339 UTC time from which the key is refused.
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub disabled: bool,
}

/// Requirements on scopes: every scope of `all`, and at least one of `any` when given.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ScopesDoc {
    #[serde(default)]
    pub all: Vec<String>,
    #[serde(default)]
    pub any: Vec<String>,
}

/// Claim conditions: every condition of `all`, and at least one of `any` when given.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimsDoc {
    #[serde(default)]
    pub all: Vec<ConditionDoc>,
    #[serde(default)]
    pub any: Vec<ConditionDoc>,
}

/// One condition on one claim; exactly one of `equals`, `one_of`, `contains`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ConditionDoc {
    pub claim: String,
    #[serde(default)]
    pub equals: Option<OperandDoc>,
    #[serde(default)]
    pub one_of: Option<Vec<String>>,
    #[serde(default)]
    pub contains: Option<OperandDoc>,
}

/// A literal string, or the value of a request header: `{"header": "x-tenant-id"}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum OperandDoc {
    Literal(String),
    Header { header: String },
}

/// Object-level check: path parameter `param` must equal claim `claim` (default `sub`), unless
/// the caller holds `unless_scope`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OwnerDoc {
    pub param: String,
    #[serde(default)]
    pub claim: Option<String>,
    #[serde(default)]
    pub unless_scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderDoc {
    /// Required `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one of them.
    pub audiences: Vec<String>,
    /// JWS algorithms this provider may use (`RS256`, `ES256`, ...). `none` is never accepted.
    pub algorithms: Vec<String>,
    /// Inline JWKS (RFC 7517): `{"keys": [...]}`.
    #[serde(default)]
    pub jwks: Option<JwksDoc>,
    /// JWKS fetched from a URI through an Envoy cluster.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwksDoc>,
    #[serde(default)]
    pub clock_skew_seconds: Option<u64>,
    /// Reject tokens whose `iat` is older than this (requires `iat`).
    #[serde(default)]
    pub max_token_age_seconds: Option<u64>,
    /// Require an `exp` claim (default true).
    #[serde(default)]
    pub require_expiration: Option<bool>,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Where the token is read from; default: `Authorization: Bearer <token>`.
    #[serde(default)]
    pub sources: Option<Vec<SourceDoc>>,
    /// Verified claims copied to upstream request headers: `{"sub": "x-user-id"}`.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Keep the token's header/parameter on the upstream request (default false: stripped).
    #[serde(default)]
    pub forward_token: Option<bool>,
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
    /// Claims scopes are read from (space-separated string or array); default
    /// `["scope", "scp", "permissions"]`.
    #[serde(default)]
    pub scope_claims: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwksDoc {
    /// JWK objects; members Tollgate does not use (`x5c`, `x5t`, ...) are ignored, as RFC 7517 asks.
    pub keys: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksDoc {
    /// Envoy cluster that reaches the JWKS server.
    pub cluster: String,
    /// `http(s)://authority/path` of the JWKS document.
    pub uri: String,
    #[serde(default)]
    pub refresh_seconds: Option<u64>,
    #[serde(default)]
    pub retry_seconds: Option<u64>,
    #[serde(default)]
    pub min_refresh_seconds: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// Exactly one of `header`, `query`, `cookie`.
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    #[serde(default)]
    pub header: Option<String>,
    /// With `header`: text before the token, e.g. `"Bearer "` (matched case-insensitively).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    #[serde(default)]
    pub name: Option<String>,
    /// Exact path, or a template with named segments: `/orders/{id}`.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// HTTP methods; empty or absent means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// No authentication. Must be said explicitly.
    #[serde(default)]
    pub public: bool,
    /// Names of the JWT providers whose tokens this route accepts.
    #[serde(default)]
    pub providers: Vec<String>,
    /// Accept API keys on this route.
    #[serde(default)]
    pub api_keys: bool,
    /// Names of the signers whose signed requests (RFC 9421) this route accepts.
    #[serde(default)]
    pub signers: Vec<String>,
    /// Only requests whose `:authority` (port removed, case-insensitive) is this host.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub scopes: Option<ScopesDoc>,
    #[serde(default)]
    pub claims: Option<ClaimsDoc>,
    #[serde(default)]
    pub owner: Option<OwnerDoc>,
    /// Rate limits applied, in order.
    #[serde(default)]
    pub limits: Vec<RouteLimitDoc>,
    /// Request checks: body schema, parameters, query, headers.
    #[serde(default)]
    pub request: Option<RequestCheckDoc>,
    /// Checks on the upstream's JSON response.
    #[serde(default)]
    pub response: Option<ResponseCheckDoc>,
    /// `enforce` or `dry-run`; default: the policy's `mode`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::mode")
    )]
    pub mode: Option<String>,
    /// Client addresses allowed or refused on this route, after the global `ip_access`.
    #[serde(default)]
    pub ip_access: Option<IpAccessDoc>,
    #[serde(default)]
    pub lifecycle: Option<LifecycleDoc>,
    /// Transport requirements; replaces the policy's `tls` for this route.
    #[serde(default)]
    pub tls: Option<TlsDoc>,
    /// Workloads accepted by their client certificate (mutual TLS). Alone, the workload is the
    /// caller; with `providers` or `api_keys`, both must pass.
    #[serde(default)]
    pub peers: Option<PeersDoc>,
    /// Interactive use and known automation, for the automated-client signals of `detection`.
    #[serde(default)]
    pub detection: Option<RouteDetectionDoc>,
}

/// Schemas for the upstream's response, by status (`"200"`) or class (`"2XX"`).
#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResponseCheckDoc {
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// `block` (default: 502 to the client), `redact` (remove what the schema does not allow and
    /// `sensitive_fields`), or `report` (log and count only).
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::response_mode")
    )]
    pub mode: Option<String>,
    /// Property names removed anywhere in the body in `redact` mode.
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// Largest response body buffered and checked (default: `payload_options.max_body_bytes`);
    /// a larger one cannot be checked (see `on_unchecked`).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// In `block` and `redact` modes, a response that cannot be checked (not JSON, nested too
    /// deep, larger than `max_body_bytes`, compressed): `block` (default: 502) or `pass`.
    #[serde(default)]
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(schema_with = "crate::policy::choices::on_unchecked")
    )]
    pub on_unchecked: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenCacheDoc {
    /// Verified tokens remembered per VM; 0 disables the cache.
    pub max_entries: usize,
}

/// `ip_access` as written in the policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IpAccessDoc {
    /// When non-empty, only clients inside one of these blocks pass.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Clients inside any of these blocks are refused, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `brute_force` as written in the policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BruteForceDoc {
    /// Failures within `window_seconds` that start a block (1 to 10000).
    pub max_failures: u32,
    /// Length of the fixed counting window, from the first failure (1 to 86400).
    pub window_seconds: u64,
    /// Length of a block (1 to 86400).
    pub block_seconds: u64,
    /// Shared-data slots (1 to 2^20, default 16384).
    #[serde(default)]
    pub slots: Option<u32>,
    /// Compare-and-swap attempts per failure (1 to 64, default 8).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Also count failures in the `rate_limit_service`, so that every proxy blocks a client
    /// once its failures across all of them reach `max_failures` (default false).
    #[serde(default)]
    pub global: bool,
}

/// Names the policy gives things (providers, limits): letters, digits, `-` and `_`.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a policy document: JSON text (a `StringValue` configuration, a file) or a binary
/// `google.protobuf.Struct` (a `Struct` configuration; see `pbstruct`). Structural problems
/// (unknown field, wrong type) are reported with the JSON path of the first one; semantic
/// problems are collected by the compiler.
pub fn parse(bytes: &[u8]) -> Result<PolicyDoc, ConfigError> {
    let text_start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let looks_like_json = text_start.and_then(|i| bytes.get(i)) == Some(&b'{');
    if !looks_like_json {
        if let Some(value) =
            pbstruct::decode(bytes).filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
        {
            return from_value(value);
        }
    }
    // Text is read into a `Value` first and then deserialised from it: one deserialiser for
    // both kinds of configuration (a second, generic over serde_json's reader, cost 0.2 MB of
    // module), and an object that names a key twice is refused rather than read as either value.
    match crate::payload::json::parse_strict(bytes) {
        Ok(value) => from_value(value),
        Err(err) if err.is_syntax() || err.is_eof() => {
            // A `Struct` can look like JSON: its first bytes are the tag `0x0a` (`\n`) and the
            // length of its first entry, which is `{` when that entry is 123 bytes long (found by
            // fuzzing). Text that is not JSON gets a second chance as a `Struct`.
            if looks_like_json {
                if let Some(value) =
                    pbstruct::decode(bytes).filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                {
                    if let Ok(doc) = from_value(value) {
                        return Ok(doc);
                    }
                }
            }
            Err(ConfigError::new(
                "",
                format!("not a JSON object or protobuf Struct: {err}"),
            ))
        }
        Err(err) => Err(ConfigError::new("", describe_serde_error(&err))),
    }
}

/// The policy's JSON Schema (`tollgate schema`) for string fields with a fixed set of values, so
/// that editors complete them and flag typos: `name` takes one of `values`; `optional` fields
/// may also be `null` (read as absent).
#[cfg(not(target_arch = "wasm32"))]
macro_rules! one_of_schema {
    ($name:ident, optional, [$($v:literal),+]) => {
        pub(crate) fn $name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
            schemars::json_schema!({"enum": [$($v),+, null]})
        }
    };
    ($name:ident, [$($v:literal),+]) => {
        pub(crate) fn $name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
            schemars::json_schema!({"type": "string", "enum": [$($v),+]})
        }
    };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod choices {
    one_of_schema!(mode, optional, ["enforce", "dry-run"]);
    one_of_schema!(deny_or_allow, optional, ["deny", "allow"]);
    one_of_schema!(default_action, ["deny", "allow"]);
    one_of_schema!(per, ["second", "minute", "hour"]);
    one_of_schema!(signature_verification, optional, ["auto", "builtin"]);
    one_of_schema!(override_headers, optional, ["strip", "refuse", "allow"]);
    one_of_schema!(log_level, optional, ["trace", "debug", "info", "warn"]);
    one_of_schema!(response_mode, optional, ["block", "redact", "report"]);
    one_of_schema!(on_unchecked, optional, ["block", "pass"]);
    one_of_schema!(refuse_or_allow, optional, ["refuse", "allow"]);
}

/// Deserialises an already-decoded JSON value.
pub fn from_value(value: serde_json::Value) -> Result<PolicyDoc, ConfigError> {
    if let Some(err) = hints::known_mistake(&value) {
        return Err(err);
    }
    serde_path_to_error::deserialize::<_, PolicyDoc>(value).map_err(path_error)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    ConfigError::new(path, describe_serde_error(err.inner()))
}

/// serde's messages are already "unknown field `x`, expected one of `a`, `b`"; strip the
/// line/column suffix, which refers to the serialised text users did not write.
fn describe_serde_error(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(&msg).to_string(),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_key_named_twice_is_refused() {
        // Read as either value, the second `routes` could hide or replace the first.
        let err = parse(br#"{"routes": [], "routes": [{"id": "x"}]}"#).unwrap_err();
        assert!(
            err.message.contains("the key `routes` appears twice"),
            "{}",
            err.message
        );
        let err =
            parse(br#"{"routes": [], "schemas": {"A": {}, "A": {"type": "string"}}}"#).unwrap_err();
        assert!(err.message.contains("`A` appears twice"), "{}", err.message);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_field_names_path_and_allowed_fields() {
        let err = parse(br#"{"routes": [], "providers": {"corp": {"issuer": "i", "audiences": [], "algorithms": [], "isuer": 1}}}"#)
            .unwrap_err();
        assert_eq!(err.path, "providers.corp.isuer");
        assert!(
            err.message.contains("unknown field `isuer`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("`issuer`"), "{}", err.message);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn wrong_type_names_path() {
        let err = parse(br#"{"routes": [{"path": 5}]}"#).unwrap_err();
        assert_eq!(err.path, "routes[0].path");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_routes_is_an_error() {
        let err = parse(br#"{}"#).unwrap_err();
        assert!(
            err.message.contains("missing field `routes`"),
            "{}",
            err.message
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn protobuf_struct_is_accepted_with_paths() {
        let v = serde_json::json!({"routes": [{"path": "/x", "public": true}], "token_cache": {"max_entries": 10}});
        let doc = parse(&pbstruct::tests::encode(&v)).unwrap();
        assert_eq!(doc.token_cache.unwrap().max_entries, 10);
        let v = serde_json::json!({"routes": [{"path": "/x", "public": "yes"}]});
        let err = parse(&pbstruct::tests::encode(&v)).unwrap_err();
        assert_eq!(err.path, "routes[0].public");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn not_json_is_an_error() {
        assert!(parse(b"routes: []").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(br#"{"routes": []} x"#).is_err());
    }
}
