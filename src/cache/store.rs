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
    /// A writer whose bytes the caller hashes was committed without the
    /// caller's digest (a bug in rbuild, never a user's input).
    #[error("a blob hashed by its writer's caller was committed without its digest")]
    Unhashed,
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
            hasher: Some(Sha256::new()),
            size: 0,
            written_back: 0,
        })
    }

    /// Starts a streaming write of bytes the caller hashes on their way
    /// in: a plain layer, whose tar is hashed for its diff_id, and whose
    /// digest is that same hash (hashing 500 MB twice cost 0.3 s of a
    /// step). Land it with [`BlobWriter::commit_hashed`].
    pub fn writer_hashed_by_caller(&self) -> Result<BlobWriter, StoreError> {
        let mut writer = self.writer()?;
        writer.hasher = None;
        Ok(writer)
    }
}

/// Bytes a blob writer lets pile up before it asks the kernel to start
/// writing them back, so the fsync at commit waits for the last few
/// megabytes, not for the whole blob (on a 500 MB layer, 1.4 s of
/// writeback that overlapped nothing; every 32 MiB instead of 8 left the
/// COPY step of bench/snapshots.sh's big-copy 1-2 s slower).
const WRITE_BACK_EVERY: u64 = 8 << 20;

/// The size below which a blob is never written back early: the fsync
/// at commit writes a small one at once anyway, and starting writeback
/// can wait behind the files a step just wrote (a 10 MB layer of 10,000
/// small files: 95 -> 120 ms with a start at 8 MiB).
const WRITE_BACK_FROM: u64 = 16 << 20;

/// A blob being written: hashes as it goes, lands atomically on commit.
pub struct BlobWriter {
    store: ContentStore,
    file: io::BufWriter<tempfile::NamedTempFile>,
    /// None when the caller hashes the bytes itself.
    hasher: Option<Sha256>,
    size: u64,
    /// How far writeback has been started.
    written_back: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        if self.size >= WRITE_BACK_FROM && self.size - self.written_back >= WRITE_BACK_EVERY {
            self.start_write_back()?;
        }
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

    /// Starts writeback of what reached the file since the last call,
    /// without waiting for it (`sync_file_range` with only
    /// `SYNC_FILE_RANGE_WRITE`); the fsync at commit still decides.
    fn start_write_back(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.file.flush()?;
        let from = self.written_back;
        let len = self.size - from;
        // SAFETY: a plain syscall on the temp file's open descriptor.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.get_ref().as_file().as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        // Only a hint: a file system without it (EINVAL, ENOSYS) is
        // written back by the fsync alone.
        let _ = rc;
        self.written_back = self.size;
        Ok(())
    }

    /// Verifies the digest (when `expected` is given), fsyncs, and moves the
    /// blob under its digest. Returns the digest and size.
    pub fn commit(
        mut self,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<(Digest, u64), StoreError> {
        let Some(hasher) = self.hasher.take() else {
            return Err(StoreError::Unhashed);
        };
        let actual = Digest::from_sha256(hasher.finalize().into());
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
        self.land(actual)
    }

    /// Lands a blob from [`ContentStore::writer_hashed_by_caller`] under
    /// `digest`, the caller's sha256 of exactly the bytes it wrote.
    pub fn commit_hashed(self, digest: Digest) -> Result<(Digest, u64), StoreError> {
        if self.hasher.is_some() {
            return self.commit(Some((&digest, None)));
        }
        self.land(digest)
    }

    /// Fsyncs and moves the blob under `actual`.
    fn land(self, actual: Digest) -> Result<(Digest, u64), StoreError> {
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
    fn a_blob_hashed_by_its_caller_lands_under_the_callers_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::from_sha256(Sha256::digest(b"hello").into());
        let mut w = store.writer_hashed_by_caller().unwrap();
        w.write_all(b"hello").unwrap();
        assert_eq!(
            w.commit_hashed(digest.clone()).unwrap(),
            (digest.clone(), 5)
        );
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        // Without the caller's digest there is nothing to land it under.
        let w = store.writer_hashed_by_caller().unwrap();
        assert!(matches!(w.commit(None), Err(StoreError::Unhashed)));
        // A writer that hashes checks a digest it is given.
        let mut w = store.writer().unwrap();
        w.write_all(b"other").unwrap();
        assert!(matches!(
            w.commit_hashed(digest),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn a_blob_past_the_write_back_mark_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(WRITE_BACK_FROM + 2 * WRITE_BACK_EVERY + 12345) as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = store.writer().unwrap();
        for piece in data.chunks(1 << 20 | 7) {
            w.write_all(piece).unwrap();
        }
        let (digest, size) = w.commit(None).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(store.read(&digest).unwrap(), data);
    }

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
