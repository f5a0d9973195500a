//! Variable expansion and word splitting with BuildKit's shell-lexer rules.
//!
//! Dockerfile instructions are not run through a shell when their arguments
//! are expanded: BuildKit has its own small lexer that handles quotes,
//! escapes and `$name`, `${name}`, `${name:-word}`, `${name-word}`,
//! `${name:+word}`, `${name+word}`, `${name:?msg}`, `${name?msg}`,
//! `${name#pat}`, `${name##pat}`, `${name%pat}`, `${name%%pat}`,
//! `${name/pat/rep}` and `${name//pat/rep}`. This module reproduces those
//! rules, including the modes the parser uses to find heredoc markers
//! (raw quotes, raw escapes, unset variables left as written).
//!
//! One deliberate difference: BuildKit's `ProcessWords` shares one word
//! buffer between nested `${...}` scans, which drops the start of a word
//! before a `${name:-word}`. rbuild keeps the word intact.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::pattern;
use super::quote::go_quote;

/// A variable lookup for expansion: `Some(value)` when the name is set.
pub trait Env {
    /// The value of `name`, or `None` when it is not set.
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// `KEY=value` pairs; the last definition of a key wins.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An expansion failure, worded like BuildKit's (`failed to process "…": …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {message}", go_quote(.source_text))]
pub struct ExpandError {
    /// The text that was being expanded.
    pub source_text: String,
    /// What went wrong.
    pub message: String,
}

/// The full outcome of one expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text with quotes removed and white space kept.
    pub text: String,
    /// The text split into words (unquoted expansions split on white space).
    pub words: Vec<String>,
    /// Variables referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

/// A configured lexer. The default escape character is `\`; a Dockerfile
/// with `# escape=`` ` uses the backtick.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character and default modes.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (BuildKit's `ProcessWord`).
    pub fn process_word(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<String, ExpandError> {
        self.expand(word, env).map(|e| e.text)
    }

    /// Expands `word` and splits it into words (BuildKit's `ProcessWords`).
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Vec<String>, ExpandError> {
        self.expand(word, env).map(|e| e.words)
    }

    /// Expands `word`, returning text, words and which variables were used.
    pub fn expand(&self, word: &str, env: &(impl Env + ?Sized)) -> Result<Expansion, ExpandError> {
        let mut chars: Vec<char> = word.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        let mut scan = Scan {
            lex: self,
            env,
            chars,
            pos: 0,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let raw = self.raw_escapes;
        match scan.stop_on(None, raw) {
            Ok((text, words)) => Ok(Expansion {
                text,
                words,
                matched: scan.matched,
                unmatched: scan.unmatched,
            }),
            Err(message) => Err(ExpandError {
                source_text: word.to_string(),
                message,
            }),
        }
    }
}

/// Collects words: unquoted white space separates them.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

struct Scan<'a, E: Env + ?Sized> {
    lex: &'a Lexer,
    env: &'a E,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Scanned = Result<(String, Vec<String>), String>;

impl<E: Env + ?Sized> Scan<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Scans until `stop` (consumed) or the end of input when `stop` is None.
    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> Scanned {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Scanned {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(c) = self.peek() {
            if result.len() > pattern::MAX_EXPANSION_BYTES {
                return Err(pattern::too_large());
            }
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            if c == '$' {
                let value = self.dollar()?;
                result.push_str(&value);
                words.add_string(&value);
            } else if quotes && c == '\'' {
                let value = self.single_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else if quotes && c == '"' {
                let value = self.double_quote()?;
                result.push_str(&value);
                words.add_raw_string(&value);
            } else {
                self.pos += 1;
                if c == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // An escape at the very end is dropped.
                    let Some(escaped) = self.next() else { break };
                    words.add_raw_char(escaped);
                    result.push(escaped);
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    out.push_str(&value);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                c = n;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(c) = self.next() else {
            return Err("syntax error: missing '}'".to_string());
        };
        match c {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let op = self.next();
                let mut modifier = String::from(':');
                modifier.extend(op);
                self.modifier(&name, op, &modifier, true)
            }
            '+' | '-' | '?' | '#' | '%' => self.modifier(&name, Some(c), &c.to_string(), false),
            '/' => self.substitute(&name),
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    fn modifier(
        &mut self,
        name: &str,
        op: Option<char>,
        modifier: &str,
        null_is_unset: bool,
    ) -> Result<String, String> {
        let trims = matches!(op, Some('#' | '%'));
        if null_is_unset && trims {
            return Err(format!("unsupported modifier ({modifier}) in substitution"));
        }
        let (word, _) = self
            .stop_on(Some('}'), trims)
            .map_err(|e| self.at_eof_missing(e, "'}'"))?;
        let value = self.get_env(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset_or_null = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match op {
            Some('-') => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => match value {
                Some(v) if !(null_is_unset && v.is_empty()) => Ok(v),
                v => {
                    let default = if v.is_none() {
                        "is not allowed to be unset"
                    } else {
                        "is not allowed to be empty"
                    };
                    let message = if word.is_empty() { default } else { &word };
                    Err(format!("{name}: {message}"))
                }
            },
            Some(t @ ('#' | '%')) => {
                let (pattern, greedy) = match word.strip_prefix(t) {
                    Some(rest) => (rest, true),
                    None => (word.as_str(), false),
                };
                let value = value.unwrap_or_default();
                let result = if t == '%' {
                    pattern::trim_suffix(pattern, &value, greedy)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy)
                };
                result.map_err(|e| e.describe(pattern))
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    fn substitute(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let (pattern, _) = self
            .stop_on(Some('/'), true)
            .map_err(|e| self.at_eof_missing(e, "'/' in ${}"))?;
        let (replacement, _) = self
            .stop_on(Some('}'), true)
            .map_err(|e| self.at_eof_missing(e, "'}'"))?;
        let value = self.get_env(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        pattern::replace(&pattern, &value.unwrap_or_default(), &replacement, all)
            .map_err(|e| e.describe(&pattern))
    }

    fn at_eof_missing(&self, error: String, what: &str) -> String {
        if self.peek().is_none() {
            format!("syntax error: missing {what}")
        } else {
            error
        }
    }

    /// A variable name: letters, digits and `_`; or all digits (positional);
    /// or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_digit(c) {
                while let Some(d) = self.peek().filter(|d| is_digit(*d)) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphabetic() || is_digit(c) || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [("PWD", "/home"), ("NULL", ""), ("PATHS", "/a/b/c.tar.gz")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn word(s: &str) -> String {
        Lexer::new('\\').process_word(s, env().as_slice()).unwrap()
    }

    #[test]
    fn pattern_modifiers() {
        assert_eq!(word("${PATHS#*/}"), "a/b/c.tar.gz");
        assert_eq!(word("${PATHS##*/}"), "c.tar.gz");
        assert_eq!(word("${PATHS%.*}"), "/a/b/c.tar");
        assert_eq!(word("${PATHS%%.*}"), "/a/b/c");
        assert_eq!(word("${PATHS/\\//_}"), "_a/b/c.tar.gz");
        assert_eq!(word("${PATHS//\\//_}"), "_a_b_c.tar.gz");
        assert_eq!(word("${PATHS//[a]/x}"), "/a/b/c.tar.gz");
        assert_eq!(word("${UNSET#x}"), "");
    }

    #[test]
    fn unset_and_null_checks() {
        let lex = Lexer::new('\\');
        let e = env();
        assert_eq!(word("${NULL-x}"), "");
        assert_eq!(word("${NULL:-x}"), "x");
        assert_eq!(word("${NULL+x}"), "x");
        assert_eq!(word("${NULL:+x}"), "");
        let err = lex
            .process_word("${NOPE?must be set}", e.as_slice())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${NOPE?must be set}\": NOPE: must be set"
        );
        assert!(lex.process_word("${PWD:#x}", e.as_slice()).is_err());
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let mut lex = Lexer::new('\\');
        lex.skip_unset_env = true;
        let e = env();
        assert_eq!(
            lex.process_word("$X ${Y} ${Z:-d} ${W/a/b} $PWD", e.as_slice())
                .unwrap(),
            "$X ${Y} ${Z:-d} ${W/a/b} /home"
        );
    }

    #[test]
    fn raw_modes_keep_quotes_and_escapes() {
        let mut lex = Lexer::new('\\');
        lex.raw_quotes = true;
        lex.raw_escapes = true;
        let e = env();
        assert_eq!(
            lex.process_words("a 'b c' \"d\" \\e", e.as_slice())
                .unwrap(),
            vec!["a", "'b c'", "\"d\"", "\\e"]
        );
    }

    #[test]
    fn words_keep_prefix_before_nested_default() {
        let lex = Lexer::new('\\');
        let e = env();
        assert_eq!(
            lex.process_words("he${XXX:-000}xx", e.as_slice()).unwrap(),
            vec!["he000xx"]
        );
    }

    #[test]
    fn records_matched_and_unmatched() {
        let lex = Lexer::new('\\');
        let e = env();
        let x = lex.expand("$PWD ${NOPE:-x}", e.as_slice()).unwrap();
        assert!(x.matched.contains("PWD"));
        assert!(x.unmatched.contains("NOPE"));
    }

    #[test]
    fn geometric_growth_is_an_error_not_an_allocation() {
        let lex = Lexer::new('\\');
        let env = vec![("V".to_string(), "a".repeat(200))];
        let nested = "${V//a/${V//a/${V//a/${V//a/x}}}}";
        let err = lex.process_word(nested, env.as_slice()).unwrap_err();
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
        let sequential = "${V//a/${V//a/${V//a/x}}}".repeat(40);
        let err = lex.process_word(&sequential, env.as_slice()).unwrap_err();
        assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        let e = env();
        assert_eq!(
            lex.process_word("a`$PWD \\x", e.as_slice()).unwrap(),
            "a$PWD \\x"
        );
    }
}
