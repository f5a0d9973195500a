//! rbuild: a daemonless, unprivileged Dockerfile build engine.
//!
//! The crate is laid out as the data flows (see DESIGN.md): [`parser`]
//! turns Dockerfile text into typed instructions; later stages (solver,
//! executor, cache, snapshots, image, registry) consume them. The `cli`
//! module is the only place that talks to the user.

#![warn(missing_docs)]

pub mod blob;
pub mod builder;
pub mod cache;
pub mod cli;
pub mod context;
pub mod executor;
pub mod export;
pub mod failpoint;
pub mod gc;
pub mod image;
pub mod openat;
pub mod parser;
pub mod progress;
pub mod redact;
pub mod registry;
pub mod scheduler;
pub mod snapshot;
pub mod solver;
pub mod units;
pub mod userns;
pub mod workers;
