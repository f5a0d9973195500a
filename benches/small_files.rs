//! The cost of a small-files layer (`cargo bench --bench small_files`),
//! issue 15's target: a step that writes 10,000 small files should cost
//! well under a second to diff and write.
//!
//! A lower dir (a base of 5,000 files in 100 dirs, overlay format) and an
//! upper dir holding what a step like `RUN` writing 10,000 files into
//! those dirs leaves; timed separately: the differ (`overlay_changes`),
//! then the layer write (tar, gzip on every core, digests, commit to the
//! content store). Medians of 7 runs, the page cache warm. A run also
//! checks that the layer is the same bytes every time.
//!
//! `cargo test --bench small_files` runs a small version (1,000 files).
//! End-to-end numbers against BuildKit are `bench/snapshots.sh`'s.

use std::time::{Duration, Instant};

use rbuild::cache::ContentStore;
use rbuild::snapshot::diff::{overlay_changes, write_layer, LayerOptions, OpaqueXattr};

mod common;
use common::{median, write_files};

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (base, new, rounds) = if quick {
        (500, 1_000, 1)
    } else {
        (5_000, 10_000, 7)
    };
    let work = tempfile::tempdir().unwrap();
    let (lower, upper) = (work.path().join("lower"), work.path().join("upper"));
    write_files(&lower, base, "base");
    write_files(&upper, new, "new");
    let store = ContentStore::open(work.path().join("store")).unwrap();
    let lowers = vec![lower];
    let (mut diffs, mut writes, mut digest) = (Vec::new(), Vec::new(), None);
    for _ in 0..rounds {
        let start = Instant::now();
        let changes = overlay_changes(&upper, &lowers, OpaqueXattr::Trusted).unwrap();
        diffs.push(start.elapsed());
        assert!(changes.len() >= new, "{} changes", changes.len());
        let start = Instant::now();
        let layer = write_layer(&store, &changes, LayerOptions::default(), None).unwrap();
        writes.push(start.elapsed());
        assert!(
            digest.as_ref().is_none_or(|d| *d == layer.digest),
            "the same upper dir gave two layers"
        );
        digest = Some(layer.digest);
    }
    let (diff, write) = (median(diffs), median(writes));
    println!(
        "small_files: {new} new files over a {base}-file lower, medians of {rounds}: \
         diff {:.1} ms, layer write {:.1} ms, total {:.1} ms (target < 1000 ms)",
        diff.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3,
        (diff + write).as_secs_f64() * 1e3,
    );
    if !quick {
        assert!(diff + write < Duration::from_secs(1), "over the 1 s target");
    }
}
