//! Where a token is read from: a header (with a prefix such as `Bearer `), a query parameter or a
//! cookie. Every occurrence is returned so that a request carrying two tokens can be refused.

use crate::engine::request::{query_pairs, Request};
use crate::policy::{ConfigError, SourceDoc};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Lowercase header name; prefix compared case-insensitively (`Bearer` / `bearer`).
    Header {
        name: String,
        prefix: String,
    },
    Query(String),
    Cookie(String),
}

/// `Authorization: Bearer <token>` (RFC 6750 section 2.1).
pub fn default_sources() -> Vec<Source> {
    vec![Source::Header {
        name: "authorization".into(),
        prefix: "Bearer ".into(),
    }]
}

impl Source {
    pub fn compile(doc: &SourceDoc, path: &str, errors: &mut Vec<ConfigError>) -> Option<Source> {
        let given = [
            doc.header.is_some(),
            doc.query.is_some(),
            doc.cookie.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            errors.push(ConfigError::new(
                path,
                format!("a source needs exactly one of `header`, `query`, `cookie`; found {given}"),
            ));
            return None;
        }
        if doc.prefix.is_some() && doc.header.is_none() {
            errors.push(ConfigError::new(
                format!("{path}.prefix"),
                "`prefix` applies to `header` sources only",
            ));
            return None;
        }
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        let (field, name) = match (&doc.header, &doc.query, &doc.cookie) {
            (Some(h), _, _) => ("header", h),
            (_, Some(q), _) => ("query", q),
            (_, _, Some(c)) => ("cookie", c),
            _ => return None,
        };
        if !valid_name(name) || (field == "header" && name.starts_with(':')) {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                format!("`{name}` is not a valid {field} name"),
            ));
            return None;
        }
        Some(match field {
            "header" => Source::Header {
                name: name.to_ascii_lowercase(),
                prefix: doc.prefix.clone().unwrap_or_default(),
            },
            "query" => Source::Query(name.clone()),
            _ => Source::Cookie(name.clone()),
        })
    }

    /// Every token this source finds in the request.
    pub fn find<'r>(&self, req: &Request<'r>, out: &mut Vec<&'r str>) {
        match self {
            Source::Header { name, prefix } => {
                // Envoy may join repeated headers with `,`; a JWT never contains one, so each
                // comma-separated part is a separate credential.
                for value in req.header_values(name).flat_map(|v| v.split(',')) {
                    let value = value.trim();
                    let Some(head) = value.get(..prefix.len()) else {
                        continue;
                    };
                    let token = value.get(prefix.len()..).unwrap_or("").trim();
                    if head.eq_ignore_ascii_case(prefix) && !token.is_empty() {
                        out.push(token);
                    }
                }
            }
            Source::Query(name) => {
                for (k, v) in query_pairs(req.path) {
                    // An empty value is no credential (`?access_token=`).
                    if k == name.as_str() && !v.is_empty() {
                        out.push(v);
                    }
                }
            }
            Source::Cookie(name) => {
                for header in req.header_values("cookie") {
                    for (k, v) in cookie_pairs(header) {
                        if k == name.as_str() && !v.is_empty() {
                            out.push(v);
                        }
                    }
                }
            }
        }
    }
}

fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        Some((k.trim(), v.trim().trim_matches('"')))
    })
}

/// The request path with query parameter `name` removed (used when the token must not reach the
/// upstream).
pub fn strip_query(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split_once('=').map_or(*p, |(k, _)| k) != name)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// A `cookie` header value with cookie `name` removed; `None` when nothing is left.
pub fn strip_cookie(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').map_or(*c, |(k, _)| k.trim()) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn req<'a>(path: &'a str, headers: &'a [(String, String)]) -> Request<'a> {
        Request {
            method: "GET",
            path,
            headers,
            peer: None,
            connection: None,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn found(source: &Source, r: &Request<'_>) -> Vec<String> {
        let mut out = vec![];
        source.find(r, &mut out);
        out.into_iter().map(String::from).collect()
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bearer_header() {
        let s = &default_sources()[0];
        let hs = h(&[("authorization", "Bearer abc.def.ghi")]);
        assert_eq!(found(s, &req("/", &hs)), ["abc.def.ghi"]);
        let hs = h(&[("authorization", "bearer   abc ")]);
        assert_eq!(found(s, &req("/", &hs)), ["abc"]);
        let hs = h(&[("authorization", "Basic dXNlcg==")]);
        assert!(found(s, &req("/", &hs)).is_empty());
        let hs = h(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(found(s, &req("/", &hs)), ["a", "b"]);
        let hs = h(&[("authorization", "Bearer a, Bearer b")]);
        assert_eq!(found(s, &req("/", &hs)), ["a", "b"]);
        let hs = h(&[("authorization", "Bearer")]);
        assert!(
            found(s, &req("/", &hs)).is_empty(),
            "no space, no prefix match"
        );
        let hs = h(&[("authorization", "Bearer ")]);
        assert!(
            found(s, &req("/", &hs)).is_empty(),
            "trimmed value is shorter than the prefix"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_and_cookie() {
        let q = Source::Query("access_token".into());
        assert_eq!(found(&q, &req("/x?a=1&access_token=t1&b", &[])), ["t1"]);
        assert_eq!(
            found(&q, &req("/x?access_token=t1&access_token=t2", &[])),
            ["t1", "t2"]
        );
        assert!(found(&q, &req("/x?access_tokens=t1", &[])).is_empty());
        assert!(found(&q, &req("/x?access_token=&access_token", &[])).is_empty());
        let c = Source::Cookie("session".into());
        let hs = h(&[("cookie", "a=1; session=tok; b=2")]);
        assert_eq!(found(&c, &req("/", &hs)), ["tok"]);
        let hs = h(&[("cookie", "xsession=1")]);
        assert!(found(&c, &req("/", &hs)).is_empty());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stripping() {
        assert_eq!(strip_query("/a?t=1&b=2", "t"), "/a?b=2");
        assert_eq!(strip_query("/a?t=1", "t"), "/a");
        assert_eq!(strip_query("/a", "t"), "/a");
        assert_eq!(strip_query("/a?tt=1&t", "t"), "/a?tt=1");
        assert_eq!(
            strip_cookie("a=1; s=x; b=2", "s").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookie("s=x", "s"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn compile_errors() {
        let mut errors = vec![];
        let doc = |header: Option<&str>, query: Option<&str>, prefix: Option<&str>| SourceDoc {
            header: header.map(Into::into),
            prefix: prefix.map(Into::into),
            query: query.map(Into::into),
            cookie: None,
        };
        assert!(Source::compile(&doc(Some("a"), Some("b"), None), "s[0]", &mut errors).is_none());
        assert!(Source::compile(&doc(None, None, None), "s[1]", &mut errors).is_none());
        assert!(Source::compile(&doc(None, Some("q"), Some("x")), "s[2]", &mut errors).is_none());
        assert!(
            Source::compile(&doc(Some("bad header"), None, None), "s[3]", &mut errors).is_none()
        );
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["s[0]", "s[1]", "s[2].prefix", "s[3].header"]);
        assert_eq!(
            Source::compile(&doc(Some("X-Token"), None, None), "s", &mut errors),
            Some(Source::Header {
                name: "x-token".into(),
                prefix: "".into()
            })
        );
    }
}
