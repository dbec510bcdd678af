//! `x-forwarded-client-cert` (Envoy's XFCC) from a trusted hop: who the hop's own client was.
//!
//! The header is a comma-separated list of elements, one per proxy that terminated a client's
//! TLS; each element is `;`-separated `Key=value` pairs (`By`, `Hash`, `Cert`, `Chain`,
//! `Subject`, `URI`, `DNS`), a value possibly double-quoted with `\"` escapes. The last element
//! is the one the nearest hop appended: its client. Only a hop the policy names
//! (`forwarded_client_cert.from`) is believed; any other hop's header is not read at all.

use super::peer::Connection;

/// Longest header read (Envoy's default header limit is 60 KiB; XFCC with `Cert` is large).
const MAX_BYTES: usize = 64 * 1024;

/// Splits `text` at `sep` outside double quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(text.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(text.get(start..).unwrap_or(""));
    out
}

/// A value, unquoted when quoted (`\"` and `\\` unescaped).
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The client the nearest hop describes in `values` (every `x-forwarded-client-cert` line, in
/// order), on a connection that is `hop`'s. `None`: no header, or one that cannot be read (then
/// the hop's client is unknown, and no certificate is assumed).
pub fn forwarded_client(values: &[&str], hop: &Connection) -> Option<Connection> {
    let joined = values.join(",");
    if joined.trim().is_empty() {
        return None;
    }
    let mut client = Connection {
        tls_version: hop.tls_version.clone(),
        ..Connection::default()
    };
    if joined.len() > MAX_BYTES {
        return Some(client);
    }
    let elements = split_unquoted(&joined, ',');
    let Some(last) = elements.last() else {
        return Some(client);
    };
    for pair in split_unquoted(last, ';') {
        let Some((key, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let Some(value) = unquote(value.trim()).filter(|v| !v.is_empty()) else {
            // A malformed element describes no certificate.
            return Some(Connection {
                tls_version: hop.tls_version.clone(),
                ..Connection::default()
            });
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "uri" if client.uri_san.is_none() => client.uri_san = Some(value),
            "dns" if client.dns_san.is_none() => client.dns_san = Some(value),
            "subject" if client.subject.is_none() => client.subject = Some(value),
            _ => {}
        }
    }
    client.peer_certificate =
        client.uri_san.is_some() || client.dns_san.is_some() || client.subject.is_some();
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn hop() -> Connection {
        Connection {
            tls_version: Some("TLSv1.3".into()),
            peer_certificate: true,
            uri_san: Some("spiffe://prod.example/ns/edge/sa/ingress".into()),
            ..Connection::default()
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_last_element_is_the_nearest_hops_client() {
        let xfcc = [
            r#"By=spiffe://a;URI=spiffe://prod.example/ns/x/sa/first,By=spiffe://prod.example/ns/edge/sa/ingress;Hash=ab12;Subject="CN=frontend,O=Example";URI=spiffe://prod.example/ns/web/sa/frontend;DNS=frontend.web"#,
        ];
        let c = forwarded_client(&xfcc, &hop()).unwrap();
        assert!(c.peer_certificate);
        assert_eq!(
            c.uri_san.as_deref(),
            Some("spiffe://prod.example/ns/web/sa/frontend")
        );
        assert_eq!(c.dns_san.as_deref(), Some("frontend.web"));
        assert_eq!(c.subject.as_deref(), Some("CN=frontend,O=Example"));
        assert_eq!(c.tls_version.as_deref(), Some("TLSv1.3"));
        // Two header lines are one list.
        let lines = ["URI=spiffe://one", "URI=spiffe://two;DNS=two"];
        let c = forwarded_client(&lines, &hop()).unwrap();
        assert_eq!(c.uri_san.as_deref(), Some("spiffe://two"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn quoted_commas_and_semicolons_stay_in_their_value() {
        let xfcc = [r#"Subject="CN=a\"b,O=c;d";URI=spiffe://x"#];
        let c = forwarded_client(&xfcc, &hop()).unwrap();
        assert_eq!(c.subject.as_deref(), Some(r#"CN=a"b,O=c;d"#));
        assert_eq!(c.uri_san.as_deref(), Some("spiffe://x"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_client_without_a_certificate_or_a_broken_element_is_no_certificate() {
        for xfcc in [
            "By=spiffe://edge;Hash=ab12",
            r#"URI="spiffe://x"#,
            "URI=",
            "garbage",
        ] {
            let c = forwarded_client(&[xfcc], &hop()).unwrap();
            assert!(!c.peer_certificate, "{xfcc}");
            assert_eq!(c.identity(), None, "{xfcc}");
        }
        assert_eq!(forwarded_client(&[], &hop()), None);
        assert_eq!(forwarded_client(&[" "], &hop()), None);
        let huge = format!("URI=spiffe://{}", "a".repeat(MAX_BYTES));
        assert!(!forwarded_client(&[&huge], &hop()).unwrap().peer_certificate);
    }
}
