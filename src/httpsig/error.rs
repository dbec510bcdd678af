//! The one error type of HTTP message signatures and content digests. Messages are short,
//! lowercase, name what was refused and never carry signature, digest or key bytes: what a client
//! sent appears only as labels, component identifiers and algorithm names, which the structured
//! field parser has already limited to printable ASCII, and those are cut to [`ECHO_MAX`]
//! characters.

use std::fmt;

/// Longest piece of client input an error repeats.
pub const ECHO_MAX: usize = 64;

/// Why a signature or a content digest was not accepted, or a key not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigError {
    /// `Signature-Input`, `Signature` or `Content-Digest` is not a valid structured field, or not
    /// shaped the way RFC 9421 / RFC 9530 require.
    Malformed {
        field: &'static str,
        reason: &'static str,
    },
    /// A label present in one of `Signature-Input` / `Signature` but not the other, or asked for
    /// and present in neither.
    MissingLabel { label: String, field: &'static str },
    /// More signatures, covered components or digests than this implementation looks at.
    TooMany { what: &'static str, max: usize },
    /// A covered component that cannot be resolved for this request: unknown, refused
    /// parameter, listed twice, absent from the request, or a value a signature base cannot hold.
    Component {
        component: String,
        reason: &'static str,
    },
    /// The request view itself cannot give a derived component (for example an authority that
    /// is not `host[:port]`).
    Request(&'static str),
    /// An algorithm name this implementation does not verify or sign with.
    UnsupportedAlgorithm(String),
    /// The signature's `alg` parameter names another algorithm than the key's.
    AlgorithmMismatch {
        key: &'static str,
        signature: String,
    },
    /// The signature's `keyid` parameter names another key than the one it was checked with.
    KeyIdMismatch,
    /// A key could not be loaded; `reason` names the JWK member at fault, never its value.
    Key { kid: String, reason: String },
    /// The signature does not verify over the signature base with this key.
    InvalidSignature,
    /// A value given to `sign` cannot be serialised (label, nonce, tag, key id).
    Parameter {
        name: &'static str,
        reason: &'static str,
    },
    /// The request lacks a field this check needs (`content-digest`).
    MissingField(&'static str),
    /// `Content-Digest` names no algorithm this implementation checks (`sha-256`, `sha-512`).
    NoSupportedDigest,
    /// A `Content-Digest` value does not match the body.
    DigestMismatch(&'static str),
}

/// `s` cut to [`ECHO_MAX`] characters, with `...` when cut.
pub(crate) fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX) {
        Some((at, _)) => format!("{}...", s.get(..at).unwrap_or_default()),
        None => s.to_string(),
    }
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::Malformed { field, reason } => write!(f, "`{field}` is malformed: {reason}"),
            SigError::MissingLabel { label, field } => {
                write!(f, "signature `{label}` has no `{field}` member")
            }
            SigError::TooMany { what, max } => write!(f, "more than {max} {what}"),
            SigError::Component { component, reason } => {
                write!(f, "covered component `{component}`: {reason}")
            }
            SigError::Request(reason) => write!(f, "request: {reason}"),
            SigError::UnsupportedAlgorithm(alg) => write!(
                f,
                "algorithm `{alg}` is not accepted; expected one of [`hmac-sha256`, `ed25519`, \
                 `ecdsa-p256-sha256`, `rsa-pss-sha512`]"
            ),
            SigError::AlgorithmMismatch { key, signature } => write!(
                f,
                "signature names algorithm `{signature}`, its key is for `{key}`"
            ),
            SigError::KeyIdMismatch => write!(f, "signature names another key id"),
            SigError::Key { kid, reason } => write!(f, "key `{kid}`: {reason}"),
            SigError::InvalidSignature => write!(f, "signature does not verify"),
            SigError::Parameter { name, reason } => write!(f, "`{name}`: {reason}"),
            SigError::MissingField(field) => write!(f, "the request has no `{field}` field"),
            SigError::NoSupportedDigest => {
                write!(f, "`content-digest` has no `sha-256` or `sha-512` member")
            }
            SigError::DigestMismatch(alg) => {
                write!(f, "`content-digest` `{alg}` does not match the body")
            }
        }
    }
}

impl std::error::Error for SigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn echo_cuts_long_input() {
        assert_eq!(echo("sig1"), "sig1");
        let long = "a".repeat(200);
        assert_eq!(echo(&long), format!("{}...", "a".repeat(ECHO_MAX)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn messages_are_lowercase_and_name_the_input() {
        let e = SigError::Component {
            component: "\"@status\"".into(),
            reason: "applies to responses only",
        };
        assert_eq!(
            e.to_string(),
            "covered component `\"@status\"`: applies to responses only"
        );
        assert!(SigError::UnsupportedAlgorithm("rsa-v1_5-sha256".into())
            .to_string()
            .starts_with("algorithm `rsa-v1_5-sha256` is not accepted"));
    }
}
