//! The raw syntax tree: one node per instruction, before typing.
//!
//! A [`RawNode`] is what BuildKit calls a parser `Node`: the keyword as
//! written, the `--flags` as written, and the arguments after the
//! instruction's own line parser split them (JSON arrays, whitespace lists,
//! `key value` triples, a nested node for ONBUILD). It keeps source
//! positions so that later stages can point at the exact text they reject,
//! and it can be dumped in BuildKit's s-expression format for conformance.

use super::quote::go_quote;

/// A 1-based line and column (in characters) in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

/// The source range of an instruction: from its keyword to the end of its
/// last line (continuations and heredoc bodies included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Where the keyword starts.
    pub start: Position,
    /// Just past the last character of the instruction's last line.
    pub end: Position,
}

/// A `--flag` or `--flag=value` as written, with quotes and escapes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    /// The flag text, e.g. `--from=builder`.
    pub text: String,
    /// Where the flag starts.
    pub position: Position,
}

/// A heredoc attached to an instruction (`<<EOF` … `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u64,
    /// Whether variables in the body are expanded (delimiter not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the delimiter.
    pub chomp: bool,
    /// The body exactly as written, line endings included.
    pub content: String,
}

impl Heredoc {
    /// The body as the build uses it: with `<<-`, leading tabs removed from
    /// every line.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// One instruction as parsed from the text, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawNode {
    /// The keyword as written (`run`, `RUN`, `Run`).
    pub keyword: String,
    /// Builder flags (`--mount=…`) in order.
    pub flags: Vec<RawFlag>,
    /// Arguments after the instruction's line parser. ENV and LABEL hold
    /// `key, value, separator` triples; HEALTHCHECK holds its type first.
    pub args: Vec<String>,
    /// Where the arguments start (after the flags).
    pub args_position: Position,
    /// Where each argument starts, for instructions whose arguments are
    /// white-space separated words (FROM, EXPOSE, non-JSON COPY/ADD/VOLUME);
    /// empty otherwise.
    pub arg_positions: Vec<Position>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// The nested instruction of an ONBUILD.
    pub child: Option<Box<RawNode>>,
    /// The instruction's text with continuations joined.
    pub original: String,
    /// Heredoc bodies in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The source range.
    pub span: Span,
}

impl RawNode {
    /// The keyword in lower case.
    pub fn name(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// BuildKit's s-expression dump of this node, without the outer parens.
    pub fn dump(&self) -> String {
        let mut out = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(&f.text)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(child) = &self.child {
            out.push_str(&format!(" ({})", child.dump()));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_string()
    }
}

/// Dumps a whole file: one parenthesised node per line, newline-terminated.
pub fn dump_nodes(nodes: &[RawNode]) -> String {
    let mut out = String::new();
    for node in nodes {
        out.push('(');
        out.push_str(&node.dump());
        out.push_str(")\n");
    }
    out
}
