//! Invariant checks shared by the fuzz targets, the proptests and the fuzz
//! regression replays, so all three exercise exactly the same properties.
//!
//! Each function takes arbitrary bytes, drives the parser or the expander,
//! and panics only when an invariant breaks (never on bad input itself).

use super::shell::Lexer;

/// Parses `data` as a Dockerfile: it must parse or give a diagnostic; an
/// accepted file dumps one line per node with sane spans.
pub fn check_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match super::parse_raw(&text, "Dockerfile") {
        Ok(raw) => {
            let dump = super::dump(&raw);
            assert_eq!(
                dump.lines().count(),
                raw.nodes.len(),
                "one dump line per node"
            );
            for node in &raw.nodes {
                assert!(node.span.start.line >= 1 && node.span.start.column >= 1);
                assert!(node.span.end.line >= node.span.start.line);
            }
        }
        Err(diagnostic) => {
            assert!(diagnostic.to_string().starts_with("Dockerfile:"));
        }
    }
    if let Err(diagnostic) = super::parse(&text, "Dockerfile") {
        assert!(diagnostic.position.line >= 1);
        let _ = diagnostic.to_string();
    }
}

/// Expands a word in every lexer mode. The first byte picks the modes; the
/// first line is the word; later lines are `KEY=value` definitions.
pub fn check_expand(data: &[u8]) {
    let Some((&modes, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let word = lines.next().unwrap_or_default();
    let env: Vec<(String, String)> = lines
        .take(8)
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.chars().take(256).collect())
        })
        .collect();
    let mut lex = Lexer::new(if modes & 1 == 0 { '\\' } else { '`' });
    lex.raw_quotes = modes & 2 != 0;
    lex.raw_escapes = modes & 4 != 0;
    lex.skip_process_quotes = modes & 8 != 0;
    lex.skip_unset_env = modes & 16 != 0;
    if let Ok(expansion) = lex.expand(word, env.as_slice()) {
        assert!(
            expansion.words.iter().all(|w| !w.is_empty()),
            "no empty words"
        );
        assert!(expansion.text.len() <= super::pattern::MAX_EXPANSION_BYTES * 2);
    }
}
