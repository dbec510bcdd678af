//! The overlay of an import: what the policy needs that OpenAPI does not say (issuers and keys,
//! rate limits, response mode, route fields by tag or operation), checked field by field.

use serde_json::{Map, Value};

/// The overlay: what the policy needs that OpenAPI does not say.
#[derive(Debug)]
pub struct Overlay {
    /// Top-level policy fields (`providers`, `api_keys`, `rate_limits`, `audit`, ...).
    pub policy: Map<String, Value>,
    /// Response checks' mode: `block`, `redact`, `report` (default) or `off`.
    pub response_mode: String,
    /// `reject_unknown_properties` of every route with a body schema (default false: OpenAPI
    /// allows properties a schema does not name unless it says `additionalProperties: false`).
    pub reject_unknown_properties: bool,
    /// Route fields by operation id (or route name).
    pub operations: Map<String, Value>,
    /// Route fields by tag.
    pub tags: Map<String, Value>,
}

impl Default for Overlay {
    fn default() -> Overlay {
        Overlay {
            policy: Map::new(),
            response_mode: "report".into(),
            reject_unknown_properties: false,
            operations: Map::new(),
            tags: Map::new(),
        }
    }
}

const OVERLAY_FIELDS: [&str; 5] = [
    "policy",
    "responses",
    "unknown_properties",
    "operations",
    "tags",
];

impl Overlay {
    /// The overlay document's value; errors name the field and the expected shape.
    pub fn from_value(v: &Value) -> std::result::Result<Overlay, String> {
        let Value::Object(map) = v else {
            return Err("the overlay must be an object".into());
        };
        let mut o = Overlay::default();
        for (k, v) in map {
            match k.as_str() {
                "policy" => {
                    let Value::Object(p) = v else {
                        return Err(
                            "`policy`: expected an object of top-level policy fields".into()
                        );
                    };
                    if p.contains_key("routes") {
                        return Err("`policy.routes`: routes come from the document; set route fields under `operations` or `tags`".into());
                    }
                    o.policy = p.clone();
                }
                "responses" => {
                    let mode = v.as_str().unwrap_or("");
                    if !["block", "redact", "report", "off"].contains(&mode) {
                        return Err(format!(
                            "`responses`: `{}` is not a mode; expected one of [`block`, `redact`, `report`, `off`]",
                            crate::cli::source::short(v)
                        ));
                    }
                    o.response_mode = mode.into();
                }
                "unknown_properties" => {
                    o.reject_unknown_properties = match v.as_str() {
                        Some("allow") => false,
                        Some("reject") => true,
                        _ => {
                            return Err(format!(
                                "`unknown_properties`: `{}`; expected one of [`allow`, `reject`]",
                                crate::cli::source::short(v)
                            ))
                        }
                    }
                }
                "operations" | "tags" => {
                    let Value::Object(m) = v else {
                        return Err(format!("`{k}`: expected an object of name -> route fields"));
                    };
                    if let Some((name, _)) = m.iter().find(|(_, f)| !f.is_object()) {
                        return Err(format!("`{k}.{name}`: expected an object of route fields"));
                    }
                    if k == "operations" {
                        o.operations = m.clone();
                    } else {
                        o.tags = m.clone();
                    }
                }
                other => {
                    return Err(format!(
                        "unknown field `{other}`; expected one of [{}]",
                        OVERLAY_FIELDS.map(|f| format!("`{f}`")).join(", ")
                    ))
                }
            }
        }
        Ok(o)
    }
}
