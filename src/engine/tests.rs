//! Decision tables for the engine: a policy, a request, the expected decision.

use super::*;
use crate::codes::DenialCode;
use crate::jwt::remote;
use crate::store::MemoryStore;
use crate::testkit::{self, Mint};
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_800_000_000;

fn provider(keys: Value, algorithms: &[&str]) -> Value {
    json!({
        "issuer": testkit::ISSUER,
        "audiences": [testkit::AUDIENCE],
        "algorithms": algorithms,
        "jwks": {"keys": keys},
        "forward_claims": {"sub": "x-user-id", "roles": "x-user-roles"},
    })
}

fn policy() -> Value {
    json!({
        "realm": "test",
        "providers": {
            "main": provider(json!(testkit::public_jwks()), &["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA", "HS256"]),
            "partner": {
                "issuer": "https://partner.test",
                "audiences": [testkit::AUDIENCE],
                "algorithms": ["ES256"],
                "jwks": {"keys": [testkit::public_jwk("ec256")]},
                "sources": [{"header": "x-partner-token"}, {"query": "access_token"}, {"cookie": "session"}],
                "forward_claims": {"sub": "x-partner-id"},
            },
        },
        "routes": [
            {"name": "health", "path": "/health", "methods": ["GET"], "public": true},
            {"name": "api", "prefix": "/api/", "providers": ["main"]},
            {"name": "partner", "prefix": "/partner/", "providers": ["partner"]},
            {"name": "either", "prefix": "/both/", "providers": ["main", "partner"]},
        ],
    })
}

fn engine_from(v: &Value) -> Engine {
    Engine::compile(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
}

struct Case<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
}

fn get(path: &str) -> Case<'_> {
    Case {
        method: "GET",
        path,
        headers: vec![],
    }
}

impl<'a> Case<'a> {
    fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {token}")));
        self
    }
    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
    fn run(&self, engine: &Engine, state: &mut VmState) -> Outcome {
        let headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        engine.decide(
            &Request {
                method: self.method,
                path: self.path,
                headers: &headers,
                peer: None,
                connection: None,
            },
            NOW,
            state,
        )
    }
}

fn code(o: &Outcome) -> Option<DenialCode> {
    o.decision.denial_code()
}

fn allowed(o: &Outcome) -> &Allow {
    match &o.decision {
        Decision::Allow(a) => a,
        Decision::Deny(d) | Decision::WouldDeny(d) => panic!("denied: {:?}", d.code),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn decision_table() {
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let good = Mint::new(Alg::RS256, "rsa-1").now(NOW).sign();
    use DenialCode::*;
    let cases: Vec<(&str, Case, Option<DenialCode>)> = vec![
        ("public route", get("/health"), None),
        (
            "public route, wrong method",
            Case {
                method: "POST",
                ..get("/health")
            },
            Some(RouteNotFound),
        ),
        ("unknown route", get("/nope"), Some(RouteNotFound)),
        ("no token", get("/api/x"), Some(TokenMissing)),
        (
            "basic auth is not a token",
            get("/api/x").header("authorization", "Basic YTpi"),
            Some(TokenMissing),
        ),
        ("valid", get("/api/x").bearer(&good), None),
        (
            "valid, query ignored for routing",
            get("/api/x?a=1").bearer(&good),
            None,
        ),
        (
            "two bearer headers",
            get("/api/x").bearer(&good).bearer(&good),
            Some(MultipleTokens),
        ),
        (
            "garbage",
            get("/api/x").bearer("garbage"),
            Some(TokenMalformed),
        ),
        (
            "expired",
            get("/api/x").bearer(
                &Mint::new(Alg::RS256, "rsa-1")
                    .now(NOW)
                    .exp(NOW - 120)
                    .sign(),
            ),
            Some(TokenExpired),
        ),
        (
            "not yet valid",
            get("/api/x").bearer(
                &Mint::new(Alg::RS256, "rsa-1")
                    .now(NOW)
                    .nbf(NOW + 120)
                    .sign(),
            ),
            Some(TokenNotYetValid),
        ),
        (
            "wrong issuer",
            get("/api/x").bearer(
                &Mint::new(Alg::ES256, "ec256")
                    .now(NOW)
                    .claim("iss", json!("https://evil"))
                    .sign(),
            ),
            Some(IssuerMismatch),
        ),
        (
            "wrong audience",
            get("/api/x").bearer(
                &Mint::new(Alg::ES256, "ec256")
                    .now(NOW)
                    .claim("aud", json!("other"))
                    .sign(),
            ),
            Some(AudienceMismatch),
        ),
        (
            "bad signature",
            get("/api/x").bearer(&testkit::tamper_payload(&good, json!({"sub": "root"}))),
            Some(SignatureInvalid),
        ),
        (
            "signed by a key not in the set",
            get("/api/x").bearer(&Mint::new(Alg::RS256, "rsa-1").key("rsa-2").now(NOW).sign()),
            Some(SignatureInvalid),
        ),
        (
            "unknown kid",
            get("/api/x").bearer(&Mint::new(Alg::RS256, "rsa-9").key("rsa-1").now(NOW).sign()),
            Some(UnknownKey),
        ),
        (
            "alg none",
            get("/api/x").bearer(&testkit::unsigned(
                json!({"alg": "none"}),
                json!({"sub": "a"}),
            )),
            Some(AlgorithmNotAllowed),
        ),
        (
            "alg outside provider list",
            get("/api/x").bearer(&Mint::new(Alg::RS512, "rsa-1").now(NOW).sign()),
            Some(AlgorithmNotAllowed),
        ),
        (
            "crit header",
            get("/api/x").bearer(&testkit::unsigned(
                json!({"alg": "RS256", "crit": ["x"]}),
                json!({}),
            )),
            Some(CriticalHeaderUnsupported),
        ),
        (
            "oversize",
            get("/api/x").bearer(
                &Mint::new(Alg::ES256, "ec256")
                    .now(NOW)
                    .claim("pad", json!("x".repeat(9000)))
                    .sign(),
            ),
            Some(TokenTooLarge),
        ),
        (
            "no kid: every key of the alg is tried",
            get("/api/x").bearer(&Mint::new(Alg::RS256, "rsa-1").no_kid().now(NOW).sign()),
            None,
        ),
    ];
    for (note, case, want) in cases {
        assert_eq!(code(&case.run(&engine, &mut state)), want, "{note}");
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: HMAC over the token with the RSA public key as the secret.
    use jwt_simple::prelude::*;
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let pem = RS256PublicKey::from_components(
        &base64_decode(&testkit::public_jwk("rsa-1")["n"]),
        &base64_decode(&testkit::public_jwk("rsa-1")["e"]),
    )
    .unwrap()
    .to_pem()
    .unwrap();
    let claims = Claims::create(Duration::from_hours(1))
        .with_issuer(testkit::ISSUER)
        .with_audience(testkit::AUDIENCE);
    let forged = HS256Key::from_bytes(pem.as_bytes())
        .with_key_id("rsa-1")
        .authenticate(claims)
        .unwrap();
    // Provider allows HS256 too (for its `hmac` key); the RSA key can never act as an HMAC secret.
    let out = get("/api/x").bearer(&forged).run(&engine, &mut state);
    assert!(
        matches!(
            code(&out),
            Some(DenialCode::UnknownKey | DenialCode::SignatureInvalid)
        ),
        "{out:?}"
    );
    // A provider that does not list HS256 refuses it before touching a key.
    let mut p = policy();
    p["providers"]["main"]["algorithms"] = json!(["RS256"]);
    p["providers"]["main"]["jwks"]["keys"] = json!([testkit::public_jwk("rsa-1")]);
    let engine = engine_from(&p);
    let out = get("/api/x")
        .bearer(&forged)
        .run(&engine, &mut engine.new_state());
    assert_eq!(code(&out), Some(DenialCode::AlgorithmNotAllowed));
}

fn base64_decode(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.as_str().unwrap())
        .unwrap()
}

#[wasm_bindgen_test(unsupported = test)]
fn every_algorithm_family_passes_end_to_end_in_the_engine() {
    let mut p = policy();
    p["providers"]["main"]["algorithms"] =
        json!(Alg::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    let engine = engine_from(&p);
    let mut state = engine.new_state();
    for (alg, kid) in testkit::ALG_KEYS {
        let t = Mint::new(alg, kid).now(NOW).sign();
        assert_eq!(
            code(&get("/api/x").bearer(&t).run(&engine, &mut state)),
            None,
            "{alg}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn forwarded_claims_replace_forged_copies() {
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let t = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("roles", json!(["a", "b"]))
        .sign();
    let out = get("/api/x")
        .bearer(&t)
        .header("x-user-id", "root")
        .run(&engine, &mut state);
    let a = allowed(&out);
    for h in ["x-user-id", "x-user-roles", "x-partner-id", "authorization"] {
        assert!(
            a.remove_headers.iter().any(|r| r == h),
            "{h} removed: {a:?}"
        );
    }
    assert!(a
        .set_headers
        .contains(&("x-user-id".into(), "alice".into())));
    assert!(a
        .set_headers
        .contains(&("x-user-roles".into(), "a,b".into())));
    assert_eq!(a.principal.as_deref(), Some("jwt:main:alice"));
    assert_eq!(a.route, "api");
    // Public routes strip forged identity headers too.
    let out = get("/health")
        .header("x-user-id", "root")
        .run(&engine, &mut state);
    assert!(allowed(&out)
        .remove_headers
        .iter()
        .any(|r| r == "x-user-id"));
    // A claim with a newline is not forwarded (no header injection).
    let t = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("sub", json!("a\r\nx-admin: 1"))
        .sign();
    let out = get("/api/x").bearer(&t).run(&engine, &mut state);
    assert!(allowed(&out)
        .set_headers
        .iter()
        .all(|(h, _)| h != "x-user-id"));
}

#[wasm_bindgen_test(unsupported = test)]
fn forward_token_keeps_authorization() {
    let mut p = policy();
    p["providers"]["main"]["forward_token"] = json!(true);
    let engine = engine_from(&p);
    let t = Mint::new(Alg::ES256, "ec256").now(NOW).sign();
    let out = get("/api/x")
        .bearer(&t)
        .run(&engine, &mut engine.new_state());
    assert!(!allowed(&out)
        .remove_headers
        .iter()
        .any(|h| h == "authorization"));
}

#[wasm_bindgen_test(unsupported = test)]
fn other_sources_and_stripping() {
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let t = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("iss", json!("https://partner.test"))
        .sign();
    let out = get("/partner/x")
        .header("x-partner-token", &t)
        .run(&engine, &mut state);
    assert!(allowed(&out)
        .remove_headers
        .contains(&"x-partner-token".to_string()));
    let path = format!("/partner/x?a=1&access_token={t}");
    let out = get(&path).run(&engine, &mut state);
    assert!(allowed(&out)
        .set_headers
        .contains(&(":path".into(), "/partner/x?a=1".into())));
    let out = get("/partner/x")
        .header("cookie", &format!("theme=dark; session={t}"))
        .run(&engine, &mut state);
    assert!(allowed(&out)
        .set_headers
        .contains(&("cookie".into(), "theme=dark".into())));
    // A token in two sources is refused.
    let out = get(&path)
        .header("x-partner-token", &t)
        .run(&engine, &mut state);
    assert_eq!(code(&out), Some(DenialCode::MultipleTokens));
    // The bearer header is not a source of the partner provider.
    let out = get("/partner/x").bearer(&t).run(&engine, &mut state);
    assert_eq!(code(&out), Some(DenialCode::TokenMissing));
}

#[wasm_bindgen_test(unsupported = test)]
fn provider_chosen_by_issuer_when_sources_overlap() {
    let mut p = policy();
    p["providers"]["partner"]["sources"] =
        json!([{"header": "authorization", "prefix": "Bearer "}]);
    let engine = engine_from(&p);
    let mut state = engine.new_state();
    let main = Mint::new(Alg::RS256, "rsa-1").now(NOW).sign();
    let partner = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("iss", json!("https://partner.test"))
        .sign();
    let other = Mint::new(Alg::ES256, "ec256")
        .now(NOW)
        .claim("iss", json!("https://nobody"))
        .sign();
    assert_eq!(
        allowed(&get("/both/x").bearer(&main).run(&engine, &mut state))
            .principal
            .as_deref(),
        Some("jwt:main:alice")
    );
    let out = get("/both/x").bearer(&partner).run(&engine, &mut state);
    assert!(allowed(&out)
        .set_headers
        .contains(&("x-partner-id".into(), "alice".into())));
    assert_eq!(
        code(&get("/both/x").bearer(&other).run(&engine, &mut state)),
        Some(DenialCode::IssuerMismatch)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn cache_skips_verification_but_not_expiry() {
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let t = Mint::new(Alg::RS256, "rsa-1").iat(NOW).exp(NOW + 10).sign();
    let req = get("/api/x").bearer(&t);
    assert_eq!(req.run(&engine, &mut state).effects.cache_hit, Some(false));
    let second = req.run(&engine, &mut state);
    assert_eq!(second.effects.cache_hit, Some(true));
    assert_eq!(code(&second), None);
    assert_eq!((state.cache.hits, state.cache.misses), (1, 1));
    // Past exp + skew the cached entry is not used and the token is refused.
    let headers = vec![("authorization".to_string(), format!("Bearer {t}"))];
    let late = engine.decide(
        &Request {
            method: "GET",
            path: "/api/x",
            headers: &headers,
            peer: None,
            connection: None,
        },
        NOW + 71,
        &mut state,
    );
    assert_eq!(code(&late), Some(DenialCode::TokenExpired));
    // A cached token is only good for its own provider's routes.
    let out = get("/partner/x")
        .header("x-partner-token", &t)
        .run(&engine, &mut state);
    assert_ne!(code(&out), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn remote_provider_fails_closed_until_keys_arrive() {
    let mut p = policy();
    p["providers"]["main"] = json!({
        "issuer": testkit::ISSUER,
        "audiences": [testkit::AUDIENCE],
        "algorithms": ["RS256"],
        "remote_jwks": {"cluster": "idp", "uri": "http://idp.test/jwks.json"},
    });
    let engine = engine_from(&p);
    let mut state = engine.new_state();
    let t = Mint::new(Alg::RS256, "rsa-2").now(NOW).sign();
    let out = get("/api/x").bearer(&t).run(&engine, &mut state);
    assert_eq!(code(&out), Some(DenialCode::KeysUnavailable));
    let Decision::Deny(d) = &out.decision else {
        unreachable!()
    };
    assert_eq!(d.status, 503);

    let store = MemoryStore::default();
    let (index, provider, spec) = engine.remote_providers().next().unwrap();
    assert!(remote::claim_fetch(&store, spec, NOW).unwrap());
    let body = json!({"keys": [testkit::public_jwk("rsa-1")]}).to_string();
    remote::complete_fetch(
        &store,
        spec,
        &provider.algorithms,
        NOW,
        Ok(body.as_bytes()),
        &mut state.remote[index],
    )
    .unwrap()
    .unwrap();
    // rsa-2 is not published yet: denied, and an early refresh is asked for.
    let out = get("/api/x").bearer(&t).run(&engine, &mut state);
    assert_eq!(code(&out), Some(DenialCode::UnknownKey));
    assert_eq!(
        out.effects.early_refresh,
        Some(refresh::Source::Provider(index))
    );
    let ok = Mint::new(Alg::RS256, "rsa-1").now(NOW).sign();
    assert_eq!(
        code(&get("/api/x").bearer(&ok).run(&engine, &mut state)),
        None
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn denials_render_problem_and_challenge() {
    let engine = engine_from(&policy());
    let out = get("/api/x").run(&engine, &mut engine.new_state());
    let Decision::Deny(d) = &out.decision else {
        panic!()
    };
    assert_eq!(d.status, 401);
    assert!(d
        .headers
        .contains(&("www-authenticate", "Bearer realm=\"test\"".into())));
    assert!(d
        .headers
        .contains(&("content-type", "application/problem+json".into())));
    let body: Value = serde_json::from_str(&d.body()).unwrap();
    assert_eq!(body["type"], "urn:tollgate:problem:token_missing");
    let bad = Mint::new(Alg::RS256, "rsa-1")
        .now(NOW)
        .exp(NOW - 500)
        .sign();
    let out = get("/api/x")
        .bearer(&bad)
        .run(&engine, &mut engine.new_state());
    let Decision::Deny(d) = &out.decision else {
        panic!()
    };
    assert!(d.headers.contains(&(
        "www-authenticate",
        "Bearer realm=\"test\", error=\"invalid_token\"".into()
    )));
    assert!(!d.body().contains(&bad), "token never echoed");
}

#[wasm_bindgen_test(unsupported = test)]
fn config_errors_are_all_reported_with_paths() {
    let p = json!({
        "realm": "a\"b",
        "providers": {
            "corp": {
                "issuer": "",
                "audiences": [],
                "algorithms": ["none", "HS999", "RS256", "RS256"],
                "jwks": {"keys": [{"kty": "RSA", "n": "@@", "e": "AQAB"}]},
                "remote_jwks": {"cluster": "c", "uri": "http://x/"},
                "clock_skew_seconds": 9999,
                "max_token_bytes": 10,
                "sources": [],
                "forward_claims": {"sub": "Authorization", "x": "bad header"},
            },
        },
        "routes": [{"prefix": "/", "providers": ["auth0"]}],
        "token_cache": {"max_entries": 10000000},
    });
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "realm",
        "providers.corp.issuer",
        "providers.corp.audiences",
        "providers.corp.algorithms[0]",
        "providers.corp.algorithms[1]",
        "providers.corp.algorithms[3]",
        "providers.corp",
        "providers.corp.clock_skew_seconds",
        "providers.corp.max_token_bytes",
        "providers.corp.sources",
        "providers.corp.forward_claims.sub",
        "providers.corp.forward_claims.x",
        "routes[0].providers[0]",
        "token_cache.max_entries",
    ] {
        assert!(paths.contains(&want), "missing {want} in {errors:#?}");
    }
    let none = errors
        .iter()
        .find(|e| e.path == "providers.corp.algorithms[0]")
        .unwrap();
    assert!(none.message.contains("never accepted"));
    let rendered = errors
        .iter()
        .find(|e| e.path == "routes[0].providers[0]")
        .unwrap()
        .to_string();
    assert_eq!(
        rendered,
        "policy `routes[0].providers[0]`: unknown provider `auth0`; expected one of [`corp`]"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn inline_key_errors_name_the_key() {
    let mut p = policy();
    p["providers"]["main"]["jwks"]["keys"] =
        json!([testkit::public_jwk("rsa-1"), {"kty": "RSA", "n": "@@", "e": "AQAB"}]);
    let errors = Engine::compile(p.to_string().as_bytes()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "providers.main.jwks.keys[1]");
    assert!(errors[0].message.contains("member `n` is not base64url"));
}

#[wasm_bindgen_test(unsupported = test)]
fn never_panics_on_hostile_requests() {
    let engine = engine_from(&policy());
    let mut state = engine.new_state();
    let long = "a".repeat(100_000);
    let inputs = [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "e30.e30.e30",
        "é.é.é",
        &long,
        "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOiJzb29uIn0.x",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.bm90IGpzb24.AAAA",
        "eyJhbGciOiJFUzUxMiIsImtpZCI6ImVjNTIxIn0.e30.AAAA",
    ];
    for t in inputs {
        for path in ["/api/x", "/partner/x", "/both/x"] {
            let _ = get(path).bearer(t).run(&engine, &mut state);
            let _ = get(path)
                .header("x-partner-token", t)
                .run(&engine, &mut state);
            let q = format!("{path}?access_token={t}&&=&x");
            let _ = get(&q)
                .header("cookie", &format!(";;=;session={t}"))
                .run(&engine, &mut state);
        }
    }
}
