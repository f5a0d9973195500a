//! Whole-tree operations of the copy tier: copying a root file system with
//! everything a layer records (owner, mode, times, xattrs, hard links,
//! devices, fifos, symlinks), and measuring what a tree takes.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use crate::workers::Workers;

/// Copies the tree at `from` to the new path `to`, keeping what a layer
/// records of every entry. Files sharing an inode in `from` share one in
/// `to`. Regular files' bytes go through `copy_file_range` (a reflink
/// where the file system has them), written with their metadata by the
/// copy's threads while the walk goes on (see `TreeCopy`).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let mut copy = TreeCopy::start();
    let walked = copy.entry(from, to);
    copy.finish(walked)
}

/// Copies what is in the dir `from` into the existing dir `to`, then
/// gives `to` the metadata of `from`: a whole root into a workspace.
pub fn copy_into(from: &Path, to: &Path) -> io::Result<()> {
    let mut copy = TreeCopy::start();
    let walked = std::fs::read_dir(from).and_then(|mut entries| {
        entries.try_for_each(|entry| {
            entry.and_then(|e| copy.entry(&e.path(), &to.join(e.file_name())))
        })
    });
    copy.finish(walked)?;
    copy_metadata(from, to, &std::fs::symlink_metadata(from)?)
}

/// Removes everything in `dir`, keeping `dir`.
pub fn clear_dir(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// One tree copy: the walk makes every entry in order (a directory's
/// metadata once its children exist, so their creation does not move its
/// times), and hands each regular file, created and open, to the
/// threads, which write its bytes, then its owner, mode, xattrs and
/// times. A 16,000-file Debian root took 1.8 s on one thread.
struct TreeCopy {
    /// Hard-linked sources already copied: (dev, ino) → the copy.
    links: HashMap<(u64, u64), PathBuf>,
    files: Workers<io::Error>,
}

/// Stands for a file writer's error until the writers are joined.
fn writer_stopped() -> io::Error {
    io::Error::other("a file of the tree copy could not be written")
}

impl TreeCopy {
    fn start() -> TreeCopy {
        TreeCopy {
            links: HashMap::new(),
            files: Workers::start("tree-copy"),
        }
    }

    /// Waits for the files; the walk's error, else the threads' first.
    fn finish(mut self, walked: io::Result<()>) -> io::Result<()> {
        let written = self.files.finish();
        // A writer's error first: the walk stops with a stand-in once one
        // has failed.
        written.map_err(|e| e.unwrap_or_else(writer_stopped))?;
        walked
    }

    fn entry(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(from)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(to)?;
            for entry in std::fs::read_dir(from)? {
                let entry = entry?;
                self.entry(&entry.path(), &to.join(entry.file_name()))?;
            }
            return copy_metadata(from, to, &meta);
        }
        let key = (meta.dev(), meta.ino());
        if let Some(first) = (meta.nlink() > 1).then(|| self.links.get(&key)).flatten() {
            return std::fs::hard_link(first, to);
        }
        if meta.nlink() > 1 {
            self.links.insert(key, to.to_path_buf());
        }
        if kind.is_file() {
            return self.file(from, to, meta);
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
        } else {
            make_node(to, &meta)?;
        }
        copy_metadata(from, to, &meta)
    }

    /// Creates the file `to` and hands its bytes and metadata to a thread.
    fn file(&mut self, from: &Path, to: &Path, meta: std::fs::Metadata) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut src = std::fs::File::open(from)?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)?;
        let handed = self.files.run(move || {
            io::copy(&mut src, &mut out)?;
            copy_file_metadata(&src, &out, &meta)
        });
        if handed {
            Ok(())
        } else {
            Err(writer_stopped())
        }
    }
}

/// A device, fifo or socket node like the one `meta` describes.
fn make_node(to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use rustix::fs::{FileType, Mode};
    let kind = meta.file_type();
    let file_type = if kind.is_char_device() {
        FileType::CharacterDevice
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else if kind.is_fifo() {
        FileType::Fifo
    } else {
        FileType::Socket
    };
    let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
    rustix::fs::mknodat(CWD, to, file_type, mode, meta.rdev())?;
    Ok(())
}

/// Owner, then mode (chown clears setuid bits), xattrs and times.
fn copy_metadata(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use rustix::fs::{Gid, Uid};
    let (uid, gid) = (
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
    );
    rustix::fs::chownat(CWD, to, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
    let symlink = meta.file_type().is_symlink();
    if !symlink {
        let mode = rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777);
        rustix::fs::chmodat(CWD, to, mode, AtFlags::empty())?;
    }
    copy_xattrs(from, to)?;
    rustix::fs::utimensat(CWD, to, &times_of(meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    for (name, value) in read_xattrs(from)? {
        let key = OsStr::from_bytes(&name);
        rustix::fs::lsetxattr(to, key, &value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Every extended attribute of `path` (not following a symlink), sorted
/// by name; none where the file system has none.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_of(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, buf),
        |key| rustix::fs::lgetxattr_query(path, key),
        |key, buf| rustix::fs::lgetxattr(path, key, buf),
    )
}

/// The same for the open file `fd` (no path resolved again).
fn fd_xattrs(fd: &std::fs::File) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_of(
        || rustix::fs::flistxattr_query(fd),
        |buf| rustix::fs::flistxattr(fd, buf),
        |key| rustix::fs::fgetxattr_query(fd, key),
        |key, buf| rustix::fs::fgetxattr(fd, key, buf),
    )
}

type Got = rustix::io::Result<usize>;

/// Every extended attribute through the four calls of one kind (by path
/// or by descriptor), sorted by name.
fn xattrs_of(
    list_size: impl Fn() -> Got,
    list: impl Fn(&mut [u8]) -> Got,
    value_size: impl Fn(&OsStr) -> Got,
    value: impl Fn(&OsStr, &mut [u8]) -> Got,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let size = match list_size() {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    // Room for a name added between the two calls.
    let mut names = vec![0u8; size + 64];
    let n = list(&mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = OsStr::from_bytes(name);
        let mut bytes = vec![0u8; value_size(key)?];
        let got = value(key, &mut bytes[..])?;
        bytes.truncate(got);
        out.push((name.to_vec(), bytes));
    }
    out.sort();
    Ok(out)
}

/// Owner, then mode (chown clears setuid bits), xattrs and times of the
/// regular file open as `out`, from the open `src` and its `meta`:
/// through the descriptors, each path resolved once (by the open).
fn copy_file_metadata(
    src: &std::fs::File,
    out: &std::fs::File,
    meta: &std::fs::Metadata,
) -> io::Result<()> {
    use rustix::fs::{Gid, Mode, Uid, XattrFlags};
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    rustix::fs::fchown(out, Some(uid), Some(gid))?;
    rustix::fs::fchmod(out, Mode::from_raw_mode(meta.mode() & 0o7777))?;
    for (name, value) in fd_xattrs(src)? {
        rustix::fs::fsetxattr(out, OsStr::from_bytes(&name), &value, XattrFlags::empty())?;
    }
    rustix::fs::futimens(out, &times_of(meta))?;
    Ok(())
}

/// The access and modification times `meta` records.
pub(crate) fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    let stamp = |sec: i64, nsec: i64| Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    Timestamps {
        last_access: stamp(meta.atime(), meta.atime_nsec()),
        last_modification: stamp(meta.mtime(), meta.mtime_nsec()),
    }
}

/// Removes a tree that may hold read-only dirs (extracted layers do);
/// nothing to do when it is not there.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Make every dir writable, then try again.
            fn open_up(p: &Path) {
                if let Ok(meta) = std::fs::symlink_metadata(p) {
                    if meta.is_dir() {
                        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                        if let Ok(entries) = std::fs::read_dir(p) {
                            for e in entries.flatten() {
                                open_up(&e.path());
                            }
                        }
                    }
                }
            }
            open_up(path);
            std::fs::remove_dir_all(path)
        }
    }
}
