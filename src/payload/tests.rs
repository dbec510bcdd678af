//! Request checks: media types, sizes, hostile bodies, schemas with named `$defs`, drafts, mass
//! assignment, parameters, query and headers.

use super::*;
use serde_json::json;
use wasm_bindgen_test::wasm_bindgen_test;

fn compile(doc: Value, schemas: Value, params: &[&str]) -> Result<RequestRules, Vec<ConfigError>> {
    let doc: RequestCheckDoc = serde_json::from_value(doc).unwrap();
    let schemas: BTreeMap<String, Value> = serde_json::from_value(schemas).unwrap();
    let mut errors = vec![];
    let options = Options::compile(None, &mut errors);
    let c = Compiler {
        schemas: &schemas,
        options: &options,
    };
    let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
    let r = c.compile(&doc, &params, "routes[0]", &mut errors);
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(errors)
    }
}

fn opts() -> Options {
    Options::compile(None, &mut vec![])
}

fn order_rules(extra: Value) -> RequestRules {
    let mut doc = json!({"body": {"$ref": "#/$defs/Order"}});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    compile(
        doc,
        json!({
            "Order": {"type": "object", "required": ["item", "qty"], "properties": {
                "item": {"type": "string", "maxLength": 20}, "qty": {"type": "integer", "minimum": 1},
                "ship_to": {"$ref": "#/$defs/Address"}}},
            "Address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
        }),
        &[],
    )
    .unwrap()
}

fn pointers(f: Result<(), Failure>) -> Vec<(String, String)> {
    match f {
        Err(Failure::Invalid(v)) => v.into_iter().map(|v| (v.pointer, v.keyword)).collect(),
        other => panic!("{other:?}"),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn body_schema_with_named_refs() {
    let r = order_rules(json!({}));
    let o = opts();
    assert_eq!(
        r.check_body(
            &o,
            br#"{"item": "pen", "qty": 2, "ship_to": {"city": "Oslo"}}"#
        ),
        Ok(())
    );
    assert_eq!(
        pointers(r.check_body(&o, br#"{"item": "pen", "qty": 0, "ship_to": {}}"#)),
        vec![
            ("/qty".into(), "minimum".into()),
            ("/ship_to".into(), "required".into())
        ]
    );
    assert_eq!(r.check_body(&o, b"{not json"), Err(Failure::Malformed));
    assert_eq!(r.check_body(&o, b""), Err(Failure::Malformed));
    // Unknown properties pass unless mass-assignment protection is on.
    assert_eq!(
        r.check_body(&o, br#"{"item": "pen", "qty": 1, "is_admin": true}"#),
        Ok(())
    );
    let strict = order_rules(json!({"reject_unknown_properties": true}));
    let mut got = pointers(strict.check_body(
        &o,
        br#"{"item": "pen", "qty": 1, "is_admin": true, "ship_to": {"city": "x", "zip": 1}}"#,
    ));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("".into(), "additionalProperties".into()),
            ("/ship_to".into(), "additionalProperties".into())
        ]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn messages_never_echo_request_values() {
    let r = order_rules(json!({}));
    let secret = "hunter2-very-secret-value";
    let body = format!(r#"{{"item": "{secret}", "qty": "{secret}"}}"#);
    let Err(Failure::Invalid(v)) = r.check_body(&opts(), body.as_bytes()) else {
        panic!()
    };
    assert!(!v.is_empty());
    for violation in v {
        assert!(!violation.message.contains("hunter2"), "{violation:?}");
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn hostile_bodies() {
    let r = order_rules(json!({}));
    let o = opts();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(r.check_body(&o, deep.as_bytes()), Err(Failure::Malformed));
    let deep_in_string = format!(r#"{{"item": "{}", "qty": 1}}"#, "[".repeat(15));
    assert_eq!(
        r.check_body(&o, deep_in_string.as_bytes()),
        Ok(()),
        "brackets in strings do not count"
    );
    assert_eq!(
        r.check_body(&o, br#"{"item": "a", "qty": 1e400}"#),
        Err(Failure::Malformed)
    );
    let huge = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
    assert_eq!(r.check_body(&o, &huge), Err(Failure::TooLarge));
    let many = format!(
        r#"{{"item": "a", "qty": 1, "tags": [{}]}}"#,
        vec!["1"; 50_000].join(",")
    );
    assert_eq!(r.check_body(&o, many.as_bytes()), Ok(()));
    assert!(nesting_exceeds(b"[[[", 2));
    assert!(!nesting_exceeds(br#"["\"[[[["]"#, 2));
}

#[wasm_bindgen_test(unsupported = test)]
fn media_types_and_declared_length() {
    let r = order_rules(json!({"max_body_bytes": 100}));
    let o = opts();
    let head = |ct: Option<&str>, len: Option<&str>| {
        let h = move |name: &str| -> Vec<String> {
            match name {
                "content-type" => ct.map(|c| vec![c.to_string()]).unwrap_or_default(),
                "content-length" => len.map(|c| vec![c.to_string()]).unwrap_or_default(),
                _ => vec![],
            }
        };
        r.check_head(&o, &[], "/orders", &h)
    };
    assert_eq!(head(Some("application/json"), Some("10")), Ok(()));
    assert_eq!(head(Some("Application/JSON; charset=utf-8"), None), Ok(()));
    assert_eq!(head(Some("application/merge-patch+json"), None), Ok(()));
    assert_eq!(
        head(Some("text/plain"), None),
        Err(Failure::UnsupportedMediaType)
    );
    assert_eq!(
        head(Some("application/jsonx"), None),
        Err(Failure::UnsupportedMediaType)
    );
    assert_eq!(head(None, None), Err(Failure::UnsupportedMediaType));
    assert_eq!(
        head(Some("application/json"), Some("101")),
        Err(Failure::TooLarge)
    );
    assert!(is_json_media_type("application/problem+json"));
    assert!(!is_json_media_type("json"));
}

#[wasm_bindgen_test(unsupported = test)]
fn params_query_and_headers() {
    let r = compile(
        json!({
            "params": {"id": {"type": "integer", "minimum": 1}, "uid": {"type": "string", "format": "uuid"}},
            "query": {"limit": {"type": "integer", "maximum": 100}, "q": {"type": "string", "maxLength": 5}},
            "required_query": ["q"],
            "headers": {"X-Request-Version": {"enum": ["1", "2"], "type": "string"}},
            "required_headers": ["x-request-version"]
        }),
        json!({}),
        &["id", "uid"],
    )
    .unwrap();
    let o = opts();
    let hv = |v: &'static str| {
        move |name: &str| {
            if name == "x-request-version" {
                vec![v.to_string()]
            } else {
                vec![]
            }
        }
    };
    let params = |id: &str, uid: &str| {
        vec![
            ("id".to_string(), id.to_string()),
            ("uid".to_string(), uid.to_string()),
        ]
    };
    let uuid = "123e4567-e89b-12d3-a456-426614174000";
    assert_eq!(
        r.check_head(&o, &params("42", uuid), "/x?q=abc&limit=10", &hv("1")),
        Ok(())
    );
    assert_eq!(
        pointers(r.check_head(
            &o,
            &params("0", "nope"),
            "/x?limit=500&limit=abc",
            &|_: &str| vec![]
        )),
        vec![
            ("/params/id".into(), "minimum".into()),
            ("/params/uid".into(), "format".into()),
            ("/query/q".into(), "required".into()),
            ("/query/limit".into(), "maximum".into()),
            ("/query/limit".into(), "type".into()),
            ("/headers/x-request-version".into(), "required".into()),
        ]
    );
    assert_eq!(
        pointers(r.check_head(&o, &params("1", uuid), "/x?q=abcdef", &hv("3"))).len(),
        2
    );
    assert_eq!(
        r.check_head(&o, &params("1", uuid), "/x?q=a%20b", &hv("2")),
        Ok(()),
        "query values are decoded"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn drafts_and_config_errors() {
    let d7 = compile(json!({"body": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "dependencies": {"a": ["b"]}}}), json!({}), &[]).unwrap();
    assert!(matches!(
        d7.check_body(&opts(), br#"{"a": 1}"#),
        Err(Failure::Invalid(_))
    ));
    assert_eq!(d7.check_body(&opts(), br#"{"a": 1, "b": 2}"#), Ok(()));
    let errs = compile(json!({"body": {"type": "nope"}}), json!({}), &[]).unwrap_err();
    assert_eq!(errs[0].path, "routes[0].request.body");
    assert!(
        errs[0].message.starts_with("invalid JSON Schema"),
        "{}",
        errs[0].message
    );
    let errs = compile(
        json!({"body": {"$ref": "https://example.com/s.json"}}),
        json!({}),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        errs[0].path, "routes[0].request.body",
        "no network resolution"
    );
    let errs = compile(json!({"body": {"$ref": "#/$defs/Missing"}}), json!({}), &[]).unwrap_err();
    assert_eq!(errs[0].path, "routes[0].request.body");
    let errs = compile(
        json!({"params": {"nope": {"type": "string"}}, "reject_unknown_properties": true}),
        json!({}),
        &["id"],
    )
    .unwrap_err();
    let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["routes[0].request", "routes[0].request.params.nope"]
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn only_the_named_schemas_a_schema_reaches_are_compiled_with_it() {
    let named: BTreeMap<String, Value> = serde_json::from_value(json!({
        "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
        "B": {"items": {"$ref": "#/$defs/C/properties/x"}},
        "C": {"properties": {"x": {"type": "integer"}}},
        "Unused": {"type": "string"},
        "Anchored": {"$anchor": "item", "type": "integer"},
        "Odd/Name": {"type": "null"}
    }))
    .unwrap();
    let names = |s: Value| referenced_defs(&s, &named).map(|n| n.into_iter().collect::<Vec<_>>());
    assert_eq!(
        names(json!({"$ref": "#/$defs/A"})),
        Some(vec!["A", "B", "C"])
    );
    assert_eq!(names(json!({"type": "string"})), Some(vec![]));
    assert_eq!(
        names(json!({"$ref": "#/$defs/Odd~1Name"})),
        Some(vec!["Odd/Name"])
    );
    assert_eq!(
        names(json!({"$ref": "#/$defs/%41"})),
        Some(vec!["A", "B", "C"])
    );
    // A plain-name fragment could be any named schema's `$anchor`: all of them.
    assert_eq!(names(json!({"$ref": "#item"})), None);
    // The route's own `$defs` are scanned too, and a cycle ends.
    let cyclic: BTreeMap<String, Value> =
        serde_json::from_value(json!({"N": {"properties": {"next": {"$ref": "#/$defs/N"}}}}))
            .unwrap();
    let found = referenced_defs(&json!({"$defs": {"L": {"$ref": "#/$defs/N"}}}), &cyclic).unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["N"]);
    // Compiled with what it reaches, the schema works as before; an unreached broken schema
    // is not compiled with it.
    let rules = compile(
        json!({"body": {"$ref": "#/$defs/A"}}),
        json!({"A": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}, "N": {"type": "integer"},
               "Broken": {"type": 12}}),
        &[],
    )
    .unwrap();
    assert!(rules.check_body(&opts(), br#"{"n": 1}"#).is_ok());
    assert!(rules.check_body(&opts(), br#"{"n": "x"}"#).is_err());
}
