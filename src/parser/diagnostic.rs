//! User-facing parse errors: `FILE:LINE:COL: message`, the line, a caret.
//!
//! Every error the parser reports becomes a [`Diagnostic`] that names the
//! file and position, shows the offending source line with a caret under
//! the offending text, and adds a hint when one helps (the closest valid
//! keyword, the flags an instruction accepts).

use std::fmt;

use super::ast::Position;

/// A parse error located in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given by the caller (e.g. `Dockerfile`).
    pub file: String,
    /// Where the offending text starts.
    pub position: Position,
    /// Width of the offending text in characters (for the caret).
    pub width: usize,
    /// What is wrong.
    pub message: String,
    /// The source line the position points into, if known.
    pub source_line: Option<String>,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Creates a diagnostic, capturing the source line from `source`.
    pub fn new(
        file: &str,
        source: &str,
        position: Position,
        width: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let source_line = source
            .split_inclusive('\n')
            .nth(position.line.saturating_sub(1))
            .map(|l| {
                l.trim_end_matches(['\r', '\n'])
                    .trim_start_matches('\u{feff}')
                    .to_string()
            });
        Diagnostic {
            file: file.to_string(),
            position,
            width: width.max(1),
            message: message.into(),
            source_line,
            hint,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.position.line, self.position.column, self.message
        )?;
        if let Some(line) = &self.source_line {
            let number = self.position.line.to_string();
            let gutter = " ".repeat(number.len());
            // A URL's credentials never reach the terminal; the caret
            // follows the shortened text.
            let before: String = line
                .chars()
                .take(self.position.column.saturating_sub(1))
                .collect();
            let before = crate::redact::redact_text(&before);
            let line = &crate::redact::redact_text(line);
            // Copy tabs into the padding so the caret lines up in a terminal.
            let pad: String = before
                .chars()
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let available = line.chars().count().saturating_sub(pad.chars().count());
            let carets = "^".repeat(self.width.min(available.max(1)));
            write!(f, "\n {number} | {line}\n {gutter} | {pad}{carets}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Optimal-string-alignment edit distance (a transposition counts as one).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate to `word` (case-insensitive), if reasonably close.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    if word.chars().count() > 64 {
        return None;
    }
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_line_caret_and_hint() {
        let src = "FROM x\nFORM busybox\n";
        let d = Diagnostic::new(
            "Dockerfile",
            src,
            Position { line: 2, column: 1 },
            4,
            "unknown instruction: FORM",
            Some("did you mean FROM?".into()),
        );
        assert_eq!(
            d.to_string(),
            "Dockerfile:2:1: unknown instruction: FORM\n 2 | FORM busybox\n   | ^^^^\nhint: did you mean FROM?"
        );
    }

    #[test]
    fn a_credential_in_the_quoted_line_is_hidden_and_the_caret_follows() {
        let src = "FROM x\nADD --bogus https://ci:s3cret@h/f /d\n";
        let d = Diagnostic::new(
            "Dockerfile",
            src,
            Position { line: 2, column: 5 },
            7,
            "unknown flag: --bogus",
            None,
        );
        assert_eq!(
            d.to_string(),
            "Dockerfile:2:5: unknown flag: --bogus\n 2 | ADD --bogus https://***@h/f /d\n   |     ^^^^^^^"
        );
        let later = Diagnostic::new(
            "Dockerfile",
            src,
            Position {
                line: 2,
                column: 31,
            },
            2,
            "x",
            None,
        );
        assert!(
            later
                .to_string()
                .ends_with("\n   |                         ^^"),
            "{later}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("FORM", &["from", "run"]), Some("from"));
        assert_eq!(closest("rnu", &["from", "run"]), Some("run"));
        assert_eq!(closest("xyzzy", &["from", "run"]), None);
    }
}
