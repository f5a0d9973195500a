//! Getting finished images out: into a Docker-Engine-API daemon
//! (`--load`). Registry pushes live in `registry`, files in `image::layout`.
//!
//! Owns talking to the daemon's socket; knows nothing of how the image was
//! built.

mod daemon;

pub use daemon::{default_docker_host, load_into_daemon, LoadError};
