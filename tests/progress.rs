//! Progress output: plain lines against a golden file (times, digests and
//! the tier masked), a step's 5 MiB of output shown whole, JSON events
//! that parse and account for every step, and the terminal renderer driven
//! through a real pseudo-terminal (`script`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{output_text, stderr};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/progress");

fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root").arg(root).env_remove("CI");
    cmd
}

/// A context in `work` holding `dockerfile`.
fn context_with(work: &Path, dockerfile: &str) -> std::path::PathBuf {
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// Builds `ctx` with `--progress=MODE` on storage in `work`.
fn build_with(work: &Path, ctx: &Path, mode: &str) -> std::process::Output {
    rbuild(&work.join("root"))
        .arg(format!("--progress={mode}"))
        .arg(ctx)
        .output()
        .unwrap()
}

/// Replaces what changes from run to run with fixed words.
fn mask(log: &str) -> String {
    log.lines()
        .map(|line| {
            if line.starts_with("isolation: ") {
                return "isolation: TIER".to_string();
            }
            if line.starts_with("done in ") {
                let phases: Vec<String> = line
                    .split_once('(')
                    .map(|(_, p)| p.trim_end_matches(')'))
                    .unwrap_or("")
                    .split(", ")
                    .map(|p| format!("{} Xs", p.split(' ').next().unwrap_or("")))
                    .collect();
                return format!("done in X ({})", phases.join(", "));
            }
            if line.starts_with("image sha256:") {
                return "image sha256:X (manifest sha256:X, SIZE)".to_string();
            }
            if let Some((head, time)) = line.rsplit_once(" in ") {
                if time.ends_with('s') && time[..time.len() - 1].parse::<f64>().is_ok() {
                    return format!("{head} in Xs");
                }
            }
            if let Some(text) = output_text(line) {
                let id = line.split(' ').next().unwrap();
                return format!("{id} T {text}");
            }
            if let Some((head, _)) = line.split_once(" DONE ") {
                return format!("{head} DONE Xs");
            }
            line.to_string()
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn plain_output_matches_the_golden_file() {
    let work = tempfile::tempdir().unwrap();
    let mut log = String::new();
    for _ in 0..2 {
        let out = rbuild(&work.path().join("root"))
            .args(["--progress=plain", "--source-date-epoch", "1700000000"])
            .arg(DATA)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        log.push_str(&stderr(&out));
    }
    let golden = std::fs::read_to_string(Path::new(DATA).join("plain.golden")).unwrap();
    assert_eq!(mask(&log), golden, "raw output:\n{log}");
}

#[test]
fn five_mebibytes_of_output_arrive_whole() {
    let work = tempfile::tempdir().unwrap();
    // 5,120 lines of 1,023 characters and a newline: 5 MiB.
    let ctx = context_with(
        work.path(),
        "FROM busybox\nRUN yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 5120\n",
    );
    let out = build_with(work.path(), &ctx, "plain");
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = common::step_lines(&out);
    assert_eq!(lines.len(), 5120);
    assert!(lines
        .iter()
        .all(|l| l.len() == 1023 && l.bytes().all(|b| b == b'x')));
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    assert_eq!(bytes, 5 << 20);
}

#[test]
fn json_events_parse_and_account_for_every_step() {
    let work = tempfile::tempdir().unwrap();
    let ctx = context_with(
        work.path(),
        "FROM busybox AS a\nRUN echo from-a | tee /a\nFROM busybox AS b\nRUN echo from-b | tee /b >&2\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nRUN false\n",
    );
    let out = build_with(work.path(), &ctx, "json");
    assert_eq!(out.status.code(), Some(1));
    let mut started = std::collections::BTreeMap::new();
    let mut ended = std::collections::BTreeMap::new();
    let mut logs = Vec::new();
    let text = stderr(&out);
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("error: ") && lines.peek().is_none() {
            break; // the CLI's last word, for people
        }
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = event["id"].as_u64();
        match event["type"].as_str().unwrap() {
            "start" => {
                started.insert(
                    id.unwrap(),
                    event["instruction"].as_str().unwrap().to_string(),
                );
            }
            "done" | "cached" | "error" => {
                assert!(started.contains_key(&id.unwrap()), "{line}");
                assert!(
                    ended.insert(id.unwrap(), event["type"].clone()).is_none(),
                    "{line}"
                );
            }
            "log" => {
                assert!(started.contains_key(&id.unwrap()), "{line}");
                logs.push((
                    event["stream"].as_str().unwrap().to_string(),
                    event["line"].as_str().unwrap().to_string(),
                ));
            }
            "note" | "warning" | "progress" | "progress-done" => {}
            other => panic!("unknown event {other}: {line}"),
        }
    }
    assert_eq!(started.len(), 5, "{text}");
    assert_eq!(ended.len(), 5, "every step ends: {text}");
    assert_eq!(
        ended.values().filter(|t| *t == "error").count(),
        1,
        "{text}"
    );
    assert!(logs.contains(&("stdout".to_string(), "from-a".to_string())));
    assert!(logs.contains(&("stderr".to_string(), "from-b".to_string())));
}

#[test]
fn the_terminal_display_shows_a_live_step_and_the_summary() {
    let work = tempfile::tempdir().unwrap();
    let ctx = context_with(
        work.path(),
        "FROM busybox\nCOPY big.bin /\nRUN for i in 1 2 3 4 5; do echo tick-$i; sleep 0.3; done\n",
    );
    std::fs::write(ctx.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let registry = common::TestRegistry::start(&[]);
    // `script` gives rbuild a real pseudo-terminal and records what it drew.
    let command = format!(
        "{} --root {} -t {}/tty:1 --push {}",
        env!("CARGO_BIN_EXE_rbuild"),
        work.path().join("root").display(),
        registry.addr,
        ctx.display()
    );
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("CI")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    // Redrawn in place (cursor movement), with the newest output line
    // beside the running step, then finished and summed up.
    assert!(screen.contains("\x1b["), "no terminal control: {screen:?}");
    assert!(screen.contains("[stage-0 2/2] RUN for i in"), "{screen:?}");
    assert!(screen.contains("tick-3"), "{screen:?}");
    assert!(screen.contains("DONE"), "{screen:?}");
    assert!(screen.contains("2 step(s) run, 0 cached"), "{screen:?}");
    // The push has its byte count on screen.
    assert!(
        screen.contains(&format!("pushing {}/tty:1", registry.addr)),
        "{screen:?}"
    );
    assert!(screen.contains("MiB"), "{screen:?}");
    assert!(
        !screen.contains("#1 0."),
        "plain lines on a terminal: {screen:?}"
    );
}

#[test]
fn a_big_layer_shows_its_bytes_as_it_is_written_and_compressed() {
    let work = tempfile::tempdir().unwrap();
    // Random data: gzip cannot shrink it, so compressing takes a while.
    let ctx = context_with(
        work.path(),
        "FROM busybox\nRUN head -c 150000000 /dev/urandom > /big\n",
    );
    // An OCI layout ships the image: its plain layer is compressed then.
    let oci = work.path().join("oci");
    let out = rbuild(&work.path().join("root"))
        .arg("--progress=json")
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", oci.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done_of = |task: &str| {
        events
            .iter()
            .find(|e| e["type"] == "progress-done" && e["task"] == task)
            .unwrap_or_else(|| panic!("no progress-done for {task}: {events:?}"))["bytes"]
            .as_u64()
            .unwrap()
    };
    // The layer is written plain (in under a second here: too quick to
    // show its bytes, see builder::step's watcher test); compressing it
    // for the layout takes longer, and shows them.
    let ticks: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["type"] == "progress" && e["task"] == "compressing the layers")
        .map(|e| (e["bytes"].as_u64().unwrap(), e["total"].as_u64().unwrap()))
        .collect();
    assert!(!ticks.is_empty(), "no compression progress: {events:?}");
    assert!(ticks.windows(2).all(|w| w[0].0 <= w[1].0), "{ticks:?}");
    let total = ticks[0].1;
    assert!(total > 150_000_000, "{ticks:?}");
    assert_eq!(done_of("compressing the layers"), total);
}
