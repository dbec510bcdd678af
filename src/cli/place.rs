//! Where values sit in a policy or case file: line/column positions, the place of every value by
//! JSON path, the path joiners that build those paths, and the error of a file that cannot be
//! loaded. Shared by the JSON scanner in `source.rs` and the YAML reader in `yaml.rs`.

use std::collections::HashMap;

/// A position in the source text: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where one value is: its own position and, for an object member, its key's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub key: Option<Pos>,
    pub value: Pos,
}

/// Positions by JSON path, written as the engine and `serde_path_to_error` write them:
/// `a.b[0].c`, with the empty string for the root.
#[derive(Debug, Default)]
pub struct Places(HashMap<String, Place>);

impl Places {
    pub fn insert(&mut self, path: String, place: Place) {
        self.0.entry(path).or_insert(place);
    }

    /// The place of `path`, or of its nearest ancestor in the document (a missing field is
    /// reported at the object that lacks it). The returned path is the one found.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&'p str, Place)> {
        let mut p = path;
        loop {
            if let Some(place) = self.0.get(p) {
                return Some((p, *place));
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }
}

/// `a.b[0]` -> `a.b` -> `a` -> ``.
fn parent(path: &str) -> &str {
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    path.get(..cut).unwrap_or("")
}

/// Joins a member name to a path.
pub fn member(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub fn element(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A file that could not be read or parsed at all.
#[derive(Debug)]
pub struct LoadError {
    pub pos: Option<Pos>,
    pub message: String,
}
