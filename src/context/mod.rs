//! The build context and every other tree COPY reads from: which paths a
//! COPY source names (docker's wildcards, `.dockerignore`, `--exclude`),
//! the order they are walked in, and the content digest that enters the
//! cache key.
//!
//! It owns no file writing: the copy itself happens in the sandbox helper
//! (`executor::copy`), which walks sources with this same code so that what
//! is hashed is exactly what is copied. Paths are resolved without leaving
//! the tree's root: a top-level source may be an in-tree symlink (docker
//! follows it), resolved with `RESOLVE_IN_ROOT`; below it nothing is
//! followed.

mod error;
pub mod git;
pub mod glob;
pub mod hashcache;
pub mod remote;

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use sha2::{Digest as _, Sha256};

pub use error::ContextError;
pub use glob::{clean, Glob, IgnoreRules};

use crate::blob::Digest;

/// A tree COPY reads from, with the rules for what it may see.
#[derive(Debug, Clone)]
pub struct SourceTree<'a> {
    root: PathBuf,
    ignore: &'a IgnoreRules,
    /// `--exclude` patterns, matched against paths below each source (as
    /// BuildKit filters the copied tree), with `.dockerignore`'s rules.
    exclude: IgnoreRules,
    /// Remembered file hashes (the build context's), if any.
    cache: Option<&'a hashcache::HashCache>,
}

/// A source path a COPY source named: a cleaned path relative to the
/// tree's root (`.` for the root) with symlinks at its top resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Where it really is, relative to the root.
    pub rel: String,
    /// Its name as the destination sees it (the last component as written).
    pub name: String,
    /// Its path as matched, before symlinks (what `--parents` keeps).
    pub written: String,
    /// Whether it is a directory (whose contents are copied).
    pub dir: bool,
}

/// One path under a matched source, as walked.
#[derive(Debug, Clone)]
pub struct Walked {
    /// Relative to the matched source ("" for the source itself).
    pub rel: String,
    /// Relative to the tree's root.
    pub tree_rel: String,
    /// Its metadata (not following symlinks).
    pub meta: std::fs::Metadata,
}

fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

impl<'a> SourceTree<'a> {
    /// A tree rooted at `root` (canonicalized) seeing what `ignore` and the
    /// `--exclude` patterns leave.
    pub fn new(
        root: &Path,
        ignore: &'a IgnoreRules,
        exclude: &[String],
    ) -> Result<Self, ContextError> {
        let root =
            std::fs::canonicalize(root).map_err(|e| ContextError::read(root.display(), e))?;
        let exclude = IgnoreRules::parse(&exclude.join("\n"))?;
        Ok(SourceTree {
            root,
            ignore,
            exclude,
            cache: None,
        })
    }

    /// The same tree, hashing files through `cache`.
    pub fn with_cache(mut self, cache: &'a hashcache::HashCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The root on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn visible(&self, rel: &str) -> bool {
        rel == "." || !self.ignore.excluded(rel)
    }

    /// The paths `source` names. A literal path must exist (and not be
    /// ignored); a wildcard may match nothing, as in BuildKit.
    pub fn expand(&self, source: &str) -> Result<Vec<Matched>, ContextError> {
        let cleaned = clean(source);
        if cleaned == ".." || cleaned.starts_with("../") {
            return Err(ContextError::Outside(source.to_string()));
        }
        if !has_wildcard(&cleaned) {
            if !self.visible(&cleaned) {
                return Err(not_found(source));
            }
            return self.resolve_top(&cleaned).map(|m| vec![m]);
        }
        // Level by level, matching each component with filepath.Match.
        let mut current = vec![String::new()];
        let parts: Vec<&str> = cleaned.split('/').collect();
        for (depth, part) in parts.iter().enumerate() {
            let last = depth + 1 == parts.len();
            let mut next = Vec::new();
            for dir in &current {
                let join = |name: &str| {
                    if dir.is_empty() {
                        name.to_string()
                    } else {
                        format!("{dir}/{name}")
                    }
                };
                if has_wildcard(part) {
                    let glob = Glob::source(part)?;
                    let Ok(entries) = std::fs::read_dir(self.root.join(dir)) else {
                        continue;
                    };
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| glob.matches(n))
                        .collect();
                    names.sort();
                    next.extend(names.iter().map(|n| join(n)));
                } else {
                    next.push(join(part));
                }
            }
            current = next
                .into_iter()
                .filter(|rel| {
                    let name = rel.rsplit('/').next().unwrap_or(rel);
                    self.visible(rel)
                        && !(last && self.exclude.excluded(name))
                        && std::fs::symlink_metadata(self.root.join(rel))
                            .is_ok_and(|m| last || m.is_dir())
                })
                .collect();
        }
        current.iter().map(|rel| self.resolve_top(rel)).collect()
    }

    /// Resolves a top-level source inside the root (following in-tree
    /// symlinks as if the root were `/`).
    fn resolve_top(&self, rel: &str) -> Result<Matched, ContextError> {
        let root = rfs::open(
            &self.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContextError::read(self.root.display(), e))?;
        let fd = crate::openat::open(&root, rel, OFlags::PATH, crate::openat::Resolve::InRoot)
            .map_err(|e| match e {
                rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => not_found(rel),
                e => ContextError::read(rel, e),
            })?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| ContextError::read(rel, e))?;
        let inside = real
            .strip_prefix(&self.root)
            .map_err(|_| ContextError::Outside(rel.to_string()))?;
        let real_rel = match inside.to_string_lossy().as_ref() {
            "" => ".".to_string(),
            r => r.to_string(),
        };
        let stat = rfs::fstat(&fd).map_err(|e| ContextError::read(rel, e))?;
        let name = rel.rsplit('/').next().unwrap_or(rel).to_string();
        Ok(Matched {
            rel: real_rel,
            name,
            written: rel.to_string(),
            dir: rfs::FileType::from_raw_mode(stat.st_mode) == rfs::FileType::Directory,
        })
    }

    /// Every visible path under `top` (itself first), parents before
    /// children, siblings by name. An ignored directory is still walked
    /// when exceptions could re-include something below it, and kept only
    /// if something was.
    pub fn walk(&self, top: &Matched) -> Result<Vec<Walked>, ContextError> {
        let mut out = Vec::new();
        let meta = std::fs::metadata(self.root.join(&top.rel))
            .map_err(|e| ContextError::read(&top.rel, e))?;
        out.push(Walked {
            rel: String::new(),
            tree_rel: top.rel.clone(),
            meta: meta.clone(),
        });
        if meta.is_dir() {
            self.walk_dir(&top.rel, "", &mut out)?;
        }
        Ok(out)
    }

    /// Walks one directory: entries stat'ed through the directory handle,
    /// sorted by name, subdirectories walked in parallel (rayon) and their
    /// results joined in order.
    fn walk_dir(
        &self,
        tree_dir: &str,
        rel_dir: &str,
        out: &mut Vec<Walked>,
    ) -> Result<(), ContextError> {
        use rayon::prelude::*;
        let path = self.root.join(tree_dir);
        let mut children: Vec<(String, std::fs::Metadata)> = std::fs::read_dir(&path)
            .map_err(|e| ContextError::read(tree_dir, e))?
            .map(|e| {
                let e = e?;
                Ok((e.file_name().to_string_lossy().into_owned(), e.metadata()?))
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| ContextError::read(tree_dir, e))?;
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let exceptions = self.ignore.has_exceptions() || self.exclude.has_exceptions();
        let walked: Vec<Vec<Walked>> = children
            .into_par_iter()
            .map(|(name, meta)| {
                let tree_rel = if tree_dir == "." {
                    name.clone()
                } else {
                    format!("{tree_dir}/{name}")
                };
                let rel = if rel_dir.is_empty() {
                    name
                } else {
                    format!("{rel_dir}/{name}")
                };
                let visible = self.visible(&tree_rel) && !self.exclude.excluded(&rel);
                if !(visible || meta.is_dir() && exceptions) {
                    return Ok(Vec::new());
                }
                let is_dir = meta.is_dir();
                let mut part = vec![Walked {
                    rel: rel.clone(),
                    tree_rel: tree_rel.clone(),
                    meta,
                }];
                if is_dir {
                    self.walk_dir(&tree_rel, &rel, &mut part)?;
                }
                // An ignored directory is kept only for what it holds.
                if !visible && part.len() == 1 {
                    part.clear();
                }
                Ok(part)
            })
            .collect::<Result<_, ContextError>>()?;
        out.extend(walked.into_iter().flatten());
        Ok(())
    }

    /// The content digest of what `sources` select, as the cache key sees
    /// it: per path its name, type, mode, owner, link target and content
    /// hash; never a time. File contents are hashed in parallel (rayon),
    /// through the hash cache when there is one.
    pub fn digest(&self, sources: &[String]) -> Result<Digest, ContextError> {
        use rayon::prelude::*;
        enum Item {
            Text(String),
            Entry(Walked),
        }
        let mut items = Vec::new();
        for source in sources {
            items.push(Item::Text(format!("source {source}\0")));
            for top in self.expand(source)? {
                items.push(Item::Text(format!("top {} {}\0", top.name, top.dir)));
                items.extend(self.walk(&top)?.into_iter().map(Item::Entry));
            }
        }
        let contents: Vec<Option<[u8; 32]>> = items
            .par_iter()
            .map(|item| match item {
                Item::Entry(w) if w.meta.is_file() => self.content_digest(w).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, ContextError>>()?;
        let mut hasher = Sha256::new();
        for (item, content) in items.iter().zip(contents) {
            match item {
                Item::Text(text) => hasher.update(text),
                Item::Entry(w) => self.hash_entry(&mut hasher, w, content)?,
            }
        }
        Ok(Digest::from_sha256(hasher.finalize().into()))
    }

    fn content_digest(&self, w: &Walked) -> Result<[u8; 32], ContextError> {
        let path = self.root.join(&w.tree_rel);
        let digest = match self.cache {
            Some(cache) => cache.file_digest(&w.tree_rel, &path, &w.meta),
            None => hashcache::sha256_file(&path),
        };
        digest.map_err(|e| ContextError::read(&w.rel, e))
    }

    fn hash_entry(
        &self,
        hasher: &mut Sha256,
        w: &Walked,
        content: Option<[u8; 32]>,
    ) -> Result<(), ContextError> {
        let meta = &w.meta;
        let kind = match meta.file_type() {
            t if t.is_dir() => 'd',
            t if t.is_symlink() => 'l',
            t if t.is_file() => 'f',
            _ => 'o',
        };
        hasher.update(format!(
            "{}\0{kind} {:o} {}:{} {}\0",
            w.rel,
            meta.permissions().mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            meta.rdev()
        ));
        if kind == 'l' {
            let target = std::fs::read_link(self.root.join(&w.tree_rel))
                .map_err(|e| ContextError::read(&w.rel, e))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update([0]);
        }
        if let Some(content) = content {
            hasher.update(content);
        }
        Ok(())
    }
}

/// For `COPY --parents`: the part of `source` above its `/./` pivot
/// (cleaned; empty without a pivot, when the whole path is kept).
pub fn parents_pivot(source: &str) -> String {
    match source.get(1..).and_then(|s| s.find("/./")) {
        Some(at) => match clean(&source[..at + 1]).as_str() {
            "." => String::new(),
            prefix => prefix.to_string(),
        },
        None => String::new(),
    }
}

/// The error for a source that does not exist (or is ignored).
pub fn not_found(source: &str) -> ContextError {
    ContextError::NotFound(source.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("src/b.log"), "b").unwrap();
        std::fs::write(p.join("src/sub/c.txt"), "c").unwrap();
        std::fs::write(p.join("top.txt"), "t").unwrap();
        std::os::unix::fs::symlink("src", p.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("escape")).unwrap();
        dir
    }

    #[test]
    fn parents_pivots() {
        assert_eq!(parents_pivot("./x/a.txt"), "");
        assert_eq!(parents_pivot("x/./a.txt"), "x");
        assert_eq!(parents_pivot("./x/y/./z/*.txt"), "x/y");
        assert_eq!(parents_pivot("/./a"), "");
    }

    #[test]
    fn wildcards_and_literals_expand() {
        let dir = tree();
        let none = IgnoreRules::default();
        let t = SourceTree::new(dir.path(), &none, &[]).unwrap();
        let names =
            |s: &str| -> Vec<String> { t.expand(s).unwrap().into_iter().map(|m| m.rel).collect() };
        assert_eq!(names("src/*.txt"), ["src/a.txt"]);
        assert_eq!(names("*/*.txt"), ["src/a.txt"]);
        assert_eq!(names("*.txt"), ["top.txt"]);
        assert_eq!(names("nothing*"), Vec::<String>::new());
        assert_eq!(names("./src/../top.txt"), ["top.txt"]);
        assert_eq!(names("link"), ["src"]);
        let missing = t.expand("missing").unwrap_err();
        assert!(matches!(&missing, ContextError::NotFound(s) if s == "missing"));
        assert!(!missing.is_environment());
        // /etc resolves inside the context, where it does not exist.
        assert!(matches!(
            t.expand("escape").unwrap_err(),
            ContextError::NotFound(_)
        ));
        assert!(matches!(
            t.expand("../x").unwrap_err(),
            ContextError::Outside(_)
        ));
    }

    #[test]
    fn ignored_paths_are_invisible_and_do_not_change_the_digest() {
        let dir = tree();
        let rules = IgnoreRules::parse("**/*.log\nsrc/sub\n!src/sub/c.txt").unwrap();
        let t = SourceTree::new(dir.path(), &rules, &[]).unwrap();
        let top = t.expand("src").unwrap().remove(0);
        let walked: Vec<String> = t.walk(&top).unwrap().into_iter().map(|w| w.rel).collect();
        assert_eq!(walked, ["", "a.txt", "sub", "sub/c.txt"]);
        assert!(t.expand("src/b.log").is_err());
        let before = t.digest(&["src".to_string()]).unwrap();
        std::fs::write(dir.path().join("src/b.log"), "changed").unwrap();
        assert_eq!(before, t.digest(&["src".to_string()]).unwrap());
        std::fs::write(dir.path().join("src/a.txt"), "changed").unwrap();
        assert_ne!(before, t.digest(&["src".to_string()]).unwrap());
    }

    #[test]
    fn digest_ignores_times_but_sees_modes() {
        let dir = tree();
        let none = IgnoreRules::default();
        let t = SourceTree::new(dir.path(), &none, &[]).unwrap();
        let sources = ["src".to_string()];
        let before = t.digest(&sources).unwrap();
        let file = dir.path().join("src/a.txt");
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(before, t.digest(&sources).unwrap());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(before, t.digest(&sources).unwrap());
    }
}
