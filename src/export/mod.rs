//! Getting finished images out, every way a build can hand one over:
//! image files (an OCI layout, a `docker save` archive), the image's file
//! system (`type=local`, `type=tar`), a registry (`--push`), a Docker
//! daemon (`--load`, over its API socket), and kaniko's squash of the
//! build's layers (`--single-snapshot`).
//!
//! Owns the choice of writer per output and the progress of each; the
//! formats themselves are `image::layout`'s, the transport `registry`'s.
//! Knows nothing of how the image was built: callers turn these errors
//! into exit codes.

mod daemon;
mod fs;
mod squash;

use std::path::PathBuf;

pub use daemon::{default_docker_host, load_into_daemon, LoadError};
pub use fs::export_filesystem;
pub use squash::{squash, Squash};

use crate::cache::ContentStore;
use crate::image::layout::StoredImage;
use crate::image::reference::Reference;
use crate::progress::Event;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An image file or file system output could not be written at `path`.
    #[error("{}: {source}", path.display())]
    Output {
        /// The output's path.
        path: PathBuf,
        /// What failed (a layout, a layer, the file system).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The squash of `--single-snapshot` failed while `doing`.
    #[error("{doing}: {source}")]
    Squash {
        /// Which part of the squash.
        doing: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The push.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A plain layer could not be compressed for shipping.
    #[error("compressing the layers: {0}")]
    Compress(#[from] crate::image::layout::LayoutError),
}

impl ExportError {
    /// A failure writing the output at `path`.
    fn output<E>(path: &std::path::Path) -> impl FnOnce(E) -> ExportError + '_
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        move |e| ExportError::Output {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout: a tar file, or a directory with `tar=false`.
    Oci {
        /// Where it goes.
        dest: PathBuf,
        /// A tar file rather than a directory.
        tar: bool,
    },
    /// A `docker save` archive.
    Docker {
        /// The archive's path.
        dest: PathBuf,
    },
    /// The registry of every tag (as `--push`).
    Registry,
    /// The image's file system as a tar.
    Tar {
        /// The tar file's path.
        dest: PathBuf,
    },
    /// The image's file system written into a directory.
    Local {
        /// The directory.
        dest: PathBuf,
    },
}

impl Output {
    /// Whether the output carries the image itself, so its layers must be
    /// the compressed ones (a registry, image files; a file system output
    /// does not).
    pub fn ships_image(&self) -> bool {
        matches!(
            self,
            Output::Oci { .. } | Output::Docker { .. } | Output::Registry
        )
    }
}

/// Writes `image` (named `tags`) to every file output of `outputs`
/// (registry outputs are [`push`]'s).
pub fn write(
    store: &ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    outputs: &[Output],
) -> Result<(), ExportError> {
    use crate::image::layout;
    let shipped;
    let image = if outputs.iter().any(Output::ships_image) {
        shipped = layout::compressed_image(store, image, None)?;
        &shipped
    } else {
        image
    };
    let images = [(image, tags)];
    for output in outputs {
        let written = match output {
            Output::Oci { dest, tar: false } => layout::write_oci_layout_dir(store, dest, &images)
                .map_err(ExportError::output(dest)),
            Output::Oci { dest, tar: true } => layout::write_to_file(dest, |file| {
                layout::write_oci_layout_tar(store, file, &images)
            })
            .map_err(ExportError::output(dest)),
            Output::Docker { dest } => layout::write_to_file(dest, |file| {
                layout::write_docker_archive(store, file, &images)
            })
            .map_err(ExportError::output(dest)),
            Output::Tar { dest } => export_filesystem(store, image, dest, true),
            Output::Local { dest } => export_filesystem(store, image, dest, false),
            Output::Registry => Ok(()),
        };
        written?;
    }
    Ok(())
}

/// `--load`: `image` into the daemon at `host` as a `docker save`
/// archive; the daemon's lines become notes.
pub fn load(
    host: &str,
    store: &ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    log: &mut dyn FnMut(&Event),
) -> Result<(), LoadError> {
    let lines = load_into_daemon(host, |out| {
        crate::image::layout::write_docker_archive(store, out, &[(image, tags)])
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    for line in lines {
        log(&Event::Note(line));
    }
    Ok(())
}

/// `--push`: `image` to every tag's registry, with progress.
pub fn push(
    registry: crate::registry::RegistryOptions,
    store: &ContentStore,
    image: &StoredImage,
    tags: &[Reference],
    log: &mut dyn FnMut(&Event),
) -> Result<(), ExportError> {
    let image = &crate::image::layout::compressed_image(store, image, None)?;
    let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    crate::registry::blocking_client_with(registry).and_then(|(client, runtime)| {
        crate::progress::track(
            &format!("pushing {}", names.join(", ")),
            Some(image.size()),
            &client.stats.bytes_uploaded,
            log,
            || runtime.block_on(client.push(store, &image.manifest_digest, tags, None)),
        )
    })?;
    for tag in tags {
        log(&Event::Note(format!(
            "pushed {tag}@{}",
            image.manifest_digest
        )));
    }
    Ok(())
}
