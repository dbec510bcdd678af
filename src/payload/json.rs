//! Parsing bodies into JSON values the way the strictest upstream would: an object that names a
//! key twice is refused unless the policy allows it, because parsers disagree on which value
//! wins (serde_json, Go and Python keep the last, some streaming parsers the first) and a body
//! checked as one value could be used as the other.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// `body` as JSON; `None` if it is not JSON, or names an object key twice when `allow_duplicates`
/// is off. Depth is bounded by the caller (`nesting_exceeds`) before this runs.
pub fn parse(body: &[u8], allow_duplicates: bool) -> Option<Value> {
    if allow_duplicates {
        return serde_json::from_slice(body).ok();
    }
    serde_json::from_slice::<Strict>(body).ok().map(|s| s.0)
}

/// `text` as JSON whose objects have distinct keys, or serde_json's error (with line and column).
/// The policy parser's first step: a policy that names a key twice is refused, not read as
/// whichever value a parser keeps.
pub fn parse_strict(text: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(text).map(|s| s.0)
}

/// A JSON value whose objects have distinct keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn same_values_as_serde_json() {
        let body = br#"{"a": [1, -2, 3.5, 1e300, true, null, "x\u00e9"], "b": {"c": {}}, "d": 18446744073709551615}"#;
        assert_eq!(parse(body, false), serde_json::from_slice(body).ok());
        assert_eq!(parse(b"[]", false), Some(json!([])));
        assert_eq!(parse(b"\"s\"", false), Some(json!("s")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn duplicate_keys_are_refused_unless_allowed() {
        let body = br#"{"qty": "bad", "qty": 1}"#;
        assert_eq!(parse(body, false), None);
        assert_eq!(parse(body, true), Some(json!({"qty": 1})));
        assert_eq!(parse(br#"{"o": {"k": 1, "k": 2}}"#, false), None);
        assert_eq!(
            parse(br#"[{"k": 1}, {"k": 2}]"#, false),
            Some(json!([{"k": 1}, {"k": 2}]))
        );
        // The same key spelled with an escape is the same key once decoded.
        assert_eq!(
            parse(br#"{"role": "user", "r\u006fle": "admin"}"#, false),
            None
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn not_json_is_refused() {
        for body in [
            &b"{\"a\": \"\\ud800\"}"[..],
            b"\xef\xbb\xbf{}",
            b")]}'\n{}",
            b"{} x",
            b"",
        ] {
            assert_eq!(
                parse(body, false),
                None,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
