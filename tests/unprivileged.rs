//! The tier probe and RUN sandboxes under reduced privileges: as an
//! unprivileged user (root's tests switch to `nobody` with setpriv; a
//! non-root test run is already unprivileged), where rbuild must map
//! itself to root in a user namespace and mount overlay with `userxattr`.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{
    is_root, list_tree_in, listing_differences, push_pull_unpack, stderr, step_lines,
    write_dockerfile, TestRegistry,
};

const SANDBOX_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");
const NOBODY: u32 = 65534;

/// `rbuild` as an unprivileged user.
fn rbuild_unprivileged() -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
            "--clear-groups",
            env!("CARGO_BIN_EXE_rbuild"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
    }
}

/// A temp dir the unprivileged user owns.
fn owned_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if is_root() {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    dir
}

fn debug_run(work: &Path, dockerfile: &Path) -> Output {
    debug_run_with(rbuild_unprivileged(), work, dockerfile)
}

/// `debug run` of `dockerfile` through `cmd` (rbuild, however launched),
/// with the sandbox's test data as its context and its store in `work`.
fn debug_run_with(mut cmd: Command, work: &Path, dockerfile: &Path) -> Output {
    cmd.args(["debug", "run", "--context", SANDBOX_DATA, "--root"])
        .arg(work.join("root"))
        .arg("-f")
        .arg(dockerfile)
        .arg("--oci-dir")
        .arg(work.join("oci"))
        .output()
        .unwrap()
}

/// The tree the layers Dockerfile's last step listed (list-tree.sh).
fn listing_of(out: &Output) -> Vec<String> {
    let seen: Vec<String> = step_lines(out)
        .into_iter()
        .filter(|l| l.starts_with("./"))
        .collect();
    assert!(seen.len() > 200, "{}", stderr(out));
    seen
}

/// `work/oci`, pushed and unpacked by umoci, lists as `seen` (needs root).
fn assert_unpack_is(seen: &[String], work: &Path, repo: &str) {
    let registry = TestRegistry::start(&[]);
    let rootfs = push_pull_unpack(&work.join("oci"), &registry, repo, work);
    let diff = listing_differences(seen, &list_tree_in(&rootfs));
    assert!(
        diff.is_empty(),
        "umoci's tree differs from the RUN's view:\n{}",
        diff.join("\n")
    );
}

#[test]
fn info_as_an_unprivileged_user_picks_a_rootless_tier() {
    let work = owned_tempdir();
    let out = rbuild_unprivileged()
        .args(["info", "--root"])
        .arg(work.path().join("root"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probe user namespace: create:"), "{text}");
    assert!(
        text.contains("probe chroot: FAILED"),
        "no chroot without root: {text}"
    );
    if out.status.success() {
        // This VM allows user namespaces and overlay in them.
        assert!(text.contains("user namespace: yes"), "{text}");
        assert!(
            text.contains("tier: full")
                || text.contains("tier: nopidns")
                || text.contains("tier: rootless-copy"),
            "{text}"
        );
    } else {
        assert_eq!(out.status.code(), Some(3));
        assert!(stderr(&out).contains("Failed probes"), "{}", stderr(&out));
    }
}

#[test]
fn an_unprivileged_run_is_isolated() {
    let work = owned_tempdir();
    let marker = format!("/tmp/rbuild-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    let dockerfile = write_dockerfile(
        work.path(),
        &format!(
            "FROM busybox\n\
             RUN echo pid=$$ && grep PPid /proc/$$/status | tr -d '\\t' && ls /proc | grep -cE '^[0-9]+$' \
             && id -u && echo inside > /written && cat /proc/self/uid_map | tr -s ' ' \
             && (test -e {marker} && echo host-visible || echo host-hidden) \
             && (touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro)\n\
             RUN --network=none grep ':' /proc/net/dev | cut -d: -f1 | tr -d ' '\n"
        ),
    );
    let out = debug_run(work.path(), &dockerfile);
    std::fs::remove_file(&marker).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = step_lines(&out);
    assert_eq!(lines[0], "pid=2", "the command is PID 1's child: {lines:?}");
    assert_eq!(lines[1], "PPid:1");
    let visible: usize = lines[2].parse().unwrap();
    assert!(visible <= 6, "no host processes visible, saw {visible}");
    assert_eq!(lines[3], "0", "root inside the user namespace");
    let own_uid = if is_root() {
        NOBODY
    } else {
        rustix::process::geteuid().as_raw()
    };
    assert_eq!(
        lines[4].trim(),
        format!("0 {own_uid} 1"),
        "only the caller is mapped"
    );
    assert_eq!(lines[5], "host-hidden");
    assert_eq!(lines[6], "sys-ro");
    assert_eq!(&lines[7..], ["lo"], "--network=none has only loopback");
    assert!(
        !Path::new("/written").exists(),
        "nothing was written on the host"
    );
}

#[test]
fn rootless_layers_apply_to_exactly_what_the_run_saw() {
    let work = owned_tempdir();
    // A rootless build maps only root, so the chown to 65534 goes.
    let text = std::fs::read_to_string(Path::new(SANDBOX_DATA).join("layers/Dockerfile"))
        .unwrap()
        .replace(" && chown 65534:65534 /app/sub/a", "");
    let dockerfile = write_dockerfile(work.path(), &text);
    let out = debug_run(work.path(), &dockerfile);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = listing_of(&out);
    assert!(
        seen.iter().all(|l| l.split('|').nth(3) == Some("0")),
        "every file is root's inside the rootless build"
    );
    if !is_root() {
        eprintln!("*** the umoci comparison needs root for chroot; the build itself passed ***");
        return;
    }
    assert_unpack_is(&seen, work.path(), "rootless/layers");
}

#[test]
fn limits_without_a_writable_cgroup_are_refused_not_ignored() {
    let work = owned_tempdir();
    let dockerfile = write_dockerfile(work.path(), "FROM busybox\nRUN true\n");
    let out = rbuild_unprivileged()
        .args(["debug", "run", "--memory", "64m", "--root"])
        .arg(work.path().join("root"))
        .arg("-f")
        .arg(&dockerfile)
        .arg("--oci-dir")
        .arg(work.path().join("oci"))
        .output()
        .unwrap();
    if out.status.success() {
        // Machines that delegate a cgroup to users (systemd user slices)
        // can apply the limit; this one cannot.
        return;
    }
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("need a writable cgroup"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unprivileged_build_mounts_another_stage() {
    let work = owned_tempdir();
    let dockerfile = write_dockerfile(
        work.path(),
        "FROM busybox AS data\nRUN mkdir -p /out && echo file > /out/f && rm /bin/vi\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=data,source=/out,target=/in cat /in/f\n\
         RUN --mount=type=bind,from=data,target=/whole test ! -e /whole/bin/vi && echo whiteouts-hold\n",
    );
    let out = debug_run(work.path(), &dockerfile);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(step_lines(&out), ["file", "whiteouts-hold"]);
}

/// `nobody` with subordinate ids 200000-265535 (`/etc/subuid` and
/// `/etc/subgid` as the `uidmap` package reads them): a private mount
/// namespace binds files of the test's over the host's, which stay as
/// they are, and rbuild runs there through setpriv. None (skipped) unless
/// root with newuidmap and newgidmap installed.
fn rbuild_with_subordinate_ids(work: &Path) -> Option<Command> {
    if !is_root() {
        common::skip("subordinate ids: the test binds /etc/subuid as root");
        return None;
    }
    for needed in [
        "/usr/bin/newuidmap",
        "/usr/bin/newgidmap",
        "/etc/subuid",
        "/etc/subgid",
    ] {
        if !Path::new(needed).exists() {
            common::skip(&format!(
                "subordinate ids: {needed} is missing (apt-get install uidmap)"
            ));
            return None;
        }
    }
    let (subuid, subgid) = (work.join("subuid"), work.join("subgid"));
    for file in [&subuid, &subgid] {
        std::fs::write(file, "nobody:200000:65536\n").unwrap();
    }
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/subuid && mount --bind "$2" /etc/subgid && shift 2 && exec "$@""#)
        .arg("sh")
        .args([&subuid, &subgid])
        .args(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        // Its own home, not root's (whose docker config it cannot read).
        .env("HOME", work);
    Some(c)
}

/// Issue 16: a user without privileges but with `/etc/subuid` ranges runs
/// rbuild in a user namespace of its own, every id from 0 to 65536
/// mapped: the Debian app's `useradd`, `chown -R`, `COPY --chown` and
/// `USER app` build, and its layers are byte for byte the root VM's.
#[test]
fn a_user_with_subordinate_ids_builds_the_root_vms_layers() {
    let work = owned_tempdir();
    let Some(mut info) = rbuild_with_subordinate_ids(work.path()) else {
        return;
    };
    let out = info
        .args(["info", "--root"])
        .arg(work.path().join("root"))
        .output()
        .unwrap();
    let said = common::text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("user namespace: rbuild's own, over this user's subordinate ids")
            && said.contains("uid 0 is 65534 and 1-65536 are 200000-265535"),
        "{said}"
    );
    assert!(said.contains("step ids: 65537 ids from 0"), "{said}");

    let registry = TestRegistry::start(&[]);
    if !common::push_debian_minbase(&registry) {
        return;
    }
    let ctx = owned_tempdir();
    std::fs::write(ctx.path().join("Dockerfile"), common::DEBIAN_APP).unwrap();
    std::fs::write(ctx.path().join("greeting.txt"), "hello from the context\n").unwrap();
    let build = |cmd: &mut Command, reference: &str, root: &Path| {
        let out = cmd
            .args(["build", "--progress=plain", "--push", "-t", reference])
            .arg("--build-arg")
            .arg(format!("REGISTRY={}", registry.addr))
            .arg("--root")
            .arg(root)
            .arg(ctx.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        let log = common::text(&out);
        assert!(out.status.success(), "{reference}: {log}");
        assert!(log.contains("hello from the context"), "{log}");
    };
    let vm = format!("{}/app-vm:1", registry.addr);
    let vm_root = tempfile::tempdir().unwrap();
    build(
        &mut Command::new(env!("CARGO_BIN_EXE_rbuild")),
        &vm,
        vm_root.path(),
    );
    let subids = format!("{}/app-subids:1", registry.addr);
    let mut cmd = rbuild_with_subordinate_ids(work.path()).unwrap();
    build(&mut cmd, &subids, &work.path().join("root"));
    assert_eq!(common::layer_digests(&subids), common::layer_digests(&vm));
    let unpacked = tempfile::tempdir().unwrap();
    let rootfs = common::unpack_remote(&subids, unpacked.path());
    common::assert_debian_app_owners(&rootfs, "subordinate ids");
}

/// With subordinate ids, every kind of change a RUN makes (the sandbox's
/// layers Dockerfile, its chown to 65534 included: here that id exists)
/// lands in the image as the RUN saw it, read back by umoci.
#[test]
fn a_user_with_subordinate_ids_writes_layers_exactly_as_the_run_saw() {
    let work = owned_tempdir();
    let Some(cmd) = rbuild_with_subordinate_ids(work.path()) else {
        return;
    };
    let text = common::layers_dockerfile_with_owners();
    let dockerfile = write_dockerfile(work.path(), &text);
    let out = debug_run_with(cmd, work.path(), &dockerfile);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = listing_of(&out);
    assert_eq!(
        common::listed_owner(&seen, "./app/b/f").as_deref(),
        Some("1000:1000")
    );
    assert_eq!(
        common::listed_owner(&seen, "./home/only").as_deref(),
        Some("65534:65534")
    );
    assert_eq!(
        seen.iter().filter(|l| l.starts_with("./usr/sbin/")).count(),
        1,
        "the replaced /usr/sbin holds only what the step put back"
    );
    assert_unpack_is(&seen, work.path(), "subids/layers");
}

/// With one id (subordinate ids turned off here), a step that chowns to
/// another owner fails at its line, and the error says why and what is
/// missing.
#[test]
fn a_chown_with_one_id_says_why_it_failed() {
    let work = owned_tempdir();
    let dockerfile = write_dockerfile(work.path(), "FROM busybox\nRUN touch /f && chown 1000 /f\n");
    let mut cmd = rbuild_unprivileged();
    cmd.env("RBUILD_SUBIDS", "0").env("HOME", work.path());
    let out = debug_run_with(cmd, work.path(), &dockerfile);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("Dockerfile:2:1")
            && log.contains("this step's user namespace maps one id, root")
            && log.contains("no subordinate ids: RBUILD_SUBIDS=0"),
        "{log}"
    );
}
