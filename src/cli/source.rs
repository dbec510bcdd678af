//! Policy and case files as the user wrote them: JSON or YAML text, the JSON value it holds, and
//! where each value sits in the text, so that a JSON path (`routes[2].methods[0]`) from the
//! engine can be shown as `file:line:column`.

use super::place::{element, member, LoadError, Place, Places, Pos};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A loaded file.
#[derive(Debug)]
pub struct Document {
    pub name: String,
    pub text: String,
    pub format: Format,
    pub value: Value,
    pub places: Places,
}

impl Document {
    pub fn read(path: &str) -> Result<Document, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError {
            pos: None,
            message: format!("cannot read: {e}"),
        })?;
        Document::parse(path, text)
    }

    /// JSON for `.json` files, YAML for `.yaml` and `.yml`; otherwise JSON when the text starts
    /// with `{`.
    pub fn parse(name: &str, text: String) -> Result<Document, LoadError> {
        let lower = name.to_ascii_lowercase();
        let format = if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            Format::Yaml
        } else if lower.ends_with(".json") || text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        };
        let (value, places) = match format {
            Format::Json => {
                let value: Value = serde_json::from_str(&text).map_err(|e| LoadError {
                    pos: Some(Pos {
                        line: e.line(),
                        column: e.column(),
                    }),
                    message: format!("not valid JSON: {}", strip_position(&e.to_string())),
                })?;
                (value, json_places(&text))
            }
            Format::Yaml => super::yaml::load(&text)?,
        };
        Ok(Document {
            name: name.to_string(),
            text,
            format,
            value,
            places,
        })
    }

    /// The value at `path` in the document, if it exists.
    pub fn value_at(&self, path: &str) -> Option<&Value> {
        let mut node = &self.value;
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let (index, tail) = after.split_once(']')?;
                node = node.get(index.parse::<usize>().ok()?)?;
                rest = tail;
                continue;
            }
            let rest_name = rest.strip_prefix('.').unwrap_or(rest);
            let map = node.as_object()?;
            // Member names may themselves hold `.` (schema names): take the longest that fits.
            let key = map
                .keys()
                .filter(|k| {
                    rest_name.starts_with(k.as_str())
                        && matches!(
                            rest_name.as_bytes().get(k.len()),
                            None | Some(b'.') | Some(b'[')
                        )
                })
                .max_by_key(|k| k.len())?;
            node = map.get(key)?;
            rest = rest_name.get(key.len()..).unwrap_or("");
        }
        Some(node)
    }

    /// Where to point for a problem at `path`: the value for scalars, the key for objects and
    /// arrays that are members (their first line is the key's), or the nearest ancestor.
    pub fn locate(&self, path: &str, prefer_key: bool) -> Pos {
        match self.places.find(path) {
            Some((found, place)) => {
                let container = self
                    .value_at(found)
                    .is_some_and(|v| v.is_object() || v.is_array());
                match place.key {
                    Some(k) if prefer_key || container => k,
                    _ => place.value,
                }
            }
            None => Pos { line: 1, column: 1 },
        }
    }
}

/// serde_json's messages end in ` at line L column C`; the position is reported separately.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}

/// A short JSON rendering of a value for messages: `"GETT"`, `5`, `{…}` cut at 60 characters.
pub fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(57).collect();
    format!("{cut}…")
}

/// Records the position of every value (and member key) of a JSON text that serde_json has
/// already accepted. Positions stop at the first surprise, which a valid text never has.
pub fn json_places(text: &str) -> Places {
    let mut scan = JsonScan {
        text,
        bytes: text.as_bytes(),
        i: 0,
        line: 1,
        line_start: 0,
        places: Places::default(),
    };
    scan.ws();
    let _ = scan.value(String::new(), None, 0);
    scan.places
}

/// Deeper documents are valid JSON but not policies; stop recording there.
const MAX_DEPTH: usize = 256;

struct JsonScan<'a> {
    text: &'a str,
    bytes: &'a [u8],
    i: usize,
    line: usize,
    line_start: usize,
    places: Places,
}

impl JsonScan<'_> {
    fn pos(&self) -> Pos {
        let column = self
            .text
            .get(self.line_start..self.i)
            .map_or(0, |s| s.chars().count())
            + 1;
        Pos {
            line: self.line,
            column,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.line_start = self.i;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                _ => break,
            }
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.i += 1)
    }

    /// Skips a string; returns its decoded text.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        serde_json::from_str(self.text.get(start..self.i)?).ok()
    }

    fn value(&mut self, path: String, key: Option<Pos>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let here = self.pos();
        self.places.insert(path.clone(), Place { key, value: here });
        match self.peek()? {
            b'{' => {
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    let key_pos = self.pos();
                    let name = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(member(&path, &name), Some(key_pos), depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b'}');
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                let mut index = 0;
                loop {
                    self.ws();
                    self.value(element(&path, index), None, depth + 1)?;
                    index += 1;
                    self.ws();
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{
  "routes": [
    {"path": "/a", "methods": ["GET", "GETT"], "public": true},
    {
      "name": "x",
      "scopes": {"all": ["a b"]}
    }
  ],
  "schemas": {"v1.Order": {"type": "object"}, "v1": true}
}"#;

    #[test]
    fn json_paths_map_to_lines_and_columns() {
        let doc = Document::parse("p.json", POLICY.to_string()).unwrap();
        assert_eq!(doc.format, Format::Json);
        let at = |p: &str| {
            let pos = doc.locate(p, false);
            (pos.line, pos.column)
        };
        assert_eq!(at("routes[0].methods[1]"), (3, 39));
        assert_eq!(at("routes[1].scopes.all[0]"), (6, 26));
        // A container member points at its key; an array element at its start.
        assert_eq!(at("routes[1].scopes"), (6, 7));
        assert_eq!(at("routes[1]"), (4, 5));
        // Missing members fall back to the object that lacks them.
        assert_eq!(at("routes[1].response"), (4, 5));
        assert_eq!(at("schemas.v1.Order.type"), (9, 36));
        assert_eq!(at(""), (1, 1));
        assert_eq!(
            doc.value_at("routes[0].methods[1]"),
            Some(&Value::from("GETT"))
        );
        assert_eq!(
            doc.value_at("schemas.v1.Order.type"),
            Some(&Value::from("object"))
        );
        assert_eq!(doc.value_at("schemas.v2"), None);
    }

    #[test]
    fn json_syntax_errors_carry_their_position() {
        let err = Document::parse("p.json", "{\n  \"routes\": [,]\n}".into()).unwrap_err();
        assert_eq!(
            err.pos,
            Some(Pos {
                line: 2,
                column: 14
            })
        );
        assert!(err.message.starts_with("not valid JSON"), "{}", err.message);
    }

    #[test]
    fn escaped_keys_and_nested_strings() {
        let text = "{\"a\\u0062\": {\"c\": \"}]\\\"\"},\n \"d\": [1, {\"e\": null}]}";
        let doc = Document::parse("x.json", text.into()).unwrap();
        assert_eq!(
            doc.locate("ab.c", false),
            Pos {
                line: 1,
                column: 19
            }
        );
        assert_eq!(
            doc.locate("d[1].e", false),
            Pos {
                line: 2,
                column: 17
            }
        );
    }

    #[test]
    fn short_values_are_cut() {
        assert_eq!(short(&Value::from("GETT")), "\"GETT\"");
        let long = Value::from("x".repeat(100));
        assert!(short(&long).ends_with('…'));
        assert_eq!(short(&long).chars().count(), 58);
    }
}
