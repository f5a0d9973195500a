//! The OCI distribution client: pull into the content store, push out of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;

use super::auth::{parse_challenge, Challenge, CredentialSource};
use crate::blob::Digest;
use crate::cache::ContentStore;
use crate::image::{media, Reference};

/// Registry errors. None of them carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an unexpected status.
    #[error("registry {registry}: {what} failed: HTTP {status}{detail}")]
    Status {
        /// Registry host.
        registry: String,
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's error text, if any.
        detail: String,
    },
    /// The registry could not be reached (after retries).
    #[error("registry {registry}: {what}: {message}")]
    Transport {
        /// Registry host.
        registry: String,
        /// What was being done.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// Authentication is required and failed or no credentials exist.
    #[error("registry {registry}: authentication failed: {message}")]
    Auth {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// Content did not match its digest, or a manifest was malformed.
    #[error("registry {registry}: {message}")]
    Content {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] crate::cache::StoreError),
    /// The client could not be made as configured (a CA certificate that
    /// cannot be read or is not PEM, the TLS back end).
    #[error("{0}")]
    Setup(String),
    /// The docker config or a credential helper failed.
    #[error(transparent)]
    Credentials(#[from] super::auth::CredentialError),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries reached over plain HTTP (besides localhost and loopback).
    pub insecure: Vec<String>,
    /// Attempts per request on 5xx, 429 and connection errors.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt.
    pub initial_backoff: Duration,
    /// Upload blobs larger than this in chunks (PATCH); None = monolithic.
    pub chunk_size: Option<u64>,
    /// Blobs transferred at once.
    pub concurrency: usize,
    /// Extra PEM CA certificates to trust (private registries' CAs).
    pub ca_certs: Vec<std::path::PathBuf>,
    /// Accept any TLS certificate (kaniko's `--skip-tls-verify`).
    pub skip_tls_verify: bool,
}

impl RegistryOptions {
    /// How long to wait after failed attempt `attempt` (1-based): the
    /// initial backoff, doubled each attempt.
    fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff * 2u32.saturating_pow(attempt - 1)
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            chunk_size: None,
            concurrency: 4,
            ca_certs: Vec::new(),
            skip_tls_verify: false,
        }
    }
}

/// What a client did, for tests and progress output.
#[derive(Debug, Default)]
pub struct TransferStats {
    /// Blobs uploaded.
    pub blobs_uploaded: AtomicU64,
    /// Blobs the registry already had.
    pub blobs_existing: AtomicU64,
    /// Blobs mounted from another repository.
    pub blobs_mounted: AtomicU64,
    /// Blobs downloaded.
    pub blobs_downloaded: AtomicU64,
    /// Blobs already in the content store on pull.
    pub blobs_cached: AtomicU64,
    /// Requests retried.
    pub retries: AtomicU64,
    /// Blob bytes sent (shared with the upload streams; progress bars).
    pub bytes_uploaded: Arc<AtomicU64>,
    /// Blob bytes received.
    pub bytes_downloaded: Arc<AtomicU64>,
}

impl TransferStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A pulled (or pushed) image: its manifest and the blobs it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest media type.
    pub media_type: String,
    /// Config digest.
    pub config_digest: Digest,
    /// Layer digests.
    pub layers: Vec<Digest>,
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A client for OCI distribution registries.
pub struct RegistryClient {
    http: reqwest::Client,
    options: RegistryOptions,
    credentials: CredentialSource,
    /// Authorization header per (registry, scope).
    auth_cache: Mutex<HashMap<(String, String), String>>,
    /// Counters.
    pub stats: TransferStats,
}

impl RegistryClient {
    /// A client using `credentials` and `options`.
    pub fn new(
        credentials: CredentialSource,
        options: RegistryOptions,
    ) -> Result<RegistryClient, RegistryError> {
        let setup = RegistryError::Setup;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60));
        for path in &options.ca_certs {
            let pem = std::fs::read(path)
                .map_err(|e| setup(format!("CA certificate {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("CA certificate {} is not PEM: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if options.skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot create the HTTP client: {e}")))?;
        Ok(RegistryClient {
            http,
            options,
            credentials,
            auth_cache: Mutex::new(HashMap::new()),
            stats: TransferStats::default(),
        })
    }

    fn base_url(&self, registry: &str) -> String {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        // Plain HTTP only where the user expects it: localhost, 127.0.0.1,
        // ::1, and registries named as insecure. Everything else is TLS.
        let plain = matches!(host, "localhost" | "127.0.0.1" | "[::1]")
            || self
                .options
                .insecure
                .iter()
                .any(|r| r == registry || r == host);
        let api_host = if registry == crate::image::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        format!("{}://{api_host}", if plain { "http" } else { "https" })
    }

    fn cached_auth(&self, registry: &str, scope: &str) -> Option<String> {
        self.auth_cache
            .lock()
            .ok()?
            .get(&(registry.to_string(), scope.to_string()))
            .cloned()
    }

    /// Answers a 401 challenge; caches the header for (registry, scope).
    async fn authenticate(
        &self,
        registry: &str,
        scope: &str,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        let auth_error = |message: String| RegistryError::Auth {
            registry: registry.to_string(),
            message,
        };
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| {
                auth_error(
                    "the registry sent 401 without a usable WWW-Authenticate challenge".into(),
                )
            })?;
        let credentials = self
            .credentials
            .get(registry)
            .map_err(|e| auth_error(e.to_string()))?;
        let header = match challenge {
            Challenge::Basic => match credentials {
                Some(c) => c.basic_header(),
                None => {
                    return Err(auth_error(format!(
                        "credentials are required; add them to $DOCKER_CONFIG/config.json (auths.\"{registry}\")"
                    )))
                }
            },
            Challenge::Bearer { realm, service, scope: asked } => {
                let mut request = self.http.get(&realm);
                let mut query = Vec::new();
                if let Some(service) = service {
                    query.push(("service", service));
                }
                // One `scope` parameter per scope, as the token protocol has it.
                let scopes = if scope.is_empty() { asked.unwrap_or_default() } else { scope.to_string() };
                query.extend(scopes.split(' ').filter(|s| !s.is_empty()).map(|s| ("scope", s.to_string())));
                request = request.query(&query);
                if let Some(c) = &credentials {
                    request = request.header(AUTHORIZATION, c.basic_header());
                }
                let response = request.send().await.map_err(|e| auth_error(format!("token request to {realm}: {}", describe(e))))?;
                if !response.status().is_success() {
                    return Err(auth_error(format!("token endpoint {realm} answered HTTP {}", response.status().as_u16())));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = body_within(response, MAX_TOKEN).await.map_err(|e| match e {
                    Body::Transport(e) => auth_error(format!("token request to {realm}: {}", describe(e))),
                    Body::TooLarge => auth_error(format!("token endpoint {realm} sent over {} KiB", MAX_TOKEN >> 10)),
                })?;
                let token: Token = serde_json::from_slice(&body).map_err(|_| auth_error(format!("token endpoint {realm} sent no JSON token")))?;
                let token = token.token.or(token.access_token).ok_or_else(|| auth_error(format!("token endpoint {realm} sent no token")))?;
                format!("Bearer {token}")
            }
        };
        if let Ok(mut cache) = self.auth_cache.lock() {
            cache.insert((registry.to_string(), scope.to_string()), header);
        }
        Ok(())
    }

    /// Sends a request built by `build`, handling auth and retries.
    async fn send(
        &self,
        registry: &str,
        scope: &str,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build(&self.http);
            if let Some(auth) = self.cached_auth(registry, scope) {
                request = request.header(AUTHORIZATION, auth);
            }
            let outcome = request.send().await;
            let retry_after = match &outcome {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    self.authenticate(registry, scope, r.headers()).await?;
                    attempt -= 1;
                    continue;
                }
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    r.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(30)))
                }
                Ok(_) => return outcome.map_err(|_| unreachable!()),
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() => None,
                Err(_) => None,
            };
            if attempt >= self.options.max_attempts {
                return match outcome {
                    Ok(r) => Err(status_error(registry, what, r).await),
                    Err(e) => Err(RegistryError::Transport {
                        registry: registry.to_string(),
                        what: what.to_string(),
                        message: format!("{} (after {attempt} attempts)", describe(e)),
                    }),
                };
            }
            TransferStats::bump(&self.stats.retries);
            tokio::time::sleep(retry_after.unwrap_or(self.options.backoff(attempt))).await;
        }
    }

    async fn get_manifest(
        &self,
        reference: &Reference,
        target: &str,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let registry = &reference.registry;
        let url = format!(
            "{}/v2/{}/manifests/{target}",
            self.base_url(registry),
            reference.repository
        );
        let scope = format!("repository:{}:pull", reference.repository);
        let what = format!("GET manifest {}:{target}", reference.repository);
        let content_error = |message: String| RegistryError::Content {
            registry: registry.clone(),
            message,
        };
        // A body cut off midway is tried again, as a failed request is.
        let mut attempt = 1;
        let (bytes, media_type, header_digest) = loop {
            let response = self
                .send(registry, &scope, &what, |c| {
                    c.get(&url).header(ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            if !response.status().is_success() {
                return Err(status_error(registry, &what, response).await);
            }
            let (media_type, header_digest) = manifest_headers(&response);
            match body_within(response, MAX_MANIFEST).await {
                Ok(bytes) => break (bytes, media_type, header_digest),
                Err(Body::TooLarge) => {
                    return Err(content_error(format!(
                        "{what}: the manifest is over {} MiB, more than any real one",
                        MAX_MANIFEST >> 20
                    )))
                }
                Err(Body::Transport(e)) if attempt >= self.options.max_attempts => {
                    return Err(transport(registry, &what, e))
                }
                Err(Body::Transport(_)) => {
                    TransferStats::bump(&self.stats.retries);
                    tokio::time::sleep(self.options.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };
        let digest = Digest::of(&bytes);
        if let Ok(expected) = target.parse::<Digest>() {
            if expected != digest {
                return Err(content_error(format!(
                    "manifest {target} arrived with digest {digest}"
                )));
            }
        }
        if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != digest.as_str() {
                return Err(content_error(format!(
                    "manifest digest {digest} differs from Docker-Content-Digest {h}"
                )));
            }
        }
        Ok((bytes, media_type, digest))
    }

    /// Pulls `reference` for `os`/`architecture` into `store`. Blobs already
    /// in the store are not fetched; every blob's digest is verified.
    pub async fn pull(
        &self,
        store: &ContentStore,
        reference: &Reference,
        os: &str,
        architecture: &str,
    ) -> Result<ImageRef, RegistryError> {
        let registry = &reference.registry;
        let content_error = |message: String| RegistryError::Content {
            registry: registry.clone(),
            message,
        };
        let target = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        let (mut bytes, mut media_type, mut digest) = self.get_manifest(reference, &target).await?;
        if media_type == media::OCI_INDEX || media_type == media::DOCKER_MANIFEST_LIST {
            // serde_json's own error says where the JSON breaks (oci-spec's
            // says only "serde failed").
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| content_error(format!("invalid index: {e}")))?;
            let chosen = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == os && p.architecture().to_string() == architecture
                    })
                })
                .ok_or_else(|| {
                    content_error(format!("{reference} has no image for {os}/{architecture}"))
                })?;
            let child = chosen.digest().to_string();
            (bytes, media_type, digest) = self.get_manifest(reference, &child).await?;
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| content_error(format!("invalid manifest: {e}")))?;
        let mut blobs = vec![(
            manifest.config().digest().to_string(),
            manifest.config().size(),
        )];
        blobs.extend(
            manifest
                .layers()
                .iter()
                .map(|l| (l.digest().to_string(), l.size())),
        );
        let limit = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
        let fetches = blobs.iter().map(|(d, size)| {
            let limit = limit.clone();
            async move {
                let _permit = limit
                    .acquire()
                    .await
                    .map_err(|e| content_error(e.to_string()))?;
                let digest: Digest = d
                    .parse()
                    .map_err(|e: crate::blob::DigestError| content_error(e.to_string()))?;
                self.fetch_blob(store, reference, &digest, *size).await?;
                Ok::<Digest, RegistryError>(digest)
            }
        });
        let fetched: Vec<Digest> = futures_util::future::try_join_all(fetches).await?;
        // The manifest lands last, so a store never holds a manifest whose
        // blobs are missing.
        let mut writer = store.writer()?;
        std::io::Write::write_all(&mut writer, &bytes).map_err(|e| content_error(e.to_string()))?;
        writer.commit(Some((&digest, None)))?;
        Ok(ImageRef {
            manifest_digest: digest,
            media_type,
            config_digest: fetched[0].clone(),
            layers: fetched[1..].to_vec(),
        })
    }

    async fn fetch_blob(
        &self,
        store: &ContentStore,
        reference: &Reference,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        if store.contains(digest) {
            TransferStats::bump(&self.stats.blobs_cached);
            return Ok(());
        }
        let registry = &reference.registry;
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base_url(registry),
            reference.repository
        );
        let scope = format!("repository:{}:pull", reference.repository);
        let what = format!("GET blob {digest}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self.send(registry, &scope, &what, |c| c.get(&url)).await?;
            if !response.status().is_success() {
                return Err(status_error(registry, &what, response).await);
            }
            // Hashing, writing and fsync run on a blocking thread, fed by a
            // bounded channel, so downloads do not stall the async workers.
            let writer = store.writer()?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
            let expected = (digest.clone(), size);
            let sink = tokio::task::spawn_blocking(move || {
                let mut writer = writer;
                while let Some(chunk) = rx.blocking_recv() {
                    std::io::Write::write_all(&mut writer, &chunk)?;
                }
                Ok::<_, std::io::Error>(writer)
            });
            let mut stream = response.bytes_stream();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        self.stats
                            .bytes_downloaded
                            .fetch_add(c.len() as u64, Ordering::Relaxed);
                        if tx.send(c).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let content_error = |message: String| RegistryError::Content {
                registry: registry.clone(),
                message,
            };
            let writer = sink
                .await
                .map_err(|e| content_error(e.to_string()))?
                .map_err(|e| content_error(e.to_string()))?;
            match failed {
                None => {
                    let (digest, size) = expected;
                    tokio::task::spawn_blocking(move || writer.commit(Some((&digest, Some(size)))))
                        .await
                        .map_err(|e| content_error(e.to_string()))??;
                    TransferStats::bump(&self.stats.blobs_downloaded);
                    return Ok(());
                }
                Some(e) if attempt < self.options.max_attempts => {
                    drop(e);
                    TransferStats::bump(&self.stats.retries);
                    tokio::time::sleep(self.options.backoff(attempt)).await;
                }
                Some(e) => return Err(transport(registry, &what, e)),
            }
        }
    }

    /// Pushes the image whose manifest is `manifest_digest` (in `store`) to
    /// every reference in `targets`. Blobs go first (skipped when present,
    /// mounted from `mount_from` when on the same registry); each manifest
    /// is PUT only after all its blobs are in place.
    pub async fn push(
        &self,
        store: &ContentStore,
        manifest_digest: &Digest,
        targets: &[Reference],
        mount_from: Option<&Reference>,
    ) -> Result<(), RegistryError> {
        let manifest_bytes = store.read(manifest_digest)?;
        let manifest = ImageManifest::from_reader(manifest_bytes.as_slice()).map_err(|e| {
            RegistryError::Content {
                registry: String::new(),
                message: format!("manifest {manifest_digest} in the store is invalid: {e}"),
            }
        })?;
        let media_type = manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        let mut blobs = vec![manifest.config().clone()];
        blobs.extend(manifest.layers().iter().cloned());
        let mut done_repos: Vec<(String, String)> = Vec::new();
        for target in targets {
            let key = (target.registry.clone(), target.repository.clone());
            if !done_repos.contains(&key) {
                let mount = mount_from
                    .filter(|m| m.registry == target.registry && m.repository != target.repository);
                let limit = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
                let uploads = blobs.iter().map(|b| {
                    let limit = limit.clone();
                    async move {
                        let _permit =
                            limit.acquire().await.map_err(|e| RegistryError::Content {
                                registry: target.registry.clone(),
                                message: e.to_string(),
                            })?;
                        let digest: Digest = b.digest().to_string().parse().map_err(
                            |e: crate::blob::DigestError| RegistryError::Content {
                                registry: target.registry.clone(),
                                message: e.to_string(),
                            },
                        )?;
                        self.push_blob(store, target, &digest, mount).await
                    }
                });
                futures_util::future::try_join_all(uploads).await?;
                done_repos.push(key);
            }
            crate::failpoint::hit("push-blobs-uploaded");
            let tag = target
                .tag
                .clone()
                .unwrap_or_else(|| manifest_digest.to_string());
            let url = format!(
                "{}/v2/{}/manifests/{tag}",
                self.base_url(&target.registry),
                target.repository
            );
            let scope = format!("repository:{}:pull,push", target.repository);
            let what = format!("PUT manifest {}:{tag}", target.repository);
            let response = self
                .send(&target.registry, &scope, &what, |c| {
                    c.put(&url)
                        .header(CONTENT_TYPE, media_type.as_str())
                        .body(manifest_bytes.clone())
                })
                .await?;
            if !response.status().is_success() {
                return Err(status_error(&target.registry, &what, response).await);
            }
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        store: &ContentStore,
        target: &Reference,
        digest: &Digest,
        mount_from: Option<&Reference>,
    ) -> Result<(), RegistryError> {
        let registry = &target.registry;
        let base = self.base_url(registry);
        let repo = &target.repository;
        let mut scope = format!("repository:{repo}:pull,push");
        let head_url = format!("{base}/v2/{repo}/blobs/{digest}");
        let head = self
            .send(registry, &scope, &format!("HEAD blob {digest}"), |c| {
                c.head(&head_url)
            })
            .await?;
        if head.status().is_success() {
            TransferStats::bump(&self.stats.blobs_existing);
            return Ok(());
        }
        let mut start_url = format!("{base}/v2/{repo}/blobs/uploads/");
        if let Some(from) = mount_from {
            start_url = format!("{start_url}?mount={digest}&from={}", from.repository);
            scope = format!(
                "repository:{repo}:pull,push repository:{}:pull",
                from.repository
            );
        }
        let what = format!("upload blob {digest} to {repo}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = self
                .send(registry, &scope, &what, |c| {
                    c.post(&start_url).header(CONTENT_LENGTH, 0)
                })
                .await?;
            if started.status() == StatusCode::CREATED && mount_from.is_some() {
                TransferStats::bump(&self.stats.blobs_mounted);
                return Ok(());
            }
            if started.status() != StatusCode::ACCEPTED {
                return Err(status_error(registry, &what, started).await);
            }
            let location =
                location_of(&base, started.headers()).ok_or_else(|| RegistryError::Content {
                    registry: registry.clone(),
                    message: "upload started without a Location header".to_string(),
                })?;
            match self
                .upload_to(store, registry, &scope, &what, &location, digest)
                .await
            {
                Ok(()) => {
                    TransferStats::bump(&self.stats.blobs_uploaded);
                    return Ok(());
                }
                // A broken upload session is restarted from scratch.
                Err(e)
                    if attempt < self.options.max_attempts
                        && matches!(
                            e,
                            RegistryError::Transport { .. }
                                | RegistryError::Status {
                                    status: 500..=599 | 404 | 416,
                                    ..
                                }
                        ) =>
                {
                    TransferStats::bump(&self.stats.retries);
                    tokio::time::sleep(self.options.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_to(
        &self,
        store: &ContentStore,
        registry: &str,
        scope: &str,
        what: &str,
        location: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let path = store.blob_path(digest);
        let size = std::fs::metadata(&path)
            .map_err(|e| RegistryError::Content {
                registry: registry.to_string(),
                message: format!("{}: {e}", path.display()),
            })?
            .len();
        let with_digest = |url: &str| {
            format!(
                "{url}{}digest={digest}",
                if url.contains('?') { '&' } else { '?' }
            )
        };
        let chunk = self.options.chunk_size.filter(|c| *c > 0 && size > *c);
        let Some(chunk) = chunk else {
            let url = with_digest(location);
            let response = self
                .send(registry, scope, what, |c| {
                    // The body streams from the blob file; a retry reopens it.
                    let body = match std::fs::File::open(&path) {
                        // 1 MiB reads: reqwest's own file body reads 4 KiB at a time.
                        Ok(file) => {
                            let sent = self.stats.bytes_uploaded.clone();
                            reqwest::Body::wrap_stream(
                                tokio_util::io::ReaderStream::with_capacity(
                                    tokio::fs::File::from_std(file),
                                    1 << 20,
                                )
                                .map(move |chunk| {
                                    if let Ok(c) = &chunk {
                                        sent.fetch_add(c.len() as u64, Ordering::Relaxed);
                                    }
                                    chunk
                                }),
                            )
                        }
                        Err(_) => reqwest::Body::from(Vec::new()),
                    };
                    c.request(Method::PUT, &url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(body)
                })
                .await?;
            return if response.status() == StatusCode::CREATED {
                Ok(())
            } else {
                Err(status_error(registry, what, response).await)
            };
        };
        let read_error = |e: std::io::Error| RegistryError::Content {
            registry: registry.to_string(),
            message: format!("{}: {e}", path.display()),
        };
        let mut file = std::fs::File::open(&path).map_err(read_error)?;
        let mut url = location.to_string();
        let base = self.base_url(registry);
        let mut start = 0u64;
        while start < size {
            let len = chunk.min(size - start);
            let mut piece = vec![0u8; len as usize];
            std::io::Read::read_exact(&mut file, &mut piece).map_err(read_error)?;
            let end = start + len - 1;
            let response = self
                .send(registry, scope, what, |c| {
                    c.request(Method::PATCH, &url)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("content-range", format!("{start}-{end}"))
                        .header(CONTENT_LENGTH, len)
                        .body(piece.clone())
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(status_error(registry, what, response).await);
            }
            self.stats.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
            url = location_of(&base, response.headers()).unwrap_or(url);
            start += len;
        }
        let final_url = with_digest(&url);
        let response = self
            .send(registry, scope, what, |c| {
                c.put(&final_url).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() == StatusCode::CREATED {
            Ok(())
        } else {
            Err(status_error(registry, what, response).await)
        }
    }
}

fn location_of(base: &str, headers: &HeaderMap) -> Option<String> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    Some(
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{base}{location}")
        },
    )
}

/// An error with its causes (e.g. "invalid peer certificate: UnknownIssuer"),
/// without the URL (which may carry a token in its query).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A manifest response's media type and `Docker-Content-Digest`.
fn manifest_headers(response: &reqwest::Response) -> (String, Option<String>) {
    let headers = response.headers();
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let digest = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (media_type, digest)
}

/// The most of a manifest or index rbuild reads (containerd's limit too):
/// real ones are a few KiB, so a registry cannot make rbuild buffer
/// without bound.
const MAX_MANIFEST: usize = 4 << 20;
/// The most of a token endpoint's answer rbuild reads.
const MAX_TOKEN: usize = 1 << 20;
/// The most of an error response's body rbuild reads for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Why a bounded body could not be read.
enum Body {
    /// The connection failed.
    Transport(reqwest::Error),
    /// It is longer than the limit.
    TooLarge,
}

/// The whole body of `response`, refused as soon as it (or its declared
/// length) passes `limit` bytes.
async fn body_within(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, Body> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Body::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Body::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `limit` bytes of `response`'s body (less when the
/// connection fails: this is for messages).
async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    body
}

fn transport(registry: &str, what: &str, e: reqwest::Error) -> RegistryError {
    RegistryError::Transport {
        registry: registry.to_string(),
        what: what.to_string(),
        message: describe(e),
    }
}

async fn status_error(registry: &str, what: &str, response: reqwest::Response) -> RegistryError {
    let status = response.status().as_u16();
    // An error body is only read for its message: a huge one is cut off.
    let body = String::from_utf8_lossy(&body_prefix(response, MAX_ERROR_BODY).await).into_owned();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errors = v.get("errors")?.as_array()?.clone();
            Some(
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").and_then(|c| c.as_str()).unwrap_or(""),
                            e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .map(|d| format!(": {}", d.trim()))
        .unwrap_or_default();
    RegistryError::Status {
        registry: registry.to_string(),
        what: what.to_string(),
        status,
        detail,
    }
}
