//! The copy tier's live trees, remembered between steps: the state the
//! differ took of a step's root right after it ran (its second walk) is the
//! state the next step on that tree starts from, so that step walks the
//! root once, not twice. States are kept in memory by the tree's identity
//! (device, inode and birth time of its root dir), which a rename keeps and
//! no other tree can share while this process lives: a tree another build
//! made, or one changed after its state was kept, is never matched, and
//! the step records its root afresh. Where the file system gives no birth
//! time, nothing is kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::{AtFlags, StatxFlags, CWD};

use super::diff::TreeState;

/// How many states one process keeps: one per stage's tree, each about
/// 150 bytes a path (15 MB for a 100,000-file root); a build with more
/// stages than this walks the rest afresh.
const KEPT: usize = 8;

/// A tree root dir's identity: device, inode, birth time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TreeId {
    dev: (u32, u32),
    ino: u64,
    born: (i64, u32),
}

impl TreeId {
    fn of(root: &Path) -> Option<TreeId> {
        let stx = rustix::fs::statx(
            CWD,
            root,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::INO | StatxFlags::BTIME,
        )
        .ok()?;
        let wanted = (StatxFlags::INO | StatxFlags::BTIME).bits();
        (stx.stx_mask & wanted == wanted).then_some(TreeId {
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
            born: (stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec),
        })
    }
}

/// States of the trees this process committed, by tree identity.
#[derive(Debug, Default)]
pub struct LiveStates {
    states: Mutex<HashMap<TreeId, TreeState>>,
}

impl LiveStates {
    /// Keeps `state`, the walk of the tree at `root` taken after its step;
    /// the tree must not change before it is committed.
    pub fn keep(&self, root: &Path, state: TreeState) {
        let Some(id) = TreeId::of(root) else { return };
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if states.len() >= KEPT {
            states.clear();
        }
        states.insert(id, state);
    }

    /// Whether a state is kept for the tree at `root`: a tree this
    /// process committed and nothing has changed since.
    pub fn owns(&self, root: &Path) -> bool {
        let Some(id) = TreeId::of(root) else {
            return false;
        };
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.contains_key(&id)
    }

    /// The state kept for the tree now at `root`, given up: the step about
    /// to change the tree makes it stale.
    pub fn take(&self, root: &Path) -> Option<TreeState> {
        let id = TreeId::of(root)?;
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::diff::record_tree;

    #[test]
    fn a_state_follows_its_tree_through_a_rename_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/a"), "a").unwrap();
        let live = LiveStates::default();
        if TreeId::of(&tree).is_none() {
            eprintln!("SKIP: this file system gives no birth time; nothing is kept");
            return;
        }
        live.keep(&tree, record_tree(&tree).unwrap());
        let moved = dir.path().join("moved");
        std::fs::rename(&tree, &moved).unwrap();
        // A new tree where the old one was is another tree.
        std::fs::create_dir(&tree).unwrap();
        assert!(!live.owns(&tree), "a new dir is not the kept tree");
        assert!(live.take(&tree).is_none(), "a new dir took the old state");
        assert!(live.owns(&moved));
        let state = live.take(&moved).expect("the renamed tree keeps its state");
        assert_eq!(state, record_tree(&moved).unwrap());
        assert!(live.take(&moved).is_none(), "a state is given once");
    }
}
