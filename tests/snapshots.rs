//! Commit, don't round-trip (issue 15): a finished step's overlay upper
//! dir becomes the snapshot later steps stack as a lower dir, instead of
//! its layer being written and then extracted again. Checked through the
//! real binary: the snapshot store holds, under each made layer's chain
//! id, the step's own upper dir (in overlay format: a deletion is a 0/0
//! whiteout device), and the steps after it see what it did.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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
fn the_copy_tier_commits_a_steps_whole_root_and_the_next_step_copies_it() {
    if !is_root() {
        skip("the test reads the store's snapshots as root");
        return;
    }
    let (work, ctx) = work_with_context();
    let dockerfile = |last: &str| {
        let text = format!("FROM busybox\nRUN echo one > /one && rm /bin/true\n{last}\n");
        std::fs::write(ctx.join("Dockerfile"), text).unwrap();
    };
    let copy = [("RBUILD_SNAPSHOTS", "copy")];
    dockerfile("RUN cat /one > /two");
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
    // Each step's snapshot is the whole root it left, as written (a
    // written file's mtime has nanoseconds; an extracted one's does not).
    let first = tree(&chains[chains.len() - 2]);
    let one = std::fs::metadata(first.join("one")).unwrap();
    assert_ne!(one.mtime_nsec(), 0, "the tree was extracted, not committed");
    assert!(first.join("bin/sh").exists(), "the base is in the tree too");
    assert!(!first.join("bin/true").exists());
    assert!(tree(&chains[chains.len() - 1]).join("two").is_file());
    // The next build's changed step starts from a copy of that tree: a
    // file planted in it (no layer has it) shows up in the step.
    std::fs::write(first.join("planted"), "from the tree\n").unwrap();
    std::fs::remove_dir_all(work.path().join("unpacked")).unwrap();
    std::fs::remove_dir_all(work.path().join("tagged")).unwrap();
    std::fs::remove_dir_all(work.path().join("oci")).unwrap();
    dockerfile("RUN cat /planted > /seen");
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), &[], &copy);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("seen")).unwrap(),
        "from the tree\n",
        "{}",
        common::stderr(&out)
    );
}
