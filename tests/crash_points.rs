//! A build killed at each of rbuild's write points leaves a store the
//! next build can use (issue 15: "a crash at any point leaves a consistent
//! store"). `RBUILD_FAILPOINT` names the point; rbuild sends itself
//! SIGKILL there, as `kill -9` or the OOM killer would. For every point
//! of `rbuild::failpoint::POINTS`, in both snapshot tiers:
//!
//! - the killed build must really die of SIGKILL (a point no longer
//!   reached fails the test rather than passing unseen);
//! - the next build on the same store succeeds and its image holds what
//!   the Dockerfile says;
//! - the build after that runs nothing (every step cached) and gives the
//!   same image: the store the crash left is one the cache trusts.
//!
//! A push killed before its manifest leaves the registry without one (a
//! registry never holds a manifest whose blobs are missing) and the next
//! push completes; a collection (`rbuild prune --all`) killed midway
//! leaves a store the next build and collection use.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{is_root, ran_steps, skip, stderr, TestRegistry};
use rbuild::failpoint::POINTS;

const DOCKERFILE: &str = "FROM busybox
RUN echo a > /a
COPY f /f
RUN echo b > /b && cat /a /f > /both
";

/// `rbuild build` of `ctx` into the store `root`, the image's file system
/// written to `out`, with `env` added.
fn build(ctx: &Path, root: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--iidfile"])
        .arg(root.with_extension("iid"))
        .arg("--root")
        .arg(root)
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .arg(ctx)
        .env_remove("RBUILD_FAILPOINT")
        .env_remove("RBUILD_SNAPSHOTS")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The points a build of a tier reaches: not a push's or a collection's;
/// the copy tier never extracts a layer into a snapshot (it applies
/// layers to a stage's own tree) and overlay never takes a tree.
fn points_of(tier: &str) -> Vec<&'static str> {
    let other_tier = match tier {
        "overlay" => "snapshot-tree-taken",
        _ => "snapshot-extracted",
    };
    POINTS
        .iter()
        .copied()
        .filter(|p| !p.starts_with("push-") && !p.starts_with("gc-"))
        .filter(|p| *p != other_tier)
        .collect()
}

/// The context every test here builds: `Dockerfile` and `f`.
fn context(work: &Path) -> std::path::PathBuf {
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();
    ctx
}

/// A scratch dir and the context in it; None (after a loud skip, a
/// failure in CI) when not root.
fn work_and_context() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !is_root() {
        skip("RUN in the full tier needs root");
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let ctx = context(work.path());
    Some((work, ctx))
}

fn assert_killed(out: &Output, what: &str) {
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{what}: not killed there: {:?}\n{}",
        out.status,
        stderr(out)
    );
}

/// Whether the registry has a manifest for `image` (skopeo reads it).
fn registry_has(image: &str) -> bool {
    Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap()
        .status
        .success()
}

fn kill_then_rebuild(work: &Path, ctx: &Path, tier: &str, point: &str) {
    let root = work.join(format!("root-{tier}-{point}"));
    let out = work.join(format!("out-{tier}-{point}"));
    let mut env = vec![("RBUILD_FAILPOINT", point)];
    if tier == "copy" {
        env.push(("RBUILD_SNAPSHOTS", "copy"));
    }
    let killed = build(ctx, &root, &out, &env);
    assert_killed(&killed, &format!("{tier}/{point}"));
    let tier_env = &env[1..];
    let rebuilt = build(ctx, &root, &out, tier_env);
    assert!(
        rebuilt.status.success(),
        "{tier}/{point}: the build after the crash failed: {}",
        stderr(&rebuilt)
    );
    let both = std::fs::read_to_string(out.join("both")).unwrap();
    assert_eq!(both, "a\nfrom the context\n", "{tier}/{point}");
    assert_eq!(std::fs::read_to_string(out.join("b")).unwrap(), "b\n");
    let image = std::fs::read_to_string(root.with_extension("iid")).unwrap();
    let again = build(ctx, &root, &work.join("again"), tier_env);
    assert!(again.status.success(), "{tier}/{point}: {}", stderr(&again));
    assert_eq!(
        ran_steps(&again),
        Vec::<String>::new(),
        "{tier}/{point}: a step ran again: {}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(root.with_extension("iid")).unwrap(),
        image,
        "{tier}/{point}: the cached build gave another image"
    );
}

#[test]
fn a_build_killed_at_any_write_point_leaves_a_store_the_next_build_uses() {
    let Some((work, ctx)) = work_and_context() else {
        return;
    };
    for tier in ["overlay", "copy"] {
        for point in points_of(tier) {
            kill_then_rebuild(work.path(), &ctx, tier, point);
        }
    }
}

#[test]
fn a_push_killed_before_its_manifest_leaves_none_and_the_next_completes() {
    let Some((work, ctx)) = work_and_context() else {
        return;
    };
    let registry = TestRegistry::start(&[]);
    let image = format!("{}/crash/push:1", registry.addr);
    let root = work.path().join("root");
    let push = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .args([
                "build",
                "--progress=plain",
                "--push",
                "-t",
                &image,
                "--root",
            ])
            .arg(&root)
            .arg(&ctx)
            .env_remove("RBUILD_FAILPOINT")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    assert_killed(
        &push(&[("RBUILD_FAILPOINT", "push-blobs-uploaded")]),
        "push-blobs-uploaded",
    );
    assert!(!registry_has(&image), "a manifest before the push finished");
    let again = push(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(registry_has(&image));
}

#[test]
fn a_collection_killed_midway_leaves_a_store_builds_and_collections_use() {
    let Some((work, ctx)) = work_and_context() else {
        return;
    };
    for point in POINTS.iter().filter(|p| p.starts_with("gc-")) {
        let root = work.path().join(format!("root-{point}"));
        let out = work.path().join(format!("out-{point}"));
        let first = build(&ctx, &root, &out, &[]);
        assert!(first.status.success(), "{}", stderr(&first));
        let prune = |env: &[(&str, &str)]| {
            Command::new(env!("CARGO_BIN_EXE_rbuild"))
                .args(["prune", "--all", "--root"])
                .arg(&root)
                .env_remove("RBUILD_FAILPOINT")
                .envs(env.iter().copied())
                .output()
                .unwrap()
        };
        let builds_right = |when: &str| {
            let out_now = build(&ctx, &root, &out, &[]);
            assert!(
                out_now.status.success(),
                "{point} {when}: {}",
                stderr(&out_now)
            );
            assert_eq!(
                std::fs::read_to_string(out.join("both")).unwrap(),
                "a\nfrom the context\n",
                "{point} {when}"
            );
        };
        assert_killed(&prune(&[("RBUILD_FAILPOINT", point)]), point);
        builds_right("after the killed collection");
        let pruned = prune(&[]);
        assert!(pruned.status.success(), "{point}: {}", stderr(&pruned));
        builds_right("after a whole collection");
    }
}
