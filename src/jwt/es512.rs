//! ES512 (ECDSA P-521 + SHA-512), which jwt-simple lacks and Envoy's `jwt_authn` accepts.
//! Only the signature lives here; header and claim rules are shared with every algorithm.

use p521::ecdsa::signature::Verifier as _;
use p521::ecdsa::{Signature, VerifyingKey};

/// A P-521 public key.
pub struct Es512Key(VerifyingKey);

/// `r || s`, each 66 bytes (RFC 7518 section 3.4).
const SIGNATURE_BYTES: usize = 132;

impl Es512Key {
    /// From an uncompressed SEC1 point (`0x04 || x || y`).
    pub fn from_sec1(bytes: &[u8]) -> Option<Es512Key> {
        VerifyingKey::from_sec1_bytes(bytes).ok().map(Es512Key)
    }

    /// Checks `signature` over the JWS signing input (`header.payload`).
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        if signature.len() != SIGNATURE_BYTES {
            return false;
        }
        match Signature::from_slice(signature) {
            Ok(sig) => self.0.verify(signing_input, &sig).is_ok(),
            Err(_) => false,
        }
    }
}
