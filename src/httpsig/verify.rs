//! `HTTP_VERIFY` and `HTTP_SIGN` of RFC 9421 section 3.3 for the accepted algorithms: bytes of
//! a signature base in, a yes/no (or signature bytes) out. What a base is, and which key and
//! algorithm a signature may use, is decided before it gets here.

use super::error::SigError;
use super::keys::{PrivateKey, PublicKey, SigningKey, VerifyingKey};
use p256::ecdsa::signature::{Signer as _, Verifier as _};

/// RFC 9421 section 3.3.1: the PSS salt is 64 bytes (the SHA-512 output size).
const PSS_SALT_BYTES: usize = 64;
/// `hmac-sha256` output and `ecdsa-p256-sha256` `r || s` (RFC 9421 sections 3.3.3, 3.3.4).
const HMAC_BYTES: usize = 32;
const P256_BYTES: usize = 64;

impl VerifyingKey {
    /// Checks `signature` over `base` (a signature base as built by this module, or given by a
    /// caller that verifies something else, such as a signed response). HMAC values are
    /// compared in constant time.
    pub fn verify(&self, base: &[u8], signature: &[u8]) -> Result<(), SigError> {
        let valid = match &self.key {
            PublicKey::Hmac(secret) => <&[u8; HMAC_BYTES]>::try_from(signature)
                .is_ok_and(|mac| hmac_sha256::HMAC::verify(base, secret, mac)),
            PublicKey::Ed25519(key) => ed25519_compact::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify(base, &sig).is_ok()),
            PublicKey::P256(key) => {
                signature.len() == P256_BYTES
                    && p256::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| key.verify(base, &sig).is_ok())
            }
            PublicKey::Rsa(key) => {
                let verifier = rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(
                    key.clone(),
                    PSS_SALT_BYTES,
                );
                rsa::pss::Signature::try_from(signature)
                    .is_ok_and(|sig| verifier.verify(base, &sig).is_ok())
            }
        };
        if valid {
            Ok(())
        } else {
            Err(SigError::InvalidSignature)
        }
    }
}

impl SigningKey {
    /// Signs `base`. Deterministic for `hmac-sha256`, `ed25519` and `ecdsa-p256-sha256`
    /// (RFC 6979 nonces); `rsa-pss-sha512` draws its salt from the operating system.
    pub fn sign(&self, base: &[u8]) -> Result<Vec<u8>, SigError> {
        match &self.key {
            PrivateKey::Hmac(secret) => Ok(hmac_sha256::HMAC::mac(base, secret).to_vec()),
            PrivateKey::Ed25519(pair) => Ok(pair.sk.sign(base, None).to_vec()),
            PrivateKey::P256(key) => {
                let sig: p256::ecdsa::Signature =
                    key.try_sign(base).map_err(|_| SigError::InvalidSignature)?;
                Ok(sig.to_bytes().to_vec())
            }
            #[cfg(not(target_arch = "wasm32"))]
            PrivateKey::Rsa(key) => {
                use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
                let signer = rsa::pss::SigningKey::<sha2::Sha512>::new_with_salt_len(
                    (**key).clone(),
                    PSS_SALT_BYTES,
                );
                signer
                    .try_sign_with_rng(&mut rsa::rand_core::OsRng, base)
                    .map(|sig| sig.to_vec())
                    .map_err(|_| SigError::InvalidSignature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn keys() -> Vec<SigningKey> {
        [
            json!({"kty": "oct", "kid": "h", "k": "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ"}),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "e", "d": "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"}),
            json!({"kty": "EC", "crv": "P-256", "kid": "p", "d": "UpuF81l-kOxbjf7T4mNSv0r5tN67Gim7rnf6EFpcYDs"}),
        ]
        .iter()
        .map(|j| SigningKey::from_jwk(j).unwrap())
        .collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deterministic_algorithms_round_trip_and_refuse_tampering() {
        for key in keys() {
            let public = key.verifying_key();
            let sig = key.sign(b"base").unwrap();
            assert_eq!(sig, key.sign(b"base").unwrap(), "{key:?} is deterministic");
            assert_eq!(public.verify(b"base", &sig), Ok(()));
            assert_eq!(
                public.verify(b"bass", &sig),
                Err(SigError::InvalidSignature)
            );
            let mut flipped = sig.clone();
            flipped[0] ^= 1;
            assert_eq!(
                public.verify(b"base", &flipped),
                Err(SigError::InvalidSignature)
            );
            for wrong_length in [&sig[..sig.len() - 1], &[], &[sig.clone(), vec![0]].concat()] {
                assert_eq!(
                    public.verify(b"base", wrong_length),
                    Err(SigError::InvalidSignature)
                );
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_signature_of_one_algorithm_does_not_verify_under_another_key() {
        let keys = keys();
        for signer in &keys {
            let sig = signer.sign(b"base").unwrap();
            for other in keys.iter().filter(|k| k.kid() != signer.kid()) {
                assert!(other.verifying_key().verify(b"base", &sig).is_err());
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ecdsa_rejects_zero_scalars() {
        let public = keys()[2].verifying_key();
        assert!(public.verify(b"base", &[0u8; 64]).is_err());
        assert!(public.verify(b"base", &[0xffu8; 64]).is_err());
    }
}
