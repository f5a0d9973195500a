//! A sequential builder: the solver's plan (stages the target needs, with
//! docker's ARG/ENV/config rules) executed one step after another, each
//! RUN in a real sandbox, each change a real layer, the result a stored
//! image. Bases are `busybox` (built from Debian's busybox-static) and
//! `scratch`.
//!
//! It drives the sandbox and the snapshot differ end to end (`rbuild debug
//! run`) until the scheduler, the cache and COPY/ADD exist: no parallel
//! stages, no cache, no COPY.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::cache::{CacheEntry, CacheIndex, CachedLayer, ContentStore};
use crate::executor::mounts::{MountContext, PreparedMounts, SecretSource};
use crate::executor::{CgroupSupport, Executor, Limits, Plan, Step, StepRunner, Stream};
use crate::image::busybox::build_base;
use crate::image::config::ImageConfig;
use crate::image::layer::LayerBlob;
use crate::image::layout::{store_image, StoredImage};
use crate::image::media::MediaTypes;
use crate::image::Digest;
use crate::parser::{Dockerfile, MountType, NetworkMode};
use crate::snapshot::{LayerRef, SnapshotStore};
use crate::solver::{self, keys, Base, FromSource, PlanOptions, Platform, StepKind};

/// Settings for a linear build.
#[derive(Debug, Clone)]
pub struct LinearOptions {
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

/// Builds `dockerfile` (the target stage and what it needs, one step after
/// another); `log` gets progress and output lines.
pub fn build(
    dockerfile: &Dockerfile,
    options: &LinearOptions,
    executor: Executor,
    log: &mut dyn FnMut(&str),
) -> Result<Built, String> {
    let store = ContentStore::open(&options.storage).map_err(|e| e.to_string())?;
    let snapshots =
        SnapshotStore::open(options.storage.join("snapshots")).map_err(|e| e.to_string())?;
    let runner = StepRunner::new(
        executor,
        options.plan.clone(),
        store.clone(),
        snapshots,
        options.cgroups.clone(),
        options.limits,
        options.source_date_epoch,
    )?;
    let when = created(options.source_date_epoch);
    let local_images = crate::image::local::LocalImages::open(&options.storage);
    let mut bases: HashMap<String, StoredImage> = HashMap::new();
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
            pull_base(&store, name, platform, &options.insecure_registries)?
        };
        let bytes = store.read(&base.config_digest).map_err(|e| e.to_string())?;
        let config = ImageConfig::from_blob(&bytes).map_err(|e| e.to_string())?;
        bases.insert(name.to_string(), base);
        Ok(config)
    })
    .map_err(|e| format!("Dockerfile: {e}"))?;
    for warning in &plan.warnings {
        log(warning);
    }
    let mount_ctx = MountContext {
        storage: options.storage.clone(),
        context: options.context.clone(),
        secrets: options.secrets.clone(),
        stage_roots: HashMap::new(),
    };
    let index = CacheIndex::open(&options.storage).map_err(|e| e.to_string())?;
    let ctx = StageContext {
        options,
        runner: &runner,
        store: &store,
        index: &index,
        mount_ctx: &mount_ctx,
        bases: &bases,
        when: &when,
    };
    let results = schedule(&plan, &ctx, log)?;
    let (steps, cached) = results
        .values()
        .fold((0, 0), |(s, c), r| (s + r.steps, c + r.cached));
    let target = plan.stages.last().expect("a plan has a target");
    let StageResult {
        mut config, layers, ..
    } = results.get(&target.index).cloned().expect("built");
    config.created = Some(
        config
            .history
            .last()
            .and_then(|h| h.created().clone())
            .unwrap_or(when),
    );
    log(&format!("{steps} step(s) run, {cached} cached"));
    let image =
        store_image(&store, &config, &layers, MediaTypes::Oci).map_err(|e| e.to_string())?;
    Ok(Built {
        store,
        image,
        steps,
    })
}

/// What every stage of one build shares.
#[derive(Clone, Copy)]
struct StageContext<'a> {
    options: &'a LinearOptions,
    runner: &'a StepRunner,
    store: &'a ContentStore,
    index: &'a CacheIndex,
    mount_ctx: &'a MountContext,
    bases: &'a HashMap<String, StoredImage>,
    when: &'a str,
}

/// A built stage.
#[derive(Debug, Clone)]
struct StageResult {
    config: ImageConfig,
    layers: Vec<LayerBlob>,
    key: Digest,
    steps: usize,
    cached: usize,
}

/// Runs the plan's stages, each as soon as the stages it builds on are
/// done, independent ones at the same time (at most `MAX_PARALLEL`). The
/// first failure cancels the steps running in other stages.
fn schedule(
    plan: &solver::Plan,
    ctx: &StageContext<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<HashMap<usize, StageResult>, String> {
    const MAX_PARALLEL: usize = 4;
    let deps = |stage: &solver::StagePlan| -> Vec<usize> {
        let mut deps = Vec::new();
        if let Base::Stage(j) = stage.base {
            deps.push(j);
        }
        for step in &stage.steps {
            match &step.kind {
                StepKind::Run(run) => {
                    for source in run.mount_sources.iter().flatten() {
                        if let FromSource::Stage(j) = source {
                            deps.push(*j);
                        }
                    }
                }
                StepKind::Copy(copy) => {
                    if let Some(FromSource::Stage(j)) = copy.from {
                        deps.push(j);
                    }
                }
                StepKind::Mkdir { .. } => {}
            }
        }
        deps
    };
    let mut results: HashMap<usize, StageResult> = HashMap::new();
    let mut pending: Vec<&solver::StagePlan> = plan.stages.iter().collect();
    let mut failure: Option<String> = None;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<StageResult, String>)>();
    let (log_tx, log_rx) = std::sync::mpsc::channel::<String>();
    std::thread::scope(|scope| {
        let mut running = 0;
        loop {
            if failure.is_none() {
                while running < MAX_PARALLEL {
                    let Some(pos) = pending
                        .iter()
                        .position(|s| deps(s).iter().all(|d| results.contains_key(d)))
                    else {
                        break;
                    };
                    let stage = pending.remove(pos);
                    let built: HashMap<usize, StageResult> = deps(stage)
                        .into_iter()
                        .map(|d| (d, results[&d].clone()))
                        .collect();
                    let (done_tx, log_tx) = (done_tx.clone(), log_tx.clone());
                    running += 1;
                    scope.spawn(move || {
                        let mut log = |line: &str| {
                            let _ = log_tx.send(line.to_string());
                        };
                        let result = build_stage(ctx, stage, &built, &mut log);
                        let _ = done_tx.send((stage.index, result));
                    });
                }
            }
            if running == 0 {
                break;
            }
            // Pass log lines on while waiting for a stage to finish.
            loop {
                while let Ok(line) = log_rx.try_recv() {
                    log(&line);
                }
                match done_rx.recv_timeout(std::time::Duration::from_millis(20)) {
                    Ok((index, result)) => {
                        running -= 1;
                        match result {
                            Ok(r) => {
                                results.insert(index, r);
                            }
                            Err(e) => {
                                if failure.is_none() {
                                    ctx.runner.cancel();
                                    failure = Some(e);
                                }
                            }
                        }
                        break;
                    }
                    Err(_) => continue,
                }
            }
        }
    });
    while let Ok(line) = log_rx.try_recv() {
        log(&line);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Builds one stage on top of its base.
fn build_stage(
    ctx: &StageContext<'_>,
    stage: &solver::StagePlan,
    built: &HashMap<usize, StageResult>,
    log: &mut dyn FnMut(&str),
) -> Result<StageResult, String> {
    let base_stage = match stage.base {
        Base::Stage(j) => built.get(&j),
        _ => None,
    };
    let StageContext {
        options,
        runner,
        store,
        index,
        mount_ctx,
        bases,
        when,
    } = *ctx;
    let when = when.to_string();
    let mut steps = 0;
    let mut cached = 0;
    let manifest = match &stage.base {
        Base::Image(name) => Some(bases[name].manifest_digest.clone()),
        _ => None,
    };
    let base_stage_key = base_stage.map(|b| b.key.clone());
    let mut running = keys::base_key(&stage.base, manifest.as_ref(), base_stage_key.as_ref());
    let use_cache = !options.no_cache
        && !stage.name.as_ref().is_some_and(|n| {
            options
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        });
    let platform = stage.platform.format();
    let label = stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index));
    let mut layers: Vec<LayerBlob> = match &stage.base {
        Base::Scratch => Vec::new(),
        Base::Image(name) => bases[name].layers.clone(),
        Base::Stage(_) => base_stage.map(|b| b.layers.clone()).unwrap_or_default(),
    };
    let mut config = stage.config.clone();
    for (n, step) in stage.steps.iter().enumerate() {
        log(&format!(
            "[{label} {}/{}] {}",
            n + 1,
            stage.steps.len(),
            step.original
        ));
        let at = format!(
            "Dockerfile:{}:{}: {}",
            step.line, step.column, step.original
        );
        let parents: Vec<LayerRef> = layers.iter().map(LayerRef::from).collect();
        let inputs: Vec<Option<Digest>> = match &step.kind {
            StepKind::Run(run) => run
                .mounts
                .iter()
                .zip(&run.mount_sources)
                .map(|(m, from)| match (&m.kind, from, &options.context) {
                    // A mounted stage is known by its final cache key.
                    (_, Some(FromSource::Stage(j)), _) => built.get(j).map(|b| b.key.clone()),
                    (MountType::Bind, None, Some(context)) => {
                        let source = m.source.as_deref().unwrap_or(".").trim_start_matches('/');
                        keys::tree_digest(&context.join(source)).ok()
                    }
                    _ => None,
                })
                .collect(),
            StepKind::Copy(copy) => copy_inputs(ctx, copy, built, &at)?,
            _ => Vec::new(),
        };
        let key = keys::step_key(&running, &step.kind, &inputs, &platform);
        running = key.clone();
        if let Some(entry) = use_cache.then(|| index.get(&key, store)).flatten() {
            log("  CACHED");
            cached += 1;
            config.history[step.history_index].set_created(Some(entry.created.clone()));
            match &entry.layer {
                Some(layer) => layers.push(LayerBlob::from(layer)),
                None => {
                    config.history[step.history_index].set_empty_layer(Some(true));
                }
            }
            continue;
        }
        let layer = match &step.kind {
            StepKind::Run(run) => {
                // Stages mounted with from=: over overlay, their snapshot
                // lower dirs are mounted read-only; in the copy tier their
                // root is materialized into a directory for the step.
                let overlay = runner.plan().snapshots == crate::executor::SnapshotMode::Overlay;
                let snapshots = runner.snapshots();
                let mut step_ctx = mount_ctx.clone();
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
                                built[j].layers.iter().map(LayerRef::from).collect();
                            if overlay && m.kind == MountType::Bind {
                                let mut lowers = snapshots
                                    .lowers(store, &source_layers)
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
                                    .materialize(store, &source_layers, dir.path())
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
                let mut prepared = PreparedMounts::prepare(&other_mounts, &step_ctx)
                    .map_err(|e| format!("{at}: {e}"))?;
                prepared.mounts.extend(stage_mounts);
                let mut env = run.env.clone();
                env.extend(run.proxy_env.iter().cloned());
                env.extend(prepared.env.iter().cloned());
                let step = Step {
                    layers: parents,
                    args: run.args.clone(),
                    env,
                    cwd: run.workdir.clone(),
                    user: run.user.clone(),
                    network_none: options.network_none || run.network == NetworkMode::None,
                    mounts: prepared.mounts.clone(),
                };
                let mut sink = |stream: Stream, line: &[u8]| {
                    let text = String::from_utf8_lossy(line);
                    let prefix = if stream == Stream::Stderr { "! " } else { "  " };
                    log(&format!("{prefix}{}", text.trim_end_matches('\n')));
                };
                let outcome = runner
                    .run(&step, &mut sink)
                    .map_err(|e| format!("{at}: {e}"))?;
                drop(prepared);
                if let Some(failure) = outcome.failure {
                    return Err(format!("{at}: {failure}"));
                }
                outcome.layer
            }
            StepKind::Mkdir { path, user } => runner
                .mkdir_layer(&parents, path, user)
                .map_err(|e| format!("{at}: {e}"))?,
            StepKind::Copy(copy) => {
                let spec = copy_spec(ctx, copy, built, &at)?;
                let outcome = runner
                    .copy(&parents, spec.spec)
                    .map_err(|e| format!("{at}: {e}"))?;
                drop(spec.keep);
                if let Some(failure) = outcome.failure {
                    return Err(format!("{at}: {failure}"));
                }
                outcome.layer
            }
        };
        steps += 1;
        // Only now that the blob is stored: an entry never names a
        // missing layer, and a killed build keeps what finished.
        index
            .put(
                &key,
                &CacheEntry {
                    layer: layer.as_ref().map(CachedLayer::from),
                    created: when.clone(),
                },
            )
            .map_err(|e| format!("{at}: recording the cache entry: {e}"))?;
        match layer {
            Some(layer) => layers.push(layer),
            // BuildKit leaves a step that changed nothing out of the layers.
            None => {
                config.history[step.history_index].set_empty_layer(Some(true));
            }
        }
    }

    // Config-only entries take the time of the step before them, so a
    // fully cached rebuild writes the very same config.
    let mut current = config
        .history
        .get(stage.base_history_len.wrapping_sub(1))
        .and_then(|h| h.created().clone())
        .unwrap_or_else(|| when.clone());
    let step_entries: std::collections::HashSet<usize> =
        stage.steps.iter().map(|s| s.history_index).collect();
    for (i, entry) in config
        .history
        .iter_mut()
        .enumerate()
        .skip(stage.base_history_len)
    {
        if step_entries.contains(&i) {
            current = entry.created().clone().unwrap_or_else(|| current.clone());
        } else {
            entry.set_created(Some(current.clone()));
        }
    }
    config.rootfs = oci_spec::image::RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    Ok(StageResult {
        config,
        layers,
        key: running,
        steps,
        cached,
    })
}

/// The content each COPY source contributes to the cache key: the
/// selected context files' digest, or the key of the stage (or manifest
/// of the image) copied from. Heredoc bodies are in the step itself.
fn copy_inputs(
    ctx: &StageContext<'_>,
    copy: &solver::CopyStep,
    built: &HashMap<usize, StageResult>,
    at: &str,
) -> Result<Vec<Option<Digest>>, String> {
    let from = match &copy.from {
        Some(FromSource::Stage(j)) => Some(built[j].key.clone()),
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
    ctx: &StageContext<'a>,
    exclude: &[String],
    at: &str,
) -> Result<crate::context::SourceTree<'a>, String> {
    let Some(context) = &ctx.options.context else {
        return Err(format!("{at}: COPY from the context needs a build context"));
    };
    crate::context::SourceTree::new(context, &ctx.options.ignore, exclude)
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
    ctx: &StageContext<'_>,
    copy: &solver::CopyStep,
    built: &HashMap<usize, StageResult>,
    at: &str,
) -> Result<PreparedCopy, String> {
    use crate::parser::Source;
    let spec = &copy.spec;
    let urls: Vec<&String> = spec
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Path(p) if p.contains("://") || p.starts_with("git@") => Some(p),
            _ => None,
        })
        .collect();
    if let Some(url) = urls.first() {
        return Err(format!(
            "{at}: ADD {url}: remote sources are not supported yet"
        ));
    }
    let chmod = match &spec.chmod {
        None => None,
        Some(text) => Some(
            u32::from_str_radix(text, 8)
                .map_err(|_| format!("{at}: --chmod={text}: only octal modes are supported yet"))?,
        ),
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
    let source_root = if !heredocs.is_empty() {
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
            Some(FromSource::Stage(j)) => {
                Some(built[j].layers.iter().map(LayerRef::from).collect())
            }
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
                        .lowers(ctx.store, &layers)
                        .map_err(|e| format!("{at}: {e}"))?;
                    lowers.push("empty".to_string());
                    source_lowers = Some((snapshots.root().to_path_buf(), lowers));
                } else {
                    snapshots
                        .materialize(ctx.store, &layers, &root)
                        .map_err(|e| format!("{at}: {e}"))?;
                }
                keep.push(dir);
                root
            }
        }
    };
    let sources = spec
        .sources
        .iter()
        .map(|s| match s {
            Source::Path(p) => p.clone(),
            Source::Heredoc(h) => h.name.clone(),
        })
        .collect();
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
            chmod,
        },
        keep,
    })
}

/// Pulls a base image from its registry into the store (credentials from
/// `$DOCKER_CONFIG`; plain HTTP for loopback and `insecure` registries).
fn pull_base(
    store: &ContentStore,
    name: &str,
    platform: &Platform,
    insecure: &[String],
) -> Result<StoredImage, String> {
    use crate::registry::{CredentialSource, RegistryClient, RegistryOptions};
    let reference: crate::image::reference::Reference =
        name.parse().map_err(|e| format!("{name}: {e}"))?;
    let credentials = CredentialSource::load(None)?;
    let client = RegistryClient::new(
        credentials,
        RegistryOptions {
            insecure: insecure.to_vec(),
            ..RegistryOptions::default()
        },
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let pulled = runtime
        .block_on(client.pull(store, &reference, &platform.os, &platform.architecture))
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
            let complete = store.contains(&image.manifest_digest)
                && store.contains(&image.config_digest)
                && image.layers.iter().all(|l| store.contains(&l.digest));
            if seen == stamp && complete {
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
