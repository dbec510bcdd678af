//! `tollgate export openapi`: the OpenAPI 3.1 inventory of what a policy enforces - its routes,
//! parameters, schemas and security requirements - for policies written by hand. The mapping is
//! the contract `tollgate import openapi` reads back (import -> export -> import gives the same
//! policy): what OpenAPI cannot say goes into `x-tollgate-*` extensions, and top-level sections
//! that are not per route (keys, limits, audit, ...) are left to the importer's overlay.

use crate::policy::{PolicyDoc, RequestCheckDoc, RouteDoc};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The methods a route without `methods` is exported with, in operation order.
const ANY_METHOD: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];
/// Methods a path item has a field for (OpenAPI 3.1 also has `trace`).
const OPENAPI_METHODS: [&str; 8] = [
    "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
];
/// Route members copied as they are written into `x-tollgate-<member with - for _>`.
const ROUTE_EXTENSIONS: [&str; 8] = [
    "claims",
    "owner",
    "limits",
    "mode",
    "ip_access",
    "lifecycle",
    "tls",
    "peers",
];
/// The security scheme of API keys in a header, and in the query when `api_keys.query` is set.
const API_KEY: &str = "api_key";
const API_KEY_QUERY: &str = "api_key_query";
/// The security scheme of routes with `peers`: OpenAPI 3.1's `mutualTLS` (which workloads, in the
/// operation's `x-tollgate-peers`).
const MTLS: &str = "mtls";
/// A response check's `mode` when the policy leaves it out.
const DEFAULT_RESPONSE_MODE: &str = "block";
/// Top-level arrays of routes that have no OpenAPI operation, each as written in the policy.
pub const PREFIX_ROUTES: &str = "x-tollgate-prefix-routes";
pub const OTHER_ROUTES: &str = "x-tollgate-other-routes";

/// An exported document and what could not be said in it as an operation.
#[derive(Debug)]
pub struct Export {
    /// The OpenAPI 3.1 document, every object's keys in sorted order.
    pub document: Value,
    /// Routes kept in extensions and sections left out, one line each, for stderr.
    pub notes: Vec<String>,
}

/// The OpenAPI 3.1 document of a parsed policy. `raw` is the policy as written (the source of
/// the `x-tollgate-*` members, copied as they are); `title` names the document (the file stem).
pub fn openapi(doc: &PolicyDoc, raw: &Value, title: &str) -> std::result::Result<Export, String> {
    let mut notes = Vec::new();
    let schemes = security_schemes(doc)?;
    let raw_routes = raw.get("routes").and_then(Value::as_array);
    let mut paths = Map::new();
    // Template shape (`/orders/{}`) -> the path key holding it: OpenAPI forbids two templates
    // that differ only in their parameter names.
    let mut shapes: BTreeMap<String, String> = BTreeMap::new();
    let (mut prefix_routes, mut other_routes) = (Vec::new(), Vec::new());
    for (i, route) in doc.routes.iter().enumerate() {
        let raw_route = raw_routes
            .and_then(|r| r.get(i))
            .cloned()
            .unwrap_or(Value::Null);
        let name = route.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
        let Some(path) = &route.path else {
            notes.push(format!(
                "route `{name}` (prefix `{}`) has no OpenAPI path: kept in `{PREFIX_ROUTES}`",
                route.prefix.as_deref().unwrap_or_default()
            ));
            prefix_routes.push(raw_route);
            continue;
        };
        let any_method = route.methods.is_empty();
        let methods: Vec<String> = if any_method {
            ANY_METHOD.iter().map(|m| (*m).to_string()).collect()
        } else {
            let mut seen = BTreeSet::new();
            route
                .methods
                .iter()
                .filter(|m| seen.insert(m.as_str()))
                .cloned()
                .collect()
        };
        let taken = |m: &String| {
            paths
                .get(path)
                .and_then(|item| item.get(m.to_ascii_lowercase()))
                .is_some()
        };
        let clash = if let Some(m) = methods
            .iter()
            .find(|m| !OPENAPI_METHODS.contains(&m.as_str()))
        {
            Some(format!("OpenAPI has no operation for `{m}`"))
        } else if let Some(other) = shapes.get(&shape(path)).filter(|p| *p != path) {
            Some(format!("`{path}` is the same template as `{other}`"))
        } else {
            methods
                .iter()
                .find(|m| taken(m))
                .map(|m| format!("`{m} {path}` is already another route's operation"))
        };
        if let Some(why) = clash {
            notes.push(format!("route `{name}`: {why}: kept in `{OTHER_ROUTES}`"));
            other_routes.push(raw_route);
            continue;
        }
        shapes.insert(shape(path), path.clone());
        let mut item = match paths.remove(path) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for method in &methods {
            let op = Operation {
                doc,
                route,
                raw: &raw_route,
                name: &name,
                path,
                any_method,
            };
            let id = if methods.len() == 1 {
                name.clone()
            } else {
                format!("{name}-{}", method.to_ascii_lowercase())
            };
            item.insert(method.to_ascii_lowercase(), op.to_json(&id));
        }
        paths.insert(path.clone(), Value::Object(item));
    }
    notes.extend(duplicate_operation_ids(&paths));

    let mut document = Map::new();
    document.insert("openapi".into(), json!("3.1.0"));
    document.insert(
        "info".into(),
        json!({"title": title, "version": "tollgate-export"}),
    );
    document.insert("paths".into(), Value::Object(paths));
    let mut components = Map::new();
    if !doc.schemas.is_empty() {
        let schemas: Map<String, Value> = doc
            .schemas
            .iter()
            .map(|(name, s)| (name.clone(), rewrite_refs(s, &doc.schemas, false)))
            .collect();
        components.insert("schemas".into(), Value::Object(schemas));
    }
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    if !components.is_empty() {
        document.insert("components".into(), Value::Object(components));
    }
    if !prefix_routes.is_empty() {
        document.insert(PREFIX_ROUTES.into(), Value::Array(prefix_routes));
    }
    if !other_routes.is_empty() {
        document.insert(OTHER_ROUTES.into(), Value::Array(other_routes));
    }
    notes.extend(not_exported(raw));
    Ok(Export {
        document: sorted(Value::Object(document)),
        notes,
    })
}

/// One JWT provider -> a bearer scheme; API keys -> `api_key` (and `api_key_query`).
fn security_schemes(doc: &PolicyDoc) -> std::result::Result<Map<String, Value>, String> {
    let mut schemes: Map<String, Value> = doc
        .providers
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "x-tollgate-issuer": p.issuer}),
            )
        })
        .collect();
    if let Some(keys) = &doc.api_keys {
        let mut add = |scheme: &str, value: Value| {
            if schemes.contains_key(scheme) {
                return Err(format!(
                    "provider `{scheme}` has the name of the API keys' security scheme; rename it to export"
                ));
            }
            schemes.insert(scheme.to_string(), value);
            Ok(())
        };
        let header = keys.header.as_deref().unwrap_or("x-api-key");
        add(
            API_KEY,
            json!({"type": "apiKey", "in": "header", "name": header}),
        )?;
        if let Some(query) = &keys.query {
            add(
                API_KEY_QUERY,
                json!({"type": "apiKey", "in": "query", "name": query}),
            )?;
        }
    }
    if doc.routes.iter().any(|r| r.peers.is_some()) {
        if schemes.contains_key(MTLS) {
            return Err(format!(
                "a provider or the API keys' scheme is named `{MTLS}`, the name of the client certificates' security scheme; rename it to export"
            ));
        }
        schemes.insert(
            MTLS.to_string(),
            json!({"type": "mutualTLS",
                   "description": "A client certificate the listener validated; an operation's `x-tollgate-peers` names the workloads it accepts."}),
        );
    }
    Ok(schemes)
}

/// The security requirements of a route: `[{}]` when public; otherwise, for every accepted scheme,
/// one requirement per scope of `any` (or one without when `any` is empty) holding every scope of
/// `all` and that one: a caller passes with any scheme holding all of `all` and one of `any`.
fn security(route: &RouteDoc, doc: &PolicyDoc) -> Value {
    if route.public {
        return json!([{}]);
    }
    let mut schemes: Vec<&str> = route.providers.iter().map(String::as_str).collect();
    if route.api_keys {
        schemes.push(API_KEY);
        if doc.api_keys.as_ref().is_some_and(|k| k.query.is_some()) {
            schemes.push(API_KEY_QUERY);
        }
    }
    let set = |v: &[String]| -> Vec<String> {
        let s: BTreeSet<&String> = v.iter().collect();
        s.into_iter().cloned().collect()
    };
    let (all, any) = route
        .scopes
        .as_ref()
        .map_or((vec![], vec![]), |s| (set(&s.all), set(&s.any)));
    let mut lists: Vec<Vec<String>> = Vec::new();
    if any.is_empty() {
        lists.push(all);
    } else {
        for y in any {
            let mut list = all.clone();
            if !list.contains(&y) {
                list.push(y);
            }
            if !lists.contains(&list) {
                lists.push(list);
            }
        }
    }
    let requirements: Vec<Value> = schemes
        .iter()
        .flat_map(|scheme| {
            lists.iter().map(move |list| {
                let mut m = Map::new();
                m.insert((*scheme).to_string(), json!(list));
                Value::Object(m)
            })
        })
        .collect();
    // `peers`: the client certificate is needed as well as (or, alone, instead of) a credential.
    if route.peers.is_some() {
        if requirements.is_empty() {
            return json!([{ MTLS: [] }]);
        }
        let both = requirements
            .into_iter()
            .map(|mut r| {
                if let Some(m) = r.as_object_mut() {
                    m.insert(MTLS.to_string(), json!([]));
                }
                r
            })
            .collect();
        return Value::Array(both);
    }
    Value::Array(requirements)
}

/// One operation of a route.
struct Operation<'a> {
    doc: &'a PolicyDoc,
    route: &'a RouteDoc,
    raw: &'a Value,
    name: &'a str,
    path: &'a str,
    any_method: bool,
}

impl Operation<'_> {
    fn to_json(&self, operation_id: &str) -> Value {
        let (route, named) = (self.route, &self.doc.schemas);
        let mut op = Map::new();
        op.insert("operationId".into(), json!(operation_id));
        op.insert("x-tollgate-route".into(), json!(self.name));
        if self.any_method {
            op.insert("x-tollgate-any-method".into(), json!(true));
        }
        if let Some(host) = &route.host {
            op.insert("x-tollgate-host".into(), json!(host));
        }
        let params = parameters(self.path, route.request.as_ref(), named);
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(req) = &route.request {
            if let Some(body) = &req.body {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true,
                           "content": {"application/json": {"schema": rewrite_refs(body, named, true)}}}),
                );
            }
            if req.reject_unknown_properties {
                op.insert("x-tollgate-reject-unknown-properties".into(), json!(true));
            }
            if let Some(max) = req.max_body_bytes {
                op.insert("x-tollgate-max-body-bytes".into(), json!(max));
            }
        }
        op.insert("responses".into(), self.responses());
        if let Some(Value::Object(checks)) = self.raw.get("response") {
            let mut settings: Map<String, Value> = checks
                .iter()
                .filter(|(k, _)| k.as_str() != "schemas")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // The mode is always written: an importer's default for documents that do not say
            // (its overlay's, `report`) is not the policy's (`block`).
            settings
                .entry("mode")
                .or_insert_with(|| json!(DEFAULT_RESPONSE_MODE));
            op.insert("x-tollgate-response".into(), Value::Object(settings));
        }
        op.insert("security".into(), security(route, self.doc));
        for member in ROUTE_EXTENSIONS {
            if let Some(v) = self.raw.get(member).filter(|v| !v.is_null()) {
                op.insert(
                    format!("x-tollgate-{}", member.replace('_', "-")),
                    v.clone(),
                );
            }
        }
        if route
            .lifecycle
            .as_ref()
            .is_some_and(|l| l.deprecated.is_some() || l.sunset.is_some() || l.retired)
        {
            op.insert("deprecated".into(), json!(true));
        }
        Value::Object(op)
    }

    /// A response per checked status or class (`2xx` written as OpenAPI's `2XX`), or `default`.
    fn responses(&self) -> Value {
        let Some(checks) = &self.route.response else {
            return json!({"default": {"description": "not checked by Tollgate"}});
        };
        let mut out = Map::new();
        for (key, schema) in &checks.schemas {
            let schema = rewrite_refs(schema, &self.doc.schemas, true);
            out.entry(key.to_ascii_uppercase()).or_insert_with(|| {
                json!({"description": "checked by Tollgate",
                       "content": {"application/json": {"schema": schema}}})
            });
        }
        Value::Object(out)
    }
}

/// Path, query and header parameters, sorted by where they are, then by name.
fn parameters(
    path: &str,
    req: Option<&RequestCheckDoc>,
    named: &BTreeMap<String, Value>,
) -> Vec<Value> {
    // (rank of `in`, name, parameter)
    let mut out: Vec<(u8, String, Value)> = Vec::new();
    for name in template_params(path) {
        let s = req
            .and_then(|r| r.params.get(name))
            .map_or(json!({"type": "string"}), |s| rewrite_refs(s, named, true));
        out.push((
            0,
            name.to_string(),
            json!({"name": name, "in": "path", "required": true, "schema": s}),
        ));
    }
    if let Some(req) = req {
        out.extend(checked_parameters(req, named));
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out.into_iter().map(|(_, _, p)| p).collect()
}

/// The query and header parameters a route's request checks name: `(rank, name, parameter)`.
fn checked_parameters(
    req: &RequestCheckDoc,
    named: &BTreeMap<String, Value>,
) -> Vec<(u8, String, Value)> {
    let mut out = Vec::new();
    let mut query: BTreeMap<&str, (Option<&Value>, bool)> = req
        .query
        .iter()
        .map(|(n, s)| (n.as_str(), (Some(s), false)))
        .collect();
    for n in &req.required_query {
        query.entry(n.as_str()).or_insert((None, false)).1 = true;
    }
    // Header names are case-insensitive: a required header may be written in another case than
    // its schema's name.
    let mut headers: BTreeMap<&str, (Option<&Value>, bool)> = req
        .headers
        .iter()
        .map(|(n, s)| (n.as_str(), (Some(s), false)))
        .collect();
    for n in &req.required_headers {
        match headers.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(n)) {
            Some((_, entry)) => entry.1 = true,
            None => {
                headers.insert(n.as_str(), (None, true));
            }
        }
    }
    for (rank, place, params) in [(1, "query", query), (2, "header", headers)] {
        for (name, (s, required)) in params {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("in".into(), json!(place));
            if required {
                p.insert("required".into(), json!(true));
            }
            let s = s.map_or(json!({}), |s| rewrite_refs(s, named, true));
            p.insert("schema".into(), s);
            out.push((rank, name.to_string(), Value::Object(p)));
        }
    }
    out
}

/// The parameter names of a path template, in path order.
fn template_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The template with its parameter names removed: `/orders/{id}` -> `/orders/{}`.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Keywords whose values are data, not schemas: a `$ref` member inside them is not a reference.
const DATA_KEYWORDS: [&str; 5] = ["const", "enum", "default", "examples", "example"];
/// Keywords whose values map arbitrary names (which may be `$ref` or `const`) to schemas.
const NAME_MAPS: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// A copy of `schema` whose references to the policy's named schemas (`#/$defs/Name`, and
/// pointers below one) point at `#/components/schemas/Name`. The compiler puts named schemas
/// beside a route schema's own `$defs` and the route's win, so with `own_defs` a name the
/// schema defines itself is left alone; other references are left as they are.
fn rewrite_refs(schema: &Value, named: &BTreeMap<String, Value>, own_defs: bool) -> Value {
    let local: BTreeSet<&str> = if own_defs {
        schema
            .get("$defs")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    let rewrite = |r: &str| -> Option<String> {
        let rest = r.strip_prefix("#/$defs/")?;
        let name = rest.split('/').next().unwrap_or(rest);
        (named.contains_key(name) && !local.contains(name))
            .then(|| format!("#/components/schemas/{rest}"))
    };
    let mut out = schema.clone();
    walk_schema(&mut out, &rewrite);
    out
}

fn walk_schema(v: &mut Value, rewrite: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match (k.as_str(), &mut *child) {
                    ("$ref", Value::String(r)) => {
                        if let Some(new) = rewrite(r) {
                            *r = new;
                        }
                    }
                    (k, _) if DATA_KEYWORDS.contains(&k) => {}
                    (k, Value::Object(schemas)) if NAME_MAPS.contains(&k) => {
                        schemas.values_mut().for_each(|s| walk_schema(s, rewrite));
                    }
                    _ => walk_schema(child, rewrite),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|s| walk_schema(s, rewrite)),
        _ => {}
    }
}

/// An `operationId` given twice (a route named `a-get` beside a route `a` with several methods).
fn duplicate_operation_ids(paths: &Map<String, Value>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut notes = Vec::new();
    for op in paths
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
    {
        if let Some(id) = op.get("operationId").and_then(Value::as_str) {
            if !seen.insert(id) {
                notes.push(format!(
                    "operationId `{id}` is used twice; rename a route to make it unique"
                ));
            }
        }
    }
    notes
}

/// The line naming the top-level sections (and parts of sections) left to the importer's overlay.
fn not_exported(raw: &Value) -> Option<String> {
    let top = raw.as_object()?;
    let left: Vec<String> = top
        .iter()
        // `$schema` names the policy format's schema for editors: nothing to export.
        .filter(|(k, _)| !matches!(k.as_str(), "routes" | "schemas" | "$schema"))
        .map(|(k, _)| match k.as_str() {
            "providers" => "providers (all but each `issuer`)".to_string(),
            "api_keys" => "api_keys (all but where keys are read: the keys)".to_string(),
            other => other.to_string(),
        })
        .collect();
    (!left.is_empty()).then(|| {
        format!(
            "not exported (not per route; an import takes them from its overlay): {}",
            left.join(", ")
        )
    })
}

/// `value` with every object's keys in sorted order, whatever map serde_json is built with (it
/// keeps insertion order under its `preserve_order` feature), so the output is the same bytes
/// for the same policy.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    const CORP: &str = r#"{"issuer": "https://idp.example", "audiences": ["api"], "algorithms": ["ES256"],
        "jwks": {"keys": []}}"#;

    /// The export of a policy with `routes` (and more top-level members in `extra`).
    fn export(routes: Value, extra: Value) -> Export {
        let mut raw = json!({
            "providers": {"corp": serde_json::from_str::<Value>(CORP).unwrap(),
                          "partner": serde_json::from_str::<Value>(CORP).unwrap()},
            "routes": routes,
        });
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        let doc = policy::from_value(raw.clone()).unwrap();
        openapi(&doc, &raw, "t").unwrap()
    }

    fn route_security(route: Value, extra: Value) -> Value {
        let e = export(json!([route]), extra);
        let item = e.document["paths"]["/r"].as_object().unwrap().clone();
        item.values().next().unwrap()["security"].clone()
    }

    #[test]
    fn security_requirements_say_exactly_who_passes() {
        let keys = json!({"api_keys": {"keys": [], "query": "key"}});
        let table = [
            (
                json!({"path": "/r", "methods": ["GET"], "public": true}),
                json!({}),
                json!([{}]),
            ),
            (
                json!({"path": "/r", "methods": ["GET"], "providers": ["corp"]}),
                json!({}),
                json!([{"corp": []}]),
            ),
            (
                json!({"path": "/r", "methods": ["GET"], "providers": ["partner", "corp"],
                       "api_keys": true, "scopes": {"all": ["b", "a"]}}),
                keys.clone(),
                json!([{"partner": ["a", "b"]}, {"corp": ["a", "b"]},
                       {"api_key": ["a", "b"]}, {"api_key_query": ["a", "b"]}]),
            ),
            (
                json!({"path": "/r", "methods": ["GET"], "providers": ["corp"],
                       "scopes": {"any": ["read", "admin"]}}),
                json!({}),
                json!([{"corp": ["admin"]}, {"corp": ["read"]}]),
            ),
            (
                json!({"path": "/r", "methods": ["GET"], "providers": ["corp"],
                       "scopes": {"all": ["x"], "any": ["y", "x", "z"]}}),
                json!({}),
                // Holding `x` satisfies `any` already: one requirement says so.
                json!([{"corp": ["x"]}, {"corp": ["x", "y"]}, {"corp": ["x", "z"]}]),
            ),
            (
                json!({"path": "/r", "methods": ["GET"], "api_keys": true}),
                json!({"api_keys": {"keys": []}}),
                json!([{"api_key": []}]),
            ),
            // A workload alone: a client certificate, never "public" (`[]`).
            (
                json!({"path": "/r", "methods": ["GET"], "peers": {"namespaces": ["ops"]}}),
                json!({}),
                json!([{"mtls": []}]),
            ),
            // A workload and a token: both in one requirement.
            (
                json!({"path": "/r", "methods": ["GET"], "providers": ["corp"],
                       "scopes": {"any": ["a", "b"]}, "peers": {"principals": ["*"]}}),
                json!({}),
                json!([{"corp": ["a"], "mtls": []}, {"corp": ["b"], "mtls": []}]),
            ),
        ];
        for (route, extra, want) in table {
            assert_eq!(route_security(route.clone(), extra), want, "{route}");
        }
    }

    #[test]
    fn security_schemes_for_providers_and_api_keys() {
        let e = export(
            json!([{"path": "/r", "public": true}]),
            json!({"api_keys": {"keys": [], "header": "x-key", "query": "key"}}),
        );
        let schemes = &e.document["components"]["securitySchemes"];
        assert_eq!(
            schemes["corp"],
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "x-tollgate-issuer": "https://idp.example"})
        );
        assert_eq!(
            schemes["api_key"],
            json!({"type": "apiKey", "in": "header", "name": "x-key"})
        );
        assert_eq!(
            schemes["api_key_query"],
            json!({"type": "apiKey", "in": "query", "name": "key"})
        );
        let e = export(
            json!([{"path": "/r", "public": true}]),
            json!({"api_keys": {"keys": []}}),
        );
        assert_eq!(
            e.document["components"]["securitySchemes"]["api_key"]["name"],
            "x-api-key"
        );
        assert!(e.document["components"]["securitySchemes"]
            .get("api_key_query")
            .is_none());
        assert!(e.document.get("security").is_none());

        // A provider named like the API keys' scheme cannot be told apart from it.
        let raw = json!({"providers": {"api_key": serde_json::from_str::<Value>(CORP).unwrap()},
                         "api_keys": {"keys": []}, "routes": [{"path": "/r", "public": true}]});
        let doc = policy::from_value(raw.clone()).unwrap();
        let err = openapi(&doc, &raw, "t").unwrap_err();
        assert!(err.contains("provider `api_key`"), "{err}");
    }

    #[test]
    fn refs_to_named_schemas_point_into_components() {
        let named: BTreeMap<String, Value> = [
            ("Order".to_string(), json!({"type": "object"})),
            ("Item".to_string(), json!({"type": "object"})),
        ]
        .into_iter()
        .collect();
        let schema = json!({
            "type": "object",
            "properties": {
                "order": {"$ref": "#/$defs/Order"},
                "first": {"$ref": "#/$defs/Order/properties/items"},
                "other": {"$ref": "#/$defs/Unknown"},
                "outside": {"$ref": "https://example.com/s.json"},
                "item": {"$ref": "#/$defs/Item"},
                "$ref": {"type": "string"},
                "const": {"allOf": [{"$ref": "#/$defs/Order"}]},
                "fixed": {"const": {"$ref": "#/$defs/Order"}}
            },
            "$defs": {"Item": {"type": "string"}}
        });
        let out = rewrite_refs(&schema, &named, true);
        let p = &out["properties"];
        assert_eq!(p["order"]["$ref"], "#/components/schemas/Order");
        assert_eq!(
            p["first"]["$ref"],
            "#/components/schemas/Order/properties/items"
        );
        assert_eq!(p["other"]["$ref"], "#/$defs/Unknown");
        assert_eq!(p["outside"]["$ref"], "https://example.com/s.json");
        // The schema's own `Item` wins over the named one, as in the compiler.
        assert_eq!(p["item"]["$ref"], "#/$defs/Item");
        assert_eq!(p["$ref"], json!({"type": "string"}));
        assert_eq!(p["const"]["allOf"][0]["$ref"], "#/components/schemas/Order");
        // Data is not a reference.
        assert_eq!(p["fixed"]["const"]["$ref"], "#/$defs/Order");

        // Named schemas refer to each other through components too.
        let e = export(
            json!([{"path": "/r", "public": true,
                    "request": {"body": {"$ref": "#/$defs/A"}}}]),
            json!({"schemas": {"A": {"properties": {"b": {"$ref": "#/$defs/B"}}}, "B": {}}}),
        );
        let d = &e.document;
        assert_eq!(
            d["components"]["schemas"]["A"]["properties"]["b"]["$ref"],
            "#/components/schemas/B"
        );
        let op = &d["paths"]["/r"]["get"];
        assert_eq!(op["x-tollgate-any-method"], true);
        assert_eq!(
            op["requestBody"],
            json!({"required": true, "content": {"application/json":
                   {"schema": {"$ref": "#/components/schemas/A"}}}})
        );
    }

    #[test]
    fn parameters_are_sorted_by_place_then_name() {
        let e = export(
            json!([{"name": "keys", "path": "/users/{uid}/keys/{kid}", "methods": ["GET"],
                    "public": true,
                    "request": {
                        "params": {"uid": {"$ref": "#/$defs/Id"}},
                        "query": {"limit": {"type": "integer"}, "after": {"type": "string"}},
                        "required_query": ["limit", "tenant"],
                        "headers": {"X-Trace": {"type": "string"}, "x-b": {}},
                        "required_headers": ["x-trace", "x-a"]}}]),
            json!({"schemas": {"Id": {"type": "string", "pattern": "^[0-9]+$"}}}),
        );
        let params = &e.document["paths"]["/users/{uid}/keys/{kid}"]["get"]["parameters"];
        assert_eq!(
            params,
            &json!([
                {"name": "kid", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "uid", "in": "path", "required": true,
                 "schema": {"$ref": "#/components/schemas/Id"}},
                {"name": "after", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "required": true, "schema": {"type": "integer"}},
                {"name": "tenant", "in": "query", "required": true, "schema": {}},
                {"name": "X-Trace", "in": "header", "required": true, "schema": {"type": "string"}},
                {"name": "x-a", "in": "header", "required": true, "schema": {}},
                {"name": "x-b", "in": "header", "schema": {}},
            ])
        );
        // Without request checks, template parameters are strings.
        let e = export(
            json!([{"name": "o", "path": "/o/{id}", "methods": ["GET"], "public": true}]),
            json!({}),
        );
        assert_eq!(
            e.document["paths"]["/o/{id}"]["get"]["parameters"],
            json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
        );
    }

    #[test]
    fn route_members_openapi_cannot_say_become_extensions() {
        let e = export(
            json!([{"name": "old", "path": "/old/{id}", "methods": ["GET", "DELETE"],
                    "host": "api.example", "providers": ["corp"],
                    "claims": {"all": [{"claim": "tenant", "equals": "a"}]},
                    "owner": {"param": "id"},
                    "mode": "dry-run",
                    "ip_access": {"allow": ["10.0.0.0/8"]},
                    "lifecycle": {"sunset": "2030-01-01T00:00:00Z"},
                    "request": {"max_body_bytes": 100, "reject_unknown_properties": true},
                    "response": {"schemas": {"2xx": {"type": "object"}, "404": true},
                                 "mode": "redact", "sensitive_fields": ["password"]}}]),
            json!({}),
        );
        let op = &e.document["paths"]["/old/{id}"]["delete"];
        assert_eq!(op["operationId"], "old-delete");
        assert_eq!(op["x-tollgate-route"], "old");
        assert_eq!(
            e.document["paths"]["/old/{id}"]["get"]["operationId"],
            "old-get"
        );
        assert_eq!(op["x-tollgate-host"], "api.example");
        assert_eq!(
            op["x-tollgate-claims"],
            json!({"all": [{"claim": "tenant", "equals": "a"}]})
        );
        assert_eq!(op["x-tollgate-owner"], json!({"param": "id"}));
        assert_eq!(op["x-tollgate-mode"], "dry-run");
        assert_eq!(op["x-tollgate-ip-access"], json!({"allow": ["10.0.0.0/8"]}));
        assert_eq!(
            op["x-tollgate-lifecycle"],
            json!({"sunset": "2030-01-01T00:00:00Z"})
        );
        assert_eq!(op["deprecated"], true);
        assert_eq!(op["x-tollgate-max-body-bytes"], 100);
        assert_eq!(op["x-tollgate-reject-unknown-properties"], true);
        assert!(op.get("requestBody").is_none());
        assert!(op.get("x-tollgate-any-method").is_none());
        assert_eq!(
            op["responses"],
            json!({
                "2XX": {"description": "checked by Tollgate",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "404": {"description": "checked by Tollgate",
                        "content": {"application/json": {"schema": true}}},
            })
        );
        assert_eq!(
            op["x-tollgate-response"],
            json!({"mode": "redact", "sensitive_fields": ["password"]})
        );
    }

    #[test]
    fn response_checks_always_say_their_mode() {
        let e = export(
            json!([{"name": "r", "path": "/r", "methods": ["GET"], "public": true,
                    "response": {"schemas": {"200": {}}, "max_body_bytes": 1024}}]),
            json!({}),
        );
        assert_eq!(
            e.document["paths"]["/r"]["get"]["x-tollgate-response"],
            json!({"mode": "block", "max_body_bytes": 1024})
        );
    }

    #[test]
    fn routes_without_an_operation_are_kept_whole() {
        let routes = json!([
            {"name": "p", "prefix": "/static/", "public": true},
            {"name": "a", "path": "/o/{id}", "methods": ["GET"], "public": true},
            {"name": "b", "path": "/o/{oid}", "methods": ["POST"], "public": true},
            {"name": "c", "path": "/o/{id}", "methods": ["GET"], "host": "h.example", "public": true},
            {"name": "d", "path": "/o/{id}", "public": true},
            {"name": "e", "path": "/o/{id}", "methods": ["PURGE"], "public": true},
            {"name": "f", "path": "/o/{id}", "methods": ["PUT", "PUT"], "public": true},
            {"path": "/n", "methods": ["TRACE"], "public": true}
        ]);
        let e = export(routes.clone(), json!({}));
        let d = &e.document;
        assert_eq!(d[PREFIX_ROUTES], json!([routes[0]]));
        assert_eq!(
            d[OTHER_ROUTES],
            json!([routes[2], routes[3], routes[4], routes[5]])
        );
        let item = d["paths"]["/o/{id}"].as_object().unwrap();
        assert_eq!(item.keys().collect::<Vec<_>>(), ["get", "put"]);
        assert_eq!(item["put"]["operationId"], "f");
        assert_eq!(d["paths"]["/n"]["trace"]["operationId"], "routes[7]");
        let notes = e.notes.join("\n");
        for want in [
            "route `p` (prefix `/static/`) has no OpenAPI path",
            "route `b`: `/o/{oid}` is the same template as `/o/{id}`",
            "route `c`: `GET /o/{id}` is already another route's operation",
            "route `d`: `GET /o/{id}` is already another route's operation",
            "route `e`: OpenAPI has no operation for `PURGE`",
        ] {
            assert!(notes.contains(want), "{want}\n{notes}");
        }
    }

    #[test]
    fn sections_not_per_route_are_named_and_left_out() {
        let e = export(
            json!([{"path": "/r", "public": true}]),
            json!({"realm": "x", "rate_limits": {}, "api_keys": {"keys": []},
                   "schemas": {"A": {}}}),
        );
        let note = e.notes.last().unwrap();
        assert_eq!(
            note,
            "not exported (not per route; an import takes them from its overlay): \
             api_keys (all but where keys are read: the keys), providers (all but each \
             `issuer`), rate_limits, realm"
        );
        let text = serde_json::to_string(&e.document).unwrap();
        assert!(!text.contains("\"keys\""), "{text}");
        assert_eq!(
            e.document["info"],
            json!({"title": "t", "version": "tollgate-export"})
        );
        assert_eq!(e.document["openapi"], "3.1.0");
    }

    #[test]
    fn output_keys_are_sorted() {
        let v = sorted(json!({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": 3}}));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":{"c":3,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
