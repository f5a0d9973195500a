//! The tier probe inside a container with podman's default seccomp profile
//! and capabilities (what a default Kubernetes pod gets): rbuild must pick
//! a lower tier that works, or refuse naming the failed probe and what
//! would unlock more. Needs root (to run podman) and skips otherwise.

mod common;

use common::{container_root, in_container, in_container_with, is_root, text, Podman};

/// `rbuild debug run` of `dockerfile` in a podman container (`podman_flags`
/// for `podman run`, `flags` for rbuild), with scratch storage and output.
fn debug_run(
    podman: &Podman,
    podman_flags: &[&str],
    rootfs: &std::path::Path,
    flags: &[&str],
    dockerfile: &str,
) -> std::process::Output {
    let mut args = vec!["debug", "run"];
    args.extend_from_slice(flags);
    args.extend(["-f", dockerfile, "--oci-dir", "/tmp/o", "--root", "/tmp/r"]);
    in_container_with(podman, podman_flags, rootfs, &args)
}

#[test]
fn a_default_container_gets_a_lower_tier_or_a_clear_refusal() {
    if !is_root() {
        common::skip("running podman here needs root");
        return;
    }
    let root = container_root(
        "FROM busybox\n\
         RUN sleep 300 & echo started > /started\n\
         RUN --network=none if ps | grep -q '[s]leep 300'; then echo leftover; else echo no-leftovers; fi; cat /started\n",
    );
    let podman = Podman::new();
    let info = in_container(&podman, root.path(), &["info", "--root", "/tmp/r"]);
    let shown = text(&info);
    // No CAP_SYS_ADMIN: namespaces only through a user namespace.
    assert!(
        shown.contains(
            "probe direct: mount namespace: FAILED: unshare(CLONE_NEWNS): Operation not permitted"
        ),
        "{shown}"
    );

    let build = debug_run(&podman, &[], root.path(), &[], "/Dockerfile");
    let built = text(&build);
    if build.status.success() {
        // Podman masks parts of /proc, so a fresh /proc is refused and the
        // nopidns tier (user + mount namespaces, overlay) runs the steps.
        assert!(
            built.contains("isolation: nopidns") || built.contains("isolation: full"),
            "{built}"
        );
        let lines: Vec<&str> = built.lines().filter_map(common::output_text).collect();
        assert!(
            lines.contains(&"no-leftovers") && lines.contains(&"started"),
            "leftovers were killed: {built}"
        );
    } else {
        assert_eq!(build.status.code(), Some(3), "{built}");
        assert!(
            built.contains("Failed probes") && built.contains("To unlock more"),
            "{built}"
        );
    }

    // Asking for the full tier names the probe that failed and the way out.
    let full = debug_run(
        &podman,
        &[],
        root.path(),
        &["--isolation", "full"],
        "/Dockerfile",
    );
    let refused = text(&full);
    if !full.status.success() {
        assert_eq!(full.status.code(), Some(3), "{refused}");
        assert!(refused.contains("pid namespace + /proc"), "{refused}");
        assert!(refused.contains("procMount: Unmasked"), "{refused}");
    }

    // Asked for, the chroot tier needs no namespaces at all.
    let chroot = debug_run(
        &podman,
        &[],
        root.path(),
        &["--isolation", "chroot"],
        "/Dockerfile.chroot",
    );
    let chrooted = text(&chroot);
    assert!(
        chrooted.contains("isolation: chroot (snapshots: Copy)"),
        "{chrooted}"
    );
    assert!(
        chrooted
            .lines()
            .any(|l| common::output_text(l) == Some("started")),
        "{chrooted}"
    );
    // It cannot take the network away, and says so rather than pretend.
    assert_eq!(chroot.status.code(), Some(1), "{chrooted}");
    assert!(
        chrooted.contains("--network=none needs a namespace tier"),
        "{chrooted}"
    );
}

/// A root container given CAP_SYS_ADMIN but not CAP_NET_ADMIN (podman's
/// default set plus SYS_ADMIN, its default seccomp profile), with host
/// root's tier (`--userns-remap=off`): `--network=none` gets `lo` up, and
/// the step, as docker's, cannot take it down or add a link.
#[test]
fn network_none_works_in_a_root_container_without_cap_net_admin() {
    if !is_root() {
        common::skip("running podman here needs root");
        return;
    }
    let root = container_root(
        "FROM busybox\n\
         RUN --network=none ip link show lo | grep -q ',UP' && echo lo-up; \
         echo $(ls /sys/class/net); \
         ip link set lo down 2>/dev/null && echo lo-taken-down; \
         ip link add d0 type dummy 2>/dev/null && echo link-added; \
         nc -l -p 7777 -e echo served & sleep 0.3; nc 127.0.0.1 7777 </dev/null\n",
    );
    let podman = Podman::new();
    let out = debug_run(
        &podman,
        &["--cap-add", "SYS_ADMIN"],
        root.path(),
        &["--userns-remap=off"],
        "/Dockerfile",
    );
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let lines: Vec<&str> = shown.lines().filter_map(common::output_text).collect();
    assert!(lines.contains(&"lo-up"), "{shown}");
    assert!(lines.contains(&"lo"), "only lo in /sys/class/net: {shown}");
    assert!(lines.contains(&"served"), "lo carries traffic: {shown}");
    assert!(!lines.contains(&"lo-taken-down"), "{shown}");
    assert!(!lines.contains(&"link-added"), "{shown}");

    // The container has no slirp4netns: `rbuild info` says the default
    // network is lo only and why, and so does a step that needed it.
    let info = in_container(&podman, root.path(), &["info", "--root", "/tmp/r"]);
    let said = text(&info);
    assert!(
        said.contains("network: default: lo only, since slirp4netns is not installed"),
        "{said}"
    );
    std::fs::write(
        root.path().join("Dockerfile.net"),
        "FROM busybox\nRUN nc -w 2 10.0.2.3 53 </dev/null\n",
    )
    .unwrap();
    let needed = debug_run(
        &podman,
        &[],
        root.path(),
        &["--userns-remap=off"],
        "/Dockerfile.net",
    );
    let failed = text(&needed);
    assert_eq!(needed.status.code(), Some(1), "{failed}");
    assert!(
        failed.contains(
            "RUN did not complete successfully: exit code: 1 (this step had only lo, \
             not the default network: slirp4netns is not installed"
        ),
        "{failed}"
    );
}
