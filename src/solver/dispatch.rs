//! From a parsed Dockerfile, build arguments and base image configs to a
//! plan: which stages are built, in which order, what each step runs with
//! (expanded, with its ARG and ENV scope), and the image config and
//! history each stage ends with, following docker's (BuildKit's) rules.
//!
//! Pure apart from the base-config resolver the caller passes in, so that
//! every rule here is checked by unit tests without building anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use oci_spec::image::{History, HistoryBuilder};

use crate::image::config::{HealthConfig, ImageConfig, RunConfig};
use crate::parser::shell::Lexer;
use crate::parser::{
    go_quote, CommandLine, CopyLike, Dockerfile, Healthcheck, Instruction, InstructionKind, Mount,
    NetworkMode, SecurityMode, Source,
};

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ….
    pub architecture: String,
    /// `v8`, `v7`, … or empty.
    pub variant: String,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        Platform {
            os: "linux".to_string(),
            architecture: crate::image::config::host_architecture().to_string(),
            variant: String::new(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: String::new(),
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: variant.to_string(),
            }),
            _ => Err(format!(
                "invalid platform {text:?} (expected os/arch[/variant])"
            )),
        }
    }

    /// `os/arch[/variant]`.
    pub fn format(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg k=v` (already resolved: `--build-arg k` takes the
    /// caller's environment).
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform` (default: the host's).
    pub target_platform: Platform,
    /// The platform rbuild runs on.
    pub build_platform: Platform,
    /// `--label k=v`, applied to the target.
    pub labels: BTreeMap<String, String>,
    /// The `created` time every history entry gets (RFC 3339).
    pub created: String,
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference, expanded (not yet normalised).
    Image(String),
    /// An earlier stage.
    Stage(usize),
}

/// Where `COPY --from` / `RUN --mount from=` take files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSource {
    /// A stage of this Dockerfile.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// A RUN as it executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// argv, SHELL applied to the shell form.
    pub args: Vec<String>,
    /// ENV plus the stage's ARG values (ENV wins), `KEY=value`.
    pub env: Vec<String>,
    /// Predefined proxy ARGs given on the command line and not declared:
    /// in the environment, but in neither the cache key nor the history.
    pub proxy_env: Vec<String>,
    /// `USER`.
    pub user: String,
    /// `WORKDIR` (absolute).
    pub workdir: String,
    /// `--network`.
    pub network: NetworkMode,
    /// `--security` (insecure runs only when the build allows it).
    pub security: SecurityMode,
    /// `--mount`s, expanded.
    pub mounts: Vec<Mount>,
    /// Where each mount with `from=` takes its files.
    pub mount_sources: Vec<Option<FromSource>>,
    /// Heredoc files for the command (`RUN <<EOF`).
    pub heredocs: Vec<crate::parser::Heredoc>,
    /// A lone heredoc starting with `#!`: (name, body), run as the file
    /// `/dev/pipes/<name>` (mode 0755, mounted read-only), as BuildKit.
    pub script: Option<(String, String)>,
}

/// A COPY or ADD as it executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// ADD rather than COPY.
    pub add: bool,
    /// The instruction's flags and sources, expanded.
    pub spec: CopyLike,
    /// The destination made absolute against WORKDIR (a trailing `/` kept).
    pub dest: String,
    /// `--from`, resolved.
    pub from: Option<FromSource>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Runs a command.
    Run(RunStep),
    /// Copies files.
    Copy(CopyStep),
    /// Creates the WORKDIR (with the USER as owner, as BuildKit does).
    Mkdir {
        /// The absolute directory.
        path: String,
        /// The USER at that point.
        user: String,
    },
}

/// One step that produces a layer (config-only instructions only change
/// the stage's config and history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub kind: StepKind,
    /// Line of the instruction (0 for ONBUILD triggers of the base).
    pub line: usize,
    /// Column where the instruction starts.
    pub column: usize,
    /// The instruction as written.
    pub original: String,
    /// Index into the stage config's history of this step's entry.
    pub history_index: usize,
}

/// One stage, dispatched.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// Index in the Dockerfile.
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// The platform it builds for.
    pub platform: Platform,
    /// Steps that make layers, in order.
    pub steps: Vec<Step>,
    /// The config the stage ends with (layers' diff_ids are the builder's
    /// to fill in; history entries are complete).
    pub config: ImageConfig,
    /// How many history entries came from the base image.
    pub base_history_len: usize,
    /// ARG values in scope at the end (stages built FROM this one inherit
    /// them, as BuildKit does).
    pub args: Vec<(String, String)>,
    /// ARGs declared by the end, with their values (shown in RUN history).
    pub declared_args: Vec<(String, Option<String>)>,
}

/// The whole build.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The stages that must be built, dependencies first; the last is the target.
    pub stages: Vec<StagePlan>,
    /// Findings for the user (unused build args, …).
    pub warnings: Vec<String>,
}

/// A planning error with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    /// What is wrong, with the line where one applies.
    pub message: String,
}

fn err(message: impl Into<String>) -> PlanError {
    PlanError {
        message: message.into(),
    }
}

/// ARG names docker predefines (usable without ARG, kept out of history).
pub const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The automatic platform ARGs and their values.
fn platform_args(opts: &PlanOptions) -> Vec<(String, String)> {
    let t = &opts.target_platform;
    let b = &opts.build_platform;
    vec![
        ("TARGETPLATFORM".into(), t.format()),
        ("TARGETOS".into(), t.os.clone()),
        ("TARGETARCH".into(), t.architecture.clone()),
        ("TARGETVARIANT".into(), t.variant.clone()),
        ("BUILDPLATFORM".into(), b.format()),
        ("BUILDOS".into(), b.os.clone()),
        ("BUILDARCH".into(), b.architecture.clone()),
        ("BUILDVARIANT".into(), b.variant.clone()),
    ]
}

/// A key=value scope where a later value replaces an earlier one in
/// place (BuildKit's `addEnv`: the image's Env keeps its order).
#[derive(Debug, Clone, Default)]
struct Scope(Vec<(String, String)>);

impl Scope {
    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `time.Duration` String() for whole nanoseconds.
pub fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let secs_total = nanos / 1_000_000_000;
    let (h, m) = (secs_total / 3600, secs_total % 3600 / 60);
    let secs = format!("{}s", trim_fraction(nanos % 60_000_000_000, 1_000_000_000));
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn trim_fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Go's `%q` of an integer: a quoted rune.
fn go_quote_rune(value: u32) -> String {
    match char::from_u32(value) {
        Some('\x07') => "'\\a'".into(),
        Some('\x08') => "'\\b'".into(),
        Some('\x0c') => "'\\f'".into(),
        Some('\n') => "'\\n'".into(),
        Some('\r') => "'\\r'".into(),
        Some('\t') => "'\\t'".into(),
        Some('\x0b') => "'\\v'".into(),
        Some('\'') => "'\\''".into(),
        Some('\\') => "'\\\\'".into(),
        Some(c) if !c.is_control() => format!("'{c}'"),
        _ if value < 0x80 => format!("'\\x{value:02x}'"),
        _ => format!("'\\u{value:04x}'"),
    }
}

struct Dispatcher<'a> {
    opts: &'a PlanOptions,
    lexer: Lexer,
    meta: Scope,
    /// Build args some ARG declared (for the unused-args warning).
    consumed: BTreeSet<String>,
    names: HashMap<String, usize>,
}

/// Plans the build of `dockerfile`. `resolve` returns the config of a base
/// image reference (pulling its manifest and config) for a platform.
pub fn plan(
    dockerfile: &Dockerfile,
    opts: &PlanOptions,
    resolve: &mut dyn FnMut(&str, &Platform) -> Result<ImageConfig, String>,
) -> Result<Plan, PlanError> {
    if dockerfile.stages.is_empty() {
        return Err(err("the Dockerfile has no FROM"));
    }
    let mut d = Dispatcher {
        opts,
        lexer: Lexer::new(dockerfile.directives.escape),
        meta: Scope::default(),
        consumed: BTreeSet::new(),
        names: HashMap::new(),
    };
    d.declare_meta_args(dockerfile)?;
    for (i, stage) in dockerfile.stages.iter().enumerate() {
        if let Some(name) = &stage.from.name {
            d.names.entry(name.clone()).or_insert(i);
        }
    }
    let (bases, deps) = d.stage_graph(dockerfile)?;
    let target = d.target_stage(dockerfile)?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    visit(target, &deps, &mut seen, &mut order);

    let mut stages = d.plan_stages(dockerfile, &order, &bases, resolve)?;
    if let Some(target) = stages.last_mut() {
        add_labels(&mut target.config, &opts.labels);
    }
    let mut warnings: Vec<String> = unused_args_warning(opts, &d.consumed).into_iter().collect();
    warnings.extend(directive_warnings(&dockerfile.directives));
    Ok(Plan { stages, warnings })
}

impl Dispatcher<'_> {
    /// Fills the scope of the FROM lines: the platform args (a build arg
    /// of the same name wins), then the global ARGs before the first FROM,
    /// each from its build arg, else its default, else unset.
    fn declare_meta_args(&mut self, dockerfile: &Dockerfile) -> Result<(), PlanError> {
        let opts = self.opts;
        for (k, v) in platform_args(opts) {
            let v = opts.build_args.get(&k).cloned().unwrap_or(v);
            self.meta.set(&k, v);
        }
        for instruction in &dockerfile.meta_args {
            let InstructionKind::Arg(decls) = &instruction.kind else {
                continue;
            };
            for decl in decls {
                self.consumed.insert(decl.name.clone());
                let value = match (opts.build_args.get(&decl.name), &decl.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(default)) => {
                        Some(self.expand(default, &self.meta.0, instruction)?)
                    }
                    (None, None) => None,
                };
                match value {
                    Some(v) => self.meta.set(&decl.name, v),
                    None => self.meta.0.retain(|(k, _)| k != &decl.name),
                }
            }
        }
        Ok(())
    }

    /// The base of every stage, and the earlier stages each depends on
    /// (its base, `COPY --from` and `RUN --mount from=` sources).
    fn stage_graph(
        &self,
        dockerfile: &Dockerfile,
    ) -> Result<(Vec<Base>, Vec<BTreeSet<usize>>), PlanError> {
        let mut bases = Vec::new();
        let mut deps: Vec<BTreeSet<usize>> = Vec::new();
        for (i, stage) in dockerfile.stages.iter().enumerate() {
            let name = self.expand_line(&stage.from.image, &self.meta.0, stage.span.start.line)?;
            if name.is_empty() {
                return Err(err(format!(
                    "line {}: base name ({}) should not be blank",
                    stage.span.start.line, stage.from.image
                )));
            }
            let base = match self.names.get(&name.to_ascii_lowercase()) {
                Some(&j) if j < i => Base::Stage(j),
                _ if name.eq_ignore_ascii_case("scratch") => Base::Scratch,
                _ => Base::Image(name),
            };
            let mut set = BTreeSet::new();
            if let Base::Stage(j) = base {
                set.insert(j);
            }
            for instruction in &stage.instructions {
                for source in self.sources_of(instruction, i)? {
                    if let FromSource::Stage(j) = source {
                        set.insert(j);
                    }
                }
            }
            bases.push(base);
            deps.push(set);
        }
        Ok((bases, deps))
    }

    /// The index of the stage `--target` names, or of the last stage.
    fn target_stage(&self, dockerfile: &Dockerfile) -> Result<usize, PlanError> {
        match &self.opts.target {
            None => Ok(dockerfile.stages.len() - 1),
            Some(t) => self
                .names
                .get(&t.to_ascii_lowercase())
                .copied()
                .ok_or_else(|| err(format!("target stage {t:?} could not be found"))),
        }
    }

    /// Plans the stages of `order` (dependencies first), each from its
    /// base's config and, on a stage base, the args that stage ends with.
    /// Returns them in `order`.
    fn plan_stages(
        &mut self,
        dockerfile: &Dockerfile,
        order: &[usize],
        bases: &[Base],
        resolve: &mut dyn FnMut(&str, &Platform) -> Result<ImageConfig, String>,
    ) -> Result<Vec<StagePlan>, PlanError> {
        let mut planned: HashMap<usize, StagePlan> = HashMap::new();
        for &i in order {
            let stage = &dockerfile.stages[i];
            let line = stage.span.start.line;
            let platform = match &stage.from.platform {
                Some(p) => Platform::parse(&self.expand_line(p, &self.meta.0, line)?)
                    .map_err(|e| err(format!("line {line}: {e}")))?,
                None => self.opts.target_platform.clone(),
            };
            let inherited = match &bases[i] {
                Base::Stage(j) => (planned[j].args.clone(), planned[j].declared_args.clone()),
                _ => (Vec::new(), Vec::new()),
            };
            let base_config = match &bases[i] {
                Base::Scratch => scratch_config(&platform),
                Base::Stage(j) => planned[j].config.clone(),
                Base::Image(name) => {
                    let mut config = resolve(name, &platform)
                        .map_err(|e| err(format!("line {line}: FROM {name}: {e}")))?;
                    config.created = None;
                    config
                }
            };
            let plan = self.dispatch_stage(
                dockerfile,
                i,
                bases[i].clone(),
                platform,
                base_config,
                inherited,
            )?;
            planned.insert(i, plan);
        }
        Ok(order
            .iter()
            .map(|i| planned.remove(i).expect("planned"))
            .collect())
    }
}

/// The config a `FROM scratch` stage starts from: BuildKit's empty
/// image, which works in "/".
fn scratch_config(platform: &Platform) -> ImageConfig {
    let mut config = empty_config(platform);
    if let Some(run) = config.config.as_mut() {
        run.oci.set_working_dir(Some("/".to_string()));
    }
    config
}

/// Adds the `--label`s to the config of the target stage (after its own
/// LABELs, so the command line wins).
fn add_labels(config: &mut ImageConfig, extra: &BTreeMap<String, String>) {
    if extra.is_empty() {
        return;
    }
    let run = config.config.get_or_insert_with(RunConfig::default);
    let mut labels = run.oci.labels().clone().unwrap_or_default();
    labels.extend(extra.clone());
    run.oci.set_labels(Some(labels));
}

/// BuildKit's warning about build args no ARG declared (the proxy and
/// platform args are predefined, so never unused).
fn unused_args_warning(opts: &PlanOptions, consumed: &BTreeSet<String>) -> Option<String> {
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .filter(|k| {
            !consumed.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && !platform_args(opts).iter().any(|(p, _)| p == *k)
        })
        .map(|s| s.as_str())
        .collect();
    (!unused.is_empty()).then(|| {
        format!(
            "[Warning] One or more build-args [{}] were not consumed",
            unused.join(" ")
        )
    })
}

/// What rbuild does not do of the file's parser directives, said out loud:
/// rbuild is its own Dockerfile frontend (BuildKit would run the `syntax`
/// image), and it has no build checks yet (`check`).
fn directive_warnings(directives: &crate::parser::Directives) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(syntax) = &directives.syntax {
        // docker/dockerfile[:1…|:latest] is the syntax rbuild implements.
        let name = syntax.trim().trim_start_matches("docker.io/");
        let (repo, tag) = name.split_once(':').unwrap_or((name, "latest"));
        let tag = tag.split('@').next().unwrap_or(tag);
        let standard = repo == "docker/dockerfile"
            && (tag == "latest" || tag == "1" || tag.starts_with("1.") || tag.starts_with("1-"));
        if !standard {
            warnings.push(format!(
                "# syntax={syntax}: rbuild does not run frontend images; \
                 the file is parsed with rbuild's own Dockerfile frontend (docker/dockerfile:1)"
            ));
        }
    }
    if let Some(check) = &directives.check {
        let skips_all = check
            .split(';')
            .any(|part| part.trim().replace(' ', "") == "skip=all");
        if !skips_all {
            warnings.push(format!(
                "# check={check}: rbuild has no build checks yet; the directive has no effect"
            ));
        }
    }
    warnings
}

fn visit(i: usize, deps: &[BTreeSet<usize>], seen: &mut BTreeSet<usize>, order: &mut Vec<usize>) {
    if !seen.insert(i) {
        return;
    }
    for &j in &deps[i] {
        visit(j, deps, seen, order);
    }
    order.push(i);
}

pub(crate) fn empty_config(platform: &Platform) -> ImageConfig {
    ImageConfig {
        created: None,
        author: None,
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
        config: Some(RunConfig::default()),
        rootfs: oci_spec::image::RootFsBuilder::default()
            .typ("layers")
            .diff_ids(Vec::<String>::new())
            .build()
            .expect("a valid empty rootfs"),
        history: Vec::new(),
    }
}

/// ARG values and declarations a stage takes over from its base stage.
type InheritedArgs = (Vec<(String, String)>, Vec<(String, Option<String>)>);

/// The state while dispatching one stage.
struct StageState {
    config: ImageConfig,
    run: RunConfig,
    /// ENV (persisted).
    env: Scope,
    /// The stage's ARGs with values (not persisted).
    args: Scope,
    /// ARGs declared in the stage, in order, with their values.
    declared: Vec<(String, Option<String>)>,
    /// ARGs given a value after an ENV of the same name: in BuildKit both
    /// set the one build-state environment, so the later one is what RUN
    /// and expansion see (the image's Env keeps the ENV's value).
    args_after_env: BTreeSet<String>,
    cmd_set: bool,
    steps: Vec<Step>,
}

impl StageState {
    /// What words expand against, and what RUN sees: ARG values,
    /// overridden by ENV unless an ARG set the name again after it.
    fn expansion_env(&self) -> Vec<(String, String)> {
        self.build_env().0
    }

    fn build_env(&self) -> Scope {
        let mut all = self.args.clone();
        for (k, v) in &self.env.0 {
            if !self.args_after_env.contains(k) {
                all.set(k, v.clone());
            }
        }
        all
    }

    fn workdir(&self) -> String {
        self.run
            .oci
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    fn user(&self) -> String {
        self.run.oci.user().clone().unwrap_or_default()
    }

    fn shell(&self) -> Vec<String> {
        self.run
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    fn argv(&self, command: &CommandLine) -> Vec<String> {
        if command.prepend_shell {
            let mut args = self.shell();
            args.push(command.args.join(" "));
            args
        } else {
            command.args.clone()
        }
    }

    /// A history entry; layers of RUN, COPY and ADD are marked
    /// `# buildkit` as BuildKit marks commits of an LLB state.
    fn history(&mut self, created: &str, by: String, layer: bool) -> usize {
        self.history_entry(created, by, layer, layer)
    }

    fn history_entry(&mut self, created: &str, by: String, layer: bool, marked: bool) -> usize {
        let mut builder = HistoryBuilder::default()
            .created(created.to_string())
            .created_by(if marked {
                format!("{by} # buildkit")
            } else {
                by
            })
            .comment("buildkit.dockerfile.v0".to_string());
        if !layer {
            builder = builder.empty_layer(true);
        }
        let entry: History = builder.build().expect("a valid history entry");
        self.config.history.push(entry);
        self.config.history.len() - 1
    }
}

fn join_path(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", base.trim_end_matches('/'))
    };
    // path.Clean: resolve `.`, `..` and repeated slashes.
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Dispatcher<'_> {
    fn expand(
        &self,
        word: &str,
        env: &[(String, String)],
        at: &Instruction,
    ) -> Result<String, PlanError> {
        self.expand_line(word, env, at.span.start.line)
    }

    fn expand_line(
        &self,
        word: &str,
        env: &[(String, String)],
        line: usize,
    ) -> Result<String, PlanError> {
        self.lexer
            .process_word(word, env)
            .map_err(|e| err(format!("line {line}: {}", e.message)))
    }

    /// Expands variables in a heredoc body as BuildKit's raw expander
    /// does: quotes are ordinary characters, the escape is always `\\`.
    fn expand_raw(
        &self,
        text: &str,
        env: &[(String, String)],
        at: &Instruction,
    ) -> Result<String, PlanError> {
        let mut lexer = Lexer::new('\\');
        lexer.skip_process_quotes = true;
        lexer
            .process_word(text, env)
            .map_err(|e| err(format!("line {}: {}", at.span.start.line, e.message)))
    }

    fn resolve_from(
        &self,
        name: &str,
        current: usize,
        line: usize,
    ) -> Result<FromSource, PlanError> {
        if let Ok(index) = name.parse::<usize>() {
            if index >= current {
                return Err(err(format!(
                    "line {line}: invalid stage index {index} (a stage can only use earlier stages)"
                )));
            }
            return Ok(FromSource::Stage(index));
        }
        match self.names.get(&name.to_ascii_lowercase()) {
            Some(&j) if j < current => Ok(FromSource::Stage(j)),
            Some(_) => Err(err(format!(
                "line {line}: stage {name} is not defined before this stage"
            ))),
            None => Ok(FromSource::Image(name.to_string())),
        }
    }

    /// Stages and images an instruction reads from.
    fn sources_of(
        &self,
        instruction: &Instruction,
        current: usize,
    ) -> Result<Vec<FromSource>, PlanError> {
        let line = instruction.span.start.line;
        let mut out = Vec::new();
        match &instruction.kind {
            InstructionKind::Copy(c) => {
                if let Some(from) = &c.from {
                    let from = self.expand_line(from, &self.meta.0, line)?;
                    out.push(self.resolve_from(&from, current, line)?);
                }
            }
            InstructionKind::Run(run) => {
                for m in &run.mounts {
                    if let Some(from) = &m.from {
                        out.push(self.resolve_from(from, current, line)?);
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn dispatch_stage(
        &mut self,
        dockerfile: &Dockerfile,
        index: usize,
        base: Base,
        platform: Platform,
        base_config: ImageConfig,
        inherited: InheritedArgs,
    ) -> Result<StagePlan, PlanError> {
        let stage = &dockerfile.stages[index];
        let mut run = base_config.config.clone().unwrap_or_default();
        let mut env = Scope::default();
        for entry in run.oci.env().clone().unwrap_or_default() {
            let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
            env.set(k, v.to_string());
        }
        if env.get("PATH").is_none() {
            env.set(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            );
        }
        let triggers = run.on_build.take().unwrap_or_default();
        run.oci.set_env(Some(
            env.0.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ));
        let mut state = StageState {
            config: base_config,
            run,
            env,
            args: Scope(inherited.0),
            declared: inherited.1,
            args_after_env: BTreeSet::new(),
            cmd_set: false,
            steps: Vec::new(),
        };
        let base_history_len = state.config.history.len();
        state.config.os = platform.os.clone();
        state.config.architecture = platform.architecture.clone();
        // The base's ONBUILD triggers run first, as if written after FROM.
        for trigger in &triggers {
            let source = format!("FROM scratch\n{trigger}\n");
            let parsed = crate::parser::parse(&source, "ONBUILD").map_err(|e| {
                err(format!(
                    "ONBUILD trigger {trigger:?} of the base image: {}",
                    e.message
                ))
            })?;
            let instruction = parsed.stages[0]
                .instructions
                .first()
                .cloned()
                .ok_or_else(|| err(format!("empty ONBUILD trigger {trigger:?}")))?;
            let instruction = Instruction {
                span: Default::default(),
                ..instruction
            };
            self.dispatch(&mut state, &instruction, index)?;
        }
        for instruction in &stage.instructions {
            self.dispatch(&mut state, instruction, index)?;
        }
        state.run.oci.set_env(Some(
            state
                .env
                .0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ));
        let mut config = state.config;
        config.config = Some(state.run);
        Ok(StagePlan {
            index,
            name: stage.from.name.clone(),
            base,
            platform,
            steps: state.steps,
            config,
            base_history_len,
            args: state.args.0,
            declared_args: state.declared,
        })
    }

    fn dispatch(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        stage: usize,
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let scope = s.expansion_env();
        let x = |d: &Dispatcher, word: &str| d.expand(word, &scope, instruction);
        match &instruction.kind {
            InstructionKind::From(_) => unreachable!("FROM starts a stage"),
            InstructionKind::Env(pairs) => {
                self.dispatch_env(s, instruction, pairs)?;
            }
            InstructionKind::Arg(decls) => {
                self.dispatch_arg(s, instruction, decls)?;
            }
            InstructionKind::Run(run) => {
                self.dispatch_run(s, instruction, run, stage)?;
            }
            InstructionKind::Copy(c) | InstructionKind::Add(c) => {
                self.dispatch_copy(s, instruction, c, stage)?;
            }
            InstructionKind::Workdir(dir) => {
                self.dispatch_workdir(s, instruction, dir)?;
            }
            InstructionKind::User(user) => {
                let user = x(self, user)?;
                s.run.oci.set_user(Some(user.clone()));
                s.history(&created, format!("USER {user}"), false);
            }
            InstructionKind::Shell(shell) => {
                s.run.shell = Some(shell.clone());
                s.history(&created, format!("SHELL [{}]", shell.join(" ")), false);
            }
            InstructionKind::Cmd(c) => {
                let args = s.argv(c);
                s.run.oci.set_cmd(Some(args.clone()));
                // As BuildKit, on every platform (Docker's image spec).
                s.run.args_escaped = Some(true);
                s.cmd_set = true;
                s.history(&created, format!("CMD {}", go_quote_list(&args)), false);
            }
            InstructionKind::Entrypoint(c) => {
                let args = s.argv(c);
                s.run.oci.set_entrypoint(Some(args.clone()));
                if !s.cmd_set {
                    s.run.oci.set_cmd(None);
                }
                s.history(
                    &created,
                    format!("ENTRYPOINT {}", go_quote_list(&args)),
                    false,
                );
            }
            InstructionKind::Label(pairs) => {
                let mut labels = s.run.oci.labels().clone().unwrap_or_default();
                let mut message = String::from("LABEL");
                for kv in pairs {
                    let (k, v) = (x(self, &kv.key)?, x(self, &kv.value)?);
                    message.push_str(&format!(" {k}={v}"));
                    labels.insert(k, v);
                }
                s.run.oci.set_labels(Some(labels));
                s.history(&created, message, false);
            }
            InstructionKind::Expose(ports) => {
                self.dispatch_expose(s, instruction, ports)?;
            }
            InstructionKind::Volume(volumes) => {
                self.dispatch_volume(s, instruction, volumes)?;
            }
            InstructionKind::StopSignal(signal) => {
                let signal = x(self, signal)?;
                s.run.oci.set_stop_signal(Some(signal.clone()));
                s.history(&created, format!("STOPSIGNAL {signal}"), false);
            }
            InstructionKind::Healthcheck(h) => {
                self.dispatch_healthcheck(s, h)?;
            }
            InstructionKind::Onbuild { expression, .. } => {
                s.run
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expression.clone());
                // BuildKit records no history entry for ONBUILD.
            }
            InstructionKind::Maintainer(m) => {
                s.config.author = Some(m.clone());
                s.history(&created, format!("MAINTAINER {m}"), false);
            }
        }
        Ok(())
    }

    fn dispatch_env(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        pairs: &[crate::parser::KeyValue],
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let scope = s.expansion_env();
        let x = |d: &Dispatcher, word: &str| d.expand(word, &scope, instruction);
        let mut message = String::from("ENV");
        for kv in pairs {
            let key = x(self, &kv.key)?;
            let value = self.expand(&kv.value, &s.expansion_env(), instruction)?;
            message.push_str(&format!(" {key}={value}"));
            s.args_after_env.remove(&key);
            s.env.set(&key, value);
        }
        s.run.oci.set_env(Some(
            s.env.0.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        ));
        s.history(&created, message, false);
        Ok(())
    }

    fn dispatch_arg(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        decls: &[crate::parser::ArgDecl],
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        // One history entry for the line, as BuildKit's dispatchArg.
        let mut message = String::from("ARG");
        for decl in decls {
            self.consumed.insert(decl.name.clone());
            message.push_str(&format!(" {}", decl.name));
            let default = match &decl.default {
                Some(d) => {
                    let v = self.expand(d, &s.expansion_env(), instruction)?;
                    message.push_str(&format!("={v}"));
                    Some(v)
                }
                None => None,
            };
            let value = self
                .opts
                .build_args
                .get(&decl.name)
                .cloned()
                .or(default)
                .or_else(|| self.meta.get(&decl.name).map(str::to_string));
            if let Some(v) = &value {
                s.args.set(&decl.name, v.clone());
                s.args_after_env.insert(decl.name.clone());
            }
            // A redeclared ARG keeps its place (BuildKit's order).
            match s.declared.iter_mut().find(|(k, _)| k == &decl.name) {
                Some(slot) => slot.1 = value,
                None => s.declared.push((decl.name.clone(), value)),
            }
        }
        s.history(&created, message, false);
        Ok(())
    }

    fn dispatch_run(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        run: &crate::parser::Run,
        stage: usize,
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let line = instruction.span.start.line;
        let args = run_argv(s, run).map_err(|e| err(format!("line {line}: {e}")))?;
        let env = s.build_env();
        let proxy_env: Vec<String> = PROXY_ARGS
            .iter()
            .filter(|p| !s.declared.iter().any(|(k, _)| k == *p))
            .filter_map(|p| self.opts.build_args.get(*p).map(|v| format!("{p}={v}")))
            .collect();
        let mut mounts = Vec::new();
        let mut mount_sources = Vec::new();
        for m in &run.mounts {
            let scope = s.expansion_env();
            let mut expander = |w: &str| -> Result<String, String> {
                self.lexer
                    .process_word(w, &scope[..])
                    .map_err(|e| e.message)
            };
            let parsed = Mount::parse(&m.spec, Some(&mut expander))
                .map_err(|e| err(format!("line {line}: {e}")))?;
            mount_sources.push(match &parsed.from {
                Some(f) => Some(self.resolve_from(f, stage, line)?),
                None => None,
            });
            mounts.push(parsed);
        }
        // History shows the ARGs in scope with the values the step
        // sees (see build_env; a redeclared ARG keeps its earlier value).
        let shown: Vec<String> = s
            .declared
            .iter()
            .map(|(k, v)| {
                let v = env
                    .get(k)
                    .map(str::to_string)
                    .or(v.clone())
                    .unwrap_or_default();
                format!("{k}={v}")
            })
            .collect();
        let mut by = String::from("RUN ");
        if !shown.is_empty() {
            by.push_str(&format!("|{} {} ", shown.len(), shown.join(" ")));
        }
        by.push_str(&args.join(" "));
        let history_index = s.history(&created, by, true);
        s.steps.push(Step {
            kind: StepKind::Run(RunStep {
                args,
                env: env.0.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                proxy_env,
                user: s.user(),
                workdir: s.workdir(),
                network: run.network.unwrap_or(NetworkMode::Default),
                security: run.security.unwrap_or(SecurityMode::Sandbox),
                mounts,
                mount_sources,
                heredocs: run.heredocs.clone(),
                script: shebang_script(run),
            }),
            line,
            column: instruction.span.start.column,
            original: instruction.original.clone(),
            history_index,
        });
        Ok(())
    }

    fn dispatch_copy(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        c: &crate::parser::CopyLike,
        stage: usize,
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let line = instruction.span.start.line;
        let scope = s.expansion_env();
        let x = |d: &Dispatcher, word: &str| d.expand(word, &scope, instruction);
        let add = matches!(instruction.kind, InstructionKind::Add(_));
        let mut spec = c.clone();
        for source in &mut spec.sources {
            match source {
                Source::Path(p) => *p = x(self, p)?,
                // An unquoted delimiter: variables in the body
                // expand, quotes and the rest stay as written.
                Source::Heredoc(h) if h.expand => {
                    h.content = self.expand_raw(&h.body(), &scope, instruction)?;
                    h.chomp = false;
                }
                Source::Heredoc(_) => {}
            }
        }
        spec.dest = x(self, &c.dest)?;
        for v in [&mut spec.chown, &mut spec.chmod, &mut spec.checksum]
            .into_iter()
            .flatten()
        {
            *v = x(self, v)?;
        }
        link_rules(&mut spec, instruction)?;
        let from = match &c.from {
            Some(f) => {
                let f = self.expand(f, &self.meta.0, instruction)?;
                Some(self.resolve_from(&f, stage, line)?)
            }
            None => None,
        };
        let mut dest = join_path(&s.workdir(), &spec.dest);
        if (spec.dest.ends_with('/') || spec.dest == "." || spec.dest.is_empty())
            && !dest.ends_with('/')
        {
            dest.push('/');
        }
        let by = copy_history(add, &spec);
        let history_index = s.history(&created, by, true);
        s.steps.push(Step {
            kind: StepKind::Copy(CopyStep {
                add,
                spec,
                dest,
                from,
            }),
            line,
            column: instruction.span.start.column,
            original: instruction.original.clone(),
            history_index,
        });
        Ok(())
    }

    fn dispatch_workdir(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        dir: &str,
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let line = instruction.span.start.line;
        let scope = s.expansion_env();
        let x = |d: &Dispatcher, word: &str| d.expand(word, &scope, instruction);
        let dir = x(self, dir)?;
        let wd = join_path(&s.workdir(), &dir);
        s.run.oci.set_working_dir(Some(wd.clone()));
        let layer = wd != "/";
        // A layer, but not marked `# buildkit` (BuildKit commits it
        // without an LLB state).
        let history_index = s.history_entry(&created, format!("WORKDIR {wd}"), layer, false);
        if layer {
            s.steps.push(Step {
                kind: StepKind::Mkdir {
                    path: wd,
                    user: s.user(),
                },
                line,
                column: instruction.span.start.column,
                original: instruction.original.clone(),
                history_index,
            });
        }
        Ok(())
    }

    fn dispatch_expose(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        ports: &[String],
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let line = instruction.span.start.line;
        let scope = s.expansion_env();
        let mut exposed = s.run.oci.exposed_ports().clone().unwrap_or_default();
        let mut added = BTreeSet::new();
        for p in ports {
            for word in self
                .lexer
                .process_words(p, &scope[..])
                .map_err(|e| err(format!("line {line}: {}", e.message)))?
            {
                for port in expand_port_spec(&word).map_err(|e| err(format!("line {line}: {e}")))? {
                    added.insert(port.clone());
                    if !exposed.contains(&port) {
                        exposed.push(port);
                    }
                }
            }
        }
        exposed.sort();
        s.run.oci.set_exposed_ports(Some(exposed));
        let shown: Vec<String> = added.iter().map(|p| format!("{p}:{{}}")).collect();
        s.history(&created, format!("EXPOSE map[{}]", shown.join(" ")), false);
        Ok(())
    }

    fn dispatch_volume(
        &mut self,
        s: &mut StageState,
        instruction: &Instruction,
        volumes: &[String],
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let line = instruction.span.start.line;
        let scope = s.expansion_env();
        let x = |d: &Dispatcher, word: &str| d.expand(word, &scope, instruction);
        let mut all = s.run.oci.volumes().clone().unwrap_or_default();
        let mut expanded = Vec::new();
        for v in volumes {
            let v = x(self, v)?;
            if v.is_empty() {
                return Err(err(format!(
                    "line {line}: VOLUME specified can not be an empty string"
                )));
            }
            if !all.contains(&v) {
                all.push(v.clone());
            }
            expanded.push(v);
        }
        all.sort();
        s.run.oci.set_volumes(Some(all));
        s.history(&created, format!("VOLUME [{}]", expanded.join(" ")), false);
        Ok(())
    }

    fn dispatch_healthcheck(
        &mut self,
        s: &mut StageState,
        h: &crate::parser::Healthcheck,
    ) -> Result<(), PlanError> {
        let created = self.opts.created.clone();
        let health = match h {
            Healthcheck::None => HealthConfig {
                test: vec!["NONE".to_string()],
                ..HealthConfig::default()
            },
            Healthcheck::Cmd {
                test,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            } => HealthConfig {
                test: if test.prepend_shell {
                    vec!["CMD-SHELL".to_string(), test.args.join(" ")]
                } else {
                    std::iter::once("CMD".to_string())
                        .chain(test.args.iter().cloned())
                        .collect()
                },
                interval: *interval,
                timeout: *timeout,
                start_period: *start_period,
                start_interval: *start_interval,
                retries: *retries,
            },
        };
        let message = format!(
            "HEALTHCHECK &{{{} {} {} {} {} {}}}",
            go_quote_list(&health.test),
            go_quote(&go_duration(health.interval)),
            go_quote(&go_duration(health.timeout)),
            go_quote(&go_duration(health.start_period)),
            go_quote(&go_duration(health.start_interval)),
            go_quote_rune(health.retries)
        );
        s.run.healthcheck = Some(health);
        s.history(&created, message, false);
        Ok(())
    }
}

/// A COPY's or ADD's history line as today's BuildKit writes it: the
/// `--parents`, `--chown` and `--chmod` flags (expanded), the path sources,
/// then the heredocs, then the destination as written.
fn copy_history(add: bool, spec: &crate::parser::CopyLike) -> String {
    let mut by = String::from(if add { "ADD" } else { "COPY" });
    if spec.parents {
        by.push_str(" --parents");
    }
    for (flag, value) in [("chown", &spec.chown), ("chmod", &spec.chmod)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            by.push_str(&format!(" --{flag}={value}"));
        }
    }
    for source in &spec.sources {
        if let Source::Path(p) = source {
            by.push_str(&format!(" {p}"));
        }
    }
    for source in &spec.sources {
        if let Source::Heredoc(h) = source {
            by.push_str(&format!(" <<{}", h.name));
        }
    }
    by.push_str(&format!(" {}", spec.dest));
    by
}

/// What today's BuildKit makes of `COPY --link`: with `--chmod` it is an
/// ordinary copy onto the stage (BuildKit links only without `--chmod`);
/// with `--chown` naming a user or group other than `root` it is refused,
/// because a linked copy is made without the image's passwd and group
/// files to look names up in (moby/buildkit#7134).
fn link_rules(spec: &mut crate::parser::CopyLike, at: &Instruction) -> Result<(), PlanError> {
    if !spec.link {
        return Ok(());
    }
    if spec.chmod.is_some() {
        spec.link = false;
        return Ok(());
    }
    let Some(chown) = &spec.chown else {
        return Ok(());
    };
    let by_name = chown
        .split(':')
        .find(|part| *part != "root" && part.parse::<u32>().is_err());
    match by_name {
        Some(name) => Err(err(format!(
            "line {}: --chown={chown} with --link: {name:?} is a name, and a linked copy \
             cannot look names up in the image; use numeric ids (--chown=UID:GID) or drop --link",
            at.span.start.line
        ))),
        None => Ok(()),
    }
}

/// The heredoc a RUN consists of, when its command is that heredoc alone.
fn lone_heredoc(run: &crate::parser::Run) -> Option<&crate::parser::Heredoc> {
    let [doc] = run.heredocs.as_slice() else {
        return None;
    };
    let line = run.command.args.join(" ");
    crate::parser::reader::parse_heredoc_marker(line.trim()).ok()??;
    Some(doc)
}

/// The script of a RUN that is one heredoc starting with `#!`.
fn shebang_script(run: &crate::parser::Run) -> Option<(String, String)> {
    let doc = lone_heredoc(run)?;
    let body = doc.body();
    body.starts_with("#!").then(|| (doc.name.clone(), body))
}

/// A RUN's argv, with heredocs as BuildKit runs them: a command that is
/// just one heredoc runs its body through the shell (or, when the body
/// starts with `#!`, runs it as the file `/dev/pipes/<name>`); a command that uses
/// heredocs in a larger line is passed whole, bodies included, to the shell.
fn run_argv(s: &StageState, run: &crate::parser::Run) -> Result<Vec<String>, String> {
    if run.heredocs.is_empty() {
        return Ok(s.argv(&run.command));
    }
    if !run.command.prepend_shell {
        return Err("heredocs need the shell form of RUN".to_string());
    }
    let mut args = s.shell();
    match lone_heredoc(run) {
        Some(doc) => {
            let body = doc.body();
            args.push(match body.starts_with("#!") {
                true => format!("/dev/pipes/{}", doc.name),
                false => body,
            });
        }
        None => {
            let mut full = run.command.args.join(" ");
            for h in &run.heredocs {
                full.push('\n');
                full.push_str(&h.content);
                full.push_str(&h.name);
            }
            args.push(full);
        }
    }
    Ok(args)
}

/// `80`, `80/udp`, `8000-8002/tcp` → `["80/tcp"]`, … (docker's nat rules).
fn expand_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| -> Result<u32, String> {
        p.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .ok_or_else(|| format!("invalid containerPort: {spec}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!("invalid range specified for containerPort: {spec}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests;
