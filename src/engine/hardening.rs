//! Response hardening: security headers added to responses that lack them, implementation-revealing
//! upstream headers removed, and the switch for masking upstream 5xx bodies.

use crate::policy::{ConfigError, ResponsesDoc};

/// Added to every response (upstream or Tollgate's own) that does not set them. API responses
/// are not documents: nothing in them should load, frame or run.
pub const DEFAULT_SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("referrer-policy", "no-referrer"),
];

/// Upstream headers that name the implementation behind the API.
pub const DEFAULT_REMOVED_HEADERS: [&str; 4] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
];

/// Headers that carry framing or routing: a policy may neither add nor remove them.
const PROTECTED: &[&str] = &[
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "date",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsePolicy {
    /// `(lowercase name, value)`, set only when the response lacks the header.
    pub security_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub no_store_authenticated: bool,
    pub mask_upstream_errors: bool,
}

fn header_name_ok(h: &str) -> bool {
    crate::policy::is_identifier(h)
        && !h.bytes().any(|b| b.is_ascii_uppercase())
        && !PROTECTED.contains(&h)
        && !h.starts_with(':')
}

impl ResponsePolicy {
    pub fn compile(doc: Option<&ResponsesDoc>, errors: &mut Vec<ConfigError>) -> ResponsePolicy {
        let mut security_headers: Vec<(String, String)> = DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut remove_headers: Vec<String> = DEFAULT_REMOVED_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect();
        if let Some(doc) = doc {
            for (name, value) in &doc.security_headers {
                let lower = name.to_ascii_lowercase();
                let at = format!("responses.security_headers.{name}");
                if !header_name_ok(&lower) {
                    errors.push(ConfigError::new(
                        at,
                        format!("`{name}` is not a header Tollgate may add"),
                    ));
                    continue;
                }
                if value.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
                    errors.push(ConfigError::new(at, "the value must be printable ascii"));
                    continue;
                }
                security_headers.retain(|(k, _)| *k != lower);
                if !value.is_empty() {
                    security_headers.push((lower, value.clone()));
                }
            }
            if let Some(list) = &doc.remove_headers {
                remove_headers.clear();
                for (i, name) in list.iter().enumerate() {
                    let lower = name.to_ascii_lowercase();
                    if !header_name_ok(&lower) {
                        errors.push(ConfigError::new(
                            format!("responses.remove_headers[{i}]"),
                            format!("`{name}` is not a header Tollgate may remove"),
                        ));
                    } else if security_headers.iter().any(|(k, _)| *k == lower) {
                        errors.push(ConfigError::new(
                            format!("responses.remove_headers[{i}]"),
                            format!("`{name}` is also a security header Tollgate adds"),
                        ));
                    } else {
                        remove_headers.push(lower);
                    }
                }
            }
        }
        ResponsePolicy {
            security_headers,
            remove_headers,
            no_store_authenticated: doc.and_then(|d| d.no_store_authenticated).unwrap_or(true),
            mask_upstream_errors: doc.is_some_and(|d| d.mask_upstream_errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn compile(v: serde_json::Value) -> (ResponsePolicy, Vec<ConfigError>) {
        let doc: ResponsesDoc = serde_json::from_value(v).unwrap();
        let mut errors = vec![];
        (ResponsePolicy::compile(Some(&doc), &mut errors), errors)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn defaults() {
        let mut errors = vec![];
        let p = ResponsePolicy::compile(None, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(p.security_headers.len(), 5);
        assert!(p.remove_headers.contains(&"server".to_string()));
        assert!(p.no_store_authenticated);
        assert!(!p.mask_upstream_errors);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn overrides_and_switches_off() {
        let (p, errors) = compile(serde_json::json!({
            "security_headers": {"X-Frame-Options": "", "Permissions-Policy": "camera=()"},
            "remove_headers": ["Via"],
            "mask_upstream_errors": true
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(!p
            .security_headers
            .iter()
            .any(|(k, _)| k == "x-frame-options"));
        assert!(p
            .security_headers
            .contains(&("permissions-policy".into(), "camera=()".into())));
        assert_eq!(p.remove_headers, vec!["via".to_string()]);
        assert!(p.mask_upstream_errors);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refuses_framing_headers_and_bad_values() {
        let (_, errors) = compile(serde_json::json!({
            "security_headers": {"content-length": "1", "x-a": "bad\nvalue"},
            "remove_headers": ["content-type", "x-content-type-options"]
        }));
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "responses.security_headers.content-length",
                "responses.security_headers.x-a",
                "responses.remove_headers[0]",
                "responses.remove_headers[1]"
            ]
        );
    }
}
