//! The command line: flags in, exit codes out.
//!
//! This module owns argument parsing (clap) and user-facing output. It
//! calls into the library modules and maps their errors to the exit codes
//! DESIGN.md fixes: 0 ok, 1 build failed, 2 usage or Dockerfile error,
//! 3 environment problem.

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod build;

use crate::executor::sandbox::Network;
use crate::executor::{Executor, IsolationRequest};
use crate::parser::{self, InstructionKind};

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for usage errors and Dockerfile errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "rbuild",
    version,
    about = "Build OCI images from Dockerfiles, with no daemon and no privileges"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile (the default command: `rbuild -t app .`).
    Build(Box<build::BuildCommand>),
    /// Inspect how rbuild reads a Dockerfile.
    #[command(subcommand)]
    Debug(Box<DebugCommand>),
    /// Print the version.
    Version,
    /// Show what isolation this environment allows and which tier RUN steps get.
    Info {
        /// Force a tier instead of the best available.
        #[arg(long, value_enum, default_value_t = IsolationRequest::Auto)]
        isolation: IsolationRequest,
        /// Storage root (default: $RBUILD_ROOT, /var/lib/rbuild as root, ~/.local/share/rbuild).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Remove build cache: dangling blobs and leftovers always; with
    /// --all every cache entry and snapshot; with --keep-storage the least
    /// recently used until the store fits. Named images stay.
    Prune {
        /// Remove every cache entry, snapshot and cache mount.
        #[arg(long)]
        all: bool,
        /// Keep at most this much (e.g. 2g), least recently used first out.
        #[arg(long, value_parser = parse_size_arg)]
        keep_storage: Option<u64>,
        /// Storage root (default: $RBUILD_ROOT, /var/lib/rbuild as root, ~/.local/share/rbuild).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Print a shell completion script: `rbuild completion bash > /etc/bash_completion.d/rbuild`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show how much storage rbuild uses.
    Du {
        /// Storage root (default: $RBUILD_ROOT, /var/lib/rbuild as root, ~/.local/share/rbuild).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Internal: the single-threaded sandbox helper (spec on stdin).
    #[command(name = "__sandbox", hide = true)]
    Sandbox,
    /// Internal: the single-threaded probe helper.
    #[command(name = "__probe", hide = true)]
    Probe {
        /// Scratch dir on the storage file system.
        scratch: PathBuf,
    },
}

/// `--userns-remap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RemapRequest {
    /// Remap where the probe says the kernel can.
    Auto,
    /// Never remap.
    Off,
}

/// Settings shared by every command that runs RUN steps.
#[derive(clap::Args, Debug, Clone)]
struct SandboxArgs {
    /// Isolation tier for RUN steps (auto picks the strongest the probes allow).
    #[arg(long, value_enum, default_value_t = IsolationRequest::Auto)]
    isolation: IsolationRequest,
    /// Memory limit for every RUN (e.g. 64m, 1g).
    #[arg(long, value_parser = parse_size_arg)]
    memory: Option<u64>,
    /// CPU limit for every RUN (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes in every RUN.
    #[arg(long)]
    pids_limit: Option<u64>,
    /// Network for RUN steps: default (a namespace of the step's own with
    /// a slirp4netns link out), none (only lo) or host (needs --allow
    /// network.host).
    #[arg(long, default_value = "default")]
    network: String,
    /// The resolv.conf whose nameservers the default network's DNS
    /// (10.0.2.3) forwards to (default: /etc/resolv.conf).
    #[arg(long, value_name = "FILE")]
    network_resolv_conf: Option<PathBuf>,
    /// Where rbuild is real root, run each RUN step's ids as an unused
    /// host range (a user namespace over idmapped mounts): auto does when
    /// the kernel allows; off runs a step's root as host root.
    #[arg(long, value_enum, default_value_t = RemapRequest::Auto)]
    userns_remap: RemapRequest,
    /// Extra privileged entitlements, as buildx: security.insecure lets
    /// `RUN --security=insecure` run; network.host lets `--network host`
    /// and `RUN --network=host` share the host's network.
    #[arg(long, value_delimiter = ',')]
    allow: Vec<String>,
    /// Storage root (default: $RBUILD_ROOT, /var/lib/rbuild as root, ~/.local/share/rbuild).
    #[arg(long)]
    root: Option<PathBuf>,
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    crate::units::parse_size(text)
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum DebugCommand {
    /// Print the parse tree in BuildKit's dump format (FILE `-` = stdin).
    DumpAst {
        /// The Dockerfile to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Parse and validate a Dockerfile, then summarise its stages.
    Check {
        /// The Dockerfile to read, or `-` for standard input.
        file: PathBuf,
    },
    /// Build a Dockerfile (no COPY/ADD yet), running its steps in sandboxes
    /// with the step cache, and write the image as an OCI layout.
    Run(DebugRun),
}

/// Reads a Dockerfile from a path or stdin; returns (display name, text).
fn read_dockerfile(path: &PathBuf) -> Result<(String, String), String> {
    let mut bytes = Vec::new();
    let name = if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the Dockerfile from standard input: {e}"))?;
        "<stdin>".to_string()
    } else {
        bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read Dockerfile {}: {e}", path.display()))?;
        path.display().to_string()
    };
    // Invalid UTF-8 is replaced rather than rejected, as Go's parser would
    // carry the bytes through.
    Ok((name, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Reads and parses a Dockerfile; on failure prints why and gives the
/// exit code.
fn load_dockerfile(path: &PathBuf) -> Result<(String, parser::Dockerfile), i32> {
    let (name, text) = read_dockerfile(path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let dockerfile = parser::parse(&text, &name).map_err(|diagnostic| {
        eprintln!("{diagnostic}");
        EXIT_USAGE
    })?;
    Ok((name, dockerfile))
}

fn dump_ast(path: &PathBuf) -> i32 {
    let (name, text) = match read_dockerfile(path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    match parser::parse_raw(&text, &name) {
        Ok(raw) => {
            print!("{}", parser::dump(&raw));
            for w in &raw.warnings {
                eprintln!("{name}:{}: warning: {}", w.line, w.message);
            }
            EXIT_OK
        }
        Err(diagnostic) => {
            eprintln!("{diagnostic}");
            EXIT_USAGE
        }
    }
}

fn check(path: &PathBuf) -> i32 {
    let (name, dockerfile) = match load_dockerfile(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for w in &dockerfile.warnings {
        eprintln!("{name}:{}: warning: {}", w.line, w.message);
    }
    let total: usize = dockerfile
        .stages
        .iter()
        .map(|s| s.instructions.len() + 1)
        .sum();
    println!(
        "{name}: ok, {} stage(s), {} instruction(s), {} global ARG(s)",
        dockerfile.stages.len(),
        total + dockerfile.meta_args.len(),
        dockerfile.meta_args.len()
    );
    for (i, stage) in dockerfile.stages.iter().enumerate() {
        let label = stage
            .from
            .name
            .as_ref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let runs = stage
            .instructions
            .iter()
            .filter(|i| matches!(i.kind, InstructionKind::Run(_)))
            .count();
        println!(
            "  stage {i}{label}: FROM {} ({} instructions, {runs} RUN)",
            stage.from.image,
            stage.instructions.len()
        );
    }
    EXIT_OK
}

/// Inserts `build` when the first argument is not a command, so that
/// `rbuild -t app:1.0 .` means `rbuild build -t app:1.0 .` (help and
/// version flags keep their meaning).
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const COMMANDS: &[&str] = &[
        "build",
        "debug",
        "version",
        "info",
        "prune",
        "du",
        "completion",
        "help",
        "__sandbox",
        "__probe",
    ];
    const TOP_FLAGS: &[&str] = &["-h", "--help", "-V", "--version"];
    let insert = match args.get(1).and_then(|a| a.to_str()) {
        None => false,
        Some(first) => !COMMANDS.contains(&first) && !TOP_FLAGS.contains(&first),
    };
    if insert {
        args.insert(1, "build".into());
    }
    args
}

/// Runs the CLI with the process arguments; returns the exit code.
pub fn main() -> i32 {
    // What a build makes must not depend on the caller's umask: steps run
    // with docker's 0022, and so does everything rbuild itself creates.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let cli = match Cli::try_parse_from(with_default_command(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Build(args) => build::build(*args),
        Command::Version => {
            println!("rbuild {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Debug(debug) => match *debug {
            DebugCommand::DumpAst { file } => dump_ast(&file),
            DebugCommand::Check { file } => check(&file),
            DebugCommand::Run(args) => debug_run(args),
        },
        Command::Sandbox => crate::executor::sandbox::helper_main(),
        Command::Probe { scratch } => crate::executor::probe::probe_main(&scratch),
        Command::Info { isolation, root } => info(isolation, root),
        Command::Prune {
            all,
            keep_storage,
            root,
        } => prune(all, keep_storage, root),
        Command::Du { root } => du(root),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "rbuild", &mut std::io::stdout());
            EXIT_OK
        }
    }
}

/// Exit code for failed builds.
pub const EXIT_BUILD_FAILED: i32 = 1;
/// Exit code for environment problems (isolation, registry).
pub const EXIT_ENVIRONMENT: i32 = 3;

fn storage_root(root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(crate::cache::default_root)
}

/// Finds the helper binary and probes what the environment allows.
fn probe_environment(root: &std::path::Path) -> Result<(Executor, crate::executor::Probes), i32> {
    let executor = Executor::current().map_err(|e| {
        eprintln!("error: locating the rbuild binary: {e}");
        EXIT_ENVIRONMENT
    })?;
    let scratch = crate::executor::probe::scratch_dir(&root.join("snapshots"));
    let probes = executor.probe(&scratch).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_ENVIRONMENT
    })?;
    Ok((executor, probes))
}

fn prune(all: bool, keep_storage: Option<u64>, root: Option<PathBuf>) -> i32 {
    use crate::units::human_bytes;
    let root = storage_root(root);
    match crate::gc::prune(&root, crate::gc::PruneOptions { all, keep_storage }) {
        Ok(report) => {
            println!(
                "removed {} cache entries, {} blobs, {} snapshots: {} freed",
                report.entries,
                report.blobs,
                report.snapshots,
                human_bytes(report.freed)
            );
            if report.builds_running {
                println!("builds are running: their data and all snapshots were kept");
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: pruning {}: {e}", root.display());
            EXIT_ENVIRONMENT
        }
    }
}

fn du(root: Option<PathBuf>) -> i32 {
    use crate::units::human_bytes;
    let root = storage_root(root);
    let usage = crate::gc::usage(&root);
    println!("storage root: {}", root.display());
    println!(
        "blobs:        {:>6}  {}",
        usage.blobs,
        human_bytes(usage.blob_bytes)
    );
    println!(
        "snapshots:    {:>6}  {}",
        usage.snapshots,
        human_bytes(usage.snapshot_bytes)
    );
    println!(
        "cache mounts:         {}",
        human_bytes(usage.cache_mount_bytes)
    );
    println!("cache entries: {:>5}", usage.entries);
    println!("named images:  {:>5}", usage.images);
    println!("total:                {}", human_bytes(usage.total()));
    EXIT_OK
}

fn info(isolation: IsolationRequest, root: Option<PathBuf>) -> i32 {
    let root = storage_root(root);
    println!("rbuild {}", env!("CARGO_PKG_VERSION"));
    println!("storage root: {}", root.display());
    let (_, probes) = match probe_environment(&root) {
        Ok(found) => found,
        Err(code) => return code,
    };
    for line in probes.describe() {
        println!("{line}");
    }
    match crate::executor::choose(&probes, isolation) {
        Ok(plan) => {
            println!(
                "tier: {} (namespaces: {:?}, user namespace: {}, snapshots: {:?}, limits: {})",
                plan.tier,
                plan.namespaces,
                if plan.userns { "yes" } else { "no" },
                plan.snapshots,
                if plan.cgroups {
                    "available"
                } else {
                    "unavailable"
                }
            );
            if let Some(why) = &plan.fallback {
                println!(
                    "tier chosen because no namespace can be made here: {why} (RUN steps run \
                     chrooted, with no /proc, sharing this container's processes and network)"
                );
            }
            if let Some(range) = plan.remap {
                println!(
                    "step ids: remapped, a step's uid 0 is host uid {} (gid {}), {} ids",
                    range.uid, range.gid, range.count
                );
            }
            if let Ok(maps) = std::env::var(crate::userns::ENTERED_ENV) {
                println!(
                    "user namespace: rbuild's own, over this user's subordinate ids \
                     (newuidmap; {maps})"
                );
            }
            if !plan.userns && plan.remap.is_none() && crate::userns::nested() {
                match crate::executor::sandbox::full_range() {
                    Some(count) => println!(
                        "step ids: {count} ids from 0, each its own (those of the user \
                         namespace rbuild runs in)"
                    ),
                    None => println!("step ids: root only (the user namespace rbuild runs in)"),
                }
            }
            if plan.userns {
                match crate::executor::sandbox::full_range() {
                    Some(count) => println!(
                        "step ids: {count} ids from 0, each its own (root maps every id it \
                         has into the step's user namespace)"
                    ),
                    None => println!(
                        "step ids: root only (a user namespace mapping this user alone; \
                         a USER other than root cannot run{})",
                        match crate::userns::outcome() {
                            Some(crate::userns::Entered::No(why)) =>
                                format!("; no subordinate ids: {why}"),
                            _ => String::new(),
                        }
                    ),
                }
            }
            println!("network: {}", network_line(&plan));
            EXIT_OK
        }
        Err(message) => {
            println!("tier: refuse");
            eprintln!("error: {message}");
            EXIT_ENVIRONMENT
        }
    }
}

/// What RUN's default network is in this tier, for `rbuild info`.
fn network_line(plan: &crate::executor::Plan) -> String {
    use crate::executor::{sandbox, Namespaces};
    if plan.namespaces == Namespaces::Chroot {
        return "the host's for every step (the chroot tier makes no network namespace; \
                --network=none is refused)"
            .to_string();
    }
    match sandbox::stack_problem(plan.userns || plan.remap.is_some()) {
        None => format!(
            "default: a namespace of the step's own with lo and tap0 through slirp4netns \
             (DNS at {}; the host's loopback, own addresses and 169.254.0.0/16 unreachable); \
             none: lo only",
            sandbox::STACK_DNS
        ),
        Some(problem) => format!("default: lo only, since {problem}; none: lo only"),
    }
}

/// `rbuild debug run`'s flags.
#[derive(clap::Args, Debug)]
struct DebugRun {
    /// The Dockerfile.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Write the image to this OCI layout directory.
    #[arg(long)]
    oci_dir: PathBuf,
    /// Name the image gets in the layout.
    #[arg(long, default_value = "rbuild/debug:latest")]
    tag: String,
    /// Build context (COPY sources, RUN --mount=type=bind).
    #[arg(long)]
    context: Option<PathBuf>,
    #[command(flatten)]
    build: BuildFlags,
}

/// Flags every command that builds shares.
#[derive(clap::Args, Debug, Clone)]
struct BuildFlags {
    /// How progress is shown: auto (tty on a terminal, plain otherwise), tty, plain, json, quiet.
    #[arg(long, value_enum, default_value_t = crate::progress::Mode::Auto)]
    progress: crate::progress::Mode,
    /// The busybox binary `FROM busybox` is built from when no local image
    /// has that name (an offline base; Debian's busybox-static).
    #[arg(long, default_value = crate::image::busybox::DEBIAN_BUSYBOX)]
    busybox: PathBuf,
    /// Clamp layer mtimes and set created times (default: $SOURCE_DATE_EPOCH).
    #[arg(long)]
    source_date_epoch: Option<i64>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR.
    #[arg(long)]
    secret: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK), or
    /// ID=SOCKET, or ID=KEY[,KEY] (a private agent holding the keys).
    #[arg(long)]
    ssh: Vec<String>,
    /// A build argument: KEY=VALUE, or KEY to take it from the environment.
    #[arg(long = "build-arg")]
    build_arg: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Run every step instead of reusing cached results.
    #[arg(long)]
    no_cache: bool,
    /// Run every step of these stages (repeatable).
    #[arg(long = "no-cache-filter")]
    no_cache_filter: Vec<String>,
    /// A registry to reach over plain HTTP (loopback always is).
    #[arg(long = "insecure-registry")]
    insecure_registry: Vec<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

fn parse_secret(spec: &str) -> Result<(String, crate::executor::mounts::SecretSource), String> {
    use crate::executor::mounts::SecretSource;
    let mut id = None;
    let mut source = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => source = Some(SecretSource::File(v.into())),
            Some(("env", v)) => source = Some(SecretSource::Env(v.to_string())),
            Some(("type", _)) => {}
            _ => {
                return Err(format!(
                    "invalid --secret {spec:?}: expected id=ID,src=PATH or id=ID,env=VAR"
                ))
            }
        }
    }
    let id = id.ok_or_else(|| format!("invalid --secret {spec:?}: id= is missing"))?;
    let source = source.unwrap_or_else(|| SecretSource::Env(id.clone()));
    Ok((id, source))
}

/// The agents `--ssh` flags forward (none without flags).
fn ssh_forwards(
    specs: &[String],
    root: &std::path::Path,
) -> Result<Option<std::sync::Arc<crate::executor::ssh::Forwards>>, i32> {
    use crate::executor::ssh;
    if specs.is_empty() {
        return Ok(None);
    }
    let flags: Result<Vec<_>, String> = specs.iter().map(|s| ssh::parse_flag(s)).collect();
    let started = flags.and_then(|f| ssh::Forwards::start(&f, &root.join("tmp")));
    match started {
        Ok(forwards) => Ok(Some(std::sync::Arc::new(forwards))),
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// `--build-arg K=V` and `--build-arg K` (the value from the environment;
/// left out when the variable is unset, as docker does).
fn parse_build_args(specs: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        match spec.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(spec) {
                    out.insert(spec.clone(), v);
                }
            }
        }
    }
    out
}

/// The executor and build options for `flags`: probes the isolation,
/// checks limits, and reads the context's ignore file.
/// `--network` and `--allow`: RUN's network, and the entitlements.
fn sandbox_flags(sandbox: &SandboxArgs) -> Result<SandboxFlags, String> {
    let network = match sandbox.network.as_str() {
        "none" => Network::None,
        "default" => Network::Private,
        "host" => Network::Host,
        other => return Err(format!("--network {other}: expected default, host or none")),
    };
    let mut flags = SandboxFlags {
        network,
        allow_insecure: false,
        allow_network_host: false,
    };
    for entitlement in &sandbox.allow {
        match entitlement.as_str() {
            "security.insecure" => flags.allow_insecure = true,
            "network.host" => flags.allow_network_host = true,
            other => {
                return Err(format!(
                    "--allow {other}: expected security.insecure or network.host"
                ))
            }
        }
    }
    if flags.network == Network::Host && !flags.allow_network_host {
        return Err("--network host needs the network.host entitlement: \
                    pass --allow network.host"
            .into());
    }
    Ok(flags)
}

/// What `--network` and `--allow` ask for.
struct SandboxFlags {
    network: Network,
    allow_insecure: bool,
    allow_network_host: bool,
}

fn prepare_build(
    flags: &BuildFlags,
    context: Option<PathBuf>,
    dockerfile: &std::path::Path,
) -> Result<(Executor, crate::builder::BuildOptions), i32> {
    let usage = |message: String| {
        eprintln!("error: {message}");
        EXIT_USAGE
    };
    let secrets = flags
        .secret
        .iter()
        .map(|spec| parse_secret(spec))
        .collect::<Result<std::collections::HashMap<_, _>, _>>()
        .map_err(usage)?;
    let sandbox = sandbox_flags(&flags.sandbox).map_err(usage)?;
    // Absolute: the sandbox helper changes directory before copying.
    let context = context
        .map(|c| {
            std::fs::canonicalize(&c).map_err(|e| format!("build context {}: {e}", c.display()))
        })
        .transpose()
        .map_err(usage)?;
    let (ignore_text, ignore) = match &context {
        Some(dir) => crate::context::IgnoreRules::load_text(dir, dockerfile)
            .map_err(|e| usage(e.to_string()))?,
        None => Default::default(),
    };
    let root = storage_root(flags.sandbox.root.clone());
    let (executor, probes) = probe_environment(&root)?;
    let mut plan = match crate::executor::choose(&probes, flags.sandbox.isolation) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("error: {message}");
            return Err(EXIT_ENVIRONMENT);
        }
    };
    if flags.sandbox.userns_remap == RemapRequest::Off {
        plan.remap = None;
    }
    let limits = crate::executor::Limits {
        memory: flags.sandbox.memory,
        cpus: flags.sandbox.cpus,
        pids: flags.sandbox.pids_limit,
    };
    if limits.any() && !probes.cgroup.writable {
        eprintln!(
            "error: --memory, --cpus and --pids-limit need a writable cgroup, and this one is not: {}",
            probes.cgroup.problem.as_deref().unwrap_or("no cgroupfs")
        );
        return Err(EXIT_ENVIRONMENT);
    }
    if std::env::var("RBUILD_SNAPSHOTS").as_deref() == Ok("copy") {
        // Forces the copy tier's snapshots and differ (tests, odd file systems).
        plan.snapshots = crate::executor::SnapshotMode::Copy;
    }
    let source_date_epoch = flags.source_date_epoch.or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    let ssh = ssh_forwards(&flags.ssh, &root)?;
    let options = crate::builder::BuildOptions {
        storage: root,
        plan,
        cgroups: probes.cgroup.clone(),
        limits,
        network: sandbox.network,
        network_resolv_conf: flags
            .sandbox
            .network_resolv_conf
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        allow_insecure: sandbox.allow_insecure,
        allow_network_host: sandbox.allow_network_host,
        source_date_epoch,
        busybox: flags.busybox.clone(),
        context,
        ignore_text,
        ignore,
        secrets,
        ssh,
        build_args: parse_build_args(&flags.build_arg),
        target: flags.target.clone(),
        no_cache: flags.no_cache,
        no_cache_filter: flags.no_cache_filter.clone(),
        insecure_registries: flags.insecure_registry.clone(),
        labels: Default::default(),
        pull: false,
        skip_tls_verify: false,
        ca_certs: Vec::new(),
    };
    Ok((executor, options))
}

fn debug_run(args: DebugRun) -> i32 {
    let (_, dockerfile) = match load_dockerfile(&args.file) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let tag: crate::image::reference::Reference = match args.tag.parse() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --tag {}: {e}", args.tag);
            return EXIT_USAGE;
        }
    };
    let (executor, options) = match prepare_build(&args.build, args.context.clone(), &args.file) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let mut renderer = crate::progress::renderer(args.build.progress.resolve());
    let mut log = |event: &crate::progress::Event| renderer.event(event);
    match crate::builder::build(&dockerfile, &options, executor, &mut log) {
        Ok(built) => {
            renderer.summary(&crate::progress::Summary {
                ran: built.steps,
                cached: built.cached,
                elapsed: std::time::Duration::ZERO,
                phases: built.phases.clone(),
                image: built.image.config_digest.to_string(),
                manifest: built.image.manifest_digest.to_string(),
                size: built.image.layers.iter().map(|l| l.size).sum(),
            });
            let names = [tag];
            // An OCI layout ships the image: its layers compressed, as
            // `build -o type=oci` writes them.
            let written = crate::image::layout::compressed_image(&built.store, &built.image, None)
                .and_then(|image| {
                    crate::image::layout::write_oci_layout_dir(
                        &built.store,
                        &args.oci_dir,
                        &[(&image, &names)],
                    )?;
                    Ok(image)
                });
            let image = match written {
                Ok(image) => image,
                Err(e) => {
                    eprintln!("error: writing {}: {e}", args.oci_dir.display());
                    return EXIT_ENVIRONMENT;
                }
            };
            println!("{}", image.manifest_digest);
            EXIT_OK
        }
        Err(failed) => {
            eprintln!("error: {failed}");
            failed.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BuildError, Failure};

    #[test]
    fn build_failures_map_to_the_exit_constants() {
        let code = |failure| {
            BuildError {
                failure,
                location: None,
                message: String::new(),
            }
            .exit_code()
        };
        assert_eq!(code(Failure::Step), EXIT_BUILD_FAILED);
        assert_eq!(code(Failure::Dockerfile), EXIT_USAGE);
        assert_eq!(code(Failure::Environment), EXIT_ENVIRONMENT);
    }
}
