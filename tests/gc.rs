//! `rbuild du`, `rbuild prune` and the size cap, against real builds: what
//! goes is least recently used, what a running build holds stays.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{run_ok, stderr};

fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.env("RBUILD_ROOT", root)
        .env_remove("RBUILD_KEEP_STORAGE");
    cmd
}

fn context(dir: &Path, name: &str, dockerfile: &str) -> std::path::PathBuf {
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

fn ran(out: &Output) -> usize {
    common::ran_steps(out).len()
}

fn du_total_bytes(root: &Path) -> String {
    let out = run_ok(rbuild(root).arg("du"));
    out.lines()
        .find(|l| l.starts_with("total:"))
        .unwrap()
        .to_string()
}

#[test]
fn the_size_cap_drops_the_least_recently_used_build_first() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let first = context(
        work.path(),
        "first",
        "FROM busybox\nRUN head -c 6000000 /dev/urandom > /big-1\n",
    );
    let second = context(
        work.path(),
        "second",
        "FROM busybox\nRUN head -c 6000000 /dev/urandom > /big-2\n",
    );
    ok(rbuild(&root).arg(&first).output().unwrap());
    let before = du_total_bytes(&root);
    // About 13 MB of blobs and snapshots; a 10 MB cap keeps the newer build.
    let out = ok(rbuild(&root)
        .env("RBUILD_KEEP_STORAGE", "10m")
        .arg(&second)
        .output()
        .unwrap());
    assert!(
        stderr(&out).contains("size cap 10 MiB: removed 1 cache entries,"),
        "{}\nbefore: {before}",
        stderr(&out)
    );
    assert_eq!(ran(&ok(rbuild(&root).arg(&second).output().unwrap())), 0);
    assert_eq!(ran(&ok(rbuild(&root).arg(&first).output().unwrap())), 1);

    // prune --all leaves only the busybox base; du agrees.
    let report = run_ok(rbuild(&root).args(["prune", "--all"]));
    assert!(report.contains("removed 2 cache entries"), "{report}");
    let du = run_ok(rbuild(&root).arg("du"));
    assert!(du.contains("cache entries:     0"), "{du}");
    assert_eq!(ran(&ok(rbuild(&root).arg(&second).output().unwrap())), 1);
}

#[test]
fn prune_all_during_a_build_keeps_what_the_build_holds() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(
        work.path(),
        "app",
        // With PORT set, the step waits (60 s at most) until the test
        // listens there:
        // the prune below runs while the step is inside its RUN, for
        // sure, however slow either is (an event, not a time window).
        "FROM busybox\nRUN head -c 100000 /dev/urandom > /cached\nARG N\nARG PORT\n\
         RUN --network=host echo waiting $N && if [ -n \"$PORT\" ]; then \
         i=0; until echo | nc 127.0.0.1 $PORT; do i=$((i+1)); [ $i -le 1200 ] || exit 9; \
         sleep 0.05; done; fi && echo $N > /n\n",
    );
    ok(rbuild(&root)
        .arg(&ctx)
        .args(["--allow", "network.host", "--build-arg", "N=1"])
        .output()
        .unwrap());
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let port_arg = format!("PORT={port}");
    let oci = work.path().join("out");
    let log = work.path().join("build.log");
    let mut child = rbuild(&root)
        .arg(&ctx)
        .args([
            "--allow",
            "network.host",
            "--build-arg",
            "N=2",
            "--build-arg",
            &port_arg,
            "-o",
            &format!("type=oci,dest={},tar=false", oci.display()),
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .any(|l| common::output_text(l) == Some("waiting 2"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never reached its RUN"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The build is inside its second RUN, on top of a cached layer, and
    // stays there until the listener below lets it go.
    let report = run_ok(rbuild(&root).args(["prune", "--all"]));
    assert!(report.contains("builds are running"), "{report}");
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    drop(listener.accept().unwrap());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // Every blob of the image it wrote is there: skopeo reads it all.
    let copied = work.path().join("copied");
    run_ok(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}", oci.display()),
        &format!("oci:{}:x", copied.display()),
    ]));
    // prune --all dropped the first RUN's entry (not its blob, which the
    // build held); the step the build recorded afterwards is still a hit.
    let again = ok(rbuild(&root)
        .arg(&ctx)
        .args(["--allow", "network.host", "--build-arg", "N=2"])
        .args(["--build-arg", &port_arg])
        .output()
        .unwrap());
    assert_eq!(ran(&again), 1, "{}", stderr(&again));
}

#[test]
fn two_builds_at_once_share_the_store_and_agree() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context(
        work.path(),
        "same",
        "FROM busybox AS a\nRUN echo a > /a && sleep 0.3\nFROM busybox\nCOPY --from=a /a /a\nRUN echo done > /done\n",
    );
    let spawn = |name: &str| {
        rbuild(&root)
            .arg(&ctx)
            .args(["-q", "--source-date-epoch", "1700000000", "--iidfile"])
            .arg(work.path().join(name))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn("one"), spawn("two"));
    for child in [one, two] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let id = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap();
    assert_eq!(id("one"), id("two"));
    let third = ok(rbuild(&root).arg(&ctx).output().unwrap());
    assert_eq!(ran(&third), 0, "{}", stderr(&third));
}
