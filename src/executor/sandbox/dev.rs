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
use super::sys::{mount_with, NOSUID_NODEV_NOEXEC};
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
pub(super) fn mount_dev(builder: &mut RootBuilder, spec: &SandboxSpec) -> Result<(), String> {
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
    let dev_fd = open_in_root(&builder.fd, "dev").map_err(|e| e.to_string())?;
    let dev = PathBuf::from(fd_path(&dev_fd));
    let sys = builder.sys;
    for (node, _, _) in DEFAULT_NODES {
        let target = dev.join(node);
        sys.create_file(&target, 0o666, false)
            .map_err(|e| format!("create /dev/{node}: {e}"))?;
        mount_with(sys, &format!("/dev/{node}"), &target, "", libc::MS_BIND, "")?;
    }
    sys.mkdir_all(&dev.join("pts")).map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
    sys.mkdir_all(&dev.join("shm")).map_err(|e| e.to_string())?;
    mount_with(
        sys,
        "shm",
        &dev.join("shm"),
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777,size=65536k",
    )?;
    sys.mkdir_all(&dev.join("mqueue"))
        .map_err(|e| e.to_string())?;
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
            .map_err(|e| e.to_string())?;
    }
    // runc links core to kcore only where the kernel has one.
    if Path::new("/proc/kcore").exists() {
        sys.symlink("/proc/kcore", &dev.join("core"))
            .map_err(|e| e.to_string())?;
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
