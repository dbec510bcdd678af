//! The request as the engine sees it: a borrowed view the host fills from Envoy's headers.

/// Header names are lowercase (Envoy's header maps are); `path` is `:path`, query included.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    /// Downstream peer address (`ip:port`), for `client_ip` rate-limit keys.
    pub peer: Option<&'a str>,
    /// The downstream connection's TLS state and client certificate; read by the host only when
    /// the policy asks ([`super::Engine::uses_connection`]).
    pub connection: Option<&'a super::peer::Connection>,
}

impl<'a> Request<'a> {
    /// Every value of header `name` (lowercase), in order.
    pub fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers
            .iter()
            .filter(move |(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without query string or fragment.
    pub fn path_only(&self) -> &'a str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        self.path.get(..end).unwrap_or(self.path)
    }
}

/// Why a request's host cannot be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmbiguousHost;

/// The one host a request is for, in the form routes are matched on: ASCII lowercase, without
/// port or a trailing dot (`Admin.Example.Test.:443` -> `admin.example.test`). Empty when the
/// request names no host (HTTP/1.0).
///
/// Refused, because Tollgate and the upstream could pick different hosts: more than one
/// `:authority` value, a comma-joined list (Envoy joins repeated HTTP/1 `Host` headers that way),
/// a `host` header that names another host than `:authority`, and anything that is not a DNS
/// name or IP literal - non-ASCII included (IDNA: a host route names the A-label, `xn--...`,
/// and clients send it).
pub fn normalize_host(authority: &str) -> Result<std::borrow::Cow<'_, str>, AmbiguousHost> {
    let name = if let Some(rest) = authority.strip_prefix('[') {
        // IPv6 literal, `[::1]` or `[::1]:443`.
        let (inside, after) = rest.split_once(']').ok_or(AmbiguousHost)?;
        if !after.is_empty() && !is_port(after.strip_prefix(':').ok_or(AmbiguousHost)?) {
            return Err(AmbiguousHost);
        }
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(AmbiguousHost);
        }
        return Ok(std::borrow::Cow::Owned(format!(
            "[{}]",
            inside.to_ascii_lowercase()
        )));
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return Err(AmbiguousHost),
            None => authority,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        || name.starts_with('.')
        || name.contains("..")
        || (name.is_empty() && !authority.is_empty())
    {
        return Err(AmbiguousHost);
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(std::borrow::Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Ok(std::borrow::Cow::Borrowed(name))
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Request<'a> {
    /// The request's one host, normalised (see [`normalize_host`]).
    pub fn host(&self) -> Result<std::borrow::Cow<'a, str>, AmbiguousHost> {
        let mut authorities = self.header_values(":authority");
        let authority = authorities.next().unwrap_or("");
        if authorities.next().is_some() {
            return Err(AmbiguousHost);
        }
        let host = normalize_host(authority)?;
        for other in self.header_values("host") {
            if normalize_host(other)? != host {
                return Err(AmbiguousHost);
            }
        }
        Ok(host)
    }
}

/// `name=value` pairs of the query string, undecoded: token sources compare them as they are (a
/// JWT is base64url and dots, so a percent-encoded token is not a valid one anyway); query checks
/// decode them.
pub fn query_pairs(path: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The client address for `client_ip`: the peer address (port removed) with no trusted hops, else
/// the `x-forwarded-for` entry written by the outermost trusted proxy.
pub fn client_ip<'a>(
    peer: Option<&'a str>,
    xff: Option<&'a str>,
    trusted_hops: u32,
) -> Option<&'a str> {
    if trusted_hops == 0 {
        let peer = peer?;
        return Some(match peer.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => match peer.rsplit_once(':') {
                Some((host, port))
                    if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    host
                }
                _ => peer,
            },
        });
    }
    let entries: Vec<&str> = xff?
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let index = entries
        .len()
        .checked_sub(usize::try_from(trusted_hops).ok()?)?;
    entries.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn hosts_normalise_to_one_spelling() {
        for raw in [
            "admin.example.test",
            "admin.example.test.",
            "ADMIN.Example.Test",
            "admin.example.test:10000",
            "admin.example.test.:10000",
            "Admin.Example.Test.:443",
        ] {
            assert_eq!(
                normalize_host(raw).as_deref(),
                Ok("admin.example.test"),
                "{raw}"
            );
        }
        assert_eq!(normalize_host("").as_deref(), Ok(""));
        assert_eq!(normalize_host("[::1]:80").as_deref(), Ok("[::1]"));
        assert_eq!(normalize_host("10.0.0.1:8080").as_deref(), Ok("10.0.0.1"));
        assert_eq!(
            normalize_host("svc_a.internal").as_deref(),
            Ok("svc_a.internal")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn ambiguous_hosts_are_refused() {
        for raw in [
            "127.0.0.1,admin.example.test",
            "admin.example.test, admin.example.test",
            "ädmin.example.test",
            "ａdmin.example.test",
            "admin.example.test:",
            "admin.example.test:abc",
            "admin.example.test:99999999",
            "admin example",
            ".",
            ":80",
            "a..b",
            ".admin.example.test",
            "user@admin.example.test",
            "[::1",
            "[::1]x",
            "[]",
            "admin.example.test\u{0}",
        ] {
            assert_eq!(normalize_host(raw), Err(AmbiguousHost), "{raw:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn one_host_per_request() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let req = |headers: &[(String, String)]| {
            Request {
                method: "GET",
                path: "/",
                headers,
                peer: None,
                connection: None,
            }
            .host()
            .map(|h| h.into_owned())
        };
        assert_eq!(req(&h(&[(":authority", "a.test")])), Ok("a.test".into()));
        assert_eq!(
            req(&h(&[(":authority", "a.test"), ("host", "A.test.:80")])),
            Ok("a.test".into())
        );
        assert_eq!(
            req(&h(&[(":authority", "a.test"), (":authority", "b.test")])),
            Err(AmbiguousHost)
        );
        assert_eq!(
            req(&h(&[(":authority", "a.test"), ("host", "b.test")])),
            Err(AmbiguousHost)
        );
        assert_eq!(req(&h(&[])), Ok(String::new()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn client_ip_selection() {
        assert_eq!(
            client_ip(Some("10.0.0.1:5555"), Some("1.1.1.1"), 0),
            Some("10.0.0.1")
        );
        assert_eq!(
            client_ip(Some("[2001:db8::1]:443"), None, 0),
            Some("2001:db8::1")
        );
        assert_eq!(client_ip(Some("2001:db8::1"), None, 0), Some("2001:db8::1"));
        assert_eq!(
            client_ip(None, Some("1.1.1.1, 2.2.2.2, 3.3.3.3"), 1),
            Some("3.3.3.3")
        );
        assert_eq!(
            client_ip(None, Some("1.1.1.1, 2.2.2.2, 3.3.3.3"), 2),
            Some("2.2.2.2")
        );
        assert_eq!(
            client_ip(None, Some("1.1.1.1"), 2),
            None,
            "fewer entries than trusted hops"
        );
        assert_eq!(client_ip(None, None, 1), None);
    }
}
