//! The step cache through the real binary (`rbuild debug run`): a second
//! build runs nothing and writes the same image (so pushing it again
//! uploads no blob to the real registry), a changed build argument reruns
//! only the steps after its declaration, `--no-cache` and
//! `--no-cache-filter` rerun what they name, and a build killed with
//! SIGKILL in the middle of a RUN leaves every finished step reusable.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{
    debug_run_cmd, run_ok, spawn_until_logged, stderr, step_lines, write_dockerfile, TestRegistry,
};

fn build(dockerfile: &Path, root: &Path, oci: &Path, extra: &[&str]) -> Output {
    let out = debug_run_cmd(dockerfile, root, oci)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// "N step(s) run, M cached" from the log.
fn counts(out: &Output) -> (usize, usize) {
    let text = stderr(out);
    let line = text
        .lines()
        .find(|l| l.contains("step(s) run"))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().unwrap(), words[3].parse().unwrap())
}

fn digest(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn push(oci: &Path, registry: &TestRegistry) {
    run_ok(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", oci.display()),
        &format!("docker://{}/cache/app:1", registry.addr),
    ]));
}

#[test]
fn a_second_build_runs_nothing_and_pushes_nothing_new() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN echo one > /one\nENV X=1\nWORKDIR /app\nRUN echo two > two && echo ran\nRUN true\nCMD [\"cat\", \"two\"]\n",
    );
    let first = build(&dockerfile, &root, &work.path().join("oci1"), &[]);
    assert_eq!(counts(&first), (4, 0));
    assert_eq!(step_lines(&first), ["ran"]);
    let second = build(&dockerfile, &root, &work.path().join("oci2"), &[]);
    assert_eq!(counts(&second), (0, 4));
    assert!(
        step_lines(&second).is_empty() && common::ran_steps(&second).is_empty(),
        "nothing ran: {}",
        stderr(&second)
    );
    assert_eq!(digest(&first), digest(&second), "the very same image");

    let registry = TestRegistry::start(&[]);
    push(&work.path().join("oci1"), &registry);
    let uploads = registry.count_requests("POST", "/blobs/uploads/");
    assert!(uploads >= 3, "the first push uploads layers and config");
    push(&work.path().join("oci2"), &registry);
    assert_eq!(
        registry.count_requests("POST", "/blobs/uploads/"),
        uploads,
        "the second push uploads no blob"
    );
}

#[test]
fn a_changed_build_arg_reruns_only_what_follows_its_declaration() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox\nRUN echo before > /before\nARG VERSION=1\nRUN echo \"v$VERSION\" > /version\nRUN echo after > /after\n",
    );
    let first = build(
        &dockerfile,
        &root,
        &work.path().join("o1"),
        &["--build-arg", "VERSION=1"],
    );
    assert_eq!(counts(&first), (3, 0));
    let same = build(
        &dockerfile,
        &root,
        &work.path().join("o2"),
        &["--build-arg", "VERSION=1"],
    );
    assert_eq!(counts(&same), (0, 3));
    let changed = build(
        &dockerfile,
        &root,
        &work.path().join("o3"),
        &["--build-arg", "VERSION=2"],
    );
    // /before stays cached; every RUN after ARG VERSION sees it in its environment.
    assert_eq!(counts(&changed), (2, 1));
    let back = build(
        &dockerfile,
        &root,
        &work.path().join("o4"),
        &["--build-arg", "VERSION=1"],
    );
    assert_eq!(counts(&back), (0, 3), "both variants stay cached");
    assert_eq!(digest(&back), digest(&first));
}

#[test]
fn no_cache_and_no_cache_filter_rerun_what_they_name() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox AS base\nRUN echo base > /base\nFROM base AS app\nRUN echo app > /app\n",
    );
    build(&dockerfile, &root, &work.path().join("o"), &[]);
    assert_eq!(
        counts(&build(
            &dockerfile,
            &root,
            &work.path().join("o"),
            &["--no-cache"]
        )),
        (2, 0)
    );
    assert_eq!(
        counts(&build(
            &dockerfile,
            &root,
            &work.path().join("o"),
            &["--no-cache-filter", "APP"]
        )),
        (1, 1)
    );
}

#[test]
fn a_build_killed_mid_run_keeps_every_finished_step() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let marker = 5_000_000 + std::process::id() % 100_000;
    let slow = format!(
        "FROM busybox\nRUN echo a > /a\nRUN echo b > /b\nRUN echo started && sleep {marker}\n"
    );
    let dockerfile = write_dockerfile(work.path(), &slow);
    let mut child = spawn_until_logged(
        &mut debug_run_cmd(&dockerfile, &root, &work.path().join("o")),
        "started",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let finished = slow.replace(&format!("sleep {marker}"), "true");
    std::fs::write(&dockerfile, finished).unwrap();
    let out = build(&dockerfile, &root, &work.path().join("o"), &[]);
    assert_eq!(counts(&out), (1, 2), "{}", stderr(&out));
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let work = tempfile::tempdir().unwrap();
    // A rendezvous, not a stopwatch: each stage's step leaves its mark in
    // a shared cache mount and waits (at most 60 s, then fails) for the
    // other's, so both succeed only if they run at the same time.
    let wait_for = |mine: &str, theirs: &str| {
        format!(
            "RUN --mount=type=cache,id=rendezvous,target=/rv touch /rv/{mine} && i=0 && \
             until [ -e /rv/{theirs} ]; do i=$((i+1)); [ $i -le 600 ] || exit 7; sleep 0.1; done && \
             echo from-{mine} > /{mine}\n"
        )
    };
    let dockerfile = write_dockerfile(
        work.path(),
        &format!(
            "FROM busybox AS a\n{}FROM busybox AS b\n{}\
             FROM busybox\nRUN --mount=type=bind,from=a,target=/ma --mount=type=bind,from=b,target=/mb cat /ma/a /mb/b\n",
            wait_for("a", "b"),
            wait_for("b", "a"),
        ),
    );
    let root = work.path().join("root");
    // Stamp each log line as it arrives: the stage that needs both starts
    // once both are done.
    use std::io::{BufRead, BufReader};
    let mut child = debug_run_cmd(&dockerfile, &root, &work.path().join("o"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stamped = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        stamped.push((std::time::Instant::now(), line.unwrap()));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let at = |prefix: &str| {
        stamped
            .iter()
            .find(|(_, l)| l.contains(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {stamped:?}"))
            .0
    };
    let last_start = at("[a 1/1]").max(at("[b 1/1]"));
    assert!(
        at("[stage-2 1/1]") > last_start,
        "the stage reading both started before them"
    );
    let lines: Vec<String> = stamped
        .iter()
        .filter_map(|(_, l)| common::output_text(l).map(str::to_string))
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("from-"))
            .collect::<Vec<_>>(),
        ["from-a", "from-b"]
    );
    let out = Output {
        stderr: stamped
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>()
            .into_bytes(),
        ..out
    };
    assert_eq!(counts(&out), (3, 0));
    // Changing stage b reruns b and what mounts it; a stays cached.
    let text = std::fs::read_to_string(&dockerfile)
        .unwrap()
        .replace("from-b", "from-B");
    std::fs::write(&dockerfile, text).unwrap();
    let out = build(&dockerfile, &root, &work.path().join("o"), &[]);
    assert_eq!(counts(&out), (2, 1));
    assert!(step_lines(&out).contains(&"from-B".to_string()));
}

#[test]
fn a_failing_stage_cancels_the_others() {
    let work = tempfile::tempdir().unwrap();
    let marker = 6_000_000 + std::process::id() % 100_000;
    let dockerfile = write_dockerfile(
        work.path(),
        &format!(
            "FROM busybox AS slow\nRUN sleep {marker}\n\
             FROM busybox AS broken\nRUN sleep 1 && exit 7\n\
             FROM busybox\nRUN --mount=type=bind,from=slow,target=/s --mount=type=bind,from=broken,target=/b true\n"
        ),
    );
    let started = std::time::Instant::now();
    let out = debug_run_cmd(
        &dockerfile,
        &work.path().join("root"),
        &work.path().join("o"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed().as_secs() < 20,
        "the slow stage was stopped"
    );
    assert!(
        stderr(&out).contains("Dockerfile:4:1: RUN sleep 1 && exit 7: RUN did not complete successfully: exit code: 7"),
        "the error names the failing stage's instruction and line: {}",
        stderr(&out)
    );
    let left = Command::new("pgrep")
        .args(["-f", &format!("sleep {marker}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn stage_mounts_with_a_source_path_in_both_tiers() {
    let work = tempfile::tempdir().unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox AS data\nRUN mkdir -p /out/sub && echo file > /out/f && echo deep > /out/sub/g && rm /bin/vi\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=data,source=/out,target=/in cat /in/f /in/sub/g && (touch /in/x 2>/dev/null || echo read-only)\n\
         RUN --mount=type=bind,from=data,source=out/f,target=/one cat /one\n\
         RUN --mount=type=bind,from=data,target=/whole test ! -e /whole/bin/vi && echo whiteouts-hold\n",
    );
    for snapshots in ["overlay", "copy"] {
        let out = debug_run_cmd(
            &dockerfile,
            &work.path().join(format!("root-{snapshots}")),
            &work.path().join("o"),
        )
        .env("RBUILD_SNAPSHOTS", snapshots)
        .output()
        .unwrap();
        assert!(out.status.success(), "{snapshots}: {}", stderr(&out));
        assert_eq!(
            step_lines(&out)[..5],
            ["file", "deep", "read-only", "file", "whiteouts-hold"],
            "{snapshots}"
        );
    }
}
