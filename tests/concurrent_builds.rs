//! Eight builds at once on one store, in each snapshot tier (issue 22's
//! reliability campaign). They share their first steps and differ in the
//! last two, so they commit the same chains at the same time: overlay
//! steps name their snapshots by chain id while other builds stack and
//! commit the same chain, and copy-tier builds copy, take and replace one
//! another's trees. What must hold:
//!
//! - every build succeeds, and its files are what the Dockerfile says;
//! - the shared steps' layers are the same blobs in every image (with
//!   `SOURCE_DATE_EPOCH`, whichever build ran them), and the last two
//!   differ between builds;
//! - a ninth build, the same as the first, runs nothing and gives the
//!   first one's image;
//! - once they are done, no snapshot dir is left that no chain names
//!   (a build whose chain another committed first removes its own), and
//!   `rbuild prune --all` leaves a store the next build uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{is_root, ran_steps, skip, stderr};

const BUILDS: usize = 8;

const DOCKERFILE: &str = "FROM busybox
RUN yes shared | head -c 8000000 > /big && echo a > /a
COPY f /f
ARG N
RUN echo $N > /n
RUN cat /a /f /n > /all
";

/// `rbuild build` of `work/ctx` on the store `root` with `N=n`, its files
/// written to `work/out-<name>` and its OCI layout to `work/oci-<name>`.
fn build(work: &Path, root: &Path, tier: &str, name: &str, n: usize) -> Command {
    build_of(&work.join("ctx"), work, root, tier, name, n)
}

/// The same of the context `ctx`.
fn build_of(ctx: &Path, work: &Path, root: &Path, tier: &str, name: &str, n: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("N={n}"))
        .arg("--iidfile")
        .arg(work.join(format!("{name}.iid")))
        .arg("--root")
        .arg(root)
        .arg("-o")
        .arg(format!(
            "type=local,dest={}",
            work.join(format!("out-{name}")).display()
        ))
        .arg("-o")
        .arg(format!(
            "type=oci,dest={},tar=false",
            work.join(format!("oci-{name}")).display()
        ))
        .arg(ctx)
        .env_remove("RBUILD_FAILPOINT")
        .env_remove("RBUILD_SNAPSHOTS")
        // Two builds that both run a step make the same layer only with
        // the file times pinned, as BuildKit's reproducible builds.
        .env("SOURCE_DATE_EPOCH", "1700000000");
    if tier == "copy" {
        cmd.env("RBUILD_SNAPSHOTS", "copy");
    }
    cmd
}

/// The layer digests of the image in the OCI layout `oci`.
fn layers(oci: &Path) -> Vec<String> {
    common::manifest_layers(&common::oci_manifest(oci))
}

/// The dirs under the snapshot store's `p/` that no chain's symlink
/// names.
fn unnamed_snapshots(root: &Path) -> Vec<PathBuf> {
    let snapshots = root.join("snapshots");
    let named: std::collections::HashSet<PathBuf> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| snapshots.join(target))
        .collect();
    match std::fs::read_dir(snapshots.join("p")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| !named.contains(p))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn eight_builds_at_once(tier: &str) {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();
    let root = work.path().join("root");
    // The base is put in the store once, by a build that shares no step
    // with the eight, so they race on every step.
    let base_only = work.path().join("base-only");
    std::fs::create_dir(&base_only).unwrap();
    std::fs::write(base_only.join("Dockerfile"), "FROM busybox\n").unwrap();
    let warm = build_of(&base_only, work.path(), &root, tier, "warm", 100)
        .output()
        .unwrap();
    assert!(warm.status.success(), "{tier}: {}", stderr(&warm));

    let children: Vec<_> = (0..BUILDS)
        .map(|n| {
            build(work.path(), &root, tier, &n.to_string(), n)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut all_layers = Vec::new();
    for (n, out) in outputs.iter().enumerate() {
        assert!(out.status.success(), "{tier} build {n}: {}", stderr(out));
        let files = work.path().join(format!("out-{n}"));
        assert_eq!(
            std::fs::read_to_string(files.join("all")).unwrap(),
            format!("a\nfrom the context\n{n}\n"),
            "{tier} build {n}"
        );
        assert_eq!(
            std::fs::metadata(files.join("big")).unwrap().len(),
            8_000_000
        );
        all_layers.push(layers(&work.path().join(format!("oci-{n}"))));
    }
    let shared = all_layers[0].len() - 2;
    for (n, layers) in all_layers.iter().enumerate() {
        assert_eq!(
            layers[..shared],
            all_layers[0][..shared],
            "{tier} build {n}: the shared steps' layers"
        );
        if n > 0 {
            assert_ne!(
                layers[shared..],
                all_layers[0][shared..],
                "{tier} build {n}"
            );
        }
    }

    let again = build(work.path(), &root, tier, "again", 0)
        .output()
        .unwrap();
    assert!(again.status.success(), "{tier}: {}", stderr(&again));
    assert_eq!(
        ran_steps(&again),
        Vec::<String>::new(),
        "{tier}: {}",
        stderr(&again)
    );
    let iid =
        |name: &str| std::fs::read_to_string(work.path().join(format!("{name}.iid"))).unwrap();
    assert_eq!(iid("again"), iid("0"), "{tier}: the cached build's image");
    assert_eq!(unnamed_snapshots(&root), Vec::<PathBuf>::new(), "{tier}");

    let prune = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["prune", "--all", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(prune.status.success(), "{tier}: {}", stderr(&prune));
    let after = build(work.path(), &root, tier, "after", 3)
        .output()
        .unwrap();
    assert!(after.status.success(), "{tier}: {}", stderr(&after));
    assert_eq!(
        std::fs::read_to_string(work.path().join("out-after/all")).unwrap(),
        "a\nfrom the context\n3\n"
    );
}

#[test]
fn eight_builds_at_once_on_one_store_all_come_out_right() {
    if !is_root() {
        skip("RUN in the full tier needs root");
        return;
    }
    for tier in ["overlay", "copy"] {
        eight_builds_at_once(tier);
    }
}
