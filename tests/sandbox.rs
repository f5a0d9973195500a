//! RUN sandboxes on a real busybox root (extracted from the base image):
//! their own pid namespace with the command as PID 1's child, no host
//! processes, a private root, `--network=none` with only `lo`, exit codes,
//! users, and leftover processes killed when the step ends.
//!
//! These need root (the user-namespace path for unprivileged runs is not
//! built yet); they skip with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::is_root;
use rbuild::cache::ContentStore;
use rbuild::executor::{Executor, RootFs, RunOutput, SandboxSpec};
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::media::MediaTypes;
use rbuild::snapshot::{apply_gzip_layer, ApplyOptions};

/// A fresh busybox root in a temp dir.
fn busybox_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let image = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let layer = &image.layers[0];
    apply_gzip_layer(
        &root,
        store.open_blob(&layer.digest).unwrap(),
        "busybox",
        ApplyOptions::default(),
    )
    .unwrap();
    (dir, root)
}

fn spec(root: &Path, script: &str) -> SandboxSpec {
    let args = vec!["/bin/sh".into(), "-c".into(), script.into()];
    SandboxSpec {
        env: vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "GREETING=hi there".into(),
        ],
        hostname: "rbuild-test".into(),
        ..SandboxSpec::new(RootFs::Dir(root.to_path_buf()), args)
    }
}

fn run(spec: &SandboxSpec) -> RunOutput {
    Executor::new(env!("CARGO_BIN_EXE_rbuild"))
        .run(spec)
        .unwrap()
}

fn stdout(out: &RunOutput) -> String {
    assert_eq!(
        out.code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

macro_rules! needs_root {
    () => {
        if !is_root() {
            common::skip("the sandbox tests need root (no user-namespace tier yet)");
            return;
        }
    };
}

#[test]
fn own_pid_namespace_and_no_host_processes() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let out = run(&spec(
        &root,
        "echo pid=$$; grep PPid /proc/$$/status | tr -d '\\t'; ls /proc | grep -cE '^[0-9]+$'",
    ));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "pid=2", "the command is PID 1's first child");
    assert_eq!(
        lines[1], "PPid:1",
        "the command's parent is the sandbox's init"
    );
    let visible: usize = lines[2].parse().unwrap();
    assert!(
        visible <= 6,
        "only the sandbox's own processes are visible, saw {visible}"
    );
}

#[test]
fn private_root_hostname_env_cwd_and_exit_codes() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let mut s = spec(&root, "echo \"$GREETING\"; hostname; pwd; echo made > /made-inside; ls -a / | grep -c rbuild-oldroot; exit 7");
    s.cwd = "/work/dir".into();
    let out = run(&s);
    assert_eq!(out.code, 7);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi there\nrbuild-test\n/work/dir\n0\n"
    );
    assert_eq!(
        std::fs::read(root.join("made-inside")).unwrap(),
        b"made\n",
        "writes land in the rootfs"
    );
    assert!(!Path::new("/made-inside").exists(), "and not on the host");
    assert!(
        root.join("work/dir").is_dir(),
        "the working directory was created"
    );

    let out = run(&spec(&root, "kill -9 $$"));
    assert_eq!(out.code, 128 + 9, "killed by a signal");
}

#[test]
fn devices_proc_and_read_only_sys() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let out = run(&spec(&root, "head -c 4 /dev/zero | wc -c; echo gone > /dev/null && echo null-ok; ls /dev/pts/ptmx >/dev/null && echo pts-ok; touch /sys/x 2>/dev/null || echo sys-ro; test -d /proc/self && echo proc-ok"));
    assert_eq!(stdout(&out), "4\nnull-ok\npts-ok\nsys-ro\nproc-ok\n");
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let mut s = spec(
        &root,
        "grep ':' /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo | grep -c UP",
    );
    s.network = rbuild::executor::sandbox::Network::None;
    assert_eq!(stdout(&run(&s)), "lo\n1\n");
    // The default shares the host network: more than loopback is visible.
    let host_view = stdout(&run(&spec(&root, "grep -c ':' /proc/net/dev")));
    let host_count = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter(|l| l.contains(':'))
        .count();
    assert_eq!(host_view.trim().parse::<usize>().unwrap(), host_count);
}

#[test]
fn user_and_groups() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let mut s = spec(
        &root,
        "id -u; id -g; id -G; touch /root/x 2>/dev/null || echo denied",
    );
    s.uid = 65534;
    s.gid = 65534;
    s.groups = vec![65534, 100];
    assert_eq!(stdout(&run(&s)), "65534\n65534\n65534 100\ndenied\n");
}

#[test]
fn leftover_processes_are_killed_when_the_step_ends() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let marker = format!("{}", 4_000_000 + std::process::id() % 100_000);
    let out = run(&spec(
        &root,
        &format!("sleep {marker} & sleep {marker} & echo started"),
    ));
    assert_eq!(stdout(&out), "started\n");
    // PID 1 exited, so the kernel kills the background sleeps: wait for
    // them to be gone (reaping takes a moment), failing after 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ps = Command::new("pgrep")
            .args(["-f", &format!("sleep {marker}")])
            .output()
            .unwrap();
        if ps.stdout.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn missing_commands_and_bad_specs_are_reported() {
    needs_root!();
    let (_dir, root) = busybox_root();
    let mut s = spec(&root, "");
    s.args = vec!["no-such-program".into()];
    let out = run(&s);
    assert_eq!(out.code, 127);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exec no-such-program"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = spec(Path::new("/nonexistent-root"), "true");
    s.root = RootFs::Dir(PathBuf::from("/nonexistent-root"));
    let out = run(&s);
    assert_eq!(out.code, rbuild::executor::SETUP_FAILED);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-root"));
}
