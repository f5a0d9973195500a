//! SIGKILL at random moments (issue 22's reliability campaign), where
//! `tests/crash_points.rs` kills at each named write point: builds that run
//! every step (`--no-cache`: a RUN writing 20 MB, a COPY, a RUN writing
//! 300 files, a RUN reading them; each layer written on its own thread
//! while the next step runs) and push, killed after a random delay up to
//! a little past a whole build's time; every fifth round a collection
//! (`rbuild prune --all`) killed too, within its first 40 ms. After every
//! kill:
//!
//! - `rbuild du` works, and every cache entry names a blob the store has;
//! - the registry holds either no manifest for the tag or one whose every
//!   blob it serves (skopeo copies the whole image out);
//! - a build on the same store succeeds, with the right files and the
//!   image id of a reference build made on a store of its own
//!   (`SOURCE_DATE_EPOCH` pins the file times).
//!
//! `RBUILD_KILLS` sets the number of rounds (50), `RBUILD_KILL_SEED` the
//! seed (printed, so a failing round can be replayed). The test also
//! fails when too few kills landed mid-build to mean anything.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{is_root, skip, stderr, TestRegistry};

const DOCKERFILE: &str = "FROM busybox
RUN yes a | head -c 20000000 > /big && echo a > /a
COPY f /f
RUN mkdir -p /d && for i in $(seq 1 300); do echo $i > /d/$i; done
RUN cat /a /f > /both && ls /d | wc -l > /count
";

/// A small xorshift generator: the test needs spread, not quality, and
/// a seed to replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// `rbuild build` of `ctx` on `root`, its files to `out`, its image id to
/// `root.iid`, with `extra` flags.
fn build(ctx: &Path, root: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["build", "--progress=plain", "--iidfile"])
        .arg(root.with_extension("iid"))
        .arg("--root")
        .arg(root)
        .arg("-o")
        .arg(format!("type=local,dest={}", out.display()))
        .args(extra)
        .arg(ctx)
        .env_remove("RBUILD_FAILPOINT")
        .env_remove("RBUILD_SNAPSHOTS")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd`, killing it with SIGKILL after `after`; its output, and
/// whether the kill landed (it had not ended by then).
fn run_killed(cmd: &mut Command, after: Duration) -> (Output, bool) {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let landed = out.status.signal() == Some(libc::SIGKILL);
    (out, landed)
}

/// Every cache entry's layer blob is in the store.
fn entries_name_stored_blobs(root: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(root.join("cache")) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(digest) = json["layer"]["digest"].as_str() {
            let blob = root
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"));
            if !blob.is_file() {
                return Err(format!("{}: names {digest}, not stored", path.display()));
            }
        }
    }
    Ok(())
}

/// The registry has no manifest for `image`, or one whose blobs it all
/// serves.
fn registry_whole(image: &str, scratch: &Path) -> Result<(), String> {
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    if !inspect.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(scratch);
    let copy = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", scratch.display()))
        .output()
        .unwrap();
    match copy.status.success() {
        true => Ok(()),
        false => Err(format!("a manifest with missing blobs: {}", stderr(&copy))),
    }
}

/// What one round found wrong, if anything.
fn check_after_kill(
    ctx: &Path,
    root: &Path,
    out: &Path,
    image: &str,
    reference: &str,
) -> Result<(), String> {
    let du = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["du", "--root"])
        .arg(root)
        .output()
        .unwrap();
    if !du.status.success() {
        return Err(format!("rbuild du: {}", stderr(&du)));
    }
    entries_name_stored_blobs(root)?;
    registry_whole(image, &root.with_extension("pulled"))?;
    let rebuilt = build(ctx, root, out, &[]).output().unwrap();
    if !rebuilt.status.success() {
        return Err(format!("the build after: {}", stderr(&rebuilt)));
    }
    let both = std::fs::read_to_string(out.join("both")).unwrap_or_default();
    let count = std::fs::read_to_string(out.join("count")).unwrap_or_default();
    if both != "a\nfrom the context\n" || count.trim() != "300" {
        return Err(format!("the build after: /both {both:?}, /count {count:?}"));
    }
    let iid = std::fs::read_to_string(root.with_extension("iid")).unwrap_or_default();
    if iid != reference {
        return Err(format!(
            "the build after gave {iid}, the reference {reference}"
        ));
    }
    Ok(())
}

#[test]
fn builds_and_collections_killed_at_random_leave_a_store_that_builds_right() {
    if !is_root() {
        skip("RUN in the full tier needs root");
        return;
    }
    let rounds: u64 = std::env::var("RBUILD_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("RBUILD_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761 + 1);
    eprintln!("random kills: {rounds} rounds, RBUILD_KILL_SEED={seed}");
    let mut rng = Rng(seed.max(1));
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();
    let registry = TestRegistry::start(&[]);
    let image = format!("{}/kills/app:1", registry.addr);
    let out = work.path().join("out");

    // The reference image, on a store of its own; and how long a whole
    // build takes, for the spread of the kills (then the quickest seen).
    let reference_root = work.path().join("reference");
    let started = Instant::now();
    let made = build(&ctx, &reference_root, &out, &["--no-cache"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let mut whole = started.elapsed();
    let reference = std::fs::read_to_string(reference_root.with_extension("iid")).unwrap();

    let root = work.path().join("root");
    let (mut landed, mut collections) = (0, 0);
    for round in 0..rounds {
        let push = ["--no-cache", "--push", "-t", image.as_str()];
        let after = Duration::from_millis(rng.below(whole.as_millis() as u64 * 5 / 4 + 1));
        let began = Instant::now();
        let (killed, hit) = run_killed(&mut build(&ctx, &root, &out, &push), after);
        if !hit {
            assert!(
                killed.status.success(),
                "round {round}: {}",
                stderr(&killed)
            );
            // The kills spread over the quickest whole build seen.
            whole = whole.min(began.elapsed());
        }
        landed += u64::from(hit);
        if round % 5 == 4 {
            let mut prune = Command::new(env!("CARGO_BIN_EXE_rbuild"));
            prune
                .args(["prune", "--all", "--root"])
                .arg(&root)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let (_, hit) = run_killed(&mut prune, Duration::from_millis(rng.below(40)));
            collections += u64::from(hit);
        }
        if let Err(why) = check_after_kill(&ctx, &root, &out, &image, &reference) {
            panic!("round {round} (RBUILD_KILL_SEED={seed}, killed after {after:?}): {why}");
        }
    }
    eprintln!(
        "random kills: {landed} of {rounds} builds killed mid-build, \
         {collections} collections killed midway; every store built right after"
    );
    assert!(
        landed * 2 >= rounds,
        "only {landed} of {rounds} kills landed mid-build: the spread is off"
    );
}
