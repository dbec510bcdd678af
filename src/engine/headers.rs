//! Request headers that would let a client change what the upstream sees after Tollgate judged
//! the request: spellings of protected headers that upstream frameworks fold into the protected
//! name, and method/URL override headers.

use crate::policy::{ConfigError, RequestsDoc};

/// Headers with which frameworks (Rails, Symfony, ASP.NET, Express middlewares, IIS rewrite)
/// replace the method or the URL after routing: a request authorised as `POST /public` could be
/// served as `DELETE /admin`.
pub const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// What happens to a request carrying an override header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideAction {
    /// Removed before the upstream (default).
    Strip,
    /// Refused with `400 request_ambiguous`.
    Refuse,
    /// Passed on (only for upstreams known to ignore them).
    Allow,
}

impl OverrideAction {
    pub fn compile(doc: Option<&RequestsDoc>, errors: &mut Vec<ConfigError>) -> OverrideAction {
        match doc.and_then(|d| d.override_headers.as_deref()) {
            None | Some("strip") => OverrideAction::Strip,
            Some("refuse") => OverrideAction::Refuse,
            Some("allow") => OverrideAction::Allow,
            Some(other) => {
                errors.push(ConfigError::new(
                    "requests.override_headers",
                    format!(
                        "`{other}` is not an action; expected one of [`strip`, `refuse`, `allow`]"
                    ),
                ));
                OverrideAction::Strip
            }
        }
    }
}

/// Whether a framework would read header `sent` as `protected` (lowercase, dashes): CGI, WSGI,
/// PHP and Rack expose both `x-user-id` and `x_user_id` as `HTTP_X_USER_ID`.
pub fn folds_to(sent: &str, protected: &str) -> bool {
    sent.len() == protected.len()
        && sent.bytes().zip(protected.bytes()).all(|(s, p)| {
            s.eq_ignore_ascii_case(&p) || (s == b'_' && p == b'-') || (s == b'-' && p == b'_')
        })
}

/// A request header `name` that is a variant spelling (not the exact name, which the host
/// removes itself) of one of `protected`.
pub fn is_variant_of(name: &str, protected: &[String]) -> bool {
    // Cheap path first: Envoy lowercases header names, so only an underscore or an uppercase
    // letter can make a variant.
    name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase())
        && protected.iter().any(|p| p != name && folds_to(name, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn variants_fold_like_cgi() {
        let protected = vec!["x-tollgate-principal".to_string(), "x-user-id".to_string()];
        for v in [
            "x_tollgate_principal",
            "X_Tollgate_Principal",
            "x-tollgate_principal",
            "X-USER-ID",
            "x_user-id",
        ] {
            assert!(is_variant_of(v, &protected), "{v}");
        }
        for v in [
            "x-tollgate-principal",
            "x-user-id",
            "x-user-ids",
            "x_user_idx",
            "x-userid",
            "x.user.id",
        ] {
            assert!(!is_variant_of(v, &protected), "{v}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn override_action_names_the_field() {
        let doc: RequestsDoc =
            serde_json::from_value(serde_json::json!({"override_headers": "drop"})).unwrap();
        let mut errors = vec![];
        assert_eq!(
            OverrideAction::compile(Some(&doc), &mut errors),
            OverrideAction::Strip
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "requests.override_headers");
        assert!(
            errors[0].message.contains("`strip`, `refuse`, `allow`"),
            "{}",
            errors[0].message
        );
    }
}
