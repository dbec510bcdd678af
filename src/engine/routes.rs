//! The route table: which paths and methods exist and who may call them. Exact paths are a hash
//! lookup; prefixes are tried longest first, so the most specific route wins. Anything else is
//! unknown and refused by the engine.

use crate::policy::{ConfigError, RouteDoc};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Indices of the providers whose tokens the route accepts.
    Jwt(Vec<usize>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    /// Uppercase methods; empty means any.
    methods: Vec<String>,
    pub access: Access,
}

impl Route {
    fn allows(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    /// `(prefix, route index)`, longest prefix first; ties keep policy order.
    prefixes: Vec<(String, usize)>,
}

impl RouteTable {
    pub fn compile(
        docs: &[RouteDoc],
        providers: &BTreeMap<String, usize>,
        errors: &mut Vec<ConfigError>,
    ) -> RouteTable {
        let mut table = RouteTable::default();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut seen: HashMap<(PathMatch, String), usize> = HashMap::new();
        if docs.is_empty() {
            errors.push(ConfigError::new(
                "routes",
                "at least one route is required; requests that match no route are refused",
            ));
        }
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("routes[{i}]");
            let start = errors.len();
            let path = match (&doc.path, &doc.prefix) {
                (Some(p), None) => PathMatch::Exact(p.clone()),
                (None, Some(p)) => PathMatch::Prefix(p.clone()),
                (a, b) => {
                    let found = usize::from(a.is_some()) + usize::from(b.is_some());
                    errors.push(ConfigError::new(
                        &at,
                        format!("a route needs exactly one of `path`, `prefix`; found {found}"),
                    ));
                    continue;
                }
            };
            let (field, text) = match &path {
                PathMatch::Exact(p) => ("path", p),
                PathMatch::Prefix(p) => ("prefix", p),
            };
            if !text.starts_with('/')
                || text.contains(['?', '#'])
                || text.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                errors.push(ConfigError::new(
                    format!("{at}.{field}"),
                    format!("`{text}` is not a path; expected it to start with `/` and hold no query, fragment, space or control character"),
                ));
            }
            for (j, m) in doc.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    errors.push(ConfigError::new(
                        format!("{at}.methods[{j}]"),
                        format!("`{m}` is not a method; expected an uppercase token such as `GET`"),
                    ));
                }
            }
            let access = match (doc.public, doc.providers.is_empty()) {
                (true, true) => Access::Public,
                (false, false) => {
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
                    Access::Jwt(ids)
                }
                (true, false) => {
                    errors.push(ConfigError::new(
                        &at,
                        "a route is either `public: true` or lists `providers`, not both",
                    ));
                    continue;
                }
                (false, true) => {
                    errors.push(ConfigError::new(
                        &at,
                        "route has no authentication; list `providers` or say `public: true` explicitly",
                    ));
                    continue;
                }
            };
            let name = doc.name.clone().unwrap_or_else(|| at.clone());
            if let Some(other) = names.insert(name.clone(), i) {
                errors.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("`{name}` is already the name of routes[{other}]"),
                ));
            }
            let methods_key = if doc.methods.is_empty() {
                vec!["*".to_string()]
            } else {
                doc.methods.clone()
            };
            for m in &methods_key {
                if let Some(other) = seen.insert((path.clone(), m.clone()), i) {
                    errors.push(ConfigError::new(
                        &at,
                        format!("same {field} and method `{m}` as routes[{other}]; the later route could never match"),
                    ));
                }
            }
            if errors.len() > start {
                continue;
            }
            let index = table.routes.len();
            match &path {
                PathMatch::Exact(p) => table.exact.entry(p.clone()).or_default().push(index),
                PathMatch::Prefix(p) => table.prefixes.push((p.clone(), index)),
            }
            table.routes.push(Route {
                name,
                methods: doc.methods.clone(),
                access,
            });
        }
        // Stable sort: equal lengths keep policy order.
        table.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        table
    }

    /// The most specific route for `method` and `path` (query already removed): an exact path
    /// beats any prefix, a longer prefix beats a shorter one, and among equals the first listed
    /// that allows the method wins.
    pub fn find(&self, method: &str, path: &str) -> Option<&Route> {
        if let Some(ids) = self.exact.get(path) {
            if let Some(r) = ids
                .iter()
                .filter_map(|i| self.routes.get(*i))
                .find(|r| r.allows(method))
            {
                return Some(r);
            }
        }
        self.prefixes
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .filter_map(|(_, i)| self.routes.get(*i))
            .find(|r| r.allows(method))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn route(
        path: Option<&str>,
        prefix: Option<&str>,
        methods: &[&str],
        public: bool,
        providers: &[&str],
    ) -> RouteDoc {
        RouteDoc {
            name: None,
            path: path.map(Into::into),
            prefix: prefix.map(Into::into),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            public,
            providers: providers.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn providers() -> BTreeMap<String, usize> {
        [("corp".to_string(), 0), ("partner".to_string(), 1)].into()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn most_specific_wins() {
        let docs = vec![
            route(None, Some("/"), &[], false, &["corp"]),
            route(None, Some("/api/"), &[], false, &["corp"]),
            route(None, Some("/api/admin/"), &["GET"], false, &["partner"]),
            route(Some("/api/admin/status"), None, &["GET"], true, &[]),
            route(Some("/health"), None, &["GET", "HEAD"], true, &[]),
        ];
        let mut errors = vec![];
        let t = RouteTable::compile(&docs, &providers(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let name = |m, p| t.find(m, p).map(|r| r.name.clone());
        assert_eq!(name("GET", "/health").as_deref(), Some("routes[4]"));
        assert_eq!(
            name("POST", "/health").as_deref(),
            Some("routes[0]"),
            "falls back to the `/` prefix"
        );
        assert_eq!(
            name("GET", "/api/admin/status").as_deref(),
            Some("routes[3]")
        );
        assert_eq!(name("GET", "/api/admin/x").as_deref(), Some("routes[2]"));
        assert_eq!(name("POST", "/api/admin/x").as_deref(), Some("routes[1]"));
        assert_eq!(name("GET", "/api/x").as_deref(), Some("routes[1]"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn unknown_is_none() {
        let docs = vec![route(Some("/health"), None, &["GET"], true, &[])];
        let mut errors = vec![];
        let t = RouteTable::compile(&docs, &providers(), &mut errors);
        assert!(t.find("GET", "/healthz").is_none());
        assert!(t.find("DELETE", "/health").is_none());
        assert!(t.find("GET", "/").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn errors_name_the_field() {
        let docs = vec![
            route(None, None, &[], true, &[]),
            route(Some("health"), None, &[], true, &[]),
            route(Some("/a"), None, &["get"], true, &[]),
            route(Some("/b"), None, &[], false, &["auth0"]),
            route(Some("/c"), None, &[], false, &[]),
            route(Some("/d"), None, &[], true, &["corp"]),
            route(Some("/e"), None, &["GET"], true, &[]),
            RouteDoc {
                name: Some("routes[6]".into()),
                ..route(Some("/e"), None, &["GET"], true, &[])
            },
        ];
        let mut errors = vec![];
        RouteTable::compile(&docs, &providers(), &mut errors);
        let got: Vec<(String, String)> = errors
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect();
        assert_eq!(got.len(), 8, "{got:#?}");
        assert_eq!(got[0].0, "routes[0]");
        assert_eq!(got[1].0, "routes[1].path");
        assert_eq!(got[2].0, "routes[2].methods[0]");
        assert_eq!(
            got[3],
            (
                "routes[3].providers[0]".into(),
                "unknown provider `auth0`; expected one of [`corp`, `partner`]".into()
            )
        );
        assert!(got[4].1.contains("no authentication"));
        assert!(got[5].1.contains("not both"));
        assert_eq!(got[6].0, "routes[7].name");
        assert!(got[7].1.contains("could never match"));
    }
}
