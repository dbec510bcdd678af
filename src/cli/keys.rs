//! Credentials for trying a policy: signed tokens (`tollgate token`, and the tokens of `test`
//! cases), new API keys with their policy line (`tollgate api-key`), and the public JWK of a PEM
//! key (`tollgate jwk`).

use crate::jwt::Alg;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A key that signs tokens.
#[derive(Clone, Debug)]
pub enum SigningKey {
    /// PKCS#8 private key PEM text (EC P-256/384/521, RSA, Ed25519).
    Pem(String),
    /// HMAC secret bytes.
    Hmac(Vec<u8>),
}

/// A PEM key's algorithm family, found by trying each parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    P256,
    P384,
    P521,
    Rsa,
    Ed25519,
}

fn private_kind(pem: &str) -> Option<Kind> {
    use p521::pkcs8::DecodePrivateKey;
    if ES256KeyPair::from_pem(pem).is_ok() {
        Some(Kind::P256)
    } else if ES384KeyPair::from_pem(pem).is_ok() {
        Some(Kind::P384)
    } else if p521::SecretKey::from_pkcs8_pem(pem).is_ok() {
        Some(Kind::P521)
    } else if Ed25519KeyPair::from_pem(pem).is_ok() {
        Some(Kind::Ed25519)
    } else if RS256KeyPair::from_pem(pem).is_ok() {
        Some(Kind::Rsa)
    } else {
        None
    }
}

const NOT_A_KEY: &str =
    "not a PEM private key (PKCS#8: EC P-256, P-384, P-521, RSA or Ed25519); convert with `openssl pkcs8 -topk8 -nocrypt`";

/// The algorithm a key signs with when none is named.
pub fn default_alg(key: &SigningKey) -> Result<Alg, String> {
    Ok(match key {
        SigningKey::Hmac(_) => Alg::HS256,
        SigningKey::Pem(pem) => match private_kind(pem).ok_or(NOT_A_KEY)? {
            Kind::P256 => Alg::ES256,
            Kind::P384 => Alg::ES384,
            Kind::P521 => Alg::ES512,
            Kind::Rsa => Alg::RS256,
            Kind::Ed25519 => Alg::EdDSA,
        },
    })
}

/// Signs `claims` (already complete: `iat`, `exp` included) as a compact JWS.
pub fn sign(
    key: &SigningKey,
    alg: Alg,
    kid: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<String, String> {
    let typed: JWTClaims<Map<String, Value>> =
        serde_json::from_value(Value::Object(claims.clone()))
            .map_err(|e| format!("claims: {e}"))?;
    let pem = || match key {
        SigningKey::Pem(p) => Ok(p.as_str()),
        SigningKey::Hmac(_) => Err(format!("{alg} needs a PEM private key, not an hmac secret")),
    };
    let secret = || match key {
        SigningKey::Hmac(s) => Ok(s.as_slice()),
        SigningKey::Pem(_) => Err(format!("{alg} needs an hmac secret, not a PEM key")),
    };
    let failed = |e: jwt_simple::Error| format!("cannot sign with {alg}: {e}");
    macro_rules! pair {
        ($ty:ty) => {{
            let mut k =
                <$ty>::from_pem(pem()?).map_err(|_| format!("the key cannot sign {alg}"))?;
            if let Some(kid) = kid {
                k = k.with_key_id(kid);
            }
            k.sign(typed).map_err(failed)
        }};
    }
    macro_rules! mac {
        ($ty:ty) => {{
            let mut k = <$ty>::from_bytes(secret()?);
            if let Some(kid) = kid {
                k = k.with_key_id(kid);
            }
            k.authenticate(typed).map_err(failed)
        }};
    }
    match alg {
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
        // jwt-simple has no P-521; RustCrypto's p521 (as the engine's verifier) signs it.
        Alg::ES512 => {
            use p521::ecdsa::signature::Signer;
            use p521::pkcs8::DecodePrivateKey;
            let secret = p521::SecretKey::from_pkcs8_pem(pem()?)
                .map_err(|_| "the key cannot sign ES512".to_string())?;
            let sk = p521::ecdsa::SigningKey::from_slice(&secret.to_bytes())
                .map_err(|_| "the key cannot sign ES512".to_string())?;
            let mut header = Map::new();
            header.insert("typ".into(), Value::from("JWT"));
            header.insert("alg".into(), Value::from("ES512"));
            if let Some(kid) = kid {
                header.insert("kid".into(), Value::from(kid));
            }
            let header = Value::Object(header);
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
            );
            let sig: p521::ecdsa::Signature = sk.sign(input.as_bytes());
            Ok(format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(sig.to_bytes())
            ))
        }
    }
}

/// `claims` with `iat = now` and `exp = now + ttl` added where absent; `null` removes a claim.
pub fn with_times(claims: &Map<String, Value>, now: u64, ttl: i64) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("iat".into(), Value::from(now));
    out.insert("exp".into(), Value::from(now.saturating_add_signed(ttl)));
    for (k, v) in claims {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// `name=value`: the value as JSON when it parses (`roles=["admin"]`, `n=5`), else as text.
pub fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (k, v) = text
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not a claim; expected `name=value`"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::from(v));
    Ok((k.to_string(), value))
}

/// A new API key: `tgk_` and 32 random bytes from the OS, base64url (`make api-key`).
pub fn new_api_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(format!("tgk_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The policy line for a key, in the layout Python's `json.dumps` gives (the layout the docs show).
pub fn api_key_line(id: &str, key: &str, scopes: &[String], expires: Option<u64>) -> String {
    let q = |s: &str| Value::from(s).to_string();
    let scopes: Vec<String> = scopes.iter().map(|s| q(s)).collect();
    let mut line = format!(
        "{{\"id\": {}, \"sha256\": {}, \"scopes\": [{}]",
        q(id),
        q(&sha256_hex(key)),
        scopes.join(", ")
    );
    if let Some(t) = expires {
        line.push_str(&format!(", \"expires\": {}", q(&seconds_rfc3339(t))));
    }
    line.push('}');
    line
}

/// `2026-01-01T00:00:00Z`.
pub fn seconds_rfc3339(secs: u64) -> String {
    let with_ms = crate::engine::timefmt::rfc3339_millis(secs.saturating_mul(1000));
    with_ms.replace(".000Z", "Z")
}

/// The public JWK of a PEM key (private PKCS#8 or public SPKI), members in the usual order.
pub fn jwk(pem: &str, kid: Option<&str>, alg: Option<Alg>) -> Result<String, String> {
    let b = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let point = |uncompressed: &[u8], size: usize| -> Result<(String, String), String> {
        let x = uncompressed.get(1..1 + size).ok_or("bad point")?;
        let y = uncompressed
            .get(1 + size..1 + 2 * size)
            .ok_or("bad point")?;
        Ok((b(x), b(y)))
    };
    let mut members: Vec<(&str, String)> = Vec::new();
    let default_alg;
    if let Some(pk) = ES256KeyPair::from_pem(pem)
        .map(|k| k.public_key())
        .ok()
        .or_else(|| ES256PublicKey::from_pem(pem).ok())
    {
        let (x, y) = point(&pk.public_key().to_bytes_uncompressed(), 32)?;
        members.extend([("kty", "EC".into()), ("crv", "P-256".into())]);
        members.extend([("x", x), ("y", y)]);
        default_alg = Alg::ES256;
    } else if let Some(pk) = ES384KeyPair::from_pem(pem)
        .map(|k| k.public_key())
        .ok()
        .or_else(|| ES384PublicKey::from_pem(pem).ok())
    {
        let (x, y) = point(&pk.public_key().to_bytes_uncompressed(), 48)?;
        members.extend([("kty", "EC".into()), ("crv", "P-384".into())]);
        members.extend([("x", x), ("y", y)]);
        default_alg = Alg::ES384;
    } else if let Some(pk) = p521_public(pem) {
        use p521::elliptic_curve::sec1::ToEncodedPoint;
        let (x, y) = point(pk.to_encoded_point(false).as_bytes(), 66)?;
        members.extend([("kty", "EC".into()), ("crv", "P-521".into())]);
        members.extend([("x", x), ("y", y)]);
        default_alg = Alg::ES512;
    } else if let Some(pk) = Ed25519KeyPair::from_pem(pem)
        .map(|k| k.public_key())
        .ok()
        .or_else(|| Ed25519PublicKey::from_pem(pem).ok())
    {
        members.extend([("kty", "OKP".into()), ("crv", "Ed25519".into())]);
        members.push(("x", b(&pk.to_bytes())));
        default_alg = Alg::EdDSA;
    } else if let Some(c) = RS256KeyPair::from_pem(pem)
        .map(|k| k.public_key().to_components())
        .ok()
        .or_else(|| {
            RS256PublicKey::from_pem(pem)
                .ok()
                .map(|k| k.to_components())
        })
    {
        members.push(("kty", "RSA".into()));
        members.extend([("n", b(&c.n)), ("e", b(&c.e))]);
        default_alg = Alg::RS256;
    } else {
        return Err(
            "not a PEM key (PKCS#8 private or SPKI public: EC P-256, P-384, P-521, RSA or Ed25519)"
                .into(),
        );
    }
    let at = if members.first().is_some_and(|(_, v)| v == "RSA") {
        1
    } else {
        2
    };
    let mut head: Vec<(&str, String)> = Vec::new();
    if let Some(kid) = kid {
        head.push(("kid", kid.to_string()));
    }
    head.push(("use", "sig".into()));
    head.push(("alg", alg.unwrap_or(default_alg).to_string()));
    let tail = members.split_off(at);
    members.extend(head);
    members.extend(tail);
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("  {}: {}", Value::from(*k), Value::from(v.as_str())))
        .collect();
    Ok(format!("{{\n{}\n}}", body.join(",\n")))
}

fn p521_public(pem: &str) -> Option<p521::PublicKey> {
    use p521::pkcs8::{DecodePrivateKey, DecodePublicKey};
    p521::SecretKey::from_pkcs8_pem(pem)
        .map(|s| s.public_key())
        .ok()
        .or_else(|| p521::PublicKey::from_public_key_pem(pem).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Decision, Engine, Request};
    use crate::testkit;

    const DEMO_KEY: &str = include_str!("../../envoy/demo/demo-signing-key.pem");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/keys/{name}.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_demo_key_converts_to_the_policies_jwk() {
        let mine: Value =
            serde_json::from_str(&jwk(DEMO_KEY, Some("demo-1"), None).unwrap()).unwrap();
        let policy: Value = serde_json::from_str(include_str!("../../policies/demo.json")).unwrap();
        assert_eq!(mine, policy["providers"]["demo"]["jwks"]["keys"][0]);
        let text = jwk(DEMO_KEY, Some("demo-1"), None).unwrap();
        assert!(
            text.starts_with("{\n  \"kty\": \"EC\",\n  \"crv\": \"P-256\",\n  \"kid\": \"demo-1\""),
            "{text}"
        );
    }

    #[test]
    fn every_fixture_key_converts_to_its_published_jwk() {
        for (name, kid) in [
            ("ec256", "ec256"),
            ("ec384", "ec384"),
            ("ec521", "ec521"),
            ("rsa-1", "rsa-1"),
            ("ed25519", "ed25519"),
        ] {
            let mine: Value =
                serde_json::from_str(&jwk(&fixture(name), Some(kid), None).unwrap()).unwrap();
            let published = testkit::public_jwk(kid);
            for member in ["kty", "crv", "x", "y", "n", "e"] {
                assert_eq!(mine.get(member), published.get(member), "{name} {member}");
            }
        }
        assert!(jwk("-----BEGIN NOTHING-----", None, None).is_err());
    }

    #[test]
    fn minted_tokens_pass_the_engine() {
        let keys: Vec<Value> = [
            ("ec256", "ES256"),
            ("ec384", "ES384"),
            ("ec521", "ES512"),
            ("rsa-1", "RS256"),
            ("rsa-1", "PS384"),
            ("ed25519", "EdDSA"),
        ]
        .iter()
        .map(|(kid, _)| testkit::public_jwk(kid))
        .collect();
        let all_keys = [keys, vec![testkit::public_jwk("hmac")]].concat();
        let policy = serde_json::json!({
            "providers": {"t": {"issuer": "i", "audiences": ["a"], "algorithms": ["ES256", "ES384", "ES512", "RS256", "PS384", "EdDSA", "HS256"],
                "jwks": {"keys": all_keys}}},
            "routes": [{"name": "x", "path": "/x", "providers": ["t"]}]
        });
        let engine = Engine::compile(policy.to_string().as_bytes()).unwrap();
        let now = 1_800_000_000;
        let claims: Map<String, Value> = serde_json::from_value(
            serde_json::json!({"iss": "i", "aud": "a", "sub": "s", "roles": ["x"]}),
        )
        .unwrap();
        let hmac = testkit::public_jwk("hmac")["k"]
            .as_str()
            .unwrap()
            .to_string();
        let cases = [
            (SigningKey::Pem(fixture("ec256")), "ec256", None),
            (SigningKey::Pem(fixture("ec384")), "ec384", None),
            (SigningKey::Pem(fixture("ec521")), "ec521", None),
            (SigningKey::Pem(fixture("rsa-1")), "rsa-1", Some(Alg::PS384)),
            (SigningKey::Pem(fixture("ed25519")), "ed25519", None),
            (
                SigningKey::Hmac(URL_SAFE_NO_PAD.decode(hmac).unwrap()),
                "hmac",
                None,
            ),
        ];
        for (key, kid, alg) in cases {
            let alg = alg.unwrap_or_else(|| default_alg(&key).unwrap());
            let token = sign(&key, alg, Some(kid), &with_times(&claims, now, 60)).unwrap();
            let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
            let req = Request {
                method: "GET",
                path: "/x",
                headers: &headers,
                peer: None,
                connection: None,
            };
            let mut state = engine.new_state();
            let d = engine.decide(&req, now, &mut state).decision;
            assert!(matches!(d, Decision::Allow(_)), "{kid} {alg}: {d:?}");
        }
    }

    #[test]
    fn claims_times_and_api_keys() {
        let c: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"exp": null, "sub": "a"})).unwrap();
        let out = with_times(&c, 100, -5);
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"iat": 100, "sub": "a"})
        );
        assert_eq!(
            parse_claim("roles=[\"a\"]").unwrap().1,
            serde_json::json!(["a"])
        );
        assert_eq!(
            parse_claim("sub=alice").unwrap().1,
            serde_json::json!("alice")
        );
        assert!(parse_claim("=x").is_err());
        let key = new_api_key().unwrap();
        assert!(key.starts_with("tgk_") && key.len() == 47, "{key}");
        assert_ne!(key, new_api_key().unwrap());
        assert_eq!(
            api_key_line(
                "r",
                "demo-key-reporting-2026q1",
                &["orders:read".into()],
                Some(1_767_225_600)
            ),
            r#"{"id": "r", "sha256": "24287b7a9bd50a24fe329a091100036bce6d0bbb3b1a6a21391428f7ebe5d76f", "scopes": ["orders:read"], "expires": "2026-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            api_key_line("r", "k", &[], None)
                .matches("\"scopes\": []")
                .count(),
            1
        );
    }
}
