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
        let blob = store.writer()?;
        Ok(match compression {
            Compression::Gzip => LayerSink::Gzip(ParallelGzip::new(blob, GZIP_LEVEL)),
            Compression::None => LayerSink::Plain(blob),
        })
    }

    /// The blob, with everything written (the gzip trailer too).
    fn finish(self) -> io::Result<BlobWriter> {
        match self {
            LayerSink::Gzip(gz) => gz.finish(),
            LayerSink::Plain(blob) => Ok(blob),
        }
    }
}

/// A layer's tar stream on its way into the store.
pub type LayerTar = tar::Builder<HashingWriter<LayerSink>>;

/// A new layer stream in `store`, in deterministic header mode, stored
/// with `compression`, adding the tar bytes it writes to `counter` when
/// one is given.
pub fn start_layer(
    store: &ContentStore,
    counter: Option<Arc<AtomicU64>>,
    compression: Compression,
) -> Result<LayerTar, LayerError> {
    let sink = LayerSink::new(store, compression)?;
    let mut tar = tar::Builder::new(HashingWriter::new(sink).counting(counter));
    tar.mode(tar::HeaderMode::Deterministic);
    Ok(tar)
}

/// Ends the tar stream, flushes the compressor and commits the blob
/// under its digest; what the store then holds, described.
pub fn finish_layer(tar: LayerTar) -> Result<LayerBlob, LayerError> {
    let (sink, diff_id) = tar.into_inner()?.finish();
    let (digest, size) = sink.finish()?.commit(None)?;
    Ok(LayerBlob {
        digest,
        size,
        diff_id: Digest::from_sha256(diff_id),
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
    let (digest, size) = sink.finish()?.commit(None)?;
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
}
