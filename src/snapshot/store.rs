//! The snapshot store: every layer extracted once, as an overlay lower dir
//! keyed by its chain id, shared by all builds; and per-step workspaces.
//!
//! Layout under the store root (normally `$RBUILD_ROOT/snapshots`):
//! `<chain-id hex>/fs` is a layer in overlay format (whiteouts as 0/0
//! character devices, opaque dirs marked by xattrs); `l/<16 hex>` is a
//! short symlink to it, so a mount option string naming a long chain of
//! lower dirs stays under the kernel's one-page limit; `w/<id>/` holds a
//! step's `upper`, `work` and `merged` dirs (or `rootfs` in the copy tier);
//! `<chain-id hex>/tree` is the copy tier's committed snapshot: the whole
//! root a step left, which the next step of the same build takes (a
//! rename: a stage's tree lives on from step to step) and a later build
//! copies.
//! A step's upper dir, committed before its layer is written, moves to
//! `p/<id>/fs` at once (later steps of the build stack it by that name);
//! once the layer lands, `<chain-id hex>` becomes a symlink to `p/<id>`,
//! so other builds find it by chain id like any other.
//! Extraction goes to a temporary dir renamed into place, so a killed build
//! never leaves a half-extracted snapshot under its real name.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::apply::{apply_layer, ApplyError, ApplyOptions};
use super::diff::{OpaqueXattr, TreeState, OPAQUE_XATTRS};
use super::layer::{Layer, LayerFailure};
use super::live::LiveStates;
use super::tree::{clear_dir, copy_into};
use crate::blob::{Digest, LayerBlob};
use crate::cache::{ContentStore, StoreError};

/// Snapshot store failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading a layer blob failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The layer could not be applied (includes escape attempts).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A file system operation on the store failed.
    #[error("snapshot store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Too many layers for one overlay mount.
    #[error(
        "{0} layers are too many for one overlay mount (the option string would exceed a page)"
    )]
    TooManyLayers(usize),
    /// A layer below the step's could not be written.
    #[error("a layer below this step: {0}")]
    Layer(#[from] LayerFailure),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Chain ids of a stack of layers (bottom first), as the OCI spec defines
/// them: the first is its diff_id, each next is `sha256("<prev> <diff_id>")`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(prev) => {
                let hash: [u8; 32] = Sha256::digest(format!("{prev} {diff_id}")).into();
                Digest::from_sha256(hash)
            }
        };
        out.push(next);
    }
    out
}

/// The chain ids of a stack of layers (bottom first).
fn layer_chains<'a>(layers: impl IntoIterator<Item = &'a LayerBlob>) -> Vec<Digest> {
    let diff_ids: Vec<Digest> = layers.into_iter().map(|l| l.diff_id.clone()).collect();
    chain_ids(&diff_ids)
}

/// The chain id of the top of `layers` (bottom first); `None` for none.
fn top_chain<'a>(layers: impl IntoIterator<Item = &'a LayerBlob>) -> Option<Digest> {
    layer_chains(layers).pop()
}

/// The short name (`l/<16 hex>`, relative to the store's root) of the
/// chain whose id is `hex`.
pub(super) fn short_name_of(hex: &str) -> String {
    format!("l/{}", &hex[..16])
}

/// Stamps a snapshot dir's last use, for pruning least recently used
/// snapshots first.
fn mark_used(dir: &Path) {
    let _ = std::fs::File::open(dir).and_then(|d| d.set_modified(std::time::SystemTime::now()));
}

/// Opens a layer blob, undoing gzip when the bytes say so.
pub fn open_layer(store: &ContentStore, digest: &Digest) -> Result<Box<dyn Read>, StoreError> {
    let mut file = BufReader::new(store.open_blob(digest)?);
    let magic = {
        use std::io::BufRead;
        let buf = file.fill_buf().map_err(|e| StoreError::Io {
            path: store.blob_path(digest),
            source: e,
        })?;
        buf.get(..2).map(|m| [m[0], m[1]])
    };
    Ok(match magic {
        Some([0x1f, 0x8b]) => Box::new(flate2::read::GzDecoder::new(file)),
        _ => Box::new(file),
    })
}

/// Gives every opaque directory below `dir` both opaque xattrs, as an
/// extracted layer has them, so the snapshot reads the same to a mount as
/// root (`trusted.*`) and one in a user namespace (`user.*`). Opaque means
/// marked in the namespace the step's mount read (`mode`): the other one
/// can hold a stale copy, since a mount as root copies `user.overlay.*` up
/// like any xattr; that copy goes (it would make the dir opaque to the
/// next mount and hide what is below it). `trusted.*` needs root, so a
/// rootless build keeps `user.*` alone, as its extractions do.
fn mark_opaque_both(dir: &Path, mode: OpaqueXattr) -> io::Result<()> {
    let marked = |path: &Path, key: &str| {
        let mut value = [0u8; 4];
        matches!(rustix::fs::lgetxattr(path, key, &mut value[..]), Ok(1) if value[0] == b'y')
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let opaque = mode.keys().iter().any(|key| marked(&dir, key));
        for key in OPAQUE_XATTRS {
            if opaque {
                let _ = rustix::fs::lsetxattr(&dir, key, b"y", rustix::fs::XattrFlags::empty());
            } else if marked(&dir, key) {
                let _ = rustix::fs::lremovexattr(&dir, key);
            }
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Applies `layers` (bottom first) onto the tree at `dest`, as a merged
/// root (whiteouts delete), not in overlay format.
fn apply_layers(
    store: &ContentStore,
    layers: &[LayerBlob],
    dest: &Path,
) -> Result<(), SnapshotError> {
    for layer in layers {
        apply_layer(
            dest,
            open_layer(store, &layer.digest)?,
            &layer.digest.to_string(),
            ApplyOptions::default(),
        )?;
    }
    Ok(())
}

/// The store of extracted layers.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    root: PathBuf,
    /// The copy tier's trees this process committed, with their walks.
    live: std::sync::Arc<LiveStates>,
    /// Upper dirs this process committed whose chain another build had
    /// committed first: used by this build's later steps, removed when it
    /// ends ([`SnapshotStore::release_unaliased`]).
    unaliased: std::sync::Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl SnapshotStore {
    /// Opens (creating) a snapshot store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<SnapshotStore, SnapshotError> {
        let root = root.into();
        for sub in ["l", "w", "p", "tmp", "empty"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io_at(&root))?;
        }
        Ok(SnapshotStore {
            root,
            live: Default::default(),
            unaliased: Default::default(),
        })
    }

    /// The store at `root` as it is, making nothing: for reading it
    /// (`rbuild du`) and collecting it, where a missing store is an empty
    /// one.
    pub fn existing(root: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore {
            root: root.into(),
            live: Default::default(),
            unaliased: Default::default(),
        }
    }

    /// The store's root dir (overlay mounts name lower dirs relative to it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn short_name(chain: &Digest) -> String {
        short_name_of(chain.hex())
    }

    /// Extracts any of `layers` (bottom first) not yet in the store and
    /// returns their lower dir names relative to [`SnapshotStore::root`],
    /// top first, as overlay's `lowerdir=` wants them. A layer this
    /// process committed is named by its snapshot, written or not; any
    /// other by its chain id, which waits for the layers below it to be
    /// written.
    pub fn lowers(
        &self,
        store: &ContentStore,
        layers: &[Layer],
    ) -> Result<Vec<String>, SnapshotError> {
        // The chain ids reach up to the last layer found by chain id;
        // those below it must be written for them.
        let by_chain = layers.iter().rposition(|l| l.snapshot().is_none());
        let below = match by_chain {
            Some(last) => Layer::wait_all(&layers[..=last])?,
            None => Vec::new(),
        };
        let chains = layer_chains(&below);
        let mut names = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            if let Some(name) = layer.snapshot() {
                names.push(name.to_string());
                continue;
            }
            self.ensure(store, &below[i], &chains[i])?;
            names.push(Self::short_name(&chains[i]));
        }
        names.reverse();
        if names.is_empty() {
            // FROM scratch: overlay still wants a lower dir.
            names.push("empty".to_string());
        }
        let option_len: usize = names.iter().map(|n| n.len() + 1).sum::<usize>() + 300;
        if option_len > 4096 {
            return Err(SnapshotError::TooManyLayers(layers.len()));
        }
        Ok(names)
    }

    fn ensure(
        &self,
        store: &ContentStore,
        layer: &LayerBlob,
        chain: &Digest,
    ) -> Result<(), SnapshotError> {
        let dir = self.root.join(chain.hex());
        mark_used(&dir);
        if !dir.join("fs").is_dir() {
            let tmp = tempfile::Builder::new()
                .prefix("extract-")
                .tempdir_in(self.root.join("tmp"))
                .map_err(io_at(&self.root))?;
            let fs = tmp.path().join("fs");
            std::fs::create_dir(&fs).map_err(io_at(&fs))?;
            let options = ApplyOptions {
                overlay_format: true,
                ..ApplyOptions::default()
            };
            apply_layer(
                &fs,
                open_layer(store, &layer.digest)?,
                &layer.digest.to_string(),
                options,
            )?;
            crate::failpoint::hit("snapshot-extracted");
            self.install(tmp, &dir, "fs")?;
        }
        self.link(chain)
    }

    /// Commits a finished step's overlay upper dir as a snapshot before
    /// its layer is written, so the steps after it stack the dir itself
    /// instead of extracting the layer again (BuildKit's commit): the dir
    /// moves to `p/<id>/fs`, whose name (relative to the store's root) it
    /// returns with the dir. The upper dir is in overlay format already
    /// (whiteouts, opaque markers), the format an extracted layer gets.
    /// Other builds find it once [`SnapshotStore::alias`] names it by
    /// chain id; a build killed before that leaves it to collection.
    pub fn commit_upper(
        &self,
        upper: &Path,
        opaque: OpaqueXattr,
    ) -> Result<(String, PathBuf), SnapshotError> {
        mark_opaque_both(upper, opaque).map_err(io_at(upper))?;
        let dir = tempfile::Builder::new()
            .prefix("")
            .rand_bytes(8)
            .tempdir_in(self.root.join("p"))
            .map_err(io_at(&self.root))?
            .keep();
        let fs = dir.join("fs");
        std::fs::rename(upper, &fs).map_err(io_at(upper))?;
        crate::failpoint::hit("snapshot-moved");
        let id = dir.file_name().expect("a made dir").to_string_lossy();
        Ok((format!("p/{id}/fs"), fs))
    }

    /// Names the snapshot `fs` ([`SnapshotStore::commit_upper`]'s) by the
    /// chain id of `layer` on `parents`, now that its layer is written: a
    /// symlink `<chain-id hex>` to its dir, made in one step. A chain
    /// another build committed first keeps theirs; this build's later
    /// steps go on stacking ours, removed when the build ends.
    pub fn alias(
        &self,
        fs: &Path,
        parents: &[LayerBlob],
        layer: &LayerBlob,
    ) -> Result<(), SnapshotError> {
        let chain = top_chain(parents.iter().chain([layer])).expect("one layer at least");
        let dir = fs.parent().expect("p/<id>/fs");
        let id = dir.file_name().expect("p/<id>").to_string_lossy();
        let link = self.root.join(chain.hex());
        let mut ours = false;
        if !link.join("fs").is_dir() {
            // A dangling link (its snapshot removed) is in the way.
            if std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink()) {
                let _ = std::fs::remove_file(&link);
            }
            ours = std::os::unix::fs::symlink(format!("p/{id}"), &link).is_ok();
        }
        if !ours {
            self.unaliased
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir.to_path_buf());
        }
        crate::failpoint::hit("snapshot-installed");
        self.link(&chain)
    }

    /// Removes the snapshots this process committed that no chain id
    /// names (another build's came first): once the build that stacked
    /// them is done with them.
    pub fn release_unaliased(&self) {
        let dirs = std::mem::take(&mut *self.unaliased.lock().unwrap_or_else(|e| e.into_inner()));
        for dir in dirs {
            let _ = super::tree::remove_tree(&dir);
        }
    }

    /// Moves `tmp/<sub>` into place as `dir/<sub>` (`fs` for overlay,
    /// `tree` for the copy tier; a chain can have both), unless another
    /// build put one there first (theirs is as good). Each is one rename.
    fn install(&self, tmp: tempfile::TempDir, dir: &Path, sub: &str) -> Result<(), SnapshotError> {
        // A chain's symlink whose snapshot was removed is in the way.
        if !dir.is_dir() && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_symlink()) {
            let _ = std::fs::remove_file(dir);
        }
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_at(dir)(e)),
            _ => {}
        }
        crate::failpoint::hit("snapshot-dir-made");
        let target = dir.join(sub);
        match std::fs::rename(tmp.path().join(sub), &target) {
            Ok(()) => {
                crate::failpoint::hit("snapshot-installed");
                Ok(())
            }
            Err(e)
                if target.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) =>
            {
                Ok(())
            }
            Err(e) => Err(io_at(&target)(e)),
        }
    }

    /// The short name of `chain`'s snapshot, made when missing.
    fn link(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let link = self.root.join(Self::short_name(chain));
        if std::fs::symlink_metadata(&link).is_err() {
            let target = format!("../{}/fs", chain.hex());
            match std::os::unix::fs::symlink(&target, &link) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_at(&link)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The absolute lower dirs for `names` from [`SnapshotStore::lowers`].
    pub fn lower_paths(&self, names: &[String]) -> Vec<PathBuf> {
        names.iter().map(|n| self.root.join(n)).collect()
    }

    /// Fills the empty dir `dest` with the tree of `layers` (bottom
    /// first), for reading: a copy of the store's tree of the deepest
    /// chain of `layers` it holds, with the layers above it applied (every
    /// layer when it holds none).
    fn materialize(
        &self,
        store: &ContentStore,
        layers: &[LayerBlob],
        dest: &Path,
    ) -> Result<(), SnapshotError> {
        self.fill_tree(store, layers, dest, false).map(|_| ())
    }

    /// Fills the empty dir `dest` with the tree of `layers` (bottom
    /// first) for a copy-tier step to change in place: the stage's live
    /// tree. As `materialize` (a copy for reading), except that a tree this
    /// process committed, as the step before in the stage did, is *taken*
    /// (one rename, nothing copied); one another build left is copied, so
    /// it stays in the store. Returns the walk kept with a taken tree of
    /// the whole chain: the state the step starts from.
    pub fn take_tree(
        &self,
        store: &ContentStore,
        layers: &[LayerBlob],
        dest: &Path,
    ) -> Result<Option<TreeState>, SnapshotError> {
        self.fill_tree(store, layers, dest, true)
    }

    /// [`SnapshotStore::materialize`] and, with `take`,
    /// [`SnapshotStore::take_tree`].
    fn fill_tree(
        &self,
        store: &ContentStore,
        layers: &[LayerBlob],
        dest: &Path,
        take: bool,
    ) -> Result<Option<TreeState>, SnapshotError> {
        let (from, state) = self.start_tree(&layer_chains(layers), dest, take)?;
        apply_layers(store, &layers[from..], dest)?;
        Ok(state.filter(|_| from == layers.len()))
    }

    /// Puts the deepest tree of `chains` the store holds in the empty dir
    /// `dest` (taken or copied, see [`SnapshotStore::take_tree`]); how
    /// many layers it holds (0: none), and a taken tree's kept walk.
    fn start_tree(
        &self,
        chains: &[Digest],
        dest: &Path,
        take: bool,
    ) -> Result<(usize, Option<TreeState>), SnapshotError> {
        for (depth, chain) in chains.iter().enumerate().rev() {
            let dir = self.root.join(chain.hex());
            let tree = dir.join("tree");
            if take && self.live.owns(&tree) {
                std::fs::remove_dir(dest).map_err(io_at(dest))?;
                // Two takers race safely: the loser's rename fails, and
                // it looks further down.
                if std::fs::rename(&tree, dest).is_ok() {
                    crate::failpoint::hit("snapshot-tree-taken");
                    return Ok((depth + 1, self.live.take(dest)));
                }
                std::fs::create_dir(dest).map_err(io_at(dest))?;
            }
            if !tree.is_dir() {
                continue;
            }
            mark_used(&dir);
            // A copy that fails (an xattr this user may not set, a tree
            // another build took meanwhile) gives way to the layers.
            if copy_into(&tree, dest).is_ok() {
                return Ok((depth + 1, None));
            }
            clear_dir(dest).map_err(io_at(dest))?;
        }
        Ok((0, None))
    }

    /// The tree of `layers` to read (a COPY --from, a RUN's bind mount of
    /// a stage, in the copy tier): the store's own, lent
    /// (`lend_tree`), or else made in the empty dir
    /// `scratch` (`materialize`). Where it is, and the
    /// loan to hold until the reading is done.
    pub fn tree_to_read(
        &self,
        store: &ContentStore,
        layers: &[LayerBlob],
        scratch: &Path,
    ) -> Result<(PathBuf, Option<LentTree>), SnapshotError> {
        if let Some(lent) = self.lend_tree(layers)? {
            return Ok((lent.path(), Some(lent)));
        }
        self.materialize(store, layers, scratch)?;
        Ok((scratch.to_path_buf(), None))
    }

    /// Lends the committed tree of `layers`' chain out of the store, to
    /// be read where it is (a COPY --from in the copy tier) instead of
    /// copied whole: it moves into a dir of its own (one rename), where no
    /// step of any build can take, replace or copy it while it is read,
    /// and dropping the loan moves it back. None when the store has no
    /// tree of that chain (someone else holds it, or it never was).
    fn lend_tree(&self, layers: &[LayerBlob]) -> Result<Option<LentTree>, SnapshotError> {
        let Some(chain) = top_chain(layers) else {
            return Ok(None);
        };
        let chain_dir = self.root.join(chain.hex());
        let home = chain_dir.join("tree");
        if !home.is_dir() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("lent-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_at(&self.root))?;
        if std::fs::rename(&home, dir.path().join("tree")).is_err() {
            return Ok(None);
        }
        mark_used(&chain_dir);
        Ok(Some(LentTree { dir, home }))
    }

    /// Commits a finished copy-tier step's root `tree` as the tree of
    /// `layer` on `parents`, so the next step copies it instead of
    /// applying every layer again. The copy tier's counterpart of
    /// [`SnapshotStore::commit_upper`]; one rename, so a killed build
    /// leaves the whole tree or none. `walk` is the differ's walk of the
    /// tree after the step, kept for the next step that takes it.
    pub fn commit_tree(
        &self,
        tree: &Path,
        parents: &[LayerBlob],
        layer: &LayerBlob,
        walk: TreeState,
    ) -> Result<(), SnapshotError> {
        let chain = top_chain(parents.iter().chain([layer])).expect("one layer at least");
        let dir = self.root.join(chain.hex());
        if dir.join("tree").is_dir() {
            self.replace_foreign(&dir)?;
        }
        // Kept by the tree's identity, which the renames keep and no
        // other tree has: should another build's land first, ours is
        // removed and the state matches nothing.
        self.live.keep(tree, walk);
        let tmp = tempfile::Builder::new()
            .prefix("commit-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_at(&self.root))?;
        std::fs::rename(tree, tmp.path().join("tree")).map_err(io_at(tree))?;
        crate::failpoint::hit("snapshot-moved");
        self.install(tmp, &dir, "tree")
    }

    /// Moves out the tree another build left under `dir` (same chain, so
    /// the same files), for this build's to take its place: ours has its
    /// walk kept, so the next step takes it instead of copying that one
    /// (a step whose layer is the same as before, an empty RUN, lands on
    /// an existing chain). Deleted at once; a build killed meanwhile
    /// leaves it in `tmp/`, which collection sweeps.
    fn replace_foreign(&self, dir: &Path) -> Result<(), SnapshotError> {
        let stale = tempfile::Builder::new()
            .prefix("stale-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(io_at(&self.root))?;
        // Another build may have taken or replaced it meanwhile: either
        // way it is not in the way any more, or theirs stays.
        let _ = std::fs::rename(dir.join("tree"), stale.path().join("tree"));
        Ok(())
    }

    /// A fresh workspace for one step.
    pub fn workspace(&self) -> Result<Workspace, SnapshotError> {
        let dir = tempfile::Builder::new()
            .prefix("")
            .rand_bytes(8)
            .tempdir_in(self.root.join("w"))
            .map_err(io_at(&self.root))?;
        for sub in ["upper", "work", "merged", "etc"] {
            std::fs::create_dir(dir.path().join(sub)).map_err(io_at(dir.path()))?;
        }
        Ok(Workspace { dir })
    }
}

/// A committed tree out of the store on loan (`SnapshotStore::tree_to_read`):
/// back under its chain when dropped, unless a tree was put there
/// meanwhile (then this one is removed with its dir). A build killed
/// during the loan leaves it in `tmp/`, which collection sweeps.
#[derive(Debug)]
pub struct LentTree {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl LentTree {
    /// Where the tree is while lent.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
}

impl Drop for LentTree {
    fn drop(&mut self) {
        let _ = std::fs::rename(self.path(), &self.home);
    }
}

/// One step's scratch dirs, removed on drop.
#[derive(Debug)]
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// The workspace dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The overlay upper dir.
    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// The overlay work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Where the step's root is assembled (overlay mount point, or the
    /// copy tier's materialized root).
    pub fn merged(&self) -> PathBuf {
        self.dir.path().join("merged")
    }

    /// A dir for files bind-mounted into the step (/etc/hosts, ...).
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Path of `sub` relative to the store root.
    pub fn relative(&self, store: &SnapshotStore, sub: &str) -> String {
        let rel = self
            .dir
            .path()
            .strip_prefix(store.root())
            .unwrap_or(self.dir.path());
        format!("{}/{sub}", rel.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::from_sha256([1; 32]);
        let b = Digest::from_sha256([2; 32]);
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        let expected: [u8; 32] = Sha256::digest(format!("{a} {b}")).into();
        assert_eq!(chains[1], Digest::from_sha256(expected));
    }
}
