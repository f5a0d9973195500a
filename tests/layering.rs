//! The module graph points one way (issue 14). Reads `src/` and checks
//! every `crate::…` and `super::…` path:
//!
//! - between top-level modules, against the layers in [`LAYERS`]: a
//!   module may use only modules of a lower layer;
//! - between the files of one module, that no two files use each other,
//!   directly or around a loop (a file using its parent module is fine:
//!   that is where shared items of a module live).
//!
//! Plain text reading, no compiler: comments and strings that name
//! `crate::x` count too, which only errs on the strict side.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The top-level modules, lowest layer first; a module may use the
/// modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    // Leaves: primitives.
    &[
        "blob",
        "units",
        "openat",
        "redact",
        "scheduler",
        "failpoint",
        "userns",
        "workers",
    ],
    // The pure front end; storage: the content store and cache index.
    &["parser", "cache"],
    // Trees: snapshots, and the build context.
    &["snapshot", "context"],
    // Images: formats, layouts, the base image.
    &["image"],
    // What builds on images: transport, planning, running steps, gc.
    &["registry", "solver", "executor", "gc"],
    // Showing a build.
    &["progress"],
    // Driving a build; getting its image out.
    &["builder", "export"],
    // The command line.
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    common::rust_sources(dir)
}

/// The module path of a file: `executor/copy.rs` → `["executor", "copy"]`,
/// `executor/sandbox/mod.rs` → `["executor", "sandbox"]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(SRC).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The paths a file names after `prefix` (`crate::` or `super::`), as
/// lists of identifiers.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use super::{a, b::C}`: each item's first segment.
            let inside = group.split('}').next().unwrap_or("");
            for item in inside.split(',') {
                let first: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() && first != "self" {
                    out.push(vec![first]);
                }
            }
            continue;
        }
        let mut path: Vec<String> = Vec::new();
        for seg in rest.split("::") {
            let ident: String = seg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let whole = ident.len() == seg.len();
            if !ident.is_empty() {
                path.push(ident);
            }
            if !whole || path.is_empty() {
                break;
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// The longest prefix of `path` that is a module (a file or a directory
/// with mod.rs) of the crate.
fn resolve(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// Module → the modules its files name.
fn edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources(Path::new(SRC));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    let mut out: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let me = module_of(file);
        // `super` of a mod.rs is its directory's parent; of a file, its
        // directory.
        let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
        let mut named = Vec::new();
        for path in paths_after(&text, "crate::") {
            named.extend(resolve(&modules, &path));
        }
        for path in paths_after(&text, "super::") {
            let mut full = parent.clone();
            full.extend(path);
            named.extend(resolve(&modules, &full));
        }
        let targets = out.entry(me.clone()).or_default();
        for target in named {
            // Itself, or an ancestor (where a module's shared items live).
            if target != me && !me.starts_with(&target) {
                targets.insert(target);
            }
        }
    }
    out
}

#[test]
fn top_level_modules_use_only_lower_layers() {
    let mut wrong = Vec::new();
    for (from, targets) in edges() {
        let Some(top) = from.first() else { continue };
        let Some(mine) = layer_of(top) else {
            wrong.push(format!("{top}: not in LAYERS"));
            continue;
        };
        for to in targets {
            let other = &to[0];
            if other == top {
                continue;
            }
            match layer_of(other) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!("{} uses {}", from.join("::"), to.join("::"))),
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "module edges against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn files_of_a_module_use_each_other_one_way() {
    // Edges inside one top-level module, between its submodules.
    let graph = edges();
    let inner: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = graph
        .iter()
        .map(|(from, targets)| {
            (
                from,
                targets
                    .iter()
                    .filter(|t| t.first() == from.first() && !t.is_empty())
                    .filter(|t| !from.starts_with(t) && t.len() > 1)
                    .collect(),
            )
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a Vec<String>,
        inner: &BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
        state: &mut BTreeMap<&'a Vec<String>, u8>,
        stack: &mut Vec<&'a Vec<String>>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        stack.push(node);
        for next in inner.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, inner, state, stack, cycles),
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let names: Vec<String> = stack[start..].iter().map(|n| n.join("::")).collect();
                    cycles.push(format!("{} -> {}", names.join(" -> "), next.join("::")));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node, 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for node in inner.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &inner, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "files that use each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_checker_sees_paths() {
    // The reader itself: both prefixes, nested paths, no false prefix.
    let found = paths_after("use crate::image::layer::Entry; my_crate::no", "crate::");
    assert_eq!(found, vec![vec!["image", "layer", "Entry"]]);
    let sup = paths_after("super::copy::run(); use super::{a, b::C};", "super::");
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        sup,
        vec![words(&["copy", "run"]), words(&["a"]), words(&["b"])]
    );
    assert!(edges()[&vec!["cli".to_string()]].contains(&vec!["builder".to_string()]));
}
