//! The command line (`assert_cmd`): each docker-build flag checked by its
//! effect on the image or the output, and each kaniko alias checked to
//! give the very image its docker-style equivalent gives.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::prelude::OutputAssertExt;
use assert_cmd::Command;
use common::{is_root, step_lines, Podman, TestRegistry};

/// `rbuild` with its storage in `root`.
fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::cargo_bin("rbuild").unwrap();
    cmd.env("RBUILD_ROOT", root)
        .env_remove("CI")
        .env_remove("RBUILD_KEEP_STORAGE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("file.txt"), "from the context\n").unwrap();
    ctx
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The config of the image whose id `--iidfile` wrote.
fn config_of(root: &Path, iidfile: &Path) -> serde_json::Value {
    let id = std::fs::read_to_string(iidfile).unwrap();
    let blob = root
        .join("blobs/sha256")
        .join(id.trim().trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
}

#[test]
fn tags_files_args_labels_and_ids() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(
        work.path(),
        "FROM busybox\nARG GREETING=hi\nRUN echo $GREETING\nCOPY file.txt /\n",
    );
    let other = work.path().join("Other.Dockerfile");
    std::fs::write(&other, "FROM app:1\nRUN cat /file.txt\n").unwrap();
    let iid = work.path().join("iid");
    let meta = work.path().join("meta.json");
    // -t records the image; --build-arg reaches the RUN; --label lands in
    // the config; --iidfile and --metadata-file describe it.
    let out = rbuild(&root)
        .args(["-t", "app:1", "--build-arg", "GREETING=bonjour"])
        .args(["--label", "org.example=yes", "--progress=plain"])
        .arg("--iidfile")
        .arg(&iid)
        .arg("--metadata-file")
        .arg(&meta)
        .arg(&ctx)
        .assert()
        .success();
    assert!(step_lines(&out.get_output().clone()).contains(&"bonjour".to_string()));
    let config = config_of(&root, &iid);
    assert_eq!(config["config"]["Labels"]["org.example"], "yes");
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        metadata["containerimage.config.digest"],
        std::fs::read_to_string(&iid).unwrap().trim()
    );
    assert_eq!(metadata["image.name"], "docker.io/library/app:1");
    assert_eq!(
        metadata["containerimage.descriptor"]["digest"],
        metadata["containerimage.digest"]
    );
    // -f from outside the context; FROM finds the tag -t recorded.
    let out = rbuild(&root)
        .args(["--progress=plain", "-f"])
        .arg(&other)
        .arg(&ctx)
        .assert()
        .success();
    assert!(step_lines(&out.get_output().clone()).contains(&"from the context".to_string()));
    // -q prints the image id alone on stdout.
    let quiet = rbuild(&root).arg("-q").arg(&ctx).assert().success();
    let stdout = text(&quiet.get_output().stdout);
    assert!(stdout.trim().starts_with("sha256:") && stdout.lines().count() == 1);
    assert!(text(&quiet.get_output().stderr).is_empty());
}

#[test]
fn target_cache_flags_epoch_platform_and_unsupported_ones() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(
        work.path(),
        "FROM busybox AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\n",
    );
    let iid = work.path().join("iid");
    let build = |extra: &[&str]| {
        let out = rbuild(&root)
            .args(["--progress=plain", "--iidfile"])
            .arg(&iid)
            .args(extra)
            .arg(&ctx)
            .assert()
            .success();
        common::ran_steps(&out.get_output().clone())
    };
    assert_eq!(build(&["--target", "one"]), ["RUN echo one > /one"]);
    assert_eq!(build(&[]), ["RUN echo two > /two"]);
    assert_eq!(build(&["--no-cache"]).len(), 2);
    assert_eq!(
        build(&["--no-cache-filter", "two"]),
        ["RUN echo two > /two"]
    );
    // --source-date-epoch sets the created time.
    build(&["--source-date-epoch", "1000000000"]);
    assert_eq!(config_of(&root, &iid)["created"], "2001-09-09T01:46:40Z");
    // This machine's platform is fine; another is refused, not faked.
    let host = rbuild::solver::Platform::host().format();
    build(&["--platform", &host]);
    rbuild(&root)
        .args(["--platform", "linux/s390x"])
        .arg(&ctx)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("other platforms need emulation"));
    // Remote cache flags say they do nothing yet.
    let out = rbuild(&root)
        .args([
            "--progress=plain",
            "--cache-from",
            "type=registry,ref=x",
            "--cache-to",
            "type=inline",
        ])
        .arg(&ctx)
        .assert()
        .success();
    let log = text(&out.get_output().stderr);
    assert!(log.contains("--cache-from is not supported yet"), "{log}");
    assert!(log.contains("--cache-to is not supported yet"), "{log}");
}

#[test]
fn network_and_secrets_reach_the_run() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(
        work.path(),
        "FROM busybox\nRUN --mount=type=secret,id=token cat /run/secrets/token; grep -c : /proc/net/dev\n",
    );
    let secret = work.path().join("token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let out = rbuild(&root)
        .args(["--progress=plain", "--network", "none", "--secret"])
        .arg(format!("id=token,src={}", secret.display()))
        .arg(&ctx)
        .assert()
        .success();
    // The secret is read; only lo exists with --network none.
    assert_eq!(step_lines(&out.get_output().clone()), ["s3cret", "1"]);
}

/// A scratch dir, its store, a context copying `file.txt` onto busybox,
/// and a fresh registry with the image name `cli/NAME:1` in it.
fn copy_build_for_a_registry(
    name: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf, TestRegistry, String) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(work.path(), "FROM busybox\nCOPY file.txt /data/file.txt\n");
    let registry = TestRegistry::start(&[]);
    let image = format!("{}/cli/{name}:1", registry.addr);
    (work, root, ctx, registry, image)
}

#[test]
fn outputs_push_and_load() {
    let (work, root, ctx, _registry, image) = copy_build_for_a_registry("out");
    let (oci, oci_tar, docker, fs_tar, local) = (
        work.path().join("oci"),
        work.path().join("oci.tar"),
        work.path().join("docker.tar"),
        work.path().join("fs.tar"),
        work.path().join("local"),
    );
    rbuild(&root)
        .args(["-t", &image, "--push"])
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", oci.display()))
        .arg("-o")
        .arg(format!("type=oci,dest={}", oci_tar.display()))
        .arg("-o")
        .arg(format!("type=docker,dest={}", docker.display()))
        .arg("-o")
        .arg(format!("type=tar,dest={}", fs_tar.display()))
        .arg("-o")
        .arg(format!("type=local,dest={}", local.display()))
        .arg(&ctx)
        .assert()
        .success();
    // The registry has it; skopeo reads both OCI outputs and the archive.
    std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .assert()
        .success();
    for source in [
        format!("oci:{}:1", oci.display()),
        format!("oci-archive:{}:1", oci_tar.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        std::process::Command::new("skopeo")
            .args(["inspect", &source])
            .assert()
            .success();
    }
    // The file-system outputs hold the image's files.
    assert_eq!(
        std::fs::read_to_string(local.join("data/file.txt")).unwrap(),
        "from the context\n"
    );
    assert!(local.join("bin/busybox").is_file());
    let listing = std::process::Command::new("tar")
        .arg("tf")
        .arg(&fs_tar)
        .output()
        .unwrap();
    assert!(
        text(&listing.stdout)
            .lines()
            .any(|l| l.trim_start_matches("./") == "data/file.txt"),
        "{}",
        text(&listing.stdout)
    );

    // --load into a Docker API socket (podman's), then run it.
    if is_root() {
        let podman = Podman::new();
        let (host, _service) = podman.service();
        rbuild(&root)
            .env("DOCKER_HOST", &host)
            .args(["-t", "localhost/cli-loaded:1", "--load"])
            .arg(&ctx)
            .assert()
            .success();
        assert_eq!(
            podman.run("localhost/cli-loaded:1", &["cat", "/data/file.txt"]),
            "from the context\n"
        );
    }
}

/// A step's layer is stored plain (digest = diff_id) while the image is
/// only tagged, and ships gzip-compressed: a push and an OCI layout of the
/// same build carry the very same compressed manifest, over the config
/// (image id) the tagged image has.
#[test]
fn a_tagged_image_keeps_plain_layers_and_a_shipped_one_is_gzip() {
    use rbuild::image::reference::Reference;
    let (work, root, ctx, _registry, image) = copy_build_for_a_registry("plain");
    let iid = |name: &str| {
        let file = work.path().join(name);
        (file.clone(), move || {
            std::fs::read_to_string(&file).unwrap()
        })
    };
    let (tagged_iid, tagged_id) = iid("tagged.iid");
    rbuild(&root)
        .args(["-t", &image, "--iidfile"])
        .arg(&tagged_iid)
        .arg(&ctx)
        .assert()
        .success();
    let store = rbuild::cache::ContentStore::open(&root).unwrap();
    let local = rbuild::image::local::LocalImages::open(&root)
        .get(&image.parse::<Reference>().unwrap(), &store)
        .expect("the tagged image");
    let copied = local.layers.last().unwrap();
    assert!(copied.is_uncompressed(), "{copied:?}");
    let head = std::fs::read(store.blob_path(&copied.digest)).unwrap();
    assert_ne!(&head[..2], &[0x1f, 0x8b], "a plain tar, not gzip");
    let oci = work.path().join("oci");
    let (pushed_iid, pushed_id) = iid("pushed.iid");
    rbuild(&root)
        .args(["-t", &image, "--push", "--iidfile"])
        .arg(&pushed_iid)
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", oci.display()))
        .arg(&ctx)
        .assert()
        .success();
    assert_eq!(
        pushed_id(),
        tagged_id(),
        "the same config: the same image id"
    );
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", text(&raw.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert!(
            layer["mediaType"].as_str().unwrap().ends_with("+gzip"),
            "{manifest}"
        );
    }
    let pushed = format!("sha256:{}", sha256_hex(&raw.stdout));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str().unwrap(),
        pushed,
        "the layout and the registry got one compressed manifest"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn kaniko_aliases_give_the_same_image() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&[]);
    let ctx = context(
        work.path(),
        "FROM busybox\nARG V=1\nRUN echo $V > /v\nCOPY file.txt /\nLABEL l=1\n",
    );
    // docker style and kaniko style, each on fresh storage, epoch fixed.
    let docker_tag = format!("{}/cli/docker:1", registry.addr);
    let kaniko_tag = format!("{}/cli/kaniko:1", registry.addr);
    let docker_digest = work.path().join("docker.digest");
    let kaniko_digest = work.path().join("kaniko.digest");
    rbuild(&work.path().join("root-docker"))
        .args(["-t", &docker_tag, "--push", "--build-arg", "V=2"])
        .args(["--source-date-epoch", "0", "--metadata-file"])
        .arg(&docker_digest)
        .arg("-f")
        .arg(ctx.join("Dockerfile"))
        .arg("-o")
        .arg(format!(
            "type=docker,dest={}",
            work.path().join("d.tar").display()
        ))
        .arg(&ctx)
        .assert()
        .success();
    rbuild(&work.path().join("root-kaniko"))
        .args(["--destination", &kaniko_tag, "--build-arg", "V=2"])
        .args([
            "--reproducible",
            "--insecure",
            "--skip-tls-verify",
            "--cache=true",
        ])
        .arg(format!("--context=dir://{}", ctx.display()))
        .args(["--dockerfile", "Dockerfile", "--digest-file"])
        .arg(&kaniko_digest)
        .arg("--tar-path")
        .arg(work.path().join("k.tar"))
        .assert()
        .success();
    let docker_meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&docker_digest).unwrap()).unwrap();
    let kaniko = std::fs::read_to_string(&kaniko_digest).unwrap();
    assert_eq!(docker_meta["containerimage.digest"], kaniko.trim());
    // Both registries' manifests are that digest.
    for tag in [&docker_tag, &kaniko_tag] {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{tag}"))
            .output()
            .unwrap();
        assert_eq!(text(&out.stdout).trim(), kaniko.trim());
    }
    // --no-push builds without pushing; --oci-layout-path writes a layout.
    let layout = work.path().join("kaniko-oci");
    let unpushed = format!("{}/cli/never:1", registry.addr);
    rbuild(&work.path().join("root-kaniko"))
        .args([
            "--destination",
            &unpushed,
            "--no-push",
            "--build-arg",
            "V=2",
        ])
        .arg(format!("--context={}", ctx.display()))
        .arg("--oci-layout-path")
        .arg(&layout)
        .assert()
        .success();
    assert!(layout.join("index.json").is_file());
    std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{unpushed}"))
        .assert()
        .failure();
    // --cache=false is --no-cache; --single-snapshot makes one layer.
    let out = rbuild(&work.path().join("root-kaniko"))
        .args([
            "--progress=plain",
            "--cache=false",
            "--single-snapshot",
            "--build-arg",
            "V=2",
        ])
        .args(["--reproducible", "--digest-file"])
        .arg(work.path().join("single.digest"))
        .arg(format!("--context={}", ctx.display()))
        .arg("--oci-layout-path")
        .arg(work.path().join("single-oci"))
        .assert()
        .success();
    assert_eq!(common::ran_steps(&out.get_output().clone()).len(), 2);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("single-oci/index.json")).unwrap())
            .unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            work.path()
                .join("single-oci/blobs/sha256")
                .join(manifest_hex),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "the busybox layer and one snapshot"
    );
}

#[test]
fn completion_scripts_and_version() {
    let work = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = rbuild(work.path())
            .args(["completion", shell])
            .assert()
            .success();
        let script = text(&out.get_output().stdout);
        assert!(script.contains("destination"), "{shell}");
        assert!(script.contains("prune"), "{shell}");
    }
    rbuild(work.path())
        .arg("version")
        .assert()
        .success()
        .stdout(predicates::str::starts_with("rbuild "));
}

#[test]
fn insecure_registry_names_a_plain_http_registry() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(work.path(), "FROM busybox\nCOPY file.txt /\n");
    // 127.0.0.2 is not "localhost": TLS is expected there unless named.
    let registry = TestRegistry::start_on("127.0.0.2");
    let image = format!("{}/cli/insecure:1", registry.addr);
    rbuild(&root)
        .args(["-t", &image, "--push"])
        .arg(&ctx)
        .assert()
        .code(3);
    rbuild(&root)
        .args([
            "-t",
            &image,
            "--push",
            "--insecure-registry",
            &registry.addr,
        ])
        .arg(&ctx)
        .assert()
        .success();
    // kaniko's --insecure does the same for its destinations.
    let kaniko = format!("{}/cli/insecure-kaniko:1", registry.addr);
    rbuild(&root)
        .args(["--destination", &kaniko, "--insecure"])
        .arg(format!("--context={}", ctx.display()))
        .assert()
        .success();
    std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{kaniko}"))
        .assert()
        .success();
}

#[test]
fn cpus_and_memory_limits_reach_the_step_cgroup() {
    if !is_root() {
        common::skip("cgroups are writable here only as root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The step reads its own cgroup's limits (v1 cpu/memory or v2).
    let ctx = context(
        work.path(),
        "FROM busybox\n\
         RUN for c in cpu memory; do \
               p=$(grep -E \":$c(,cpuacct)?:|^0::/.\" /proc/self/cgroup | head -1 | cut -d: -f3); \
               for f in /sys/fs/cgroup/$c$p/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct$p/cpu.cfs_quota_us \
                        /sys/fs/cgroup$p/cpu.max /sys/fs/cgroup/$c$p/memory.limit_in_bytes /sys/fs/cgroup$p/memory.max; do \
                 [ -f $f ] && cat $f; \
               done; \
             done; true\n",
    );
    let out = rbuild(&work.path().join("root"))
        .args(["--progress=plain", "--cpus", "0.5", "--memory", "96m"])
        .arg(&ctx)
        .assert()
        .success();
    let lines = step_lines(&out.get_output().clone());
    assert!(
        lines.iter().any(|l| l == "50000" || l == "50000 100000"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "100663296"), "{lines:?}");
}

#[test]
fn pull_prefers_the_registry_over_the_local_image() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let registry = TestRegistry::start(&[]);
    let base = format!("{}/cli/base:1", registry.addr);
    // The registry gets "pushed"; the local store then gets "local" under
    // the same name.
    for (content, push) in [("pushed", true), ("local", false)] {
        let dir = work.path().join(content);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!("FROM busybox\nRUN echo {content} > /which\n"),
        )
        .unwrap();
        let mut cmd = rbuild(&root);
        cmd.args(["-t", &base]);
        if push {
            cmd.arg("--push");
        }
        cmd.arg(&dir).assert().success();
    }
    let child = work.path().join("child");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(
        child.join("Dockerfile"),
        format!("FROM {base}\nRUN cat /which\n"),
    )
    .unwrap();
    let which = |extra: &[&str]| {
        let out = rbuild(&root)
            .args(["--progress=plain", "--no-cache"])
            .args(extra)
            .arg(&child)
            .assert()
            .success();
        step_lines(&out.get_output().clone())
    };
    assert_eq!(which(&[]), ["local"]);
    assert_eq!(which(&["--pull"]), ["pushed"]);
}

#[test]
fn skip_tls_verify_and_the_kaniko_flags_that_only_warn() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(work.path(), "FROM busybox\nCOPY file.txt /\n");
    // A TLS registry whose CA rbuild is not told about.
    let (registry, _ca) = TestRegistry::start_tls("127.0.0.2");
    let image = format!("{}/cli/tls:1", registry.addr);
    rbuild(&root)
        .args(["--destination", &image])
        .arg(format!("--context={}", ctx.display()))
        .assert()
        .code(3);
    rbuild(&root)
        .args(["--destination", &image, "--skip-tls-verify"])
        .arg(format!("--context={}", ctx.display()))
        .assert()
        .success();
    // Accepted, said to do nothing yet, and the build still works.
    let host = rbuild::solver::Platform::host().format();
    let out = rbuild(&root)
        .args(["--progress=plain", "--cache-repo", "r.example/cache"])
        .args([
            "--registry-mirror",
            "mirror.example",
            "--cache-dir",
            "/nowhere",
        ])
        .args(["--custom-platform", &host])
        .arg(format!("--context={}", ctx.display()))
        .assert()
        .success();
    let log = text(&out.get_output().stderr);
    assert!(log.contains("--cache-repo is not supported yet"), "{log}");
    assert!(
        log.contains("--registry-mirror is not supported yet"),
        "{log}"
    );
    assert!(log.contains("--cache-dir is not needed"), "{log}");
    rbuild(&root)
        .args(["--custom-platform", "linux/s390x"])
        .arg(format!("--context={}", ctx.display()))
        .assert()
        .code(2);
}

#[test]
fn output_name_is_the_image_name_as_buildx_gives_it() {
    let work = tempfile::tempdir().unwrap();
    let ctx = context(work.path(), "FROM busybox\nCOPY file.txt /f\n");
    let registry = TestRegistry::start(&[]);
    let image = format!("{}/cli/named:2", registry.addr);
    // No -t: the registry output's name= is where the image goes.
    rbuild(&work.path().join("root"))
        .arg("-o")
        .arg(format!("type=registry,name={image}"))
        .arg(&ctx)
        .assert()
        .success();
    let inspect = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    // A name that is no reference is refused, not dropped.
    rbuild(&work.path().join("root"))
        .args(["-o", "type=registry,name=Not A Name"])
        .arg(&ctx)
        .assert()
        .code(2);
}

#[test]
fn syntax_and_check_directives_are_not_silently_ignored() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let build = |dockerfile: &str| {
        let ctx = context(work.path(), dockerfile);
        let out = rbuild(&root).arg(&ctx).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // The syntax rbuild implements, and checks switched off: nothing to say.
    let quiet = build("# syntax=docker/dockerfile:1.7\n# check=skip=all\nFROM busybox\n");
    assert!(
        !quiet.contains("# syntax") && !quiet.contains("# check"),
        "{quiet}"
    );
    let loud = build("# syntax=example.com/my/frontend:2\n# check=error=true\nFROM busybox\n");
    assert!(
        loud.contains("# syntax=example.com/my/frontend:2: rbuild does not run frontend images"),
        "{loud}"
    );
    assert!(
        loud.contains("# check=error=true: rbuild has no build checks yet"),
        "{loud}"
    );
}

/// Each exit code the README gives a build, by a build that earns it:
/// 1 a step failed, 2 a Dockerfile error (parse or plan), 3 the
/// environment (a base image that cannot be pulled: nothing listens on
/// 127.0.0.1:1).
#[test]
fn every_build_failure_exits_with_the_readme_code() {
    if !is_root() {
        common::skip("RUN in the full tier needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let cases: &[(&str, i32, &str)] = &[
        ("FROM busybox\nRUN exit 7\n", 1, "exit code: 7"),
        ("FROM busybox\nCOPY no-such-file /\n", 1, "not found"),
        ("FROM busybox\nBOGUS x\n", 2, "unknown instruction"),
        (
            "FROM busybox\nCOPY --link --chown=app file.txt /\n",
            2,
            "--link",
        ),
        ("FROM busybox\nCOPY --from=9 file.txt /\n", 2, "stage index"),
        (
            "FROM busybox\nRUN --security=insecure true\n",
            2,
            "security.insecure",
        ),
        ("FROM 127.0.0.1:1/nothing:1\nRUN true\n", 3, "127.0.0.1:1"),
        (
            "FROM busybox\nRUN --mount=type=secret,id=tok,required=true true\n",
            1,
            "secret tok is required but was not provided",
        ),
    ];
    for (n, (dockerfile, code, says)) in cases.iter().enumerate() {
        let ctx = context(&work.path().join(n.to_string()), dockerfile);
        let out = rbuild(&root).arg(&ctx).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{dockerfile:?}: {err}");
        assert!(err.contains(says), "{dockerfile:?}: {err}");
    }
    // The machine's fault, found by the context module's typed error: no
    // git to check a git source out with (PATH without it) is exit 3,
    // where a ref git cannot find would be the step's (1).
    let ctx = context(
        &work.path().join("nogit"),
        "FROM busybox\nADD http://127.0.0.1:1/repo.git /src\n",
    );
    let out = rbuild(&root)
        .env("PATH", work.path().join("empty-path"))
        .arg(&ctx)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("running git") && err.contains("install git"),
        "{err}"
    );
}
