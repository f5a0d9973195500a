//! The content store: blobs addressed by their sha256 digest.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::blob::Digest;

/// Content store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("content store {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The bytes written do not hash to the digest the caller expected.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: Digest,
        /// The digest of what was written.
        actual: Digest,
    },
    /// The size written differs from the size the caller expected.
    #[error("content size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The size the caller asked for.
        expected: u64,
        /// The size written.
        actual: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the content store")]
    NotFound(Digest),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A directory of blobs, safe to share between processes.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(ContentStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(digest.clone()),
            _ => StoreError::Io { path, source: e },
        })
    }

    /// Reads a whole blob into memory (for manifests and configs).
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        Ok(bytes)
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let mut writer = self.writer()?;
        writer.write_all(bytes).map_err(io_err(&self.root))?;
        Ok(writer.commit(None)?.0)
    }

    /// Removes temp files in `ingest/` older than `age`: what a killed
    /// process left behind. Younger ones may belong to a running writer.
    pub fn clean_ingest(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let ingest = self.root.join("ingest");
        let mut removed = 0;
        for entry in fs::read_dir(&ingest).map_err(io_err(&ingest))? {
            let entry = entry.map_err(io_err(&ingest))?;
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts a streaming write. Nothing is visible under a digest until
    /// [`BlobWriter::commit`]; dropping the writer discards what was written.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let ingest = self.root.join("ingest");
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&ingest)
            .map_err(io_err(&ingest))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            size: 0,
        })
    }
}

/// A blob being written: hashes as it goes, lands atomically on commit.
pub struct BlobWriter {
    store: ContentStore,
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the digest (when `expected` is given), fsyncs, and moves the
    /// blob under its digest. Returns the digest and size.
    pub fn commit(
        self,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<(Digest, u64), StoreError> {
        let actual = Digest::from_sha256(self.hasher.finalize().into());
        if let Some((want, want_size)) = expected {
            if *want != actual {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual,
                });
            }
            if let Some(want_size) = want_size.filter(|s| *s != self.size) {
                return Err(StoreError::SizeMismatch {
                    digest: actual,
                    expected: want_size,
                    actual: self.size,
                });
            }
        }
        let root = self.store.root.clone();
        let temp = self
            .file
            .into_inner()
            .map_err(|e| io_err(&root)(e.into_error()))?;
        temp.as_file().sync_all().map_err(io_err(temp.path()))?;
        let target = self.store.blob_path(&actual);
        if !target.exists() {
            // Rename is atomic: readers see nothing or the whole blob. Two
            // processes committing the same digest both write identical bytes.
            temp.persist(&target).map_err(|e| StoreError::Io {
                path: target.clone(),
                source: e.error,
            })?;
            crate::failpoint::hit("blob-committed");
            if let Some(dir) = target.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(dir))?;
            }
        }
        Ok((actual, self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert!(store.contains(&d));
        assert_eq!(store.put(b"hello").unwrap(), d, "same bytes, same blob");
    }

    #[test]
    fn nothing_lands_before_commit_or_on_a_wrong_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let expected = Digest::of(b"complete");
        let mut w = store.writer().unwrap();
        w.write_all(b"compl").unwrap();
        assert!(!store.contains(&expected));
        drop(w);
        assert!(!store.contains(&expected));
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            0,
            "temp removed"
        );

        let mut w = store.writer().unwrap();
        w.write_all(b"corrupt").unwrap();
        let err = w.commit(Some((&expected, None))).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&expected));
        assert!(!store.contains(&Digest::of(b"corrupt")));

        let mut w = store.writer().unwrap();
        w.write_all(b"complete").unwrap();
        let err = w.commit(Some((&expected, Some(3)))).unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn a_killed_writer_leaves_no_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"half of a blob").unwrap();
        w.flush().unwrap();
        // SIGKILL runs no destructors: forget the writer mid-write.
        std::mem::forget(w);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            1,
            "only a temp file"
        );
        assert_eq!(
            store
                .clean_ingest(std::time::Duration::from_secs(3600))
                .unwrap(),
            0,
            "too young"
        );
        assert_eq!(store.clean_ingest(std::time::Duration::ZERO).unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_writers_of_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let digests: Vec<Digest> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| store.put(&data).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(digests.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(store.read(&digests[0]).unwrap(), data);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn missing_blob_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let err = store.read(&Digest::of(b"nope")).unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)));
    }
}
