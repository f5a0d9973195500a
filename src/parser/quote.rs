//! Go-compatible string quoting for the AST dump.
//!
//! BuildKit's dump format quotes every value with Go's `strconv.Quote`, so a
//! byte-for-byte match needs the same escaping rules: the short escapes Go
//! knows, `\xNN` for other ASCII control bytes, printable Unicode kept as-is,
//! and `\uXXXX` / `\UXXXXXXXX` for non-printable code points. Rust's standard
//! library carries no general-category tables, so "printable" is
//! approximated from the properties it does carry (controls, non-ASCII white
//! space, format characters, private use); the approximation only matters for
//! exotic code points that never appear in real Dockerfiles.

/// Quotes `s` the way Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `unicode.IsPrint`: graphic characters plus the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let cp = c as u32;
    let format_or_private = matches!(cp,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xD800..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB | 0xFFFE | 0xFFFF
        | 0xE0001 | 0xE0020..=0xE007F | 0xF0000..=0x10FFFF);
    !format_or_private
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn matches_go_for_common_escapes() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\r\u{8}\u{c}\u{0}"), r#""\t\n\r\b\f\x00""#);
        assert_eq!(go_quote("♥☃한국어"), "\"♥☃한국어\"");
        assert_eq!(go_quote("\u{7f}"), r#""\x7f""#);
        assert_eq!(go_quote("\u{85}\u{a0}"), r#""\u0085\u00a0""#);
        assert_eq!(go_quote("\u{feff}"), r#""\ufeff""#);
        assert_eq!(go_quote("\u{10ffff}"), r#""\U0010ffff""#);
    }
}
