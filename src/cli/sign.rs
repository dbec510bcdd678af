//! Signing requests (RFC 9421) for `tollgate sign` and the `signature` of case files: the CLI's
//! way to make the requests a policy with `signers` accepts, with the engine's own signature code.

use super::request::Spec;
use crate::httpsig::{self, Component, DigestAlgorithm, SignParams, SignedRequest, SigningKey};
use std::path::Path;

/// Components signed when none are named (the signers' default requirement).
pub const DEFAULT_COMPONENTS: [&str; 3] = crate::engine::signers::DEFAULT_COMPONENTS;

/// How to sign one request.
pub struct Options {
    pub key: SigningKey,
    pub components: Vec<String>,
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: Option<u64>,
    pub nonce: Option<String>,
    /// Written instead of the key's `kid`.
    pub keyid: Option<String>,
    pub tag: Option<String>,
    /// Add `Content-Digest` (sha-256) and cover it when the request has a body.
    pub digest: bool,
}

/// A private JWK (with `kid`) from a file.
pub fn read_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("signature key `{}`: {e}", path.display()))?;
    let jwk: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("signature key `{}`: not a JWK: {e}", path.display()))?;
    SigningKey::from_jwk(&jwk).map_err(|e| format!("signature key `{}`: {e}", path.display()))
}

/// 16 random bytes from the OS, base64url.
pub fn random_nonce() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Signs `spec` as Envoy will present it (`Spec::envoy_headers`): adds `content-digest` (for a
/// body, unless `digest` is off), `signature-input` and `signature` to its headers.
pub fn sign(spec: &mut Spec, opts: &Options) -> Result<(), String> {
    let mut names = opts.components.clone();
    if let (Some(body), true) = (&spec.body, opts.digest) {
        spec.headers.push((
            "content-digest".into(),
            httpsig::content_digest(DigestAlgorithm::Sha256, body),
        ));
        if !names.iter().any(|n| n == "content-digest") {
            names.push("content-digest".into());
        }
    }
    let components = names
        .iter()
        .map(|n| Component::parse(n).map_err(|e| format!("component `{n}`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let headers = spec.envoy_headers();
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let view = SignedRequest {
        method: &spec.method,
        scheme: pseudo(":scheme"),
        authority: pseudo(":authority"),
        path_and_query: &spec.path,
        headers: &headers,
    };
    let params = SignParams {
        created: Some(opts.created),
        keyid: Some(opts.keyid.as_deref().unwrap_or(opts.key.kid())),
        alg: true,
        expires: opts.expires,
        nonce: opts.nonce.as_deref(),
        tag: opts.tag.as_deref(),
    };
    let out = httpsig::sign(&view, &opts.label, &components, &params, &opts.key)
        .map_err(|e| format!("cannot sign: {e}"))?;
    spec.headers
        .push(("signature-input".into(), out.signature_input));
    spec.headers.push(("signature".into(), out.signature));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use serde_json::json;

    const SECRET: &str = "c2lnbmVkLXJlcXVlc3RzLWFyZS1jcmVkZW50aWFscy0x";

    fn options(created: u64) -> Options {
        Options {
            key: SigningKey::from_jwk(&json!({"kty": "oct", "kid": "h1", "k": SECRET})).unwrap(),
            components: DEFAULT_COMPONENTS.iter().map(|c| c.to_string()).collect(),
            label: "sig1".into(),
            created,
            expires: None,
            nonce: Some("n".into()),
            keyid: None,
            tag: None,
            digest: true,
        }
    }

    #[test]
    fn a_signed_spec_passes_the_engine_with_its_body_bound() {
        let policy = json!({
            "signers": {"p": {"keys": {"keys": [{"kty": "oct", "kid": "h1", "k": SECRET}]},
                              "algorithms": ["hmac-sha256"]}},
            "routes": [{"path": "/x", "signers": ["p"]}]
        });
        let engine = Engine::compile(policy.to_string().as_bytes()).unwrap();
        let now = 1_796_083_200;
        let mut spec = Spec {
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(b"{}".to_vec()),
            ..Spec::default()
        };
        sign(&mut spec, &options(now)).unwrap();
        assert!(spec.headers.iter().any(|(k, _)| k == "content-digest"));
        let mut session = super::super::request::Session::new(&engine, &[]).unwrap();
        let verdict = session.decide(&spec, now * 1000);
        assert!(verdict.allowed(), "{verdict:?}");
        // The same signature over another body: the digest does not match.
        let mut other = spec.clone();
        other.body = Some(b"[]".to_vec());
        let mut session = super::super::request::Session::new(&engine, &[]).unwrap();
        assert!(!session.decide(&other, now * 1000).allowed());
    }
}
