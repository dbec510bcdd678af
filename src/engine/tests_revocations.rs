//! Revocation lists through whole decisions: each kind of entry refuses only what it names, the
//! policy's list and a fetched one together, a remote list that was never fetched, a bad fetch
//! that keeps the last good list, dry runs, and the configuration errors. The list's own parsing
//! is tested in `abuse::revoke`; the fetch through Envoy in tests/e2e/test_revocations.py.

use super::*;
use crate::codes::DenialCode;
use crate::jwt::remote::{claim_fetch, complete_fetch_with, FetchFailure};
use crate::store::MemoryStore;
use crate::testkit::{self, Mint};
use decision::KeySource;
use serde_json::{json, Value};
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: u64 = 1_795_395_723;
const OLD_KEY: &str = "key-of-the-leaked-laptop";
const NEW_KEY: &str = "key-issued-after-the-incident";

fn sha256(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn policy(revocations: Value) -> Value {
    json!({
        "providers": {"corp": {
            "issuer": testkit::ISSUER, "audiences": [testkit::AUDIENCE], "algorithms": ["RS256"],
            "jwks": {"keys": [testkit::public_jwk("rsa-1")]}
        }},
        "api_keys": {"keys": [
            {"id": "laptop", "sha256": sha256(OLD_KEY)},
            {"id": "laptop-2", "sha256": sha256(NEW_KEY)}
        ]},
        "rate_limit_options": {"trusted_hops": 1},
        "revocations": revocations,
        "routes": [
            {"name": "items", "prefix": "/items", "providers": ["corp"], "api_keys": true},
            {"name": "trial", "prefix": "/trial", "providers": ["corp"], "mode": "dry-run"},
            {"name": "reports", "prefix": "/reports", "providers": ["corp"]},
            {"name": "health", "path": "/health", "public": true}
        ]
    })
}

fn engine(revocations: Value) -> Engine {
    Engine::compile(policy(revocations).to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn errors(revocations: Value) -> Vec<(String, String)> {
    match Engine::compile(policy(revocations).to_string().as_bytes()) {
        Ok(_) => panic!("compiled"),
        Err(errors) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
    }
}

enum Cred<'a> {
    None,
    Token(&'a str),
    Key(&'a str),
}

fn run(e: &Engine, s: &mut VmState, store: &MemoryStore, path: &str, ip: &str, c: Cred) -> Outcome {
    let mut h = vec![("x-forwarded-for".to_string(), ip.to_string())];
    match c {
        Cred::None => {}
        Cred::Token(t) => h.push(("authorization".into(), format!("Bearer {t}"))),
        Cred::Key(k) => h.push(("x-api-key".into(), k.into())),
    }
    e.decide_at(
        &Request {
            method: "GET",
            path,
            headers: &h,
            peer: Some("127.0.0.1:5000"),
            connection: None,
        },
        NOW * 1000,
        s,
        store,
    )
}

fn code(o: &Outcome) -> Option<DenialCode> {
    match &o.decision {
        Decision::Deny(d) => Some(d.code),
        Decision::WouldDeny(d) => panic!("a dry run's refusal: {:?}", d.code),
        Decision::Allow(_) => None,
    }
}

fn token(sub: &str, jti: Option<&str>) -> String {
    let m = Mint::new(Alg::RS256, "rsa-1")
        .now(NOW)
        .claim("sub", json!(sub));
    match jti {
        Some(j) => m.claim("jti", json!(j)),
        None => m,
    }
    .sign()
}

const IP: &str = "192.0.2.10";

#[wasm_bindgen_test(unsupported = test)]
fn each_entry_refuses_what_it_names_and_nothing_else() {
    let e = engine(json!({"revoked": {
        "token_ids": ["t-stolen"],
        "subjects": ["mallory"],
        "api_keys": ["laptop"],
        "principals": ["jwt:corp:eve"],
        "addresses": ["203.0.113.0/24", "198.51.100.7"],
        "routes": ["reports"]
    }}));
    let store = MemoryStore::default();
    let mut s = e.new_state();
    let mut run = |path: &str, ip: &str, c: Cred| code(&run(&e, &mut s, &store, path, ip, c));
    let revoked = Some(DenialCode::CredentialRevoked);

    assert_eq!(
        run("/items", IP, Cred::Token(&token("alice", Some("t-1")))),
        None
    );
    assert_eq!(
        run("/items", IP, Cred::Token(&token("alice", Some("t-stolen")))),
        revoked
    );
    assert_eq!(
        run("/items", IP, Cred::Token(&token("mallory", None))),
        revoked
    );
    assert_eq!(run("/items", IP, Cred::Token(&token("eve", None))), revoked);
    assert_eq!(run("/items", IP, Cred::Key(OLD_KEY)), revoked);
    assert_eq!(run("/items", IP, Cred::Key(NEW_KEY)), None);
    // A revoked credential is still checked first: a forged token is not called revoked.
    let forged = testkit::tamper_payload(&token("alice", None), json!({"jti": "t-stolen"}));
    assert_eq!(
        run("/items", IP, Cred::Token(&forged)),
        Some(DenialCode::SignatureInvalid)
    );

    // Addresses are refused before anything else, on public routes too, as the IP list does.
    for ip in ["203.0.113.99", "198.51.100.7", "::ffff:198.51.100.7"] {
        assert_eq!(
            run("/health", ip, Cred::None),
            Some(DenialCode::IpDenied),
            "{ip}"
        );
    }
    assert_eq!(run("/health", "198.51.100.8", Cred::None), None);

    // A closed route refuses everyone, whatever they carry; the others stay open.
    assert_eq!(
        run("/reports/q3", IP, Cred::Token(&token("alice", None))),
        Some(DenialCode::RouteClosed)
    );
    assert_eq!(
        run("/reports/q3", IP, Cred::None),
        Some(DenialCode::RouteClosed)
    );
    assert_eq!(run("/health", IP, Cred::None), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_revoked_credential_answers_401_with_a_challenge_and_no_detail() {
    let e = engine(json!({"revoked": {"subjects": ["mallory"]}}));
    let store = MemoryStore::default();
    let mut s = e.new_state();
    let out = run(
        &e,
        &mut s,
        &store,
        "/items",
        IP,
        Cred::Token(&token("mallory", None)),
    );
    let Decision::Deny(d) = &out.decision else {
        panic!("{:?}", out.decision)
    };
    assert_eq!(d.status, 401);
    let body = d.body();
    assert!(!body.contains("mallory"), "{body}");
    let challenge = d.headers.iter().find(|(n, _)| *n == "www-authenticate");
    assert!(
        challenge.is_some_and(|(_, v)| v.contains("error=\"invalid_token\"")),
        "{:?}",
        d.headers
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_dry_run_lets_a_revoked_credential_through_marked() {
    let e = engine(json!({"revoked": {"subjects": ["mallory"], "routes": ["trial"]}}));
    let store = MemoryStore::default();
    let mut s = e.new_state();
    let out = run(
        &e,
        &mut s,
        &store,
        "/trial",
        IP,
        Cred::Token(&token("mallory", None)),
    );
    match &out.decision {
        Decision::WouldDeny(d) => assert_eq!(d.code, DenialCode::RouteClosed),
        other => panic!("{other:?}"),
    }
}

fn remote(extra: Value) -> Value {
    let mut r = json!({"remote": {"cluster": "lists", "uri": "http://lists.test/revoked.json",
                                  "refresh_seconds": 30}});
    if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        r.extend(extra.clone());
    }
    r
}

/// Answers the fetch a tick would make with `body` (or a failure).
fn fetch(
    e: &Engine,
    s: &mut VmState,
    store: &MemoryStore,
    body: Result<&[u8], FetchFailure>,
) -> Result<(), FetchFailure> {
    let spec = e
        .remote_spec(KeySource::Revocations)
        .expect("a remote list");
    assert!(
        spec.key_prefix.starts_with("tollgate/v1/revocations/"),
        "{}",
        spec.key_prefix
    );
    let _ = claim_fetch(store, spec, NOW);
    let parse = crate::abuse::revoke::RevocationList::parse;
    complete_fetch_with(store, spec, &parse, NOW, body, &mut s.revocations).unwrap()
}

#[wasm_bindgen_test(unsupported = test)]
fn a_remote_list_is_waited_for_then_enforced_and_kept_through_bad_fetches() {
    let e = engine(remote(json!({"revoked": {"subjects": ["mallory"]}})));
    let store = MemoryStore::default();
    let mut s = e.new_state();
    let alice = token("alice", Some("t-1"));

    // Never fetched: authenticated routes wait (503), public ones and the inline list still work.
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&alice))),
        Some(DenialCode::RevocationsUnavailable)
    );
    assert_eq!(
        code(&run(&e, &mut s, &store, "/health", IP, Cred::None)),
        None
    );

    fetch(
        &e,
        &mut s,
        &store,
        Ok(br#"{"token_ids": ["t-9"], "api_keys": ["laptop"]}"#),
    )
    .unwrap();
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&alice))),
        None
    );
    let revoked = Some(DenialCode::CredentialRevoked);
    let stolen = token("alice", Some("t-9"));
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&stolen))),
        revoked
    );
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Key(OLD_KEY))),
        revoked
    );
    let mallory = token("mallory", None);
    assert_eq!(
        code(&run(
            &e,
            &mut s,
            &store,
            "/items",
            IP,
            Cred::Token(&mallory)
        )),
        revoked
    );

    // Malformed, unknown fields, an invalid entry, too large, unreachable: the last good list stays.
    let big = format!("{{\"subjects\": [\"{}\"]}}", "x".repeat(1_100_000));
    let bad: [Result<&[u8], FetchFailure>; 5] = [
        Ok(b"{\"token_ids\": [\"t-9\""),
        Ok(br#"{"token_ids": ["t-9"], "revoke_everyone": true}"#),
        Ok(br#"{"addresses": ["not-an-address"]}"#),
        Ok(big.as_bytes()),
        Err(FetchFailure::Unreachable),
    ];
    for body in bad {
        assert!(fetch(&e, &mut s, &store, body).is_err());
        assert_eq!(
            code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&stolen))),
            revoked
        );
        assert_eq!(
            code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&alice))),
            None
        );
    }

    // Lifting: a new list without the entry lets the credential back in.
    fetch(&e, &mut s, &store, Ok(br#"{"api_keys": ["laptop"]}"#)).unwrap();
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&stolen))),
        None
    );

    // Another VM of the same process installs what this one fetched, without fetching.
    let mut other = e.new_state();
    let spec = e.remote_spec(KeySource::Revocations).unwrap();
    let parse = crate::abuse::revoke::RevocationList::parse;
    assert!(crate::jwt::remote::sync_with(&store, spec, &parse, &mut other.revocations).unwrap());
    assert_eq!(
        code(&run(
            &e,
            &mut other,
            &store,
            "/items",
            IP,
            Cred::Key(OLD_KEY)
        )),
        revoked
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn on_unavailable_allow_passes_until_the_first_fetch() {
    let e = engine(remote(json!({"on_unavailable": "allow"})));
    let store = MemoryStore::default();
    let mut s = e.new_state();
    let stolen = token("alice", Some("t-9"));
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&stolen))),
        None
    );
    fetch(&e, &mut s, &store, Ok(br#"{"token_ids": ["t-9"]}"#)).unwrap();
    assert_eq!(
        code(&run(&e, &mut s, &store, "/items", IP, Cred::Token(&stolen))),
        Some(DenialCode::CredentialRevoked)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn configuration_mistakes_are_named() {
    let has = |errors: &[(String, String)], path: &str, words: &str| {
        assert!(
            errors.iter().any(|(p, m)| p == path && m.contains(words)),
            "{path} / {words}: {errors:#?}"
        );
    };
    has(&errors(json!({})), "revocations", "expected `revoked`");
    has(
        &errors(json!({"revoked": {"routes": ["nope"]}})),
        "revocations.revoked.routes",
        "nope",
    );
    has(
        &errors(json!({"revoked": {"addresses": ["10.0.0.0/33"]}})),
        "revocations.revoked.addresses[0]",
        "",
    );
    has(
        &errors(json!({"revoked": {"token_ids": [""]}})),
        "revocations.revoked.token_ids[0]",
        "empty",
    );
    has(
        &errors(json!({"revoked": {"subjects": ["a"]}, "on_unavailable": "allow"})),
        "revocations.on_unavailable",
        "only a `remote` list",
    );
    has(
        &errors(remote(json!({"on_unavailable": "pass"}))),
        "revocations.on_unavailable",
        "`deny` or `allow`",
    );
    let unknown = errors(json!({"revoked": {"jtis": ["t"]}}));
    assert!(
        unknown
            .iter()
            .any(|(p, m)| p.starts_with("revocations") && m.contains("jtis")),
        "{unknown:#?}"
    );
}
