//! `tollgate import openapi`: a policy from an OpenAPI 3.0 or 3.1 document (JSON or YAML), with
//! an optional overlay for what OpenAPI does not carry (issuers, keys, limits). The document is
//! read as JSON values rather than through an OpenAPI model crate: the maintained ones cover
//! either 3.0 (`openapiv3`) or 3.1 (`oas3`), not both, and neither follows `$ref`s into files
//! beside the document; the subset the policy needs is small. Output is deterministic: objects
//! are written with sorted keys and routes in the document's path order (sorted) and method order.

mod notes;
mod operations;
mod overlay;
mod refs;
mod schema;
mod security;

use super::source::Document;
use crate::engine::Engine;
use crate::policy;
use notes::Notes;
use overlay::Overlay;
use refs::Resolver;
use schema::{Dialect, Schemas};
use security::{KeyPlace, Scheme, Schemes};
use serde_json::{json, Map, Value};
use std::path::Path;

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
    // Routes an export could not write as operations (prefixes, methods OpenAPI has no field
    // for), kept whole.
    let kept_routes: Vec<Value> = ["x-tollgate-prefix-routes", "x-tollgate-other-routes"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
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
    routes.extend(kept_routes);
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

/// What `import` prints: the policy (when one was made) and the lines for stderr.
pub struct Outcome {
    pub policy: Option<String>,
    pub messages: Vec<String>,
}

/// Imports the document at `spec_path` with the overlay at `overlay_path`. With `strict`, a
/// construct not enforced stops the import like an error.
pub fn run(spec_path: &str, overlay_path: Option<&str>, strict: bool) -> Outcome {
    let mut messages = Vec::new();
    let fail = |messages: Vec<String>| Outcome {
        policy: None,
        messages,
    };
    let spec = match Document::read(spec_path) {
        Ok(d) => d,
        Err(e) => {
            let at = e
                .pos
                .map(|p| format!(":{}:{}", p.line, p.column))
                .unwrap_or_default();
            return fail(vec![format!("{spec_path}{at}: {}", e.message)]);
        }
    };
    let overlay = match overlay_path {
        Some(p) => match Document::read(p) {
            Ok(doc) => match Overlay::from_value(&doc.value) {
                Ok(o) => o,
                Err(e) => return fail(vec![format!("{p}: {e}")]),
            },
            Err(e) => return fail(vec![format!("{p}: {}", e.message)]),
        },
        None => Overlay::default(),
    };
    let mut notes = Notes::default();
    let policy = import(Path::new(spec_path), spec.value, &overlay, &mut notes);
    // Places in the document itself are `#/...`; those in files beside it name their file.
    messages.extend(notes.lines().into_iter().map(|l| {
        if l.starts_with('#') {
            format!("{spec_path}{l}")
        } else {
            l
        }
    }));
    let Some(policy) = policy else {
        messages.push("no policy written: the document has errors".into());
        return fail(messages);
    };
    let text = match compile(&policy) {
        Ok(t) => t,
        Err(errors) => {
            messages.extend(
                errors
                    .into_iter()
                    .map(|e| format!("the policy would be invalid: {e}")),
            );
            return fail(messages);
        }
    };
    if strict && notes.unenforced_count() > 0 {
        messages.push(format!(
            "--strict: {} construct(s) not enforced; no policy written",
            notes.unenforced_count()
        ));
        return fail(messages);
    }
    Outcome {
        policy: Some(text),
        messages,
    }
}

#[cfg(test)]
mod tests;
