//! The DER a host's signature check takes (Envoy's `verify_signature`, BoringSSL): public keys as
//! SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7, RFC 3279, RFC 5480) built from a JWK's
//! members, and ECDSA signatures as `ECDSA-Sig-Value` built from JWS's `r || s` (RFC 7518
//! section 3.4). Only what those need: short and long lengths, INTEGER, BIT STRING, SEQUENCE.

/// rsaEncryption (1.2.840.113549.1.1.1).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7), secp384r1 (1.3.132.0.34), secp521r1 (1.3.132.0.35).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

fn tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// An unsigned big-endian number as a DER INTEGER: leading zeros dropped, one zero byte added
/// when the top bit is set (it would read as negative).
fn unsigned(number: &[u8], out: &mut Vec<u8>) {
    let skip = number.iter().take_while(|b| **b == 0).count();
    let digits = number.get(skip..).unwrap_or(&[]);
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    tlv(INTEGER, &content, out);
}

fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(key);
    let mut body = Vec::with_capacity(algorithm.len() + bits.len() + 8);
    tlv(SEQUENCE, algorithm, &mut body);
    tlv(BIT_STRING, &bits, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    tlv(SEQUENCE, &body, &mut out);
    out
}

/// The SubjectPublicKeyInfo of an RSA key (`n`, `e` as in a JWK: big-endian, unsigned).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut algorithm = Vec::new();
    tlv(OID, OID_RSA, &mut algorithm);
    tlv(NULL, &[], &mut algorithm);
    let mut numbers = Vec::with_capacity(n.len() + e.len() + 8);
    unsigned(n, &mut numbers);
    unsigned(e, &mut numbers);
    let mut key = Vec::with_capacity(numbers.len() + 4);
    tlv(SEQUENCE, &numbers, &mut key);
    spki(&algorithm, &key)
}

/// The SubjectPublicKeyInfo of an EC key on `crv` (`P-256`, `P-384`, `P-521`) from its
/// uncompressed point (`0x04 || x || y`); `None` for another curve.
pub fn ec_spki(crv: &str, point: &[u8]) -> Option<Vec<u8>> {
    let curve = match crv {
        "P-256" => OID_P256,
        "P-384" => OID_P384,
        "P-521" => OID_P521,
        _ => return None,
    };
    let mut algorithm = Vec::new();
    tlv(OID, OID_EC, &mut algorithm);
    tlv(OID, curve, &mut algorithm);
    Some(spki(&algorithm, point))
}

/// A JWS ECDSA signature (`r || s`, each `size` bytes) as DER; `None` when it is not exactly
/// `2 * size` bytes long (such a signature is invalid, as jwt-simple also finds).
pub fn ecdsa_signature(raw: &[u8], size: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * size {
        return None;
    }
    let (r, s) = raw.split_at(size);
    let mut numbers = Vec::with_capacity(raw.len() + 8);
    unsigned(r, &mut numbers);
    unsigned(s, &mut numbers);
    let mut out = Vec::with_capacity(numbers.len() + 4);
    tlv(SEQUENCE, &numbers, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn integers_are_minimal_and_unsigned() {
        let mut out = Vec::new();
        unsigned(&[0, 0, 0x7f], &mut out);
        assert_eq!(out, [0x02, 0x01, 0x7f]);
        out.clear();
        unsigned(&[0x80], &mut out);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80]);
        out.clear();
        unsigned(&[0, 0], &mut out);
        assert_eq!(out, [0x02, 0x01, 0x00]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn long_lengths() {
        let mut out = Vec::new();
        tlv(0x04, &[7; 300], &mut out);
        assert_eq!(out.get(..4), Some(&[0x04, 0x82, 0x01, 0x2c][..]));
        assert_eq!(out.len(), 304);
        out.clear();
        tlv(0x04, &[7; 200], &mut out);
        assert_eq!(out.get(..3), Some(&[0x04, 0x81, 200][..]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ecdsa_signatures_need_their_exact_length() {
        assert_eq!(ecdsa_signature(&[1; 63], 32), None);
        assert_eq!(ecdsa_signature(&[1; 65], 32), None);
        let der = ecdsa_signature(&[0xff; 64], 32).unwrap();
        // Both numbers get a zero byte: 2 + 2 * (2 + 33).
        assert_eq!(der.len(), 72);
        assert_eq!(der.get(..4), Some(&[0x30, 70, 0x02, 33][..]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_ec_key_of_another_curve_has_none() {
        assert_eq!(ec_spki("secp256k1", &[4; 65]), None);
        let der = ec_spki("P-256", &[4; 65]).unwrap();
        // The fixed prefix every P-256 SubjectPublicKeyInfo shares (RFC 5480).
        assert_eq!(
            der.get(..27),
            Some(
                &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                    0x04
                ][..]
            )
        );
    }
}
