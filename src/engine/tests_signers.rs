//! Signed requests (RFC 9421) through whole decisions: the credential, what it must cover, its
//! age, its nonce across calls (one shared store), the body bound by `Content-Digest`, and the
//! configuration errors. The signatures are made with `httpsig::sign`; an independent
//! implementation signs the end-to-end ones (tests/e2e/test_signatures.py).

use super::*;
use crate::codes::DenialCode;
use crate::httpsig::{self, Component, DigestAlgorithm, SignParams, SignedRequest, SigningKey};
use crate::store::MemoryStore;
use serde_json::json;
use wasm_bindgen_test::wasm_bindgen_test;

/// 2026-12-01T00:00:00Z, in ms.
const NOW_MS: u64 = 1_796_083_200_000;
/// 32 bytes, base64url.
const SECRET: &str = "c2lnbmVkLXJlcXVlc3RzLWFyZS1jcmVkZW50aWFscy0x";
const API_KEY: &str = "key-beside-a-signature";

fn policy(extra: serde_json::Value) -> serde_json::Value {
    let mut signer = json!({
        "keys": {"keys": [{"kty": "oct", "kid": "h1", "k": SECRET}]},
        "algorithms": ["hmac-sha256"],
        "max_age_seconds": 60
    });
    if let (Some(s), Some(e)) = (signer.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(API_KEY.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    json!({
        "signers": {"partner": signer},
        "api_keys": {"keys": [{"id": "k", "sha256": hash}]},
        "routes": [
            {"name": "signed", "prefix": "/signed", "signers": ["partner"]},
            {"name": "either", "prefix": "/either", "signers": ["partner"], "api_keys": true}
        ]
    })
}

fn engine(extra: serde_json::Value) -> Engine {
    Engine::compile(policy(extra).to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

struct Msg {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
}

fn key() -> SigningKey {
    SigningKey::from_jwk(&json!({"kty": "oct", "kid": "h1", "k": SECRET})).unwrap()
}

/// A request to `path`, signed over `components` (and `Content-Digest` of `body`, if any).
fn signed(method: &'static str, path: &str, body: Option<&[u8]>, components: &[&str]) -> Msg {
    signed_with(method, path, body, components, NOW_MS / 1000, Some("n-1"))
}

fn signed_with(
    method: &'static str,
    path: &str,
    body: Option<&[u8]>,
    components: &[&str],
    created: u64,
    nonce: Option<&str>,
) -> Msg {
    signed_by(&key(), method, path, body, components, created, nonce)
}

fn signed_by(
    key: &SigningKey,
    method: &'static str,
    path: &str,
    body: Option<&[u8]>,
    components: &[&str],
    created: u64,
    nonce: Option<&str>,
) -> Msg {
    let mut headers = vec![
        (":authority".to_string(), "api.example".to_string()),
        (":scheme".to_string(), "https".to_string()),
    ];
    let mut names: Vec<&str> = components.to_vec();
    if let Some(b) = body {
        headers.push(("content-length".into(), b.len().to_string()));
        headers.push((
            "content-digest".into(),
            httpsig::content_digest(DigestAlgorithm::Sha256, b),
        ));
        names.push("content-digest");
    }
    let comps: Vec<Component> = names.iter().map(|c| Component::parse(c).unwrap()).collect();
    let view = SignedRequest {
        method,
        scheme: "https",
        authority: "api.example",
        path_and_query: path,
        headers: &headers,
    };
    let params = SignParams {
        created: Some(created),
        keyid: Some(key.kid()),
        alg: true,
        nonce,
        ..SignParams::default()
    };
    let out = httpsig::sign(&view, "sig1", &comps, &params, key).unwrap();
    headers.push(("signature-input".into(), out.signature_input));
    headers.push(("signature".into(), out.signature));
    Msg {
        method,
        path: path.to_string(),
        headers,
    }
}

const ALL: [&str; 3] = ["@method", "@target-uri", "@authority"];

fn decide(e: &Engine, m: &Msg, store: &MemoryStore) -> Outcome {
    decide_in(e, m, store, &mut e.new_state())
}

fn decide_in(e: &Engine, m: &Msg, store: &MemoryStore, state: &mut VmState) -> Outcome {
    e.decide_at(
        &Request {
            method: m.method,
            path: &m.path,
            headers: &m.headers,
            peer: None,
            connection: None,
        },
        NOW_MS,
        state,
        store,
    )
}

fn code(o: &Outcome) -> Option<DenialCode> {
    match &o.decision {
        Decision::Deny(d) | Decision::WouldDeny(d) => Some(d.code),
        Decision::Allow(_) => None,
    }
}

fn allow(o: Outcome) -> Allow {
    match o.decision {
        Decision::Allow(a) => a,
        other => panic!("{other:?}"),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_signed_request_names_its_signer_and_key() {
    let e = engine(json!({}));
    let a = allow(decide(
        &e,
        &signed("GET", "/signed/7?x=1", None, &ALL),
        &MemoryStore::default(),
    ));
    assert_eq!(a.principal.as_deref(), Some("sig:partner:h1"));
    // No body may follow: the signature covers none.
    let check = a
        .body_check
        .expect("signed requests are held for their body");
    assert!(check.digest && check.rules.is_none());
    assert!(e.check_request_body(check, "signed", None, b"").is_ok());
    let late = e
        .check_request_body(check, "signed", None, b"{}")
        .unwrap_err();
    assert_eq!(late.code, DenialCode::ContentDigestMismatch);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_changed_request_is_refused() {
    let e = engine(json!({}));
    let store = MemoryStore::default();
    let mut m = signed("GET", "/signed/7?x=1", None, &ALL);
    m.path = "/signed/8?x=1".into();
    assert_eq!(
        code(&decide(&e, &m, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
    let mut m = signed("GET", "/signed/7?x=1", None, &ALL);
    m.method = "DELETE";
    assert_eq!(
        code(&decide(&e, &m, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
    let mut m = signed("GET", "/signed/7?x=1", None, &ALL);
    m.headers[0].1 = "evil.example".into();
    assert_eq!(
        code(&decide(&e, &m, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn required_components_time_and_nonce() {
    let e = engine(json!({}));
    let store = MemoryStore::default();
    let partial = signed("GET", "/signed", None, &["@method", "@target-uri"]);
    assert_eq!(
        code(&decide(&e, &partial, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
    let now = NOW_MS / 1000;
    for created in [now - 200, now + 200] {
        let m = signed_with("GET", "/signed", None, &ALL, created, Some("n-t"));
        assert_eq!(
            code(&decide(&e, &m, &store)),
            Some(DenialCode::MessageSignatureExpired)
        );
    }
    // Within the clock skew (60 s) past the maximum age (60 s).
    let m = signed_with("GET", "/signed", None, &ALL, now - 100, Some("n-skew"));
    assert_eq!(code(&decide(&e, &m, &store)), None);
    let m = signed_with("GET", "/signed", None, &ALL, now, None);
    assert_eq!(
        code(&decide(&e, &m, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
    let lax = engine(json!({"require_nonce": false}));
    assert_eq!(code(&decide(&lax, &m, &store)), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_nonce_is_used_once() {
    let e = engine(json!({}));
    let store = MemoryStore::default();
    let m = signed("GET", "/signed", None, &ALL);
    assert_eq!(code(&decide(&e, &m, &store)), None);
    assert_eq!(
        code(&decide(&e, &m, &store)),
        Some(DenialCode::MessageSignatureReplayed)
    );
    // A forged signature never takes a nonce: the genuine one still passes once.
    let fresh = signed_with("GET", "/signed", None, &ALL, NOW_MS / 1000, Some("n-2"));
    let mut forged = signed_with("GET", "/signed/x", None, &ALL, NOW_MS / 1000, Some("n-2"));
    forged.headers.retain(|(k, _)| k != "signature");
    forged.headers.extend(
        fresh
            .headers
            .iter()
            .filter(|(k, _)| k == "signature")
            .cloned(),
    );
    assert_eq!(
        code(&decide(&e, &forged, &store)),
        Some(DenialCode::MessageSignatureInvalid)
    );
    assert_eq!(code(&decide(&e, &fresh, &store)), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_body_is_bound_by_the_signed_digest() {
    let e = engine(json!({}));
    let body = br#"{"amount": 10}"#;
    let a = allow(decide(
        &e,
        &signed("POST", "/signed", Some(body), &ALL),
        &MemoryStore::default(),
    ));
    let check = a.body_check.unwrap();
    let digest = a.content_digest.as_deref();
    assert!(digest.is_some());
    assert!(e.check_request_body(check, "signed", digest, body).is_ok());
    let other = e
        .check_request_body(check, "signed", digest, br#"{"amount": 99}"#)
        .unwrap_err();
    assert_eq!(other.code, DenialCode::ContentDigestMismatch);
    // A body the signature does not bind is refused before it is read.
    let mut m = signed("POST", "/signed", None, &ALL);
    m.headers.push(("content-length".into(), "14".into()));
    assert_eq!(
        code(&decide(&e, &m, &MemoryStore::default())),
        Some(DenialCode::MessageSignatureInvalid)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn one_credential_at_a_time() {
    let e = engine(json!({}));
    let store = MemoryStore::default();
    let none = Msg {
        method: "GET",
        path: "/signed".into(),
        headers: vec![(":authority".into(), "api.example".into())],
    };
    assert_eq!(
        code(&decide(&e, &none, &store)),
        Some(DenialCode::MessageSignatureMissing)
    );
    let mut both = signed("GET", "/either", None, &ALL);
    both.headers.push(("x-api-key".into(), API_KEY.into()));
    assert_eq!(
        code(&decide(&e, &both, &store)),
        Some(DenialCode::MultipleTokens)
    );
    let mut key_only = none;
    key_only.path = "/either".into();
    key_only.headers.push(("x-api-key".into(), API_KEY.into()));
    assert_eq!(code(&decide(&e, &key_only, &store)), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn configuration_mistakes_are_named() {
    let bad = json!({
        "signers": {
            "a": {"keys": {"keys": [{"kty": "oct", "kid": "h", "k": SECRET}]},
                  "algorithms": ["rsa-v1_5-sha256"]},
            "b": {"keys": {"keys": [{"kty": "oct", "kid": "h", "k": SECRET}]},
                  "algorithms": ["ed25519"], "components": ["@method", "@path"]},
            "c": {"keys": {"keys": [{"kty": "oct", "kid": "h", "k": "c2hvcnQ"}]},
                  "algorithms": ["hmac-sha256"], "max_age_seconds": 0}
        },
        "routes": [{"path": "/x", "signers": ["d"]}]
    });
    let errors = Engine::compile(bad.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "signers.a.algorithms[0]",
            "signers.b.keys.keys[0]",
            "signers.b.components",
            "signers.c.keys.keys[0]",
            "signers.c.max_age_seconds",
            "routes[0].signers[0]",
        ],
        "{errors:#?}"
    );
    // Key material never appears in a message.
    assert!(errors.iter().all(|e| !e.message.contains(SECRET)));
}

/// The demo partner's Ed25519 key (public and private halves), as envoy/demo ships it.
const PARTNER_JWK: &str = include_str!("../../envoy/demo/partner-signing-key.jwk.json");

#[wasm_bindgen_test(unsupported = test)]
fn remote_keys_are_fetched_before_they_are_trusted() {
    let p = json!({
        "signers": {"partner": {
            "remote_keys": {"cluster": "keys", "uri": "http://keys.test/partner.json"},
            "algorithms": ["ed25519"]
        }},
        "routes": [{"name": "signed", "prefix": "/signed", "signers": ["partner"]}]
    });
    let e = Engine::compile(p.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"));
    let private: serde_json::Value = serde_json::from_str(PARTNER_JWK).unwrap();
    let partner = SigningKey::from_jwk(&private).unwrap();
    let msg = |key: &SigningKey, nonce| {
        signed_by(
            key,
            "GET",
            "/signed/1",
            None,
            &ALL,
            NOW_MS / 1000,
            Some(nonce),
        )
    };
    let store = MemoryStore::default();
    let mut state = e.new_state();

    // Nothing fetched yet: the request waits for the keys, it is not called forged.
    let out = decide_in(&e, &msg(&partner, "n-1"), &store, &mut state);
    assert_eq!(code(&out), Some(DenialCode::KeysUnavailable));

    // The fetch a tick makes, answered with the public half (and a key it cannot use).
    let (index, _, spec) = e.remote_signers().next().unwrap();
    assert!(
        spec.key_prefix.contains("/signer-keys/"),
        "{}",
        spec.key_prefix
    );
    let mut public = private.clone();
    public.as_object_mut().unwrap().remove("d");
    let other = json!({"kty": "oct", "kid": "shared", "k": SECRET});
    let body = json!({"keys": [public, other]}).to_string();
    let signer = &e.signers()[index];
    assert!(signer
        .parse_keys(b"{\"keys\": [{\"kty\": \"oct\"}]}")
        .is_err());
    assert!(crate::jwt::remote::claim_fetch(&store, spec, NOW_MS / 1000).unwrap());
    crate::jwt::remote::complete_fetch_with(
        &store,
        spec,
        &|b: &[u8]| signer.parse_keys(b),
        NOW_MS / 1000,
        Ok(body.as_bytes()),
        &mut state.signer_keys[index],
    )
    .unwrap()
    .unwrap();
    let keys = &state.signer_keys[index].as_ref().unwrap().keys;
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["partner-2026"]);

    let a = allow(decide_in(&e, &msg(&partner, "n-2"), &store, &mut state));
    assert_eq!(a.principal.as_deref(), Some("sig:partner:partner-2026"));

    // A key the set does not hold: refused, and an early refresh is asked for (rotation).
    let mut stranger = private.clone();
    stranger["kid"] = json!("partner-2027");
    let stranger = SigningKey::from_jwk(&stranger).unwrap();
    let out = decide_in(&e, &msg(&stranger, "n-3"), &store, &mut state);
    assert_eq!(code(&out), Some(DenialCode::MessageSignatureInvalid));
    assert_eq!(
        out.effects.early_refresh,
        Some(refresh::Source::Signer(index))
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_signer_has_one_source_of_public_keys() {
    let remote = json!({"cluster": "keys", "uri": "http://keys.test/k.json"});
    let bad = json!({
        "signers": {
            "both": {"keys": {"keys": [{"kty": "oct", "kid": "h", "k": SECRET}]},
                     "remote_keys": remote, "algorithms": ["hmac-sha256"]},
            "none": {"algorithms": ["ed25519"]},
            "secret": {"remote_keys": remote, "algorithms": ["hmac-sha256"]}
        },
        "routes": [{"path": "/x", "signers": ["both", "none", "secret"]}]
    });
    let errors = Engine::compile(bad.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["signers.both", "signers.none", "signers.secret.algorithms"],
        "{errors:#?}"
    );
}
