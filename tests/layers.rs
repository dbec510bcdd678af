//! No import circles between the files of `src/`: a file-level module graph built from the paths
//! the code names (`use crate::..`, `super::..`, `self::..`, a child module's name, and the same
//! paths written inline), checked for strongly connected components.
//!
//! Rules, kept simple on purpose (a circle check, not a name resolver):
//! - one node per file (`engine/mod.rs` is `engine`, `engine/request.rs` is `engine::request`);
//!   test-only code is left out (`tests*.rs`, `testkit.rs`, `#[cfg(test)]` items);
//! - a path points at the longest module prefix it names (`crate::engine::request::Request` is
//!   `engine::request`, `crate::engine::Denial` is `engine`): import from the file that defines
//!   an item to stay off a facade;
//! - a module's `pub use` of its own descendants is its facade, not a dependency (`engine`
//!   re-exporting `decision::Denial` does not make `engine` depend on `decision`); any other
//!   `use` of a child does.

// clippy.toml allows these in `#[test]` functions only; the helpers below are test code as well,
// never on a request path.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Module = Vec<String>;
type Graph = BTreeMap<Module, BTreeSet<Module>>;

/// Circles known and not yet broken, each as its sorted module names. INVARIANT: exactly the
/// circles the graph has, so an entry is removed the moment its circle is gone. None today.
const KNOWN: &[&[&str]] = &[];

#[test]
fn src_has_no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    assert!(files.len() > 20, "found only {} files in src/", files.len());
    let found = circles(&graph(&files));
    let known: Vec<Vec<String>> = KNOWN
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let report = |cs: &[Vec<String>]| -> String {
        cs.iter()
            .map(|c| format!("  {}\n", c.join(" <-> ")))
            .collect()
    };
    assert!(
        found == known,
        "import circles in src/ (modules that reach each other through `use` paths):\n{}\
         known (KNOWN in tests/layers.rs):\n{}\
         break a new circle by moving the item that both sides need to the lower module; drop \
         an entry of KNOWN once its circle is gone",
        report(&found),
        report(&known)
    );
}

#[test]
fn a_planted_circle_is_found_and_a_facade_is_not_one() {
    let files = vec![
        ("a/mod.rs".to_string(), "pub use b::B; mod b;".to_string()),
        // `super::` reaches `a`; `a`'s re-export of `b` is no dependency.
        (
            "a/b.rs".to_string(),
            "use super::A; pub struct B;".to_string(),
        ),
        (
            "c.rs".to_string(),
            "use crate::{a::b::B, d::{self, D}};\n// use crate::e;\nfn f() { \"crate::e\"; }"
                .to_string(),
        ),
        (
            "d.rs".to_string(),
            "fn g() { crate::c::f(); }\n#[cfg(test)]\nmod tests { use crate::e::E; }".to_string(),
        ),
        ("e.rs".to_string(), "use crate::a::A;".to_string()),
    ];
    assert_eq!(
        circles(&graph(&files)),
        vec![vec!["c".to_string(), "d".to_string()]]
    );
}

/// `(path relative to src/, text)` of every file that ships.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            // The binary is a separate crate that names `tollgate::`, never `crate::`.
            if rel != "bin" {
                collect(root, &path, out);
            }
        } else if name.ends_with(".rs") && !name.starts_with("tests") && name != "testkit.rs" {
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}

fn module_of(rel: &str) -> Module {
    let mut parts: Module = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<Module> = files.iter().map(|(rel, _)| module_of(rel)).collect();
    let mut graph = Graph::new();
    for (rel, text) in files {
        let here = module_of(rel);
        let code = drop_cfg_test(&strip(text));
        let mut edges = BTreeSet::new();
        let mut add = |path: &str, facade: bool| {
            if let Some(to) = resolve(&modules, &here, path) {
                let own_descendant = to.len() > here.len() && to.starts_with(&here);
                if to != here && !(facade && own_descendant) {
                    edges.insert(to);
                }
            }
        };
        let mut rest = code.as_str();
        let mut outside_use = String::new();
        while let Some(at) = find_word(rest, "use") {
            let (before, after) = rest.split_at(at);
            outside_use.push_str(before);
            let Some(end) = after.find(';') else { break };
            let public = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
            for path in expand(&after[3..end]) {
                add(&path, public);
            }
            rest = &after[end + 1..];
        }
        outside_use.push_str(rest);
        let children: Vec<&str> = modules
            .iter()
            .filter(|m| m.len() == here.len() + 1 && m.starts_with(&here))
            .filter_map(|m| m.last().map(String::as_str))
            .collect();
        for path in inline_paths(&outside_use, &children) {
            add(&path, false);
        }
        graph.insert(here, edges);
    }
    graph
}

/// The module a path names: its longest prefix that is a file, or `None` for paths outside the
/// crate (`std::..`, `serde::..`).
fn resolve(modules: &BTreeSet<Module>, here: &Module, path: &str) -> Option<Module> {
    let segs: Vec<&str> = path
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut full: Module = match segs.first().copied() {
        Some("crate") => Vec::new(),
        Some("super" | "self") => here.clone(),
        Some(first) if modules.contains(&[here.clone(), vec![first.to_string()]].concat()) => {
            here.clone()
        }
        _ => return None,
    };
    let mut rest = segs.iter().peekable();
    if segs.first() == Some(&"crate") {
        rest.next();
    }
    while let Some(seg) = rest.peek() {
        match **seg {
            "super" => {
                full.pop();
            }
            "self" => {}
            _ => break,
        }
        rest.next();
    }
    full.extend(rest.map(|s| s.to_string()));
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// `a::{b, c::{d as e, self}}` as `a::b`, `a::c::d`, `a::c::self`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let plain = tree.split(" as ").next().unwrap_or(tree).trim();
        return if plain.is_empty() {
            vec![]
        } else {
            vec![plain.to_string()]
        };
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let (prefix, inner) = (&tree[..open], &tree[open + 1..close]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .flat_map(expand)
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Paths written in expressions and types: `crate::a::b`, `super::c`, `self::d`, `child::e`.
fn inline_paths(code: &str, children: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for head in ["crate", "super", "self"].iter().chain(children) {
        let mut from = 0;
        while let Some(at) = find_word(&code[from..], head) {
            let start = from + at;
            let mut end = start + head.len();
            let preceded = code.get(..start).is_some_and(|b| b.ends_with("::"));
            while code[end..].trim_start().starts_with("::") {
                let after = end + code[end..].find("::").unwrap_or(0) + 2;
                let ident = code[after..]
                    .trim_start()
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                if ident.is_empty() {
                    break;
                }
                end = after + code[after..].find(ident).unwrap_or(0) + ident.len();
            }
            if !preceded && end > start + head.len() {
                out.push(code[start..end].to_string());
            }
            from = end.max(start + 1);
        }
    }
    out
}

/// Byte offset of `word` standing alone (not part of a longer identifier).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        if !is_ident(text[..start].chars().next_back()) && !is_ident(text[end..].chars().next()) {
            return Some(start);
        }
        from = end;
    }
    None
}

/// The code without comments, string contents and character literals.
fn strip(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    while let Some(&c) = chars.get(i) {
        let prev_ident = i > 0
            && chars
                .get(i - 1)
                .is_some_and(|p| p.is_alphanumeric() || *p == '_');
        if at(i, "//") {
            while chars.get(i).is_some_and(|c| *c != '\n') {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < chars.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b') && !prev_ident && raw_string_start(&chars, i).is_some() {
            let (open_len, hashes) = raw_string_start(&chars, i).unwrap_or((1, 0));
            let close: String = std::iter::once('"')
                .chain((0..hashes).map(|_| '#'))
                .collect();
            i += open_len;
            while i < chars.len() && !at(i, &close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while let Some(&c) = chars.get(i) {
                i += if c == '\\' { 2 } else { 1 };
                if c == '"' {
                    break;
                }
            }
            out.push_str("\"\"");
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            i += char_literal_len(&chars, i).unwrap_or(1);
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `(length of the opening, number of #)` of a raw string starting at `i` (`r"`, `r#"`, `br"`).
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut k = i;
    if chars.get(k) == Some(&'b') {
        k += 1;
    }
    if chars.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let hashes = chars[k..].iter().take_while(|c| **c == '#').count();
    (chars.get(k + hashes) == Some(&'"')).then_some((k + hashes + 1 - i, hashes))
}

/// Length of a character literal at `i` (`'a'`, `'\n'`, `'\u{1F600}'`); `None` for a lifetime.
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            let close = chars[i + 2..].iter().take(10).position(|c| *c == '\'')?;
            Some(close + 3)
        }
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(3),
    }
}

/// The code without `#[cfg(test)]` items (a `mod tests { .. }`, a `use`, a function).
fn drop_cfg_test(code: &str) -> String {
    let mut code = code.to_string();
    while let Some(at) = code.find("#[cfg(test)]") {
        let after = at + "#[cfg(test)]".len();
        let brace = code[after..].find('{').map(|k| after + k);
        let semi = code[after..].find(';').map(|k| after + k);
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (None, Some(s)) => s + 1,
            (Some(b), _) => {
                let mut depth = 0;
                let mut end = code.len();
                for (k, ch) in code[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, None) => code.len(),
        };
        code.replace_range(at..end, "");
    }
    code
}

/// Strongly connected components with more than one module, each sorted, by name.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&Module, BTreeSet<Module>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: BTreeSet<Vec<String>> = BTreeSet::new();
    for (m, r) in &reaches {
        let component: Vec<String> = r
            .iter()
            .filter(|o| reaches.get(o).is_some_and(|back| back.contains(*m)))
            .map(|o| o.join("::"))
            .collect();
        if component.len() > 1 {
            out.insert(component);
        }
    }
    out.into_iter().collect()
}
