//! The one way a layer enters the content store: a deterministic tar
//! stream, hashed as written (its diff_id), gzip-compressed on every core
//! and hashed again as stored (its digest). The differ and the synthetic
//! layers of `image` both write through it, so every layer rbuild makes is
//! compressed the same way.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{BlobWriter, ContentStore, LayerError};
use crate::blob::pgzip::ParallelGzip;
use crate::blob::{Digest, HashingWriter, LayerBlob};

/// gzip level of stored layers: docker's and BuildKit's default.
const GZIP_LEVEL: u32 = 6;

/// A layer's tar stream on its way into the store.
pub type LayerTar = tar::Builder<HashingWriter<ParallelGzip<BlobWriter>>>;

/// A new layer stream in `store`, in deterministic header mode, adding
/// the tar bytes it writes to `counter` when one is given.
pub fn start_layer(
    store: &ContentStore,
    counter: Option<Arc<AtomicU64>>,
) -> Result<LayerTar, LayerError> {
    let gz = ParallelGzip::new(store.writer()?, GZIP_LEVEL);
    let mut tar = tar::Builder::new(HashingWriter::new(gz).counting(counter));
    tar.mode(tar::HeaderMode::Deterministic);
    Ok(tar)
}

/// Ends the tar stream, flushes the compressor and commits the blob
/// under its digest; what the store then holds, described.
pub fn finish_layer(tar: LayerTar) -> Result<LayerBlob, LayerError> {
    let (gz, diff_id) = tar.into_inner()?.finish();
    let (digest, size) = gz.finish()?.commit(None)?;
    Ok(LayerBlob {
        digest,
        size,
        diff_id: Digest::from_sha256(diff_id),
    })
}
