//! The Source op and where bases come from: the local image store, a
//! registry, `scratch`, or (for `busybox` with no local image of that
//! name) Debian's busybox-static. The op itself only hands on the layers
//! of a base resolved while planning.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::shared::{How, OpResult, Shared};
use super::{BuildError, BuildOptions};
use crate::blob::LayerBlob;
use crate::cache::{CacheEntry, ContentStore};
use crate::image::busybox::build_base;
use crate::image::config::ImageConfig;
use crate::image::layout::StoredImage;
use crate::image::media::MediaTypes;
use crate::progress::Event;
use crate::scheduler::{self, Context, Inputs, Slot};
use crate::solver::{Base, Platform};

/// Why a base could not be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum BaseError {
    /// The name is no image reference: the Dockerfile's to fix.
    #[error("{name}: {source}")]
    Reference {
        /// The base as written.
        name: String,
        /// Why it does not parse.
        #[source]
        source: crate::image::reference::ReferenceError,
    },
    /// The pull failed (the registry, the network, credentials).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] crate::cache::StoreError),
    /// The image the registry or store holds is unusable.
    #[error("{name}: {why}")]
    Image {
        /// The base.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Debian's busybox-static could not be made into a base.
    #[error("busybox: {0}")]
    Busybox(String),
}

impl BaseError {
    /// Whether the machine (registry, network, store) failed rather than
    /// the Dockerfile.
    pub(super) fn is_environment(&self) -> bool {
        !matches!(self, BaseError::Reference { .. })
    }

    fn image(name: &str) -> impl FnOnce(serde_json::Error) -> BaseError + '_ {
        move |e| BaseError::Image {
            name: name.to_string(),
            why: e.to_string(),
        }
    }
}

/// A stage's base (an image or scratch) as a scheduler op.
pub(super) struct SourceOp {
    pub(super) shared: Arc<Shared>,
    pub(super) node: NodeIndex,
    pub(super) key: String,
}

impl SourceOp {
    fn layers(&self) -> Vec<crate::snapshot::Layer> {
        let (stage, _) = self.shared.graph().graph[self.node].uses[0];
        match &self.shared.stage(stage).base {
            Base::Image(name) => crate::snapshot::Layer::all_ready(&self.shared.bases[name].layers),
            _ => Vec::new(),
        }
    }
}

impl scheduler::Op for SourceOp {
    type Output = OpResult;
    type Hit = CacheEntry;
    type Error = BuildError;
    type Event = Event;

    fn key(&self) -> &str {
        &self.key
    }

    /// Bases were pulled while planning: handing them on costs nothing.
    fn acquire(&self) -> Slot {
        Slot::Free
    }

    fn reuse(
        &self,
        _: &CacheEntry,
        _: &Inputs<OpResult>,
        _: &Context<Event>,
    ) -> Result<OpResult, BuildError> {
        unreachable!("a source is never looked up")
    }

    fn exec(&self, _: &Inputs<OpResult>, _: &Context<Event>) -> Result<OpResult, BuildError> {
        Ok(OpResult {
            layers: self.layers(),
            created: self.shared.when.clone(),
            empty: true,
            how: How::Base,
        })
    }
}

/// The bases a plan names, resolved as the planner asks for them.
#[derive(Default)]
pub(super) struct Bases {
    pub(super) images: HashMap<String, StoredImage>,
}

impl Bases {
    /// The config of base `name` for `platform`: a base seen before, a
    /// local image (unless `--pull`), busybox, or a pull.
    pub(super) fn resolve(
        &mut self,
        options: &BuildOptions,
        store: &ContentStore,
        name: &str,
        platform: &Platform,
        log: &mut dyn FnMut(&Event),
    ) -> Result<ImageConfig, BaseError> {
        let local = (!options.pull)
            .then(|| name.parse::<crate::image::reference::Reference>().ok())
            .flatten()
            .and_then(|reference| {
                crate::image::local::LocalImages::open(&options.storage).get(&reference, store)
            });
        let base = if let Some(known) = self.images.get(name) {
            known.clone()
        } else if let Some(image) = local {
            image
        } else if name == "busybox" || name == "busybox:latest" {
            busybox_base(store, &options.storage, &options.busybox)?
        } else {
            let registry = crate::registry::RegistryOptions {
                insecure: options.insecure_registries.clone(),
                skip_tls_verify: options.skip_tls_verify,
                ca_certs: options.ca_certs.clone(),
                ..Default::default()
            };
            pull_base(store, name, platform, registry, log)?
        };
        let bytes = store.read(&base.config_digest)?;
        let config = ImageConfig::from_blob(&bytes).map_err(BaseError::image(name))?;
        self.images.insert(name.to_string(), base);
        Ok(config)
    }
}

/// Pulls a base image from its registry into the store (credentials from
/// `$DOCKER_CONFIG`; plain HTTP for loopback and `insecure` registries).
fn pull_base(
    store: &ContentStore,
    name: &str,
    platform: &Platform,
    registry: crate::registry::RegistryOptions,
    log: &mut dyn FnMut(&Event),
) -> Result<StoredImage, BaseError> {
    let reference: crate::image::reference::Reference =
        name.parse().map_err(|source| BaseError::Reference {
            name: name.to_string(),
            source,
        })?;
    let (client, runtime) = crate::registry::blocking_client_with(registry)?;
    let pulled = crate::progress::track(
        &format!("pulling {name}"),
        None,
        &client.stats.bytes_downloaded,
        log,
        || runtime.block_on(client.pull(store, &reference, &platform.os, &platform.architecture)),
    )?;
    let manifest_bytes = store.read(&pulled.manifest_digest)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(BaseError::image(name))?;
    let config_bytes = store.read(&pulled.config_digest)?;
    let config = ImageConfig::from_blob(&config_bytes).map_err(BaseError::image(name))?;
    let diff_ids = config.rootfs.diff_ids();
    let sizes: Vec<u64> = manifest["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .map(|l| l["size"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != pulled.layers.len() {
        return Err(BaseError::Image {
            name: name.to_string(),
            why: format!(
                "the config lists {} layers, the manifest {}",
                diff_ids.len(),
                pulled.layers.len()
            ),
        });
    }
    let layers = pulled
        .layers
        .iter()
        .zip(diff_ids)
        .zip(sizes.iter().chain(std::iter::repeat(&0)))
        .map(|((digest, diff_id), size)| {
            Ok(LayerBlob {
                digest: digest.clone(),
                size: *size,
                diff_id: diff_id.parse().map_err(|e| BaseError::Image {
                    name: name.to_string(),
                    why: format!("{e}"),
                })?,
            })
        })
        .collect::<Result<Vec<_>, BaseError>>()?;
    Ok(StoredImage {
        manifest_digest: pulled.manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        media_type: pulled.media_type,
        config_digest: pulled.config_digest,
        config_size: config_bytes.len() as u64,
        layers,
    })
}

/// The busybox base image, built once per busybox binary: a small record
/// keyed by the binary's inode, size and times finds the stored image again
/// (as long as its blobs are still in the store).
fn busybox_base(
    store: &ContentStore,
    storage: &std::path::Path,
    busybox: &std::path::Path,
) -> Result<StoredImage, BaseError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(busybox)
        .map_err(|e| BaseError::Busybox(format!("binary {}: {e}", busybox.display())))?;
    let stamp = format!(
        "{}:{}:{}:{}.{}",
        busybox.display(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let record = storage.join("busybox-base.json");
    if let Ok(bytes) = std::fs::read(&record) {
        if let Ok((seen, image)) = serde_json::from_slice::<(String, StoredImage)>(&bytes) {
            if seen == stamp && image.is_complete_in(store) {
                return Ok(image);
            }
        }
    }
    let busybox_failed = |e: &dyn std::fmt::Display| BaseError::Busybox(e.to_string());
    let image = build_base(store, busybox, MediaTypes::Oci).map_err(|e| busybox_failed(&e))?;
    let json = serde_json::to_vec(&(stamp, &image)).map_err(|e| busybox_failed(&e))?;
    crate::cache::write_atomically(&record, &json).map_err(|e| busybox_failed(&e))?;
    Ok(image)
}
