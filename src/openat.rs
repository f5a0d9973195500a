//! The one way rbuild opens a path inside a tree it must not leave: a
//! root file system, a build context, a layer being applied. `openat2`
//! does the resolution in the kernel, so no symlink or `..` race can walk
//! out. Two rules, as the callers need:
//!
//! - [`Resolve::InRoot`]: links resolve as if the tree were `/` (an
//!   absolute link stays inside), which is how BuildKit resolves COPY
//!   destinations and sources;
//! - [`Resolve::Beneath`]: anything that would leave the tree is an error
//!   (`EXDEV`), which is what applying an untrusted layer needs.
//!
//! Magic links (`/proc/self/fd/…`) are never followed. A leaf: it uses
//! nothing else of the crate.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How a path may resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// As if the tree were `/`.
    InRoot,
    /// Never out of the tree.
    Beneath,
}

/// Opens `rel` below the directory `root` with `flags` (`O_CLOEXEC` is
/// added); an empty path or `/` opens `root` itself.
pub fn open(
    root: impl AsFd,
    rel: impl AsRef<Path>,
    flags: OFlags,
    how: Resolve,
) -> Result<OwnedFd, Errno> {
    let rel = rel.as_ref();
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let target: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = match how {
        Resolve::InRoot => ResolveFlags::IN_ROOT,
        Resolve::Beneath => ResolveFlags::BENEATH,
    };
    // `EAGAIN` means a rename or mount somewhere on the system raced a
    // `..` step, so the kernel could not vouch that the walk stayed
    // inside; openat2(2) leaves the retry to the caller. Bounded, so a
    // process renaming in a loop cannot hold a build forever.
    let mut tries = 0;
    loop {
        match rfs::openat2(
            &root,
            target,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN) if tries < RACE_RETRIES => {
                tries += 1;
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

/// How often a walk raced by renames elsewhere is tried again.
const RACE_RETRIES: u32 = 1000;

/// [`open`] with [`Resolve::InRoot`], the rule for image root file systems.
pub fn in_root(root: impl AsFd, rel: impl AsRef<Path>, flags: OFlags) -> Result<OwnedFd, Errno> {
    open(root, rel, flags, Resolve::InRoot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_or_fail() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/passwd"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", tree.join("up")).unwrap();
        let root = rfs::open(&tree, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let read = |fd: OwnedFd| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).unwrap();
            text
        };
        let inside = open(&root, "abs", OFlags::RDONLY, Resolve::InRoot).unwrap();
        assert_eq!(
            read(inside),
            "inside",
            "an absolute link resolves in the tree"
        );
        assert_eq!(
            open(&root, "abs", OFlags::RDONLY, Resolve::Beneath).unwrap_err(),
            Errno::XDEV
        );
        let top = open(&root, "up/etc/passwd", OFlags::RDONLY, Resolve::InRoot).unwrap();
        assert_eq!(read(top), "inside", "`..` stops at the tree's root");
        assert!(open(&root, "/", OFlags::PATH, Resolve::Beneath).is_ok());
    }

    /// The kernel answers `EAGAIN` when a rename or mount anywhere on the
    /// system races a `..` walk; CI runs builds side by side, so a COPY
    /// through `..` failed with "Resource temporarily unavailable".
    #[test]
    fn a_rename_elsewhere_during_a_dotdot_walk_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c/d")).unwrap();
        std::fs::write(tree.join("x"), "x").unwrap();
        let root = rfs::open(&tree, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let stop = stop.clone();
            let (one, two) = (dir.path().join("one"), dir.path().join("two"));
            std::fs::write(&one, "").unwrap();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::rename(&one, &two).unwrap();
                    std::fs::rename(&two, &one).unwrap();
                }
            })
        };
        let walk = "a/b/c/d/../../../../a/b/c/d/../../../../x";
        let failures = (0..20_000)
            .filter(|_| open(&root, walk, OFlags::RDONLY, Resolve::InRoot).is_err())
            .count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamer.join().unwrap();
        assert_eq!(failures, 0, "walks through `..` failed under renames");
    }
}
