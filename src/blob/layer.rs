//! The descriptor of a layer in the content store, and the writer that
//! hashes a layer's tar stream as it is written (its diff_id).

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use super::Digest;

/// A layer stored in the content store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerBlob {
    /// Digest of the blob as stored (compressed, or the tar itself).
    pub digest: Digest,
    /// Size of the blob as stored.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
}

impl LayerBlob {
    /// Whether the blob is the tar itself (stored uncompressed): then, and
    /// only then, its digest is its diff_id.
    pub fn is_uncompressed(&self) -> bool {
        self.digest == self.diff_id
    }
}

/// Hashes what passes through to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    /// Counts the bytes (progress display), when set.
    counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl<W> HashingWriter<W> {
    /// Passes everything to `inner`, hashing it.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            counter: None,
        }
    }

    /// The same, adding what it writes to `counter`.
    pub fn counting(
        mut self,
        counter: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    ) -> HashingWriter<W> {
        self.counter = counter;
        self
    }

    /// The inner writer and the sha256 of everything written.
    pub fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(counter) = &self.counter {
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
