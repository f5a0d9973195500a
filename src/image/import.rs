//! Images from directories: a root file system on disk becomes a one-layer
//! image (what `debootstrap` makes, for instance), with the same
//! deterministic layer writer RUN steps use.

use std::path::Path;

use oci_spec::image::{ConfigBuilder, HistoryBuilder, RootFsBuilder};

use super::config::{ImageConfig, RunConfig};
use super::layout::{store_image, StoredImage};
use super::media::MediaTypes;
use crate::blob::LayerBlob;
use crate::cache::ContentStore;
use crate::snapshot::diff::{copy_changes, write_layer, LayerOptions, TreeState};

/// Stores `root` as a single-layer image with `env` and `cmd` as its
/// defaults and `created_by` as its one history entry.
pub fn image_from_dir(
    store: &ContentStore,
    root: &Path,
    env: &[&str],
    cmd: &[&str],
    created_by: &str,
) -> Result<StoredImage, String> {
    let changes = copy_changes(&TreeState::new(), root)
        .map_err(|e| format!("reading {}: {e}", root.display()))?;
    let layer =
        write_layer(store, &changes, LayerOptions::default(), None).map_err(|e| e.to_string())?;
    single_layer_image(store, layer, env, cmd, created_by, MediaTypes::Oci)
}

/// Stores an image of the one `layer`, with `env` and `cmd` as its
/// defaults, `created_by` as its history, and the epoch as its time (so the
/// same layer always gives the same image).
pub fn single_layer_image(
    store: &ContentStore,
    layer: LayerBlob,
    env: &[&str],
    cmd: &[&str],
    created_by: &str,
    media: MediaTypes,
) -> Result<StoredImage, String> {
    let oci = ConfigBuilder::default()
        .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| e.to_string())?;
    let config = ImageConfig {
        created: Some("1970-01-01T00:00:00Z".to_string()),
        author: None,
        architecture: super::config::host_architecture().to_string(),
        os: "linux".to_string(),
        variant: None,
        config: Some(RunConfig {
            oci,
            ..RunConfig::default()
        }),
        rootfs: RootFsBuilder::default()
            .typ("layers")
            .diff_ids(vec![layer.diff_id.to_string()])
            .build()
            .map_err(|e| e.to_string())?,
        history: vec![HistoryBuilder::default()
            .created("1970-01-01T00:00:00Z")
            .created_by(created_by.to_string())
            .build()
            .map_err(|e| e.to_string())?],
    };
    store_image(store, &config, &[layer], media).map_err(|e| e.to_string())
}
