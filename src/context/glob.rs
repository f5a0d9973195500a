//! Path patterns as docker matches them: Go's `filepath.Match` for COPY
//! sources, and moby's patternmatcher language for `.dockerignore`.
//!
//! Both share `*` (any run of non-`/` characters), `?` (one non-`/`
//! character), bracket classes (`[a-c]`, `[^a-c]`) and `\` escapes. The
//! ignore language adds `**`: moby turns `**/` into `(.*/)?` and a trailing
//! `**` into `.*`. Moby hands brackets to Go's regexp untouched, so `!` at
//! the start of a class is a literal there, and `^` negates, as in Go's
//! `filepath.Match`.

use super::ContextError;

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// This character.
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` (or `**` mid-pattern): nothing, or anything ending in `/`.
    AnyDirs,
    /// `**` at the end: anything at all.
    AnyTail,
    /// A bracket class.
    Class {
        /// `[^...]`.
        negated: bool,
        /// Inclusive ranges (single characters are `(c, c)`).
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
    literal: bool,
}

impl Glob {
    /// Compiles a COPY source pattern (Go `filepath.Match`: `**` is two stars).
    pub fn source(pattern: &str) -> Result<Glob, ContextError> {
        Glob::compile(pattern, false)
    }

    /// Compiles a `.dockerignore` or `--exclude` pattern (with `**`).
    pub fn ignore(pattern: &str) -> Result<Glob, ContextError> {
        Glob::compile(pattern, true)
    }

    fn compile(pattern: &str, double_star: bool) -> Result<Glob, ContextError> {
        let bad = |why: &'static str| ContextError::Pattern {
            pattern: pattern.to_string(),
            why,
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut literal = true;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if double_star && chars.get(i) == Some(&'*') => {
                    literal = false;
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    tokens.push(if i >= chars.len() {
                        Token::AnyTail
                    } else {
                        Token::AnyDirs
                    });
                }
                '*' => {
                    literal = false;
                    tokens.push(Token::Star);
                }
                '?' => {
                    literal = false;
                    tokens.push(Token::One);
                }
                '\\' => match chars.get(i) {
                    Some(&next) => {
                        i += 1;
                        tokens.push(Token::Literal(next));
                    }
                    None => tokens.push(Token::Literal('\\')),
                },
                '[' => {
                    literal = false;
                    let mut negated = false;
                    if chars.get(i) == Some(&'^') {
                        negated = true;
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = chars.get(i) else {
                            return Err(bad("unterminated ["));
                        };
                        i += 1;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let e = *chars.get(i).ok_or_else(|| bad("trailing \\"))?;
                            i += 1;
                            e
                        } else {
                            c
                        };
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']')
                        {
                            i += 1;
                            let c = chars[i];
                            i += 1;
                            hi = if c == '\\' {
                                let e = *chars.get(i).ok_or_else(|| bad("trailing \\"))?;
                                i += 1;
                                e
                            } else {
                                c
                            };
                            if hi < lo {
                                return Err(bad("range out of order"));
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Glob { tokens, literal })
    }

    /// Whether the pattern has no wildcard at all.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `path` matches the whole pattern.
    pub fn matches(&self, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        let mut memo = std::collections::HashSet::new();
        self.match_at(0, &chars, 0, &mut memo)
    }

    fn match_at(
        &self,
        t: usize,
        s: &[char],
        i: usize,
        failed: &mut std::collections::HashSet<(usize, usize)>,
    ) -> bool {
        if failed.contains(&(t, i)) {
            return false;
        }
        let ok = match self.tokens.get(t) {
            None => i == s.len(),
            Some(Token::Literal(c)) => {
                s.get(i) == Some(c) && self.match_at(t + 1, s, i + 1, failed)
            }
            Some(Token::One) => {
                s.get(i).is_some_and(|&c| c != '/') && self.match_at(t + 1, s, i + 1, failed)
            }
            Some(Token::Class { negated, ranges }) => {
                s.get(i)
                    .is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                    && self.match_at(t + 1, s, i + 1, failed)
            }
            Some(Token::Star) => {
                let mut j = i;
                loop {
                    if self.match_at(t + 1, s, j, failed) {
                        break true;
                    }
                    if j >= s.len() || s[j] == '/' {
                        break false;
                    }
                    j += 1;
                }
            }
            Some(Token::AnyTail) => true,
            Some(Token::AnyDirs) => {
                // Nothing, or any prefix that ends just after a `/`.
                self.match_at(t + 1, s, i, failed)
                    || (i..s.len())
                        .filter(|&j| s[j] == '/')
                        .any(|j| self.match_at(t + 1, s, j + 1, failed))
            }
        };
        if !ok {
            failed.insert((t, i));
        }
        ok
    }
}

/// Cleans a slash path as Go's `path.Clean` does, without a leading `/`
/// (`""` and `/` become `.`); `..` that would climb above the top stays.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if path.starts_with('/') => {}
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// The rules of a `.dockerignore` file, in order (the last match wins).
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    glob: Glob,
    /// `!pattern`: re-include.
    exception: bool,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text: one pattern per line, `#` comments,
    /// blank lines skipped, `!` for exceptions, paths cleaned and made
    /// relative (a leading `/` or `./` means the same as none).
    pub fn parse(text: &str) -> Result<IgnoreRules, ContextError> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(ContextError::Ignore {
                        line: n + 1,
                        why: Box::new(ContextError::BareExclamation),
                    });
                }
            }
            let cleaned = clean(pattern);
            if cleaned == "." {
                // Matches the whole context; moby skips it too.
                continue;
            }
            let glob = Glob::ignore(&cleaned).map_err(|e| ContextError::Ignore {
                line: n + 1,
                why: Box::new(e),
            })?;
            rules.push(Rule { glob, exception });
        }
        Ok(IgnoreRules { rules })
    }

    /// Reads the ignore file for `dockerfile` in `context`: the
    /// `<Dockerfile>.dockerignore` beside it first, then the context's
    /// `.dockerignore`; none means nothing is ignored.
    pub fn load(
        context: &std::path::Path,
        dockerfile: &std::path::Path,
    ) -> Result<Self, ContextError> {
        Ok(IgnoreRules::load_text(context, dockerfile)?.1)
    }

    /// As [`IgnoreRules::load`], with the file's text (the sandbox helper
    /// parses it again on its side).
    pub fn load_text(
        context: &std::path::Path,
        dockerfile: &std::path::Path,
    ) -> Result<(String, Self), ContextError> {
        let mut candidates = Vec::new();
        if let Some(name) = dockerfile.file_name() {
            let mut own = name.to_os_string();
            own.push(".dockerignore");
            candidates.push(dockerfile.with_file_name(own));
        }
        candidates.push(context.join(".dockerignore"));
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let rules = IgnoreRules::parse(&text)?;
                    return Ok((text, rules));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ContextError::read(path.display(), e)),
            }
        }
        Ok((String::new(), IgnoreRules::default()))
    }

    /// Whether some rule re-includes paths (then an excluded directory
    /// must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `rel` (a cleaned context path) is excluded: the last rule
    /// matching the path or one of its parents decides.
    pub fn excluded(&self, rel: &str) -> bool {
        // The parent directories, as slices of `rel` (no allocation: this
        // runs for every path of the context and every rule).
        let parents: Vec<&str> = rel.match_indices('/').map(|(i, _)| &rel[..i]).collect();
        let mut excluded = false;
        for rule in &self.rules {
            if excluded != rule.exception {
                continue;
            }
            // A rule matching any parent directory matches the path too
            // (moby's MatchesOrParentMatches): `**/tmp` excludes `tmp/u`.
            let hit = rule.glob.matches(rel) || parents.iter().any(|p| rule.glob.matches(p));
            if hit {
                excluded = !rule.exception;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(rules: &str, path: &str) -> bool {
        IgnoreRules::parse(rules).unwrap().excluded(path)
    }

    #[test]
    fn source_patterns_follow_filepath_match() {
        let g = Glob::source("*.txt").unwrap();
        assert!(g.matches("a.txt"));
        assert!(!g.matches("dir/a.txt"));
        assert!(Glob::source("a?c").unwrap().matches("abc"));
        assert!(!Glob::source("a?c").unwrap().matches("a/c"));
        assert!(Glob::source("[a-c]x").unwrap().matches("bx"));
        assert!(!Glob::source("[^a-c]x").unwrap().matches("bx"));
        assert!(Glob::source("[^a-c]x").unwrap().matches("dx"));
        assert!(Glob::source("\\*").unwrap().matches("*"));
        assert!(!Glob::source("\\*").unwrap().matches("a"));
        assert!(Glob::source("file").unwrap().is_literal());
        assert!(Glob::source("[").is_err());
    }

    #[test]
    fn ignore_rules_follow_moby() {
        assert!(ignored("*.log", "a.log"));
        assert!(!ignored("*.log", "dir/a.log"));
        assert!(ignored("**/*.log", "dir/sub/a.log"));
        assert!(ignored("**/*.log", "a.log"));
        assert!(ignored("dir", "dir/sub/file"));
        assert!(ignored("/dir/", "dir/file"));
        assert!(ignored("./dir", "dir"));
        assert!(ignored("dir/**", "dir/a/b"));
        assert!(!ignored("*\n!keep.txt", "keep.txt"));
        assert!(ignored("*\n!keep.txt\nkeep*", "keep.txt"));
        assert!(ignored("# comment\n\n  tmp  ", "tmp"));
        assert!(!ignored("# tmp", "# tmp"));
        assert!(!ignored("a/*/c", "a/c"));
        assert!(ignored("a/*/c", "a/b/c/d"));
        assert!(ignored("[!x]", "!"));
        assert!(!ignored("[!x]", "y"));
        assert!(ignored("**", "anything/at/all"));
        assert!(ignored("a/**/b", "a/b"));
        assert!(ignored("a/**/b", "a/x/y/b"));
        // Found by the differential harness: a parent matched by a rule
        // deeper than itself still excludes its children.
        assert!(ignored("**/tmp", "tmp/u"));
        assert!(ignored("**/tmp", "a/tmp/u/v"));
    }
}
