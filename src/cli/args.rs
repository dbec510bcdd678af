//! Command-line arguments: a small parser for `--name value`, `--name=value`, `-H value`, flags and
//! positionals. Hand-written: the tool has six subcommands with a few options each.

use std::collections::BTreeMap;

/// Parsed arguments of one subcommand.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    /// Every value of each option, in order (`-H` may repeat).
    values: BTreeMap<String, Vec<String>>,
    flags: Vec<String>,
}

/// What a subcommand accepts: options that take a value, and flags. Short names map to long ones.
pub struct Spec<'a> {
    pub options: &'a [&'a str],
    pub flags: &'a [&'a str],
    pub short: &'a [(&'a str, &'a str)],
}

impl Args {
    pub fn parse(args: &[String], spec: &Spec<'_>) -> Result<Args, String> {
        let mut out = Args::default();
        let mut iter = args.iter();
        let mut only_positional = false;
        while let Some(arg) = iter.next() {
            if only_positional || arg == "-" || !arg.starts_with('-') {
                out.positional.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_positional = true;
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let long = spec
                .short
                .iter()
                .find(|(s, _)| *s == name)
                .map_or(name.clone(), |(_, l)| (*l).to_string());
            let bare = long.trim_start_matches('-');
            if spec.flags.contains(&bare) {
                if inline.is_some() {
                    return Err(format!("`{long}` takes no value"));
                }
                out.flags.push(bare.to_string());
            } else if spec.options.contains(&bare) {
                let value = match inline {
                    Some(v) => v,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("`{long}` needs a value"))?,
                };
                out.values.entry(bare.to_string()).or_default().push(value);
            } else {
                return Err(format!("unknown option `{name}`"));
            }
        }
        Ok(out)
    }

    /// The last value of `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_flags_and_positionals() {
        let spec = Spec {
            options: &["request", "header"],
            flags: &["json"],
            short: &[("-H", "--header")],
        };
        let a = Args::parse(
            &strings(&[
                "p.json",
                "--request",
                "GET /x",
                "-H",
                "a: 1",
                "--header=b: 2",
                "--json",
                "--",
                "--odd",
            ]),
            &spec,
        )
        .unwrap();
        assert_eq!(a.positional, ["p.json", "--odd"]);
        assert_eq!(a.value("request"), Some("GET /x"));
        assert_eq!(a.values("header"), ["a: 1", "b: 2"]);
        assert!(a.flag("json"));
        assert!(Args::parse(&strings(&["--nope"]), &spec)
            .unwrap_err()
            .contains("unknown option `--nope`"));
        assert!(Args::parse(&strings(&["--request"]), &spec)
            .unwrap_err()
            .contains("needs a value"));
    }
}
