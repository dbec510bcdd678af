//! Security schemes and requirements: `oauth2`, `openIdConnect` and `http bearer` schemes become
//! JWT providers, `apiKey` schemes API-key locations; an operation's requirement objects become the
//! route's credentials and scopes. What the policy cannot express exactly is made stricter, never
//! looser, and reported.

use super::notes::Notes;
use super::refs::{Resolver, Target};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Where an API key is sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyPlace {
    Header(String),
    Query(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Bearer tokens checked by the JWT provider of the same name.
    Jwt {
        /// An issuer the document suggests (`openIdConnectUrl`, or an exported policy's
        /// `x-tollgate-issuer`); the overlay decides.
        issuer_hint: Option<String>,
    },
    ApiKey(KeyPlace),
    /// `mutualTLS`: a client certificate the listener validated (route `peers`).
    MutualTls,
    /// A scheme Tollgate cannot check (`http basic`, `mutualTLS`, an API key in a cookie), with
    /// the reason.
    Unsupported(String),
}

/// Envoy's recommended settings (envoy/README.md) refuse header names with underscores, so a
/// key sent in such a header never reaches Tollgate.
pub const UNDERSCORE: &str = "header `{}` has an underscore: Envoy with the settings in envoy/README.md (`headers_with_underscores_action: REJECT_REQUEST`) refuses such requests with 400 before Tollgate sees them; allow underscores in that listener or send the key in another header";

/// What a route requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Public,
    Credentials {
        /// JWT providers, sorted.
        providers: Vec<String>,
        /// API-key places accepted (empty: no API keys).
        api_keys: BTreeSet<KeyPlace>,
        /// `{"all": [...], "any": [...]}`, or none.
        scopes: Option<Value>,
        /// A client certificate is needed as well (`mutualTLS` in the requirements).
        mtls: bool,
    },
    /// Only a client certificate (`[{"<mutualTLS scheme>": []}]`): route `peers` alone.
    Workload,
    /// No requirement object can be met by a credential Tollgate checks: the route is left out
    /// (deny by default).
    Unenforceable,
}

/// The document's security schemes.
#[derive(Debug, Default)]
pub struct Schemes {
    pub schemes: BTreeMap<String, Scheme>,
}

impl Schemes {
    pub fn read(r: &mut Resolver, notes: &mut Notes) -> Schemes {
        let at = Target::main("/components/securitySchemes");
        let raw = r.get(&at).cloned().unwrap_or(Value::Null);
        let mut schemes = BTreeMap::new();
        let Value::Object(map) = raw else {
            return Schemes { schemes };
        };
        for (name, value) in map {
            let here = at.join(&name);
            let (s, _) = match r.follow(&value, &here) {
                Ok(v) => v,
                Err(e) => {
                    notes.error(&r.shown(&here), &e);
                    continue;
                }
            };
            let kind = s.get("type").and_then(Value::as_str).unwrap_or("");
            let scheme = match kind {
                "oauth2" => Scheme::Jwt {
                    issuer_hint: s
                        .get("x-tollgate-issuer")
                        .and_then(Value::as_str)
                        .map(String::from),
                },
                "openIdConnect" => Scheme::Jwt {
                    issuer_hint: s
                        .get("x-tollgate-issuer")
                        .and_then(Value::as_str)
                        .map(String::from)
                        .or_else(|| {
                            s.get("openIdConnectUrl").and_then(Value::as_str).map(|u| {
                                u.trim_end_matches("/.well-known/openid-configuration")
                                    .to_string()
                            })
                        }),
                },
                "http" => {
                    let scheme = s
                        .get("scheme")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    if scheme == "bearer" {
                        Scheme::Jwt {
                            issuer_hint: s
                                .get("x-tollgate-issuer")
                                .and_then(Value::as_str)
                                .map(String::from),
                        }
                    } else {
                        Scheme::Unsupported(format!(
                            "HTTP `{scheme}` authentication is not a credential Tollgate checks (it checks bearer JWTs and API keys)"
                        ))
                    }
                }
                "apiKey" => {
                    let key = s.get("name").and_then(Value::as_str).unwrap_or("");
                    match s.get("in").and_then(Value::as_str) {
                        Some("header") => Scheme::ApiKey(KeyPlace::Header(key.to_ascii_lowercase())),
                        Some("query") => Scheme::ApiKey(KeyPlace::Query(key.to_string())),
                        other => Scheme::Unsupported(format!(
                            "API keys in `{}` are not checked (Tollgate reads them from a header or the query)",
                            other.unwrap_or("?")
                        )),
                    }
                }
                "mutualTLS" => Scheme::MutualTls,
                other => Scheme::Unsupported(format!("unknown security scheme type `{other}`")),
            };
            if let Scheme::Unsupported(why) = &scheme {
                notes.unenforced(&r.shown(&here), why);
            }
            if let Scheme::ApiKey(KeyPlace::Header(h)) = &scheme {
                if h.contains('_') {
                    notes.unenforced(&r.shown(&here), &UNDERSCORE.replace("{}", h));
                }
            }
            schemes.insert(name, scheme);
        }
        Schemes { schemes }
    }

    /// The route's requirements from `requirements` (the operation's `security`, or the
    /// document's), found at `at`; `None` when neither says anything.
    pub fn auth(&self, requirements: Option<&Value>, at: &str, notes: &mut Notes) -> Auth {
        let Some(reqs) = requirements else {
            notes.unenforced(
                at,
                "no security requirement (neither the operation nor the document has `security`): the route is public",
            );
            return Auth::Public;
        };
        let Some(list) = reqs.as_array() else {
            notes.error(at, "`security` must be an array of requirement objects");
            return Auth::Unenforceable;
        };
        if list.is_empty() {
            return Auth::Public;
        }
        // One alternative per requirement object: a credential and the scopes it must hold.
        let mut alternatives: Vec<(Cred, BTreeSet<String>)> = Vec::new();
        // Requirement objects that name a `mutualTLS` scheme, and those that name only one.
        let (mut with_mtls, mut only_mtls) = (0, 0);
        for (i, req) in list.iter().enumerate() {
            let here = format!("{at}/{i}");
            let Some(obj) = req.as_object() else {
                notes.error(&here, "a security requirement must be an object");
                continue;
            };
            // A client certificate is checked by the route's `peers`, beside the one credential.
            let mut obj = obj.clone();
            let before = obj.len();
            obj.retain(|name, _| !matches!(self.schemes.get(name), Some(Scheme::MutualTls)));
            if obj.len() < before {
                with_mtls += 1;
                if obj.is_empty() {
                    only_mtls += 1;
                    continue;
                }
            }
            let obj = &obj;
            if obj.is_empty() && list.len() == 1 {
                // `[{}]`: no credential at all, as explicit as `[]`.
                return Auth::Public;
            }
            if obj.is_empty() {
                notes.unenforced(
                    &here,
                    "an empty requirement `{}` makes authentication optional: the route is public",
                );
                return Auth::Public;
            }
            if obj.len() > 1 {
                let names: Vec<&str> = obj.keys().map(String::as_str).collect();
                notes.unenforced(
                    &here,
                    &format!(
                        "this requirement needs several credentials at once ({}); Tollgate authenticates a request with one, so this alternative is left out",
                        names.join(" and ")
                    ),
                );
                continue;
            }
            for (name, scopes) in obj {
                let scopes: BTreeSet<String> = scopes
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                match self.schemes.get(name) {
                    None => notes.error(
                        &here,
                        &format!("`{name}` is not a security scheme of the document"),
                    ),
                    // Taken out of the requirement above.
                    Some(Scheme::MutualTls) => {}
                    Some(Scheme::Unsupported(_)) => notes.unenforced(
                        &here,
                        &format!("scheme `{name}` is not checked by Tollgate: this alternative is left out"),
                    ),
                    Some(Scheme::Jwt { .. }) => alternatives.push((Cred::Jwt(name.clone()), scopes)),
                    Some(Scheme::ApiKey(place)) => {
                        alternatives.push((Cred::Key(place.clone()), scopes));
                    }
                }
            }
        }
        if with_mtls > 0 && with_mtls < list.len() {
            notes.unenforced(
                at,
                "some alternatives need a client certificate and some do not: the route requires one for every alternative, which is stricter than the document",
            );
        }
        if only_mtls > 0 && !alternatives.is_empty() {
            notes.unenforced(
                at,
                "a client certificate alone or a credential: the route requires both, which is stricter than the document",
            );
        }
        if alternatives.is_empty() && only_mtls > 0 {
            return Auth::Workload;
        }
        if alternatives.is_empty() {
            notes.unenforced(
                at,
                "no requirement can be met with a credential Tollgate checks: the route is left out, so its requests are refused",
            );
            return Auth::Unenforceable;
        }
        let scopes = scope_rule(&alternatives, at, notes);
        let mut providers = BTreeSet::new();
        let mut api_keys = BTreeSet::new();
        for (c, _) in &alternatives {
            match c {
                Cred::Jwt(p) => {
                    providers.insert(p.clone());
                }
                Cred::Key(place) => {
                    api_keys.insert(place.clone());
                }
            }
        }
        Auth::Credentials {
            providers: providers.into_iter().collect(),
            api_keys,
            scopes,
            mtls: with_mtls > 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cred {
    Jwt(String),
    Key(KeyPlace),
}

/// The route's `scopes` for the alternatives (credential, scopes). Exact when the alternatives
/// are every credential with the same scopes (`all`), or every credential with the same scopes
/// plus one of a list (`all` + `any`); otherwise every scope of every alternative is required
/// (stricter than the document, reported).
fn scope_rule(alts: &[(Cred, BTreeSet<String>)], at: &str, notes: &mut Notes) -> Option<Value> {
    let creds: BTreeSet<&Cred> = alts.iter().map(|(c, _)| c).collect();
    let mut all: Option<BTreeSet<String>> = None;
    for (_, s) in alts {
        all = Some(match all {
            None => s.clone(),
            Some(a) => a.intersection(s).cloned().collect(),
        });
    }
    let all = all.unwrap_or_default();
    let extras: Vec<(&Cred, BTreeSet<String>)> = alts
        .iter()
        .map(|(c, s)| (c, s.difference(&all).cloned().collect()))
        .collect();
    let as_json = |all: &BTreeSet<String>, any: &BTreeSet<String>| -> Option<Value> {
        if all.is_empty() && any.is_empty() {
            return None;
        }
        let mut o = serde_json::Map::new();
        if !all.is_empty() {
            o.insert("all".into(), json!(all));
        }
        if !any.is_empty() {
            o.insert("any".into(), json!(any));
        }
        Some(Value::Object(o))
    };
    if extras.iter().all(|(_, e)| e.is_empty()) {
        return as_json(&all, &BTreeSet::new());
    }
    if extras.iter().all(|(_, e)| e.len() == 1) {
        let pairs: BTreeSet<(&Cred, &String)> = extras
            .iter()
            .filter_map(|(c, e)| e.iter().next().map(|s| (*c, s)))
            .collect();
        let any: BTreeSet<String> = pairs.iter().map(|(_, s)| (*s).clone()).collect();
        if pairs.len() == creds.len() * any.len() {
            return as_json(&all, &any);
        }
    }
    let union: BTreeSet<String> = alts.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    notes.unenforced(
        at,
        &format!(
            "the alternatives' scopes cannot be expressed as `all` + `any`: the route requires every one of them ({}), which is stricter than the document",
            union.iter().cloned().collect::<Vec<_>>().join(" ")
        ),
    );
    as_json(&union, &BTreeSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn schemes() -> Schemes {
        let doc = json!({"components": {"securitySchemes": {
            "oauth": {"type": "oauth2", "flows": {}},
            "oidc": {"type": "openIdConnect", "openIdConnectUrl": "https://id.example/.well-known/openid-configuration"},
            "bearer": {"type": "http", "scheme": "Bearer"},
            "basic": {"type": "http", "scheme": "basic"},
            "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "qkey": {"type": "apiKey", "in": "query", "name": "api_key"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": "sid"},
            "mtls": {"type": "mutualTLS"},
            "ref": {"$ref": "#/components/securitySchemes/oauth"}
        }}});
        let mut r = Resolver::new(Path::new("s.json"), doc);
        let mut notes = Notes::default();
        let s = Schemes::read(&mut r, &mut notes);
        assert_eq!(notes.unenforced_count(), 2, "basic and cookie");
        s
    }

    fn auth(reqs: Value) -> (Auth, Notes) {
        let mut notes = Notes::default();
        let a = schemes().auth(Some(&reqs), "#/paths/~1a/get/security", &mut notes);
        (a, notes)
    }

    fn creds(providers: &[&str], keys: &[KeyPlace], scopes: Option<Value>) -> Auth {
        Auth::Credentials {
            providers: providers.iter().map(|s| s.to_string()).collect(),
            api_keys: keys.iter().cloned().collect(),
            scopes,
            mtls: false,
        }
    }

    #[test]
    fn schemes_map_to_providers_and_key_places() {
        let s = schemes();
        assert_eq!(s.schemes["oauth"], Scheme::Jwt { issuer_hint: None });
        assert_eq!(
            s.schemes["oidc"],
            Scheme::Jwt {
                issuer_hint: Some("https://id.example".into())
            }
        );
        assert_eq!(s.schemes["bearer"], Scheme::Jwt { issuer_hint: None });
        assert_eq!(
            s.schemes["key"],
            Scheme::ApiKey(KeyPlace::Header("x-api-key".into()))
        );
        assert_eq!(
            s.schemes["qkey"],
            Scheme::ApiKey(KeyPlace::Query("api_key".into()))
        );
        assert!(matches!(s.schemes["basic"], Scheme::Unsupported(_)));
        assert!(matches!(s.schemes["cookie"], Scheme::Unsupported(_)));
        assert_eq!(s.schemes["ref"], Scheme::Jwt { issuer_hint: None });
    }

    #[test]
    fn mutual_tls_is_a_client_certificate_beside_the_credential() {
        assert_eq!(schemes().schemes["mtls"], Scheme::MutualTls);
        // Alone: the workload is the caller.
        let (a, n) = auth(json!([{"mtls": []}]));
        assert_eq!(a, Auth::Workload);
        assert!(n.is_empty());
        // With a token: both, and the token's scopes.
        let (a, n) = auth(json!([{"oauth": ["r"], "mtls": []}]));
        let Auth::Credentials {
            mtls,
            scopes,
            providers,
            ..
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(mtls);
        assert_eq!(
            (providers, scopes),
            (vec!["oauth".to_string()], Some(json!({"all": ["r"]})))
        );
        assert!(n.is_empty());
        // A certificate for one alternative only, or a certificate *or* a token: both are required
        // (stricter than the document), and reported.
        let (a, n) = auth(json!([{"oauth": [], "mtls": []}, {"key": []}]));
        assert!(matches!(a, Auth::Credentials { mtls: true, .. }), "{a:?}");
        assert_eq!(n.unenforced_count(), 1);
        let (a, n) = auth(json!([{"mtls": []}, {"oauth": []}]));
        assert!(matches!(a, Auth::Credentials { mtls: true, .. }), "{a:?}");
        assert_eq!(n.unenforced_count(), 2);
    }

    #[test]
    fn requirements_become_credentials_and_scopes() {
        // One requirement: all of its scopes (OpenAPI's meaning).
        let (a, n) = auth(json!([{"oauth": ["b", "a"]}]));
        assert_eq!(a, creds(&["oauth"], &[], Some(json!({"all": ["a", "b"]}))));
        assert!(n.is_empty());
        // Alternatives with the same scopes: any of the credentials.
        let (a, _) = auth(json!([{"oauth": ["r"]}, {"key": ["r"]}]));
        assert_eq!(
            a,
            creds(
                &["oauth"],
                &[KeyPlace::Header("x-api-key".into())],
                Some(json!({"all": ["r"]}))
            )
        );
        // Each credential with a common scope plus one of two: all + any, exactly.
        let (a, n) = auth(
            json!([{"oauth": ["c", "x"]}, {"oauth": ["c", "y"]}, {"oidc": ["c", "x"]}, {"oidc": ["c", "y"]}]),
        );
        assert_eq!(
            a,
            creds(
                &["oauth", "oidc"],
                &[],
                Some(json!({"all": ["c"], "any": ["x", "y"]}))
            )
        );
        assert!(n.is_empty());
        // Not a cross product: every scope required, stricter, reported.
        let (a, n) = auth(json!([{"oauth": ["x"]}, {"oidc": ["y"]}]));
        assert_eq!(
            a,
            creds(&["oauth", "oidc"], &[], Some(json!({"all": ["x", "y"]})))
        );
        assert_eq!(n.unenforced_count(), 1);
        // No scopes at all.
        let (a, _) = auth(json!([{"bearer": []}]));
        assert_eq!(a, creds(&["bearer"], &[], None));
    }

    #[test]
    fn public_optional_and_unenforceable_routes() {
        assert_eq!(auth(json!([])).0, Auth::Public);
        let (a, n) = auth(json!([{"oauth": []}, {}]));
        assert_eq!(a, Auth::Public);
        assert_eq!(n.unenforced_count(), 1);
        let (a, n) = auth(json!([{"basic": []}]));
        assert_eq!(a, Auth::Unenforceable);
        assert_eq!(n.unenforced_count(), 2);
        // Two credentials at once cannot be required: that alternative is left out.
        let (a, n) = auth(json!([{"oauth": [], "key": []}, {"qkey": []}]));
        assert_eq!(a, creds(&[], &[KeyPlace::Query("api_key".into())], None));
        assert_eq!(n.unenforced_count(), 1);
        let mut notes = Notes::default();
        assert_eq!(
            schemes().auth(None, "#/paths/~1a/get", &mut notes),
            Auth::Public
        );
        assert_eq!(notes.unenforced_count(), 1);
        let (_, n) = auth(json!([{"nope": []}]));
        assert_eq!(n.errors().count(), 1);
    }
}
