//! A busybox base image from Debian's `busybox-static`, with no registry.
//!
//! The recipe: the static binary at `/bin/busybox`, one symlink per applet
//! at the path `busybox --list-full` gives, `/etc/passwd` and `/etc/group`
//! for root and nobody, and `/tmp`, `/root`, `/home`, `/var`. One gzip layer,
//! `PATH` set and `sh` as the command — the shape of Docker Hub's busybox.
//! Tests and the README's offline quick start use it as their base.

use std::path::Path;
use std::process::Command;

use super::layer::{write_gzip_layer, Entry};
use super::layout::StoredImage;
use super::media::MediaTypes;
use crate::cache::ContentStore;
use crate::cache::LayerError;

/// Where Debian's `busybox-static` installs the binary.
pub const DEBIAN_BUSYBOX: &str = "/bin/busybox";

/// Building the base image failed.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    /// The binary could not be read or run.
    #[error("busybox binary {path}: {message} (install Debian's busybox-static)")]
    Binary {
        /// The binary's path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Writing the layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Storing the image failed.
    #[error("storing the busybox image: {0}")]
    Image(String),
}

/// Builds the base image from `binary` into `store`.
pub fn build_base(
    store: &ContentStore,
    binary: &Path,
    media: MediaTypes,
) -> Result<StoredImage, BusyboxError> {
    let fail = |message: String| BusyboxError::Binary {
        path: binary.display().to_string(),
        message,
    };
    let contents = std::fs::read(binary).map_err(|e| fail(e.to_string()))?;
    let listing = Command::new(binary)
        .arg("--list-full")
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !listing.status.success() {
        return Err(fail(format!("--list-full exited with {}", listing.status)));
    }
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("home", 0o755),
        Entry::dir("root", 0o700),
        Entry::dir("sbin", 0o755),
        Entry::dir("tmp", 0o1777),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("var", 0o755),
        Entry::file("bin/busybox", 0o755, contents),
        Entry::file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
                .to_vec(),
        ),
        Entry::file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n".to_vec()),
    ];
    let mut seen: std::collections::BTreeSet<String> =
        entries.iter().map(|e| e.path.clone()).collect();
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        let parent_known = applet
            .rsplit_once('/')
            .is_some_and(|(dir, _)| seen.contains(dir));
        if applet.is_empty() || !parent_known || !seen.insert(applet.to_string()) {
            continue;
        }
        entries.push(Entry::symlink(applet, "/bin/busybox"));
    }
    let layer = write_gzip_layer(store, entries, 0)?;

    super::import::single_layer_image(
        store,
        layer,
        &["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        &["sh"],
        "rbuild busybox base from Debian busybox-static",
        media,
    )
    .map_err(BusyboxError::Image)
}
