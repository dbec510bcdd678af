//! `$ref`s of an OpenAPI document: JSON pointers into the document itself and into files beside
//! it (relative paths only; nothing is ever fetched over the network), with the documents they
//! name loaded once. Schema references become named schemas of the policy; other references
//! (parameters, request bodies, responses, security schemes) are followed to their target.

use crate::cli::source::Document;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How many references in a row are followed before the chain counts as a cycle.
const MAX_CHAIN: usize = 32;

/// A place in one of the loaded documents: the file (`""` for the main document) and a JSON
/// pointer (`/components/schemas/Pet`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub file: String,
    pub pointer: String,
}

impl Target {
    /// A place in the main document.
    pub fn main(pointer: impl Into<String>) -> Target {
        Target {
            file: String::new(),
            pointer: pointer.into(),
        }
    }

    /// The member `key` of this place.
    pub fn join(&self, key: &str) -> Target {
        Target {
            file: self.file.clone(),
            pointer: format!("{}/{}", self.pointer, escape(key)),
        }
    }

    #[cfg(test)]
    pub fn default_main() -> Target {
        Target::main("")
    }
}

/// The documents of one import: the main one and those its `$ref`s name.
pub struct Resolver {
    base: PathBuf,
    docs: BTreeMap<String, Value>,
}

/// Unescapes one JSON pointer segment (`~1` is `/`, `~0` is `~`).
pub fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// Escapes one JSON pointer segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The value at `pointer` (RFC 6901; `#` fragments are percent-decoded first).
pub fn at_pointer<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(doc);
    }
    let decoded = percent_decode(pointer);
    let rest = decoded.strip_prefix('/')?;
    let mut here = doc;
    for raw in rest.split('/') {
        let segment = unescape(raw);
        here = match here {
            Value::Object(map) => map.get(&segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(here)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Resolver {
    /// `main` is the document at `path` (its directory is where relative references are read).
    pub fn new(path: &Path, main: Value) -> Resolver {
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut docs = BTreeMap::new();
        docs.insert(String::new(), main);
        Resolver { base, docs }
    }

    /// The main document.
    pub fn main(&self) -> &Value {
        self.docs.get("").unwrap_or(&Value::Null)
    }

    /// The target of a `$ref` written in `from`'s file. Refuses URLs and absolute paths.
    pub fn target(&mut self, from: &Target, reference: &str) -> Result<Target, String> {
        let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        if file.contains("://") || file.starts_with("//") {
            return Err(format!(
                "`{reference}` is a URL: Tollgate never fetches references over the network; copy the document beside the specification"
            ));
        }
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "`{reference}`: only JSON pointers (`#/...`) are supported as fragments"
            ));
        }
        let file = if file.is_empty() {
            from.file.clone()
        } else {
            if Path::new(file).is_absolute() {
                return Err(format!(
                    "`{reference}`: absolute paths are not followed; use a path relative to the specification"
                ));
            }
            // Relative to the file the reference is written in.
            let dir = Path::new(&from.file)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            normalize(&dir.join(file))
        };
        if !self.docs.contains_key(&file) {
            let path = self.base.join(&file);
            let doc = Document::read(&path.to_string_lossy())
                .map_err(|e| format!("`{reference}`: {}: {}", path.display(), e.message))?;
            self.docs.insert(file.clone(), doc.value);
        }
        Ok(Target {
            file,
            pointer: pointer.to_string(),
        })
    }

    /// The value at `t`.
    pub fn get(&self, t: &Target) -> Option<&Value> {
        at_pointer(self.docs.get(&t.file)?, &t.pointer)
    }

    /// Follows `$ref`s from `value` (found at `at`) until an object without one; returns it and
    /// where it is. A chain longer than [`MAX_CHAIN`] is reported as a cycle.
    pub fn follow(&mut self, value: &Value, at: &Target) -> Result<(Value, Target), String> {
        let mut here = value.clone();
        let mut place = at.clone();
        for _ in 0..MAX_CHAIN {
            let Some(reference) = here.get("$ref").and_then(Value::as_str) else {
                return Ok((here, place));
            };
            let next = self.target(&place, reference)?;
            here = self.get(&next).cloned().ok_or_else(|| {
                format!("`{reference}` points at nothing (`{}`)", self.shown(&next))
            })?;
            place = next;
        }
        Err(format!(
            "`$ref` chain longer than {MAX_CHAIN} from `{}`: a reference cycle",
            self.shown(at)
        ))
    }

    /// `t` for messages: `#/pointer` in the main document (the caller names the document),
    /// `file#/pointer` in another.
    pub fn shown(&self, t: &Target) -> String {
        format!("{}#{}", t.file, t.pointer)
    }
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if parts.last().is_some_and(|l| l != "..") {
                    parts.pop();
                } else {
                    parts.push("..".into());
                }
            }
            other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_follow_rfc_6901() {
        let doc = json!({"paths": {"/a/{id}": {"get": {"x": [1, 2]}}}, "t~s": 3});
        assert_eq!(
            at_pointer(&doc, "/paths/~1a~1{id}/get/x/1"),
            Some(&json!(2))
        );
        assert_eq!(at_pointer(&doc, "/t~0s"), Some(&json!(3)));
        assert_eq!(
            at_pointer(&doc, "/paths/%7E1a%7E1%7Bid%7D/get/x/0"),
            Some(&json!(1))
        );
        assert_eq!(at_pointer(&doc, "/nope"), None);
        assert_eq!(at_pointer(&doc, "/paths/~1a~1{id}/get/x/9"), None);
        assert_eq!(at_pointer(&doc, ""), Some(&doc));
        assert_eq!(escape("/a~b"), "~1a~0b");
    }

    #[test]
    fn chains_are_followed_and_cycles_refused() {
        let doc = json!({"components": {"parameters": {
            "a": {"$ref": "#/components/parameters/b"},
            "b": {"name": "id", "in": "path"},
            "x": {"$ref": "#/components/parameters/y"},
            "y": {"$ref": "#/components/parameters/x"}
        }}});
        let mut r = Resolver::new(Path::new("spec.json"), doc);
        let at = Target {
            file: String::new(),
            pointer: "/paths".into(),
        };
        let (v, t) = r
            .follow(&json!({"$ref": "#/components/parameters/a"}), &at)
            .unwrap();
        assert_eq!(v["name"], "id");
        assert_eq!(t.pointer, "/components/parameters/b");
        let e = r
            .follow(&json!({"$ref": "#/components/parameters/x"}), &at)
            .unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let e = r
            .follow(&json!({"$ref": "#/components/parameters/none"}), &at)
            .unwrap_err();
        assert!(e.contains("points at nothing"), "{e}");
    }

    #[test]
    fn urls_and_absolute_paths_are_never_followed() {
        let mut r = Resolver::new(Path::new("spec.json"), json!({}));
        let at = Target {
            file: String::new(),
            pointer: String::new(),
        };
        for bad in [
            "https://example.com/s.json#/a",
            "//example.com/s.json",
            "/etc/passwd#/a",
        ] {
            assert!(r.target(&at, bad).is_err(), "{bad}");
        }
        assert!(r.target(&at, "#components").is_err());
    }

    #[test]
    fn relative_files_resolve_from_the_referring_file() {
        assert_eq!(normalize(Path::new("a/./b/../c.yaml")), "a/c.yaml");
        assert_eq!(normalize(Path::new("../x.json")), "../x.json");
    }
}
