//! `Content-Digest` (RFC 9530): a Dictionary of digests of the message content keyed by
//! algorithm. `sha-256` and `sha-512` are checked; other algorithms (`md5`, `sha`, `unixsum`,
//! ...) are ignored, as RFC 9530 section 2 lets a recipient do, but a field must carry at least
//! one checked algorithm and every checked one it carries must match.

use super::error::SigError;
use super::sfv::{self, BareItem, Item, Member};
use sha2::{Digest as _, Sha256, Sha512};

/// Upper bound on the members of one `Content-Digest` field.
pub const MAX_DIGESTS: usize = 16;

const FIELD: &str = "content-digest";

/// A digest algorithm of the Hash Algorithms for HTTP Digest Fields registry that is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    /// The registry key (`sha-256`, `sha-512`).
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha-256",
            DigestAlgorithm::Sha512 => "sha-512",
        }
    }

    fn from_key(key: &str) -> Option<DigestAlgorithm> {
        match key {
            "sha-256" => Some(DigestAlgorithm::Sha256),
            "sha-512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }

    fn output_bytes(self) -> usize {
        match self {
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha512 => 64,
        }
    }

    fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => Sha256::digest(body).to_vec(),
            DigestAlgorithm::Sha512 => Sha512::digest(body).to_vec(),
        }
    }
}

/// The checked digests of a `Content-Digest` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    digests: Vec<(DigestAlgorithm, Vec<u8>)>,
}

impl ContentDigest {
    /// Reads the values of every `Content-Digest` field line (combined as one Dictionary, as
    /// RFC 8941 section 4.2 requires). Refused: a field that is not a Dictionary of Byte
    /// Sequences, a checked digest of the wrong length, a field without a checked algorithm.
    /// Parameters on members are ignored.
    pub fn parse(values: &[&str]) -> Result<ContentDigest, SigError> {
        if values.is_empty() {
            return Err(SigError::MissingField(FIELD));
        }
        let dict = sfv::parse_dictionary(&values.join(", ")).map_err(|e| SigError::Malformed {
            field: FIELD,
            reason: e.0,
        })?;
        if dict.len() > MAX_DIGESTS {
            return Err(SigError::TooMany {
                what: "content digests",
                max: MAX_DIGESTS,
            });
        }
        let mut digests = Vec::new();
        for (key, member) in &dict {
            let Member::Item(Item {
                value: BareItem::Bytes(bytes),
                ..
            }) = member
            else {
                return Err(SigError::Malformed {
                    field: FIELD,
                    reason: "a member is not a byte sequence",
                });
            };
            if let Some(alg) = DigestAlgorithm::from_key(key) {
                if bytes.len() != alg.output_bytes() {
                    return Err(SigError::Malformed {
                        field: FIELD,
                        reason: "a digest has the wrong length for its algorithm",
                    });
                }
                digests.push((alg, bytes.clone()));
            }
        }
        if digests.is_empty() {
            return Err(SigError::NoSupportedDigest);
        }
        Ok(ContentDigest { digests })
    }

    /// The checked algorithms the field carries, in its order.
    pub fn algorithms(&self) -> impl Iterator<Item = DigestAlgorithm> + '_ {
        self.digests.iter().map(|(alg, _)| *alg)
    }

    /// Checks the whole body at once.
    pub fn verify(&self, body: &[u8]) -> Result<(), SigError> {
        let mut hasher = self.hasher();
        hasher.update(body);
        hasher.finish()
    }

    /// A hasher for a body that arrives in pieces.
    pub fn hasher(&self) -> BodyHasher<'_> {
        let wants = |a| self.algorithms().any(|x| x == a);
        BodyHasher {
            expected: self,
            sha256: wants(DigestAlgorithm::Sha256).then(Sha256::new),
            sha512: wants(DigestAlgorithm::Sha512).then(Sha512::new),
        }
    }
}

/// Hashes a body piece by piece for the algorithms a [`ContentDigest`] carries.
pub struct BodyHasher<'d> {
    expected: &'d ContentDigest,
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
}

impl BodyHasher<'_> {
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(chunk);
        }
    }

    /// Whether every digest matches the body hashed so far.
    pub fn finish(self) -> Result<(), SigError> {
        let sha256 = self.sha256.map(|h| h.finalize().to_vec());
        let sha512 = self.sha512.map(|h| h.finalize().to_vec());
        for (alg, want) in &self.expected.digests {
            let got = match alg {
                DigestAlgorithm::Sha256 => &sha256,
                DigestAlgorithm::Sha512 => &sha512,
            };
            if got.as_deref() != Some(want.as_slice()) {
                return Err(SigError::DigestMismatch(alg.name()));
            }
        }
        Ok(())
    }
}

/// A `Content-Digest` field value for `body` (`sha-256=:...:`).
pub fn content_digest(alg: DigestAlgorithm, body: &[u8]) -> String {
    sfv::serialize_dictionary(&[(
        alg.name().to_string(),
        Member::Item(Item {
            value: BareItem::Bytes(alg.digest(body)),
            params: Vec::new(),
        }),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use wasm_bindgen_test::wasm_bindgen_test;

    const RFC_9530: &str = include_str!("../../tests/fixtures/httpsig/rfc9530.json");

    #[wasm_bindgen_test(unsupported = test)]
    fn rfc_9530_examples() {
        let doc: Value = serde_json::from_str(RFC_9530).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 8);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let body = case["body"].as_str().unwrap().as_bytes();
            let field = case["content_digest"].as_str().unwrap();
            let got = ContentDigest::parse(&[field]).and_then(|d| d.verify(body));
            match case["error"].as_str() {
                None => assert_eq!(got, Ok(()), "{name}"),
                Some(want) => assert_eq!(got.unwrap_err().to_string(), want, "{name}"),
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn computed_values_are_the_rfc_values() {
        // RFC 9530 Appendix D, the digests of `{"hello": "world"}`.
        let body = br#"{"hello": "world"}"#;
        assert_eq!(
            content_digest(DigestAlgorithm::Sha256, body),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
        assert_eq!(
            content_digest(DigestAlgorithm::Sha512, body),
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
        );
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            let field = content_digest(alg, b"payload");
            let parsed = ContentDigest::parse(&[&field]).unwrap();
            assert_eq!(parsed.algorithms().collect::<Vec<_>>(), vec![alg]);
            assert_eq!(parsed.verify(b"payload"), Ok(()));
            assert_eq!(
                parsed.verify(b"payloaD"),
                Err(SigError::DigestMismatch(alg.name()))
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn body_in_pieces() {
        let body = b"a body that arrives in three pieces";
        let both = format!(
            "{}, {}",
            content_digest(DigestAlgorithm::Sha512, body),
            content_digest(DigestAlgorithm::Sha256, body)
        );
        let parsed = ContentDigest::parse(&[&both]).unwrap();
        let mut h = parsed.hasher();
        for piece in body.chunks(13) {
            h.update(piece);
        }
        assert_eq!(h.finish(), Ok(()));
        let mut h = parsed.hasher();
        h.update(&body[..10]);
        assert_eq!(h.finish(), Err(SigError::DigestMismatch("sha-512")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn field_lines_combine_and_shapes_are_checked() {
        let body = b"x";
        let a = content_digest(DigestAlgorithm::Sha256, body);
        let b = content_digest(DigestAlgorithm::Sha512, body);
        let parsed = ContentDigest::parse(&[&a, "md5=:AAAA:", &b]).unwrap();
        assert_eq!(parsed.algorithms().count(), 2);
        assert_eq!(parsed.verify(body), Ok(()));
        assert_eq!(
            ContentDigest::parse(&[&a, &a]).unwrap_err().to_string(),
            "`content-digest` is malformed: a dictionary key occurs twice"
        );
        assert_eq!(
            ContentDigest::parse(&["sha-256=1"]),
            Err(SigError::Malformed {
                field: FIELD,
                reason: "a member is not a byte sequence"
            })
        );
        assert_eq!(
            ContentDigest::parse(&["sha-256=:AAAA:"]),
            Err(SigError::Malformed {
                field: FIELD,
                reason: "a digest has the wrong length for its algorithm"
            })
        );
        assert_eq!(
            ContentDigest::parse(&[]),
            Err(SigError::MissingField(FIELD))
        );
        assert_eq!(
            ContentDigest::parse(&[""]),
            Err(SigError::NoSupportedDigest)
        );
        assert_eq!(
            ContentDigest::parse(&["SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"])
                .unwrap_err()
                .to_string(),
            "`content-digest` is malformed: expected a key"
        );
        let many: Vec<String> = (0..=MAX_DIGESTS).map(|i| format!("x{i}=:AA==:")).collect();
        assert!(matches!(
            ContentDigest::parse(&[&many.join(",")]),
            Err(SigError::TooMany { .. })
        ));
    }
}
