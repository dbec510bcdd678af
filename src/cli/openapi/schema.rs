//! OpenAPI schemas as the JSON Schema the engine runs (draft 2020-12). OpenAPI 3.1 schemas are
//! JSON Schema 2020-12 already and are taken as they are; OpenAPI 3.0's dialect is translated:
//! `nullable`, boolean `exclusiveMinimum`/`exclusiveMaximum`, `example`, and the OpenAPI-only
//! annotations. In both, `readOnly` properties are not required in requests and `writeOnly` ones
//! not in responses (OpenAPI's rule), and every `$ref` becomes a named schema of the policy
//! (`#/$defs/<name>`), which also carries recursive schemas.

use super::notes::Notes;
use super::refs::{escape, Resolver, Target};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The schema dialect of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Oas30,
    Oas31,
}

/// Where a schema is used: `readOnly` and `writeOnly` mean different things in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    Request,
    Response,
}

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "additionalItems",
    "contentSchema",
];
/// Keywords whose value is a list of subschemas.
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];
/// OpenAPI 3.0 annotations that are not JSON Schema (dropped; none of them constrains a value).
const OAS30_ONLY: &[&str] = &[
    "nullable",
    "discriminator",
    "xml",
    "externalDocs",
    "example",
];
/// Annotations of both dialects that constrain nothing and would only be carried into every VM
/// (GitHub's description is 13 MB, mostly prose and examples).
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "examples",
    "$comment",
    "externalDocs",
    "xml",
];

/// The named schemas an import collects, by the place they come from and their use.
#[derive(Default)]
pub struct Schemas {
    /// Name -> translated schema: the policy's top-level `schemas`.
    pub named: BTreeMap<String, Value>,
    names: BTreeMap<(Target, Option<Use>), String>,
    taken: BTreeSet<String>,
    pending: Vec<(Target, Option<Use>, String)>,
    /// Whether a target (or a schema it refers to) has `readOnly`/`writeOnly` properties.
    split: BTreeMap<Target, bool>,
    /// Refuse `readOnly` properties in requests (the overlay's `unknown_properties: reject`:
    /// a client setting `id` or `role` is mass assignment), rather than only not requiring them.
    pub forbid_read_only: bool,
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "schema".into()
    } else {
        s
    }
}

/// The name a referenced schema gets: the component's own name, prefixed by the file it comes
/// from when that is not the main document.
fn base_name(t: &Target) -> String {
    let last = t
        .pointer
        .rsplit('/')
        .next()
        .map(super::refs::unescape)
        .unwrap_or_default();
    let stem = std::path::Path::new(&t.file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    match stem {
        Some(stem) if !t.file.is_empty() => sanitize(&format!("{stem}.{last}")),
        _ => sanitize(&last),
    }
}

impl Schemas {
    /// `value` (found at `at`) as JSON Schema 2020-12 for `usage`.
    pub fn translate(
        &mut self,
        value: &Value,
        at: &Target,
        usage: Use,
        dialect: Dialect,
        r: &mut Resolver,
        notes: &mut Notes,
    ) -> Value {
        let out = self.walk(value, at, usage, dialect, r, notes);
        self.drain(dialect, r, notes);
        out
    }

    /// Translates the named schemas registered so far (and those they register in turn).
    fn drain(&mut self, dialect: Dialect, r: &mut Resolver, notes: &mut Notes) {
        while let Some((target, usage, name)) = self.pending.pop() {
            let Some(raw) = r.get(&target).cloned() else {
                notes.error(&r.shown(&target), "a `$ref` points at nothing");
                self.named.insert(name, Value::Bool(false));
                continue;
            };
            let u = usage.unwrap_or(Use::Response);
            let out = self.walk(&raw, &target, u, dialect, r, notes);
            self.named.insert(name, out);
        }
    }

    /// The policy name of the schema at `t` for `usage`, registering it on first sight.
    fn name_for(&mut self, t: &Target, usage: Use, r: &mut Resolver) -> String {
        let variant = self
            .needs_split(t, r, &mut BTreeSet::new())
            .then_some(usage);
        if let Some(n) = self.names.get(&(t.clone(), variant)) {
            return n.clone();
        }
        let mut base = base_name(t);
        if variant == Some(Use::Request) {
            base.push_str(".request");
        }
        let mut name = base.clone();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{base}.{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        self.names.insert((t.clone(), variant), name.clone());
        self.pending.push((t.clone(), variant, name.clone()));
        name
    }

    /// Whether the schema at `t`, or one it refers to, has `readOnly` or `writeOnly` properties
    /// (then it gets one translation per use).
    fn needs_split(&mut self, t: &Target, r: &mut Resolver, seen: &mut BTreeSet<Target>) -> bool {
        if let Some(&known) = self.split.get(t) {
            return known;
        }
        if !seen.insert(t.clone()) {
            return false;
        }
        let Some(raw) = r.get(t).cloned() else {
            return false;
        };
        let mut refs = Vec::new();
        let direct = scan(&raw, &mut refs);
        let mut answer = direct;
        for reference in refs {
            if answer {
                break;
            }
            if let Ok(next) = r.target(t, &reference) {
                answer = self.needs_split(&next, r, seen);
            }
        }
        self.split.insert(t.clone(), answer);
        answer
    }

    fn walk(
        &mut self,
        value: &Value,
        at: &Target,
        usage: Use,
        dialect: Dialect,
        r: &mut Resolver,
        notes: &mut Notes,
    ) -> Value {
        let Value::Object(map) = value else {
            // `true` / `false` (3.1), or something that is no schema: the engine's check names it.
            return value.clone();
        };
        let mut out = Map::new();
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            match r.target(at, reference) {
                Ok(t) if r.get(&t).is_some() => {
                    let name = self.name_for(&t, usage, r);
                    out.insert("$ref".into(), Value::String(format!("#/$defs/{name}")));
                }
                Ok(t) => {
                    notes.error(
                        &r.shown(at),
                        &format!("`$ref` `{reference}` points at nothing (`{}`)", r.shown(&t)),
                    );
                    return Value::Bool(false);
                }
                Err(e) => {
                    notes.error(&r.shown(at), &e);
                    return Value::Bool(false);
                }
            }
            if dialect == Dialect::Oas30 {
                // OpenAPI 3.0: "properties adjacent to a $ref are ignored".
                return Value::Object(out);
            }
        }
        let child = |key: &str| Target {
            file: at.file.clone(),
            pointer: format!("{}/{}", at.pointer, escape(key)),
        };
        for (key, v) in map {
            if key == "$ref" || key.starts_with("x-") || ANNOTATIONS.contains(&key.as_str()) {
                continue;
            }
            if dialect == Dialect::Oas30 && OAS30_ONLY.contains(&key.as_str()) {
                continue;
            }
            let translated = if ONE.contains(&key.as_str()) {
                self.walk(v, &child(key), usage, dialect, r, notes)
            } else if LIST.contains(&key.as_str()) {
                match v {
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, s)| {
                                let t = Target {
                                    file: at.file.clone(),
                                    pointer: format!("{}/{key}/{i}", at.pointer),
                                };
                                self.walk(s, &t, usage, dialect, r, notes)
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                }
            } else if MAP.contains(&key.as_str()) {
                match v {
                    Value::Object(m) => Value::Object(
                        m.iter()
                            .map(|(k, s)| {
                                let t = Target {
                                    file: at.file.clone(),
                                    pointer: format!("{}/{key}/{}", at.pointer, escape(k)),
                                };
                                (k.clone(), self.walk(s, &t, usage, dialect, r, notes))
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                }
            } else {
                v.clone()
            };
            out.insert(key.clone(), translated);
        }
        if dialect == Dialect::Oas30 {
            oas30(map, &mut out);
        }
        drop_hidden_required(map, &mut out, usage);
        if usage == Use::Request && self.forbid_read_only {
            forbid_read_only(map, &mut out);
        }
        Value::Object(out)
    }
}

/// Whether `raw` has `readOnly`/`writeOnly` properties; collects the `$ref`s under it.
fn scan(raw: &Value, refs: &mut Vec<String>) -> bool {
    let mut found = false;
    match raw {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                found |= props.values().any(|p| {
                    p.get("readOnly") == Some(&Value::Bool(true))
                        || p.get("writeOnly") == Some(&Value::Bool(true))
                });
            }
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        refs.push(s.to_string());
                    }
                } else {
                    found |= scan(v, refs);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                found |= scan(v, refs);
            }
        }
        _ => {}
    }
    found
}

/// OpenAPI 3.0's own keywords in JSON Schema 2020-12 terms.
fn oas30(src: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (flag, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        match src.get(flag) {
            Some(Value::Bool(true)) => {
                out.remove(flag);
                if let Some(b) = out.remove(bound) {
                    out.insert(flag.into(), b);
                }
            }
            Some(Value::Bool(false)) => {
                out.remove(flag);
            }
            _ => {}
        }
    }
    if src.get("nullable") == Some(&Value::Bool(true)) {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = t.clone();
                out.insert(
                    "type".into(),
                    Value::Array(vec![Value::String(t), Value::String("null".into())]),
                );
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    if !e.contains(&Value::Null) {
                        e.push(Value::Null);
                    }
                }
            }
            Some(_) => {}
            None => {
                // `nullable` without `type` (beside allOf/oneOf/anyOf): null or the schema.
                let rest = std::mem::take(out);
                out.insert(
                    "anyOf".into(),
                    Value::Array(vec![
                        serde_json::json!({"type": "null"}),
                        Value::Object(rest),
                    ]),
                );
            }
        }
    }
}

/// `required` without the properties that are `readOnly` (in requests) or `writeOnly` (in
/// responses): OpenAPI's rule for where such properties appear.
fn drop_hidden_required(src: &Map<String, Value>, out: &mut Map<String, Value>, usage: Use) {
    let hidden = match usage {
        Use::Request => "readOnly",
        Use::Response => "writeOnly",
    };
    let Some(Value::Object(props)) = src.get("properties") else {
        return;
    };
    let skip: BTreeSet<&str> = props
        .iter()
        .filter(|(_, p)| p.get(hidden) == Some(&Value::Bool(true)))
        .map(|(k, _)| k.as_str())
        .collect();
    if skip.is_empty() {
        return;
    }
    if let Some(Value::Array(req)) = out.get_mut("required") {
        req.retain(|n| n.as_str().is_none_or(|n| !skip.contains(n)));
        if req.is_empty() {
            out.remove("required");
        }
    }
}

/// `readOnly` properties as `false`: present in a request, they fail the schema.
fn forbid_read_only(src: &Map<String, Value>, out: &mut Map<String, Value>) {
    let (Some(Value::Object(props)), Some(Value::Object(translated))) =
        (src.get("properties"), out.get_mut("properties"))
    else {
        return;
    };
    for (name, p) in props {
        if p.get("readOnly") == Some(&Value::Bool(true)) {
            translated.insert(name.clone(), Value::Bool(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn run(doc: Value, schema: Value, usage: Use, dialect: Dialect) -> (Value, Schemas, Notes) {
        let mut r = Resolver::new(Path::new("spec.json"), doc);
        let mut s = Schemas::default();
        let mut notes = Notes::default();
        let at = Target {
            file: String::new(),
            pointer: "/paths/~1a/post".into(),
        };
        let out = s.translate(&schema, &at, usage, dialect, &mut r, &mut notes);
        (out, s, notes)
    }

    #[test]
    fn oas30_dialect_becomes_2020_12() {
        let (out, _, notes) = run(
            json!({}),
            json!({"type": "object", "properties": {
                "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "maximum": 9, "exclusiveMaximum": false},
                "s": {"type": "string", "nullable": true, "enum": ["a"], "example": "a"},
                "o": {"nullable": true, "allOf": [{"type": "string"}]},
                "d": {"type": "object", "discriminator": {"propertyName": "k"}, "xml": {}, "x-extra": 1}
            }}),
            Use::Request,
            Dialect::Oas30,
        );
        assert_eq!(
            out["properties"]["n"],
            json!({"type": "integer", "exclusiveMinimum": 0, "maximum": 9})
        );
        assert_eq!(
            out["properties"]["s"],
            json!({"type": ["string", "null"], "enum": ["a", null]})
        );
        assert_eq!(
            out["properties"]["o"],
            json!({"anyOf": [{"type": "null"}, {"allOf": [{"type": "string"}]}]})
        );
        assert_eq!(out["properties"]["d"], json!({"type": "object"}));
        assert!(notes.is_empty());
    }

    #[test]
    fn oas31_schemas_are_taken_as_they_are() {
        let schema = json!({"type": ["string", "null"], "exclusiveMinimum": 3, "const": 1});
        let (out, _, _) = run(json!({}), schema.clone(), Use::Request, Dialect::Oas31);
        assert_eq!(out, schema);
        // Annotations constrain nothing: left out of the policy.
        let (out, _, _) = run(
            json!({}),
            json!({"type": "integer", "description": "d", "title": "t", "examples": [1], "$comment": "c"}),
            Use::Request,
            Dialect::Oas31,
        );
        assert_eq!(out, json!({"type": "integer"}));
        let (out, _, _) = run(json!({}), json!(true), Use::Request, Dialect::Oas31);
        assert_eq!(out, json!(true));
    }

    #[test]
    fn refs_become_named_schemas_also_when_recursive() {
        let doc = json!({"components": {"schemas": {
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}, "v": {"$ref": "#/components/schemas/Val"}}},
            "Val": {"type": "integer"}
        }}});
        let (out, s, notes) = run(
            doc,
            json!({"$ref": "#/components/schemas/Node", "description": "ignored in 3.0"}),
            Use::Request,
            Dialect::Oas30,
        );
        assert_eq!(out, json!({"$ref": "#/$defs/Node"}));
        assert_eq!(
            s.named["Node"]["properties"]["next"],
            json!({"$ref": "#/$defs/Node"})
        );
        assert_eq!(s.named["Val"], json!({"type": "integer"}));
        assert!(notes.is_empty());
    }

    #[test]
    fn read_and_write_only_properties_follow_their_use() {
        let doc = json!({"components": {"schemas": {
            "Pet": {"type": "object", "required": ["id", "name", "secret"], "properties": {
                "id": {"type": "integer", "readOnly": true},
                "name": {"type": "string"},
                "secret": {"type": "string", "writeOnly": true}
            }},
            "Wrapper": {"type": "object", "properties": {"pet": {"$ref": "#/components/schemas/Pet"}}},
            "Plain": {"type": "string"}
        }}});
        let mut r = Resolver::new(Path::new("spec.json"), doc);
        let mut s = Schemas::default();
        let mut notes = Notes::default();
        let at = Target::default_main();
        let req = s.translate(
            &json!({"$ref": "#/components/schemas/Wrapper"}),
            &at,
            Use::Request,
            Dialect::Oas30,
            &mut r,
            &mut notes,
        );
        let resp = s.translate(
            &json!({"$ref": "#/components/schemas/Wrapper"}),
            &at,
            Use::Response,
            Dialect::Oas30,
            &mut r,
            &mut notes,
        );
        let plain_req = s.translate(
            &json!({"$ref": "#/components/schemas/Plain"}),
            &at,
            Use::Request,
            Dialect::Oas30,
            &mut r,
            &mut notes,
        );
        let plain_resp = s.translate(
            &json!({"$ref": "#/components/schemas/Plain"}),
            &at,
            Use::Response,
            Dialect::Oas30,
            &mut r,
            &mut notes,
        );
        assert_eq!(req, json!({"$ref": "#/$defs/Wrapper.request"}));
        assert_eq!(resp, json!({"$ref": "#/$defs/Wrapper"}));
        assert_eq!(plain_req, plain_resp, "no read/write-only: one schema");
        assert_eq!(
            s.named["Pet.request"]["required"],
            json!(["name", "secret"])
        );
        assert_eq!(s.named["Pet"]["required"], json!(["id", "name"]));
        assert_eq!(
            s.named["Wrapper.request"]["properties"]["pet"],
            json!({"$ref": "#/$defs/Pet.request"})
        );
        assert_eq!(
            s.named["Pet.request"]["properties"]["id"]["type"],
            "integer"
        );
    }

    #[test]
    fn read_only_properties_can_be_refused_in_requests() {
        let doc = json!({"components": {"schemas": {"Pet": {"type": "object", "properties": {
            "id": {"type": "integer", "readOnly": true}, "name": {"type": "string"}
        }}}}});
        let mut r = Resolver::new(Path::new("spec.json"), doc);
        let mut s = Schemas {
            forbid_read_only: true,
            ..Schemas::default()
        };
        let mut notes = Notes::default();
        let at = Target::default_main();
        let pet = json!({"$ref": "#/components/schemas/Pet"});
        s.translate(&pet, &at, Use::Request, Dialect::Oas31, &mut r, &mut notes);
        s.translate(&pet, &at, Use::Response, Dialect::Oas31, &mut r, &mut notes);
        assert_eq!(s.named["Pet.request"]["properties"]["id"], json!(false));
        assert_eq!(s.named["Pet"]["properties"]["id"]["type"], "integer");
    }

    #[test]
    fn broken_refs_are_reported_and_refuse_everything() {
        let (out, _, notes) = run(
            json!({}),
            json!({"properties": {"a": {"$ref": "#/components/schemas/Missing"}, "b": {"$ref": "http://x/y.json"}}}),
            Use::Request,
            Dialect::Oas31,
        );
        assert_eq!(out["properties"]["a"], json!(false));
        assert_eq!(out["properties"]["b"], json!(false));
        assert_eq!(notes.errors().count(), 2);
    }

    #[test]
    fn names_are_policy_names() {
        assert_eq!(sanitize("Pet Store/v1"), "Pet_Store_v1");
        assert_eq!(
            base_name(&Target {
                file: "common/types.yaml".into(),
                pointer: "/components/schemas/Id".into()
            }),
            "types.Id"
        );
    }
}
