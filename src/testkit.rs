//! Test-only helpers: the TEST-ONLY key fixtures in `tests/fixtures/keys/` and a token minter whose
//! builder methods each break or set one property.

use crate::jwt::Alg;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "api.test";

pub const PUBLIC_JWKS: &str = include_str!("../tests/fixtures/keys/public.jwks.json");
const PRIVATE_JWKS: &str = include_str!("../tests/fixtures/keys/private.jwks.json");

/// One fixture key per algorithm.
pub const ALG_KEYS: [(Alg, &str); 13] = [
    (Alg::HS256, "hmac"),
    (Alg::HS384, "hmac"),
    (Alg::HS512, "hmac"),
    (Alg::RS256, "rsa-1"),
    (Alg::RS384, "rsa-1"),
    (Alg::RS512, "rsa-1"),
    (Alg::PS256, "rsa-1"),
    (Alg::PS384, "rsa-1"),
    (Alg::PS512, "rsa-1"),
    (Alg::ES256, "ec256"),
    (Alg::ES384, "ec384"),
    (Alg::ES512, "ec521"),
    (Alg::EdDSA, "ed25519"),
];

fn pem(kid: &str) -> &'static str {
    match kid {
        "rsa-1" => include_str!("../tests/fixtures/keys/rsa-1.pem"),
        "rsa-2" => include_str!("../tests/fixtures/keys/rsa-2.pem"),
        "ec256" => include_str!("../tests/fixtures/keys/ec256.pem"),
        "ec384" => include_str!("../tests/fixtures/keys/ec384.pem"),
        "ed25519" => include_str!("../tests/fixtures/keys/ed25519.pem"),
        // The public demo key of policies/demo.json and policies/orders.json.
        "demo-1" => include_str!("../envoy/demo/demo-signing-key.pem"),
        other => panic!("no pem fixture {other}"),
    }
}

pub fn public_jwks() -> Vec<Value> {
    let doc: Value = serde_json::from_str(PUBLIC_JWKS).unwrap();
    doc["keys"].as_array().unwrap().clone()
}

pub fn public_jwk(kid: &str) -> Value {
    public_jwks().into_iter().find(|k| k["kid"] == kid).unwrap()
}

fn private_member(kid: &str, member: &str) -> Vec<u8> {
    let doc: Value = serde_json::from_str(PRIVATE_JWKS).unwrap();
    let key = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap();
    URL_SAFE_NO_PAD
        .decode(key[member].as_str().unwrap())
        .unwrap()
}

/// Builds and signs a token. Defaults: issuer, audience, `sub = alice`, `iat = now`, `exp = now + 3600`.
pub struct Mint {
    alg: Alg,
    kid: Option<String>,
    signing_kid: String,
    claims: Map<String, Value>,
}

impl Mint {
    pub fn new(alg: Alg, kid: &str) -> Mint {
        Mint {
            alg,
            kid: Some(kid.into()),
            signing_kid: kid.into(),
            claims: Map::new(),
        }
        .claim("iss", json!(ISSUER))
        .claim("aud", json!(AUDIENCE))
        .claim("sub", json!("alice"))
    }
    /// A token from the demo issuer (`policies/demo.json`, `policies/orders.json`).
    pub fn demo(now: u64) -> Mint {
        Mint::new(Alg::ES256, "demo-1")
            .claim("iss", json!("https://demo.tollgate.local"))
            .claim("aud", json!("demo-api"))
            .now(now)
    }
    pub fn now(self, now: u64) -> Mint {
        self.iat(now).exp(now + 3600)
    }
    pub fn claim(mut self, name: &str, value: Value) -> Mint {
        self.claims.insert(name.into(), value);
        self
    }
    pub fn without(mut self, name: &str) -> Mint {
        self.claims.remove(name);
        self
    }
    pub fn exp(self, t: u64) -> Mint {
        self.claim("exp", json!(t))
    }
    pub fn nbf(self, t: u64) -> Mint {
        self.claim("nbf", json!(t))
    }
    pub fn iat(self, t: u64) -> Mint {
        self.claim("iat", json!(t))
    }
    /// Sign with another fixture key while keeping the header's `kid`.
    pub fn key(mut self, signing_kid: &str) -> Mint {
        self.signing_kid = signing_kid.into();
        self
    }
    pub fn no_kid(mut self) -> Mint {
        self.kid = None;
        self
    }

    pub fn sign(&self) -> String {
        // ES512 signs the raw claims, so tests can send values jwt-simple would not build.
        let claims = || -> JWTClaims<Map<String, Value>> {
            serde_json::from_value(Value::Object(self.claims.clone())).unwrap()
        };
        let kid = self.kid.clone();
        let k = self.signing_kid.as_str();
        macro_rules! pair {
            ($ty:ty) => {{
                let mut key = <$ty>::from_pem(pem(k)).unwrap();
                if let Some(kid) = &kid {
                    key = key.with_key_id(kid);
                }
                key.sign(claims()).unwrap()
            }};
        }
        macro_rules! mac {
            ($ty:ty) => {{
                let mut key = <$ty>::from_bytes(&private_member("hmac", "k"));
                if let Some(kid) = &kid {
                    key = key.with_key_id(kid);
                }
                key.authenticate(claims()).unwrap()
            }};
        }
        match self.alg {
            Alg::HS256 => mac!(HS256Key),
            Alg::HS384 => mac!(HS384Key),
            Alg::HS512 => mac!(HS512Key),
            Alg::RS256 => pair!(RS256KeyPair),
            Alg::RS384 => pair!(RS384KeyPair),
            Alg::RS512 => pair!(RS512KeyPair),
            Alg::PS256 => pair!(PS256KeyPair),
            Alg::PS384 => pair!(PS384KeyPair),
            Alg::PS512 => pair!(PS512KeyPair),
            Alg::ES256 => pair!(ES256KeyPair),
            Alg::ES384 => pair!(ES384KeyPair),
            Alg::EdDSA => pair!(Ed25519KeyPair),
            Alg::ES512 => {
                let mut header = json!({"alg": "ES512", "typ": "JWT"});
                if let Some(kid) = &kid {
                    header["kid"] = json!(kid);
                }
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string())
                );
                use p521::ecdsa::signature::Signer;
                let sk = p521::ecdsa::SigningKey::from_slice(&private_member(k, "d")).unwrap();
                let sig: p521::ecdsa::Signature = sk.sign(input.as_bytes());
                format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
            }
        }
    }
}

/// Replaces payload claims without re-signing.
pub fn tamper_payload(token: &str, changes: Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    for (k, v) in changes.as_object().unwrap() {
        payload[k] = v.clone();
    }
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    )
}

/// A token with an arbitrary header and payload and a garbage signature.
pub fn unsigned(header: Value, payload: Value) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}
