//! Decodes a binary `google.protobuf.Struct` into JSON.
//!
//! Envoy hands a Wasm plugin its `configuration` as raw bytes: the text of a `StringValue`, but
//! the *protobuf encoding* of anything else - including the `Struct` that lets a policy be written
//! as YAML inside the Envoy config (and that an Istio `EnvoyFilter` patch produces). This decoder
//! makes both shapes work. Numbers in a Struct are doubles; integral ones become JSON integers so
//! that fields such as `clock_skew_seconds: 60` read as they were written.

use serde_json::{Map, Number, Value};

/// Nesting bound, in JSON objects and arrays: the same as serde_json's recursion limit for JSON
/// text (127 levels; it refuses the 128th), so that a policy loads in either encoding or in
/// neither. Each level costs three small stack frames here, so hostile input cannot exhaust the
/// stack.
const MAX_DEPTH: usize = 127;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// `(field number, wire type)`.
    fn tag(&mut self) -> Option<(u64, u8)> {
        let t = self.varint()?;
        Some((t >> 3, (t & 7) as u8))
    }

    fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.len_delimited().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            _ => None,
        }
    }
}

/// Decodes a `Struct`; `None` when the bytes are not one.
pub fn decode(bytes: &[u8]) -> Option<Value> {
    decode_struct(bytes, 1)
}

/// `depth` counts the objects and arrays open around this one, itself included.
fn decode_struct(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut map = Map::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                let entry = r.len_delimited()?;
                let (k, v) = decode_entry(entry, depth)?;
                map.insert(k, v);
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Some(Value::Object(map))
}

fn decode_entry(bytes: &[u8], depth: usize) -> Option<(String, Value)> {
    let mut r = Reader { bytes, pos: 0 };
    let mut key = String::new();
    let mut value = Value::Null;
    while !r.done() {
        match r.tag()? {
            (1, 2) => key = String::from_utf8(r.len_delimited()?.to_vec()).ok()?,
            (2, 2) => value = decode_value(r.len_delimited()?, depth)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Some((key, value))
}

/// `depth` counts the objects and arrays around this value.
fn decode_value(bytes: &[u8], depth: usize) -> Option<Value> {
    let mut r = Reader { bytes, pos: 0 };
    let mut value = Value::Null;
    while !r.done() {
        value = match r.tag()? {
            (1, 0) => {
                r.varint()?;
                Value::Null
            }
            (2, 1) => {
                let raw: [u8; 8] = r.take(8)?.try_into().ok()?;
                number(f64::from_le_bytes(raw))?
            }
            (3, 2) => Value::String(String::from_utf8(r.len_delimited()?.to_vec()).ok()?),
            (4, 0) => Value::Bool(r.varint()? != 0),
            (5, 2) => decode_struct(r.len_delimited()?, depth + 1)?,
            (6, 2) => decode_list(r.len_delimited()?, depth + 1)?,
            (_, wire) => {
                r.skip(wire)?;
                continue;
            }
        };
    }
    Some(value)
}

fn decode_list(bytes: &[u8], depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut items = Vec::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => items.push(decode_value(r.len_delimited()?, depth)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Some(Value::Array(items))
}

fn number(f: f64) -> Option<Value> {
    // 2^53: above it a double no longer holds every integer exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() <= EXACT {
        // INVARIANT: integral and within +-2^53, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        return Some(Value::from(i));
    }
    Number::from_f64(f).map(Value::Number)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(num: u64, wire: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | wire, out);
        if wire == 2 {
            varint(payload.len() as u64, out);
        }
        out.extend_from_slice(payload);
    }

    /// Test-side encoder (the inverse of `decode`), as protoc would write a Struct.
    pub fn encode(v: &Value) -> Vec<u8> {
        let mut out = vec![];
        for (k, val) in v.as_object().unwrap() {
            let mut entry = vec![];
            field(1, 2, k.as_bytes(), &mut entry);
            field(2, 2, &encode_value(val), &mut entry);
            field(1, 2, &entry, &mut out);
        }
        out
    }

    fn encode_value(v: &Value) -> Vec<u8> {
        let mut out = vec![];
        match v {
            Value::Null => field(1, 0, &[0], &mut out),
            Value::Number(n) => field(2, 1, &n.as_f64().unwrap().to_le_bytes(), &mut out),
            Value::String(s) => field(3, 2, s.as_bytes(), &mut out),
            Value::Bool(b) => field(4, 0, &[u8::from(*b)], &mut out),
            Value::Object(_) => field(5, 2, &encode(v), &mut out),
            Value::Array(items) => {
                let mut list = vec![];
                for i in items {
                    field(1, 2, &encode_value(i), &mut list);
                }
                field(6, 2, &list, &mut out);
            }
        }
        out
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn round_trips() {
        let v = json!({
            "a": 60, "b": 1.5, "c": "x", "d": true, "e": null, "f": [1, "two", {"g": []}], "h": {"i": {}},
            "neg": -3, "big": 1e300
        });
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert_eq!(decode(&[]).unwrap(), json!({}));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn hostile_bytes_never_panic() {
        let good = encode(&json!({"routes": [{"path": "/x", "public": true}], "n": 5}));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = decode(&bad);
        }
        assert!(decode(b"{\"routes\": []}").is_none());
        assert!(
            decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .is_none()
        );
        // Deep nesting is refused, not recursed into.
        let mut deep = json!({});
        for _ in 0..200 {
            deep = json!({ "x": deep });
        }
        assert!(decode(&encode(&deep)).is_none());
    }

    /// Found by the `policy` fuzz target (tests/fuzz/regressions/policy/): a policy nested 34 to
    /// 127 levels deep loaded as JSON text but not as a Struct.
    #[wasm_bindgen_test(unsupported = test)]
    fn nesting_limit_matches_json_text() {
        let nested = |levels: usize| {
            let mut v = json!([]);
            for _ in 1..levels - 1 {
                v = json!([v]);
            }
            json!({ "x": v })
        };
        for (levels, ok) in [(127, true), (128, false)] {
            let v = nested(levels);
            assert_eq!(serde_json::from_str::<Value>(&v.to_string()).is_ok(), ok);
            assert_eq!(decode(&encode(&v)), ok.then_some(v), "{levels}");
        }
    }
}
