//! The downstream connection: TLS requirements (`tls`) and workload identity from the verified
//! client certificate (`peers`). Envoy terminates TLS and validates the certificate against the
//! listener's trust anchors; Tollgate reads what Envoy reports about the connection and never
//! a header (`x-forwarded-client-cert` is not read at all).

use crate::codes::DenialCode;
use crate::policy::{ConfigError, PeersDoc, TlsDoc};

/// Longest certificate identity Tollgate forwards or matches (Envoy's SANs are unbounded).
const MAX_IDENTITY: usize = 2048;

/// What Envoy reports about the downstream connection (its `connection.*` attributes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// `TLSv1.2`, `TLSv1.3`, ...; `None` on a plaintext connection.
    pub tls_version: Option<String>,
    /// The client presented a certificate (`connection.mtls`). Envoy validated it: a listener that
    /// validates client certificates ends the handshake when one fails (envoy/README.md).
    pub peer_certificate: bool,
    /// The certificate's first URI SAN (a SPIFFE ID in a mesh).
    pub uri_san: Option<String>,
    /// The certificate's first DNS SAN.
    pub dns_san: Option<String>,
    /// The certificate's subject, RFC 2253 (`CN=billing,O=Example`).
    pub subject: Option<String>,
}

impl Connection {
    /// The workload's identity: the URI SAN, else the DNS SAN, else the subject; `None` without a
    /// client certificate or when the identity could not be forwarded safely (control characters,
    /// longer than 2 KiB).
    pub fn identity(&self) -> Option<&str> {
        if !self.peer_certificate {
            return None;
        }
        [&self.uri_san, &self.dns_san, &self.subject]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .find(|v| !v.is_empty())
            .filter(|v| v.len() <= MAX_IDENTITY && !v.chars().any(char::is_control))
    }

    /// The principal a verified client certificate stands for: `mtls:<identity>`.
    pub fn principal(&self) -> Option<String> {
        self.identity().map(|id| format!("mtls:{id}"))
    }

    /// `(major, minor)` of the TLS version; `(0, 0)` for a name Tollgate does not know.
    fn version(&self) -> Option<(u8, u8)> {
        let v = self.tls_version.as_deref()?;
        Some(match v {
            "TLSv1" | "TLSv1.0" => (1, 0),
            "TLSv1.1" => (1, 1),
            "TLSv1.2" => (1, 2),
            "TLSv1.3" => (1, 3),
            _ => (0, 0),
        })
    }
}

/// A route's transport requirements, compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsRules {
    pub required: bool,
    /// `(1, 2)` or `(1, 3)`.
    pub min_version: Option<(u8, u8)>,
    pub client_certificate: bool,
}

impl TlsRules {
    pub fn compile(doc: &TlsDoc, at: &str, errors: &mut Vec<ConfigError>) -> TlsRules {
        let min_version = doc.min_version.as_deref().and_then(|v| match v {
            "1.2" => Some((1, 2)),
            "1.3" => Some((1, 3)),
            other => {
                errors.push(ConfigError::new(
                    format!("{at}.min_version"),
                    format!(
                        "`{other}` is not a TLS version Tollgate can require; expected `1.2` or `1.3` (older versions are not safe)"
                    ),
                ));
                None
            }
        });
        TlsRules {
            required: doc.required || min_version.is_some() || doc.client_certificate,
            min_version,
            client_certificate: doc.client_certificate,
        }
    }

    /// Whether the rules ask anything of the connection.
    pub fn is_empty(&self) -> bool {
        *self == TlsRules::default()
    }

    pub fn check(&self, conn: Option<&Connection>) -> Result<(), DenialCode> {
        if self.is_empty() {
            return Ok(());
        }
        let version = conn.and_then(Connection::version);
        let Some(version) = version else {
            return Err(DenialCode::TlsRequired);
        };
        if self.min_version.is_some_and(|min| version < min) {
            return Err(DenialCode::TlsVersionTooOld);
        }
        if self.client_certificate && conn.and_then(Connection::identity).is_none() {
            return Err(DenialCode::ClientCertificateRequired);
        }
        Ok(())
    }
}

/// `*`, `prefix*`, `*suffix` or an exact value, as in Istio's authorization policies.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Any,
    Prefix(String),
    Suffix(String),
    Exact(String),
}

impl Pattern {
    fn compile(text: &str, at: &str, errors: &mut Vec<ConfigError>) -> Option<Pattern> {
        let stars = text.matches('*').count();
        let pattern = if text == "*" {
            Pattern::Any
        } else if stars == 1 && text.ends_with('*') {
            Pattern::Prefix(text.trim_end_matches('*').to_string())
        } else if stars == 1 && text.starts_with('*') {
            Pattern::Suffix(text.trim_start_matches('*').to_string())
        } else if stars == 0 && !text.is_empty() {
            Pattern::Exact(text.to_string())
        } else {
            errors.push(ConfigError::new(
                at,
                format!("`{text}` is not a pattern; expected a value, `*`, `prefix*` or `*suffix`"),
            ));
            return None;
        };
        if text.chars().any(char::is_control) {
            errors.push(ConfigError::new(
                at,
                "a pattern cannot hold control characters",
            ));
            return None;
        }
        Some(pattern)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Suffix(s) => value.ends_with(s.as_str()),
            Pattern::Exact(e) => value == e,
        }
    }
}

/// A principal pattern and what it is compared with: the whole URI SAN when it names a scheme
/// (`spiffe://...`), the SPIFFE ID without `spiffe://` otherwise (Istio's form).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PrincipalPattern {
    with_scheme: bool,
    pattern: Pattern,
}

/// The `peers` of a route, compiled: every non-empty list must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRules {
    principals: Vec<PrincipalPattern>,
    namespaces: Vec<Pattern>,
    trust_domains: Vec<String>,
    dns_names: Vec<Pattern>,
    subjects: Vec<String>,
}

/// The parts of a SPIFFE ID: `spiffe://<trust domain>/ns/<namespace>/sa/<account>` (the
/// namespace is read wherever `/ns/<name>` appears in the path, as Istio does).
struct Spiffe<'a> {
    trust_domain: &'a str,
    namespace: Option<&'a str>,
}

fn spiffe(uri: &str) -> Option<Spiffe<'_>> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut segments = path.split('/');
    let mut namespace = None;
    while let Some(s) = segments.next() {
        if s == "ns" {
            namespace = segments.next().filter(|n| !n.is_empty());
            break;
        }
    }
    Some(Spiffe {
        trust_domain,
        namespace,
    })
}

impl PeerRules {
    pub fn compile(doc: &PeersDoc, at: &str, errors: &mut Vec<ConfigError>) -> PeerRules {
        let mut rules = PeerRules::default();
        for (i, p) in doc.principals.iter().enumerate() {
            let with_scheme = p.contains("://");
            if let Some(pattern) = Pattern::compile(p, &format!("{at}.principals[{i}]"), errors) {
                rules.principals.push(PrincipalPattern {
                    with_scheme,
                    pattern,
                });
            }
        }
        for (i, n) in doc.namespaces.iter().enumerate() {
            if n.contains('/') {
                errors.push(ConfigError::new(
                    format!("{at}.namespaces[{i}]"),
                    format!("`{n}` is not a namespace; expected a name such as `web` (no `/`)"),
                ));
            } else if let Some(p) = Pattern::compile(n, &format!("{at}.namespaces[{i}]"), errors) {
                rules.namespaces.push(p);
            }
        }
        for (i, t) in doc.trust_domains.iter().enumerate() {
            let valid = !t.is_empty()
                && t.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
                });
            if valid {
                rules.trust_domains.push(t.clone());
            } else {
                errors.push(ConfigError::new(
                    format!("{at}.trust_domains[{i}]"),
                    format!("`{t}` is not a trust domain; expected lowercase letters, digits, `.`, `-`, `_` (the part after `spiffe://`)"),
                ));
            }
        }
        for (i, d) in doc.dns_names.iter().enumerate() {
            if let Some(p) = Pattern::compile(
                &d.to_ascii_lowercase(),
                &format!("{at}.dns_names[{i}]"),
                errors,
            ) {
                rules.dns_names.push(p);
            }
        }
        for (i, s) in doc.subjects.iter().enumerate() {
            if s.is_empty() || s.chars().any(char::is_control) {
                errors.push(ConfigError::new(
                    format!("{at}.subjects[{i}]"),
                    "expected a subject such as `CN=billing,O=Example`",
                ));
            } else {
                rules.subjects.push(s.clone());
            }
        }
        if doc == &PeersDoc::default() {
            errors.push(ConfigError::new(
                at,
                "name the workloads: at least one of `principals`, `namespaces`, `trust_domains`, `dns_names`, `subjects` (`principals: [\"*\"]` accepts any verified certificate)",
            ));
        }
        rules
    }

    /// Whether the connection's verified certificate is one of the workloads the route accepts.
    pub fn check(&self, conn: Option<&Connection>) -> Result<(), DenialCode> {
        let Some(conn) = conn.filter(|c| c.identity().is_some()) else {
            return Err(DenialCode::ClientCertificateRequired);
        };
        if self.permits(conn) {
            Ok(())
        } else {
            Err(DenialCode::PeerNotAllowed)
        }
    }

    /// Whether `conn` has a verified certificate these rules accept.
    pub fn matches(&self, conn: &Connection) -> bool {
        conn.identity().is_some() && self.permits(conn)
    }

    fn permits(&self, conn: &Connection) -> bool {
        let uri = conn.uri_san.as_deref();
        let id = uri.and_then(spiffe);
        if !self.principals.is_empty() {
            let Some(uri) = uri else { return false };
            let bare = uri.strip_prefix("spiffe://");
            let hit = self.principals.iter().any(|p| match (p.with_scheme, bare) {
                (true, _) => p.pattern.matches(uri),
                (false, Some(bare)) => p.pattern.matches(bare),
                (false, None) => false,
            });
            if !hit {
                return false;
            }
        }
        if !self.namespaces.is_empty() {
            let Some(ns) = id.as_ref().and_then(|s| s.namespace) else {
                return false;
            };
            if !self.namespaces.iter().any(|p| p.matches(ns)) {
                return false;
            }
        }
        if !self.trust_domains.is_empty() {
            let Some(td) = id.as_ref().map(|s| s.trust_domain) else {
                return false;
            };
            if !self
                .trust_domains
                .iter()
                .any(|t| t.eq_ignore_ascii_case(td))
            {
                return false;
            }
        }
        if !self.dns_names.is_empty() {
            let Some(dns) = conn.dns_san.as_deref() else {
                return false;
            };
            let dns = dns.to_ascii_lowercase();
            if !self.dns_names.iter().any(|p| p.matches(&dns)) {
                return false;
            }
        }
        if !self.subjects.is_empty() {
            let Some(subject) = conn.subject.as_deref() else {
                return false;
            };
            if !self.subjects.iter().any(|s| s == subject) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn mtls(uri: Option<&str>, dns: Option<&str>, subject: Option<&str>) -> Connection {
        Connection {
            tls_version: Some("TLSv1.3".into()),
            peer_certificate: true,
            uri_san: uri.map(String::from),
            dns_san: dns.map(String::from),
            subject: subject.map(String::from),
        }
    }

    fn peers(doc: PeersDoc) -> PeerRules {
        let mut errors = vec![];
        let rules = PeerRules::compile(&doc, "routes[0].peers", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        rules
    }

    fn tls(doc: TlsDoc) -> TlsRules {
        let mut errors = vec![];
        let rules = TlsRules::compile(&doc, "tls", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        rules
    }

    const FRONTEND: &str = "spiffe://prod.example/ns/web/sa/frontend";

    #[wasm_bindgen_test(unsupported = test)]
    fn identity_prefers_the_uri_san_then_dns_then_subject() {
        let c = mtls(Some(FRONTEND), Some("a.internal"), Some("CN=a"));
        assert_eq!(
            c.principal().as_deref(),
            Some("mtls:spiffe://prod.example/ns/web/sa/frontend")
        );
        assert_eq!(
            mtls(None, Some("a.internal"), Some("CN=a")).identity(),
            Some("a.internal")
        );
        assert_eq!(
            mtls(None, None, Some("CN=a,O=b")).identity(),
            Some("CN=a,O=b")
        );
        assert_eq!(mtls(Some(""), None, Some("CN=a")).identity(), Some("CN=a"));
        // No certificate, or one whose identity cannot be forwarded, is no identity.
        let mut none = mtls(Some(FRONTEND), None, None);
        none.peer_certificate = false;
        assert_eq!(none.identity(), None);
        assert_eq!(
            mtls(Some("spiffe://a/\r\nx: y"), None, None).identity(),
            None
        );
        assert_eq!(mtls(Some(&"a".repeat(3000)), None, None).identity(), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn principals_match_exactly_in_istio_form_and_by_pattern() {
        let with_scheme = peers(PeersDoc {
            principals: vec![FRONTEND.into()],
            ..PeersDoc::default()
        });
        let istio = peers(PeersDoc {
            principals: vec!["prod.example/ns/web/sa/frontend".into()],
            ..PeersDoc::default()
        });
        let prefix = peers(PeersDoc {
            principals: vec!["prod.example/ns/web/*".into()],
            ..PeersDoc::default()
        });
        let suffix = peers(PeersDoc {
            principals: vec!["*/sa/frontend".into()],
            ..PeersDoc::default()
        });
        let front = mtls(Some(FRONTEND), None, None);
        let other = mtls(Some("spiffe://prod.example/ns/web/sa/admin"), None, None);
        let foreign = mtls(Some("spiffe://evil.example/ns/web/sa/frontend"), None, None);
        for rules in [&with_scheme, &istio] {
            assert_eq!(rules.check(Some(&front)), Ok(()));
            assert_eq!(rules.check(Some(&other)), Err(DenialCode::PeerNotAllowed));
            assert_eq!(rules.check(Some(&foreign)), Err(DenialCode::PeerNotAllowed));
        }
        assert_eq!(prefix.check(Some(&other)), Ok(()));
        assert_eq!(
            prefix.check(Some(&foreign)),
            Err(DenialCode::PeerNotAllowed)
        );
        assert_eq!(suffix.check(Some(&foreign)), Ok(()));
        // The Istio form only ever matches SPIFFE IDs; a URI of another scheme needs its scheme.
        let https = mtls(Some("https://prod.example/ns/web/sa/frontend"), None, None);
        assert_eq!(istio.check(Some(&https)), Err(DenialCode::PeerNotAllowed));
        // A DNS-only certificate has no principal to match.
        assert_eq!(
            istio.check(Some(&mtls(None, Some("prod.example"), None))),
            Err(DenialCode::PeerNotAllowed)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn namespaces_and_trust_domains_read_the_spiffe_id() {
        let rules = peers(PeersDoc {
            namespaces: vec!["web".into(), "batch-*".into()],
            trust_domains: vec!["prod.example".into()],
            ..PeersDoc::default()
        });
        assert_eq!(rules.check(Some(&mtls(Some(FRONTEND), None, None))), Ok(()));
        let batch = mtls(Some("spiffe://prod.example/ns/batch-7/sa/job"), None, None);
        assert_eq!(rules.check(Some(&batch)), Ok(()));
        // Every field must match: the right namespace in another trust domain is refused.
        for uri in [
            "spiffe://staging.example/ns/web/sa/frontend",
            "spiffe://prod.example/ns/admin/sa/frontend",
            "spiffe://prod.example/sa/frontend",
            // `ns` must be a whole segment, the namespace the segment after it.
            "spiffe://prod.example/nsx/web/sa/frontend",
            "spiffe://prod.example/ns//sa/web",
        ] {
            let c = mtls(Some(uri), None, None);
            assert_eq!(
                rules.check(Some(&c)),
                Err(DenialCode::PeerNotAllowed),
                "{uri}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn dns_names_and_subjects() {
        let rules = peers(PeersDoc {
            dns_names: vec!["*.Internal.example".into()],
            ..PeersDoc::default()
        });
        let billing = mtls(None, Some("Billing.internal.example"), None);
        assert_eq!(rules.check(Some(&billing)), Ok(()));
        let outside = mtls(None, Some("internal.example.evil"), None);
        assert_eq!(rules.check(Some(&outside)), Err(DenialCode::PeerNotAllowed));
        let rules = peers(PeersDoc {
            subjects: vec!["CN=billing,O=Example".into()],
            ..PeersDoc::default()
        });
        assert_eq!(
            rules.check(Some(&mtls(None, None, Some("CN=billing,O=Example")))),
            Ok(())
        );
        assert_eq!(
            rules.check(Some(&mtls(None, None, Some("CN=billing,O=Example2")))),
            Err(DenialCode::PeerNotAllowed)
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_certificate_is_its_own_refusal() {
        let rules = peers(PeersDoc {
            principals: vec!["*".into()],
            ..PeersDoc::default()
        });
        assert_eq!(rules.check(Some(&mtls(Some(FRONTEND), None, None))), Ok(()));
        let mut plain_tls = mtls(None, None, None);
        plain_tls.peer_certificate = false;
        for conn in [None, Some(&plain_tls)] {
            assert_eq!(
                rules.check(conn),
                Err(DenialCode::ClientCertificateRequired)
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn tls_requirements() {
        let plain = Connection::default();
        let tls12 = Connection {
            tls_version: Some("TLSv1.2".into()),
            ..Connection::default()
        };
        let odd = Connection {
            tls_version: Some("SSLv3".into()),
            ..Connection::default()
        };
        let required = tls(TlsDoc {
            required: true,
            ..TlsDoc::default()
        });
        assert_eq!(required.check(Some(&plain)), Err(DenialCode::TlsRequired));
        assert_eq!(required.check(None), Err(DenialCode::TlsRequired));
        assert_eq!(required.check(Some(&tls12)), Ok(()));
        let v13 = tls(TlsDoc {
            min_version: Some("1.3".into()),
            ..TlsDoc::default()
        });
        assert!(v13.required);
        assert_eq!(v13.check(Some(&plain)), Err(DenialCode::TlsRequired));
        assert_eq!(v13.check(Some(&tls12)), Err(DenialCode::TlsVersionTooOld));
        assert_eq!(v13.check(Some(&odd)), Err(DenialCode::TlsVersionTooOld));
        assert_eq!(v13.check(Some(&mtls(Some(FRONTEND), None, None))), Ok(()));
        let cert = tls(TlsDoc {
            client_certificate: true,
            ..TlsDoc::default()
        });
        assert_eq!(
            cert.check(Some(&tls12)),
            Err(DenialCode::ClientCertificateRequired)
        );
        assert_eq!(cert.check(Some(&mtls(Some(FRONTEND), None, None))), Ok(()));
        // Nothing asked, nothing checked: plaintext passes.
        assert_eq!(TlsRules::default().check(None), Ok(()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn bad_configuration_names_the_field() {
        let mut errors = vec![];
        TlsRules::compile(
            &TlsDoc {
                min_version: Some("1.1".into()),
                ..TlsDoc::default()
            },
            "tls",
            &mut errors,
        );
        PeerRules::compile(
            &PeersDoc {
                principals: vec!["a*b".into(), "".into()],
                namespaces: vec!["web/x".into()],
                trust_domains: vec!["Prod".into()],
                ..PeersDoc::default()
            },
            "routes[1].peers",
            &mut errors,
        );
        PeerRules::compile(&PeersDoc::default(), "routes[2].peers", &mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tls.min_version",
                "routes[1].peers.principals[0]",
                "routes[1].peers.principals[1]",
                "routes[1].peers.namespaces[0]",
                "routes[1].peers.trust_domains[0]",
                "routes[2].peers",
            ]
        );
        assert!(
            errors[0].message.contains("expected `1.2` or `1.3`"),
            "{}",
            errors[0].message
        );
    }
}
