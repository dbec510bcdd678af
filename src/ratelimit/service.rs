//! The rate-limit service a policy names for its `global` limits (`rate_limit_service`), and
//! how a limit's key becomes an RLS descriptor. Interpreting the service's answer is the
//! engine's (`engine::limits`), a limit's descriptor [`super::Limit::descriptor`]'s; the wire
//! format is [`super::rls`].

use crate::policy::{ConfigError, RateLimitServiceDoc};

/// How long a request waits for the service by default. Short: a global limit must not make
/// every request slow when the service is.
pub const DEFAULT_TIMEOUT_MS: u32 = 50;
pub const MAX_TIMEOUT_MS: u32 = 10_000;

/// The first entry of every descriptor: `(LIMIT_KEY, <limit name>)`, so one domain serves every
/// limit of a policy and each has its own counters.
pub const LIMIT_KEY: &str = "tollgate_limit";

/// Sent for a key part the request does not have (a missing header or claim): RLS servers
/// refuse empty values.
pub const EMPTY_VALUE: &str = "-";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u32,
    /// The default of limits that do not say `on_service_failure`.
    pub deny_on_failure: bool,
    pub send_limits: bool,
    /// Lowercase names of the service's response headers passed on to the client.
    pub response_headers: Vec<String>,
}

/// `deny` / `allow` at `at`; `None` when absent.
pub(super) fn failure_mode(
    value: Option<&str>,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<bool> {
    match value? {
        "deny" => Some(true),
        "allow" => Some(false),
        other => {
            errors.push(ConfigError::new(
                at,
                format!("`{other}` is not a choice; expected one of [`deny`, `allow`]"),
            ));
            None
        }
    }
}

impl Service {
    pub fn compile(doc: &RateLimitServiceDoc, errors: &mut Vec<ConfigError>) -> Option<Service> {
        let start = errors.len();
        let at = "rate_limit_service";
        if doc.cluster.trim().is_empty() || doc.cluster.chars().any(char::is_whitespace) {
            errors.push(ConfigError::new(
                format!("{at}.cluster"),
                "expected the name of the Envoy cluster of the rate-limit service (HTTP/2), e.g. `ratelimit`",
            ));
        }
        if doc.domain.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.domain"),
                "expected the domain the service's configuration uses, e.g. `tollgate`",
            ));
        }
        let timeout_ms = doc.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            errors.push(ConfigError::new(
                format!("{at}.timeout_ms"),
                format!("{timeout_ms} is out of range; expected 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        let deny_on_failure = failure_mode(
            doc.on_failure.as_deref(),
            &format!("{at}.on_failure"),
            errors,
        )
        .unwrap_or(true);
        let mut response_headers = Vec::new();
        for (i, h) in doc.response_headers.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if !crate::policy::is_identifier(&h) {
                errors.push(ConfigError::new(
                    format!("{at}.response_headers[{i}]"),
                    format!("`{h}` is not a header name"),
                ));
            }
            response_headers.push(h);
        }
        if errors.len() > start {
            return None;
        }
        Some(Service {
            cluster: doc.cluster.clone(),
            domain: doc.domain.clone(),
            timeout_ms,
            deny_on_failure,
            send_limits: doc.send_limits.unwrap_or(true),
            response_headers,
        })
    }
}
