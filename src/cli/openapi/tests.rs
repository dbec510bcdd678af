//! The import as a whole, on small documents written for one rule each; the translation rules
//! of schemas, references and security have their own tables beside their code.

use super::*;
use serde_json::json;

fn jwk() -> Value {
    let doc: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/keys/public.jwks.json"
    ))
    .unwrap();
    doc["keys"][0].clone()
}

fn overlay(extra: Value) -> Overlay {
    let mut o = json!({"policy": {"providers": {"oauth": {
        "issuer": "https://issuer.test", "audiences": ["api.test"], "algorithms": ["RS256"], "jwks": {"keys": [jwk()]}
    }}}});
    if let (Some(base), Value::Object(add)) = (o.as_object_mut(), extra) {
        for (k, v) in add {
            if k == "policy" {
                if let (Some(Value::Object(p)), Value::Object(more)) = (base.get_mut("policy"), v) {
                    p.extend(more);
                }
            } else {
                base.insert(k, v);
            }
        }
    }
    Overlay::from_value(&o).unwrap()
}

fn run(doc: Value, o: &Overlay) -> (Option<Value>, Notes) {
    let mut notes = Notes::default();
    let p = import(Path::new("spec.json"), doc, o, &mut notes);
    (p, notes)
}

/// Imports, and requires the engine to accept the result.
fn ok(doc: Value, o: &Overlay) -> (Value, Notes) {
    let (p, notes) = run(doc, o);
    let p = p.unwrap_or_else(|| panic!("no policy: {:?}", notes.lines()));
    if let Err(e) = compile(&p) {
        panic!("invalid policy {e:?}:\n{p:#}");
    }
    (p, notes)
}

fn route<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {p:#}"))
}

fn petstore30() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://petstore.example/v1"}],
        "security": [{"oauth": ["pets:read"]}],
        "components": {
            "securitySchemes": {"oauth": {"type": "oauth2", "flows": {}}},
            "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}}},
            "schemas": {
                "Pet": {"type": "object", "required": ["id", "name"], "properties": {
                    "id": {"type": "integer", "format": "int64", "readOnly": true},
                    "name": {"type": "string"},
                    "tag": {"type": "string", "nullable": true}
                }}
            }
        },
        "paths": {
            "/pets": {
                "get": {
                    "operationId": "listPets",
                    "parameters": [
                        {"$ref": "#/components/parameters/Limit"},
                        {"name": "X-Trace", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 8}},
                        {"name": "Accept", "in": "header", "schema": {"type": "string"}},
                        {"name": "ids", "in": "query", "schema": {"type": "array", "items": {"type": "integer"}}},
                        {"name": "sid", "in": "cookie", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pet"}}}}}}
                },
                "post": {
                    "operationId": "createPet",
                    "tags": ["write"],
                    "security": [{"oauth": ["pets:write"]}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                    "responses": {"201": {"description": "created"}}
                }
            },
            "/pets/{pet-id}": {
                "parameters": [{"name": "pet-id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1}}],
                "get": {
                    "operationId": "showPet",
                    "deprecated": true,
                    "x-tollgate-owner": {"param": "pet_id", "claim": "sub"},
                    "responses": {"2XX": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                                  "default": {"description": "e", "content": {"application/json": {"schema": {}}}}}
                },
                "delete": {"security": [], "responses": {"204": {"description": "gone"}}}
            }
        }
    })
}

#[test]
fn every_operation_becomes_a_route() {
    let o = overlay(json!({"tags": {"write": {"mode": "dry-run"}}}));
    let (p, notes) = ok(petstore30(), &o);
    let names: Vec<&str> = p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["listPets", "createPet", "showPet", "delete-v1-pets-pet_id"]
    );
    let list = route(&p, "listPets");
    assert_eq!(list["path"], "/v1/pets");
    assert_eq!(list["methods"], json!(["GET"]));
    assert_eq!(list["providers"], json!(["oauth"]));
    assert_eq!(
        list["scopes"],
        json!({"all": ["pets:read"]}),
        "the document's security"
    );
    // Parameters: query (and the items of an exploded array), headers, requiredness.
    assert_eq!(
        list["request"]["query"]["limit"],
        json!({"type": "integer", "maximum": 100})
    );
    assert_eq!(list["request"]["query"]["ids"], json!({"type": "integer"}));
    assert_eq!(
        list["request"]["headers"],
        json!({"x-trace": {"type": "string", "maxLength": 8}})
    );
    assert_eq!(list["request"]["required_headers"], json!(["x-trace"]));
    // Responses in the default mode, `report`, with the named schema for responses.
    assert_eq!(list["response"]["mode"], "report");
    assert_eq!(
        list["response"]["schemas"]["200"],
        json!({"type": "array", "items": {"$ref": "#/$defs/Pet"}})
    );
    // The body: the request's variant of the schema (`id` is read-only), unknown properties explicit.
    let create = route(&p, "createPet");
    assert_eq!(
        create["scopes"],
        json!({"all": ["pets:write"]}),
        "the operation's own security"
    );
    assert_eq!(
        create["request"]["body"],
        json!({"$ref": "#/$defs/Pet.request"})
    );
    assert_eq!(create["request"]["reject_unknown_properties"], json!(false));
    assert_eq!(create["mode"], "dry-run", "the overlay by tag");
    assert_eq!(p["schemas"]["Pet.request"]["required"], json!(["name"]));
    assert_eq!(p["schemas"]["Pet"]["required"], json!(["id", "name"]));
    assert_eq!(
        p["schemas"]["Pet"]["properties"]["tag"]["type"],
        json!(["string", "null"])
    );
    // Path parameters renamed to policy names; deprecation; extensions.
    let show = route(&p, "showPet");
    assert_eq!(show["path"], "/v1/pets/{pet_id}");
    assert_eq!(
        show["request"]["params"]["pet_id"],
        json!({"type": "integer", "minimum": 1})
    );
    assert_eq!(
        show["lifecycle"],
        json!({"deprecated": "1970-01-01T00:00:00Z"})
    );
    assert_eq!(show["owner"], json!({"param": "pet_id", "claim": "sub"}));
    assert_eq!(
        show["response"]["schemas"]["2XX"],
        json!({"$ref": "#/$defs/Pet"})
    );
    // `security: []`: public, and `check` warns about it.
    assert_eq!(route(&p, "delete-v1-pets-pet_id")["public"], json!(true));
    // What is not enforced is reported with its place.
    let lines = notes.lines().join("\n");
    for expect in [
        "#/paths/~1pets/get/parameters/4: not enforced: cookie parameters are not checked",
        "#/paths/~1pets~1{pet-id}/get/responses/default: not enforced: `default` responses",
    ] {
        assert!(lines.contains(expect), "{expect}\nin:\n{lines}");
    }
    assert!(
        !lines.contains("Accept"),
        "Accept, Content-Type and Authorization are ignored"
    );
}

#[test]
fn output_is_deterministic() {
    let o = overlay(json!({}));
    let a = compile(&ok(petstore30(), &o).0).unwrap();
    let b = compile(&ok(petstore30(), &o).0).unwrap();
    assert_eq!(a, b);
}

#[test]
fn oas31_schemas_and_optional_auth() {
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "components": {"securitySchemes": {"oauth": {"type": "http", "scheme": "bearer"}}},
        "paths": {"/things/{id}": {"put": {
            "operationId": "put",
            "security": [{"oauth": []}, {}],
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": ["integer"], "exclusiveMinimum": 0}}],
            "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object", "properties": {"n": {"type": ["string", "null"]}}}}, "text/plain": {}}},
            "responses": {"200": {"description": "ok"}}
        }}},
        "webhooks": {"x": {}}
    });
    let (p, notes) = ok(doc, &overlay(json!({"unknown_properties": "reject"})));
    let put = route(&p, "put");
    assert_eq!(
        put["public"],
        json!(true),
        "an empty requirement makes authentication optional"
    );
    assert_eq!(
        put["request"]["params"]["id"],
        json!({"type": ["integer"], "exclusiveMinimum": 0})
    );
    assert_eq!(
        put["request"]["body"]["properties"]["n"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(put["request"]["reject_unknown_properties"], json!(true));
    let lines = notes.lines().join("\n");
    assert!(lines.contains("`text/plain`"), "{lines}");
    assert!(lines.contains("optional"), "{lines}");
}

#[test]
fn api_key_schemes_need_keys_from_the_overlay() {
    let doc = json!({
        "openapi": "3.0.0", "info": {"title": "t", "version": "1"},
        "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Key"}}},
        "security": [{"key": []}],
        "paths": {"/a": {"get": {"responses": {"200": {"description": "ok"}}}}}
    });
    let (p, notes) = run(doc.clone(), &Overlay::default());
    assert!(p.is_none());
    assert!(
        notes.lines().join("\n").contains("policy.api_keys.keys"),
        "{:?}",
        notes.lines()
    );
    let o = Overlay::from_value(&json!({"policy": {"api_keys": {"keys": [
        {"id": "k", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}
    ]}}}))
    .unwrap();
    let (p, _) = ok(doc, &o);
    assert_eq!(p["api_keys"]["header"], "x-key");
    assert_eq!(route(&p, "get-a")["api_keys"], json!(true));
}

#[test]
fn problems_stop_the_import_with_their_place() {
    let cases = [
        (json!({"swagger": "2.0"}), "Swagger 2.0 is not supported"),
        (json!({"openapi": "4.0.0"}), "not supported"),
        (json!({"info": {}}), "not an OpenAPI document"),
        (
            json!({"openapi": "3.0.0", "components": {"securitySchemes": {"other": {"type": "oauth2"}}},
                   "paths": {"/a": {"get": {"security": [{"other": []}], "responses": {}}}}}),
            "must define `policy.providers.other`",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/a": {"post": {"security": [],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "https://example.com/s.json"}}}}, "responses": {}}}}}),
            "never fetches references over the network",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/a": {"get": {"security": [], "x-tollgate-ownr": {}, "responses": {}}}}}),
            "unknown extension `x-tollgate-ownr`",
        ),
        (
            json!({"openapi": "3.0.0", "paths": {"/a": {"get": {"security": [{"nope": []}], "responses": {}}}}}),
            "`nope` is not a security scheme",
        ),
    ];
    for (doc, expect) in cases {
        let (p, notes) = run(doc, &overlay(json!({})));
        assert!(p.is_none(), "{expect}");
        let lines = notes.lines().join("\n");
        assert!(lines.contains(expect), "{expect}\nin:\n{lines}");
    }
}

#[test]
fn unenforceable_operations_are_left_out_never_opened() {
    let doc = json!({
        "openapi": "3.0.0", "info": {"title": "t", "version": "1"},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "paths": {
            "/files/{name}.json": {"get": {"security": [], "responses": {}}},
            "/basic": {"get": {"security": [{"basic": []}], "responses": {}}},
            "/open": {"get": {"security": [], "responses": {}}}
        }
    });
    let (p, notes) = ok(doc, &overlay(json!({})));
    let names: Vec<&str> = p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get-open"]);
    let lines = notes.lines().join("\n");
    assert!(lines.contains("mixes a parameter with text"), "{lines}");
    assert!(lines.contains("the route is left out"), "{lines}");
}

#[test]
fn references_into_files_beside_the_document() {
    let dir = std::env::temp_dir().join(format!("tollgate-openapi-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("common")).unwrap();
    std::fs::write(
        dir.join("common/types.yaml"),
        "components:\n  schemas:\n    Id:\n      type: integer\n      minimum: 1\n    Box:\n      type: object\n      properties:\n        id: {$ref: '#/components/schemas/Id'}\n",
    )
    .unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /box:\n    post:\n      security: []\n      requestBody:\n        required: true\n        content:\n          application/json:\n            schema: {$ref: 'common/types.yaml#/components/schemas/Box'}\n      responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    let doc = Document::read(&spec.to_string_lossy()).unwrap();
    let mut notes = Notes::default();
    let p = import(&spec, doc.value, &Overlay::default(), &mut notes).unwrap();
    assert_eq!(
        route(&p, "post-box")["request"]["body"],
        json!({"$ref": "#/$defs/types.Box"})
    );
    assert_eq!(
        p["schemas"]["types.Box"]["properties"]["id"],
        json!({"$ref": "#/$defs/types.Id"})
    );
    assert_eq!(
        p["schemas"]["types.Id"],
        json!({"type": "integer", "minimum": 1})
    );
    compile(&p).unwrap();
}

#[test]
fn the_overlay_is_checked() {
    for (o, expect) in [
        (json!({"polcy": {}}), "unknown field `polcy`"),
        (
            json!({"policy": {"routes": []}}),
            "routes come from the document",
        ),
        (
            json!({"responses": "strict"}),
            "expected one of [`block`, `redact`, `report`, `off`]",
        ),
        (
            json!({"unknown_properties": true}),
            "expected one of [`allow`, `reject`]",
        ),
        (
            json!({"operations": {"a": 1}}),
            "`operations.a`: expected an object",
        ),
    ] {
        let e = Overlay::from_value(&o).unwrap_err();
        assert!(e.contains(expect), "{e}");
    }
}

#[test]
fn responses_off_and_overlay_by_operation() {
    let o = overlay(
        json!({"responses": "off", "operations": {"showPet": {"limits": ["per-caller"]}},
        "policy": {"rate_limits": {"per-caller": {"rate": 10, "per": "second", "burst": 10, "key": ["identity"]}}}}),
    );
    let (p, _) = ok(petstore30(), &o);
    assert!(route(&p, "listPets").get("response").is_none());
    assert_eq!(route(&p, "showPet")["limits"], json!(["per-caller"]));
}
