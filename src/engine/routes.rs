//! The route table: the API's inventory. Compiled once into per-host tables; each table answers
//! with an exact-path hash lookup, then a segment trie for templates (`/orders/{id}`), then
//! prefixes. Matching cost grows with the path's depth, not with the number of routes, for exact
//! and template paths.
//!
//! Most specific wins:
//! 1. routes for the request's host before host-less routes;
//! 2. an exact path before a template, a template before a prefix;
//! 3. between templates, a literal segment beats a parameter at the first position they differ;
//! 4. between prefixes, the longest;
//! 5. among equals, the first listed in the policy whose `methods` allow the request.

use super::authz::Rules;
use crate::policy::{ConfigError, RouteDoc, RouteLimitDoc};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Credentials accepted: tokens of these providers (indices), and API keys when `api_keys`.
    Authenticated {
        providers: Vec<usize>,
        api_keys: bool,
        /// Signers (indices) whose signed requests are accepted.
        signers: Vec<usize>,
    },
    /// Only the workload's verified client certificate (`peers` without `providers` or
    /// `api_keys`): the caller is `mtls:<identity>`.
    Workload,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// Uppercase methods; empty means any.
    methods: Vec<String>,
    pub access: Access,
    pub rules: Rules,
    /// Names of the template's parameters, in path order.
    params: Vec<String>,
    /// `(limit index, cost)`, checked in order.
    pub limits: Vec<(usize, u64)>,
    /// Index into `RouteTable::request_rules`.
    pub request: Option<usize>,
    /// Index into `RouteTable::response_rules`.
    pub response: Option<usize>,
    /// The route's own `mode`; `None` follows the policy's.
    pub mode: Option<super::decision::Mode>,
    /// The route's own IP list, checked after the global one.
    pub ip_access: Option<crate::abuse::cidr::IpList>,
    pub lifecycle: Option<super::lifecycle::Lifecycle>,
    /// The route's own `tls`, else the policy's.
    pub tls: super::peer::TlsRules,
    /// The workloads accepted by their client certificate.
    pub peers: Option<super::peer::PeerRules>,
}

impl Route {
    fn allows(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

/// A matched route with its decoded path parameters.
pub struct Matched<'a> {
    pub route: &'a Route,
    /// The route's position in the policy's `routes` ([`RouteTable::get`]).
    pub index: usize,
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<String, Node>,
    param: Option<Box<Node>>,
    routes: Vec<usize>,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Vec<usize>>,
    templates: Node,
    /// `(prefix, route)`, longest first; ties keep policy order.
    prefixes: Vec<(String, usize)>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Compiled request checks, referenced by `Route::request`.
    pub request_rules: Vec<crate::payload::RequestRules>,
    /// Compiled response checks, referenced by `Route::response`.
    pub response_rules: Vec<crate::payload::response::ResponseRules>,
    hosts: HashMap<String, Table>,
    any_host: Table,
}

enum Shape {
    Exact(String),
    Template(Vec<Option<String>>),
    Prefix(String),
}

/// Splits `/a/{x}/b` into `[Some("a"), None, Some("b")]` and the parameter names.
fn parse_template(path: &str) -> Result<(Vec<Option<String>>, Vec<String>), String> {
    let mut segs = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for seg in path.split('/').skip(1) {
        if seg.contains(['{', '}']) {
            let name = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .ok_or_else(|| format!("segment `{seg}` must be a literal or a whole `{{name}}` (letters, digits, `_`)"))?;
            if names.iter().any(|n| n == name) {
                return Err(format!("parameter `{name}` appears twice"));
            }
            names.push(name.to_string());
            segs.push(None);
        } else {
            segs.push(Some(seg.to_string()));
        }
    }
    Ok((segs, names))
}

fn match_trie<'p>(
    node: &Node,
    segs: &[&'p str],
    routes: &[Route],
    method: &str,
    values: &mut Vec<&'p str>,
) -> Option<usize> {
    let Some((first, rest)) = segs.split_first() else {
        return node
            .routes
            .iter()
            .copied()
            .find(|i| routes.get(*i).is_some_and(|r| r.allows(method)));
    };
    if let Some(child) = node.literal.get(*first) {
        if let Some(found) = match_trie(child, rest, routes, method, values) {
            return Some(found);
        }
    }
    if let Some(child) = &node.param {
        if !first.is_empty() {
            values.push(first);
            if let Some(found) = match_trie(child, rest, routes, method, values) {
                return Some(found);
            }
            values.pop();
        }
    }
    None
}

impl Table {
    fn find(&self, routes: &[Route], method: &str, path: &str) -> Option<(usize, Vec<String>)> {
        let allowed = |i: &usize| routes.get(*i).is_some_and(|r| r.allows(method));
        if let Some(i) = self
            .exact
            .get(path)
            .and_then(|ids| ids.iter().copied().find(allowed))
        {
            return Some((i, vec![]));
        }
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        let mut values = Vec::new();
        if let Some(i) = match_trie(&self.templates, &segs, routes, method, &mut values) {
            // A value that is not UTF-8 matches nothing (see `decode_param`).
            let values = values
                .into_iter()
                .map(super::path::decode_param)
                .collect::<Option<Vec<_>>>()?;
            return Some((i, values));
        }
        self.prefixes
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, i)| *i)
            .find(allowed)
            .map(|i| (i, vec![]))
    }
}

impl RouteTable {
    /// Whether any route asks something of the connection (TLS, a client certificate, workloads).
    pub fn any_connection_rules(&self) -> bool {
        self.routes
            .iter()
            .any(|r| !r.tls.is_empty() || r.peers.is_some())
    }

    /// Whether any route has its own IP list.
    pub fn any_ip_access(&self) -> bool {
        self.routes.iter().any(|r| r.ip_access.is_some())
    }

    // One argument per section of the policy that routes refer to by name.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        docs: &[RouteDoc],
        providers: &BTreeMap<String, usize>,
        limit_ids: &BTreeMap<String, (usize, u64)>,
        payload: &crate::payload::Compiler<'_>,
        api_keys_configured: bool,
        signer_ids: &BTreeMap<String, usize>,
        tls: super::peer::TlsRules,
        errors: &mut Vec<ConfigError>,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut seen: HashMap<(Option<String>, String, String), usize> = HashMap::new();
        if docs.is_empty() {
            errors.push(ConfigError::new(
                "routes",
                "at least one route is required; requests that match no route are refused",
            ));
        }
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("routes[{i}]");
            let start = errors.len();
            let (field, text) = match (&doc.path, &doc.prefix) {
                (Some(p), None) => ("path", p.clone()),
                (None, Some(p)) => ("prefix", p.clone()),
                (a, b) => {
                    let found = usize::from(a.is_some()) + usize::from(b.is_some());
                    errors.push(ConfigError::new(
                        &at,
                        format!("a route needs exactly one of `path`, `prefix`; found {found}"),
                    ));
                    continue;
                }
            };
            if !text.starts_with('/')
                || text.contains(['?', '#', '%', '\\'])
                || text.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                errors.push(ConfigError::new(
                    format!("{at}.{field}"),
                    format!("`{text}` is not a path; expected it to start with `/` and hold no query, fragment, `%`, `\\`, space or control character"),
                ));
            } else if super::path::normalize(&text).as_deref() != Some(text.as_str()) {
                errors.push(ConfigError::new(
                    format!("{at}.{field}"),
                    format!("`{text}` is not in normal form (no `//`, `.` or `..` segments); requests are matched after normalisation, so it could never match"),
                ));
            }
            let mut params = Vec::new();
            let shape = if field == "prefix" {
                if text.contains(['{', '}']) {
                    errors.push(ConfigError::new(
                        format!("{at}.prefix"),
                        "a prefix cannot hold `{parameters}`; use `path` for templates",
                    ));
                }
                Shape::Prefix(text.clone())
            } else if text.contains(['{', '}']) {
                match parse_template(&text) {
                    Ok((segs, names)) => {
                        params = names;
                        Shape::Template(segs)
                    }
                    Err(e) => {
                        errors.push(ConfigError::new(format!("{at}.path"), e));
                        continue;
                    }
                }
            } else {
                Shape::Exact(text.clone())
            };
            for (j, m) in doc.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    errors.push(ConfigError::new(
                        format!("{at}.methods[{j}]"),
                        format!("`{m}` is not a method; expected an uppercase token such as `GET`"),
                    ));
                }
            }
            // Stored as requests are matched: lowercase, no trailing dot.
            let host = doc.host.as_ref().map(|h| {
                let h = h.to_ascii_lowercase();
                h.strip_suffix('.').map(str::to_string).unwrap_or(h)
            });
            if let Some(h) = &host {
                if h.is_empty()
                    || h.contains(':')
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    errors.push(ConfigError::new(
                        format!("{at}.host"),
                        format!("`{h}` is not a host name (no port, no scheme)"),
                    ));
                }
            }
            let authenticated =
                !doc.providers.is_empty() || doc.api_keys || !doc.signers.is_empty();
            let peers = doc
                .peers
                .as_ref()
                .map(|p| super::peer::PeerRules::compile(p, &format!("{at}.peers"), errors));
            let access = match (doc.public, authenticated) {
                (true, false) if peers.is_some() => {
                    errors.push(ConfigError::new(&at, "a route is either `public: true` or accepts workloads (`peers`), not both; `peers` alone lets the listed workloads call without a token"));
                    continue;
                }
                (true, false) => Access::Public,
                (false, false) if peers.is_some() => Access::Workload,
                (false, true) => {
                    let mut ids = Vec::new();
                    for (j, p) in doc.providers.iter().enumerate() {
                        match providers.get(p) {
                            Some(id) if !ids.contains(id) => ids.push(*id),
                            Some(_) => errors.push(ConfigError::new(
                                format!("{at}.providers[{j}]"),
                                format!("provider `{p}` is listed twice"),
                            )),
                            None => errors.push(ConfigError::new(
                                format!("{at}.providers[{j}]"),
                                format!(
                                    "unknown provider `{p}`; expected one of [{}]",
                                    providers
                                        .keys()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )),
                        }
                    }
                    if doc.api_keys && !api_keys_configured {
                        errors.push(ConfigError::new(
                            format!("{at}.api_keys"),
                            "the policy has no top-level `api_keys` section",
                        ));
                    }
                    let mut signers = Vec::new();
                    for (j, s) in doc.signers.iter().enumerate() {
                        match signer_ids.get(s) {
                            Some(id) if !signers.contains(id) => signers.push(*id),
                            Some(_) => errors.push(ConfigError::new(
                                format!("{at}.signers[{j}]"),
                                format!("signer `{s}` is listed twice"),
                            )),
                            None => errors.push(ConfigError::new(
                                format!("{at}.signers[{j}]"),
                                format!(
                                    "unknown signer `{s}`; expected one of [{}]",
                                    signer_ids
                                        .keys()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )),
                        }
                    }
                    Access::Authenticated {
                        providers: ids,
                        api_keys: doc.api_keys,
                        signers,
                    }
                }
                (true, true) => {
                    errors.push(ConfigError::new(&at, "a route is either `public: true` or accepts credentials (`providers`, `api_keys`, `signers`), not both"));
                    continue;
                }
                (false, false) => {
                    errors.push(ConfigError::new(&at, "route has no authentication; list `providers` or `signers`, set `api_keys: true`, name `peers`, or say `public: true` explicitly"));
                    continue;
                }
            };
            let rules = Rules::compile(
                doc.scopes.as_ref(),
                doc.claims.as_ref(),
                doc.owner.as_ref(),
                &params,
                &at,
                errors,
            );
            if access == Access::Public && !rules.is_empty() {
                errors.push(ConfigError::new(
                    &at,
                    "a public route cannot require scopes, claims or an owner",
                ));
            }
            let signers_only = matches!(&access, Access::Authenticated { providers, api_keys: false, signers } if providers.is_empty() && !signers.is_empty());
            if signers_only && !rules.is_empty() {
                errors.push(ConfigError::new(
                    &at,
                    "scopes, claims and an owner are read from a token or API key; a signed request carries none: add `providers` or `api_keys`",
                ));
            }
            if access == Access::Workload && !rules.is_empty() {
                errors.push(ConfigError::new(
                    &at,
                    "scopes, claims and an owner are read from a token or API key; a client certificate carries none: add `providers` or `api_keys` to require both",
                ));
            }
            let route_tls = match &doc.tls {
                Some(d) => super::peer::TlsRules::compile(d, &format!("{at}.tls"), errors),
                None => tls,
            };
            let mut limits = Vec::new();
            for (j, l) in doc.limits.iter().enumerate() {
                let (name, cost) = match l {
                    RouteLimitDoc::Name(n) => (n, 1),
                    RouteLimitDoc::WithCost { limit, cost } => (limit, *cost),
                };
                match limit_ids.get(name) {
                    Some((id, burst)) => {
                        if cost == 0 || cost > *burst {
                            errors.push(ConfigError::new(
                                format!("{at}.limits[{j}].cost"),
                                format!("{cost} is out of range; expected 1 to the limit's burst ({burst})"),
                            ));
                        }
                        limits.push((*id, cost));
                    }
                    None => errors.push(ConfigError::new(
                        format!("{at}.limits[{j}]"),
                        format!(
                            "unknown limit `{name}`; expected one of [{}]",
                            limit_ids
                                .keys()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
            let request_rules = doc
                .request
                .as_ref()
                .map(|r| payload.compile(r, &params, &at, errors));
            let response_rules = doc
                .response
                .as_ref()
                .map(|r| payload.compile_response(r, &at, errors));
            let mode = doc.mode.as_deref().and_then(|m| {
                let parsed = super::decision::Mode::parse(m);
                if parsed.is_none() {
                    errors.push(ConfigError::new(
                        format!("{at}.mode"),
                        format!("`{m}` is not a mode; expected one of [`enforce`, `dry-run`]"),
                    ));
                }
                parsed
            });
            let ip_access = doc.ip_access.as_ref().map(|d| {
                crate::abuse::cidr::IpList::compile(d, &format!("{at}.ip_access"), errors)
            });
            let lifecycle = doc
                .lifecycle
                .as_ref()
                .and_then(|d| super::lifecycle::Lifecycle::compile(d, &at, errors));
            let name = doc.name.clone().unwrap_or_else(|| at.clone());
            if let Some(other) = names.insert(name.clone(), i) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("`{name}` is already the name of routes[{other}]"),
                ));
            }
            let shape_key = match &shape {
                Shape::Exact(p) => format!("path {p}"),
                Shape::Template(segs) => format!(
                    "path {}",
                    segs.iter()
                        .map(|s| s.as_deref().unwrap_or("{}"))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                Shape::Prefix(p) => format!("prefix {p}"),
            };
            let methods_key = if doc.methods.is_empty() {
                vec!["*".to_string()]
            } else {
                doc.methods.clone()
            };
            for m in &methods_key {
                if let Some(other) = seen.insert((host.clone(), shape_key.clone(), m.clone()), i) {
                    errors.push(ConfigError::new(&at, format!("same host, {field} and method `{m}` as routes[{other}]; the later route could never match")));
                }
            }
            if errors.len() > start {
                continue;
            }
            let index = table.routes.len();
            let t = match &host {
                Some(h) => table.hosts.entry(h.clone()).or_default(),
                None => &mut table.any_host,
            };
            match shape {
                Shape::Exact(p) => t.exact.entry(p).or_default().push(index),
                Shape::Prefix(p) => t.prefixes.push((p, index)),
                Shape::Template(segs) => {
                    let mut node = &mut t.templates;
                    for seg in segs {
                        node = match seg {
                            Some(lit) => node.literal.entry(lit).or_default(),
                            None => node.param.get_or_insert_with(Box::default),
                        };
                    }
                    node.routes.push(index);
                }
            }
            let request = request_rules.map(|r| {
                table.request_rules.push(r);
                table.request_rules.len() - 1
            });
            let response = response_rules.map(|r| {
                table.response_rules.push(r);
                table.response_rules.len() - 1
            });
            table.routes.push(Route {
                mode,
                ip_access,
                lifecycle,
                response,
                request,
                name,
                methods: doc.methods.clone(),
                access,
                rules,
                params,
                limits,
                tls: route_tls,
                peers,
            });
        }
        for t in table
            .hosts
            .values_mut()
            .chain(std::iter::once(&mut table.any_host))
        {
            t.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        }
        table
    }

    /// The most specific route for a normalised `host` (see [`super::request::normalize_host`]),
    /// `method` and a normalised `path`.
    pub fn find(&self, host: &str, method: &str, path: &str) -> Option<Matched<'_>> {
        let by_host = if self.hosts.is_empty() {
            None
        } else {
            self.hosts.get(host)
        };
        let (index, values) = by_host
            .and_then(|t| t.find(&self.routes, method, path))
            .or_else(|| self.any_host.find(&self.routes, method, path))?;
        let route = self.routes.get(index)?;
        let params = route.params.iter().cloned().zip(values).collect();
        Some(Matched {
            route,
            index,
            params,
        })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// The route at `index` in the policy's `routes`.
    // INVARIANT: a table is only used when every route of the document compiled, each pushed in
    // document order, so `index` is also the route's index in `PolicyDoc::routes`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes in the policy's order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn compile(routes: serde_json::Value) -> (RouteTable, Vec<ConfigError>) {
        let docs: Vec<RouteDoc> = serde_json::from_value(routes).unwrap();
        let providers: BTreeMap<String, usize> =
            [("corp".to_string(), 0), ("partner".to_string(), 1)].into();
        let mut errors = vec![];
        let schemas = BTreeMap::new();
        let options = crate::payload::Options::compile(None, &mut errors);
        let payload = crate::payload::Compiler {
            schemas: &schemas,
            options: &options,
        };
        let t = RouteTable::compile(
            &docs,
            &providers,
            &BTreeMap::new(),
            &payload,
            true,
            &BTreeMap::new(),
            Default::default(),
            &mut errors,
        );
        (t, errors)
    }

    fn name(
        t: &RouteTable,
        host: &str,
        method: &str,
        path: &str,
    ) -> Option<(String, Vec<(String, String)>)> {
        let host = crate::engine::request::normalize_host(host).ok()?;
        t.find(&host, method, path)
            .map(|m| (m.route.name.clone(), m.params))
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn most_specific_wins() {
        let (t, errors) = compile(json!([
            {"name": "root", "prefix": "/", "providers": ["corp"]},
            {"name": "api", "prefix": "/api/", "providers": ["corp"]},
            {"name": "admin-get", "prefix": "/api/admin/", "methods": ["GET"], "providers": ["partner"]},
            {"name": "status", "path": "/api/admin/status", "methods": ["GET"], "public": true},
            {"name": "health", "path": "/health", "methods": ["GET", "HEAD"], "public": true},
            {"name": "order", "path": "/orders/{id}", "providers": ["corp"]},
            {"name": "order-items", "path": "/orders/{id}/items/{item}", "providers": ["corp"]},
            {"name": "order-summary", "path": "/orders/summary", "methods": ["GET"], "providers": ["corp"]},
            {"name": "user-keys", "path": "/users/{uid}/keys/{kid}", "providers": ["corp"]},
            {"name": "user-me", "path": "/users/me/keys/{kid}", "providers": ["corp"]},
            {"name": "host-health", "path": "/health", "host": "internal.example", "public": true},
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let n = |m, p| name(&t, "api.example", m, p).map(|(n, _)| n);
        assert_eq!(n("GET", "/health").as_deref(), Some("health"));
        assert_eq!(
            name(&t, "Internal.Example:8443", "POST", "/health")
                .unwrap()
                .0,
            "host-health"
        );
        assert_eq!(
            n("POST", "/health").as_deref(),
            Some("root"),
            "falls back to the `/` prefix"
        );
        assert_eq!(n("GET", "/api/admin/status").as_deref(), Some("status"));
        assert_eq!(n("GET", "/api/admin/x").as_deref(), Some("admin-get"));
        assert_eq!(n("POST", "/api/admin/x").as_deref(), Some("api"));
        assert_eq!(
            n("GET", "/orders/summary").as_deref(),
            Some("order-summary")
        );
        assert_eq!(
            name(&t, "h", "POST", "/orders/summary").unwrap(),
            ("order".into(), vec![("id".into(), "summary".into())])
        );
        assert_eq!(
            name(&t, "h", "GET", "/orders/42").unwrap(),
            ("order".into(), vec![("id".into(), "42".into())])
        );
        assert_eq!(
            name(&t, "h", "GET", "/orders/4%32/items/x").unwrap().1,
            vec![("id".into(), "42".into()), ("item".into(), "x".into())]
        );
        assert_eq!(
            n("GET", "/orders/42/").as_deref(),
            Some("root"),
            "trailing slash is significant"
        );
        assert_eq!(
            n("GET", "/users/me/keys/k1").as_deref(),
            Some("user-me"),
            "literal beats parameter"
        );
        assert_eq!(
            name(&t, "h", "GET", "/users/u1/keys/k1").unwrap().1,
            vec![("uid".into(), "u1".into()), ("kid".into(), "k1".into())]
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_is_none() {
        let (t, _) = compile(
            json!([{"path": "/health", "methods": ["GET"], "public": true}, {"path": "/o/{id}", "public": true}]),
        );
        assert!(name(&t, "h", "GET", "/healthz").is_none());
        assert!(name(&t, "h", "DELETE", "/health").is_none());
        assert!(name(&t, "h", "GET", "/").is_none());
        assert!(name(&t, "h", "GET", "/o/").is_none(), "empty parameter");
        assert!(name(&t, "h", "GET", "/o/1/2").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn errors_name_the_field() {
        let (_, errors) = compile(json!([
            {"public": true},
            {"path": "health", "public": true},
            {"path": "/a", "methods": ["get"], "public": true},
            {"path": "/b", "providers": ["auth0"]},
            {"path": "/c"},
            {"path": "/d", "public": true, "providers": ["corp"]},
            {"path": "/e", "methods": ["GET"], "public": true},
            {"name": "routes[6]", "path": "/e", "methods": ["GET"], "public": true},
            {"path": "/f/{x}/{x}", "public": true},
            {"path": "/g/a{x}", "public": true},
            {"path": "/h//x", "public": true},
            {"prefix": "/i/{x}", "public": true},
            {"path": "/j/{id}", "providers": ["corp"], "owner": {"param": "uid"}},
            {"path": "/k", "public": true, "scopes": {"all": ["a"]}},
            {"path": "/l/{a}", "public": true},
            {"path": "/l/{b}", "public": true},
            {"path": "/m", "host": "a.example:80", "public": true},
        ]));
        let got: Vec<(String, String)> = errors
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect();
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0]",
                "routes[1].path",
                "routes[2].methods[0]",
                "routes[3].providers[0]",
                "routes[4]",
                "routes[5]",
                "routes[7].name",
                "routes[7]",
                "routes[8].path",
                "routes[9].path",
                "routes[10].path",
                "routes[11].prefix",
                "routes[12].owner.param",
                "routes[13]",
                "routes[15]",
                "routes[16].host"
            ],
            "{got:#?}"
        );
        assert_eq!(
            got[3].1,
            "unknown provider `auth0`; expected one of [`corp`, `partner`]"
        );
        assert!(
            got[12].1.contains("expected one of [`id`]"),
            "{}",
            got[12].1
        );
    }
}
