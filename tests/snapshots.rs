//! Commit, don't round-trip (issue 15): a finished step's overlay upper
//! dir becomes the snapshot later steps stack as a lower dir, instead of
//! its layer being written and then extracted again. Checked through the
//! real binary: the snapshot store holds, under each made layer's chain
//! id, the step's own upper dir (in overlay format: a deletion is a 0/0
//! whiteout device), and the steps after it see what it did.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

mod common;

use common::{build_and_unpack, is_root, skip};
use rbuild::blob::Digest;

/// The diff_ids of the image in the OCI layout at `oci`.
fn diff_ids(oci: &Path) -> Vec<Digest> {
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(oci.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().parse().unwrap())
        .collect()
}

/// A scratch dir with an empty build context `ctx/` in it.
fn work_with_context() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    (work, ctx)
}

/// `sub` (`fs` or `tree`) of the snapshot of `chain` in the store the
/// build in `work` used.
fn snapshot_dir(work: &Path, chain: &Digest, sub: &str) -> std::path::PathBuf {
    work.join("root/snapshots").join(chain.hex()).join(sub)
}

/// A copy-tier build of `FROM busybox` and `steps` in `work` (its store
/// kept from build to build, its outputs made anew), unpacked.
fn copy_tier_build(work: &Path, ctx: &Path, steps: &str) -> (std::process::Output, PathBuf) {
    copy_tier_rebuild(work, ctx, &format!("FROM busybox\n{steps}\n"))
}

/// A copy-tier build of `dockerfile` in `work`, as [`copy_tier_build`].
fn copy_tier_rebuild(work: &Path, ctx: &Path, dockerfile: &str) -> (std::process::Output, PathBuf) {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for sub in ["unpacked", "tagged", "oci"] {
        let _ = std::fs::remove_dir_all(work.join(sub));
    }
    build_and_unpack(ctx, work, &[], &[("RBUILD_SNAPSHOTS", "copy")])
}

#[test]
fn a_steps_upper_dir_is_committed_as_the_next_steps_lower_dir() {
    if !is_root() {
        skip("overlay snapshots need the full tier (root)");
        return;
    }
    let (work, ctx) = work_with_context();
    std::fs::write(ctx.join("app.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN echo made > /made && rm /bin/true && mkdir /o && touch /o/keep\n\
         COPY app.txt /app.txt\n\
         RUN test \"$(cat /made)\" = made && test ! -e /bin/true && cat /app.txt > /seen\n\
         RUN rm -r /o && mkdir /o && touch /o/new\n\
         RUN --security=insecure ls /o > /seen-o\n",
    )
    .unwrap();
    let allow = ["--allow", "security.insecure"];
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), &allow, &[]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "from the context\n",
        "{}",
        common::stderr(&out)
    );
    let ids = diff_ids(&work.path().join("oci"));
    let chains = rbuild::snapshot::chain_ids(&ids);
    let snapshot =
        |from_top: usize| snapshot_dir(work.path(), &chains[chains.len() - 1 - from_top], "fs");
    // The first RUN's snapshot is its upper dir: the file it wrote, and
    // its deletion as overlay's whiteout.
    let run = snapshot(4);
    let made = std::fs::metadata(run.join("made")).unwrap();
    let whiteout = std::fs::symlink_metadata(run.join("bin/true")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    // Written by the step, not extracted from its layer: a tar keeps whole
    // seconds, so an extracted file's mtime has no nanoseconds (the odds
    // of a written file landing on a whole second are one in 10^9).
    assert_ne!(made.mtime_nsec(), 0, "the layer was extracted again");
    // The COPY's and the last RUN's too, though nothing stacked the last.
    assert_eq!(
        std::fs::read_to_string(snapshot(3).join("app.txt")).unwrap(),
        "from the context\n"
    );
    assert!(snapshot(2).join("seen").is_file());
    assert!(snapshot(0).join("seen-o").is_file());
    // A directory replaced in a remapped step (a user namespace: overlay
    // marks it opaque with user.* xattrs) is opaque to a step mounted as
    // root too (trusted.*, as --security=insecure is): its old file is
    // gone for both.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen-o")).unwrap(),
        "new\n"
    );
    // No workspace or half-made snapshot is left behind.
    for sub in ["w", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(work.path().join("root/snapshots").join(sub))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "snapshots/{sub} has {left:?}");
    }
}

#[test]
fn the_copy_tier_hands_a_stages_tree_from_step_to_step_and_keeps_the_last() {
    if !is_root() {
        skip("the test reads the store's snapshots as root");
        return;
    }
    let (work, ctx) = work_with_context();
    let dockerfile = |last: &str| {
        let text = format!(
            "FROM busybox\nRUN echo one > /one && rm /bin/true\nRUN cat /one > /two\n{last}\n"
        );
        std::fs::write(ctx.join("Dockerfile"), text).unwrap();
    };
    let copy = [("RBUILD_SNAPSHOTS", "copy")];
    dockerfile("");
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), &[], &copy);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("two")).unwrap(),
        "one\n",
        "{}",
        common::stderr(&out)
    );
    let ids = diff_ids(&work.path().join("oci"));
    let chains = rbuild::snapshot::chain_ids(&ids);
    let tree = |chain: &Digest| snapshot_dir(work.path(), chain, "tree");
    // One tree went through the stage: the second RUN took the first's
    // (it is gone from the store) and the last one's is kept, as written
    // (a written file's mtime has nanoseconds; an extracted one's not).
    let first = tree(&chains[chains.len() - 2]);
    assert!(
        !first.exists(),
        "the first RUN's tree was copied, not taken"
    );
    let last = tree(&chains[chains.len() - 1]);
    let one = std::fs::metadata(last.join("one")).unwrap();
    assert_ne!(one.mtime_nsec(), 0, "the tree was extracted, not committed");
    assert!(!last.join("bin/true").exists() && last.join("two").is_file());
    // Nothing copied the base after the first RUN wrote /one: a copy
    // gives every inode a new change time.
    let sh = std::fs::symlink_metadata(last.join("bin/sh")).unwrap();
    assert!(
        (sh.ctime(), sh.ctime_nsec()) <= (one.mtime(), one.mtime_nsec()),
        "the base was copied after the first RUN"
    );
    // The next build's new step starts from that tree, copied, since
    // another build made it: a file planted in it (no layer has it) shows
    // up in the step, and the tree stays in the store.
    std::fs::write(last.join("planted"), "from the tree\n").unwrap();
    for sub in ["unpacked", "tagged", "oci"] {
        std::fs::remove_dir_all(work.path().join(sub)).unwrap();
    }
    dockerfile("RUN cat /planted > /seen");
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), &[], &copy);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "from the tree\n",
        "{}",
        common::stderr(&out)
    );
    assert!(
        last.join("planted").is_file(),
        "another build's tree was taken"
    );
}

#[test]
fn stages_forking_from_one_tree_in_the_copy_tier_get_the_layers_overlay_gives() {
    if !is_root() {
        skip("overlay snapshots need the full tier (root)");
        return;
    }
    // Two stages on one stage's tree, run side by side: one takes the
    // tree, the other builds its own from the layers; each edits a file
    // of the shared stage in place, which must not reach the other.
    let dockerfile = "FROM busybox AS base\n\
         RUN echo base > /shared && mkdir /d && echo gone > /d/f\n\
         FROM base AS x\n\
         RUN echo x >> /shared && rm /d/f && echo x > /x\n\
         RUN echo again >> /shared\n\
         FROM base AS y\n\
         RUN echo y >> /shared && echo y > /y\n\
         FROM busybox\n\
         COPY --from=x /shared /from-x\n\
         COPY --from=y /shared /from-y\n\
         COPY --from=x /x /x\n\
         COPY --from=y /y /y\n\
         RUN test ! -e /d\n";
    let mut layers = Vec::new();
    for tier in ["overlay", "copy"] {
        let (work, ctx) = work_with_context();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let env = [("RBUILD_SNAPSHOTS", tier)];
        let epoch = ["--source-date-epoch", "1700000000"];
        let (out, rootfs) = build_and_unpack(&ctx, work.path(), &epoch, &env);
        let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();
        assert_eq!(
            read("from-x"),
            "base\nx\nagain\n",
            "{tier}: {}",
            common::stderr(&out)
        );
        assert_eq!(read("from-y"), "base\ny\n", "{tier}");
        layers.push(diff_ids(&work.path().join("oci")));
    }
    assert_eq!(
        layers[0], layers[1],
        "the copy tier's layers differ from overlay's"
    );
}

#[test]
fn a_copy_tier_step_starts_from_the_deepest_tree_the_store_has_and_applies_the_rest() {
    if !is_root() {
        skip("the test reads the store's snapshots as root");
        return;
    }
    let (work, ctx) = work_with_context();
    let build = |steps: &[&str]| copy_tier_build(work.path(), &ctx, &steps.join("\n"));
    let a = "RUN echo a > /a";
    let b = "RUN echo b > /b";
    build(&[a]);
    let chains = rbuild::snapshot::chain_ids(&diff_ids(&work.path().join("oci")));
    let tree_a = snapshot_dir(work.path(), chains.last().unwrap(), "tree");
    // Planted in A's tree, which no layer has: whoever starts from the
    // tree sees it.
    std::fs::write(tree_a.join("planted"), "a's tree\n").unwrap();
    // B copies A's tree (another build's), C takes B's.
    build(&[a, b, "RUN echo c > /c"]);
    // Now B's tree is gone and A's is the deepest: a new step after B
    // starts from a copy of A's tree with B's layer applied on it.
    let (out, rootfs) = build(&[a, b, "RUN cat /planted /b > /seen"]);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "a's tree\nb\n",
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_copy_tier_step_landing_on_another_builds_tree_keeps_its_own_going() {
    if !is_root() {
        skip("the test reads the store's snapshots as root");
        return;
    }
    let (work, ctx) = work_with_context();
    let build = |steps: &str| copy_tier_build(work.path(), &ctx, steps);
    // An empty RUN: its chain is the base's plus the empty layer, the same
    // for any command that changes nothing.
    build("RUN echo one");
    let chains = rbuild::snapshot::chain_ids(&diff_ids(&work.path().join("oci")));
    let empty_run = snapshot_dir(work.path(), chains.last().unwrap(), "tree");
    std::fs::write(empty_run.join("planted"), "the other build's\n").unwrap();
    // The next build's first RUN lands on that chain: its own tree goes
    // on to the step after (which does not see the planted file), not a
    // copy of the other build's.
    let (out, rootfs) = build("RUN echo two\nRUN test ! -e /planted && echo own > /seen");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "own\n",
        "{}",
        common::stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(work.path().join("root/snapshots/tmp"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the replaced tree was left: {left:?}");
}

#[test]
fn a_copy_or_mount_from_a_stage_in_the_copy_tier_reads_its_tree_in_place_and_gives_it_back() {
    if !is_root() {
        skip("the test reads the store's snapshots as root");
        return;
    }
    let (work, ctx) = work_with_context();
    let builder = "FROM busybox AS builder\nRUN mkdir /out && echo built > /out/app";
    copy_tier_rebuild(work.path(), &ctx, builder);
    let chains = rbuild::snapshot::chain_ids(&diff_ids(&work.path().join("oci")));
    let tree = snapshot_dir(work.path(), chains.last().unwrap(), "tree");
    let app = std::fs::symlink_metadata(tree.join("out/app")).unwrap();
    let root_before = std::fs::symlink_metadata(&tree).unwrap();
    // The builder stage is cached now; the final stage copies from its
    // tree, and a stage on the builder runs beside it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = format!(
        "{builder}\nFROM builder AS next\nRUN echo more >> /out/app\n\
         FROM busybox\nCOPY --from=builder /out/app /app\nCOPY --from=next /out/app /next\n\
         RUN --mount=type=bind,from=builder,source=/out,target=/m cat /m/app > /via-mount\n\
         RUN --mount=type=bind,from=builder,source=/out,target=/m,rw echo rw >> /m/app"
    );
    let (out, rootfs) = copy_tier_rebuild(work.path(), &ctx, &text);
    let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();
    assert_eq!(read("app"), "built\n", "{}", common::stderr(&out));
    assert_eq!(read("next"), "built\nmore\n");
    assert_eq!(read("via-mount"), "built\n");
    // Lent and given back: the tree is in place with its own inodes, and
    // its root dir was moved (a move sets the dir's change time; a copy
    // of the tree would not have touched it).
    let app_after = std::fs::symlink_metadata(tree.join("out/app")).unwrap();
    assert_eq!(
        app_after.ino(),
        app.ino(),
        "the builder's tree was replaced"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("out/app")).unwrap(),
        "built\n"
    );
    let root_after = std::fs::symlink_metadata(&tree).unwrap();
    assert!(
        (root_after.ctime(), root_after.ctime_nsec())
            > (root_before.ctime(), root_before.ctime_nsec()),
        "the tree was copied, not lent"
    );
    // A RUN mounting the stage borrows the tree the same way.
    let before_mount = std::fs::symlink_metadata(&tree).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = format!(
        "{builder}\nFROM busybox\n\
         RUN --mount=type=bind,from=builder,source=/out,target=/m cat /m/app > /mounted"
    );
    let (out, rootfs) = copy_tier_rebuild(work.path(), &ctx, &text);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("mounted")).unwrap(),
        "built\n",
        "{}",
        common::stderr(&out)
    );
    let after_mount = std::fs::symlink_metadata(&tree).unwrap();
    assert!(
        (after_mount.ctime(), after_mount.ctime_nsec())
            > (before_mount.ctime(), before_mount.ctime_nsec()),
        "the mounted tree was copied, not lent"
    );
    let left: Vec<_> = std::fs::read_dir(work.path().join("root/snapshots/tmp"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "a loan was left: {left:?}");
}
