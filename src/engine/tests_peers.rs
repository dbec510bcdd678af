//! Workload identity and TLS requirements through the whole decision: the order of the checks,
//! what reaches the upstream (identity and peer headers), and forged copies of both.

use super::*;
use crate::codes::DenialCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use wasm_bindgen_test::wasm_bindgen_test;

const FRONTEND: &str = "spiffe://prod.example/ns/web/sa/frontend";
const KEY: &str = "test-key-for-the-peers-table";

fn engine() -> Engine {
    let hash: String = Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let policy = json!({
        "api_keys": {"keys": [{"id": "ci", "sha256": hash}]},
        "routes": [
            {"name": "both", "path": "/both", "api_keys": true,
             "peers": {"principals": ["prod.example/ns/web/*"]}},
            {"name": "workload", "path": "/workload", "peers": {"trust_domains": ["prod.example"]}},
            {"name": "tls13", "path": "/tls13", "public": true, "tls": {"min_version": "1.3"}},
            {"name": "open", "path": "/open", "public": true}
        ]
    });
    Engine::compile(policy.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn mtls(uri: &str) -> Connection {
    Connection {
        tls_version: Some("TLSv1.3".into()),
        peer_certificate: true,
        uri_san: Some(uri.into()),
        ..Connection::default()
    }
}

fn decide(e: &Engine, path: &str, headers: &[(&str, &str)], conn: Option<&Connection>) -> Outcome {
    let mut all = vec![(":authority".to_string(), "api.example".to_string())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut state = e.new_state();
    e.decide(
        &Request {
            method: "GET",
            path,
            headers: &all,
            peer: None,
            connection: conn,
        },
        1_800_000_000,
        &mut state,
    )
}

fn code(o: &Outcome) -> Option<DenialCode> {
    match &o.decision {
        Decision::Deny(d) | Decision::WouldDeny(d) => Some(d.code),
        Decision::Allow(_) => None,
    }
}

fn set(o: &Outcome, name: &str) -> Option<String> {
    match &o.decision {
        Decision::Allow(a) => a
            .set_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_workload_and_a_key_both_pass_and_both_go_upstream() {
    let e = engine();
    let front = mtls(FRONTEND);
    let o = decide(&e, "/both", &[("x-api-key", KEY)], Some(&front));
    assert_eq!(code(&o), None);
    assert_eq!(
        set(&o, "x-tollgate-principal").as_deref(),
        Some("api_key:ci")
    );
    assert_eq!(set(&o, "x-tollgate-peer"), Some(format!("mtls:{FRONTEND}")));
    // Either one missing is refused, the connection first.
    let o = decide(&e, "/both", &[], Some(&front));
    assert_eq!(code(&o), Some(DenialCode::ApiKeyMissing));
    // `peers` implies a client certificate, which plaintext cannot carry.
    let o = decide(&e, "/both", &[("x-api-key", KEY)], None);
    assert_eq!(code(&o), Some(DenialCode::ClientCertificateRequired));
    let admin = mtls("spiffe://prod.example/ns/admin/sa/tool");
    let o = decide(&e, "/both", &[("x-api-key", KEY)], Some(&admin));
    assert_eq!(code(&o), Some(DenialCode::PeerNotAllowed));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_workload_alone_is_the_principal() {
    let e = engine();
    let o = decide(&e, "/workload", &[], Some(&mtls(FRONTEND)));
    assert_eq!(
        set(&o, "x-tollgate-principal"),
        Some(format!("mtls:{FRONTEND}"))
    );
    let tls_only = Connection {
        tls_version: Some("TLSv1.3".into()),
        ..Connection::default()
    };
    let o = decide(&e, "/workload", &[], Some(&tls_only));
    assert_eq!(code(&o), Some(DenialCode::ClientCertificateRequired));
    let foreign = mtls("spiffe://staging.example/ns/web/sa/frontend");
    assert_eq!(
        code(&decide(&e, "/workload", &[], Some(&foreign))),
        Some(DenialCode::PeerNotAllowed)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn forged_identity_headers_are_removed_everywhere() {
    let e = engine();
    let forged = [
        ("x-tollgate-peer", "mtls:spiffe://prod.example/ns/ops/sa/x"),
        (
            "x-forwarded-client-cert",
            "URI=spiffe://prod.example/ns/web/sa/frontend",
        ),
    ];
    // Not read: a forged XFCC is no certificate.
    assert_eq!(
        code(&decide(&e, "/workload", &forged, None)),
        Some(DenialCode::ClientCertificateRequired)
    );
    // Removed even on a public route, where nothing replaces it.
    let o = decide(&e, "/open", &forged, None);
    let Decision::Allow(a) = &o.decision else {
        panic!("{:?}", code(&o))
    };
    assert!(a.remove_headers.iter().any(|h| h == "x-tollgate-peer"));
    assert_eq!(set(&o, "x-tollgate-peer"), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn tls_versions() {
    let e = engine();
    let mut old = mtls(FRONTEND);
    old.tls_version = Some("TLSv1.2".into());
    assert_eq!(
        code(&decide(&e, "/tls13", &[], Some(&old))),
        Some(DenialCode::TlsVersionTooOld)
    );
    assert_eq!(
        code(&decide(&e, "/tls13", &[], Some(&mtls(FRONTEND)))),
        None
    );
    // A route without requirements takes plaintext.
    assert_eq!(code(&decide(&e, "/open", &[], None)), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn configuration_mistakes_are_named() {
    let bad = json!({"routes": [
        {"path": "/a", "public": true, "peers": {"principals": ["*"]}},
        {"path": "/b", "peers": {"principals": ["*"]}, "scopes": {"all": ["x"]}},
        {"path": "/c", "public": true, "tls": {"min_version": "1.0"}}
    ], "peer_header": "x-tollgate-principal"});
    let errors = Engine::compile(bad.to_string().as_bytes()).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "peer_header",
            "routes[0]",
            "routes[1]",
            "routes[2].tls.min_version"
        ],
        "{errors:#?}"
    );
}

const INGRESS: &str = "spiffe://prod.example/ns/edge/sa/ingress";

fn behind_ingress() -> Engine {
    let policy = json!({
        "forwarded_client_cert": {"from": {"principals": [INGRESS]}},
        "routes": [{"name": "front", "path": "/front", "peers": {"principals": [FRONTEND]}}]
    });
    Engine::compile(policy.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#?}"))
}

#[wasm_bindgen_test(unsupported = test)]
fn a_trusted_hop_names_its_client_in_xfcc() {
    let e = behind_ingress();
    let ingress = mtls(INGRESS);
    let xfcc = |uri: &str| format!("By={INGRESS};Hash=ab;URI={uri}");
    let o = decide(
        &e,
        "/front",
        &[("x-forwarded-client-cert", &xfcc(FRONTEND))],
        Some(&ingress),
    );
    assert_eq!(code(&o), None);
    assert_eq!(set(&o, "x-tollgate-peer"), Some(format!("mtls:{FRONTEND}")));
    let admin = xfcc("spiffe://prod.example/ns/admin/sa/tool");
    assert_eq!(
        code(&decide(
            &e,
            "/front",
            &[("x-forwarded-client-cert", &admin)],
            Some(&ingress)
        )),
        Some(DenialCode::PeerNotAllowed)
    );
    // The hop's client had no certificate.
    let none = format!("By={INGRESS};Hash=ab");
    assert_eq!(
        code(&decide(
            &e,
            "/front",
            &[("x-forwarded-client-cert", &none)],
            Some(&ingress)
        )),
        Some(DenialCode::ClientCertificateRequired)
    );
    // Without the header the hop itself is the caller.
    assert_eq!(
        code(&decide(&e, "/front", &[], Some(&ingress))),
        Some(DenialCode::PeerNotAllowed)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn any_other_hops_xfcc_is_not_read() {
    let e = behind_ingress();
    let forged = format!("By={INGRESS};URI={FRONTEND}");
    let batch = mtls("spiffe://prod.example/ns/batch/sa/report");
    assert_eq!(
        code(&decide(
            &e,
            "/front",
            &[("x-forwarded-client-cert", &forged)],
            Some(&batch)
        )),
        Some(DenialCode::PeerNotAllowed)
    );
    let tls_only = Connection {
        tls_version: Some("TLSv1.3".into()),
        ..Connection::default()
    };
    assert_eq!(
        code(&decide(
            &e,
            "/front",
            &[("x-forwarded-client-cert", &forged)],
            Some(&tls_only)
        )),
        Some(DenialCode::ClientCertificateRequired)
    );
    // The frontend connecting directly is itself, whatever its header says.
    let other = "URI=spiffe://prod.example/ns/admin/sa/tool".to_string();
    assert_eq!(
        code(&decide(
            &e,
            "/front",
            &[("x-forwarded-client-cert", &other)],
            Some(&mtls(FRONTEND))
        )),
        None
    );
}
