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
    rfs::openat2(
        root,
        target,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        resolve | ResolveFlags::NO_MAGICLINKS,
    )
}

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
}
