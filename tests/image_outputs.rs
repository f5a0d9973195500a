//! Local image outputs, checked by independent tools.
//!
//! Builds the busybox base from Debian's `busybox-static` into a fresh
//! content store, writes it as an OCI layout (directory and tar) and as a
//! docker-archive, and has `umoci` unpack and `skopeo` read each result.
//! Needs `busybox-static`, `umoci` and `skopeo` (`scripts/test.sh` installs
//! them).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

mod common;

use common::{is_root, run_ok};
use rbuild::cache::ContentStore;
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::layout::{
    write_docker_archive, write_oci_layout_dir, write_oci_layout_tar, write_to_file, StoredImage,
};
use rbuild::image::media::MediaTypes;
use rbuild::image::{ImageConfig, Reference};

fn base(store: &ContentStore) -> StoredImage {
    build_base(store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci)
        .expect("busybox base (is busybox-static installed?)")
}

/// Unpacks `image_ref` (umoci syntax `dir:tag`) and checks the busybox tree.
fn check_unpacked(layout_and_tag: &str, scratch: &Path) {
    let bundle = scratch.join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    run_ok(cmd.arg("--image").arg(layout_and_tag).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let busybox = std::fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!(busybox.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        busybox.len(),
        std::fs::metadata(DEBIAN_BUSYBOX).unwrap().len(),
        "the real binary"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
    );
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["args"], serde_json::json!(["sh"]));
    let env = runtime["process"]["env"].to_string();
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
    if is_root() {
        // The applets really work from the unpacked tree.
        let listing = run_ok(Command::new("chroot").arg(&rootfs).args([
            "/bin/sh",
            "-c",
            "ls /bin | wc -l; echo ok",
        ]));
        assert!(listing.trim_end().ends_with("ok"), "{listing}");
    }
}

#[test]
fn busybox_base_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let one = base(&ContentStore::open(a.path()).unwrap());
    let two = base(&ContentStore::open(b.path()).unwrap());
    assert_eq!(one, two, "same binary, same image, same digests");
    assert_eq!(one.layers.len(), 1);
}

#[test]
fn oci_layout_directory_reads_back_with_umoci_and_skopeo() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path().join("store")).unwrap();
    let image = base(&store);
    let names: Vec<Reference> = [
        "localhost/rbuild-test/busybox:1.0",
        "localhost/rbuild-test/busybox:latest",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let layout = root.path().join("layout");
    write_oci_layout_dir(&store, &layout, &[(&image, &names)]).unwrap();

    for tag in ["1.0", "latest"] {
        let raw = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci:{}:{tag}", layout.display())),
        );
        assert_eq!(
            raw.as_bytes(),
            store.read(&image.manifest_digest).unwrap(),
            "manifest bytes"
        );
    }
    let config = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci:{}:1.0", layout.display())),
    );
    let config: ImageConfig = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config.config.unwrap().oci.cmd().clone().unwrap(),
        vec!["sh"]
    );
    assert_eq!(
        config.rootfs.diff_ids()[0],
        image.layers[0].diff_id.to_string()
    );

    check_unpacked(&format!("{}:1.0", layout.display()), root.path());
}

#[test]
fn oci_layout_tar_and_docker_archive_read_back() {
    let root = tempfile::tempdir().unwrap();
    let store = ContentStore::open(root.path().join("store")).unwrap();
    let image = base(&store);
    let names: Vec<Reference> = vec!["localhost/rbuild-test/busybox:2.0".parse().unwrap()];

    let oci_tar = root.path().join("image-oci.tar");
    write_to_file(&oci_tar, |f| {
        write_oci_layout_tar(&store, f, &[(&image, &names)])
    })
    .unwrap();
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}:2.0", oci_tar.display())),
    );
    assert_eq!(raw.as_bytes(), store.read(&image.manifest_digest).unwrap());

    let docker_tar = root.path().join("image-docker.tar");
    write_to_file(&docker_tar, |f| {
        write_docker_archive(&store, f, &[(&image, &names)])
    })
    .unwrap();
    let inspect: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", docker_tar.display())),
    ))
    .unwrap();
    assert_eq!(
        inspect["RepoTags"],
        serde_json::json!([]),
        "skopeo lists tags only for registries"
    );
    // A docker-archive source describes layers by their uncompressed digest.
    assert_eq!(
        inspect["Layers"],
        serde_json::json!([image.layers[0].diff_id.to_string()])
    );
    let archive_config = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--config", "--raw"])
            .arg(format!("docker-archive:{}", docker_tar.display())),
    );
    assert_eq!(
        archive_config.as_bytes(),
        store.read(&image.config_digest).unwrap(),
        "config bytes"
    );

    // Copy the archive into a fresh layout with skopeo, then unpack that.
    let copied = root.path().join("copied");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!(
                "docker-archive:{}:localhost/rbuild-test/busybox:2.0",
                docker_tar.display()
            ))
            .arg(format!("oci:{}:copied", copied.display())),
    );
    check_unpacked(&format!("{}:copied", copied.display()), root.path());
}
