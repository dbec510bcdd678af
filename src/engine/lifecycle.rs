//! API lifecycle of a route: `Deprecation` (RFC 9745) and `Sunset` (RFC 8594) headers while it
//! is deprecated, `410 route_retired` with a `Link` to its successor once it is retired or past
//! its sunset. Header values are rendered at configure time.

use super::timefmt::{http_date, parse_rfc3339};
use crate::policy::{ConfigError, LifecycleDoc};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// `Deprecation`, `Sunset` and `Link` headers for responses while the route is served.
    pub headers: Vec<(String, String)>,
    /// `Link` header of the 410 reply.
    pub link: Option<String>,
    pub retired: bool,
    /// Seconds since the epoch from which the route is retired.
    pub sunset: Option<u64>,
    /// Seconds since the epoch from which the route is deprecated (the header announces it
    /// before that).
    pub deprecated: Option<u64>,
}

impl Lifecycle {
    pub fn compile(
        doc: &LifecycleDoc,
        at: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Lifecycle> {
        let start = errors.len();
        let time = |field: &str, v: &Option<String>, errors: &mut Vec<ConfigError>| {
            let text = v.as_ref()?;
            let t = parse_rfc3339(text);
            if t.is_none() {
                errors.push(ConfigError::new(
                    format!("{at}.lifecycle.{field}"),
                    format!("`{text}` is not a UTC time; expected `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DD`"),
                ));
            }
            t
        };
        let deprecated = time("deprecated", &doc.deprecated, errors);
        let sunset = time("sunset", &doc.sunset, errors);
        if let (Some(d), Some(s)) = (deprecated, sunset) {
            if s < d {
                errors.push(ConfigError::new(
                    format!("{at}.lifecycle.sunset"),
                    "must not be earlier than `deprecated`",
                ));
            }
        }
        if let Some(uri) = &doc.successor {
            // Goes into `Link: <uri>`: printable, no spaces, no `<`/`>`/`"`.
            if uri.is_empty()
                || !uri
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"'))
            {
                errors.push(ConfigError::new(
                    format!("{at}.lifecycle.successor"),
                    "must be a URI (printable ascii without spaces, `<`, `>` or `\"`)",
                ));
            }
        }
        if doc.deprecated.is_none() && doc.sunset.is_none() && !doc.retired {
            errors.push(ConfigError::new(
                format!("{at}.lifecycle"),
                "set at least one of `deprecated`, `sunset`, `retired`",
            ));
        }
        if errors.len() > start {
            return None;
        }
        let link = doc
            .successor
            .as_ref()
            .map(|u| format!("<{u}>; rel=\"successor-version\""));
        let mut headers = Vec::new();
        if let Some(d) = deprecated {
            headers.push(("deprecation".to_string(), format!("@{d}")));
        }
        if let Some(s) = sunset {
            headers.push(("sunset".to_string(), http_date(s)));
        }
        if let Some(l) = &link {
            if deprecated.is_some() || sunset.is_some() {
                headers.push(("link".to_string(), l.clone()));
            }
        }
        Some(Lifecycle {
            headers,
            link,
            retired: doc.retired,
            sunset,
            deprecated,
        })
    }

    /// Whether the route is refused at `now` (seconds).
    pub fn is_retired(&self, now: u64) -> bool {
        self.retired || self.sunset.is_some_and(|s| now >= s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn compile(v: serde_json::Value) -> Result<Lifecycle, Vec<ConfigError>> {
        let doc: LifecycleDoc = serde_json::from_value(v).unwrap();
        let mut errors = vec![];
        let l = Lifecycle::compile(&doc, "routes[0]", &mut errors);
        if errors.is_empty() {
            Ok(l.unwrap())
        } else {
            Err(errors)
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deprecated_route_headers() {
        let l = compile(serde_json::json!({
            "deprecated": "2026-01-01T00:00:00Z",
            "sunset": "2027-01-01",
            "successor": "/v2/orders"
        }))
        .unwrap();
        assert_eq!(
            l.headers,
            vec![
                ("deprecation".to_string(), "@1767225600".to_string()),
                (
                    "sunset".to_string(),
                    "Fri, 01 Jan 2027 00:00:00 GMT".to_string()
                ),
                (
                    "link".to_string(),
                    "</v2/orders>; rel=\"successor-version\"".to_string()
                ),
            ]
        );
        assert!(!l.is_retired(1_767_225_600));
        assert!(l.is_retired(1_798_761_600));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn errors_name_the_field() {
        let errs =
            compile(serde_json::json!({"deprecated": "soon", "successor": "<x>"})).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "routes[0].lifecycle.deprecated",
                "routes[0].lifecycle.successor"
            ]
        );
        let errs = compile(serde_json::json!({})).unwrap_err();
        assert_eq!(errs[0].path, "routes[0].lifecycle");
        let errs = compile(serde_json::json!({"deprecated": "2027-01-01", "sunset": "2026-01-01"}))
            .unwrap_err();
        assert_eq!(errs[0].path, "routes[0].lifecycle.sunset");
    }
}
