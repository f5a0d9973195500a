//! Storage under `$RBUILD_ROOT`: the content store of blobs (and, later,
//! the cache index and snapshots).
//!
//! The content store is OCI-layout compatible (`blobs/sha256/<hex>`). A blob
//! only ever appears under its digest after its bytes were hashed, checked
//! and fsynced, so a crash or a kill at any point leaves either no blob or
//! the right one. It knows bytes and digests, nothing about images or
//! Dockerfiles.

mod store;

pub use store::{BlobWriter, ContentStore, StoreError};
