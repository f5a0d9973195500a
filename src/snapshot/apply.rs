//! Applying a layer tar onto a directory, safely.
//!
//! Every entry's parent is resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` from the root, so the kernel itself refuses any
//! path that would leave the root: `..`, absolute symlinks, relative
//! symlinks that climb out. In-root relative symlinks (Debian's
//! `lib -> usr/lib`) still resolve. Entry names and hardlink targets that are
//! absolute or contain `..` are refused before any syscall. Whiteouts
//! (`.wh.NAME`) delete, opaque markers (`.wh..wh..opq`) clear what lower
//! layers put in a directory.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The entry would write or link outside the root.
    #[error("layer {layer}: entry {entry:?} escapes the root: {reason}")]
    Escape {
        /// The layer being applied.
        layer: String,
        /// The tar entry.
        entry: String,
        /// How it escapes.
        reason: String,
    },
    /// A file system operation failed.
    #[error("layer {layer}: entry {entry:?}: {message}")]
    Io {
        /// The layer being applied.
        layer: String,
        /// The tar entry.
        entry: String,
        /// What failed.
        message: String,
    },
}

/// Settings for applying layers.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Set owners from the tar headers (needs root or a user namespace).
    pub ownership: bool,
    /// Create device nodes (needs CAP_MKNOD); otherwise they are skipped.
    pub devices: bool,
    /// Write an overlay lower dir instead of a merged tree: a whiteout
    /// becomes a 0/0 character device and an opaque marker becomes the
    /// `trusted.overlay.opaque` (as root) and `user.overlay.opaque` xattrs,
    /// so the directory can be stacked under others by overlayfs.
    pub overlay_format: bool,
    /// Read `.wh.` names as whiteouts (layers); off, they are plain files
    /// (archives that ADD unpacks).
    pub whiteouts: bool,
    /// Every entry's owner instead of its header's (ADD `--chown` of an
    /// archive: today's BuildKit lets the flag override the archive).
    pub owner: Option<(u32, u32)>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            ownership: root,
            // Root of a user namespace other than the host's makes no
            // device node (the kernel refuses mknod there).
            devices: root && !crate::userns::nested(),
            overlay_format: false,
            whiteouts: true,
            owner: None,
        }
    }
}

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries written (files, dirs, links, nodes).
    pub written: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Device nodes skipped for lack of privilege.
    pub skipped_devices: u64,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Splits a tar path into components, refusing absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".to_string());
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("contains a .. component".to_string()),
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

fn join(parts: &[OsString]) -> PathBuf {
    parts.iter().collect()
}

/// What an entry's header says about its node beyond the content.
struct EntryMeta {
    kind: tar::EntryType,
    /// Permission bits, setuid/setgid/sticky included.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// What [`Applier::create_node`] made of an entry.
enum Made {
    /// A node of the entry's type, to get the header's metadata.
    Node,
    /// A hardlink to a symlink: it gets its owner only (chmod, xattrs and
    /// times would follow the symlink).
    LinkToSymlink,
    /// Nothing: a device node without the privilege to make it.
    SkippedDevice,
}

struct Applier<'a> {
    root: OwnedFd,
    layer: &'a str,
    options: ApplyOptions,
    /// Paths this layer created (an opaque marker keeps them).
    created: HashSet<PathBuf>,
    /// Directories whose times are set at the end (children change them).
    dir_times: Vec<(PathBuf, i64)>,
    stats: ApplyStats,
}

impl Applier<'_> {
    fn io(&self, entry: &str, what: &str, e: impl std::fmt::Display) -> ApplyError {
        ApplyError::Io {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            message: format!("{what}: {e}"),
        }
    }

    fn escape(&self, entry: &str, reason: impl Into<String>) -> ApplyError {
        ApplyError::Escape {
            layer: self.layer.to_string(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    /// Opens `path` (relative to the root) without leaving the root.
    fn open_beneath(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        crate::openat::open(&self.root, path, flags, crate::openat::Resolve::Beneath)
    }

    /// Opens (creating as needed) the directory `parts` inside the root.
    fn parent_dir(&mut self, entry: &str, parts: &[OsString]) -> Result<OwnedFd, ApplyError> {
        for depth in 0..=parts.len() {
            let prefix = join(&parts[..depth]);
            match self.open_beneath(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) if depth == parts.len() => return Ok(fd),
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    let up = self
                        .open_beneath(&join(&parts[..depth - 1]), OFlags::PATH | OFlags::DIRECTORY)
                        .map_err(|e| self.io(entry, "opening parent", e))?;
                    rfs::mkdirat(&up, &parts[depth - 1], Mode::from_raw_mode(0o755))
                        .or_else(|e| if e == Errno::EXIST { Ok(()) } else { Err(e) })
                        .map_err(|e| self.io(entry, "creating parent directory", e))?;
                    let fd = self
                        .open_beneath(&prefix, OFlags::PATH | OFlags::DIRECTORY)
                        .map_err(|e| self.io(entry, "opening created parent", e))?;
                    if depth == parts.len() {
                        return Ok(fd);
                    }
                }
                Err(Errno::XDEV) | Err(Errno::LOOP) => {
                    return Err(self.escape(
                        entry,
                        format!(
                            "{} resolves outside the root through a symlink",
                            prefix.display()
                        ),
                    ))
                }
                Err(Errno::NOTDIR) => {
                    return Err(self.io(entry, "parent is not a directory", prefix.display()))
                }
                Err(e) => return Err(self.io(entry, "opening parent", e)),
            }
        }
        unreachable!("the loop returns at full depth")
    }

    /// Removes `name` in `dir` (recursively), if present.
    fn remove(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        let stat = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            let child = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.clear_dir(&child, &|_| true)?;
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rfs::unlinkat(dir, name, AtFlags::empty())?;
        }
        Ok(())
    }

    /// Removes every child of `dir` for which `remove` says yes.
    fn clear_dir(&self, dir: &OwnedFd, remove: &dyn Fn(&OsStr) -> bool) -> io::Result<()> {
        let mut names = Vec::new();
        let mut listing = rfs::Dir::read_from(dir)?;
        while let Some(entry) = listing.read() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name != "." && name != ".." && remove(&name) {
                names.push(name);
            }
        }
        for name in names {
            self.remove(dir, &name)?;
        }
        Ok(())
    }

    /// Sets overlayfs's opaque xattrs on `dir` (trusted.* needs root;
    /// user.* is what a `userxattr` mount in a user namespace reads).
    fn mark_opaque(&self, dir: &OwnedFd) -> io::Result<()> {
        let fd = rfs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut done = false;
        for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
            if rfs::fsetxattr(&fd, key, b"y", rfs::XattrFlags::empty()).is_ok() {
                done = true;
            }
        }
        if done {
            Ok(())
        } else {
            Err(io::Error::other(
                "neither trusted. nor user. xattrs can be set",
            ))
        }
    }

    fn set_times(&self, dir: &OwnedFd, name: &OsStr, mtime: i64) -> io::Result<()> {
        let t = Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        rfs::utimensat(
            dir,
            name,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Applies one tar entry: a whiteout or opaque marker, or a node
    /// (replacing what is in the way) with its owner, mode, xattrs and times.
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let parts = components(&raw_path).map_err(|r| self.escape(&shown, r))?;
        let Some((name, parent)) = parts.split_last() else {
            return Ok(()); // the root itself ("./")
        };
        let dir = self.parent_dir(&shown, parent)?;
        if self.apply_whiteout(&dir, parent, name, &shown)? {
            return Ok(());
        }
        let meta = self.entry_meta(entry.header(), &shown)?;
        let keep_dir = self.clear_way(&dir, name, meta.kind, &shown)?;
        let linked_symlink = match self.create_node(entry, &dir, name, keep_dir, &shown)? {
            Made::Node => false,
            Made::LinkToSymlink => true,
            Made::SkippedDevice => return Ok(()),
        };
        self.set_metadata(entry, &dir, name, &meta, linked_symlink, &shown)?;
        let path = join(&parts);
        if meta.kind.is_dir() {
            self.dir_times.push((path.clone(), meta.mtime));
        }
        self.created.insert(path);
        self.stats.written += 1;
        Ok(())
    }

    /// Applies `name` in `dir` as a whiteout or an opaque marker when it is
    /// one (and whiteouts are on): in the overlay format they become what
    /// overlayfs reads, otherwise they delete from the merged tree. Returns
    /// whether the entry was one, and so is done with.
    fn apply_whiteout(
        &mut self,
        dir: &OwnedFd,
        parent: &[OsString],
        name: &OsStr,
        shown: &str,
    ) -> Result<bool, ApplyError> {
        if !self.options.whiteouts {
            return Ok(false);
        }
        let name_bytes = name.as_bytes();
        let opaque = name_bytes == OPAQUE.as_bytes();
        let hidden = name_bytes.strip_prefix(WHITEOUT.as_bytes());
        match (opaque, hidden, self.options.overlay_format) {
            (true, _, true) => self
                .mark_opaque(dir)
                .map_err(|e| self.io(shown, "marking opaque directory", e))?,
            (false, Some(hidden), true) => {
                self.overlay_whiteout(dir, OsStr::from_bytes(hidden), shown)?
            }
            (true, _, false) => self.clear_opaque(dir, parent, shown)?,
            (false, Some(hidden), false) => self
                .remove(dir, OsStr::from_bytes(hidden))
                .map_err(|e| self.io(shown, "applying whiteout", e))?,
            (false, None, _) => return Ok(false),
        }
        self.stats.whiteouts += 1;
        Ok(true)
    }

    /// Replaces `hidden` in `dir` with overlayfs's whiteout, a 0/0
    /// character device, so a lower layer's `hidden` stays hidden when
    /// the directories are stacked.
    fn overlay_whiteout(
        &self,
        dir: &OwnedFd,
        hidden: &OsStr,
        shown: &str,
    ) -> Result<(), ApplyError> {
        self.remove(dir, hidden)
            .map_err(|e| self.io(shown, "replacing with whiteout", e))?;
        // Unprivileged whiteout creation is allowed since Linux 5.8.
        rfs::mknodat(
            dir,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        )
        .map_err(|e| self.io(shown, "creating whiteout device", e))?;
        Ok(())
    }

    /// Applies an opaque marker to the merged tree: removes every child
    /// of `dir` (at `parent`) that lower layers put there, keeping what
    /// this layer created.
    fn clear_opaque(
        &self,
        dir: &OwnedFd,
        parent: &[OsString],
        shown: &str,
    ) -> Result<(), ApplyError> {
        let parent_path = join(parent);
        let list = rfs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(shown, "opening opaque directory", e))?;
        let created = &self.created;
        self.clear_dir(&list, &|child| !created.contains(&parent_path.join(child)))
            .map_err(|e| self.io(shown, "clearing opaque directory", e))
    }

    /// Reads what an entry's header says about the node beyond its content.
    fn entry_meta(&self, header: &tar::Header, shown: &str) -> Result<EntryMeta, ApplyError> {
        let mode = header.mode().map_err(|e| self.io(shown, "mode", e))? & 0o7777;
        // Go's archive/tar (which wrote most layers) reads an empty numeric
        // field as 0; so does Docker when applying them.
        let (uid, gid) = self.options.owner.unwrap_or((
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ));
        Ok(EntryMeta {
            kind: header.entry_type(),
            mode,
            uid,
            gid,
            mtime: header.mtime().unwrap_or(0) as i64,
        })
    }

    /// Removes whatever is at `name` in `dir`, except a directory an entry
    /// of `kind` keeps (a directory staying a directory keeps its
    /// children). Returns whether such a directory was kept.
    fn clear_way(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        kind: tar::EntryType,
        shown: &str,
    ) -> Result<bool, ApplyError> {
        let existing = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let keep_dir = kind.is_dir()
            && existing
                .as_ref()
                .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
        if existing.is_some() && !keep_dir {
            self.remove(dir, name)
                .map_err(|e| self.io(shown, "replacing existing entry", e))?;
        }
        Ok(keep_dir)
    }

    /// Creates the node of `entry` at `name` in `dir` (the way cleared),
    /// private until [`Applier::set_metadata`] gives it its mode.
    fn create_node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
        shown: &str,
    ) -> Result<Made, ApplyError> {
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if !keep_dir {
                    rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.io(shown, "mkdir", e))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = rfs::openat(
                    dir,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.io(shown, "create", e))?;
                let mut file = std::fs::File::from(fd);
                io::copy(entry, &mut file).map_err(|e| self.io(shown, "write", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.io(shown, "symlink", "no target"))?
                    .into_owned();
                rfs::symlinkat(OsStr::from_bytes(&target), dir, name)
                    .map_err(|e| self.io(shown, "symlink", e))?;
            }
            tar::EntryType::Link => return self.create_hardlink(entry, dir, name, shown),
            kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
                return self.create_device(entry.header(), kind, dir, name, shown)
            }
            other => return Err(self.io(shown, "unsupported entry type", format!("{other:?}"))),
        }
        Ok(Made::Node)
    }

    /// Links `name` in `dir` to the hardlink target of `entry`, which is
    /// resolved beneath the root like any entry's parent.
    fn create_hardlink<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        shown: &str,
    ) -> Result<Made, ApplyError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| self.io(shown, "hardlink", "no target"))?
            .into_owned();
        let target_parts =
            components(&target).map_err(|r| self.escape(shown, format!("hardlink target {r}")))?;
        let Some((target_name, target_parent)) = target_parts.split_last() else {
            return Err(self.escape(shown, "hardlink to the root"));
        };
        let source_dir =
            match self.open_beneath(&join(target_parent), OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(Errno::XDEV) | Err(Errno::LOOP) => {
                    return Err(self.escape(shown, "hardlink target resolves outside the root"))
                }
                Err(e) => return Err(self.io(shown, "hardlink target", e)),
            };
        rfs::linkat(&source_dir, target_name, dir, name, AtFlags::empty())
            .map_err(|e| self.io(shown, "hardlink", e))?;
        // The link's header sets the shared inode's owner, mode and
        // times, as Docker's and containerd's appliers do; a link
        // to a symlink gets its owner only (chmod would follow it).
        let to_symlink = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        Ok(if to_symlink {
            Made::LinkToSymlink
        } else {
            Made::Node
        })
    }

    /// Creates a device node or FIFO of `kind`; device nodes are skipped
    /// (and counted) without the privilege to make them.
    fn create_device(
        &mut self,
        header: &tar::Header,
        kind: tar::EntryType,
        dir: &OwnedFd,
        name: &OsStr,
        shown: &str,
    ) -> Result<Made, ApplyError> {
        let file_type = match kind {
            tar::EntryType::Char => FileType::CharacterDevice,
            tar::EntryType::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        if !self.options.devices && file_type != FileType::Fifo {
            self.stats.skipped_devices += 1;
            return Ok(Made::SkippedDevice);
        }
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        rfs::mknodat(
            dir,
            name,
            file_type,
            Mode::from_raw_mode(0o600),
            rfs::makedev(major, minor),
        )
        .map_err(|e| self.io(shown, "mknod", e))?;
        Ok(Made::Node)
    }

    /// Gives the node at `name` in `dir` the owner, mode, xattrs and
    /// modification time of its header; a directory's time is left to the
    /// end of the layer (its children would change it).
    fn set_metadata<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &EntryMeta,
        linked_symlink: bool,
        shown: &str,
    ) -> Result<(), ApplyError> {
        if self.options.ownership {
            rfs::chownat(
                dir,
                name,
                Some(rfs::Uid::from_raw(meta.uid)),
                Some(rfs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io(shown, "chown", e))?;
        }
        if meta.kind != tar::EntryType::Symlink && !linked_symlink {
            // After chown, which clears setuid/setgid.
            rfs::chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| self.io(shown, "chmod", e))?;
            self.apply_xattrs(entry, dir, name, shown)?;
        }
        if !meta.kind.is_dir() && !linked_symlink {
            self.set_times(dir, name, meta.mtime)
                .map_err(|e| self.io(shown, "set times", e))?;
        }
        Ok(())
    }

    fn apply_xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        dir: &OwnedFd,
        name: &OsStr,
        shown: &str,
    ) -> Result<(), ApplyError> {
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return Ok(());
        };
        let mut pairs = Vec::new();
        for ext in extensions.flatten() {
            if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                pairs.push((key.to_vec(), ext.value_bytes().to_vec()));
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        let fd = rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io(shown, "open for xattrs", e))?;
        for (key, value) in pairs {
            rfs::fsetxattr(
                fd.as_fd(),
                OsStr::from_bytes(&key),
                &value,
                rfs::XattrFlags::empty(),
            )
            .map_err(|e| {
                self.io(
                    shown,
                    &format!("xattr {}", String::from_utf8_lossy(&key)),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// Applies the uncompressed layer tar `layer` onto `root`. `name` labels
/// errors (e.g. the layer digest).
pub fn apply_layer<R: Read>(
    root: &Path,
    layer: R,
    name: &str,
    options: ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root_fd = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::Io {
        layer: name.to_string(),
        entry: String::new(),
        message: format!("opening {}: {e}", root.display()),
    })?;
    let mut applier = Applier {
        root: root_fd,
        layer: name,
        options,
        created: HashSet::new(),
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
    };
    let mut archive = tar::Archive::new(layer);
    let entries = archive
        .entries()
        .map_err(|e| applier.io("", "reading tar", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| applier.io("", "reading tar", e))?;
        applier.apply_entry(&mut entry)?;
    }
    // Deepest first, so setting a child's time does not disturb its parent's.
    let mut dirs = std::mem::take(&mut applier.dir_times);
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, mtime) in dirs {
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            _ => continue,
        };
        let shown = path.display().to_string();
        let dir = applier
            .open_beneath(&parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| applier.io(&shown, "reopen", e))?;
        applier
            .set_times(&dir, &name, mtime)
            .map_err(|e| applier.io(&shown, "set times", e))?;
    }
    Ok(applier.stats)
}

/// Applies a gzip-compressed layer.
pub fn apply_gzip_layer<R: Read>(
    root: &Path,
    layer: R,
    name: &str,
    options: ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    apply_layer(root, flate2::read::GzDecoder::new(layer), name, options)
}
