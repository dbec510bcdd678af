//! Replays the fuzz seeds (`tests/fuzz/seeds/<target>/`) and every input that once crashed a fuzz
//! target (`tests/fuzz/regressions/<target>/`) through the glue the cargo-fuzz targets call
//! (`tests/fuzz/src/lib.rs`), so that they stay covered in the normal `cargo test`, without
//! nightly.

// A test harness: panicking on an unreadable input file is the right outcome.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fuzz/src/lib.rs"]
mod glue;

use std::fs;
use std::path::Path;

/// Runs `target` on every file under `tests/fuzz/<kind>/<target>/`; returns how many ran.
fn replay(kind: &str, name: &str, target: glue::Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in &files {
        let bytes = fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| target(&bytes));
        assert!(outcome.is_ok(), "{} fails", file.display());
    }
    files.len()
}

fn run(name: &str) {
    let (_, target) = glue::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a target of that name");
    assert!(
        replay("seeds", name, *target) > 0,
        "no seeds for the `{name}` fuzz target"
    );
    replay("regressions", name, *target);
}

#[test]
fn tokens() {
    run("tokens");
}

#[test]
fn jwks() {
    run("jwks");
}

#[test]
fn policy() {
    run("policy");
}

#[test]
fn bodies() {
    run("bodies");
}

#[test]
fn paths() {
    run("paths");
}

/// Inputs that still break a property because the fix belongs to code the fuzzing work could not
/// change (`tests/fuzz/pending/<target>/`, each explained in `tests/fuzz/pending/README.md`).
/// Once fixed, an input passes and this test says to move it to `tests/fuzz/regressions/`.
#[test]
fn pending_findings_still_fail() {
    for (name, target) in glue::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/pending")
            .join(name);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for file in entries.map(|e| e.unwrap().path()) {
            let bytes = fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                outcome.is_err(),
                "{} passes now: move it to tests/fuzz/regressions/{name}/",
                file.display()
            );
        }
    }
}

#[test]
fn hosts() {
    run("hosts");
}

#[test]
fn json() {
    run("json");
}

#[test]
fn signatures() {
    run("signatures");
}

/// Every target in the glue has a test above (and a file in `tests/fuzz/fuzz_targets/`).
#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = glue::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "tokens",
            "jwks",
            "policy",
            "bodies",
            "paths",
            "hosts",
            "json",
            "signatures"
        ]
    );
    for name in names {
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
}
