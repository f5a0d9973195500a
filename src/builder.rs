//! The builder: the solver's plan and op graph executed for real. Every
//! op's cache key is known before anything runs and all cache lookups are
//! done up front; ops whose entries hit are not run, and stages only hit
//! ops read from are not built at all. The rest run as soon as the ops they
//! wait for are done, on tokio with a bounded pool of blocking workers
//! (at least four, one per core beyond that):
//! each RUN in a sandbox, each COPY through the sandbox helper, each change
//! a layer. The first failure cancels the ops still running.
//!
//! Bases come from the local image store, a registry, `scratch`, or (for
//! `busybox` with no local image of that name) Debian's busybox-static.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::blob::Digest;
use crate::blob::LayerBlob;
use crate::cache::{CacheEntry, CacheIndex, CachedLayer, ContentStore};
use crate::executor::mounts::{MountContext, PreparedMounts, SecretSource};
use crate::executor::{CgroupSupport, Executor, Limits, Plan, Step, StepRunner, Stream};
use crate::image::busybox::build_base;
use crate::image::config::ImageConfig;
use crate::image::layout::{store_image, StoredImage};
use crate::image::media::MediaTypes;
use crate::parser::{Dockerfile, MountType, NetworkMode};
use crate::progress::Event;
use crate::snapshot::{LayerRef, SnapshotStore};
use crate::solver::graph::{BuildGraph, OpKind};
use crate::solver::{self, Base, FromSource, PlanOptions, Platform, StepKind};

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
    /// `--network=none` for every RUN.
    pub network_none: bool,
    /// `--allow security.insecure`: `RUN --security=insecure` may run.
    pub allow_insecure: bool,
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

/// A failed build: its kind and the message that names the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// What failed.
    pub failure: Failure,
    /// What to tell the user (with `Dockerfile:LINE:COLUMN` where a step
    /// is to blame).
    pub message: String,
}

impl BuildError {
    fn new(failure: Failure, message: impl std::fmt::Display) -> BuildError {
        BuildError {
            failure,
            message: message.to_string(),
        }
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
    let store = ContentStore::open(&options.storage).map_err(environment)?;
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
    // Held until the caller is done with the image: collection never
    // takes what this build uses.
    let mut lease = crate::gc::Lease::acquire(&options.storage).map_err(|e| {
        environment(format!(
            "taking a lease on {}: {e}",
            options.storage.display()
        ))
    })?;
    let when = created(options.source_date_epoch);
    let local_images = crate::image::local::LocalImages::open(&options.storage);
    let mut bases: HashMap<String, StoredImage> = HashMap::new();
    // A base that could not be had is the environment's failure, not the
    // Dockerfile's, though the planner reports both.
    let mut base_failed: Option<String> = None;
    let plan_options = PlanOptions {
        build_args: options.build_args.clone(),
        target: options.target.clone(),
        target_platform: Platform::host(),
        build_platform: Platform::host(),
        labels: options.labels.clone(),
        created: when.clone(),
    };
    let plan = solver::plan(dockerfile, &plan_options, &mut |name, platform| {
        let local = (!options.pull)
            .then(|| name.parse::<crate::image::reference::Reference>().ok())
            .flatten()
            .and_then(|reference| local_images.get(&reference, &store));
        let base = if let Some(known) = bases.get(name) {
            known.clone()
        } else if let Some(image) = local {
            image
        } else if name == "busybox" || name == "busybox:latest" {
            busybox_base(&store, &options.storage, &options.busybox)?
        } else {
            let registry = crate::registry::RegistryOptions {
                insecure: options.insecure_registries.clone(),
                skip_tls_verify: options.skip_tls_verify,
                ca_certs: options.ca_certs.clone(),
                ..Default::default()
            };
            pull_base(&store, name, platform, registry, &mut *log)
                .inspect_err(|e| base_failed = Some(e.clone()))?
        };
        let bytes = store.read(&base.config_digest).map_err(|e| e.to_string())?;
        let config = ImageConfig::from_blob(&bytes).map_err(|e| e.to_string())?;
        bases.insert(name.to_string(), base);
        Ok(config)
    })
    .map_err(|e| match base_failed.take() {
        Some(_) => environment(format!("Dockerfile: {e}")),
        None => BuildError::new(Failure::Dockerfile, format!("Dockerfile: {e}")),
    })?;
    for warning in &plan.warnings {
        log(&Event::Warning(warning.clone()));
    }
    check_entitlements(&plan, options).map_err(|e| BuildError::new(Failure::Dockerfile, e))?;
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
    let shared = Arc::new(Shared {
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
    });
    // Every key, from content, before anything runs.
    let graph = crate::progress::track(
        "hashing the context",
        None,
        &shared.hashes.hashed,
        log,
        || {
            BuildGraph::new(
                &shared.plan,
                &|name| shared.bases.get(name).map(|b| b.manifest_digest.clone()),
                &mut |stage, step, stage_keys| step_inputs(&shared, stage, step, stage_keys),
            )
        },
    )
    .map_err(step_failed)?;
    if let Err(e) = shared.hashes.save() {
        log(&Event::Warning(format!(
            "warning: saving the context hash cache: {e}"
        )));
    }
    phases.mark("keys");
    let mut shared = Arc::into_inner(shared).expect("no other owner yet");
    shared.graph = Some(graph);
    let shared = Arc::new(shared);
    let results = schedule(&shared, &mut lease, log).map_err(step_failed)?;
    phases.mark("steps");
    let (steps, cached) = results.values().fold((0, 0), |(s, c), r| match r.how {
        How::Ran => (s + 1, c),
        How::Cached => (s, c + 1),
        How::Base => (s, c),
    });
    let plan = &shared.plan;
    let graph = shared.graph();
    let target = plan.stages.last().expect("a plan has a target");
    let tail = *graph.stages[&target.index].last().expect("non-empty");
    let layers = results[&tail].layers.clone();
    let config =
        final_config(plan, graph, &results, target, &layers, &when).map_err(step_failed)?;
    // The root of the target's FROM-stage chain has the base image.
    let mut root = target;
    while let Base::Stage(j) = root.base {
        root = shared.stage(j);
    }
    let base_layers = match &root.base {
        Base::Image(name) => shared.bases[name].layers.len(),
        _ => 0,
    };
    let image = store_image(&store, &config, &layers, MediaTypes::Oci).map_err(environment)?;
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

/// What every op of one build shares (owned: ops run on tokio's blocking
/// pool).
struct Shared {
    options: BuildOptions,
    runner: StepRunner,
    store: ContentStore,
    index: CacheIndex,
    bases: HashMap<String, StoredImage>,
    when: String,
    plan: solver::Plan,
    graph: Option<BuildGraph>,
    /// `ADD <url>` downloads, once per build: URL → (its dir, the file).
    downloads: std::sync::Mutex<HashMap<String, Download>>,
    /// `ADD <git url>` checkouts, once per build: (source, keep .git) → it.
    checkouts: std::sync::Mutex<HashMap<(String, bool), GitCheckout>>,
    /// Remembered content hashes of the context's files.
    hashes: crate::context::hashcache::HashCache,
    /// The number the next step to start gets (progress ids).
    next_id: std::sync::atomic::AtomicUsize,
}

/// A downloaded ADD source and the temporary dir holding it.
type Download = (Arc<tempfile::TempDir>, crate::context::remote::Downloaded);

/// A git checkout for ADD and the temporary dir holding it.
type GitCheckout = (Arc<tempfile::TempDir>, Arc<crate::context::git::Checkout>);

impl Shared {
    /// Downloads `url` (once per build) for ADD.
    fn download(&self, url: &str, checksum: Option<&str>, at: &str) -> Result<Download, String> {
        let mut downloads = self.downloads.lock().expect("not poisoned");
        if let Some(done) = downloads.get(url) {
            // Downloaded for another ADD: this one's --checksum still holds.
            if let Some(want) = checksum.filter(|w| *w != done.1.digest.as_str()) {
                return Err(format!(
                    "{at}: {url}: checksum mismatch: --checksum={want}, the download is {}",
                    done.1.digest
                ));
            }
            return Ok(done.clone());
        }
        let dir = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(self.runner.snapshots().root().join("tmp"))
            .map_err(|e| format!("{at}: {e}"))?;
        let file = crate::context::remote::download(url, dir.path(), checksum)
            .map_err(|e| format!("{at}: {e}"))?;
        let done = (Arc::new(dir), file);
        downloads.insert(url.to_string(), done.clone());
        Ok(done)
    }

    /// Checks out the git source `source` (once per build) for ADD.
    fn checkout(
        &self,
        source: &str,
        spec: &crate::parser::CopyLike,
        at: &str,
    ) -> Result<GitCheckout, String> {
        use crate::context::git;
        let mut git = match git::parse(source) {
            Some(Ok(git)) => git,
            Some(Err(e)) => {
                return Err(format!("{at}: {}: {e}", crate::redact::redact_text(source)))
            }
            None => unreachable!("only git sources are checked out"),
        };
        let shown = crate::redact::redact_text(&git.remote);
        if let (Some(flag), Some(query)) = (&spec.checksum, &git.checksum) {
            if flag != query {
                return Err(format!(
                    "{at}: {shown}: checksum mismatch {flag:?} != {query:?}"
                ));
            }
        }
        if git.checksum.is_none() {
            git.checksum = spec.checksum.clone();
        }
        if git.reference.is_none() {
            git.reference = git.checksum.clone();
        }
        let keep = match (spec.keep_git_dir, git.keep_git_dir) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "{at}: {shown}: inconsistent keep-git-dir configuration"
                ))
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        let mut checkouts = self.checkouts.lock().expect("not poisoned");
        let slot = (source.to_string(), keep);
        if let Some(done) = checkouts.get(&slot) {
            return Ok(done.clone());
        }
        let dir = tempfile::Builder::new()
            .prefix("git-")
            .tempdir_in(self.runner.snapshots().root().join("tmp"))
            .map_err(|e| format!("{at}: {e}"))?;
        let checkout = git::checkout(&git, keep, dir.path()).map_err(|e| format!("{at}: {e}"))?;
        let done = (Arc::new(dir), Arc::new(checkout));
        checkouts.insert(slot, done.clone());
        Ok(done)
    }

    fn graph(&self) -> &BuildGraph {
        self.graph.as_ref().expect("built before scheduling")
    }

    fn stage(&self, index: usize) -> &solver::StagePlan {
        self.plan
            .stages
            .iter()
            .find(|s| s.index == index)
            .expect("a planned stage")
    }

    fn label(&self, index: usize) -> String {
        self.stage(index)
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    /// Whether an op may come from the cache (`--no-cache`,
    /// `--no-cache-filter` on any stage it stands for).
    fn use_cache(&self, node: NodeIndex) -> bool {
        let options = &self.options;
        !options.no_cache
            && !self.graph().graph[node].uses.iter().any(|(stage, step)| {
                // A stage's base (another stage's last step) is not its own.
                step.is_some()
                    && self.stage(*stage).name.as_ref().is_some_and(|n| {
                        options
                            .no_cache_filter
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(n))
                    })
            })
    }
}

/// How an op's result came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// A base image (or scratch).
    Base,
    /// From the cache index.
    Cached,
    /// Run now.
    Ran,
}

/// An op's result: the layers of the root after it, and its history facts.
#[derive(Debug, Clone)]
struct OpResult {
    layers: Vec<LayerBlob>,
    created: String,
    empty: bool,
    how: How,
}

/// Runs the ops the target needs: ready ops start as soon as what they
/// wait for is done, at most one per core at a time (blocking workers of a
/// tokio runtime). A cache hit needs its parent (it stacks on it) but not
/// its `--from` inputs, so stages only hits read from are skipped.
fn schedule(
    shared: &Arc<Shared>,
    lease: &mut crate::gc::Lease,
    log: &mut dyn FnMut(&Event),
) -> Result<HashMap<NodeIndex, OpResult>, String> {
    let graph = shared.graph();
    // All lookups at once, each hit's blob claimed as it is found.
    let hits: HashMap<NodeIndex, CacheEntry> = lease
        .hold(|| {
            let hits: HashMap<NodeIndex, CacheEntry> = graph
                .graph
                .node_indices()
                .filter(|&n| graph.graph[n].kind != OpKind::Source && shared.use_cache(n))
                .filter_map(|n| {
                    shared
                        .index
                        .get(&graph.graph[n].cache_key, &shared.store)
                        .map(|e| (n, e))
                })
                .collect();
            let blobs = hits
                .values()
                .filter_map(|e| e.layer.as_ref().map(|l| l.digest.clone()))
                .collect();
            (hits, blobs)
        })
        .map_err(|e| format!("recording the lease: {e}"))?;
    // What the target needs.
    let target = shared.plan.stages.last().expect("a target").index;
    let mut needed: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
    let mut stack = vec![*graph.stages[&target].last().expect("non-empty")];
    while let Some(node) = stack.pop() {
        if needed.contains_key(&node) {
            continue;
        }
        let waits: Vec<NodeIndex> = if hits.contains_key(&node) {
            graph.parent(node).into_iter().collect()
        } else {
            graph.dependencies(node)
        };
        stack.extend(waits.iter().copied());
        needed.insert(node, waits);
    }
    // Steps mostly wait (on processes, disks, networks): at least four at
    // once even on a two-core machine, as many as the cores beyond that.
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .clamp(4, 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallel)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the scheduler: {e}"))?;
    let (log_tx, mut log_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let hits = Arc::new(hits);
    runtime.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut results: HashMap<NodeIndex, OpResult> = HashMap::new();
        let mut started: std::collections::HashSet<NodeIndex> = Default::default();
        let mut running = tokio::task::JoinSet::new();
        let mut failure: Option<String> = None;
        loop {
            if failure.is_none() {
                let ready: Vec<NodeIndex> = needed
                    .iter()
                    .filter(|(n, waits)| {
                        !started.contains(*n) && waits.iter().all(|w| results.contains_key(w))
                    })
                    .map(|(n, _)| *n)
                    .collect();
                for node in ready {
                    started.insert(node);
                    let inputs: HashMap<NodeIndex, OpResult> = needed[&node]
                        .iter()
                        .map(|w| (*w, results[w].clone()))
                        .collect();
                    let (shared, hits, log_tx) = (shared.clone(), hits.clone(), log_tx.clone());
                    let permit = permits.clone().acquire_owned().await.expect("open");
                    running.spawn_blocking(move || {
                        let _permit = permit;
                        let log = |event: Event| {
                            let _ = log_tx.send(event);
                        };
                        (node, run_op(&shared, node, hits.get(&node), &inputs, &log))
                    });
                }
            }
            tokio::select! {
                Some(event) = log_rx.recv() => log(&event),
                done = running.join_next() => match done {
                    None => break,
                    Some(Ok((node, Ok(result)))) => {
                        results.insert(node, result);
                    }
                    Some(Ok((_, Err(e)))) => {
                        if failure.is_none() {
                            shared.runner.cancel();
                            failure = Some(e);
                        }
                    }
                    Some(Err(e)) => {
                        if failure.is_none() {
                            shared.runner.cancel();
                            failure = Some(format!("a build task failed: {e}"));
                        }
                    }
                },
            }
        }
        while let Ok(event) = log_rx.try_recv() {
            log(&event);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(results),
        }
    })
}

/// Produces one op's result from its inputs' results.
fn run_op(
    shared: &Shared,
    node: NodeIndex,
    hit: Option<&CacheEntry>,
    inputs: &HashMap<NodeIndex, OpResult>,
    log: &(dyn Fn(Event) + Sync),
) -> Result<OpResult, String> {
    let graph = shared.graph();
    let op = &graph.graph[node];
    let (stage_index, step_index) = op.uses[0];
    let stage = shared.stage(stage_index);
    let Some(step_index) = step_index else {
        let layers = match &stage.base {
            Base::Image(name) => shared.bases[name].layers.clone(),
            _ => Vec::new(),
        };
        return Ok(OpResult {
            layers,
            created: shared.when.clone(),
            empty: true,
            how: How::Base,
        });
    };
    let step = &stage.steps[step_index];
    let label = shared.label(stage_index);
    let id = shared
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    log(Event::Started {
        id,
        stage: label.clone(),
        index: step_index + 1,
        total: stage.steps.len(),
        text: shown(step),
    });
    let started = std::time::Instant::now();
    let parent = graph.parent(node).expect("a step has a parent");
    let layers = inputs[&parent].layers.clone();
    if let Some(entry) = hit {
        log(Event::Cached { id });
        let mut layers = layers;
        if let Some(layer) = &entry.layer {
            layers.push(LayerBlob::from(layer));
        }
        // SOURCE_DATE_EPOCH decides every time; otherwise a cached step
        // keeps the time it ran, so a fully cached rebuild is identical.
        let created = match shared.options.source_date_epoch {
            Some(_) => shared.when.clone(),
            None => entry.created.clone(),
        };
        return Ok(OpResult {
            layers,
            created,
            empty: entry.layer.is_none(),
            how: How::Cached,
        });
    }
    let at = format!(
        "stage {label}, Dockerfile:{}:{}: {}",
        step.line,
        step.column,
        shown(step)
    );
    // The layer's bytes as it is written: shown once writing has taken
    // a second (a big COPY or RUN), so small steps stay quiet.
    let layer_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The watcher wakes every 100 ms, and at once when the step ends (its
    // channel closes), so it never delays the step.
    let (step_done, watch) = std::sync::mpsc::channel::<()>();
    let watched = layer_bytes.clone();
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            use std::sync::atomic::Ordering;
            let layer_bytes = watched;
            let task = format!("#{id} writing the layer");
            let mut writing_since = None;
            let mut shown = false;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                watch.recv_timeout(std::time::Duration::from_millis(100))
            {
                let done = layer_bytes.load(Ordering::Relaxed);
                if done == 0 {
                    continue;
                }
                let since = *writing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= std::time::Duration::from_secs(1) {
                    shown = true;
                    log(Event::Bytes {
                        task: task.clone(),
                        done,
                        total: None,
                    });
                }
            }
            if shown {
                log(Event::BytesDone {
                    task,
                    done: layer_bytes.load(Ordering::Relaxed),
                    elapsed: writing_since.map(|t| t.elapsed()).unwrap_or_default(),
                });
            }
        });
        let result = run_step(
            shared,
            node,
            step,
            inputs,
            layers,
            StepReport {
                output: &|stream, line| {
                    log(Event::Output {
                        id,
                        stream,
                        elapsed: started.elapsed(),
                        line,
                    })
                },
                layer_bytes: Some(layer_bytes.clone()),
            },
            &at,
        );
        drop(step_done);
        result
    });
    let elapsed = started.elapsed();
    match &result {
        Ok(_) => log(Event::Done { id, elapsed }),
        Err(message) => log(Event::Failed {
            id,
            elapsed,
            message: message.clone(),
        }),
    }
    result
}

/// Where a running step's output lines and layer bytes go.
struct StepReport<'a> {
    output: &'a dyn Fn(Stream, String),
    layer_bytes: crate::snapshot::diff::ByteCounter,
}

/// Refuses a plan that asks for more than the command line allows, before
/// anything runs (cached steps included, as BuildKit does).
fn check_entitlements(plan: &solver::Plan, options: &BuildOptions) -> Result<(), String> {
    if options.allow_insecure {
        return Ok(());
    }
    let insecure = plan.stages.iter().flat_map(|s| &s.steps).find(|step| {
        matches!(&step.kind, StepKind::Run(run) if run.security == crate::parser::SecurityMode::Insecure)
    });
    match insecure {
        Some(step) => Err(format!(
            "Dockerfile:{}:{}: {}: RUN --security=insecure needs the security.insecure \
             entitlement: pass --allow security.insecure",
            step.line,
            step.column,
            shown(step)
        )),
        None => Ok(()),
    }
}

/// Runs one step (RUN, COPY/ADD, WORKDIR creation) on top of `layers`
/// and records its cache entry.
fn run_step(
    shared: &Shared,
    node: NodeIndex,
    step: &solver::Step,
    inputs: &HashMap<NodeIndex, OpResult>,
    mut layers: Vec<LayerBlob>,
    report: StepReport<'_>,
    at: &str,
) -> Result<OpResult, String> {
    let StepReport {
        output,
        layer_bytes,
    } = report;
    let graph = shared.graph();
    let op = &graph.graph[node];
    let at = at.to_string();
    // The results of the stages this step reads from, by stage index.
    let from: HashMap<usize, &OpResult> = solver::graph::step_sources(&step.kind)
        .into_iter()
        .map(|j| {
            let tail = graph.stages[&j].last().expect("non-empty");
            (j, &inputs[tail])
        })
        .collect();
    let parents: Vec<LayerRef> = layers.iter().map(LayerRef::from).collect();
    let layer = match &step.kind {
        StepKind::Run(run) => run_exec(shared, run, &parents, &from, output, layer_bytes, &at)?,
        StepKind::Mkdir { path, user } => Some(
            shared
                .runner
                .mkdir_layer(&parents, path, user)
                .map_err(|e| format!("{at}: {e}"))?,
        ),
        StepKind::Copy(copy) => {
            let spec = copy_spec(shared, copy, &from, &at)?;
            // --link: the layer is made on an empty root and stacked.
            let onto: &[LayerRef] = if copy.spec.link { &[] } else { &parents };
            let outcome = shared
                .runner
                .copy(onto, spec.spec, layer_bytes)
                .map_err(|e| format!("{at}: {e}"))?;
            drop(spec.keep);
            if let Some(failure) = outcome.failure {
                return Err(format!("{at}: {failure}"));
            }
            outcome.layer
        }
    };
    // Only now that the blob is stored: an entry never names a missing
    // layer, and a killed build keeps what finished.
    shared
        .index
        .put(
            &op.cache_key,
            &CacheEntry {
                layer: layer.as_ref().map(CachedLayer::from),
                created: shared.when.clone(),
            },
        )
        .map_err(|e| format!("{at}: recording the cache entry: {e}"))?;
    let empty = layer.is_none();
    layers.extend(layer);
    Ok(OpResult {
        layers,
        created: shared.when.clone(),
        empty,
        how: How::Ran,
    })
}

/// Runs a RUN step in its sandbox and returns its layer (None when it
/// changed nothing).
fn run_exec(
    shared: &Shared,
    run: &solver::dispatch::RunStep,
    parents: &[LayerRef],
    from: &HashMap<usize, &OpResult>,
    output: &dyn Fn(Stream, String),
    layer_bytes: crate::snapshot::diff::ByteCounter,
    at: &str,
) -> Result<Option<LayerBlob>, String> {
    let runner = &shared.runner;
    let options = &shared.options;
    // Stages mounted with from=: over overlay, their snapshot lower dirs
    // are mounted read-only; in the copy tier their root is materialized
    // into a directory for the step.
    let overlay = runner.plan().snapshots == crate::executor::SnapshotMode::Overlay;
    let snapshots = runner.snapshots();
    let mut step_ctx = MountContext {
        storage: options.storage.clone(),
        context: options.context.clone(),
        secrets: options.secrets.clone(),
        stage_roots: HashMap::new(),
        ssh: options.ssh.clone(),
    };
    let mut keep = Vec::new();
    let mut stage_mounts = Vec::new();
    let mut other_mounts = Vec::new();
    for (m, source) in run.mounts.iter().zip(&run.mount_sources) {
        match (source, &m.from) {
            (Some(FromSource::Stage(j)), Some(name)) => {
                let dir = tempfile::Builder::new()
                    .prefix("stage-root-")
                    .tempdir_in(snapshots.root().join("tmp"))
                    .map_err(|e| format!("{at}: {e}"))?;
                let source_layers: Vec<LayerRef> =
                    from[j].layers.iter().map(LayerRef::from).collect();
                if overlay && m.kind == MountType::Bind {
                    let mut lowers = snapshots
                        .lowers(&shared.store, &source_layers)
                        .map_err(|e| format!("{at}: stage {name}: {e}"))?;
                    // A lower-only overlay needs two dirs.
                    lowers.push("empty".to_string());
                    stage_mounts.push(crate::executor::MountSpec {
                        target: m.target.clone().unwrap_or_default(),
                        kind: crate::executor::MountKind::StageRoot {
                            base: snapshots.root().to_path_buf(),
                            lowers,
                            staging: dir.path().to_path_buf(),
                            subpath: m.source.clone().unwrap_or_else(|| ".".into()),
                        },
                    });
                } else {
                    snapshots
                        .materialize(&shared.store, &source_layers, dir.path())
                        .map_err(|e| format!("{at}: stage {name}: {e}"))?;
                    step_ctx
                        .stage_roots
                        .insert(name.clone(), dir.path().to_path_buf());
                    other_mounts.push(m.clone());
                }
                keep.push(dir);
            }
            (Some(FromSource::Image(image)), _) => {
                return Err(format!(
                    "{at}: --mount from={image}: mounting images is not supported yet"
                ))
            }
            _ => other_mounts.push(m.clone()),
        }
    }
    let mut prepared =
        PreparedMounts::prepare(&other_mounts, &step_ctx).map_err(|e| format!("{at}: {e}"))?;
    prepared.mounts.extend(stage_mounts);
    if let Some((name, body)) = &run.script {
        // `RUN <<EOF` with a `#!` line runs the body as a file, mounted
        // read-only at /dev/pipes as BuildKit does.
        let dir = tempfile::Builder::new()
            .prefix("script-")
            .tempdir_in(snapshots.root().join("tmp"))
            .map_err(|e| format!("{at}: {e}"))?;
        let file = dir.path().join(name);
        std::fs::write(&file, body).map_err(|e| format!("{at}: {e}"))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{at}: {e}"))?;
        prepared.mounts.push(crate::executor::MountSpec {
            target: "/dev/pipes".to_string(),
            kind: crate::executor::MountKind::Bind {
                source: dir.path().to_path_buf(),
                readonly: true,
            },
        });
        keep.push(dir);
    }
    let mut env = run.env.clone();
    env.extend(run.proxy_env.iter().cloned());
    env.extend(prepared.env.iter().cloned());
    if let Some(socket) = &prepared.ssh_auth_sock {
        // As BuildKit: the first agent is the default one, unless the
        // Dockerfile chose its own.
        if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            env.push(format!("SSH_AUTH_SOCK={socket}"));
        }
    }
    let step = Step {
        layers: parents.to_vec(),
        args: run.args.clone(),
        env,
        cwd: run.workdir.clone(),
        user: run.user.clone(),
        network_none: options.network_none || run.network == NetworkMode::None,
        security: match run.security {
            crate::parser::SecurityMode::Insecure => crate::executor::confine::Security::Insecure,
            crate::parser::SecurityMode::Sandbox => crate::executor::confine::Security::Sandbox,
        },
        mounts: prepared.mounts.clone(),
        layer_bytes,
    };
    let mut sink = |stream: Stream, line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        output(stream, text.trim_end_matches('\n').to_string());
    };
    let outcome = runner
        .run(&step, &mut sink)
        .map_err(|e| format!("{at}: {e}"))?;
    drop(prepared);
    drop(keep);
    if let Some(failure) = outcome.failure {
        return Err(format!("{at}: {failure}"));
    }
    Ok(outcome.layer)
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
    config.rootfs = rootfs_of(layers)?;
    config.created = Some(
        config
            .history
            .last()
            .and_then(|h| h.created().clone())
            .unwrap_or_else(|| when.to_string()),
    );
    Ok(config)
}

/// The content digests a step's key needs: a COPY's sources (see
/// [`copy_inputs`]), a RUN's bind mounts of the context or of stages.
fn step_inputs(
    shared: &Shared,
    stage: &solver::StagePlan,
    step: &solver::Step,
    stage_keys: &HashMap<usize, Digest>,
) -> Result<Vec<Option<Digest>>, String> {
    let at = format!("Dockerfile:{}:{}: {}", step.line, step.column, shown(step));
    let _ = stage;
    match &step.kind {
        StepKind::Run(run) => Ok(run
            .mounts
            .iter()
            .zip(&run.mount_sources)
            .map(|(m, from)| match (&m.kind, from, &shared.options.context) {
                // A mounted stage is known by its final cache key.
                (_, Some(FromSource::Stage(j)), _) => stage_keys.get(j).cloned(),
                (MountType::Bind, None, Some(context)) => {
                    let source = m.source.as_deref().unwrap_or(".").trim_start_matches('/');
                    crate::solver::keys::tree_digest(&context.join(source)).ok()
                }
                _ => None,
            })
            .collect()),
        StepKind::Copy(copy) => copy_inputs(shared, copy, stage_keys, &at),
        StepKind::Mkdir { .. } => Ok(Vec::new()),
    }
}

/// The content each COPY source contributes to the cache key: the
/// selected context files' digest, or the key of the stage (or manifest
/// of the image) copied from. Heredoc bodies are in the step itself.
fn copy_inputs(
    ctx: &Shared,
    copy: &solver::CopyStep,
    stage_keys: &HashMap<usize, Digest>,
    at: &str,
) -> Result<Vec<Option<Digest>>, String> {
    let from = match &copy.from {
        Some(FromSource::Stage(j)) => Some(stage_keys[j].clone()),
        Some(FromSource::Image(name)) => Some(ctx.bases[name].manifest_digest.clone()),
        None => None,
    };
    let mut tree = None;
    copy.spec
        .sources
        .iter()
        .map(|source| match source {
            crate::parser::Source::Heredoc(_) => Ok(None),
            crate::parser::Source::Path(_) if from.is_some() => Ok(from.clone()),
            crate::parser::Source::Path(p) if !copy.add && crate::context::git::is_git(p) => Err(
                format!("{at}: source can't be a git ref for COPY (use ADD)"),
            ),
            crate::parser::Source::Path(p) if !copy.add && crate::context::remote::is_url(p) => {
                Err(format!("{at}: source can't be a URL for COPY (use ADD)"))
            }
            crate::parser::Source::Path(p) if crate::context::git::is_git(p) => {
                let (_, checkout) = ctx.checkout(p, &copy.spec, at)?;
                // The commit names the files (a kept .git differs from
                // one checkout to the next, so it is not hashed); the
                // source itself, with its subdir, is in the key already.
                let named = format!("git\0{}\0{}", checkout.commit, checkout.git_dir);
                Ok(Some(Digest::from_sha256(
                    <sha2::Sha256 as sha2::Digest>::digest(named.as_bytes()).into(),
                )))
            }
            crate::parser::Source::Path(url) if copy.add && crate::context::remote::is_url(url) => {
                let (_, file) = ctx.download(url, copy.spec.checksum.as_deref(), at)?;
                Ok(Some(file.digest))
            }
            crate::parser::Source::Path(p) => {
                if tree.is_none() {
                    tree = Some(context_tree(ctx, &copy.spec.exclude, at)?);
                }
                let tree = tree.as_ref().expect("just set");
                tree.digest(std::slice::from_ref(p))
                    .map(Some)
                    .map_err(|e| format!("{at}: {e}"))
            }
        })
        .collect()
}

fn context_tree<'a>(
    ctx: &'a Shared,
    exclude: &[String],
    at: &str,
) -> Result<crate::context::SourceTree<'a>, String> {
    let Some(context) = &ctx.options.context else {
        return Err(format!("{at}: COPY from the context needs a build context"));
    };
    crate::context::SourceTree::new(context, &ctx.options.ignore, exclude)
        .map(|tree| tree.with_cache(&ctx.hashes))
        .map_err(|e| format!("{at}: {e}"))
}

/// A COPY's helper spec and the temporary dirs it needs kept alive.
struct PreparedCopy {
    spec: crate::executor::CopySpec,
    keep: Vec<tempfile::TempDir>,
}

/// Where a COPY reads from: the context (with .dockerignore), a dir of
/// heredoc files, or another stage's or image's root (overlay lower dirs
/// mounted by the helper, or a materialized copy in the copy tier).
fn copy_spec(
    ctx: &Shared,
    copy: &solver::CopyStep,
    from: &HashMap<usize, &OpResult>,
    at: &str,
) -> Result<PreparedCopy, String> {
    use crate::parser::Source;
    let spec = &copy.spec;
    let paths_where = |is: fn(&str) -> bool| -> Vec<&String> {
        let paths = spec.sources.iter().filter_map(|s| match s {
            Source::Path(p) if is(p) => Some(p),
            _ => None,
        });
        paths.collect()
    };
    let urls = paths_where(crate::context::remote::is_url);
    let gits = paths_where(crate::context::git::is_git);
    if !gits.is_empty() && spec.sources.len() != 1 {
        return Err(format!(
            "{at}: a git repository must be the only source of its ADD (rbuild does not mix them yet)"
        ));
    }
    if !urls.is_empty() && urls.len() != spec.sources.len() {
        return Err(format!(
            "{at}: mixing URL and local sources in one ADD is not supported yet"
        ));
    }
    let chmod = match &spec.chmod {
        None => None,
        Some(text) => {
            Some(crate::executor::chmod::Chmod::parse(text).map_err(|e| format!("{at}: {e}"))?)
        }
    };
    let snapshots = ctx.runner.snapshots();
    let tmp = |prefix: &str| {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(snapshots.root().join("tmp"))
            .map_err(|e| format!("{at}: {e}"))
    };
    let mut keep = Vec::new();
    let heredocs: Vec<&crate::parser::Heredoc> = spec
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Heredoc(h) => Some(h),
            _ => None,
        })
        .collect();
    let mut ignore = String::new();
    let mut source_lowers = None;
    let mut sources: Vec<String> = spec
        .sources
        .iter()
        .map(|s| match s {
            Source::Path(p) => p.clone(),
            Source::Heredoc(h) => h.name.clone(),
        })
        .collect();
    let mut unpack = spec.unpack;
    let source_root = if let Some(git) = gits.first() {
        // The checkout's contents go into the destination; git trees are
        // never unpacked.
        // (The build holds the checkout's dir until it ends.)
        let (_, checkout) = ctx.checkout(git, spec, at)?;
        unpack = Some(false);
        sources = vec![".".to_string()];
        checkout.root.clone()
    } else if !urls.is_empty() {
        // Downloads are not unpacked unless --unpack says so.
        unpack = Some(unpack.unwrap_or(false));
        let dir = tmp("downloads-")?;
        sources.clear();
        for url in &urls {
            let (_, file) = ctx.download(url, spec.checksum.as_deref(), at)?;
            let target = dir.path().join(&file.name);
            if target.exists() {
                return Err(format!(
                    "{at}: two URLs download to the same name {}",
                    file.name
                ));
            }
            std::fs::hard_link(&file.path, &target)
                .or_else(|_| std::fs::copy(&file.path, &target).map(drop))
                .map_err(|e| format!("{at}: {e}"))?;
            sources.push(file.name.clone());
        }
        let root = dir.path().to_path_buf();
        keep.push(dir);
        root
    } else if !heredocs.is_empty() {
        if heredocs.len() != spec.sources.len() {
            return Err(format!(
                "{at}: mixing heredoc and path sources in one COPY is not supported yet"
            ));
        }
        let dir = tmp("heredocs-")?;
        for h in &heredocs {
            let path = dir.path().join(&h.name);
            std::fs::write(&path, h.body()).map_err(|e| format!("{at}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| format!("{at}: {e}"))?;
            let when = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(
                    ctx.options.source_date_epoch.unwrap_or(0).max(0) as u64
                );
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .map_err(|e| format!("{at}: {e}"))?;
        }
        let root = dir.path().to_path_buf();
        keep.push(dir);
        root
    } else {
        let layers: Option<Vec<LayerRef>> = match &copy.from {
            Some(FromSource::Stage(j)) => Some(from[j].layers.iter().map(LayerRef::from).collect()),
            Some(FromSource::Image(name)) => {
                Some(ctx.bases[name].layers.iter().map(LayerRef::from).collect())
            }
            None => None,
        };
        match layers {
            None => {
                let Some(context) = &ctx.options.context else {
                    return Err(format!("{at}: COPY from the context needs a build context"));
                };
                ignore = ctx.options.ignore_text.clone();
                context.clone()
            }
            Some(layers) => {
                let dir = tmp("copy-from-")?;
                let root = dir.path().to_path_buf();
                if ctx.runner.plan().snapshots == crate::executor::SnapshotMode::Overlay {
                    let mut lowers = snapshots
                        .lowers(&ctx.store, &layers)
                        .map_err(|e| format!("{at}: {e}"))?;
                    lowers.push("empty".to_string());
                    source_lowers = Some((snapshots.root().to_path_buf(), lowers));
                } else {
                    snapshots
                        .materialize(&ctx.store, &layers, &root)
                        .map_err(|e| format!("{at}: {e}"))?;
                }
                keep.push(dir);
                root
            }
        }
    };
    Ok(PreparedCopy {
        spec: crate::executor::CopySpec {
            source_root,
            source_lowers,
            sources,
            dest: copy.dest.clone(),
            ignore,
            exclude: spec.exclude.clone(),
            chown: spec.chown.clone(),
            keep_owner: copy.from.is_some(),
            parents: spec.parents,
            add: copy.add,
            unpack,
            chmod,
        },
        keep,
    })
}

/// A step's instruction as progress lines and errors show it: the
/// credentials of any URL in it hidden.
fn shown(step: &solver::Step) -> String {
    crate::redact::redact_text(&step.original)
}

/// The config's `rootfs` for `layers`.
fn rootfs_of(layers: &[LayerBlob]) -> Result<oci_spec::image::RootFs, String> {
    oci_spec::image::RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| e.to_string())
}

/// kaniko's `--single-snapshot`: the layers this build made become one
/// layer on top of the base image's. They are applied in order onto an
/// empty dir in overlay format (deletions as whiteout devices), which is
/// then diffed against the base like a RUN's upper dir.
pub fn squash(options: &BuildOptions, built: &Built) -> Result<StoredImage, String> {
    let store = &built.store;
    let snapshots =
        SnapshotStore::open(options.storage.join("snapshots")).map_err(|e| e.to_string())?;
    let (base, made) = built.image.layers.split_at(built.base_layers);
    if made.len() <= 1 {
        return Ok(built.image.clone());
    }
    let upper = tempfile::Builder::new()
        .prefix("squash-")
        .tempdir_in(snapshots.root().join("tmp"))
        .map_err(|e| e.to_string())?;
    for layer in made {
        let reader =
            crate::snapshot::store::open_layer(store, &layer.digest).map_err(|e| e.to_string())?;
        let apply = crate::snapshot::ApplyOptions {
            overlay_format: true,
            ..Default::default()
        };
        crate::snapshot::apply_layer(upper.path(), reader, &layer.digest.to_string(), apply)
            .map_err(|e| e.to_string())?;
    }
    let base_refs: Vec<LayerRef> = base.iter().map(LayerRef::from).collect();
    let names = snapshots
        .lowers(store, &base_refs)
        .map_err(|e| e.to_string())?;
    let lowers = if base.is_empty() {
        Vec::new()
    } else {
        snapshots.lower_paths(&names)
    };
    let changes = crate::snapshot::diff::overlay_changes(
        upper.path(),
        &lowers,
        crate::snapshot::diff::OpaqueXattr::Either,
    )
    .map_err(|e| e.to_string())?;
    let layer = crate::snapshot::diff::write_layer(
        store,
        &changes,
        crate::snapshot::diff::LayerOptions {
            source_date_epoch: options.source_date_epoch,
            id_map: None,
        },
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut layers = base.to_vec();
    layers.push(layer);
    let mut config = built.config.clone();
    // One history entry keeps the layer: the build's last one that had a
    // layer; the others become empty.
    let made_entries: Vec<usize> = config
        .history
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.empty_layer().unwrap_or(false))
        .map(|(i, _)| i)
        .skip(base.len())
        .collect();
    if let Some((&last, rest)) = made_entries.split_last() {
        for &i in rest {
            config.history[i].set_empty_layer(Some(true));
        }
        config.history[last].set_empty_layer(None);
    }
    config.rootfs = rootfs_of(&layers)?;
    store_image(store, &config, &layers, MediaTypes::Oci).map_err(|e| e.to_string())
}

/// `-o type=local` / `type=tar`: the image's file system, its layers
/// applied in order, written into `dest` (a directory) or as a tar file.
pub fn export_filesystem(
    store: &ContentStore,
    image: &StoredImage,
    dest: &std::path::Path,
    tar: bool,
) -> Result<(), String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", dest.display());
    let scratch;
    let root = if tar {
        scratch = tempfile::tempdir().map_err(|e| at(&e))?;
        scratch.path().to_path_buf()
    } else {
        std::fs::create_dir_all(dest).map_err(|e| at(&e))?;
        dest.to_path_buf()
    };
    for layer in &image.layers {
        let reader =
            crate::snapshot::store::open_layer(store, &layer.digest).map_err(|e| at(&e))?;
        crate::snapshot::apply_layer(&root, reader, &layer.digest.to_string(), Default::default())
            .map_err(|e| at(&e))?;
    }
    if tar {
        let file = std::fs::File::create(dest).map_err(|e| at(&e))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &root).map_err(|e| at(&e))?;
        let mut out = builder.into_inner().map_err(|e| at(&e))?;
        std::io::Write::flush(&mut out).map_err(|e| at(&e))?;
    }
    Ok(())
}

/// Pulls a base image from its registry into the store (credentials from
/// `$DOCKER_CONFIG`; plain HTTP for loopback and `insecure` registries).
fn pull_base(
    store: &ContentStore,
    name: &str,
    platform: &Platform,
    registry: crate::registry::RegistryOptions,
    log: &mut dyn FnMut(&Event),
) -> Result<StoredImage, String> {
    let reference: crate::image::reference::Reference =
        name.parse().map_err(|e| format!("{name}: {e}"))?;
    let (client, runtime) = crate::registry::blocking_client_with(registry)?;
    let pulled = crate::progress::track(
        &format!("pulling {name}"),
        None,
        &client.stats.bytes_downloaded,
        log,
        || runtime.block_on(client.pull(store, &reference, &platform.os, &platform.architecture)),
    )
    .map_err(|e| e.to_string())?;
    let manifest_bytes = store
        .read(&pulled.manifest_digest)
        .map_err(|e| e.to_string())?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(|e| e.to_string())?;
    let config_bytes = store
        .read(&pulled.config_digest)
        .map_err(|e| e.to_string())?;
    let config = ImageConfig::from_blob(&config_bytes).map_err(|e| e.to_string())?;
    let diff_ids = config.rootfs.diff_ids();
    let sizes: Vec<u64> = manifest["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .map(|l| l["size"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != pulled.layers.len() {
        return Err(format!(
            "{name}: the config lists {} layers, the manifest {}",
            diff_ids.len(),
            pulled.layers.len()
        ));
    }
    let layers = pulled
        .layers
        .iter()
        .zip(diff_ids)
        .zip(sizes.iter().chain(std::iter::repeat(&0)))
        .map(|((digest, diff_id), size)| {
            Ok(LayerBlob {
                digest: digest.clone(),
                size: *size,
                diff_id: diff_id.parse().map_err(|e| format!("{name}: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(StoredImage {
        manifest_digest: pulled.manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        media_type: pulled.media_type,
        config_digest: pulled.config_digest,
        config_size: config_bytes.len() as u64,
        layers,
    })
}

/// The busybox base image, built once per busybox binary: a small record
/// keyed by the binary's inode, size and times finds the stored image again
/// (as long as its blobs are still in the store).
fn busybox_base(
    store: &ContentStore,
    storage: &std::path::Path,
    busybox: &std::path::Path,
) -> Result<StoredImage, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(busybox)
        .map_err(|e| format!("busybox binary {}: {e}", busybox.display()))?;
    let stamp = format!(
        "{}:{}:{}:{}.{}",
        busybox.display(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let record = storage.join("busybox-base.json");
    if let Ok(bytes) = std::fs::read(&record) {
        if let Ok((seen, image)) = serde_json::from_slice::<(String, StoredImage)>(&bytes) {
            if seen == stamp && image.is_complete_in(store) {
                return Ok(image);
            }
        }
    }
    let image = build_base(store, busybox, MediaTypes::Oci).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec(&(stamp, &image)).map_err(|e| e.to_string())?;
    crate::cache::write_atomically(&record, &json).map_err(|e| e.to_string())?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
