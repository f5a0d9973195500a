//! The differential harness (issue 13): every case under
//! `testdata/differential/` is built by BuildKit (Debian's docker.io,
//! dockerd 20.10, started privately) and by rbuild, both pushed to the real
//! registry, read back with skopeo and unpacked by umoci, then compared:
//! the image config's user-facing fields, the layer count, the history
//! (`created_by`, `empty_layer`) and every path's type, mode, owner, size,
//! content hash, link target and xattrs.
//!
//! What must differ is never compared, and is listed once, in [`IGNORED`].
//! Cases where rbuild differs on purpose, or where Debian's BuildKit 0.8
//! disagrees with today's documented behaviour, are listed in [`KNOWN`]
//! with the reason; every other case must be equivalent.
//!
//! BuildKit's side is cached under `target/differential/` by a digest of
//! the case's files, the busybox base and this harness's version, so a
//! rerun builds with BuildKit only what changed. rbuild's side always
//! builds. Needs root and docker.io; under `RBUILD_REQUIRE_PRIVILEGED=1`
//! (CI) their absence fails the test.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

mod common;

use common::{is_root, run_ok, skip, stderr, Dockerd, TestRegistry};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/differential");
/// Changes whenever what is recorded of BuildKit's image changes.
const HARNESS_VERSION: &str = "1";

/// What is never compared, because it must differ between two builders.
pub const IGNORED: &[&str] = &[
    "digests of configs and manifests, image ids",
    "created times of the config and of history entries",
    "mtimes and atimes of files",
    "history comment and author (\"buildkit.dockerfile.v0\")",
    "docker-only config fields (container, container_config, docker_version, Hostname, Domainname, Attach*, Tty, OpenStdin, StdinOnce, Image)",
    "layer compression and tar encoding (only the unpacked tree counts)",
];

/// Cases allowed to differ, and why.
const KNOWN: &[(&str, &str)] = &[];

/// Where Debian's BuildKit 0.8 is older than today's BuildKit, the case is
/// compared against a hand-written expectation: BuildKit 0.8's recorded
/// description with these replacements (in history and tree strings), each
/// with the reason. A replacement that no longer applies fails the case.
type Patch = (&'static str, &'static str);
const TODAY: &[(&str, &str, &[Patch])] = &[
    (
        "env-arg",
        "today's runCommandString lists a redeclared ARG once; 0.8 repeated it",
        &[("RUN |2 A=1 A=1 ", "RUN |1 A=1 ")],
    ),
    (
        "healthcheck-none",
        "today's HEALTHCHECK history prints StartInterval (Docker 25) after StartPeriod",
        &[(r#""0s" "0s" "0s" '"#, r#""0s" "0s" "0s" "0s" '"#)],
    ),
    (
        "stopsignal-healthcheck",
        "today's HEALTHCHECK history prints StartInterval (Docker 25) after StartPeriod",
        &[(r#""3s" "0s" '"#, r#""3s" "0s" "0s" '"#)],
    ),
    (
        "healthcheck-exec",
        "today's HEALTHCHECK history prints StartInterval (Docker 25) after StartPeriod",
        &[(r#""10s" '"#, r#""10s" "0s" '"#)],
    ),
    (
        "copy-chown-chmod",
        "today's COPY --chmod applies to copied directories too (fsutil#228, for buildkit#4945); \
         today's COPY history names --chown and --chmod (convert_copy.go)",
        &[
            ("/d dir 755 1:2 ", "/d dir 751 1:2 "),
            ("COPY f /f", "COPY --chown=12:34 f /f"),
            ("COPY f /g", "COPY --chmod=600 f /g"),
            ("COPY d /d", "COPY --chown=1:2 --chmod=751 d /d"),
        ],
    ),
    (
        "copy-chown-name-with-numeric-group",
        CHOWN_HISTORY,
        &[("COPY f /f", "COPY --chown=u:55 f /f")],
    ),
    (
        "copy-chown-name",
        CHOWN_HISTORY,
        &[
            ("COPY f /f", "COPY --chown=svc:svc f /f"),
            ("COPY d /d", "COPY --chown=svc d /d"),
        ],
    ),
    (
        "copy-chown-numeric-only-uid",
        CHOWN_HISTORY,
        &[("COPY f /f", "COPY --chown=4242 f /f")],
    ),
    (
        "copy-heredoc-expand",
        "heredoc COPY needs dockerfile 1.4 (0.8 copies files holding what today's expansion \
         writes: variables expanded, quotes kept); today's history names the heredocs",
        &[
            ("COPY expected/one /greet/one", "COPY <<EOF /greet/one"),
            ("COPY expected/two /greet/two", "COPY <<EOF /greet/two"),
        ],
    ),
    (
        "run-heredoc",
        "heredoc RUN needs dockerfile 1.4 (0.8 runs the same commands on one line); today's \
         history is the shell and the body (one heredoc) or the line, body and delimiter",
        &[
            (
                r#"RUN /bin/sh -c echo one > /h1 && echo "two $((1+1))" >> /h1"#,
                "RUN /bin/sh -c echo one > /h1\necho \"two $((1+1))\" >> /h1\n",
            ),
            (
                r#"RUN /bin/sh -c printf 'line %s\n' "$HOME" > /h3"#,
                "RUN /bin/sh -c cat <<EOF > /h3\nline $HOME\nEOF",
            ),
        ],
    ),
    (
        "run-heredoc-shebang",
        "heredoc RUN needs dockerfile 1.4 (0.8 writes what the script does); today's BuildKit \
         runs a #! body as /dev/pipes/<name> (mode 0755) through the shell",
        &[(
            r#"RUN /bin/sh -c echo "shebang /dev/pipes/EOF 755" > /sb"#,
            "RUN /bin/sh -c /dev/pipes/EOF",
        )],
    ),
    (
        "copy-heredoc-escapes",
        "heredoc COPY needs dockerfile 1.4 (0.8 copies files holding what today's expansion \
         writes: escapes processed unless the delimiter is quoted); today's history names the heredocs",
        &[
            ("COPY expected/unquoted /e/unquoted", "COPY <<EOF /e/unquoted"),
            ("COPY expected/quoted /e/quoted", "COPY <<EOF /e/quoted"),
        ],
    ),
    (
        "run-heredoc-awk-shell",
        "heredoc RUN needs dockerfile 1.4 (0.8 gives awk the same program on the line); today's \
         history has the body with its newline",
        &[(
            r#"RUN /usr/bin/awk BEGIN { print "from awk" > "/awk.txt" }"#,
            "RUN /usr/bin/awk BEGIN { print \"from awk\" > \"/awk.txt\" }\n",
        )],
    ),
    (
        "run-heredoc-shebang-chomp",
        "heredoc RUN needs dockerfile 1.4 (0.8 runs the same awk program); today's BuildKit runs \
         the tab-stripped #! body as /dev/pipes/EOF",
        &[(
            r#"RUN /bin/sh -c awk 'BEGIN { print "chomped" > "/c.txt" }'"#,
            "RUN /bin/sh -c /dev/pipes/EOF",
        )],
    ),
    (
        "copy-chmod-symbolic",
        "symbolic --chmod needs dockerfile 1.6 (0.8 gets the octal equivalent); today's history \
         names --chmod as written",
        &[("COPY f /f", "COPY --chmod=u=rw,go=r f /f")],
    ),
    (
        "run-mount-env-arg-expansion",
        "0.8 expands no variables in --mount options (today's expands ARG and ENV: \
         testMountArg, testMountEnvVar), so 0.8 gets the values written out; the history is \
         the same; today's BuildKit removes the empty mount-point stubs",
        &[("/mnt dir 755 0:0 ", ""), ("/mnt/x dir 755 0:0 ", "")],
    ),
    (
        "copy-link-chmod",
        "--link needs dockerfile 1.4 (0.8 copies without it: today's BuildKit links only \
         without --chmod); today's history names --chmod",
        &[("COPY f /p/f", "COPY --chmod=600 f /p/f")],
    ),
    (
        "add-archive-chown",
        "today's ADD --chown sets the owner of every unpacked entry (unpack_root.go \
         mapArchiveHeaderOwner), 0.8 kept the archive's; today's history names --chown",
        &[
            ("ADD a.tar /x/", "ADD --chown=1:2 a.tar /x/"),
            ("ADD a.tar /new/deep/", "ADD --chown=3 a.tar /new/deep/"),
            ("/x/d dir 750 5:6 ", "/x/d dir 750 1:2 "),
            ("/x/d/f file 644 7:8 ", "/x/d/f file 644 1:2 "),
            ("/x/hl file 644 7:8 ", "/x/hl file 644 1:2 "),
            (
                "/x/implied/deep/g file 600 9:9 ",
                "/x/implied/deep/g file 600 1:2 ",
            ),
            ("/x/l symlink 777 3:3 ", "/x/l symlink 777 1:2 "),
            ("/new/deep/d dir 750 5:6 ", "/new/deep/d dir 750 3:3 "),
            ("/new/deep/d/f file 644 7:8 ", "/new/deep/d/f file 644 3:3 "),
            ("/new/deep/hl file 644 7:8 ", "/new/deep/hl file 644 3:3 "),
            (
                "/new/deep/implied/deep/g file 600 9:9 ",
                "/new/deep/implied/deep/g file 600 3:3 ",
            ),
            (
                "/new/deep/l symlink 777 3:3 ",
                "/new/deep/l symlink 777 3:3 ",
            ),
        ],
    ),
    (
        "run-mount-bind",
        STUBS_REMOVED,
        &[("/ctx dir 755 0:0 ", "")],
    ),
    (
        "run-mount-bind-from",
        STUBS_REMOVED,
        &[("/other dir 755 0:0 ", "")],
    ),
    (
        "run-mount-bind-source",
        STUBS_REMOVED,
        &[("/m dir 755 0:0 ", "")],
    ),
    (
        "run-mount-cache",
        STUBS_REMOVED,
        &[("/cache dir 755 0:0 ", "")],
    ),
    (
        "run-mount-cache-id-locked",
        STUBS_REMOVED,
        &[("/c dir 755 0:0 ", "")],
    ),
    (
        "run-mount-tmpfs",
        STUBS_REMOVED,
        &[("/scratch dir 755 0:0 ", "")],
    ),
    (
        "run-mount-cache-owner-mode",
        STUBS_REMOVED,
        &[("/c dir 755 0:0 ", "")],
    ),
    (
        "run-mount-cache-keyed-by-owner",
        STUBS_REMOVED,
        &[("/c dir 755 0:0 ", "")],
    ),
    (
        "run-mount-bind-rw-discarded",
        STUBS_REMOVED,
        &[("/m dir 755 0:0 ", "")],
    ),
    (
        "run-mount-cache-private",
        STUBS_REMOVED,
        &[("/c dir 755 0:0 ", "")],
    ),
];

/// Why a mount target's stub is gone today.
const STUBS_REMOVED: &str = "today's BuildKit removes the empty mount-point stubs it made for \
     --mount targets (executor/stubs.go MountStubsCleaner); 0.8 left them";

const CHOWN_HISTORY: &str = "today's COPY history names --chown (convert_copy.go)";

/// Applies `from -> to` to every string in `value`; how many changed. An
/// empty `to` removes the array items that are exactly `from` (a path
/// today's BuildKit does not leave in the image).
fn patch(value: &mut Value, from: &str, to: &str) -> usize {
    match value {
        Value::String(text) if !to.is_empty() && text.contains(from) => {
            *text = text.replace(from, to);
            1
        }
        Value::Array(items) if to.is_empty() && items.iter().any(|v| v.as_str() == Some(from)) => {
            let before = items.len();
            items.retain(|v| v.as_str() != Some(from));
            before - items.len()
        }
        Value::Array(items) => items.iter_mut().map(|v| patch(v, from, to)).sum(),
        Value::Object(map) => map.values_mut().map(|v| patch(v, from, to)).sum(),
        _ => 0,
    }
}

/// BuildKit's description as today's BuildKit would give it, for the
/// cases in [`TODAY`]; the reason, when patched.
fn as_today(name: &str, described: &mut Value) -> Option<&'static str> {
    let (_, reason, patches) = TODAY.iter().find(|(case, _, _)| *case == name)?;
    for (from, to) in *patches {
        assert!(
            patch(described, from, to) > 0,
            "{name}: the expectation {from:?} -> {to:?} no longer applies to BuildKit's image"
        );
    }
    Some(reason)
}

/// The config fields compared (`config.*`).
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
    "ArgsEscaped",
];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every path below `root` (relative, with its metadata), depth first.
fn walk(root: &Path) -> Vec<(String, PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            found.push((rel, path, meta));
        }
    }
    found
}

/// Every file of a case, relative and sorted, with its bytes.
fn case_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .filter(|(_, _, meta)| !meta.is_dir())
        .map(|(rel, path, meta)| {
            let bytes = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec()
            } else {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend_from_slice(format!("\0mode {:o}", meta.mode()).as_bytes());
                bytes
            };
            (rel, bytes)
        })
        .collect();
    files.sort();
    files
}

fn case_key(dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(HARNESS_VERSION);
    h.update(std::fs::read("/bin/busybox").unwrap_or_default());
    for (name, bytes) in case_files(dir) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(&bytes);
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line per path of an unpacked root: type, mode, owner, size, hash,
/// link target, xattrs.
fn tree(rootfs: &Path) -> Vec<String> {
    let mut lines: Vec<String> = walk(rootfs)
        .into_iter()
        .map(|(rel, path, meta)| {
            let ft = meta.file_type();
            let (kind, extra) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("symlink", target.to_string_lossy().into_owned())
            } else if ft.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                ("file", format!("{} {}", bytes.len(), sha256_hex(&bytes)))
            } else if ft.is_char_device() || ft.is_block_device() {
                let rdev = meta.rdev();
                let kind = if ft.is_char_device() { "char" } else { "block" };
                (kind, format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else {
                ("socket", String::new())
            };
            format!(
                "/{rel} {kind} {:o} {}:{} {extra}{}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                xattrs(&path)
            )
        })
        .collect();
    lines.sort();
    lines
}

fn xattrs(path: &Path) -> String {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return String::new();
    };
    let mut out = String::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 4096];
        let len = rustix::fs::lgetxattr(path, key.as_str(), &mut value[..]).unwrap_or(0);
        out.push_str(&format!(" xattr:{key}={}", sha256_hex(&value[..len])));
    }
    out
}

/// What is compared of one image, as JSON (BuildKit's side is cached).
fn describe(reference: &str, work: &Path) -> Value {
    // The manifest and config as pushed: copying to an OCI layout would
    // convert a Docker config and drop its Healthcheck, OnBuild and Shell.
    let raw = |extra: &[&str]| -> Value {
        let out = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .args(extra)
                .arg(format!("docker://{reference}")),
        );
        serde_json::from_str(&out).unwrap()
    };
    let manifest = raw(&[]);
    let config = raw(&["--config"]);
    let rootfs = common::unpack_remote(reference, work);
    let mut fields = serde_json::Map::new();
    for field in CONFIG_FIELDS {
        let value = &config["config"][field];
        // Absent, null and empty say the same thing.
        let empty = value.is_null()
            || value.as_array().is_some_and(|a| a.is_empty())
            || value.as_object().is_some_and(|o| o.is_empty())
            || value.as_str().is_some_and(str::is_empty)
            || value.as_bool() == Some(false);
        fields.insert(
            field.to_string(),
            if empty { Value::Null } else { value.clone() },
        );
    }
    let history: Vec<Value> = config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| json!([h["created_by"], h["empty_layer"].as_bool().unwrap_or(false)]))
        .collect();
    json!({
        "config": fields,
        "layers": manifest["layers"].as_array().map_or(0, Vec::len),
        "history": history,
        "tree": tree(&rootfs),
    })
}

/// Lines that differ between BuildKit's description and rbuild's.
fn differences(bk: &Value, rb: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in CONFIG_FIELDS {
        let (a, b) = (&bk["config"][field], &rb["config"][field]);
        if a != b {
            out.push(format!("config.{field}: BuildKit {a}, rbuild {b}"));
        }
    }
    if bk["layers"] != rb["layers"] {
        out.push(format!(
            "layers: BuildKit {}, rbuild {}",
            bk["layers"], rb["layers"]
        ));
    }
    if bk["history"] != rb["history"] {
        out.push(format!(
            "history:\n  BuildKit {}\n  rbuild   {}",
            bk["history"], rb["history"]
        ));
    }
    let lines = |v: &Value| -> BTreeSet<String> {
        v["tree"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (lines(bk), lines(rb));
    for l in a.difference(&b).take(20) {
        out.push(format!("tree - {l}  (BuildKit only)"));
    }
    for l in b.difference(&a).take(20) {
        out.push(format!("tree + {l}  (rbuild only)"));
    }
    out
}

/// The text both builders' errors must contain, for a case with a
/// `FAILS` file (a Dockerfile both must refuse).
fn expected_failure(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("FAILS"))
        .ok()
        .map(|t| t.trim().to_string())
}

/// A case written with syntax newer than BuildKit 0.8's frontend (a
/// heredoc RUN, say) gives 0.8 `Dockerfile.buildkit08`: the same steps in
/// syntax 0.8 reads, making the same files. Its history lines differ, so
/// the case must be in [`TODAY`] with the history today's BuildKit
/// writes for the real Dockerfile.
fn older_dockerfile(name: &str, dir: &Path) -> Option<PathBuf> {
    let older = dir.join("Dockerfile.buildkit08");
    if !older.exists() {
        return None;
    }
    assert!(
        TODAY.iter().any(|(case, _, _)| *case == name),
        "{name} has a Dockerfile.buildkit08 but no TODAY entry for its history"
    );
    Some(older)
}

/// BuildKit's description of a case, from the cache or from a build.
struct BuildKitSide {
    dockerd: Option<Dockerd>,
    cache: PathBuf,
}

impl BuildKitSide {
    fn describe(&mut self, name: &str, dir: &Path, registry: &str, work: &Path) -> Value {
        let cached = self.cache.join(format!("{name}-{}.json", case_key(dir)));
        if let Ok(bytes) = std::fs::read(&cached) {
            return serde_json::from_slice(&bytes).unwrap();
        }
        let dockerd = match &self.dockerd {
            Some(d) => d,
            None => self
                .dockerd
                .insert(Dockerd::start().unwrap_or_else(|e| panic!("BuildKit: {e}"))),
        };
        let reference = format!("{registry}/diff/{name}:buildkit");
        let mut build = dockerd.docker();
        build.args(["build", "-q", "--network=none", "-t", &reference]);
        if let Some(older) = older_dockerfile(name, dir) {
            build.arg("-f").arg(older);
        }
        let out = build.arg(dir).output().unwrap();
        let described = match expected_failure(dir) {
            // A case both builders must refuse: BuildKit's error, recorded.
            Some(text) => {
                assert!(
                    !out.status.success(),
                    "BuildKit built {name}, which should fail"
                );
                let error = stderr(&out);
                assert!(
                    error.contains(&text),
                    "BuildKit's error for {name}: {error}"
                );
                json!({ "fails": text })
            }
            None => {
                assert!(
                    out.status.success(),
                    "BuildKit build of {name}: {}",
                    stderr(&out)
                );
                run_ok(dockerd.docker().args(["push", "-q", &reference]));
                describe(&reference, work)
            }
        };
        std::fs::create_dir_all(&self.cache).unwrap();
        std::fs::write(&cached, serde_json::to_vec_pretty(&described).unwrap()).unwrap();
        described
    }
}

#[test]
fn rbuild_builds_the_images_buildkit_builds() {
    if !is_root() {
        skip("BuildKit's dockerd and umoci's unpack need root");
        return;
    }
    if !Path::new("/usr/sbin/dockerd").exists() {
        skip("Debian's docker.io is not installed (apt-get install docker.io)");
        return;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(CASES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    if let Ok(only) = std::env::var("RBUILD_DIFF_CASE") {
        // One case, or several separated by commas.
        let only: Vec<&str> = only.split(',').collect();
        cases.retain(|c| {
            c.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| only.contains(&n))
        });
    }
    let registry = TestRegistry::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("rbuild-root");
    let mut buildkit = BuildKitSide {
        dockerd: None,
        cache: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../differential"),
    };
    let mut equivalent = 0;
    let mut failures = Vec::new();
    let mut known = Vec::new();
    let mut today = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let scratch = work.path().join(&name);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut bk = buildkit.describe(&name, dir, &registry.addr, &scratch);
        if let Some(reason) = as_today(&name, &mut bk) {
            today.push(format!("{name}: {reason}"));
        }
        let reference = format!("{}/diff/{name}:rbuild", registry.addr);
        // A case's `RBUILD_FLAGS` (one per line) are rbuild's own options
        // it needs, each listed in the README where it is described.
        let flags: Vec<String> = std::fs::read_to_string(dir.join("RBUILD_FLAGS"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args(["build", "-q", "--network=none", "--push", "--root"])
            .arg(&root)
            .args(["-t", &reference])
            .args(&flags)
            .arg(dir)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        let diffs = match (bk["fails"].as_str(), out.status.success()) {
            (Some(text), false) if stderr(&out).contains(text) => Vec::new(),
            (Some(text), _) => vec![format!(
                "BuildKit fails with {text:?}; rbuild: {}",
                if out.status.success() {
                    "built it".to_string()
                } else {
                    stderr(&out)
                }
            )],
            (None, true) => differences(&bk, &describe(&reference, &scratch)),
            (None, false) => vec![format!("rbuild failed: {}", stderr(&out))],
        };
        match (diffs.is_empty(), KNOWN.iter().find(|(c, _)| *c == name)) {
            (true, _) => equivalent += 1,
            (false, Some((_, why))) => known.push(format!("{name}: {why}")),
            (false, None) => failures.push(format!("{name}:\n  {}", diffs.join("\n  "))),
        }
    }
    eprintln!(
        "differential: {equivalent}/{} equivalent; {} compared against today's BuildKit \
         instead of Debian's 0.8; {} known difference(s){}{}",
        cases.len(),
        today.len(),
        known.len(),
        today
            .iter()
            .map(|k| format!("\n  today: {k}"))
            .collect::<String>(),
        known
            .iter()
            .map(|k| format!("\n  known: {k}"))
            .collect::<String>()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) differ from BuildKit:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
