//! The image config blob, with Docker's fields kept in OCI images too.
//!
//! `oci-spec`'s `Config` covers the OCI fields; Docker adds `Healthcheck`,
//! `OnBuild`, `Shell` and `ArgsEscaped`, which BuildKit writes even under
//! OCI media types and which `docker run` honours. [`RunConfig`] embeds the
//! `oci-spec` struct and adds those, so nothing is lost in a round trip.

use oci_spec::image::{Config, History, RootFs};
use serde::{Deserialize, Serialize};

use super::canonical::canonical_with_digest;
use crate::blob::Digest;

/// Docker's health check settings (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub interval: u64,
    /// Time before a check is considered hung.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub timeout: u64,
    /// Start-up time before failures count.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub start_interval: u64,
    /// Consecutive failures before unhealthy.
    #[serde(skip_serializing_if = "is_zero_u32", default)]
    pub retries: u32,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The container defaults of an image: OCI fields plus Docker's extras.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// The OCI fields (User, Env, Cmd, Entrypoint, Labels, …).
    #[serde(flatten)]
    pub oci: Config,
    /// `HEALTHCHECK`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers.
    #[serde(rename = "OnBuild", skip_serializing_if = "Option::is_none", default)]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<Vec<String>>,
    /// Whether Cmd/Entrypoint are already escaped (Windows legacy).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub args_escaped: Option<bool>,
}

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    /// `MAINTAINER`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    /// Container defaults.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub config: Option<RunConfig>,
    /// Layer diff ids.
    pub rootfs: RootFs,
    /// One entry per Dockerfile step.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The canonical bytes and digest of this config.
    pub fn to_blob(&self) -> Result<(Vec<u8>, Digest), serde_json::Error> {
        canonical_with_digest(self)
    }

    /// Parses a config blob.
    pub fn from_blob(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The config's `rootfs` for `layers`.
pub fn rootfs_of(layers: &[crate::blob::LayerBlob]) -> Result<oci_spec::image::RootFs, String> {
    oci_spec::image::RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| e.to_string())
}

/// The architecture name Go and OCI use for this host.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_fields_survive_a_round_trip() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Labels":{"b":"2","a":"1"},
            "ExposedPorts":{"80/tcp":{}},"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":30000000000,"Retries":3},
            "OnBuild":["RUN echo hi"],"Shell":["/bin/sh","-ec"],"StopSignal":"SIGTERM","ArgsEscaped":true},
            "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"x","empty_layer":true}]}"#;
        let config = ImageConfig::from_blob(text.as_bytes()).unwrap();
        let run = config.config.as_ref().unwrap();
        assert_eq!(run.healthcheck.as_ref().unwrap().retries, 3);
        assert_eq!(
            run.on_build.as_deref(),
            Some(&["RUN echo hi".to_string()][..])
        );
        assert_eq!(run.oci.stop_signal().as_deref(), Some("SIGTERM"));
        let (bytes, digest) = config.to_blob().unwrap();
        let again = ImageConfig::from_blob(&bytes).unwrap();
        assert_eq!(again, config);
        assert_eq!(again.to_blob().unwrap().1, digest, "stable digest");
        let out = String::from_utf8(bytes).unwrap();
        assert!(
            out.contains(
                r#""Healthcheck":{"Interval":30000000000,"Retries":3,"Test":["CMD-SHELL","true"]}"#
            ),
            "{out}"
        );
        assert!(out.contains(r#""Labels":{"a":"1","b":"2"}"#), "{out}");
        assert!(out.contains(r#""OnBuild":["RUN echo hi"]"#));
        assert!(out.contains(r#""ExposedPorts":{"80/tcp":{}}"#), "{out}");
    }
}
