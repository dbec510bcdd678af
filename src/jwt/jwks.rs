//! JSON Web Key Sets (RFC 7517) decoded into verifiers, once, at configure time or when a remote
//! JWKS arrives; indexed by `kid` so a request picks its key without scanning.

use super::alg::{Alg, Family};
use super::es512::Es512Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::Value;
use std::collections::HashMap;

/// Shortest HMAC secret for an algorithm: RFC 7518 section 3.2 requires a key at least as long as
/// the hash output.
pub const fn min_hmac_key_bytes(alg: Alg) -> usize {
    match alg {
        Alg::HS384 => 48,
        Alg::HS512 => 64,
        _ => 32,
    }
}
/// Upper bound on keys in one set, so a hostile or broken JWKS endpoint cannot make a worker
/// decode thousands of RSA keys.
pub const MAX_KEYS_PER_SET: usize = 64;

/// One decoded public key (or HMAC secret) ready to verify one algorithm.
pub enum Verifier {
    HS256(HS256Key),
    HS384(HS384Key),
    HS512(HS512Key),
    RS256(RS256PublicKey),
    RS384(RS384PublicKey),
    RS512(RS512PublicKey),
    PS256(PS256PublicKey),
    PS384(PS384PublicKey),
    PS512(PS512PublicKey),
    ES256(ES256PublicKey),
    ES384(ES384PublicKey),
    ES512(Es512Key),
    EdDSA(Ed25519PublicKey),
}

impl Verifier {
    pub fn alg(&self) -> Alg {
        match self {
            Verifier::HS256(_) => Alg::HS256,
            Verifier::HS384(_) => Alg::HS384,
            Verifier::HS512(_) => Alg::HS512,
            Verifier::RS256(_) => Alg::RS256,
            Verifier::RS384(_) => Alg::RS384,
            Verifier::RS512(_) => Alg::RS512,
            Verifier::PS256(_) => Alg::PS256,
            Verifier::PS384(_) => Alg::PS384,
            Verifier::PS512(_) => Alg::PS512,
            Verifier::ES256(_) => Alg::ES256,
            Verifier::ES384(_) => Alg::ES384,
            Verifier::ES512(_) => Alg::ES512,
            Verifier::EdDSA(_) => Alg::EdDSA,
        }
    }
}

struct Key {
    verifiers: Vec<Verifier>,
    /// DER SubjectPublicKeyInfo of an RSA or EC key, for the host's signature check
    /// (src/jwt/offload.rs); `None` for HMAC secrets and Ed25519 keys.
    spki: Option<Box<[u8]>>,
}

/// One key that may verify a token: its verifier, and its DER public key when the host can check
/// signatures made with it.
#[derive(Clone, Copy)]
pub struct Candidate<'a> {
    pub verifier: &'a Verifier,
    pub spki: Option<&'a [u8]>,
}

/// Decoded keys of one provider.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "KeySet({} keys)", self.keys.len())
    }
}

impl KeySet {
    /// Builds a set from JWK objects written in a policy: every problem is an error naming the key.
    pub fn from_policy(keys: &[Value], allowed: &[Alg], path: &str) -> Result<KeySet, Vec<String>> {
        let mut set = KeySet::default();
        let mut errors = Vec::new();
        if keys.len() > MAX_KEYS_PER_SET {
            errors.push(format!(
                "`{path}`: {} keys; at most {MAX_KEYS_PER_SET} are allowed",
                keys.len()
            ));
        }
        for (i, jwk) in keys.iter().enumerate().take(MAX_KEYS_PER_SET) {
            match decode_jwk(jwk, allowed) {
                Ok(Some(decoded)) => set.push(decoded),
                Ok(None) => errors.push(format!(
                    "`{path}[{i}]`: key cannot verify any of this provider's algorithms ({})",
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => errors.push(format!("`{path}[{i}]`: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Builds a set from a fetched JWKS document. Keys Tollgate cannot use (encryption keys,
    /// other curves, other algorithms) are skipped, as identity providers publish those too; a
    /// document with no usable key is an error, so the last good set stays in force.
    pub fn from_fetched(body: &[u8], allowed: &[Alg]) -> Result<KeySet, &'static str> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| "jwks is not valid json")?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("jwks has no `keys` array")?;
        let mut set = KeySet::default();
        for jwk in keys.iter().take(MAX_KEYS_PER_SET) {
            if let Ok(Some(decoded)) = decode_jwk(jwk, allowed) {
                set.push(decoded);
            }
        }
        if set.keys.is_empty() {
            return Err("jwks has no usable signing key");
        }
        Ok(set)
    }

    fn push(&mut self, (kid, verifiers, spki): DecodedKey) {
        let index = self.keys.len();
        if let Some(kid) = kid {
            self.by_kid.entry(kid).or_default().push(index);
        }
        self.keys.push(Key {
            verifiers,
            spki: spki.map(Vec::into_boxed_slice),
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifiers for `alg`: those of the keys named `kid` when the token names one, else of every
    /// key. `None` when the token names a `kid` this set does not have.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&str>,
    ) -> Option<impl Iterator<Item = Candidate<'a>> + 'a> {
        let indices: Box<dyn Iterator<Item = usize> + 'a> = match kid {
            Some(kid) => Box::new(self.by_kid.get(kid)?.iter().copied()),
            None => Box::new(0..self.keys.len()),
        };
        Some(
            indices
                .filter_map(move |i| self.keys.get(i))
                .flat_map(|k| {
                    k.verifiers.iter().map(|verifier| Candidate {
                        verifier,
                        spki: k.spki.as_deref(),
                    })
                })
                .filter(move |c| c.verifier.alg() == alg),
        )
    }
}

fn b64_member(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string member `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("member `{name}` is not base64url"))
}

/// Decodes one JWK into verifiers for each allowed algorithm it can serve. `Ok(None)` when the
/// key is well-formed but serves none of them (or is an encryption key).
/// A decoded key: its `kid`, one verifier per algorithm it serves, and its DER public key for
/// the host's signature check (RSA and EC keys).
type DecodedKey = (Option<String>, Vec<Verifier>, Option<Vec<u8>>);

fn decode_jwk(jwk: &Value, allowed: &[Alg]) -> Result<Option<DecodedKey>, String> {
    if !jwk.is_object() {
        return Err("a key must be a JSON object".into());
    }
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("missing string member `kty`")?;
    if jwk.get("use").and_then(Value::as_str) == Some("enc") {
        return Ok(None);
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("member `kid` must be a string".into()),
    };
    // A key's own `alg` narrows what it may verify (RFC 7517 section 4.4).
    let pinned = match jwk.get("alg") {
        None => None,
        Some(Value::String(s)) => Some(Alg::parse(s).ok_or_else(|| {
            format!(
                "unsupported `alg` `{s}`; expected one of [{}]",
                Alg::allowed_list()
            )
        })?),
        Some(_) => return Err("member `alg` must be a string".into()),
    };
    let crv = jwk.get("crv").and_then(Value::as_str);
    let algs: Vec<Alg> = allowed
        .iter()
        .copied()
        .filter(|a| pinned.is_none_or(|p| p == *a))
        .filter(|a| match (a.family(), kty) {
            (Family::Hmac, "oct") | (Family::Rsa, "RSA") => true,
            (Family::Ec(curve), "EC") => crv == Some(curve),
            (Family::Ed25519, "OKP") => crv == Some("Ed25519"),
            _ => false,
        })
        .collect();
    match kty {
        "RSA" | "EC" | "OKP" | "oct" => {}
        other => {
            return Err(format!(
                "unsupported `kty` `{other}`; expected one of [`RSA`, `EC`, `OKP`, `oct`]"
            ))
        }
    }
    if algs.is_empty() {
        return Ok(None);
    }
    let mut verifiers = Vec::with_capacity(algs.len());
    for alg in &algs {
        verifiers.push(build(*alg, jwk)?);
    }
    // Built only once the verifiers accepted the key material (so it is well-formed).
    let spki = match (kty, crv) {
        ("RSA", _) => Some(super::der::rsa_spki(
            &b64_member(jwk, "n")?,
            &b64_member(jwk, "e")?,
        )),
        ("EC", Some(crv)) => super::der::ec_spki(crv, &sec1_point(jwk)?),
        _ => None,
    };
    Ok(Some((kid, verifiers, spki)))
}

/// An EC JWK's point, uncompressed SEC1 (`0x04 || x || y`).
fn sec1_point(jwk: &Value) -> Result<Vec<u8>, String> {
    let x = b64_member(jwk, "x")?;
    let y = b64_member(jwk, "y")?;
    let mut sec1 = Vec::with_capacity(1 + x.len() + y.len());
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    Ok(sec1)
}

fn build(alg: Alg, jwk: &Value) -> Result<Verifier, String> {
    let invalid = |_| String::from("invalid public key");
    Ok(match alg.family() {
        Family::Hmac => {
            let k = b64_member(jwk, "k")?;
            let min = min_hmac_key_bytes(alg);
            if k.len() < min {
                return Err(format!(
                    "hmac secret is {} bytes; {alg} needs at least {min}",
                    k.len()
                ));
            }
            match alg {
                Alg::HS384 => Verifier::HS384(HS384Key::from_bytes(&k)),
                Alg::HS512 => Verifier::HS512(HS512Key::from_bytes(&k)),
                _ => Verifier::HS256(HS256Key::from_bytes(&k)),
            }
        }
        Family::Rsa => {
            let n = b64_member(jwk, "n")?;
            let e = b64_member(jwk, "e")?;
            match alg {
                Alg::RS256 => {
                    Verifier::RS256(RS256PublicKey::from_components(&n, &e).map_err(invalid)?)
                }
                Alg::RS384 => {
                    Verifier::RS384(RS384PublicKey::from_components(&n, &e).map_err(invalid)?)
                }
                Alg::RS512 => {
                    Verifier::RS512(RS512PublicKey::from_components(&n, &e).map_err(invalid)?)
                }
                Alg::PS256 => {
                    Verifier::PS256(PS256PublicKey::from_components(&n, &e).map_err(invalid)?)
                }
                Alg::PS384 => {
                    Verifier::PS384(PS384PublicKey::from_components(&n, &e).map_err(invalid)?)
                }
                _ => Verifier::PS512(PS512PublicKey::from_components(&n, &e).map_err(invalid)?),
            }
        }
        Family::Ec(_) => {
            let sec1 = sec1_point(jwk)?;
            match alg {
                Alg::ES256 => Verifier::ES256(ES256PublicKey::from_bytes(&sec1).map_err(invalid)?),
                Alg::ES384 => Verifier::ES384(ES384PublicKey::from_bytes(&sec1).map_err(invalid)?),
                _ => Verifier::ES512(Es512Key::from_sec1(&sec1).ok_or("invalid public key")?),
            }
        }
        Family::Ed25519 => {
            let x = b64_member(jwk, "x")?;
            Verifier::EdDSA(Ed25519PublicKey::from_bytes(&x).map_err(invalid)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn decodes_every_fixture_key_for_its_algorithms() {
        let set = KeySet::from_policy(&testkit::public_jwks(), &Alg::ALL, "jwks.keys").unwrap();
        assert_eq!(set.len(), 7);
        for (kid, alg) in [
            ("rsa-1", Alg::RS256),
            ("rsa-1", Alg::PS512),
            ("ec256", Alg::ES256),
            ("ec384", Alg::ES384),
            ("ec521", Alg::ES512),
            ("ed25519", Alg::EdDSA),
            ("hmac", Alg::HS384),
        ] {
            assert_eq!(
                set.candidates(alg, Some(kid)).unwrap().count(),
                1,
                "{kid} {alg}"
            );
        }
        // An RSA key never yields an HMAC verifier: HS256-with-the-public-key cannot even start.
        assert_eq!(
            set.candidates(Alg::HS256, Some("rsa-1")).unwrap().count(),
            0
        );
        assert!(set.candidates(Alg::RS256, Some("nope")).is_none());
        assert_eq!(set.candidates(Alg::RS256, None).unwrap().count(), 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn policy_errors_name_the_key() {
        let keys = vec![
            json!({"kty": "RSA", "n": "!!", "e": "AQAB"}),
            json!({"kty": "oct", "k": "c2hvcnQ"}),
            json!({"kty": "XYZ"}),
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
            json!("string"),
            json!({"kty": "RSA", "alg": "none", "n": "AQAB", "e": "AQAB"}),
        ];
        let errs = KeySet::from_policy(&keys, &Alg::ALL, "p.jwks.keys").unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(
            errs[0].starts_with("`p.jwks.keys[0]`: member `n` is not base64url"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains("hmac secret is 5 bytes; HS256 needs at least 32"),
            "{}",
            errs[1]
        );
        assert!(errs[2].contains("unsupported `kty` `XYZ`"), "{}", errs[2]);
        assert!(errs[3].contains("invalid public key"), "{}", errs[3]);
        assert!(errs[4].contains("JSON object"), "{}", errs[4]);
        assert!(errs[5].contains("unsupported `alg` `none`"), "{}", errs[5]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn key_outside_provider_algorithms_is_reported() {
        let keys = vec![testkit::public_jwk("ec256")];
        let errs = KeySet::from_policy(&keys, &[Alg::RS256], "k").unwrap_err();
        assert!(
            errs[0].contains("cannot verify any of this provider's algorithms (RS256)"),
            "{errs:?}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pinned_alg_narrows_the_key() {
        let mut jwk = testkit::public_jwk("rsa-1");
        jwk["alg"] = json!("PS256");
        let set = KeySet::from_policy(&[jwk], &Alg::ALL, "k").unwrap();
        assert_eq!(
            set.candidates(Alg::RS256, Some("rsa-1")).unwrap().count(),
            0
        );
        assert_eq!(
            set.candidates(Alg::PS256, Some("rsa-1")).unwrap().count(),
            1
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn fetched_sets_skip_unusable_keys() {
        let body = json!({"keys": [
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "foo"},
            testkit::public_jwk("ec256"),
        ]});
        let set = KeySet::from_fetched(body.to_string().as_bytes(), &[Alg::ES256]).unwrap();
        assert_eq!(set.len(), 1);
        assert!(KeySet::from_fetched(b"{}", &[Alg::ES256]).is_err());
        assert!(KeySet::from_fetched(b"not json", &[Alg::ES256]).is_err());
        assert!(KeySet::from_fetched(br#"{"keys": [{"kty": "foo"}]}"#, &[Alg::ES256]).is_err());
    }
}
