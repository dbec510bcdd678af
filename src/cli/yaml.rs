//! YAML files as JSON values, with the position of every value. Built from the events of
//! `saphyr-parser`, which carry spans; plain scalars are typed by the YAML 1.2 core schema
//! (`null`, `true`, `42`, `1.5`), quoted ones stay strings, and anchors/aliases are expanded.

use super::place::{element, member, LoadError, Place, Places, Pos};
use saphyr_parser::{Event, Marker, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

enum Frame {
    Map {
        map: Map<String, Value>,
        path: String,
        anchor: usize,
        /// The member whose value comes next: `(name, key position)`.
        key: Option<(String, Pos)>,
    },
    Seq {
        items: Vec<Value>,
        path: String,
        anchor: usize,
    },
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
pub fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        if let Ok(i) = unsigned.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = unsigned.parse::<u64>() {
            return Value::from(u);
        }
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(n) = text
            .strip_prefix(prefix)
            .filter(|s| !s.is_empty())
            .and_then(|s| u64::from_str_radix(s, radix).ok())
        {
            return Value::from(n);
        }
    }
    let float_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if float_chars && text.bytes().any(|b| b.is_ascii_digit()) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// Parses one YAML document into a JSON value and the places of its values.
pub fn load(text: &str) -> Result<(Value, Places), LoadError> {
    let mut places = Places::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut root: Option<Value> = None;
    let mut documents = 0;
    let fail = |m: &Marker, message: String| LoadError {
        pos: Some(pos(m)),
        message,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| LoadError {
            pos: Some(pos(e.marker())),
            message: format!("not valid YAML: {}", e.info()),
        })?;
        let here = pos(&span.start);
        // The path and key position of the value this event starts (or is).
        let slot = |stack: &[Frame]| -> (String, Option<Pos>) {
            match stack.last() {
                None => (String::new(), None),
                Some(Frame::Map { path, key, .. }) => match key {
                    Some((name, at)) => (member(path, name), Some(*at)),
                    None => (path.clone(), None),
                },
                Some(Frame::Seq { path, items, .. }) => (element(path, items.len()), None),
            }
        };
        let finished: Option<(Value, usize)> = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(
                        &span.start,
                        "a file holds one YAML document; found a second".into(),
                    ));
                }
                None
            }
            Event::MappingStart(anchor, _) => {
                let (path, key) = slot(&stack);
                places.insert(path.clone(), Place { key, value: here });
                stack.push(Frame::Map {
                    map: Map::new(),
                    path,
                    anchor,
                    key: None,
                });
                None
            }
            Event::SequenceStart(anchor, _) => {
                let (path, key) = slot(&stack);
                places.insert(path.clone(), Place { key, value: here });
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    path,
                    anchor,
                });
                None
            }
            Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                Some(Frame::Map { map, anchor, .. }) => Some((Value::Object(map), anchor)),
                Some(Frame::Seq { items, anchor, .. }) => Some((Value::Array(items), anchor)),
                None => None,
            },
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    // A member name: its text as written, whatever it looks like (`200:`).
                    *key = Some((text.to_string(), here));
                    continue;
                }
                let (path, key) = slot(&stack);
                places.insert(path, Place { key, value: here });
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !is_str_tag {
                    plain_scalar(&text)
                } else {
                    Value::String(text.to_string())
                };
                Some((value, anchor))
            }
            Event::Alias(id) => {
                let value = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| fail(&span.start, "alias to an unknown anchor".into()))?;
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    match value {
                        Value::String(s) => {
                            *key = Some((s, here));
                            continue;
                        }
                        _ => return Err(fail(&span.start, "member names must be strings".into())),
                    }
                }
                let (path, key) = slot(&stack);
                places.insert(path, Place { key, value: here });
                Some((value, 0))
            }
            _ => None,
        };
        let Some((value, anchor)) = finished else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, value.clone());
        }
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => {
                if let Some((name, at)) = key.take() {
                    if map.contains_key(&name) {
                        return Err(LoadError {
                            pos: Some(at),
                            message: format!("not valid YAML: member `{name}` appears twice"),
                        });
                    }
                    map.insert(name, value);
                } else {
                    // A complex key (a mapping or sequence as a member name).
                    return Err(LoadError {
                        pos: Some(here),
                        message: "member names must be strings".into(),
                    });
                }
            }
        }
    }
    Ok((root.unwrap_or(Value::Null), places))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::source::{Document, Format};
    use serde_json::json;

    const POLICY: &str = "\
# a comment
routes:
  - name: health
    path: /health
    methods: [GET, GETT]
    public: true
  - name: api
    prefix: /api/
    scopes:
      all:
        - 'a b'
limits: &l {rate: 5, per: second}
again: *l
response:
  200: {\"type\": object}
numbers: [1, -2, 1.5, 0x1f, 1e3, ~, \"3\", !!str 4, .inf, 12345678901234567890]
";

    #[test]
    fn values_and_positions() {
        let doc = Document::parse("p.yaml", POLICY.to_string()).unwrap();
        assert_eq!(doc.format, Format::Yaml);
        assert_eq!(doc.value["routes"][0]["methods"], json!(["GET", "GETT"]));
        assert_eq!(doc.value["again"], json!({"rate": 5, "per": "second"}));
        assert_eq!(doc.value["response"]["200"], json!({"type": "object"}));
        assert_eq!(
            doc.value["numbers"],
            json!([
                1,
                -2,
                1.5,
                31,
                1000.0,
                null,
                "3",
                "4",
                ".inf",
                12345678901234567890u64
            ])
        );
        let at = |p: &str| {
            let pos = doc.locate(p, false);
            (pos.line, pos.column)
        };
        assert_eq!(at("routes[0].methods[1]"), (5, 20));
        assert_eq!(at("routes[1].scopes.all[0]"), (11, 11));
        assert_eq!(at("routes[1].scopes"), (9, 5), "a block member: its key");
        assert_eq!(at("routes[1].name"), (7, 11));
        assert_eq!(
            doc.locate("routes[1].name", true),
            Pos { line: 7, column: 5 }
        );
    }

    #[test]
    fn errors_carry_positions() {
        let err = Document::parse("p.yaml", "a: [1, 2\nb: 3\n".into()).unwrap_err();
        assert!(err.message.starts_with("not valid YAML"), "{}", err.message);
        assert!(err.pos.is_some());
        let err = Document::parse("p.yaml", "a: 1\na: 2\n".into()).unwrap_err();
        assert_eq!(err.pos, Some(Pos { line: 2, column: 1 }));
        let err = Document::parse("p.yaml", "a: 1\n---\nb: 2\n".into()).unwrap_err();
        assert!(err.message.contains("one YAML document"), "{}", err.message);
    }
}
