//! Checks on the upstream's JSON response: a schema per status or status class, and a mode:
//! `block` (the client gets a generic 502), `redact` (properties the schema does not allow and
//! listed sensitive fields are removed - data minimisation) or `report` (log and count only).

use super::schema::Schema as Validator;
use super::{Compiler, Violation};
use crate::policy::{ConfigError, ResponseCheckDoc};
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Block,
    Redact,
    Report,
}

/// Why a response could not be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unchecked {
    /// Not JSON (a lone surrogate, a BOM, an XSSI prefix, HTML), or an object naming a key twice.
    NotJson,
    /// Nested deeper than `payload_options.max_depth`.
    TooDeep,
    /// Larger than the route's response `max_body_bytes`.
    TooLarge,
    /// Sent with a `content-encoding` (gzip, br, ...) Tollgate does not decode.
    Encoded,
}

impl Unchecked {
    pub const fn as_str(self) -> &'static str {
        match self {
            Unchecked::NotJson => "not JSON",
            Unchecked::TooDeep => "nested deeper than max_depth",
            Unchecked::TooLarge => "larger than max_body_bytes",
            Unchecked::Encoded => "content-encoded",
        }
    }
}

pub struct ResponseRules {
    pub mode: Mode,
    /// `block`/`redact` only: a response that cannot be checked is passed instead of refused.
    pub pass_unchecked: bool,
    by_status: HashMap<u16, (Validator, Value)>,
    /// Index 1..=5 for `1XX`..`5XX`.
    by_class: [Option<(Validator, Value)>; 6],
    sensitive: Vec<String>,
    pub max_body_bytes: usize,
}

impl std::fmt::Debug for ResponseRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResponseRules({:?})", self.mode)
    }
}

/// What to do with a checked response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Send this body instead (redact mode), with the violations the original had.
    Replace(Vec<u8>, Vec<Violation>),
    /// Replace the response with a 502 (block mode).
    Block(Vec<Violation>),
    /// Pass it on, but log and count (report mode).
    Report(Vec<Violation>),
    /// The body could not be checked: refused with a 502 (`refuse`: block and redact modes,
    /// unless `on_unchecked: pass`) or passed, and in both cases logged and counted.
    Unchecked {
        why: Unchecked,
        refuse: bool,
    },
}

impl Compiler<'_> {
    pub fn compile_response(
        &self,
        doc: &ResponseCheckDoc,
        at: &str,
        errors: &mut Vec<ConfigError>,
    ) -> ResponseRules {
        let at = format!("{at}.response");
        let mode = match doc.mode.as_deref() {
            None | Some("block") => Mode::Block,
            Some("redact") => Mode::Redact,
            Some("report") => Mode::Report,
            Some(other) => {
                errors.push(ConfigError::new(
                    format!("{at}.mode"),
                    format!(
                        "`{other}` is not a mode; expected one of [`block`, `redact`, `report`]"
                    ),
                ));
                Mode::Block
            }
        };
        let pass_unchecked = match doc.on_unchecked.as_deref() {
            None | Some("block") => false,
            Some("pass") => true,
            Some(other) => {
                errors.push(ConfigError::new(
                    format!("{at}.on_unchecked"),
                    format!("`{other}` is not an action; expected one of [`block`, `pass`]"),
                ));
                false
            }
        };
        let mut rules = ResponseRules {
            mode,
            pass_unchecked,
            by_status: HashMap::new(),
            by_class: Default::default(),
            sensitive: doc.sensitive_fields.clone(),
            max_body_bytes: doc.max_body_bytes.unwrap_or(self.options.max_body_bytes),
        };
        super::check_range(
            errors,
            &format!("{at}.max_body_bytes"),
            rules.max_body_bytes,
            1,
            16 << 20,
        );
        if doc.schemas.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.schemas"),
                "list at least one status (`\"200\"`) or class (`\"2XX\"`)",
            ));
        }
        for (key, schema) in &doc.schemas {
            let path = format!("{at}.schemas.{key}");
            let Some(validator) = self.build(schema, false, &path, errors) else {
                continue;
            };
            let root = self.root(schema);
            let bytes = key.as_bytes();
            match (key.parse::<u16>(), bytes) {
                (Ok(code), _) if (100..=599).contains(&code) => {
                    rules.by_status.insert(code, (validator, root));
                }
                (_, [c @ b'1'..=b'5', b'X' | b'x', b'X' | b'x']) => {
                    if let Some(slot) = rules.by_class.get_mut(usize::from(c - b'0')) {
                        *slot = Some((validator, root));
                    }
                }
                _ => errors.push(ConfigError::new(
                    path,
                    format!("`{key}` is not a status; expected e.g. `\"200\"` or `\"2XX\"`"),
                )),
            }
        }
        rules
    }

    /// The schema as compiled (with the named schemas under `$defs`), for redaction walks.
    fn root(&self, schema: &Value) -> Value {
        let mut root = schema.clone();
        if let Value::Object(m) = &mut root {
            let defs = m
                .entry("$defs")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(d) = defs {
                let wanted = super::referenced_defs(schema, self.schemas);
                for (k, v) in self.schemas {
                    if wanted.as_ref().is_none_or(|w| w.contains(k.as_str())) {
                        d.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        root
    }
}

/// Removes properties named in `sensitive` anywhere in `v`.
fn drop_sensitive(v: &mut Value, sensitive: &[String]) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !sensitive.contains(k));
            m.values_mut().for_each(|x| drop_sensitive(x, sensitive));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| drop_sensitive(x, sensitive)),
        _ => {}
    }
}

/// Follows a local `#/$defs/<name>` reference.
fn resolve<'a>(schema: &'a Value, root: &'a Value, depth: usize) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) if depth < 16 => match root.get("$defs").and_then(|d| d.get(name)) {
            Some(target) => resolve(target, root, depth + 1),
            None => schema,
        },
        _ => schema,
    }
}

/// Removes object properties the schema does not allow: where a schema lists `properties` and
/// neither `additionalProperties` nor `patternProperties` admits others.
fn prune(v: &mut Value, schema: &Value, root: &Value, depth: usize) {
    if depth > 64 {
        return;
    }
    let schema = resolve(schema, root, 0);
    match v {
        Value::Object(m) => {
            let Some(Value::Object(props)) = schema.get("properties") else {
                return;
            };
            let open = schema.get("patternProperties").is_some()
                || matches!(schema.get("additionalProperties"), Some(a) if a != &Value::Bool(false));
            if !open {
                m.retain(|k, _| props.contains_key(k));
            }
            for (k, x) in m.iter_mut() {
                if let Some(s) = props.get(k) {
                    prune(x, s, root, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                a.iter_mut().for_each(|x| prune(x, items, root, depth + 1));
            }
        }
        _ => {}
    }
}

impl ResponseRules {
    fn schema_for(&self, status: u16) -> Option<&(Validator, Value)> {
        self.by_status.get(&status).or_else(|| {
            self.by_class
                .get(usize::from(status / 100))
                .and_then(Option::as_ref)
        })
    }

    /// Whether a response with `status` is checked (and so must be buffered).
    pub fn applies(&self, status: u16) -> bool {
        self.schema_for(status).is_some()
    }

    /// The verdict on a response that could not be checked: fail closed in `block` and `redact`
    /// modes unless the route says `on_unchecked: pass`.
    pub fn unchecked(&self, why: Unchecked) -> Verdict {
        Verdict::Unchecked {
            why,
            refuse: self.mode != Mode::Report && !self.pass_unchecked,
        }
    }

    pub fn check(&self, options: &super::Options, status: u16, body: &[u8]) -> Verdict {
        let Some((validator, root)) = self.schema_for(status) else {
            return Verdict::Pass;
        };
        if body.len() > self.max_body_bytes {
            return self.unchecked(Unchecked::TooLarge);
        }
        if super::nesting_exceeds(body, options.max_depth) {
            return self.unchecked(Unchecked::TooDeep);
        }
        let Some(mut value) = super::json::parse(body, options.allow_duplicate_keys) else {
            return self.unchecked(Unchecked::NotJson);
        };
        let mut found = Vec::new();
        validator.violations(&value, "", options.max_violations, &mut found);
        match self.mode {
            Mode::Block if !found.is_empty() => Verdict::Block(found),
            Mode::Report if !found.is_empty() => Verdict::Report(found),
            Mode::Block | Mode::Report => Verdict::Pass,
            Mode::Redact => {
                let before = value.clone();
                drop_sensitive(&mut value, &self.sensitive);
                prune(&mut value, root, root, 0);
                if value != before {
                    Verdict::Replace(value.to_string().into_bytes(), found)
                } else if found.is_empty() {
                    Verdict::Pass
                } else {
                    Verdict::Report(found)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Options;
    use serde_json::json;
    use std::collections::BTreeMap;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn rules(mode: &str) -> (ResponseRules, Options) {
        let schemas: BTreeMap<String, Value> = serde_json::from_value(json!({
            "User": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "roles": {"type": "array", "items": {"$ref": "#/$defs/Role"}}}},
            "Role": {"type": "object", "properties": {"name": {"type": "string"}}}
        }))
        .unwrap();
        let mut errors = vec![];
        let options = Options::compile(None, &mut errors);
        let c = Compiler {
            schemas: &schemas,
            options: &options,
        };
        let doc: ResponseCheckDoc = serde_json::from_value(json!({
            "schemas": {"200": {"$ref": "#/$defs/User"}, "4XX": {"type": "object", "required": ["type"]}},
            "mode": mode,
            "sensitive_fields": ["password", "ssn"]
        }))
        .unwrap();
        let r = c.compile_response(&doc, "routes[0]", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        (r, options)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn selection_by_status_and_class() {
        let (r, _) = rules("block");
        assert!(r.applies(200) && r.applies(404) && r.applies(499));
        assert!(!r.applies(201) && !r.applies(500));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn block_and_report() {
        let (r, o) = rules("block");
        assert_eq!(
            r.check(&o, 200, br#"{"id": 1, "name": "a"}"#),
            Verdict::Pass
        );
        assert!(matches!(r.check(&o, 200, br#"{"name": 5}"#), Verdict::Block(v) if v.len() == 2));
        assert_eq!(
            r.check(&o, 200, b"<html>"),
            Verdict::Unchecked {
                why: Unchecked::NotJson,
                refuse: true
            }
        );
        let (r, o) = rules("report");
        assert!(
            matches!(r.check(&o, 404, br#"{"detail": "x"}"#), Verdict::Report(v) if v[0].keyword == "required")
        );
        assert_eq!(r.check(&o, 500, b"anything"), Verdict::Pass);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn redact_removes_unknown_and_sensitive() {
        let (r, o) = rules("redact");
        let body = br#"{"id": 1, "name": "a", "password": "p", "internal": {"x": 1}, "roles": [{"name": "admin", "ssn": "1", "grant": "all"}]}"#;
        let Verdict::Replace(out, found) = r.check(&o, 200, body) else {
            panic!()
        };
        assert!(found.is_empty(), "valid before redaction: {found:?}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"id": 1, "name": "a", "roles": [{"name": "admin"}]})
        );
        assert_eq!(
            r.check(&o, 200, br#"{"id": 1}"#),
            Verdict::Pass,
            "nothing to remove"
        );
        assert_eq!(
            r.check(&o, 200, b"not json"),
            Verdict::Unchecked {
                why: Unchecked::NotJson,
                refuse: true
            },
            "a redact that cannot parse must not pass the password"
        );
        assert!(
            matches!(r.check(&o, 200, br#"{"name": 5}"#), Verdict::Report(v) if v.len() == 2),
            "violations still reported"
        );
        assert!(
            matches!(r.check(&o, 200, br#"{"id": "x", "pw": 1}"#), Verdict::Replace(_, v) if v.len() == 1)
        );
        let (b, o) = rules("block");
        assert_eq!(b.check(&o, 204, b""), Verdict::Pass, "no content");
    }

    /// `doc` compiled as the response block of `routes[3]`, with default options.
    fn compile_doc(doc: Value) -> (ResponseRules, Options, Vec<ConfigError>) {
        let mut errors = vec![];
        let options = Options::compile(None, &mut errors);
        let schemas = BTreeMap::new();
        let c = Compiler {
            schemas: &schemas,
            options: &options,
        };
        let doc: ResponseCheckDoc = serde_json::from_value(doc).unwrap();
        let r = c.compile_response(&doc, "routes[3]", &mut errors);
        (r, options, errors)
    }

    fn rules_with(mode: &str, extra: Value) -> (ResponseRules, Options) {
        let mut doc =
            json!({"schemas": {"200": {"type": "object"}}, "mode": mode, "max_body_bytes": 128});
        if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
            d.extend(e);
        }
        let (r, options, errors) = compile_doc(doc);
        assert!(errors.is_empty(), "{errors:?}");
        (r, options)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn what_cannot_be_checked_fails_closed() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let cases: [(&[u8], Unchecked); 7] = [
            (br#"{"password": "p", "n": "\ud800"}"#, Unchecked::NotJson),
            (b"\xef\xbb\xbf{\"password\": \"p\"}", Unchecked::NotJson),
            (b")]}'\n{\"password\": \"p\"}", Unchecked::NotJson),
            (br#"{"password": "p", "password": "q"}"#, Unchecked::NotJson),
            (deep.as_bytes(), Unchecked::TooDeep),
            (&[b' '; 129], Unchecked::TooLarge),
            (b"", Unchecked::NotJson),
        ];
        for mode in ["block", "redact", "report"] {
            let (r, o) = rules_with(mode, json!({}));
            let (pass, po) = rules_with(mode, json!({"on_unchecked": "pass"}));
            for (body, why) in cases {
                let refuse = mode != "report";
                assert_eq!(
                    r.check(&o, 200, body),
                    Verdict::Unchecked { why, refuse },
                    "{mode} {body:?}"
                );
                assert_eq!(
                    pass.check(&po, 200, body),
                    Verdict::Unchecked { why, refuse: false },
                    "{mode} pass"
                );
            }
            assert_eq!(
                r.unchecked(Unchecked::Encoded),
                Verdict::Unchecked {
                    why: Unchecked::Encoded,
                    refuse: mode != "report"
                }
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn on_unchecked_names_the_field() {
        let (_, _, errors) = compile_doc(json!({"schemas": {"200": {}}, "on_unchecked": "allow"}));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "routes[3].response.on_unchecked");
    }
}
