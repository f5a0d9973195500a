//! Media types rbuild reads and writes.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Which family of media types to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTypes {
    /// OCI image-spec media types (the default).
    #[default]
    Oci,
    /// Docker v2 schema 2 media types.
    Docker,
}

impl MediaTypes {
    /// The manifest media type.
    pub fn manifest(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_MANIFEST,
            MediaTypes::Docker => DOCKER_MANIFEST,
        }
    }

    /// The config media type.
    pub fn config(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_CONFIG,
            MediaTypes::Docker => DOCKER_CONFIG,
        }
    }

    /// The gzip layer media type.
    pub fn layer_gzip(self) -> &'static str {
        match self {
            MediaTypes::Oci => OCI_LAYER_GZIP,
            MediaTypes::Docker => DOCKER_LAYER_GZIP,
        }
    }

    /// The media type of `layer` as stored: gzip, or a plain tar.
    pub fn layer_of(self, layer: &crate::blob::LayerBlob) -> &'static str {
        match (self, layer.is_uncompressed()) {
            (_, false) => self.layer_gzip(),
            (MediaTypes::Oci, true) => OCI_LAYER_TAR,
            (MediaTypes::Docker, true) => DOCKER_LAYER_TAR,
        }
    }

    /// The family of a manifest media type (OCI unless it is Docker's).
    pub fn of_manifest(media_type: &str) -> MediaTypes {
        if media_type == DOCKER_MANIFEST {
            MediaTypes::Docker
        } else {
            MediaTypes::Oci
        }
    }
}
