//! One compiled JSON Schema, and what its violations say.
//!
//! The validator is `boon` (drafts 2020-12, 2019-09, 7, 6, 4): compiled once at configure time,
//! offline (a `$ref` resolves only inside the schema Tollgate builds; every other location is
//! refused by [`Offline`]), formats asserted. Its messages are not used as they are: they quote
//! the request's values. [`Schema::violations`] writes Tollgate's own messages, which read `value`
//! where the request's value would be and only quote the schema.

use serde_json::Value;
use std::error::Error;
use std::fmt::Write as _;

/// Longest `message` in a violation, or in a schema's compile error.
pub const MAX_MESSAGE: usize = 200;

/// One schema violation, as listed in a problem response. Its message never carries the
/// request's value (it reads `value` instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the body, or `/query/<name>`, `/headers/<name>`, `/params/<name>`.
    pub pointer: String,
    pub keyword: String,
    pub message: String,
}

/// Where the compiled schema claims to live: never loaded from, only the base for `#` references.
const ROOT: &str = "urn:tollgate:schema";

/// Refuses every load: a `$ref` to a URL or a file is a configuration error, never a fetch.
struct Offline;

impl boon::UrlLoader for Offline {
    fn load(&self, _url: &str) -> Result<Value, Box<dyn Error>> {
        Err(
            "Tollgate resolves no `$ref` outside the policy (copy the schema into `schemas`)"
                .into(),
        )
    }
}

/// A compiled schema.
pub struct Schema {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Schema {
    /// Compiles `root`; the error is a one-line description of what is wrong with the schema.
    pub fn compile(root: Value) -> Result<Schema, String> {
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.use_loader(Box::new(Offline));
        compiler
            .add_resource(ROOT, root)
            .map_err(|e| compile_message(&e))?;
        let mut schemas = boon::Schemas::new();
        let index = compiler
            .compile(ROOT, &mut schemas)
            .map_err(|e| compile_message(&e))?;
        Ok(Schema { schemas, index })
    }

    pub fn is_valid(&self, value: &Value) -> bool {
        self.schemas.validate(value, self.index).is_ok()
    }

    /// Appends the violations of `value` (at most `max` in `out`), each pointer after `prefix`.
    pub fn violations(&self, value: &Value, prefix: &str, max: usize, out: &mut Vec<Violation>) {
        if let Err(e) = self.schemas.validate(value, self.index) {
            collect(&e, prefix, max, out);
        }
    }
}

fn compile_message(e: &boon::CompileError) -> String {
    match e {
        // The schema breaks its draft's metaschema: name where, in the schema's own words.
        boon::CompileError::ValidationError { src, .. } => {
            let mut leaves = Vec::new();
            leaf_errors(src, &mut leaves);
            let mut msg = String::from("the schema does not follow its draft's metaschema");
            for leaf in leaves.iter().take(3) {
                let at = leaf.instance_location.to_string();
                let at = if at.is_empty() { "/" } else { &at };
                let _ = write!(msg, "; at `{at}`: {}", leaf.kind);
            }
            msg
        }
        boon::CompileError::ParseUrlError { url, .. } => format!(
            "cannot resolve `{url}`: a `$ref` can only point inside the policy (`#/$defs/<name>`)"
        ),
        boon::CompileError::LoadUrlError { url, .. } => format!(
            "cannot load `{url}`: Tollgate loads no schema from outside the policy \
             (`$ref` and `$schema` resolve only inside it; copy external schemas into `schemas`)"
        ),
        other => format!("{other:#}")
            .replace(&format!("{ROOT}#"), "#")
            .replace(ROOT, "the schema"),
    }
}

fn leaf_errors<'a, 's, 'v>(
    e: &'a boon::ValidationError<'s, 'v>,
    out: &mut Vec<&'a boon::ValidationError<'s, 'v>>,
) {
    if e.causes.is_empty() {
        out.push(e);
    } else {
        e.causes.iter().for_each(|c| leaf_errors(c, out));
    }
}

fn collect(e: &boon::ValidationError, prefix: &str, max: usize, out: &mut Vec<Violation>) {
    use boon::ErrorKind as K;
    if out.len() >= max {
        return;
    }
    let containers = matches!(
        e.kind,
        K::Group | K::Schema { .. } | K::Reference { .. } | K::AllOf | K::ContentSchema
    );
    if containers && !e.causes.is_empty() {
        for c in &e.causes {
            collect(c, prefix, max, out);
        }
        return;
    }
    let pointer = format!("{prefix}{}", e.instance_location);
    if let K::Required { want } = &e.kind {
        for name in want {
            if out.len() < max {
                out.push(violation(
                    &pointer,
                    "required",
                    format!("{} is a required property", quoted(name)),
                ));
            }
        }
        return;
    }
    let (keyword, message) = describe(&e.kind);
    out.push(violation(&pointer, keyword, message));
}

fn violation(pointer: &str, keyword: &str, message: String) -> Violation {
    Violation {
        pointer: pointer.to_string(),
        keyword: keyword.to_string(),
        message: message.chars().take(MAX_MESSAGE).collect(),
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `"a" requires "b", "c"`: property names from the schema, never values.
fn requires(prop: &str, missing: &[&str]) -> String {
    let names: Vec<String> = missing.iter().map(|m| quoted(m)).collect();
    format!("{} requires {}", quoted(prop), names.join(", "))
}

/// The keyword and masked message of one failure: never the request's value, only the schema.
fn describe(kind: &boon::ErrorKind) -> (&'static str, String) {
    use boon::ErrorKind as K;
    match kind {
        K::Type { want, .. } => {
            let names: Vec<String> = want.iter().map(|t| quoted(&t.to_string())).collect();
            let message = match names.as_slice() {
                [one] => format!("value is not of type {one}"),
                many => format!("value is not of types {}", many.join(", ")),
            };
            ("type", message)
        }
        K::Enum { want } => (
            "enum",
            format!("value is not one of {}", Value::Array(want.to_vec())),
        ),
        K::Const { want } => ("const", format!("{want} was expected")),
        K::Format { want, .. } => ("format", format!("value is not a {}", quoted(want))),
        K::MinProperties { want, .. } => (
            "minProperties",
            format!(
                "value has fewer than {}",
                plural(*want, "property", "properties")
            ),
        ),
        K::MaxProperties { want, .. } => (
            "maxProperties",
            format!(
                "value has more than {}",
                plural(*want, "property", "properties")
            ),
        ),
        K::AdditionalProperties { got } => {
            let names: Vec<String> = got.iter().map(|p| format!("'{p}'")).collect();
            let verb = if names.len() == 1 { "was" } else { "were" };
            (
                "additionalProperties",
                format!(
                    "Additional properties are not allowed ({} {verb} unexpected)",
                    names.join(", ")
                ),
            )
        }
        // `collect` lists each missing property on its own; this covers any other caller.
        K::Required { want } => {
            let names: Vec<String> = want.iter().map(|n| quoted(n)).collect();
            (
                "required",
                format!("{} is a required property", names.join(", ")),
            )
        }
        K::Dependency { prop, missing } => ("dependencies", requires(prop, missing)),
        K::DependentRequired { prop, missing } => ("dependentRequired", requires(prop, missing)),
        K::MinItems { want, .. } => (
            "minItems",
            format!("value has fewer than {}", plural(*want, "item", "items")),
        ),
        K::MaxItems { want, .. } => (
            "maxItems",
            format!("value has more than {}", plural(*want, "item", "items")),
        ),
        K::Contains => (
            "contains",
            "value has no item valid under the given schema".into(),
        ),
        K::MinContains { want, .. } => (
            "minContains",
            format!(
                "value has fewer than {} valid under the given schema",
                plural(*want, "item", "items")
            ),
        ),
        K::MaxContains { want, .. } => (
            "maxContains",
            format!(
                "value has more than {} valid under the given schema",
                plural(*want, "item", "items")
            ),
        ),
        K::UniqueItems { .. } => ("uniqueItems", "value has non-unique elements".into()),
        K::AdditionalItems { .. } => ("additionalItems", "Additional items are not allowed".into()),
        K::MinLength { want, .. } => (
            "minLength",
            format!(
                "value is shorter than {}",
                plural(*want, "character", "characters")
            ),
        ),
        K::MaxLength { want, .. } => (
            "maxLength",
            format!(
                "value is longer than {}",
                plural(*want, "character", "characters")
            ),
        ),
        K::Pattern { want, .. } => ("pattern", format!("value does not match {}", quoted(want))),
        K::ContentEncoding { want, .. } => (
            "contentEncoding",
            format!("value is not encoded as {}", quoted(want)),
        ),
        K::ContentMediaType { want, .. } => (
            "contentMediaType",
            format!("value is not of media type {}", quoted(want)),
        ),
        K::Minimum { want, .. } => (
            "minimum",
            format!("value is less than the minimum of {want}"),
        ),
        K::Maximum { want, .. } => (
            "maximum",
            format!("value is greater than the maximum of {want}"),
        ),
        K::ExclusiveMinimum { want, .. } => (
            "exclusiveMinimum",
            format!("value is less than or equal to the minimum of {want}"),
        ),
        K::ExclusiveMaximum { want, .. } => (
            "exclusiveMaximum",
            format!("value is greater than or equal to the maximum of {want}"),
        ),
        K::MultipleOf { want, .. } => ("multipleOf", format!("value is not a multiple of {want}")),
        K::Not => (
            "not",
            "value should not be valid under the given schema".into(),
        ),
        K::AnyOf => (
            "anyOf",
            "value is not valid under any of the schemas listed in the 'anyOf' keyword".into(),
        ),
        K::OneOf(None) => (
            "oneOf",
            "value is not valid under any of the schemas listed in the 'oneOf' keyword".into(),
        ),
        K::OneOf(Some(_)) => (
            "oneOf",
            "value is valid under more than one of the schemas listed in the 'oneOf' keyword"
                .into(),
        ),
        K::AllOf => (
            "allOf",
            "value is not valid under all of the schemas listed in the 'allOf' keyword".into(),
        ),
        K::FalseSchema => ("false", "False schema does not allow value".into()),
        K::PropertyName { prop } => (
            "propertyNames",
            format!("property name {} is not valid", quoted(prop)),
        ),
        K::RefCycle { .. } => ("$ref", "the schema's references form a cycle".into()),
        K::Reference { kw, .. } => (kw, "value is not valid under the referenced schema".into()),
        K::Group | K::Schema { .. } | K::ContentSchema => {
            ("schema", "value is not valid under the schema".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn violations(schema: Value, value: Value) -> Vec<Violation> {
        let compiled = Schema::compile(schema).unwrap();
        let mut out = Vec::new();
        compiled.violations(&value, "", 10, &mut out);
        assert_eq!(compiled.is_valid(&value), out.is_empty());
        out
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nothing_outside_the_schema_is_loaded() {
        for (schema, says) in [
            (json!({"$ref": "https://example.com/a.json"}), "cannot load"),
            (json!({"$ref": "file:///etc/passwd"}), "cannot load"),
            (
                json!({"$schema": "http://json-schema.org/draft-03/schema#"}),
                "cannot load",
            ),
            (json!({"$ref": "other.json"}), "cannot resolve `other.json`"),
            (
                json!({"$ref": "#/$defs/Missing"}),
                "#/$defs/Missing not found",
            ),
        ] {
            let err = Schema::compile(schema.clone()).err().unwrap();
            assert!(err.contains(says), "{schema}: {err}");
            assert!(!err.contains(ROOT), "{err}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_schema_that_breaks_its_metaschema_says_where() {
        let err = Schema::compile(json!({"properties": {"a": {"minLength": -1}}}))
            .err()
            .unwrap();
        assert!(err.contains("at `/properties/a/minLength`"), "{err}");
        // Look-around is not in the linear-time regex dialect: refused at load, never at run time.
        let err = Schema::compile(json!({"pattern": "(?<=a)b"}))
            .err()
            .unwrap();
        assert!(err.contains("at `/pattern`"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_message_masks_the_value() {
        let secret = "hunter2-secret";
        let cases = [
            (json!({"type": "integer"}), json!(secret), "type"),
            (json!({"enum": ["a", 1]}), json!(secret), "enum"),
            (json!({"const": "a"}), json!(secret), "const"),
            (json!({"format": "email"}), json!(secret), "format"),
            (json!({"minLength": 20}), json!(secret), "minLength"),
            (json!({"maxLength": 2}), json!(secret), "maxLength"),
            (json!({"pattern": "^[0-9]+$"}), json!(secret), "pattern"),
            (json!({"not": {"type": "string"}}), json!(secret), "not"),
            (
                json!({"anyOf": [{"type": "integer"}, {"type": "null"}]}),
                json!(secret),
                "anyOf",
            ),
            (
                json!({"oneOf": [{"type": "string"}, {"minLength": 1}]}),
                json!(secret),
                "oneOf",
            ),
            (
                json!({"uniqueItems": true}),
                json!([secret, secret]),
                "uniqueItems",
            ),
            (
                json!({"contains": {"type": "integer"}}),
                json!([secret]),
                "contains",
            ),
            (json!({"maxItems": 0}), json!([secret]), "maxItems"),
            (json!({"minimum": 5}), json!(1), "minimum"),
            (json!({"multipleOf": 7}), json!(1234567), "multipleOf"),
            (json!({"required": ["a"]}), json!({"b": secret}), "required"),
            (
                json!({"propertyNames": {"maxLength": 1}}),
                json!({"ab": secret}),
                "propertyNames",
            ),
            (
                json!({"properties": {"a": false}}),
                json!({"a": secret}),
                "false",
            ),
        ];
        for (schema, value, keyword) in cases {
            let found = violations(schema.clone(), value);
            assert_eq!(found.len(), 1, "{schema}: {found:?}");
            assert_eq!(found[0].keyword, keyword, "{schema}");
            assert!(!found[0].message.contains(secret), "{schema}: {found:?}");
            assert!(!found[0].message.contains("1234567"), "{schema}: {found:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn pointers_reach_through_references_and_all_of() {
        let schema = json!({
            "$defs": {"Item": {"type": "object", "properties": {"qty": {"type": "integer"}}}},
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
            "allOf": [{"required": ["id", "at"]}]
        });
        let found = violations(schema, json!({"items": [{"qty": 1}, {"qty": "x"}]}));
        let got: Vec<(&str, &str)> = found
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        assert!(got.contains(&("/items/1/qty", "type")), "{got:?}");
        assert!(got.contains(&("", "required")), "{got:?}");
        // One violation per missing property, as the documentation shows.
        assert_eq!(got.iter().filter(|g| g.1 == "required").count(), 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_schema_under_defs_keeps_the_root_draft() {
        // The draft-7 tuple form of `items` inside a named schema, under a 2020-12 root: read as
        // 2020-12, where `items` is one schema, so refused at load (policies/README.md).
        let schema = json!({
            "$defs": {"Pair": {"$schema": "http://json-schema.org/draft-07/schema#",
                               "items": [{"type": "string"}, {"type": "integer"}]}},
            "$ref": "#/$defs/Pair"
        });
        let err = Schema::compile(schema).err().unwrap();
        assert!(err.contains("at `/$defs/Pair/items`"), "{err}");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn idn_formats_take_ascii_values_only() {
        let host = Schema::compile(json!({"format": "idn-hostname"})).unwrap();
        assert!(host.is_valid(&json!("example.com")));
        assert!(!host.is_valid(&json!("-bad-.com")));
        // Without Unicode IDNA tables in the module (Cargo.toml, `idna_adapter`): refused.
        assert!(!host.is_valid(&json!("m\u{fc}nchen.de")));
        let email = Schema::compile(json!({"format": "email"})).unwrap();
        assert!(email.is_valid(&json!("a@example.com")));
        assert!(!email.is_valid(&json!("not-an-email")));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn at_most_max_violations() {
        let compiled = Schema::compile(json!({"items": {"type": "string"}})).unwrap();
        let mut out = Vec::new();
        compiled.violations(&json!([1, 2, 3, 4, 5]), "/p", 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].pointer, "/p/0");
    }
}
