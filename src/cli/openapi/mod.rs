//! `tollgate import openapi`: a policy from an OpenAPI 3.0 or 3.1 document (JSON or YAML), with
//! an optional overlay for what OpenAPI does not carry (issuers, keys, limits). The document is
//! read as JSON values rather than through an OpenAPI model crate: the maintained ones cover
//! either 3.0 (`openapiv3`) or 3.1 (`oas3`), not both, and neither follows `$ref`s into files
//! beside the document; the subset the policy needs is small. Output is deterministic: objects
//! are written with sorted keys and routes in the document's path order (sorted) and method order.

mod operations;
mod refs;
mod schema;
mod security;

use super::source::Document;
use super::{parse, print, usage, ArgSpec, Failure, Out, Result, FAILED, OK};
use crate::engine::Engine;
use crate::policy;
use refs::Resolver;
use schema::{Dialect, Schemas};
use security::{KeyPlace, Scheme, Schemes};
use serde_json::{json, Map, Value};
use std::path::Path;

/// What the import reports: constructs not enforced (errors only with `--strict`), and errors.
#[derive(Debug, Default)]
pub struct Notes {
    items: Vec<(Kind, String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    /// One line per note, in the order found.
    pub fn lines(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|(k, at, m)| match k {
                Kind::Unenforced => format!("{at}: not enforced: {m}"),
                Kind::Error => format!("{at}: error: {m}"),
            })
            .collect()
    }
}

/// The overlay: what the policy needs that OpenAPI does not say.
#[derive(Debug)]
pub struct Overlay {
    /// Top-level policy fields (`providers`, `api_keys`, `rate_limits`, `audit`, ...).
    pub policy: Map<String, Value>,
    /// Response checks' mode: `block`, `redact`, `report` (default) or `off`.
    pub response_mode: String,
    /// `reject_unknown_properties` of every route with a body schema (default false: OpenAPI
    /// allows properties a schema does not name unless it says `additionalProperties: false`).
    pub reject_unknown_properties: bool,
    /// Route fields by operation id (or route name).
    pub operations: Map<String, Value>,
    /// Route fields by tag.
    pub tags: Map<String, Value>,
}

impl Default for Overlay {
    fn default() -> Overlay {
        Overlay {
            policy: Map::new(),
            response_mode: "report".into(),
            reject_unknown_properties: false,
            operations: Map::new(),
            tags: Map::new(),
        }
    }
}

const OVERLAY_FIELDS: [&str; 5] = [
    "policy",
    "responses",
    "unknown_properties",
    "operations",
    "tags",
];

impl Overlay {
    /// The overlay document's value; errors name the field and the expected shape.
    pub fn from_value(v: &Value) -> std::result::Result<Overlay, String> {
        let Value::Object(map) = v else {
            return Err("the overlay must be an object".into());
        };
        let mut o = Overlay::default();
        for (k, v) in map {
            match k.as_str() {
                "policy" => {
                    let Value::Object(p) = v else {
                        return Err(
                            "`policy`: expected an object of top-level policy fields".into()
                        );
                    };
                    if p.contains_key("routes") {
                        return Err("`policy.routes`: routes come from the document; set route fields under `operations` or `tags`".into());
                    }
                    o.policy = p.clone();
                }
                "responses" => {
                    let mode = v.as_str().unwrap_or("");
                    if !["block", "redact", "report", "off"].contains(&mode) {
                        return Err(format!(
                            "`responses`: `{}` is not a mode; expected one of [`block`, `redact`, `report`, `off`]",
                            super::source::short(v)
                        ));
                    }
                    o.response_mode = mode.into();
                }
                "unknown_properties" => {
                    o.reject_unknown_properties = match v.as_str() {
                        Some("allow") => false,
                        Some("reject") => true,
                        _ => {
                            return Err(format!(
                                "`unknown_properties`: `{}`; expected one of [`allow`, `reject`]",
                                super::source::short(v)
                            ))
                        }
                    }
                }
                "operations" | "tags" => {
                    let Value::Object(m) = v else {
                        return Err(format!("`{k}`: expected an object of name -> route fields"));
                    };
                    if let Some((name, _)) = m.iter().find(|(_, f)| !f.is_object()) {
                        return Err(format!("`{k}.{name}`: expected an object of route fields"));
                    }
                    if k == "operations" {
                        o.operations = m.clone();
                    } else {
                        o.tags = m.clone();
                    }
                }
                other => {
                    return Err(format!(
                        "unknown field `{other}`; expected one of [{}]",
                        OVERLAY_FIELDS.map(|f| format!("`{f}`")).join(", ")
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// The policy for the document `spec` (read from `path`), or `None` when the notes hold errors.
pub fn import(path: &Path, spec: Value, overlay: &Overlay, notes: &mut Notes) -> Option<Value> {
    let dialect = match (
        spec.get("openapi").and_then(Value::as_str),
        spec.get("swagger"),
    ) {
        (Some(v), _) if v.starts_with("3.0.") || v == "3.0" => Dialect::Oas30,
        (Some(v), _) if v.starts_with("3.1.") || v == "3.1" => Dialect::Oas31,
        (Some(v), _) => {
            notes.error(
                "#/openapi",
                &format!("OpenAPI `{v}` is not supported; expected 3.0.x or 3.1.x"),
            );
            return None;
        }
        (None, Some(_)) => {
            notes.error(
                "#/swagger",
                "Swagger 2.0 is not supported; convert the document to OpenAPI 3 first",
            );
            return None;
        }
        (None, None) => {
            notes.error("#", "not an OpenAPI document: no `openapi` version");
            return None;
        }
    };
    if dialect == Dialect::Oas31 {
        if let Some(d) = spec.get("jsonSchemaDialect").and_then(Value::as_str) {
            if d != "https://spec.openapis.org/oas/3.1/dialect/base"
                && d != "https://json-schema.org/draft/2020-12/schema"
            {
                notes.unenforced(
                    "#/jsonSchemaDialect",
                    &format!("schemas are read as JSON Schema 2020-12, not `{d}`"),
                );
            }
        }
    }
    let prefix_routes = spec.get("x-tollgate-prefix-routes").cloned();
    let mut r = Resolver::new(path, spec);
    let schemes = Schemes::read(&mut r, notes);
    let mut schemas = Schemas::default();
    schemas.forbid_read_only = overlay.reject_unknown_properties;
    let found = {
        let mut cx = operations::Ctx {
            r: &mut r,
            schemas: &mut schemas,
            notes,
            dialect,
            schemes: &schemes,
            overlay,
        };
        operations::routes(&mut cx)
    };
    let mut policy = overlay.policy.clone();
    let mut routes = found.routes;
    if let Some(Value::Array(more)) = prefix_routes {
        routes.extend(more);
    }
    policy.insert("routes".into(), Value::Array(routes));
    if !schemas.named.is_empty() {
        let named = policy
            .entry("schemas")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(named) = named {
            for (k, v) in schemas.named {
                if named.contains_key(&k) {
                    notes.error(
                        "overlay policy.schemas",
                        &format!("`{k}` is also a schema of the document; rename one"),
                    );
                }
                named.insert(k, v);
            }
        }
    }
    // Providers: their issuers and keys come from the overlay.
    for name in &found.providers {
        let have = overlay
            .policy
            .get("providers")
            .and_then(|p| p.get(name))
            .is_some();
        if !have {
            let hint = match schemes.schemes.get(name) {
                Some(Scheme::Jwt {
                    issuer_hint: Some(i),
                }) => format!(" (the document suggests the issuer `{i}`)"),
                _ => String::new(),
            };
            notes.error(
                &format!("#/components/securitySchemes/{}", refs::escape(name)),
                &format!("routes accept tokens of `{name}`: the overlay must define `policy.providers.{name}` with `issuer`, `audiences` and `jwks` or `remote_jwks`{hint}"),
            );
        }
    }
    api_keys(&mut policy, &found.key_places, notes);
    if notes.errors().next().is_some() {
        return None;
    }
    Some(Value::Object(policy))
}

/// The policy's `api_keys` header and query from the document's schemes; the keys from the overlay.
fn api_keys(
    policy: &mut Map<String, Value>,
    places: &std::collections::BTreeSet<KeyPlace>,
    notes: &mut Notes,
) {
    if places.is_empty() {
        return;
    }
    let headers: Vec<&String> = places
        .iter()
        .filter_map(|p| match p {
            KeyPlace::Header(h) => Some(h),
            KeyPlace::Query(_) => None,
        })
        .collect();
    let queries: Vec<&String> = places
        .iter()
        .filter_map(|p| match p {
            KeyPlace::Query(q) => Some(q),
            KeyPlace::Header(_) => None,
        })
        .collect();
    if headers.len() > 1 || queries.len() > 1 {
        notes.unenforced("#/components/securitySchemes", "API keys in several headers or query parameters: Tollgate reads one header and one query parameter, the first of each by name");
    }
    let entry = policy.entry("api_keys").or_insert_with(|| json!({}));
    let Value::Object(keys) = entry else {
        notes.error("overlay policy.api_keys", "expected an object");
        return;
    };
    if let Some(h) = headers.first() {
        keys.entry("header").or_insert_with(|| json!(h));
    }
    if let Some(q) = queries.first() {
        keys.entry("query").or_insert_with(|| json!(q));
    }
    if !keys.contains_key("keys") {
        notes.error("#/components/securitySchemes", "routes accept API keys: the overlay must list them in `policy.api_keys.keys` (`tollgate api-key` makes one)");
    }
}

/// The policy as text, and whether the engine accepts it (errors named by route).
fn compile(policy: &Value) -> std::result::Result<String, Vec<String>> {
    let text = serde_json::to_string_pretty(policy).map_err(|e| vec![e.to_string()])? + "\n";
    let doc =
        policy::parse(text.as_bytes()).map_err(|e| vec![format!("{}: {}", e.path, e.message)])?;
    match Engine::from_doc(&doc) {
        Ok(_) => Ok(text),
        Err(errors) => Err(errors
            .iter()
            .map(|e| {
                let route = e
                    .path
                    .strip_prefix("routes[")
                    .and_then(|r| r.split(']').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| policy.get("routes").and_then(|r| r.get(i)))
                    .and_then(|r| r.get("name"))
                    .and_then(Value::as_str)
                    .map(|n| format!(" (route `{n}`)"))
                    .unwrap_or_default();
                format!("{}{route}: {}", e.path, e.message)
            })
            .collect()),
    }
}

pub(super) fn cmd_import(args: &[String], out: Out<'_>, err: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["overlay", "output"],
            flags: &["strict"],
            short: &[("-o", "--output")],
        },
    )?;
    let (Some(kind), Some(spec_path)) = (a.positional.first(), a.positional.get(1)) else {
        return usage("expected `import openapi SPEC`");
    };
    if kind != "openapi" {
        return usage(format!(
            "`{kind}`: only `openapi` documents can be imported"
        ));
    }
    if a.positional.len() > 2 {
        return usage("import one document at a time");
    }
    let spec = Document::read(spec_path).map_err(|e| {
        let at = e
            .pos
            .map(|p| format!(":{}:{}", p.line, p.column))
            .unwrap_or_default();
        Failure::Error(format!("{spec_path}{at}: {}", e.message))
    })?;
    let overlay = match a.value("overlay") {
        Some(p) => {
            let doc =
                Document::read(p).map_err(|e| Failure::Error(format!("{p}: {}", e.message)))?;
            Overlay::from_value(&doc.value).map_err(|e| Failure::Error(format!("{p}: {e}")))?
        }
        None => Overlay::default(),
    };
    let mut notes = Notes::default();
    let policy = import(Path::new(spec_path), spec.value, &overlay, &mut notes);
    for line in notes.lines() {
        let _ = writeln!(err, "{spec_path}{line}");
    }
    let Some(policy) = policy else {
        let _ = writeln!(
            err,
            "tollgate import: no policy written: the document has errors"
        );
        return Ok(FAILED);
    };
    let text = match compile(&policy) {
        Ok(t) => t,
        Err(errors) => {
            for e in errors {
                let _ = writeln!(err, "tollgate import: the policy would be invalid: {e}");
            }
            return Ok(FAILED);
        }
    };
    if a.flag("strict") && notes.unenforced_count() > 0 {
        let _ = writeln!(
            err,
            "tollgate import: --strict: {} construct(s) not enforced; no policy written",
            notes.unenforced_count()
        );
        return Ok(FAILED);
    }
    match a.value("output") {
        Some(file) => {
            std::fs::write(file, &text).map_err(|e| Failure::Error(format!("{file}: {e}")))?;
            Ok(OK)
        }
        None => print(out, &text),
    }
}

#[cfg(test)]
mod tests;
