//! `--memory`, `--pids-limit` and `--cpus` on the unified hierarchy
//! (cgroup v2), which this VM (v1 hybrid) does not have: a qemu guest
//! booted by `scripts/cgroup2-guest.sh` on Debian's kernel, shaped like a
//! pod (rbuild in a cgroup namespace whose root holds processes, so v2's
//! rule that such a cgroup cannot enable controllers for its children
//! applies). Needs qemu-system-x86, cpio and apt-get's reach to Debian's
//! kernel package; skips loudly (a failure in CI) without them.

mod common;

use std::process::Command;

/// The guest's console lines that start with `marker `, without it.
fn marked<'a>(console: &'a str, marker: &str) -> Vec<&'a str> {
    let prefix = format!("{marker} ");
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
        .collect()
}

#[test]
fn limits_work_on_cgroup_v2_in_a_pod_shaped_guest() {
    for tool in ["qemu-system-x86_64", "cpio", "apt-get", "strip"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            common::skip(&format!("the cgroup v2 guest needs {tool}"));
            return;
        }
    }
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cgroup2-guest");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cgroup2-guest.sh");
    let started = std::time::Instant::now();
    let out = Command::new(script)
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .arg(&work)
        .output()
        .unwrap();
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("the guest ran for {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "{console}");
    assert!(console.contains("GUEST-DONE"), "{console}");
    // The pod: its cgroup namespace's root, holding processes.
    assert_eq!(marked(&console, "POD-CGROUP"), ["0::/"], "{console}");
    let procs: usize = marked(&console, "POD-PROCS")[0].parse().unwrap();
    assert!(procs > 0, "{console}");
    let info = marked(&console, "CG-INFO");
    assert!(
        info.len() == 1
            && info[0].starts_with("v2, writable (limits available; moved this container's"),
        "{console}"
    );
    let log = |name: &str| {
        marked(&console, "LOG")
            .iter()
            .filter(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(marked(&console, "RC oom"), ["1"], "{}", log("oom"));
    assert!(
        log("oom").contains("Dockerfile:2:1")
            && log("oom").contains("RUN was killed: out of memory (limit 64 MiB)"),
        "{}",
        log("oom")
    );
    assert_eq!(marked(&console, "RC pids"), ["1"], "{}", log("pids"));
    assert!(
        log("pids").contains("after reaching the process limit (--pids-limit 32)"),
        "{}",
        log("pids")
    );
    assert_eq!(marked(&console, "RC limits"), ["0"], "{}", log("limits"));
    let limits = log("limits");
    for want in [
        "memory.max 67108864",
        "cpu.max 50000 100000",
        "pids.max 100",
        "fits",
    ] {
        assert!(limits.contains(want), "{want}: {limits}");
    }
    // Nothing outlives the build: no sleeper, no step cgroup.
    assert_eq!(marked(&console, "LEFT-SLEEPERS"), ["0"], "{console}");
    assert_eq!(marked(&console, "STEP-CGROUPS-LEFT"), ["0"], "{console}");
}
