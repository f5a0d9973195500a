//! Content-addressed blob primitives the rest of the crate builds on:
//! sha256 digests, the descriptor of a stored layer, the writer that hashes
//! a layer's tar stream, and deterministic parallel gzip.
//!
//! The leaf of the module graph: it uses nothing else of the crate, so
//! the content store, snapshots and images can all depend on it without
//! depending on each other (`tests/layering.rs` checks this).

mod digest;
mod layer;
pub mod pgzip;

pub use digest::{Digest, DigestError};
pub use layer::{HashingWriter, LayerBlob};
