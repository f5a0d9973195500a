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
/// `~/.local/share/rbuild` (`$XDG_DATA_HOME/rbuild`) for everyone else.
pub fn default_root() -> std::path::PathBuf {
    if let Some(root) = std::env::var_os("RBUILD_ROOT").filter(|r| !r.is_empty()) {
        return root.into();
    }
    if rustix::process::geteuid().is_root() {
        return "/var/lib/rbuild".into();
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(data).join("rbuild");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    std::path::PathBuf::from(home).join(".local/share/rbuild")
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
