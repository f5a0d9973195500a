//! No function in `src/` is over [`LIMIT`] lines outside tests (issue 14):
//! a function longer than a screen hides its steps, and naming those steps
//! as functions is what makes them readable and testable on their own.
//!
//! Plain text reading, no compiler: a function runs from the line that
//! starts its `fn` to the first line that is only `}` at the `fn` line's
//! indentation (rustfmt's layout);
//! `#[cfg(test)]` items and `tests.rs` files are skipped; declarations
//! without a body and one-line functions are not counted.

mod common;

use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The most lines a function may have, its `fn` line and closing brace
/// included.
const LIMIT: usize = 100;

/// A function found in a source text.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    /// 1-based line of the `fn`.
    line: usize,
    /// Lines from the `fn` line to the closing brace, both included.
    lines: usize,
}

/// Every `.rs` file below `dir`, `tests.rs` files left out (they are tests).
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = common::rust_sources(dir);
    out.retain(|path| path.file_name().is_some_and(|n| n != "tests.rs"));
    out
}

/// The leading spaces and tabs of `line`.
fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// The name of the function `line` starts, if it starts one: `fn` after
/// any of `pub`, `pub(…)`, `const`, `async`, `unsafe`, `extern "…"`.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("fn ") {
            let r = r.trim_start();
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            return (end > 0).then(|| &r[..end]);
        }
        let word_end = rest.find([' ', '\t']).unwrap_or(rest.len());
        let word = &rest[..word_end];
        let qualifier = matches!(word, "pub" | "const" | "async" | "unsafe" | "extern")
            || word.starts_with("pub(")
            || word.starts_with('"');
        if !qualifier || word_end == rest.len() {
            return None;
        }
        rest = rest[word_end..].trim_start();
    }
}

/// Whether `line` is a `#[cfg(test)]` (or `#[cfg(all(test, …))]`)
/// attribute: the item after it is test-only.
fn is_cfg_test(line: &str) -> bool {
    let l = line.trim_start();
    [
        "#[cfg(test)",
        "#[cfg(test,",
        "#[cfg(all(test)",
        "#[cfg(all(test,",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// Every function of `text` with a body over one line, in order, nested
/// ones inside a counted function not listed apart (they count towards
/// their host).
fn functions(text: &str) -> Vec<Function> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if is_cfg_test(line) {
            i = skip_test_item(&lines, i + 1);
            continue;
        }
        if let Some(name) = fn_name(line) {
            if let Some(end) = function_end(&lines, i) {
                out.push(Function {
                    name: name.to_string(),
                    line: i + 1,
                    lines: end - i + 1,
                });
                i = end + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The index of the first line after the test-only item that starts at
/// or after `from` (its further attributes skipped): a one-line item
/// (`use …;`, `mod x;`) ends where it starts, a block at its closing brace.
fn skip_test_item(lines: &[&str], from: usize) -> usize {
    let mut i = from;
    while i < lines.len() && lines[i].trim_start().starts_with("#[") {
        i += 1;
    }
    let Some(item) = lines.get(i) else {
        return i;
    };
    let trimmed = item.trim_end();
    if trimmed.ends_with(';') || trimmed.ends_with('}') {
        return i + 1;
    }
    let close = format!("{}}}", indent(item));
    match lines[i + 1..].iter().position(|l| *l == close) {
        Some(p) => i + 1 + p + 1,
        None => lines.len(),
    }
}

/// The index of the closing-brace line of the function whose `fn` is at
/// `start`, or `None` for a declaration (`fn f();`) or a one-line
/// function.
fn function_end(lines: &[&str], start: usize) -> Option<usize> {
    let first = lines[start].trim_end();
    if first.ends_with('}') || first.ends_with(';') {
        return None;
    }
    // A signature over several lines ends with `{` (a body) or `;` (none).
    let mut i = start;
    while !lines[i].trim_end().ends_with('{') && !lines[i].trim_start().starts_with('{') {
        if lines[i].trim_end().ends_with(';') {
            return None;
        }
        i += 1;
        if i == lines.len() {
            return None;
        }
    }
    let close = format!("{}}}", indent(lines[start]));
    lines[start + 1..]
        .iter()
        .position(|l| *l == close)
        .map(|p| start + 1 + p)
}

/// `fn name() {`, `body` lines of `let _ = 0;`, then `}`: a function of
/// `body + 2` lines, indented by `pad`.
fn synthetic(name: &str, body: usize, pad: &str) -> String {
    let mut s = format!("{pad}fn {name}() {{\n");
    for _ in 0..body {
        s.push_str(&format!("{pad}    let _ = 0;\n"));
    }
    s.push_str(&format!("{pad}}}\n"));
    s
}

#[test]
fn detects_a_synthetic_101_line_function() {
    let text = format!(
        "//! A module.\n\n{}\n{}",
        synthetic("short", 98, ""),
        synthetic("long", 99, "")
    );
    let found = functions(&text);
    assert_eq!(
        found,
        [
            Function {
                name: "short".into(),
                line: 3,
                lines: 100
            },
            Function {
                name: "long".into(),
                line: 104,
                lines: 101
            },
        ]
    );
    let over: Vec<_> = found.iter().filter(|f| f.lines > LIMIT).collect();
    assert_eq!(
        over.len(),
        1,
        "only the 101-line function is over the limit"
    );
    assert_eq!(over[0].name, "long");
}

#[test]
fn counts_methods_and_skips_tests_and_declarations() {
    let text = format!(
        "impl X {{\n{}}}\n\ntrait T {{\n    fn declared(&self);\n    fn one(&self) {{}}\n\
         \x20   fn long_declared(\n        &self,\n    ) -> u8;\n}}\n\n\
         #[cfg(test)]\nmod tests {{\n{}}}\n\n#[cfg(test)]\nuse std::fs;\n\n\
         pub(crate) async fn wrapped(\n    a: u8,\n) -> u8\nwhere\n    u8: Copy,\n{{\n    a\n}}\n",
        synthetic("method", 150, "    "),
        synthetic("in_tests", 150, "    "),
    );
    let found = functions(&text);
    let names: Vec<_> = found.iter().map(|f| (f.name.as_str(), f.lines)).collect();
    assert_eq!(names, [("method", 152), ("wrapped", 8)]);
}

#[test]
fn recognises_fn_lines() {
    assert_eq!(fn_name("pub fn a() {"), Some("a"));
    assert_eq!(
        fn_name("    pub(crate) const unsafe fn b_2<T>("),
        Some("b_2")
    );
    assert_eq!(fn_name("extern \"C\" fn c() {"), Some("c"));
    assert_eq!(fn_name("    let f = fn_ptr;"), None);
    assert_eq!(fn_name("// fn not_code() {"), None);
    assert_eq!(fn_name("impl Fn() for X {"), None);
}

#[test]
fn no_function_over_the_limit() {
    let mut over = Vec::new();
    for file in sources(Path::new(SRC)) {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(SRC).unwrap().display().to_string();
        for f in functions(&text) {
            if f.lines > LIMIT {
                over.push(format!(
                    "{} lines: src/{rel}:{} {}",
                    f.lines, f.line, f.name
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "functions over {LIMIT} lines (split them into named steps):\n{}",
        over.join("\n")
    );
}
