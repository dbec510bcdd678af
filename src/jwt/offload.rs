//! Signature checks a host can do for the engine with its own crypto: Envoy exposes BoringSSL's
//! verification to Wasm modules as the foreign function `verify_signature`. The engine asks
//! through [`SignatureHost`] for RSA PKCS#1 v1.5 and ECDSA signatures and falls back to its own
//! pure-Rust verification whenever the host cannot answer (another proxy-wasm host, the CLI,
//! a host error). The policy's `signature_verification: builtin` turns it off.

/// One check: is `signature` over `message` valid for `key` with the hash `hash`?
#[derive(Debug, Clone, Copy)]
pub struct SignatureCheck<'a> {
    /// `sha256`, `sha384` or `sha512`.
    pub hash: &'static str,
    /// The public key as DER SubjectPublicKeyInfo (src/jwt/der.rs).
    pub key: &'a [u8],
    /// PKCS#1 v1.5 signature bytes (RSA) or DER `ECDSA-Sig-Value` (ECDSA).
    pub signature: &'a [u8],
    /// The signed bytes: the JWS signing input `header.payload`.
    pub message: &'a [u8],
}

/// A host that verifies signatures. `None`: it could not say (no such function, a failed call,
/// an answer it could not read); the engine then verifies the signature itself.
pub trait SignatureHost {
    fn verify(&self, check: &SignatureCheck<'_>) -> Option<bool>;
}
