//! [`ContextError`]: what can go wrong reading a tree COPY reads from, a
//! `.dockerignore`, a downloaded source or a git checkout. Kept apart so
//! that the builder can tell a user's mistake (a source the context does
//! not have, a bad pattern) from the machine's (git missing, a read that
//! failed) when it chooses the exit code.

use std::io;

/// A failure of the context module, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A literal source the tree does not have, or `.dockerignore` hides.
    #[error("\"{0}\": not found in the build context (or excluded by .dockerignore)")]
    NotFound(String),
    /// A source that names, or resolves to, a place outside the tree.
    #[error("{0}: a source outside the build context")]
    Outside(String),
    /// A wildcard pattern that does not compile.
    #[error("bad pattern {pattern:?}: {why}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `.dockerignore` line that is not a rule.
    #[error(".dockerignore line {line}: {why}")]
    Ignore {
        /// Its 1-based line.
        line: usize,
        /// What is wrong with it.
        why: Box<ContextError>,
    },
    /// `!` alone on a `.dockerignore` line.
    #[error("\"!\" alone")]
    BareExclamation,
    /// Reading the tree (or a file in it) failed.
    #[error("{path}: {source}")]
    Read {
        /// The path, as the user knows it.
        path: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A URL source could not be fetched, or its content is not what the
    /// Dockerfile says.
    #[error("{url}: {why}")]
    Download {
        /// The URL (credentials removed by the caller's redaction).
        url: String,
        /// What failed.
        why: String,
    },
    /// A git URL that rbuild cannot read (its `#ref:subdir` or query).
    #[error("{0}")]
    GitUrl(String),
    /// A git checkout that failed: git refused, or the ref is not there.
    #[error("{repo}: {why}")]
    Git {
        /// The repository as shown to the user.
        repo: String,
        /// What git (or the check after it) said.
        why: String,
    },
    /// `git` itself could not be run.
    #[error("{repo}: running git: {source} (install git)")]
    NoGit {
        /// The repository as shown to the user.
        repo: String,
        /// Why the process did not start.
        #[source]
        source: io::Error,
    },
}

impl ContextError {
    /// A read of `path` that failed with `source`.
    pub fn read(path: impl std::fmt::Display, source: impl Into<io::Error>) -> ContextError {
        ContextError::Read {
            path: path.to_string(),
            source: source.into(),
        }
    }

    /// A failed download of `url`.
    pub fn download(url: &str, why: impl std::fmt::Display) -> ContextError {
        ContextError::Download {
            url: url.to_string(),
            why: why.to_string(),
        }
    }

    /// Whether the machine, not the Dockerfile or its context, is to blame:
    /// git is not installed, or a read failed the way a disk or a process
    /// out of descriptors fails (EIO, ENOMEM, EMFILE, ENFILE), not the way
    /// a path the user gave does.
    pub fn is_environment(&self) -> bool {
        match self {
            ContextError::NoGit { .. } => true,
            ContextError::Read { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EIO | libc::ENOMEM | libc::EMFILE | libc::ENFILE)
            ),
            _ => false,
        }
    }
}
