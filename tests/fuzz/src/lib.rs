//! What each fuzz target feeds the engine, and the properties it checks on the way. Shared by the
//! cargo-fuzz targets (`fuzz_targets/*.rs`) and the native replay of seeds and regressions
//! (`tests/fuzz_regressions.rs`), so a crash input is replayed through exactly the code that found
//! it. A target function panics only where the engine broke a property; any other input is fine.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollgate::engine::audit::AuditRecord;
use tollgate::engine::{path, Decision, Engine, Mode, Outcome, Request};
use tollgate::jwt::jwks::KeySet;
use tollgate::jwt::offload::{SignatureCheck, SignatureHost};
use tollgate::jwt::remote::{self, RemoteSpec};
use tollgate::jwt::verify::{self, ClaimRules};
use tollgate::jwt::Alg;
use tollgate::payload::response::Verdict;
use tollgate::store::{MemoryStore, SharedStore};

/// A fuzz target: takes any bytes, panics only where the engine broke a property.
pub type Target = fn(&[u8]);

/// Every target by the name of its file in `fuzz_targets/` and of its folders in `seeds/` and
/// `regressions/`.
pub const TARGETS: [(&str, Target); 8] = [
    ("tokens", tokens),
    ("jwks", jwks),
    ("policy", policy),
    ("bodies", bodies),
    ("paths", paths),
    ("hosts", hosts),
    ("json", json_bodies),
    ("signatures", signatures),
];

/// The host clock in every target (2027-01-15): fixture tokens and the API keys of
/// `policies/orders.json` are valid then.
pub const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api.test";
const PEER: &str = "192.0.2.10:40000";

const PUBLIC_JWKS: &str = include_str!("../../fixtures/keys/public.jwks.json");
const PRIVATE_JWKS: &str = include_str!("../../fixtures/keys/private.jwks.json");
const ORDERS_POLICY: &str = include_str!("../../../policies/orders.json");
const DEMO_SIGNING_KEY: &str = include_str!("../../../envoy/demo/demo-signing-key.pem");

fn compile(policy: &str) -> Engine {
    match Engine::compile(policy.as_bytes()) {
        Ok(engine) => engine,
        Err(errors) => panic!("fixed fuzz policy does not compile: {errors:?}"),
    }
}

/// One decision with fresh per-VM state and a fresh store, so that inputs do not influence each
/// other (a fuzzer replays them in any order).
fn decide(engine: &Engine, method: &str, path: &str, headers: &[(String, String)]) -> Outcome {
    let mut state = engine.new_state();
    let req = Request {
        method,
        path,
        headers,
        peer: Some(PEER),
        connection: None,
    };
    engine.decide_at(&req, NOW * 1000, &mut state, &MemoryStore::default())
}

// ---------------------------------------------------------------------------------------------
// tokens

/// `HMAC-SHA256(key, message)` (RFC 2104), to sign fuzzed headers and payloads.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn fixture_hmac_secret() -> Vec<u8> {
    let doc: Value = serde_json::from_str(PRIVATE_JWKS).unwrap_or_default();
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == "hmac")
        .and_then(|k| k["k"].as_str())
        .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
        .unwrap_or_default()
}

struct TokenFixture {
    keys: KeySet,
    rules: ClaimRules,
    engine: Engine,
    hmac: Vec<u8>,
}

impl TokenFixture {
    fn new() -> TokenFixture {
        let doc: Value = serde_json::from_str(PUBLIC_JWKS).unwrap_or_default();
        let jwks = doc["keys"].as_array().cloned().unwrap_or_default();
        let keys = match KeySet::from_policy(&jwks, &Alg::ALL, "keys") {
            Ok(keys) => keys,
            Err(e) => panic!("fixture keys: {e:?}"),
        };
        let algorithms: Vec<&str> = Alg::ALL.iter().map(|a| a.as_str()).collect();
        let strict_keys: Vec<&Value> = jwks
            .iter()
            .filter(|k| ["hmac", "ec256", "ed25519"].contains(&k["kid"].as_str().unwrap_or("")))
            .collect();
        let policy = json!({
            "realm": "fuzz",
            "providers": {
                "main": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "algorithms": algorithms,
                    "jwks": {"keys": jwks},
                    "forward_claims": {"sub": "x-user-id", "roles": "x-user-roles", "exp": "x-exp"},
                },
                "strict": {
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE, "other"],
                    "algorithms": ["HS256", "ES256", "EdDSA"],
                    "jwks": {"keys": strict_keys},
                    "sources": [{"cookie": "session"}, {"query": "access_token"}],
                    "max_token_age_seconds": 600,
                    "require_expiration": false,
                    "required_claims": ["tenant"],
                    "scope_claims": ["scp"],
                    "clock_skew_seconds": 0,
                },
            },
            "routes": [
                {"name": "api", "prefix": "/api/", "providers": ["main"],
                 "scopes": {"any": ["read", "write"]},
                 "claims": {"any": [{"claim": "roles", "contains": "admin"},
                                    {"claim": "tenant", "one_of": ["t1", "t2"]}]}},
                {"name": "tenant", "path": "/tenants/{tenant}", "providers": ["strict"],
                 "owner": {"param": "tenant", "claim": "tenant"}},
            ],
        });
        TokenFixture {
            keys,
            rules: ClaimRules {
                issuer: ISSUER.into(),
                audiences: [AUDIENCE.to_string()].into(),
                skew: 60,
                max_age: Some(86_400),
                require_exp: true,
                required_claims: vec!["sub".into()],
            },
            engine: compile(&policy.to_string()),
            hmac: fixture_hmac_secret(),
        }
    }
}

thread_local! {
    static TOKENS: TokenFixture = TokenFixture::new();
}

/// A host that says yes to every signature: what follows a host's verdict (DER conversion before,
/// claims after) runs on every fuzzed token, not only on the rare one with a valid signature.
struct YesHost;

impl SignatureHost for YesHost {
    fn verify(&self, _check: &SignatureCheck<'_>) -> Option<bool> {
        Some(true)
    }
}

fn check_token(f: &TokenFixture, token: &str) {
    let _ = verify::peek_issuer(token);
    if let Ok(header) = verify::parse_header(token) {
        if let Some(candidates) = f.keys.candidates(header.alg, header.kid.as_deref()) {
            for verifier in candidates {
                if let (Ok(claims), _) = verify::verify_candidate(verifier, Some(&YesHost), token) {
                    let _ = f.rules.check(&claims, NOW);
                }
                if let Ok(claims) = verify::verify_signature(verifier.verifier, token) {
                    let _ = f.rules.check(&claims, NOW);
                    for name in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "roles"] {
                        let _ = verify::claim_value(&claims, name);
                    }
                }
            }
        }
    }
    let bearer = vec![("authorization".to_string(), format!("Bearer {token}"))];
    decide(&f.engine, "GET", "/api/x", &bearer);
    let cookie = vec![("cookie".to_string(), format!("a=b; session={token}"))];
    decide(&f.engine, "GET", "/tenants/t1", &cookie);
    let query = format!("/tenants/t1?a=1&access_token={token}&b");
    decide(&f.engine, "GET", &query, &[]);
}

/// A token: the input as a compact JWS, and, when it reads `<header>\n<payload>`, those two JSON
/// texts signed with the fixture HMAC key, so that the fuzzer gets past the signature to the
/// claims.
pub fn tokens(data: &[u8]) {
    TOKENS.with(|f| {
        check_token(f, &String::from_utf8_lossy(data));
        if let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let (header, payload) = data.split_at(nl);
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload.get(1..).unwrap_or_default())
            );
            let mac = hmac_sha256(&f.hmac, input.as_bytes());
            check_token(f, &format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac)));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// jwks

/// Runs every verifier of `set` once, on a token with a well-sized but wrong signature: a key that
/// decoded must not fail later, when it is used.
fn use_keys(set: &KeySet) {
    for alg in Alg::ALL {
        let Some(candidates) = set.candidates(alg, None) else {
            continue;
        };
        let sig_len = match alg {
            Alg::HS256 => 32,
            Alg::HS384 => 48,
            Alg::HS512 | Alg::ES256 | Alg::EdDSA => 64,
            Alg::ES384 => 96,
            Alg::ES512 => 132,
            _ => 256,
        };
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{}"}}"#, alg.as_str())),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#),
            URL_SAFE_NO_PAD.encode(vec![0x5a; sig_len])
        );
        for verifier in candidates {
            assert_eq!(verifier.verifier.alg(), alg);
            assert!(verify::verify_signature(verifier.verifier, &token).is_err());
        }
    }
}

fn remote_spec() -> RemoteSpec {
    RemoteSpec {
        key_prefix: "tollgate/v1/jwks/fuzz/000000000000".into(),
        cluster: "idp".into(),
        scheme: "https".into(),
        authority: "idp.test".into(),
        path: "/jwks".into(),
        refresh_seconds: 300,
        retry_seconds: 10,
        min_refresh_seconds: 30,
        timeout_ms: 5000,
        max_bytes: 1 << 20,
    }
}

/// A key set: as a fetched JWKS document, as the `keys` of a policy, and through the shared-data
/// path of remote JWKS (a fetch that completes, then what another worker reads back; and
/// whatever bytes shared data holds under the provider's keys, which are read, never trusted).
pub fn jwks(data: &[u8]) {
    if let Ok(set) = KeySet::from_fetched(data, &Alg::ALL) {
        assert!(!set.is_empty());
        use_keys(&set);
    }
    if let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(data) {
        if let Some(Value::Array(keys)) = doc.get("keys") {
            if let Ok(set) = KeySet::from_policy(keys, &Alg::ALL, "jwks.keys") {
                use_keys(&set);
            }
        }
    }
    let spec = remote_spec();
    let store = MemoryStore::default();
    let mut fetched = None;
    let completed = remote::complete_fetch(&store, &spec, &Alg::ALL, NOW, Ok(data), &mut fetched);
    let mut synced = None;
    let _ = remote::sync(&store, &spec, &Alg::ALL, &mut synced);
    if matches!(completed, Ok(Ok(()))) {
        assert!(fetched.is_some() && synced.is_some());
    }
    let _ = remote::claim_fetch(&store, &spec, NOW + 1000);

    let raw = MemoryStore::default();
    let state = format!("{}/state", spec.key_prefix);
    let keys = format!("{}/keys", spec.key_prefix);
    let _ = raw.set(&state, br#"{"generation": 3}"#, 0);
    let _ = raw.set(&keys, data, 0);
    let mut installed = None;
    let _ = remote::sync(&raw, &spec, &Alg::ALL, &mut installed);
    let _ = raw.set(&state, data, 0);
    let _ = remote::state(&raw, &spec);
    let _ = remote::request_early(&raw, &spec, NOW);
    let _ = remote::claim_fetch(&raw, &spec, NOW);
}

// ---------------------------------------------------------------------------------------------
// policy

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(number: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn pb_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => out.extend_from_slice(&[0x08, 0x00]),
        Value::Bool(b) => out.extend_from_slice(&[0x20, u8::from(*b)]),
        Value::Number(n) => {
            out.push(0x11);
            out.extend_from_slice(&n.as_f64().unwrap_or_default().to_le_bytes());
        }
        Value::String(s) => field(3, s.as_bytes(), &mut out),
        Value::Object(_) => field(5, &pb_struct(v), &mut out),
        Value::Array(items) => {
            let mut list = Vec::new();
            for item in items {
                field(1, &pb_value(item), &mut list);
            }
            field(6, &list, &mut out);
        }
    }
    out
}

/// The binary `google.protobuf.Struct` encoding of a JSON object, as Envoy hands a plugin a
/// `Struct` configuration.
pub fn pb_struct(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        let mut entry = Vec::new();
        field(1, k.as_bytes(), &mut entry);
        field(2, &pb_value(val), &mut entry);
        field(1, &entry, &mut out);
    }
    out
}

fn use_engine(engine: &Engine) {
    let json = vec![("content-type".to_string(), "application/json".to_string())];
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/health"),
        ("POST", "/orders"),
        ("GET", "/orders/1?limit=5"),
    ] {
        decide(engine, method, path, &json);
    }
    for i in 0..engine.routes().request_rules.len() {
        let _ = engine.max_body_bytes(tollgate::engine::BodyCheck {
            rules: Some(i),
            digest: false,
        });
        let _ = engine.check_body(i, "r", br#"{"a": [1, "x", null]}"#);
    }
    for i in 0..engine.routes().response_rules.len() {
        for status in [200, 404, 500] {
            if engine.response_applies(i, status).is_some() {
                let _ = engine.check_response(i, status, br#"{"a": {"b": [1]}}"#);
            }
        }
    }
    let _ = engine.remote_providers().count();
}

/// Whether the `Struct` encoding keeps every number of `v` as it is: integers within 2^53 (a
/// `Struct` holds doubles, and `pbstruct` reads integral ones back as integers, so `2.0` would
/// become `2` and a larger integer would lose digits).
fn struct_exact(v: &Value) -> bool {
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Number(n) => n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT),
        Value::Array(a) => a.iter().all(struct_exact),
        Value::Object(m) => m.values().all(struct_exact),
        _ => true,
    }
}

/// A policy document: JSON text or a protobuf `Struct`, as `on_configure` receives it. A JSON
/// object is also compiled in its `Struct` encoding, and both must agree on whether it is a valid
/// policy. What compiles is asked a few decisions.
pub fn policy(data: &[u8]) {
    if let Ok(engine) = Engine::compile(data) {
        use_engine(&engine);
    }
    if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(data) {
        let from_struct = Engine::compile(&pb_struct(&v));
        if let Ok(engine) = &from_struct {
            use_engine(engine);
        }
        if struct_exact(&v) {
            let from_text = Engine::compile(v.to_string().as_bytes());
            assert_eq!(
                from_text.is_ok(),
                from_struct.is_ok(),
                "JSON and Struct encodings disagree; JSON: {:?}; Struct: {:?}",
                from_text.err(),
                from_struct.err()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bodies

const BODIES_POLICY: &str = r##"{
  "schemas": {
    "Address": {
      "type": "object",
      "required": ["city", "country"],
      "properties": {
        "city": {"type": "string", "maxLength": 100},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"}
      }
    },
    "Order": {
      "type": "object",
      "required": ["item", "quantity"],
      "properties": {
        "item": {"type": "string", "minLength": 1, "maxLength": 64},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
        "price": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
        "email": {"type": "string", "format": "email"},
        "when": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 8},
        "ship_to": {"$ref": "#/$defs/Address"},
        "kind": {"oneOf": [{"const": "retail"}, {"enum": ["bulk", "sample"]}]}
      }
    },
    "User": {
      "type": "object",
      "required": ["id"],
      "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/Address"},
        "friends": {"type": "array", "items": {"$ref": "#/$defs/User"}},
        "meta": {"type": "object", "additionalProperties": true},
        "extra": {"type": "object", "properties": {"a": {"type": "string"}}, "patternProperties": {"^x-": {}}}
      }
    }
  },
  "payload_options": {"max_depth": 16, "max_violations": 5, "invalid_status": 422},
  "routes": [
    {"name": "create", "path": "/orders", "methods": ["POST"], "public": true,
     "request": {"body": {"$ref": "#/$defs/Order"}, "reject_unknown_properties": true,
                 "max_body_bytes": 8192}},
    {"name": "patch", "path": "/orders/{id}", "methods": ["PATCH"], "public": true,
     "request": {"body": {"type": "object", "minProperties": 1,
                          "properties": {"note": {"type": "string", "pattern": "^[a-z ]*$"}},
                          "if": {"required": ["note"]}, "then": {"maxProperties": 2},
                          "dependentRequired": {"a": ["b"]}}}},
    {"name": "user", "path": "/users/{id}", "methods": ["GET"], "public": true,
     "response": {"mode": "redact", "sensitive_fields": ["password", "ssn"],
                  "schemas": {"200": {"$ref": "#/$defs/User"},
                              "4XX": {"type": "object", "properties": {"error": {"type": "string"}}}}}},
    {"name": "users", "path": "/users", "methods": ["GET"], "public": true,
     "response": {"mode": "block",
                  "schemas": {"2XX": {"type": "array", "items": {"$ref": "#/$defs/User"}, "maxItems": 50}}}},
    {"name": "audit", "path": "/audit", "methods": ["GET"], "public": true,
     "response": {"mode": "report", "sensitive_fields": ["token"],
                  "schemas": {"200": {"type": "object", "properties": {"n": {"type": "integer"}}},
                              "5XX": false}}}
  ]
}"##;

thread_local! {
    static BODIES: Engine = compile(BODIES_POLICY);
}

fn has_member(v: &Value, names: &[&str]) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| names.contains(&k.as_str()) || has_member(x, names)),
        Value::Array(a) => a.iter().any(|x| has_member(x, names)),
        _ => false,
    }
}

/// A body: as the request body of every route with a body schema, and as an upstream response
/// under every response rule (block, redact, report). A redacted body is JSON, holds no
/// sensitive field, and redacting it again changes nothing.
pub fn bodies(data: &[u8]) {
    BODIES.with(|engine| {
        let _ = tollgate::payload::is_json_media_type(&String::from_utf8_lossy(data));
        for i in 0..engine.routes().request_rules.len() {
            let _ = engine.check_body(i, "r", data);
        }
        for i in 0..engine.routes().response_rules.len() {
            for status in [200, 201, 404, 500] {
                if engine.response_applies(i, status).is_none() {
                    continue;
                }
                let Verdict::Replace(redacted, _) = engine.check_response(i, status, data) else {
                    continue;
                };
                let value: Value = match serde_json::from_slice(&redacted) {
                    Ok(v) => v,
                    Err(e) => panic!("redacted body is not JSON: {e}"),
                };
                assert!(!has_member(&value, &["password", "ssn"]));
                let again = engine.check_response(i, status, &redacted);
                assert!(
                    !matches!(again, Verdict::Replace(..)),
                    "redaction is not idempotent: {again:?}"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// paths

struct PathFixture {
    engine: Engine,
    token: String,
}

impl PathFixture {
    fn new() -> PathFixture {
        let claims = Claims::with_custom_claims(
            json!({
                "scope": "orders:read orders:write orders:admin",
                "tenant": "t1",
                "roles": ["support", "admin"],
                "groups": ["ops"],
            }),
            Duration::from_secs(3600),
        )
        .with_issuer("https://demo.tollgate.local")
        .with_audience("demo-api")
        .with_subject("alice");
        let mut claims = claims;
        claims.issued_at = Some(Duration::from_secs(NOW));
        claims.expires_at = Some(Duration::from_secs(NOW + 3600));
        claims.invalid_before = None;
        let token = ES256KeyPair::from_pem(DEMO_SIGNING_KEY)
            .map(|k| k.with_key_id("demo-1"))
            .and_then(|k| k.sign(claims));
        let token = match token {
            Ok(t) => t,
            Err(e) => panic!("cannot mint the demo token: {e}"),
        };
        // `policies/orders.json` plus what it leaves out: a trusted proxy hop (so
        // `x-forwarded-for` is read), address lists, brute-force blocks, a dry-run route with a
        // lifecycle, a retired one.
        let mut policy: Value = serde_json::from_str(ORDERS_POLICY).unwrap_or_default();
        policy["rate_limit_options"]["trusted_hops"] = json!(1);
        policy["ip_access"] =
            json!({"deny": ["198.51.100.0/24", "2001:db8:bad::/48", "::ffff:203.0.113.0/120"]});
        policy["brute_force"] =
            json!({"max_failures": 2, "window_seconds": 60, "block_seconds": 300});
        policy["dry_run_header"] = json!("x-tollgate-would-deny");
        if let Some(routes) = policy["routes"].as_array_mut() {
            routes.push(json!({
                "name": "beta", "prefix": "/beta/", "providers": ["corp"], "mode": "dry-run",
                "scopes": {"all": ["beta"]},
                "ip_access": {"allow": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.0/24"]},
                "lifecycle": {"deprecated": "2026-01-01", "sunset": "2028-01-01T00:00:00Z",
                              "successor": "https://api.test/v2/"},
            }));
            routes.push(json!({
                "name": "v0", "prefix": "/v0/", "public": true,
                "lifecycle": {"retired": true, "successor": "https://api.test/v1/"},
            }));
        }
        PathFixture {
            engine: compile(&policy.to_string()),
            token,
        }
    }
}

thread_local! {
    static PATHS: PathFixture = PathFixture::new();
}

/// What `normalize` promises: an absolute path without empty, `.` or `..` segments, backslashes
/// or NULs, that normalises to itself (the upstream gets the path that was authorised).
fn check_normalized(raw: &str) {
    let Some(n) = path::normalize(raw) else {
        return;
    };
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
    assert!(
        !n.contains("//") && !n.contains('\\') && !n.contains('\0'),
        "{raw:?} -> {n:?}"
    );
    assert!(
        !n.split('/').any(|s| s == "." || s == ".."),
        "{raw:?} -> {n:?}"
    );
    assert_eq!(path::normalize(&n).as_deref(), Some(n.as_str()), "{raw:?}");
}

/// `name: value`; the name may be a pseudo-header (`:authority: api.test`).
fn header_line(line: &str) -> Option<(&str, &str)> {
    let skip = usize::from(line.starts_with(':'));
    let colon = line.get(skip..)?.find(':')? + skip;
    Some((line.get(..colon)?, line.get(colon + 1..)?))
}

/// A request as text: `METHOD PATH` on the first line, then `name: value` header lines.
/// `$TOKEN` in a header value becomes a valid demo token. Decided by `policies/orders.json` (with
/// the additions above); the audit line of the decision must be a JSON object.
pub fn paths(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, raw_path) = first.split_once(' ').unwrap_or(("GET", first));
    check_normalized(raw_path);
    let _ = path::decode_param(raw_path);
    PATHS.with(|f| {
        let headers: Vec<(String, String)> = lines
            .filter_map(header_line)
            .map(|(k, v)| (k.to_string(), v.trim_start().replace("$TOKEN", &f.token)))
            .collect();
        let req = Request {
            method,
            path: raw_path,
            headers: &headers,
            peer: Some(PEER),
            connection: None,
        };
        // Repeated refusals count towards a brute-force block: ask until it would have started.
        let (store, mut state) = (MemoryStore::default(), f.engine.new_state());
        let mut outcome = f.engine.decide_at(&req, NOW * 1000, &mut state, &store);
        for _ in 0..2 {
            if outcome.decision.denial_code().is_none() {
                break;
            }
            outcome = f.engine.decide_at(&req, NOW * 1000, &mut state, &store);
        }
        let request_id = req.header_values("x-request-id").next();
        let client_ip = f.engine.client_ip(&req);
        let mut audit = AuditRecord::new(
            NOW * 1000,
            request_id,
            client_ip,
            method,
            req.path_only(),
            Mode::Enforce,
        );
        if let Some(code) = outcome.decision.denial_code() {
            audit.refused(code, true);
        }
        let line = audit.to_json();
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "audit line is not a JSON object: {line:?}"
        );
        if let Decision::Allow(allow) = &outcome.decision {
            for (name, value) in &allow.set_headers {
                if name == ":path" {
                    check_normalized(value);
                    let only = value.split(['?', '#']).next().unwrap_or_default();
                    assert_eq!(
                        path::normalize(value).as_deref(),
                        Some(only),
                        "{raw_path:?}"
                    );
                    // The upstream gets the rewritten path: it must be judged as the original.
                    let again = decide(&f.engine, method, value, &headers);
                    match &again.decision {
                        Decision::Allow(a) => assert_eq!(a.route, allow.route, "{raw_path:?}"),
                        Decision::Deny(d) | Decision::WouldDeny(d) => panic!(
                            "{raw_path:?} is allowed on `{}`, its rewrite {value:?} refused: {:?}",
                            allow.route, d.code
                        ),
                    }
                }
            }
            if let Some(check) = allow.body_check {
                let _ = f.engine.check_request_body(
                    check,
                    &allow.route,
                    allow.content_digest.as_deref(),
                    br#"{"item": "x", "quantity": 2}"#,
                );
            }
        }
    });
}

/// Host normalisation: whatever `:authority` (and `host`) a client sends, a host that is
/// accepted has one spelling - lowercase ASCII, no port, no trailing dot - that normalises to
/// itself, and a request carrying it twice or a differing `host` header is refused.
pub fn hosts(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (authority, host) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(n) = tollgate::engine::normalize_host(authority) {
        assert!(!n.ends_with('.'), "{authority:?} -> {n:?}");
        assert!(
            n.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()),
            "{authority:?} -> {n:?}"
        );
        assert!(
            !n.contains(',') && !n.contains('@'),
            "{authority:?} -> {n:?}"
        );
        if !n.starts_with('[') {
            assert!(!n.contains(':'), "port left in {authority:?} -> {n:?}");
        }
        assert_eq!(
            tollgate::engine::normalize_host(&n).as_deref(),
            Ok(&*n),
            "{authority:?}"
        );
    }
    let headers = vec![
        (":authority".to_string(), authority.to_string()),
        ("host".to_string(), host.to_string()),
    ];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &headers,
        peer: None,
        connection: None,
    };
    let both = req.host();
    let one = tollgate::engine::normalize_host(authority);
    let other = tollgate::engine::normalize_host(host);
    match (&one, &other) {
        (Ok(a), Ok(b)) if a == b => assert_eq!(both.as_deref(), Ok(&**a)),
        _ => assert!(
            both.is_err(),
            "{authority:?} / {host:?} accepted as {both:?}"
        ),
    }
    let twice = vec![
        (":authority".to_string(), authority.to_string()),
        (":authority".to_string(), authority.to_string()),
    ];
    let req = Request {
        method: "GET",
        path: "/",
        headers: &twice,
        peer: None,
        connection: None,
    };
    assert!(req.host().is_err(), "two :authority accepted");
}

/// The strict JSON reader of bodies: it accepts exactly what serde_json accepts, minus objects
/// that name a key twice, and reads the same value.
pub fn json_bodies(data: &[u8]) {
    let strict = tollgate::payload::json::parse(data, false);
    let lax = tollgate::payload::json::parse(data, true);
    assert_eq!(lax, serde_json::from_slice::<Value>(data).ok());
    match (&strict, &lax) {
        (Some(s), Some(l)) => assert_eq!(s, l),
        (Some(_), None) => panic!("strict accepted what serde_json refused"),
        (None, Some(v)) => assert!(has_duplicate_key(data), "refused without a duplicate: {v}"),
        (None, None) => {}
    }
}

/// Whether the JSON text names some object key twice, found by an independent walk that keeps
/// every object's keys in a set.
fn has_duplicate_key(data: &[u8]) -> bool {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut any = false;
            while let Some(d) = seq.next_element::<DupSeed>()? {
                any |= d.0;
            }
            Ok(any)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut keys = std::collections::HashSet::new();
            let mut any = false;
            while let Some(k) = map.next_key::<String>()? {
                any |= !keys.insert(k);
                any |= map.next_value::<DupSeed>()?.0;
            }
            Ok(any)
        }
    }
    struct DupSeed(bool);
    impl<'de> serde::Deserialize<'de> for DupSeed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DupSeed, D::Error> {
            d.deserialize_any(Dup).map(DupSeed)
        }
    }
    serde_json::from_slice::<DupSeed>(data)
        .map(|d| d.0)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// signatures

use tollgate::httpsig::{
    self, Component, ContentDigest, DigestAlgorithm, SignParams, Signatures, SignedRequest,
    SigningKey, VerifyingKey,
};

const HTTPSIG_FIXTURE: &str = include_str!("../../fixtures/httpsig/rfc9421.json");

struct SignatureFixture {
    /// The deterministic signers of RFC 9421's test keys (RSA-PSS draws random salts).
    signers: Vec<SigningKey>,
    verifiers: Vec<VerifyingKey>,
}

impl SignatureFixture {
    fn new() -> SignatureFixture {
        let doc: Value = serde_json::from_str(HTTPSIG_FIXTURE).unwrap_or_default();
        let jwks = doc["keys"].as_array().cloned().unwrap_or_default();
        let jwk = |kid: &str| jwks.iter().find(|k| k["kid"] == kid).cloned();
        let signers: Vec<SigningKey> = [
            "test-shared-secret",
            "test-key-ed25519",
            "test-key-ecc-p256",
        ]
        .iter()
        .filter_map(|kid| jwk(kid))
        .map(|j| match SigningKey::from_jwk(&j) {
            Ok(k) => k,
            Err(e) => panic!("fixture key: {e}"),
        })
        .collect();
        let mut verifiers: Vec<VerifyingKey> = signers.iter().map(|k| k.verifying_key()).collect();
        if let Some(mut rsa) = jwk("test-key-rsa-pss") {
            for m in ["d", "p", "q", "dp", "dq", "qi"] {
                rsa.as_object_mut().map(|o| o.remove(m));
            }
            match VerifyingKey::from_jwk(&rsa) {
                Ok(k) => verifiers.push(k),
                Err(e) => panic!("fixture key: {e}"),
            }
        }
        assert_eq!(verifiers.len(), 4, "fixture keys missing");
        SignatureFixture { signers, verifiers }
    }
}

thread_local! {
    static SIGNATURES: SignatureFixture = SignatureFixture::new();
}

/// One signature of a fuzzed request: its base, every key, and a re-signing.
fn check_signature(f: &SignatureFixture, req: &SignedRequest<'_>, sig: &httpsig::Signature) {
    // `@signature-params` is a strict serialisation: it parses back to itself.
    let member = format!("{}={}", sig.label(), sig.signature_params());
    let value = format!("{}=::", sig.label());
    let again = match Signatures::parse(&[&member], &[&value]) {
        Ok(s) => s,
        Err(e) => panic!("{member:?} does not parse back: {e}"),
    };
    match again.get(sig.label()) {
        Ok(a) => assert_eq!(a.signature_params(), sig.signature_params()),
        Err(e) => panic!("{member:?} lost its label: {e}"),
    }
    let base = match sig.base(req) {
        Ok(base) => base,
        Err(_) => return,
    };
    // One line per covered component, then `@signature-params`; ASCII without a stray newline.
    assert!(base.is_ascii(), "{base:?}");
    let lines: Vec<&str> = base.split('\n').collect();
    assert_eq!(lines.len(), sig.components().len() + 1, "{base:?}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("\"@signature-params\": {}", sig.signature_params()).as_str())
    );
    for key in &f.verifiers {
        let _ = sig.verify(req, key);
    }
    // What resolves can be signed by every key, and that signature verifies over the same
    // components and parameters.
    for key in &f.signers {
        let params = SignParams {
            created: sig.created(),
            keyid: Some(key.kid()),
            alg: true,
            expires: sig.expires(),
            nonce: sig.nonce(),
            tag: sig.tag(),
        };
        let headers = match httpsig::sign(req, "fz", sig.components(), &params, key) {
            Ok(h) => h,
            Err(e) => panic!("{member:?} has a base but cannot be signed: {e}"),
        };
        let signed = match Signatures::parse(&[&headers.signature_input], &[&headers.signature]) {
            Ok(s) => s,
            Err(e) => panic!("{headers:?} does not parse: {e}"),
        };
        let Ok(ours) = signed.get("fz") else {
            panic!("{headers:?} has no `fz`")
        };
        assert_eq!(ours.components(), sig.components());
        assert_eq!(ours.verify(req, &key.verifying_key()), Ok(()), "{member:?}");
    }
}

/// RFC 9421 signatures and RFC 9530 digests. The input's first five lines are the
/// `Signature-Input`, `Signature` and `Content-Digest` values, the request target (default
/// RFC 9421's test request's) and an `example-dict` value; the rest is the body. Nothing panics;
/// bases are well-formed; what has a base can be signed and verified again; `@signature-params`
/// re-parses to itself; a computed `Content-Digest` verifies its body, and another body fails.
pub fn signatures(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(6, '\n');
    let mut next = || parts.next().unwrap_or_default();
    let (input, signature, digest, target, dict, body) =
        (next(), next(), next(), next(), next(), next());
    let path = if target.is_empty() {
        "/foo?param=Value&Pet=dog"
    } else {
        target
    };
    if let Ok(d) = ContentDigest::parse(&[digest]) {
        let _ = d.verify(body.as_bytes());
    }
    for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
        let value = httpsig::content_digest(alg, body.as_bytes());
        match ContentDigest::parse(&[&value]) {
            Ok(d) => {
                assert_eq!(d.verify(body.as_bytes()), Ok(()));
                assert!(d.verify(format!("{body}.").as_bytes()).is_err());
            }
            Err(e) => panic!("{value:?} does not parse: {e}"),
        }
    }
    let _ = Component::parse(input);
    let length = body.len().to_string();
    let headers: Vec<(String, String)> = [
        ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("content-type", "application/json"),
        ("content-length", &length),
        ("content-digest", digest),
        ("example-dict", dict),
        ("signature-input", input),
        ("signature", signature),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let req = SignedRequest {
        method: "POST",
        scheme: "https",
        authority: "example.com",
        path_and_query: path,
        headers: &headers,
    };
    let Ok(sigs) = Signatures::from_request(&req) else {
        return;
    };
    SIGNATURES.with(|f| {
        for sig in sigs.iter() {
            check_signature(f, &req, sig);
        }
    });
}
