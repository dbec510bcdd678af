//! Protobuf's wire format, written and read by hand for the few messages Tollgate exchanges with
//! Envoy (the rate-limit service's, src/ratelimit/rls.rs; the `verify_signature` foreign
//! function's, src/host/crypto.rs): a protobuf runtime would add far more to every module. The
//! reader takes any bytes without panicking; callers skip fields they do not know, as protobuf
//! readers must.

/// Wire types.
pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

/// An unsigned LEB128 number.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field's key: its number and wire type.
pub fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A length-delimited field (string, bytes, embedded message).
pub fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A varint field (integers, booleans, enums).
pub fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, VARINT);
    varint(out, v);
}

// ---- decoding ----

/// A field as read off the wire.
pub enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width values: Tollgate reads none of them.
    Other,
}

/// Bytes that are not a protobuf message (truncated, an unknown wire type, field number 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotProtobuf;

/// The fields of a message, read one at a time ([`fields`]).
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next field: `Ok(None)` at the end, `Err` on bytes that are not protobuf.
    pub fn next_field(&mut self) -> Result<Option<(u32, Field<'a>)>, NotProtobuf> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint().ok_or(NotProtobuf)?;
        let field = u32::try_from(key >> 3).map_err(|_| NotProtobuf)?;
        if field == 0 {
            return Err(NotProtobuf);
        }
        let value = match (key & 7) as u8 {
            VARINT => Field::Varint(self.varint().ok_or(NotProtobuf)?),
            FIXED64 => {
                self.take(8).ok_or(NotProtobuf)?;
                Field::Other
            }
            LEN => {
                let n =
                    usize::try_from(self.varint().ok_or(NotProtobuf)?).map_err(|_| NotProtobuf)?;
                Field::Bytes(self.take(n).ok_or(NotProtobuf)?)
            }
            FIXED32 => {
                self.take(4).ok_or(NotProtobuf)?;
                Field::Other
            }
            // Groups (3, 4) are not used by these messages; anything else is not protobuf.
            _ => return Err(NotProtobuf),
        };
        Ok(Some((field, value)))
    }
}

/// Reads the fields of one message in order.
pub fn fields(buf: &[u8]) -> Reader<'_> {
    Reader { buf }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn fields_read_back_what_was_written() {
        let mut out = Vec::new();
        varint_field(&mut out, 1, 300);
        bytes_field(&mut out, 2, b"abc");
        tag(&mut out, 3, FIXED32);
        out.extend_from_slice(&[0; 4]);
        let mut r = fields(&out);
        assert!(matches!(r.next_field(), Ok(Some((1, Field::Varint(300))))));
        assert!(matches!(
            r.next_field(),
            Ok(Some((2, Field::Bytes(b"abc"))))
        ));
        assert!(matches!(r.next_field(), Ok(Some((3, Field::Other)))));
        assert!(matches!(r.next_field(), Ok(None)));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bytes_that_are_not_protobuf_are_errors() {
        for bad in [
            &[0x08][..],         // varint missing
            &[0x12, 0x05, b'x'], // shorter than its length
            &[0x0b],             // group (wire type 3)
            &[0x00, 0x01],       // field number 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // 11-byte varint
        ] {
            assert!(fields(bad).next_field().is_err(), "{bad:?}");
        }
    }
}
