//! Storage under `$RBUILD_ROOT`: the content store of blobs (and, later,
//! the cache index and snapshots).
//!
//! The content store is OCI-layout compatible (`blobs/sha256/<hex>`). A blob
//! only ever appears under its digest after its bytes were hashed, checked
//! and fsynced, so a crash or a kill at any point leaves either no blob or
//! the right one. It knows bytes and digests, nothing about images or
//! Dockerfiles.

pub mod index;
mod layer_tar;
mod store;

pub use index::{CacheEntry, CacheIndex};
pub use layer_tar::{
    compressed, finish_layer, forget_dangling_gzip, start_layer, Compression, LayerSink, LayerTar,
};
pub use store::{BlobWriter, ContentStore, StoreError};

/// Layer writing errors.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Writing the tar stream failed.
    #[error("writing layer: {0}")]
    Io(#[from] std::io::Error),
    /// Storing the blob failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `$RBUILD_ROOT`, or `/var/lib/rbuild` for root, or
/// `~/.local/share/rbuild` (`$XDG_DATA_HOME/rbuild`) for everyone else;
/// where that cannot be made (a pod's read-only root file system, a
/// `$HOME` of `/` that the user cannot write), `$TMPDIR/rbuild-<uid>`
/// (`/tmp` by default).
pub fn default_root() -> std::path::PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let euid = rustix::process::geteuid().as_raw();
    if let Some(root) = env("RBUILD_ROOT") {
        return root.into();
    }
    let root = choose_root(
        euid,
        env("XDG_DATA_HOME").map(Into::into),
        env("HOME").map(Into::into),
        env("TMPDIR").map(Into::into),
        &|dir| {
            // The nearest existing ancestor decides whether dir can be made.
            let existing = dir.ancestors().find(|a| a.exists());
            existing.is_some_and(|a| {
                rustix::fs::access(
                    a,
                    rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
                )
                .is_ok()
            })
        },
    );
    // A shared /tmp: a root someone else made there (or a link to one) is
    // not ours to write into; a directory of our own is used instead.
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(&root) {
        Ok(m) if m.file_type().is_symlink() || m.uid() != euid => {
            let base = root.parent().unwrap_or(std::path::Path::new("/tmp"));
            tempfile::Builder::new()
                .prefix(&format!("rbuild-{euid}-"))
                .tempdir_in(base)
                .map(tempfile::TempDir::keep)
                .unwrap_or(root)
        }
        _ => root,
    }
}

/// [`default_root`]'s choice, from its environment and a test of whether
/// a directory can be made.
fn choose_root(
    euid: u32,
    xdg_data: Option<std::path::PathBuf>,
    home: Option<std::path::PathBuf>,
    tmpdir: Option<std::path::PathBuf>,
    can_make: &dyn Fn(&std::path::Path) -> bool,
) -> std::path::PathBuf {
    let usual = if euid == 0 {
        std::path::PathBuf::from("/var/lib/rbuild")
    } else if let Some(data) = xdg_data {
        data.join("rbuild")
    } else {
        home.unwrap_or_else(|| "/tmp".into())
            .join(".local/share/rbuild")
    };
    if can_make(&usual) {
        return usual;
    }
    tmpdir
        .unwrap_or_else(|| "/tmp".into())
        .join(format!("rbuild-{euid}"))
}

/// Writes `bytes` to `target` so that readers see the old file or the
/// whole new one, never a part: a temporary file beside it, fsynced, then
/// renamed over it.
pub(crate) fn write_atomically(target: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(std::path::Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod root_tests {
    use super::choose_root;
    use std::path::{Path, PathBuf};

    #[test]
    fn the_storage_root_falls_back_to_tmp_where_the_usual_one_cannot_be_made() {
        let anywhere = |_: &Path| true;
        let nowhere = |_: &Path| false;
        let p = PathBuf::from;
        assert_eq!(
            choose_root(0, None, None, None, &anywhere),
            p("/var/lib/rbuild")
        );
        // A pod's read-only root file system.
        assert_eq!(
            choose_root(0, None, None, None, &nowhere),
            p("/tmp/rbuild-0")
        );
        assert_eq!(
            choose_root(1000, None, Some(p("/home/u")), None, &anywhere),
            p("/home/u/.local/share/rbuild")
        );
        // $HOME is / (a uid with no passwd entry in a container).
        let only_tmp = |d: &Path| d.starts_with("/work");
        assert_eq!(
            choose_root(1000, None, Some(p("/")), Some(p("/work")), &only_tmp),
            p("/work/rbuild-1000")
        );
        assert_eq!(
            choose_root(1000, Some(p("/data")), Some(p("/")), None, &anywhere),
            p("/data/rbuild")
        );
    }
}
