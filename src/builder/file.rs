//! The File op: COPY, ADD and WORKDIR creation. A COPY reads from the
//! context (with .dockerignore), a dir of heredoc files, downloads, a git
//! checkout, or another stage's or image's root (overlay lower dirs the
//! helper mounts, or a materialized copy in the copy tier); the sandbox
//! helper writes the layer.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::shared::Shared;
use super::step::{Job, MakesLayer};
use super::BuildError;
use crate::parser::{Heredoc, Source};
use crate::snapshot::backend::View;
use crate::snapshot::Layer;
use crate::solver::{self, FromSource};

/// A file step.
pub(super) enum File {
    /// COPY or ADD.
    Copy(solver::CopyStep),
    /// WORKDIR's directory, made when it is missing.
    Mkdir { path: String, user: String },
}

impl MakesLayer for File {
    fn layer(&self, job: &Job<'_>) -> Result<Option<Layer>, BuildError> {
        let (shared, at) = (job.shared, job.at);
        match self {
            File::Mkdir { path, user } => shared
                .runner
                .mkdir_layer(job.parents, path, user)
                .map(|blob| Some(Layer::ready(blob)))
                .map_err(|e| BuildError::of_step(at, e)),
            File::Copy(copy) => {
                let prepared = copy_spec(shared, copy, job)?;
                // --link: the layer is made on an empty root and stacked.
                let onto: &[Layer] = if copy.spec.link { &[] } else { job.parents };
                let outcome = shared
                    .runner
                    .copy(onto, prepared.spec, job.layer_bytes.clone())
                    .map_err(|e| BuildError::of_step(at, e))?;
                drop(prepared.keep);
                if let Some(failure) = outcome.failure {
                    return Err(super::classed(at, failure, outcome.machine_failed));
                }
                Ok(outcome.layer)
            }
        }
    }
}

/// A COPY's helper spec and what it needs kept until the copy is done:
/// temporary dirs, a tree lent out of the snapshot store.
struct PreparedCopy {
    spec: crate::executor::CopySpec,
    keep: Vec<Box<dyn Send>>,
}

/// Where a COPY's sources are, as the helper is to read them.
struct Sources {
    root: PathBuf,
    /// Overlay lower dirs the helper mounts at `root` (another stage's or
    /// image's root over overlay snapshots).
    lowers: Option<(PathBuf, Vec<String>)>,
    /// The source paths inside `root`.
    names: Vec<String>,
    /// The .dockerignore text that applies (the context's only).
    ignore: String,
    unpack: Option<bool>,
    keep: Vec<Box<dyn Send>>,
}

impl Sources {
    /// `names` in `root`, no lower dirs, no ignore rules.
    fn new(root: PathBuf, names: Vec<String>, unpack: Option<bool>) -> Sources {
        Sources {
            root,
            lowers: None,
            names,
            ignore: String::new(),
            unpack,
            keep: Vec::new(),
        }
    }

    /// The same, holding `held` (a temporary dir, a lent tree) until the
    /// copy is done.
    fn keeping(mut self, held: impl Send + 'static) -> Sources {
        self.keep.push(Box::new(held));
        self
    }
}

/// The helper's spec for `copy`.
fn copy_spec(
    shared: &Shared,
    copy: &solver::CopyStep,
    job: &Job<'_>,
) -> Result<PreparedCopy, BuildError> {
    let (spec, at) = (&copy.spec, job.at);
    let chmod = match &spec.chmod {
        None => None,
        Some(text) => {
            Some(crate::executor::chmod::Chmod::parse(text).map_err(|e| format!("{at}: {e}"))?)
        }
    };
    let sources = sources(shared, copy, job)?;
    Ok(PreparedCopy {
        spec: crate::executor::CopySpec {
            source_root: sources.root,
            source_lowers: sources.lowers,
            sources: sources.names,
            dest: copy.dest.clone(),
            ignore: sources.ignore,
            exclude: spec.exclude.clone(),
            chown: spec.chown.clone(),
            keep_owner: copy.from.is_some(),
            parents: spec.parents,
            add: copy.add,
            unpack: sources.unpack,
            chmod,
        },
        keep: sources.keep,
    })
}

/// Sorts a COPY's sources by kind (which may not be mixed yet) and makes
/// them ready.
fn sources(shared: &Shared, copy: &solver::CopyStep, job: &Job<'_>) -> Result<Sources, BuildError> {
    let (spec, at) = (&copy.spec, job.at);
    let paths_where = |is: fn(&str) -> bool| -> Vec<&String> {
        let paths = spec.sources.iter().filter_map(|s| match s {
            Source::Path(p) if is(p) => Some(p),
            _ => None,
        });
        paths.collect()
    };
    let urls = paths_where(crate::context::remote::is_url);
    let gits = paths_where(crate::context::git::is_git);
    let heredocs: Vec<&Heredoc> = spec
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Heredoc(h) => Some(h),
            _ => None,
        })
        .collect();
    let all = spec.sources.len();
    if !gits.is_empty() && all != 1 {
        return Err(format!(
            "{at}: a git repository must be the only source of its ADD (rbuild does not mix them yet)"
        ).into());
    }
    if !urls.is_empty() && urls.len() != all {
        return Err(
            format!("{at}: mixing URL and local sources in one ADD is not supported yet").into(),
        );
    }
    if !heredocs.is_empty() && heredocs.len() != all {
        return Err(format!(
            "{at}: mixing heredoc and path sources in one COPY is not supported yet"
        )
        .into());
    }
    if let Some(git) = gits.first() {
        git_source(shared, copy, git, at)
    } else if !urls.is_empty() {
        url_sources(shared, copy, &urls, at)
    } else if !heredocs.is_empty() {
        heredoc_sources(shared, copy, &heredocs, at)
    } else {
        tree_sources(shared, copy, job)
    }
}

/// An ADD of a git repository: the checkout's contents go into the
/// destination; git trees are never unpacked. (The build holds the
/// checkout's dir until it ends.)
fn git_source(
    shared: &Shared,
    copy: &solver::CopyStep,
    git: &str,
    at: &str,
) -> Result<Sources, BuildError> {
    let (_, checkout) = shared.checkout(git, &copy.spec, at)?;
    Ok(Sources::new(
        checkout.root.clone(),
        vec![".".to_string()],
        Some(false),
    ))
}

/// An ADD of URLs: the downloads, linked into one dir under their names;
/// not unpacked unless `--unpack` says so.
fn url_sources(
    shared: &Shared,
    copy: &solver::CopyStep,
    urls: &[&String],
    at: &str,
) -> Result<Sources, BuildError> {
    let dir = shared.temp_dir("downloads-", at)?;
    let mut names = Vec::new();
    for url in urls {
        let (_, file) = shared.download(url, copy.spec.checksum.as_deref(), at)?;
        let target = dir.path().join(&file.name);
        if target.exists() {
            return Err(format!("{at}: two URLs download to the same name {}", file.name).into());
        }
        std::fs::hard_link(&file.path, &target)
            .or_else(|_| std::fs::copy(&file.path, &target).map(drop))
            .map_err(|e| format!("{at}: {e}"))?;
        names.push(file.name.clone());
    }
    let unpack = Some(copy.spec.unpack.unwrap_or(false));
    Ok(Sources::new(dir.path().to_path_buf(), names, unpack).keeping(dir))
}

/// Heredoc bodies as files (0644, dated at SOURCE_DATE_EPOCH or the epoch,
/// as BuildKit makes them).
fn heredoc_sources(
    shared: &Shared,
    copy: &solver::CopyStep,
    heredocs: &[&Heredoc],
    at: &str,
) -> Result<Sources, BuildError> {
    let dir = shared.temp_dir("heredocs-", at)?;
    let epoch = shared.options.source_date_epoch.unwrap_or(0).max(0) as u64;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for h in heredocs {
        let path = dir.path().join(&h.name);
        let io = |e: std::io::Error| super::environment(format!("{at}: {e}"));
        std::fs::write(&path, h.body()).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .map_err(io)?;
    }
    let names = heredocs.iter().map(|h| h.name.clone()).collect();
    Ok(Sources::new(dir.path().to_path_buf(), names, copy.spec.unpack).keeping(dir))
}

/// Paths in the context, or in another stage's or image's root.
fn tree_sources(
    shared: &Shared,
    copy: &solver::CopyStep,
    job: &Job<'_>,
) -> Result<Sources, BuildError> {
    let at = job.at;
    let names = copy
        .spec
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Path(p) => Some(p.clone()),
            Source::Heredoc(_) => None,
        })
        .collect();
    let mut sources = Sources::new(PathBuf::new(), names, copy.spec.unpack);
    let layers: Vec<Layer> = match &copy.from {
        Some(FromSource::Stage(j)) => job.from[j].layers.to_vec(),
        Some(FromSource::Image(name)) => Layer::all_ready(&shared.bases[name].layers),
        None => {
            let Some(context) = &shared.options.context else {
                return Err(format!("{at}: COPY from the context needs a build context").into());
            };
            sources.ignore = shared.options.ignore_text.clone();
            sources.root = context.clone();
            return Ok(sources);
        }
    };
    let dir = shared.temp_dir("copy-from-", at)?;
    let view = shared
        .runner
        .steps()
        .view(&shared.store, &layers, dir.path())
        .map_err(|e| super::environment(format!("{at}: {e}")))?;
    sources.root = match view {
        // Copied through a read-only overlay in the helper.
        View::Lowers { base, lowers } => {
            sources.lowers = Some((base, lowers));
            dir.path().to_path_buf()
        }
        // The stage's own tree, read where it is: a copy of a builder
        // stage's whole root for a few files cost seconds.
        View::Dir { path, loan } => {
            sources
                .keep
                .extend(loan.map(|l| Box::new(l) as Box<dyn Send>));
            path
        }
    };
    Ok(sources.keeping(dir))
}
