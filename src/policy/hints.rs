//! Known mistakes in a policy's shape, named with their fix before serde's generic message
//! ("invalid type: string, expected a sequence" at a path users did not write). Checked on the
//! decoded value before it is deserialised; only the natural first guesses are here, every other
//! structural error keeps serde's message.

use super::error::ConfigError;
use serde_json::Value;

/// The first known mistake in `policy`, if any.
pub fn known_mistake(policy: &Value) -> Option<ConfigError> {
    let root = policy.as_object()?;
    for (field, what) in [
        ("providers", "provider"),
        ("rate_limits", "limit"),
        ("signers", "signer"),
    ] {
        if root.get(field).is_some_and(Value::is_array) {
            return Some(ConfigError::new(
                field,
                format!(
                    "`{field}` is an object of {what}s by name, not a list; write \
                     `\"{field}\": {{\"<name>\": {{...}}}}`"
                ),
            ));
        }
    }
    match root.get("routes") {
        Some(Value::Object(_)) => Some(ConfigError::new(
            "routes",
            "`routes` is a list of route objects, not an object by name; write \
             `\"routes\": [{\"name\": \"<name>\", \"path\": \"/...\", ...}]`",
        )),
        Some(Value::Array(routes)) => routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| route_mistake(&format!("routes[{i}]"), r.as_object()?)),
        _ => None,
    }
}

fn route_mistake(at: &str, route: &serde_json::Map<String, Value>) -> Option<ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    if let Some(scopes) = route.get("scopes") {
        let listed = match scopes {
            Value::Array(items) => Some(items.clone()),
            Value::String(s) => Some(s.split_whitespace().map(Value::from).collect()),
            _ => None,
        };
        if let Some(items) = listed {
            let what = if scopes.is_array() {
                "a list"
            } else {
                "a string"
            };
            return Some(ConfigError::new(
                field("scopes"),
                format!(
                    "`scopes` is an object `{{\"all\": [...], \"any\": [...]}}`, not {what}; \
                     write `\"scopes\": {{\"all\": {}}}` to require every scope, or `\"any\"` \
                     for one of them",
                    Value::Array(items)
                ),
            ));
        }
    }
    if let Some(Value::Array(items)) = route.get("claims") {
        return Some(ConfigError::new(
            field("claims"),
            format!(
                "`claims` is an object `{{\"all\": [...], \"any\": [...]}}` of conditions, not a \
                 list; write `\"claims\": {{\"all\": {}}}`",
                Value::Array(items.clone())
            ),
        ));
    }
    for name in ["methods", "providers", "signers", "limits"] {
        if let Some(Value::String(s)) = route.get(name) {
            let items: Vec<Value> = s
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(Value::from)
                .collect();
            return Some(ConfigError::new(
                field(name),
                format!(
                    "`{name}` is a list of strings; write `\"{name}\": {}`",
                    Value::Array(items)
                ),
            ));
        }
    }
    for name in ["public", "api_keys"] {
        if let Some(Value::String(s)) = route.get(name) {
            if let Ok(b) = s.trim().to_ascii_lowercase().parse::<bool>() {
                return Some(ConfigError::new(
                    field(name),
                    format!("`{name}` is a boolean; write `\"{name}\": {b}` without quotes"),
                ));
            }
        }
    }
    if let Some(keys) = route.get("api_keys").filter(|v| !v.is_boolean()) {
        let hint = if keys.is_array() || keys.is_object() {
            "; the keys themselves go in the top-level `api_keys.keys`"
        } else {
            ""
        };
        return Some(ConfigError::new(
            field("api_keys"),
            format!("`api_keys` on a route is `true` or `false` (accept API keys here){hint}"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::known_mistake;
    use wasm_bindgen_test::wasm_bindgen_test;

    /// The hint for `policy`; empty when there is none.
    fn err(policy: &str) -> (String, String) {
        let value: serde_json::Value = serde_json::from_str(policy).unwrap();
        match known_mistake(&value) {
            Some(e) => (e.path, e.message),
            None => (String::new(), String::new()),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scopes_as_a_list_names_the_shape_and_the_fix() {
        let (path, msg) = err(
            r#"{"routes": [{"path": "/pets", "providers": ["corp"], "scopes": ["pets:read"]}]}"#,
        );
        assert_eq!(path, "routes[0].scopes");
        assert_eq!(
            msg,
            "`scopes` is an object `{\"all\": [...], \"any\": [...]}`, not a list; write \
             `\"scopes\": {\"all\": [\"pets:read\"]}` to require every scope, or `\"any\"` for one of them"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn scopes_as_a_string_is_split_into_the_fix() {
        let (path, msg) = err(
            r#"{"routes": [{"path": "/a", "public": true}, {"path": "/b", "scopes": "a:read b:read"}]}"#,
        );
        assert_eq!(path, "routes[1].scopes");
        assert!(
            msg.contains(r#"`"scopes": {"all": ["a:read","b:read"]}`"#),
            "{msg}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn claims_as_a_list() {
        let (path, msg) =
            err(r#"{"routes": [{"path": "/a", "claims": [{"claim": "tier", "equals": "gold"}]}]}"#);
        assert_eq!(path, "routes[0].claims");
        assert!(
            msg.contains(r#"`"claims": {"all": [{"claim":"tier","equals":"gold"}]}`"#),
            "{msg}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_string_where_a_list_of_strings_belongs() {
        let (path, msg) = err(r#"{"routes": [{"path": "/a", "methods": "GET, HEAD"}]}"#);
        assert_eq!(path, "routes[0].methods");
        assert_eq!(
            msg,
            r#"`methods` is a list of strings; write `"methods": ["GET","HEAD"]`"#
        );
        let (path, msg) = err(r#"{"routes": [{"path": "/a", "providers": "corp"}]}"#);
        assert_eq!(path, "routes[0].providers");
        assert!(msg.contains(r#"`"providers": ["corp"]`"#), "{msg}");
        let (path, _) = err(r#"{"routes": [{"path": "/a", "limits": "per-caller"}]}"#);
        assert_eq!(path, "routes[0].limits");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn api_keys_on_a_route_is_a_boolean() {
        let (path, msg) = err(r#"{"routes": [{"path": "/a", "api_keys": ["reporting"]}]}"#);
        assert_eq!(path, "routes[0].api_keys");
        assert!(msg.contains("the top-level `api_keys.keys`"), "{msg}");
        let (_, msg) = err(r#"{"routes": [{"path": "/a", "api_keys": "True"}]}"#);
        assert_eq!(
            msg,
            "`api_keys` is a boolean; write `\"api_keys\": true` without quotes"
        );
        let (_, msg) = err(r#"{"routes": [{"path": "/a", "api_keys": 1}]}"#);
        assert_eq!(
            msg,
            "`api_keys` on a route is `true` or `false` (accept API keys here)"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn public_as_a_string() {
        let (path, msg) = err(r#"{"routes": [{"path": "/a", "public": "true"}]}"#);
        assert_eq!(path, "routes[0].public");
        assert_eq!(
            msg,
            "`public` is a boolean; write `\"public\": true` without quotes"
        );
        // Not a boolean in any spelling: no hint, serde's own message.
        let (path, _) = err(r#"{"routes": [{"path": "/a", "public": "yes"}]}"#);
        assert_eq!(path, "");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn maps_and_lists_swapped_at_the_top() {
        let (path, msg) = err(r#"{"routes": {"health": {"path": "/health", "public": true}}}"#);
        assert_eq!(path, "routes");
        assert!(msg.contains("is a list of route objects"), "{msg}");
        let (path, msg) = err(r#"{"routes": [], "providers": [{"issuer": "i"}]}"#);
        assert_eq!(path, "providers");
        assert!(
            msg.contains("`providers` is an object of providers by name"),
            "{msg}"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_right_shape_is_left_to_the_parser() {
        assert_eq!(
            err(
                r#"{"routes": [{"path": "/a", "methods": ["GET"], "public": true, "api_keys": false, "scopes": null}]}"#
            ),
            (String::new(), String::new())
        );
    }
}
