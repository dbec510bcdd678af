//! The audit log: one JSON line per decision. The host fills an [`AuditRecord`] as the request
//! moves through its phases and writes it when the stream ends (so the final status is known).
//! A record never holds a token, an API key, a body, a query string or a header value other
//! than the request id.

use super::decision::Mode;
use super::timefmt::rfc3339_millis;
use crate::codes::DenialCode;
use crate::policy::{AuditDoc, ConfigError};
use serde::Serialize;

/// Longest path written to a line; longer paths are cut (at a character boundary).
pub const MAX_LOGGED_PATH: usize = 512;
/// Longest request id written.
const MAX_REQUEST_ID: usize = 128;
/// Sampling resolution: `sample_allowed` is kept in units of 1/10000.
const SAMPLE_SCALE: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditLevel {
    Trace,
    Debug,
    Info,
    Warn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    pub enabled: bool,
    pub level: AuditLevel,
    /// Allowed requests logged per 10000.
    sample_allowed: u32,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            enabled: true,
            level: AuditLevel::Info,
            sample_allowed: SAMPLE_SCALE,
        }
    }
}

impl AuditOptions {
    pub fn compile(doc: Option<&AuditDoc>, errors: &mut Vec<ConfigError>) -> AuditOptions {
        let mut o = AuditOptions::default();
        let Some(doc) = doc else { return o };
        o.enabled = doc.enabled.unwrap_or(true);
        match doc.level.as_deref() {
            None | Some("info") => {}
            Some("trace") => o.level = AuditLevel::Trace,
            Some("debug") => o.level = AuditLevel::Debug,
            Some("warn") => o.level = AuditLevel::Warn,
            Some(other) => errors.push(ConfigError::new(
                "audit.level",
                format!(
                    "`{other}` is not a level; expected one of [`trace`, `debug`, `info`, `warn`]"
                ),
            )),
        }
        if let Some(f) = doc.sample_allowed {
            if (0.0..=1.0).contains(&f) {
                // In range, so the product fits.
                o.sample_allowed = (f * f64::from(SAMPLE_SCALE)).round() as u32;
            } else {
                errors.push(ConfigError::new(
                    "audit.sample_allowed",
                    format!("{f} is out of range; expected 0.0 to 1.0"),
                ));
            }
        }
        o
    }

    /// Whether an allowed request with this key (its request id) is logged. Deterministic, so
    /// every proxy that sees the same request id makes the same choice.
    pub fn sampled(&self, key: &str) -> bool {
        if self.sample_allowed >= SAMPLE_SCALE {
            return true;
        }
        // FNV-1a: cheap and well spread over request ids (UUIDs).
        let mut h: u32 = 0x811c_9dc5;
        for b in key.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h % SAMPLE_SCALE < self.sample_allowed
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    /// A `dry-run` policy or route would have refused it; it went through.
    WouldDeny,
}

/// One audit line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the request's headers arrived (ms since the epoch); written as RFC 3339 UTC, formatted
    /// only when the line is written.
    #[serde(rename = "time", serialize_with = "rfc3339")]
    pub time_ms: u64,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub method: String,
    pub route: Option<String>,
    /// Without the query string or fragment, cut at [`MAX_LOGGED_PATH`] bytes.
    pub path: String,
    /// Only for a request no route matched (refused, or let through by `default.action`): the
    /// path routes were matched against, after normalisation (no query string either), cut like
    /// `path`. `tollgate discover` groups these lines into the API's unlisted endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_path: Option<String>,
    pub principal: Option<String>,
    pub decision: Verdict,
    /// The denial code (also for `would_deny`).
    pub reason: Option<&'static str>,
    /// The code's category (`authentication`, `rate_limit`, ...).
    pub reason_category: Option<&'static str>,
    /// The status sent to the client; 0 if the stream ended before a response.
    pub status: u16,
    pub mode: Mode,
}

fn rfc3339<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*ms))
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

impl AuditRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now_ms: u64,
        request_id: Option<&str>,
        client_ip: Option<&str>,
        method: &str,
        path_only: &str,
        mode: Mode,
    ) -> AuditRecord {
        AuditRecord {
            time_ms: now_ms,
            request_id: request_id.map(|r| cut(r, MAX_REQUEST_ID)),
            client_ip: client_ip.map(|c| cut(c, 64)),
            method: cut(method, 32),
            route: None,
            path: cut(path_only, MAX_LOGGED_PATH),
            normalized_path: None,
            principal: None,
            decision: Verdict::Allow,
            reason: None,
            reason_category: None,
            status: 0,
            mode,
        }
    }

    /// Records a refusal (or, in dry-run, a refusal that was not carried out).
    pub fn refused(&mut self, code: DenialCode, carried_out: bool) {
        self.decision = if carried_out {
            Verdict::Deny
        } else {
            Verdict::WouldDeny
        };
        self.reason = Some(code.as_str());
        self.reason_category = Some(code.reason().as_str());
    }

    /// Marks the request as one no route matched: `normalized` is what the routes were matched
    /// against (the output of `path::normalize`, which has dropped the query string).
    pub fn unmatched(&mut self, normalized: &str) {
        self.normalized_path = Some(cut(normalized, MAX_LOGGED_PATH));
    }

    /// What sampling hashes: the request id, or the time when there is none.
    pub fn sampling_key(&self) -> std::borrow::Cow<'_, str> {
        match &self.request_id {
            Some(id) => std::borrow::Cow::Borrowed(id),
            None => std::borrow::Cow::Owned(rfc3339_millis(self.time_ms)),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn line_has_every_field_and_nothing_else() {
        let mut r = AuditRecord::new(
            0,
            Some("abc"),
            Some("10.0.0.1"),
            "GET",
            "/orders/42",
            Mode::DryRun,
        );
        r.route = Some("order".into());
        r.refused(DenialCode::TokenExpired, false);
        r.status = 200;
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "1970-01-01T00:00:00.000Z", "request_id": "abc", "client_ip": "10.0.0.1",
                "method": "GET", "route": "order", "path": "/orders/42", "principal": null,
                "decision": "would_deny", "reason": "token_expired",
                "reason_category": "authentication", "status": 200, "mode": "dry-run"
            })
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn long_paths_are_cut_at_a_boundary() {
        let path = format!("/{}", "é".repeat(600));
        let r = AuditRecord::new(0, None, None, "GET", &path, Mode::Enforce);
        assert!(r.path.len() <= MAX_LOGGED_PATH);
        assert!(r.to_json().starts_with('{'));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn normalized_path_only_on_unmatched_lines() {
        let mut r = AuditRecord::new(0, None, None, "GET", "/a//b/./c", Mode::Enforce);
        assert!(!r.to_json().contains("normalized_path"));
        r.unmatched(&format!("/a/b/c{}", "é".repeat(600)));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["path"], "/a//b/./c");
        let n = v["normalized_path"].as_str().unwrap();
        assert!(n.starts_with("/a/b/c") && n.len() <= MAX_LOGGED_PATH, "{n}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn options_and_sampling() {
        let mut errors = vec![];
        let doc: AuditDoc =
            serde_json::from_value(serde_json::json!({"sample_allowed": 0.25, "level": "debug"}))
                .unwrap();
        let o = AuditOptions::compile(Some(&doc), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(o.level, AuditLevel::Debug);
        let hits = (0..4000).filter(|i| o.sampled(&format!("req-{i}"))).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert_eq!(o.sampled("req-7"), o.sampled("req-7"));
        let doc: AuditDoc =
            serde_json::from_value(serde_json::json!({"sample_allowed": 1.5, "level": "loud"}))
                .unwrap();
        AuditOptions::compile(Some(&doc), &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["audit.level", "audit.sample_allowed"]);
        let none: AuditDoc =
            serde_json::from_value(serde_json::json!({"sample_allowed": 0.0})).unwrap();
        let o = AuditOptions::compile(Some(&none), &mut vec![]);
        assert!(!(0..100).any(|i| o.sampled(&i.to_string())));
    }
}
