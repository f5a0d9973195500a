//! `rbuild build` end to end: real Dockerfiles with their contexts, built
//! by the binary, pushed to the real registry, read back by skopeo,
//! unpacked by umoci and run by podman.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    is_root, push_debian_minbase, ran_steps, run_ok, stderr, step_lines, unpack_remote, Podman,
    TestRegistry,
};

const BUILD_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/build");

/// `rbuild ARGS --root ROOT` (no `build` word: it is the default command).
fn rbuild(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(args).arg("--root").arg(root);
    cmd
}

fn built(out: Output) -> Output {
    assert!(out.status.success(), "rbuild failed:\n{}", stderr(&out));
    out
}

/// The image config as the registry serves it.
fn remote_config(reference: &str) -> serde_json::Value {
    let raw = run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        "--raw",
        &format!("docker://{reference}"),
    ]));
    serde_json::from_str(&raw).unwrap()
}

/// `path mode uid:gid [content]` for a path in an unpacked rootfs.
fn describe(rootfs: &Path, path: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let full = rootfs.join(path.trim_start_matches('/'));
    let meta = std::fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    let kind = if meta.is_dir() {
        "d"
    } else if meta.file_type().is_symlink() {
        "l"
    } else {
        "f"
    };
    let mut line = format!(
        "{path} {kind}{:o} {}:{}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    if meta.is_file() {
        line.push(' ');
        line.push_str(std::fs::read_to_string(&full).unwrap().trim_end());
    }
    line
}

#[test]
fn every_instruction_on_busybox_pushed_unpacked_and_run() {
    if !is_root() {
        common::skip("umoci unpack and podman here need root");
        return;
    }
    let registry = TestRegistry::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let parent = format!("{}/onbuild-parent:1", registry.addr);
    let image = format!("{}/all:1", registry.addr);
    let data = Path::new(BUILD_DATA);
    built(
        rbuild(&root, &["-t", &parent, "--push"])
            .arg(data.join("onbuild-parent"))
            .output()
            .unwrap(),
    );
    // --pull: the parent comes back from the registry, not the local store.
    let out = built(
        rbuild(
            &root,
            &[
                "-t",
                &image,
                "--push",
                "--pull",
                "--build-arg",
                &format!("PARENT={parent}"),
            ],
        )
        .arg(data.join("all-busybox"))
        .output()
        .unwrap(),
    );
    let log = stderr(&out);
    assert!(
        !log.contains("[unused "),
        "a stage the target does not need was built:\n{log}"
    );
    assert!(
        step_lines(&out).contains(&"shell is exec-form: /bin/sh".to_string()),
        "{log}"
    );

    // The config, written out by hand from the Dockerfile reference.
    let config = remote_config(&image);
    // CMD sets ArgsEscaped, as BuildKit does (checked against it by
    // tests/differential.rs).
    let expected = serde_json::json!({
        "ArgsEscaped": true,
        "Cmd": ["--flag"],
        "Entrypoint": ["/srv/app/bin/start"],
        "Env": [
            "PATH=/srv/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_HOME=/srv/app"
        ],
        "ExposedPorts": {"8080/tcp": {}, "9090/udp": {}},
        "Healthcheck": {
            "Test": ["CMD", "/bin/true"],
            "Interval": 30_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "Retries": 3
        },
        "Labels": {"org.example.name": "all-instructions", "version": "1"},
        "Shell": ["/bin/sh", "-ec"],
        "StopSignal": "SIGTERM",
        "User": "1234:100",
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv/app"
    });
    assert_eq!(config["config"], expected, "{config:#}");
    assert_eq!(config["author"], "rbuild tests <tests@example.invalid>");
    assert_eq!(config["os"], "linux");
    // The final stage's history: the parent's entries, the triggers, then
    // one entry per instruction; only filesystem changes have layers. COPY
    // and ADD lines name --chown and --chmod, as today's BuildKit writes them.
    let history: Vec<(String, bool)> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // The parent's three entries (base, RUN, CMD: ONBUILD records none,
    // as in BuildKit) come first.
    let tail: Vec<(&str, bool)> = history
        .iter()
        .skip(3)
        .map(|(c, e)| (c.as_str(), *e))
        .collect();
    assert_eq!(
        tail,
        [
            ("COPY greeting.txt /onbuild/greeting.txt # buildkit", false),
            ("RUN /bin/sh -c echo \"triggered in the child\" > /onbuild/ran.txt # buildkit", false),
            ("LABEL org.example.name=all-instructions version=1", true),
            ("MAINTAINER rbuild tests <tests@example.invalid>", true),
            ("ENV APP_HOME=/srv/app PATH=/srv/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", true),
            ("ARG UID=1234", true),
            ("RUN |1 UID=1234 /bin/sh -c echo \"users:x:100:\" >> /etc/group  && echo \"app:x:${UID}:100::/home/app:/bin/sh\" >> /etc/passwd  && mkdir -p /home/app && chown app:users /home/app # buildkit", false),
            ("WORKDIR /srv/app", false),
            ("COPY --chown=app:users bin/ bin/ # buildkit", false),
            ("COPY --chmod=600 config/app.conf /etc/app.conf # buildkit", false),
            ("ADD notes.txt docs/ # buildkit", false),
            ("COPY --chown=app /out/message.txt message.txt # buildkit", false),
            ("COPY <<EOF /etc/motd # buildkit", false),
            ("USER app", true),
            ("SHELL [/bin/sh -ec]", true),
            ("RUN |1 UID=1234 /bin/sh -ec id -u > /tmp/uid; echo \"shell is exec-form: $0\" # buildkit", false),
            ("USER 1234:100", true),
            ("EXPOSE map[8080/tcp:{} 9090/udp:{}]", true),
            ("VOLUME [/data]", true),
            ("STOPSIGNAL SIGTERM", true),
            ("HEALTHCHECK &{[\"CMD\" \"/bin/true\"] \"30s\" \"5s\" \"0s\" \"0s\" '\\x03'}", true),
            ("ENTRYPOINT [\"/srv/app/bin/start\"]", true),
            ("CMD [\"--flag\"]", true),
        ],
        "{history:#?}"
    );
    let layers = history.iter().filter(|(_, empty)| !empty).count();
    assert_eq!(
        layers,
        config["rootfs"]["diff_ids"].as_array().unwrap().len()
    );

    // Files, modes and owners as umoci unpacks the pushed image.
    let rootfs = unpack_remote(&image, work.path());
    let tree: Vec<String> = [
        "/srv/app",
        "/srv/app/bin",
        "/srv/app/bin/start",
        "/srv/app/docs/notes.txt",
        "/srv/app/message.txt",
        "/etc/app.conf",
        "/etc/motd",
        "/onbuild/parent.txt",
        "/onbuild/greeting.txt",
        "/onbuild/ran.txt",
        "/home/app",
        "/tmp/uid",
    ]
    .iter()
    .map(|p| describe(&rootfs, p))
    .collect();
    let start = std::fs::read_to_string(Path::new(BUILD_DATA).join("all-busybox/bin/start"))
        .unwrap()
        .trim_end()
        .to_string();
    assert_eq!(
        tree,
        [
            "/srv/app d755 0:0".to_string(),
            "/srv/app/bin d755 1234:100".to_string(),
            format!("/srv/app/bin/start f755 1234:100 {start}"),
            "/srv/app/docs/notes.txt f644 0:0 notes travel with ADD".to_string(),
            "/srv/app/message.txt f640 1234:100 hello from builder".to_string(),
            "/etc/app.conf f600 0:0 not a secret, but 0600".to_string(),
            "/etc/motd f644 0:0 welcome".to_string(),
            "/onbuild/parent.txt f644 0:0 parent".to_string(),
            "/onbuild/greeting.txt f644 0:0 hi from the context".to_string(),
            "/onbuild/ran.txt f644 0:0 triggered in the child".to_string(),
            "/home/app d755 1234:100".to_string(),
            "/tmp/uid f644 1234:100 1234".to_string(),
        ]
    );
    for ignored in ["srv/app/bin/debug.log", "ignored-dir"] {
        assert!(
            !rootfs.join(ignored).exists(),
            "{ignored} is in .dockerignore but reached the image"
        );
    }

    // The image runs under podman, as USER 1234:100 with its ENTRYPOINT+CMD.
    let podman = Podman::new();
    run_ok(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    let printed = podman.run(&image, &[]);
    assert_eq!(
        printed,
        "home=/srv/app user=1234:100 args=--flag\nhello from builder\nhi from the context\ntriggered in the child\n1234\n"
    );
}

/// Copies `testdata/dockerfiles/build/cache` to a fresh dir (the test edits it).
fn cache_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for entry in std::fs::read_dir(Path::new(BUILD_DATA).join("cache")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), ctx.join(entry.file_name())).unwrap();
    }
    ctx
}

#[test]
fn cache_reruns_only_what_changed() {
    let registry = TestRegistry::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = cache_context(work.path());
    let image = format!("{}/cache:1", registry.addr);
    let build = |extra: &[&str]| -> Output {
        let mut args = vec!["-t", image.as_str(), "--push"];
        args.extend_from_slice(extra);
        built(rbuild(&root, &args).arg(&ctx).output().unwrap())
    };
    let first = build(&[]);
    assert_eq!(ran_steps(&first).len(), 7, "{}", stderr(&first));
    let uploads = |registry: &TestRegistry| {
        registry.count_requests("POST", "/blobs/uploads/")
            + registry.count_requests("PUT", "/blobs/uploads/")
    };
    let pushed_first = uploads(&registry);
    assert!(pushed_first > 0);

    // Nothing changed: every step cached, no blob uploaded again.
    let second = build(&[]);
    assert_eq!(
        ran_steps(&second),
        Vec::<String>::new(),
        "{}",
        stderr(&second)
    );
    // The stage `other` is not even looked at: the COPY reading it is a hit.
    assert!(
        stderr(&second).contains("0 step(s) run, 6 cached"),
        "{}",
        stderr(&second)
    );
    assert!(!stderr(&second).contains("[other "), "{}", stderr(&second));
    assert_eq!(
        uploads(&registry),
        pushed_first,
        "a cached build uploaded blobs"
    );

    // Times alone, an ignored file and an unused file: nothing reruns.
    let touch = |name: &str| {
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.join(name))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .unwrap();
    };
    touch("a.txt");
    std::fs::write(ctx.join("ignored.txt"), "changed").unwrap();
    std::fs::write(ctx.join("unused.txt"), "changed").unwrap();
    assert_eq!(ran_steps(&build(&[])), Vec::<String>::new());

    // A byte of b.txt: its COPY and what follows in that stage rerun.
    std::fs::write(ctx.join("b.txt"), "b changed\n").unwrap();
    assert_eq!(
        ran_steps(&build(&[])),
        [
            "COPY b.txt /b.txt",
            "RUN cat /b.txt > /seen-b.txt",
            "RUN echo \"$FLAVOUR\" > /flavour.txt",
            "COPY --from=other /other.txt /other.txt",
        ]
    );

    // A build arg: only the steps after its ARG rerun.
    assert_eq!(
        ran_steps(&build(&["--build-arg", "FLAVOUR=spicy"])),
        [
            "RUN echo \"$FLAVOUR\" > /flavour.txt",
            "COPY --from=other /other.txt /other.txt",
        ]
    );
    if !is_root() {
        common::skip("the unpack check: umoci unpack here needs root");
        return;
    }
    let rootfs = unpack_remote(&image, work.path());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("flavour.txt")).unwrap(),
        "spicy\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen-b.txt")).unwrap(),
        "b changed\n"
    );
}

#[test]
fn debian_app_with_every_instruction_useradd_copy_chown_and_merged_usr() {
    let registry = TestRegistry::start(&[]);
    if !push_debian_minbase(&registry) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let image = format!("{}/debian-app:1", registry.addr);
    let out = built(
        rbuild(
            &root,
            &[
                "-t",
                &image,
                "--push",
                "--build-arg",
                &format!("REGISTRY={}", registry.addr),
            ],
        )
        .arg(Path::new(BUILD_DATA).join("debian-app"))
        .output()
        .unwrap(),
    );
    // The RUN went through SHELL (bash with pipefail) and saw the new user.
    assert!(
        step_lines(&out).contains(&"1000".to_string()),
        "{}",
        stderr(&out)
    );
    let config = remote_config(&image);
    assert_eq!(
        config["config"],
        serde_json::json!({
            "ArgsEscaped": true,
            "Cmd": ["--verbose"],
            "Entrypoint": ["hello"],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8"
            ],
            "ExposedPorts": {"8443/tcp": {}},
            "Healthcheck": {"Test": ["NONE"]},
            "Labels": {"org.example.app": "debian-app"},
            "OnBuild": ["RUN echo child"],
            "Shell": ["/bin/bash", "-o", "pipefail", "-c"],
            "StopSignal": "SIGINT",
            "User": "app",
            "Volumes": {"/home/app/data": {}},
            "WorkingDir": "/home/app"
        }),
        "{config:#}"
    );
    assert_eq!(config["author"], "rbuild tests");
    let rootfs = unpack_remote(&image, work.path());
    let tree: Vec<String> = [
        "/usr/local/bin/hello",
        "/etc/app",
        "/etc/app/config.ini",
        "/usr/bin/tool.sh",
        "/usr/share/doc/app/notes.txt",
        "/home/app",
    ]
    .iter()
    .map(|p| describe(&rootfs, p))
    .map(|l| l.lines().next().unwrap().to_string())
    .collect();
    assert_eq!(
        tree,
        [
            "/usr/local/bin/hello f755 0:0 #!/bin/bash",
            "/etc/app d755 1000:1000",
            "/etc/app/config.ini f644 1000:1000 [app]",
            "/usr/bin/tool.sh f755 0:0 #!/bin/sh",
            "/usr/share/doc/app/notes.txt f644 0:0 Debian notes",
            "/home/app d755 1000:1000",
        ]
    );
    // COPY followed /bin -> usr/bin inside the image, so /bin is still a link.
    assert_eq!(
        std::fs::read_link(rootfs.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let podman = Podman::new();
    run_ok(podman.cmd().args(["pull", "--tls-verify=false", &image]));
    assert_eq!(
        podman.run(&image, &[]),
        "hello from app in /home/app\n[app]\ncolour = blue\n"
    );
}

#[test]
fn identical_ops_run_once_and_a_failure_names_stage_instruction_and_line() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS a\nRUN echo shared-step-ran\nRUN echo a > /a\n\
         FROM busybox AS b\nRUN echo shared-step-ran\nRUN echo b > /b\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nRUN cat /a /b\n",
    )
    .unwrap();
    let out = built(rbuild(&root, &[]).arg(&ctx).output().unwrap());
    let log = stderr(&out);
    let lines = step_lines(&out);
    assert_eq!(
        lines.iter().filter(|l| *l == "shared-step-ran").count(),
        1,
        "the step both stages share ran more than once:\n{log}"
    );
    assert!(
        lines.ends_with(&["a".to_string(), "b".to_string()]),
        "{log}"
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS broken\nRUN true\n  RUN echo about to fail && exit 3\nFROM busybox\nCOPY --from=broken / /x\n",
    )
    .unwrap();
    let out = rbuild(&root, &[]).arg(&ctx).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = stderr(&out);
    assert!(
        log.contains(
            "error: stage broken, Dockerfile:3:3: RUN echo about to fail && exit 3: RUN did not complete successfully: exit code: 3"
        ),
        "{log}"
    );
}

#[test]
fn target_builds_only_its_stage_with_global_args_redeclared() {
    if !is_root() {
        common::skip("umoci unpack here needs root");
        return;
    }
    let registry = TestRegistry::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let image = format!("{}/builder:1", registry.addr);
    // GREETING is global; the builder stage redeclares it, so the build
    // arg reaches its RUN. PARENT only matters to the stage not built.
    let out = built(
        rbuild(
            &root,
            &[
                "-t",
                &image,
                "--push",
                "--target",
                "builder",
                "--build-arg",
                "GREETING=bonjour",
                "--build-arg",
                "PARENT=nothing-pulls-this:1",
            ],
        )
        .arg(Path::new(BUILD_DATA).join("all-busybox"))
        .output()
        .unwrap(),
    );
    let log = stderr(&out);
    assert!(
        !log.contains("[final ") && !log.contains("[unused "),
        "{log}"
    );
    let config = remote_config(&image);
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "BUILT_BY=builder"
        ])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    let history: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        history[1..],
        [
            // BuildKit writes the value only for a default or an inherited global.
            "ARG GREETING",
            "ENV BUILT_BY=builder",
            "RUN |1 GREETING=bonjour /bin/sh -c mkdir -p /out  && echo \"$GREETING from $BUILT_BY\" > /out/message.txt  && chmod 0640 /out/message.txt # buildkit",
        ]
    );
    let rootfs = unpack_remote(&image, work.path());
    assert_eq!(
        describe(&rootfs, "/out/message.txt"),
        "/out/message.txt f640 0:0 bonjour from builder"
    );
}

#[test]
fn copy_keys_follow_content_mode_and_owner_but_not_times_or_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("src/f.txt"), "content\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY src /app/\nRUN mkdir -p /made/by/run && ls -ln /app > /listing\n",
    )
    .unwrap();
    let build_under = |umask: &str| -> Output {
        // The shell sets the umask; rbuild must not let it through.
        built(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "umask {umask} && exec \"$0\" --root \"$1\" --iidfile \"$2\" \"$3\"",
                ))
                .arg(env!("CARGO_BIN_EXE_rbuild"))
                .arg(&root)
                .arg(work.path().join("iid"))
                .arg(&ctx)
                .output()
                .unwrap(),
        )
    };
    let ran = |out: &Output| ran_steps(out).len();
    let first = build_under("022");
    assert_eq!(ran(&first), 2);
    let id = || std::fs::read_to_string(work.path().join("iid")).unwrap();
    let first_id = id();
    // Another umask: nothing reruns, the same image.
    let other = build_under("077");
    assert_eq!(ran(&other), 0, "{}", stderr(&other));
    assert_eq!(id(), first_id);
    // Only the mtime: nothing reruns.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("src/f.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(ran(&build_under("022")), 0);
    // Built afresh (reproducibly) under either umask, the same layers.
    let fresh = |umask: &str, iid: &str| {
        let out = built(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "umask {umask} && exec \"$0\" --root \"$1\" --no-cache \
                     --source-date-epoch 1700000000 --iidfile \"$2\" \"$3\""
                ))
                .arg(env!("CARGO_BIN_EXE_rbuild"))
                .arg(&root)
                .arg(work.path().join(iid))
                .arg(&ctx)
                .output()
                .unwrap(),
        );
        assert_eq!(ran(&out), 2);
        let id = std::fs::read_to_string(work.path().join(iid)).unwrap();
        let blob = root
            .join("blobs/sha256")
            .join(id.trim().trim_start_matches("sha256:"));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        config["rootfs"].clone()
    };
    assert_eq!(
        fresh("022", "iid-022"),
        fresh("077", "iid-077"),
        "the umask changed the layers"
    );
    // A byte, a mode or an owner: the COPY and what follows rerun.
    std::fs::write(ctx.join("src/f.txt"), "Content\n").unwrap();
    assert_eq!(ran(&build_under("022")), 2);
    std::fs::set_permissions(
        ctx.join("src/f.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_eq!(ran(&build_under("022")), 2);
    if is_root() {
        std::os::unix::fs::chown(ctx.join("src/f.txt"), Some(1234), Some(1234)).unwrap();
        assert_eq!(ran(&build_under("022")), 2);
    }
}
