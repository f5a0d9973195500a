//! The tier probe inside a container with podman's default seccomp profile
//! and capabilities (what a default Kubernetes pod gets): rbuild must pick
//! a lower tier that works, or refuse naming the failed probe and what
//! would unlock more. Needs root (to run podman) and skips otherwise.

mod common;

use std::process::Command;

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

/// Issue 16's user-namespaced container, the closest to a pod with
/// `hostUsers: false`: podman maps the container's ids 0-65535 to host ids
/// 300000-365535. With podman's default profile rbuild makes a user
/// namespace of its own inside (nopidns: /proc is masked); with /proc
/// unmasked and CAP_SYS_ADMIN it mounts in the container's namespace
/// itself (full, overlay with `userxattr`); with docker's default profile
/// no namespace can be made (chroot). In each, `USER`s and owners up to
/// 65534 work, and where the RUN can list its root (not chroot: no
/// `RUN --mount`), umoci's unpack of the image equals what it saw.
#[test]
fn a_user_namespaced_container_builds_every_owner() {
    if !is_root() {
        common::skip("running podman here needs root");
        return;
    }
    let profile = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
    if !std::path::Path::new(profile).is_file() {
        common::skip("docker's default seccomp profile (golang-github-docker-docker-dev)");
        return;
    }
    let root = container_root(&common::layers_dockerfile_with_owners());
    let owners: String = common::layers_dockerfile_with_owners()
        .lines()
        .filter(|l| !l.starts_with("RUN --mount"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(root.path().join("Dockerfile.owners"), owners).unwrap();
    let ctx = root.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dockerfiles/sandbox");
    std::fs::copy(format!("{data}/list-tree.sh"), ctx.join("list-tree.sh")).unwrap();
    // The container's root owns its root file system, as an image's
    // unpack for a user-namespaced container would.
    common::run_ok(
        Command::new("chown")
            .args(["-R", "300000:300000"])
            .arg(root.path()),
    );
    let seccomp = format!("seccomp={profile}");
    let rows: [(&str, Vec<&str>, &str); 3] = [
        ("podman's default profile", vec![], "nopidns"),
        (
            "/proc unmasked, CAP_SYS_ADMIN",
            vec!["--security-opt", "unmask=ALL", "--cap-add", "SYS_ADMIN"],
            "full",
        ),
        (
            "docker's default profile",
            vec!["--security-opt", &seccomp],
            "chroot",
        ),
    ];
    let podman = Podman::new();
    let registry = common::TestRegistry::start(&[]);
    for (i, (name, extra, tier)) in rows.iter().enumerate() {
        let mut flags = vec!["--uidmap", "0:300000:65536", "--gidmap", "0:300000:65536"];
        flags.extend(extra.iter());
        let (store, oci) = (format!("/tmp/r{i}"), format!("/tmp/o{i}"));
        // The listing step mounts its script: no mounts in chroot.
        let file = if *tier == "chroot" {
            "/Dockerfile.owners"
        } else {
            "/Dockerfile"
        };
        let mut args = vec!["debug", "run", "-f", file, "--context", "/ctx"];
        args.extend(["--oci-dir", &oci, "--root", &store]);
        let out = in_container_with(&podman, &flags, root.path(), &args);
        let log = text(&out);
        assert!(out.status.success(), "{name}: {log}");
        assert!(
            log.contains(&format!("isolation: {tier} ")),
            "{name}: {log}"
        );
        let unpacked = root.path().join(format!("unpacked{i}"));
        let rootfs = common::push_pull_unpack(
            &root.path().join(oci.trim_start_matches('/')),
            &registry,
            &format!("userns/row{i}"),
            &unpacked,
        );
        // A directory replaced in a step stays replaced (its opaque
        // marker is the namespace's user.* xattr).
        let sbin = std::fs::read_dir(rootfs.join("usr/sbin")).unwrap().count();
        assert_eq!(
            sbin, 1,
            "{name}: /usr/sbin holds only what the step put back"
        );
        use std::os::unix::fs::MetadataExt;
        for (path, owner) in [("app/b/f", 1000), ("home/only", 65534)] {
            let meta = std::fs::symlink_metadata(rootfs.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (owner, owner), "{name}: {path}");
        }
        if *tier != "chroot" {
            let seen: Vec<String> = common::step_lines(&out)
                .into_iter()
                .filter(|l| l.starts_with("./"))
                .collect();
            let diff = common::listing_differences(&seen, &common::list_tree_in(&rootfs));
            assert!(diff.is_empty(), "{name}:\n{}", diff.join("\n"));
        }
    }
}
