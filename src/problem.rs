//! RFC 9457 `application/problem+json` bodies and RFC 6750 challenges for denials. Only the
//! generic texts of `codes` go out: never a token, key, claim value or library message.

use crate::codes::{DenialCode, PROBLEM_TYPE_PREFIX};
use crate::engine::decision::Denial;
use serde_json::json;

pub const CONTENT_TYPE: &str = "application/problem+json";
/// Seconds a client should wait when keys are not loaded yet.
pub const KEYS_UNAVAILABLE_RETRY_AFTER: &str = "5";

// Beside the constructors below rather than in engine/decision.rs: decisions stay plain data, and
// only this module knows what a problem body looks like.
impl Denial {
    /// The `application/problem+json` body sent to the client.
    pub fn body(&self) -> String {
        render(self.code, self.status, &self.violations)
    }
}

pub fn body(code: DenialCode) -> String {
    render(code, code.info().status, &[])
}

/// The problem body for `code` sent with `status`; `violations` (request checks only) are listed
/// with their JSON pointer, keyword and masked message.
pub fn render(code: DenialCode, status: u16, violations: &[crate::payload::Violation]) -> String {
    let info = code.info();
    let mut v = json!({
        "type": format!("{PROBLEM_TYPE_PREFIX}{}", info.code),
        "title": info.title,
        "status": status,
        "detail": info.detail,
    });
    if code == DenialCode::RequestInvalid {
        let list: Vec<serde_json::Value> = violations
            .iter()
            .map(|x| json!({"pointer": x.pointer, "keyword": x.keyword, "message": x.message}))
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("violations".into(), list.into());
        }
    }
    v.to_string()
}

/// `Bearer realm="…"` plus `error="…"` when the request carried a token (RFC 6750 section 3).
pub fn challenge(realm: &str, code: DenialCode) -> Option<String> {
    let info = code.info();
    // API keys are not bearer tokens: no Bearer challenge for them.
    if matches!(code, DenialCode::ApiKeyMissing | DenialCode::ApiKeyInvalid)
        || (info.status != 401 && info.bearer_error.is_none())
    {
        return None;
    }
    Some(match info.bearer_error {
        Some(error) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
        None => format!("Bearer realm=\"{realm}\""),
    })
}

/// `403 insufficient_scope` with the scopes the caller lacks in the challenge (RFC 6750 3.1).
/// Scope names come from the policy, never from the request.
pub fn insufficient_scope(
    realm: &str,
    route: Option<String>,
    scopes: &str,
    bearer: bool,
) -> Denial {
    let mut d = denial(realm, DenialCode::InsufficientScope, route);
    d.headers.retain(|(k, _)| *k != "www-authenticate");
    if bearer {
        d.headers.push((
            "www-authenticate",
            format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scopes}\""),
        ));
    }
    d
}

/// `request_invalid` with the violations (JSON pointer, keyword, masked message) and `status`.
pub fn invalid(
    realm: &str,
    route: Option<String>,
    status: u16,
    violations: Vec<crate::payload::Violation>,
) -> Denial {
    let mut d = denial(realm, DenialCode::RequestInvalid, route);
    d.status = status;
    d.violations = violations;
    d
}

/// The generic body that replaces an upstream 5xx body (`responses.mask_upstream_errors`); the
/// upstream's status is kept.
pub fn upstream_error(status: u16) -> String {
    render(DenialCode::UpstreamError, status, &[])
}

/// The full local reply for `code`.
pub fn denial(realm: &str, code: DenialCode, route: Option<String>) -> Denial {
    let mut headers = vec![
        ("content-type", CONTENT_TYPE.to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    if let Some(c) = challenge(realm, code) {
        headers.push(("www-authenticate", c));
    }
    if matches!(
        code,
        DenialCode::KeysUnavailable | DenialCode::RevocationsUnavailable
    ) {
        headers.push(("retry-after", KEYS_UNAVAILABLE_RETRY_AFTER.to_string()));
    }
    Denial {
        code,
        route,
        status: code.info().status,
        headers,
        violations: Vec::new(),
        principal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn bodies_are_problem_json() {
        for code in DenialCode::ALL {
            let v: Value = serde_json::from_str(&body(code)).unwrap();
            assert_eq!(v["type"], format!("urn:tollgate:problem:{}", code.as_str()));
            assert_eq!(v["status"], code.info().status);
            assert!(v["title"].is_string() && v["detail"].is_string());
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn challenges() {
        assert_eq!(
            challenge("r", DenialCode::TokenMissing).as_deref(),
            Some("Bearer realm=\"r\"")
        );
        assert_eq!(
            challenge("r", DenialCode::SignatureInvalid).as_deref(),
            Some("Bearer realm=\"r\", error=\"invalid_token\"")
        );
        assert_eq!(
            challenge("r", DenialCode::MultipleTokens).as_deref(),
            Some("Bearer realm=\"r\", error=\"invalid_request\"")
        );
        assert_eq!(challenge("r", DenialCode::RouteNotFound), None);
        assert_eq!(challenge("r", DenialCode::KeysUnavailable), None);
        let d = denial("r", DenialCode::KeysUnavailable, None);
        assert!(d.headers.contains(&("retry-after", "5".into())));
    }
}
