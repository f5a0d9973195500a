//! Root file systems from layers and layers from root file systems:
//! applying layer tars onto directories, the store of extracted snapshots
//! that overlay mounts stack, and the differs that turn what a step changed
//! back into a deterministic layer; the build's snapshot back-end
//! ([`backend::StepSnapshots`]), through which steps run on overlay or
//! copy snapshots without knowing which, with the store's walk, usage and
//! removal ([`inventory`]) that collection uses: together, containerd's
//! snapshotter contract over the one layout.
//!
//! Owns turning layer bytes into files safely (nothing a tar says can make
//! it write or link outside the target root) and files into layer bytes. It
//! knows layers and directories, not registries, sandboxes or Dockerfiles.

mod apply;
pub mod backend;
pub mod diff;
pub mod inventory;
pub mod layer;
pub mod live;
pub mod store;
pub mod tree;

pub use apply::{apply_gzip_layer, apply_layer, ApplyError, ApplyOptions, ApplyStats};
pub use inventory::{Committed, Usage};
pub use layer::{Layer, LayerFailure, LayerPromise};
pub use store::{chain_ids, LentTree, SnapshotError, SnapshotStore, Workspace};
