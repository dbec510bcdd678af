//! Configuration errors: found at load time, each naming the JSON path it is about.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path in the policy document, e.g. `providers.corp.jwks.keys[1].n`; empty for the root.
    pub path: String,
    /// Lowercase; what was found and what is allowed, user input in backticks.
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "policy: {}", self.message)
        } else {
            write!(f, "policy `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
