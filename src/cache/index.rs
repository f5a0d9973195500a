//! The cache index: step cache key → what the step produced (a layer, or
//! nothing) and when, one small JSON file per key under
//! `$RBUILD_ROOT/cache/`.
//!
//! Entries are written to a temporary file, fsynced and renamed, and only
//! after the layer blob they name is committed to the content store: a
//! build killed at any point leaves every finished step findable and no
//! entry pointing at a missing blob. Several rbuild processes can share the
//! index: keys are content addresses, so two writers of one key write the
//! same meaning and the last rename wins harmlessly.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ContentStore;
use crate::blob::Digest;
use crate::blob::LayerBlob;

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The layer, or None when the step changed nothing.
    pub layer: Option<LayerBlob>,
    /// When the step ran (RFC 3339), reused for the history entry so a
    /// fully cached rebuild gives the same image.
    pub created: String,
}

/// The index directory.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
}

impl CacheIndex {
    /// Opens (creating) the index under `root` (`$RBUILD_ROOT`).
    pub fn open(root: &Path) -> std::io::Result<CacheIndex> {
        let dir = root.join("cache");
        std::fs::create_dir_all(&dir)?;
        Ok(CacheIndex { dir })
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The entry for `key`, if there is one whose layer is still in
    /// `store`; a damaged or dangling entry reads as a miss.
    pub fn get(&self, key: &Digest, store: &ContentStore) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let entry: CacheEntry = serde_json::from_slice(&bytes).ok()?;
        if let Some(layer) = &entry.layer {
            if !store.contains(&layer.digest) {
                return None;
            }
        }
        // Last use, for pruning by age: the file's mtime.
        let _ = std::fs::File::options()
            .append(true)
            .open(self.path(key))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some(entry)
    }

    /// Records `entry` for `key` atomically.
    pub fn put(&self, key: &Digest, entry: &CacheEntry) -> std::io::Result<()> {
        let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        super::write_atomically(&self.path(key), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_dangling_layers_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let index = CacheIndex::open(dir.path()).unwrap();
        let blob = store.put(b"layer bytes").unwrap();
        let key = Digest::of(b"key");
        assert_eq!(index.get(&key, &store), None);
        let entry = CacheEntry {
            layer: Some(LayerBlob {
                digest: blob,
                size: 11,
                diff_id: Digest::of(b"tar"),
            }),
            created: "2024-01-01T00:00:00Z".into(),
        };
        index.put(&key, &entry).unwrap();
        assert_eq!(index.get(&key, &store), Some(entry.clone()));
        let dangling = Digest::of(b"other key");
        let mut missing = entry;
        missing.layer.as_mut().unwrap().digest = Digest::of(b"not stored");
        index.put(&dangling, &missing).unwrap();
        assert_eq!(
            index.get(&dangling, &store),
            None,
            "a missing blob is a miss"
        );
        std::fs::write(index.path(&dangling), b"{torn").unwrap();
        assert_eq!(
            index.get(&dangling, &store),
            None,
            "a damaged entry is a miss"
        );
    }
}
