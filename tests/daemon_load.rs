//! Images rbuild writes run under podman: `podman load` of the
//! docker-archive, and `--load` (POST /images/load) into a Docker-Engine-API
//! socket served by `podman system service`.

mod common;

use std::path::Path;

use common::{run_ok, Podman};
use rbuild::cache::ContentStore;
use rbuild::export::{load_into_daemon, LoadError};
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::layout::{write_docker_archive, write_to_file};
use rbuild::image::media::MediaTypes;
use rbuild::image::Reference;

const SCRIPT: &str = "echo hello from $(cat /etc/hostname >/dev/null && echo busybox); id -u; test -L /bin/sh && echo sh-is-a-link";

#[test]
fn podman_loads_and_runs_the_docker_archive() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let image = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Docker).unwrap();
    let names: Vec<Reference> = vec!["localhost/rbuild-test/archive:1".parse().unwrap()];
    let archive = dir.path().join("image.tar");
    write_to_file(&archive, |f| {
        write_docker_archive(&store, f, &[(&image, &names)])
    })
    .unwrap();

    let podman = Podman::new();
    let loaded = run_ok(podman.cmd().arg("load").arg("-i").arg(&archive));
    assert!(loaded.contains("localhost/rbuild-test/archive:1"));
    let output = podman.run("localhost/rbuild-test/archive:1", &["sh", "-c", SCRIPT]);
    assert_eq!(output, "hello from busybox\n0\nsh-is-a-link\n");
}

#[test]
fn load_streams_into_a_docker_api_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let image = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap();
    let names: Vec<Reference> = vec![
        "localhost/rbuild-test/loaded:1".parse().unwrap(),
        "localhost/rbuild-test/loaded:latest".parse().unwrap(),
    ];
    let podman = Podman::new();
    let (host, _service) = podman.service();
    let lines = load_into_daemon(&host, |out| {
        write_docker_archive(&store, out, &[(&image, &names)])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("Loaded image")),
        "{lines:?}"
    );
    let listed = podman
        .cmd()
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("localhost/rbuild-test/loaded:1")
            && listed.contains("localhost/rbuild-test/loaded:latest"),
        "{listed}"
    );
    let output = podman.run("localhost/rbuild-test/loaded:1", &["sh", "-c", SCRIPT]);
    assert_eq!(output, "hello from busybox\n0\nsh-is-a-link\n");
}

#[test]
fn an_unreachable_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/nothing.sock", dir.path().display());
    let err = load_into_daemon(&host, |_| Ok(())).unwrap_err();
    assert!(matches!(err, LoadError::Connect { .. }));
    assert!(err.to_string().contains("DOCKER_HOST"), "{err}");
}
