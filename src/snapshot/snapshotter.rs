//! The snapshotter contract, after containerd's `core/snapshots`: a
//! snapshot is *active* (writable, made by `prepare`), a *view* (read-only,
//! made by `view`) or *committed* (immutable, made from an active one by
//! `commit`, usable as a parent). Callers ask for mounts and get either an
//! overlay stack or a plain directory; which one is the implementation's
//! business, not theirs.
//!
//! Two implementations, one per snapshot tier ([`Tier`]):
//! - [`OverlaySnapshotter`]: a committed snapshot is the upper dir its
//!   active snapshot had; a child stacks its parents as overlay lower dirs,
//!   so nothing is copied or extracted again.
//! - [`CopySnapshotter`]: where overlay cannot be mounted, a snapshot is a
//!   whole tree; `prepare` copies the parent's tree ([`copy_tree`]), commit
//!   renames it.
//!
//! Layout under the root: `active/<id>/` and `committed/<id>/`, each with
//! `info.json` (name, parent) and `fs/` (plus `work/` for an active
//! overlay); `<id>` is a hash of the name, so any name is a safe path.
//! Commit writes the committed info into the active dir, then renames the
//! dir into `committed/`: a killed build leaves either the active snapshot
//! or the committed one, never half of each.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use super::tree::Usage;
use super::tree::{copy_tree, tree_usage};

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only, made by `view`.
    View,
    /// Immutable; a parent for others.
    Committed,
}

/// What the snapshotter knows of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// Its key (active, view) or name (committed).
    pub name: String,
    /// The committed snapshot it was made on, if any.
    pub parent: Option<String>,
    /// Active, view or committed.
    pub kind: Kind,
}

/// How to mount a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounts {
    /// An overlay: `lowers` top first; `upper` and `work` when writable.
    Overlay {
        /// Lower dirs, top first.
        lowers: Vec<PathBuf>,
        /// Upper and work dirs; `None` for a read-only stack.
        upper: Option<(PathBuf, PathBuf)>,
    },
    /// A directory used as it is.
    Dir {
        /// The tree.
        path: PathBuf,
        /// Whether the caller must not write to it.
        readonly: bool,
    },
}

/// Snapshotter failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// No snapshot has that key or name.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// The key or name is taken.
    #[error("snapshot {0:?} already exists")]
    Exists(String),
    /// The operation needs another kind of snapshot.
    #[error("snapshot {name:?} is {kind:?}, not {wanted}")]
    WrongKind {
        /// The snapshot.
        name: String,
        /// What it is.
        kind: Kind,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// Committed snapshots made on it still exist.
    #[error("snapshot {0:?} has children")]
    HasChildren(String),
    /// A file system operation failed.
    #[error("snapshotter {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotterError + '_ {
    move |source| SnapshotterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The contract both snapshot tiers implement (containerd's, less labels).
pub trait Snapshotter: Send + Sync {
    /// A writable snapshot `key` on committed `parent` (empty without one).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotterError>;
    /// A read-only snapshot `key` of committed `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotterError>;
    /// The mounts of an active snapshot or a view.
    fn mounts(&self, key: &str) -> Result<Mounts, SnapshotterError>;
    /// Makes active `key` the committed snapshot `name`; `key` is gone.
    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotterError>;
    /// Removes a snapshot; a committed one only when nothing is made on it.
    fn remove(&self, key: &str) -> Result<(), SnapshotterError>;
    /// What the snapshotter knows of `key`.
    fn stat(&self, key: &str) -> Result<Info, SnapshotterError>;
    /// The space `key`'s own dir takes.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotterError>;
    /// Every snapshot, in no particular order.
    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotterError>;
}

/// The dirs and records both implementations keep.
#[derive(Debug, Clone)]
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn open(root: &Path) -> Result<Dirs, SnapshotterError> {
        for sub in ["active", "committed"] {
            std::fs::create_dir_all(root.join(sub)).map_err(io_at(root))?;
        }
        Ok(Dirs {
            root: root.to_path_buf(),
        })
    }

    fn id(name: &str) -> String {
        let hash: [u8; 32] = Sha256::digest(name.as_bytes()).into();
        hash[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn active(&self, key: &str) -> PathBuf {
        self.root.join("active").join(Self::id(key))
    }

    fn committed(&self, name: &str) -> PathBuf {
        self.root.join("committed").join(Self::id(name))
    }

    fn read_info(dir: &Path) -> Result<Info, SnapshotterError> {
        let path = dir.join("info.json");
        let bytes = std::fs::read(&path).map_err(io_at(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| io_at(&path)(io::Error::other(e)))
    }

    fn write_info(dir: &Path, file: &str, info: &Info) -> Result<(), SnapshotterError> {
        let tmp = dir.join(format!("{file}.tmp"));
        let bytes = serde_json::to_vec(info).expect("info serializes");
        std::fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, dir.join(file)).map_err(io_at(dir))
    }

    /// The snapshot called `key`, and its dir.
    fn find(&self, key: &str) -> Result<(Info, PathBuf), SnapshotterError> {
        for dir in [self.active(key), self.committed(key)] {
            if dir.join("info.json").is_file() {
                let info = Self::read_info(&dir)?;
                if info.name == key {
                    return Ok((info, dir));
                }
            }
        }
        Err(SnapshotterError::NotFound(key.to_string()))
    }

    fn committed_dir(&self, name: &str) -> Result<PathBuf, SnapshotterError> {
        match self.find(name)? {
            (info, dir) if info.kind == Kind::Committed => Ok(dir),
            (info, _) => Err(SnapshotterError::WrongKind {
                name: name.to_string(),
                kind: info.kind,
                wanted: "committed",
            }),
        }
    }

    /// A new active dir (info last, so a half-made one has none and is
    /// not a snapshot) with the `subs` it needs.
    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        fill: impl FnOnce(&Path) -> Result<(), SnapshotterError>,
    ) -> Result<PathBuf, SnapshotterError> {
        if self.find(key).is_ok() {
            return Err(SnapshotterError::Exists(key.to_string()));
        }
        if let Some(parent) = parent {
            self.committed_dir(parent)?;
        }
        let dir = self.active(key);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(io_at(&dir))?;
        fill(&dir)?;
        let info = Info {
            name: key.to_string(),
            parent: parent.map(str::to_string),
            kind,
        };
        Self::write_info(&dir, "info.json", &info)?;
        Ok(dir)
    }

    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotterError> {
        let (info, dir) = self.find(key)?;
        if info.kind != Kind::Active {
            return Err(SnapshotterError::WrongKind {
                name: key.to_string(),
                kind: info.kind,
                wanted: "active",
            });
        }
        let target = self.committed(name);
        if target.exists() {
            return Err(SnapshotterError::Exists(name.to_string()));
        }
        let _ = std::fs::remove_dir_all(dir.join("work"));
        let committed = Info {
            name: name.to_string(),
            parent: info.parent,
            kind: Kind::Committed,
        };
        // The info first, under the dir's own name: the rename then
        // commits both at once.
        Self::write_info(&dir, "info.json", &committed)?;
        std::fs::rename(&dir, &target).map_err(io_at(&dir))
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotterError> {
        for sub in ["active", "committed"] {
            let dir = self.root.join(sub);
            for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
                let entry = entry.map_err(io_at(&dir))?;
                if entry.path().join("info.json").is_file() {
                    visit(&Self::read_info(&entry.path())?);
                }
            }
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotterError> {
        let (info, dir) = self.find(key)?;
        if info.kind == Kind::Committed {
            let mut children = false;
            self.walk(&mut |other| children |= other.parent.as_deref() == Some(key))?;
            if children {
                return Err(SnapshotterError::HasChildren(key.to_string()));
            }
        }
        // Renamed aside first: a half-removed tree is never a snapshot.
        let doomed = dir.with_extension("removing");
        std::fs::rename(&dir, &doomed).map_err(io_at(&dir))?;
        std::fs::remove_dir_all(&doomed).map_err(io_at(&doomed))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotterError> {
        let (_, dir) = self.find(key)?;
        let fs = dir.join("fs");
        tree_usage(&fs).map_err(io_at(&fs))
    }

    /// The `fs` dirs of `parent` and its ancestors, top first.
    fn chain(&self, parent: Option<&str>) -> Result<Vec<PathBuf>, SnapshotterError> {
        let mut dirs = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(name) = next {
            let dir = self.committed_dir(&name)?;
            next = Self::read_info(&dir)?.parent;
            dirs.push(dir.join("fs"));
        }
        Ok(dirs)
    }
}

/// How one tier lays out a snapshot's `fs` and mounts it; the records,
/// commit, remove and walk are shared and the same for both.
pub trait Tier: Send + Sync + 'static {
    /// Fills a new snapshot's dir: `fs` (and anything else it needs),
    /// from the parent's `fs` when there is one.
    fn fill(dir: &Path, parent_fs: Option<&Path>) -> Result<(), SnapshotterError>;
    /// The mounts of an active snapshot or a view in `dir`; `lowers` are
    /// its parents' `fs` dirs, top first.
    fn mounts(kind: Kind, dir: &Path, lowers: Vec<PathBuf>) -> Mounts;
}

/// The overlay tier: see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct OverlayTier;

impl Tier for OverlayTier {
    fn fill(dir: &Path, _: Option<&Path>) -> Result<(), SnapshotterError> {
        for sub in ["fs", "work"] {
            std::fs::create_dir(dir.join(sub)).map_err(io_at(dir))?;
        }
        Ok(())
    }

    fn mounts(kind: Kind, dir: &Path, lowers: Vec<PathBuf>) -> Mounts {
        match kind {
            Kind::View if lowers.len() <= 1 => Mounts::Dir {
                // One layer needs no overlay (and overlay wants two lowers
                // without an upper); none is the view's empty dir.
                path: lowers.into_iter().next().unwrap_or(dir.join("fs")),
                readonly: true,
            },
            Kind::View => Mounts::Overlay {
                lowers,
                upper: None,
            },
            // Nothing to stack on: the upper dir is the whole tree.
            _ if lowers.is_empty() => Mounts::Dir {
                path: dir.join("fs"),
                readonly: false,
            },
            _ => Mounts::Overlay {
                lowers,
                upper: Some((dir.join("fs"), dir.join("work"))),
            },
        }
    }
}

/// The copy tier: see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct CopyTier;

impl Tier for CopyTier {
    fn fill(dir: &Path, parent_fs: Option<&Path>) -> Result<(), SnapshotterError> {
        let fs = dir.join("fs");
        match parent_fs {
            Some(source) => copy_tree(source, &fs).map_err(io_at(source)),
            None => std::fs::create_dir(&fs).map_err(io_at(&fs)),
        }
    }

    fn mounts(kind: Kind, dir: &Path, _: Vec<PathBuf>) -> Mounts {
        Mounts::Dir {
            path: dir.join("fs"),
            readonly: kind == Kind::View,
        }
    }
}

/// A snapshotter of one tier over the dirs the module doc describes.
#[derive(Debug, Clone)]
pub struct DirSnapshotter<T: Tier> {
    dirs: Dirs,
    tier: std::marker::PhantomData<T>,
}

/// Snapshots as overlay layers.
pub type OverlaySnapshotter = DirSnapshotter<OverlayTier>;
/// Snapshots as whole trees.
pub type CopySnapshotter = DirSnapshotter<CopyTier>;

impl<T: Tier> DirSnapshotter<T> {
    /// Opens (creating) the snapshotter's dirs under `root`.
    pub fn open(root: &Path) -> Result<DirSnapshotter<T>, SnapshotterError> {
        Ok(DirSnapshotter {
            dirs: Dirs::open(root)?,
            tier: std::marker::PhantomData,
        })
    }

    fn mounts_of(&self, info: &Info, dir: &Path) -> Result<Mounts, SnapshotterError> {
        if info.kind == Kind::Committed {
            return Err(SnapshotterError::WrongKind {
                name: info.name.clone(),
                kind: info.kind,
                wanted: "active or a view",
            });
        }
        let lowers = self.dirs.chain(info.parent.as_deref())?;
        Ok(T::mounts(info.kind, dir, lowers))
    }

    fn make(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
    ) -> Result<Mounts, SnapshotterError> {
        let parent_fs = match parent {
            Some(parent) => Some(self.dirs.committed_dir(parent)?.join("fs")),
            None => None,
        };
        let dir = self
            .dirs
            .create(key, parent, kind, |dir| T::fill(dir, parent_fs.as_deref()))?;
        self.mounts_of(&Dirs::read_info(&dir)?, &dir)
    }
}

impl<T: Tier> Snapshotter for DirSnapshotter<T> {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotterError> {
        self.make(key, parent, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Mounts, SnapshotterError> {
        self.make(key, parent, Kind::View)
    }

    fn mounts(&self, key: &str) -> Result<Mounts, SnapshotterError> {
        let (info, dir) = self.dirs.find(key)?;
        self.mounts_of(&info, &dir)
    }

    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotterError> {
        self.dirs.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotterError> {
        self.dirs.remove(key)
    }

    fn stat(&self, key: &str) -> Result<Info, SnapshotterError> {
        Ok(self.dirs.find(key)?.0)
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotterError> {
        self.dirs.usage(key)
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotterError> {
        self.dirs.walk(visit)
    }
}
