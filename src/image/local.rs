//! Images this machine has by name: what `rbuild build -t NAME` produced
//! (docker's local image store, without a daemon). `FROM NAME` finds them
//! before asking a registry, unless `--pull`.
//!
//! One small JSON file per name under `$RBUILD_ROOT/images`, written
//! atomically, so concurrent builds never see half a record. The blobs
//! stay in the content store; a record whose blobs are gone is ignored.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::layout::StoredImage;
use super::reference::Reference;
use crate::cache::ContentStore;

/// The named images under one storage root.
#[derive(Debug, Clone)]
pub struct LocalImages {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    name: String,
    image: StoredImage,
}

impl LocalImages {
    /// The store under `storage` (created on first write).
    pub fn open(storage: &Path) -> LocalImages {
        LocalImages {
            dir: storage.join("images"),
        }
    }

    fn path(&self, name: &Reference) -> PathBuf {
        let hex: String = Sha256::digest(name.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{hex}.json"))
    }

    /// The image recorded under `name`, if its blobs are all in `store`.
    pub fn get(&self, name: &Reference, store: &ContentStore) -> Option<StoredImage> {
        let bytes = std::fs::read(self.path(name)).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        let image = record.image;
        (record.name == name.to_string() && image.is_complete_in(store)).then_some(image)
    }

    /// Records `image` under `name`.
    pub fn put(&self, name: &Reference, image: &StoredImage) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let record = Record {
            name: name.to_string(),
            image: image.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        crate::cache::write_atomically(&self.path(name), &json)
    }

    /// Every recorded image (for garbage collection: their blobs stay).
    pub fn all(&self) -> Vec<StoredImage> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
            .map(|r| r.image)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_need_their_blobs() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let images = LocalImages::open(root.path());
        let busybox = crate::image::busybox::build_base(
            &store,
            Path::new("/bin/true"),
            crate::image::media::MediaTypes::Oci,
        )
        .unwrap();
        let name: Reference = "app:1.0".parse().unwrap();
        assert!(images.get(&name, &store).is_none());
        images.put(&name, &busybox).unwrap();
        assert_eq!(images.get(&name, &store), Some(busybox.clone()));
        assert!(images.get(&"app:2.0".parse().unwrap(), &store).is_none());
        assert_eq!(images.all().len(), 1);
        std::fs::remove_file(store.blob_path(&busybox.layers[0].digest)).unwrap();
        assert!(images.get(&name, &store).is_none());
    }
}
