//! OCI image model: digests, references, configs, manifests, and the
//! canonical JSON that gives them stable digests; plus writing images as
//! an OCI layout or a docker-archive.
//!
//! Owns the shape of images, not how they are built or transported: layer
//! contents come from the snapshot/build side, transport from `registry`.
//! Blobs live in [`crate::cache::ContentStore`]; digests and layer
//! descriptors are [`crate::blob`]'s.

pub mod busybox;
pub mod canonical;
pub mod config;
pub mod import;
pub mod layer;
pub mod layout;
pub mod local;
pub mod media;
pub mod reference;

pub use config::{HealthConfig, ImageConfig, RunConfig};
pub use reference::Reference;
