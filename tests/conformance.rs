//! BuildKit's own conformance vectors, read from `../shared` at test time.
//!
//! - `parser/NAME/{Dockerfile,result}`: `rbuild debug dump-ast` must print
//!   `result` byte for byte (checked through the library and the binary).
//! - `parser-negative/NAME/Dockerfile`: must be rejected (exit code 2).
//! - `shell/envVarTest`, `shell/wordsTest`: the expander and word splitter.
//!
//! The vectors are not copied into this repository. When the folder is
//! missing the tests skip with a loud message, unless
//! `RBUILD_REQUIRE_CONFORMANCE=1` (set by `.ci/run`) makes that a failure.
//! `RBUILD_CONFORMANCE_DIR` points at another copy.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild::parser::{self, shell::Lexer};

fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RBUILD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/buildkit")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var("RBUILD_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "RBUILD_REQUIRE_CONFORMANCE=1 but the BuildKit vectors are missing at {}",
        dir.display()
    );
    // The suite's summary counts lines of this shape (scripts/test.sh).
    eprintln!(
        "\n*** skipping: BuildKit conformance vectors: {} not found \
         (set RBUILD_CONFORMANCE_DIR to run them) ***\n",
        dir.display()
    );
    None
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Prints how many cases ran and fails on any failure or too few cases.
/// Prints and checks one table's outcome: no failure, and exactly the
/// number of cases the README claims (a vector added or lost upstream
/// shows here, not as a silently different figure).
fn report(what: &str, checked: usize, claimed: usize, failures: &[String]) {
    println!("{what} checked: {checked}");
    assert!(
        failures.is_empty(),
        "{} {what} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        checked, claimed,
        "{what}: the README claims {claimed}, {checked} were checked"
    );
}

#[test]
fn parser_vectors_dump_exactly() {
    let Some(root) = vectors_dir() else { return };
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in subdirs(&root.join("parser")) {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        match parser::parse_raw(&source, "Dockerfile") {
            Ok(raw) => {
                let got = parser::dump(&raw);
                if got != expected {
                    failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
                }
            }
            Err(d) => failures.push(format!("{name}: rejected:\n{d}")),
        }
        // The same through the real binary.
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["debug", "dump-ast"])
            .arg(case.join("Dockerfile"))
            .output()
            .unwrap();
        if !out.status.success() || out.stdout != expected.as_bytes() {
            failures.push(format!(
                "{name}: binary exit {:?}, stdout differs: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        checked += 1;
    }
    report("parser vectors", checked, 33, &failures);
}

#[test]
fn negative_vectors_are_rejected() {
    let Some(root) = vectors_dir() else { return };
    let mut checked = 0;
    for case in subdirs(&root.join("parser-negative")) {
        let file = case.join("Dockerfile");
        let source = std::fs::read_to_string(&file).unwrap();
        let result = parser::parse_raw(&source, "Dockerfile");
        assert!(result.is_err(), "{} parsed but must fail", case.display());
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["debug", "dump-ast"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", case.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(":"),
            "diagnostic names a location: {stderr}"
        );
        checked += 1;
    }
    report("negative vectors", checked, 4, &[]);
}

#[test]
fn shell_env_var_vectors() {
    let Some(root) = vectors_dir() else { return };
    let text = std::fs::read_to_string(root.join("shell/envVarTest")).unwrap();
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: {line}", n + 1);
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if platform == "W" {
            continue;
        }
        let got = lex.process_word(input, env.as_slice());
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(v), e) => v == e && e != "error",
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
        checked += 1;
    }
    report("envVarTest cases", checked, 228, &failures);
}

#[test]
fn shell_words_vectors() {
    let Some(root) = vectors_dir() else { return };
    let text = std::fs::read_to_string(root.join("shell/wordsTest")).unwrap();
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (k, v) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let (input, expected) = line
            .split_once('|')
            .unwrap_or_else(|| panic!("line {}: {line}", n + 1));
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = match lex.process_words(input.trim(), env.as_slice()) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!(
                "line {}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
        checked += 1;
    }
    report("wordsTest cases", checked, 24, &failures);
}
