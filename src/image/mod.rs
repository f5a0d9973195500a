//! OCI image model: digests, references, configs, manifests, and the
//! canonical JSON that gives them stable digests; plus writing images as
//! an OCI layout or a docker-archive.
//!
//! Owns the shape of images, not how they are built or transported: layer
//! contents come from the snapshot/build side, transport from `registry`.
//! Blobs live in [`crate::cache::ContentStore`].

pub mod busybox;
pub mod canonical;
pub mod config;
mod digest;
pub mod import;
pub mod layer;
pub mod layout;
pub mod local;
pub mod media;
pub mod pgzip;
pub mod reference;

pub use config::{HealthConfig, ImageConfig, RunConfig};
pub use digest::{Digest, DigestError};
pub use reference::Reference;
