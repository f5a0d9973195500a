//! Pulling and pushing images over the OCI distribution API.
//!
//! Written on `reqwest` (rustls) and `tokio` rather than wrapping
//! `oci-client`: that crate's cross-repository mount fails on registries that
//! check token scopes, and it has no retries and a fixed chunk size, so a
//! wrapper would have replaced most of it. This module owns HTTP, auth and
//! retries; blobs go to and come from [`crate::cache::ContentStore`], and it
//! knows nothing of Dockerfiles or builds.

pub mod auth;
mod client;

pub use auth::{CredentialSource, Credentials};
pub use client::{ImageRef, RegistryClient, RegistryError, RegistryOptions, TransferStats};
