//! `RUN --mount=…` options: CSV fields parsed into a [`Mount`].
//!
//! The grammar and checks follow BuildKit: `type` (bind, cache, tmpfs,
//! secret, ssh; bind by default), `target`/`dst`/`destination`,
//! `source`/`src`, `from`, `ro`/`readonly`, `rw`/`readwrite`, `id`,
//! `sharing`, `required`, `mode`, `uid`, `gid`, `size` (tmpfs) and `env`
//! (secret). At parse time values are not expanded yet: a value holding a
//! variable is kept raw and checked again when the solver expands it by
//! calling [`Mount::parse`] with an expander.

use super::diagnostic::closest;

/// Mount types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A read-only (by default) view of the context or another stage.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A fresh tmpfs.
    Tmpfs,
    /// A secret file (or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<MountType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }
}

/// Cache sharing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    /// Concurrent builds use the same directory.
    #[default]
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The option string as written.
    pub spec: String,
    /// The mount type.
    pub kind: MountType,
    /// `from=`: a stage or image to take the source from.
    pub from: Option<String>,
    /// `source=`: a path inside the source (or the secret id for secrets).
    pub source: Option<String>,
    /// `target=`: where it appears inside the RUN.
    pub target: Option<String>,
    /// Read-only (bind, secret, ssh default to true; cache, tmpfs to false).
    pub readonly: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// Cache sharing mode (cache mounts only).
    pub sharing: Option<CacheSharing>,
    /// The build fails when the secret or ssh socket is not provided.
    pub required: bool,
    /// File mode (octal).
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// tmpfs size (e.g. `64m`).
    pub size: Option<String>,
    /// Secret exposed as this environment variable instead of a file.
    pub env: Option<String>,
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "size",
    "env",
];

/// Splits one CSV record the way Go's `encoding/csv` does (RFC 4180 quotes,
/// no trimming, a bare quote inside an unquoted field is an error).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".to_string()),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => {
                            return Err("extraneous or missing \" in quoted-field".to_string())
                        }
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".to_string());
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => return Ok(fields),
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {value}")),
    }
}

fn parse_u32(key: &str, value: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(value, radix).map_err(|_| format!("invalid value {value} for {key}"))
}

/// Expands variables in one option value (the solver supplies it).
pub type Expander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

impl Mount {
    /// Parses a `--mount` value. With `expand` = None (parse time), values
    /// holding a `$` are left for later; with an expander every value is
    /// expanded and checked.
    pub fn parse(spec: &str, mut expand: Option<Expander<'_>>) -> Result<Mount, String> {
        let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
        let mut m = Mount {
            spec: spec.to_string(),
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            readonly: false,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let mut readonly_explicit = None;
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => readonly_explicit = Some(true),
                    "readwrite" | "rw" => readonly_explicit = Some(false),
                    "required" => m.required = true,
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                continue;
            };
            let value = match expand.as_mut() {
                Some(expand) => expand(value)?,
                None if key == "from" && value.contains('$') => {
                    return Err(
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .to_string(),
                    )
                }
                // Checked again once the solver expands it.
                None if value.contains('$') && KEYS.contains(&key.as_str()) => continue,
                None => value.to_string(),
            };
            match key.as_str() {
                "type" => {
                    m.kind = MountType::parse(&value).ok_or_else(|| {
                        format!(
                        "unsupported mount type {value:?} (use bind, cache, tmpfs, secret or ssh)"
                    )
                    })?
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => readonly_explicit = Some(parse_bool(&key, &value)?),
                "readwrite" | "rw" => readonly_explicit = Some(!parse_bool(&key, &value)?),
                "required" => m.required = parse_bool(&key, &value)?,
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            return Err(format!(
                            "unsupported sharing value {value:?} (use shared, private or locked)"
                        ))
                        }
                    })
                }
                "mode" => m.mode = Some(parse_u32("mode", &value, 8)?),
                "uid" => m.uid = Some(parse_u32("uid", &value, 10)?),
                "gid" => m.gid = Some(parse_u32("gid", &value, 10)?),
                "size" => m.size = Some(value),
                "env" => m.env = Some(value),
                _ => {
                    let mut message = format!("unexpected key '{key}' in '{field}'");
                    if let Some(s) = closest(&key, KEYS) {
                        message.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(message);
                }
            }
        }
        m.validate(readonly_explicit)?;
        Ok(m)
    }

    fn validate(&mut self, readonly_explicit: Option<bool>) -> Result<(), String> {
        let kind_name = format!("{:?}", self.kind).to_lowercase();
        let file_info_allowed = matches!(
            self.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        for (set, what) in [
            (self.mode.is_some(), "mode"),
            (self.uid.is_some(), "uid"),
            (self.gid.is_some(), "gid"),
        ] {
            if set && !file_info_allowed {
                return Err(format!("{what} not allowed for {kind_name:?} type mounts"));
            }
        }
        if self.required && !matches!(self.kind, MountType::Secret | MountType::Ssh) {
            return Err(format!(
                "unexpected key 'required' for mount type '{kind_name}'"
            ));
        }
        if self.size.is_some() && self.kind != MountType::Tmpfs {
            return Err(format!("size not allowed for {kind_name:?} type mounts"));
        }
        if self.env.is_some() && self.kind != MountType::Secret {
            return Err(format!("env not allowed for {kind_name:?} type mounts"));
        }
        self.readonly =
            readonly_explicit.unwrap_or(!matches!(self.kind, MountType::Cache | MountType::Tmpfs));
        if self.sharing.is_some() && self.kind != MountType::Cache {
            return Err(format!("invalid cache sharing set for {kind_name} mount"));
        }
        if self.kind == MountType::Secret {
            if self.from.is_some() {
                return Err("secret mount should not have a from".to_string());
            }
            if self.source.is_none()
                && self.target.is_none()
                && self.id.is_none()
                && self.env.is_none()
            {
                return Err(
                    "invalid secret mount: one of id, source, target or env is required"
                        .to_string(),
                );
            }
            if self.source.is_some() && self.id.is_some() {
                return Err("both source and id can't be set".to_string());
            }
        }
        if matches!(
            self.kind,
            MountType::Bind | MountType::Cache | MountType::Tmpfs
        ) && self.target.is_none()
            && !self.spec.contains('$')
        {
            return Err(format!("{kind_name} mount needs a target (target=/path)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_by_type() {
        let m = Mount::parse("target=/src", None).unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        let m = Mount::parse(
            "type=cache,target=/root/.cache,sharing=locked,id=x,mode=0755,uid=1",
            None,
        )
        .unwrap();
        assert!(!m.readonly);
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        let m = Mount::parse("type=secret,id=tok,required,env=TOKEN", None).unwrap();
        assert!(m.required && m.readonly);
        let m = Mount::parse("type=tmpfs,target=/t,size=64m,rw=false", None).unwrap();
        assert!(m.readonly);
        let m = Mount::parse("type=bind,from=builder,source=/out,target=/in,rw", None).unwrap();
        assert!(!m.readonly);
    }

    #[test]
    fn quoted_csv_fields() {
        let m = Mount::parse("\"target=/a,b\",type=cache", None).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(Mount::parse("target=/a\"b", None).is_err());
    }

    #[test]
    fn rejections() {
        for (spec, needle) in [
            ("type=volume,target=/x", "unsupported mount type"),
            ("type=bind,target=/x,mode=0700", "mode not allowed"),
            ("type=bind,target=/x,required", "unexpected key 'required'"),
            ("type=cache,target=/x,sharing=nope", "unsupported sharing"),
            (
                "type=bind,target=/x,sharing=shared",
                "invalid cache sharing",
            ),
            ("type=secret,from=x,id=y", "should not have a from"),
            ("type=secret", "one of id, source, target"),
            ("type=secret,id=a,source=b", "both source and id"),
            ("type=cache,targte=/x", "did you mean target?"),
            ("type=cache,target=/x,ro=maybe", "invalid value for ro"),
            ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
            ("type=cache", "needs a target"),
            (
                "from=$STAGE,target=/x",
                "doesn't support variable expansion",
            ),
            ("type=cache,target=/x,bogus", "must be a key=value pair"),
        ] {
            let err = Mount::parse(spec, None).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn variables_are_checked_after_expansion() {
        assert!(Mount::parse("type=cache,target=/x,uid=$UID", None).is_ok());
        let mut expand = |v: &str| -> Result<String, String> { Ok(v.replace("$UID", "abc")) };
        let err = Mount::parse("type=cache,target=/x,uid=$UID", Some(&mut expand)).unwrap_err();
        assert!(err.contains("invalid value abc for uid"));
    }
}
