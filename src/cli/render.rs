//! `tollgate render`: the policy embedded in the configuration that loads the filter. `envoy`
//! prints the `http_filters` entries of envoy/tollgate.yaml (the one template, read at build
//! time); `istio` prints an Istio `WasmPlugin` with the policy as its `pluginConfig`;
//! `envoy-gateway` prints an Envoy Gateway `EnvoyExtensionPolicy` with the policy as its `config`.

use serde_json::Value;

const TEMPLATE: &str = include_str!("../../envoy/tollgate.yaml");
/// Where the module is in a container image built for Envoy.
pub const DEFAULT_WASM: &str = "/etc/envoy/tollgate.wasm";
pub const DEFAULT_OCI: &str = "oci://registry.example.com/tollgate:0.1.0";

/// How the policy is embedded in Envoy's `configuration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    /// `google.protobuf.Struct`: the policy as YAML.
    Struct,
    /// `google.protobuf.StringValue`: the policy's JSON text.
    String,
}

/// Text that reads back as the same string in YAML 1.1 and 1.2 readers (Envoy's and Istio's)
/// without quotes: no number, boolean or null look-alike, no indicator characters.
fn plain(k: &str) -> bool {
    k.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'/')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
}

/// A mapping key: plain when safe, else JSON-quoted (a JSON string is a YAML double-quoted
/// scalar).
fn key(k: &str) -> String {
    if plain(k) {
        k.to_string()
    } else {
        Value::from(k).to_string()
    }
}

/// A scalar: strings as keys are; numbers, booleans and null as JSON writes them.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => key(s),
        other => other.to_string(),
    }
}

/// Block-style YAML for `value`, every line indented by `indent` spaces.
pub fn yaml(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    block(value, indent, &mut out);
    out
}

fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                match v {
                    Value::Object(c) if !c.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        block(v, indent + 2, out);
                    }
                    Value::Array(c) if !c.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        block(v, indent, out);
                    }
                    _ => out.push_str(&format!("{pad}{}: {}\n", key(k), inline(v))),
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                let mut inner = String::new();
                block(item, indent + 2, &mut inner);
                // `- ` takes the place of the first line's indentation.
                let rest = inner.get(indent + 2..).unwrap_or("");
                out.push_str(&format!("{pad}- {rest}"));
            }
        }
        other => out.push_str(&format!("{pad}{}\n", inline(other))),
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        other => scalar(other),
    }
}

/// Where the printed part of the template starts: the connection-manager settings Tollgate relies
/// on, then the `http_filters:` block.
const START_MARK: &str = "# -- From here to the end of http_filters";

/// The connection-manager settings Tollgate relies on and the `http_filters:` block of the
/// template, with the policy and module path filled in, unindented: paste them into an
/// `http_connection_manager`.
pub fn envoy(policy: &Value, policy_json: &str, as_type: As, wasm: &str) -> Result<String, String> {
    let lines: Vec<&str> = TEMPLATE.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with(START_MARK))
        .ok_or("envoy/tollgate.yaml has no start mark for `tollgate render envoy`")?;
    if !lines
        .iter()
        .skip(start)
        .any(|l| l.trim_start() == "http_filters:")
    {
        return Err("envoy/tollgate.yaml has no `http_filters:`".into());
    }
    let base = lines
        .get(start)
        .map_or(0, |l| l.len() - l.trim_start().len());
    let mut out = String::new();
    for line in lines.iter().skip(start) {
        let indent = line.len() - line.trim_start().len();
        // The block ends at the first line less indented than the settings (`clusters:`).
        let outside = indent < base;
        if !line.trim().is_empty() && outside && out.contains('\n') {
            break;
        }
        let line = line.get(base.min(indent)..).unwrap_or("");
        if let Some(at) = line.find("@@POLICY@@") {
            let pad = line.len() - line.trim_start().len();
            let head = line.get(..at).unwrap_or("").trim_end();
            out.push_str(head);
            out.push('\n');
            out.push_str(&configuration(policy, policy_json, as_type, pad + 2));
            continue;
        }
        out.push_str(&line.replace("@@WASM@@", &Value::from(wasm).to_string()));
        out.push('\n');
    }
    if out.contains("@@") {
        return Err("envoy/tollgate.yaml has placeholders this command does not fill".into());
    }
    Ok(out)
}

fn configuration(policy: &Value, policy_json: &str, as_type: As, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match as_type {
        As::Struct => format!(
            "{pad}\"@type\": type.googleapis.com/google.protobuf.Struct\n{pad}value:\n{}",
            yaml(policy, indent + 2)
        ),
        As::String => {
            let body: String = policy_json
                .trim_end()
                .lines()
                .map(|l| format!("{pad}  {l}\n"))
                .collect();
            format!("{pad}\"@type\": type.googleapis.com/google.protobuf.StringValue\n{pad}value: |\n{body}")
        }
    }
}

/// Where `tollgate render envoy` points the rate-limit service's cluster unless told
/// (envoyproxy/ratelimit's gRPC port).
pub const DEFAULT_RLS_ADDRESS: &str = "ratelimit:8081";

/// The `clusters:` entry of the rate-limit service named `cluster` at `address` (`host:port`),
/// for `static_resources`: HTTP/2, as gRPC needs.
pub fn rls_cluster(cluster: &str, address: &str) -> Result<String, String> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .filter(|(h, p)| !h.is_empty() && *p > 0)
        .ok_or_else(|| format!("`{address}` is not an address; expected HOST:PORT"))?;
    // An address is used as it is; a name is resolved (and re-resolved) by DNS.
    let kind = if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    Ok(format!(
        "# The rate-limit service of the policy's `global` limits (RLS v3 gRPC): add this cluster to\n\
         # static_resources.clusters.\n\
         clusters:\n\
         - name: {name}\n  \
           connect_timeout: 1s\n  \
           type: {kind}\n  \
           typed_extension_protocol_options:\n    \
             envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n      \
               \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n      \
               explicit_http_config:\n        \
                 http2_protocol_options: {{}}\n  \
           load_assignment:\n    \
             cluster_name: {name}\n    \
             endpoints:\n    \
             - lb_endpoints:\n      \
               - endpoint:\n          \
                   address:\n            \
                     socket_address: {{ address: {host}, port_value: {port} }}\n",
        name = key(cluster),
        host = Value::from(host),
    ))
}

/// An Istio `WasmPlugin` that loads the module from `url` with the policy as `pluginConfig`.
pub fn istio(
    policy: &Value,
    name: &str,
    namespace: Option<&str>,
    url: &str,
    selector: &[(String, String)],
) -> String {
    let mut out = String::from(
        "# Istio delivers `pluginConfig` to the module as JSON text; the policy is the same document.\n",
    );
    out.push_str("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n");
    out.push_str(&format!("  name: {}\n", key(name)));
    if let Some(ns) = namespace {
        out.push_str(&format!("  namespace: {}\n", key(ns)));
    }
    out.push_str("spec:\n");
    if !selector.is_empty() {
        out.push_str("  selector:\n    matchLabels:\n");
        for (k, v) in selector {
            out.push_str(&format!("      {}: {}\n", key(k), Value::from(v.as_str())));
        }
    }
    out.push_str(&format!("  url: {}\n", Value::from(url)));
    // Before Istio's own authorization; a module that cannot start refuses requests.
    out.push_str("  phase: AUTHN\n  failStrategy: FAIL_CLOSE\n  pluginConfig:\n");
    out.push_str(&yaml(policy, 4));
    out
}

/// Where an Envoy Gateway `EnvoyExtensionPolicy` takes the module from.
#[derive(Debug, PartialEq, Eq)]
pub enum Code {
    /// An OCI image (`make oci`'s), `registry/repository:tag` or `...@sha256:DIGEST`.
    Image(String),
    /// A module served over HTTP(S), checked against its SHA-256.
    Http { url: String, sha256: String },
}

/// The code source for `--url` and `--sha256`: `oci://` (or no scheme) is an image, pinned by
/// digest in the URL; `http://` and `https://` need the module's SHA-256, since nothing else
/// says which module is meant.
pub fn wasm_code(url: &str, sha256: Option<&str>) -> Result<Code, String> {
    let http = url.starts_with("http://") || url.starts_with("https://");
    match (http, sha256) {
        (true, Some(sum)) => {
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "`--sha256 {sum}`: expected the module's SHA-256 as 64 hex digits"
                ));
            }
            Ok(Code::Http {
                url: url.to_string(),
                sha256: sum.to_ascii_lowercase(),
            })
        }
        (true, None) => Err(format!(
            "`--url {url}` serves the module over HTTP; give its `--sha256` (make oci prints it)"
        )),
        (false, Some(_)) => Err(
            "`--sha256` checks a module fetched over HTTP; pin an image by digest in `--url` \
             (`oci://registry/tollgate@sha256:...`)"
                .into(),
        ),
        (false, None) => {
            let image = url.strip_prefix("oci://").unwrap_or(url);
            if image.is_empty() || image.contains("://") {
                return Err(format!(
                    "`--url {url}`: expected `oci://registry/repository[:tag|@sha256:digest]` or an \
                     `https://` URL"
                ));
            }
            Ok(Code::Image(image.to_string()))
        }
    }
}

/// `Gateway/NAME` or `HTTPRoute/NAME`: what an `EnvoyExtensionPolicy` attaches to.
pub fn target_ref(text: &str) -> Result<(&'static str, String), String> {
    let (kind, name) = text.split_once('/').unwrap_or(("", text));
    let kind = match kind {
        "Gateway" => "Gateway",
        "HTTPRoute" => "HTTPRoute",
        _ => {
            return Err(format!(
                "`--target-ref {text}`: expected `Gateway/NAME` or `HTTPRoute/NAME`"
            ))
        }
    };
    if name.is_empty() {
        return Err(format!("`--target-ref {text}`: the name is missing"));
    }
    Ok((kind, name.to_string()))
}

/// The Gateway an `EnvoyExtensionPolicy` attaches to unless told: the one Envoy Gateway's
/// quickstart creates.
pub const DEFAULT_TARGET: &str = "Gateway/eg";

/// An Envoy Gateway `EnvoyExtensionPolicy` (gateway.envoyproxy.io/v1alpha1) that runs the module
/// from `code` on the traffic of `target` with the policy as the Wasm extension's `config`.
pub fn envoy_gateway(
    policy: &Value,
    name: &str,
    namespace: Option<&str>,
    code: &Code,
    target: (&str, &str),
) -> String {
    let mut out = String::from(
        "# Envoy Gateway delivers `config` to the module as JSON text; the policy is the same document.\n",
    );
    out.push_str(
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nmetadata:\n",
    );
    out.push_str(&format!("  name: {}\n", key(name)));
    if let Some(ns) = namespace {
        out.push_str(&format!("  namespace: {}\n", key(ns)));
    }
    out.push_str("spec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n");
    out.push_str(&format!(
        "    kind: {}\n    name: {}\n",
        target.0,
        key(target.1)
    ));
    out.push_str(&format!("  wasm:\n  - name: {}\n    code:\n", key(name)));
    match code {
        Code::Image(url) => out.push_str(&format!(
            "      type: Image\n      image:\n        url: {}\n",
            Value::from(url.as_str())
        )),
        Code::Http { url, sha256 } => out.push_str(&format!(
            "      type: HTTP\n      http:\n        url: {}\n      sha256: {}\n",
            Value::from(url.as_str()),
            Value::from(sha256.as_str())
        )),
    }
    // A module that cannot start refuses requests instead of passing them on unchecked.
    out.push_str("    failOpen: false\n    config:\n");
    out.push_str(&yaml(policy, 6));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::source::Document;
    use serde_json::json;

    fn orders() -> (Value, String) {
        let text = include_str!("../../policies/orders.json").to_string();
        (serde_json::from_str(&text).unwrap(), text)
    }

    #[test]
    fn yaml_round_trips_through_the_yaml_reader() {
        let v = json!({"a": [1, {"b": [], "c": {}}, [2, 3]], "200": "x", "true": "y", "s p": null,
            "n": {"deep": [{"x": "multi\nline \"q\""}]}, "e": "", "t": "true"});
        let text = yaml(&v, 0);
        let back = Document::parse("x.yaml", text.clone()).unwrap().value;
        assert_eq!(back, v, "{text}");
        let (policy, _) = orders();
        let back = Document::parse("x.yaml", yaml(&policy, 0)).unwrap().value;
        assert_eq!(back, policy);
    }

    #[test]
    fn envoy_block_embeds_the_policy() {
        let (policy, text) = orders();
        let out = envoy(&policy, &text, As::Struct, DEFAULT_WASM).unwrap();
        assert!(out.starts_with("# -- From here"), "{out}");
        assert!(out.contains("\nhttp_filters:\n- name: tollgate\n"), "{out}");
        assert!(
            out.contains("local: { filename: \"/etc/envoy/tollgate.wasm\" }"),
            "{out}"
        );
        assert!(out.contains("allow_on_headers_stop_iteration: true"));
        assert!(
            out.trim_end().ends_with(
                "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            ),
            "{out}"
        );
        // The block parses, carries the connection-manager settings Tollgate relies on, and the
        // policy in it is the policy.
        let doc = Document::parse("x.yaml", out).unwrap().value;
        assert_eq!(doc["use_remote_address"], true);
        assert_eq!(doc["xff_num_trusted_hops"], 0);
        assert_eq!(
            doc["common_http_protocol_options"]["headers_with_underscores_action"],
            "REJECT_REQUEST"
        );
        assert_eq!(doc["normalize_path"], true);
        assert_eq!(doc["merge_slashes"], true);
        assert_eq!(doc["path_with_escaped_slashes_action"], "REJECT_REQUEST");
        let config = &doc["http_filters"][0]["typed_config"]["config"]["configuration"];
        assert_eq!(
            config["@type"],
            "type.googleapis.com/google.protobuf.Struct"
        );
        assert_eq!(config["value"], policy);
        let out = envoy(&policy, &text, As::String, "/x.wasm").unwrap();
        let doc = Document::parse("x.yaml", out).unwrap().value;
        let config = &doc["http_filters"][0]["typed_config"]["config"]["configuration"];
        let embedded: Value = serde_json::from_str(config["value"].as_str().unwrap()).unwrap();
        assert_eq!(embedded, policy);
    }

    #[test]
    fn the_rate_limit_service_cluster() {
        let out = rls_cluster("ratelimit", DEFAULT_RLS_ADDRESS).unwrap();
        let doc = Document::parse("x.yaml", out).unwrap().value;
        let c = &doc["clusters"][0];
        assert_eq!(c["name"], "ratelimit");
        assert_eq!(c["type"], "STRICT_DNS");
        assert_eq!(
            c["typed_extension_protocol_options"]
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
                ["http2_protocol_options"],
            json!({})
        );
        let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(addr["address"], "ratelimit");
        assert_eq!(addr["port_value"], 8081);
        let out = rls_cluster("rls one", "[::1]:9").unwrap();
        let doc = Document::parse("x.yaml", out).unwrap().value;
        assert_eq!(doc["clusters"][0]["name"], "rls one");
        assert_eq!(doc["clusters"][0]["type"], "STATIC");
        for bad in ["ratelimit", ":80", "h:0", "h:x"] {
            assert!(rls_cluster("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn istio_plugin() {
        let (policy, _) = orders();
        let out = istio(
            &policy,
            "tollgate",
            Some("orders"),
            DEFAULT_OCI,
            &[("app".into(), "orders".into())],
        );
        let doc = Document::parse("x.yaml", out.clone()).unwrap().value;
        assert_eq!(doc["kind"], "WasmPlugin");
        assert_eq!(doc["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(doc["metadata"]["namespace"], "orders");
        assert_eq!(doc["spec"]["phase"], "AUTHN");
        assert_eq!(doc["spec"]["failStrategy"], "FAIL_CLOSE");
        assert_eq!(doc["spec"]["url"], DEFAULT_OCI);
        assert_eq!(doc["spec"]["selector"]["matchLabels"]["app"], "orders");
        assert_eq!(doc["spec"]["pluginConfig"], policy);
    }

    #[test]
    fn envoy_gateway_policy() {
        let (policy, _) = orders();
        let code = wasm_code(DEFAULT_OCI, None).unwrap();
        assert_eq!(
            code,
            Code::Image("registry.example.com/tollgate:0.1.0".into())
        );
        let out = envoy_gateway(
            &policy,
            "tollgate",
            Some("orders"),
            &code,
            ("Gateway", "eg"),
        );
        let doc = Document::parse("x.yaml", out.clone()).unwrap().value;
        assert_eq!(doc["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
        assert_eq!(doc["kind"], "EnvoyExtensionPolicy");
        assert_eq!(doc["metadata"]["namespace"], "orders");
        assert_eq!(
            doc["spec"]["targetRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}])
        );
        let wasm = &doc["spec"]["wasm"][0];
        assert_eq!(
            wasm["code"],
            json!({"type": "Image", "image": {"url": "registry.example.com/tollgate:0.1.0"}})
        );
        assert_eq!(wasm["failOpen"], false);
        assert_eq!(wasm["config"], policy);

        // A checksum of digits only stays a string.
        let sum = "1".repeat(64);
        let code = wasm_code("https://modules.example.com/tollgate.wasm", Some(&sum)).unwrap();
        let out = envoy_gateway(&policy, "t", None, &code, ("HTTPRoute", "orders"));
        let doc = Document::parse("x.yaml", out).unwrap().value;
        assert_eq!(
            doc["spec"]["wasm"][0]["code"],
            json!({"type": "HTTP", "http": {"url": "https://modules.example.com/tollgate.wasm"},
                "sha256": sum})
        );
        assert_eq!(doc["spec"]["targetRefs"][0]["kind"], "HTTPRoute");
        assert!(doc["metadata"].get("namespace").is_none());
    }

    #[test]
    fn envoy_gateway_arguments() {
        assert!(wasm_code("https://m/t.wasm", None).is_err());
        assert!(wasm_code("https://m/t.wasm", Some("abc")).is_err());
        assert!(wasm_code("oci://r/t:1", Some(&"a".repeat(64))).is_err());
        assert!(wasm_code("oci://", None).is_err());
        assert!(wasm_code("ftp://r/t", None).is_err());
        assert_eq!(
            wasm_code("r/t@sha256:ab", None).unwrap(),
            Code::Image("r/t@sha256:ab".into())
        );
        assert_eq!(
            target_ref("HTTPRoute/orders").unwrap(),
            ("HTTPRoute", "orders".into())
        );
        for bad in ["eg", "Service/x", "Gateway/"] {
            assert!(target_ref(bad).is_err(), "{bad}");
        }
    }
}
