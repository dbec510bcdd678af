//! What an import reports: constructs the policy does not enforce (errors only with `--strict`),
//! and problems that stop it, each with the JSON pointer of its place in the document.

/// What the import reports: constructs not enforced (errors only with `--strict`), and errors.
#[derive(Debug, Default)]
pub struct Notes {
    items: Vec<(Kind, String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Unenforced,
    Error,
}

impl Notes {
    /// A construct the policy does not enforce (or enforces more strictly), at `at`.
    pub fn unenforced(&mut self, at: &str, message: &str) {
        self.items
            .push((Kind::Unenforced, at.to_string(), message.to_string()));
    }

    /// A problem that stops the import.
    pub fn error(&mut self, at: &str, message: &str) {
        self.items
            .push((Kind::Error, at.to_string(), message.to_string()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn errors(&self) -> impl Iterator<Item = &(Kind, String, String)> {
        self.items.iter().filter(|(k, _, _)| *k == Kind::Error)
    }

    pub fn unenforced_count(&self) -> usize {
        self.items
            .iter()
            .filter(|(k, _, _)| *k == Kind::Unenforced)
            .count()
    }

    /// One line per note, in the order found; a note about a place several operations share
    /// (a `$ref`ed request body) once.
    pub fn lines(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.items
            .iter()
            .filter(|item| seen.insert(*item))
            .map(|(k, at, m)| match k {
                Kind::Unenforced => format!("{at}: not enforced: {m}"),
                Kind::Error => format!("{at}: error: {m}"),
            })
            .collect()
    }
}
