//! The registry client against Debian's real `docker-registry`, with
//! `skopeo` as the independent reader.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{docker_config, run_ok, TestRegistry};
use rbuild::cache::ContentStore;
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::config::host_architecture;
use rbuild::image::layout::StoredImage;
use rbuild::image::media::MediaTypes;
use rbuild::image::Reference;
use rbuild::registry::{CredentialSource, RegistryClient, RegistryError, RegistryOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client(credentials: CredentialSource, options: RegistryOptions) -> RegistryClient {
    RegistryClient::new(credentials, options).unwrap()
}

fn busybox(store: &ContentStore) -> StoredImage {
    build_base(store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap()
}

fn reference(registry: &TestRegistry, name: &str) -> Reference {
    format!("{}/{name}", registry.addr).parse().unwrap()
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Pushes `image` from `store` to `targets` with `c`.
fn push(
    rt: &tokio::runtime::Runtime,
    c: &RegistryClient,
    store: &ContentStore,
    image: &StoredImage,
    targets: &[Reference],
    mount: Option<&Reference>,
) -> Result<(), RegistryError> {
    rt.block_on(c.push(store, &image.manifest_digest, targets, mount))
}

/// Pushes `image` to the one `target`, mounting nothing.
fn push_to(
    rt: &tokio::runtime::Runtime,
    c: &RegistryClient,
    store: &ContentStore,
    image: &StoredImage,
    target: &Reference,
) -> Result<(), RegistryError> {
    push(rt, c, store, image, std::slice::from_ref(target), None)
}

/// A client that tries each request `attempts` times.
fn client_with_attempts(credentials: CredentialSource, attempts: u32) -> RegistryClient {
    let options = RegistryOptions {
        max_attempts: attempts,
        ..RegistryOptions::default()
    };
    client(credentials, options)
}

fn skopeo_raw(reference: &Reference) -> Vec<u8> {
    run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    )
    .into_bytes()
}

#[test]
fn push_then_pull_by_tag_and_digest_is_byte_identical() {
    let registry = TestRegistry::start(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let source = ContentStore::open(dir.path().join("a")).unwrap();
    let image = busybox(&source);
    let targets = vec![
        reference(&registry, "rbuild/busybox:1.0"),
        reference(&registry, "rbuild/busybox:latest"),
    ];

    let pusher = client(CredentialSource::default(), RegistryOptions::default());
    push(&rt, &pusher, &source, &image, &targets, None).unwrap();
    assert_eq!(count(&pusher.stats.blobs_uploaded), 2, "config and layer");
    assert_eq!(
        skopeo_raw(&targets[0]),
        source.read(&image.manifest_digest).unwrap()
    );
    assert_eq!(
        skopeo_raw(&targets[1]),
        source.read(&image.manifest_digest).unwrap()
    );

    // Pull by tag into an empty store.
    let by_tag = ContentStore::open(dir.path().join("b")).unwrap();
    let puller = client(CredentialSource::default(), RegistryOptions::default());
    let pulled = rt
        .block_on(puller.pull(&by_tag, &targets[0], "linux", host_architecture()))
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(pulled.config_digest, image.config_digest);
    for digest in std::iter::once(&image.manifest_digest)
        .chain(std::iter::once(&image.config_digest))
        .chain(image.layers.iter().map(|l| &l.digest))
    {
        assert_eq!(
            by_tag.read(digest).unwrap(),
            source.read(digest).unwrap(),
            "{digest}"
        );
    }
    assert_eq!(count(&puller.stats.blobs_downloaded), 2);

    // Pull again: nothing is fetched.
    rt.block_on(puller.pull(&by_tag, &targets[0], "linux", host_architecture()))
        .unwrap();
    assert_eq!(count(&puller.stats.blobs_downloaded), 2);
    assert_eq!(count(&puller.stats.blobs_cached), 2);

    // Pull by digest.
    let by_digest = ContentStore::open(dir.path().join("c")).unwrap();
    let pinned: Reference = format!("{}/rbuild/busybox@{}", registry.addr, image.manifest_digest)
        .parse()
        .unwrap();
    let pulled = rt
        .block_on(puller.pull(&by_digest, &pinned, "linux", host_architecture()))
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert_eq!(
        by_digest.read(&image.layers[0].digest).unwrap(),
        source.read(&image.layers[0].digest).unwrap()
    );

    // A second push uploads no blob: rbuild's counters and the registry's log agree.
    let uploads_before = registry.count_requests("POST", "/blobs/uploads/");
    let again = client(CredentialSource::default(), RegistryOptions::default());
    push(&rt, &again, &source, &image, &targets, None).unwrap();
    assert_eq!(count(&again.stats.blobs_uploaded), 0);
    assert_eq!(count(&again.stats.blobs_existing), 2);
    assert!(uploads_before >= 2, "the first push was logged");
    assert_eq!(
        registry.count_requests_settled("POST", "/blobs/uploads/"),
        uploads_before,
        "no upload started"
    );
}

#[test]
fn cross_repository_mount_and_chunked_upload() {
    let registry = TestRegistry::start(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let image = busybox(&store);
    let first = reference(&registry, "team/base:1");
    let options = RegistryOptions {
        chunk_size: Some(256 * 1024),
        ..RegistryOptions::default()
    };
    let chunked = client(CredentialSource::default(), options);
    push_to(&rt, &chunked, &store, &image, &first).unwrap();
    assert_eq!(count(&chunked.stats.blobs_uploaded), 2);
    let layer_kib = image.layers[0].size / 1024;
    assert!(
        registry.count_requests_settled("PATCH", "/v2/team/base/blobs/uploads/") as u64
            >= layer_kib / 256,
        "layer sent in 256 KiB chunks"
    );
    assert_eq!(
        skopeo_raw(&first),
        store.read(&image.manifest_digest).unwrap()
    );

    let second = reference(&registry, "team/app:1");
    let mounter = client(CredentialSource::default(), RegistryOptions::default());
    push(
        &rt,
        &mounter,
        &store,
        &image,
        std::slice::from_ref(&second),
        Some(&first),
    )
    .unwrap();
    assert_eq!(count(&mounter.stats.blobs_mounted), 2);
    assert_eq!(count(&mounter.stats.blobs_uploaded), 0);
    assert_eq!(
        skopeo_raw(&second),
        store.read(&image.manifest_digest).unwrap()
    );
}

#[test]
fn basic_auth_from_config_json_and_credential_helper() {
    let password = "s3cret-Pa55";
    let registry = TestRegistry::start(&[("alice", password)]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let image = busybox(&store);
    let target = reference(&registry, "private/busybox:1");

    // No credentials: a clear error naming the registry.
    let anonymous = client(CredentialSource::default(), RegistryOptions::default());
    let err = push_to(&rt, &anonymous, &store, &image, &target).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Auth { .. }), "{text}");
    assert!(
        text.contains(&registry.addr) && text.contains("config.json"),
        "{text}"
    );

    // Wrong password: 401 named, password never printed.
    let wrong = tempfile::tempdir().unwrap();
    docker_config(wrong.path(), &registry.addr, "alice", "not-the-password");
    let bad = client_with_attempts(CredentialSource::load(Some(wrong.path())).unwrap(), 2);
    let err = push_to(&rt, &bad, &store, &image, &target).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("401") && text.contains(&registry.addr),
        "{text}"
    );
    assert!(
        !text.contains("not-the-password") && !text.contains(password),
        "no secrets in errors"
    );

    // config.json auths.
    let good = tempfile::tempdir().unwrap();
    docker_config(good.path(), &registry.addr, "alice", password);
    let authed = client(
        CredentialSource::load(Some(good.path())).unwrap(),
        RegistryOptions::default(),
    );
    push_to(&rt, &authed, &store, &image, &target).unwrap();
    let pulled_store = ContentStore::open(dir.path().join("pulled")).unwrap();
    let pulled = rt
        .block_on(authed.pull(&pulled_store, &target, "linux", host_architecture()))
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);

    // credsStore through a real docker-credential-* helper program.
    let helper_dir = tempfile::tempdir().unwrap();
    let helper = helper_dir.path().join("docker-credential-rbtest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo credentials not found; exit 1; }}\nprintf '{{\"Username\":\"alice\",\"Secret\":\"{password}\"}}'\n", registry.addr),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&helper).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let store_config = tempfile::tempdir().unwrap();
    std::fs::write(
        store_config.path().join("config.json"),
        r#"{"credsStore":"rbtest"}"#,
    )
    .unwrap();
    let mut source = CredentialSource::load(Some(store_config.path())).unwrap();
    source.helper_dirs.push(helper_dir.path().to_path_buf());
    let via_helper = client(source, RegistryOptions::default());
    let helper_store = ContentStore::open(dir.path().join("helper")).unwrap();
    rt.block_on(via_helper.pull(&helper_store, &target, "linux", host_architecture()))
        .unwrap();
    assert!(helper_store.contains(&image.layers[0].digest));
}

#[test]
fn errors_name_the_registry_and_what_failed() {
    let registry = TestRegistry::start(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let c = client(CredentialSource::default(), RegistryOptions::default());
    let err = rt
        .block_on(c.pull(
            &store,
            &reference(&registry, "nope/missing:1"),
            "linux",
            "amd64",
        ))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&registry.addr) && text.contains("404") && text.contains("MANIFEST_UNKNOWN"),
        "{text}"
    );

    // Nothing listens here: retried, then a transport error.
    let quick = client(
        CredentialSource::default(),
        RegistryOptions {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            ..RegistryOptions::default()
        },
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed: Reference = format!("127.0.0.1:{port}/x/y:1").parse().unwrap();
    let err = rt
        .block_on(quick.pull(&store, &closed, "linux", "amd64"))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(count(&quick.stats.retries), 2);
}

#[test]
fn push_and_pull_survive_a_failing_registry() {
    use common::{Fault, FaultProxy};
    let registry = TestRegistry::start(&[]);
    // Every fifth request answered 500, every seventh dropped, every
    // eleventh response cut off halfway; all bodies trickle.
    let proxy = FaultProxy::start(&registry.addr, |n, _| match n {
        n if n % 5 == 1 => Fault::Error500,
        n if n % 7 == 3 => Fault::Drop,
        n if n % 11 == 6 => Fault::Cut,
        _ => Fault::Pass,
    });
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("a")).unwrap();
    let image = busybox(&store);
    let options = RegistryOptions {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(20),
        chunk_size: Some(128 * 1024),
        ..RegistryOptions::default()
    };
    let via_proxy: Reference = format!("{}/flaky/busybox:1", proxy.addr).parse().unwrap();
    let pusher = client(CredentialSource::default(), options.clone());
    push_to(&rt, &pusher, &store, &image, &via_proxy).unwrap();
    assert!(
        count(&pusher.stats.retries) > 0,
        "faults were met and retried"
    );
    // Read directly from the registry: the image is whole.
    assert_eq!(
        skopeo_raw(&reference(&registry, "flaky/busybox:1")),
        store.read(&image.manifest_digest).unwrap()
    );

    let pulled = ContentStore::open(dir.path().join("b")).unwrap();
    let puller = client(CredentialSource::default(), options);
    let got = rt
        .block_on(puller.pull(&pulled, &via_proxy, "linux", host_architecture()))
        .unwrap();
    assert_eq!(got.manifest_digest, image.manifest_digest);
    assert_eq!(
        pulled.read(&image.layers[0].digest).unwrap(),
        store.read(&image.layers[0].digest).unwrap()
    );
    println!(
        "faults injected: {}; retries: push {}, pull {}",
        proxy.injected.load(Ordering::SeqCst),
        count(&pusher.stats.retries),
        count(&puller.stats.retries)
    );
    // The README's figure. The schedule is by request number and the
    // client's requests and retries come in a fixed order, so a change
    // here means the client's requests changed: say so in the README.
    assert_eq!(
        proxy.injected.load(Ordering::SeqCst),
        11,
        "faults injected (the README says 11)"
    );
    assert!(count(&puller.stats.retries) > 0, "the pull met faults too");
}

#[test]
fn a_registry_that_keeps_failing_gets_no_manifest() {
    use common::{Fault, FaultProxy};
    let registry = TestRegistry::start(&[]);
    let proxy = FaultProxy::start(&registry.addr, |_, line| {
        if line.contains("/blobs/uploads/") {
            Fault::Error500
        } else {
            Fault::Pass
        }
    });
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let image = busybox(&store);
    let target: Reference = format!("{}/broken/busybox:1", proxy.addr).parse().unwrap();
    let c = client(
        CredentialSource::default(),
        RegistryOptions {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            ..RegistryOptions::default()
        },
    );
    let err = push(&rt, &c, &store, &image, std::slice::from_ref(&target), None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&proxy.addr) && text.contains("500") && text.contains("upload blob"),
        "{text}"
    );
    assert_eq!(
        registry.count_requests_settled("PUT", "/manifests/"),
        0,
        "no manifest was sent"
    );
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/broken/busybox:1", registry.addr))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the tag must not exist");
}

#[test]
fn docker_media_types_on_request() {
    let registry = TestRegistry::start(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let image = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Docker).unwrap();
    let target = reference(&registry, "docker/busybox:1");
    let c = client(CredentialSource::default(), RegistryOptions::default());
    push(&rt, &c, &store, &image, std::slice::from_ref(&target), None).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&skopeo_raw(&target)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let pulled = ContentStore::open(dir.path().join("pulled")).unwrap();
    let got = rt
        .block_on(c.pull(&pulled, &target, "linux", host_architecture()))
        .unwrap();
    assert_eq!(
        got.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(got.manifest_digest, image.manifest_digest);
}

#[test]
fn bearer_token_auth_against_a_token_service() {
    use common::TokenServer;
    let password = "t0ken-Pa55";
    let tokens = TokenServer::start("alice", password);
    let registry = TestRegistry::start_with_tokens(&tokens);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let image = busybox(&store);
    let target = reference(&registry, "secure/busybox:1");

    // Push with credentials: the token grants pull,push.
    let creds = tempfile::tempdir().unwrap();
    docker_config(creds.path(), &registry.addr, "alice", password);
    let pusher = client(
        CredentialSource::load(Some(creds.path())).unwrap(),
        RegistryOptions::default(),
    );
    push_to(&rt, &pusher, &store, &image, &target).unwrap();
    assert!(tokens.issued.load(Ordering::SeqCst) >= 1);

    // Anonymous pull: the token service grants pull only, and that suffices.
    let pulled = ContentStore::open(dir.path().join("pulled")).unwrap();
    let anonymous = client(CredentialSource::default(), RegistryOptions::default());
    let got = rt
        .block_on(anonymous.pull(&pulled, &target, "linux", host_architecture()))
        .unwrap();
    assert_eq!(got.manifest_digest, image.manifest_digest);

    // Anonymous push is refused by the registry with the pull-only token.
    let err = push(
        &rt,
        &anonymous,
        &store,
        &image,
        &[reference(&registry, "secure/other:1")],
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    // Mount needs a token for two repositories (one scope parameter each).
    let mounter = client(
        CredentialSource::load(Some(creds.path())).unwrap(),
        RegistryOptions::default(),
    );
    push(
        &rt,
        &mounter,
        &store,
        &image,
        &[reference(&registry, "secure/copy:1")],
        Some(&target),
    )
    .unwrap();
    assert_eq!(count(&mounter.stats.blobs_mounted), 2);

    // A wrong password fails at the token endpoint and is never printed.
    let wrong = tempfile::tempdir().unwrap();
    docker_config(wrong.path(), &registry.addr, "alice", "wrong-password");
    let bad = client(
        CredentialSource::load(Some(wrong.path())).unwrap(),
        RegistryOptions::default(),
    );
    let err = push_to(&rt, &bad, &store, &image, &target).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(err, RegistryError::Auth { .. }) && text.contains("401"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-password") && !text.contains(password),
        "{text}"
    );
}

#[test]
fn pull_picks_the_platform_from_an_index() {
    use rbuild::image::canonical::to_canonical_json;
    let registry = TestRegistry::start(&[]);
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let host = busybox(&store);
    // A second image for another platform: same layer, different config.
    let mut other_config: rbuild::image::ImageConfig =
        serde_json::from_slice(&store.read(&host.config_digest).unwrap()).unwrap();
    let other_arch = if host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    other_config.architecture = other_arch.to_string();
    let other =
        rbuild::image::layout::store_image(&store, &other_config, &host.layers, MediaTypes::Oci)
            .unwrap();
    let entry = |image: &StoredImage, arch: &str| {
        serde_json::json!({"mediaType": image.media_type, "digest": image.manifest_digest.to_string(),
            "size": image.manifest_size, "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&other, other_arch), entry(&host, host_architecture())]});
    let index_bytes = to_canonical_json(&index).unwrap();
    let index_digest = store.put(&index_bytes).unwrap();

    // An OCI layout whose tag points at the index; skopeo pushes it all.
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for d in [
        &index_digest,
        &host.manifest_digest,
        &other.manifest_digest,
        &host.config_digest,
        &other.config_digest,
        &host.layers[0].digest,
    ] {
        std::fs::copy(
            store.blob_path(d),
            layout.join("blobs/sha256").join(d.hex()),
        )
        .unwrap();
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest.to_string(), "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}}]})
        .to_string(),
    )
    .unwrap();
    let target = reference(&registry, "multi/busybox:1");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--all", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(format!("docker://{target}")),
    );

    let c = client(CredentialSource::default(), RegistryOptions::default());
    let pulled = ContentStore::open(dir.path().join("pulled")).unwrap();
    let got = rt
        .block_on(c.pull(&pulled, &target, "linux", host_architecture()))
        .unwrap();
    assert_eq!(
        got.manifest_digest, host.manifest_digest,
        "the host's platform"
    );
    let got = rt
        .block_on(c.pull(&pulled, &target, "linux", other_arch))
        .unwrap();
    assert_eq!(
        got.manifest_digest, other.manifest_digest,
        "the requested platform"
    );
    let err = rt
        .block_on(c.pull(&pulled, &target, "linux", "s390x"))
        .unwrap_err();
    assert!(
        err.to_string().contains("no image for linux/s390x"),
        "{err}"
    );
}

#[test]
fn tls_for_other_hosts_with_a_private_ca_and_insecure_by_name() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let image = busybox(&store);

    // 127.0.0.2 is not "localhost": rbuild speaks TLS to it.
    let (tls_registry, ca) = TestRegistry::start_tls("127.0.0.2");
    let target = reference(&tls_registry, "tls/busybox:1");
    let untrusting = client_with_attempts(CredentialSource::default(), 1);
    let err = push_to(&rt, &untrusting, &store, &image, &target).unwrap_err();
    assert!(
        matches!(err, RegistryError::Transport { .. })
            && err.to_string().contains(&tls_registry.addr),
        "{err}"
    );
    assert!(
        err.to_string().contains("certificate"),
        "the cause is shown: {err}"
    );
    let trusting = client(
        CredentialSource::default(),
        RegistryOptions {
            ca_certs: vec![ca.clone()],
            ..RegistryOptions::default()
        },
    );
    push_to(&rt, &trusting, &store, &image, &target).unwrap();
    // skopeo's --cert-dir takes CA files alone (a .key there means a client key).
    let cert_dir = dir.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&ca, cert_dir.join("ca.crt")).unwrap();
    let over_tls = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("docker://{target}")),
    );
    assert_eq!(
        over_tls.into_bytes(),
        store.read(&image.manifest_digest).unwrap()
    );

    // A plain-HTTP registry on 127.0.0.2 needs --insecure-registry.
    let plain = TestRegistry::start_on("127.0.0.2");
    let target = reference(&plain, "plain/busybox:1");
    let err = push_to(&rt, &untrusting, &store, &image, &target).unwrap_err();
    assert!(err.to_string().contains(&plain.addr), "{err}");
    let insecure = client(
        CredentialSource::default(),
        RegistryOptions {
            insecure: vec![plain.addr.clone()],
            ..RegistryOptions::default()
        },
    );
    push_to(&rt, &insecure, &store, &image, &target).unwrap();
}

/// A soak (issue 22): 20 pushes and pulls of an image through a proxy
/// that fails about a quarter of its requests at random (500s, dropped
/// connections, bodies cut off), a few hundred requests in all. Each push
/// and pull must succeed or fail with an error, never panic or hang; a
/// pull that succeeds has the pushed manifest; and after every push the
/// registry holds either no manifest for the tag or a whole image
/// (skopeo copies it out of the registry directly). `RBUILD_SOAK_SEED`
/// replays a run.
#[test]
fn a_fault_soak_leaves_no_manifest_without_its_blobs() {
    use common::{Fault, FaultProxy};
    let seed: u64 = std::env::var("RBUILD_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) | 1);
    eprintln!("fault soak: RBUILD_SOAK_SEED={seed}");
    let registry = TestRegistry::start(&[]);
    let proxy = FaultProxy::start(&registry.addr, move |n, _| {
        // A fixed mix from the request number and the seed (splitmix64).
        let mut z = n.wrapping_add(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        match (z ^ (z >> 31)) % 100 {
            0..=11 => Fault::Error500,
            12..=19 => Fault::Drop,
            20..=25 => Fault::Cut,
            _ => Fault::Pass,
        }
    });
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("a")).unwrap();
    let image = busybox(&store);
    let options = RegistryOptions {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(5),
        chunk_size: Some(256 * 1024),
        ..RegistryOptions::default()
    };
    let (mut pushed, mut pulled, mut failed) = (0, 0, Vec::new());
    for round in 0..20 {
        let via_proxy: Reference = format!("{}/soak/r{round}:1", proxy.addr).parse().unwrap();
        let direct = reference(&registry, &format!("soak/r{round}:1"));
        let pusher = client(CredentialSource::default(), options.clone());
        match push_to(&rt, &pusher, &store, &image, &via_proxy) {
            Ok(()) => pushed += 1,
            Err(e) => failed.push(format!("push {round}: {e}")),
        }
        let inspect = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{direct}"))
            .output()
            .unwrap();
        if inspect.status.success() {
            let out = dir.path().join(format!("copied-{round}"));
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false"])
                    .arg(format!("docker://{direct}"))
                    .arg(format!("dir:{}", out.display())),
            );
        }
        let fresh = ContentStore::open(dir.path().join(format!("pull-{round}"))).unwrap();
        let puller = client(CredentialSource::default(), options.clone());
        match rt.block_on(puller.pull(&fresh, &via_proxy, "linux", host_architecture())) {
            Ok(got) => {
                assert_eq!(got.manifest_digest, image.manifest_digest, "pull {round}");
                pulled += 1;
            }
            Err(e) => failed.push(format!("pull {round}: {e}")),
        }
    }
    let injected = proxy.injected.load(Ordering::SeqCst);
    let requests = registry.count_requests_settled("", " /v2/");
    eprintln!(
        "fault soak: {pushed} of 20 pushes and {pulled} of 20 pulls succeeded through \
         {injected} faults in {requests} requests that reached the registry; failures: {failed:?}"
    );
    assert!(injected >= 30, "only {injected} faults");
    assert!(pushed >= 15 && pulled >= 15, "{failed:?}");
}
