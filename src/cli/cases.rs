//! `tollgate test`: a file of request cases with the decisions they must get, run through the
//! engine (`Session::decide`). Tokens are minted when the cases run, since a stored token would
//! expire; see policies/README.md, "Command-line tool", for the format.

use super::keys::{self, SigningKey};
use super::request::{self, ServiceAnswer, Session, Spec, Upstream, Verdict};
use super::source::Document;
use crate::engine::Engine;
use crate::jwt::Alg;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub defaults: Defaults,
    /// Key sets for `remote_jwks` providers, by provider name: a JWKS file (relative to the
    /// case file), since the tool fetches nothing.
    #[serde(default)]
    pub jwks: BTreeMap<String, String>,
    /// The list the policy's `revocations.remote` serves: a revocation list file (relative to
    /// the case file).
    #[serde(default)]
    pub revocations: Option<String>,
    pub cases: Vec<Case>,
}

/// Merged under every case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// The base of every case's `token` (a case without `token` sends none).
    #[serde(default)]
    pub token: Option<TokenDoc>,
    /// The base of every case's `signature` (a case without `signature` sends none).
    #[serde(default)]
    pub signature: Option<SignatureDoc>,
    #[serde(default)]
    pub now: Option<Time>,
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsField>,
}

/// `false` (plaintext), `true` (TLS 1.3, no client certificate) or a [`TlsConnectionDoc`].
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TlsField {
    On(bool),
    With(TlsConnectionDoc),
}

impl TlsField {
    fn connection(&self) -> Option<crate::engine::Connection> {
        match self {
            TlsField::On(false) => None,
            TlsField::On(true) => Some(TlsConnectionDoc::default().connection()),
            TlsField::With(doc) => Some(doc.connection()),
        }
    }
}

/// The connection a case's request arrives on: TLS (`version`, default `TLSv1.3`) and the client
/// certificate's identities as Envoy reports them. Without `tls` the connection is plaintext.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConnectionDoc {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<CertificateDoc>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateDoc {
    #[serde(default)]
    pub uri_san: Option<String>,
    #[serde(default)]
    pub dns_san: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
}

impl TlsConnectionDoc {
    fn connection(&self) -> crate::engine::Connection {
        let cert = self.client_certificate.clone().unwrap_or_default();
        crate::engine::Connection {
            tls_version: Some(self.version.clone().unwrap_or_else(|| "TLSv1.3".into())),
            peer_certificate: self.client_certificate.is_some(),
            uri_san: cert.uri_san,
            dns_san: cert.dns_san,
            subject: cert.subject,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub note: String,
    pub request: RequestDoc,
    #[serde(default)]
    pub token: Option<TokenField>,
    /// Sign the request (RFC 9421) with a key; fields fall back to `defaults.signature`.
    #[serde(default)]
    pub signature: Option<SignatureDoc>,
    /// The time the case is judged at; default: the clock (tokens are minted relative to it).
    #[serde(default)]
    pub now: Option<Time>,
    /// Send the request this many times (one bucket store); the last decision is judged.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Requests sent first, in order, in the same session (shared data) and not judged: the
    /// synthetic history that `detection` judges the case's request against.
    #[serde(default)]
    pub history: Vec<HistoryDoc>,
    /// What the upstream answers if the request reaches it; without it a `200` without a body is
    /// assumed and only its headers are judged.
    #[serde(default)]
    pub response: Option<ResponseDoc>,
    /// What the rate-limit service answers for `global` limits: `ok` (default), `over_limit`,
    /// `timeout`, `unavailable` or `malformed`.
    #[serde(default)]
    pub rate_limit_service: Option<String>,
    pub want: Want,
}

/// Earlier requests of a case (`history`): `repeat` times (default 1) the `request` (with its
/// `token`), the first `seconds_before` the case's time (default 0), then one every
/// `interval_ms` (default 0).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryDoc {
    pub request: RequestDoc,
    #[serde(default)]
    pub token: Option<TokenField>,
    #[serde(default)]
    pub repeat: Option<u32>,
    #[serde(default)]
    pub seconds_before: Option<u64>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

impl HistoryDoc {
    /// The case this history entry sends, judged by nothing.
    fn as_case(&self) -> Case {
        Case {
            note: String::new(),
            request: self.request.clone(),
            token: self.token.clone(),
            signature: None,
            now: None,
            repeat: None,
            history: Vec::new(),
            response: None,
            rate_limit_service: None,
            want: Want::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseDoc {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// As `request.body`: a string is sent as is; anything else as JSON (with
    /// `content-type: application/json` unless the headers say otherwise).
    #[serde(default)]
    pub body: Option<Value>,
}

fn ok() -> u16 {
    200
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDoc {
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// A string is sent as is; anything else as JSON (with `content-type: application/json`
    /// unless the headers say otherwise).
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub peer: Option<String>,
    /// The connection: `false` for plaintext, `true` for TLS 1.3, or its TLS version and client
    /// certificate (default: `defaults.tls`, else plaintext).
    #[serde(default)]
    pub tls: Option<TlsField>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Time {
    Seconds(u64),
    Text(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TokenField {
    /// Sent as is (`Authorization: Bearer <text>`).
    Raw(String),
    Mint(Box<TokenDoc>),
}

/// A token to mint. Every field falls back to `defaults.token`; `claims` are merged.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDoc {
    /// PEM private key file, relative to the case file.
    #[serde(default)]
    pub key: Option<String>,
    /// HMAC secret (its UTF-8 bytes).
    #[serde(default)]
    pub hmac_secret: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
    /// Default: the key's own (`ES256` for a P-256 key, `RS256` for RSA, `HS256` for a secret).
    #[serde(default)]
    pub alg: Option<String>,
    /// `exp - iat` in seconds (default 300); negative for an expired token.
    #[serde(default)]
    pub ttl: Option<i64>,
    /// Claims; `iat` and `exp` are added unless given, and `null` removes one.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Where the token goes: a header (default `authorization` with `Bearer `), a query
    /// parameter or a cookie.
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    /// Change one character of the signature (`signature_invalid`).
    #[serde(default)]
    pub corrupt_signature: bool,
}

impl TokenDoc {
    fn over(&self, base: &TokenDoc) -> TokenDoc {
        let mut claims = base.claims.clone();
        claims.extend(self.claims.clone());
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        TokenDoc {
            key: pick(&self.key, &base.key),
            hmac_secret: pick(&self.hmac_secret, &base.hmac_secret),
            kid: pick(&self.kid, &base.kid),
            alg: pick(&self.alg, &base.alg),
            ttl: self.ttl.or(base.ttl),
            claims,
            header: pick(&self.header, &base.header),
            prefix: pick(&self.prefix, &base.prefix),
            query: pick(&self.query, &base.query),
            cookie: pick(&self.cookie, &base.cookie),
            corrupt_signature: self.corrupt_signature || base.corrupt_signature,
        }
    }
}

/// A signature to make (RFC 9421). Every field falls back to `defaults.signature`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDoc {
    /// File holding the private JWK (with `kid`), relative to the case file.
    #[serde(default)]
    pub key: Option<String>,
    /// Covered components (default `@method`, `@target-uri`, `@authority`); `content-digest`
    /// is added (with the header) when the request has a body.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// Default `sig1`.
    #[serde(default)]
    pub label: Option<String>,
    /// Seconds before the case's time the signature was made (default 0; negative: later).
    #[serde(default)]
    pub age: Option<i64>,
    /// `expires` this many seconds after `created`.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// The nonce: a string, or `false` for none (default: a random one).
    #[serde(default)]
    pub nonce: Option<NonceField>,
    /// `keyid` to write instead of the key's `kid`.
    #[serde(default)]
    pub keyid: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    /// Leave out the `content-digest` component and header even with a body.
    #[serde(default)]
    pub no_digest: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum NonceField {
    On(bool),
    Text(String),
}

impl SignatureDoc {
    fn over(&self, base: &SignatureDoc) -> SignatureDoc {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        SignatureDoc {
            key: pick(&self.key, &base.key),
            components: self.components.clone().or_else(|| base.components.clone()),
            label: pick(&self.label, &base.label),
            age: self.age.or(base.age),
            expires_in: self.expires_in.or(base.expires_in),
            nonce: self.nonce.clone().or_else(|| base.nonce.clone()),
            keyid: pick(&self.keyid, &base.keyid),
            tag: pick(&self.tag, &base.tag),
            no_digest: self.no_digest || base.no_digest,
        }
    }
}

/// What the case must get; fields left out are not compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Want {
    pub decision: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub would_deny: Option<String>,
    /// The status the client receives from the response phase (the case needs a `response`).
    #[serde(default)]
    pub response_status: Option<u16>,
    /// Tollgate's code when it replaced the upstream's response (`response_invalid`,
    /// `response_unchecked`, `upstream_error`); `null`: the upstream's response went on.
    #[serde(default, deserialize_with = "nullable")]
    pub response_code: Option<Option<String>>,
    /// The body the client receives: a string compared as text, anything else as JSON.
    #[serde(default)]
    pub response_body: Option<Value>,
    /// The descriptors sent to the rate-limit service, each as `["key=value", ...]`; `null`:
    /// the service is not asked.
    #[serde(default, deserialize_with = "nullable_list")]
    pub descriptors: Option<Option<Descriptors>>,
}

/// Descriptors, each a list of `key=value`.
type Descriptors = Vec<Vec<String>>;

/// `descriptors`, which may be given as `null` (the service is not asked).
fn nullable_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Descriptors>>, D::Error> {
    Option::<Descriptors>::deserialize(d).map(Some)
}

/// A field that may be given as `null` (`Some(None)`), apart from one left out (`None`).
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const DEFAULT_TTL: i64 = 300;

/// One case's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub index: usize,
    pub note: String,
    pub line: usize,
    pub now_pinned: bool,
    pub repeat: u32,
    /// Requests sent before the case's own (`history`).
    pub history: u32,
    pub spec: Option<Spec>,
    pub got: Option<Value>,
    /// Why the case failed (empty: passed).
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A case file that cannot be used at all.
#[derive(Debug)]
pub struct FileError(pub String);

pub fn load(path: &str) -> Result<(Document, CaseFile), FileError> {
    let doc = Document::read(path).map_err(|e| {
        let at = e
            .pos
            .map(|p| format!("{}:{}:", p.line, p.column))
            .unwrap_or_default();
        FileError(format!("{path}:{at} {}", e.message))
    })?;
    let file: CaseFile = serde_path_to_error::deserialize(doc.value.clone()).map_err(|e| {
        let p = e.path().to_string();
        let p = if p == "." { String::new() } else { p };
        let pos = doc.locate(&p, e.inner().to_string().starts_with("unknown field"));
        FileError(format!(
            "{path}:{}:{}: {p}: {}",
            pos.line,
            pos.column,
            e.inner()
        ))
    })?;
    Ok((doc, file))
}

fn header_values(map: &BTreeMap<String, HeaderValue>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in map {
        match v {
            HeaderValue::One(s) => out.push((k.clone(), s.clone())),
            HeaderValue::Many(list) => out.extend(list.iter().map(|s| (k.clone(), s.clone()))),
        }
    }
    out
}

fn time(t: &Time) -> Result<u64, String> {
    match t {
        Time::Seconds(s) => Ok(*s),
        Time::Text(text) => request::parse_time(text),
    }
}

/// A case's body: a string as is, anything else as JSON, declared as such in `headers` unless
/// they give a `content-type`.
fn body_bytes(body: Option<&Value>, headers: &mut Vec<(String, String)>) -> Option<Vec<u8>> {
    match body? {
        Value::String(s) => Some(s.clone().into_bytes()),
        v => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(v.to_string().into_bytes())
        }
    }
}

/// The upstream's response of a case.
fn upstream(doc: &ResponseDoc) -> Upstream {
    let mut headers = header_values(&doc.headers);
    let body = body_bytes(doc.body.as_ref(), &mut headers).unwrap_or_default();
    Upstream {
        status: doc.status,
        headers,
        body,
    }
}

/// Builds the request of a case at `now` (seconds), minting its token.
pub fn build(case: &Case, defaults: &Defaults, base_dir: &Path, now: u64) -> Result<Spec, String> {
    let mut merged = defaults.headers.clone();
    merged.extend(case.request.headers.clone());
    let mut headers = header_values(&merged);
    let mut path = case.request.path.clone();
    let body = body_bytes(case.request.body.as_ref(), &mut headers);
    if let Some(field) = &case.token {
        let (token, place) = match field {
            TokenField::Raw(t) => (t.clone(), TokenDoc::default()),
            TokenField::Mint(t) => {
                let t = match &defaults.token {
                    Some(base) => t.over(base),
                    None => TokenDoc::clone(t),
                };
                (mint(&t, base_dir, now)?, t)
            }
        };
        if let Some(q) = &place.query {
            let sep = if path.contains('?') { '&' } else { '?' };
            path = format!("{path}{sep}{q}={token}");
        } else if let Some(c) = &place.cookie {
            headers.push(("cookie".into(), format!("{c}={token}")));
        } else {
            let name = place
                .header
                .clone()
                .unwrap_or_else(|| "authorization".into());
            let prefix = place.prefix.clone().unwrap_or_else(|| {
                if name.eq_ignore_ascii_case("authorization") {
                    "Bearer ".into()
                } else {
                    String::new()
                }
            });
            headers.push((name, format!("{prefix}{token}")));
        }
    }
    let mut spec = Spec {
        method: case.request.method.clone().unwrap_or_else(|| "GET".into()),
        path,
        headers,
        body,
        peer: case.request.peer.clone().or_else(|| defaults.peer.clone()),
        connection: case
            .request
            .tls
            .as_ref()
            .or(defaults.tls.as_ref())
            .and_then(TlsField::connection),
        response: case.response.as_ref().map(upstream),
        rate_limit_service: match &case.rate_limit_service {
            None => ServiceAnswer::default(),
            Some(v) => ServiceAnswer::parse(v).map_err(|e| format!("rate_limit_service: {e}"))?,
        },
    };
    if let Some(sig) = &case.signature {
        let sig = match &defaults.signature {
            Some(base) => sig.over(base),
            None => sig.clone(),
        };
        let key = sig
            .key
            .as_ref()
            .ok_or("signature: `key` is required (here or in `defaults.signature`)")?;
        let created = i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_sub(sig.age.unwrap_or(0));
        let created = u64::try_from(created).map_err(|_| "signature: `age` is before 1970")?;
        let nonce = match &sig.nonce {
            None | Some(NonceField::On(true)) => Some(super::sign::random_nonce()?),
            Some(NonceField::On(false)) => None,
            Some(NonceField::Text(t)) => Some(t.clone()),
        };
        let options = super::sign::Options {
            key: super::sign::read_key(&base_dir.join(key))?,
            components: sig.components.clone().unwrap_or_else(|| {
                super::sign::DEFAULT_COMPONENTS
                    .iter()
                    .map(|c| c.to_string())
                    .collect()
            }),
            label: sig.label.clone().unwrap_or_else(|| "sig1".into()),
            created,
            expires: sig.expires_in.map(|e| created.saturating_add_signed(e)),
            nonce,
            keyid: sig.keyid.clone(),
            tag: sig.tag.clone(),
            digest: !sig.no_digest,
        };
        super::sign::sign(&mut spec, &options).map_err(|e| format!("signature: {e}"))?;
    }
    Ok(spec)
}

fn mint(t: &TokenDoc, base_dir: &Path, now: u64) -> Result<String, String> {
    let key = match (&t.key, &t.hmac_secret) {
        (Some(file), None) => {
            let path = base_dir.join(file);
            SigningKey::Pem(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("token key `{}`: {e}", path.display()))?,
            )
        }
        (None, Some(secret)) => SigningKey::Hmac(secret.as_bytes().to_vec()),
        _ => return Err("a token needs exactly one of `key`, `hmac_secret`".into()),
    };
    let alg = match &t.alg {
        Some(a) => Alg::parse(a).ok_or_else(|| format!("`{a}` is not an algorithm"))?,
        None => keys::default_alg(&key)?,
    };
    let claims = keys::with_times(&t.claims, now, t.ttl.unwrap_or(DEFAULT_TTL));
    let token = keys::sign(&key, alg, t.kid.as_deref(), &claims)?;
    Ok(if t.corrupt_signature {
        corrupt(&token)
    } else {
        token
    })
}

/// Changes one character in the middle of the signature.
fn corrupt(token: &str) -> String {
    let sig_start = token.rfind('.').map_or(0, |i| i + 1);
    let target = sig_start + (token.len() - sig_start) / 2;
    token
        .char_indices()
        .map(|(i, c)| {
            if i != target {
                c
            } else if c == 'A' {
                'B'
            } else {
                'A'
            }
        })
        .collect()
}

fn compare(want: &Want, got: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let mut field = |name: &str, expected: Option<Value>| {
        if let Some(e) = expected {
            if got[name] != e {
                failures.push(format!("{name}: want {e}, got {}", got[name]));
            }
        }
    };
    field("decision", Some(Value::from(want.decision.as_str())));
    field("code", want.code.as_deref().map(Value::from));
    field("status", want.status.map(Value::from));
    field("route", want.route.as_deref().map(Value::from));
    field("principal", want.principal.as_deref().map(Value::from));
    field("would_deny", want.would_deny.as_deref().map(Value::from));
    field("response_status", want.response_status.map(Value::from));
    field("descriptors", want.descriptors.as_ref().map(|d| json!(d)));
    field(
        "response_code",
        want.response_code
            .as_ref()
            .map(|c| c.as_deref().map_or(Value::Null, Value::from)),
    );
    match &want.response_body {
        None => {}
        Some(Value::String(text)) => field("response_body", Some(Value::from(text.as_str()))),
        // Compared as JSON, so that a case need not spell the compact text Tollgate writes.
        Some(data) => {
            let seen = got["response_body"]
                .as_str()
                .and_then(|b| serde_json::from_str::<Value>(b).ok());
            if seen.as_ref() != Some(data) {
                failures.push(format!(
                    "response_body: want {data}, got {}",
                    got["response_body"]
                ));
            }
        }
    }
    failures
}

/// Runs every case of `file` against `engine`.
pub fn run(
    engine: &Engine,
    doc: &Document,
    file: &CaseFile,
    base_dir: &Path,
    clock_ms: u64,
) -> Result<Vec<Outcome>, FileError> {
    let mut jwks = Vec::new();
    for (name, rel) in &file.jwks {
        let path: PathBuf = base_dir.join(rel);
        let body = std::fs::read(&path)
            .map_err(|e| FileError(format!("jwks `{}`: {e}", path.display())))?;
        jwks.push((name.clone(), body));
    }
    let revocations = match &file.revocations {
        Some(rel) => {
            let path: PathBuf = base_dir.join(rel);
            Some(
                std::fs::read(&path)
                    .map_err(|e| FileError(format!("revocations `{}`: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let fetched = Fetched { jwks, revocations };
    let mut out = Vec::new();
    for (index, case) in file.cases.iter().enumerate() {
        let line = doc.locate(&format!("cases[{index}]"), false).line;
        let mut outcome = Outcome {
            index,
            note: case.note.clone(),
            line,
            now_pinned: case.now.is_some() || file.defaults.now.is_some(),
            repeat: case.repeat.unwrap_or(1),
            history: case
                .history
                .iter()
                .map(|h| h.repeat.unwrap_or(1))
                .fold(0, u32::saturating_add),
            spec: None,
            got: None,
            failures: vec![],
        };
        let pinned = case.now.as_ref().or(file.defaults.now.as_ref());
        let verdict = run_case(
            engine,
            case,
            &file.defaults,
            pinned,
            base_dir,
            clock_ms,
            &fetched,
        );
        match verdict {
            Ok((spec, verdict)) => {
                let got = verdict.summary();
                outcome.failures = compare(&case.want, &got);
                outcome.got = Some(got);
                outcome.spec = Some(spec);
            }
            Err(e) => outcome.failures.push(e),
        }
        out.push(outcome);
    }
    Ok(out)
}

/// What the case file gives in place of fetches: key sets by name, the revocation list.
struct Fetched {
    jwks: Vec<(String, Vec<u8>)>,
    revocations: Option<Vec<u8>>,
}

fn run_case(
    engine: &Engine,
    case: &Case,
    defaults: &Defaults,
    pinned: Option<&Time>,
    base_dir: &Path,
    clock_ms: u64,
    fetched: &Fetched,
) -> Result<(Spec, Verdict), String> {
    let now_ms = match pinned {
        Some(t) => time(t)?.saturating_mul(1000),
        None => clock_ms,
    };
    if !matches!(case.want.decision.as_str(), "allow" | "deny") {
        return Err(format!(
            "want.decision `{}` is not a decision; expected `allow` or `deny`",
            case.want.decision
        ));
    }
    let w = &case.want;
    if case.response.is_none()
        && (w.response_status.is_some() || w.response_code.is_some() || w.response_body.is_some())
    {
        return Err(
            "want.response_status, response_code and response_body need the case's `response`"
                .into(),
        );
    }
    let spec = build(case, defaults, base_dir, now_ms / 1000)?;
    let mut session = Session::new(engine, &fetched.jwks)?;
    if let Some(body) = &fetched.revocations {
        session.install_revocations(body)?;
    }
    for (i, h) in case.history.iter().enumerate() {
        let start = now_ms.saturating_sub(h.seconds_before.unwrap_or(0).saturating_mul(1000));
        let past = h.as_case();
        let spec = build(&past, defaults, base_dir, start / 1000)
            .map_err(|e| format!("history[{i}]: {e}"))?;
        let step = h.interval_ms.unwrap_or(0);
        for n in 0..h.repeat.unwrap_or(1) {
            session.decide(&spec, start.saturating_add(step.saturating_mul(n.into())));
        }
    }
    let mut verdict = session.decide(&spec, now_ms);
    for _ in 1..case.repeat.unwrap_or(1) {
        verdict = session.decide(&spec, now_ms);
    }
    Ok((spec, verdict))
}

fn describe(v: &Value) -> String {
    let mut text = v["decision"].as_str().unwrap_or("?").to_string();
    for k in ["code", "status"] {
        if !v[k].is_null() {
            text.push_str(&format!(
                " {}",
                v[k].as_str().map_or(v[k].to_string(), String::from)
            ));
        }
    }
    if let Some(r) = v["route"].as_str() {
        text.push_str(&format!(" (route {r})"));
    }
    if !v["response_status"].is_null() {
        text.push_str(&format!(", response {}", v["response_status"]));
        if let Some(c) = v["response_code"].as_str() {
            text.push_str(&format!(" {c}"));
        }
    }
    text
}

pub fn render_text(cases_file: &str, results: &[Outcome]) -> String {
    let mut out = String::new();
    for r in results {
        if r.passed() {
            out.push_str(&format!("  ok    {}\n", r.note));
        } else {
            let got = r
                .got
                .as_ref()
                .map(|g| format!("; got {}", describe(g)))
                .unwrap_or_default();
            out.push_str(&format!(
                "  FAIL  {}  ({cases_file}:{})\n        {}{got}\n",
                r.note,
                r.line,
                r.failures.join("; ")
            ));
        }
    }
    out
}

pub fn render_json(policy: &str, cases_file: &str, results: &[Outcome]) -> Value {
    let passed = results.iter().filter(|r| r.passed()).count();
    json!({
        "policy": policy,
        "cases_file": cases_file,
        "passed": passed,
        "failed": results.len() - passed,
        "cases": results.iter().map(|r| json!({
            "index": r.index,
            "note": r.note,
            "line": r.line,
            "passed": r.passed(),
            "failures": r.failures,
            "now_pinned": r.now_pinned,
            "repeat": r.repeat,
            "history": r.history,
            "got": r.got,
            "request": r.spec.as_ref().map(|s| json!({
                "method": s.method,
                "path": s.path,
                "headers": s.headers,
                "body": s.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                // `null`: plaintext.
                "tls": s.connection.as_ref().map(|c| json!({
                    "version": c.tls_version,
                    "client_certificate": c.peer_certificate.then(|| json!({
                        "uri_san": c.uri_san,
                        "dns_san": c.dns_san,
                        "subject": c.subject,
                    })),
                })),
            })),
            "response": r.spec.as_ref().and_then(|s| s.response.as_ref()).map(|u| json!({
                "status": u.status,
                "headers": u.headers,
                "body": String::from_utf8_lossy(&u.body),
            })),
            "rate_limit_service": r.spec.as_ref().map(|s| s.rate_limit_service.as_str()),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: &str = r#"
defaults:
  token:
    key: ../envoy/demo/demo-signing-key.pem
    kid: demo-1
    claims: {iss: "https://demo.tollgate.local", aud: demo-api, sub: alice}
cases:
  - note: public
    request: {path: /health}
    want: {decision: allow, route: health}
  - note: token with the scope
    request: {path: /orders}
    token: {claims: {scope: "orders:read"}}
    want: {decision: allow, principal: "jwt:corp:alice"}
  - note: wrong on purpose
    request: {method: POST, path: /orders, body: {item: pen, quantity: 1}}
    token: {claims: {scope: "orders:read"}}
    want: {decision: allow}
  - note: expired
    request: {path: /orders}
    token: {ttl: -3600}
    want: {decision: deny, code: token_expired, status: 401}
  - note: bad signature
    request: {path: /orders}
    token: {corrupt_signature: true, claims: {scope: "orders:read"}}
    want: {decision: deny, code: signature_invalid}
  - note: pinned time for an API key
    now: 2026-02-01T00:00:00Z
    request: {path: /orders, headers: {x-api-key: demo-key-reporting-2026q2}}
    want: {decision: deny, code: api_key_invalid}
  - note: raw token
    request: {path: /orders}
    token: "abc"
    want: {decision: deny, code: token_malformed}
  - note: burst runs out
    repeat: 101
    request: {path: /orders, headers: {x-api-key: demo-key-reporting-2026q1}}
    want: {decision: deny, code: rate_limited, status: 429}
"#;

    fn setup(text: &str) -> (Engine, Document, CaseFile, PathBuf) {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
        let engine = Engine::compile(include_bytes!("../../policies/orders.json")).unwrap();
        let doc = Document::parse("x.cases.yaml", text.to_string()).unwrap();
        let file: CaseFile = serde_json::from_value(doc.value.clone()).unwrap();
        (engine, doc, file, dir)
    }

    #[test]
    fn cases_run_and_report() {
        let (engine, doc, file, dir) = setup(CASES);
        let results = run(&engine, &doc, &file, &dir, 1_800_000_000_000).unwrap();
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| !r.passed())
            .map(|r| r.note.as_str())
            .collect();
        assert_eq!(failed, ["wrong on purpose"], "{results:#?}");
        let text = render_text("x.cases.yaml", &results);
        assert!(text.contains("  ok    public\n"), "{text}");
        assert!(
            text.contains("  FAIL  wrong on purpose  (x.cases.yaml:15)\n        decision: want \"allow\", got \"deny\"; got deny insufficient_scope 403 (route create-order)"),
            "{text}"
        );
        let j = render_json("p", "c", &results);
        assert_eq!(j["passed"], 7);
        assert_eq!(j["cases"][5]["now_pinned"], true);
        let req = &j["cases"][2]["request"];
        assert_eq!(req["body"], r#"{"item":"pen","quantity":1}"#);
        assert!(req["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "authorization"));
    }

    #[test]
    fn a_case_file_gives_the_fetched_revocation_list() {
        let mut policy: Value =
            serde_json::from_slice(include_bytes!("../../policies/revocations.json")).unwrap();
        policy["revocations"]["remote"] = json!({"cluster": "c", "uri": "https://lists/r.json"});
        let engine = Engine::compile(policy.to_string().as_bytes()).unwrap();
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"));
        let list =
            std::env::temp_dir().join(format!("tollgate-revoked-{}.json", std::process::id()));
        std::fs::write(&list, r#"{"api_keys": ["reporting-2026q2"]}"#).unwrap();
        let text = format!(
            r#"
revocations: {}
cases:
  - note: revoked by the fetched list
    request: {{path: /orders, headers: {{x-api-key: demo-key-reporting-2026q2}}}}
    want: {{decision: deny, code: credential_revoked, status: 401}}
  - note: the policy's own entries still apply
    request: {{path: /orders, headers: {{x-api-key: demo-key-reporting-2026q1}}}}
    want: {{decision: deny, code: credential_revoked}}
"#,
            list.display()
        );
        let doc = Document::parse("x.cases.yaml", text).unwrap();
        let file: CaseFile = serde_json::from_value(doc.value.clone()).unwrap();
        let results = run(&engine, &doc, &file, &dir, 1_800_000_000_000).unwrap();
        assert!(results.iter().all(Outcome::passed), "{results:#?}");

        // Without the list, the filter would still be waiting for its first fetch.
        let text = r#"
cases:
  - note: not fetched yet
    request: {path: /orders, headers: {x-api-key: demo-key-reporting-2026q2}}
    want: {decision: deny, code: revocations_unavailable, status: 503}
"#;
        let doc = Document::parse("x.cases.yaml", text.to_string()).unwrap();
        let file: CaseFile = serde_json::from_value(doc.value.clone()).unwrap();
        let results = run(&engine, &doc, &file, &dir, 1_800_000_000_000).unwrap();
        std::fs::remove_file(&list).ok();
        assert!(results.iter().all(Outcome::passed), "{results:#?}");
    }

    #[test]
    fn token_placement() {
        let (_, _, _, dir) = setup(CASES);
        let defaults: Defaults = serde_json::from_value(json!({
            "token": {"hmac_secret": "s".repeat(32), "claims": {"sub": "a"}}
        }))
        .unwrap();
        let case = |token: Value| -> Case {
            serde_json::from_value(json!({"note": "n", "request": {"path": "/x?a=1"}, "token": token, "want": {"decision": "allow"}})).unwrap()
        };
        let s = build(&case(json!({"query": "access_token"})), &defaults, &dir, 10).unwrap();
        assert!(s.path.starts_with("/x?a=1&access_token=ey"), "{}", s.path);
        let s = build(&case(json!({"cookie": "session"})), &defaults, &dir, 10).unwrap();
        assert!(s.headers[0].0 == "cookie" && s.headers[0].1.starts_with("session=ey"));
        let s = build(&case(json!({"header": "x-token"})), &defaults, &dir, 10).unwrap();
        assert!(s.headers[0].0 == "x-token" && s.headers[0].1.starts_with("ey"));
        let token = s.headers[0].1.clone();
        let claims = crate::cli::explain::decode_jwt(&token).unwrap();
        assert_eq!(claims["header"]["alg"], "HS256");
        assert_eq!(claims["claims"], json!({"sub": "a", "iat": 10, "exp": 310}));
        assert_ne!(corrupt(&token), token);
    }

    #[test]
    fn a_case_gives_the_upstream_response() {
        let text = r#"
cases:
  - note: passed on
    request: {path: /health}
    response: {status: 404, headers: {X-Trace: [a, b]}, body: {b: 1, a: [2]}}
    want: {decision: allow, response_status: 404, response_code: null, response_body: {a: [2], b: 1}}
  - note: text compared as text
    request: {path: /health}
    response: {body: "plain"}
    want: {decision: allow, response_status: 200, response_body: plain}
  - note: wrong code
    request: {path: /health}
    response: {status: 503}
    want: {decision: allow, response_code: upstream_error}
  - note: a response field without a response
    request: {path: /health}
    want: {decision: allow, response_status: 200}
"#;
        let (engine, doc, file, dir) = setup(text);
        let results = run(&engine, &doc, &file, &dir, 1_800_000_000_000).unwrap();
        let failures: Vec<&[String]> = results.iter().map(|r| r.failures.as_slice()).collect();
        assert!(
            failures[0].is_empty() && failures[1].is_empty(),
            "{results:#?}"
        );
        assert_eq!(
            failures[2],
            [r#"response_code: want "upstream_error", got null"#]
        );
        assert!(
            failures[3][0].contains("need the case's `response`"),
            "{failures:?}"
        );
        let spec = results[0].spec.as_ref().unwrap();
        let upstream = spec.response.as_ref().unwrap();
        assert_eq!(upstream.status, 404);
        assert_eq!(upstream.body, br#"{"a":[2],"b":1}"#);
        assert!(upstream
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert_eq!(
            upstream
                .headers
                .iter()
                .filter(|(k, _)| k == "X-Trace")
                .count(),
            2
        );
        let j = render_json("p", "c", &results);
        assert_eq!(j["cases"][0]["response"]["status"], 404);
        assert_eq!(j["cases"][0]["got"]["response_status"], 404);
        assert!(j["cases"][0]["request"]["body"].is_null());
        assert!(render_text("c", &results).contains("got allow (route health), response 503"));
    }

    #[test]
    fn case_file_errors_are_placed() {
        let dir = std::env::temp_dir().join(format!("tollgate-cli-cases-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.cases.yaml");
        std::fs::write(
            &path,
            "cases:\n  - note: x\n    request: {path: /}\n    wnat: {decision: allow}\n",
        )
        .unwrap();
        let err = load(path.to_str().unwrap()).unwrap_err();
        assert!(
            err.0
                .contains("bad.cases.yaml:4:5: cases[0].wnat: unknown field `wnat`"),
            "{}",
            err.0
        );
    }
}
