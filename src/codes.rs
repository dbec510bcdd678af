//! The one list of denial codes and metric names. Responses, logs and stats all read from here.

/// Why a request was refused. Each code has a stable `problem+json` type, HTTP status and title.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenialCode {
    RouteNotFound,
    TokenMissing,
    MultipleTokens,
    TokenMalformed,
    TokenTooLarge,
    AlgorithmNotAllowed,
    CriticalHeaderUnsupported,
    UnknownKey,
    SignatureInvalid,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuedInFuture,
    TokenTooOld,
    IssuerMismatch,
    AudienceMismatch,
    ClaimMissing,
    KeysUnavailable,
    /// The host failed a call Tollgate needs (headers, clock); fail closed.
    InternalError,
    /// The path cannot be normalised safely (`..` above the root, encoded `/` or `\`, bad escape).
    PathInvalid,
    /// Authenticated, but a required scope is missing.
    InsufficientScope,
    /// Authenticated, but a claim condition or the owner check failed.
    Forbidden,
    /// The route takes only API keys and none was sent.
    ApiKeyMissing,
    /// Unknown, expired, not yet valid or disabled API key (deliberately one code).
    ApiKeyInvalid,
    /// A rate limit refused the request (or its bucket could not be updated and the limit denies
    /// on contention).
    RateLimited,
    /// A route with a body schema got a body that is not JSON by its `content-type`.
    UnsupportedMediaType,
    /// The body is larger than the route's `max_body_bytes`.
    PayloadTooLarge,
    /// The body is not JSON, or nests deeper than `max_depth`.
    BodyMalformed,
    /// The body, a parameter, the query or a header breaks its schema (400, or 422 if configured).
    RequestInvalid,
    /// The upstream's response broke its schema (`block` mode): the client gets a generic 502.
    ResponseInvalid,
    /// The client address is on a deny list, or not on an allow list (global or the route's).
    IpDenied,
    /// Too many authentication failures from this client: blocked for a while (`brute_force`).
    ClientBlocked,
    /// The route is retired (or past its sunset): `410` with a link to its successor.
    RouteRetired,
    /// Not a denial: the body of an upstream 5xx replaced by a generic problem
    /// (`responses.mask_upstream_errors`); the upstream's status is kept.
    UpstreamError,
    /// The request can be read more than one way (two hosts, a host that is not a DNS name, a
    /// method or URL override header the policy refuses): Tollgate and the upstream could judge
    /// different requests.
    RequestAmbiguous,
    /// In `block` or `redact` mode, the upstream's response could not be checked (not JSON, too
    /// deep, too large, compressed): refused unless the route says `on_unchecked: pass`.
    ResponseUnchecked,
    /// A `global` limit could not be checked (the rate-limit service did not answer in time,
    /// failed, or answered garbage) and the limit denies on service failure.
    RateLimitUnavailable,
    /// The route requires TLS (`tls`) and the connection is plaintext.
    TlsRequired,
    /// The connection's TLS version is older than the route's `tls.min_version`.
    TlsVersionTooOld,
    /// The route requires a verified client certificate (`tls.client_certificate`, `peers`) and
    /// the connection has none.
    ClientCertificateRequired,
    /// The client certificate's workload is not one the route's `peers` accept.
    PeerNotAllowed,
    /// The route takes only signed requests (`signers`) and the request has no signature.
    MessageSignatureMissing,
    /// A message signature (RFC 9421) that does not verify: malformed, unknown key, algorithm or
    /// tag not allowed, a required component not covered, a wrong signature (deliberately one
    /// code).
    MessageSignatureInvalid,
    /// A message signature outside its validity: too old, expired, or created in the future.
    MessageSignatureExpired,
    /// A message signature whose nonce was already used within its window.
    MessageSignatureReplayed,
    /// The body does not match the signed `Content-Digest` (RFC 9530).
    ContentDigestMismatch,
    /// The nonce of a signed request could not be recorded (shared data failed or is full), so
    /// the request cannot be protected against replay.
    ReplayCheckUnavailable,
    /// The credential (token id, subject, API key, principal) is on the revocation list.
    CredentialRevoked,
    /// The route is closed by the revocation list (containment during an incident).
    RouteClosed,
    /// The remote revocation list has not been fetched yet (`revocations.on_unavailable: deny`).
    RevocationsUnavailable,
    /// A detector (`detection`) blocked this caller for a while.
    CallerBlocked,
    /// A detector (`detection`) throttled this caller and its reduced bucket is empty.
    CallerThrottled,
}

/// What a denial is about: the `reason` of per-route metrics and of the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Authentication,
    Authorization,
    RateLimit,
    RequestSchema,
    ResponseSchema,
    UnknownRoute,
    Lifecycle,
    /// Tollgate could not evaluate the request (host failure, keys not loaded).
    Config,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Authentication,
        Reason::Authorization,
        Reason::RateLimit,
        Reason::RequestSchema,
        Reason::ResponseSchema,
        Reason::UnknownRoute,
        Reason::Lifecycle,
        Reason::Config,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Authentication => "authentication",
            Reason::Authorization => "authorization",
            Reason::RateLimit => "rate_limit",
            Reason::RequestSchema => "request_schema",
            Reason::ResponseSchema => "response_schema",
            Reason::UnknownRoute => "unknown_route",
            Reason::Lifecycle => "lifecycle",
            Reason::Config => "config",
        }
    }

    /// Position in [`Reason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// How a denial is rendered as HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialInfo {
    /// Stable identifier used in logs, metrics and the problem `type` URI.
    pub code: &'static str,
    pub status: u16,
    /// Generic, client-safe title (RFC 9457 `title`).
    pub title: &'static str,
    /// Generic, client-safe explanation (RFC 9457 `detail`); never carries request data.
    pub detail: &'static str,
    /// RFC 6750 `error` attribute for `WWW-Authenticate`, when the code is a bearer-token failure.
    pub bearer_error: Option<&'static str>,
}

/// Prefix of every problem `type`: `urn:tollgate:problem:<code>`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:tollgate:problem:";

impl DenialCode {
    pub const ALL: [DenialCode; 51] = [
        DenialCode::RouteNotFound,
        DenialCode::TokenMissing,
        DenialCode::MultipleTokens,
        DenialCode::TokenMalformed,
        DenialCode::TokenTooLarge,
        DenialCode::AlgorithmNotAllowed,
        DenialCode::CriticalHeaderUnsupported,
        DenialCode::UnknownKey,
        DenialCode::SignatureInvalid,
        DenialCode::TokenExpired,
        DenialCode::TokenNotYetValid,
        DenialCode::TokenIssuedInFuture,
        DenialCode::TokenTooOld,
        DenialCode::IssuerMismatch,
        DenialCode::AudienceMismatch,
        DenialCode::ClaimMissing,
        DenialCode::KeysUnavailable,
        DenialCode::InternalError,
        DenialCode::PathInvalid,
        DenialCode::InsufficientScope,
        DenialCode::Forbidden,
        DenialCode::ApiKeyMissing,
        DenialCode::ApiKeyInvalid,
        DenialCode::RateLimited,
        DenialCode::UnsupportedMediaType,
        DenialCode::PayloadTooLarge,
        DenialCode::BodyMalformed,
        DenialCode::RequestInvalid,
        DenialCode::ResponseInvalid,
        DenialCode::IpDenied,
        DenialCode::ClientBlocked,
        DenialCode::RouteRetired,
        DenialCode::UpstreamError,
        DenialCode::RequestAmbiguous,
        DenialCode::ResponseUnchecked,
        DenialCode::RateLimitUnavailable,
        DenialCode::TlsRequired,
        DenialCode::TlsVersionTooOld,
        DenialCode::ClientCertificateRequired,
        DenialCode::PeerNotAllowed,
        DenialCode::MessageSignatureMissing,
        DenialCode::MessageSignatureInvalid,
        DenialCode::MessageSignatureExpired,
        DenialCode::MessageSignatureReplayed,
        DenialCode::ContentDigestMismatch,
        DenialCode::ReplayCheckUnavailable,
        DenialCode::CredentialRevoked,
        DenialCode::RouteClosed,
        DenialCode::RevocationsUnavailable,
        DenialCode::CallerBlocked,
        DenialCode::CallerThrottled,
    ];

    /// The reason category of this code.
    pub const fn reason(self) -> Reason {
        use DenialCode as C;
        match self {
            C::RouteNotFound => Reason::UnknownRoute,
            C::TokenMissing
            | C::MultipleTokens
            | C::TokenMalformed
            | C::TokenTooLarge
            | C::AlgorithmNotAllowed
            | C::CriticalHeaderUnsupported
            | C::UnknownKey
            | C::SignatureInvalid
            | C::TokenExpired
            | C::TokenNotYetValid
            | C::TokenIssuedInFuture
            | C::TokenTooOld
            | C::IssuerMismatch
            | C::AudienceMismatch
            | C::ClaimMissing
            | C::ApiKeyMissing
            | C::ApiKeyInvalid
            | C::TlsRequired
            | C::TlsVersionTooOld
            | C::ClientCertificateRequired
            | C::MessageSignatureMissing
            | C::MessageSignatureInvalid
            | C::MessageSignatureExpired
            | C::MessageSignatureReplayed
            | C::ContentDigestMismatch
            | C::CredentialRevoked => Reason::Authentication,
            C::InsufficientScope | C::Forbidden | C::IpDenied | C::PeerNotAllowed => {
                Reason::Authorization
            }
            C::RateLimited
            | C::ClientBlocked
            | C::RateLimitUnavailable
            | C::CallerBlocked
            | C::CallerThrottled => Reason::RateLimit,
            C::PathInvalid
            | C::UnsupportedMediaType
            | C::PayloadTooLarge
            | C::BodyMalformed
            | C::RequestInvalid
            | C::RequestAmbiguous => Reason::RequestSchema,
            C::ResponseInvalid | C::ResponseUnchecked | C::UpstreamError => Reason::ResponseSchema,
            C::RouteRetired | C::RouteClosed => Reason::Lifecycle,
            C::KeysUnavailable
            | C::InternalError
            | C::ReplayCheckUnavailable
            | C::RevocationsUnavailable => Reason::Config,
        }
    }

    /// A failed authentication attempt, as counted by brute-force protection: a credential was
    /// presented and refused as forged or unknown. A missing credential is not an attempt, and
    /// neither is a genuine token used outside its validity window (expired, not yet valid, too
    /// old): honest clients with stale tokens must not lock themselves out.
    /// Position in [`DenialCode::ALL`] (the host's per-code counter tables).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the code refuses a request (and so has `denied` / `dry_run` counters).
    /// `upstream_error` is not a refusal: it names the body that replaces a masked upstream 5xx,
    /// counted in [`Counter::UpstreamMasked`].
    pub const fn refusal(self) -> bool {
        !matches!(self, DenialCode::UpstreamError)
    }

    pub const fn is_failed_attempt(self) -> bool {
        matches!(self.reason(), Reason::Authentication)
            && !matches!(
                self,
                DenialCode::TokenMissing
                    | DenialCode::ApiKeyMissing
                    | DenialCode::MultipleTokens
                    | DenialCode::TokenExpired
                    | DenialCode::TokenNotYetValid
                    | DenialCode::TokenIssuedInFuture
                    | DenialCode::TokenTooOld
                    // The connection, not a guessed credential: nothing to brute-force.
                    | DenialCode::TlsRequired
                    | DenialCode::TlsVersionTooOld
                    | DenialCode::ClientCertificateRequired
                    | DenialCode::MessageSignatureMissing
                    | DenialCode::MessageSignatureExpired
                    // A genuine credential, withdrawn: its holder is contained, not guessing.
                    | DenialCode::CredentialRevoked
            )
    }

    pub const fn info(self) -> DenialInfo {
        const INVALID: Option<&str> = Some("invalid_token");
        const BAD_TOKEN: &str = "The access token is not valid for this API.";
        let (code, status, title, detail, bearer_error) = match self {
            DenialCode::RouteNotFound => (
                "route_not_found",
                404,
                "Not Found",
                "No API route matches this request.",
                None,
            ),
            DenialCode::TokenMissing => (
                "token_missing",
                401,
                "Authentication required",
                "This API requires an access token.",
                None,
            ),
            DenialCode::MultipleTokens => (
                "multiple_tokens",
                400,
                "Bad request",
                "The request carries more than one access token.",
                Some("invalid_request"),
            ),
            DenialCode::TokenMalformed => (
                "token_malformed",
                401,
                "Invalid token",
                "The access token is malformed.",
                INVALID,
            ),
            DenialCode::TokenTooLarge => (
                "token_too_large",
                401,
                "Invalid token",
                "The access token is too large.",
                INVALID,
            ),
            DenialCode::AlgorithmNotAllowed => (
                "algorithm_not_allowed",
                401,
                "Invalid token",
                BAD_TOKEN,
                INVALID,
            ),
            DenialCode::CriticalHeaderUnsupported => (
                "critical_header_unsupported",
                401,
                "Invalid token",
                BAD_TOKEN,
                INVALID,
            ),
            DenialCode::UnknownKey => ("unknown_key", 401, "Invalid token", BAD_TOKEN, INVALID),
            DenialCode::SignatureInvalid => (
                "signature_invalid",
                401,
                "Invalid token",
                BAD_TOKEN,
                INVALID,
            ),
            DenialCode::TokenExpired => (
                "token_expired",
                401,
                "Invalid token",
                "The access token has expired.",
                INVALID,
            ),
            DenialCode::TokenNotYetValid => (
                "token_not_yet_valid",
                401,
                "Invalid token",
                "The access token is not valid yet.",
                INVALID,
            ),
            DenialCode::TokenIssuedInFuture => (
                "token_issued_in_future",
                401,
                "Invalid token",
                "The access token is not valid yet.",
                INVALID,
            ),
            DenialCode::TokenTooOld => (
                "token_too_old",
                401,
                "Invalid token",
                "The access token is too old.",
                INVALID,
            ),
            DenialCode::IssuerMismatch => {
                ("issuer_mismatch", 401, "Invalid token", BAD_TOKEN, INVALID)
            }
            DenialCode::AudienceMismatch => (
                "audience_mismatch",
                401,
                "Invalid token",
                BAD_TOKEN,
                INVALID,
            ),
            DenialCode::ClaimMissing => ("claim_missing", 401, "Invalid token", BAD_TOKEN, INVALID),
            DenialCode::KeysUnavailable => (
                "keys_unavailable",
                503,
                "Service unavailable",
                "Token verification keys are not available yet; retry shortly.",
                None,
            ),
            DenialCode::InternalError => (
                "internal_error",
                500,
                "Internal error",
                "The request could not be checked.",
                None,
            ),
            DenialCode::PathInvalid => (
                "path_invalid",
                400,
                "Bad request",
                "The request path is not acceptable.",
                None,
            ),
            DenialCode::InsufficientScope => (
                "insufficient_scope",
                403,
                "Forbidden",
                "The credentials lack a scope this API requires.",
                Some("insufficient_scope"),
            ),
            DenialCode::Forbidden => (
                "forbidden",
                403,
                "Forbidden",
                "The credentials do not allow this request.",
                None,
            ),
            DenialCode::ApiKeyMissing => (
                "api_key_missing",
                401,
                "Authentication required",
                "This API requires an API key.",
                None,
            ),
            DenialCode::ApiKeyInvalid => (
                "api_key_invalid",
                401,
                "Invalid API key",
                "The API key is not valid.",
                None,
            ),
            DenialCode::RateLimited => (
                "rate_limited",
                429,
                "Too many requests",
                "The rate limit for this API was exceeded; retry after the time in `Retry-After`.",
                None,
            ),
            DenialCode::RateLimitUnavailable => (
                "ratelimit_unavailable",
                503,
                "Service unavailable",
                "The rate limit for this API could not be checked; retry after the time in `Retry-After`.",
                None,
            ),
            DenialCode::UnsupportedMediaType => (
                "unsupported_media_type",
                415,
                "Unsupported media type",
                "This API accepts JSON bodies only (application/json or a +json type).",
                None,
            ),
            DenialCode::PayloadTooLarge => (
                "payload_too_large",
                413,
                "Payload too large",
                "The request body is larger than this API accepts.",
                None,
            ),
            DenialCode::BodyMalformed => (
                "body_malformed",
                400,
                "Bad request",
                "The request body is not well-formed JSON within the accepted nesting depth.",
                None,
            ),
            DenialCode::RequestInvalid => (
                "request_invalid",
                400,
                "Invalid request",
                "The request does not match this API's schema; see `violations`.",
                None,
            ),
            DenialCode::ResponseInvalid => (
                "response_invalid",
                502,
                "Bad gateway",
                "The upstream service returned a response this API does not allow.",
                None,
            ),
            DenialCode::IpDenied => (
                "ip_denied",
                403,
                "Forbidden",
                "Requests from this network are not allowed.",
                None,
            ),
            DenialCode::ClientBlocked => (
                "client_blocked",
                429,
                "Too many requests",
                "Too many failed authentication attempts; retry after the time in `Retry-After`.",
                None,
            ),
            DenialCode::RouteRetired => (
                "route_retired",
                410,
                "Gone",
                "This API version is retired; see the `Link` header for its successor.",
                None,
            ),
            DenialCode::UpstreamError => (
                "upstream_error",
                502,
                "Upstream error",
                "The service failed to handle the request.",
                None,
            ),
            DenialCode::RequestAmbiguous => (
                "request_ambiguous",
                400,
                "Bad request",
                "The request can be read in more than one way (its host or method).",
                None,
            ),
            DenialCode::ResponseUnchecked => (
                "response_unchecked",
                502,
                "Bad gateway",
                "The upstream service returned a response this API could not check.",
                None,
            ),
            DenialCode::TlsRequired => (
                "tls_required",
                403,
                "Forbidden",
                "This API must be called over TLS.",
                None,
            ),
            DenialCode::TlsVersionTooOld => (
                "tls_version_too_old",
                403,
                "Forbidden",
                "This API requires a newer TLS version.",
                None,
            ),
            DenialCode::ClientCertificateRequired => (
                "client_certificate_required",
                403,
                "Forbidden",
                "This API requires a client certificate (mutual TLS).",
                None,
            ),
            DenialCode::MessageSignatureMissing => (
                "message_signature_missing",
                401,
                "Authentication required",
                "This API requires a signed request (HTTP Message Signatures).",
                None,
            ),
            DenialCode::MessageSignatureInvalid => (
                "message_signature_invalid",
                401,
                "Invalid signature",
                "The request's signature is not valid for this API.",
                None,
            ),
            DenialCode::MessageSignatureExpired => (
                "message_signature_expired",
                401,
                "Invalid signature",
                "The request's signature is too old or not valid yet.",
                None,
            ),
            DenialCode::MessageSignatureReplayed => (
                "message_signature_replayed",
                401,
                "Invalid signature",
                "The request's signature was already used.",
                None,
            ),
            DenialCode::ContentDigestMismatch => (
                "content_digest_mismatch",
                400,
                "Bad request",
                "The request body does not match its signed Content-Digest.",
                None,
            ),
            DenialCode::ReplayCheckUnavailable => (
                "replay_check_unavailable",
                503,
                "Service unavailable",
                "The signed request could not be checked for replay; retry shortly.",
                None,
            ),
            DenialCode::CredentialRevoked => (
                "credential_revoked",
                401,
                "Invalid credential",
                "The credential has been revoked.",
                INVALID,
            ),
            DenialCode::RouteClosed => (
                "route_closed",
                503,
                "Service unavailable",
                "This API is temporarily closed.",
                None,
            ),
            DenialCode::RevocationsUnavailable => (
                "revocations_unavailable",
                503,
                "Service unavailable",
                "The revocation list is not available yet; retry shortly.",
                None,
            ),
            DenialCode::CallerBlocked => (
                "caller_blocked",
                403,
                "Forbidden",
                "This client is blocked for a while after unusual activity; retry after the time in `Retry-After`.",
                None,
            ),
            DenialCode::CallerThrottled => (
                "caller_throttled",
                429,
                "Too many requests",
                "This client is slowed down for a while after unusual activity; retry after the time in `Retry-After`.",
                None,
            ),
            DenialCode::PeerNotAllowed => (
                "peer_not_allowed",
                403,
                "Forbidden",
                "The calling workload is not allowed to use this API.",
                None,
            ),
        };
        DenialInfo {
            code,
            status,
            title,
            detail,
            bearer_error,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.info().code
    }
}

/// Every plain counter Tollgate keeps, defined once: the engine and the exchange name them, the
/// host registers them through the proxy-wasm stats ABI (by [`Counter::index`]) and the docs list
/// them. Envoy shows them with its `wasmcustom.` prefix (`/stats`), e.g.
/// `wasmcustom.tollgate.jwt.cache_hit`. The per-code and per-route families are in [`metrics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Requests let through (counted once a checked body has passed).
    RequestsAllowed,
    JwtCacheHit,
    JwtCacheMiss,
    /// Token signatures checked by the host's crypto (Envoy's BoringSSL) rather than Tollgate's.
    JwtHostSignatures,
    JwksFetchOk,
    JwksFetchFailed,
    /// Key sets installed in a worker from shared data (after a fetch by any worker).
    JwksInstalled,
    /// Compare-and-swap attempts lost on rate-limit buckets.
    RatelimitCasRetries,
    /// Bucket updates that ran out of attempts.
    RatelimitCasExhausted,
    /// Requests a shadow limit would have refused (one per limit).
    RatelimitShadowLimited,
    /// Upstream responses that broke their schema (block, report, and redact when the original
    /// broke it).
    ResponseInvalid,
    /// Responses changed by `redact`.
    ResponseRedacted,
    /// Responses a route's checks could not judge (not JSON, too deep, too large, compressed),
    /// whether refused (`on_unchecked: block`) or passed (`pass`, or `report` mode).
    ResponseUnchecked,
    /// Upstream 5xx bodies replaced by a generic problem.
    UpstreamMasked,
    /// Blocks started by brute-force protection.
    BruteForceBlocks,
    /// Requests served on a route marked deprecated.
    DeprecatedRequests,
    /// Requests sent to the rate-limit service (`global` limits).
    RatelimitServiceCalls,
    /// Answers of the service that a request was over a limit (shadow limits included).
    RatelimitServiceOverLimit,
    /// Calls the service did not answer in time.
    RatelimitServiceTimeout,
    /// Calls that failed: the service unreachable or answering with a gRPC error, or the call
    /// could not be made.
    RatelimitServiceError,
    /// Answers that are not a rate-limit response (or say neither yes nor no).
    RatelimitServiceMalformed,
    /// Requests let through although the service failed (`on_service_failure: allow`).
    RatelimitServiceFailedOpen,
    /// Successful fetches of the remote revocation list.
    RevocationsFetchOk,
    /// Failed fetches of the remote revocation list (unreachable, not 200, too large, malformed).
    RevocationsFetchFailed,
    /// Revocation lists installed in a worker from shared data (after a fetch by any worker).
    RevocationsInstalled,
    /// Detector trips (`detection`), one counter per detector; each trips at most once per
    /// caller and window.
    DetectionSpike,
    DetectionCredentialProbing,
    DetectionObjectProbing,
    DetectionEnumeration,
    DetectionFuzzing,
    DetectionMissingHeaders,
    DetectionRegularCadence,
    /// Blocks and throttles started by detectors (not under `dry-run`).
    DetectionBlocks,
    DetectionThrottles,
}

impl Counter {
    pub const ALL: [Counter; 34] = [
        Counter::RequestsAllowed,
        Counter::JwtCacheHit,
        Counter::JwtCacheMiss,
        Counter::JwtHostSignatures,
        Counter::JwksFetchOk,
        Counter::JwksFetchFailed,
        Counter::JwksInstalled,
        Counter::RatelimitCasRetries,
        Counter::RatelimitCasExhausted,
        Counter::RatelimitShadowLimited,
        Counter::ResponseInvalid,
        Counter::ResponseRedacted,
        Counter::ResponseUnchecked,
        Counter::UpstreamMasked,
        Counter::BruteForceBlocks,
        Counter::DeprecatedRequests,
        Counter::RatelimitServiceCalls,
        Counter::RatelimitServiceOverLimit,
        Counter::RatelimitServiceTimeout,
        Counter::RatelimitServiceError,
        Counter::RatelimitServiceMalformed,
        Counter::RatelimitServiceFailedOpen,
        Counter::RevocationsFetchOk,
        Counter::RevocationsFetchFailed,
        Counter::RevocationsInstalled,
        Counter::DetectionSpike,
        Counter::DetectionCredentialProbing,
        Counter::DetectionObjectProbing,
        Counter::DetectionEnumeration,
        Counter::DetectionFuzzing,
        Counter::DetectionMissingHeaders,
        Counter::DetectionRegularCadence,
        Counter::DetectionBlocks,
        Counter::DetectionThrottles,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RequestsAllowed => "tollgate.requests.allowed",
            Counter::JwtCacheHit => "tollgate.jwt.cache_hit",
            Counter::JwtCacheMiss => "tollgate.jwt.cache_miss",
            Counter::JwtHostSignatures => "tollgate.jwt.host_signatures",
            Counter::JwksFetchOk => "tollgate.jwks.fetch_ok",
            Counter::JwksFetchFailed => "tollgate.jwks.fetch_failed",
            Counter::JwksInstalled => "tollgate.jwks.installed",
            Counter::RatelimitCasRetries => "tollgate.ratelimit.cas_retries",
            Counter::RatelimitCasExhausted => "tollgate.ratelimit.cas_exhausted",
            Counter::RatelimitShadowLimited => "tollgate.ratelimit.shadow_limited",
            Counter::ResponseInvalid => "tollgate.response.invalid",
            Counter::ResponseRedacted => "tollgate.response.redacted",
            Counter::ResponseUnchecked => "tollgate.response.unchecked",
            Counter::UpstreamMasked => "tollgate.response.upstream_masked",
            Counter::BruteForceBlocks => "tollgate.brute_force.blocks",
            Counter::DeprecatedRequests => "tollgate.lifecycle.deprecated_requests",
            Counter::RatelimitServiceCalls => "tollgate.ratelimit.service.calls",
            Counter::RatelimitServiceOverLimit => "tollgate.ratelimit.service.over_limit",
            Counter::RatelimitServiceTimeout => "tollgate.ratelimit.service.timeout",
            Counter::RatelimitServiceError => "tollgate.ratelimit.service.error",
            Counter::RatelimitServiceMalformed => "tollgate.ratelimit.service.malformed",
            Counter::RatelimitServiceFailedOpen => "tollgate.ratelimit.service.failed_open",
            Counter::RevocationsFetchOk => "tollgate.revocations.fetch_ok",
            Counter::RevocationsFetchFailed => "tollgate.revocations.fetch_failed",
            Counter::RevocationsInstalled => "tollgate.revocations.installed",
            Counter::DetectionSpike => "tollgate.detection.spike",
            Counter::DetectionCredentialProbing => "tollgate.detection.credential_probing",
            Counter::DetectionObjectProbing => "tollgate.detection.object_probing",
            Counter::DetectionEnumeration => "tollgate.detection.enumeration",
            Counter::DetectionFuzzing => "tollgate.detection.fuzzing",
            Counter::DetectionMissingHeaders => "tollgate.detection.missing_headers",
            Counter::DetectionRegularCadence => "tollgate.detection.regular_cadence",
            Counter::DetectionBlocks => "tollgate.detection.blocks",
            Counter::DetectionThrottles => "tollgate.detection.throttles",
        }
    }

    /// Position in [`Counter::ALL`] (the host's table of counter ids).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The counter families: one counter per refusal code, per route and per reason.
pub mod metrics {
    /// Followed by `.<denial code>`, one counter per refusal code ([`super::DenialCode::refusal`]).
    pub const REQUESTS_DENIED_PREFIX: &str = "tollgate.requests.denied";
    /// Followed by `.<denial code>`: requests a `dry-run` policy or route would have refused.
    pub const REQUESTS_DRY_RUN_PREFIX: &str = "tollgate.requests.dry_run";
    /// Per-route counters: `tollgate.route.<route>.allowed`,
    /// `tollgate.route.<route>.denied.<reason>`, `tollgate.route.<route>.dry_run.<reason>`.
    /// `<route>` is the route's name with characters other than letters, digits, `-` and `_`
    /// replaced by `_`; requests that match no route count under [`UNMATCHED_ROUTE`].
    pub const ROUTE_PREFIX: &str = "tollgate.route";
    pub const ROUTE_ALLOWED: &str = "allowed";
    pub const ROUTE_DENIED: &str = "denied";
    pub const ROUTE_DRY_RUN: &str = "dry_run";
    pub const UNMATCHED_ROUTE: &str = "_unmatched";

    /// `<route>` in metric names: letters, digits, `-` and `_`; anything else becomes `_`.
    pub fn route_segment(route: &str) -> String {
        if route.is_empty() {
            return UNMATCHED_ROUTE.to_string();
        }
        route
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn codes_are_unique_and_snake_case() {
        let mut seen = HashSet::new();
        for code in DenialCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate code {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn failed_attempts_are_forged_or_unknown_credentials() {
        let attempts: Vec<&str> = DenialCode::ALL
            .iter()
            .filter(|c| c.is_failed_attempt())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            attempts,
            [
                "token_malformed",
                "token_too_large",
                "algorithm_not_allowed",
                "critical_header_unsupported",
                "unknown_key",
                "signature_invalid",
                "issuer_mismatch",
                "audience_mismatch",
                "claim_missing",
                "api_key_invalid",
                // A forged or replayed signature; a body that breaks its signed digest.
                "message_signature_invalid",
                "message_signature_replayed",
                "content_digest_mismatch",
            ]
        );
        for c in DenialCode::ALL {
            assert!(Reason::ALL.contains(&c.reason()));
        }
    }

    /// The table of codes in policies/README.md ("Responses") lists every code with its status
    /// and detail.
    #[wasm_bindgen_test(unsupported = test)]
    fn readme_lists_every_code() {
        let readme = include_str!("../policies/README.md");
        for code in DenialCode::ALL {
            let info = code.info();
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", info.code)))
                .unwrap_or_else(|| panic!("policies/README.md has no row for `{}`", info.code));
            assert!(row.ends_with(&format!("| {} |", info.detail)), "{row}");
            if code != DenialCode::UpstreamError {
                assert!(row.contains(&format!("| {}", info.status)), "{row}");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn counters_are_listed_once_in_order() {
        let mut seen = HashSet::new();
        for (i, c) in DenialCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
            assert!(seen.insert(c.name()), "duplicate counter {}", c.name());
            assert!(c.name().starts_with("tollgate."));
        }
        assert_eq!(metrics::route_segment("v1/orders {id}"), "v1_orders__id_");
        assert_eq!(metrics::route_segment(""), "_unmatched");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn missing_token_carries_no_bearer_error() {
        // RFC 6750 section 3.1: no error attribute when the request had no credentials.
        assert_eq!(DenialCode::TokenMissing.info().bearer_error, None);
        assert_eq!(
            DenialCode::TokenExpired.info().bearer_error,
            Some("invalid_token")
        );
    }
}
