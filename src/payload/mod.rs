//! Payload checks: JSON Schema validation of request bodies, path parameters, query parameters
//! and headers. Schemas are compiled once at configure time (src/payload/schema.rs: offline, a
//! `$ref` can only point inside the policy); requests are checked against the compiled schemas.
//!
//! Named schemas from the policy's `schemas` section are placed under `$defs` of every compiled
//! schema, so `{"$ref": "#/$defs/Order"}` works from a route and between named schemas.

pub mod json;
pub mod response;
pub mod schema;

use crate::policy::{ConfigError, PayloadOptionsDoc, RequestCheckDoc};
pub use schema::Violation;
use schema::{Schema as Validator, MAX_MESSAGE};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_DEPTH: usize = 32;
pub const DEFAULT_MAX_VIOLATIONS: usize = 10;

#[derive(Clone, Debug)]
pub struct Options {
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub max_violations: usize,
    pub invalid_status: u16,
    /// Objects that name a key twice are accepted (the last value is checked).
    pub allow_duplicate_keys: bool,
}

impl Options {
    pub fn compile(doc: Option<&PayloadOptionsDoc>, errors: &mut Vec<ConfigError>) -> Options {
        let mut o = Options {
            max_body_bytes: doc
                .and_then(|d| d.max_body_bytes)
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_depth: doc.and_then(|d| d.max_depth).unwrap_or(DEFAULT_MAX_DEPTH),
            max_violations: doc
                .and_then(|d| d.max_violations)
                .unwrap_or(DEFAULT_MAX_VIOLATIONS),
            invalid_status: doc.and_then(|d| d.invalid_status).unwrap_or(400),
            allow_duplicate_keys: false,
        };
        match doc.and_then(|d| d.duplicate_keys.as_deref()) {
            None | Some("refuse") => {}
            Some("allow") => o.allow_duplicate_keys = true,
            Some(other) => errors.push(ConfigError::new(
                "payload_options.duplicate_keys",
                format!("`{other}` is not an action; expected one of [`refuse`, `allow`]"),
            )),
        }
        check_range(
            errors,
            "payload_options.max_body_bytes",
            o.max_body_bytes,
            1,
            16 << 20,
        );
        check_range(errors, "payload_options.max_depth", o.max_depth, 1, 128);
        check_range(
            errors,
            "payload_options.max_violations",
            o.max_violations,
            1,
            100,
        );
        if o.invalid_status != 400 && o.invalid_status != 422 {
            errors.push(ConfigError::new(
                "payload_options.invalid_status",
                format!("{} is not allowed; expected 400 or 422", o.invalid_status),
            ));
        }
        o
    }
}

fn check_range(errors: &mut Vec<ConfigError>, path: &str, v: usize, lo: usize, hi: usize) {
    if v < lo || v > hi {
        errors.push(ConfigError::new(
            path,
            format!("{v} is out of range; expected {lo} to {hi}"),
        ));
    }
}

/// Why a request's payload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    UnsupportedMediaType,
    TooLarge,
    Malformed,
    Invalid(Vec<Violation>),
}

/// A compiled scalar check (parameter, query value, header).
struct ScalarRule {
    name: String,
    validator: Validator,
    /// Coerce `"42"` / `"true"` to JSON before validating (the schema does not ask for a string).
    coerce: bool,
}

/// A route's compiled request checks.
pub struct RequestRules {
    body: Option<Validator>,
    pub max_body_bytes: usize,
    params: Vec<ScalarRule>,
    query: Vec<ScalarRule>,
    required_query: Vec<String>,
    headers: Vec<ScalarRule>,
    required_headers: Vec<String>,
}

impl std::fmt::Debug for RequestRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RequestRules(body: {}, max {} bytes)",
            self.body.is_some(),
            self.max_body_bytes
        )
    }
}

/// Compiles schemas with the policy's named schemas available under `$defs`.
pub struct Compiler<'a> {
    pub schemas: &'a BTreeMap<String, Value>,
    pub options: &'a Options,
}

/// Subschema-holding keywords, for the mass-assignment rewrite.
const SCHEMA_MAPS: [&str; 4] = ["properties", "patternProperties", "$defs", "definitions"];
const SCHEMA_VALUES: [&str; 10] = [
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "additionalProperties",
];
const SCHEMA_ARRAYS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];

/// Adds `additionalProperties: false` to every object schema that names `properties` and says
/// nothing about other properties: unknown properties become errors (mass assignment).
pub fn close_objects(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !map.contains_key("unevaluatedProperties")
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for k in SCHEMA_MAPS {
        if let Some(Value::Object(m)) = map.get_mut(k) {
            m.values_mut().for_each(close_objects);
        }
    }
    for k in SCHEMA_VALUES {
        if let Some(v) = map.get_mut(k) {
            close_objects(v);
        }
    }
    for k in SCHEMA_ARRAYS {
        if let Some(Value::Array(a)) = map.get_mut(k) {
            a.iter_mut().for_each(close_objects);
        }
    }
}

/// The named schemas `schema` refers to, directly or through other named schemas
/// (`#/$defs/<name>` and pointers below it); `None` when a reference could reach any of them (a
/// plain-name fragment such as `#item`, which an `$anchor` in any named schema may answer).
/// Each route schema is compiled with these only: with every named schema in every route
/// schema, a policy imported from a large OpenAPI document (545 named schemas, 4,800 route
/// schemas) took minutes and gigabytes to compile.
pub fn referenced_defs<'n>(
    schema: &Value,
    named: &'n BTreeMap<String, Value>,
) -> Option<BTreeSet<&'n str>> {
    fn refs(v: &Value, out: &mut Vec<String>) -> bool {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" || k == "$dynamicRef" || k == "$recursiveRef" {
                        if let Some(r) = v.as_str() {
                            if let Some(fragment) = r.strip_prefix('#') {
                                if !fragment.is_empty() && !fragment.starts_with('/') {
                                    return false;
                                }
                            }
                            out.push(r.to_string());
                        }
                    } else if !refs(v, out) {
                        return false;
                    }
                }
                true
            }
            Value::Array(a) => a.iter().all(|v| refs(v, out)),
            _ => true,
        }
    }
    let mut found = BTreeSet::new();
    let mut todo = Vec::new();
    if !refs(schema, &mut todo) {
        return None;
    }
    while let Some(r) = todo.pop() {
        let Some(rest) = r.strip_prefix("#/$defs/") else {
            continue;
        };
        let name = percent_decoded(rest.split('/').next().unwrap_or(""));
        let Some((key, value)) = named.get_key_value(name.as_str()) else {
            continue;
        };
        if found.insert(key.as_str()) && !refs(value, &mut todo) {
            return None;
        }
    }
    Some(found)
}

fn percent_decoded(s: &str) -> String {
    if !s.contains('%') && !s.contains('~') {
        return s.to_string();
    }
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out)
        .replace("~1", "/")
        .replace("~0", "~")
}

impl Compiler<'_> {
    fn build(
        &self,
        schema: &Value,
        close: bool,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Validator> {
        let mut root = match schema {
            Value::Object(m) => m.clone(),
            Value::Bool(_) => {
                let mut m = Map::new();
                m.insert("allOf".into(), Value::Array(vec![schema.clone()]));
                m
            }
            _ => {
                errors.push(ConfigError::new(
                    path,
                    "a schema must be a JSON object (or `true`/`false`)",
                ));
                return None;
            }
        };
        if !self.schemas.is_empty() {
            let mut defs = match root.remove("$defs") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let wanted = referenced_defs(schema, self.schemas);
            for (name, s) in self.schemas {
                if wanted.as_ref().is_none_or(|w| w.contains(name.as_str())) {
                    defs.entry(name.clone()).or_insert_with(|| s.clone());
                }
            }
            root.insert("$defs".into(), Value::Object(defs));
        }
        let mut root = Value::Object(root);
        if close {
            close_objects(&mut root);
        }
        match Validator::compile(root) {
            Ok(v) => Some(v),
            Err(msg) => {
                let msg: String = msg.chars().take(MAX_MESSAGE).collect();
                errors.push(ConfigError::new(
                    path,
                    format!("invalid JSON Schema: {msg}"),
                ));
                None
            }
        }
    }

    fn scalars(
        &self,
        map: &BTreeMap<String, Value>,
        path: &str,
        lower: bool,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<ScalarRule> {
        map.iter()
            .filter_map(|(name, schema)| {
                let validator = self.build(schema, false, &format!("{path}.{name}"), errors)?;
                let wants_string = match schema.get("type") {
                    Some(Value::String(t)) => t == "string",
                    Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                    _ => false,
                };
                Some(ScalarRule {
                    name: if lower {
                        name.to_ascii_lowercase()
                    } else {
                        name.clone()
                    },
                    validator,
                    coerce: !wants_string,
                })
            })
            .collect()
    }

    pub fn compile(
        &self,
        doc: &RequestCheckDoc,
        template_params: &[String],
        at: &str,
        errors: &mut Vec<ConfigError>,
    ) -> RequestRules {
        let at = format!("{at}.request");
        let body = doc.body.as_ref().and_then(|s| {
            self.build(
                s,
                doc.reject_unknown_properties,
                &format!("{at}.body"),
                errors,
            )
        });
        let max_body_bytes = doc.max_body_bytes.unwrap_or(self.options.max_body_bytes);
        check_range(
            errors,
            &format!("{at}.max_body_bytes"),
            max_body_bytes,
            1,
            16 << 20,
        );
        if doc.body.is_none() && (doc.reject_unknown_properties || doc.max_body_bytes.is_some()) {
            errors.push(ConfigError::new(
                &at,
                "`reject_unknown_properties` and `max_body_bytes` need a `body` schema",
            ));
        }
        for name in doc.params.keys() {
            if !template_params.contains(name) {
                errors.push(ConfigError::new(
                    format!("{at}.params.{name}"),
                    format!(
                        "`{name}` is not a parameter of this route's path; expected one of [{}]",
                        template_params
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        RequestRules {
            body,
            max_body_bytes,
            params: self.scalars(&doc.params, &format!("{at}.params"), false, errors),
            query: self.scalars(&doc.query, &format!("{at}.query"), false, errors),
            required_query: doc.required_query.clone(),
            headers: self.scalars(&doc.headers, &format!("{at}.headers"), true, errors),
            required_headers: doc
                .required_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }
}

/// `application/json` or any `*/*+json`, parameters ignored.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some((t, s)) => !t.is_empty() && (essence == "application/json" || s.ends_with("+json")),
        None => false,
    }
}

/// Deepest array/object nesting in `body`, stopping early past `limit`. Scans bytes without
/// parsing, so a hostile body cannot make the parser recurse.
pub fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn scalar_value(raw: &str, coerce: bool) -> Value {
    if coerce {
        if let Ok(v @ (Value::Number(_) | Value::Bool(_))) = serde_json::from_str::<Value>(raw) {
            return v;
        }
    }
    Value::String(raw.to_string())
}

/// Percent-decodes a query component (`+` is a space in form encoding).
fn decode_query(s: &str) -> String {
    let spaced = s.replace('+', " ");
    // Not UTF-8 once decoded: checked as sent, never as a lossy look-alike.
    crate::engine::path::decode_param(&spaced).unwrap_or(spaced)
}

impl RequestRules {
    pub fn has_body(&self) -> bool {
        self.body.is_some()
    }

    /// Checks made on the request headers: media type, declared length, parameters, query,
    /// headers. `content_length` is `None` for chunked bodies.
    pub fn check_head(
        &self,
        options: &Options,
        params: &[(String, String)],
        path: &str,
        header: &dyn Fn(&str) -> Vec<String>,
    ) -> Result<(), Failure> {
        if self.body.is_some() {
            let ct = header("content-type");
            if ct.len() != 1 || !ct.first().is_some_and(|c| is_json_media_type(c)) {
                return Err(Failure::UnsupportedMediaType);
            }
            if let Some(len) = header("content-length")
                .first()
                .and_then(|l| l.trim().parse::<usize>().ok())
            {
                if len > self.max_body_bytes {
                    return Err(Failure::TooLarge);
                }
            }
        }
        let max = options.max_violations;
        let mut out = Vec::new();
        for rule in &self.params {
            if let Some((_, v)) = params.iter().find(|(k, _)| *k == rule.name) {
                let value = scalar_value(v, rule.coerce);
                rule.validator
                    .violations(&value, &format!("/params/{}", rule.name), max, &mut out);
            }
        }
        let pairs: Vec<(String, String)> = crate::engine::request::query_pairs(path)
            .map(|(k, v)| (decode_query(k), decode_query(v)))
            .collect();
        for name in &self.required_query {
            if !pairs.iter().any(|(k, _)| k == name) && out.len() < max {
                out.push(Violation {
                    pointer: format!("/query/{name}"),
                    keyword: "required".into(),
                    message: "required query parameter is missing".into(),
                });
            }
        }
        for rule in &self.query {
            for (_, v) in pairs.iter().filter(|(k, _)| *k == rule.name) {
                let value = scalar_value(v, rule.coerce);
                rule.validator
                    .violations(&value, &format!("/query/{}", rule.name), max, &mut out);
            }
        }
        for name in &self.required_headers {
            if header(name).is_empty() && out.len() < max {
                out.push(Violation {
                    pointer: format!("/headers/{name}"),
                    keyword: "required".into(),
                    message: "required header is missing".into(),
                });
            }
        }
        for rule in &self.headers {
            for v in header(&rule.name) {
                let value = scalar_value(&v, rule.coerce);
                rule.validator.violations(
                    &value,
                    &format!("/headers/{}", rule.name),
                    max,
                    &mut out,
                );
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            Err(Failure::Invalid(out))
        }
    }

    /// Checks a complete body.
    pub fn check_body(&self, options: &Options, body: &[u8]) -> Result<(), Failure> {
        let Some(validator) = &self.body else {
            return Ok(());
        };
        if body.len() > self.max_body_bytes {
            return Err(Failure::TooLarge);
        }
        if nesting_exceeds(body, options.max_depth) {
            return Err(Failure::Malformed);
        }
        let value = json::parse(body, options.allow_duplicate_keys).ok_or(Failure::Malformed)?;
        let mut out = Vec::new();
        validator.violations(&value, "", options.max_violations, &mut out);
        if out.is_empty() {
            Ok(())
        } else {
            Err(Failure::Invalid(out))
        }
    }
}

#[cfg(test)]
mod tests;
