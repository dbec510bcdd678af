//! Safe path normalisation before route matching, so that `/%61dmin`, `/public/../admin` and
//! `//admin` are all judged as `/admin`.
//!
//! Rules (documented in policies/README.md, "Path normalisation"):
//! - percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are decoded; other escapes are
//!   kept, with uppercase hex;
//! - an encoded `/` (`%2F`) or `\` (`%5C`), a raw `\`, a NUL, a malformed escape, escapes that
//!   do not spell UTF-8 (`%FF`) or a `..` that would climb above the root make the path invalid
//!   (`400 path_invalid`): upstreams disagree on what they mean, so no route decision could be
//!   trusted;
//! - `.` segments are dropped, `..` removes the previous segment (RFC 3986 section 5.2.4);
//! - empty segments (`//`) are merged; a trailing `/` is kept.
//!
//! The engine forwards the normalised path upstream when it differs, so the upstream serves
//! exactly what was authorised.

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes unreserved escapes in one segment; `None` for forbidden or malformed input.
fn decode_segment(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                let v = hi * 16 + lo;
                if v == b'/' || v == b'\\' || v == 0 {
                    return None;
                }
                if unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(
                        b"0123456789ABCDEF".get(usize::from(hi)).copied()?,
                    ));
                    out.push(char::from(
                        b"0123456789ABCDEF".get(usize::from(lo)).copied()?,
                    ));
                }
                i += 3;
            }
            b'\\' | 0 => return None,
            _ => {
                // Multi-byte UTF-8 is copied through unchanged.
                let ch = seg.get(i..)?.chars().next()?;
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Some(out)
}

/// The normalised form of `path` (query and fragment removed), or `None` if it is unsafe.
pub fn normalize(path: &str) -> Option<String> {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let path = path.get(..end)?;
    if !path.starts_with('/') {
        // `*` (OPTIONS) and absolute-form targets are not API paths.
        return None;
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let seg = decode_segment(raw)?;
        // Escapes must spell UTF-8 (`%C3%A9`, not `%FF`): what is not text has no single
        // meaning to compare with claims or schemas.
        if seg.contains('%') {
            decode_param(&seg)?;
        }
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let trailing = path.ends_with('/') || last == "." || last == "..";
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Some(out)
}

/// Percent-decodes a path parameter value for comparisons (`/users/al%69ce` -> `alice`); `None`
/// when the bytes are not UTF-8 (`x%FF`): a lossy conversion would make `x%FF` and `x%FE` the
/// same owner (`x\u{fffd}`), so such a value never equals anything.
pub fn decode_param(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/", Some("/")),
            ("/admin", Some("/admin")),
            ("/%61dmin", Some("/admin")),
            ("/%41DMIN", Some("/ADMIN")),
            ("/public/../admin", Some("/admin")),
            ("/public/%2e%2e/admin", Some("/admin")),
            ("/public/%2E%2E/admin", Some("/admin")),
            ("/./admin/.", Some("/admin/")),
            ("//admin//x/", Some("/admin/x/")),
            ("/admin?x=/../y", Some("/admin")),
            ("/a/b/..", Some("/a/")),
            ("/..", None),
            ("/a/../..", None),
            ("/admin%2Fx", None),
            ("/admin%2fx", None),
            ("/admin%5Cx", None),
            ("/admin\\x", None),
            ("/a%00", None),
            ("/a%zz", None),
            ("/a%4", None),
            ("/a%", None),
            ("*", None),
            ("", None),
            ("http://evil/admin", None),
            ("/caf%C3%A9/x%20y", Some("/caf%C3%A9/x%20y")),
            ("/café", Some("/café")),
            ("/a%7e", Some("/a~")),
            ("/users/x%FF", None),
            ("/users/x%fe", None),
            ("/users/%C3", None),
            ("/users/%C3%A9%FF", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), *want, "{input}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn params() {
        assert_eq!(decode_param("al%69ce").as_deref(), Some("alice"));
        assert_eq!(decode_param("a%2").as_deref(), Some("a%2"));
        assert_eq!(decode_param("%C3%A9").as_deref(), Some("é"));
        // Not UTF-8: no lossy look-alike (both used to read as "x\u{fffd}").
        assert_eq!(decode_param("x%FF"), None);
        assert_eq!(decode_param("x%FE"), None);
        assert_eq!(decode_param("x%C3"), None);
    }
}
