//! The kernel file systems of a step's root: `/proc`, `/dev` (whose
//! nodes `dev.rs` owns) and `/sys`, with runc's masked and read-only
//! paths and no host cgroup hierarchy.

use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::dev::mount_dev;
use super::mountpoint::{fd_path, open_in_root, RootBuilder};
use super::spec::{Namespaces, SandboxSpec};
use super::sys::{mount_with, SetupError, Sys, NOSUID_NODEV_NOEXEC};
use crate::executor::confine::{Security, MASKED_PATHS, READONLY_PATHS};

/// Mounts `/proc`, `/dev` and `/sys` in the root and masks what a
/// default container does not see.
pub(super) fn mount_kernel_filesystems(
    builder: &mut RootBuilder,
    spec: &SandboxSpec,
) -> Result<(), SetupError> {
    mount_proc(builder, spec)?;
    mount_dev(builder, spec)?;
    mount_sys(builder, spec)?;
    if spec.security == Security::Sandbox {
        mask_paths(builder)?;
    }
    Ok(())
}

fn mount_proc(builder: &mut RootBuilder, spec: &SandboxSpec) -> Result<(), SetupError> {
    if spec.namespaces != Namespaces::NoPidns {
        return builder.mount_on("proc", "proc", true, "proc", NOSUID_NODEV_NOEXEC, "");
    }
    // A fresh proc needs a pid namespace; the existing one, read-only,
    // down to its submounts (binfmt_misc lives under /proc/sys/fs).
    builder.mount_on("/proc", "proc", true, "", libc::MS_BIND | libc::MS_REC, "")?;
    remount_readonly(builder, "proc")?;
    remount_subtree_readonly(builder.sys, &builder.host_path.join("proc"))
}

/// Makes the bind mount at `rel` in the root read-only (a bind ignores
/// MS_RDONLY until it is remounted). Opened anew: an fd taken before the
/// bind names the covered file, not the mount.
fn remount_readonly(builder: &RootBuilder, rel: &str) -> Result<(), SetupError> {
    let fd = open_in_root(&builder.fd, rel).map_err(|e| SetupError::sys(rel, e))?;
    mount_with(
        builder.sys,
        "",
        Path::new(&fd_path(&fd)),
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        "",
    )
}

fn mount_sys(builder: &mut RootBuilder, spec: &SandboxSpec) -> Result<(), SetupError> {
    let readonly = if spec.security == Security::Sandbox {
        libc::MS_RDONLY
    } else {
        0
    };
    // A fresh sysfs needs a network namespace the mounting user owns:
    // always as real root, in a user namespace only with its own network
    // (whose /sys/class/net it then shows); a remapped step on the host's
    // network binds the one real root mounted for it.
    let fresh = match &spec.remap {
        Some(remap) if !spec.network.own_namespace() => builder.mount_on(
            &remap.staging.join(super::remap::SYSFS).to_string_lossy(),
            "sys",
            true,
            "",
            libc::MS_BIND | readonly | NOSUID_NODEV_NOEXEC,
            "",
        ),
        _ if !spec.in_userns() || spec.network.own_namespace() => builder.mount_on(
            "sysfs",
            "sys",
            true,
            "sysfs",
            readonly | NOSUID_NODEV_NOEXEC,
            "",
        ),
        _ => Err(SetupError::refused("no sysfs of its own")),
    };
    if fresh.is_ok() {
        return mount_own_cgroups(builder, spec, readonly);
    }
    // Otherwise the host's /sys, read-only down to its submounts, with an
    // empty read-only tmpfs over the host's cgroup hierarchies.
    builder.mount_on(
        "/sys",
        "sys",
        true,
        "",
        libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        "",
    )?;
    remount_subtree_readonly(builder.sys, &builder.host_path.join("sys"))?;
    builder.mount_on(
        "tmpfs",
        "sys/fs/cgroup",
        true,
        "tmpfs",
        libc::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        "mode=755,size=0",
    )
}

/// `/sys/fs/cgroup` as the step's own cgroup namespace shows it: the
/// step's cgroup (where it has one) as the root of each hierarchy,
/// read-only. Without a cgroup of its own the directory stays empty.
fn mount_own_cgroups(
    builder: &mut RootBuilder,
    spec: &SandboxSpec,
    readonly: libc::c_ulong,
) -> Result<(), SetupError> {
    if spec.cgroup_procs.is_empty() {
        return Ok(());
    }
    let flags = readonly | NOSUID_NODEV_NOEXEC;
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return builder.mount_on("cgroup2", "sys/fs/cgroup", true, "cgroup2", flags, "");
    }
    builder.mount_on(
        "tmpfs",
        "sys/fs/cgroup",
        true,
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=755",
    )?;
    let fd = open_in_root(&builder.fd, "sys/fs/cgroup")
        .map_err(|e| SetupError::sys("open /sys/fs/cgroup", e))?;
    let dir = PathBuf::from(fd_path(&fd));
    for procs in &spec.cgroup_procs {
        let Some(hierarchy) = v1_hierarchy(procs) else {
            continue;
        };
        let target = dir.join(&hierarchy);
        builder
            .sys
            .mkdir_all(&target)
            .map_err(|e| SetupError::sys(format!("create {hierarchy}"), e))?;
        mount_with(builder.sys, "cgroup", &target, "cgroup", flags, &hierarchy)
            .map_err(|e| e.during(format!("the step's {hierarchy} cgroup")))?;
    }
    mount_with(
        builder.sys,
        "",
        &dir,
        "",
        libc::MS_REMOUNT | flags | libc::MS_RDONLY,
        "mode=755",
    )
}

/// The controllers of the v1 hierarchy a `cgroup.procs` path lies in
/// (`/sys/fs/cgroup/cpu/...` is a link to `cpu,cpuacct`).
fn v1_hierarchy(procs: &Path) -> Option<String> {
    let below = procs.strip_prefix("/sys/fs/cgroup").ok()?;
    let first = below.components().next()?;
    let real = std::fs::canonicalize(Path::new("/sys/fs/cgroup").join(first)).ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    (!name.starts_with("name=")).then_some(name)
}

/// Applies [`MASKED_PATHS`] and [`READONLY_PATHS`] as runc does; paths
/// this kernel does not have are skipped.
fn mask_paths(builder: &RootBuilder) -> Result<(), SetupError> {
    for path in MASKED_PATHS {
        let fd = match open_in_root(&builder.fd, path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(SetupError::sys(format!("mask {path}"), e)),
        };
        let is_dir = rustix::fs::fstat(&fd)
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())
            .map_err(|e| SetupError::sys(format!("mask {path}"), e))?;
        let at = PathBuf::from(fd_path(&fd));
        if is_dir {
            mount_with(
                builder.sys,
                "tmpfs",
                &at,
                "tmpfs",
                libc::MS_RDONLY,
                "size=0",
            )?;
        } else {
            mount_with(builder.sys, "/dev/null", &at, "", libc::MS_BIND, "")?;
        }
    }
    for path in READONLY_PATHS {
        let fd = match open_in_root(&builder.fd, path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(SetupError::sys(format!("make {path} read-only"), e)),
        };
        let at = PathBuf::from(fd_path(&fd));
        mount_with(
            builder.sys,
            &at.to_string_lossy(),
            &at,
            "",
            libc::MS_BIND | libc::MS_REC,
            "",
        )?;
        remount_readonly(builder, path)?;
    }
    Ok(())
}

/// Mount points strictly below `top` in this mount namespace, with the
/// flags a remount must keep (in a user namespace they are locked).
fn submounts(top: &Path) -> Result<Vec<(PathBuf, libc::c_ulong)>, SetupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| SetupError::sys("read mountinfo", e))?;
    Ok(parse_submounts(&text, top))
}

fn parse_submounts(mountinfo: &str, top: &Path) -> Vec<(PathBuf, libc::c_ulong)> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if point == top || !point.starts_with(top) {
            continue;
        }
        let mut flags = 0;
        for option in options.split(',') {
            flags |= match option {
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                "noatime" => libc::MS_NOATIME,
                "nodiratime" => libc::MS_NODIRATIME,
                "relatime" => libc::MS_RELATIME,
                _ => 0,
            };
        }
        found.push((point, flags));
    }
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes every mount below `top` read-only (a recursive bind made
/// read-only changes only its top mount).
fn remount_subtree_readonly(sys: &dyn Sys, top: &Path) -> Result<(), SetupError> {
    for (point, flags) in submounts(top)? {
        mount_with(
            sys,
            "",
            &point,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | flags,
            "",
        )
        .map_err(|e| e.during(format!("making the host's {} read-only", point.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::sandbox::spec::{Network, Remap, RootFs};
    use crate::executor::sandbox::sys::{m, scratch_root, Call, MountCall, RecordingSys};
    use crate::executor::sandbox::IdRange;
    use libc::{MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT};

    const NSN: libc::c_ulong = NOSUID_NODEV_NOEXEC;

    /// The mounts of `mount_kernel_filesystems` for `spec` on `root`, with
    /// `sys` deciding which calls fail; `/dev`'s own mounts left out.
    fn kernel_mounts(sys: &RecordingSys, root: &Path, spec: &SandboxSpec) -> Vec<MountCall> {
        let mut builder = RootBuilder::new(sys, root).unwrap();
        mount_kernel_filesystems(&mut builder, spec).unwrap();
        sys.mounts()
            .into_iter()
            .filter(|m| !m.1.starts_with("T/root/dev"))
            .collect()
    }

    /// A root holding some of what runc masks or makes read-only.
    fn root_with_sensitive_paths() -> (tempfile::TempDir, PathBuf, SandboxSpec) {
        let (scratch, root) = scratch_root();
        for dir in ["proc/acpi", "proc/sys", "sys/firmware"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("proc/kcore"), b"").unwrap();
        let spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        (scratch, root, spec)
    }

    #[test]
    fn masked_paths_get_an_empty_tmpfs_or_dev_null_and_readonly_paths_a_readonly_bind() {
        let (scratch, root, spec) = root_with_sensitive_paths();
        let sys = RecordingSys::new(scratch.path());
        assert_eq!(
            kernel_mounts(&sys, &root, &spec),
            [
                m("proc", "T/root/proc", "proc", NSN, ""),
                m("sysfs", "T/root/sys", "sysfs", MS_RDONLY | NSN, ""),
                // MASKED_PATHS in their order: directories, then a file.
                m("tmpfs", "T/root/proc/acpi", "tmpfs", MS_RDONLY, "size=0"),
                m("/dev/null", "T/root/proc/kcore", "", MS_BIND, ""),
                m("tmpfs", "T/root/sys/firmware", "tmpfs", MS_RDONLY, "size=0"),
                // READONLY_PATHS: bound on themselves, then remounted.
                m(
                    "T/root/proc/sys",
                    "T/root/proc/sys",
                    "",
                    MS_BIND | MS_REC,
                    ""
                ),
                m(
                    "",
                    "T/root/proc/sys",
                    "",
                    MS_BIND | MS_REMOUNT | MS_RDONLY | NSN,
                    ""
                ),
            ]
        );
    }

    #[test]
    fn an_insecure_step_gets_the_hosts_dev_a_writable_sys_and_nothing_masked() {
        let (scratch, root, mut spec) = root_with_sensitive_paths();
        spec.security = Security::Insecure;
        let sys = RecordingSys::new(scratch.path());
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        mount_kernel_filesystems(&mut builder, &spec).unwrap();
        assert_eq!(
            sys.mounts(),
            [
                m("proc", "T/root/proc", "proc", NSN, ""),
                m("/dev", "T/root/dev", "", MS_BIND | MS_REC, ""),
                m("sysfs", "T/root/sys", "sysfs", NSN, ""),
            ]
        );
    }

    #[test]
    fn without_a_pid_namespace_proc_is_the_hosts_bound_read_only() {
        let (scratch, root) = scratch_root();
        let mut spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        spec.namespaces = Namespaces::NoPidns;
        let sys = RecordingSys::new(scratch.path());
        let mounts = kernel_mounts(&sys, &root, &spec);
        assert_eq!(
            mounts[..2],
            [
                m("/proc", "T/root/proc", "", MS_BIND | MS_REC, ""),
                m(
                    "",
                    "T/root/proc",
                    "",
                    MS_BIND | MS_REMOUNT | MS_RDONLY | NSN,
                    ""
                ),
            ]
        );
        assert!(!mounts.iter().any(|m| m.2 == "proc"));
    }

    /// The host's /sys, read-only, with its cgroups hidden: what a step
    /// gets where it cannot have a sysfs of its own.
    fn host_sys() -> [MountCall; 3] {
        let ro = MS_BIND | MS_REC | MS_RDONLY | NSN;
        [
            m("/sys", "T/root/sys", "", ro, ""),
            m("", "T/root/sys", "", MS_REMOUNT | ro, ""),
            m(
                "tmpfs",
                "T/root/sys/fs/cgroup",
                "tmpfs",
                MS_RDONLY | NSN,
                "mode=755,size=0",
            ),
        ]
    }

    #[test]
    fn a_refused_sysfs_falls_back_to_the_hosts_sys_read_only_with_cgroups_hidden() {
        let (scratch, root) = scratch_root();
        let spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { fstype, .. } if fstype == "sysfs"));
        let mounts = kernel_mounts(&sys, &root, &spec);
        let tried = m("sysfs", "T/root/sys", "sysfs", MS_RDONLY | NSN, "");
        let at = mounts.iter().position(|m| *m == tried).unwrap();
        assert_eq!(mounts[at + 1..], host_sys());
    }

    #[test]
    fn the_sysfs_a_step_gets_depends_on_who_can_mount_one() {
        // Rootless without a network of its own: no sysfs is even tried.
        let (scratch, root) = scratch_root();
        let mut spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        spec.userns = true;
        let sys = RecordingSys::new(scratch.path());
        let mounts = kernel_mounts(&sys, &root, &spec);
        assert_eq!(mounts[1..], host_sys());
        // Rootless with --network=none owns its network: a fresh sysfs.
        let (scratch, root) = scratch_root();
        spec.root = RootFs::Dir(root.clone());
        spec.network = Network::None;
        let sys = RecordingSys::new(scratch.path());
        let mounts = kernel_mounts(&sys, &root, &spec);
        assert_eq!(
            mounts[1],
            m("sysfs", "T/root/sys", "sysfs", MS_RDONLY | NSN, "")
        );
        // Remapped: the one the mapper mounted as real root, bound.
        let (scratch, root) = scratch_root();
        let mut spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        spec.remap = Some(Remap {
            range: IdRange {
                uid: 1 << 20,
                gid: 1 << 20,
                count: 65536,
            },
            staging: scratch.path().canonicalize().unwrap().join("staging"),
        });
        let sys = RecordingSys::new(scratch.path());
        let mounts = kernel_mounts(&sys, &root, &spec);
        let ro = MS_BIND | MS_RDONLY | NSN;
        assert_eq!(
            mounts[1..],
            [
                m("T/staging/sys", "T/root/sys", "", ro, ""),
                m("", "T/root/sys", "", MS_REMOUNT | ro, ""),
            ]
        );
    }

    #[test]
    fn submounts_are_found_below_the_top_only() {
        let info = "\
22 1 0:21 / /r/proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
23 22 0:22 / /r/proc/sys/fs/binfmt_misc rw,relatime shared:13 - binfmt_misc b rw
24 1 0:23 / /r/procx rw - tmpfs t rw
25 1 0:24 / /r/proc/with\\040space rw,noexec - tmpfs t rw
";
        let found = parse_submounts(info, Path::new("/r/proc"));
        assert_eq!(
            found,
            vec![
                (
                    PathBuf::from("/r/proc/sys/fs/binfmt_misc"),
                    libc::MS_RELATIME
                ),
                (PathBuf::from("/r/proc/with space"), libc::MS_NOEXEC),
            ]
        );
    }
}
