//! `COPY --chmod` / `ADD --chmod`: an octal mode, or a symbolic one as
//! chmod(1) reads it (`u=rwX,go=rX`, `+x`, `a-w`, `g=u`), applied to each
//! copied file's own mode. `X` means execute for directories and for files
//! that already have an execute bit; no `who` means everyone (the umask
//! plays no part in a build).

use serde::{Deserialize, Serialize};

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chmod {
    /// Exactly these bits.
    Octal(u32),
    /// Clauses applied in order.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause (several ops may follow one `who`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clause {
    /// Class bits the clause touches: 0o700 user, 0o070 group, 0o007 other.
    who: u32,
    /// `(op, perms)` pairs: op is `+`, `-` or `=`.
    ops: Vec<(char, String)>,
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub fn parse(text: &str) -> Result<Chmod, String> {
        let bad = || {
            format!("invalid --chmod value {text:?}: use an octal mode (0755) or a symbolic one (u=rwX,go=rX)")
        };
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(text, 8) {
                Ok(v) if v <= 0o7777 => Ok(Chmod::Octal(v)),
                _ => Err(bad()),
            };
        }
        let mut clauses = Vec::new();
        for clause in text.split(',') {
            let mut who = 0;
            let mut chars = clause.chars().peekable();
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => 0o700,
                    'g' => 0o070,
                    'o' => 0o007,
                    'a' => 0o777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                who = 0o777;
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                let mut perms = String::new();
                while let Some(&c) = chars.peek() {
                    if !"rwxXstugo".contains(c) {
                        break;
                    }
                    perms.push(c);
                    chars.next();
                }
                ops.push((op, perms));
            }
            if ops.is_empty() {
                return Err(bad());
            }
            clauses.push(Clause { who, ops });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a file with `mode` (permission bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(bits) => return *bits,
            Chmod::Symbolic(clauses) => clauses,
        };
        let mut mode = mode & 0o7777;
        for clause in clauses {
            for (op, perms) in &clause.ops {
                let mut bits = 0;
                for p in perms.chars() {
                    bits |= match p {
                        'r' => 0o444 & clause.who,
                        'w' => 0o222 & clause.who,
                        'x' => 0o111 & clause.who,
                        'X' if is_dir || mode & 0o111 != 0 => 0o111 & clause.who,
                        'X' => 0,
                        's' => {
                            (if clause.who & 0o700 != 0 { 0o4000 } else { 0 })
                                | (if clause.who & 0o070 != 0 { 0o2000 } else { 0 })
                        }
                        't' => 0o1000,
                        // Copy another class's bits to the classes named.
                        'u' => spread((mode >> 6) & 7) & clause.who,
                        'g' => spread((mode >> 3) & 7) & clause.who,
                        'o' => spread(mode & 7) & clause.who,
                        _ => 0,
                    };
                }
                match op {
                    '+' => mode |= bits,
                    '-' => mode &= !bits,
                    _ => {
                        let mut clear = clause.who;
                        if clause.who & 0o700 != 0 {
                            clear |= 0o4000;
                        }
                        if clause.who & 0o070 != 0 {
                            clear |= 0o2000;
                        }
                        mode = (mode & !clear) | bits;
                    }
                }
            }
        }
        mode
    }
}

/// Three permission bits repeated for user, group and other.
fn spread(bits: u32) -> u32 {
    bits << 6 | bits << 3 | bits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(text).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_and_symbolic_modes() {
        assert_eq!(sym("0640", 0o777, false), 0o640);
        assert_eq!(sym("755", 0o600, true), 0o755);
        assert_eq!(sym("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(sym("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("a-w", 0o664, false), 0o444);
        assert_eq!(sym("g=u", 0o640, false), 0o660);
        assert_eq!(sym("o=", 0o777, false), 0o770);
        assert_eq!(sym("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(sym("u=rw,g=r,o=", 0o4777, false), 0o640);
        assert!(Chmod::parse("u").is_err());
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("u*x").is_err());
    }
}
