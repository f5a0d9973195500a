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

/// A client with credentials from `$DOCKER_CONFIG` that reaches `insecure`
/// registries over plain HTTP, and a current-thread runtime to drive it
/// from synchronous code (the build's base pulls, the CLI's push).
pub fn blocking_client(
    insecure: &[String],
) -> Result<(RegistryClient, tokio::runtime::Runtime), RegistryError> {
    blocking_client_with(RegistryOptions {
        insecure: insecure.to_vec(),
        ..RegistryOptions::default()
    })
}

/// As [`blocking_client`], with every option given.
pub fn blocking_client_with(
    options: RegistryOptions,
) -> Result<(RegistryClient, tokio::runtime::Runtime), RegistryError> {
    let client = RegistryClient::new(CredentialSource::load(None)?, options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegistryError::Setup(format!("the runtime: {e}")))?;
    Ok((client, runtime))
}
