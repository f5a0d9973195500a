//! The build's snapshot back-end: the one contract through which a step's
//! root is made from its layers, what the step changed becomes its layer
//! and its committed snapshot, and another stage's root is read. Chosen
//! once per build ([`for_mode`]) from whether overlay can be mounted; the
//! executor and the builder hold a `&dyn StepSnapshots` and never ask
//! which one they have.
//!
//! Two implementations over one [`SnapshotStore`]:
//! - [`OverlaySteps`]: a root is the layers' snapshots stacked as overlay
//!   lower dirs under a fresh upper dir; commit renames the upper dir into
//!   the store at once and hands back a [`Layer`] still being written:
//!   the diff (a walk of the upper dir), the tar and its digest run on a
//!   thread of their own while the next steps stack the dir, and the
//!   snapshot gets its chain id when the layer lands.
//! - [`CopySteps`]: a root is a whole tree, the stage's live tree taken
//!   from the step before or copied; the diff compares two stat walks;
//!   commit renames the tree into the store, its walk kept for the next
//!   step. The layer is written before commit returns: the next step
//!   changes the tree in place, so nothing may read it later.
//!
//! With the store's walk, usage and removal (`snapshot::inventory`,
//! which collection uses) this is containerd's snapshotter contract;
//! `tests/snapshotter.rs` is the suite both implementations pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diff::{self, Change, LayerOptions, OpaqueXattr, TreeState};
use super::layer::{Layer, LayerFailure, LayerPromise};
use super::store::{LentTree, SnapshotError, SnapshotStore, Workspace};
use crate::blob::LayerBlob;
use crate::cache::{ContentStore, LayerError};

/// How a step's root is mounted (the sandbox's `RootFs`, which mounts
/// it in the step's own mount namespace).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootMounts {
    /// A directory, changed in place.
    Dir(PathBuf),
    /// An overlay: names relative to `base` (short names keep long chains
    /// under the kernel's one-page option limit), lowers top first.
    Overlay {
        /// Dir the relative names are resolved from.
        base: PathBuf,
        /// Lower dirs, top first.
        lowers: Vec<String>,
        /// Upper dir.
        upper: String,
        /// Work dir.
        work: String,
        /// Mount point.
        merged: PathBuf,
    },
}

impl RootMounts {
    /// Where the root appears on the host side before pivoting.
    pub fn path(&self) -> &Path {
        match self {
            RootMounts::Dir(p) => p,
            RootMounts::Overlay { merged, .. } => merged,
        }
    }
}

/// A step's root, ready in its workspace, until it is committed.
#[derive(Debug)]
pub struct Prepared {
    /// How to mount it.
    pub mounts: RootMounts,
    /// The lower dirs its image files (`/etc/passwd`) are read from
    /// before the step runs, top first; none for a tree, which is read
    /// where it is.
    pub read_from: Vec<PathBuf>,
    /// Where what the step writes lands on the host: the upper dir, or
    /// the tree.
    pub changed: PathBuf,
    /// The copy tier's walk of the tree before the step.
    before: Option<TreeState>,
}

/// Another stage's root, to read.
#[derive(Debug)]
pub enum View {
    /// Snapshots to stack read-only (names relative to `base`, top
    /// first; always two at least, as a lower-only overlay needs).
    Lowers {
        /// Dir the names are resolved from.
        base: PathBuf,
        /// Lower dirs, top first.
        lowers: Vec<String>,
    },
    /// A directory to read where it is, and the loan that keeps it there
    /// until dropped.
    Dir {
        /// The tree.
        path: PathBuf,
        /// Held while the tree is read.
        loan: Option<LentTree>,
    },
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Walking what the step changed failed.
    #[error("computing the layer diff: {0}")]
    Diff(std::io::Error),
    /// Writing the layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Committing the snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What a step's layer is written with (owned: an overlay step's layer
/// is written on a thread of its own).
#[derive(Debug, Clone)]
pub struct LayerWrite {
    /// The content store it lands in.
    pub blobs: ContentStore,
    /// Times, ids and compression.
    pub options: LayerOptions,
    /// Counts the layer's bytes as they are written.
    pub counter: diff::ByteCounter,
    /// Which xattr the overlay reads as the opaque marker.
    pub opaque: OpaqueXattr,
}

impl LayerWrite {
    fn write(&self, changes: &[Change]) -> Result<LayerBlob, LayerError> {
        diff::write_layer(&self.blobs, changes, self.options, self.counter.clone())
    }
}

/// The build's snapshot contract (see the module doc).
pub trait StepSnapshots: Send + Sync + std::fmt::Debug {
    /// Makes the root of a step on `layers` (bottom first) in `ws`,
    /// extracting from `blobs` what the store does not hold yet.
    fn prepare(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        ws: &Workspace,
    ) -> Result<Prepared, SnapshotError>;

    /// Writes what the step changed in `root` as a layer (an empty one
    /// when nothing changed, as BuildKit commits every RUN and COPY) and
    /// commits the root as the snapshot of `layers` and that layer. The
    /// layer may still be being written when this returns (see the
    /// module doc): what needs its digest waits for it.
    fn commit(
        &self,
        root: Prepared,
        ws: &Workspace,
        layers: &[Layer],
        write: &LayerWrite,
    ) -> Result<Layer, CommitError>;

    /// The root of `layers` to read (a COPY --from, a RUN's bind mount of
    /// a stage); `scratch` is an empty dir it may fill.
    fn view(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        scratch: &Path,
    ) -> Result<View, SnapshotError>;

    /// The same as a directory, whatever the tier (a stage as a cache
    /// mount's first contents).
    fn view_dir(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        scratch: &Path,
    ) -> Result<View, SnapshotError> {
        let layers = Layer::wait_all(layers)?;
        let (path, loan) = self.store().tree_to_read(blobs, &layers, scratch)?;
        Ok(View::Dir { path, loan })
    }

    /// The store below it.
    fn store(&self) -> &SnapshotStore;

    /// "overlay" or "copy", for people.
    fn name(&self) -> &'static str;
}

/// The back-end for a build: overlay where it can be mounted.
pub fn for_mode(store: SnapshotStore, overlay: bool) -> Arc<dyn StepSnapshots> {
    if overlay {
        Arc::new(OverlaySteps { store })
    } else {
        Arc::new(CopySteps { store })
    }
}

/// Snapshots stacked as overlay lower dirs (see the module doc).
#[derive(Debug)]
pub struct OverlaySteps {
    store: SnapshotStore,
}

impl StepSnapshots for OverlaySteps {
    fn prepare(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        ws: &Workspace,
    ) -> Result<Prepared, SnapshotError> {
        let names = self.store.lowers(blobs, layers)?;
        let read_from = self.store.lower_paths(&names);
        Ok(Prepared {
            mounts: RootMounts::Overlay {
                base: self.store.root().to_path_buf(),
                lowers: names,
                upper: ws.relative(&self.store, "upper"),
                work: ws.relative(&self.store, "work"),
                merged: ws.merged(),
            },
            read_from,
            changed: ws.upper(),
            before: None,
        })
    }

    fn commit(
        &self,
        root: Prepared,
        ws: &Workspace,
        layers: &[Layer],
        write: &LayerWrite,
    ) -> Result<Layer, CommitError> {
        // The upper dir is the next steps' lower dir (a remapped step's
        // too: it wrote through an idmapped mount, so the owners on disk
        // are the image's, as in its layer). Nothing writes it from here
        // on, so its layer can be made while they run.
        let (name, fs) = self.store.commit_upper(&ws.upper(), write.opaque)?;
        let (layer, promise) = Layer::writing(name);
        let job = OverlayLayer {
            store: self.store.clone(),
            write: write.clone(),
            fs,
            lowers: root.read_from,
            parents: layers.to_vec(),
        };
        std::thread::Builder::new()
            .name("layer".into())
            .spawn(move || job.run(promise))
            .map_err(|e| {
                CommitError::Diff(std::io::Error::other(format!(
                    "starting the layer writer: {e}"
                )))
            })?;
        Ok(layer)
    }

    fn view(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        _: &Path,
    ) -> Result<View, SnapshotError> {
        let mut lowers = self.store.lowers(blobs, layers)?;
        // A lower-only overlay needs two dirs.
        lowers.push("empty".to_string());
        Ok(View::Lowers {
            base: self.store.root().to_path_buf(),
            lowers,
        })
    }

    fn store(&self) -> &SnapshotStore {
        &self.store
    }

    fn name(&self) -> &'static str {
        "overlay"
    }
}

/// An overlay step's layer, made on its own thread from the committed
/// upper dir.
struct OverlayLayer {
    store: SnapshotStore,
    write: LayerWrite,
    /// The committed upper dir.
    fs: PathBuf,
    /// The lower dirs the step ran on, top first.
    lowers: Vec<PathBuf>,
    /// The layers below, for the chain id.
    parents: Vec<Layer>,
}

impl OverlayLayer {
    fn run(self, promise: LayerPromise) {
        promise.keep(self.write().map_err(|e| LayerFailure(e.to_string())));
    }

    /// The diff, the tar and its digest, then the snapshot's chain id,
    /// which needs the layers below written too.
    fn write(&self) -> Result<LayerBlob, CommitError> {
        let changes = diff::overlay_changes(&self.fs, &self.lowers, self.write.opaque)
            .map_err(CommitError::Diff)?;
        let layer = self.write.write(&changes)?;
        let parents = Layer::wait_all(&self.parents).map_err(SnapshotError::from)?;
        self.store.alias(&self.fs, &parents, &layer)?;
        Ok(layer)
    }
}

/// Snapshots as whole trees, one live tree per stage (see the module doc).
#[derive(Debug)]
pub struct CopySteps {
    store: SnapshotStore,
}

impl StepSnapshots for CopySteps {
    fn prepare(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        ws: &Workspace,
    ) -> Result<Prepared, SnapshotError> {
        let merged = ws.merged();
        let layers = Layer::wait_all(layers)?;
        let kept = self.store.take_tree(blobs, &layers, &merged)?;
        let before = match kept {
            Some(state) => state,
            None => diff::record_tree(&merged).map_err(|source| SnapshotError::Io {
                path: merged.clone(),
                source,
            })?,
        };
        Ok(Prepared {
            mounts: RootMounts::Dir(merged.clone()),
            // The tree itself is read (the executor's fallback root).
            read_from: Vec::new(),
            changed: merged,
            before: Some(before),
        })
    }

    fn commit(
        &self,
        root: Prepared,
        ws: &Workspace,
        layers: &[Layer],
        write: &LayerWrite,
    ) -> Result<Layer, CommitError> {
        let tree = ws.merged();
        let Some(before) = root.before else {
            return Err(CommitError::Diff(std::io::Error::other(
                "this root was not prepared by the copy tier",
            )));
        };
        // Nothing writes the tree from here to its commit, so this walk
        // is the next step's `before`.
        let after = diff::record_tree(&tree).map_err(CommitError::Diff)?;
        let changes = diff::state_changes(&before, &after, &tree).map_err(CommitError::Diff)?;
        let layer = write.write(&changes)?;
        // The whole root is the next step's starting tree.
        let layers = Layer::wait_all(layers).map_err(SnapshotError::from)?;
        self.store.commit_tree(&tree, &layers, &layer, after)?;
        Ok(Layer::ready(layer))
    }

    fn view(
        &self,
        blobs: &ContentStore,
        layers: &[Layer],
        scratch: &Path,
    ) -> Result<View, SnapshotError> {
        self.view_dir(blobs, layers, scratch)
    }

    fn store(&self) -> &SnapshotStore {
        &self.store
    }

    fn name(&self) -> &'static str {
        "copy"
    }
}
