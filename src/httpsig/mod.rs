//! HTTP Message Signatures (RFC 9421) over requests, and `Content-Digest` (RFC 9530): the
//! public interface. Host-independent: the caller passes a [`SignedRequest`] view and keys read
//! from JWKs, and decides what a result means (which labels and components it requires, how old
//! `created` may be, whether a `nonce` was seen before).
//!
//! ```text
//! let signatures = Signatures::from_request(&req)?;           // Signature-Input + Signature
//! let sig = signatures.get("sig1")?;                           // or .iter()
//! let key = keys_by_id.get(sig.keyid()...)?;                   // VerifyingKey::from_jwk, at load
//! sig.verify(&req, key)?;                                      // base, alg and keyid checks
//! if sig.covers("content-digest") { ContentDigest::parse(&values)?.verify(body)?; }
//! ```
//!
//! Files: `sfv` (structured fields), `components` (covered components and the signature base),
//! `keys` (JWK loading), `verify` (the signature algorithms), `digest` (RFC 9530), `error`.

mod components;
mod digest;
mod error;
mod keys;
mod sfv;
mod verify;

#[cfg(test)]
mod tests;

pub use components::{Component, SignedRequest, MAX_COMPONENTS};
pub use digest::{content_digest, BodyHasher, ContentDigest, DigestAlgorithm, MAX_DIGESTS};
pub use error::SigError;
pub use keys::{Algorithm, SigningKey, VerifyingKey, MIN_HMAC_KEY_BYTES, MIN_RSA_BITS};
pub use sfv::BareItem;

use sfv::{Member, Parameters};
use std::fmt;

/// Upper bound on the signatures (labels) of one request.
pub const MAX_SIGNATURES: usize = 16;
/// The largest Integer a structured field can carry (RFC 8941 section 3.3.1).
const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// The signatures of one request, by label, in the order of `Signature-Input`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signatures {
    list: Vec<Signature>,
}

/// One signature: its label, covered components, parameters and value.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    label: String,
    components: Vec<Component>,
    /// Every signature parameter in its order, known or not: all of them are part of
    /// `@signature-params`.
    params: Parameters,
    created: Option<u64>,
    expires: Option<u64>,
    nonce: Option<String>,
    alg: Option<String>,
    keyid: Option<String>,
    tag: Option<String>,
    value: Vec<u8>,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value is left out: logs get what was signed and how, not signature bytes.
        write!(f, "Signature({}={})", self.label, self.signature_params())
    }
}

fn malformed(field: &'static str, reason: &'static str) -> SigError {
    SigError::Malformed { field, reason }
}

impl Signatures {
    /// Reads the values of every `Signature-Input` and `Signature` field line. Each field is one
    /// Dictionary (lines combined, labels unique across them); every label must be in both.
    /// No fields at all is an empty set, not an error.
    pub fn parse(signature_input: &[&str], signature: &[&str]) -> Result<Signatures, SigError> {
        const INPUT: &str = "signature-input";
        const SIG: &str = "signature";
        let inputs = sfv::parse_dictionary(&signature_input.join(", "))
            .map_err(|e| malformed(INPUT, e.0))?;
        let values =
            sfv::parse_dictionary(&signature.join(", ")).map_err(|e| malformed(SIG, e.0))?;
        if inputs.len() > MAX_SIGNATURES || values.len() > MAX_SIGNATURES {
            return Err(SigError::TooMany {
                what: "signatures",
                max: MAX_SIGNATURES,
            });
        }
        if let Some((label, _)) = values
            .iter()
            .find(|(l, _)| !inputs.iter().any(|(i, _)| i == l))
        {
            return Err(SigError::MissingLabel {
                label: label.clone(),
                field: INPUT,
            });
        }
        let mut list = Vec::with_capacity(inputs.len());
        for (label, member) in inputs {
            let Some((_, value)) = values.iter().find(|(l, _)| *l == label) else {
                return Err(SigError::MissingLabel { label, field: SIG });
            };
            let Member::Item(sfv::Item {
                value: BareItem::Bytes(value),
                ..
            }) = value
            else {
                return Err(malformed(SIG, "a member is not a byte sequence"));
            };
            let Member::InnerList(inner) = member else {
                return Err(malformed(INPUT, "a member is not an inner list"));
            };
            if inner.items.len() > MAX_COMPONENTS {
                return Err(SigError::TooMany {
                    what: "covered components",
                    max: MAX_COMPONENTS,
                });
            }
            let components = inner
                .items
                .iter()
                .map(Component::from_item)
                .collect::<Option<Vec<_>>>()
                .ok_or(malformed(INPUT, "a covered component is not a string"))?;
            list.push(Signature::new(
                label,
                components,
                inner.params,
                value.clone(),
            )?);
        }
        Ok(Signatures { list })
    }

    /// The signatures of `req`, from its `signature-input` and `signature` headers.
    pub fn from_request(req: &SignedRequest<'_>) -> Result<Signatures, SigError> {
        let values = |name: &str| -> Vec<&str> {
            req.headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        Signatures::parse(&values("signature-input"), &values("signature"))
    }

    /// The signature under `label`.
    pub fn get(&self, label: &str) -> Result<&Signature, SigError> {
        self.list
            .iter()
            .find(|s| s.label == label)
            .ok_or_else(|| SigError::MissingLabel {
                label: error::echo(label),
                field: "signature-input",
            })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Signature> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Signature {
    /// Checks the types of the parameters RFC 9421 section 2.3 defines; others are kept as
    /// they are (they are covered by the signature all the same).
    fn new(
        label: String,
        components: Vec<Component>,
        params: Parameters,
        value: Vec<u8>,
    ) -> Result<Signature, SigError> {
        let mut sig = Signature {
            label,
            components,
            params: Vec::new(),
            created: None,
            expires: None,
            nonce: None,
            alg: None,
            keyid: None,
            tag: None,
            value,
        };
        for (key, item) in &params {
            match (key.as_str(), item) {
                ("created", BareItem::Integer(t)) => sig.created = Some(timestamp(*t)?),
                ("expires", BareItem::Integer(t)) => sig.expires = Some(timestamp(*t)?),
                ("created" | "expires", _) => {
                    return Err(malformed(
                        "signature-input",
                        "`created` and `expires` must be integers",
                    ))
                }
                ("nonce", BareItem::String(s)) => sig.nonce = Some(s.clone()),
                ("alg", BareItem::String(s)) => sig.alg = Some(s.clone()),
                ("keyid", BareItem::String(s)) => sig.keyid = Some(s.clone()),
                ("tag", BareItem::String(s)) => sig.tag = Some(s.clone()),
                ("nonce" | "alg" | "keyid" | "tag", _) => {
                    return Err(malformed(
                        "signature-input",
                        "`nonce`, `alg`, `keyid` and `tag` must be strings",
                    ))
                }
                _ => {}
            }
        }
        sig.params = params;
        Ok(sig)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The covered components, in order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Whether `identifier` (`@method`, `content-digest`, `"@query-param";name="id"`) is
    /// covered, parameters compared as a set.
    pub fn covers(&self, identifier: &str) -> bool {
        Component::parse(identifier)
            .is_ok_and(|c| self.components.iter().any(|have| have.same_as(&c)))
    }

    /// `created`, Unix seconds.
    pub fn created(&self) -> Option<u64> {
        self.created
    }

    /// `expires`, Unix seconds.
    pub fn expires(&self) -> Option<u64> {
        self.expires
    }

    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// The `alg` parameter as sent (checked against the key by [`Signature::verify`]).
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    pub fn keyid(&self) -> Option<&str> {
        self.keyid.as_deref()
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The `@signature-params` value: the `Signature-Input` member re-serialised strictly.
    pub fn signature_params(&self) -> String {
        components::signature_params(&self.components, &self.params)
    }

    /// The signature base of this signature over `req` (RFC 9421 section 2.5).
    pub fn base(&self, req: &SignedRequest<'_>) -> Result<String, SigError> {
        components::signature_base(req, &self.components, &self.params)
    }

    /// Verifies this signature over `req` with `key` (RFC 9421 section 3.2): the `alg`
    /// parameter, if sent, must name an accepted algorithm and the key's; `keyid`, if sent, must
    /// be the key's; then the base is built and checked. Times, nonces, tags and required
    /// components are the caller's to judge.
    pub fn verify(&self, req: &SignedRequest<'_>, key: &VerifyingKey) -> Result<(), SigError> {
        if let Some(alg) = &self.alg {
            if Algorithm::from_name(alg)? != key.algorithm() {
                return Err(SigError::AlgorithmMismatch {
                    key: key.algorithm().name(),
                    signature: error::echo(alg),
                });
            }
        }
        if self.keyid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(SigError::KeyIdMismatch);
        }
        let base = self.base(req)?;
        key.verify(base.as_bytes(), &self.value)
    }
}

fn timestamp(t: i64) -> Result<u64, SigError> {
    u64::try_from(t).map_err(|_| {
        malformed(
            "signature-input",
            "`created` and `expires` must not be negative",
        )
    })
}

/// The parameters [`sign`] writes, in this order: `created`, `keyid`, `alg`, `expires`,
/// `nonce`, `tag` (the order RFC 9421's examples use).
#[derive(Clone, Debug, Default)]
pub struct SignParams<'a> {
    pub created: Option<u64>,
    /// Usually the key's [`SigningKey::kid`].
    pub keyid: Option<&'a str>,
    /// Write `alg` (the key's algorithm).
    pub alg: bool,
    pub expires: Option<u64>,
    pub nonce: Option<&'a str>,
    pub tag: Option<&'a str>,
}

/// The two header values a signature adds, each one Dictionary member (`label=...`); to add a
/// signature to fields that have members already, append with `, `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub signature_input: String,
    pub signature: String,
}

/// Signs `req` under `label` over `components` (RFC 9421 section 3.1).
pub fn sign(
    req: &SignedRequest<'_>,
    label: &str,
    components: &[Component],
    params: &SignParams<'_>,
    key: &SigningKey,
) -> Result<SignatureHeaders, SigError> {
    if !sfv::is_key(label) {
        return Err(SigError::Parameter {
            name: "label",
            reason: "must be lowercase letters, digits, `_`, `-`, `.` or `*`, starting with a letter or `*`",
        });
    }
    let alg = params.alg.then(|| {
        (
            "alg".to_string(),
            BareItem::String(key.algorithm().name().into()),
        )
    });
    let list: Parameters = [
        sf_integer("created", params.created)?,
        sf_string("keyid", params.keyid)?,
        alg,
        sf_integer("expires", params.expires)?,
        sf_string("nonce", params.nonce)?,
        sf_string("tag", params.tag)?,
    ]
    .into_iter()
    .flatten()
    .collect();
    let base = components::signature_base(req, components, &list)?;
    let value = key.sign(base.as_bytes())?;
    let signature_input = format!(
        "{label}={}",
        components::signature_params(components, &list)
    );
    let mut signature = format!("{label}=");
    sfv::write_bare_item(&mut signature, &BareItem::Bytes(value));
    Ok(SignatureHeaders {
        signature_input,
        signature,
    })
}

fn sf_integer(name: &'static str, v: Option<u64>) -> Result<Option<(String, BareItem)>, SigError> {
    let Some(v) = v else { return Ok(None) };
    match i64::try_from(v) {
        Ok(i) if v <= MAX_SF_INTEGER => Ok(Some((name.to_string(), BareItem::Integer(i)))),
        _ => Err(SigError::Parameter {
            name,
            reason: "is larger than a structured-field integer",
        }),
    }
}

fn sf_string(name: &'static str, v: Option<&str>) -> Result<Option<(String, BareItem)>, SigError> {
    match v {
        Some(s) if !sfv::is_string(s) => Err(SigError::Parameter {
            name,
            reason: "must be printable ASCII",
        }),
        Some(s) => Ok(Some((name.to_string(), BareItem::String(s.to_string())))),
        None => Ok(None),
    }
}
