//! Exec-form detection: decoding `["a", "b"]` the way BuildKit does.
//!
//! BuildKit hands the argument text to Go's `encoding/json` and decides the
//! form from the outcome: a valid array of strings is exec form, invalid JSON
//! silently falls back to shell form, and *valid* JSON holding anything but
//! strings is a hard error. Matching that needs a validator with Go's rules
//! (strict grammar, control characters rejected inside strings, lone
//! surrogates replaced by U+FFFD, numbers that overflow a float64 counted as
//! a decode failure), so it is written here rather than borrowed from a
//! general JSON crate with different edge cases.

/// How an argument string reads as a JSON array.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonArray {
    /// Not JSON (or not an array): the caller uses the shell form.
    NotJson,
    /// Valid JSON array, but an element is not a string: an error.
    NotStringArray,
    /// A valid array of strings.
    Strings(Vec<String>),
}

/// Decodes `text` (leading white space allowed) as a JSON array of strings.
pub fn parse_json_array(text: &str) -> JsonArray {
    let text = text.trim_start();
    if !text.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = JsonParser {
        s: text.as_bytes(),
        pos: 0,
    };
    match p.top_level_array() {
        Some(Some(strings)) => JsonArray::Strings(strings),
        Some(None) => JsonArray::NotStringArray,
        None => JsonArray::NotJson,
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl JsonParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `None`: not valid JSON. `Some(None)`: valid, but not all strings.
    fn top_level_array(&mut self) -> Option<Option<Vec<String>>> {
        self.skip_ws();
        if !self.eat(b'[') {
            return None;
        }
        let mut strings = Some(Vec::new());
        self.skip_ws();
        if !self.eat(b']') {
            loop {
                self.skip_ws();
                if self.peek() == Some(b'"') {
                    let s = self.string()?;
                    if let Some(v) = strings.as_mut() {
                        v.push(s);
                    }
                } else {
                    self.value()?;
                    strings = None;
                }
                self.skip_ws();
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        self.skip_ws();
        if self.pos != self.s.len() {
            return None;
        }
        Some(strings)
    }

    /// Validates any JSON value without recursion (nesting can be deep).
    fn value(&mut self) -> Option<()> {
        // Each entry: true for an object, false for an array.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.skip_ws();
            // Parse one scalar or open a container.
            match self.peek()? {
                b'{' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.eat(b'}') {
                    } else {
                        stack.push(true);
                        self.object_key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.eat(b']') {
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value is complete: close containers as far as possible.
            loop {
                let Some(&is_object) = stack.last() else {
                    return Some(());
                };
                self.skip_ws();
                if self.eat(b',') {
                    if is_object {
                        self.skip_ws();
                        self.object_key()?;
                    }
                    break;
                }
                let close = if is_object { b'}' } else { b']' };
                if self.eat(close) {
                    stack.pop();
                    continue;
                }
                return None;
            }
        }
    }

    fn object_key(&mut self) -> Option<()> {
        if self.peek() != Some(b'"') {
            return None;
        }
        self.string()?;
        self.skip_ws();
        if !self.eat(b':') {
            return None;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        if self.eat(b'.') {
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return None;
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
        }
        // Go decodes numbers into float64 and fails on overflow.
        let text = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        let v: f64 = text.parse().ok()?;
        v.is_finite().then_some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.pos..self.pos + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(text, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let b = self.peek()?;
            match b {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek()?;
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            out.push(self.surrogate_aware(hi));
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {
                    // Copy one whole UTF-8 character.
                    let rest = std::str::from_utf8(&self.s[self.pos..]).ok()?;
                    let c = rest.chars().next()?;
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// Combines a surrogate pair as Go does; a lone surrogate becomes U+FFFD.
    fn surrogate_aware(&mut self, hi: u32) -> char {
        if (0xD800..0xDC00).contains(&hi) && self.s[self.pos..].starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            if let Some(lo) = self.hex4() {
                if (0xDC00..0xE000).contains(&lo) {
                    let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return char::from_u32(cp).unwrap_or('\u{FFFD}');
                }
            }
            self.pos = save;
        }
        char::from_u32(hi).unwrap_or('\u{FFFD}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArray {
        JsonArray::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(parse_json_array("[]"), strings(&[]));
        assert_eq!(
            parse_json_array(" [ \"a\" ,\t\"b\" ] "),
            strings(&["a", "b"])
        );
        assert_eq!(
            parse_json_array(r#"["\" \\ \/ \b \f \n \r \t \u0000", "\u2665"]"#),
            strings(&["\" \\ / \u{8} \u{c} \n \r \t \0", "♥"])
        );
        assert_eq!(parse_json_array(r#"["\ud83d\ude00"]"#), strings(&["😀"]));
        assert_eq!(parse_json_array(r#"["\ud83d"]"#), strings(&["\u{FFFD}"]));
    }

    #[test]
    fn invalid_json_falls_back() {
        for text in [
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\",]",
            "[\"a\"] x",
            "echo [",
            "[1e999]",
            "[\"tab\tin\"]",
            "[01]",
        ] {
            assert_eq!(parse_json_array(text), JsonArray::NotJson, "{text}");
        }
    }

    #[test]
    fn valid_non_string_arrays_are_errors() {
        for text in [
            r#"[ "echo", [ "nested json" ] ]"#,
            "[1]",
            "[null]",
            r#"["a", {"k": [1, {"x": true}]}]"#,
            "[-0.5e+3]",
            "[[[[[]]]]]",
        ] {
            assert_eq!(parse_json_array(text), JsonArray::NotStringArray, "{text}");
        }
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_json_array(&deep), JsonArray::NotStringArray);
    }
}
