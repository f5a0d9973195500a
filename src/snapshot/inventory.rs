//! The store's side of the snapshot contract that collection and `rbuild
//! du` use: which committed snapshots there are ([`SnapshotStore::walk`]),
//! what each takes ([`SnapshotStore::usage`]) and removing one
//! ([`SnapshotStore::remove`]). With `backend::StepSnapshots` (prepare,
//! commit, view) this is the whole of containerd's snapshotter contract
//! over the one layout every build uses; nothing else reads the store's
//! dirs.
//!
//! A committed snapshot is a chain id's dir holding its overlay dir
//! (`fs`), its whole tree (`tree`, the copy tier), or both. A dir holding
//! neither is not a snapshot: what a build killed between making the dir
//! and renaming a snapshot into it leaves, or a chain whose tree the next
//! copy-tier step took. Walk skips it, and the next build that needs the
//! chain extracts into it as if it were absent.
//! Removing a snapshot never breaks another: a later step that stacks a
//! chain whose parent was removed extracts the parent again from its blob.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use super::store::{short_name_of, SnapshotStore};
use super::tree::remove_tree;

/// One committed snapshot (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The chain id it is the snapshot of, in hex.
    pub chain: String,
    /// Whether it holds the overlay dir (a step's upper dir or an
    /// extracted layer).
    pub overlay: bool,
    /// Whether it holds a whole tree (the copy tier's).
    pub tree: bool,
    /// When a build last stacked, took or committed it.
    pub last_used: SystemTime,
}

/// The space a tree takes: a snapshot's own dir, not its parents'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of regular files, each inode counted once.
    pub size: u64,
    /// Bytes allocated on disk, each inode counted once.
    pub disk: u64,
    /// Inodes.
    pub inodes: u64,
}

impl SnapshotStore {
    /// Every committed snapshot, in no particular order; half-made dirs
    /// are left out (see the module doc).
    pub fn walk(&self) -> io::Result<Vec<Committed>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(self.root()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            entries => entries?,
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_chain_hex(&name) {
                continue;
            }
            let dir = entry.path();
            let (overlay, tree) = kinds(&dir);
            if !(overlay || tree) {
                continue;
            }
            // Through the symlink of a snapshot committed before its
            // layer was written, to the dir builds stamp.
            let Ok(last_used) = std::fs::metadata(&dir).and_then(|m| m.modified()) else {
                continue;
            };
            found.push(Committed {
                chain: name,
                overlay,
                tree,
                last_used,
            });
        }
        Ok(found)
    }

    /// What the snapshot of `chain` (hex) takes, its overlay dir and tree
    /// together; zero when there is none.
    pub fn usage(&self, chain: &str) -> io::Result<Usage> {
        if !is_chain_hex(chain) {
            return Ok(Usage::default());
        }
        let dir = self.root().join(chain);
        tree_usage(&std::fs::canonicalize(&dir).unwrap_or(dir))
    }

    /// Removes the snapshot of `chain` (hex) and its dir; false when the
    /// dir held none.
    /// Only while no build runs (collection's rule: running steps have
    /// snapshots mounted). The dir is first renamed out of the store, into
    /// `tmp/` (which collection sweeps), then deleted: a removal killed
    /// while deleting leaves a partial tree there, never under the chain
    /// id, where a build would stack it as if it were whole.
    pub fn remove(&self, chain: &str) -> io::Result<bool> {
        if !is_chain_hex(chain) {
            return Ok(false);
        }
        let tmp = self.root().join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let doomed = tmp.join(format!("evicted-{chain}"));
        remove_tree(&doomed)?;
        let dir = self.root().join(chain);
        let held = holds_snapshot(&dir);
        // A snapshot committed before its layer was written is a symlink
        // to its dir under `p/`: both go, the name first.
        let target = std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_symlink())
            .then(|| std::fs::canonicalize(&dir).ok())
            .flatten();
        match std::fs::rename(&dir, &doomed) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            moved => moved?,
        }
        crate::failpoint::hit("gc-snapshot-moved");
        remove_tree(&doomed)?;
        if let Some(target) = target {
            match std::fs::rename(&target, &doomed) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                moved => moved?,
            }
            remove_tree(&doomed)?;
        }
        // Its short name now dangles; a later extraction makes it again.
        let _ = std::fs::remove_file(self.root().join(short_name_of(chain)));
        Ok(held)
    }

    /// Removes the chain dirs that hold no snapshot (what a killed build
    /// leaves, see the module doc), chain symlinks whose dir is gone, and
    /// dirs under `p/` no chain names (a build killed before its layer
    /// was written, or one whose chain another build committed first);
    /// only while no build runs, as one may be about to rename a
    /// snapshot into such a dir or be stacking one.
    pub fn sweep_half_made(&self) -> io::Result<()> {
        let entries = match std::fs::read_dir(self.root()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            entries => entries?,
        };
        let mut named = std::collections::HashSet::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let name = entry.file_name();
            if !is_chain_hex(&name.to_string_lossy()) {
                continue;
            }
            if holds_snapshot(&dir) {
                if let Ok(target) = std::fs::read_link(&dir) {
                    named.insert(self.root().join(target));
                }
            } else if entry.file_type()?.is_symlink() {
                std::fs::remove_file(&dir)?;
            } else {
                remove_tree(&dir)?;
            }
        }
        if let Ok(pending) = std::fs::read_dir(self.root().join("p")) {
            for entry in pending.flatten() {
                if !named.contains(&entry.path()) {
                    remove_tree(&entry.path())?;
                }
            }
        }
        Ok(())
    }
}

/// Whether the chain dir `dir` holds its overlay dir and its tree.
fn kinds(dir: &Path) -> (bool, bool) {
    (dir.join("fs").is_dir(), dir.join("tree").is_dir())
}

/// Whether the chain dir `dir` holds a snapshot of either kind.
fn holds_snapshot(dir: &Path) -> bool {
    let (overlay, tree) = kinds(dir);
    overlay || tree
}

/// A chain id's dir name: 64 lower-case hex digits.
fn is_chain_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// File bytes and disk blocks (each inode once) and inodes under `root`;
/// zero when it does not exist.
pub fn tree_usage(root: &Path) -> io::Result<Usage> {
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            meta => meta?,
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.disk += meta.blocks() * 512;
        if meta.is_file() {
            usage.size += meta.len();
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(usage)
}
