//! Typed instructions: raw nodes checked and turned into structs.
//!
//! Each raw node becomes an [`Instruction`] whose [`InstructionKind`] holds
//! the instruction's meaning (flags parsed and validated, argument counts
//! checked, exec vs shell form decided, heredocs attached), and the file is
//! grouped into global ARGs and build stages. Values are *not* expanded
//! here: variable expansion depends on build arguments and happens in the
//! solver, using [`super::shell::Lexer`].

use super::ast::{Heredoc, Position, RawFlag, RawNode, Span};
use super::diagnostic::closest;
use super::mount::Mount;
use super::reader::{parse_heredoc_marker, Directives, Warning};

/// A parsed and validated Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives.
    pub directives: Directives,
    /// ARG instructions before the first FROM (visible to FROM lines).
    pub meta_args: Vec<Instruction>,
    /// Build stages in order.
    pub stages: Vec<Stage>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The FROM line.
    pub from: From,
    /// Where the FROM line is.
    pub span: Span,
    /// Instructions after FROM, in order.
    pub instructions: Vec<Instruction>,
}

/// A typed instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What it does.
    pub kind: InstructionKind,
    /// Where it is.
    pub span: Span,
    /// Its text with continuations joined.
    pub original: String,
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image reference, a stage name or `scratch` (not yet expanded).
    pub image: String,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// A command line in shell form (run through SHELL) or exec form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Shell form: one element, the command text. Exec form: argv.
    pub args: Vec<String>,
    /// Shell form: the image's SHELL is put in front.
    pub prepend_shell: bool,
}

/// `RUN --network=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default: the host's (or pod's) network.
    Default,
    /// A private network namespace with only loopback.
    None,
    /// Explicitly the host network.
    Host,
}

/// `RUN --security=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// The normal sandbox.
    Sandbox,
    /// Extra privileges (needs the builder to allow it).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// `--mount` options.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// Heredoc bodies referenced by the command.
    pub heredocs: Vec<Heredoc>,
}

/// A COPY/ADD source: a path (or URL, for ADD) or an inline heredoc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path, pattern or URL as written.
    Path(String),
    /// An inline file from a heredoc.
    Heredoc(Heredoc),
}

/// `COPY` and `ADD`: the flags they share and those only one accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyLike {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: String,
    /// `--from` (COPY).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD of a git repository), when given.
    pub keep_git_dir: Option<bool>,
    /// `--unpack` (ADD); None means "archives unpack, URLs do not".
    pub unpack: Option<bool>,
    /// The sources were given as a JSON array.
    pub json: bool,
}

/// A `key=value` pair from ENV or LABEL (value not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written (quotes are removed on expansion).
    pub value: String,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default as written, if any.
    pub default: Option<String>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Cmd {
        /// The test command.
        test: CommandLine,
        /// `--interval` in nanoseconds (0 = default).
        interval: u64,
        /// `--timeout` in nanoseconds.
        timeout: u64,
        /// `--start-period` in nanoseconds.
        start_period: u64,
        /// `--start-interval` in nanoseconds.
        start_interval: u64,
        /// `--retries` (0 = default).
        retries: u32,
    },
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `FROM`.
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `SHELL ["…"]`.
    Shell(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `EXPOSE`.
    Expose(Vec<String>),
    /// `COPY`.
    Copy(CopyLike),
    /// `ADD`.
    Add(CopyLike),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD` with its trigger (kept as text for the image config too).
    Onbuild {
        /// The trigger instruction, typed.
        trigger: Box<Instruction>,
        /// The trigger's text, as stored in the image config.
        expression: String,
    },
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `MAINTAINER` (deprecated; becomes the image's author).
    Maintainer(String),
}

/// Every instruction keyword, for validation and suggestions.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A typing error with where it is; turned into a diagnostic by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub position: Position,
    /// How wide the offending text is.
    pub width: usize,
    /// What to do.
    pub hint: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Text,
    List,
}

struct ParsedFlags<'a> {
    values: Vec<(&'static str, FlagKind, Vec<&'a RawFlag>, Vec<String>)>,
}

impl ParsedFlags<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.find(name).and_then(|e| e.3.first().cloned())
    }
    fn list(&self, name: &str) -> Vec<String> {
        self.find(name).map(|e| e.3.clone()).unwrap_or_default()
    }
    fn bool(&self, name: &str) -> Option<bool> {
        self.find(name)
            .and_then(|e| e.3.first())
            .map(|v| v == "true")
    }
    fn position(&self, name: &str) -> Option<(Position, usize)> {
        self.find(name)
            .and_then(|e| e.2.first())
            .map(|f| (f.position, f.text.chars().count()))
    }
    fn find(&self, name: &str) -> Option<&(&'static str, FlagKind, Vec<&RawFlag>, Vec<String>)> {
        self.values.iter().find(|e| e.0 == name && !e.2.is_empty())
    }
}

fn flag_error(flag: &RawFlag, message: String, hint: Option<String>) -> TypeError {
    TypeError {
        message,
        position: flag.position,
        width: flag.text.chars().count(),
        hint,
    }
}

/// Parses `node.flags` against the instruction's allowed flags.
fn parse_flags<'a>(
    node: &'a RawNode,
    allowed: &[(&'static str, FlagKind)],
) -> Result<ParsedFlags<'a>, TypeError> {
    let mut parsed = ParsedFlags {
        values: allowed
            .iter()
            .map(|(n, k)| (*n, *k, Vec::new(), Vec::new()))
            .collect(),
    };
    for flag in &node.flags {
        let body = flag.text.strip_prefix("--").unwrap_or(&flag.text);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(entry) = parsed.values.iter_mut().find(|e| e.0 == name) else {
            let keyword = node.keyword.to_uppercase();
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            let hint = if names.is_empty() {
                format!("{keyword} takes no flags")
            } else {
                let list: Vec<String> = names.iter().map(|n| format!("--{n}")).collect();
                let mut h = format!("{keyword} accepts {}", list.join(", "));
                if let Some(s) = closest(name, &names) {
                    h = format!("did you mean --{s}? {h}");
                }
                h
            };
            return Err(flag_error(
                flag,
                format!("unknown flag: --{name}"),
                Some(hint),
            ));
        };
        if entry.1 != FlagKind::List && !entry.2.is_empty() {
            return Err(flag_error(
                flag,
                format!("duplicate flag specified: --{name}"),
                None,
            ));
        }
        let value = match (entry.1, value) {
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Bool, Some(v)) => match v.to_lowercase().as_str() {
                "true" | "" => "true".to_string(),
                "false" => "false".to_string(),
                _ => {
                    return Err(flag_error(
                        flag,
                        format!("expecting boolean value for flag --{name}, not: {v}"),
                        None,
                    ))
                }
            },
            (_, None) => {
                return Err(flag_error(
                    flag,
                    format!("missing a value on flag: --{name}"),
                    Some(format!("write it as --{name}=VALUE")),
                ))
            }
            (_, Some(v)) => v.to_string(),
        };
        entry.2.push(flag);
        entry.3.push(value);
    }
    Ok(parsed)
}

fn keyword_error(node: &RawNode, message: impl Into<String>, hint: Option<String>) -> TypeError {
    TypeError {
        message: message.into(),
        position: node.span.start,
        width: node.keyword.chars().count(),
        hint,
    }
}

fn args_error(node: &RawNode, message: impl Into<String>) -> TypeError {
    let width = node.original.trim_end().chars().count().saturating_sub(
        node.args_position
            .column
            .saturating_sub(node.span.start.column),
    );
    TypeError {
        message: message.into(),
        position: node.args_position,
        width,
        hint: None,
    }
}

/// Points at argument `index` when its position is known, else at all arguments.
fn arg_error(node: &RawNode, index: usize, message: impl Into<String>) -> TypeError {
    match (node.arg_positions.get(index), node.args.get(index)) {
        (Some(position), Some(arg)) => TypeError {
            message: message.into(),
            position: *position,
            width: arg.chars().count(),
            hint: None,
        },
        _ => args_error(node, message),
    }
}

fn exactly_one(node: &RawNode) -> Result<String, TypeError> {
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(keyword_error(
            node,
            format!(
                "{} requires exactly one argument",
                node.keyword.to_uppercase()
            ),
            None,
        )),
    }
}

fn at_least_one(node: &RawNode) -> Result<(), TypeError> {
    if node.args.is_empty() {
        return Err(keyword_error(
            node,
            format!(
                "{} requires at least one argument",
                node.keyword.to_uppercase()
            ),
            None,
        ));
    }
    Ok(())
}

fn command_line(node: &RawNode, args: &[String]) -> CommandLine {
    CommandLine {
        args: args.to_vec(),
        prepend_shell: !node.json,
    }
}

fn key_values(node: &RawNode) -> Result<Vec<KeyValue>, TypeError> {
    at_least_one(node)?;
    node.args
        .chunks(3)
        .map(|triple| {
            if triple[0].is_empty() {
                return Err(args_error(
                    node,
                    format!("{} names can not be blank", node.keyword.to_uppercase()),
                ));
            }
            Ok(KeyValue {
                key: triple[0].clone(),
                value: triple.get(1).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `0`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid duration {s:?} (use e.g. 30s, 1m30s, 500ms)");
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    if negative && total > 0.0 {
        return Err(format!("duration {s:?} must not be negative"));
    }
    Ok(total as u64)
}

/// Checks a `--chmod` value: octal (`755`, `0644`) or symbolic (`u=rwX,go=rX`).
pub fn validate_chmod(value: &str) -> Result<(), String> {
    if value.contains('$') {
        return Ok(());
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match u32::from_str_radix(value, 8) {
            Ok(v) if v <= 0o7777 => Ok(()),
            Ok(_) => Err(format!(
                "invalid --chmod value {value:?}: octal modes go up to 7777"
            )),
            Err(_) => Err(format!(
                "invalid --chmod value {value:?}: not an octal number (digits 0-7)"
            )),
        };
    }
    let symbolic_ok = !value.is_empty()
        && value.split(',').all(|clause| {
            let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
            if rest.is_empty() {
                return false;
            }
            let mut chars = rest.chars().peekable();
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return false;
                }
                while chars.peek().is_some_and(|c| "rwxXstugo".contains(*c)) {
                    chars.next();
                }
            }
            true
        });
    if symbolic_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid --chmod value {value:?}: use an octal mode (0755) or a symbolic one (u=rwX,go=rX)"
        ))
    }
}

/// Checks an ADD `--checksum`: `sha256:<hex>` (also sha384/sha512), or a
/// git commit hash for git sources.
pub fn validate_checksum(value: &str) -> Result<(), String> {
    if value.contains('$') {
        return Ok(());
    }
    let hex_ok = |h: &str, len: usize| h.len() == len && h.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = match value.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha384", h)) => hex_ok(h, 96),
        Some(("sha512", h)) => hex_ok(h, 128),
        Some(_) => false,
        None => hex_ok(value, 40) || hex_ok(value, 64),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid --checksum {value:?}: expected sha256:<64 hex digits> (or a git commit hash)"
        ))
    }
}

fn flag_value_error(flags: &ParsedFlags, name: &str, message: String) -> TypeError {
    let (position, width) = flags.position(name).unwrap_or_default();
    TypeError {
        message,
        position,
        width,
        hint: None,
    }
}

fn copy_like(node: &RawNode, is_add: bool) -> Result<CopyLike, TypeError> {
    use FlagKind::*;
    let allowed: &[(&'static str, FlagKind)] = if is_add {
        &[
            ("chown", Text),
            ("chmod", Text),
            ("link", Bool),
            ("exclude", List),
            ("checksum", Text),
            ("keep-git-dir", Bool),
            ("unpack", Bool),
        ]
    } else {
        &[
            ("from", Text),
            ("chown", Text),
            ("chmod", Text),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", List),
        ]
    };
    let flags = parse_flags(node, allowed)?;
    let keyword = node.keyword.to_uppercase();
    if node.args.len() < 2 {
        return Err(keyword_error(
            node,
            format!(
                "{keyword} requires at least two arguments: one or more sources and a destination"
            ),
            Some(format!("e.g. {keyword} app.tar /opt/")),
        ));
    }
    if let Some(chmod) = flags.text("chmod") {
        validate_chmod(&chmod).map_err(|m| flag_value_error(&flags, "chmod", m))?;
    }
    if let Some(checksum) = flags.text("checksum") {
        validate_checksum(&checksum).map_err(|m| flag_value_error(&flags, "checksum", m))?;
    }
    let (dest, sources) = node.args.split_last().expect("two or more args");
    if !node.json && matches!(parse_heredoc_marker(dest), Ok(Some(_))) {
        return Err(arg_error(
            node,
            node.args.len() - 1,
            format!("{keyword} cannot accept a heredoc as a destination"),
        )
        .with_hint("heredocs are sources: COPY <<EOF /path/to/file"));
    }
    let mut heredocs = node.heredocs.iter();
    let sources = sources
        .iter()
        .map(|src| {
            if !node.json {
                if let Ok(Some(marker)) = parse_heredoc_marker(src) {
                    if let Some(doc) = heredocs.by_ref().find(|h| h.name == marker.name) {
                        return Source::Heredoc(doc.clone());
                    }
                }
            }
            Source::Path(src.clone())
        })
        .collect();
    Ok(CopyLike {
        sources,
        dest: dest.clone(),
        // An empty `--from=` or `--chown=` means no flag, as in BuildKit.
        from: flags.text("from").filter(|v| !v.is_empty()),
        chown: flags.text("chown").filter(|v| !v.is_empty()),
        chmod: flags.text("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.list("exclude"),
        checksum: flags.text("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
        json: node.json,
    })
}

fn run(node: &RawNode) -> Result<Run, TypeError> {
    use FlagKind::*;
    let flags = parse_flags(
        node,
        &[("mount", List), ("network", Text), ("security", Text)],
    )?;
    let mut mounts = Vec::new();
    for (flag, spec) in flags
        .find("mount")
        .map(|e| e.2.iter().zip(&e.3))
        .into_iter()
        .flatten()
    {
        let mount = Mount::parse(spec, None).map_err(|m| {
            flag_error(
                flag,
                format!("invalid --mount: {m}"),
                Some("e.g. --mount=type=cache,target=/root/.cache".to_string()),
            )
        })?;
        mounts.push(mount);
    }
    let network = match flags.text("network") {
        None => None,
        Some(v) => Some(match v.as_str() {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => {
                return Err(flag_value_error(
                    &flags,
                    "network",
                    format!("unsupported network mode {v:?} (use default, none or host)"),
                ))
            }
        }),
    };
    let security = match flags.text("security") {
        None => None,
        Some(v) => Some(match v.as_str() {
            "sandbox" => SecurityMode::Sandbox,
            "insecure" => SecurityMode::Insecure,
            _ => {
                return Err(flag_value_error(
                    &flags,
                    "security",
                    format!("unsupported security mode {v:?} (use sandbox or insecure)"),
                ))
            }
        }),
    };
    let command = command_line(node, &node.args);
    if command.args.is_empty() || (command.prepend_shell && command.args[0].trim().is_empty()) {
        return Err(keyword_error(node, "RUN requires a command to run", None));
    }
    Ok(Run {
        command,
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    })
}

fn from(node: &RawNode) -> Result<From, TypeError> {
    let flags = parse_flags(node, &[("platform", FlagKind::Text)])?;
    let name = match node.args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(arg_error(
                    node,
                    2,
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                    ),
                ));
            }
            Some(lower)
        }
        _ => {
            return Err(keyword_error(
                node,
                "FROM requires either one or three arguments",
                Some("write FROM image or FROM image AS name".to_string()),
            ))
        }
    };
    Ok(From {
        image: node.args[0].clone(),
        name,
        platform: flags.text("platform"),
    })
}

fn healthcheck(node: &RawNode) -> Result<Healthcheck, TypeError> {
    use FlagKind::*;
    at_least_one(node)?;
    let kind = node.args[0].to_uppercase();
    let rest = &node.args[1..];
    if kind == "NONE" {
        if !rest.is_empty() {
            return Err(args_error(node, "HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck::None);
    }
    let flags = parse_flags(
        node,
        &[
            ("interval", Text),
            ("timeout", Text),
            ("start-period", Text),
            ("start-interval", Text),
            ("retries", Text),
        ],
    )?;
    if kind != "CMD" {
        return Err(TypeError {
            width: node.args[0].chars().count(),
            ..args_error(
                node,
                format!("unknown type {:?} in HEALTHCHECK (try CMD)", node.args[0]),
            )
        }
        .with_hint("use HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE"));
    }
    if rest.is_empty() {
        return Err(args_error(node, "missing command after HEALTHCHECK CMD"));
    }
    let duration = |name: &str| -> Result<u64, TypeError> {
        let Some(v) = flags.text(name) else {
            return Ok(0);
        };
        let d = parse_go_duration(&v)
            .map_err(|m| flag_value_error(&flags, name, format!("--{name}: {m}")))?;
        if d != 0 && d < 1_000_000 {
            return Err(flag_value_error(
                &flags,
                name,
                format!("--{name} must be at least 1ms (or 0 for the default)"),
            ));
        }
        Ok(d)
    };
    let retries = match flags.text("retries") {
        None => 0,
        Some(v) => v.parse::<u32>().map_err(|_| {
            flag_value_error(
                &flags,
                "retries",
                format!("--retries must be a whole number >= 0, not {v:?}"),
            )
        })?,
    };
    Ok(Healthcheck::Cmd {
        test: command_line(node, rest),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

/// Types one raw node: checks its flags and arguments for its keyword.
/// Instructions without flags refuse any before their arguments are read.
pub fn type_node(node: &RawNode) -> Result<Instruction, TypeError> {
    let upper = node.keyword.to_uppercase();
    let no_flags = || parse_flags(node, &[]).map(|_| ());
    let kind = match upper.as_str() {
        "FROM" => InstructionKind::From(from(node)?),
        "RUN" => InstructionKind::Run(run(node)?),
        "CMD" => {
            no_flags()?;
            InstructionKind::Cmd(command_line(node, &node.args))
        }
        "ENTRYPOINT" => {
            no_flags()?;
            InstructionKind::Entrypoint(command_line(node, &node.args))
        }
        "SHELL" => {
            no_flags()?;
            InstructionKind::Shell(shell(node)?)
        }
        "ENV" => {
            no_flags()?;
            InstructionKind::Env(key_values(node)?)
        }
        "LABEL" => {
            no_flags()?;
            InstructionKind::Label(key_values(node)?)
        }
        "EXPOSE" => {
            no_flags()?;
            at_least_one(node)?;
            InstructionKind::Expose(node.args.clone())
        }
        "COPY" => InstructionKind::Copy(copy_like(node, false)?),
        "ADD" => InstructionKind::Add(copy_like(node, true)?),
        "USER" => {
            no_flags()?;
            InstructionKind::User(exactly_one(node)?)
        }
        "WORKDIR" => {
            no_flags()?;
            InstructionKind::Workdir(exactly_one(node)?)
        }
        "STOPSIGNAL" => {
            no_flags()?;
            InstructionKind::StopSignal(exactly_one(node)?)
        }
        "MAINTAINER" => {
            no_flags()?;
            InstructionKind::Maintainer(exactly_one(node)?)
        }
        "ARG" => {
            no_flags()?;
            InstructionKind::Arg(arg_decls(node)?)
        }
        "VOLUME" => {
            no_flags()?;
            InstructionKind::Volume(volumes(node)?)
        }
        "HEALTHCHECK" => InstructionKind::Healthcheck(healthcheck(node)?),
        "ONBUILD" => {
            no_flags()?;
            onbuild(node)?
        }
        _ => return Err(unknown_keyword(node, &upper)),
    };
    Ok(Instruction {
        kind,
        span: node.span,
        original: node.original.clone(),
    })
}

/// SHELL's arguments: at least one, and only in JSON form (a shell form
/// would need a shell to split it, which is what SHELL chooses).
fn shell(node: &RawNode) -> Result<Vec<String>, TypeError> {
    at_least_one(node)?;
    if !node.json {
        return Err(
            args_error(node, "SHELL requires the arguments to be in JSON form")
                .with_hint("e.g. SHELL [\"/bin/bash\", \"-c\"]"),
        );
    }
    Ok(node.args.clone())
}

/// ARG's declarations, `NAME` or `NAME=default` each, none blank.
fn arg_decls(node: &RawNode) -> Result<Vec<ArgDecl>, TypeError> {
    at_least_one(node)?;
    node.args
        .iter()
        .map(|a| {
            let (name, default) = match a.split_once('=') {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (a.as_str(), None),
            };
            if name.is_empty() {
                return Err(args_error(node, "ARG names can not be blank"));
            }
            Ok(ArgDecl {
                name: name.to_string(),
                default,
            })
        })
        .collect()
}

/// VOLUME's paths, trimmed, none empty.
fn volumes(node: &RawNode) -> Result<Vec<String>, TypeError> {
    at_least_one(node)?;
    let mut volumes = Vec::new();
    for v in &node.args {
        let v = v.trim();
        if v.is_empty() {
            return Err(args_error(
                node,
                "VOLUME specified can not be an empty string",
            ));
        }
        volumes.push(v.to_string());
    }
    Ok(volumes)
}

/// ONBUILD: its trigger typed (refusing the triggers Docker refuses), and
/// the expression a downstream build re-parses when the trigger fires.
fn onbuild(node: &RawNode) -> Result<InstructionKind, TypeError> {
    let Some(child) = &node.child else {
        return Err(keyword_error(
            node,
            "ONBUILD requires at least one argument",
            None,
        ));
    };
    let trigger = child.keyword.to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(keyword_error(
                child,
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                None,
            ))
        }
        "FROM" | "MAINTAINER" => {
            return Err(keyword_error(
                child,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
                None,
            ))
        }
        _ => {}
    }
    // Heredoc bodies belong to the ONBUILD line; the trigger needs
    // them, and so does the stored expression, which a downstream
    // build re-parses when the trigger fires.
    let mut child = (**child).clone();
    child.heredocs = node.heredocs.clone();
    let mut expression = child.original.trim().to_string();
    for doc in &child.heredocs {
        expression.push('\n');
        expression.push_str(&doc.content);
        expression.push_str(&doc.name);
    }
    Ok(InstructionKind::Onbuild {
        trigger: Box::new(type_node(&child)?),
        expression,
    })
}

/// The error for a keyword that is no instruction (`upper` is it
/// upper-cased), suggesting the closest one or listing them all.
fn unknown_keyword(node: &RawNode, upper: &str) -> TypeError {
    let hint = closest(&node.keyword, KEYWORDS).map(|k| format!("did you mean {k}?"));
    keyword_error(
        node,
        format!("unknown instruction: {upper}"),
        hint.or_else(|| Some(format!("instructions are {}", KEYWORDS.join(", ")))),
    )
}

impl TypeError {
    fn with_hint(mut self, hint: &str) -> TypeError {
        self.hint = Some(hint.to_string());
        self
    }
}

/// Groups typed instructions into global ARGs and stages.
pub fn group_stages(
    instructions: Vec<Instruction>,
) -> Result<(Vec<Instruction>, Vec<Stage>), TypeError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        match instruction.kind {
            InstructionKind::From(from) => stages.push(Stage {
                from,
                span: instruction.span,
                instructions: Vec::new(),
            }),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None if matches!(instruction.kind, InstructionKind::Arg(_)) => {
                    meta_args.push(instruction)
                }
                None => {
                    let keyword = instruction
                        .original
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    return Err(TypeError {
                        position: instruction.span.start,
                        width: keyword.chars().count(),
                        message: format!(
                            "{} cannot come before the first FROM",
                            keyword.to_uppercase()
                        ),
                        hint: Some("only ARG may appear before the first FROM; start a stage with FROM image".to_string()),
                    });
                }
            },
        }
    }
    if stages.is_empty() {
        let position = meta_args
            .last()
            .map(|a: &Instruction| a.span.start)
            .unwrap_or_default();
        return Err(TypeError {
            message: "the Dockerfile has no FROM instruction".to_string(),
            position,
            width: 1,
            hint: Some("add FROM image (or FROM scratch) to start a build stage".to_string()),
        });
    }
    Ok((meta_args, stages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert_eq!(parse_go_duration("0s").unwrap(), 0);
        assert_eq!(parse_go_duration("1h2m3.5s").unwrap(), 3_723_500_000_000);
        assert_eq!(parse_go_duration("300ms").unwrap(), 300_000_000);
        assert_eq!(parse_go_duration("1.5µs").unwrap(), 1_500);
        for bad in ["", "5", "s", "1x", "1..2s", "-1s", "1e3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chmod_values() {
        for ok in [
            "755",
            "0644",
            "7777",
            "u=rwX,go=rX",
            "+x",
            "a-w",
            "u+s",
            "g=u",
            "$MODE",
        ] {
            assert!(validate_chmod(ok).is_ok(), "{ok}");
        }
        for bad in ["", "888", "17777", "u", "rwx", "u=q", "u=rw,,"] {
            assert!(validate_chmod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums() {
        let hex = "a".repeat(64);
        assert!(validate_checksum(&format!("sha256:{hex}")).is_ok());
        assert!(validate_checksum(&"b".repeat(40)).is_ok());
        assert!(validate_checksum("sha256:abc").is_err());
        assert!(validate_checksum("md5:abc").is_err());
    }
}
