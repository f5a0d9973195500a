//! What the file-tree benchmarks share: a generated tree of small files
//! and the median of their timings.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// `count` files of 100–600 bytes spread over 100 dirs under
/// `root/usr/share`, named `<prefix><i>`.
pub fn write_files(root: &Path, count: usize, prefix: &str) {
    for i in 0..count {
        let dir = root.join(format!("usr/share/d{:02}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        let body = vec![b'a' + (i % 26) as u8; 100 + (i * 7919) % 500];
        std::fs::write(dir.join(format!("{prefix}{i:05}")), body).unwrap();
    }
}

/// The median of `times`.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
