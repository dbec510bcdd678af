//! Keys for HTTP message signatures, read from JWK objects (RFC 7517) once, at load time: which
//! algorithm a key serves (one per key type), and the checks that keep weak or mixed-up keys
//! out. Errors name the key id and the JWK member at fault, never a member's value.

use super::error::{echo, SigError};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;

/// The algorithms of the HTTP Signature Algorithms registry (RFC 9421 section 6.2) that
/// Tollgate verifies. `rsa-v1_5-sha256` and `ecdsa-p384-sha384` are refused on purpose: the first
/// is the padding RFC 8017 keeps for compatibility only, the second would add P-384 code to
/// every module for no client that asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HmacSha256,
    Ed25519,
    EcdsaP256Sha256,
    RsaPssSha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::HmacSha256,
        Algorithm::Ed25519,
        Algorithm::EcdsaP256Sha256,
        Algorithm::RsaPssSha512,
    ];

    /// The registry name, as in the `alg` signature parameter.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Algorithm::RsaPssSha512 => "rsa-pss-sha512",
        }
    }

    /// The JOSE algorithm (RFC 7518) that computes the same signature, as a JWK's `alg` may
    /// name it: PS512 is RSASSA-PSS with MGF1-SHA-512 and a 64-byte salt, ES256 is raw `r || s`.
    fn jose(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "HS256",
            Algorithm::Ed25519 => "EdDSA",
            Algorithm::EcdsaP256Sha256 => "ES256",
            Algorithm::RsaPssSha512 => "PS512",
        }
    }

    /// The algorithm a registry name stands for; any other name is refused.
    pub fn from_name(name: &str) -> Result<Algorithm, SigError> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| SigError::UnsupportedAlgorithm(echo(name)))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shortest HMAC secret: the hash output (RFC 2104 section 3, RFC 7518 section 3.2).
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Smallest RSA modulus (NIST SP 800-131A). The largest is the `rsa` crate's limit, 4096 bits,
/// which also bounds the work one verification costs.
pub const MIN_RSA_BITS: usize = 2048;

/// A key that checks signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) key: PublicKey,
}

#[derive(Clone)]
pub(crate) enum PublicKey {
    Hmac(Vec<u8>),
    Ed25519(ed25519_compact::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A key that makes signatures (the CLI and tests). RSA keys sign in native builds only: PSS
/// needs randomness, which the wasm module has no business drawing.
#[derive(Clone)]
pub struct SigningKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) key: PrivateKey,
}

#[derive(Clone)]
pub(crate) enum PrivateKey {
    Hmac(Vec<u8>),
    Ed25519(ed25519_compact::KeyPair),
    P256(p256::ecdsa::SigningKey),
    #[cfg(not(target_arch = "wasm32"))]
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material (an HMAC secret is one).
        write!(f, "VerifyingKey({}, {})", self.kid, self.alg)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, {})", self.kid, self.alg)
    }
}

/// base64url as JWKs use it (RFC 7515 section 2); padding is tolerated, stray bits are not.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// JWK members that only a private key has.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A JWK being read: its members and its `kid`, for error messages.
struct Jwk<'j> {
    members: &'j Map<String, Value>,
    kid: String,
}

impl<'j> Jwk<'j> {
    fn new(jwk: &'j Value) -> Result<Jwk<'j>, SigError> {
        let members = jwk.as_object().ok_or_else(|| SigError::Key {
            kid: String::new(),
            reason: "a JWK must be a JSON object".into(),
        })?;
        let kid = match members.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => echo(kid),
            _ => {
                return Err(SigError::Key {
                    kid: String::new(),
                    reason: "`kid` must be a non-empty string".into(),
                })
            }
        };
        Ok(Jwk { members, kid })
    }

    fn error(&self, reason: impl Into<String>) -> SigError {
        SigError::Key {
            kid: self.kid.clone(),
            reason: reason.into(),
        }
    }

    fn str(&self, name: &str) -> Result<Option<&'j str>, SigError> {
        match self.members.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(format!("`{name}` must be a string"))),
        }
    }

    /// A base64url member, decoded; `None` when absent.
    fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>, SigError> {
        match self.str(name)? {
            None => Ok(None),
            Some(s) => B64URL
                .decode(s)
                .map(Some)
                .map_err(|_| self.error(format!("`{name}` is not base64url"))),
        }
    }

    fn required(&self, name: &str) -> Result<Vec<u8>, SigError> {
        self.bytes(name)?
            .ok_or_else(|| self.error(format!("`{name}` is missing")))
    }

    /// A member that must hold exactly `len` bytes.
    fn fixed(&self, name: &str, len: usize) -> Result<Vec<u8>, SigError> {
        let bytes = self.required(name)?;
        if bytes.len() != len {
            return Err(self.error(format!(
                "`{name}` must be {len} bytes, it is {}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The algorithm the key type serves; an `alg` member, if present, must name it (as the
    /// RFC 9421 name or its JOSE equivalent), and `use`, if present, must be `sig`.
    fn algorithm(&self) -> Result<Algorithm, SigError> {
        let alg = match (self.str("kty")?, self.str("crv")?) {
            (Some("oct"), _) => Algorithm::HmacSha256,
            (Some("OKP"), Some("Ed25519")) => Algorithm::Ed25519,
            (Some("EC"), Some("P-256")) => Algorithm::EcdsaP256Sha256,
            (Some("RSA"), _) => Algorithm::RsaPssSha512,
            (Some("OKP"), crv) => {
                return Err(self.error(format!(
                    "curve `{}` is not accepted; expected `Ed25519`",
                    echo(crv.unwrap_or_default())
                )))
            }
            (Some("EC"), crv) => {
                return Err(self.error(format!(
                    "curve `{}` is not accepted; expected `P-256`",
                    echo(crv.unwrap_or_default())
                )))
            }
            (Some(kty), _) => {
                return Err(self.error(format!(
                    "key type `{}` is not accepted; expected one of [`oct`, `OKP`, `EC`, `RSA`]",
                    echo(kty)
                )))
            }
            (None, _) => return Err(self.error("`kty` is missing")),
        };
        if let Some(named) = self.str("alg")? {
            if named != alg.name() && named != alg.jose() {
                return Err(self.error(format!(
                    "`alg` `{}` does not match the key type, which serves `{}` (or `{}`)",
                    echo(named),
                    alg.name(),
                    alg.jose()
                )));
            }
        }
        match self.str("use")? {
            None | Some("sig") => Ok(alg),
            Some(other) => Err(self.error(format!(
                "`use` is `{}`; a signature key has `sig`",
                echo(other)
            ))),
        }
    }

    fn rsa_public(&self) -> Result<rsa::RsaPublicKey, SigError> {
        let n = rsa::BigUint::from_bytes_be(&self.required("n")?);
        let e = rsa::BigUint::from_bytes_be(&self.required("e")?);
        let bits = n.bits();
        if bits < MIN_RSA_BITS {
            return Err(self.error(format!(
                "the modulus has {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        rsa::RsaPublicKey::new(n, e)
            .map_err(|_| self.error("`n` and `e` are not an RSA public key of at most 4096 bits"))
    }

    fn p256_public(&self) -> Result<p256::ecdsa::VerifyingKey, SigError> {
        let mut sec1 = vec![0x04];
        sec1.extend(self.fixed("x", 32)?);
        sec1.extend(self.fixed("y", 32)?);
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| self.error("`x` and `y` are not a point on P-256"))
    }
}

impl VerifyingKey {
    /// Reads a public key (or, for `hmac-sha256`, the shared secret) from a JWK with a `kid`.
    /// A JWK holding private members of an asymmetric key is refused: a verifier's
    /// configuration has no use for them, and carrying them is a leak waiting to happen.
    pub fn from_jwk(jwk: &Value) -> Result<VerifyingKey, SigError> {
        let j = Jwk::new(jwk)?;
        let alg = j.algorithm()?;
        if alg != Algorithm::HmacSha256 {
            if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| j.members.contains_key(**m)) {
                return Err(j.error(format!(
                    "private key member `{member}` in a verification key; give the public key only"
                )));
            }
        }
        let key = match alg {
            Algorithm::HmacSha256 => PublicKey::Hmac(hmac_secret(&j)?),
            Algorithm::Ed25519 => PublicKey::Ed25519(
                ed25519_compact::PublicKey::from_slice(&j.fixed("x", 32)?)
                    .map_err(|_| j.error("`x` is not an Ed25519 public key"))?,
            ),
            Algorithm::EcdsaP256Sha256 => PublicKey::P256(j.p256_public()?),
            Algorithm::RsaPssSha512 => PublicKey::Rsa(j.rsa_public()?),
        };
        Ok(VerifyingKey {
            kid: j.kid,
            alg,
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn hmac_secret(j: &Jwk<'_>) -> Result<Vec<u8>, SigError> {
    let k = j.required("k")?;
    if k.len() < MIN_HMAC_KEY_BYTES {
        return Err(j.error(format!(
            "`k` is {} bytes; `hmac-sha256` needs at least {MIN_HMAC_KEY_BYTES}",
            k.len()
        )));
    }
    Ok(k)
}

impl SigningKey {
    /// Reads a private key (or an HMAC secret) from a JWK with a `kid`. Public members present
    /// must belong to the private ones.
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey, SigError> {
        let j = Jwk::new(jwk)?;
        let alg = j.algorithm()?;
        let key = match alg {
            Algorithm::HmacSha256 => PrivateKey::Hmac(hmac_secret(&j)?),
            Algorithm::Ed25519 => {
                let seed = ed25519_compact::Seed::from_slice(&j.fixed("d", 32)?)
                    .map_err(|_| j.error("`d` is not an Ed25519 private key"))?;
                let pair = ed25519_compact::KeyPair::from_seed(seed);
                if j.bytes("x")?
                    .is_some_and(|x| x.as_slice() != pair.pk.as_slice())
                {
                    return Err(j.error("`x` is not the public key of `d`"));
                }
                PrivateKey::Ed25519(pair)
            }
            Algorithm::EcdsaP256Sha256 => {
                let key = p256::ecdsa::SigningKey::from_slice(&j.fixed("d", 32)?)
                    .map_err(|_| j.error("`d` is not a P-256 private key"))?;
                if j.members.contains_key("x") || j.members.contains_key("y") {
                    let public = j.p256_public()?;
                    if public != *key.verifying_key() {
                        return Err(j.error("`x` and `y` are not the public key of `d`"));
                    }
                }
                PrivateKey::P256(key)
            }
            Algorithm::RsaPssSha512 => rsa_private(&j)?,
        };
        Ok(SigningKey {
            kid: j.kid,
            alg,
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key that checks this key's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        let key = match &self.key {
            PrivateKey::Hmac(k) => PublicKey::Hmac(k.clone()),
            PrivateKey::Ed25519(pair) => PublicKey::Ed25519(pair.pk),
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            #[cfg(not(target_arch = "wasm32"))]
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
        };
        VerifyingKey {
            kid: self.kid.clone(),
            alg: self.alg,
            key,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn rsa_private(j: &Jwk<'_>) -> Result<PrivateKey, SigError> {
    use rsa::traits::PublicKeyParts as _;
    if j.members.contains_key("oth") {
        return Err(j.error("multi-prime RSA keys (`oth`) are not supported"));
    }
    let public = j.rsa_public()?;
    let int = |name: &str| j.required(name).map(|b| rsa::BigUint::from_bytes_be(&b));
    let key = rsa::RsaPrivateKey::from_components(
        public.n().clone(),
        public.e().clone(),
        int("d")?,
        vec![int("p")?, int("q")?],
    )
    .map_err(|_| j.error("`d`, `p` and `q` are not an RSA private key for `n` and `e`"))?;
    key.validate()
        .map_err(|_| j.error("`d`, `p` and `q` are not an RSA private key for `n` and `e`"))?;
    Ok(PrivateKey::Rsa(Box::new(key)))
}

#[cfg(target_arch = "wasm32")]
fn rsa_private(j: &Jwk<'_>) -> Result<PrivateKey, SigError> {
    Err(j.error("`rsa-pss-sha512` signing needs randomness and is available in native builds only"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    const ED25519: &str = r#"{"kty": "OKP", "crv": "Ed25519", "kid": "test-key-ed25519",
        "d": "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU",
        "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}"#;
    const P256: &str = r#"{"kty": "EC", "crv": "P-256", "kid": "test-key-ecc-p256",
        "d": "UpuF81l-kOxbjf7T4mNSv0r5tN67Gim7rnf6EFpcYDs",
        "x": "qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA",
        "y": "Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0"}"#;
    const SECRET: &str = r#"{"kty": "oct", "kid": "test-shared-secret",
        "k": "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ"}"#;

    fn jwk(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn public(text: &str) -> Value {
        let mut v = jwk(text);
        for m in PRIVATE_MEMBERS {
            v.as_object_mut().unwrap().remove(m);
        }
        v
    }

    /// The error for `jwk`, checked to repeat none of the JWK's member values.
    fn refused(jwk: &Value, verifying: bool) -> String {
        let message = if verifying {
            VerifyingKey::from_jwk(jwk).unwrap_err().to_string()
        } else {
            SigningKey::from_jwk(jwk).unwrap_err().to_string()
        };
        let echoed = ["kid", "kty", "crv", "alg", "use"];
        for (name, value) in jwk.as_object().into_iter().flatten() {
            if let Some(s) = value
                .as_str()
                .filter(|s| s.len() >= 8 && !echoed.contains(&name.as_str()))
            {
                assert!(!message.contains(s), "{message} repeats `{name}`");
            }
        }
        message
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rfc_9421_keys_load() {
        for (text, alg) in [
            (ED25519, Algorithm::Ed25519),
            (P256, Algorithm::EcdsaP256Sha256),
            (SECRET, Algorithm::HmacSha256),
        ] {
            let v = VerifyingKey::from_jwk(&public(text)).unwrap();
            assert_eq!(v.algorithm(), alg);
            let s = SigningKey::from_jwk(&jwk(text)).unwrap();
            assert_eq!((s.kid(), s.algorithm()), (v.kid(), alg));
            assert!(!format!("{s:?}{v:?}").contains("uzvJ"));
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn algorithm_names() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Ok(alg));
        }
        for refused in [
            "rsa-v1_5-sha256",
            "ecdsa-p384-sha384",
            "HS256",
            "ED25519",
            "",
        ] {
            assert_eq!(
                Algorithm::from_name(refused),
                Err(SigError::UnsupportedAlgorithm(refused.into()))
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn jwk_alg_must_match_the_key_type() {
        for (text, ok, bad) in [
            (SECRET, ["hmac-sha256", "HS256"], "HS512"),
            (ED25519, ["ed25519", "EdDSA"], "ES256"),
            (P256, ["ecdsa-p256-sha256", "ES256"], "ecdsa-p384-sha384"),
        ] {
            for alg in ok {
                let mut v = public(text);
                v["alg"] = json!(alg);
                assert!(VerifyingKey::from_jwk(&v).is_ok(), "{alg}");
            }
            let mut v = public(text);
            v["alg"] = json!(bad);
            assert!(refused(&v, true).contains(&format!("`alg` `{bad}` does not match")));
        }
        let mut v = public(P256);
        v["use"] = json!("enc");
        assert!(refused(&v, true).contains("`use` is `enc`"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unusable_keys_are_refused_with_the_member_named() {
        let mut short = jwk(SECRET);
        short["k"] = json!("c2hvcnQtc2VjcmV0LW9mLTMxLWJ5dGVzLi4uLi4uLg");
        assert!(refused(&short, true).contains("`k` is 31 bytes; `hmac-sha256` needs at least 32"));
        assert!(refused(&short, false).contains("`k` is 31 bytes"));

        let mut p384 = public(P256);
        p384["crv"] = json!("P-384");
        assert!(refused(&p384, true).contains("curve `P-384` is not accepted"));
        let mut x25519 = public(ED25519);
        x25519["crv"] = json!("X25519");
        assert!(refused(&x25519, true).contains("curve `X25519` is not accepted"));

        let mut off_curve = public(P256);
        off_curve["y"] = off_curve["x"].clone();
        assert!(refused(&off_curve, true).contains("are not a point on P-256"));
        let mut short_x = public(ED25519);
        short_x["x"] = json!("AAAA");
        assert!(refused(&short_x, true).contains("`x` must be 32 bytes, it is 3"));
        let mut not_b64 = public(ED25519);
        not_b64["x"] = json!("JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs");
        assert!(refused(&not_b64, true).contains("`x` is not base64url"));

        assert!(refused(&jwk(ED25519), true).contains("private key member `d`"));
        assert!(refused(&json!({"kty": "OKP", "crv": "Ed25519"}), true).contains("`kid`"));
        assert!(refused(&json!({"kid": "a"}), true).contains("`kty` is missing"));
        assert!(refused(&json!({"kid": "a", "kty": "oct", "k": 7}), true)
            .contains("`k` must be a string"));
        assert!(refused(&json!({"kid": "a", "kty": "OKT"}), true)
            .contains("key type `OKT` is not accepted"));
        assert!(refused(&json!(["kid"]), true).contains("JSON object"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn private_and_public_members_must_agree() {
        let mut ed = jwk(ED25519);
        ed["x"] = json!("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert!(refused(&ed, false).contains("`x` is not the public key of `d`"));
        let mut ec = jwk(P256);
        ec["d"] = json!("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert!(refused(&ec, false).contains("`x` and `y` are not the public key of `d`"));
        let mut zero = jwk(P256);
        zero["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert!(refused(&zero, false).contains("`d` is not a P-256 private key"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn rsa_keys_below_2048_bits_are_refused() {
        // A 1024-bit odd modulus: the size is checked before anything else.
        let n = B64URL.encode([0xc5u8; 128]);
        let weak = json!({"kty": "RSA", "kid": "weak", "n": n, "e": "AQAB"});
        assert!(refused(&weak, true).contains("the modulus has 1024 bits; at least 2048"));
        let huge =
            json!({"kty": "RSA", "kid": "huge", "n": B64URL.encode([0xc5u8; 1024]), "e": "AQAB"});
        assert!(refused(&huge, true).contains("at most 4096 bits"));
        let no_e = json!({"kty": "RSA", "kid": "e", "n": B64URL.encode([0xc5u8; 256])});
        assert!(refused(&no_e, true).contains("`e` is missing"));
    }
}
