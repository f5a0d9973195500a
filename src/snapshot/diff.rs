//! Layer diffs: what a RUN changed, as a deterministic layer tar.
//!
//! Two ways to find the changes. Over overlayfs only the upper directory is
//! walked ([`overlay_changes`]): a 0/0 character device is a deletion, an
//! opaque xattr replaces a lower directory, and copy-ups whose metadata and
//! contents equal the lower file are dropped, so the cost follows what the
//! step changed, not the size of the root. Without overlay the root is
//! walked before ([`record_tree`]) and after ([`copy_changes`]); an inode or
//! ctime change counts as a change even when size and mtime stayed (a
//! rewrite of `/etc/group-` by `useradd` keeps both).
//!
//! [`write_layer`] turns the changes into a tar (sorted, no user or group
//! names, mtimes clamped to `SOURCE_DATE_EPOCH`, xattrs as PAX records,
//! hardlinks kept) compressed with gzip and hashed in the same pass.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::tree::read_xattrs;
use crate::blob::LayerBlob;
use crate::cache::ContentStore;
use crate::cache::{finish_layer, start_layer, Compression, LayerError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(crate) const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Which xattr marks an opaque directory in an upper dir: only the one of
/// the namespace the overlay was mounted with. Extracted lower dirs carry
/// both (a snapshot serves root and rootless mounts), and a root mount's
/// copy-up of such a dir takes `user.overlay.opaque` along as an ordinary
/// xattr; read as a marker, it made every later write into a replaced
/// directory an opaque layer that hid everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque` (overlay mounted by real root).
    Trusted,
    /// `user.overlay.opaque` (overlay mounted with `userxattr`).
    User,
    /// Either: an upper dir rbuild filled itself (a squash), where both
    /// are set together.
    Either,
}

impl OpaqueXattr {
    /// The xattrs this mount reads as the opaque marker.
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            OpaqueXattr::Trusted => &OPAQUE_XATTRS[..1],
            OpaqueXattr::User => &OPAQUE_XATTRS[1..],
            OpaqueXattr::Either => &OPAQUE_XATTRS,
        }
    }
}

/// One change a step made, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `path` was added or modified; its new state is read from `source`.
    Put {
        /// Path inside the root, without a leading `/`.
        path: PathBuf,
        /// Where the new version is on disk.
        source: PathBuf,
    },
    /// `path` was deleted.
    Delete(PathBuf),
    /// The directory `path` replaced whatever lower layers had there.
    Opaque(PathBuf),
}

impl Change {
    fn sort_key(&self) -> Vec<u8> {
        match self {
            Change::Put { path, .. } => path.as_os_str().as_bytes().to_vec(),
            Change::Delete(path) => whiteout_name(path, WHITEOUT_PREFIX),
            Change::Opaque(path) => {
                let mut key = path.as_os_str().as_bytes().to_vec();
                key.extend_from_slice(b"/");
                key.extend_from_slice(OPAQUE_MARKER.as_bytes());
                key
            }
        }
    }
}

fn whiteout_name(path: &Path, prefix: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        out.extend_from_slice(parent.as_os_str().as_bytes());
        out.push(b'/');
    }
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
    out
}

fn is_whiteout_device(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn xattr_value(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, key, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn is_opaque_by(path: &Path, keys: &[&str]) -> bool {
    keys.iter()
        .any(|key| xattr_value(path, key).as_deref() == Some(b"y"))
}

/// A lower dir rbuild extracted: both markers are set together.
fn is_opaque(path: &Path) -> bool {
    is_opaque_by(path, &OPAQUE_XATTRS)
}

/// Extended attributes a layer carries: everything but overlayfs's own.
fn layer_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut xattrs = read_xattrs(path)?;
    xattrs.retain(|(name, _)| {
        !name.starts_with(b"trusted.overlay.") && !name.starts_with(b"user.overlay.")
    });
    Ok(xattrs)
}

/// Finds the file a path had in the stacked lower dirs (top first), if any,
/// honouring whiteouts and opaque directories between them.
pub fn lower_file(lowers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    'lowers: for lower in lowers {
        let mut dir = lower.clone();
        let mut hides_below = false;
        if let Some(parent) = rel.parent() {
            for part in parent.components() {
                dir.push(part);
                match std::fs::symlink_metadata(&dir) {
                    Err(_) => {
                        if hides_below {
                            return None;
                        }
                        continue 'lowers;
                    }
                    Ok(meta) if !meta.is_dir() => return None,
                    Ok(_) => hides_below |= is_opaque(&dir),
                }
            }
        }
        let candidate = lower.join(rel);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if is_whiteout_device(&meta) => return None,
            Ok(_) => return Some(candidate),
            Err(_) if hides_below => return None,
            Err(_) => {}
        }
    }
    None
}

fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Whether an upper entry is an unchanged copy of its lower file: same type,
/// owner, mode, size, mtime, xattrs, link target and contents.
fn unchanged_copy_up(upper: &Path, meta: &std::fs::Metadata, lower: &Path) -> io::Result<bool> {
    let Ok(old) = std::fs::symlink_metadata(lower) else {
        return Ok(false);
    };
    if old.file_type() != meta.file_type()
        || (!meta.is_dir() && meta.nlink() > 1)
        || old.mode() != meta.mode()
        || old.uid() != meta.uid()
        || old.gid() != meta.gid()
        || old.mtime() != meta.mtime()
        || old.mtime_nsec() != meta.mtime_nsec()
        || layer_xattrs(upper)? != layer_xattrs(lower)?
    {
        return Ok(false);
    }
    if meta.is_dir() {
        return Ok(true);
    }
    if meta.file_type().is_symlink() {
        return Ok(std::fs::read_link(upper)? == std::fs::read_link(lower)?);
    }
    if meta.is_file() {
        return Ok(old.len() == meta.len() && same_contents(upper, lower)?);
    }
    Ok(old.rdev() == meta.rdev())
}

/// The changes recorded in an overlay upper dir. `lowers` are the lower dirs
/// the step ran over, top first; `opaque` says which xattr the mount used
/// to mark directories it made opaque.
pub fn overlay_changes(
    upper: &Path,
    lowers: &[PathBuf],
    opaque: OpaqueXattr,
) -> io::Result<Vec<Change>> {
    let mut changes = Vec::new();
    let walk = UpperWalk {
        upper,
        opaque: opaque.keys(),
    };
    walk.dir(Path::new(""), &LowerView(lowers.to_vec()), &mut changes)?;
    Ok(with_parents(changes, upper))
}

/// Adds every changed path's parent directories (read from `root`), as
/// docker's layers carry them: a layer applied alone, or stacked as an
/// overlay lower dir, then shows each parent with its real metadata
/// rather than one invented on extraction.
fn with_parents(mut changes: Vec<Change>, root: &Path) -> Vec<Change> {
    let mut present: std::collections::HashSet<PathBuf> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Put { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let mut parents = Vec::new();
    for change in &changes {
        let path = match change {
            Change::Put { path, .. } | Change::Delete(path) => path,
            Change::Opaque(path) => {
                if present.insert(path.clone()) {
                    parents.push(path.clone());
                }
                path
            }
        };
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            if present.insert(ancestor.to_path_buf()) {
                parents.push(ancestor.to_path_buf());
            }
        }
    }
    changes.extend(parents.into_iter().map(|path| Change::Put {
        source: root.join(&path),
        path,
    }));
    changes.sort_by_key(Change::sort_key);
    changes
}

/// The lower dirs that show through at one directory of the merged tree,
/// top first: overlay's own lookup, done once per directory rather than
/// once per entry from the root (a 10,000-file step would otherwise stat
/// every parent of every file in every lower). A whiteout, a non-dir or
/// an opaque dir ends the list below it.
#[derive(Debug, Clone, Default)]
struct LowerView(Vec<PathBuf>);

impl LowerView {
    /// What `name` in this directory is in the lowers, if anything.
    fn lookup(&self, name: &OsStr) -> Option<PathBuf> {
        for dir in &self.0 {
            let candidate = dir.join(name);
            match std::fs::symlink_metadata(&candidate) {
                Ok(meta) if is_whiteout_device(&meta) => return None,
                Ok(_) => return Some(candidate),
                Err(_) => {}
            }
        }
        None
    }

    /// The view inside the subdirectory `name`.
    fn child(&self, name: &OsStr) -> LowerView {
        let mut dirs = Vec::new();
        for dir in &self.0 {
            let candidate = dir.join(name);
            match std::fs::symlink_metadata(&candidate) {
                Err(_) => continue,
                Ok(meta) if meta.is_dir() => {
                    let opaque = is_opaque(&candidate);
                    dirs.push(candidate);
                    if opaque {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
        LowerView(dirs)
    }
}

/// One walk of an upper dir against its lower dirs.
struct UpperWalk<'a> {
    upper: &'a Path,
    /// The xattrs that mark an opaque directory in this upper dir.
    opaque: &'static [&'static str],
}

impl UpperWalk<'_> {
    /// Walks the upper dir's `rel_dir`, whose lowers are `view` (empty
    /// under an opaque dir or where the lowers have no such dir).
    fn dir(&self, rel_dir: &Path, view: &LowerView, changes: &mut Vec<Change>) -> io::Result<()> {
        for entry in std::fs::read_dir(self.upper.join(rel_dir))? {
            let entry = entry?;
            let name = entry.file_name();
            let rel = rel_dir.join(&name);
            let source = entry.path();
            let meta = std::fs::symlink_metadata(&source)?;
            let lower = view.lookup(&name);
            if is_whiteout_device(&meta) {
                if lower.is_some() {
                    changes.push(Change::Delete(rel));
                }
                continue;
            }
            if meta.is_dir() {
                let opaque = is_opaque_by(&source, self.opaque);
                let lower_is_dir = lower
                    .as_ref()
                    .is_some_and(|l| std::fs::symlink_metadata(l).is_ok_and(|m| m.is_dir()));
                let same = match (&lower, opaque) {
                    (Some(l), false) => unchanged_copy_up(&source, &meta, l)?,
                    _ => false,
                };
                if !same {
                    changes.push(Change::Put {
                        path: rel.clone(),
                        source: source.clone(),
                    });
                }
                if opaque && lower_is_dir {
                    changes.push(Change::Opaque(rel.clone()));
                }
                let below = if opaque || !lower_is_dir {
                    LowerView::default()
                } else {
                    view.child(&name)
                };
                self.dir(&rel, &below, changes)?;
                continue;
            }
            if let Some(lower) = &lower {
                if unchanged_copy_up(&source, &meta, lower)? {
                    continue;
                }
            }
            changes.push(Change::Put { path: rel, source });
        }
        Ok(())
    }
}

/// What the copy-tier differ remembers of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    nlink: u64,
}

impl FileState {
    /// Whether a non-directory entry is unchanged. A ctime change counts
    /// (a rewrite that kept size and mtime), unless the link count moved
    /// with it: removing or adding another name of a hard-linked file
    /// touches the file's ctime, not its entry (overlay's differ and
    /// BuildKit's leave it out of the layer too). An xattr set in the
    /// same step as such a link change is missed.
    fn same_entry(&self, now: &FileState) -> bool {
        let same_meta = self.ino == now.ino
            && self.mtime == now.mtime
            && self.mode == now.mode
            && self.uid == now.uid
            && self.gid == now.gid
            && self.size == now.size
            && self.rdev == now.rdev;
        same_meta && (self.ctime == now.ctime || self.nlink != now.nlink)
    }

    fn of(st: &rustix::fs::Stat) -> FileState {
        FileState {
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            rdev: st.st_rdev,
            // u32 on some architectures.
            #[allow(clippy::useless_conversion)]
            nlink: u64::from(st.st_nlink),
        }
    }
}

/// Every path of a root and its state, taken right before a step runs.
pub type TreeState = BTreeMap<PathBuf, FileState>;

/// Records the state of every path under `root`. The walk goes by dir
/// fds (each entry is one `fstatat` on its dir, no path resolved from
/// `/`): a third faster than by paths on a 100,000-file root.
pub fn record_tree(root: &Path) -> io::Result<TreeState> {
    let mut state = TreeState::new();
    let dir = open_dir(rustix::fs::CWD, root)?;
    record_dir(&dir, &mut PathBuf::new(), &mut state)?;
    Ok(state)
}

fn open_dir(at: impl std::os::fd::AsFd, name: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(at, name, flags, Mode::empty())?)
}

fn record_dir(
    dir: &std::os::fd::OwnedFd,
    rel_dir: &mut PathBuf,
    state: &mut TreeState,
) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType};
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        rel_dir.push(name);
        state.insert(rel_dir.clone(), FileState::of(&st));
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = open_dir(dir, Path::new(name))?;
            record_dir(&sub, rel_dir, state)?;
        }
        rel_dir.pop();
    }
    Ok(())
}

/// The changes between `before` (from [`record_tree`]) and `root` now.
/// Inode and ctime are compared too, so a rewrite that kept size and mtime
/// is still seen.
pub fn copy_changes(before: &TreeState, root: &Path) -> io::Result<Vec<Change>> {
    let after = record_tree(root)?;
    state_changes(before, &after, root)
}

/// The changes between two walks of the tree at `root`: `before` the step
/// and `after` it (the next step's `before`, in a live tree).
pub fn state_changes(
    before: &TreeState,
    after: &TreeState,
    root: &Path,
) -> io::Result<Vec<Change>> {
    let mut changes = Vec::new();
    // Both walks are sorted the same way: one pass over the two, no
    // lookups (half the diff's time on a 100,000-file root).
    let mut gone = Vec::new();
    let mut old_entries = before.iter().peekable();
    for (path, now) in after {
        while let Some((old_path, _)) = old_entries.next_if(|(p, _)| *p < path) {
            gone.push(old_path);
        }
        let changed = match old_entries.next_if(|(p, _)| *p == path) {
            None => true,
            Some((_, old)) => {
                let is_dir = now.mode & libc::S_IFMT == libc::S_IFDIR;
                // A directory's ctime and inode say nothing about its own
                // entry's header; its children are compared one by one.
                if is_dir && old.mode & libc::S_IFMT == libc::S_IFDIR {
                    old.mode != now.mode
                        || old.uid != now.uid
                        || old.gid != now.gid
                        || old.mtime != now.mtime
                } else {
                    !old.same_entry(now)
                }
            }
        };
        if changed {
            changes.push(Change::Put {
                path: path.clone(),
                source: root.join(path),
            });
        }
    }
    gone.extend(old_entries.map(|(p, _)| p));
    let mut deleted: Option<&PathBuf> = None;
    for path in gone {
        if deleted.is_some_and(|d| path.starts_with(d)) {
            continue; // inside a directory already deleted as a whole
        }
        // A directory replaced by a file: putting the file removes it all.
        if path.ancestors().skip(1).any(|a| {
            after
                .get(a)
                .is_some_and(|s| s.mode & libc::S_IFMT != libc::S_IFDIR)
        }) {
            continue;
        }
        deleted = Some(path);
        changes.push(Change::Delete(path.clone()));
    }
    Ok(with_parents(changes, root))
}

/// How files on disk become tar headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// Clamp every mtime to this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
    /// In a rootless build, host ids of the caller become these ids in the
    /// layer (the single mapping a user namespace gives: caller → root).
    pub id_map: Option<IdMap>,
    /// How the layer is stored (gzip unless the caller says otherwise).
    pub compression: Compression,
}

/// Where [`write_layer`] reports the uncompressed bytes it has written.
pub type ByteCounter = Option<std::sync::Arc<std::sync::atomic::AtomicU64>>;

/// A single-id mapping from host ids to layer ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// The host uid that is root inside the build.
    pub host_uid: u32,
    /// The host gid that is root inside the build.
    pub host_gid: u32,
}

impl LayerOptions {
    fn ids(&self, uid: u32, gid: u32) -> (u64, u64) {
        match self.id_map {
            Some(map) => (
                if uid == map.host_uid { 0 } else { 65534 },
                if gid == map.host_gid { 0 } else { 65534 },
            ),
            None => (uid as u64, gid as u64),
        }
    }

    fn mtime(&self, mtime: i64) -> u64 {
        let clamped = match self.source_date_epoch {
            Some(epoch) => mtime.min(epoch),
            None => mtime,
        };
        clamped.max(0) as u64
    }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n", where <len> counts the whole record.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
    options: LayerOptions,
    /// (dev, ino) of files already written → their path in the layer.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TarWriter<W> {
    fn marker(&mut self, name: Vec<u8>) -> io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(self.options.mtime(0));
        header.set_size(0);
        self.tar
            .append_data(&mut header, OsStr::from_bytes(&name), io::empty())
    }

    fn put(&mut self, path: &Path, source: &Path) -> io::Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(source)?;
        let kind = meta.file_type();
        if kind.is_socket() {
            return Ok(()); // sockets never go into layers (as docker does)
        }
        let mut header = tar::Header::new_ustar();
        let (uid, gid) = self.options.ids(meta.uid(), meta.gid());
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_mtime(self.options.mtime(meta.mtime()));
        header.set_size(0);
        let xattrs = if kind.is_symlink() {
            Vec::new()
        } else {
            layer_xattrs(source)?
        };
        if !xattrs.is_empty() {
            let mut records = Vec::new();
            for (key, value) in &xattrs {
                let mut full = b"SCHILY.xattr.".to_vec();
                full.extend_from_slice(key);
                records.extend(pax_record(&full, value));
            }
            let mut pax = tar::Header::new_ustar();
            pax.set_entry_type(tar::EntryType::XHeader);
            pax.set_mode(0o644);
            pax.set_mtime(self.options.mtime(0));
            pax.set_size(records.len() as u64);
            let mut pax_name = b"PaxHeaders.0/".to_vec();
            pax_name.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
            pax_name.truncate(99);
            self.tar
                .append_data(&mut pax, OsStr::from_bytes(&pax_name), records.as_slice())?;
        }
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            let mut name = path.as_os_str().as_bytes().to_vec();
            name.push(b'/');
            return self
                .tar
                .append_data(&mut header, OsStr::from_bytes(&name), io::empty());
        }
        if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(source)?;
            return self.tar.append_link(&mut header, path, target);
        }
        if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    header.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    return self.tar.append_link(&mut header, path, first);
                }
                self.links
                    .insert((meta.dev(), meta.ino()), path.to_path_buf());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = std::fs::File::open(source)?;
            // A file that shrank underneath would corrupt the tar: read
            // exactly the size in the header.
            return self
                .tar
                .append_data(&mut header, path, file.take(meta.len()));
        }
        let (entry_type, dev) = if kind.is_char_device() {
            (tar::EntryType::Char, true)
        } else if kind.is_block_device() {
            (tar::EntryType::Block, true)
        } else {
            (tar::EntryType::Fifo, false)
        };
        header.set_entry_type(entry_type);
        if dev {
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
        }
        self.tar.append_data(&mut header, path, io::empty())
    }
}

/// Writes `changes` as a layer into `store` (compressed as `options`
/// say): tar, diff_id and the stored digest in one streaming pass.
pub fn write_layer(
    store: &ContentStore,
    changes: &[Change],
    options: LayerOptions,
    counter: ByteCounter,
) -> Result<LayerBlob, LayerError> {
    let tar = start_layer(store, counter, options.compression)?;
    let mut writer = TarWriter {
        tar,
        options,
        links: HashMap::new(),
    };
    for change in changes {
        match change {
            Change::Put { path, source } => writer.put(path, source)?,
            Change::Delete(path) => writer.marker(whiteout_name(path, WHITEOUT_PREFIX))?,
            Change::Opaque(path) => {
                let mut name = path.as_os_str().as_bytes().to_vec();
                name.push(b'/');
                name.extend_from_slice(OPAQUE_MARKER.as_bytes());
                writer.marker(name)?
            }
        }
    }
    finish_layer(writer.tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let rec = pax_record(b"SCHILY.xattr.user.a", b"1");
        let text = String::from_utf8(rec.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rec.len());
        // Crossing a digit boundary: 95 bytes of body need a 3-digit length.
        let long = pax_record(&[b'k'; 40], &[b'v'; 52]);
        let text = String::from_utf8(long.clone()).unwrap();
        assert_eq!(
            text.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
            long.len()
        );
    }

    #[test]
    fn whiteout_names_keep_the_parent() {
        assert_eq!(whiteout_name(Path::new("a/b/c"), ".wh."), b"a/b/.wh.c");
        assert_eq!(whiteout_name(Path::new("top"), ".wh."), b".wh.top");
    }

    #[test]
    fn copy_changes_see_rewrites_with_the_same_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/group-"), b"root:x:0:\n").unwrap();
        std::fs::write(root.join("keep"), b"same").unwrap();
        std::fs::create_dir_all(root.join("gone/deep")).unwrap();
        std::fs::write(root.join("gone/deep/f"), b"x").unwrap();
        let mtime = std::fs::metadata(root.join("etc/group-"))
            .unwrap()
            .modified()
            .unwrap();
        let before = record_tree(root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Same size, same mtime, different bytes.
        std::fs::write(root.join("etc/group-"), b"user:x:9:\n").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(root.join("etc/group-"))
            .unwrap();
        file.set_modified(mtime).unwrap();
        std::fs::remove_dir_all(root.join("gone")).unwrap();
        let changes = copy_changes(&before, root).unwrap();
        // The changed file's parent comes along (as in docker's layers);
        // the untouched file does not.
        let mut expected = vec![
            Change::Delete(PathBuf::from("gone")),
            Change::Put {
                path: PathBuf::from("etc/group-"),
                source: root.join("etc/group-"),
            },
            Change::Put {
                path: PathBuf::from("etc"),
                source: root.join("etc"),
            },
        ];
        expected.sort_by_key(Change::sort_key);
        assert_eq!(changes, expected);
    }

    #[test]
    fn copy_changes_leave_out_a_file_whose_other_name_went() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"data").unwrap();
        std::fs::hard_link(root.join("sub/file"), root.join("twin")).unwrap();
        std::fs::write(root.join("meta"), b"m").unwrap();
        let before = record_tree(root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_file(root.join("twin")).unwrap();
        // A ctime-only change with the link count unchanged still counts.
        rustix::fs::setxattr(
            root.join("meta"),
            "user.k",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let changes = copy_changes(&before, root).unwrap();
        let mut expected = vec![
            Change::Delete(PathBuf::from("twin")),
            Change::Put {
                path: PathBuf::from("meta"),
                source: root.join("meta"),
            },
        ];
        expected.sort_by_key(Change::sort_key);
        assert_eq!(changes, expected, "sub/file keeps its entry");
    }
}
