//! The `tollgate` command-line tool: the filter's engine, built natively, to check policies in a
//! pull request instead of in production. Subcommands read files and print; every decision comes
//! from `Engine` (see `request.rs`). Native only: the wasm module never contains this module.

mod args;
pub mod cases;
pub mod check;
pub mod discover;
pub mod explain;
pub mod export;
pub mod keys;
pub mod openapi;
pub mod place;
pub mod render;
pub mod request;
pub mod schema;
pub mod sign;
pub mod source;
mod yaml;

use args::{Args, Spec as ArgSpec};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// Exit codes.
pub const OK: u8 = 0;
/// The policy is invalid, a case failed, or a file could not be used.
pub const FAILED: u8 = 1;
/// The command line is wrong.
pub const USAGE: u8 = 2;

const USAGE_TEXT: &str = "\
tollgate: the Tollgate policy engine on the command line

usage:
  tollgate check POLICY... [--json] [--strict]
      load and compile policies (JSON or YAML); print every problem as FILE:LINE:COL and warn about
      risky choices. Exit 1 when a policy is invalid (or, with --strict, has warnings).
  tollgate explain POLICY --request 'METHOD /path?query' [-H 'name: value']... [--body FILE | --data TEXT]
                   [--now TIME] [--peer ADDR] [--jwks NAME=FILE]... [--revocations FILE] [--json]
                   [--tls VERSION] [--peer-uri-san URI] [--peer-dns-san NAME] [--peer-subject DN]
                   [--response-status CODE] [--response-header 'name: value']...
                   [--response-body FILE | --response-data TEXT]
                   [--rate-limit-service ok|over_limit|timeout|unavailable|malformed]
                   [--repeat N [--interval-ms MS]]
      run one request through the engine and print the decision with its trace; with --response-*,
      the upstream's answer (status 200 unless given) through the response checks too. Global
      limits show the descriptors sent to the rate-limit service, whose answer is simulated
      (default ok; no network). --repeat sends the request N-1 times before (MS apart, ending
      at --now), a synthetic history for `detection`. --tls names the connection's TLS version (TLSv1.3 when a
      --peer-* option describes a client certificate; plaintext without either).
  tollgate test POLICY CASES... [--json]
      run files of request cases with expected decisions. Exit 1 when a case fails.
  tollgate render envoy POLICY [--as struct|string] [--wasm PATH] [--rls-address HOST:PORT]
  tollgate render istio POLICY [--url oci://...] [--name NAME] [--namespace NS] [--selector key=value]...
  tollgate render envoy-gateway POLICY [--url oci://...|https://... --sha256 HEX] [--name NAME]
                  [--namespace NS] [--target-ref Gateway/NAME|HTTPRoute/NAME]
      print the Envoy http_filters block, an Istio WasmPlugin, or an Envoy Gateway
      EnvoyExtensionPolicy, with the policy embedded; for `envoy` and a policy with global
      limits, also the rate-limit service's cluster (default ratelimit:8081).
  tollgate import openapi SPEC [--overlay FILE] [-o POLICY] [--strict]
      write a policy from an OpenAPI 3.0 or 3.1 document (JSON or YAML; local $refs only): a
      route per operation with its parameters, body and response schemas and security
      requirements; the overlay adds what OpenAPI does not say (issuers, keys, limits). Every
      construct not enforced is reported on stderr with its JSON pointer (an error with --strict).
  tollgate export openapi POLICY [-o FILE]
      print an OpenAPI 3.1 document of what the policy enforces: its routes, parameters, schemas
      and security requirements (the API inventory).
  tollgate discover AUDIT_LOG... [--policy POLICY] [--json]
      group the audit lines of requests no route matched (in Envoy's logs) into templated
      endpoints (ids become {id}), with counts, first and last seen, and a draft route for each;
      with --policy, leave out what it now matches and draft routes for its providers.
  tollgate schema
      print the JSON Schema (draft-07) of the policy format, for editors: the file
      policies/tollgate-policy.schema.json, named by `$schema` in a JSON policy or by a
      `# yaml-language-server: $schema=...` comment in a YAML one.
  tollgate token (--key PEM | --hmac-secret TEXT) [--alg ALG] [--kid KID] [--claim name=value]... [--ttl SECONDS]
      print a signed JWT (iat = now, exp = now + ttl; default ttl 3600).
  tollgate sign --key JWK --request 'METHOD /path' [--authority HOST[:PORT]] [--https] [-H 'name: value']...
                [--body FILE | --data TEXT] [--component ID]... [--nonce TEXT | --no-nonce] [--now TIME]
                [--expires-in SECONDS] [--tag TAG] [--label LABEL]
      print the headers that sign the request (RFC 9421) with a private JWK: content-digest (for
      a body), signature-input and signature, one `name: value` per line (for curl -H).
  tollgate api-key --id ID [--scopes 'a b'] [--days N]
      print a new API key and the line for the policy's api_keys.keys (days 0: no expiry).
  tollgate jwk PEM [--kid KID] [--alg ALG]
      print the public JWK of a PEM key (private PKCS#8 or public SPKI).

TIME is seconds since 1970 or YYYY-MM-DDTHH:MM:SSZ; the default is the clock.
";

type Out<'a> = &'a mut dyn Write;

/// Runs the tool with `args` (without the program name); returns the exit code.
pub fn run(args: &[String], out: Out<'_>, err: Out<'_>) -> u8 {
    let Some((command, rest)) = args.split_first() else {
        let _ = err.write_all(USAGE_TEXT.as_bytes());
        return USAGE;
    };
    let result = match command.as_str() {
        "check" => cmd_check(rest, out),
        "explain" => cmd_explain(rest, out),
        "test" => cmd_test(rest, out),
        "render" => cmd_render(rest, out),
        "token" => cmd_token(rest, out),
        "api-key" => cmd_api_key(rest, out),
        "sign" => cmd_sign(rest, out),
        "jwk" => cmd_jwk(rest, out),
        "import" => cmd_import(rest, out, err),
        "export" => cmd_export(rest, out, err),
        "discover" => cmd_discover(rest, out),
        "schema" => cmd_schema(rest, out),
        "help" | "--help" | "-h" => {
            let _ = out.write_all(USAGE_TEXT.as_bytes());
            return OK;
        }
        "--version" | "version" => {
            let _ = writeln!(out, "tollgate {}", env!("CARGO_PKG_VERSION"));
            return OK;
        }
        other => Err(Failure::Usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(err, "tollgate {command}: {msg}\n\n{USAGE_TEXT}");
            USAGE
        }
        Err(Failure::Error(msg)) => {
            let _ = writeln!(err, "tollgate {command}: {msg}");
            FAILED
        }
    }
}

enum Failure {
    Usage(String),
    Error(String),
}

type Result<T> = std::result::Result<T, Failure>;

fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure::Usage(msg.into()))
}

fn error(msg: impl Into<String>) -> Failure {
    Failure::Error(msg.into())
}

fn parse(args: &[String], spec: &ArgSpec<'_>) -> Result<Args> {
    Args::parse(args, spec).map_err(Failure::Usage)
}

fn print(out: Out<'_>, text: &str) -> Result<u8> {
    out.write_all(text.as_bytes())
        .map_err(|e| error(format!("cannot write: {e}")))?;
    Ok(OK)
}

fn print_json(out: Out<'_>, value: &Value) -> Result<u8> {
    let text = serde_json::to_string_pretty(value).map_err(|e| error(e.to_string()))?;
    print(out, &format!("{text}\n"))
}

/// A valid policy, or the `check` report of why not (as an error for commands that need one).
fn load_policy(path: &str) -> Result<check::Report> {
    let report = check::check_file(path);
    if report.valid() {
        Ok(report)
    } else {
        Err(error(format!(
            "the policy is invalid:\n{}",
            check::report_text(&report)
        )))
    }
}

fn cmd_check(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &[],
            flags: &["json", "strict"],
            short: &[],
        },
    )?;
    if a.positional.is_empty() {
        return usage("name at least one policy file");
    }
    let reports: Vec<check::Report> = a.positional.iter().map(|p| check::check_file(p)).collect();
    let failed = reports
        .iter()
        .any(|r| !r.valid() || (a.flag("strict") && !r.warnings.is_empty()));
    if a.flag("json") {
        let all: Vec<Value> = reports.iter().map(check::report_json).collect();
        print_json(
            out,
            &if all.len() == 1 {
                all.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(all)
            },
        )?;
    } else {
        let text: String = reports.iter().map(check::report_text).collect();
        print(out, &text)?;
    }
    Ok(if failed { FAILED } else { OK })
}

fn cmd_import(args: &[String], out: Out<'_>, err: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["overlay", "output"],
            flags: &["strict"],
            short: &[("-o", "--output")],
        },
    )?;
    let (Some(kind), Some(spec), None) = (
        a.positional.first(),
        a.positional.get(1),
        a.positional.get(2),
    ) else {
        return usage("expected `import openapi SPEC`");
    };
    if kind != "openapi" {
        return usage(format!(
            "`{kind}`: only `openapi` documents can be imported"
        ));
    }
    let outcome = openapi::run(spec, a.value("overlay"), a.flag("strict"));
    for line in &outcome.messages {
        let _ = writeln!(err, "{line}");
    }
    let Some(text) = outcome.policy else {
        return Ok(FAILED);
    };
    match a.value("output") {
        Some(file) => {
            std::fs::write(file, &text).map_err(|e| error(format!("{file}: {e}")))?;
            Ok(OK)
        }
        None => print(out, &text),
    }
}

fn cmd_export(args: &[String], out: Out<'_>, err: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["output"],
            flags: &[],
            short: &[("-o", "--output")],
        },
    )?;
    let [target, policy] = a.positional.as_slice() else {
        return usage("expected `export openapi POLICY [-o FILE]`");
    };
    if target != "openapi" {
        return usage(format!("cannot export `{target}`; expected `openapi`"));
    }
    let report = load_policy(policy)?;
    let (Some(doc), Some(source)) = (&report.doc, &report.source) else {
        return Err(error("the policy could not be read"));
    };
    let title = Path::new(policy)
        .file_stem()
        .map_or_else(|| policy.clone(), |s| s.to_string_lossy().into_owned());
    let export = export::openapi(doc, &source.value, &title).map_err(error)?;
    let text = serde_json::to_string_pretty(&export.document).map_err(|e| error(e.to_string()))?;
    for note in &export.notes {
        let _ = writeln!(err, "tollgate export: {note}");
    }
    match a.value("output") {
        Some(file) => {
            std::fs::write(file, format!("{text}\n")).map_err(|e| error(format!("{file}: {e}")))?;
            Ok(OK)
        }
        None => print(out, &format!("{text}\n")),
    }
}

fn cmd_schema(args: &[String], out: Out<'_>) -> Result<u8> {
    if let Some(extra) = args.first() {
        return usage(format!("`{extra}`: `schema` takes no arguments"));
    }
    print(out, &schema::policy_schema_text())
}

fn cmd_discover(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["policy"],
            flags: &["json"],
            short: &[],
        },
    )?;
    if a.positional.is_empty() {
        return usage("name at least one log file");
    }
    let report = match a.value("policy") {
        Some(p) => Some(load_policy(p)?),
        None => None,
    };
    let policy = match &report {
        Some(r) => match (&r.engine, &r.doc) {
            (Some(engine), Some(doc)) => Some((engine, doc)),
            _ => return Err(error("the policy did not compile")),
        },
        None => None,
    };
    let text = discover::report(&a.positional, policy, a.flag("json")).map_err(error)?;
    print(out, &text)
}

fn jwks_args(a: &Args) -> Result<Vec<(String, Vec<u8>)>> {
    a.values("jwks")
        .iter()
        .map(|v| {
            let (name, file) = v.split_once('=').ok_or_else(|| {
                Failure::Usage(format!(
                    "`--jwks {v}`: expected NAME=FILE (a provider or signer with remote keys)"
                ))
            })?;
            let body = std::fs::read(file).map_err(|e| error(format!("{file}: {e}")))?;
            Ok((name.to_string(), body))
        })
        .collect()
}

fn now_arg(a: &Args) -> Result<u64> {
    match a.value("now") {
        Some(t) => request::parse_time(t)
            .map(|s| s.saturating_mul(1000))
            .map_err(Failure::Usage),
        None => Ok(request::now_ms()),
    }
}

/// `--body FILE` or `--data TEXT` (or, with `prefix` `response-`, their response forms).
fn body_arg(a: &Args, prefix: &str) -> Result<Option<Vec<u8>>> {
    let (file, text) = (format!("{prefix}body"), format!("{prefix}data"));
    match (a.value(&file), a.value(&text)) {
        (Some(_), Some(_)) => usage(format!("give `--{file}` or `--{text}`, not both")),
        (Some(f), None) => Ok(Some(
            std::fs::read(f).map_err(|e| error(format!("{f}: {e}")))?,
        )),
        (None, Some(t)) => Ok(Some(t.as_bytes().to_vec())),
        (None, None) => Ok(None),
    }
}

/// The upstream's response given by `--response-*` (status `200` unless given), if any.
fn response_arg(a: &Args) -> Result<Option<request::Upstream>> {
    let headers = a
        .values("response-header")
        .iter()
        .map(|h| request::parse_header(h))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    let body = body_arg(a, "response-")?;
    let status = match a.value("response-status") {
        Some(s) => Some(
            s.parse::<u16>()
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| {
                    Failure::Usage(format!("`--response-status {s}`: expected 100 to 599"))
                })?,
        ),
        None => None,
    };
    if status.is_none() && headers.is_empty() && body.is_none() {
        return Ok(None);
    }
    Ok(Some(request::Upstream {
        status: status.unwrap_or(200),
        headers,
        body: body.unwrap_or_default(),
    }))
}

fn cmd_explain(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &[
                "request",
                "header",
                "body",
                "data",
                "now",
                "peer",
                "tls",
                "peer-uri-san",
                "peer-dns-san",
                "peer-subject",
                "jwks",
                "revocations",
                "response-status",
                "response-header",
                "response-body",
                "response-data",
                "rate-limit-service",
                "repeat",
                "interval-ms",
            ],
            flags: &["json"],
            short: &[("-H", "--header"), ("-X", "--request")],
        },
    )?;
    let [policy] = a.positional.as_slice() else {
        return usage("name one policy file");
    };
    let Some(line) = a.value("request") else {
        return usage("`--request 'METHOD /path'` is required");
    };
    let (method, path) = request::Spec::parse_line(line).map_err(Failure::Usage)?;
    let headers = a
        .values("header")
        .iter()
        .map(|h| request::parse_header(h))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    let body = body_arg(&a, "")?;
    let spec = request::Spec {
        method,
        path,
        headers,
        body,
        peer: a.value("peer").map(String::from),
        connection: request::connection(
            a.value("tls"),
            a.value("peer-uri-san"),
            a.value("peer-dns-san"),
            a.value("peer-subject"),
        ),
        response: response_arg(&a)?,
        rate_limit_service: match a.value("rate-limit-service") {
            None => request::ServiceAnswer::default(),
            Some(v) => request::ServiceAnswer::parse(v)
                .map_err(|e| Failure::Usage(format!("`--rate-limit-service`: {e}")))?,
        },
    };
    let now_ms = now_arg(&a)?;
    let jwks = jwks_args(&a)?;
    let revocations = match a.value("revocations") {
        Some(file) => Some(std::fs::read(file).map_err(|e| error(format!("{file}: {e}")))?),
        None => None,
    };
    let report = load_policy(policy)?;
    let (Some(engine), Some(doc)) = (&report.engine, &report.doc) else {
        return Err(error("the policy did not compile"));
    };
    let number = |name: &str, default: u64| match a.value(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| Failure::Usage(format!("`--{name}`: `{v}` is not a whole number"))),
    };
    let repeat = number("repeat", 1)?;
    let Some(before) = repeat.checked_sub(1).and_then(|r| u32::try_from(r).ok()) else {
        return usage("`--repeat` is at least 1");
    };
    let history = (before, number("interval-ms", 0)?);
    let trace = explain::explain_after(
        engine,
        doc,
        &spec,
        now_ms,
        &jwks,
        revocations.as_deref(),
        history,
    )
    .map_err(error)?;
    if a.flag("json") {
        print_json(out, &trace)
    } else {
        print(out, &explain::render_text(&trace))
    }
}

fn cmd_test(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &[],
            flags: &["json"],
            short: &[],
        },
    )?;
    let Some((policy, files)) = a.positional.split_first().filter(|(_, f)| !f.is_empty()) else {
        return usage("name a policy file and at least one case file");
    };
    let report = load_policy(policy)?;
    let Some(engine) = &report.engine else {
        return Err(error("the policy did not compile"));
    };
    let clock = request::now_ms();
    let (mut passed, mut failed) = (0, 0);
    let mut text = String::new();
    let mut json_files = Vec::new();
    for file in files {
        let (doc, cases) = cases::load(file).map_err(|e| error(e.0))?;
        let base = Path::new(file).parent().unwrap_or(Path::new("."));
        let results = cases::run(engine, &doc, &cases, base, clock).map_err(|e| error(e.0))?;
        let ok = results.iter().filter(|r| r.passed()).count();
        passed += ok;
        failed += results.len() - ok;
        text.push_str(&format!("{file} ({policy})\n"));
        text.push_str(&cases::render_text(file, &results));
        json_files.push(cases::render_json(policy, file, &results));
    }
    if a.flag("json") {
        print_json(
            out,
            &serde_json::json!({"policy": policy, "passed": passed, "failed": failed, "files": json_files}),
        )?;
    } else {
        text.push_str(&format!("{passed} passed, {failed} failed\n"));
        print(out, &text)?;
    }
    Ok(if failed == 0 { OK } else { FAILED })
}

fn cmd_render(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &[
                "as",
                "wasm",
                "url",
                "name",
                "namespace",
                "selector",
                "rls-address",
                "sha256",
                "target-ref",
            ],
            flags: &[],
            short: &[],
        },
    )?;
    let [target, policy] = a.positional.as_slice() else {
        return usage(
            "expected `render envoy POLICY`, `render istio POLICY` or `render envoy-gateway POLICY`",
        );
    };
    let report = load_policy(policy)?;
    let Some(source) = &report.source else {
        return Err(error("the policy could not be read"));
    };
    // `$schema` is for editors; Envoy and the control planes get the policy without it.
    let mut value = source.value.clone();
    let dropped = value
        .as_object_mut()
        .and_then(|m| m.remove("$schema"))
        .is_some();
    let json_text = match source.format {
        source::Format::Json if !dropped => source.text.clone(),
        _ => serde_json::to_string_pretty(&value).map_err(|e| error(e.to_string()))?,
    };
    let text = match target.as_str() {
        "envoy" => {
            let as_type = match a.value("as").unwrap_or("struct") {
                "struct" => render::As::Struct,
                "string" => render::As::String,
                other => return usage(format!("`--as {other}`: expected `struct` or `string`")),
            };
            let wasm = a.value("wasm").unwrap_or(render::DEFAULT_WASM);
            let mut text = render::envoy(&value, &json_text, as_type, wasm).map_err(error)?;
            let service = report.engine.as_ref().and_then(|e| e.rate_limit_service());
            if let Some(service) = service {
                let address = a
                    .value("rls-address")
                    .unwrap_or(render::DEFAULT_RLS_ADDRESS);
                text.push('\n');
                text.push_str(
                    &render::rls_cluster(&service.cluster, address)
                        .map_err(|e| Failure::Usage(format!("`--rls-address`: {e}")))?,
                );
            }
            text
        }
        "istio" => {
            let selector = a
                .values("selector")
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            Failure::Usage(format!("`--selector {s}`: expected key=value"))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            render::istio(
                &value,
                a.value("name").unwrap_or("tollgate"),
                a.value("namespace"),
                a.value("url").unwrap_or(render::DEFAULT_OCI),
                &selector,
            )
        }
        "envoy-gateway" => {
            let code = render::wasm_code(
                a.value("url").unwrap_or(render::DEFAULT_OCI),
                a.value("sha256"),
            )
            .map_err(Failure::Usage)?;
            let (kind, target) =
                render::target_ref(a.value("target-ref").unwrap_or(render::DEFAULT_TARGET))
                    .map_err(Failure::Usage)?;
            render::envoy_gateway(
                &value,
                a.value("name").unwrap_or("tollgate"),
                a.value("namespace"),
                &code,
                (kind, &target),
            )
        }
        other => {
            return usage(format!(
                "cannot render `{other}`; expected `envoy`, `istio` or `envoy-gateway`"
            ))
        }
    };
    print(out, &text)
}

fn cmd_token(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["key", "hmac-secret", "alg", "kid", "claim", "ttl", "now"],
            flags: &[],
            short: &[],
        },
    )?;
    if !a.positional.is_empty() {
        return usage("token takes no file names; use `--key PEM`");
    }
    let key = match (a.value("key"), a.value("hmac-secret")) {
        (Some(file), None) => keys::SigningKey::Pem(
            std::fs::read_to_string(file).map_err(|e| error(format!("{file}: {e}")))?,
        ),
        (None, Some(secret)) => keys::SigningKey::Hmac(secret.as_bytes().to_vec()),
        _ => return usage("give exactly one of `--key PEM`, `--hmac-secret TEXT`"),
    };
    let alg = match a.value("alg") {
        Some(s) => crate::jwt::Alg::parse(s)
            .ok_or_else(|| Failure::Usage(format!("`{s}` is not an algorithm")))?,
        None => keys::default_alg(&key).map_err(error)?,
    };
    let ttl: i64 = match a.value("ttl") {
        Some(t) => t
            .parse()
            .map_err(|_| Failure::Usage(format!("`--ttl {t}`: expected seconds")))?,
        None => 3600,
    };
    let mut claims = serde_json::Map::new();
    for c in a.values("claim") {
        let (k, v) = keys::parse_claim(c).map_err(Failure::Usage)?;
        claims.insert(k, v);
    }
    let now = now_arg(&a)? / 1000;
    let token = keys::sign(
        &key,
        alg,
        a.value("kid"),
        &keys::with_times(&claims, now, ttl),
    )
    .map_err(error)?;
    print(out, &format!("{token}\n"))
}

fn cmd_sign(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &[
                "key",
                "request",
                "authority",
                "header",
                "body",
                "data",
                "component",
                "nonce",
                "now",
                "expires-in",
                "tag",
                "label",
            ],
            flags: &["https", "no-nonce"],
            short: &[("-H", "--header"), ("-X", "--request")],
        },
    )?;
    let Some(key) = a.value("key") else {
        return usage("`--key JWK` (a file with a private JWK) is required");
    };
    let Some(line) = a.value("request") else {
        return usage("`--request 'METHOD /path'` is required");
    };
    let (method, path) = request::Spec::parse_line(line).map_err(Failure::Usage)?;
    let mut headers = a
        .values("header")
        .iter()
        .map(|h| request::parse_header(h))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    match a.value("authority") {
        Some(host) => headers.push(("host".into(), host.to_string())),
        None if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) => {}
        // `@authority` is signed: it must be what the client will send.
        None => return usage("`--authority HOST[:PORT]` (as the client will send it) is required"),
    }
    let nonce = match (a.value("nonce"), a.flag("no-nonce")) {
        (Some(_), true) => return usage("give `--nonce` or `--no-nonce`, not both"),
        (Some(n), false) => Some(n.to_string()),
        (None, true) => None,
        (None, false) => Some(sign::random_nonce().map_err(error)?),
    };
    let created = now_arg(&a)? / 1000;
    let expires = match a.value("expires-in") {
        Some(s) => Some(
            created
                .saturating_add(s.parse::<u64>().map_err(|_| {
                    Failure::Usage(format!("`--expires-in {s}`: expected seconds"))
                })?),
        ),
        None => None,
    };
    let given = a.values("component");
    let components: Vec<String> = if given.is_empty() {
        sign::DEFAULT_COMPONENTS
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        given.iter().map(|c| c.to_string()).collect()
    };
    let options = sign::Options {
        key: sign::read_key(std::path::Path::new(key)).map_err(error)?,
        components,
        label: a.value("label").unwrap_or("sig1").to_string(),
        created,
        expires,
        nonce,
        keyid: None,
        tag: a.value("tag").map(String::from),
        digest: true,
    };
    let before = headers.len();
    let mut spec = request::Spec {
        method,
        path,
        headers,
        body: body_arg(&a, "")?,
        // Only the scheme matters here: `https` makes `@scheme` and `@target-uri` say so.
        connection: a.flag("https").then(crate::engine::Connection::default),
        ..request::Spec::default()
    };
    sign::sign(&mut spec, &options).map_err(error)?;
    let added: String = spec
        .headers
        .get(before..)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    print(out, &added)
}

fn cmd_api_key(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["id", "scopes", "days"],
            flags: &[],
            short: &[],
        },
    )?;
    let Some(id) = a.value("id") else {
        return usage("`--id ID` is required");
    };
    let scopes: Vec<String> = a
        .value("scopes")
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    let days: u64 = match a.value("days") {
        Some(d) => d
            .parse()
            .map_err(|_| Failure::Usage(format!("`--days {d}`: expected a number")))?,
        None => 90,
    };
    let key = keys::new_api_key().map_err(error)?;
    let expires = (days > 0).then(|| request::now_ms() / 1000 + days.saturating_mul(86_400));
    print(
        out,
        &format!(
            "key:         {key}\npolicy line: {}\n",
            keys::api_key_line(id, &key, &scopes, expires)
        ),
    )
}

fn cmd_jwk(args: &[String], out: Out<'_>) -> Result<u8> {
    let a = parse(
        args,
        &ArgSpec {
            options: &["kid", "alg"],
            flags: &[],
            short: &[],
        },
    )?;
    let [file] = a.positional.as_slice() else {
        return usage("name one PEM file");
    };
    let pem = std::fs::read_to_string(file).map_err(|e| error(format!("{file}: {e}")))?;
    let alg = match a.value("alg") {
        Some(s) => Some(
            crate::jwt::Alg::parse(s)
                .ok_or_else(|| Failure::Usage(format!("`{s}` is not an algorithm")))?,
        ),
        None => None,
    };
    let jwk = keys::jwk(&pem, a.value("kid"), alg).map_err(error)?;
    print(out, &format!("{jwk}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> (u8, String, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// `--repeat` sends a synthetic history first: the 20th unknown path from one address trips
    /// `enumeration` (report only) in policies/detection.json.
    #[test]
    fn explain_with_a_history_shows_the_detector() {
        let root = env!("CARGO_MANIFEST_DIR");
        let policy = format!("{root}/policies/detection.json");
        let explain = |repeat: &str| {
            let (code, out, err) = run_args(&[
                "explain",
                &policy,
                "--request",
                "GET /admin",
                "--repeat",
                repeat,
                "--interval-ms",
                "100",
                "--json",
            ]);
            assert_eq!(code, OK, "{err}");
            serde_json::from_str::<Value>(&out).unwrap()
        };
        let t = explain("20");
        assert_eq!(t["decision"]["code"], "route_not_found");
        let metrics = t["decision"]["metrics"].to_string();
        assert!(
            metrics.contains("tollgate.detection.enumeration +1"),
            "{metrics}"
        );
        let logs = t["decision"]["logs"].to_string();
        assert!(
            logs.contains("detection `enumeration` caller=`ip:127.0.0.1` action=report: 20 of 20"),
            "{logs}"
        );
        // One request fewer: nothing trips.
        let t = explain("19");
        assert!(!t["decision"]["metrics"].to_string().contains("detection"));
        assert_eq!(
            run_args(&["explain", &policy, "--request", "GET /", "--repeat", "0"]).0,
            USAGE
        );
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(run_args(&[]).0, USAGE);
        let (code, _, err) = run_args(&["frobnicate"]);
        assert_eq!(code, USAGE);
        assert!(err.contains("unknown command `frobnicate`"), "{err}");
        assert_eq!(run_args(&["check"]).0, USAGE);
        assert_eq!(run_args(&["explain", "p.json"]).0, USAGE);
        assert_eq!(run_args(&["help"]).0, OK);
    }

    #[test]
    fn token_then_explain() {
        let root = env!("CARGO_MANIFEST_DIR");
        let key = format!("{root}/envoy/demo/demo-signing-key.pem");
        let (code, token, err) = run_args(&[
            "token",
            "--key",
            &key,
            "--kid",
            "demo-1",
            "--claim",
            "iss=https://demo.tollgate.local",
            "--claim",
            "aud=demo-api",
            "--claim",
            "sub=bob",
            "--ttl",
            "60",
        ]);
        assert_eq!(code, OK, "{err}");
        let auth = format!("authorization: Bearer {}", token.trim());
        let policy = format!("{root}/policies/demo.json");
        let (code, out, err) = run_args(&[
            "explain",
            &policy,
            "--request",
            "GET /api/orders",
            "-H",
            &auth,
        ]);
        assert_eq!(code, OK, "{err}");
        assert!(
            out.contains("ALLOW  route=api  principal=jwt:demo:bob"),
            "{out}"
        );
        assert!(out.contains("upstream   set x-user-id: bob"), "{out}");

        // The upstream's answer: the demo policy checks none, so it goes on as sent.
        let (code, out, err) = run_args(&[
            "explain",
            &policy,
            "--request",
            "GET /api/orders",
            "-H",
            &auth,
            "--response-status",
            "404",
            "--response-header",
            "content-type: application/json",
            "--response-data",
            r#"{"title": "no orders"}"#,
            "--json",
        ]);
        assert_eq!(code, OK, "{err}");
        let t: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(t["response"]["status"], 404);
        assert_eq!(t["decision"]["response_status"], 404);
        assert_eq!(t["decision"]["delivered"]["how"], "upstream");
        assert_eq!(t["decision"]["delivered"]["body"]["title"], "no orders");
        for bad in [
            &["--response-status", "99"][..],
            &["--response-status", "ok"],
            &["--response-body", "f", "--response-data", "x"],
        ] {
            let mut args = vec!["explain", &policy, "--request", "GET /health"];
            args.extend_from_slice(bad);
            assert_eq!(run_args(&args).0, USAGE, "{bad:?}");
        }
    }
}
