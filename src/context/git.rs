//! `ADD <git url>`: which sources are git repositories (today's BuildKit
//! rules, `dfgitutil.ParseGitRef`), and checking one out with Debian's
//! `git` into a private directory, once per build.
//!
//! A source is a git ref when it is `git://…`, `ssh://…`, `git@host:path`
//! or an `http(s)://` URL whose path ends in `.git`. The fragment
//! `#ref:subdir` or the query (`?ref=`, `tag=`, `branch=`, `subdir=`,
//! `checksum=`/`commit=`, `keep-git-dir=`, `submodules=`) pick what is
//! checked out. The checkout's `.git` is removed unless `--keep-git-dir`
//! (or `?keep-git-dir=true`) keeps it; submodules are checked out unless
//! `submodules=false`.
//!
//! git runs with no system or user configuration (`HOME` is the private
//! directory), no terminal prompts, and only the http, https, git and ssh
//! transports, so a repository's submodules cannot reach `file://` or
//! `ext::` helpers. Credentials in a URL never appear in an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ContextError;
use crate::redact::{anonymous, redact_text, userinfo};

/// A parsed git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The repository URL without fragment and query.
    pub remote: String,
    /// A branch, tag or commit; the remote's HEAD when absent.
    pub reference: Option<String>,
    /// The directory inside the repository that is copied.
    pub subdir: Option<String>,
    /// The commit the checkout must resolve to (`?checksum=`).
    pub checksum: Option<String>,
    /// `?keep-git-dir=`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=`.
    pub submodules: Option<bool>,
}

/// Whether `source` is a git ref, as today's BuildKit decides.
pub fn is_git(source: &str) -> bool {
    parse(source).is_some()
}

/// The git ref `source` names, `None` when it is no git ref, or the
/// reason a git ref is malformed.
pub fn parse(source: &str) -> Option<Result<GitRef, ContextError>> {
    let (base, fragment) = match source.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (source, None),
    };
    let (remote, query) = match base.split_once('?') {
        Some((r, q)) if r.contains("://") => (r, Some(q)),
        _ => (base, None),
    };
    if let Some((scheme, rest)) = remote.split_once("://") {
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        match scheme {
            "git" | "ssh" => {}
            "http" | "https" if path.ends_with(".git") => {}
            _ => return None,
        }
    } else if !scp_like(remote) {
        return None;
    }
    let mut git = GitRef {
        remote: remote.to_string(),
        reference: None,
        subdir: None,
        checksum: None,
        keep_git_dir: None,
        submodules: None,
    };
    if let Some(fragment) = fragment {
        let (reference, subdir) = match fragment.split_once(':') {
            Some((r, s)) => (r, Some(s)),
            None => (fragment, None),
        };
        git.reference = Some(reference)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        git.subdir = subdir.filter(|s| !s.is_empty()).map(str::to_string);
    }
    Some(apply_query(git, query.unwrap_or("")))
}

/// `user@host:path`, git's scp-like syntax.
fn scp_like(remote: &str) -> bool {
    let Some((user, rest)) = remote.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    let word = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    word(user, &['-', '_']) && word(host, &['-', '.']) && !path.is_empty()
}

fn apply_query(mut git: GitRef, query: &str) -> Result<GitRef, ContextError> {
    fn bad<T>(why: String) -> Result<T, ContextError> {
        Err(ContextError::GitUrl(why))
    }
    let (mut tag, mut branch) = (None, None);
    let mut seen = std::collections::HashSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !seen.insert(key.to_string()) {
            return bad(format!("query {key:?} has multiple values"));
        }
        let flag = |name: &str| -> Result<bool, ContextError> {
            match value {
                "" | "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => bad(format!("invalid {name} value: {other:?}")),
            }
        };
        if value.is_empty() && !matches!(key, "submodules" | "keep-git-dir") {
            return bad(format!("query {key:?} has no value"));
        }
        match key {
            "ref" => set_once(&mut git.reference, value, "ref")?,
            "tag" => tag = Some(with_prefix(value, "refs/tags/")),
            "branch" => branch = Some(with_prefix(value, "refs/heads/")),
            "subdir" => set_once(&mut git.subdir, value, "subdir")?,
            "checksum" | "commit" => git.checksum = Some(value.to_string()),
            "keep-git-dir" => git.keep_git_dir = Some(flag(key)?),
            "submodules" => git.submodules = Some(flag(key)?),
            other => return bad(format!("unexpected query {other:?}")),
        }
    }
    if tag.is_some() && branch.is_some() {
        return bad("branch conflicts with tag".to_string());
    }
    if let Some(r) = tag.or(branch) {
        set_once(&mut git.reference, &r, "ref")?;
    }
    if git.reference.is_none() {
        git.reference = git.checksum.clone();
    }
    Ok(git)
}

fn with_prefix(value: &str, prefix: &str) -> String {
    if value.starts_with(prefix) {
        value.to_string()
    } else {
        format!("{prefix}{value}")
    }
}

fn set_once(slot: &mut Option<String>, value: &str, what: &str) -> Result<(), ContextError> {
    match slot {
        Some(old) if old != value => Err(ContextError::GitUrl(format!(
            "{what} conflicts: {old:?} vs {value:?}"
        ))),
        _ => {
            *slot = Some(value.to_string());
            Ok(())
        }
    }
}

/// A checked-out repository.
#[derive(Debug)]
pub struct Checkout {
    /// The tree ADD copies (the subdir, when one was asked for).
    pub root: PathBuf,
    /// The commit checked out (40 hex digits).
    pub commit: String,
    /// Whether `.git` was kept.
    pub git_dir: bool,
}

/// Debian's `git`, run in one repository with no user or system
/// configuration, no prompts and only network transports.
struct Git<'a> {
    repo: PathBuf,
    home: &'a Path,
    source: &'a GitRef,
    shown: String,
}

impl Git<'_> {
    /// A failure of this checkout, saying `why`.
    fn failed(&self, why: String) -> ContextError {
        ContextError::Git {
            repo: self.shown.clone(),
            why,
        }
    }

    /// Runs `git ARGS`; its trimmed stdout, or its stderr (credentials
    /// hidden) as the error.
    fn run(&self, args: &[&str]) -> Result<String, ContextError> {
        let out = Command::new("git")
            .args([
                "-c",
                "advice.detachedHead=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&self.repo)
            .env("HOME", self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .map_err(|source| ContextError::NoGit {
                repo: self.shown.clone(),
                source,
            })?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            if let Some(userinfo) = userinfo(&self.source.remote) {
                text = text.replace(userinfo, "***");
            }
            return Err(self.failed(format!("git {}: {}", args[0], text.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Fetches the ref and checks it out detached; the commit.
    fn fetch(&self) -> Result<String, ContextError> {
        self.run(&["init", "-q"])?;
        self.run(&["remote", "add", "origin", &self.source.remote])?;
        let reference = self.source.reference.as_deref().unwrap_or("HEAD");
        let commit_like = reference.len() >= 7 && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if commit_like {
            // Not every server serves a bare commit: fetch everything,
            // then look the commit up.
            let heads = "+refs/heads/*:refs/remotes/origin/*";
            self.run(&["fetch", "-q", "--tags", "origin", heads])?;
            self.run(&["checkout", "-q", "--detach", reference])?;
        } else {
            // A shallow fetch where the server can (git's dumb HTTP cannot).
            if self
                .run(&["fetch", "-q", "--depth=1", "origin", reference])
                .is_err()
            {
                self.run(&["fetch", "-q", "origin", reference])?;
            }
            self.run(&["checkout", "-q", "--detach", "FETCH_HEAD"])?;
        }
        let commit = self.run(&["rev-parse", "HEAD"])?;
        if let Some(want) = &self.source.checksum {
            if !commit.starts_with(want.as_str()) {
                return Err(self.failed(format!(
                    "checksum mismatch: expected commit {want}, {reference} is {commit}"
                )));
            }
        }
        Ok(commit)
    }

    /// Submodules, then the kept `.git` made safe to ship or removed.
    fn finish(&self, keep_git_dir: bool) -> Result<(), ContextError> {
        if self.source.submodules != Some(false) && self.repo.join(".gitmodules").exists() {
            self.run(&[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ])?;
        }
        if keep_git_dir {
            // A kept .git goes into the image: it must not carry
            // credentials from the URL.
            self.run(&[
                "remote",
                "set-url",
                "origin",
                &anonymous(&self.source.remote),
            ])?;
            let _ = std::fs::remove_file(self.repo.join(".git/FETCH_HEAD"));
            return Ok(());
        }
        std::fs::remove_dir_all(self.repo.join(".git"))
            .map_err(|e| ContextError::read(&self.shown, e))
    }

    /// The directory ADD copies: the checkout, or its subdir, which must
    /// stay inside it.
    fn root(&self) -> Result<PathBuf, ContextError> {
        let Some(sub) = &self.source.subdir else {
            return Ok(self.repo.clone());
        };
        let shown = &self.shown;
        let clean = crate::context::clean(sub);
        let real = self
            .repo
            .join(clean.trim_start_matches('/'))
            .canonicalize()
            .map_err(|e| self.failed(format!("subdir {sub}: {e}")))?;
        let top = self
            .repo
            .canonicalize()
            .map_err(|e| ContextError::read(shown, e))?;
        if !real.starts_with(&top) || !real.is_dir() {
            return Err(self.failed(format!("subdir {sub} is not a directory of the repository")));
        }
        Ok(real)
    }
}

/// Checks `git` out below `dir` (which must be empty and private).
pub fn checkout(source: &GitRef, keep_git_dir: bool, dir: &Path) -> Result<Checkout, ContextError> {
    let git = Git {
        repo: dir.join("repo"),
        home: dir,
        source,
        shown: redact_text(&source.remote),
    };
    std::fs::create_dir(&git.repo).map_err(|e| ContextError::read(&git.shown, e))?;
    let commit = git.fetch()?;
    git.finish(keep_git_dir)?;
    Ok(Checkout {
        root: git.root()?,
        commit,
        git_dir: keep_git_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(remote: &str, reference: Option<&str>, subdir: Option<&str>) -> GitRef {
        GitRef {
            remote: remote.to_string(),
            reference: reference.map(str::to_string),
            subdir: subdir.map(str::to_string),
            checksum: None,
            keep_git_dir: None,
            submodules: None,
        }
    }

    #[test]
    fn git_refs_are_recognised_as_buildkit_does() {
        for not_git in [
            "https://example.com/file.tar.gz",
            "http://example.com/repo",
            "src/app.git",
            "./x.git",
            "ftp://example.com/repo.git",
            "a.txt",
        ] {
            assert!(!is_git(not_git), "{not_git}");
        }
        let parsed = |s: &str| parse(s).unwrap().unwrap();
        assert_eq!(
            parsed("https://example.com/r.git#v1:sub/dir"),
            git("https://example.com/r.git", Some("v1"), Some("sub/dir"))
        );
        assert_eq!(
            parsed("git://127.0.0.1:9418/r.git"),
            git("git://127.0.0.1:9418/r.git", None, None)
        );
        assert_eq!(
            parsed("git@github.com:moby/buildkit.git#main"),
            git("git@github.com:moby/buildkit.git", Some("main"), None)
        );
        let q = parsed("https://h/r.git?tag=v2&subdir=docs&keep-git-dir=true&submodules=false");
        assert_eq!(q.reference.as_deref(), Some("refs/tags/v2"));
        assert_eq!(q.subdir.as_deref(), Some("docs"));
        assert_eq!((q.keep_git_dir, q.submodules), (Some(true), Some(false)));
        let c = parsed("https://h/r.git?checksum=abcdef1");
        assert_eq!(c.reference.as_deref(), Some("abcdef1"));
        for bad in [
            "https://h/r.git?tag=a&branch=b",
            "https://h/r.git?nope=1",
            "https://h/r.git?ref=",
            "https://h/r.git?ref=b#a",
        ] {
            if let Some(Ok(g)) = parse(bad) {
                panic!("{bad} parsed as {g:?}");
            }
        }
    }
}
