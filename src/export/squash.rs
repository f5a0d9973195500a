//! kaniko's `--single-snapshot`: the layers a build made, squashed into
//! one on top of the base image's.

use std::path::Path;

use crate::cache::ContentStore;
use crate::image::config::{rootfs_of, ImageConfig};
use crate::image::layout::{store_image, StoredImage};
use crate::image::media::MediaTypes;
use crate::snapshot::SnapshotStore;

use super::ExportError;

/// A failure of the squash while `doing`.
fn failed<E>(doing: &'static str) -> impl FnOnce(E) -> ExportError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |e| ExportError::Squash {
        doing,
        source: e.into(),
    }
}

/// What a squash starts from: a built image and what only the build knows.
pub struct Squash<'a> {
    /// The store holding the image's blobs.
    pub store: &'a ContentStore,
    /// `$RBUILD_ROOT` (its snapshot store).
    pub storage: &'a Path,
    /// The image built.
    pub image: &'a StoredImage,
    /// Its config.
    pub config: &'a ImageConfig,
    /// How many of its layers are the base image's.
    pub base_layers: usize,
    /// Clamp the squashed layer's times.
    pub source_date_epoch: Option<i64>,
}

/// kaniko's `--single-snapshot`: the layers this build made become one
/// layer on top of the base image's. They are applied in order onto an
/// empty dir in overlay format (deletions as whiteout devices), which is
/// then diffed against the base like a RUN's upper dir.
pub fn squash(from: Squash<'_>) -> Result<StoredImage, ExportError> {
    let store = from.store;
    let snapshots = SnapshotStore::open(from.storage.join("snapshots"))
        .map_err(failed("opening the snapshots"))?;
    let (base, made) = from.image.layers.split_at(from.base_layers);
    if made.len() <= 1 {
        return Ok(from.image.clone());
    }
    let upper = tempfile::Builder::new()
        .prefix("squash-")
        .tempdir_in(snapshots.root().join("tmp"))
        .map_err(failed("a scratch dir"))?;
    for layer in made {
        let reader = crate::snapshot::store::open_layer(store, &layer.digest)
            .map_err(failed("reading a layer"))?;
        let apply = crate::snapshot::ApplyOptions {
            overlay_format: true,
            ..Default::default()
        };
        crate::snapshot::apply_layer(upper.path(), reader, &layer.digest.to_string(), apply)
            .map_err(failed("applying a layer"))?;
    }
    let names = snapshots
        .lowers(store, &crate::snapshot::Layer::all_ready(base))
        .map_err(failed("the base's snapshots"))?;
    let lowers = if base.is_empty() {
        Vec::new()
    } else {
        snapshots.lower_paths(&names)
    };
    let changes = crate::snapshot::diff::overlay_changes(
        upper.path(),
        &lowers,
        crate::snapshot::diff::OpaqueXattr::Either,
    )
    .map_err(failed("the diff"))?;
    let layer = crate::snapshot::diff::write_layer(
        store,
        &changes,
        crate::snapshot::diff::LayerOptions {
            source_date_epoch: from.source_date_epoch,
            id_map: None,
            compression: Default::default(),
        },
        None,
    )
    .map_err(failed("writing the layer"))?;
    let mut layers = base.to_vec();
    layers.push(layer);
    let mut config = from.config.clone();
    // One history entry keeps the layer: the build's last one that had a
    // layer; the others become empty.
    let made_entries: Vec<usize> = config
        .history
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.empty_layer().unwrap_or(false))
        .map(|(i, _)| i)
        .skip(base.len())
        .collect();
    if let Some((&last, rest)) = made_entries.split_last() {
        for &i in rest {
            config.history[i].set_empty_layer(Some(true));
        }
        config.history[last].set_empty_layer(None);
    }
    config.rootfs = rootfs_of(&layers).map_err(failed("the config's rootfs"))?;
    store_image(store, &config, &layers, MediaTypes::Oci).map_err(failed("storing the image"))
}
