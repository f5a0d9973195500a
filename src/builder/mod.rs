//! The builder: the solver's plan and op graph executed for real. Every
//! op's cache key is known before anything runs and all cache lookups are
//! done up front; ops whose entries hit are not run, and stages only hit
//! ops read from are not built at all. The rest are run by the
//! [`scheduler`](crate::scheduler) as soon as the ops they wait for are
//! done, a bounded number at a time: each RUN in a sandbox, each COPY
//! through the sandbox helper, each change a layer. The first failure
//! cancels the ops still running.
//!
//! Files: `source.rs` (the Source op and where bases come from),
//! `exec.rs` (the Exec op: a RUN), `file.rs` (the File op: COPY, ADD,
//! WORKDIR), `step.rs` (what every step op shares: events, cache hits,
//! the cache entry), `inputs.rs` (the content a step's key needs),
//! `schedule.rs` (the graph handed to the scheduler), `shared.rs` (what
//! every op of a build shares).

mod exec;
mod file;
mod inputs;
mod schedule;
mod shared;
mod source;
mod step;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use crate::blob::{Digest, LayerBlob};
use crate::cache::{CacheIndex, ContentStore};
use crate::executor::mounts::SecretSource;
use crate::executor::sandbox::Network;
use crate::executor::{CgroupSupport, Executor, Limits, Plan, StepRunner};
use crate::image::config::ImageConfig;
use crate::image::layout::{store_image, StoredImage};
use crate::image::media::MediaTypes;
use crate::parser::Dockerfile;
use crate::progress::Event;
use crate::snapshot::SnapshotStore;
use crate::solver::graph::BuildGraph;
use crate::solver::{self, Base, PlanOptions, Platform, StepKind};
use shared::{How, OpResult, Shared};

/// Settings for a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `$RBUILD_ROOT`: content store, snapshots, cache mounts.
    pub storage: PathBuf,
    /// The isolation plan.
    pub plan: Plan,
    /// Cgroup support found by the probe.
    pub cgroups: CgroupSupport,
    /// Limits for every RUN.
    pub limits: Limits,
    /// The network of a RUN that asks for none in particular
    /// (`--network`): its own by default.
    pub network: crate::executor::sandbox::Network,
    /// `--network-resolv-conf`: the resolv.conf the default network's DNS
    /// forwards to, when not the host's.
    pub network_resolv_conf: Option<PathBuf>,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
    /// `--allow network.host`: `RUN --network=host` may run.
    pub allow_network_host: bool,
    /// Clamp layer mtimes and set created times.
    pub source_date_epoch: Option<i64>,
    /// The busybox binary `FROM busybox` is built from.
    pub busybox: PathBuf,
    /// Build context (COPY sources, bind mounts).
    pub context: Option<PathBuf>,
    /// The context's `.dockerignore` text.
    pub ignore_text: String,
    /// The same, parsed.
    pub ignore: crate::context::IgnoreRules,
    /// Secrets by id.
    pub secrets: HashMap<String, SecretSource>,
    /// SSH agents by id (`--ssh`), for `RUN --mount=type=ssh`.
    pub ssh: Option<Arc<crate::executor::ssh::Forwards>>,
    /// `--build-arg`s.
    pub build_args: std::collections::BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`: run every step (results are still recorded).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages that run every step.
    pub no_cache_filter: Vec<String>,
    /// Registries reached over plain HTTP besides loopback.
    pub insecure_registries: Vec<String>,
    /// `--label`s added to the image config.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--pull`: take base images from their registry even when an image
    /// of that name is stored here.
    pub pull: bool,
    /// Accept any registry TLS certificate.
    pub skip_tls_verify: bool,
    /// Extra CA certificates (PEM) for registries.
    pub ca_certs: Vec<PathBuf>,
}

/// The image built and where its blobs are.
#[derive(Debug)]
pub struct Built {
    /// The content store holding every blob.
    pub store: ContentStore,
    /// The image.
    pub image: StoredImage,
    /// Steps that ran.
    pub steps: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Time per phase of the build (plan, keys, steps, image).
    pub phases: Vec<(String, std::time::Duration)>,
    /// How many of the image's layers come from its base image (the rest
    /// this build made).
    pub base_layers: usize,
    /// The image's config.
    pub config: ImageConfig,
    /// The build's lease: drop it once the image has been exported.
    pub lease: crate::gc::Lease,
}

fn created(epoch: Option<i64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What kind of failure ended a build; it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The Dockerfile asks for something impossible or not allowed (an
    /// unknown stage, a missing entitlement, a plan error): exit 2.
    Dockerfile,
    /// A step ran, or tried to, and failed (a RUN's exit code, a COPY
    /// source missing, a download or checkout refused): exit 1.
    Step,
    /// The environment failed the build: storage, the sandbox, a base
    /// image that could not be pulled: exit 3.
    Environment,
}

/// Where in the Dockerfile a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The stage's name (`stage-N` when it has none).
    pub stage: String,
    /// The instruction's line (1-based).
    pub line: usize,
    /// Its column (1-based).
    pub column: usize,
}

/// A failed build: its kind, where it failed, and the message that names
/// the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// What failed.
    pub failure: Failure,
    /// The step to blame, when one is.
    pub location: Option<Location>,
    /// What to tell the user (with `Dockerfile:LINE:COLUMN` where a step
    /// is to blame).
    pub message: String,
}

impl BuildError {
    fn new(failure: Failure, message: impl std::fmt::Display) -> BuildError {
        BuildError {
            failure,
            location: None,
            message: message.to_string(),
        }
    }

    /// The same error, blamed on the step at `location`.
    fn at(self, location: Location) -> BuildError {
        BuildError {
            location: Some(location),
            ..self
        }
    }

    /// An executor failure of the step `at`: the user's when `USER` names
    /// nobody the root has or the build was cancelled, the environment's
    /// otherwise (snapshots, layers, the sandbox).
    fn of_step(at: &str, e: crate::executor::StepError) -> BuildError {
        use crate::executor::StepError;
        let failure = match e {
            StepError::User(_) | StepError::Cancelled => Failure::Step,
            StepError::Snapshot(_)
            | StepError::Layer(_)
            | StepError::Cgroup(_)
            | StepError::Environment(_) => Failure::Environment,
        };
        BuildError::new(failure, format!("{at}: {e}"))
    }

    /// The exit code the README gives this failure (1 a step failed, 2 a
    /// Dockerfile error, 3 the environment).
    pub fn exit_code(&self) -> i32 {
        match self.failure {
            Failure::Step => 1,
            Failure::Dockerfile => 2,
            Failure::Environment => 3,
        }
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}

/// A message alone is a step's failure (a source missing, a download
/// refused); the environment's are made with `environment`.
impl From<String> for BuildError {
    fn from(message: String) -> BuildError {
        step_failed(message)
    }
}

/// A failure of the step `at` whose module says whether the machine is
/// to blame (`machine`: git missing, a read failing as a disk does, a
/// cache dir that cannot be made) or the step (a source missing, a bad
/// pattern, a secret not given).
fn classed(at: &str, e: impl std::fmt::Display, machine: bool) -> BuildError {
    let message = format!("{at}: {e}");
    if machine {
        environment(message)
    } else {
        step_failed(message)
    }
}

/// A context failure of the step `at`, classed by the context module.
fn of_context(at: &str, e: crate::context::ContextError) -> BuildError {
    let machine = e.is_environment();
    classed(at, e, machine)
}

fn environment(e: impl std::fmt::Display) -> BuildError {
    BuildError::new(Failure::Environment, e)
}

fn step_failed(e: impl std::fmt::Display) -> BuildError {
    BuildError::new(Failure::Step, e)
}

/// Builds `dockerfile` (the target stage and what it needs); `log` gets
/// progress and output lines.
pub fn build(
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    executor: Executor,
    log: &mut dyn FnMut(&Event),
) -> Result<Built, BuildError> {
    let mut phases = crate::progress::Phases::default();
    log(&Event::Note(format!(
        "isolation: {} (snapshots: {:?})",
        options.plan.tier, options.plan.snapshots
    )));
    if let Some(why) = &options.plan.fallback {
        log(&Event::Warning(format!(
            "no namespace can be made here ({why}): RUN steps run chrooted in a copy of \
             their root, with no /proc, sharing this container's processes and network \
             (--isolation=chroot chooses this on purpose)"
        )));
    }
    let store = ContentStore::open(&options.storage).map_err(environment)?;
    let runner = step_runner(options, executor, &store, log)?;
    // Held until the caller is done with the image: collection never
    // takes what this build uses.
    let mut lease = crate::gc::Lease::acquire(&options.storage).map_err(|e| {
        environment(format!(
            "taking a lease on {}: {e}",
            options.storage.display()
        ))
    })?;
    let when = created(options.source_date_epoch);
    let (plan, bases) = plan(dockerfile, options, &store, &when, log)?;
    phases.mark("plan");
    let base_blobs: Vec<Digest> = bases
        .values()
        .flat_map(StoredImage::blobs)
        .cloned()
        .collect();
    lease
        .hold(|| ((), base_blobs))
        .map_err(|e| environment(format!("recording the lease: {e}")))?;
    let index = CacheIndex::open(&options.storage).map_err(environment)?;
    let shared = Shared {
        options: options.clone(),
        runner,
        store: store.clone(),
        index,
        bases,
        when: when.clone(),
        plan,
        graph: None,
        downloads: Default::default(),
        checkouts: Default::default(),
        hashes: match &options.context {
            Some(context) => crate::context::hashcache::HashCache::load(&options.storage, context),
            None => Default::default(),
        },
        next_id: std::sync::atomic::AtomicUsize::new(1),
        recording: Default::default(),
    };
    let shared = Arc::new(with_graph(shared, log)?);
    phases.mark("keys");
    let solved = schedule::solve(&shared, &mut lease, log);
    // Layers still being written land (and are recorded) even when a
    // step failed: what finished stays cached.
    let landed = shared.finish_layers();
    let results = solved?;
    landed?;
    phases.mark("steps");
    let (steps, cached) = results.values().fold((0, 0), |(s, c), r| match r.how {
        How::Ran => (s + 1, c),
        How::Cached => (s, c + 1),
        How::Base => (s, c),
    });
    let (image, config, base_layers) = store_target(&shared, &results)?;
    phases.mark("image");
    Ok(Built {
        store,
        image,
        steps,
        cached,
        phases: phases.list(),
        base_layers,
        config,
        lease,
    })
}

/// The build's step runner over its stores, and a warning when RUN steps
/// cannot get the default network.
fn step_runner(
    options: &BuildOptions,
    executor: Executor,
    store: &ContentStore,
    log: &mut dyn FnMut(&Event),
) -> Result<StepRunner, BuildError> {
    let snapshots = SnapshotStore::open(options.storage.join("snapshots")).map_err(environment)?;
    let runner = StepRunner::new(
        executor,
        options.plan.clone(),
        store.clone(),
        snapshots,
        options.cgroups.clone(),
        options.limits,
        options.source_date_epoch,
    )
    .map_err(environment)?;
    if let (Some(problem), Network::Private) = (runner.stack_problem(), options.network) {
        // Never the host's network in its place: a step that needs one
        // fails, and this line says why.
        log(&Event::Warning(format!(
            "RUN steps get only lo, not the default network: {problem}"
        )));
    }
    Ok(runner)
}

/// Plans the build, resolving its bases as the planner names them; warns
/// of what the plan warns of and refuses what needs an entitlement.
fn plan(
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    store: &ContentStore,
    when: &str,
    log: &mut dyn FnMut(&Event),
) -> Result<(solver::Plan, HashMap<String, StoredImage>), BuildError> {
    let mut bases = source::Bases::default();
    let plan_options = PlanOptions {
        build_args: options.build_args.clone(),
        target: options.target.clone(),
        target_platform: Platform::host(),
        build_platform: Platform::host(),
        labels: options.labels.clone(),
        created: when.to_string(),
    };
    let mut failed: Option<source::BaseError> = None;
    // The planner words a base's failure into its own error; the typed
    // one is kept aside to choose the exit code.
    let plan = solver::plan(dockerfile, &plan_options, &mut |name, platform| {
        bases
            .resolve(options, store, name, platform, &mut *log)
            .map_err(|e| {
                let text = e.to_string();
                failed = Some(e);
                text
            })
    })
    .map_err(|e| match failed.take() {
        Some(base) if base.is_environment() => environment(format!("Dockerfile: {e}")),
        _ => BuildError::new(Failure::Dockerfile, format!("Dockerfile: {e}")),
    })?;
    for warning in &plan.warnings {
        log(&Event::Warning(warning.clone()));
    }
    check_entitlements(&plan, options).map_err(|e| BuildError::new(Failure::Dockerfile, e))?;
    Ok((plan, bases.images))
}

/// `shared` with its op graph: every key, from content, before anything
/// runs (context files hashed, remembered for the next build).
fn with_graph(shared: Shared, log: &mut dyn FnMut(&Event)) -> Result<Shared, BuildError> {
    let graph = crate::progress::track(
        "hashing the context",
        None,
        &shared.hashes.hashed,
        log,
        || {
            BuildGraph::new(
                &shared.plan,
                &|name| shared.bases.get(name).map(|b| b.manifest_digest.clone()),
                &mut |stage, step, stage_keys| {
                    inputs::step_inputs(&shared, stage, step, stage_keys)
                },
            )
        },
    )?;
    if let Err(e) = shared.hashes.save() {
        log(&Event::Warning(format!(
            "warning: saving the context hash cache: {e}"
        )));
    }
    Ok(Shared {
        graph: Some(graph),
        ..shared
    })
}

/// Stores the target's image: its layers, and its config with what only
/// the build knows. Also says how many layers are the base image's.
fn store_target(
    shared: &Shared,
    results: &HashMap<NodeIndex, OpResult>,
) -> Result<(StoredImage, ImageConfig, usize), BuildError> {
    let plan = &shared.plan;
    let graph = shared.graph();
    let target = plan.stages.last().expect("a plan has a target");
    let tail = *graph.stages[&target.index].last().expect("non-empty");
    // Written by now (`Shared::finish_layers`).
    let layers = crate::snapshot::Layer::wait_all(&results[&tail].layers)
        .map_err(|e| environment(format!("writing a layer of the image: {e}")))?;
    let config =
        final_config(plan, graph, results, target, &layers, &shared.when).map_err(step_failed)?;
    // The root of the target's FROM-stage chain has the base image.
    let mut root = target;
    while let Base::Stage(j) = root.base {
        root = shared.stage(j);
    }
    let base_layers = match &root.base {
        Base::Image(name) => shared.bases[name].layers.len(),
        _ => 0,
    };
    let image =
        store_image(&shared.store, &config, &layers, MediaTypes::Oci).map_err(environment)?;
    Ok((image, config, base_layers))
}

/// Refuses a plan that asks for more than the command line allows, before
/// anything runs (cached steps included, as BuildKit does).
fn check_entitlements(plan: &solver::Plan, options: &BuildOptions) -> Result<(), String> {
    let refused = plan.stages.iter().flat_map(|s| &s.steps).find_map(|step| {
        let StepKind::Run(run) = &step.kind else {
            return None;
        };
        if run.security == crate::parser::SecurityMode::Insecure && !options.allow_insecure {
            Some((step, "RUN --security=insecure", "security.insecure"))
        } else if run.network == crate::parser::NetworkMode::Host && !options.allow_network_host {
            Some((step, "RUN --network=host", "network.host"))
        } else {
            None
        }
    });
    match refused {
        Some((step, what, entitlement)) => Err(format!(
            "Dockerfile:{}:{}: {}: {what} needs the {entitlement} entitlement: \
             pass --allow {entitlement}",
            step.line,
            step.column,
            shown(step)
        )),
        None => Ok(()),
    }
}

/// The target's config with the facts only the build knows: each step's
/// created time and whether it made a layer (along the whole chain of
/// `FROM <stage>` stages), config-only entries dated like the step before
/// them, and the rootfs diff_ids.
fn final_config(
    plan: &solver::Plan,
    graph: &BuildGraph,
    results: &HashMap<NodeIndex, OpResult>,
    target: &solver::StagePlan,
    layers: &[LayerBlob],
    when: &str,
) -> Result<ImageConfig, String> {
    let mut config = target.config.clone();
    let stage_of = |i: usize| plan.stages.iter().find(|s| s.index == i).expect("planned");
    // The chain of stages, root first.
    let mut chain = vec![target];
    while let Base::Stage(j) = chain.last().expect("non-empty").base {
        chain.push(stage_of(j));
    }
    chain.reverse();
    let mut step_entries = std::collections::HashSet::new();
    for stage in &chain {
        for (n, step) in stage.steps.iter().enumerate() {
            let node = graph.stages[&stage.index][n + 1];
            let result = &results[&node];
            let entry = &mut config.history[step.history_index];
            entry.set_created(Some(result.created.clone()));
            if result.empty {
                entry.set_empty_layer(Some(true));
            }
            step_entries.insert(step.history_index);
        }
    }
    let image_history = chain[0].base_history_len;
    let mut current = config
        .history
        .get(image_history.wrapping_sub(1))
        .and_then(|h| h.created().clone())
        .unwrap_or_else(|| when.to_string());
    for (i, entry) in config.history.iter_mut().enumerate().skip(image_history) {
        if step_entries.contains(&i) {
            current = entry.created().clone().unwrap_or_else(|| current.clone());
        } else {
            entry.set_created(Some(current.clone()));
        }
    }
    config.rootfs = crate::image::config::rootfs_of(layers)?;
    config.created = Some(
        config
            .history
            .last()
            .and_then(|h| h.created().clone())
            .unwrap_or_else(|| when.to_string()),
    );
    Ok(config)
}

/// A step's instruction as progress lines and errors show it: the
/// credentials of any URL in it hidden.
fn shown(step: &solver::Step) -> String {
    crate::redact::redact_text(&step.original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_failures_are_the_steps_or_the_environments() {
        use crate::executor::StepError;
        let kind = |e| BuildError::of_step("stage a, Dockerfile:2:1: RUN x", e);
        let user = kind(StepError::User("unknown user app".into()));
        assert_eq!((user.failure, user.exit_code()), (Failure::Step, 1));
        assert_eq!(
            user.message,
            "stage a, Dockerfile:2:1: RUN x: unknown user app"
        );
        assert_eq!(kind(StepError::Cancelled).exit_code(), 1);
        let sandbox = kind(StepError::Environment("clone: EPERM".into()));
        assert_eq!(
            (sandbox.failure, sandbox.exit_code()),
            (Failure::Environment, 3)
        );
        let located = user.at(Location {
            stage: "a".into(),
            line: 2,
            column: 1,
        });
        assert_eq!(located.location.map(|l| (l.line, l.column)), Some((2, 1)));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
