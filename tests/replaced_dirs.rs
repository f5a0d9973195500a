//! Writes into a directory that an earlier step replaced (`rm -rf` and
//! recreate): every later layer must add to it, never hide what is below.
//! The overlay tier once marked each later write opaque (a copied-up
//! `user.overlay.opaque` xattr read as a marker), losing files silently.
//! Each image is written as an OCI layout, unpacked by umoci and checked.

use std::process::Command;

mod common;

use common::{build_and_unpack, is_root, run_ok};

/// The files under /app in the image rbuild builds from `dockerfile`.
fn app_files(dockerfile: &str, snapshots: Option<&str>) -> Vec<String> {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("x.txt"), "x\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    // An archive ADD unpacks into the replaced directory.
    run_ok(
        Command::new("tar")
            .args(["-czf", "add.tar.gz", "x.txt"])
            .arg("--transform=s/x.txt/added.txt/")
            .current_dir(&ctx),
    );
    let env: Vec<(&str, &str)> = snapshots
        .map(|m| ("RBUILD_SNAPSHOTS", m))
        .into_iter()
        .collect();
    let (_, rootfs) = build_and_unpack(&ctx, work.path(), &[], &env);
    let mut names: Vec<String> = std::fs::read_dir(rootfs.join("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const REPLACE: &str = "FROM busybox\n\
    RUN mkdir -p /app && echo old > /app/old\n\
    RUN rm -rf /app && mkdir /app && echo keep > /app/keep\n";

#[test]
fn later_steps_add_to_a_replaced_directory_in_every_snapshot_mode() {
    if !is_root() {
        common::skip("building with overlay snapshots needs root here");
        return;
    }
    let cases = [
        (
            "RUN",
            format!("{REPLACE}RUN echo more > /app/more\n"),
            vec!["keep", "more"],
        ),
        (
            "COPY",
            format!("{REPLACE}COPY x.txt /app/\nRUN echo more > /app/more\n"),
            vec!["keep", "more", "x.txt"],
        ),
        (
            "ADD",
            format!("{REPLACE}ADD add.tar.gz /app/\n"),
            vec!["added.txt", "keep"],
        ),
        (
            "COPY --from",
            format!(
                "FROM busybox AS other\nRUN echo o > /o\n{REPLACE}COPY --from=other /o /app/o\n"
            ),
            vec!["keep", "o"],
        ),
        (
            "FROM stage",
            format!(
                "{}FROM base\nRUN echo more > /app/more\nCOPY x.txt /app/\n",
                REPLACE.replace("FROM busybox", "FROM busybox AS base")
            ),
            vec!["keep", "more", "x.txt"],
        ),
    ];
    for mode in [None, Some("copy")] {
        for (what, dockerfile, expected) in &cases {
            assert_eq!(
                app_files(dockerfile, mode),
                *expected,
                "{what} after the replace (snapshots: {})",
                mode.unwrap_or("overlay")
            );
        }
    }
}
