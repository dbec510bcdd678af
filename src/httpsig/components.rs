//! Covered components and the signature base of a request (RFC 9421 sections 2 and 2.5): what
//! each component identifier means, how its value is read from the request and canonicalised,
//! and the lines of the base in order. Response-only parts of RFC 9421 (`@status`, `req`) and
//! trailers (`tr`) are refused, as are parameters and derived components this file does not know.

use super::error::{echo, SigError};
use super::sfv::{self, BareItem, Item, Member, Parameters};
use std::fmt;

/// Upper bound on the covered components of one signature: each costs a scan of the headers.
pub const MAX_COMPONENTS: usize = 64;

/// The request a signature is made or checked over, as the host sees it.
///
/// `headers` holds lowercase names in the order Envoy presents them. Pseudo-headers
/// (`:method`, `:path`, ...) may be present and are never read: a component name cannot start
/// with `:`, and the derived components read the fields of this struct instead. Envoy turns an
/// HTTP/1 `Host` header into `:authority`; a caller that wants signatures covering `host` to
/// verify adds a `host` entry itself (RFC 9421 recommends `@authority` instead).
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// `http` or `https` (any case).
    pub scheme: &'a str,
    /// `host[:port]` as the client sent it (`:authority`).
    pub authority: &'a str,
    /// The origin-form request target (`:path`): `/path?query`, or `*`.
    pub path_and_query: &'a str,
    pub headers: &'a [(String, String)],
}

/// One component identifier: a name (`@method`, `content-type`) and its parameters, in the
/// order they were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    name: String,
    params: Parameters,
}

/// What a component identifier asks for, checked against RFC 9421's rules.
enum Resolved<'c> {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    QueryParam(&'c str),
    Field { name: &'c str, mode: FieldMode<'c> },
}

enum FieldMode<'c> {
    Plain,
    Structured,
    Key(&'c str),
    Bytes,
}

impl Component {
    /// Reads a component identifier as it appears in `Signature-Input`
    /// (`"@query-param";name="id"`), or the same with an unquoted name (`@method`,
    /// `example-dict;key="a"`). Whether the component can be used is checked when a base is
    /// built.
    pub fn parse(text: &str) -> Result<Component, SigError> {
        let malformed = |_: sfv::SfvError| SigError::Component {
            component: echo(text),
            reason: "not a component identifier",
        };
        let (name, params) = if text.starts_with('"') {
            let (name, rest) = sfv::parse_string_prefix(text).map_err(malformed)?;
            (name, sfv::parse_parameters(rest).map_err(malformed)?)
        } else {
            let (name, rest) = match text.find(';') {
                Some(at) => text.split_at(at),
                None => (text, ""),
            };
            if name.is_empty() || !sfv::is_string(name) {
                return Err(malformed(sfv::SfvError("")));
            }
            (
                name.to_string(),
                sfv::parse_parameters(rest).map_err(malformed)?,
            )
        };
        Ok(Component { name, params })
    }

    /// A component from an inner-list item of `Signature-Input`: a String with parameters.
    pub(crate) fn from_item(item: &Item) -> Option<Component> {
        match &item.value {
            BareItem::String(name) => Some(Component {
                name: name.clone(),
                params: item.params.clone(),
            }),
            _ => None,
        }
    }

    pub(crate) fn to_item(&self) -> Item {
        Item {
            value: BareItem::String(self.name.clone()),
            params: self.params.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of parameter `key`, if the identifier has it.
    pub fn param(&self, key: &str) -> Option<&BareItem> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether the identifier has no parameters.
    pub fn is_plain(&self) -> bool {
        self.params.is_empty()
    }

    /// RFC 9421 section 2: identifiers are the same when names are equal and parameters are
    /// equal as a set (`"a";x;y` is `"a";y;x`).
    pub(crate) fn same_as(&self, other: &Component) -> bool {
        self.name == other.name
            && self.params.len() == other.params.len()
            && self.params.iter().all(|p| other.params.contains(p))
    }

    fn error(&self, reason: &'static str) -> SigError {
        SigError::Component {
            component: echo(&self.to_string()),
            reason,
        }
    }

    fn resolve(&self) -> Result<Resolved<'_>, SigError> {
        if self.params.iter().any(|(k, _)| k == "req") {
            return Err(self.error("`req` applies to signed responses only"));
        }
        if let Some(derived) = self.name.strip_prefix('@') {
            let resolved = match derived {
                "method" => Resolved::Method,
                "target-uri" => Resolved::TargetUri,
                "authority" => Resolved::Authority,
                "scheme" => Resolved::Scheme,
                "request-target" => Resolved::RequestTarget,
                "path" => Resolved::Path,
                "query" => Resolved::Query,
                "query-param" => {
                    return match self.params.as_slice() {
                        [(k, BareItem::String(name))] if k == "name" => {
                            Ok(Resolved::QueryParam(name))
                        }
                        [] => Err(self.error("`@query-param` needs a `name` parameter")),
                        _ => Err(self
                            .error("`@query-param` takes exactly one parameter, `name`, a string")),
                    };
                }
                "status" => return Err(self.error("applies to responses only")),
                "signature-params" => {
                    return Err(self.error("cannot be listed as a covered component"))
                }
                _ => return Err(self.error("unknown derived component")),
            };
            if !self.params.is_empty() {
                return Err(self.error("derived component takes no parameters"));
            }
            return Ok(resolved);
        }
        if self.name.is_empty() || !self.name.bytes().all(sfv::is_tchar) {
            return Err(self.error("not a field name"));
        }
        if self.name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(self.error("field names must be lowercase"));
        }
        let (mut sf, mut key, mut bs) = (false, None, false);
        for (k, v) in &self.params {
            match (k.as_str(), v) {
                ("sf", BareItem::Boolean(true)) => sf = true,
                ("bs", BareItem::Boolean(true)) => bs = true,
                ("key", BareItem::String(member)) => key = Some(member.as_str()),
                ("sf" | "bs", _) => return Err(self.error("`sf` and `bs` take no value")),
                ("key", _) => return Err(self.error("`key` must be a string")),
                ("tr", _) => return Err(self.error("trailer fields are not supported")),
                _ => return Err(self.error("unknown parameter")),
            }
        }
        let mode = match (sf, key, bs) {
            (_, Some(_), true) | (true, _, true) => {
                return Err(self.error("`bs` cannot be combined with `sf` or `key`"))
            }
            (_, Some(member), false) => FieldMode::Key(member),
            (true, None, false) => FieldMode::Structured,
            (false, None, true) => FieldMode::Bytes,
            (false, None, false) => FieldMode::Plain,
        };
        Ok(Resolved::Field {
            name: &self.name,
            mode,
        })
    }

    /// The component value for `req` (RFC 9421 sections 2.1 and 2.2).
    pub fn value(&self, req: &SignedRequest<'_>) -> Result<String, SigError> {
        let value = match self.resolve()? {
            Resolved::Method => {
                if req.method.is_empty() || !req.method.bytes().all(sfv::is_tchar) {
                    return Err(SigError::Request("method is not a token"));
                }
                req.method.to_string()
            }
            Resolved::Scheme => scheme(req)?,
            Resolved::Authority => authority(req)?,
            Resolved::TargetUri => {
                let target = Target::of(req)?;
                format!("{}://{}{}", scheme(req)?, authority(req)?, target.origin)
            }
            Resolved::RequestTarget => Target::of(req)?.raw.to_string(),
            Resolved::Path => Target::of(req)?.path.to_string(),
            Resolved::Query => format!("?{}", Target::of(req)?.query.unwrap_or_default()),
            Resolved::QueryParam(name) => {
                query_param(Target::of(req)?.query.unwrap_or_default(), name)
                    .map_err(|reason| self.error(reason))?
            }
            Resolved::Field { name, mode } => {
                let values: Vec<String> = req
                    .headers
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| canonical_field_value(v))
                    .collect();
                if values.is_empty() {
                    return Err(self.error("the request has no such field"));
                }
                let value = match mode {
                    FieldMode::Plain => values.join(", "),
                    FieldMode::Structured => structured(&values.join(", "))
                        .ok_or_else(|| self.error("not a structured list or dictionary"))?,
                    FieldMode::Key(member) => {
                        let dict = sfv::parse_dictionary(&values.join(", "))
                            .map_err(|_| self.error("not a structured dictionary"))?;
                        let Some((_, m)) = dict.iter().find(|(k, _)| k == member) else {
                            return Err(self.error("the dictionary has no such member"));
                        };
                        let mut out = String::new();
                        sfv::write_member(&mut out, m);
                        out
                    }
                    FieldMode::Bytes => {
                        let list: Vec<Member> = values
                            .iter()
                            .map(|v| {
                                Member::Item(Item {
                                    value: BareItem::Bytes(v.as_bytes().to_vec()),
                                    params: Vec::new(),
                                })
                            })
                            .collect();
                        return Ok(sfv::serialize_list(&list));
                    }
                };
                if !value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
                {
                    return Err(
                        self.error("value has characters a signature base cannot hold (use `bs`)")
                    );
                }
                value
            }
        };
        // Derived values are checked above to be VCHAR only, so they never start or end with
        // whitespace (section 2.2); field values are printable ASCII or base64.
        Ok(value)
    }
}

impl fmt::Display for Component {
    /// The serialised identifier, as in the signature base: `"@query-param";name="id"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        sfv::write_item(&mut out, &self.to_item());
        f.write_str(&out)
    }
}

/// RFC 9421 section 2.1: leading and trailing whitespace stripped, obsolete line folding (a line
/// break followed by spaces or tabs, with the whitespace around it) replaced by one space.
/// Stripped again after unfolding, so that a fold at either end leaves no space there (the
/// result is the same as the RFC's order for every value HTTP allows).
fn canonical_field_value(raw: &str) -> String {
    let trimmed = raw.trim_matches([' ', '\t']);
    if !trimmed.contains(['\r', '\n']) {
        return trimmed.to_string();
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        let newline = match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                true
            }
            '\n' => true,
            _ => false,
        };
        if newline && matches!(chars.peek(), Some(' ' | '\t')) {
            while matches!(chars.peek(), Some(' ' | '\t')) {
                chars.next();
            }
            let kept = out.trim_end_matches([' ', '\t']).len();
            out.truncate(kept);
            out.push(' ');
        } else if newline {
            // Not a fold: left in, so the value is refused as a signature base cannot hold it.
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out.trim_matches([' ', '\t']).to_string()
}

/// RFC 9421 section 2.1.1: the strict serialisation of a field whose type is not known to
/// this verifier. A value that parses as a Dictionary is one (a Dictionary whose members are all
/// bare keys serialises exactly as the List of those tokens would); anything else must parse as
/// a List, which also covers a single Item.
fn structured(value: &str) -> Option<String> {
    if let Ok(dict) = sfv::parse_dictionary(value) {
        return Some(sfv::serialize_dictionary(&dict));
    }
    sfv::parse_list(value).ok().map(|l| sfv::serialize_list(&l))
}

fn scheme(req: &SignedRequest<'_>) -> Result<String, SigError> {
    let mut bytes = req.scheme.bytes();
    let valid = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !valid {
        return Err(SigError::Request("scheme is not a URI scheme"));
    }
    Ok(req.scheme.to_ascii_lowercase())
}

/// RFC 9421 section 2.2.3 with RFC 9110 section 4.2.3: the host in lowercase, the port left out
/// when it is empty or the scheme's default (80 for `http`, 443 for `https`).
fn authority(req: &SignedRequest<'_>) -> Result<String, SigError> {
    const BAD: SigError = SigError::Request("authority is not `host[:port]`");
    let a = req.authority;
    if a.is_empty()
        || !a
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'@' | b'/' | b'?' | b'#' | b'\\'))
    {
        return Err(BAD);
    }
    let (host, port) = if a.starts_with('[') {
        let end = a.find(']').ok_or(BAD)?;
        let (host, rest) = a.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or(BAD)?)),
        }
    } else {
        match a.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (a, None),
        }
    };
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(|inside| {
            !inside.is_empty()
                && inside
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        });
    match literal {
        Some(true) => {}
        Some(false) => return Err(BAD),
        None if host.is_empty() || host.contains(['[', ']']) => return Err(BAD),
        None => {}
    }
    let default = match scheme(req)?.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            let n: u32 = p.parse().map_err(|_| BAD)?;
            if n > 65_535 {
                return Err(BAD);
            }
            (Some(n) != default).then_some(p)
        }
        Some(_) => return Err(BAD),
    };
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// The request target split the way `@path`, `@query` and `@target-uri` read it.
struct Target<'r> {
    raw: &'r str,
    /// The path and query as they follow the authority in `@target-uri` (empty for `*`).
    origin: &'r str,
    path: &'r str,
    query: Option<&'r str>,
}

impl<'r> Target<'r> {
    fn of(req: &SignedRequest<'r>) -> Result<Target<'r>, SigError> {
        let raw = req.path_and_query;
        if raw == "*" {
            // Asterisk form (RFC 9110 section 7.1): the target URI has an empty path, which
            // normalises to `/`, and no query.
            return Ok(Target {
                raw,
                origin: "",
                path: "/",
                query: None,
            });
        }
        if !raw.starts_with('/') || !raw.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
            return Err(SigError::Request(
                "path is not an origin-form request target",
            ));
        }
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        Ok(Target {
            raw,
            origin: raw,
            path,
            query,
        })
    }
}

/// `@query-param;name=...` (RFC 9421 section 2.2.8): the query read as
/// `application/x-www-form-urlencoded` (WHATWG URL), the parameter whose re-encoded name equals
/// `wanted`, its value re-encoded. A name that occurs twice is refused (the RFC: "MUST NOT be
/// included"), as is a value that does not decode to UTF-8 (WHATWG would turn it into U+FFFD,
/// which different bytes share). A name that does not decode to UTF-8 never matches.
fn query_param(query: &str, wanted: &str) -> Result<String, &'static str> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(name) = String::from_utf8(form_decode(name)) else {
            continue;
        };
        if form_encode(name.as_bytes()) == wanted {
            if found.is_some() {
                return Err("the query parameter occurs more than once");
            }
            found = Some(value);
        }
    }
    let value = found.ok_or("the query has no such parameter")?;
    let decoded = form_decode(value);
    if std::str::from_utf8(&decoded).is_err() {
        return Err("the query parameter's value is not UTF-8");
    }
    Ok(form_encode(&decoded))
}

/// WHATWG URL `application/x-www-form-urlencoded` parsing of one name or value: `+` is a
/// space, then `%XX` is decoded; a `%` without two hex digits stays as it is.
fn form_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|h| char::from(*h).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Percent-encoding with the `application/x-www-form-urlencoded` percent-encode set (everything
/// but ASCII alphanumerics and `*-._`). A space becomes `%20`, not `+`: RFC 9421 section 2.2.8
/// encodes `with+plus+whitespace` as `with%20plus%20whitespace`.
fn form_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push('%');
            for nibble in [b >> 4, b & 0x0f] {
                out.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        }
    }
    out
}

/// The `@signature-params` value (RFC 9421 section 2.3): the covered components as an inner list
/// of strings, with the signature parameters in their order.
pub(crate) fn signature_params(components: &[Component], params: &Parameters) -> String {
    let list = sfv::InnerList {
        items: components.iter().map(Component::to_item).collect(),
        params: params.clone(),
    };
    let mut out = String::new();
    sfv::write_inner_list(&mut out, &list);
    out
}

/// The signature base (RFC 9421 section 2.5): one line per covered component, then the
/// `@signature-params` line, which has no trailing newline.
pub(crate) fn signature_base(
    req: &SignedRequest<'_>,
    components: &[Component],
    params: &Parameters,
) -> Result<String, SigError> {
    if components.len() > MAX_COMPONENTS {
        return Err(SigError::TooMany {
            what: "covered components",
            max: MAX_COMPONENTS,
        });
    }
    let mut base = String::new();
    for (i, c) in components.iter().enumerate() {
        if components.iter().take(i).any(|earlier| earlier.same_as(c)) {
            return Err(c.error("listed more than once"));
        }
        let value = c.value(req)?;
        base.push_str(&c.to_string());
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&signature_params(components, params));
    // INVARIANT: every value above is printable ASCII (checked per component, or base64 and
    // structured-field serialisations); a base that is not is never signed or verified.
    if !base.is_ascii() {
        return Err(SigError::Request("signature base is not ASCII"));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req<'a>(path: &'a str, headers: &'a [(String, String)]) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            scheme: "https",
            authority: "www.example.com",
            path_and_query: path,
            headers,
        }
    }

    fn value(r: &SignedRequest<'_>, component: &str) -> Result<String, SigError> {
        Component::parse(component)?.value(r)
    }

    fn reason(r: Result<String, SigError>) -> &'static str {
        match r {
            Err(SigError::Component { reason, .. }) => reason,
            Err(SigError::Request(reason)) => reason,
            other => panic!("expected a component error, got {other:?}"),
        }
    }

    /// RFC 9421 section 2.1's example message fragment.
    fn section_2_1() -> Vec<(String, String)> {
        headers(&[
            ("host", "www.example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("x-ows-header", "   Leading and trailing whitespace.   "),
            ("x-obs-fold-header", "Obsolete\r\n    line folding."),
            ("cache-control", "max-age=60"),
            ("cache-control", "   must-revalidate"),
            ("example-dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
            ("x-empty-header", " "),
        ])
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn field_values_of_section_2_1() {
        let h = section_2_1();
        let r = req("/", &h);
        for (c, want) in [
            ("host", "www.example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("x-ows-header", "Leading and trailing whitespace."),
            ("x-obs-fold-header", "Obsolete line folding."),
            ("cache-control", "max-age=60, must-revalidate"),
            ("example-dict", "a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
            ("x-empty-header", ""),
        ] {
            assert_eq!(value(&r, c).unwrap(), want, "{c}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn obs_fold_variants() {
        for (raw, want) in [
            ("a\n b", "a b"),
            ("a \t\r\n\t\t b", "a b"),
            ("a\r\n b\r\n\tc", "a b c"),
            (" \r\n a", "a"),
        ] {
            assert_eq!(canonical_field_value(raw), want, "{raw:?}");
        }
        // A line break that is not a fold cannot go into a base.
        for raw in [
            "a\nb",
            "a\r\nb",
            "a\rb",
            "a\r",
            "a\r\n ",
            "a\u{7f}b",
            "caf\u{e9}",
        ] {
            let h = headers(&[("x", raw)]);
            assert_eq!(
                reason(value(&req("/", &h), "x")),
                "value has characters a signature base cannot hold (use `bs`)",
                "{raw:?}"
            );
        }
        // A tab inside a value is field content.
        let h = headers(&[("x", "a\tb")]);
        assert_eq!(value(&req("/", &h), "x").unwrap(), "a\tb");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn structured_serialisation_sf() {
        let h = section_2_1();
        let r = req("/", &h);
        assert_eq!(
            value(&r, "\"example-dict\";sf").unwrap(),
            "a=1, b=2;x=1;y=2, c=(a b c)"
        );
        // Multiple field lines are combined before serialisation.
        let h = headers(&[("x-list", "a,  b"), ("x-list", "(c   d);p=\"q\"")]);
        assert_eq!(
            value(&req("/", &h), "x-list;sf").unwrap(),
            "a, b, (c d);p=\"q\""
        );
        // A single item, and a list that is not a dictionary (an integer member).
        let h = headers(&[("x-item", "  \"s\" "), ("x-l", "1,   a")]);
        assert_eq!(value(&req("/", &h), "x-item;sf").unwrap(), "\"s\"");
        assert_eq!(value(&req("/", &h), "x-l;sf").unwrap(), "1, a");
        let h = headers(&[("date", "Tue, 20 Apr 2021 02:07:56 GMT")]);
        assert_eq!(
            reason(value(&req("/", &h), "date;sf")),
            "not a structured list or dictionary"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn dictionary_members_key() {
        // RFC 9421 section 2.1.2's example.
        let h = headers(&[("example-dict", " a=1, b=2;x=1;y=2, c=(a   b    c), d")]);
        let r = req("/", &h);
        for (c, want) in [
            ("\"example-dict\";key=\"a\"", "1"),
            ("\"example-dict\";key=\"d\"", "?1"),
            ("\"example-dict\";key=\"b\"", "2;x=1;y=2"),
            ("\"example-dict\";key=\"c\"", "(a b c)"),
            ("\"example-dict\";sf;key=\"c\"", "(a b c)"),
        ] {
            assert_eq!(value(&r, c).unwrap(), want, "{c}");
        }
        assert_eq!(
            reason(value(&r, "example-dict;key=\"e\"")),
            "the dictionary has no such member"
        );
        // Members of a dictionary split across field lines; a key twice is ambiguous.
        let h = headers(&[("d", "a=1"), ("d", "b=2")]);
        assert_eq!(value(&req("/", &h), "d;key=\"b\"").unwrap(), "2");
        let h = headers(&[("d", "a=1"), ("d", "a=2")]);
        assert_eq!(
            reason(value(&req("/", &h), "d;key=\"a\"")),
            "not a structured dictionary"
        );
        let h = headers(&[("d", "1, 2")]);
        assert_eq!(
            reason(value(&req("/", &h), "d;key=\"a\"")),
            "not a structured dictionary"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn binary_wrapped_bs() {
        // RFC 9421 section 2.1.3's examples: two lines and one line give different values.
        let two = headers(&[
            ("example-header", "value, with, lots"),
            ("example-header", "of, commas"),
        ]);
        let one = headers(&[("example-header", "value, with, lots, of, commas")]);
        assert_eq!(
            value(&req("/", &two), "example-header").unwrap(),
            value(&req("/", &one), "example-header").unwrap()
        );
        assert_eq!(
            value(&req("/", &two), "\"example-header\";bs").unwrap(),
            ":dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:"
        );
        assert_eq!(
            value(&req("/", &one), "\"example-header\";bs").unwrap(),
            ":dmFsdWUsIHdpdGgsIGxvdHMsIG9mLCBjb21tYXM=:"
        );
        // Each value is trimmed and unfolded first; bytes a base cannot hold are wrapped.
        let h = headers(&[("x", "  a\r\n b  "), ("x", "caf\u{e9}")]);
        assert_eq!(value(&req("/", &h), "x;bs").unwrap(), ":YSBi:, :Y2Fmw6k=:");
        let h = headers(&[("x", "a")]);
        for bad in ["x;bs;sf", "x;bs;key=\"a\"", "x;sf=?0", "x;bs=1", "x;key=a"] {
            assert!(value(&req("/", &h), bad).is_err(), "{bad}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn refused_parameters_and_components() {
        let h = headers(&[("x", "a"), (":authority", "www.example.com")]);
        let r = req("/", &h);
        for (c, want) in [
            ("x;req", "`req` applies to signed responses only"),
            ("@method;req", "`req` applies to signed responses only"),
            ("x;tr", "trailer fields are not supported"),
            ("x;foo", "unknown parameter"),
            ("@status", "applies to responses only"),
            (
                "@signature-params",
                "cannot be listed as a covered component",
            ),
            ("@fragment", "unknown derived component"),
            ("@method;x", "derived component takes no parameters"),
            ("@query-param", "`@query-param` needs a `name` parameter"),
            (
                "@query-param;name=a",
                "`@query-param` takes exactly one parameter, `name`, a string",
            ),
            ("X", "field names must be lowercase"),
            (":authority", "not a field name"),
            ("a b", "not a field name"),
            ("missing", "the request has no such field"),
        ] {
            assert_eq!(reason(value(&r, c)), want, "{c}");
        }
        assert!(Component::parse("").is_err());
        assert!(Component::parse("\"unterminated").is_err());
        assert!(Component::parse("\"x\" ;sf").is_err());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn derived_components_of_section_2_2() {
        let h = headers(&[]);
        let r = SignedRequest {
            method: "POST",
            scheme: "https",
            authority: "www.example.com",
            path_and_query: "/path?param=value",
            headers: &h,
        };
        for (c, want) in [
            ("@method", "POST"),
            ("@target-uri", "https://www.example.com/path?param=value"),
            ("@authority", "www.example.com"),
            ("@scheme", "https"),
            ("@request-target", "/path?param=value"),
            ("@path", "/path"),
            ("@query", "?param=value"),
        ] {
            assert_eq!(value(&r, c).unwrap(), want, "{c}");
        }
        let http = SignedRequest {
            scheme: "HTTP",
            ..r
        };
        assert_eq!(value(&http, "@scheme").unwrap(), "http");
        // The method is case-sensitive: no transformation.
        let lower = SignedRequest { method: "get", ..r };
        assert_eq!(value(&lower, "@method").unwrap(), "get");
        let options = SignedRequest {
            method: "OPTIONS",
            path_and_query: "*",
            ..r
        };
        assert_eq!(value(&options, "@request-target").unwrap(), "*");
        assert_eq!(
            value(&options, "@target-uri").unwrap(),
            "https://www.example.com"
        );
        assert_eq!(value(&options, "@path").unwrap(), "/");
        assert_eq!(value(&options, "@query").unwrap(), "?");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_and_path_edge_cases() {
        let h = headers(&[]);
        for (path, q, p) in [
            (
                "/path?param=value&foo=bar&baz=bat%2Dman",
                "?param=value&foo=bar&baz=bat%2Dman",
                "/path",
            ),
            ("/path?queryString", "?queryString", "/path"),
            ("/path", "?", "/path"),
            ("/path?", "?", "/path"),
            ("/a%2Fb/../c?x", "?x", "/a%2Fb/../c"),
            ("/?a=1?b=2", "?a=1?b=2", "/"),
        ] {
            let r = req(path, &h);
            assert_eq!(value(&r, "@query").unwrap(), q, "{path}");
            assert_eq!(value(&r, "@path").unwrap(), p, "{path}");
        }
        for bad in [
            "",
            "path",
            "/a b",
            "/a#frag",
            "http://example.com/",
            "/caf\u{e9}",
        ] {
            assert_eq!(
                reason(value(&req(bad, &h), "@path")),
                "path is not an origin-form request target",
                "{bad:?}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_params_of_section_2_2_8() {
        let h = headers(&[]);
        let r = req("/path?param=value&foo=bar&baz=batman&qux=", &h);
        assert_eq!(
            value(&r, "\"@query-param\";name=\"baz\"").unwrap(),
            "batman"
        );
        assert_eq!(value(&r, "\"@query-param\";name=\"qux\"").unwrap(), "");
        assert_eq!(
            value(&r, "\"@query-param\";name=\"param\"").unwrap(),
            "value"
        );
        let r = req(
            "/parameters?var=this%20is%20a%20big%0Amultiline%20value&\
             bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something",
            &h,
        );
        for (name, want) in [
            ("var", "this%20is%20a%20big%0Amultiline%20value"),
            ("bar", "with%20plus%20whitespace"),
            ("fa%C3%A7ade%22%3A%20", "something"),
        ] {
            let c = format!("\"@query-param\";name=\"{name}\"");
            assert_eq!(value(&r, &c).unwrap(), want, "{name}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_param_decoding_rules() {
        let h = headers(&[]);
        let qp = |path: &str, name: &str| {
            value(&req(path, &h), &format!("\"@query-param\";name=\"{name}\""))
        };
        // Names are compared re-encoded: `%50et`, `P%65t` and `Pet` are one name.
        assert_eq!(qp("/?%50et=dog", "Pet").unwrap(), "dog");
        assert_eq!(qp("/?P%65t=cat", "Pet").unwrap(), "cat");
        // Case matters; a `+` in a value is a space, `%2B` is a plus; `~` and `!` are encoded.
        assert_eq!(
            reason(qp("/?pet=dog", "Pet")),
            "the query has no such parameter"
        );
        assert_eq!(qp("/?a=1+2%2B3~!", "a").unwrap(), "1%202%2B3%7E%21");
        // A lone or broken `%` stays a `%`, which re-encodes as `%25`.
        assert_eq!(qp("/?a=100%&b=%zz%4", "a").unwrap(), "100%25");
        assert_eq!(qp("/?a=100%&b=%zz%4", "b").unwrap(), "%25zz%254");
        // A parameter without `=` has an empty value; empty pairs are skipped.
        assert_eq!(qp("/?&&flag&&", "flag").unwrap(), "");
        // Twice is refused, even with different spellings of the name.
        assert_eq!(
            reason(qp("/?a=1&%61=2", "a")),
            "the query parameter occurs more than once"
        );
        // A value that does not decode to UTF-8 is refused; such a name never matches.
        assert_eq!(
            reason(qp("/?a=%FF", "a")),
            "the query parameter's value is not UTF-8"
        );
        assert_eq!(
            reason(qp("/?%FF=1", "%EF%BF%BD")),
            "the query has no such parameter"
        );
        assert_eq!(qp("/?%C3%A7=%C3%A7", "%C3%A7").unwrap(), "%C3%A7");
        assert_eq!(reason(qp("/path", "a")), "the query has no such parameter");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn authority_normalisation() {
        let h = headers(&[]);
        for (scheme, authority, want) in [
            ("https", "www.example.com", "www.example.com"),
            ("https", "WWW.Example.COM", "www.example.com"),
            ("https", "example.com:443", "example.com"),
            ("HTTPS", "example.com:443", "example.com"),
            ("https", "example.com:0443", "example.com"),
            ("http", "example.com:80", "example.com"),
            ("http", "example.com:443", "example.com:443"),
            ("https", "example.com:80", "example.com:80"),
            ("https", "example.com:8443", "example.com:8443"),
            ("https", "example.com:", "example.com"),
            ("https", "[2001:DB8::1]:443", "[2001:db8::1]"),
            ("https", "[2001:db8::1]:8443", "[2001:db8::1]:8443"),
            ("http", "192.0.2.1:80", "192.0.2.1"),
        ] {
            let r = SignedRequest {
                method: "GET",
                scheme,
                authority,
                path_and_query: "/p?q=1",
                headers: &h,
            };
            assert_eq!(
                value(&r, "@authority").unwrap(),
                want,
                "{scheme} {authority}"
            );
            assert_eq!(
                value(&r, "@target-uri").unwrap(),
                format!("{}://{want}/p?q=1", scheme.to_ascii_lowercase()),
                "{scheme} {authority}"
            );
        }
        for bad in [
            "",
            "user@example.com",
            "example.com:https",
            "example.com:1:2",
            "example.com:65536",
            "example.com:123456",
            "[::1]x",
            "[::1",
            ":443",
            "exa mple.com",
            "example.com/path",
            "a[b]",
            "a]",
            "[]",
            "[v1.x]",
        ] {
            let r = SignedRequest {
                method: "GET",
                scheme: "https",
                authority: bad,
                path_and_query: "/",
                headers: &h,
            };
            assert_eq!(
                reason(value(&r, "@authority")),
                "authority is not `host[:port]`",
                "{bad:?}"
            );
        }
        let r = SignedRequest {
            method: "GET",
            scheme: "1http",
            authority: "a",
            path_and_query: "/",
            headers: &h,
        };
        assert_eq!(reason(value(&r, "@scheme")), "scheme is not a URI scheme");
        let r = SignedRequest { method: "G T", ..r };
        assert_eq!(reason(value(&r, "@method")), "method is not a token");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn base_refuses_duplicates_in_any_parameter_order() {
        let h = headers(&[("d", "a=1, b=2"), ("x", "1")]);
        let r = req("/?a=1", &h);
        let base = |list: &[&str]| {
            let comps: Vec<Component> = list.iter().map(|c| Component::parse(c).unwrap()).collect();
            signature_base(&r, &comps, &Vec::new())
        };
        assert!(base(&["x", "x;sf", "d;key=\"a\"", "d;key=\"b\""]).is_ok());
        for dup in [
            &["x", "\"x\""][..],
            &["@method", "@method"],
            &["d;sf;key=\"a\"", "d;key=\"a\";sf"],
            &["\"@query-param\";name=\"a\"", "@query-param;name=\"a\""],
        ] {
            assert_eq!(reason(base(dup)), "listed more than once", "{dup:?}");
        }
        let many: Vec<String> = (0..=MAX_COMPONENTS).map(|i| format!("x{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(base(&many), Err(SigError::TooMany { .. })));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn base_layout_and_identifier_serialisation() {
        let h = headers(&[("content-type", "application/json")]);
        let r = req("/foo?Pet=dog", &h);
        let comps: Vec<Component> = ["content-type", "@query-param;name=\"Pet\""]
            .iter()
            .map(|c| Component::parse(c).unwrap())
            .collect();
        let params = vec![("created".to_string(), BareItem::Integer(1))];
        assert_eq!(
            signature_base(&r, &comps, &params).unwrap(),
            "\"content-type\": application/json\n\
             \"@query-param\";name=\"Pet\": dog\n\
             \"@signature-params\": (\"content-type\" \"@query-param\";name=\"Pet\");created=1"
        );
        assert_eq!(
            signature_base(&r, &[], &Vec::new()).unwrap(),
            "\"@signature-params\": ()"
        );
        let c = Component::parse("\"a\";sf;key=\"b\"").unwrap();
        assert_eq!(c.name(), "a");
        assert_eq!(c.param("key"), Some(&BareItem::String("b".into())));
        assert!(!c.is_plain() && Component::parse("a").unwrap().is_plain());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn form_encoding_set() {
        let all: Vec<u8> = (0u8..=255).collect();
        let encoded = form_encode(&all);
        let kept: String = encoded
            .split('%')
            .map(|s| s.get(2..).unwrap_or(s))
            .collect();
        assert_eq!(
            kept,
            "*-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
        );
        assert_eq!(form_decode(&encoded), all);
    }
}
