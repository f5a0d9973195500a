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

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{is_root, ran_steps, skip, stderr};
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

/// The points a tier reaches: the copy tier never extracts a layer into
/// a snapshot (it applies layers to each step's own tree).
fn points_of(tier: &str) -> Vec<&'static str> {
    POINTS
        .iter()
        .copied()
        .filter(|p| tier == "overlay" || *p != "snapshot-extracted")
        .collect()
}

fn kill_then_rebuild(work: &Path, ctx: &Path, tier: &str, point: &str) {
    let root = work.join(format!("root-{tier}-{point}"));
    let out = work.join(format!("out-{tier}-{point}"));
    let mut env = vec![("RBUILD_FAILPOINT", point)];
    if tier == "copy" {
        env.push(("RBUILD_SNAPSHOTS", "copy"));
    }
    let killed = build(ctx, &root, &out, &env);
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{tier}/{point}: the build was not killed there: {:?}\n{}",
        killed.status,
        stderr(&killed)
    );
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
    if !is_root() {
        skip("RUN in the full tier needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();
    for tier in ["overlay", "copy"] {
        for point in points_of(tier) {
            kill_then_rebuild(work.path(), &ctx, tier, point);
        }
    }
}
