//! Root file systems from layers and layers from root file systems:
//! applying layer tars onto directories, the store of extracted snapshots
//! that overlay mounts stack, and the differs that turn what a step changed
//! back into a deterministic layer.
//!
//! Owns turning layer bytes into files safely (nothing a tar says can make
//! it write or link outside the target root) and files into layer bytes. It
//! knows layers and directories, not registries, sandboxes or Dockerfiles.

mod apply;
pub mod diff;
pub mod store;

pub use apply::{apply_gzip_layer, apply_layer, ApplyError, ApplyOptions, ApplyStats};
pub use store::{chain_ids, SnapshotError, SnapshotStore, Workspace};
