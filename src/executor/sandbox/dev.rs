//! `/dev` of a step's root: docker's default device nodes and nothing
//! else a step could open the host's hardware with.
//!
//! Devices: docker keeps a step from opening the host's disks with a
//! devices cgroup; rbuild mounts everything the step can write `nodev`
//! instead (the root, `/dev`, every writable mount), which works on
//! cgroup v1 and v2 and inside containers alike. The default nodes
//! (`null`, `zero`, `full`, `random`, `urandom`, `tty`, `pts/ptmx`) are
//! bind mounts of the host's own and stay usable. The chroot tier, which
//! cannot mount, makes them as real nodes where it may.

use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};

use super::mountpoint::{fd_path, open_in_root, stat_times, RootBuilder};
use super::spec::{SandboxSpec, Stub};
use super::sys::{mount_with, SetupError, NOSUID_NODEV_NOEXEC};
use crate::executor::confine::Security;

/// docker's default nodes: name, major, minor.
const DEFAULT_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Mounts the step's `/dev`: a `nodev` tmpfs holding binds of the host's
/// default nodes, its own devpts, shm and mqueue, and the usual links;
/// with `--security=insecure`, the host's `/dev` itself.
pub(super) fn mount_dev(builder: &mut RootBuilder, spec: &SandboxSpec) -> Result<(), SetupError> {
    if spec.security == Security::Insecure {
        // BuildKit's insecure mode gives the host's devices.
        return builder.mount_on("/dev", "dev", true, "", libc::MS_BIND | libc::MS_REC, "");
    }
    builder.mount_on(
        "tmpfs",
        "dev",
        true,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME | libc::MS_NODEV,
        "mode=755,size=65536k",
    )?;
    let dev_fd = open_in_root(&builder.fd, "dev").map_err(|e| SetupError::sys("open /dev", e))?;
    let dev = PathBuf::from(fd_path(&dev_fd));
    let sys = builder.sys;
    for (node, _, _) in DEFAULT_NODES {
        let target = dev.join(node);
        sys.create_file(&target, 0o666, false)
            .map_err(|e| SetupError::sys(format!("create /dev/{node}"), e))?;
        mount_with(sys, &format!("/dev/{node}"), &target, "", libc::MS_BIND, "")?;
    }
    sys.mkdir_all(&dev.join("pts"))
        .map_err(|e| SetupError::sys("create /dev/pts", e))?;
    // gid 5 (tty) exists only where more than one id is mapped.
    let pts_options = if spec.userns {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    mount_with(
        sys,
        "devpts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        pts_options,
    )?;
    sys.symlink("pts/ptmx", &dev.join("ptmx"))
        .map_err(|e| SetupError::sys("link /dev/ptmx", e))?;
    sys.mkdir_all(&dev.join("shm"))
        .map_err(|e| SetupError::sys("create /dev/shm", e))?;
    mount_with(
        sys,
        "shm",
        &dev.join("shm"),
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777,size=65536k",
    )?;
    sys.mkdir_all(&dev.join("mqueue"))
        .map_err(|e| SetupError::sys("create /dev/mqueue", e))?;
    // POSIX message queues of the step's own IPC namespace; a kernel
    // without mqueue leaves the directory empty, as runc does not.
    let _ = mount_with(
        sys,
        "mqueue",
        &dev.join("mqueue"),
        "mqueue",
        NOSUID_NODEV_NOEXEC,
        "",
    );
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(target, &dev.join(link))
            .map_err(|e| SetupError::sys(format!("link /dev/{link}"), e))?;
    }
    // runc links core to kcore only where the kernel has one.
    if Path::new("/proc/kcore").exists() {
        sys.symlink("/proc/kcore", &dev.join("core"))
            .map_err(|e| SetupError::sys("link /dev/core", e))?;
    }
    Ok(())
}

/// The chroot tier's `/dev`: no mounts there, so real nodes where
/// CAP_MKNOD allows; they are stubs, removed after the step like mount
/// points. Best effort: what cannot be made is left out, as before.
pub(super) fn make_dev_nodes(builder: &mut RootBuilder) {
    for (name, major, minor) in DEFAULT_NODES {
        let Ok(dev) = builder.ensure("dev", true) else {
            break;
        };
        let Ok(dev) = rfs::openat(
            &builder.fd,
            fd_path(&dev),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            break;
        };
        if rfs::statat(&dev, name, rfs::AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            continue;
        }
        let Ok(before) = rfs::fstat(&dev) else { break };
        let at = Path::new(&fd_path(&dev)).join(name);
        if builder.sys.mknod_char(&at, 0o666, major, minor).is_ok() {
            builder.stubs.push(Stub {
                path: format!("dev/{name}"),
                dir: false,
                mount: false,
                parent_times: stat_times(&before),
            });
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::executor::sandbox::spec::RootFs;
    use crate::executor::sandbox::sys::{scratch_root, Call, RecordingSys};
    use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_STRICTATIME};

    fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Call {
        Call::Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        }
    }

    /// `/dev` as a default step gets it, call by call (the rootfs tests
    /// expect the same, in its place among the kernel mounts).
    pub(in crate::executor::sandbox) fn default_dev(pts_options: &str) -> Vec<Call> {
        let nsn = MS_NOSUID | MS_NODEV | MS_NOEXEC;
        let mut want = vec![
            Call::Mkdir("T/root/dev".into(), 0o755),
            mount(
                "tmpfs",
                "T/root/dev",
                "tmpfs",
                MS_NOSUID | MS_STRICTATIME | MS_NODEV,
                "mode=755,size=65536k",
            ),
        ];
        for node in ["null", "zero", "full", "random", "urandom", "tty"] {
            let at = format!("T/root/dev/{node}");
            want.push(Call::CreateFile(at.clone(), 0o666, false));
            want.push(mount(&format!("/dev/{node}"), &at, "", MS_BIND, ""));
        }
        want.extend([
            Call::MkdirAll("T/root/dev/pts".into()),
            mount(
                "devpts",
                "T/root/dev/pts",
                "devpts",
                MS_NOSUID | MS_NOEXEC,
                pts_options,
            ),
            Call::Symlink("pts/ptmx".into(), "T/root/dev/ptmx".into()),
            Call::MkdirAll("T/root/dev/shm".into()),
            mount(
                "shm",
                "T/root/dev/shm",
                "tmpfs",
                nsn,
                "mode=1777,size=65536k",
            ),
            Call::MkdirAll("T/root/dev/mqueue".into()),
            mount("mqueue", "T/root/dev/mqueue", "mqueue", nsn, ""),
        ]);
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            want.push(Call::Symlink(target.into(), format!("T/root/dev/{link}")));
        }
        if Path::new("/proc/kcore").exists() {
            want.push(Call::Symlink(
                "/proc/kcore".into(),
                "T/root/dev/core".into(),
            ));
        }
        want
    }

    #[test]
    fn dev_binds_the_default_nodes_then_its_own_pts_shm_mqueue_and_links() {
        for (userns, pts_options) in [
            (false, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
            // gid 5 is not mapped in a rootless user namespace.
            (true, "newinstance,ptmxmode=0666,mode=0620"),
        ] {
            let (scratch, root) = scratch_root();
            let mut spec = SandboxSpec::example(RootFs::Dir(root.clone()));
            spec.userns = userns;
            let sys = RecordingSys::new(scratch.path());
            let mut builder = RootBuilder::new(&sys, &root).unwrap();
            mount_dev(&mut builder, &spec).unwrap();
            assert_eq!(sys.calls(), default_dev(pts_options), "userns {userns}");
        }
    }

    #[test]
    fn a_kernel_without_mqueue_still_gets_the_rest_of_dev() {
        let (scratch, root) = scratch_root();
        let spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { fstype, .. } if fstype == "mqueue"));
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        mount_dev(&mut builder, &spec).unwrap();
        assert_eq!(
            sys.calls(),
            default_dev("newinstance,ptmxmode=0666,mode=0620,gid=5")
        );
    }

    #[test]
    fn a_node_that_cannot_be_bound_fails_dev_naming_the_mount() {
        let (scratch, root) = scratch_root();
        let spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { source, .. } if source == "/dev/full"));
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        let err = mount_dev(&mut builder, &spec).unwrap_err();
        assert!(
            matches!(&err, SetupError::Sys { source, .. } if source.raw_os_error() == Some(libc::EPERM)),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.starts_with("mount /dev/full on /proc/self/fd/"),
            "{err}"
        );
        assert!(
            err.ends_with("/full: Operation not permitted (os error 1)"),
            "{err}"
        );
        assert!(!sys
            .calls()
            .iter()
            .any(|c| *c == Call::MkdirAll("T/root/dev/pts".into())));
    }

    #[test]
    fn the_chroot_tier_makes_the_nodes_dev_lacks_as_stubs() {
        let (scratch, root) = scratch_root();
        std::fs::create_dir(root.join("dev")).unwrap();
        std::fs::write(root.join("dev/tty"), b"").unwrap();
        let sys = RecordingSys::new(scratch.path());
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        make_dev_nodes(&mut builder);
        assert_eq!(
            sys.calls(),
            [
                Call::MknodChar("T/root/dev/null".into(), 0o666, 1, 3),
                Call::MknodChar("T/root/dev/zero".into(), 0o666, 1, 5),
                Call::MknodChar("T/root/dev/full".into(), 0o666, 1, 7),
                Call::MknodChar("T/root/dev/random".into(), 0o666, 1, 8),
                Call::MknodChar("T/root/dev/urandom".into(), 0o666, 1, 9),
            ]
        );
        assert_eq!(
            builder.stub_list(),
            [
                ("dev/null", false, false),
                ("dev/zero", false, false),
                ("dev/full", false, false),
                ("dev/random", false, false),
                ("dev/urandom", false, false),
            ]
        );
    }

    #[test]
    fn a_node_the_chroot_tier_may_not_make_is_left_out_not_reported() {
        let (scratch, root) = scratch_root();
        // No /dev yet, and no CAP_MKNOD for zero.
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::MknodChar(path, ..) if path.ends_with("/zero")));
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        make_dev_nodes(&mut builder);
        assert_eq!(sys.calls()[0], Call::Mkdir("T/root/dev".into(), 0o755));
        assert_eq!(sys.calls().len(), 7);
        let stubs: Vec<&str> = builder.stubs.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            stubs,
            [
                "dev",
                "dev/null",
                "dev/full",
                "dev/random",
                "dev/urandom",
                "dev/tty"
            ]
        );
    }
}
