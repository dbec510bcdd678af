//! Envoy's `verify_signature` foreign function (BoringSSL's signature verification), offered to
//! the engine as its [`SignatureHost`]. Its argument and result are protobuf messages (Envoy's
//! `source/extensions/common/wasm/ext/verify_signature.proto`), written and read with the
//! wire-format helpers of src/protobuf.rs:
//!
//! ```text
//! VerifySignatureArguments { string hash_function = 1; bytes public_key = 2 (DER SPKI);
//!                            bytes signature = 3; bytes text = 4; }
//! VerifySignatureResult    { bool result = 1; string error = 2; }
//! ```
//!
//! Before the engine may use it, [`EnvoyCrypto::probe`] checks it once per VM on a known answer:
//! a valid signature must verify and a changed one must not. A host without the function, or one
//! that answers wrongly, leaves Tollgate verifying every signature itself.

use crate::jwt::offload::{SignatureCheck, SignatureHost};
use crate::protobuf::{bytes_field, fields, Field};
use proxy_wasm::hostcalls;

const FUNCTION: &str = "verify_signature";

/// The known answer: a P-256 public key made for this check only (the private key was never
/// kept), and its signature over [`PROBE_MESSAGE`].
const PROBE_KEY: &str = "3059301306072a8648ce3d020106082a8648ce3d03010703420004e22d7bc6ff1fd5102633361fa2ff270c05966cf4021380b93100c320db3aae81b3b69dfa025b88db54386cd121d114c9e10a7a6def248c9fe6259a66d146ecee";
const PROBE_SIGNATURE: &str = "3045022030e80e0e6a967e5867d1452e1109919a8f09fcc0b648ebf35e55a908956117c6022100a6df34089827db7a67a132c39c9ec424ed785b5e57a99948791b7da7c06c6b8c";
const PROBE_MESSAGE: &[u8] = b"tollgate self-test";

/// The host's signature checks, once [`EnvoyCrypto::probe`] found them working.
pub struct EnvoyCrypto;

impl EnvoyCrypto {
    /// `Some` when the host verifies the known answer correctly.
    pub fn probe() -> Option<EnvoyCrypto> {
        let key = hex(PROBE_KEY)?;
        let signature = hex(PROBE_SIGNATURE)?;
        let check = |message: &[u8]| {
            call(&SignatureCheck {
                hash: "sha256",
                key: &key,
                signature: &signature,
                message,
            })
        };
        let valid = check(PROBE_MESSAGE)?;
        let tampered = check(b"tollgate self-tesT")?;
        (valid && !tampered).then_some(EnvoyCrypto)
    }
}

impl SignatureHost for EnvoyCrypto {
    fn verify(&self, check: &SignatureCheck<'_>) -> Option<bool> {
        call(check)
    }
}

fn call(check: &SignatureCheck<'_>) -> Option<bool> {
    super::probe::host_call();
    match hostcalls::call_foreign_function(FUNCTION, Some(&arguments(check))) {
        Ok(Some(reply)) => result(&reply),
        // proto3 leaves out a `false` result: an empty message is a refusal.
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// `VerifySignatureArguments` for `check`.
fn arguments(check: &SignatureCheck<'_>) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(check.key.len() + check.signature.len() + check.message.len() + 24);
    bytes_field(&mut out, 1, check.hash.as_bytes());
    bytes_field(&mut out, 2, check.key);
    bytes_field(&mut out, 3, check.signature);
    bytes_field(&mut out, 4, check.message);
    out
}

/// `VerifySignatureResult.result`; `None` when the reply is not such a message.
fn result(reply: &[u8]) -> Option<bool> {
    let mut verdict = false;
    let mut r = fields(reply);
    while let Some((field, value)) = r.next_field().ok()? {
        if let (1, Field::Varint(v)) = (field, value) {
            verdict = v != 0;
        }
    }
    Some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_the_protobuf_envoy_reads() {
        let check = SignatureCheck {
            hash: "sha256",
            key: &[1, 2],
            signature: &[0xaa; 200],
            message: b"h.p",
        };
        let bytes = arguments(&check);
        let mut want = vec![0x0a, 6];
        want.extend_from_slice(b"sha256");
        want.extend_from_slice(&[0x12, 2, 1, 2, 0x1a, 0xc8, 0x01]);
        want.extend_from_slice(&[0xaa; 200]);
        want.extend_from_slice(&[0x22, 3, b'h', b'.', b'p']);
        assert_eq!(bytes, want);
    }

    #[test]
    fn results_are_read_and_anything_else_is_not() {
        assert_eq!(result(&[0x08, 0x01]), Some(true));
        assert_eq!(result(&[0x08, 0x00]), Some(false));
        // `error` set, `result` left out (false).
        assert_eq!(result(&[0x12, 0x03, b'b', b'a', b'd']), Some(false));
        assert_eq!(
            result(&[0x12, 0x03, b'b', b'a', b'd', 0x08, 0x01]),
            Some(true)
        );
        assert_eq!(result(&[]), Some(false));
        // Truncated, or a wire type protobuf does not have.
        assert_eq!(result(&[0x12, 0x05, b'x']), None);
        assert_eq!(result(&[0x08]), None);
        assert_eq!(result(&[0x0f]), None);
        assert_eq!(
            result(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            None
        );
    }

    #[test]
    fn the_known_answer_decodes() {
        assert_eq!(hex(PROBE_KEY).map(|k| k.len()), Some(91));
        assert_eq!(hex(PROBE_SIGNATURE).map(|s| s.len()), Some(71));
        assert_eq!(hex("0g"), None);
    }
}
