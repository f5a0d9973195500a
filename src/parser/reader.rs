//! From Dockerfile text to raw nodes: lines, directives, continuations,
//! comments, per-instruction argument splitting and heredoc bodies.
//!
//! The rules follow BuildKit's parser so that the same text gives the same
//! tree: parser directives only before anything else, the escape character
//! as line continuation (unless itself escaped), comment lines dropped even
//! inside continuations, blank continuation lines skipped with a warning,
//! and a per-keyword line parser for the arguments.

use super::ast::{Heredoc, Position, RawFlag, RawNode, Span};
use super::json::{parse_json_array, JsonArray};
use super::shell::Lexer;

/// A problem found while reading the text, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError {
    /// What is wrong.
    pub message: String,
    /// Where the offending text starts.
    pub position: Position,
    /// How many characters the offending text spans (at least 1).
    pub width: usize,
}

/// A non-fatal finding, e.g. an empty continuation line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The line it concerns.
    pub line: usize,
    /// What was found.
    pub message: String,
}

/// Parser directives read from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape and line-continuation character: `\` or `` ` ``.
    pub escape: char,
    /// `# syntax=` (rbuild always uses its own frontend; the plan warns
    /// about any other than docker/dockerfile:1).
    pub syntax: Option<String>,
    /// `# check=` (no build checks yet; the plan warns unless skip=all).
    pub check: Option<String>,
    escape_seen: bool,
    done: bool,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
            escape_seen: false,
            done: false,
        }
    }
}

impl Directives {
    fn consider(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        let slot = match key.as_str() {
            "syntax" => &mut self.syntax,
            "check" => &mut self.check,
            "escape" => {
                if self.escape_seen {
                    return Err("only one escape parser directive can be used".to_string());
                }
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(format!(
                            "invalid escape token '{other}' does not match ` or \\"
                        ))
                    }
                };
                self.escape_seen = true;
                return Ok(());
            }
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if slot.is_some() {
            return Err(format!("only one {key} parser directive can be used"));
        }
        *slot = Some(value.to_string());
        Ok(())
    }
}

/// Matches `# key = value` as BuildKit's directive regex does.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let after_eq = rest.trim_start_matches(is_space).strip_prefix('=')?;
    let value = after_eq.trim_start_matches(is_space);
    if value.is_empty() {
        // `(.+?)` still takes one white-space character when there is one.
        let last = after_eq.char_indices().last()?.0;
        return Some((name, &after_eq[last..]));
    }
    Some((name, value.trim_end_matches(is_space)))
}

/// The result of reading a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDockerfile {
    /// Instructions in order.
    pub nodes: Vec<RawNode>,
    /// Parser directives.
    pub directives: Directives,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

/// One logical line (continuations joined) and where each piece came from.
struct LogicalLine {
    text: String,
    /// (offset in `text`, source line, 1-based column of that offset).
    pieces: Vec<(usize, usize, usize)>,
}

impl LogicalLine {
    fn push(&mut self, piece: &str, line: usize, column: usize) {
        self.pieces.push((self.text.len(), line, column));
        self.text.push_str(piece);
    }

    fn position(&self, offset: usize) -> Position {
        let idx = self
            .pieces
            .partition_point(|p| p.0 <= offset)
            .saturating_sub(1);
        let (start, line, column) = self.pieces[idx];
        let offset = offset.min(self.text.len());
        Position {
            line,
            column: column + self.text[start.min(offset)..offset].chars().count(),
        }
    }

    fn error(&self, offset: usize, width: usize, message: impl Into<String>) -> RawError {
        RawError {
            message: message.into(),
            position: self.position(offset),
            width: width.max(1),
        }
    }
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line).trim_start().starts_with('#')
}

/// Strips a trailing escape character used as line continuation.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    if let Some(before) = trimmed.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// Reads Dockerfile text into raw nodes.
pub fn read(source: &str) -> Result<RawDockerfile, RawError> {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut directives = Directives::default();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let Some(logical) = logical_line(&lines, &mut next, &mut directives, &mut warnings)? else {
            continue;
        };
        let mut node = node_from_line(&logical, 0, logical.text.len(), &directives)?;
        if can_contain_heredoc(&node) {
            read_heredocs(&lines, &mut next, &logical, &mut node)?;
        }
        // The node ends where its last line (continuation or heredoc) does.
        let last_line = lines[next - 1];
        node.span.end = Position {
            line: next,
            column: trim_newline(last_line).chars().count() + 1,
        };
        if let Some(child) = node.child.as_mut() {
            child.span.end = node.span.end;
        }
        nodes.push(node);
    }

    if nodes.is_empty() {
        return Err(line_error(
            lines.len().max(1),
            "file with no instructions".to_string(),
        ));
    }
    Ok(RawDockerfile {
        nodes,
        directives,
        warnings,
    })
}

/// An error about the whole of source line `line` (1-based).
fn line_error(line: usize, message: String) -> RawError {
    RawError {
        message,
        position: Position { line, column: 1 },
        width: 1,
    }
}

/// Reads the logical line that starts at `lines[*next]`, its continuation
/// lines joined and `*next` moved past them; every line is offered to
/// `directives` on the way, and a skipped blank continuation line adds a
/// warning. `None` when the line is blank or a comment: no instruction
/// starts there.
fn logical_line(
    lines: &[&str],
    next: &mut usize,
    directives: &mut Directives,
    warnings: &mut Vec<Warning>,
) -> Result<Option<LogicalLine>, RawError> {
    let mut text = lines[*next];
    *next += 1;
    let line_no = *next;
    if line_no == 1 {
        text = text.strip_prefix('\u{feff}').unwrap_or(text);
    }
    let text = trim_newline(text);
    let token = text.trim_start();
    directives
        .consider(token)
        .map_err(|m| line_error(line_no, m))?;
    let token = if token.starts_with('#') { "" } else { token };
    let column = text[..text.len() - token.len()].chars().count() + 1;
    let (piece, mut end_of_line) = trim_continuation(token, directives.escape);
    if end_of_line && piece.is_empty() {
        return Ok(None);
    }
    let mut logical = LogicalLine {
        text: String::new(),
        pieces: Vec::new(),
    };
    logical.push(piece, line_no, column);
    let mut empty_continuation = false;
    while !end_of_line && *next < lines.len() {
        let text = trim_newline(lines[*next]);
        *next += 1;
        directives
            .consider(text)
            .map_err(|m| line_error(*next, m))?;
        if is_comment(text) {
            continue;
        }
        if text.trim_start().is_empty() {
            empty_continuation = true;
            continue;
        }
        let (piece, eol) = trim_continuation(text, directives.escape);
        end_of_line = eol;
        logical.push(piece, *next, 1);
    }
    if empty_continuation {
        warnings.push(Warning {
            line: line_no,
            message: format!("empty continuation line found in: {}", logical.text.trim()),
        });
    }
    Ok(Some(logical))
}

/// Reads the bodies of the heredocs `logical` opens, in order, from the
/// lines at `lines[*next]` on, into `node`; an unterminated one is an
/// error pointing at the marker.
fn read_heredocs(
    lines: &[&str],
    next: &mut usize,
    logical: &LogicalLine,
    node: &mut RawNode,
) -> Result<(), RawError> {
    for mut heredoc in heredocs_from_line(&logical.text).map_err(|m| logical.error(0, 1, m))? {
        if !read_heredoc_body(lines, next, &mut heredoc) {
            let marker = logical.text.find("<<").unwrap_or(0);
            return Err(logical.error(
                marker,
                2 + heredoc.name.chars().count(),
                format!(
                    "unterminated heredoc: no line {:?} closes it before the end of the file",
                    heredoc.name
                ),
            ));
        }
        node.heredocs.push(heredoc);
    }
    Ok(())
}

/// Appends the lines from `lines[*next]` up to `heredoc`'s terminator line
/// (tabs before it ignored for `<<-`) to its content, moving `*next` past
/// the terminator. Returns whether the terminator was found before the end.
fn read_heredoc_body(lines: &[&str], next: &mut usize, heredoc: &mut Heredoc) -> bool {
    while *next < lines.len() {
        let body_line = lines[*next];
        *next += 1;
        let mut candidate = trim_newline(body_line);
        if heredoc.chomp {
            candidate = candidate.trim_start_matches('\t');
        }
        if candidate == heredoc.name {
            return true;
        }
        heredoc.content.push_str(body_line);
    }
    false
}

fn can_contain_heredoc(node: &RawNode) -> bool {
    let node = match &node.child {
        Some(child) if node.keyword.eq_ignore_ascii_case("onbuild") => child,
        _ => node,
    };
    ["add", "copy", "run"]
        .iter()
        .any(|k| node.keyword.eq_ignore_ascii_case(k))
        && !node.json
}

/// Finds heredoc markers (`<<EOF`, `<<-"EOT"`, `3<<X`) among the words of a line.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    // The lexer below keeps quotes, escapes and unset variables as written,
    // so a marker can only come from a literal `<<` in the line.
    if !line.contains("<<") {
        return Ok(Vec::new());
    }
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let empty: &[(String, String)] = &[];
    let words = lex.process_words(line, empty).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc_marker(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Parses one word as a heredoc marker; `Ok(None)` when it is not one.
pub fn parse_heredoc_marker(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let file_descriptor = if digits == 0 {
        0
    } else {
        word[..digits].parse().unwrap_or(u64::MAX)
    };
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let empty: &[(String, String)] = &[];
    let words = lex.process_words(rest, empty).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw_words = lex.process_words(rest, empty).map_err(|e| e.to_string())?;
    if raw_words.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        name: words.into_iter().next().unwrap_or_default(),
        file_descriptor,
        chomp,
        content: String::new(),
    }))
}

/// BuildKit's instruction-splitting white space: `[\t\v\f\r ]`.
fn is_token_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Builds the node for `logical.text[start..end]`.
fn node_from_line(
    logical: &LogicalLine,
    start: usize,
    end: usize,
    directives: &Directives,
) -> Result<RawNode, RawError> {
    let line = &logical.text[start..end];
    let lead = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    let keyword_end = trimmed.find(is_token_space).unwrap_or(trimmed.len());
    let keyword = &trimmed[..keyword_end];
    let after_keyword = &trimmed[keyword_end..];
    let after_spaces = after_keyword.trim_start_matches(is_token_space);
    let rest_offset = start + lead + keyword_end + (after_keyword.len() - after_spaces.len());

    let (args_rel, flags) = extract_builder_flags(after_spaces);
    let flags = flags
        .into_iter()
        .map(|(text, at)| RawFlag {
            text,
            position: logical.position(rest_offset + at),
        })
        .collect();
    let args_raw = &after_spaces[args_rel..];
    let args_lead = args_raw.len() - args_raw.trim_start().len();
    let args_offset = rest_offset + args_rel + args_lead;
    let args = args_raw.trim();

    let keyword_position = logical.position(start + lead);
    let mut node = RawNode {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        args_position: logical.position(args_offset),
        arg_positions: Vec::new(),
        json: false,
        child: None,
        original: line.to_string(),
        heredocs: Vec::new(),
        span: Span {
            start: keyword_position,
            end: keyword_position,
        },
    };
    let err = |message: String| logical.error(args_offset, args.chars().count(), message);
    let lower = keyword.to_lowercase();
    match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json_array(args) {
            JsonArray::Strings(v) => {
                node.args = v;
                node.json = true;
            }
            JsonArray::NotStringArray => return Err(err(not_string_array())),
            JsonArray::NotJson => {
                (node.args, node.arg_positions) = split_with_positions(logical, args, args_offset)
            }
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = parse_maybe_json(args).map_err(err)?;
        }
        "arg" => node.args = parse_words(args, directives.escape),
        "env" | "label" => {
            node.args =
                parse_name_val(args, &keyword.to_uppercase(), directives.escape).map_err(err)?;
        }
        "expose" | "from" => {
            (node.args, node.arg_positions) = split_with_positions(logical, args, args_offset)
        }
        "healthcheck" => {
            let type_end = args.find(char::is_whitespace).unwrap_or(args.len());
            if type_end > 0 {
                let command = args[type_end..].trim_start();
                let (rest, json) = parse_maybe_json(command).map_err(err)?;
                node.args = std::iter::once(args[..type_end].to_string())
                    .chain(rest)
                    .collect();
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !args.is_empty() {
                node.args = vec![args.to_string()];
            }
        }
        "onbuild" => {
            if !args.is_empty() {
                let child =
                    node_from_line(logical, args_offset, args_offset + args.len(), directives)?;
                node.json = false;
                node.child = Some(Box::new(child));
            }
        }
        // Unknown keywords parse here and are rejected with a suggestion
        // when the instruction is typed.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

fn not_string_array() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".to_string()
}

/// Shell form as one argument, or exec form as its elements.
fn parse_maybe_json(args: &str) -> Result<(Vec<String>, bool), String> {
    if args.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json_array(args) {
        JsonArray::Strings(v) => Ok((v, true)),
        JsonArray::NotStringArray => Err(not_string_array()),
        JsonArray::NotJson => Ok((vec![args.to_string()], false)),
    }
}

/// Splits on BuildKit's token white space, keeping where each word starts.
fn split_with_positions(
    logical: &LogicalLine,
    args: &str,
    args_offset: usize,
) -> (Vec<String>, Vec<Position>) {
    let mut words = Vec::new();
    let mut positions = Vec::new();
    let mut offset = 0;
    for piece in args.split(is_token_space) {
        if !piece.is_empty() {
            words.push(piece.to_string());
            positions.push(logical.position(args_offset + offset));
        }
        offset += piece.len() + 1;
    }
    (words, positions)
}

/// Splits `ENV`/`LABEL` arguments into `key, value, separator` triples.
fn parse_name_val(args: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(args, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        // Legacy `KEY name value`: the value is the rest of the line.
        let name_end = args.find(is_token_space);
        let Some(name_end) = name_end else {
            return Err(format!(
                "{keyword} must have two arguments (use {keyword} name=value)"
            ));
        };
        let value = args[name_end..].trim_start_matches(is_token_space);
        return Ok(vec![
            args[..name_end].to_string(),
            value.to_string(),
            String::new(),
        ]);
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        out.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Splits on white space, keeping quotes and escapes in the words (they are
/// removed later, when the values are expanded).
fn parse_words(text: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0;
    loop {
        let at_end = i == chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        let mut c = chars[i];
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if c == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
                c = chars[i];
            }
            word.push(c);
            i += 1;
            continue;
        }
        // Phase::Quote
        if c == quote {
            phase = Phase::Word;
        }
        if c == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
            c = chars[i];
        }
        word.push(c);
        i += 1;
    }
    words
}

/// Splits leading `--flags` off an instruction's arguments. Returns the byte
/// offset where the arguments start and each flag with its offset.
fn extract_builder_flags(line: &str) -> (usize, Vec<(String, usize)>) {
    if !line.trim_start().starts_with("--") {
        return (line.len() - line.trim_start().len(), Vec::new());
    }
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k == chars.len();
        let (pos, mut c) = chars.get(k).copied().unwrap_or((line.len(), '\0'));
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if c.is_whitespace() {
                k += 1;
                continue;
            }
            let starts_flag = c == '-' && chars.get(k + 1).is_some_and(|n| n.1 == '-');
            if !starts_flag {
                return (pos, flags);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push((word, word_start));
            }
            break;
        }
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (pos, flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push((std::mem::take(&mut word), word_start));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            if c == '\\' {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                c = chars[k].1;
            }
            word.push(c);
            k += 1;
            continue;
        }
        // Phase::Quote
        if c == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        if c == '\\' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            c = chars[k].1;
        }
        word.push(c);
        k += 1;
    }
    (line.len(), flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_syntax() {
        assert_eq!(split_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(split_directive("#escape = \\  "), Some(("escape", "\\")));
        assert_eq!(
            split_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(split_directive("# escape=  "), Some(("escape", " ")));
        assert_eq!(split_directive("# comment here"), None);
        assert_eq!(split_directive("# 1x=y"), None);
    }

    #[test]
    fn continuation_rules() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a \\ \t", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
    }

    #[test]
    fn builder_flags() {
        let line = "--a=1 --b --c=\"x y\" rest of it";
        let (at, flags) = extract_builder_flags(line);
        assert_eq!(&line[at..], "rest of it");
        let (at, _) = extract_builder_flags("--a \"--b\" x");
        assert_eq!(at, 4, "a quoted word is not a flag");
        let texts: Vec<_> = flags.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, ["--a=1", "--b", "--c=x y"]);
        assert_eq!(flags[1].1, 6);
        let (at, flags) = extract_builder_flags("--x -- --y");
        assert_eq!(at, 6);
        assert_eq!(flags.len(), 1);
    }

    #[test]
    fn heredoc_markers() {
        let h = parse_heredoc_marker("<<EOF").unwrap().unwrap();
        assert!(h.expand && !h.chomp && h.name == "EOF");
        let h = parse_heredoc_marker("<<-'EOT'").unwrap().unwrap();
        assert!(!h.expand && h.chomp && h.name == "EOT");
        let h = parse_heredoc_marker("3<<\"E\"OF").unwrap().unwrap();
        assert!(!h.expand && h.file_descriptor == 3 && h.name == "EOF");
        assert!(parse_heredoc_marker("<<").unwrap().is_none());
        assert!(parse_heredoc_marker("a<<EOF").unwrap().is_none());
        assert!(parse_heredoc_marker("<<<EOF").unwrap().is_none());
    }
}
