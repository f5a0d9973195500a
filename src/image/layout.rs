//! Images in the content store, and writing them out as an OCI image
//! layout (directory or tar) or a docker-archive tar for `docker load` /
//! `podman load`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType,
};

use super::canonical::to_canonical_json;
use super::config::ImageConfig;
use super::media::{self, MediaTypes};
use super::reference::{Reference, DOCKER_HUB};
use crate::blob::Digest;
use crate::blob::LayerBlob;
use crate::cache::{ContentStore, StoreError};

/// An image whose manifest, config and layers are all in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredImage {
    /// Digest of the manifest blob (the image's identity in a registry).
    pub manifest_digest: Digest,
    /// Size of the manifest blob.
    pub manifest_size: u64,
    /// The manifest's media type.
    pub media_type: String,
    /// Digest of the config blob (the image id for `docker images`).
    pub config_digest: Digest,
    /// Size of the config blob.
    pub config_size: u64,
    /// Layers, base first.
    pub layers: Vec<LayerBlob>,
}

impl StoredImage {
    /// Every blob the image is made of: manifest, config, layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> + '_ {
        [&self.manifest_digest, &self.config_digest]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }

    /// Their compressed size in all.
    pub fn size(&self) -> u64 {
        self.manifest_size + self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Whether all of them are in `store`.
    pub fn is_complete_in(&self, store: &ContentStore) -> bool {
        self.blobs().all(|d| store.contains(d))
    }
}

/// Image assembly and output errors.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest or config could not be encoded or decoded.
    #[error("image metadata: {0}")]
    Metadata(String),
    /// A layer could not be compressed for shipping.
    #[error(transparent)]
    Layer(#[from] crate::cache::LayerError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn meta<E: std::fmt::Display>(e: E) -> LayoutError {
    LayoutError::Metadata(e.to_string())
}

fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Result<Descriptor, LayoutError> {
    let digest = oci_spec::image::Digest::from_str(digest.as_str()).map_err(meta)?;
    Ok(Descriptor::new(MediaType::from(media_type), size, digest))
}

/// Stores `config` and a manifest for it and `layers`; returns the image.
pub fn store_image(
    store: &ContentStore,
    config: &ImageConfig,
    layers: &[LayerBlob],
    media: MediaTypes,
) -> Result<StoredImage, LayoutError> {
    let (config_bytes, _) = config.to_blob().map_err(meta)?;
    let config_digest = store.put(&config_bytes)?;
    store_manifest(
        store,
        (&config_digest, config_bytes.len() as u64),
        layers,
        media,
    )
}

/// Stores the manifest of the config blob `config` (digest, size) over
/// `layers`, each described by its media type as stored.
fn store_manifest(
    store: &ContentStore,
    (config_digest, config_size): (&Digest, u64),
    layers: &[LayerBlob],
    media: MediaTypes,
) -> Result<StoredImage, LayoutError> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(media.manifest()))
        .config(descriptor(media.config(), config_size, config_digest)?)
        .layers(
            layers
                .iter()
                .map(|l| descriptor(media.layer_of(l), l.size, &l.digest))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .build()
        .map_err(meta)?;
    let manifest_bytes = to_canonical_json(&manifest).map_err(meta)?;
    let manifest_digest = store.put(&manifest_bytes)?;
    Ok(StoredImage {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        media_type: media.manifest().to_string(),
        config_digest: config_digest.clone(),
        config_size,
        layers: layers.to_vec(),
    })
}

/// `image` as it ships: every layer stored plain (a step's, see
/// `cache::Compression`) replaced by its gzip blob, in a manifest of its
/// own over the same config (so the same image id). An image with no
/// plain layer is itself. The plain bytes compressed go to `counter`.
pub fn compressed_image(
    store: &ContentStore,
    image: &StoredImage,
    counter: Option<&std::sync::atomic::AtomicU64>,
) -> Result<StoredImage, LayoutError> {
    if !image.layers.iter().any(LayerBlob::is_uncompressed) {
        return Ok(image.clone());
    }
    let layers = image
        .layers
        .iter()
        .map(|l| crate::cache::compressed(store, l, counter))
        .collect::<Result<Vec<_>, _>>()?;
    store_manifest(
        store,
        (&image.config_digest, image.config_size),
        &layers,
        MediaTypes::of_manifest(&image.media_type),
    )
}

/// Every blob of `image`: manifest, config, layers.
fn image_blobs(store: &ContentStore, image: &StoredImage) -> Result<Vec<Digest>, LayoutError> {
    // Read the manifest back so that what is written is what is stored.
    let manifest =
        ImageManifest::from_reader(store.open_blob(&image.manifest_digest)?).map_err(meta)?;
    let mut blobs = vec![image.manifest_digest.clone()];
    for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
        blobs.push(d.digest().to_string().parse().map_err(meta)?);
    }
    Ok(blobs)
}

/// `registry/repo:tag` as Docker prints it (`busybox:latest`, `user/app:1`).
pub fn familiar_name(reference: &Reference) -> String {
    let full = reference
        .with_tag(reference.tag.as_deref().unwrap_or("latest"))
        .to_string();
    let short = full
        .strip_prefix(&format!("{DOCKER_HUB}/"))
        .unwrap_or(&full);
    short.strip_prefix("library/").unwrap_or(short).to_string()
}

fn index_json(images: &[(&StoredImage, &[Reference])]) -> Result<Vec<u8>, LayoutError> {
    let mut manifests = Vec::new();
    for (image, names) in images {
        let base = descriptor(
            &image.media_type,
            image.manifest_size,
            &image.manifest_digest,
        )?;
        if names.is_empty() {
            manifests.push(base.clone());
        }
        for name in names.iter() {
            let mut d = base.clone();
            let annotations: HashMap<String, String> = [
                ("io.containerd.image.name".to_string(), name.to_string()),
                (
                    "org.opencontainers.image.ref.name".to_string(),
                    name.tag.clone().unwrap_or_else(|| "latest".to_string()),
                ),
            ]
            .into();
            d.set_annotations(Some(annotations));
            manifests.push(d);
        }
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(media::OCI_INDEX))
        .manifests(manifests)
        .build()
        .map_err(meta)?;
    to_canonical_json(&index).map_err(meta)
}

const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes an OCI image layout directory holding `images`, each under the
/// given names (`org.opencontainers.image.ref.name` is the tag).
pub fn write_oci_layout_dir(
    store: &ContentStore,
    dir: &Path,
    images: &[(&StoredImage, &[Reference])],
) -> Result<(), LayoutError> {
    let blobs_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(io_at(&blobs_dir))?;
    for (image, _) in images {
        for digest in image_blobs(store, image)? {
            let target = blobs_dir.join(digest.hex());
            if target.exists() {
                continue;
            }
            let source = store.blob_path(&digest);
            // Blobs are immutable, so a hard link is as good as a copy.
            if fs::hard_link(&source, &target).is_err() {
                fs::copy(&source, &target).map_err(io_at(&target))?;
            }
        }
    }
    let layout = dir.join("oci-layout");
    fs::write(&layout, OCI_LAYOUT_FILE).map_err(io_at(&layout))?;
    let index = dir.join("index.json");
    fs::write(&index, index_json(images)?).map_err(io_at(&index))?;
    Ok(())
}

/// A deterministic tar of files (sorted paths, mtime 0, root-owned).
struct TarOut<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> TarOut<W> {
    fn new(out: W) -> TarOut<W> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        TarOut { tar }
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        self.tar.append_data(&mut h, path, io::empty())
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        self.tar.append_data(&mut h, path, data)
    }

    fn blob(&mut self, store: &ContentStore, digest: &Digest) -> Result<(), LayoutError> {
        let file = store.open_blob(digest)?;
        let len = file
            .metadata()
            .map_err(io_at(&store.blob_path(digest)))?
            .len();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(len);
        let path = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
        self.tar
            .append_data(&mut h, path, file)
            .map_err(io_at(&store.blob_path(digest)))
    }

    fn finish(self) -> io::Result<W> {
        self.tar.into_inner()
    }
}

fn unique_blobs(store: &ContentStore, images: &[&StoredImage]) -> Result<Vec<Digest>, LayoutError> {
    let mut all = std::collections::BTreeSet::new();
    for image in images {
        all.extend(image_blobs(store, image)?);
    }
    Ok(all.into_iter().collect())
}

fn tar_error(what: &'static str) -> impl Fn(io::Error) -> LayoutError {
    move |e| LayoutError::Io {
        path: what.to_string(),
        source: e,
    }
}

/// A tar holding `blobs/sha256/` with every blob of `images`.
fn tar_with_blobs<W: Write>(
    store: &ContentStore,
    out: W,
    images: &[(&StoredImage, &[Reference])],
    what: &'static str,
) -> Result<TarOut<W>, LayoutError> {
    let mut tar = TarOut::new(out);
    tar.dir("blobs/").map_err(tar_error(what))?;
    tar.dir("blobs/sha256/").map_err(tar_error(what))?;
    let stored: Vec<&StoredImage> = images.iter().map(|(i, _)| *i).collect();
    for digest in unique_blobs(store, &stored)? {
        tar.blob(store, &digest)?;
    }
    Ok(tar)
}

/// Writes an OCI image layout as a tar stream.
pub fn write_oci_layout_tar<W: Write>(
    store: &ContentStore,
    out: W,
    images: &[(&StoredImage, &[Reference])],
) -> Result<W, LayoutError> {
    let what = "oci layout tar";
    let mut tar = tar_with_blobs(store, out, images, what)?;
    tar.bytes("index.json", &index_json(images)?)
        .map_err(tar_error(what))?;
    tar.bytes("oci-layout", OCI_LAYOUT_FILE)
        .map_err(tar_error(what))?;
    tar.finish().map_err(tar_error(what))
}

/// Writes a docker-archive (`docker save` format: `manifest.json`,
/// `repositories`, blobs) as a tar stream.
pub fn write_docker_archive<W: Write>(
    store: &ContentStore,
    out: W,
    images: &[(&StoredImage, &[Reference])],
) -> Result<W, LayoutError> {
    let what = "docker archive";
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (image, names) in images {
        let tags: Vec<String> = names.iter().map(familiar_name).collect();
        for (name, reference) in tags.iter().zip(names.iter()) {
            let repo = name.rsplit_once(':').map_or(name.as_str(), |(r, _)| r);
            let tag = reference
                .tag
                .clone()
                .unwrap_or_else(|| "latest".to_string());
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(tag, image.config_digest.hex().to_string());
        }
        manifest.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", image.config_digest.hex()),
            "RepoTags": tags,
            "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }));
    }
    let mut tar = tar_with_blobs(store, out, images, what)?;
    let manifest_json = to_canonical_json(&manifest).map_err(meta)?;
    tar.bytes("manifest.json", &manifest_json)
        .map_err(tar_error(what))?;
    let repositories_json = to_canonical_json(&repositories).map_err(meta)?;
    tar.bytes("repositories", &repositories_json)
        .map_err(tar_error(what))?;
    tar.finish().map_err(tar_error(what))
}

/// Writes an OCI layout tar or docker archive to a file path.
pub fn write_to_file(
    path: &Path,
    write: impl FnOnce(File) -> Result<File, LayoutError>,
) -> Result<(), LayoutError> {
    let file = File::create(path).map_err(io_at(path))?;
    let file = write(file)?;
    file.sync_all().map_err(io_at(path))
}
