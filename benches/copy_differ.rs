//! What the copy tier pays per step, by root size (`cargo bench --bench
//! copy_differ`), issue 16's measure: on a 4,000-file and a 100,000-file
//! root, a step that changes one file costs the copy of the committed
//! tree into the step's workspace (`tree::copy_into`), the record of that
//! tree (`diff::record_tree`) and the walk that finds the change
//! (`diff::copy_changes`). Medians of 5 runs, the page cache warm, each
//! copy into a fresh dir. The
//! issue's target is a diff whose cost grows with what the step changed,
//! not with the root; this prints the ratio of the two roots so the
//! README can say where it stands.
//!
//! `cargo test --bench copy_differ` runs a small version (200 and 2,000
//! files).

use std::time::{Duration, Instant};

use rbuild::snapshot::diff::{copy_changes, record_tree, Change};
use rbuild::snapshot::tree::copy_into;

mod common;
use common::{median, write_files};

/// The three costs for a root of `files` files: copy, record, diff.
fn measure(files: usize, rounds: usize) -> [Duration; 3] {
    let work = tempfile::tempdir().unwrap();
    let committed = work.path().join("tree");
    write_files(&committed, files, "f");
    let (mut copies, mut records, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // A fresh dir each round, nothing deleted until the end: on ext4
        // without a journal, files made right after others were deleted
        // wait for the inode allocator's scan past them (see README), a
        // cost of the file system that this measure leaves out.
        let ws = work.path().join(format!("ws{round}"));
        std::fs::create_dir(&ws).unwrap();
        let start = Instant::now();
        copy_into(&committed, &ws).unwrap();
        copies.push(start.elapsed());
        let start = Instant::now();
        let before = record_tree(&ws).unwrap();
        records.push(start.elapsed());
        std::fs::write(ws.join("usr/share/d00/f00000"), format!("changed {round}")).unwrap();
        let start = Instant::now();
        let changes = copy_changes(&before, &ws).unwrap();
        diffs.push(start.elapsed());
        let puts = changes
            .iter()
            .filter(|c| matches!(c, Change::Put { .. }))
            .count();
        assert!(
            (1..=4).contains(&puts),
            "one file and its parents changed, not {puts}: {changes:?}"
        );
    }
    [median(copies), median(records), median(diffs)]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (small, large, rounds) = if quick {
        (200, 2_000, 1)
    } else {
        (4_000, 100_000, 5)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let [s_copy, s_record, s_diff] = measure(small, rounds);
    let [l_copy, l_record, l_diff] = measure(large, rounds);
    for (files, copy, record, diff) in [
        (small, s_copy, s_record, s_diff),
        (large, l_copy, l_record, l_diff),
    ] {
        println!(
            "copy_differ: {files}-file root, one file changed, medians of {rounds}: \
             copy {:.1} ms, record {:.1} ms, diff {:.1} ms",
            ms(copy),
            ms(record),
            ms(diff)
        );
    }
    println!(
        "copy_differ: {large}-file / {small}-file root: copy {:.1}x, record {:.1}x, diff {:.1}x",
        ms(l_copy) / ms(s_copy),
        ms(l_record) / ms(s_record),
        ms(l_diff) / ms(s_diff)
    );
}
