//! `tollgate check`: load and compile a policy with the filter's own code (`policy::parse`,
//! `policy::from_value`, `Engine::from_doc`), print every problem at its line and column, and warn
//! about choices that are legal but risky.

use super::place::Pos;
use super::source::{short, Document, Format};
use crate::engine::Engine;
use crate::policy::{self, ConfigError, PolicyDoc};
use serde_json::{json, Value};

/// One problem or warning, placed in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub path: String,
    pub pos: Pos,
    pub message: String,
    /// The value at `path`, as short JSON, when the document has one there.
    pub found: Option<String>,
}

/// What `check` learnt about one file.
#[derive(Debug)]
pub struct Report {
    pub file: String,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// The compiled engine, when the policy is valid.
    pub engine: Option<Engine>,
    /// The document, when the policy parsed.
    pub doc: Option<PolicyDoc>,
    pub source: Option<Document>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.errors.is_empty()
    }
}

fn place(source: &Document, e: &ConfigError) -> Finding {
    // Unknown and duplicate members are about the name, not the value.
    let about_key = e.message.starts_with("unknown field") || e.message.starts_with("duplicate");
    Finding {
        path: e.path.clone(),
        pos: source.locate(&e.path, about_key),
        message: e.message.clone(),
        found: if about_key || e.path.is_empty() {
            None
        } else {
            source.value_at(&e.path).map(short)
        },
    }
}

/// Loads, parses and compiles a policy file.
pub fn check_file(path: &str) -> Report {
    let mut report = Report {
        file: path.to_string(),
        errors: vec![],
        warnings: vec![],
        engine: None,
        doc: None,
        source: None,
    };
    let source = match Document::read(path) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(Finding {
                path: String::new(),
                pos: e.pos.unwrap_or(Pos { line: 1, column: 1 }),
                message: e.message,
                found: None,
            });
            return report;
        }
    };
    let parsed = match source.format {
        // The exact bytes the filter would be given as a StringValue.
        Format::Json => policy::parse(source.text.as_bytes()),
        // What Envoy hands the filter for a Struct: the same tree, decoded.
        Format::Yaml => policy::from_value(source.value.clone()),
    };
    match parsed {
        Err(e) => report.errors.push(place(&source, &e)),
        Ok(doc) => {
            report.warnings = warnings(&doc)
                .into_iter()
                .map(|(path, message)| Finding {
                    pos: source.locate(&path, false),
                    found: None,
                    path,
                    message,
                })
                .collect();
            match Engine::from_doc(&doc) {
                Ok(engine) => report.engine = Some(engine),
                Err(errors) => report
                    .errors
                    .extend(errors.iter().map(|e| place(&source, e))),
            }
            report.doc = Some(doc);
        }
    }
    report.source = Some(source);
    report
}

/// A bucket that holds more than this many periods' worth of tokens lets a caller spend a long
/// stretch of its allowance at once.
const BURST_PERIODS: u64 = 10;
/// Above this, a burst is large whatever the rate.
const BURST_CEILING: u64 = 100_000;

/// Choices the compiler accepts that deserve a second look: `(path, message)`.
pub fn warnings(doc: &PolicyDoc) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if doc.mode.as_deref() == Some("dry-run") {
        out.push((
            "mode".into(),
            "`dry-run` is on: every request is let through; refusals are only logged and counted"
                .into(),
        ));
    }
    if doc.default.as_ref().is_some_and(|d| d.action == "allow") {
        out.push(("default.action".into(), "requests that match no route are let through unauthenticated (`allow`); the policy is no longer the API's inventory".into()));
    }
    for (name, p) in &doc.providers {
        let at = format!("providers.{name}");
        if p.require_expiration == Some(false) {
            out.push((
                format!("{at}.require_expiration"),
                "tokens without `exp` are accepted and never expire".into(),
            ));
        }
        if let Some(r) = &p.remote_jwks {
            plaintext_keys(&format!("{at}.remote_jwks"), r, &mut out);
        }
        for (i, key) in p.jwks.iter().flat_map(|j| j.keys.iter()).enumerate() {
            if let Some(len) = hmac_key_len(key) {
                if len < 32 {
                    out.push((
                        format!("{at}.jwks.keys[{i}]"),
                        format!("hmac secret is {len} bytes; use at least 32 random bytes"),
                    ));
                }
            }
        }
    }
    for (name, s) in &doc.signers {
        if let Some(r) = &s.remote_keys {
            plaintext_keys(&format!("signers.{name}.remote_keys"), r, &mut out);
        }
        if s.require_nonce == Some(false) {
            out.push((
                format!("signers.{name}.require_nonce"),
                "signatures without a nonce are accepted: a captured request can be replayed until it is `max_age_seconds` old".into(),
            ));
        }
    }
    if let Some(r) = &doc.revocations {
        if let Some(remote) = &r.remote {
            let risk = "revocations could be lifted in transit";
            plaintext("revocations.remote", remote, risk, &mut out);
        }
        if r.on_unavailable.as_deref() == Some("allow") {
            out.push((
                "revocations.on_unavailable".into(),
                "until the remote list is first fetched, credentials it revokes are let through"
                    .into(),
            ));
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        if doc.tls.is_some()
            && r.peers.is_none()
            && r.tls
                .as_ref()
                .is_some_and(|t| !t.client_certificate && t.min_version.is_none() && !t.required)
        {
            out.push((
                format!("routes[{i}].tls"),
                "an empty `tls` replaces the policy's: this route takes plaintext".into(),
            ));
        }
    }
    for (name, l) in &doc.rate_limits {
        if l.burst > BURST_CEILING || l.burst > l.rate.saturating_mul(BURST_PERIODS) {
            out.push((
                format!("rate_limits.{name}.burst"),
                format!(
                    "burst {} is {} times the rate of {} per {}: a caller can spend that much at once",
                    l.burst,
                    l.burst / l.rate.max(1),
                    l.rate,
                    l.per
                ),
            ));
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.public {
            let methods = if r.methods.is_empty() {
                "every method".to_string()
            } else {
                r.methods.join(", ")
            };
            let (kind, pattern) = match (&r.path, &r.prefix) {
                (Some(p), _) => ("", p.as_str()),
                (_, Some(p)) => (" (prefix)", p.as_str()),
                _ => ("", ""),
            };
            out.push((
                at.clone(),
                format!(
                    "route `{}` has no authentication: {methods} {pattern}{kind} is public",
                    r.name.clone().unwrap_or_else(|| at.clone())
                ),
            ));
        }
        if r.mode.as_deref() == Some("dry-run") {
            out.push((
                format!("{at}.mode"),
                "`dry-run` is on for this route: its refusals are only logged and counted".into(),
            ));
        }
    }
    out
}

/// A key set fetched over plain HTTP (`at`: the `remote_jwks` or `remote_keys` object).
fn plaintext_keys(at: &str, r: &policy::RemoteJwksDoc, out: &mut Vec<(String, String)>) {
    plaintext(at, r, "keys could be replaced in transit", out);
}

/// A document fetched over plain HTTP; `risk` says what an attacker in the path could do.
fn plaintext(at: &str, r: &policy::RemoteJwksDoc, risk: &str, out: &mut Vec<(String, String)>) {
    if r.uri.starts_with("http://") {
        out.push((
            format!("{at}.uri"),
            format!("`{}` is fetched without TLS; {risk}", r.uri),
        ));
    }
}

/// Length of an HMAC JWK's secret (`kty: oct`), if it is one.
fn hmac_key_len(jwk: &Value) -> Option<usize> {
    use base64::Engine as _;
    if jwk.get("kty")?.as_str()? != "oct" {
        return None;
    }
    let k = jwk.get("k")?.as_str()?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(k.trim_end_matches('='))
        .ok()
        .map(|b| b.len())
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "path": f.path,
        "line": f.pos.line,
        "column": f.pos.column,
        "message": f.message,
        "found": f.found,
    })
}

pub fn report_json(r: &Report) -> Value {
    json!({
        "file": r.file,
        "valid": r.valid(),
        "errors": r.errors.iter().map(finding_json).collect::<Vec<_>>(),
        "warnings": r.warnings.iter().map(finding_json).collect::<Vec<_>>(),
    })
}

/// `file:line:col: path: message (found: value)`, the form editors and CI annotate.
pub fn report_text(r: &Report) -> String {
    let mut out = String::new();
    let line = |kind: &str, f: &Finding| {
        let path = if f.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", f.path)
        };
        let found = f
            .found
            .as_ref()
            .map(|v| format!(" (found: {v})"))
            .unwrap_or_default();
        format!(
            "{}:{}:{}: {kind}{path}{}{found}\n",
            r.file, f.pos.line, f.pos.column, f.message
        )
    };
    for f in &r.errors {
        out.push_str(&line("", f));
    }
    for f in &r.warnings {
        out.push_str(&line("warning: ", f));
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match &r.engine {
        Some(e) => {
            // Signers only when there are some: most policies have none.
            let signers = match e.signers().len() {
                0 => String::new(),
                n => format!(", {}", plural(n, "signer")),
            };
            out.push_str(&format!(
                "{}: valid ({}, {}{signers}, {}); {}\n",
                r.file,
                plural(e.routes().len(), "route"),
                plural(e.providers().len(), "provider"),
                plural(e.limits().len(), "rate limit"),
                plural(r.warnings.len(), "warning"),
            ))
        }
        None => out.push_str(&format!(
            "{}: invalid: {}\n",
            r.file,
            plural(r.errors.len(), "error")
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("tollgate-cli-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn every_semantic_error_is_placed() {
        let path = write(
            "broken.json",
            r#"{
  "providers": {"corp": {"issuer": "", "audiences": ["a"], "algorithms": ["ES256"],
    "jwks": {"keys": []}}},
  "routes": [
    {"path": "/a", "methods": ["get"], "providers": ["auth0"]}
  ]
}"#,
        );
        let r = check_file(&path);
        assert!(!r.valid());
        let text = report_text(&r);
        assert!(
            text.contains(":5:32: routes[0].methods[0]: `get` is not a method; expected an uppercase token such as `GET` (found: \"get\")"),
            "{text}"
        );
        assert!(
            text.contains(":2:36: providers.corp.issuer: must not be empty (found: \"\")"),
            "{text}"
        );
        assert!(
            text.contains(":3:14: providers.corp.jwks.keys: list at least one key (found: [])"),
            "{text}"
        );
        assert!(
            text.contains(":5:54: routes[0].providers[0]: unknown provider `auth0`"),
            "{text}"
        );
        assert!(text.contains("invalid: 4 errors"), "{text}");
    }

    #[test]
    fn structural_errors_in_yaml_are_placed_at_the_key() {
        let path = write(
            "broken.yaml",
            "routes:\n  - path: /a\n    public: true\n    methds: [GET]\n",
        );
        let r = check_file(&path);
        let text = report_text(&r);
        assert!(
            text.contains(":4:5: routes[0].methds: unknown field `methds`, expected one of"),
            "{text}"
        );
    }

    #[test]
    fn yaml_policies_compile_like_json() {
        let path = write(
            "ok.yaml",
            "mode: dry-run\ndefault: {action: allow}\nrate_limits:\n  big: {rate: 1, per: second, burst: 500, key: [identity]}\nroutes:\n  - {name: health, path: /health, methods: [GET], public: true}\n",
        );
        let r = check_file(&path);
        assert!(r.valid(), "{}", report_text(&r));
        let paths: Vec<(&str, usize)> = r
            .warnings
            .iter()
            .map(|w| (w.path.as_str(), w.pos.line))
            .collect();
        assert_eq!(
            paths,
            [
                ("mode", 1),
                ("default.action", 2),
                ("rate_limits.big.burst", 4),
                ("routes[0]", 6)
            ]
        );
        let text = report_text(&r);
        assert!(text.contains(":4:38: warning: rate_limits.big.burst: burst 500 is 500 times the rate of 1 per second"), "{text}");
        assert!(
            text.contains("route `health` has no authentication: GET /health is public"),
            "{text}"
        );
    }

    #[test]
    fn short_hmac_keys_and_unsafe_providers_are_warned_about() {
        let doc = policy::parse(br#"{"providers": {"p": {"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"],
            "require_expiration": false, "jwks": {"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}},
            "r": {"issuer": "i", "audiences": ["a"], "algorithms": ["RS256"], "remote_jwks": {"cluster": "c", "uri": "http://idp/jwks"}}},
            "routes": [{"path": "/x", "providers": ["p"], "mode": "dry-run"}]}"#).unwrap();
        let w: Vec<String> = warnings(&doc).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            w,
            [
                "providers.p.require_expiration",
                "providers.p.jwks.keys[0]",
                "providers.r.remote_jwks.uri",
                "routes[0].mode"
            ]
        );
    }

    #[test]
    fn revocation_lists_fetched_in_plaintext_or_failing_open_are_warned_about() {
        let doc = policy::parse(
            br#"{"revocations": {"on_unavailable": "allow",
            "remote": {"cluster": "c", "uri": "http://lists/revoked.json"}},
            "routes": [{"path": "/x", "public": true}]}"#,
        )
        .unwrap();
        let w = warnings(&doc);
        let paths: Vec<&str> = w.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "revocations.remote.uri",
                "revocations.on_unavailable",
                "routes[0]"
            ]
        );
        assert!(w[0].1.contains("lifted in transit"), "{}", w[0].1);
        let doc = policy::parse(
            br#"{"revocations": {
            "remote": {"cluster": "c", "uri": "https://lists/revoked.json"}},
            "routes": [{"path": "/x", "public": true}]}"#,
        )
        .unwrap();
        assert_eq!(warnings(&doc).len(), 1);
    }

    #[test]
    fn the_summary_counts_signers_when_there_are_some() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
        let text = report_text(&check_file(&format!("{dir}/signed.json")));
        assert!(
            text.contains("valid (3 routes, 0 providers, 1 signer, 0 rate limits)"),
            "{text}"
        );
        let text = report_text(&check_file(&format!("{dir}/demo.json")));
        assert!(!text.contains("signer"), "{text}");
    }

    #[test]
    fn a_known_mistake_is_named_with_its_fix_at_its_place() {
        let path = write(
            "scopes.json",
            r#"{
  "routes": [
    {"path": "/pets", "providers": ["corp"],
     "scopes": ["pets:read"]}
  ]
}"#,
        );
        let text = report_text(&check_file(&path));
        assert!(
            text.contains(r#":4:6: routes[0].scopes: `scopes` is an object `{"all": [...], "any": [...]}`, not a list; write `"scopes": {"all": ["pets:read"]}` to require every scope, or `"any"` for one of them (found: ["pets:read"])"#),
            "{text}"
        );
    }

    #[test]
    fn syntax_errors_and_missing_files() {
        let path = write("syntax.json", "{\"routes\": [}\n");
        let text = report_text(&check_file(&path));
        assert!(text.contains("syntax.json:1:13: not valid JSON"), "{text}");
        let text = report_text(&check_file("/nonexistent/p.json"));
        assert!(text.contains("cannot read"), "{text}");
    }
}
