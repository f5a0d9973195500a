//! The one way a layer enters the content store: a deterministic tar
//! stream, hashed as written (its diff_id), then stored either
//! gzip-compressed on every core (hashed again as stored: its digest) or
//! as it is (its digest is its diff_id). The differ and the synthetic
//! layers of `image` both write through it, so every layer rbuild makes
//! is compressed the same way, and [`compressed`] turns a plain layer
//! into the very blob a gzip write would have made.
//!
//! Step layers are stored plain: a build that only tags its image never
//! pays for gzip (500 MB of incompressible context cost 4 s of an 11 s
//! build), and an output that ships the image (a push, an OCI layout, a
//! docker archive) compresses each layer once, remembered by diff_id.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{BlobWriter, ContentStore, LayerError};
use crate::blob::pgzip::ParallelGzip;
use crate::blob::{Digest, HashingWriter, LayerBlob};

/// gzip level of stored layers: docker's and BuildKit's default.
const GZIP_LEVEL: u32 = 6;

/// How a layer's tar is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (level 6, in 1 MiB blocks on every core): what registries and
    /// image files carry.
    #[default]
    Gzip,
    /// The tar as it is: the blob's digest is its diff_id.
    None,
}

/// Where a layer's tar bytes go on their way into the store.
pub enum LayerSink {
    /// Through the parallel gzip compressor.
    Gzip(ParallelGzip<BlobWriter>),
    /// Straight into the blob.
    Plain(BlobWriter),
}

impl Write for LayerSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LayerSink::Gzip(gz) => gz.write(buf),
            LayerSink::Plain(blob) => blob.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LayerSink::Gzip(gz) => gz.flush(),
            LayerSink::Plain(blob) => blob.flush(),
        }
    }
}

impl LayerSink {
    fn new(store: &ContentStore, compression: Compression) -> Result<LayerSink, LayerError> {
        Ok(match compression {
            Compression::Gzip => LayerSink::Gzip(ParallelGzip::new(store.writer()?, GZIP_LEVEL)),
            // The tar's own hash (its diff_id) is the blob's digest.
            Compression::None => LayerSink::Plain(store.writer_hashed_by_caller()?),
        })
    }

    /// Lands the blob (the gzip trailer written first), the tar's sha256
    /// being `diff_id`; its digest and size.
    fn commit(self, diff_id: &Digest) -> Result<(Digest, u64), LayerError> {
        Ok(match self {
            LayerSink::Gzip(gz) => gz.finish()?.commit(None)?,
            LayerSink::Plain(blob) => blob.commit_hashed(diff_id.clone())?,
        })
    }
}

/// A layer's tar stream on its way into the store.
pub type LayerTar = tar::Builder<Offloaded<HashingWriter<LayerSink>>>;

/// Bytes handed to the offload thread at a time.
const OFFLOAD_CHUNK: usize = 1 << 20;

/// A writer whose writes happen on a thread of their own: the caller's
/// thread fills 1 MiB buffers, the thread hashes and stores them. A
/// layer's tar is read from files on one core while it is hashed and
/// written on the other (a 500 MB layer: 3.3 s on one thread).
pub struct Offloaded<W: Write + Send + 'static> {
    buf: Vec<u8>,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> Offloaded<W> {
    /// Writes into `inner` from a new thread; at most a few chunks wait.
    pub fn new(mut inner: W) -> io::Result<Offloaded<W>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let worker = std::thread::Builder::new()
            .name("layer-writer".into())
            .spawn(move || {
                for chunk in rx {
                    inner.write_all(&chunk)?;
                }
                Ok(inner)
            })?;
        Ok(Offloaded {
            buf: Vec::with_capacity(OFFLOAD_CHUNK),
            chunks: Some(tx),
            worker: Some(worker),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(OFFLOAD_CHUNK));
        let sent = self.chunks.as_ref().map(|tx| tx.send(chunk));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread ended early: its error is the one to report.
            _ => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the layer writer thread stopped"))),
        }
    }

    fn join(&mut self) -> io::Result<W> {
        self.chunks = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the layer writer thread panicked")),
            None => Err(io::Error::other("the layer writer thread already ended")),
        }
    }

    /// Everything written, and the inner writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.send()?;
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for Offloaded<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = OFFLOAD_CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == OFFLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands over what is buffered; the thread writes it in its own time.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl<W: Write + Send + 'static> Drop for Offloaded<W> {
    fn drop(&mut self) {
        // An abandoned layer: let the thread drain and drop its writer
        // (the blob's temp file goes with it).
        self.chunks = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A new layer stream in `store`, in deterministic header mode, stored
/// with `compression`, adding the tar bytes it writes to `counter` when
/// one is given.
pub fn start_layer(
    store: &ContentStore,
    counter: Option<Arc<AtomicU64>>,
    compression: Compression,
) -> Result<LayerTar, LayerError> {
    let sink = LayerSink::new(store, compression)?;
    let hashing = HashingWriter::new(sink).counting(counter);
    let mut tar = tar::Builder::new(Offloaded::new(hashing)?);
    tar.mode(tar::HeaderMode::Deterministic);
    Ok(tar)
}

/// Ends the tar stream, flushes the compressor and commits the blob
/// under its digest; what the store then holds, described.
pub fn finish_layer(tar: LayerTar) -> Result<LayerBlob, LayerError> {
    let (sink, diff_id) = tar.into_inner()?.finish()?.finish();
    let diff_id = Digest::from_sha256(diff_id);
    let (digest, size) = sink.commit(&diff_id)?;
    Ok(LayerBlob {
        digest,
        size,
        diff_id,
    })
}

/// Where the gzip blob made from the plain layer `diff_id` is recorded.
fn gzip_record(store: &ContentStore, diff_id: &Digest) -> PathBuf {
    store
        .root()
        .join("gzip")
        .join(format!("{}.json", diff_id.hex()))
}

/// The gzip layer a record names, if it reads as one.
fn read_gzip_record(record: &std::path::Path) -> Option<LayerBlob> {
    let bytes = std::fs::read(record).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the gzip records whose gzip blob the store no longer has (GC
/// took it); returns how many went. A record is only a shortcut, so one
/// read while it goes is merely a miss.
pub fn forget_dangling_gzip(store: &ContentStore) -> usize {
    let Ok(records) = std::fs::read_dir(store.root().join("gzip")) else {
        return 0;
    };
    let mut gone = 0;
    for record in records.flatten() {
        let live = read_gzip_record(&record.path()).is_some_and(|gz| store.contains(&gz.digest));
        if !live && std::fs::remove_file(record.path()).is_ok() {
            gone += 1;
        }
    }
    gone
}

/// Counts the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    counter: Option<&'a AtomicU64>,
}

impl<R: io::Read> io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(counter) = self.counter {
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// `layer` as a gzip blob: itself when it is one; otherwise the blob made
/// from it before (remembered by diff_id, while the store still has it),
/// or one made now, byte for byte the blob [`start_layer`] with
/// [`Compression::Gzip`] would have written for the same tar. The plain
/// bytes compressed are added to `counter` (progress) when one is given.
pub fn compressed(
    store: &ContentStore,
    layer: &LayerBlob,
    counter: Option<&AtomicU64>,
) -> Result<LayerBlob, LayerError> {
    if !layer.is_uncompressed() {
        return Ok(layer.clone());
    }
    let record = gzip_record(store, &layer.diff_id);
    let known = read_gzip_record(&record)
        .filter(|gz| gz.diff_id == layer.diff_id && store.contains(&gz.digest));
    if let Some(gz) = known {
        return Ok(gz);
    }
    let mut sink = LayerSink::new(store, Compression::Gzip)?;
    let mut plain = Counted {
        inner: store.open_blob(&layer.digest)?,
        counter,
    };
    io::copy(&mut plain, &mut sink)?;
    let (digest, size) = sink.commit(&layer.diff_id)?;
    let gz = LayerBlob {
        digest,
        size,
        diff_id: layer.diff_id.clone(),
    };
    // Only a shortcut: without the record the next push compresses again.
    if let Some(dir) = record.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let json = serde_json::to_vec(&gz).map_err(io::Error::other)?;
    let _ = super::write_atomically(&record, &json);
    Ok(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tar stored both ways: a layer of a few files, one large
    /// enough to span several gzip blocks.
    fn layer(store: &ContentStore, compression: Compression) -> LayerBlob {
        let mut tar = start_layer(store, None, compression).unwrap();
        let big: Vec<u8> = (0..3 * crate::blob::pgzip::BLOCK + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for (name, data) in [("a", &b"first\n"[..]), ("big", &big[..]), ("z", &b""[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, data).unwrap();
        }
        finish_layer(tar).unwrap()
    }

    #[test]
    fn a_plain_layer_compresses_to_the_blob_an_inline_gzip_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let plain = layer(&store, Compression::None);
        assert!(plain.is_uncompressed());
        let inline = layer(&store, Compression::Gzip);
        assert!(!inline.is_uncompressed());
        assert_eq!(plain.diff_id, inline.diff_id);
        let counter = AtomicU64::new(0);
        let shipped = compressed(&store, &plain, Some(&counter)).unwrap();
        assert_eq!(counter.into_inner(), plain.size, "every plain byte counted");
        assert_eq!(shipped, inline, "the same bytes as gzip written inline");
        // Remembered by diff_id: the record names it, and a gzip layer is
        // its own compressed form.
        assert!(gzip_record(&store, &plain.diff_id).is_file());
        assert_eq!(compressed(&store, &plain, None).unwrap(), inline);
        assert_eq!(compressed(&store, &inline, None).unwrap(), inline);
        // A record whose blob is gone is compressed again, not trusted,
        // and GC's sweep forgets it; a live one stays.
        std::fs::remove_file(store.blob_path(&inline.digest)).unwrap();
        assert_eq!(forget_dangling_gzip(&store), 1);
        assert!(!gzip_record(&store, &plain.diff_id).exists());
        assert_eq!(compressed(&store, &plain, None).unwrap(), inline);
        assert!(store.contains(&inline.digest));
        assert_eq!(forget_dangling_gzip(&store), 0);
        assert!(gzip_record(&store, &plain.diff_id).is_file());
    }

    #[test]
    fn a_plain_blob_holds_the_bytes_its_digest_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let plain = layer(&store, Compression::None);
        let bytes = store.read(&plain.digest).unwrap();
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
        assert_eq!(Digest::from_sha256(hash), plain.digest);
        assert_eq!(bytes.len() as u64, plain.size);
    }

    /// Writes `total` bytes through `w` in pieces of odd sizes.
    fn feed(w: &mut impl Write, total: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
        let mut at = 0;
        for step in [1, 4095, OFFLOAD_CHUNK + 3, 17, 3 * OFFLOAD_CHUNK]
            .iter()
            .cycle()
        {
            if at == data.len() {
                break;
            }
            let end = (at + step).min(data.len());
            w.write_all(&data[at..end]).unwrap();
            at = end;
        }
        data
    }

    #[test]
    fn offloaded_writes_arrive_whole_and_in_order() {
        let mut w = Offloaded::new(Vec::new()).unwrap();
        let sent = feed(&mut w, 5 * OFFLOAD_CHUNK + 12345);
        w.flush().unwrap();
        assert_eq!(w.finish().unwrap(), sent);
    }

    /// Takes `left` bytes, then fails.
    struct FailsAfter {
        left: usize,
    }

    impl Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("disk full (test)"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_offloaded_writers_error_reaches_the_caller() {
        let mut w = Offloaded::new(FailsAfter {
            left: OFFLOAD_CHUNK + 10,
        })
        .unwrap();
        let data = vec![1u8; 16 * OFFLOAD_CHUNK];
        let written = w.write_all(&data).and_then(|()| w.finish().map(drop));
        let err = written.unwrap_err();
        assert!(err.to_string().contains("disk full (test)"), "{err}");
    }

    #[test]
    fn an_abandoned_offloaded_writer_ends_its_thread() {
        let mut w = Offloaded::new(Vec::new()).unwrap();
        feed(&mut w, 2 * OFFLOAD_CHUNK + 1);
        drop(w); // must return: the thread drains and ends
    }
}
