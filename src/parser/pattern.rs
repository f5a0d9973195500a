//! Shell patterns for `${v#p}`, `${v%p}` and `${v/p/r}`.
//!
//! BuildKit turns these patterns into Go regular expressions (`*` becomes
//! `.*` or `.*?`, `?` becomes `.`, no bracket expressions) and uses the
//! leftmost-first match. This module matches the same language directly:
//! a backtracking matcher that tries alternatives in the regex engine's
//! preference order, memoised at `*` positions so that adversarial patterns
//! stay polynomial. Like Go's `.`, wildcards never match a newline.

use std::collections::HashMap;

/// The largest result an expansion may produce. Nested `${v//p/r}` can grow
/// output geometrically (each level repeats the inner result per match);
/// past this size the expansion fails instead of exhausting memory.
pub const MAX_EXPANSION_BYTES: usize = 4 << 20;

/// The error for an expansion over [`MAX_EXPANSION_BYTES`].
pub fn too_large() -> String {
    format!(
        "expansion result is larger than {} MiB",
        MAX_EXPANSION_BYTES >> 20
    )
}

/// Why a pattern operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The pattern itself is malformed (e.g. a bad escape).
    Invalid(String),
    /// The result would exceed [`MAX_EXPANSION_BYTES`].
    TooLarge,
}

impl PatternError {
    /// A message naming the pattern when the pattern is at fault.
    pub fn describe(&self, pattern: &str) -> String {
        match self {
            PatternError::Invalid(e) => format!("invalid pattern ({pattern}) in substitution: {e}"),
            PatternError::TooLarge => too_large(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Any,
    Star,
    Literal(char),
}

/// A compiled shell pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`. `\` escapes `*`, `?` and `\`; before `}` or `/` it is
    /// dropped (those needed escaping only to end the `${}` word).
    pub fn compile(pattern: &str) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                // `**` prefers the same match end as `*`.
                '*' if tokens.last() == Some(&Token::Star) => {}
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::Any),
                '\\' => {
                    if matches!(chars.get(i), Some('}') | Some('/')) {
                        continue;
                    }
                    match chars.get(i) {
                        Some(&e @ ('*' | '?' | '\\')) => {
                            tokens.push(Token::Literal(e));
                            i += 1;
                        }
                        Some(e) => {
                            return Err(PatternError::Invalid(format!("invalid escape '\\{e}'")))
                        }
                        None => {
                            return Err(PatternError::Invalid(
                                "invalid escape at end of pattern".to_string(),
                            ))
                        }
                    }
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Pattern { tokens })
    }

    /// A matcher over `text`; its memo serves every start position.
    fn matcher<'a>(&'a self, text: &'a [char], greedy: bool) -> Matcher<'a> {
        Matcher {
            tokens: &self.tokens,
            text,
            greedy,
            memo: HashMap::new(),
        }
    }
}

struct Matcher<'a> {
    tokens: &'a [Token],
    text: &'a [char],
    greedy: bool,
    memo: HashMap<(usize, usize), Option<usize>>,
}

impl Matcher<'_> {
    /// Leftmost match at or after `from`, as (start, end) char indices.
    fn find(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.text.len()).find_map(|s| self.run(0, s).map(|e| (s, e)))
    }

    fn run(&mut self, mut pi: usize, mut ti: usize) -> Option<usize> {
        // Literals and `?` have one way to match: walk them without recursion.
        loop {
            match self.tokens.get(pi) {
                None => return Some(ti),
                Some(Token::Literal(c)) => {
                    if self.text.get(ti) != Some(c) {
                        return None;
                    }
                }
                Some(Token::Any) => {
                    if matches!(self.text.get(ti), None | Some('\n')) {
                        return None;
                    }
                }
                Some(Token::Star) => break,
            }
            pi += 1;
            ti += 1;
        }
        self.star(pi, ti)
    }

    /// The preferred end when the star at `pi` starts at `ti`. With `R(k)`
    /// the match of the rest from `k`, a lazy star is `R(ti)`, else the
    /// star from `ti + 1`; a greedy star is the star from `ti + 1`, else
    /// `R(ti)`. Evaluated backwards from the first memoised position, so
    /// the work is linear per star and recursion depth is the star count.
    fn star(&mut self, pi: usize, ti: usize) -> Option<usize> {
        if let Some(&cached) = self.memo.get(&(pi, ti)) {
            return cached;
        }
        let mut max = ti;
        while max < self.text.len() && self.text[max] != '\n' {
            max += 1;
        }
        let mut end = ti;
        while end <= max && !self.memo.contains_key(&(pi, end)) {
            end += 1;
        }
        let mut next = if end <= max {
            self.memo[&(pi, end)]
        } else {
            None
        };
        for k in (ti..end).rev() {
            let here = if self.greedy {
                next.or_else(|| self.run(pi + 1, k))
            } else {
                self.run(pi + 1, k).or(next)
            };
            self.memo.insert((pi, k), here);
            next = here;
        }
        next
    }
}

/// `${value#pattern}` / `${value##pattern}`: removes the matched prefix.
pub fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, PatternError> {
    let p = Pattern::compile(pattern)?;
    let text: Vec<char> = value.chars().collect();
    Ok(match p.matcher(&text, greedy).run(0, 0) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${value%pattern}` / `${value%%pattern}`: removes the matched suffix, by
/// matching the reversed pattern against the reversed value (as BuildKit does).
pub fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, PatternError> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern while keeping each `\x` escape pair in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let last = chars.len().saturating_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let at = last - i;
        if chars[i] == '\\' && i != last {
            out[at - 1] = '\\';
            out[at] = chars[i + 1];
            i += 2;
        } else {
            out[at] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${value/pattern/replacement}` and `${value//pattern/replacement}`.
pub fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, PatternError> {
    let p = Pattern::compile(pattern)?;
    let text: Vec<char> = value.chars().collect();
    let mut matcher = p.matcher(&text, true);
    if !all {
        return Ok(match matcher.find(0) {
            Some((s, e)) => {
                let mut out: String = text[..s].iter().collect();
                out.push_str(replacement);
                out.extend(&text[e..]);
                out
            }
            None => value.to_string(),
        });
    }
    // Mirrors Go's Regexp.ReplaceAllString: empty matches right after a
    // match are not replaced, the search always advances, and `$0`-style
    // references in the replacement are expanded.
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= text.len() {
        let Some((s, e)) = matcher.find(search) else {
            break;
        };
        out.extend(&text[last_end..s]);
        if e > last_end || s == 0 {
            let matched: String = text[s..e].iter().collect();
            expand_template(&mut out, replacement, &matched);
        }
        if out.len() > MAX_EXPANSION_BYTES {
            return Err(PatternError::TooLarge);
        }
        last_end = e;
        search = if e > search { e } else { search + 1 };
    }
    out.extend(&text[last_end..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a regex whose only group is the whole match.
fn expand_template(out: &mut String, template: &str, whole: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len = body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len == 0 || (braced && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        let name = &body[..name_len];
        rest = &body[name_len + usize::from(braced)..];
        let is_whole_match =
            name.bytes().all(|b| b.is_ascii_digit()) && name.parse::<u64>() == Ok(0);
        if is_whole_match {
            out.push_str(whole);
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix() {
        assert_eq!(trim_prefix("*/", "a/b/c", false).unwrap(), "b/c");
        assert_eq!(trim_prefix("*/", "a/b/c", true).unwrap(), "c");
        assert_eq!(trim_suffix("/*", "a/b/c", false).unwrap(), "a/b");
        assert_eq!(trim_suffix("/*", "a/b/c", true).unwrap(), "a");
        assert_eq!(trim_prefix("x", "abc", false).unwrap(), "abc");
        assert_eq!(trim_suffix("?", "abc", false).unwrap(), "ab");
        assert_eq!(trim_suffix("\\*c", "ab*c", false).unwrap(), "ab");
        assert_eq!(trim_prefix("a\\?", "a?b", false).unwrap(), "b");
        assert!(trim_prefix("\\q", "abc", false).is_err());
    }

    #[test]
    fn wildcards_stop_at_newlines() {
        assert_eq!(trim_prefix("*b", "a\nb", true).unwrap(), "a\nb");
    }

    #[test]
    fn replacement() {
        assert_eq!(replace("o", "foo", "0", false).unwrap(), "f0o");
        assert_eq!(replace("o", "foo", "0", true).unwrap(), "f00");
        assert_eq!(replace("o*", "fooxo", "_", false).unwrap(), "f_");
        assert_eq!(replace("", "ab", "-", true).unwrap(), "-a-b-");
        assert_eq!(replace("b", "abc", "[$0]", true).unwrap(), "a[b]c");
        assert_eq!(replace("b", "abc", "$$", true).unwrap(), "a$c");
        assert_eq!(replace("b", "abc", "$x", true).unwrap(), "ac");
        assert_eq!(replace("b", "abc", "$", true).unwrap(), "a$c");
    }

    #[test]
    fn replace_all_output_is_bounded() {
        let value = "x".repeat(3000);
        let big = "y".repeat(2000);
        assert_eq!(
            replace("", &value, &big, true).unwrap_err(),
            PatternError::TooLarge
        );
    }

    #[test]
    fn many_stars_stay_fast() {
        let value = "a".repeat(2000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert_eq!(trim_prefix(&pattern, &value, true).unwrap(), value);
        assert_eq!(trim_prefix(&pattern, &value, false).unwrap(), value);
        let pattern = "*a".repeat(50);
        assert_eq!(
            trim_prefix(&pattern, &value, false).unwrap(),
            "a".repeat(1950)
        );
        assert_eq!(trim_prefix(&pattern, &value, true).unwrap(), "");
    }
}
