//! One policy route per OpenAPI operation: its path under the server's base path, its method,
//! name, parameters, request body and response schemas, credentials and scopes, deprecation, and
//! the `x-tollgate-*` extensions that say what OpenAPI cannot.

use super::notes::Notes;
use super::overlay::Overlay;
use super::refs::{escape, Resolver, Target};
use super::schema::{Dialect, Schemas, Use};
use super::security::{Auth, KeyPlace, Schemes};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// OpenAPI's operation keys, in the order routes are written for one path.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Route fields an `x-tollgate-<field>` extension (dashes for underscores) sets as they are.
const ROUTE_FIELDS: &[&str] = &[
    "owner",
    "limits",
    "claims",
    "mode",
    "ip_access",
    "lifecycle",
    "host",
    "tls",
    "peers",
];

/// The routes of the document, and what they need from the rest of the policy.
#[derive(Default)]
pub struct Routes {
    pub routes: Vec<Value>,
    /// JWT providers the routes accept.
    pub providers: BTreeSet<String>,
    /// API-key places the routes accept.
    pub key_places: BTreeSet<KeyPlace>,
}

/// The path part of a server URL, without its trailing slash: `https://h/v1/` is `/v1`, and
/// `{variables}` take their default.
pub fn base_path(server: &Value) -> String {
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(Value::Object(vars)) = server.get("variables") {
        for (name, v) in vars {
            let default = v.get("default").and_then(Value::as_str).unwrap_or("");
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    let path = match url.find("://") {
        Some(i) => {
            let rest = url.get(i + 3..).unwrap_or("");
            rest.find('/').and_then(|j| rest.get(j..)).unwrap_or("")
        }
        None => url.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    if path.is_empty() || path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// A template parameter name the policy accepts (letters, digits and `_`).
fn param_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The policy's path for `template` under `base`, with parameter names made policy names; or
/// why it cannot be one (a parameter that is not a whole segment).
fn route_path(base: &str, template: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let mut renamed = BTreeMap::new();
    let mut out = String::from(base);
    for seg in template.split('/').skip(1) {
        out.push('/');
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if inner.contains(['{', '}']) {
                return Err(format!("segment `{seg}` is not one parameter"));
            }
            let name = param_name(inner);
            renamed.insert(inner.to_string(), name.clone());
            out.push('{');
            out.push_str(&name);
            out.push('}');
        } else if seg.contains(['{', '}']) {
            return Err(format!(
                "segment `{seg}` mixes a parameter with text; Tollgate's templates match whole segments only"
            ));
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok((out, renamed))
}

/// A stable route name from the method and path: `get-users-id`.
fn derived_name(method: &str, path: &str) -> String {
    let mut name = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let clean: String = seg
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if !clean.is_empty() {
            name.push('-');
            name.push_str(&clean.to_ascii_lowercase());
        }
    }
    name
}

/// Context shared by every operation of one import.
pub struct Ctx<'a> {
    pub r: &'a mut Resolver,
    pub schemas: &'a mut Schemas,
    pub notes: &'a mut Notes,
    pub dialect: Dialect,
    pub schemes: &'a Schemes,
    pub overlay: &'a Overlay,
}

impl Ctx<'_> {
    fn shown(&self, t: &Target) -> String {
        self.r.shown(t)
    }
}

/// Every operation of the document as a route.
pub fn routes(cx: &mut Ctx<'_>) -> Routes {
    let mut out = Routes::default();
    let doc = cx.r.main().clone();
    let base = doc
        .get("servers")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .map(base_path)
        .unwrap_or_default();
    if doc
        .get("servers")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().map(base_path).collect::<BTreeSet<_>>().len() > 1)
    {
        cx.notes.unenforced(
            "#/servers",
            &format!(
                "servers with different base paths: the routes use the first one's (`{base}`)"
            ),
        );
    }
    let Some(Value::Object(paths)) = doc.get("paths") else {
        cx.notes.unenforced(
            "#/paths",
            "the document has no paths: the policy has no routes",
        );
        return out;
    };
    let mut names = BTreeSet::new();
    for (template, item) in paths {
        let at = Target::main(format!("/paths/{}", escape(template)));
        let (item, item_at) = match cx.r.follow(item, &at) {
            Ok(v) => v,
            Err(e) => {
                let shown = cx.shown(&at);
                cx.notes.error(&shown, &e);
                continue;
            }
        };
        let item_base = item
            .get("servers")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .map_or_else(|| base.clone(), base_path);
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let op_at = item_at.join(method);
            let op_base = op
                .get("servers")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .map_or_else(|| item_base.clone(), base_path);
            if let Some(route) = operation(
                cx, &mut out, &doc, template, &item, &op_base, method, op, &op_at, &mut names,
            ) {
                out.routes.push(route);
            }
        }
    }
    merge_exported(&mut out.routes);
    out
}

/// Routes that an export split into one operation per method (same `x-tollgate-route` name) are
/// one route again.
fn merge_exported(routes: &mut Vec<Value>) {
    let mut merged: Vec<Value> = Vec::new();
    for route in routes.drain(..) {
        let same = merged.iter_mut().find(|m| {
            m.get("name") == route.get("name") && {
                let strip = |v: &Value| {
                    let mut v = v.clone();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("methods");
                    }
                    v
                };
                strip(m) == strip(&route)
            }
        });
        match same {
            Some(m) => {
                let extra = route.get("methods").cloned().unwrap_or(json!([]));
                if let (Some(Value::Array(ms)), Value::Array(more)) = (m.get_mut("methods"), extra)
                {
                    for x in more {
                        if !ms.contains(&x) {
                            ms.push(x);
                        }
                    }
                }
            }
            None => merged.push(route),
        }
    }
    *routes = merged;
}

#[allow(clippy::too_many_arguments)]
fn operation(
    cx: &mut Ctx<'_>,
    out: &mut Routes,
    doc: &Value,
    template: &str,
    item: &Value,
    base: &str,
    method: &str,
    op: &Value,
    at: &Target,
    names: &mut BTreeSet<String>,
) -> Option<Value> {
    let shown = cx.shown(at);
    let (path, renamed) = match route_path(base, template) {
        Ok(p) => p,
        Err(why) => {
            cx.notes.unenforced(
                &shown,
                &format!("{why}: the operation is left out, so its requests are refused"),
            );
            return None;
        }
    };
    let op_id = op.get("operationId").and_then(Value::as_str);
    let mut name = op
        .get("x-tollgate-route")
        .and_then(Value::as_str)
        .or(op_id)
        .map_or_else(|| derived_name(method, &path), String::from);
    let exported = op.get("x-tollgate-route").is_some();
    if !exported {
        let base_name = name.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base_name}-{n}");
            n += 1;
        }
        if name != base_name {
            cx.notes.unenforced(
                &shown,
                &format!("operation name `{base_name}` is used twice: this route is `{name}`"),
            );
        }
    }
    names.insert(name.clone());
    let mut route = Map::new();
    route.insert("name".into(), json!(name));
    route.insert("path".into(), json!(path));
    let any_method = op.get("x-tollgate-any-method") == Some(&Value::Bool(true));
    route.insert(
        "methods".into(),
        if any_method {
            json!([])
        } else {
            json!([method.to_ascii_uppercase()])
        },
    );

    // Credentials and scopes.
    let security_at = if op.get("security").is_some() {
        format!("{shown}/security")
    } else if doc.get("security").is_some() {
        "#/security".to_string()
    } else {
        // Neither says anything: the report names the operation.
        shown.clone()
    };
    let requirements = op.get("security").or_else(|| doc.get("security"));
    match cx.schemes.auth(requirements, &security_at, cx.notes) {
        Auth::Public => {
            route.insert("public".into(), json!(true));
        }
        Auth::Unenforceable => return None,
        // `mutualTLS` says "a validated client certificate"; `x-tollgate-peers` (below) narrows
        // it to workloads.
        Auth::Workload => {
            route.insert("peers".into(), json!({"principals": ["*"]}));
        }
        Auth::Credentials {
            providers,
            api_keys,
            scopes,
            mtls,
        } => {
            if mtls {
                route.insert("peers".into(), json!({"principals": ["*"]}));
            }
            if !providers.is_empty() {
                route.insert("providers".into(), json!(providers));
            }
            if !api_keys.is_empty() {
                route.insert("api_keys".into(), json!(true));
            }
            if let Some(s) = scopes {
                route.insert("scopes".into(), s);
            }
            out.providers.extend(providers);
            out.key_places.extend(api_keys);
        }
    }

    let mut request = Map::new();
    parameters(cx, item, op, at, &renamed, &mut request);
    body(cx, op, at, &mut request);
    extensions_request(op, &mut request);
    if !request.is_empty() {
        route.insert("request".into(), Value::Object(request));
    }
    if let Some(response) = responses(cx, op, at) {
        route.insert("response".into(), response);
    }
    if op.get("deprecated") == Some(&Value::Bool(true)) {
        // OpenAPI says that, not since when: deprecated from the start of time, so every
        // response gets the `Deprecation` header. `x-tollgate-lifecycle` or the overlay can date it.
        route.insert(
            "lifecycle".into(),
            json!({"deprecated": "1970-01-01T00:00:00Z"}),
        );
    }
    extensions_route(cx, op, &shown, &mut route);
    // The overlay: by tag (in the operation's order), then by operation id.
    if let Some(tags) = op.get("tags").and_then(Value::as_array) {
        for tag in tags.iter().filter_map(Value::as_str) {
            if let Some(Value::Object(fields)) = cx.overlay.tags.get(tag) {
                merge(&mut route, fields);
            }
        }
    }
    for key in [op_id, Some(name.as_str())].into_iter().flatten() {
        if let Some(Value::Object(fields)) = cx.overlay.operations.get(key) {
            merge(&mut route, fields);
            break;
        }
    }
    Some(Value::Object(route))
}

/// Overlay fields replace the route's; `request` and `response` are merged one level down.
fn merge(route: &mut Map<String, Value>, fields: &Map<String, Value>) {
    for (k, v) in fields {
        match (k.as_str(), route.get_mut(k), v) {
            ("request" | "response", Some(Value::Object(have)), Value::Object(add)) => {
                for (k2, v2) in add {
                    have.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                route.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `x-tollgate-*` extensions of the operation that set request checks.
fn extensions_request(op: &Value, request: &mut Map<String, Value>) {
    if let Some(v) = op.get("x-tollgate-max-body-bytes") {
        if request.contains_key("body") {
            request.insert("max_body_bytes".into(), v.clone());
        }
    }
    if let Some(v) = op.get("x-tollgate-reject-unknown-properties") {
        if request.contains_key("body") {
            request.insert("reject_unknown_properties".into(), v.clone());
        }
    }
}

/// `x-tollgate-*` extensions of the operation that set route fields; an unknown one is an error
/// (a typo would otherwise drop a check silently).
fn extensions_route(cx: &mut Ctx<'_>, op: &Value, at: &str, route: &mut Map<String, Value>) {
    let Some(obj) = op.as_object() else { return };
    for (key, v) in obj {
        let Some(field) = key.strip_prefix("x-tollgate-") else {
            continue;
        };
        let field = field.replace('-', "_");
        match field.as_str() {
            f if ROUTE_FIELDS.contains(&f) => {
                route.insert(field.clone(), v.clone());
            }
            "deprecated" | "sunset" | "successor" => {
                let life = route.entry("lifecycle").or_insert_with(|| json!({}));
                if let Some(l) = life.as_object_mut() {
                    l.insert(field.clone(), v.clone());
                }
            }
            "route"
            | "any_method"
            | "max_body_bytes"
            | "reject_unknown_properties"
            | "response" => {}
            _ => cx.notes.error(
                &format!("{at}/{}", escape(key)),
                &format!(
                    "unknown extension `{key}`; expected one of [{}]",
                    [
                        "owner",
                        "limits",
                        "claims",
                        "mode",
                        "ip-access",
                        "lifecycle",
                        "host",
                        "tls",
                        "peers",
                        "deprecated",
                        "sunset",
                        "successor",
                        "route",
                        "any-method",
                        "max-body-bytes",
                        "reject-unknown-properties",
                        "response"
                    ]
                    .iter()
                    .map(|k| format!("`x-tollgate-{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
                ),
            ),
        }
    }
}

/// The schema's `type` after following `$ref`s (for how a parameter is sent).
fn type_of(cx: &mut Ctx<'_>, schema: &Value, at: &Target) -> Option<String> {
    let (s, _) = cx.r.follow(schema, at).ok()?;
    match s.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .map(String::from),
        _ => None,
    }
}

fn parameters(
    cx: &mut Ctx<'_>,
    item: &Value,
    op: &Value,
    at: &Target,
    renamed: &BTreeMap<String, String>,
    request: &mut Map<String, Value>,
) {
    // Path-item parameters, overridden by the operation's with the same name and location.
    let mut all: BTreeMap<(String, String), (Value, Target)> = BTreeMap::new();
    let item_at = Target {
        file: at.file.clone(),
        pointer: at
            .pointer
            .rsplit_once('/')
            .map_or("", |(p, _)| p)
            .to_string(),
    };
    for (list, list_at) in [
        (item.get("parameters"), item_at.join("parameters")),
        (op.get("parameters"), at.join("parameters")),
    ] {
        let Some(Value::Array(list)) = list else {
            continue;
        };
        for (i, p) in list.iter().enumerate() {
            let here = list_at.join(&i.to_string());
            match cx.r.follow(p, &here) {
                Ok((p, where_)) => {
                    let name = p
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let place = p
                        .get("in")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    all.insert((place, name), (p, where_));
                }
                Err(e) => {
                    let shown = cx.shown(&here);
                    cx.notes.error(&shown, &e);
                }
            }
        }
    }
    let mut params = Map::new();
    let mut query = Map::new();
    let mut headers = Map::new();
    let mut required_query = BTreeSet::new();
    let mut required_headers = BTreeSet::new();
    for ((place, name), (p, p_at)) in all {
        let shown = cx.shown(&p_at);
        let required = p.get("required") == Some(&Value::Bool(true));
        if p.get("content").is_some() {
            cx.notes.unenforced(
                &shown,
                "a parameter described by `content` (a media type) is not checked",
            );
            if required {
                match place.as_str() {
                    "query" => drop(required_query.insert(name.clone())),
                    "header" => drop(required_headers.insert(name.to_ascii_lowercase())),
                    _ => {}
                }
            }
            continue;
        }
        let raw = p.get("schema").cloned();
        let schema_at = p_at.join("schema");
        let kind = match &raw {
            Some(s) => type_of(cx, s, &schema_at),
            None => None,
        };
        let style = p.get("style").and_then(Value::as_str);
        let explode = p.get("explode").and_then(Value::as_bool);
        match place.as_str() {
            "path" => {
                let Some(key) = renamed.get(&name) else {
                    cx.notes.error(
                        &shown,
                        &format!("path parameter `{name}` is not in the path template"),
                    );
                    continue;
                };
                if matches!(kind.as_deref(), Some("array" | "object"))
                    || style.is_some_and(|s| s != "simple")
                {
                    cx.notes.unenforced(&shown, "array, object and non-`simple` path parameters are not checked (only their segment is matched)");
                    continue;
                }
                if let Some(s) = raw {
                    let t = cx.schemas.translate(
                        &s,
                        &schema_at,
                        Use::Request,
                        cx.dialect,
                        cx.r,
                        cx.notes,
                    );
                    params.insert(key.clone(), t);
                }
            }
            "query" => {
                if required {
                    required_query.insert(name.clone());
                }
                let style = style.unwrap_or("form");
                let explode = explode.unwrap_or(style == "form");
                let Some(s) = raw else { continue };
                match (kind.as_deref(), style, explode) {
                    (Some("object"), _, _) | (_, "deepObject", _) => {
                        cx.notes
                            .unenforced(&shown, "object query parameters are not checked");
                    }
                    (Some("array"), "form", true) => {
                        // `?id=1&id=2`: Tollgate checks each occurrence, so against the items.
                        let (arr, arr_at) = match cx.r.follow(&s, &schema_at) {
                            Ok(v) => v,
                            Err(e) => {
                                cx.notes.error(&shown, &e);
                                continue;
                            }
                        };
                        let items = arr.get("items").cloned().unwrap_or(json!({}));
                        let t = cx.schemas.translate(
                            &items,
                            &arr_at.join("items"),
                            Use::Request,
                            cx.dialect,
                            cx.r,
                            cx.notes,
                        );
                        if arr.get("maxItems").is_some()
                            || arr.get("minItems").is_some()
                            || arr.get("uniqueItems").is_some()
                        {
                            cx.notes.unenforced(&shown, "`minItems`, `maxItems` and `uniqueItems` of a repeated query parameter are not checked (each value is)");
                        }
                        query.insert(name.clone(), t);
                    }
                    (Some("array"), _, _) => {
                        cx.notes.unenforced(&shown, &format!("array query parameters in style `{style}` (explode {explode}) are not checked"));
                    }
                    _ if style != "form" => {
                        cx.notes
                            .unenforced(&shown, &format!("query style `{style}` is not checked"));
                    }
                    _ => {
                        let t = cx.schemas.translate(
                            &s,
                            &schema_at,
                            Use::Request,
                            cx.dialect,
                            cx.r,
                            cx.notes,
                        );
                        query.insert(name.clone(), t);
                    }
                }
            }
            "header" => {
                let lower = name.to_ascii_lowercase();
                if matches!(lower.as_str(), "accept" | "content-type" | "authorization") {
                    // OpenAPI: such parameter definitions "SHALL be ignored".
                    continue;
                }
                if lower.contains('_') {
                    cx.notes
                        .unenforced(&shown, &super::security::UNDERSCORE.replace("{}", &lower));
                }
                if required {
                    required_headers.insert(lower.clone());
                }
                let Some(s) = raw else { continue };
                if matches!(kind.as_deref(), Some("array" | "object")) {
                    cx.notes.unenforced(&shown, "array and object headers are not checked (only their presence, when required)");
                    continue;
                }
                let t =
                    cx.schemas
                        .translate(&s, &schema_at, Use::Request, cx.dialect, cx.r, cx.notes);
                headers.insert(lower, t);
            }
            "cookie" => cx
                .notes
                .unenforced(&shown, "cookie parameters are not checked"),
            other => cx
                .notes
                .error(&shown, &format!("unknown parameter location `{other}`")),
        }
    }
    if !params.is_empty() {
        request.insert("params".into(), Value::Object(params));
    }
    if !query.is_empty() {
        request.insert("query".into(), Value::Object(query));
    }
    if !required_query.is_empty() {
        request.insert("required_query".into(), json!(required_query));
    }
    if !headers.is_empty() {
        request.insert("headers".into(), Value::Object(headers));
    }
    if !required_headers.is_empty() {
        request.insert("required_headers".into(), json!(required_headers));
    }
}

/// Whether a media type is JSON as Tollgate reads bodies: `application/json` or `*/*+json`.
fn is_json(media: &str) -> bool {
    let m = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "application/json"
        || m.split_once('/')
            .is_some_and(|(_, sub)| sub.ends_with("+json"))
}

fn body(cx: &mut Ctx<'_>, op: &Value, at: &Target, request: &mut Map<String, Value>) {
    let Some(raw) = op.get("requestBody") else {
        return;
    };
    let body_at = at.join("requestBody");
    let (rb, rb_at) = match cx.r.follow(raw, &body_at) {
        Ok(v) => v,
        Err(e) => {
            let shown = cx.shown(&body_at);
            cx.notes.error(&shown, &e);
            return;
        }
    };
    let shown = cx.shown(&rb_at);
    let Some(Value::Object(content)) = rb.get("content") else {
        return;
    };
    let json_types: Vec<&String> = content.keys().filter(|m| is_json(m)).collect();
    let others: Vec<&String> = content.keys().filter(|m| !is_json(m)).collect();
    let Some(first) = json_types.first() else {
        cx.notes.unenforced(
            &shown,
            &format!(
                "request bodies of media type {} are not checked",
                others
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return;
    };
    if !others.is_empty() {
        cx.notes.unenforced(&shown, &format!("the route checks JSON bodies, so requests with {} are refused (`415 unsupported_media_type`)", others.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")));
    }
    let schemas: Vec<Option<&Value>> = json_types
        .iter()
        .map(|m| content.get(*m).and_then(|c| c.get("schema")))
        .collect();
    if schemas.windows(2).any(|w| w.first() != w.get(1)) {
        cx.notes.unenforced(&shown, &format!("JSON media types with different schemas: every JSON body is checked against `{first}`'s"));
    }
    let media_at = rb_at.join("content").join(first);
    let schema = content
        .get(*first)
        .and_then(|c| c.get("schema"))
        .cloned()
        .unwrap_or(json!({}));
    let t = cx.schemas.translate(
        &schema,
        &media_at.join("schema"),
        Use::Request,
        cx.dialect,
        cx.r,
        cx.notes,
    );
    if rb.get("required") != Some(&Value::Bool(true)) {
        cx.notes.unenforced(&shown, "the request body is optional in the document, but a route with a body schema refuses requests without a JSON body");
    }
    request.insert("body".into(), t);
    request.insert(
        "reject_unknown_properties".into(),
        json!(cx.overlay.reject_unknown_properties),
    );
}

fn responses(cx: &mut Ctx<'_>, op: &Value, at: &Target) -> Option<Value> {
    let mut options = Map::new();
    options.insert("mode".into(), json!(cx.overlay.response_mode));
    if let Some(Value::Object(ext)) = op.get("x-tollgate-response") {
        for (k, v) in ext {
            options.insert(k.clone(), v.clone());
        }
    }
    if options.get("mode").and_then(Value::as_str) == Some("off") {
        return None;
    }
    let Some(Value::Object(codes)) = op.get("responses") else {
        return None;
    };
    let mut schemas = Map::new();
    for (code, raw) in codes {
        let here = at.join("responses").join(code);
        let (resp, resp_at) = match cx.r.follow(raw, &here) {
            Ok(v) => v,
            Err(e) => {
                let shown = cx.shown(&here);
                cx.notes.error(&shown, &e);
                continue;
            }
        };
        let Some(Value::Object(content)) = resp.get("content") else {
            continue;
        };
        let Some(media) = content.keys().find(|m| is_json(m)) else {
            continue;
        };
        let Some(schema) = content.get(media).and_then(|c| c.get("schema")).cloned() else {
            continue;
        };
        if code == "default" {
            let shown = cx.shown(&resp_at);
            cx.notes.unenforced(
                &shown,
                "`default` responses are not checked (Tollgate checks by status and status class)",
            );
            continue;
        }
        let key = code.to_ascii_uppercase();
        let t = cx.schemas.translate(
            &schema,
            &resp_at.join("content").join(media).join("schema"),
            Use::Response,
            cx.dialect,
            cx.r,
            cx.notes,
        );
        schemas.insert(key, t);
    }
    if schemas.is_empty() {
        return None;
    }
    options.insert("schemas".into(), Value::Object(schemas));
    Some(Value::Object(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_come_from_server_urls() {
        for (server, want) in [
            (json!({"url": "https://petstore.swagger.io/v2"}), "/v2"),
            (json!({"url": "https://api.example.com"}), ""),
            (json!({"url": "/api/v3/"}), "/api/v3"),
            (json!({"url": "api"}), "/api"),
            (
                json!({"url": "{scheme}://h/{base}", "variables": {"scheme": {"default": "https"}, "base": {"default": "v1"}}}),
                "/v1",
            ),
            (json!({"url": "https://h/a?x=1"}), "/a"),
        ] {
            assert_eq!(base_path(&server), want, "{server}");
        }
    }

    #[test]
    fn templates_become_policy_paths() {
        let (p, r) = route_path("/v1", "/users/{user-id}/keys/{kid}").unwrap();
        assert_eq!(p, "/v1/users/{user_id}/keys/{kid}");
        assert_eq!(r["user-id"], "user_id");
        assert_eq!(route_path("", "/").unwrap().0, "/");
        assert!(route_path("", "/files/{name}.json").is_err());
        assert!(route_path("", "/a/{{x}}").is_err());
    }

    #[test]
    fn names_derive_from_method_and_path() {
        assert_eq!(derived_name("get", "/v1/users/{id}"), "get-v1-users-id");
        assert_eq!(derived_name("post", "/"), "post");
    }

    #[test]
    fn json_media_types() {
        for m in [
            "application/json",
            "application/merge-patch+json",
            "Application/JSON; charset=utf-8",
        ] {
            assert!(is_json(m), "{m}");
        }
        for m in [
            "text/plain",
            "application/xml",
            "multipart/form-data",
            "application/jsonx",
        ] {
            assert!(!is_json(m), "{m}");
        }
    }

    #[test]
    fn exported_method_splits_merge_back() {
        let mut routes = vec![
            json!({"name": "r", "path": "/a", "methods": ["GET"], "public": true}),
            json!({"name": "r", "path": "/a", "methods": ["POST"], "public": true}),
            json!({"name": "s", "path": "/b", "methods": ["GET"], "public": true}),
        ];
        merge_exported(&mut routes);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["methods"], json!(["GET", "POST"]));
    }
}
