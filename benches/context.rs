//! Context hashing (`cargo bench --bench context`), issue 6's targets:
//!
//! 1. Cold: a generated 500 MB, 20,000-file context (file data in the page
//!    cache, no hash cache yet) hashed as a `COPY . /app` key needs it:
//!    walk, stat, sha256 of every byte on all cores. Target ≥ 1 GB/s.
//! 2. Unchanged: the same context checked again with the hash cache read
//!    back from disk, as the next build does. Target ≤ 100 ms.
//!
//! `cargo test --bench context` runs a small version (50 MB, 2,000 files).

use std::io::Write;
use std::time::{Duration, Instant};

use rbuild::context::hashcache::HashCache;
use rbuild::context::{IgnoreRules, SourceTree};

/// Writes `files` files of pseudo-random bytes (sizes around `total /
/// files`) in 100 directories; returns the bytes written.
fn generate(dir: &std::path::Path, files: usize, total: u64) -> u64 {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let average = total / files as u64;
    let mut written = 0;
    let mut buffer = vec![0u8; (average * 3) as usize];
    for chunk in buffer.chunks_mut(8) {
        let v = next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&sub).unwrap();
        let size = (average / 2 + next() % average) as usize;
        let offset = (next() % average) as usize;
        let mut f = std::fs::File::create(sub.join(format!("f{i:05}.bin"))).unwrap();
        f.write_all(&buffer[offset..offset + size]).unwrap();
        written += size as u64;
    }
    written
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (files, total) = if quick {
        (2_000, 50_000_000)
    } else {
        (20_000, 500_000_000)
    };
    let ctx = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let bytes = generate(ctx.path(), files, total);
    let ignore = IgnoreRules::default();
    let sources = [".".to_string()];
    // Read everything once so the data is in the page cache.
    let warm = SourceTree::new(ctx.path(), &ignore, &[]).unwrap();
    let expected = warm.digest(&sources).unwrap();

    let rounds = if quick { 2 } else { 5 };
    let mut cold = Vec::new();
    let mut unchanged = Vec::new();
    for round in 0..rounds {
        let _ = std::fs::remove_dir_all(storage.path().join("context-cache"));
        // A build's key computation: load the table, hash, save it.
        let check = || {
            let started = Instant::now();
            let cache = HashCache::load(storage.path(), ctx.path());
            let tree = SourceTree::new(ctx.path(), &ignore, &[])
                .unwrap()
                .with_cache(&cache);
            assert_eq!(tree.digest(&sources).unwrap(), expected);
            cache.save().unwrap();
            started.elapsed()
        };
        cold.push(check());
        unchanged.push(check());
        eprintln!(
            "round {round}: cold {:.0} ms, unchanged {:.0} ms",
            cold[round].as_secs_f64() * 1000.0,
            unchanged[round].as_secs_f64() * 1000.0
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let cold = median(&mut cold);
    let unchanged = median(&mut unchanged);
    println!(
        "context of {files} files, {:.0} MB, {} threads",
        bytes as f64 / 1e6,
        rayon::current_num_threads()
    );
    println!(
        "cold hash: median {:.0} ms = {:.2} GB/s",
        cold.as_secs_f64() * 1000.0,
        bytes as f64 / cold.as_secs_f64() / 1e9
    );
    println!(
        "unchanged re-check (hash cache from disk): median {:.0} ms",
        unchanged.as_secs_f64() * 1000.0
    );
}
