//! What every op of one build shares: the options, the step runner, the
//! stores, the resolved bases, the plan and its graph, and the ADD sources
//! fetched once per build; and what an op hands the ops after it.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::{BuildError, BuildOptions};
use crate::cache::{CacheIndex, ContentStore};
use crate::executor::StepRunner;
use crate::image::layout::StoredImage;
use crate::solver;
use crate::solver::graph::BuildGraph;

/// What every op of one build shares (owned: ops run on tokio's blocking
/// pool).
pub(super) struct Shared {
    pub(super) options: BuildOptions,
    pub(super) runner: StepRunner,
    pub(super) store: ContentStore,
    pub(super) index: CacheIndex,
    pub(super) bases: HashMap<String, StoredImage>,
    pub(super) when: String,
    pub(super) plan: solver::Plan,
    pub(super) graph: Option<BuildGraph>,
    /// `ADD <url>` downloads, once per build: URL → (its dir, the file).
    pub(super) downloads: std::sync::Mutex<HashMap<String, Download>>,
    /// `ADD <git url>` checkouts, once per build: (source, keep .git) → it.
    pub(super) checkouts: std::sync::Mutex<HashMap<(String, bool), GitCheckout>>,
    /// Remembered content hashes of the context's files.
    pub(super) hashes: crate::context::hashcache::HashCache,
    /// The number the next step to start gets (progress ids).
    pub(super) next_id: std::sync::atomic::AtomicUsize,
    /// Cache entries of steps whose layers are still being written, each
    /// recorded by a thread once its layer lands ([`Shared::finish_layers`]).
    pub(super) recording: std::sync::Mutex<Vec<std::thread::JoinHandle<Result<(), BuildError>>>>,
}

/// A downloaded ADD source and the temporary dir holding it.
pub(super) type Download = (Arc<tempfile::TempDir>, crate::context::remote::Downloaded);

/// A git checkout for ADD and the temporary dir holding it.
pub(super) type GitCheckout = (Arc<tempfile::TempDir>, Arc<crate::context::git::Checkout>);

impl Shared {
    /// Waits for every layer still being written and the cache entries
    /// recorded when they land; the first failure, if any (a full disk),
    /// blamed on its step. Then removes the snapshots this build stacked
    /// that another build had committed first.
    pub(super) fn finish_layers(&self) -> Result<(), BuildError> {
        let handles =
            std::mem::take(&mut *self.recording.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for handle in handles {
            let outcome = handle
                .join()
                .unwrap_or_else(|_| Err(super::environment("a layer's writer panicked")));
            if first.is_ok() {
                first = outcome;
            }
        }
        self.runner.steps().store().release_unaliased();
        first
    }

    /// Downloads `url` (once per build) for ADD.
    pub(super) fn download(
        &self,
        url: &str,
        checksum: Option<&str>,
        at: &str,
    ) -> Result<Download, BuildError> {
        let mut downloads = self.downloads.lock().expect("not poisoned");
        if let Some(done) = downloads.get(url) {
            // Downloaded for another ADD: this one's --checksum still holds.
            if let Some(want) = checksum.filter(|w| *w != done.1.digest.as_str()) {
                return Err(format!(
                    "{at}: {url}: checksum mismatch: --checksum={want}, the download is {}",
                    done.1.digest
                )
                .into());
            }
            return Ok(done.clone());
        }
        let dir = self.temp_dir("download-", at)?;
        let file = crate::context::remote::download(url, dir.path(), checksum)
            .map_err(|e| super::of_context(at, e))?;
        let done = (Arc::new(dir), file);
        downloads.insert(url.to_string(), done.clone());
        Ok(done)
    }

    /// Checks out the git source `source` (once per build) for ADD.
    pub(super) fn checkout(
        &self,
        source: &str,
        spec: &crate::parser::CopyLike,
        at: &str,
    ) -> Result<GitCheckout, BuildError> {
        use crate::context::git;
        let mut git = match git::parse(source) {
            Some(Ok(git)) => git,
            Some(Err(e)) => {
                return Err(format!("{at}: {}: {e}", crate::redact::redact_text(source)).into())
            }
            None => unreachable!("only git sources are checked out"),
        };
        let shown = crate::redact::redact_text(&git.remote);
        if let (Some(flag), Some(query)) = (&spec.checksum, &git.checksum) {
            if flag != query {
                return Err(
                    format!("{at}: {shown}: checksum mismatch {flag:?} != {query:?}").into(),
                );
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
                return Err(
                    format!("{at}: {shown}: inconsistent keep-git-dir configuration").into(),
                )
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        let mut checkouts = self.checkouts.lock().expect("not poisoned");
        let slot = (source.to_string(), keep);
        if let Some(done) = checkouts.get(&slot) {
            return Ok(done.clone());
        }
        let dir = self.temp_dir("git-", at)?;
        let checkout =
            git::checkout(&git, keep, dir.path()).map_err(|e| super::of_context(at, e))?;
        let done = (Arc::new(dir), Arc::new(checkout));
        checkouts.insert(slot, done.clone());
        Ok(done)
    }

    /// A temporary dir in the snapshot store's `tmp` (the same file
    /// system as the snapshots, so files can be linked or renamed in).
    pub(super) fn temp_dir(&self, prefix: &str, at: &str) -> Result<tempfile::TempDir, BuildError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.runner.snapshots().root().join("tmp"))
            .map_err(|e| super::environment(format!("{at}: {e}")))
    }

    pub(super) fn graph(&self) -> &BuildGraph {
        self.graph.as_ref().expect("built before scheduling")
    }

    pub(super) fn stage(&self, index: usize) -> &solver::StagePlan {
        self.plan
            .stages
            .iter()
            .find(|s| s.index == index)
            .expect("a planned stage")
    }

    pub(super) fn label(&self, index: usize) -> String {
        self.stage(index)
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    /// Whether an op may come from the cache (`--no-cache`,
    /// `--no-cache-filter` on any stage it stands for).
    pub(super) fn use_cache(&self, node: NodeIndex) -> bool {
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
pub(super) enum How {
    /// A base image (or scratch).
    Base,
    /// From the cache index.
    Cached,
    /// Run now.
    Ran,
}

/// An op's result: the layers of the root after it, and its history facts.
#[derive(Debug, Clone)]
pub(super) struct OpResult {
    /// The stage's layers so far, bottom first; the last may still be
    /// being written.
    pub(super) layers: Vec<crate::snapshot::Layer>,
    pub(super) created: String,
    pub(super) empty: bool,
    pub(super) how: How,
}
