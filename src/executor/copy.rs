//! COPY inside the sandbox helper: files from a source tree (the build
//! context, a heredoc dir, or another stage's root) written into the
//! step's root, following docker's destination rules.
//!
//! The helper runs this in its own mount namespace over the same overlay a
//! RUN would get, so the layer comes from the ordinary upper-dir differ.
//! Every destination path is resolved with `RESOLVE_IN_ROOT` (symlinks in
//! the image resolve as if the root were `/`, never onto the host), and
//! sources are walked by `context::SourceTree` without following links.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use crate::openat;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::context::{ContextError, IgnoreRules, Matched, SourceTree};
use crate::workers::Workers;

/// Why a COPY or ADD failed in the helper.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source the tree does not give (missing, outside, a bad pattern).
    #[error(transparent)]
    Source(#[from] ContextError),
    /// `--chown` names a user or group the image does not have.
    #[error("--chown={spec}: no {what} named {name:?} in the image")]
    NoSuchOwner {
        /// `--chown` as written.
        spec: String,
        /// "user" or "group".
        what: &'static str,
        /// The name not found.
        name: String,
    },
    /// A destination the copy cannot write as asked (a directory where a
    /// file goes, a path through too many links, a file where a
    /// directory goes).
    #[error("{0}")]
    Destination(String),
    /// A read or write of `path` that the kernel refused.
    #[error("{path}: {source}")]
    Io {
        /// The path, as the user knows it.
        path: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// An archive ADD could not unpack.
    #[error("ADD {path}: {why}")]
    Unpack {
        /// The archive, relative to its tree.
        path: String,
        /// What the unpacker said.
        why: String,
    },
}

impl CopyError {
    fn io(path: impl std::fmt::Display, source: impl Into<std::io::Error>) -> CopyError {
        CopyError::Io {
            path: path.to_string(),
            source: source.into(),
        }
    }
}

/// A COPY as the helper performs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopySpec {
    /// Host directory the sources are relative to.
    pub source_root: PathBuf,
    /// Overlay the source root is (another stage's snapshot lower dirs,
    /// relative to `base`, top first), mounted read-only at `source_root`.
    pub source_lowers: Option<(PathBuf, Vec<String>)>,
    /// Sources as written (after expansion of variables).
    pub sources: Vec<String>,
    /// Absolute destination; a trailing `/` means "a directory".
    pub dest: String,
    /// `.dockerignore` text applied to the sources (the context only).
    pub ignore: String,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--chown` as written, resolved in the destination root.
    pub chown: Option<String>,
    /// Keep the sources' owners when there is no `--chown` (another
    /// stage's files); otherwise they become 0:0 (the context's).
    pub keep_owner: bool,
    /// ADD: local tar archives (plain, gzip, bzip2, xz, zstd) are unpacked
    /// into the destination instead of copied, unless `unpack` is false.
    #[serde(default)]
    pub add: bool,
    /// ADD `--unpack`.
    #[serde(default)]
    pub unpack: Option<bool>,
    /// `--parents`: keep each source's path (below a `/./` pivot).
    #[serde(default)]
    pub parents: bool,
    /// `--chmod`, octal or symbolic.
    pub chmod: Option<super::chmod::Chmod>,
}

impl CopyError {
    /// Whether the machine failed, not the COPY as written: the disk is
    /// full or broken, or the process is out of memory or descriptors.
    pub fn is_environment(&self) -> bool {
        match self {
            CopyError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOSPC
                        | libc::EDQUOT
                        | libc::EIO
                        | libc::EROFS
                        | libc::ENOMEM
                        | libc::EMFILE
                        | libc::ENFILE
                )
            ),
            CopyError::Source(e) => e.is_environment(),
            _ => false,
        }
    }
}

/// Stands for a file writer's error until the writers are joined.
const WRITER_STOPPED: &str = "a file of the copy could not be written";

fn errno(what: &str) -> impl Fn(Errno) -> CopyError + '_ {
    move |e| CopyError::io(what, e)
}

/// Reads `etc/<name>` of the destination root (empty when missing).
fn read_etc(root: &OwnedFd, name: &str) -> Vec<u8> {
    let Ok(fd) = openat::in_root(root, format!("etc/{name}"), OFlags::RDONLY) else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut bytes);
    bytes
}

/// Resolves `--chown=user[:group]` as BuildKit does: a user name gives
/// its uid and primary group from the root's /etc/passwd, a number is
/// both uid and gid; a group (name from /etc/group, or number) replaces
/// the gid. Unknown names are errors rather than root.
pub fn resolve_chown(spec: &str, passwd: &[u8], group: &[u8]) -> Result<(u32, u32), CopyError> {
    let missing = |what: &'static str, name: &str| CopyError::NoSuchOwner {
        spec: spec.to_string(),
        what,
        name: name.to_string(),
    };
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = |table: &'_ [u8], name: &str| -> Option<Vec<String>> {
        super::user::entries(table)
            .find(|f| f.len() > 2 && f[0] == name)
            .map(|f| f.iter().map(|s| s.to_string()).collect())
    };
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => entry(passwd, user)
            .and_then(|f| Some((f[2].parse().ok()?, f.get(3)?.parse().ok()?)))
            .ok_or_else(|| missing("user", user))?,
    };
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry(group, g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| missing("group", g))?,
        };
    }
    Ok((uid, gid))
}

/// Does the copy into the root at `root_path`.
pub fn run(spec: &CopySpec, root_path: &std::path::Path) -> Result<(), CopyError> {
    let root = rfs::open(
        root_path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open the root"))?;
    let owner = match &spec.chown {
        Some(c) => Some(resolve_chown(
            c,
            &read_etc(&root, "passwd"),
            &read_etc(&root, "group"),
        )?),
        None => None,
    };
    let ignore = IgnoreRules::parse(&spec.ignore)?;
    let tree = SourceTree::new(&spec.source_root, &ignore, &spec.exclude)?;
    let source_fd = rfs::open(
        tree.root(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open the source"))?;
    let matched = matched_sources(spec, &tree)?;
    let mut copier = Copier {
        root,
        source: source_fd,
        owner,
        keep_owner: spec.keep_owner,
        chmod: spec.chmod.clone(),
        links: HashMap::new(),
        dir_times: Vec::new(),
        parent_dir: None,
        writers: Workers::start("copy"),
    };
    // Several sources onto a destination that is no directory and has no
    // trailing slash are each copied onto it in turn, the last one
    // staying, as BuildKit does (the classic builder refused this).
    let into_dir = spec.parents || spec.dest.ends_with('/') || copier.is_dir(&spec.dest);
    let copied = matched.iter().try_for_each(|(top, kept)| {
        let target = target_of(&spec.dest, top, kept.as_deref(), into_dir);
        copier.copy_match(spec, &tree, top, &target)
    });
    // Every file's bytes are in before any error is reported or any
    // directory time is set.
    let written = copier.writers.finish();
    // A thread's error first: the walk stops with a stand-in once one
    // has failed.
    written.map_err(|e| e.unwrap_or_else(|| CopyError::Destination(WRITER_STOPPED.into())))?;
    copied?;
    // Directory times last, deepest first: writing into a directory
    // changes its mtime.
    for (path, atime, mtime) in copier.dir_times.iter().rev() {
        set_times(&copier.root, path, *atime, *mtime)?;
    }
    Ok(())
}

/// Every match of the sources of `spec` in `tree`, in order, each with the
/// path it keeps under the destination with `--parents` (what follows the
/// source's `/./` pivot), `None` without.
fn matched_sources(
    spec: &CopySpec,
    tree: &SourceTree<'_>,
) -> Result<Vec<(Matched, Option<String>)>, CopyError> {
    let mut matched = Vec::new();
    for source in &spec.sources {
        let pivot = crate::context::parents_pivot(source);
        for m in tree.expand(source)? {
            let kept = if spec.parents {
                let below = m
                    .written
                    .strip_prefix(&pivot)
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(&m.written);
                Some(below.to_string())
            } else {
                None
            };
            matched.push((m, kept));
        }
    }
    Ok(matched)
}

/// Where the match `top` goes, relative to the root: below `dest` by its
/// kept path (`--parents`), onto `dest` for a directory (its contents
/// merge there), into `dest` by name when that is a directory, else onto
/// `dest` itself.
fn target_of(dest: &str, top: &Matched, kept: Option<&str>, into_dir: bool) -> String {
    let target = if let Some(kept) = kept.filter(|k| !k.is_empty() && *k != ".") {
        format!("{}/{kept}", dest.trim_end_matches('/'))
    } else if top.dir {
        dest.trim_end_matches('/').to_string()
    } else if into_dir {
        format!("{}/{}", dest.trim_end_matches('/'), top.name)
    } else {
        dest.to_string()
    };
    target.trim_start_matches('/').to_string()
}

/// The archive formats ADD unpacks, known by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// An uncompressed tar.
    Tar,
    /// gzip.
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

/// The compression `head` (a file's first bytes) shows, or `Tar` for an
/// uncompressed stream.
fn compression(head: &[u8]) -> Archive {
    if head.starts_with(&[0x1f, 0x8b]) {
        Archive::Gzip
    } else if head.starts_with(b"BZh") {
        Archive::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Archive::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Archive::Zstd
    } else {
        Archive::Tar
    }
}

/// `reader` decompressed as `kind` says.
pub fn decompress<'a>(
    kind: Archive,
    reader: impl Read + 'a,
) -> std::io::Result<Box<dyn Read + 'a>> {
    let reader = std::io::BufReader::new(reader);
    Ok(match kind {
        Archive::Tar => Box::new(reader),
        Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Archive::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        Archive::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
        Archive::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}

/// Whether the stream in `head`..`rest` is a tar archive ADD unpacks: its
/// (decompressed) first block must be a tar header with the `ustar`
/// magic. Anything else, compressed or not, is copied as it is.
pub fn sniff_archive(data: impl Read) -> Option<Archive> {
    let mut data = std::io::BufReader::new(data);
    let head = std::io::BufRead::fill_buf(&mut data).ok()?.to_vec();
    let kind = compression(&head);
    let mut block = Vec::with_capacity(512);
    decompress(kind, data)
        .ok()?
        .take(512)
        .read_to_end(&mut block)
        .ok()?;
    (block.len() == 512 && is_tar_header(&block)).then_some(kind)
}

/// Whether a 512-byte block is a tar header: the ustar magic, or (for old
/// v7 archives without it) a name and a checksum that adds up.
fn is_tar_header(block: &[u8]) -> bool {
    if &block[257..262] == b"ustar" {
        return true;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .skip_while(|b| **b == b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    block[0] != 0 && sum == stored
}

fn archive_kind(source: &OwnedFd, rel: &str) -> Result<Option<Archive>, CopyError> {
    let fd = openat::in_root(source, rel, OFlags::RDONLY).map_err(errno(rel))?;
    Ok(sniff_archive(std::fs::File::from(fd)))
}

struct Copier {
    root: OwnedFd,
    source: OwnedFd,
    owner: Option<(u32, u32)>,
    keep_owner: bool,
    chmod: Option<super::chmod::Chmod>,
    /// Hardlinked sources already copied: (dev, ino) → destination path.
    links: HashMap<(u64, u64), String>,
    dir_times: Vec<(String, Timespec, Timespec)>,
    /// The destination dir of the last file, opened (a walk gives a
    /// dir's files one after another; resolving the dir again for each
    /// of 20,000 files cost a third of the copy). Nothing else writes
    /// the root during a COPY and a directory is never replaced, so an
    /// open dir stays the one its path names until the copy unlinks
    /// something (a link on the way to it), which forgets it.
    parent_dir: Option<(String, std::sync::Arc<OwnedFd>)>,
    /// Write files' bytes while the walk makes the next entries (a 500
    /// MB, 20,000-file COPY spent 3 s on one core). What lands is the
    /// same whatever the order: each file gets its own bytes and
    /// metadata.
    writers: Workers<CopyError>,
}

/// A regular file created in the root, waiting for its bytes and then
/// its owner, mode and times (in that order: chown clears setuid bits,
/// and writing moves the mtime).
struct FileJob {
    src: std::fs::File,
    out: std::fs::File,
    owner: (u32, u32),
    mode: Mode,
    times: Timestamps,
    /// The destination, as errors name it.
    to: String,
}

impl FileJob {
    fn run(mut self) -> Result<(), CopyError> {
        std::io::copy(&mut self.src, &mut self.out).map_err(|e| CopyError::io(&self.to, e))?;
        let (uid, gid) = self.owner;
        rfs::fchown(
            &self.out,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
        )
        .map_err(errno(&self.to))?;
        rfs::fchmod(&self.out, self.mode).map_err(errno(&self.to))?;
        rfs::futimens(&self.out, &self.times).map_err(errno(&self.to))
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    }
}

fn set_times(
    root: &OwnedFd,
    path: &str,
    atime: Timespec,
    mtime: Timespec,
) -> Result<(), CopyError> {
    let (parent, name) = split(path);
    let dir =
        openat::in_root(root, parent, OFlags::RDONLY | OFlags::DIRECTORY).map_err(errno(path))?;
    rfs::utimensat(
        &dir,
        name,
        &Timestamps {
            last_access: atime,
            last_modification: mtime,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno(path))
}

impl Copier {
    /// Copies the match `top` (a file or a tree) of `tree` to `target`,
    /// its parents made first; ADD unpacks a local archive into the
    /// destination instead.
    fn copy_match(
        &mut self,
        spec: &CopySpec,
        tree: &SourceTree<'_>,
        top: &Matched,
        target: &str,
    ) -> Result<(), CopyError> {
        // Parents of the target are created as 0755 dirs (owned by the
        // --chown user when there is one, as BuildKit does).
        let dest_dir_owner = self.owner.unwrap_or((0, 0));
        // Each match resolves its dirs afresh: an unpacked archive may
        // have replaced a link on the way to the kept one.
        self.parent_dir = None;
        let parent = match target.rsplit_once('/') {
            Some((p, _)) => p.to_string(),
            None => String::new(),
        };
        self.mkdir_all(&parent, dest_dir_owner)?;
        if spec.add && !top.dir && spec.unpack != Some(false) {
            if let Some(kind) = archive_kind(&self.source, &top.rel)? {
                let dest = spec.dest.trim_start_matches('/');
                self.mkdir_all(dest, dest_dir_owner)?;
                return self.unpack(&top.rel, kind, dest);
            }
        }
        for w in tree.walk(top)? {
            let to = match (w.rel.is_empty(), target.is_empty()) {
                (true, _) => target.to_string(),
                (false, true) => w.rel.clone(),
                (false, false) => format!("{target}/{}", w.rel),
            };
            if to.is_empty() {
                // The root itself: its contents merge into /.
                continue;
            }
            if w.rel.is_empty() && top.dir && self.is_dir(&to) {
                // An existing destination directory keeps its own metadata.
                continue;
            }
            self.copy_one(&w, &to)?;
        }
        Ok(())
    }

    fn ids(&self, meta: &std::fs::Metadata) -> (u32, u32) {
        match self.owner {
            Some(ids) => ids,
            None if self.keep_owner => (meta.uid(), meta.gid()),
            None => (0, 0),
        }
    }

    fn mode(&self, meta: &std::fs::Metadata) -> u32 {
        let own = meta.permissions().mode() & 0o7777;
        match &self.chmod {
            Some(chmod) => chmod.apply(own, meta.is_dir()),
            None => own,
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        openat::in_root(&self.root, path, OFlags::PATH)
            .ok()
            .and_then(|fd| rfs::fstat(&fd).ok())
            .is_some_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
    }

    /// Creates `path` and its missing parents as 0755 directories,
    /// following symlinks on the way as if the root were `/` (a link to a
    /// missing absolute path makes that path inside the root, as BuildKit
    /// does).
    fn mkdir_all(&self, path: &str, owner: (u32, u32)) -> Result<(), CopyError> {
        let mut todo: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let parent = done.join("/");
            let dir = openat::in_root(&self.root, &parent, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(errno(&parent))?;
            let shown = format!(
                "/{}",
                [parent.as_str(), part.as_str()]
                    .join("/")
                    .trim_start_matches('/')
            );
            match rfs::statat(&dir, part.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match rfs::FileType::from_raw_mode(st.st_mode) {
                    rfs::FileType::Directory => done.push(part),
                    rfs::FileType::Symlink => {
                        links += 1;
                        if links > 40 {
                            return Err(CopyError::Destination(format!(
                                "{shown}: too many levels of symbolic links"
                            )));
                        }
                        let target = rfs::readlinkat(&dir, part.as_str(), Vec::new())
                            .map_err(errno(&shown))?;
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            done.clear();
                        }
                        for component in target.split('/').rev().filter(|c| !c.is_empty()) {
                            todo.push_front(component.to_string());
                        }
                    }
                    _ => {
                        return Err(CopyError::Destination(format!(
                            "{shown} exists and is not a directory"
                        )))
                    }
                },
                Err(Errno::NOENT) => {
                    rfs::mkdirat(&dir, part.as_str(), Mode::from_raw_mode(0o755))
                        .map_err(errno(&shown))?;
                    rfs::chownat(
                        &dir,
                        part.as_str(),
                        Some(rfs::Uid::from_raw(owner.0)),
                        Some(rfs::Gid::from_raw(owner.1)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(errno(&shown))?;
                    done.push(part);
                }
                Err(e) => return Err(CopyError::io(shown, e)),
            }
        }
        Ok(())
    }

    /// Unpacks the archive `rel` into the directory `to`: entries that
    /// would leave it (`..`, absolute names, links out) are errors.
    fn unpack(&self, rel: &str, kind: Archive, to: &str) -> Result<(), CopyError> {
        let src = openat::in_root(&self.source, rel, OFlags::RDONLY).map_err(errno(rel))?;
        let reader =
            decompress(kind, std::fs::File::from(src)).map_err(|e| CopyError::io(rel, e))?;
        let dir =
            openat::in_root(&self.root, to, OFlags::PATH | OFlags::DIRECTORY).map_err(errno(to))?;
        let host = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ))
        .map_err(|e| CopyError::io(format!("/{to}"), e))?;
        let options = crate::snapshot::ApplyOptions {
            whiteouts: false,
            owner: self.owner,
            ..Default::default()
        };
        crate::snapshot::apply_layer(&host, reader, rel, options)
            .map(drop)
            .map_err(|e| CopyError::Unpack {
                path: rel.to_string(),
                why: e.to_string().replacen(&format!("layer {rel}: "), "", 1),
            })
    }

    /// The destination dir `parent`, opened (the last one is kept).
    fn open_parent(&mut self, parent: &str) -> Result<std::sync::Arc<OwnedFd>, CopyError> {
        if let Some((path, fd)) = &self.parent_dir {
            if path == parent {
                return Ok(fd.clone());
            }
        }
        let fd = std::sync::Arc::new(
            openat::in_root(&self.root, parent, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(errno(parent))?,
        );
        self.parent_dir = Some((parent.to_string(), fd.clone()));
        Ok(fd)
    }

    /// A regular file `to` (in `dir`): a hard link to the copy of its
    /// first name, or created here and handed to the writers with its
    /// owner, mode and times.
    fn file(
        &mut self,
        w: &crate::context::Walked,
        dir: &OwnedFd,
        to: &str,
        (owner, mode, times): ((u32, u32), Mode, Timestamps),
    ) -> Result<(), CopyError> {
        let (_, name) = split(to);
        let meta = &w.meta;
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&key) {
                let (fp, fname) = split(first);
                let from_dir = openat::in_root(&self.root, fp, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(errno(first))?;
                return rfs::linkat(&from_dir, fname, dir, name, AtFlags::empty())
                    .map_err(errno(to));
            }
            self.links.insert(key, to.to_string());
        }
        let src = openat::in_root(&self.source, &w.tree_rel, OFlags::RDONLY | OFlags::NOFOLLOW)
            .map_err(errno(&w.tree_rel))?;
        let out = rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno(to))?;
        let job = FileJob {
            src: src.into(),
            out: out.into(),
            owner,
            mode,
            times,
            to: to.to_string(),
        };
        match self.writers.run(move || job.run()) {
            true => Ok(()),
            // finish() reports the writer's own error.
            false => Err(CopyError::Destination(WRITER_STOPPED.into())),
        }
    }

    /// Clears the way for `to` (`name` in `dir`): a non-directory there
    /// goes; a directory stays for a directory to merge into (its
    /// metadata then follows the source's, as BuildKit's copy does) and
    /// refuses anything else. Whether a directory is there.
    fn make_room(
        &mut self,
        dir: &OwnedFd,
        name: &str,
        to: &str,
        source_is_dir: bool,
    ) -> Result<bool, CopyError> {
        let Ok(st) = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(false);
        };
        let existing_dir = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory;
        match (source_is_dir, existing_dir) {
            (true, true) => {}
            (false, true) => {
                return Err(CopyError::Destination(format!(
                    "cannot replace the directory /{to} with a non-directory"
                )))
            }
            _ => {
                rfs::unlinkat(dir, name, AtFlags::empty()).map_err(errno(to))?;
                // What went may have been a link the kept dir was reached
                // through (a link replaced by a source dir of that name).
                self.parent_dir = None;
            }
        }
        Ok(existing_dir)
    }

    fn copy_one(&mut self, w: &crate::context::Walked, to: &str) -> Result<(), CopyError> {
        let (parent, name) = split(to);
        let dir = self.open_parent(parent)?;
        let dir = &*dir;
        let meta = &w.meta;
        let ft = meta.file_type();
        let existing_dir = self.make_room(dir, name, to, ft.is_dir())?;
        let (uid, gid) = self.ids(meta);
        let mode = Mode::from_raw_mode(self.mode(meta));
        let times = crate::snapshot::tree::times_of(meta);
        let (atime, mtime) = (times.last_access, times.last_modification);
        if ft.is_dir() {
            if !existing_dir {
                rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(errno(to))?;
            }
        } else if ft.is_symlink() {
            let target = rfs::readlinkat(&self.source, w.tree_rel.as_str(), Vec::new())
                .map_err(errno(&w.tree_rel))?;
            rfs::symlinkat(target.as_c_str(), dir, name).map_err(errno(to))?;
        } else if ft.is_file() {
            return self.file(w, dir, to, ((uid, gid), mode, times));
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rfs::FileType::Fifo
            } else if ft.is_char_device() {
                rfs::FileType::CharacterDevice
            } else {
                rfs::FileType::BlockDevice
            };
            rfs::mknodat(dir, name, kind, mode, meta.rdev()).map_err(errno(to))?;
        } else {
            // Sockets are not copied (docker skips them too).
            return Ok(());
        }
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno(to))?;
        if !ft.is_symlink() {
            // After chown, which clears setuid/setgid bits.
            rfs::chmodat(dir, name, mode, AtFlags::empty()).map_err(errno(to))?;
        }
        if ft.is_dir() {
            self.dir_times.push((to.to_string(), atime, mtime));
        } else {
            set_times(&self.root, to, atime, mtime)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tar_streams_are_archives() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(3);
        header.set_cksum();
        tar.append_data(&mut header, "f", &b"abc"[..]).unwrap();
        let tar = tar.into_inner().unwrap();
        assert_eq!(sniff_archive(&tar[..]), Some(Archive::Tar));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(
            sniff_archive(&gz.finish().unwrap()[..]),
            Some(Archive::Gzip)
        );
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        assert_eq!(sniff_archive(&zst[..]), Some(Archive::Zstd));
        let mut not_tar = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut not_tar, b"just text").unwrap();
        assert_eq!(sniff_archive(&not_tar.finish().unwrap()[..]), None);
        assert_eq!(sniff_archive(&b"plain text"[..]), None);
    }

    #[test]
    fn chown_resolves_like_docker() {
        let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = b"root:x:0:\nstaff:x:50:\n";
        let ids = |spec: &str| resolve_chown(spec, passwd, group).unwrap();
        assert_eq!(ids("app"), (1000, 1001));
        assert_eq!(ids("app:staff"), (1000, 50));
        assert_eq!(ids("7:8"), (7, 8));
        assert_eq!(ids("7"), (7, 7));
        let nobody = resolve_chown("nobody", passwd, group).unwrap_err();
        assert!(
            matches!(&nobody, CopyError::NoSuchOwner { what: "user", name, .. } if name == "nobody")
        );
        assert_eq!(
            nobody.to_string(),
            "--chown=nobody: no user named \"nobody\" in the image"
        );
        assert!(matches!(
            resolve_chown("app:wheel", passwd, group),
            Err(CopyError::NoSuchOwner { what: "group", .. })
        ));
    }

    fn job(src: &std::path::Path, out: std::fs::File, to: &str) -> FileJob {
        let ids = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let at = |sec| Timespec {
            tv_sec: sec,
            tv_nsec: 0,
        };
        FileJob {
            src: std::fs::File::open(src).unwrap(),
            out,
            owner: ids,
            mode: Mode::from_raw_mode(0o640),
            times: Timestamps {
                last_access: at(1_000_000),
                last_modification: at(2_000_000),
            },
            to: to.into(),
        }
    }

    #[test]
    fn file_writers_give_every_file_its_bytes_mode_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let mut writers = Workers::start("test");
        for i in 0..200 {
            let src = dir.path().join(format!("src{i}"));
            std::fs::write(&src, format!("file {i}\n").repeat(i * 50)).unwrap();
            let out = std::fs::File::create(dir.path().join(format!("out{i}"))).unwrap();
            let job = job(&src, out, &format!("out{i}"));
            assert!(writers.run(move || job.run()));
        }
        assert!(writers.finish().is_ok());
        for i in 0..200 {
            let out = dir.path().join(format!("out{i}"));
            // Before reading it: a read moves an atime older than the
            // mtime (relatime).
            let meta = std::fs::metadata(&out).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
            assert_eq!(meta.mtime(), 2_000_000);
            assert_eq!(meta.atime(), 1_000_000);
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(dir.path().join(format!("src{i}"))).unwrap()
            );
        }
    }

    #[test]
    fn a_file_the_writers_cannot_write_is_the_error_reported() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"data").unwrap();
        std::fs::write(dir.path().join("out"), b"").unwrap();
        // Opened for reading only: the copy into it fails.
        let out = std::fs::File::open(dir.path().join("out")).unwrap();
        let mut writers = Workers::start("test");
        let job = job(&src, out, "app/out");
        assert!(writers.run(move || job.run()));
        let err = writers.finish().unwrap_err().unwrap();
        assert!(
            matches!(&err, CopyError::Io { path, .. } if path == "app/out"),
            "{err}"
        );
    }
}
