//! `tollgate discover`: shadow APIs from the audit lines of requests no route matched. Reads
//! Envoy logs, keeps the `tollgate.audit` lines of unmatched requests (refused as
//! `route_not_found` or let through by `default.action: allow`), groups them by method and
//! templated path (id-like segments become `{id}`) and prints each endpoint with its counts, when
//! it was first and last seen, and a draft route to paste into the policy.

use crate::engine::{normalize_host, parse_rfc3339, path, Engine};
use crate::policy::PolicyDoc;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

/// What precedes the JSON record on an audit line (src/engine/exchange.rs writes it).
const MARKER: &str = "tollgate.audit ";
/// Raw paths shown per endpoint.
const EXAMPLES: usize = 3;
/// The provider a draft route names when no policy says which ones exist: `check` refuses it,
/// so a draft cannot be pasted without a decision about its authentication.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// One audit line of a request no route matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub method: String,
    /// The path as sent (the line's `path`).
    pub raw: String,
    /// What routes were matched against (`normalized_path`, or `path` normalised for lines
    /// written before that field existed).
    pub normalized: String,
    /// The line's `time`, as written.
    pub time: Option<String>,
}

/// What one log line is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Not an audit line.
    Other,
    /// An audit line whose record could not be read.
    Broken,
    /// The audit line of a request a route matched.
    Matched,
    Unmatched(Sighting),
}

/// Reads one log line. Never panics on what a log may hold.
pub fn read_line(line: &str) -> Line {
    let Some((_, rest)) = line.split_once(MARKER) else {
        return Line::Other;
    };
    // The record is the first JSON value after the marker; whatever follows it is ignored.
    let record = match serde_json::Deserializer::from_str(rest)
        .into_iter::<Value>()
        .next()
    {
        Some(Ok(v @ Value::Object(_))) => v,
        _ => return Line::Broken,
    };
    let text = |name: &str| record.get(name).and_then(Value::as_str);
    let (Some(method), Some(raw)) = (text("method"), text("path")) else {
        return Line::Broken;
    };
    let normalized = match text("normalized_path") {
        Some(n) => n.to_string(),
        None if text("reason_category") == Some("unknown_route")
            || text("reason") == Some("route_not_found") =>
        {
            // A line from before `normalized_path`: normalise as the engine did (a cut path may
            // end inside an escape; it is then kept as written).
            path::normalize(raw).unwrap_or_else(|| raw.to_string())
        }
        None => return Line::Matched,
    };
    Line::Unmatched(Sighting {
        method: method.to_string(),
        raw: raw.to_string(),
        normalized,
        time: text("time").map(str::to_string),
    })
}

/// Whether a path segment names one thing among many rather than a kind of thing: all digits,
/// a UUID, hex of 8 or more with a digit, digits with separators (dates, addresses), a token of
/// 8 or more letters, digits, `-`, `_` with two digits or more (`ord_8f7a9c21`), a base64url
/// token of 16 or more with upper case, lower case and a digit, or an e-mail address.
pub fn id_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let token = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    let numeric = digits == b.len();
    let hex = b.len() >= 8 && digits > 0 && b.iter().all(u8::is_ascii_hexdigit);
    let separated_digits =
        digits >= 4 && b.iter().all(|c| c.is_ascii_digit() || b"-_.:".contains(c));
    let keyed = token && b.len() >= 8 && digits >= 2 && letters > 0;
    let unpadded = seg.trim_end_matches('=');
    let base64 = unpadded.len() >= 16
        && unpadded
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
        && digits > 0
        && b.iter().any(u8::is_ascii_uppercase)
        && b.iter().any(u8::is_ascii_lowercase);
    numeric || uuid(seg) || hex || separated_digits || keyed || base64 || seg.contains('@')
}

/// `8-4-4-4-12` hex digits.
fn uuid(seg: &str) -> bool {
    let groups: Vec<&str> = seg.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Whether a segment can stand as a literal in a route's `path` (the rules of
/// `RouteTable::compile`, plus the template braces).
fn writable(seg: &str) -> bool {
    !matches!(seg, "." | "..")
        && !seg.contains(['?', '#', '%', '\\', '{', '}'])
        && !seg.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

/// The route template of a normalised path: id-like segments, and segments a route could not
/// hold literally, become `{id}`, `{id2}`, ...; a trailing `/` is kept.
pub fn template(normalized: &str) -> String {
    let rest = normalized.strip_prefix('/').unwrap_or(normalized);
    let mut params = 0;
    let mut out = String::with_capacity(normalized.len());
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.into_iter().enumerate() {
        if seg.is_empty() {
            // Only a trailing `/` survives normalisation; other empty segments come from lines
            // that could not be normalised.
            if i == last {
                out.push('/');
            }
            continue;
        }
        out.push('/');
        if id_like(seg) || !writable(seg) {
            params += 1;
            out.push_str("{id");
            if params > 1 {
                out.push_str(&params.to_string());
            }
            out.push('}');
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Milliseconds since the epoch of an audit line's `time` (`2026-03-01T10:00:00.123Z`).
fn time_key(s: &str) -> Option<u64> {
    let secs = parse_rfc3339(&format!("{}Z", s.get(..19)?))?;
    let ms = match s.get(19..)? {
        "Z" => 0,
        tail => {
            let frac = tail.strip_prefix('.')?.strip_suffix('Z')?;
            if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let three: String = frac.chars().chain("00".chars()).take(3).collect();
            three.parse::<u64>().ok()?
        }
    };
    secs.checked_mul(1000)?.checked_add(ms)
}

/// Requests to one templated endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub method: String,
    pub template: String,
    pub count: usize,
    /// `(ms, as written)` of the earliest and latest lines with a readable `time`.
    first: Option<(u64, String)>,
    last: Option<(u64, String)>,
    /// Distinct raw paths, in the order first seen.
    pub examples: Vec<String>,
}

impl Endpoint {
    pub fn first_seen(&self) -> Option<&str> {
        self.first.as_ref().map(|(_, t)| t.as_str())
    }

    pub fn last_seen(&self) -> Option<&str> {
        self.last.as_ref().map(|(_, t)| t.as_str())
    }
}

/// Groups sightings by method and template; busiest first, then by template and method.
pub fn group(sightings: &[Sighting]) -> Vec<Endpoint> {
    let mut by: BTreeMap<(String, String), Endpoint> = BTreeMap::new();
    for s in sightings {
        let t = template(&s.normalized);
        let e = by
            .entry((s.method.clone(), t.clone()))
            .or_insert_with(|| Endpoint {
                method: s.method.clone(),
                template: t,
                ..Endpoint::default()
            });
        e.count += 1;
        if let Some((time, key)) = s.time.as_ref().and_then(|t| Some((t, time_key(t)?))) {
            if e.first.as_ref().is_none_or(|(k, _)| key < *k) {
                e.first = Some((key, time.clone()));
            }
            if e.last.as_ref().is_none_or(|(k, _)| key > *k) {
                e.last = Some((key, time.clone()));
            }
        }
        if e.examples.len() < EXAMPLES && !e.examples.contains(&s.raw) {
            e.examples.push(s.raw.clone());
        }
    }
    let mut out: Vec<Endpoint> = by.into_values().collect();
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.template.cmp(&b.template))
            .then_with(|| a.method.cmp(&b.method))
    });
    out
}

/// How draft routes authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Tokens of these providers (every provider of the policy).
    Providers(Vec<String>),
    /// The policy has API keys and no providers.
    ApiKeys,
    /// No policy given (or one without credentials): [`PLACEHOLDER`], to be edited.
    Placeholder,
}

impl Auth {
    pub fn of(doc: Option<&PolicyDoc>) -> Auth {
        match doc {
            Some(d) if !d.providers.is_empty() => {
                Auth::Providers(d.providers.keys().cloned().collect())
            }
            Some(d) if d.api_keys.is_some() => Auth::ApiKeys,
            _ => Auth::Placeholder,
        }
    }
}

/// A route name from the method and template: `GET /v2/users/{id}` -> `get-v2-users-id`.
fn route_name(method: &str, template: &str) -> String {
    let mut name = String::new();
    for c in format!("{method}-{template}").chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-').to_string();
    if template == "/" {
        format!("{name}-root")
    } else {
        name
    }
}

/// A route for an endpoint, to be pasted into the policy's `routes` (fields in the order people
/// write them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Draft {
    pub name: String,
    pub path: String,
    /// `None` when the logged method is not one a route can name (an uppercase token): the draft
    /// then allows any method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub api_keys: bool,
}

/// The draft route of `e`; `taken` holds the names already used (the policy's and earlier
/// drafts'), and gets this one's.
pub fn draft_route(e: &Endpoint, auth: &Auth, taken: &mut BTreeSet<String>) -> Draft {
    let base = route_name(&e.method, &e.template);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    let (providers, api_keys) = match auth {
        Auth::Providers(p) => (p.clone(), false),
        Auth::ApiKeys => (Vec::new(), true),
        Auth::Placeholder => (vec![PLACEHOLDER.to_string()], false),
    };
    Draft {
        name,
        path: e.template.clone(),
        methods: (!e.method.is_empty() && e.method.bytes().all(|b| b.is_ascii_uppercase()))
            .then(|| vec![e.method.clone()]),
        providers,
        api_keys,
    }
}

/// Whether the policy already has a route for `method` and the normalised `path`, for any host
/// it names (the audit line does not keep the host).
fn matched(engine: &Engine, hosts: &[String], method: &str, path: &str) -> bool {
    hosts
        .iter()
        .any(|h| engine.routes().find(h, method, path).is_some())
}

/// What the log files held.
#[derive(Debug, Default)]
struct Scan {
    audit_lines: usize,
    broken: usize,
    sightings: Vec<Sighting>,
}

fn scan_file(file: &str, scan: &mut Scan) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let mut reader = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{file}: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        // Logs may hold bytes that are not UTF-8 (a client's path); the record is JSON text.
        match read_line(&String::from_utf8_lossy(&buf)) {
            Line::Other => {}
            Line::Broken => {
                scan.audit_lines += 1;
                scan.broken += 1;
            }
            Line::Matched => scan.audit_lines += 1,
            Line::Unmatched(s) => {
                scan.audit_lines += 1;
                scan.sightings.push(s);
            }
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The report on the audit lines in `files`: as text for people, or as JSON. With `policy`,
/// requests it now matches are left out and the drafts use its credentials.
pub fn report(
    files: &[String],
    policy: Option<(&Engine, &PolicyDoc)>,
    as_json: bool,
) -> Result<String, String> {
    let mut scan = Scan::default();
    for file in files {
        scan_file(file, &mut scan)?;
    }
    let unmatched = scan.sightings.len();
    let mut taken = BTreeSet::new();
    let kept: Vec<Sighting> = match policy {
        Some((engine, doc)) => {
            // "" is the table of routes without a `host`; the rest as routes are compiled.
            let mut hosts = vec![String::new()];
            for r in &doc.routes {
                if let Some(h) = r.host.as_deref().and_then(|h| normalize_host(h).ok()) {
                    hosts.push(h.into_owned());
                }
                if let Some(n) = &r.name {
                    taken.insert(n.clone());
                }
            }
            scan.sightings
                .into_iter()
                .filter(|s| !matched(engine, &hosts, &s.method, &s.normalized))
                .collect()
        }
        None => scan.sightings,
    };
    let already = unmatched - kept.len();
    let auth = Auth::of(policy.map(|(_, doc)| doc));
    let endpoints = group(&kept);
    let drafts: Vec<Draft> = endpoints
        .iter()
        .map(|e| draft_route(e, &auth, &mut taken))
        .collect();
    if as_json {
        let list: Vec<Value> = endpoints
            .iter()
            .zip(&drafts)
            .map(|(e, route)| {
                json!({
                    "method": e.method, "template": e.template, "count": e.count,
                    "first_seen": e.first_seen(), "last_seen": e.last_seen(),
                    "examples": e.examples, "route": route,
                })
            })
            .collect();
        let doc = json!({
            "audit_lines": scan.audit_lines, "broken_lines": scan.broken,
            "unmatched": unmatched, "already_matched": already,
            "endpoints": list,
        });
        return serde_json::to_string_pretty(&doc)
            .map(|t| t + "\n")
            .map_err(|e| e.to_string());
    }
    let mut text = String::new();
    let mut tally = plural(scan.audit_lines, "audit line", "audit lines");
    if scan.broken > 0 {
        tally.push_str(&format!(
            "; {} skipped",
            plural(scan.broken, "unreadable line", "unreadable lines")
        ));
    }
    if already > 0 {
        tally.push_str(&format!(
            "; {} the policy now matches left out",
            plural(already, "request", "requests")
        ));
    }
    if endpoints.is_empty() {
        text.push_str(&format!("no requests outside the policy ({tally})\n"));
        return Ok(text);
    }
    text.push_str(&format!(
        "{} outside the policy, {} ({tally})\n",
        plural(kept.len(), "request", "requests"),
        plural(endpoints.len(), "endpoint", "endpoints"),
    ));
    for (e, route) in endpoints.iter().zip(&drafts) {
        text.push_str(&format!(
            "\n{} {}\n  requests    {}\n  first seen  {}\n  last seen   {}\n  examples    {}\n  draft route {}\n",
            e.method,
            e.template,
            e.count,
            e.first_seen().unwrap_or("-"),
            e.last_seen().unwrap_or("-"),
            e.examples.join("  "),
            serde_json::to_string(route).map_err(|e| e.to_string())?,
        ));
    }
    text.push('\n');
    text.push_str(match auth {
        Auth::Placeholder => "edit the draft routes before use: replace `CHANGE-ME` with the policy's providers (or use `api_keys: true`, or `public: true` for an open endpoint), then add scopes and checks; `tollgate check` refuses them as they are\n",
        Auth::Providers(_) | Auth::ApiKeys => "the draft routes accept every credential of the policy: narrow them (providers, scopes) and add checks before use\n",
    });
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        for (path, want) in [
            ("/", "/"),
            ("/health", "/health"),
            ("/v2/users/123", "/v2/users/{id}"),
            ("/v2/users/123/orders/9", "/v2/users/{id}/orders/{id2}"),
            ("/v2/users/123/", "/v2/users/{id}/"),
            ("/files/3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c", "/files/{id}"),
            ("/files/DEADBEEF-dead-beef-DEAD-beefdeadbeef", "/files/{id}"),
            ("/blobs/a3f9c2e1", "/blobs/{id}"),
            ("/blobs/deadbeef", "/blobs/deadbeef"),
            ("/orders/ord_8f7a9c21", "/orders/{id}"),
            ("/items/sku-10023", "/items/{id}"),
            ("/sessions/aGVsbG8Gd29ybGQx", "/sessions/{id}"),
            ("/reports/2024-01-15", "/reports/{id}"),
            ("/people/alice@example.com", "/people/{id}"),
            ("/odd/a%20b", "/odd/{id}"),
            ("/odd/{x}", "/odd/{id}"),
            // Words, versions and short tokens stay.
            ("/v2/oauth2/token", "/v2/oauth2/token"),
            ("/api/1.0/users", "/api/1.0/users"),
            ("/v1beta1/x509", "/v1beta1/x509"),
            ("/customer-addresses-v2", "/customer-addresses-v2"),
            ("/internationalization", "/internationalization"),
            ("/getUserPreferencesById", "/getUserPreferencesById"),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }

    fn line(time: &str, method: &str, path: &str, extra: &str) -> String {
        format!(
            r#"[2026-03-01 10:00:00.000][12][info][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log tollgate: tollgate.audit {{"time":"{time}","request_id":null,"client_ip":"10.0.0.1","method":"{method}","route":null,"path":"{path}"{extra},"principal":null,"decision":"deny","reason":"route_not_found","reason_category":"unknown_route","status":404,"mode":"enforce"}}"#
        )
    }

    #[test]
    fn lines_are_read_defensively() {
        let l = line(
            "2026-03-01T10:00:00.000Z",
            "GET",
            "/v2//users/12",
            r#","normalized_path":"/v2/users/12""#,
        );
        let Line::Unmatched(s) = read_line(&l) else {
            panic!("{l}")
        };
        assert_eq!(
            (s.raw.as_str(), s.normalized.as_str()),
            ("/v2//users/12", "/v2/users/12")
        );
        // Without `normalized_path`: the path, normalised here.
        let Line::Unmatched(s) = read_line(&line("t", "GET", "/a/./b", "")) else {
            panic!()
        };
        assert_eq!(s.normalized, "/a/b");
        assert_eq!(read_line("[info] envoy started"), Line::Other);
        assert_eq!(read_line("tollgate.audit {\"method\": "), Line::Broken);
        assert_eq!(read_line("tollgate.audit [1, 2]"), Line::Broken);
        assert_eq!(read_line("tollgate.audit {\"path\": \"/x\"}"), Line::Broken);
        assert_eq!(
            read_line(
                r#"tollgate.audit {"method":"GET","path":"/items","reason":"token_missing","reason_category":"authentication"} trailing"#
            ),
            Line::Matched
        );
        assert_eq!(time_key("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(time_key("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(time_key("yesterday"), None);
    }

    fn seen(time: &str, method: &str, raw: &str) -> Sighting {
        Sighting {
            method: method.into(),
            raw: raw.into(),
            normalized: path::normalize(raw).unwrap(),
            time: Some(time.into()),
        }
    }

    #[test]
    fn grouping_counts_and_orders() {
        let endpoints = group(&[
            seen("2026-03-01T10:05:00.000Z", "GET", "/v2/users/456"),
            seen("2026-03-01T10:00:00.000Z", "GET", "/v2/users/123"),
            seen("2026-03-01T10:09:00.000Z", "GET", "/v2/users//789/orders"),
            seen("2026-03-01T10:01:00.000Z", "DELETE", "/v2/users/1"),
            seen("not a time", "GET", "/v2/users/123"),
        ]);
        let rows: Vec<(&str, &str, usize)> = endpoints
            .iter()
            .map(|e| (e.method.as_str(), e.template.as_str(), e.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("GET", "/v2/users/{id}", 3),
                ("DELETE", "/v2/users/{id}", 1),
                ("GET", "/v2/users/{id}/orders", 1),
            ]
        );
        let users = &endpoints[0];
        assert_eq!(users.first_seen(), Some("2026-03-01T10:00:00.000Z"));
        assert_eq!(users.last_seen(), Some("2026-03-01T10:05:00.000Z"));
        assert_eq!(users.examples, ["/v2/users/456", "/v2/users/123"]);
        assert_eq!(endpoints[2].examples, ["/v2/users//789/orders"]);
    }

    #[test]
    fn draft_routes_compile_once_pasted() {
        let endpoints = group(&[
            seen("2026-03-01T10:00:00.000Z", "GET", "/v2/users/123/orders/9"),
            seen("2026-03-01T10:00:00.000Z", "GET", "/"),
            seen("2026-03-01T10:00:00.000Z", "POST", "/odd/a%20b/"),
            seen("2026-03-01T10:00:00.000Z", "get", "/v2/users"),
        ]);
        let providers = json!({"corp": {"issuer": "https://issuer", "audiences": ["api"],
            "algorithms": ["RS256"], "jwks": {"keys": [crate::testkit::public_jwk("rsa-1")]}}});
        let existing = json!({"name": "get-root", "path": "/health", "public": true});
        for (auth, extra) in [
            (
                Auth::Providers(vec!["corp".into()]),
                json!({"providers": providers}),
            ),
            (
                Auth::ApiKeys,
                json!({"api_keys": {"keys": [{"id": "k", "sha256": "0".repeat(64)}]}}),
            ),
        ] {
            let mut taken = BTreeSet::from(["get-root".to_string()]);
            let mut routes: Vec<Value> = endpoints
                .iter()
                .map(|e| serde_json::to_value(draft_route(e, &auth, &mut taken)).unwrap())
                .collect();
            let names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
            assert_eq!(
                names,
                [
                    "get-root-2",
                    "post-odd-id",
                    "get-v2-users",
                    "get-v2-users-id-orders-id2"
                ]
            );
            assert_eq!(routes[3]["path"], "/v2/users/{id}/orders/{id2}");
            assert_eq!(routes[2].get("methods"), None, "`get` is no route method");
            assert!(
                routes.iter().any(|r| r["name"] == "get-root-2"),
                "{routes:?}"
            );
            routes.push(existing.clone());
            let mut policy = extra;
            policy["routes"] = json!(routes);
            if let Err(errors) = Engine::compile(policy.to_string().as_bytes()) {
                panic!("{errors:?}\n{policy}");
            }
        }
        // The placeholder is refused until edited.
        let route = draft_route(&endpoints[0], &Auth::Placeholder, &mut BTreeSet::new());
        assert_eq!(
            serde_json::to_string(&route).unwrap(),
            r#"{"name":"get-root","path":"/","methods":["GET"],"providers":["CHANGE-ME"]}"#
        );
        let policy = json!({"providers": providers, "routes": [route]});
        let errors = Engine::compile(policy.to_string().as_bytes()).unwrap_err();
        assert!(
            errors.iter().any(|e| e.message.contains("CHANGE-ME")),
            "{errors:?}"
        );
    }
}
