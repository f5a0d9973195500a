//! Credentials in URLs, kept out of what rbuild shows or stores: a URL's
//! `user:password@` becomes `***@` in messages and progress lines, and is
//! dropped where a URL is kept (a kept `.git`'s remote). A leaf: the parser's
//! diagnostics, the git source and the builder all use it.

/// `text` with the `user:password@` of every URL in it replaced by `***@`
/// (for the instruction text that progress and errors show).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                out.push_str(&tail[user_end..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The `user:password` of `url`, if it has one.
pub fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    authority
        .rsplit_once('@')
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty())
}

/// `url` without its `user:password@`.
pub fn anonymous(url: &str) -> String {
    match userinfo(url) {
        Some(user) => url.replacen(&format!("{user}@"), "", 1),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact_text("https://user:token@example.com/r.git"),
            "https://***@example.com/r.git"
        );
        assert_eq!(redact_text("git://h/r.git"), "git://h/r.git");
        assert_eq!(
            redact_text("ADD https://u:p@h/r.git#v1 http://h2/x /d"),
            "ADD https://***@h/r.git#v1 http://h2/x /d"
        );
        assert_eq!(
            anonymous("https://user:token@example.com/r.git"),
            "https://example.com/r.git"
        );
    }
}
