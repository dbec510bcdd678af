//! `tollgate explain`: one request through the engine's exchange, with a trace of how it was
//! judged. The decision and the trace are the engine's own (`Session::decide` runs an
//! `Exchange::explained`, whose diagnostics name the route, the credential and each requirement);
//! this file only adds what the compiled policy says about the route and renders it all.

use super::request::{Change, Delivered, Session, Spec, Verdict};
use crate::engine::{Access, Engine, Request};
use crate::jwt::extract::Source;
use crate::policy::PolicyDoc;
use crate::ratelimit::KeyPart;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// Everything `explain` prints, as data (`--json` prints it as is).
pub fn explain(
    engine: &Engine,
    doc: &PolicyDoc,
    spec: &Spec,
    now_ms: u64,
    jwks: &[(String, Vec<u8>)],
    revocations: Option<&[u8]>,
) -> Result<Value, String> {
    explain_after(engine, doc, spec, now_ms, jwks, revocations, (0, 0))
}

/// [`explain`] after a synthetic history (`--repeat`): the same request sent `history.0` times
/// before, `history.1` ms apart, the last of them `history.1` ms before `now_ms`.
pub fn explain_after(
    engine: &Engine,
    doc: &PolicyDoc,
    spec: &Spec,
    now_ms: u64,
    jwks: &[(String, Vec<u8>)],
    revocations: Option<&[u8]>,
    history: (u32, u64),
) -> Result<Value, String> {
    let mut session = Session::new(engine, jwks)?;
    if let Some(body) = revocations {
        session.install_revocations(body)?;
    }
    let (count, step) = history;
    for n in (1..=count).rev() {
        session.decide(spec, now_ms.saturating_sub(step.saturating_mul(n.into())));
    }
    let verdict = session.decide(spec, now_ms);
    let diag = &verdict.diagnostics;
    let now = now_ms / 1000;
    let headers = spec.envoy_headers();
    let req = Request {
        method: &spec.method,
        path: &spec.path,
        headers: &headers,
        peer: Some(spec.peer.as_deref().unwrap_or(super::request::DEFAULT_PEER)),
        connection: spec.connection.as_ref(),
    };
    let mut out = Map::new();
    if let Some(c) = &spec.connection {
        out.insert(
            "connection".into(),
            json!({
                "tls_version": c.tls_version,
                "client_certificate": c.peer_certificate.then(|| json!({
                    "uri_san": c.uri_san,
                    "dns_san": c.dns_san,
                    "subject": c.subject,
                    "principal": c.principal(),
                })),
            }),
        );
    }
    out.insert(
        "request".into(),
        json!({
            "method": spec.method,
            "path": spec.path,
            "headers": headers,
            "body_bytes": spec.body.as_ref().map(Vec::len),
        }),
    );
    if let Some(r) = &spec.response {
        out.insert(
            "response".into(),
            json!({
                "status": r.status,
                "headers": r.envoy_headers(),
                "body_bytes": r.body.len(),
            }),
        );
    }
    out.insert("now".into(), Value::from(super::keys::seconds_rfc3339(now)));
    out.insert("normalized_path".into(), json!(diag.normalized_path));
    let matched = diag
        .route
        .as_ref()
        .and_then(|hit| engine.routes().get(hit.index).map(|r| (hit, r)));
    if let Some((hit, route)) = matched {
        let rdoc = doc.routes.get(hit.index);
        let (pattern, methods) = match rdoc {
            Some(r) => (
                match (&r.path, &r.prefix) {
                    (Some(p), _) => format!("path {p}"),
                    (_, Some(p)) => format!("prefix {p}"),
                    _ => String::new(),
                },
                r.methods.clone(),
            ),
            None => (String::new(), vec![]),
        };
        let peers = rdoc.and_then(|r| r.peers.as_ref()).map(|p| {
            json!({
                "principals": p.principals,
                "namespaces": p.namespaces,
                "trust_domains": p.trust_domains,
                "dns_names": p.dns_names,
                "subjects": p.subjects,
            })
        });
        let mut access = match &route.access {
            Access::Public => json!("public"),
            Access::Authenticated {
                providers,
                api_keys,
                signers,
            } => json!({
                "providers": providers.iter().filter_map(|i| engine.providers().get(*i)).map(|p| p.name.clone()).collect::<Vec<_>>(),
                "api_keys": api_keys,
                "signers": signers.iter().filter_map(|i| engine.signers().get(*i)).map(|s| s.name.clone()).collect::<Vec<_>>(),
            }),
            Access::Workload => json!({"providers": [], "api_keys": false}),
        };
        if let (Some(obj), Some(peers)) = (access.as_object_mut(), peers) {
            obj.insert("peers".into(), peers);
        }
        if !route.tls.is_empty() {
            out.insert(
                "tls_required".into(),
                json!({
                    "min_version": route.tls.min_version.map(|(a, b)| format!("{a}.{b}")),
                    "client_certificate": route.tls.client_certificate || route.peers.is_some(),
                }),
            );
        }
        out.insert(
            "route".into(),
            json!({
                "name": hit.name,
                "index": hit.index,
                "pattern": pattern,
                "methods": methods,
                "params": hit.params.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<Map<_, _>>(),
                "access": access,
                "mode": route.mode,
            }),
        );
        if let Some(cred) = credential(engine, &route.access, &req) {
            out.insert("credential".into(), cred);
        }
        match &diag.authentication {
            Some(Ok(p)) => {
                out.insert(
                    "authentication".into(),
                    json!({
                        "result": "passed",
                        "principal": p.principal,
                        "provider": p.principal.strip_prefix("jwt:").and_then(|r| r.split_once(':')).map(|(n, _)| n),
                        "scopes": p.scopes,
                    }),
                );
                out.insert(
                    "authorization".into(),
                    Value::Array(
                        diag.authorization
                            .iter()
                            .map(|c| json!({"requirement": c.requirement, "passed": c.passed}))
                            .collect(),
                    ),
                );
            }
            Some(Err(code)) => {
                out.insert(
                    "authentication".into(),
                    json!({"result": "refused", "code": code.as_str(), "detail": code.info().detail}),
                );
            }
            None => {}
        }
        let limits: Vec<Value> = route
            .limits
            .iter()
            .filter_map(|(i, cost)| engine.limits().get(*i).map(|l| (l, cost)))
            .map(|(l, cost)| {
                json!({
                    "limit": l.name,
                    "rate": l.shape.rate,
                    "per": period(l.shape.period_ms),
                    "burst": l.shape.burst,
                    "cost": cost,
                    "key": l.key.iter().map(key_part).collect::<Vec<_>>(),
                    "shadow": l.shadow,
                    "backend": l.backend.as_str(),
                })
            })
            .collect();
        out.insert("limits".into(), Value::Array(limits));
        if let (Some(ask), Some(service)) = (&diag.global, engine.rate_limit_service()) {
            out.insert("rate_limit_service".into(), global_json(ask, service, spec));
        }
        if let Some(r) = rdoc.and_then(|r| r.request.as_ref()) {
            let mut checks = Vec::new();
            if r.body.is_some() {
                checks.push("body schema".to_string());
            }
            checks.extend(r.params.keys().map(|k| format!("path parameter `{k}`")));
            checks.extend(r.query.keys().map(|k| format!("query `{k}`")));
            checks.extend(
                r.required_query
                    .iter()
                    .map(|k| format!("query `{k}` required")),
            );
            checks.extend(r.headers.keys().map(|k| format!("header `{k}`")));
            checks.extend(
                r.required_headers
                    .iter()
                    .map(|k| format!("header `{k}` required")),
            );
            out.insert("request_checks".into(), json!(checks));
        }
    } else {
        out.insert("route".into(), Value::Null);
    }
    out.insert("decision".into(), decision_json(&verdict));
    Ok(Value::Object(out))
}

/// What the rate-limit service is asked (from the engine's own descriptors) and the answer
/// the run assumed.
fn global_json(
    ask: &crate::engine::GlobalAsk,
    service: &crate::ratelimit::service::Service,
    spec: &Spec,
) -> Value {
    json!({
        "cluster": service.cluster,
        "domain": service.domain,
        "hits_addend": ask.hits,
        "descriptors": ask.descriptors.iter().map(descriptor_json).collect::<Vec<_>>(),
        "answer": spec.rate_limit_service.as_str(),
    })
}

/// A descriptor as `{entries: [[key, value], ...], limit: {requests_per_unit, unit}}`.
pub fn descriptor_json(d: &crate::ratelimit::rls::Descriptor) -> Value {
    json!({
        "entries": d.entries.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "limit": d.limit.map(|(n, unit)| json!({"requests_per_unit": n, "unit": unit.as_str()})),
    })
}

fn period(ms: u64) -> String {
    match ms {
        1000 => "second".into(),
        60_000 => "minute".into(),
        3_600_000 => "hour".into(),
        other => format!("{other} ms"),
    }
}

fn key_part(k: &KeyPart) -> String {
    match k {
        KeyPart::Identity => "identity".into(),
        KeyPart::ClientIp => "client_ip".into(),
        KeyPart::Route => "route".into(),
        KeyPart::Claim(c) => format!("claim `{c}`"),
        KeyPart::Header(h) => format!("header `{h}`"),
        KeyPart::Constant(c) => format!("constant `{c}`"),
    }
}

/// The credentials the route's sources find, as the engine looks for them; a JWT's header and
/// claims are decoded (not verified) for display.
fn credential(engine: &Engine, access: &Access, req: &Request<'_>) -> Option<Value> {
    let Access::Authenticated {
        providers,
        api_keys,
        signers,
    } = access
    else {
        return None;
    };
    let mut sources: Vec<(&Source, &str)> = Vec::new();
    for p in providers.iter().filter_map(|i| engine.providers().get(*i)) {
        for s in &p.sources {
            if !sources.iter().any(|(x, _)| *x == s) {
                sources.push((s, "token"));
            }
        }
    }
    if let (Some(k), true) = (&engine.api_keys(), api_keys) {
        sources.extend(k.sources.iter().map(|s| (s, "api_key")));
    }
    let mut found = Vec::new();
    if !signers.is_empty() {
        // The signatures as sent (`tollgate explain` shows them; the engine verifies them).
        let values = |name: &str| req.header_values(name).collect::<Vec<_>>();
        if let Ok(sigs) =
            crate::httpsig::Signatures::parse(&values("signature-input"), &values("signature"))
        {
            for sig in sigs.iter() {
                found.push(json!({
                    "kind": "signature",
                    "from": format!("`signature-input` label `{}`", sig.label()),
                    "signature": {
                        "keyid": sig.keyid(),
                        "alg": sig.alg(),
                        "created": sig.created(),
                        "expires": sig.expires(),
                        "nonce": sig.nonce().is_some(),
                        "components": sig.components().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    },
                }));
            }
        }
    }
    for (source, kind) in sources {
        let mut scratch = Vec::new();
        source.find(req, &mut scratch);
        for value in scratch {
            let place = match source {
                Source::Header { name, .. } => format!("header `{name}`"),
                Source::Query(q) => format!("query parameter `{q}`"),
                Source::Cookie(c) => format!("cookie `{c}`"),
            };
            let mut item = Map::new();
            item.insert("kind".into(), Value::from(kind));
            item.insert("from".into(), Value::from(place));
            if kind == "token" {
                item.insert("jwt".into(), decode_jwt(value).unwrap_or(Value::Null));
            }
            found.push(Value::Object(item));
        }
    }
    Some(Value::Array(found))
}

/// A JWT's header and payload, unverified.
pub fn decode_jwt(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let mut part = || -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some(json!({"header": part()?, "claims": part()?}))
}

pub fn decision_json(v: &Verdict) -> Value {
    let mut out = match v.summary() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let changes = |list: &[Change], set: bool| -> Vec<Value> {
        list.iter()
            .filter_map(|c| match (c, set) {
                (Change::Set(k, v) | Change::Add(k, v), true) => Some(json!([k, v])),
                (Change::Remove(k), false) => Some(json!(k)),
                _ => None,
            })
            .collect()
    };
    match &v.reply {
        None => {
            out.insert(
                "upstream".into(),
                json!({"set_headers": changes(&v.upstream, true), "remove_headers": changes(&v.upstream, false)}),
            );
            out.insert("response_headers".into(), json!(changes(&v.response, true)));
            out.insert("unknown_route".into(), json!(v.unknown_route));
            if let Some(checked) = &v.body_checked {
                let body = match checked {
                    Ok(()) => json!("passed"),
                    Err(code) => json!({"code": code.as_str()}),
                };
                out.insert("body".into(), body);
            }
            if let Some(d) = &v.delivered {
                out.insert("delivered".into(), delivered_json(d));
            }
        }
        Some(reply) => {
            if let Some(code) = v.denied() {
                out.insert("title".into(), json!(code.info().title));
            }
            out.insert("headers".into(), json!(reply.headers));
            out.insert(
                "problem".into(),
                serde_json::from_str::<Value>(&reply.body).unwrap_or(Value::Null),
            );
        }
    }
    out.insert("metrics".into(), json!(v.metrics));
    out.insert(
        "logs".into(),
        json!(v
            .logs
            .iter()
            .map(|(level, line)| json!({"level": format!("{level:?}").to_lowercase(), "message": line}))
            .collect::<Vec<_>>()),
    );
    Value::Object(out)
}

/// What the client got from the response phase: how, the status, and the body (as JSON when
/// it is JSON); for Tollgate's own reply also its code, title and headers.
fn delivered_json(d: &Delivered) -> Value {
    let body = serde_json::from_slice::<Value>(d.body())
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(d.body()).into_owned()));
    let mut out = json!({"how": d.how(), "status": d.status(), "body": body});
    if let (Delivered::Replaced(reply), Value::Object(map)) = (d, &mut out) {
        map.insert("code".into(), json!(reply.code.as_str()));
        map.insert("title".into(), json!(reply.code.info().title));
        map.insert("headers".into(), json!(reply.headers));
    }
    out
}

/// The trace for people.
// Reading a `serde_json::Value` by index never panics (a missing member reads as `Null`); only
// writing through it can, and this function only reads.
#[allow(clippy::indexing_slicing)]
pub fn render_text(t: &Value) -> String {
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{label:<11}{text}\n"));
    };
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let r = &t["request"];
    line(
        "request",
        format!(
            "{} {}  (at {})",
            s(&r["method"]),
            s(&r["path"]),
            s(&t["now"])
        ),
    );
    match t["normalized_path"].as_str() {
        Some(p) if p != s(&r["path"]).split('?').next().unwrap_or("") => {
            line("path", format!("normalised to {p}"))
        }
        Some(_) => {}
        None => line("path", "cannot be normalised safely".into()),
    }
    let route = &t["route"];
    let unmatched = t["decision"]["code"] == "route_not_found"
        || t["decision"]["would_deny"] == "route_not_found"
        || t["decision"]["unknown_route"] == true;
    if route.is_null() && unmatched {
        line("route", "no route matches".into());
    } else if route.is_null() {
        line("route", "not reached: refused before route matching".into());
    } else {
        let params: Vec<String> = route["params"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
            .unwrap_or_default();
        let methods: Vec<String> = route["methods"]
            .as_array()
            .map(|m| m.iter().map(s).collect())
            .unwrap_or_default();
        let methods = if methods.is_empty() {
            "any method".to_string()
        } else {
            methods.join(",")
        };
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("  [{}]", params.join(", "))
        };
        line(
            "route",
            format!(
                "{} ({methods} {}){params}",
                s(&route["name"]),
                s(&route["pattern"])
            ),
        );
        let access = &route["access"];
        let accepts = if access.is_string() {
            "public: no credential needed".to_string()
        } else {
            let mut parts = Vec::new();
            if let Some(p) = access["providers"].as_array().filter(|p| !p.is_empty()) {
                let names: Vec<String> = p.iter().map(|n| format!("`{}`", s(n))).collect();
                parts.push(format!("tokens of {}", names.join(", ")));
            }
            if access["api_keys"] == true {
                parts.push("API keys".into());
            }
            if let Some(p) = access["signers"].as_array().filter(|p| !p.is_empty()) {
                let names: Vec<String> = p.iter().map(|n| format!("`{}`", s(n))).collect();
                parts.push(format!("requests signed by {}", names.join(", ")));
            }
            let mut accepts = parts.join(" or ");
            if let Some(p) = access["peers"].as_object() {
                let named: Vec<String> = p
                    .iter()
                    .filter_map(|(k, v)| {
                        let v: Vec<String> = v.as_array()?.iter().map(s).collect();
                        (!v.is_empty()).then(|| format!("{k} {}", v.join(",")))
                    })
                    .collect();
                let workloads = format!("workloads with {}", named.join("; "));
                accepts = if accepts.is_empty() {
                    workloads
                } else {
                    format!("{accepts}, from {workloads}")
                };
            }
            accepts
        };
        line("accepts", accepts);
        if let Some(tls) = t["tls_required"].as_object() {
            let mut text = "TLS".to_string();
            if let Some(v) = tls.get("min_version").and_then(Value::as_str) {
                text.push_str(&format!(" {v} or later"));
            }
            if tls.get("client_certificate") == Some(&Value::Bool(true)) {
                text.push_str(" with a client certificate");
            }
            line("requires", text);
        }
    }
    if !t["route"].is_null() || !t["connection"].is_null() {
        let c = &t["connection"];
        let text = match c["tls_version"].as_str() {
            None => "plaintext".to_string(),
            Some(v) => match c["client_certificate"]["principal"].as_str() {
                Some(p) => format!("{v}, client certificate {p}"),
                None => format!("{v}, no client certificate"),
            },
        };
        if !c.is_null() || !t["tls_required"].is_null() {
            line("connection", text);
        }
    }
    for c in t["credential"].as_array().into_iter().flatten() {
        let mut text = format!("{} from {}", s(&c["kind"]).replace('_', " "), s(&c["from"]));
        let jwt = &c["jwt"];
        if jwt.is_object() {
            let h = &jwt["header"];
            let cl = &jwt["claims"];
            text.push_str(&format!(": {} kid={}", s(&h["alg"]), h["kid"]));
            for k in ["iss", "sub", "aud", "scope"] {
                if let Some(v) = cl.get(k) {
                    text.push_str(&format!(
                        " {k}={}",
                        v.as_str().map_or(v.to_string(), String::from)
                    ));
                }
            }
            if let (Some(exp), Some(now)) = (
                cl["exp"].as_i64(),
                t["now"].as_str().and_then(crate::engine::parse_rfc3339),
            ) {
                let left = exp - i64::try_from(now).unwrap_or(i64::MAX);
                text.push_str(&if left >= 0 {
                    format!(" (expires in {left} s)")
                } else {
                    format!(" (expired {} s ago)", -left)
                });
            }
        } else if c["kind"] == "token" {
            text.push_str(": not a JWT");
        } else if c["kind"] == "signature" {
            let g = &c["signature"];
            text.push_str(&format!(
                ": keyid={} alg={} created={} covers [{}]",
                g["keyid"],
                g["alg"],
                g["created"],
                g["components"]
                    .as_array()
                    .map(|v| v.iter().map(s).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            ));
        }
        line("credential", text);
    }
    let a = &t["authentication"];
    if a["result"] == "passed" {
        let scopes: Vec<String> = a["scopes"]
            .as_array()
            .map(|v| v.iter().map(s).collect())
            .unwrap_or_default();
        let by = match a["provider"].as_str() {
            Some(p) => format!("provider `{p}`"),
            None if s(&a["principal"]).starts_with("mtls:") => "client certificate".to_string(),
            None if s(&a["principal"]).starts_with("sig:") => "message signature".to_string(),
            None => "API key".to_string(),
        };
        line(
            "authn",
            format!(
                "passed: {by}; principal {}; scopes [{}]",
                s(&a["principal"]),
                scopes.join(" ")
            ),
        );
    } else if a["result"] == "refused" {
        line(
            "authn",
            format!("refused: {} ({})", s(&a["code"]), s(&a["detail"])),
        );
    }
    for c in t["authorization"].as_array().into_iter().flatten() {
        let mark = if c["passed"] == true { "pass" } else { "FAIL" };
        line("authz", format!("{mark}  {}", s(&c["requirement"])));
    }
    for l in t["limits"].as_array().into_iter().flatten() {
        let keys: Vec<String> = l["key"]
            .as_array()
            .map(|v| v.iter().map(s).collect())
            .unwrap_or_default();
        line(
            "limit",
            format!(
                "{}: {} per {}, burst {}, cost {}, key [{}]{}{}",
                s(&l["limit"]),
                l["rate"],
                s(&l["per"]),
                l["burst"],
                l["cost"],
                keys.join(", "),
                if l["shadow"] == true { ", shadow" } else { "" },
                match l["backend"].as_str() {
                    Some("global") => ", counted by the rate-limit service",
                    Some("local+global") => {
                        ", local bucket (starts full), then the rate-limit service"
                    }
                    _ => "  (no shared state: the bucket starts full)",
                }
            ),
        );
    }
    if let Some(g) = t["rate_limit_service"].as_object() {
        for d in g["descriptors"].as_array().into_iter().flatten() {
            let entries: Vec<String> = d["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{}={}", s(&e[0]), s(&e[1])))
                .collect();
            line(
                "global",
                format!(
                    "descriptor [{}] to `{}` (domain `{}`, hits {}){}",
                    entries.join(", "),
                    s(&g["cluster"]),
                    s(&g["domain"]),
                    g["hits_addend"],
                    d["limit"]
                        .as_object()
                        .map(|l| format!(
                            ", limit {} per {}",
                            l["requests_per_unit"],
                            s(&l["unit"])
                        ))
                        .unwrap_or_default()
                ),
            );
        }
        line(
            "global",
            format!(
                "the service's answer is assumed: {} (--rate-limit-service)",
                s(&g["answer"])
            ),
        );
    }
    if let Some(c) = t["request_checks"].as_array() {
        let items: Vec<String> = c.iter().map(s).collect();
        line("checks", items.join(", "));
    }
    let d = &t["decision"];
    if d["decision"] == "allow" {
        let mut text = "ALLOW".to_string();
        if !d["route"].is_null() {
            text.push_str(&format!("  route={}", s(&d["route"])));
        }
        if !d["principal"].is_null() {
            text.push_str(&format!("  principal={}", s(&d["principal"])));
        }
        if d["unknown_route"] == true {
            text.push_str("  (unknown route let through by `default.action: allow`)");
        }
        if let Some(w) = d["would_deny"].as_str() {
            text.push_str(&format!("  (dry run: would deny with {w})"));
        }
        line("decision", text);
        if d["body"] == "passed" {
            line("body", "passed its schema".into());
        } else if d["body"].is_object() {
            line(
                "body",
                format!("refused (reported only): {}", s(&d["body"]["code"])),
            );
        }
        for h in d["upstream"]["set_headers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            line("upstream", format!("set {}: {}", s(&h[0]), s(&h[1])));
        }
        let given = &t["response"];
        if given.is_object() {
            line(
                "answered",
                format!(
                    "the upstream: {}, {} bytes",
                    given["status"], given["body_bytes"]
                ),
            );
        }
        let got = &d["delivered"];
        // Headers set on an upstream response that Tollgate then replaced never reach the client.
        if got["how"] != "replaced" {
            for h in d["response_headers"].as_array().into_iter().flatten() {
                line("response", format!("{}: {}", s(&h[0]), s(&h[1])));
            }
        }
        let body = |b: &Value| b.as_str().map_or(b.to_string(), String::from);
        match got["how"].as_str() {
            Some("upstream") => line(
                "delivered",
                format!("{} with the upstream's body, unchanged", got["status"]),
            ),
            Some("redacted") => line(
                "delivered",
                format!(
                    "{} with the body redacted: {}",
                    got["status"],
                    body(&got["body"])
                ),
            ),
            Some("replaced") => {
                line(
                    "delivered",
                    format!(
                        "{} {} ({}) instead of the upstream's response",
                        got["status"],
                        s(&got["code"]),
                        s(&got["title"])
                    ),
                );
                line("delivered", got["body"].to_string());
            }
            _ => {}
        }
    } else {
        line(
            "decision",
            format!(
                "DENY {} {} ({})",
                d["status"],
                s(&d["code"]),
                s(&d["title"])
            ),
        );
        for h in d["headers"].as_array().into_iter().flatten() {
            line("response", format!("{}: {}", s(&h[0]), s(&h[1])));
        }
        line("response", d["problem"].to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Mint;

    fn orders() -> (Engine, PolicyDoc) {
        let text = include_str!("../../policies/orders.json");
        (
            Engine::compile(text.as_bytes()).unwrap(),
            crate::policy::parse(text.as_bytes()).unwrap(),
        )
    }

    fn spec(method: &str, path: &str, headers: &[(&str, &str)]) -> Spec {
        Spec {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
            peer: None,
            connection: None,
            response: None,
            rate_limit_service: Default::default(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    /// The trace of `spec` at `NOW`, without remote key sets.
    fn trace(engine: &Engine, doc: &PolicyDoc, spec: &Spec) -> Value {
        explain(engine, doc, spec, NOW * 1000, &[], None).unwrap()
    }

    #[test]
    fn an_allowed_token_request_is_traced() {
        let (engine, doc) = orders();
        let token = Mint::demo(NOW).claim("scope", "orders:read".into()).sign();
        let auth = format!("Bearer {token}");
        let t = trace(
            &engine,
            &doc,
            &spec("GET", "/orders/42", &[("authorization", &auth)]),
        );
        assert_eq!(t["decision"]["decision"], "allow");
        assert_eq!(t["route"]["name"], "get-order");
        assert_eq!(t["route"]["params"]["id"], "42");
        assert_eq!(t["authentication"]["provider"], "corp");
        assert_eq!(t["authorization"][0]["passed"], true);
        assert_eq!(t["limits"][0]["limit"], "per-caller");
        assert_eq!(t["credential"][0]["jwt"]["header"]["kid"], "demo-1");
        let text = render_text(&t);
        assert!(
            text.contains("route      get-order (GET path /orders/{id})  [id=42]"),
            "{text}"
        );
        assert!(
            text.contains("authn      passed: provider `corp`; principal jwt:corp:alice"),
            "{text}"
        );
        assert!(
            text.contains("authz      pass  one of the scopes [`orders:admin`, `orders:read`]"),
            "{text}"
        );
        assert!(
            text.contains("decision   ALLOW  route=get-order  principal=jwt:corp:alice"),
            "{text}"
        );
        assert!(text.contains("(expires in 3600 s)"), "{text}");
    }

    #[test]
    fn refusals_say_why() {
        let (engine, doc) = orders();
        let token = Mint::demo(NOW).claim("scope", "orders:write".into()).sign();
        let auth = format!("Bearer {token}");
        let t = trace(
            &engine,
            &doc,
            &spec("DELETE", "/orders/9", &[("authorization", &auth)]),
        );
        assert_eq!(t["decision"]["code"], "forbidden");
        let text = render_text(&t);
        assert!(
            text.contains("authz      FAIL  claim `roles` contains `support`"),
            "{text}"
        );
        assert!(text.contains("decision   DENY 403 forbidden"), "{text}");

        let expired = Mint::demo(NOW - 7200).sign();
        let auth = format!("Bearer {expired}");
        let t = trace(
            &engine,
            &doc,
            &spec("GET", "/users/alice", &[("authorization", &auth)]),
        );
        assert_eq!(t["authentication"]["code"], "token_expired");
        assert!(render_text(&t).contains("(expired 3600 s ago)"));

        let t = trace(&engine, &doc, &spec("GET", "/nowhere", &[]));
        assert!(t["route"].is_null());
        assert!(render_text(&t).contains("decision   DENY 404 route_not_found"));

        let t = trace(
            &engine,
            &doc,
            &spec(
                "GET",
                "/orders?limit=500",
                &[("x-api-key", "demo-key-reporting-2026q1")],
            ),
        );
        assert_eq!(t["decision"]["code"], "request_invalid");
        assert_eq!(t["decision"]["status"], 422);
        assert!(
            t["decision"]["problem"]["violations"].is_array(),
            "{}",
            t["decision"]
        );
        assert_eq!(t["authentication"]["principal"], "api_key:reporting-2026q1");
    }

    #[test]
    fn the_upstream_response_is_traced() {
        let text = include_str!("../../policies/directory.json");
        let engine = Engine::compile(text.as_bytes()).unwrap();
        let doc = crate::policy::parse(text.as_bytes()).unwrap();
        let token = Mint::demo(NOW)
            .claim("scope", "directory:read".into())
            .sign();
        let auth = format!("Bearer {token}");
        let answered = |path: &str, status: u16, body: &str| Spec {
            response: Some(crate::cli::request::Upstream {
                status,
                headers: vec![],
                body: body.as_bytes().to_vec(),
            }),
            ..spec("GET", path, &[("authorization", &auth)])
        };
        let t = explain(
            &engine,
            &doc,
            &answered("/teams/1", 200, r#"{"id": "x"}"#),
            NOW * 1000,
            &[],
            None,
        )
        .unwrap();
        assert_eq!(t["response"]["status"], 200);
        assert_eq!(t["decision"]["decision"], "allow");
        assert_eq!(t["decision"]["delivered"]["code"], "response_invalid");
        let text = render_text(&t);
        assert!(
            text.contains("answered   the upstream: 200, 11 bytes"),
            "{text}"
        );
        assert!(
            text.contains(
                "delivered  502 response_invalid (Bad gateway) instead of the upstream's response"
            ),
            "{text}"
        );
        assert!(!text.contains("response   "), "{text}");

        let t = explain(
            &engine,
            &doc,
            &answered("/people/7", 200, r#"{"id": 7, "name": "a", "ssn": "1"}"#),
            NOW * 1000,
            &[],
            None,
        )
        .unwrap();
        let text = render_text(&t);
        assert!(
            text.contains(r#"delivered  200 with the body redacted: {"id":7,"name":"a"}"#),
            "{text}"
        );
        assert!(text.contains("response   content-length: 19"), "{text}");

        let t = explain(
            &engine,
            &doc,
            &answered("/search", 200, "[{}]"),
            NOW * 1000,
            &[],
            None,
        )
        .unwrap();
        let text = render_text(&t);
        assert!(
            text.contains("(dry run: would deny with response_invalid)"),
            "{text}"
        );
        assert!(
            text.contains("delivered  200 with the upstream's body, unchanged"),
            "{text}"
        );
    }

    #[test]
    fn the_trace_is_the_engines_own() {
        let (engine, doc) = orders();
        // Refused before routes are matched: no route is claimed to have matched or not.
        let t = trace(
            &engine,
            &doc,
            &spec(
                "GET",
                "/orders",
                &[("host", "a.example"), ("host", "b.example")],
            ),
        );
        assert_eq!(t["decision"]["code"], "request_ambiguous");
        assert!(t["route"].is_null() && t["authentication"].is_null());
        assert!(
            render_text(&t).contains("route      not reached: refused before route matching"),
            "{}",
            render_text(&t)
        );
        // The engine's diagnostics: the route by its index, requirements as it judged them.
        let token = Mint::demo(NOW).claim("scope", "orders:read".into()).sign();
        let auth = format!("Bearer {token}");
        let t = trace(
            &engine,
            &doc,
            &spec("DELETE", "/orders/9", &[("authorization", &auth)]),
        );
        let index = t["route"]["index"].as_u64().unwrap() as usize;
        assert_eq!(
            doc.routes[index].name.as_deref(),
            t["route"]["name"].as_str()
        );
        assert_eq!(t["authentication"]["scopes"], json!(["orders:read"]));
        assert!(t["authorization"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["passed"] == false));
        assert!(t["decision"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("tollgate.requests.denied.")));
    }
}
