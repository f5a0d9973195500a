//! What the copy tier pays per step, by root size (`cargo bench --bench
//! copy_differ`), issue 16's measure, on a 4,000-file and a 100,000-file
//! root, for a step that changes one file. A step on its stage's live tree
//! (the tree the step before it left, this process's) pays the take (one
//! rename out of the store) and the diff: one walk of the root after the
//! step, compared with the walk kept from the step before
//! (`diff::state_changes`). The first step of a build on a tree another
//! build left pays a copy of it instead (`tree::copy_into`) and a walk
//! before the step (`diff::record_tree`). Medians of 5 runs, the page
//! cache warm. The target is a diff whose cost grows with what the
//! step changed, not with the root; this prints the ratio of the two roots
//! so the README can say where it stands.
//!
//! `cargo test --bench copy_differ` runs a small version (200 and 2,000
//! files).

use std::time::{Duration, Instant};

use rbuild::snapshot::diff::{record_tree, state_changes, Change};
use rbuild::snapshot::tree::copy_into;

mod common;
use common::{median, write_files};

/// The costs for a root of `files` files: take, diff (a live tree's
/// step), copy, record (a build's first step on another build's tree).
fn measure(files: usize, rounds: usize) -> [Duration; 4] {
    let work = tempfile::tempdir().unwrap();
    let committed = work.path().join("tree");
    write_files(&committed, files, "f");
    let ws = work.path().join("ws");
    let mut kept = record_tree(&committed).unwrap();
    let (mut takes, mut diffs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        std::fs::rename(&committed, &ws).unwrap();
        takes.push(start.elapsed());
        std::fs::write(ws.join("usr/share/d00/f00000"), format!("changed {round}")).unwrap();
        let start = Instant::now();
        let after = record_tree(&ws).unwrap();
        let changes = state_changes(&kept, &after, &ws).unwrap();
        diffs.push(start.elapsed());
        assert_one_change(&changes);
        kept = after;
        std::fs::rename(&ws, &committed).unwrap();
    }
    let (mut copies, mut records) = (Vec::new(), Vec::new());
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
        record_tree(&ws).unwrap();
        records.push(start.elapsed());
    }
    [
        median(takes),
        median(diffs),
        median(copies),
        median(records),
    ]
}

fn assert_one_change(changes: &[Change]) {
    let puts = changes
        .iter()
        .filter(|c| matches!(c, Change::Put { .. }))
        .count();
    assert!(
        (1..=4).contains(&puts),
        "one file and its parents changed, not {puts}: {changes:?}"
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (small, large, rounds) = if quick {
        (200, 2_000, 1)
    } else {
        (4_000, 100_000, 5)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let small_costs = measure(small, rounds);
    let large_costs = measure(large, rounds);
    for (files, [take, diff, copy, record]) in [(small, small_costs), (large, large_costs)] {
        println!(
            "copy_differ: {files}-file root, one file changed, medians of {rounds}: \
             live tree: take {:.2} ms, diff {:.1} ms; first step on another build's tree: \
             copy {:.1} ms, record {:.1} ms",
            ms(take),
            ms(diff),
            ms(copy),
            ms(record)
        );
    }
    let ratio = |i: usize| ms(large_costs[i]) / ms(small_costs[i]);
    println!(
        "copy_differ: {large}-file / {small}-file root: diff {:.1}x, copy {:.1}x, record {:.1}x",
        ratio(1),
        ratio(2),
        ratio(3)
    );
}
