//! A full disk: bad input and a bad environment get a clear error, never a
//! panic, and leave the store usable. The store is a small tmpfs; a COPY
//! whose files do not fit fails in the copy itself (its file threads), one
//! whose files fit but whose layer does not fails in the layer writer
//! (its own thread), both with the kernel's words and exit 3; the same
//! store then builds a small COPY, and no mount is left below it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{is_root, skip, stderr};

/// A tmpfs of `mib` MiB at `dir`, detached on drop.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Bytes that do not compress, so sizes on disk are what they say.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn build(root: &Path, ctx: &Path, dockerfile: &str) -> Output {
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("build")
        .arg("--root")
        .arg(root)
        .args(["--progress=plain", "-t", "full:1"])
        .arg(ctx)
        .output()
        .unwrap()
}

/// Mount points below `dir` (the tmpfs itself excluded).
fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

fn assert_disk_full(out: &Output, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{what}: exit 3 (environment)\n{err}"
    );
    assert!(
        err.contains("No space left on device"),
        "{what}: the kernel's words\n{err}"
    );
    assert!(!err.contains("panicked"), "{what}: no panic\n{err}");
}

#[test]
fn a_full_store_fails_clearly_and_stays_usable() {
    if !is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(ctx.join("many")).unwrap();
    let disk = Tmpfs::mount(&root, 24);
    // Seed the base first: what fails below is the COPY, not the base.
    let seeded = build(&root, &ctx, "FROM busybox\n");
    assert!(seeded.status.success(), "{}", stderr(&seeded));

    // Files that do not fit: 40 files of 1 MiB, written by the copy's
    // threads.
    for i in 0..40 {
        std::fs::write(ctx.join(format!("many/f{i:02}")), noise(1 << 20, i)).unwrap();
    }
    let out = build(&root, &ctx, "FROM busybox\nCOPY many /many\n");
    assert_disk_full(&out, "the copy");
    // Named by the file the copy could not write.
    assert!(
        stderr(&out).contains("COPY many /many: many/f"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(ctx.join("many")).unwrap();

    // Files that fit, a layer that does not: 12 MiB copied, then 12 MiB
    // of tar to write beside them.
    std::fs::write(ctx.join("one"), noise(12 << 20, 99)).unwrap();
    let out = build(&root, &ctx, "FROM busybox\nCOPY one /one\n");
    assert_disk_full(&out, "the layer");
    assert!(stderr(&out).contains("writing layer"), "{}", stderr(&out));
    std::fs::remove_file(ctx.join("one")).unwrap();

    // The same store builds, and the image holds the file.
    std::fs::write(ctx.join("small"), b"fits\n").unwrap();
    let out = build(
        &root,
        &ctx,
        "FROM busybox\nCOPY small /small\nRUN cat /small\n",
    );
    assert!(out.status.success(), "after a full disk\n{}", stderr(&out));
    assert!(stderr(&out).contains("fits"), "{}", stderr(&out));
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "no mount left");
    drop(disk);
}
