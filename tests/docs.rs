//! The documentation against the code, so that it cannot drift: every policy snippet in every
//! Markdown file compiles (or fails with the error it shows), the metrics and denial-code tables
//! list what `src/codes.rs` defines, the make-target list is what `make help` prints, and every
//! relative link points at a file and heading that exist. The snippet convention is described in
//! tests/README.md, "Documentation tests".

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use tollgate::codes::{Counter, DenialCode, Reason};
use tollgate::engine::Engine;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every Markdown file of the repository, outside build output, tools and hidden folders.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "corpus") {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(ROOT), &mut out);
    out.sort();
    assert!(out.len() >= 4, "found only {out:?}");
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(ROOT).unwrap().display().to_string()
}

/// A fenced code block: its info string, its text, the line its fence is on (1-based), and the
/// line just before the fence (where a snippet's marker goes).
struct Block {
    lang: String,
    text: String,
    line: usize,
    marker: Option<String>,
}

fn blocks(doc: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let marker = i
                .checked_sub(1)
                .map(|p| lines[p].trim())
                .and_then(|p| p.strip_prefix("<!--"))
                .and_then(|p| p.strip_suffix("-->"))
                .map(|p| p.trim().to_string());
            let start = i;
            let mut text = String::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                text.push_str(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                text.push('\n');
                i += 1;
            }
            out.push(Block {
                lang: info.trim().to_string(),
                text,
                line: start + 1,
                marker,
            });
        }
        i += 1;
    }
    out
}

/// What the marker before a snippet asks for. See tests/README.md, "Documentation tests".
enum Snippet {
    /// No marker, or `<!-- policy -->`: a whole policy.
    Policy,
    /// `<!-- part of FILE -->`: top-level members that replace FILE's.
    Part { base: String, copied: bool },
    /// `<!-- route in FILE -->`: one route, which replaces FILE's routes.
    Route { base: String, copied: bool },
    /// `<!-- fails: MESSAGE -->`: a whole policy that must be refused with MESSAGE.
    Fails(String),
    /// `<!-- envoy-config -->`: Envoy YAML whose every `configuration.value` is a policy.
    EnvoyConfig,
    /// `<!-- not-a-policy -->`: a body, a response, anything that is not a policy.
    NotAPolicy,
    /// `<!-- cases for FILE -->`: a case file (YAML) whose every case passes against FILE.
    Cases(String),
}

fn parse_marker(marker: Option<&str>) -> Result<Snippet, String> {
    let Some(m) = marker else {
        return Ok(Snippet::Policy);
    };
    let base = |rest: &str| rest.trim().to_string();
    Ok(if m == "policy" {
        Snippet::Policy
    } else if m == "not-a-policy" {
        Snippet::NotAPolicy
    } else if m == "envoy-config" {
        Snippet::EnvoyConfig
    } else if let Some(msg) = m.strip_prefix("fails:") {
        Snippet::Fails(msg.trim().to_string())
    } else if let Some(rest) = m.strip_prefix("part of ") {
        Snippet::Part {
            base: base(rest),
            copied: false,
        }
    } else if let Some(rest) = m.strip_prefix("part copied from ") {
        Snippet::Part {
            base: base(rest),
            copied: true,
        }
    } else if let Some(rest) = m.strip_prefix("cases for ") {
        Snippet::Cases(base(rest))
    } else if let Some(rest) = m.strip_prefix("route in ") {
        Snippet::Route {
            base: base(rest),
            copied: false,
        }
    } else if let Some(rest) = m.strip_prefix("route copied from ") {
        Snippet::Route {
            base: base(rest),
            copied: true,
        }
    } else {
        return Err(format!("unknown marker `<!-- {m} -->`"));
    })
}

/// JSON text, or YAML through the command-line tool's own loader (as `tollgate check` reads it).
fn load(lang: &str, text: &str) -> Result<Value, String> {
    let name = if lang == "yaml" {
        "snippet.yaml"
    } else {
        "snippet.json"
    };
    tollgate::cli::source::Document::parse(name, text.to_string())
        .map(|d| d.value)
        .map_err(|e| format!("cannot be read: {}", e.message))
}

/// The policy format's JSON Schema (policies/tollgate-policy.schema.json), compiled by boon.
fn policy_schema() -> &'static (boon::Schemas, boon::SchemaIndex) {
    static SCHEMA: std::sync::OnceLock<(boon::Schemas, boon::SchemaIndex)> =
        std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let file = Path::new(ROOT).join("policies/tollgate-policy.schema.json");
        let schema: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
        let id = schema["$id"].as_str().unwrap().to_string();
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(&id, schema).unwrap();
        let mut schemas = boon::Schemas::new();
        let index = compiler.compile(&id, &mut schemas).unwrap();
        (schemas, index)
    })
}

/// A policy that compiles, and is valid under the format's JSON Schema too.
fn compile_valid(policy: &Value) -> Result<(), String> {
    compile(policy)?;
    let (schemas, index) = policy_schema();
    schemas
        .validate(policy, *index)
        .map_err(|e| format!("compiles, but breaks tollgate-policy.schema.json: {e:#}"))
}

fn compile(policy: &Value) -> Result<(), String> {
    Engine::compile(policy.to_string().as_bytes())
        .map(|_| ())
        .map_err(|errors| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        })
}

fn base_policy(file: &str) -> Result<Value, String> {
    let text = fs::read_to_string(Path::new(ROOT).join(file))
        .map_err(|e| format!("base policy `{file}`: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("base policy `{file}`: {e}"))
}

/// `part` is in `whole`: every member of an object is in the same member of the other; an array
/// of objects has each element in some element of the other; anything else is equal.
fn contained(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => p
            .iter()
            .all(|(k, v)| w.get(k).is_some_and(|wv| contained(v, wv))),
        (Value::Array(p), Value::Array(w)) if p.iter().all(Value::is_object) => {
            p.iter().all(|pv| w.iter().any(|wv| contained(pv, wv)))
        }
        _ => part == whole,
    }
}

/// The policies an Envoy config snippet carries: each `configuration.value`, a policy object
/// (`google.protobuf.Struct`) or its JSON text (`StringValue`).
fn envoy_policies(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if let Some(value) = map.get("configuration").and_then(|c| c.get("value")) {
                match value {
                    Value::String(text) => {
                        out.push(serde_json::from_str(text).unwrap_or(Value::Null))
                    }
                    other => out.push(other.clone()),
                }
            }
            map.values().for_each(|v| envoy_policies(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| envoy_policies(v, out)),
        _ => {}
    }
}

/// Runs a case file snippet against the policy `file` (key paths relative to its directory), as
/// `tollgate test` does; every case must pass.
fn run_cases(text: &str, file: &str) -> Result<(), String> {
    use tollgate::cli::{cases, request, source::Document};
    let policy = Path::new(ROOT).join(file);
    let bytes = fs::read(&policy).map_err(|e| format!("policy `{file}`: {e}"))?;
    let engine = Engine::compile(&bytes).map_err(|e| format!("policy `{file}`: {e:?}"))?;
    let doc = Document::parse("snippet.cases.yaml", text.to_string())
        .map_err(|e| format!("cannot be read: {}", e.message))?;
    let case_file: cases::CaseFile =
        serde_json::from_value(doc.value.clone()).map_err(|e| format!("not a case file: {e}"))?;
    let base = policy.parent().unwrap_or(Path::new(ROOT));
    let results =
        cases::run(&engine, &doc, &case_file, base, request::now_ms()).map_err(|e| e.0)?;
    if results.iter().all(cases::Outcome::passed) {
        Ok(())
    } else {
        Err(cases::render_text("snippet", &results))
    }
}

fn check_snippet(block: &Block) -> Result<(), String> {
    let kind = parse_marker(block.marker.as_deref())?;
    if matches!(kind, Snippet::NotAPolicy) {
        return Ok(());
    }
    if let Snippet::Cases(file) = &kind {
        return run_cases(&block.text, file);
    }
    let snippet = load(&block.lang, &block.text)?;
    match kind {
        Snippet::NotAPolicy | Snippet::Cases(_) => Ok(()),
        Snippet::Policy => compile_valid(&snippet),
        Snippet::Fails(want) => match compile(&snippet) {
            Ok(()) => Err(format!("compiles, but should fail with: {want}")),
            Err(got) if got.contains(&want) => Ok(()),
            Err(got) => Err(format!("fails with\n  {got}\nnot with: {want}")),
        },
        Snippet::Part { base, copied } => {
            let file = base_policy(&base)?;
            let Value::Object(members) = &snippet else {
                return Err("a policy part must be a JSON object".into());
            };
            if copied && !contained(&snippet, &file) {
                return Err(format!("says it is copied from {base}, but {base} differs"));
            }
            let mut policy = file;
            for (k, v) in members {
                policy[k] = v.clone();
            }
            compile_valid(&policy)
        }
        Snippet::Route { base, copied } => {
            let file = base_policy(&base)?;
            let routes = file["routes"].as_array().cloned().unwrap_or_default();
            if copied && !routes.iter().any(|r| contained(&snippet, r)) {
                return Err(format!(
                    "says it is a route of {base}, but no route matches"
                ));
            }
            let mut policy = file;
            policy["routes"] = Value::Array(vec![snippet]);
            compile_valid(&policy)
        }
        Snippet::EnvoyConfig => {
            let mut found = Vec::new();
            envoy_policies(&snippet, &mut found);
            if found.is_empty() {
                return Err("no `configuration.value` in this Envoy config".into());
            }
            found.iter().try_for_each(compile_valid)
        }
    }
}

#[test]
fn every_policy_snippet_compiles() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let doc = fs::read_to_string(&file).unwrap();
        for block in blocks(&doc) {
            // Every ```json block is a policy unless marked; other languages only when marked.
            let marked = block.marker.is_some();
            if !(block.lang == "json" || (block.lang == "yaml" && marked)) {
                continue;
            }
            checked += 1;
            if let Err(e) = check_snippet(&block) {
                failures.push(format!("{}:{}: {e}", relative(&file), block.line));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "policy snippets in the docs:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 15, "only {checked} snippets found");
}

/// The lines of the first table after `heading` in `doc`.
fn table_after<'d>(doc: &'d str, heading: &str) -> Vec<&'d str> {
    let start = doc
        .lines()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("no heading `{heading}`"));
    doc.lines()
        .skip(start)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .collect()
}

/// The text between the first pair of backticks of a table row's first cell.
fn first_cell_code(row: &str) -> &str {
    let cell = row.split('|').nth(1).unwrap_or("").trim();
    cell.split('`').nth(1).unwrap_or(cell)
}

/// The metric names `src/codes.rs` defines, written as the metrics table writes them (`<code>`,
/// `<route>`, `<reason>` for the parts a counter is made of): every [`Counter`] and the families.
fn defined_metrics() -> Vec<String> {
    use tollgate::codes::metrics::*;
    let mut names: Vec<String> = Counter::ALL.iter().map(|c| c.name().to_string()).collect();
    names.push(format!("{REQUESTS_DENIED_PREFIX}.<code>"));
    names.push(format!("{REQUESTS_DRY_RUN_PREFIX}.<code>"));
    names.push(format!("{ROUTE_PREFIX}.<route>.{ROUTE_ALLOWED}"));
    names.push(format!("{ROUTE_PREFIX}.<route>.{ROUTE_DENIED}.<reason>"));
    names.push(format!("{ROUTE_PREFIX}.<route>.{ROUTE_DRY_RUN}.<reason>"));
    names
}

/// `name` is a counter `pattern` stands for: `<code>` a denial code, `<reason>` a reason,
/// `<route>` a route's counter name (letters, digits, `-`, `_`).
fn instance_of(name: &str, pattern: &str) -> bool {
    if name == pattern {
        return true;
    }
    let (n, p): (Vec<&str>, Vec<&str>) = (name.split('.').collect(), pattern.split('.').collect());
    n.len() == p.len()
        && n.iter().zip(&p).all(|(n, p)| match *p {
            "<code>" => DenialCode::ALL
                .iter()
                .any(|c| c.refusal() && c.as_str() == *n),
            "<reason>" => Reason::ALL.iter().any(|r| r.as_str() == *n),
            "<route>" => {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }
            literal => literal == *n,
        })
}

#[test]
fn metrics_table_lists_every_metric_and_nothing_else() {
    let doc = fs::read_to_string(Path::new(ROOT).join("envoy/README.md")).unwrap();
    let rows = table_after(&doc, "### Metrics");
    let listed: BTreeSet<&str> = rows.iter().map(|r| first_cell_code(r)).collect();
    let defined = defined_metrics();
    for name in &defined {
        assert!(
            listed.contains(name.as_str()),
            "envoy/README.md, Metrics: no row for `{name}`"
        );
    }
    for name in &listed {
        assert!(
            defined.iter().any(|d| d == name),
            "envoy/README.md, Metrics: `{name}` is not a metric of src/codes.rs"
        );
    }
    // Names given as examples anywhere in the table must be counters the code can write.
    for row in rows {
        for name in row.split('`').skip(1).step_by(2) {
            if name.starts_with("tollgate.") {
                assert!(
                    defined.iter().any(|d| instance_of(name, d)),
                    "envoy/README.md, Metrics: `{name}` is not a metric of src/codes.rs"
                );
            }
        }
    }
}

/// The reverse of `codes::tests::readme_lists_every_code`: the table names no code that does not
/// exist.
#[test]
fn denial_code_table_names_only_codes() {
    let doc = fs::read_to_string(Path::new(ROOT).join("policies/README.md")).unwrap();
    let rows = table_after(&doc, "## Responses");
    assert_eq!(rows.len(), DenialCode::ALL.len(), "one row per code");
    for row in rows {
        let code = first_cell_code(row);
        assert!(
            DenialCode::ALL.iter().any(|c| c.as_str() == code),
            "policies/README.md, Responses: `{code}` is not a denial code"
        );
    }
}

/// tests/README.md's list of make targets is what `make help` prints.
#[test]
fn make_targets_are_listed_as_make_help_prints_them() {
    let makefile = fs::read_to_string(Path::new(ROOT).join("Makefile")).unwrap();
    // As `make help` does: grep '^[a-z0-9-]+:.*## ', then "  make %-12s %s".
    let help: Vec<String> = makefile
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            let (_, desc) = rest.rsplit_once("## ")?;
            ok.then(|| format!("  make {name:<12} {desc}"))
        })
        .collect();
    let doc = fs::read_to_string(Path::new(ROOT).join("tests/README.md")).unwrap();
    let listed: Vec<String> = doc
        .split("## Make targets")
        .nth(1)
        .and_then(|s| s.split("```text\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("tests/README.md has no make-target list")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, help,
        "tests/README.md, Make targets: run `make help`"
    );
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fence = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            let base = anchor(line.trim_start_matches('#'));
            let mut a = base.clone();
            let mut n = 0;
            while out.contains(&a) {
                n += 1;
                a = format!("{base}-{n}");
            }
            out.insert(a);
        }
    }
    out
}

/// Relative links point at files that exist, and `#anchors` at headings that exist; no link
/// leaves the repository.
#[test]
fn relative_links_resolve() {
    let mut failures = Vec::new();
    for file in markdown_files() {
        let doc = fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        let mut fence = false;
        for (n, line) in doc.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fence = !fence;
                continue;
            }
            if fence {
                continue;
            }
            for piece in line.split("](").skip(1) {
                let target = piece.split(')').next().unwrap_or("");
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, frag) = target.split_once('#').unwrap_or((target, ""));
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    dir.join(path)
                };
                let at = format!("{}:{}: `{target}`", relative(&file), n + 1);
                let Ok(real) = resolved.canonicalize() else {
                    failures.push(format!("{at}: no such file"));
                    continue;
                };
                if !real.starts_with(Path::new(ROOT).canonicalize().unwrap()) {
                    failures.push(format!("{at}: outside the repository"));
                    continue;
                }
                if !frag.is_empty() {
                    let target_doc = fs::read_to_string(&real).unwrap_or_default();
                    if !anchors(&target_doc).contains(frag) {
                        failures.push(format!("{at}: no heading `#{frag}`"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "broken links:\n{}",
        failures.join("\n")
    );
}
