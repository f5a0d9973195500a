//! Model-based check of layers (issue 13): random sequences of file-system
//! operations spread over many RUN steps, built in every snapshot mode
//! (overlay with remapped ids, overlay as host root, copy). For each build
//! the image that umoci unpacks must equal the last RUN's own view of the
//! tree, and the three images must equal each other (mtimes aside, as each
//! build runs at its own time). The operations are chosen to collide: few
//! paths, replaced directories, file↔dir↔symlink swaps, hardlinks, owner
//! and mode changes, renames.
//!
//! Seeds 1..=N run (N = `RBUILD_MODEL_SEQUENCES`, 12 by default);
//! `RBUILD_MODEL_SEED=S` runs just seed S. A failure names its seed and
//! prints the Dockerfile. Needs root (chroot into umoci's unpack).

use std::path::Path;

mod common;

use common::{build_and_unpack, is_root, list_tree_in, listing_differences, step_lines};

const SANDBOX_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");

/// xorshift64*: small, seedable, the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PATHS: &[&str] = &[
    "/m/a", "/m/a/x", "/m/a/y", "/m/a/x/z", "/m/b", "/m/b/x", "/m/c",
];
const LINK_TARGETS: &[&str] = &["x", "../b", "/m/c", "/m/a/x", "nowhere"];
const MODES: &[&str] = &["600", "644", "755", "700", "1777", "4755"];
const OWNERS: &[&str] = &["0:0", "1000:1000", "12:34", "65534:65534"];

/// One operation as a shell command; any may fail (the path may be the
/// wrong kind by now) and the sequence goes on.
fn operation(rng: &mut Rng, n: usize) -> String {
    let p = rng.pick(PATHS);
    let q = rng.pick(PATHS);
    let op = match rng.below(13) {
        0 => format!("mkdir -p $(dirname {p}) && echo c{n} > {p}"),
        1 => format!("echo more{n} >> {p}"),
        2 => format!("chmod {} {p}", rng.pick(MODES)),
        3 => format!("chown -h {} {p}", rng.pick(OWNERS)),
        4 => format!("rm -f {p}"),
        5 => format!("rm -rf {p} && mkdir -p {p} && echo k{n} > {p}/k"),
        6 => format!("rm -f {p} && mkdir -p {p}"),
        7 => format!("rm -rf {p} && echo f{n} > {p}"),
        8 => format!("rm -rf {p} && ln -s {} {p}", rng.pick(LINK_TARGETS)),
        9 => format!("ln -f {p} {q}"),
        10 => format!("mkdir -p {p}"),
        11 => format!("mv {p} {q}"),
        _ => format!("rm -rf {p}"),
    };
    format!("({op}) 2>/dev/null || true")
}

/// A Dockerfile for `seed`, and how many operations it holds.
fn sequence(seed: u64) -> (String, usize) {
    let mut rng = Rng::new(seed);
    let mut text =
        String::from("FROM busybox\nCOPY list-tree.sh /list-tree.sh\nRUN mkdir -p /m/a /m/b\n");
    let mut count = 0;
    for _ in 0..6 + rng.below(5) {
        let ops: Vec<String> = (0..1 + rng.below(6))
            .map(|_| {
                count += 1;
                operation(&mut rng, count)
            })
            .collect();
        text.push_str(&format!("RUN {}\n", ops.join("; ")));
    }
    // The last step's view, printed; it changes nothing.
    text.push_str("RUN sh /list-tree.sh\n");
    (text, count)
}

/// A listing without mtimes (field 7 of list-tree's lines).
fn without_mtimes(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut fields: Vec<&str> = l.split('|').collect();
            if fields.len() > 6 {
                fields[6] = "-";
            }
            fields.join("|")
        })
        .collect()
}

/// Builds the sequence in `mode`; returns the unpacked listing after
/// checking it against the RUN's view.
fn check_mode(
    seed: u64,
    dockerfile: &str,
    mode: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<String> {
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(
        Path::new(SANDBOX_DATA).join("list-tree.sh"),
        ctx.join("list-tree.sh"),
    )
    .unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let (out, rootfs) = build_and_unpack(&ctx, work.path(), args, env);
    let seen: Vec<String> = step_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("./"))
        .collect();
    assert!(
        seen.len() > 100,
        "seed {seed} {mode}: no listing\n{dockerfile}"
    );
    let unpacked: Vec<String> = list_tree_in(&rootfs)
        .into_iter()
        .filter(|l| l != "./list-tree|regular file|644|0|0|||")
        .collect();
    let diff = listing_differences(&seen, &unpacked);
    assert!(
        diff.is_empty(),
        "seed {seed}, {mode}: umoci's tree differs from the last RUN's view \
         (- RUN, + image):\n{}\n--- Dockerfile:\n{dockerfile}",
        diff.join("\n")
    );
    without_mtimes(&unpacked)
}

/// A snapshot mode: its name, rbuild's extra arguments and environment.
type Mode = (
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

#[test]
fn random_operation_sequences_give_the_same_image_in_every_snapshot_mode() {
    if !is_root() {
        common::skip("chroot into umoci's unpack needs root");
        return;
    }
    let seeds: Vec<u64> = match std::env::var("RBUILD_MODEL_SEED") {
        Ok(one) => vec![one.parse().expect("RBUILD_MODEL_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("RBUILD_MODEL_SEQUENCES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(12);
            (1..=n).collect()
        }
    };
    let modes: [Mode; 3] = [
        ("overlay, remapped ids", &[], &[]),
        ("overlay, host root", &["--userns-remap=off"], &[]),
        ("copy", &[], &[("RBUILD_SNAPSHOTS", "copy")]),
    ];
    let mut operations = 0;
    for &seed in &seeds {
        let (dockerfile, count) = sequence(seed);
        operations += count;
        let mut first: Option<(&str, Vec<String>)> = None;
        for (mode, args, env) in &modes {
            let listing = check_mode(seed, &dockerfile, mode, args, env);
            match &first {
                None => first = Some((mode, listing)),
                Some((first_mode, expected)) => {
                    let diff = listing_differences(expected, &listing);
                    assert!(
                        diff.is_empty(),
                        "seed {seed}: {mode} differs from {first_mode} (- {first_mode}, + {mode}):\n{}\n--- Dockerfile:\n{dockerfile}",
                        diff.join("\n")
                    );
                }
            }
        }
    }
    eprintln!(
        "model: {} sequences (seeds {}..={}), {operations} operations, {} snapshot modes each: all equal",
        seeds.len(),
        seeds[0],
        seeds[seeds.len() - 1],
        modes.len()
    );
}
