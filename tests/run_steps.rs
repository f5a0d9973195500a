//! RUN steps end to end through the real binary (`rbuild debug run`): the
//! sandbox, overlay (and copy) snapshots, the differ, limits and mounts,
//! checked with independent tools: the image is pushed to the real
//! registry with skopeo, pulled back and unpacked by umoci, and the tree
//! umoci builds is compared with the tree the last RUN saw.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{
    debug_run_cmd, is_root, list_tree_in, listing_differences, push_pull_unpack, run_ok,
    spawn_until_logged, stderr, step_lines, write_dockerfile, TestRegistry,
};
use rbuild::cache::ContentStore;
use rbuild::executor::{choose, Executor, IsolationRequest, Limits, Step, StepRunner};
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::layer::{write_gzip_layer, Entry};
use rbuild::image::media::MediaTypes;
use rbuild::snapshot::SnapshotStore;

const SANDBOX_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");

/// Runs `rbuild debug run` on `dockerfile` with storage in `root`.
fn debug_run(dockerfile: &Path, root: &Path, oci: &Path, extra: &[&str]) -> Output {
    debug_run_cmd(dockerfile, root, oci)
        .args(["--context", SANDBOX_DATA])
        .args(extra)
        .output()
        .unwrap()
}

fn assert_built(out: &Output) {
    assert!(out.status.success(), "build failed:\n{}", stderr(out));
}

/// The manifest of the one image in an OCI layout.
fn manifest(oci: &Path) -> serde_json::Value {
    common::oci_manifest(oci)
}

fn layer_digests(oci: &Path) -> Vec<String> {
    common::manifest_layers(&manifest(oci))
}

/// Every entry of every layer after the base, as `tar tvf` lists them
/// (type and mode, owner, path).
fn entries_after_base(oci: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    for digest in layer_digests(oci).iter().skip(1) {
        let blob = oci.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let listing = run_ok(Command::new("tar").arg("tvzf").arg(&blob));
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            entries.push(format!(
                "{} {} {}",
                fields[0],
                fields[1],
                fields[fields.len() - 1]
            ));
        }
    }
    entries.sort();
    entries.dedup();
    entries
}

fn exact_layers(snapshots: &str) {
    if !is_root() {
        common::skip("chroot into umoci's unpack needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("oci");
    let dockerfile = Path::new(SANDBOX_DATA).join("layers/Dockerfile");
    let out = debug_run_cmd(&dockerfile, &work.path().join("root"), &oci)
        .env("RBUILD_SNAPSHOTS", snapshots)
        .args(["--context", SANDBOX_DATA])
        .output()
        .unwrap();
    assert_built(&out);
    let seen_by_run = step_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("./"))
        .collect::<Vec<_>>();
    assert!(seen_by_run.len() > 200, "{}", stderr(&out));
    // base + one layer per RUN, as BuildKit commits them: `RUN true` and
    // the listing get empty ones.
    assert_eq!(layer_digests(&oci).len(), 7, "{}", stderr(&out));

    let registry = TestRegistry::start(&[]);
    let rootfs = push_pull_unpack(&oci, &registry, "sandbox/layers", work.path());
    let unpacked = list_tree_in(&rootfs);
    let diff: Vec<String> = listing_differences(&seen_by_run, &unpacked);
    assert!(
        diff.is_empty(),
        "umoci's tree differs from the RUN's view:\n{}",
        diff.join("\n")
    );
    // The hardlinked pair is still one inode.
    use std::os::unix::fs::MetadataExt;
    let (h1, h2) = (
        std::fs::metadata(rootfs.join("app/h1")).unwrap(),
        std::fs::metadata(rootfs.join("app/h2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino(), "hardlinks survive the layer");
    // Spot checks of what the Dockerfile did.
    assert!(!rootfs.join("bin/vi").exists() && !rootfs.join("app/sub").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("var")).unwrap(),
        "file\n"
    );
    assert_eq!(
        std::fs::read_dir(rootfs.join("usr/sbin")).unwrap().count(),
        1,
        "the recreated dir hides everything the base had there"
    );
    assert!(!rootfs.join("list-tree").exists() && !rootfs.join("etc/hosts").exists());
}

#[test]
fn overlay_layers_apply_to_exactly_what_the_run_saw() {
    exact_layers("overlay");
}

#[test]
fn copy_tier_layers_apply_to_exactly_what_the_run_saw() {
    exact_layers("copy");
}

#[test]
fn the_same_build_twice_gives_byte_identical_layers() {
    let work = tempfile::tempdir().unwrap();
    let dockerfile = Path::new(SANDBOX_DATA).join("layers/Dockerfile");
    let mut digests = Vec::new();
    for round in 0..2 {
        let oci = work.path().join(format!("oci{round}"));
        let out = debug_run(
            &dockerfile,
            &work.path().join(format!("root{round}")),
            &oci,
            &["--source-date-epoch", "1700000000"],
        );
        assert_built(&out);
        digests.push((
            layer_digests(&oci),
            manifest(&oci)["config"]["digest"].clone(),
        ));
        // A later second apart: wall-clock times must not leak in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1]);
}

fn needs_root_cgroups() -> bool {
    if !is_root() {
        // A skip CI turns into a failure (RBUILD_REQUIRE_PRIVILEGED).
        common::skip("limits need a writable cgroup (root on this VM)");
        return false;
    }
    true
}

#[test]
fn pids_limit_stops_a_fork_bomb_and_the_next_build_works() {
    if !needs_root_cgroups() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // The classic shape: each fork the limit refuses only makes the shell
    // print an error, and the bomb as a whole exits 0.
    let bomb = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN bomb() { bomb | bomb & wait; }; bomb\n",
    );
    let started = std::time::Instant::now();
    let out = debug_run(
        &bomb,
        &work.path().join("root"),
        &work.path().join("oci"),
        &["--pids-limit", "32"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        // Whether the bomb's shell then exits 0 or 2 varies from run to run.
        stderr(&out).contains("the process limit (--pids-limit 32)"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed().as_secs() < 30, "the bomb was stopped");
    let left = Command::new("pgrep")
        .args(["-f", "bomb[(]"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );

    // A command that fails because it could not fork says so too. The
    // sleeps last a number of seconds no other process on the machine
    // uses, so pgrep finds only this step's.
    let marker = 3_000_000 + std::process::id() % 100_000;
    let sleepers = write_dockerfile(
        work.path(),
        &format!(
            "FROM busybox\nRUN i=0; while [ $i -lt 200 ]; do sleep {marker} & i=$((i+1)); done; wait\n"
        ),
    );
    let out = debug_run(
        &sleepers,
        &work.path().join("root"),
        &work.path().join("oci"),
        &["--pids-limit", "32"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(--pids-limit 32)"),
        "{}",
        stderr(&out)
    );
    // A process killed as the step ended may still be on its way out for
    // a moment; one that stays is a leak.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let left = loop {
        let left = Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        if left.stdout.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );

    let ok = write_dockerfile(work.path(), "FROM busybox\nRUN echo fine > /fine\n");
    let out = debug_run(
        &ok,
        &work.path().join("root"),
        &work.path().join("oci"),
        &["--pids-limit", "32"],
    );
    assert_built(&out);
}

#[test]
fn memory_limit_kills_with_an_out_of_memory_message() {
    if !needs_root_cgroups() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // dd holds one 256 MiB block in memory.
    let hog = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=256M count=1\n",
    );
    let out = debug_run(
        &hog,
        &work.path().join("root"),
        &work.path().join("oci"),
        &["--memory", "64m"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RUN was killed: out of memory (limit 64 MiB)"),
        "{}",
        stderr(&out)
    );
    let ok = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN dd if=/dev/zero of=/dev/null bs=8M count=1\n",
    );
    assert_built(&debug_run(
        &ok,
        &work.path().join("root"),
        &work.path().join("oci"),
        &["--memory", "64m", "--cpus", "0.5"],
    ));
}

#[test]
fn mounts_cache_tmpfs_secret_and_bind_leave_nothing_in_the_layer() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let secret_file = work.path().join("token");
    let secret = "s3cr3t-value-that-must-not-leak";
    std::fs::write(&secret_file, secret).unwrap();
    // The Dockerfile names the secret only by its hash, so any copy of the
    // value found later came from the secret itself.
    let hash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let dockerfile = write_dockerfile(
        work.path(),
        &format!(
            "FROM busybox\n\
             RUN --mount=type=cache,target=/cache echo run >> /cache/log && wc -l < /cache/log\n\
             RUN --mount=type=tmpfs,target=/scratch,size=1m df -k /scratch | tail -1 | awk '{{print \"tmpfs\", $2}}' && touch /scratch/x\n\
             RUN --mount=type=secret,id=token test \"$(sha256sum < /run/secrets/token | cut -c1-64)\" = {hash} && echo secret-ok\n\
             RUN --mount=type=secret,id=token,env=TOKEN test \"$(printf %s \"$TOKEN\" | sha256sum | cut -c1-64)\" = {hash} && echo env-ok\n\
             RUN --mount=type=bind,source=list-tree.sh,target=/mnt/list head -1 /mnt/list && (echo x > /mnt/list) 2>/dev/null || echo bind-ro\n\
             RUN --mount=type=bind,source=.,target=/ctx,rw echo scribble > /ctx/scribble && echo bind-rw\n"
        ),
    );
    let secret_arg = format!("id=token,src={}", secret_file.display());
    for round in 1..=2 {
        let out = debug_run(
            &dockerfile,
            &root,
            &work.path().join("oci"),
            // Every round runs (the cache mount, not the step cache, is under test).
            &["--secret", &secret_arg, "--no-cache"],
        );
        assert_built(&out);
        let lines = step_lines(&out);
        assert_eq!(
            lines,
            vec![
                round.to_string(),
                "tmpfs 1024".to_string(),
                "secret-ok".to_string(),
                "env-ok".to_string(),
                "#!/bin/sh".to_string(),
                "bind-ro".to_string(),
                "bind-rw".to_string(),
            ],
            "the cache mount persists between builds"
        );
        assert!(!stderr(&out).contains(secret), "the secret is not logged");
        // One layer per RUN, holding nothing of what was mounted, not even
        // the mount points (today's BuildKit removes the stubs it made for
        // --mount targets); only /proc, /sys and /dev stay, as the mount
        // points runc makes stay in BuildKit's layers.
        let oci = work.path().join("oci");
        assert_eq!(layer_digests(&oci).len(), 7);
        assert_eq!(
            entries_after_base(&oci),
            [
                "drwxr-xr-x 0/0 dev/",
                "drwxr-xr-x 0/0 proc/",
                "drwxr-xr-x 0/0 sys/",
            ],
            "a mounted file or a file written into a mount reached a layer"
        );
    }
    assert!(
        !Path::new(SANDBOX_DATA).join("scribble").exists(),
        "the context is untouched"
    );
    // The secret is nowhere under the storage root.
    let grep = Command::new("grep")
        .args(["-r", "-l", secret])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
}

#[test]
fn run_steps_stream_output_whole_and_report_exit_codes() {
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done\nRUN echo about to fail; exit 3\n",
    );
    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &work.path().join("oci"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let lines = step_lines(&out);
    assert_eq!(lines.len(), 3001);
    assert_eq!(lines[2999], "line-2999");
    assert!(
        stderr(&out)
            .contains("Dockerfile:3:1: RUN echo about to fail; exit 3: RUN did not complete successfully: exit code: 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn user_workdir_and_missing_users() {
    if !is_root() {
        common::skip("USER other than root needs root or subordinate ids");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group && echo 'staff:x:50:app' >> /etc/group\nWORKDIR /srv/app\nUSER app\nRUN id && pwd\nUSER 4242:7\nRUN id -u; id -g\nUSER ghost\nRUN true\n",
    );
    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &work.path().join("oci"),
        &[],
    );
    assert_eq!(
        step_lines(&out),
        vec![
            "uid=1000(app) gid=1000(app) groups=50(staff)".to_string(),
            "/srv/app".to_string(),
            "4242".to_string(),
            "7".to_string()
        ],
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("unable to find user ghost"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_chain_of_150_layers_mounts_as_one_overlay() {
    // 150 lower dirs by absolute path would need ~14 KB of mount options;
    // the short links keep them under the kernel's one-page limit.
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let executor = Executor::new(env!("CARGO_BIN_EXE_rbuild"));
    let probes = executor.probe(&root.join("snapshots/tmp")).unwrap();
    let plan = choose(&probes, IsolationRequest::Auto).unwrap();
    let store = ContentStore::open(root).unwrap();
    let base = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap();
    let mut layers = base.layers.clone();
    for i in 0..150 {
        let entries = vec![
            Entry::dir("stack", 0o755),
            Entry::file(
                &format!("stack/{i:03}"),
                0o644,
                format!("{i}\n").into_bytes(),
            ),
        ];
        layers.push(write_gzip_layer(&store, entries, 0).unwrap());
    }
    let runner = StepRunner::new(
        executor,
        plan,
        store.clone(),
        SnapshotStore::open(root.join("snapshots")).unwrap(),
        probes.cgroup,
        Limits::default(),
        None,
    )
    .unwrap();
    let step = Step {
        layers: rbuild::snapshot::Layer::all_ready(&layers),
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            "ls /stack | wc -l; cat /stack/000 /stack/149".into(),
        ],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        ..Step::default()
    };
    let outcome = runner.run(&step, &mut |_, _| {}).unwrap();
    assert_eq!(
        outcome.failure,
        None,
        "{}",
        String::from_utf8_lossy(&outcome.output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&outcome.output.stdout),
        "150\n0\n149\n"
    );
}

#[test]
fn killing_rbuild_mid_step_kills_the_step() {
    let work = tempfile::tempdir().unwrap();
    let marker = 3_000_000 + std::process::id() % 100_000;
    let dockerfile = write_dockerfile(
        work.path(),
        &format!("FROM busybox\nRUN echo started && sleep {marker} & sleep {marker}\n"),
    );
    let mut child = spawn_until_logged(
        &mut debug_run_cmd(
            &dockerfile,
            &work.path().join("root"),
            &work.path().join("oci"),
        ),
        "started",
    );
    let running = || {
        Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap()
            .stdout
    };
    assert!(!running().is_empty(), "the step is running");
    child.kill().unwrap(); // SIGKILL: no cleanup code of rbuild's runs
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !running().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step outlived rbuild: {}",
            String::from_utf8_lossy(&running())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn multi_stage_build_args_and_target() {
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "ARG BASE=busybox\n\
         FROM ${BASE} AS first\n\
         ARG GREETING=hello\n\
         RUN echo \"$GREETING\" > /greeting\n\
         FROM first AS second\n\
         WORKDIR /srv/app\n\
         RUN cat /greeting && pwd\n\
         FROM busybox AS unused\n\
         RUN exit 1\n\
         FROM second\n\
         ARG GREETING\n\
         RUN echo \"final:$GREETING\"\n",
    );
    let oci = work.path().join("oci");
    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &oci,
        &[
            "--build-arg",
            "GREETING=bonjour",
            "--build-arg",
            "NOBODY_USES=1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(step_lines(&out), ["bonjour", "/srv/app", "final:bonjour"]);
    assert!(
        stderr(&out).contains("[Warning] One or more build-args [NOBODY_USES] were not consumed"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("exit 1"),
        "the unused stage is not built"
    );
    // base + greeting + WORKDIR's mkdir + the two later RUNs (empty
    // layers: they changed nothing, and BuildKit commits them all).
    assert_eq!(layer_digests(&oci).len(), 5);
    let manifest = manifest(&oci);
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            oci.join("blobs/sha256")
                .join(&config_digest["sha256:".len()..]),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(config["config"]["WorkingDir"], "/srv/app");
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        history[1..],
        [
            "ARG GREETING=hello",
            "RUN |1 GREETING=bonjour /bin/sh -c echo \"$GREETING\" > /greeting # buildkit",
            "WORKDIR /srv/app",
            "RUN |1 GREETING=bonjour /bin/sh -c cat /greeting && pwd # buildkit",
            "ARG GREETING",
            "RUN |1 GREETING=bonjour /bin/sh -c echo \"final:$GREETING\" # buildkit",
        ]
    );

    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &oci,
        &["--target", "first"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(step_lines(&out).is_empty());
    assert_eq!(layer_digests(&oci).len(), 2);
}

#[test]
fn bases_are_pulled_from_the_registry() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(&[]);
    // Publish the busybox base, as a registry would hold it.
    let base_file = write_dockerfile(work.path(), "FROM busybox\n");
    assert_built(&debug_run(
        &base_file,
        &work.path().join("base-root"),
        &work.path().join("base"),
        &[],
    ));
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", work.path().join("base").display()),
        &format!("docker://{}/library/busybox:1.0", registry.addr),
    ]));
    let dockerfile = write_dockerfile(
        work.path(),
        "ARG REGISTRY\nFROM ${REGISTRY}/library/busybox:1.0\nRUN echo pulled > /pulled && cat /pulled\n",
    );
    let oci = work.path().join("oci");
    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &oci,
        &["--build-arg", &format!("REGISTRY={}", registry.addr)],
    );
    assert_built(&out);
    assert_eq!(step_lines(&out), ["pulled"]);
    let layers = layer_digests(&oci);
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[0],
        layer_digests(&work.path().join("base"))[0],
        "the pulled base layer"
    );
    assert!(registry.count_requests("GET", "/v2/library/busybox/blobs/") >= 2);
    // A reference the registry does not have is an error naming the line,
    // and a base that cannot be had is the environment's failure (3).
    let missing = write_dockerfile(
        work.path(),
        &format!("FROM {}/library/nothing:1\nRUN true\n", registry.addr),
    );
    let out = debug_run(&missing, &work.path().join("root"), &oci, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("line 1: FROM"), "{}", stderr(&out));
}

#[test]
fn heredoc_runs_execute() {
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN <<EOF\nset -e\nmkdir -p /app/data\necho \"built by rbuild\" > /app/data/greeting\nEOF\nRUN cat - /app/data/greeting <<GREETING\nand a heredoc\nGREETING\n",
    );
    let out = debug_run(
        &dockerfile,
        &work.path().join("root"),
        &work.path().join("oci"),
        &[],
    );
    assert_built(&out);
    assert_eq!(step_lines(&out), ["and a heredoc", "built by rbuild"]);
}
