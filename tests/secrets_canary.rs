//! A secret's value and the registry password land nowhere (issue 22):
//! builds that mount a secret (a RUN that uses it, a cache mount beside
//! it, a RUN that then fails) and push with credentials from
//! `config.json` to a registry that requires them, with plain and JSON
//! progress, a metadata file and OCI and local outputs. Then every byte
//! they left is searched for the two canary values, gzip layers
//! decompressed: the whole storage root (layers, snapshots, the cache
//! index, cache mounts, leases), the outputs, the metadata file, both
//! progress logs, the failing build's error, and the image as the
//! registry serves it (copied out by skopeo).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{docker_config, is_root, skip, stderr, TestRegistry};

/// Every regular file under `dir` (symlinks not followed).
fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_under(&entry.path(), found);
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
}

/// A file's bytes, and its gzip stream's too when it is one.
fn contents(path: &Path) -> Vec<Vec<u8>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        if flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .is_ok()
        {
            all.push(plain);
        }
    }
    all.push(bytes);
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Where under `dirs` any of `canaries` appears.
fn leaks(dirs: &[&Path], canaries: &[&str]) -> (usize, Vec<String>) {
    let mut files = Vec::new();
    for dir in dirs {
        files_under(dir, &mut files);
    }
    let mut found = Vec::new();
    for file in &files {
        for bytes in contents(file) {
            for canary in canaries {
                if holds(&bytes, canary) {
                    found.push(format!("{canary} in {}", file.display()));
                }
            }
        }
    }
    (files.len(), found)
}

fn build(root: &Path, docker: &Path, args: &[&str], ctx: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("build")
        .arg("--root")
        .arg(root)
        .args(args)
        .arg(ctx)
        .env("DOCKER_CONFIG", docker)
        .env_remove("RBUILD_FAILPOINT")
        .output()
        .unwrap()
}

#[test]
fn secrets_and_credentials_land_in_no_artifact() {
    if !is_root() {
        skip("RUN in the full tier needs root");
        return;
    }
    let secret_value = format!("CANARY-secret-{}-7f3a", std::process::id());
    let password = format!("CANARY-password-{}-91c2", std::process::id());
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&[("alice", &password)]);
    let docker = work.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    docker_config(&docker, &registry.addr, "alice", &password);
    let secret = work.path().join("token");
    std::fs::write(&secret, format!("{secret_value}\n")).unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN --mount=type=secret,id=tok --mount=type=cache,target=/cache \
         grep -q CANARY /run/secrets/tok && wc -c /run/secrets/tok > /cache/seen && echo used > /used\n\
         COPY f /f\n",
    )
    .unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();
    std::fs::write(
        ctx.join("Failing.Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && exit 3\n",
    )
    .unwrap();

    let root = work.path().join("root");
    let image = format!("{}/canary/app:1", registry.addr);
    let secret_arg = format!("id=tok,src={}", secret.display());
    let (oci, local, metadata) = (
        work.path().join("oci"),
        work.path().join("local"),
        work.path().join("metadata.json"),
    );
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let record = |name: &str, out: &Output| {
        std::fs::write(logs.join(format!("{name}.out")), &out.stdout).unwrap();
        std::fs::write(logs.join(format!("{name}.err")), &out.stderr).unwrap();
    };
    let oci_arg = format!("type=oci,dest={},tar=false", oci.display());
    let local_arg = format!("type=local,dest={}", local.display());
    let metadata_arg = metadata.display().to_string();
    let pushed = build(
        &root,
        &docker,
        &[
            "--progress=plain",
            "--secret",
            &secret_arg,
            "-t",
            &image,
            "--push",
            "-o",
            &oci_arg,
            "-o",
            &local_arg,
            "--metadata-file",
            &metadata_arg,
        ],
        &ctx,
    );
    record("pushed", &pushed);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert_eq!(
        std::fs::read_to_string(local.join("used")).unwrap(),
        "used\n",
        "the step read the secret"
    );
    // Again with JSON progress and no cache: every event as JSON.
    let json = build(
        &root,
        &docker,
        &[
            "--progress=json",
            "--no-cache",
            "--secret",
            &secret_arg,
            "-t",
            &image,
            "--push",
        ],
        &ctx,
    );
    record("json", &json);
    assert!(json.status.success(), "{}", stderr(&json));
    let failing_file = ctx.join("Failing.Dockerfile").display().to_string();
    let failed = build(
        &root,
        &docker,
        &[
            "--progress=plain",
            "--secret",
            &secret_arg,
            "-f",
            &failing_file,
        ],
        &ctx,
    );
    record("failed", &failed);
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));

    // The image as the registry serves it, all of it.
    let served = work.path().join("served");
    let creds = format!("alice:{password}");
    let copied = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", served.display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));

    let (searched, found) = leaks(
        &[
            &root,
            &oci,
            &local,
            &metadata_parent(&metadata),
            &logs,
            &served,
        ],
        &[&secret_value, &password],
    );
    assert!(searched > 50, "only {searched} files searched");
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
    eprintln!("secrets canary: {searched} files searched, no canary found");
}

/// The metadata file's dir holds only what the test wrote there, so the
/// file is searched through a dir of its own.
fn metadata_parent(metadata: &Path) -> PathBuf {
    let dir = metadata.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(metadata, dir.join("metadata.json")).unwrap();
    dir
}
