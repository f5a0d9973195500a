//! Root file systems from layers: applying layer tars onto directories
//! (the copy tier, and the inputs overlay snapshots are made from).
//!
//! Owns turning layer bytes into files safely: nothing a tar says can make
//! it write or link outside the target root. It knows layers and
//! directories, not registries or Dockerfiles.

mod apply;

pub use apply::{apply_gzip_layer, apply_layer, ApplyError, ApplyOptions, ApplyStats};
