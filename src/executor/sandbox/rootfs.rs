//! A step's root, assembled and entered: the root's own mount (an overlay
//! of the snapshot's layers, or a bind of a directory), the kernel file
//! systems, the step's `--mount`s in their order, the stub report, then
//! pivot_root (or, where that is refused, a move and chroot). The order
//! lives in [`enter_root`]; each step is a function of its own.

use std::path::Path;

use rustix::fs as rfs;

use super::kernelfs;
use super::mountpoint::{fd_path, open_in_root, write_stub_report, RootBuilder};
use super::spec::{MountKind, MountSpec, RootFs, SandboxSpec};
use super::sys::{mount_volatile_overlay, mount_with, SetupError, Sys};
use crate::executor::confine::Security;

/// Mounts an overlay of `lowers` (top first) with `upper` and `work` on
/// `merged`, the names relative to `base`.
#[allow(clippy::too_many_arguments)]
pub(super) fn mount_overlay(
    sys: &dyn Sys,
    base: &Path,
    lowers: &[String],
    upper: &str,
    work: &str,
    merged: &Path,
    userns: bool,
    flags: libc::c_ulong,
) -> Result<(), SetupError> {
    // Relative names from `base`: long chains stay under the one-page
    // limit of mount options.
    sys.chdir(base)
        .map_err(|e| SetupError::sys(format!("enter {}", base.display()), e))?;
    let mut data = format!(
        "lowerdir={},upperdir={upper},workdir={work}",
        lowers.join(":")
    );
    // redirect_dir and metacopy would leave upper entries that are not the
    // whole truth; the differ reads only the upper dir, so both stay off.
    if userns {
        data.push_str(",userxattr");
    } else {
        data.push_str(",redirect_dir=off,metacopy=off,index=off");
    }
    mount_volatile_overlay(sys, merged, flags, &data)
}

/// Mounts a read-only overlay of `lowers` (top first, relative to
/// `base`) on `target`: another stage's root, for `--mount from=` or a
/// `COPY --from`.
pub(super) fn mount_readonly_overlay(
    sys: &dyn Sys,
    base: &Path,
    lowers: &[String],
    target: &Path,
    userns: bool,
) -> Result<(), SetupError> {
    sys.chdir(base)
        .map_err(|e| SetupError::sys(format!("enter {}", base.display()), e))?;
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if userns {
        data.push_str(",userxattr");
    }
    mount_with(sys, "overlay", target, "overlay", libc::MS_RDONLY, &data)
}

/// The flags of whatever the step can write: nodev, so device nodes it
/// makes there (a block device of the host's disk, say) cannot be opened.
fn writable_flags(spec: &SandboxSpec) -> libc::c_ulong {
    match spec.security {
        Security::Sandbox => libc::MS_NODEV,
        Security::Insecure => 0,
    }
}

/// Builds the root, then enters it: what the sandbox's init does before
/// it forks the command.
pub(super) fn enter_root(sys: &dyn Sys, spec: &SandboxSpec) -> Result<(), SetupError> {
    let builder = build_root(sys, spec)?;
    if let Some(report) = &spec.stub_report {
        write_stub_report(report, &builder.stubs)?;
    }
    let root = builder.host_path.clone();
    drop(builder);
    pivot_into(sys, &root)
}

/// Everything before the pivot, in order: private mounts, the root's own
/// mount, /proc, /dev, /sys, then the step's mounts. The builder returned
/// holds the stubs made, those of the step's mounts marked.
pub(super) fn build_root<'s>(
    sys: &'s dyn Sys,
    spec: &SandboxSpec,
) -> Result<RootBuilder<'s>, SetupError> {
    // Nothing mounted below may propagate back to the host.
    mount_with(
        sys,
        "",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_PRIVATE,
        "",
    )?;
    let writable = writable_flags(spec);
    mount_root(sys, spec, writable)?;
    let mut builder = RootBuilder::new(sys, spec.root.path())?;
    kernelfs::mount_kernel_filesystems(&mut builder, spec)?;
    let kernel_stubs = builder.stubs.len();
    for m in &spec.mounts {
        mount_step_mount(&mut builder, spec, m, writable)?;
    }
    for stub in &mut builder.stubs[kernel_stubs..] {
        stub.mount = true;
    }
    Ok(builder)
}

/// The root's own mount: the overlay, or the directory bound on itself
/// (pivot_root needs a mount point), `writable` either way.
fn mount_root(
    sys: &dyn Sys,
    spec: &SandboxSpec,
    writable: libc::c_ulong,
) -> Result<(), SetupError> {
    let root = spec.root.path();
    if let RootFs::Overlay {
        base,
        lowers,
        upper,
        work,
        ..
    } = &spec.root
    {
        return mount_overlay(
            sys,
            base,
            lowers,
            upper,
            work,
            root,
            spec.overlay_userxattr(),
            writable,
        );
    }
    mount_with(
        sys,
        &root.to_string_lossy(),
        root,
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    if writable != 0 {
        // A bind takes its flags only from a remount.
        mount_with(
            sys,
            "",
            root,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | writable,
            "",
        )?;
    }
    Ok(())
}

/// One of the step's mounts (`RUN --mount`, /etc/hosts, ...) at its
/// target in the root.
fn mount_step_mount(
    builder: &mut RootBuilder,
    spec: &SandboxSpec,
    m: &MountSpec,
    writable: libc::c_ulong,
) -> Result<(), SetupError> {
    match &m.kind {
        MountKind::Bind { source, readonly } => {
            let is_dir = source.is_dir();
            let mut flags = libc::MS_BIND | libc::MS_REC | writable;
            if *readonly {
                flags |= libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
            }
            builder.mount_on(&source.to_string_lossy(), &m.target, is_dir, "", flags, "")
        }
        MountKind::StageRoot {
            base,
            lowers,
            staging,
            subpath,
        } => {
            let sys = builder.sys;
            mount_readonly_overlay(sys, base, lowers, staging, spec.overlay_userxattr())?;
            // The part asked for, resolved inside the stage's root.
            let stage_root = RootBuilder::new(sys, staging)?;
            let part = open_in_root(&stage_root.fd, subpath)
                .map_err(|e| SetupError::sys(format!("--mount source {subpath}"), e))?;
            let is_dir = rfs::fstat(&part)
                .map(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
                .unwrap_or(true);
            builder.mount_on(
                &fd_path(&part),
                &m.target,
                is_dir,
                "",
                libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                "",
            )
        }
        MountKind::Tmpfs { size } => {
            let data = match size {
                Some(bytes) => format!("mode=1777,size={bytes}"),
                None => "mode=1777".to_string(),
            };
            builder.mount_on(
                "tmpfs",
                &m.target,
                true,
                "tmpfs",
                libc::MS_NOSUID | writable,
                &data,
            )
        }
    }
}

/// Makes `root` the process's `/`: pivot_root with the old root detached,
/// or where pivot_root is refused (e.g. on a ramfs `/`), the root moved
/// over `/` and chrooted into.
fn pivot_into(sys: &dyn Sys, root: &Path) -> Result<(), SetupError> {
    let old = root.join(".rbuild-oldroot");
    sys.mkdir_all(&old)
        .map_err(|e| SetupError::sys("create pivot dir", e))?;
    if sys.pivot_root(root, &old).is_ok() {
        sys.chdir(Path::new("/"))
            .map_err(|e| SetupError::sys("chdir /", e))?;
        let old_in_root = Path::new("/.rbuild-oldroot");
        sys.umount(old_in_root, libc::MNT_DETACH)
            .map_err(|e| SetupError::sys("detach old root", e))?;
        let _ = sys.rmdir(old_in_root);
        return Ok(());
    }
    let _ = sys.rmdir(&old);
    sys.chdir(root)
        .map_err(|e| SetupError::sys(format!("chdir {}", root.display()), e))?;
    mount_with(sys, ".", Path::new("/"), "", libc::MS_MOVE, "")?;
    sys.chroot(Path::new("."))
        .map_err(|e| SetupError::sys("chroot", e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| SetupError::sys("chdir /", e))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::executor::sandbox::dev::tests::default_dev;
    use crate::executor::sandbox::spec::Stub;
    use crate::executor::sandbox::sys::{
        m, mounts_of, scratch_root, Call, MountCall, RecordingSys,
    };
    use libc::{
        MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT,
    };

    const NSN: libc::c_ulong = MS_NOSUID | MS_NODEV | MS_NOEXEC;

    /// What a default step's `/proc`, `/dev` and `/sys` are, in order, on
    /// an empty directory root (nothing there to mask).
    fn kernel_mounts() -> Vec<MountCall> {
        let dev = default_dev("newinstance,ptmxmode=0666,mode=0620,gid=5");
        let mut want = vec![m("proc", "T/root/proc", "proc", NSN, "")];
        want.extend(mounts_of(dev));
        want.push(m("sysfs", "T/root/sys", "sysfs", MS_RDONLY | NSN, ""));
        want
    }

    fn dir_spec(root: &Path) -> SandboxSpec {
        SandboxSpec::example(RootFs::Dir(root.to_path_buf()))
    }

    #[test]
    fn a_directory_root_is_bound_nodev_then_gets_proc_dev_and_sys_in_order() {
        let (scratch, root) = scratch_root();
        let sys = RecordingSys::new(scratch.path());
        build_root(&sys, &dir_spec(&root)).unwrap();
        let mut want = vec![
            m("", "/", "", MS_REC | MS_PRIVATE, ""),
            m("T/root", "T/root", "", MS_BIND | MS_REC, ""),
            m("", "T/root", "", MS_BIND | MS_REMOUNT | MS_NODEV, ""),
        ];
        want.extend(kernel_mounts());
        assert_eq!(sys.mounts(), want);
    }

    #[test]
    fn an_overlay_root_is_mounted_from_its_base_with_the_tiers_options() {
        // A fresh merged dir each time: the setup creates in it.
        let overlay = |scratch: &Path| {
            let merged = scratch.canonicalize().unwrap().join("merged");
            std::fs::create_dir(&merged).unwrap();
            RootFs::Overlay {
                base: scratch.join("base"),
                lowers: vec!["l/b".into(), "l/a".into()],
                upper: "w/upper".into(),
                work: "w/work".into(),
                merged,
            }
        };
        let layers = "lowerdir=l/b:l/a,upperdir=w/upper,workdir=w/work";
        let cases = [
            // As root: nodev, and no overlay feature the differ cannot read.
            (
                false,
                Security::Sandbox,
                MS_NODEV,
                ",redirect_dir=off,metacopy=off,index=off,volatile",
            ),
            (true, Security::Sandbox, MS_NODEV, ",userxattr,volatile"),
            (
                false,
                Security::Insecure,
                0,
                ",redirect_dir=off,metacopy=off,index=off,volatile",
            ),
        ];
        for (userns, security, flags, options) in cases {
            let (scratch, _) = scratch_root();
            let sys = RecordingSys::new(scratch.path());
            let mut spec = SandboxSpec::example(overlay(scratch.path()));
            (spec.userns, spec.security) = (userns, security);
            build_root(&sys, &spec).unwrap();
            let calls = sys.calls();
            assert_eq!(
                calls[..3],
                [
                    Call::Mount {
                        source: String::new(),
                        target: "/".into(),
                        fstype: String::new(),
                        flags: MS_REC | MS_PRIVATE,
                        data: String::new(),
                    },
                    Call::Chdir("T/base".into()),
                    Call::Mount {
                        source: "overlay".into(),
                        target: "T/merged".into(),
                        fstype: "overlay".into(),
                        flags,
                        data: format!("{layers}{options}"),
                    },
                ],
                "userns {userns}, {security:?}"
            );
            // Then straight to /proc: an overlay needs no bind on itself.
            assert!(matches!(&calls[3], Call::Mkdir(p, 0o755) if p == "T/merged/proc"));
        }
    }

    #[test]
    fn a_kernel_refusing_volatile_gets_the_overlay_without_it() {
        let (scratch, _) = scratch_root();
        let merged = scratch.path().canonicalize().unwrap().join("merged");
        std::fs::create_dir(&merged).unwrap();
        let root = RootFs::Overlay {
            base: scratch.path().join("base"),
            lowers: vec!["l/a".into()],
            upper: "w/upper".into(),
            work: "w/work".into(),
            merged,
        };
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { data, .. } if data.ends_with(",volatile")));
        build_root(&sys, &SandboxSpec::example(root)).unwrap();
        let layers = "lowerdir=l/a,upperdir=w/upper,workdir=w/work";
        let options = ",redirect_dir=off,metacopy=off,index=off";
        let overlays: Vec<String> = sys
            .mounts()
            .into_iter()
            .filter(|(_, _, fstype, _, _)| fstype == "overlay")
            .map(|(_, _, _, _, data)| data)
            .collect();
        assert_eq!(
            overlays,
            [
                format!("{layers}{options},volatile"),
                format!("{layers}{options}")
            ]
        );
    }

    #[test]
    fn the_steps_mounts_follow_the_kernel_filesystems_in_order_with_their_flags() {
        let (scratch, root) = scratch_root();
        let base = scratch.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("cache")).unwrap();
        std::fs::write(base.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let mut spec = dir_spec(&root);
        let bind = |source: &str, readonly| MountKind::Bind {
            source: base.join(source),
            readonly,
        };
        spec.mounts = vec![
            MountSpec {
                target: "/cache".into(),
                kind: bind("cache", false),
            },
            MountSpec {
                target: "/etc/hosts".into(),
                kind: bind("hosts", true),
            },
            MountSpec {
                target: "/tmp/t".into(),
                kind: MountKind::Tmpfs {
                    size: Some(1 << 20),
                },
            },
        ];
        let sys = RecordingSys::new(scratch.path());
        let builder = build_root(&sys, &spec).unwrap();
        let mounts = sys.mounts();
        let after_sys = mounts.iter().position(|m| m.2 == "sysfs").unwrap() + 1;
        let rw = MS_BIND | MS_REC | MS_NODEV;
        let ro = rw | MS_RDONLY | MS_NOSUID;
        assert_eq!(
            mounts[after_sys..],
            [
                // A bind takes nodev and read-only only from a remount.
                m("T/cache", "T/root/cache", "", rw, ""),
                m("", "T/root/cache", "", MS_REMOUNT | rw, ""),
                m("T/hosts", "T/root/etc/hosts", "", ro, ""),
                m("", "T/root/etc/hosts", "", MS_REMOUNT | ro, ""),
                m(
                    "tmpfs",
                    "T/root/tmp/t",
                    "tmpfs",
                    MS_NOSUID | MS_NODEV,
                    "mode=1777,size=1048576",
                ),
            ]
        );
        assert_eq!(
            builder.stub_list(),
            [
                ("proc", true, false),
                ("dev", true, false),
                ("sys", true, false),
                ("cache", true, true),
                ("etc", true, true),
                ("etc/hosts", false, true),
                ("tmp", true, true),
                ("tmp/t", true, true),
            ]
        );
    }

    #[test]
    fn a_stage_mount_is_an_overlay_at_its_staging_dir_whose_part_is_bound_read_only() {
        let (scratch, root) = scratch_root();
        let base = scratch.path().canonicalize().unwrap();
        // What the overlay would show: the part asked for.
        std::fs::create_dir_all(base.join("staging/usr/lib")).unwrap();
        let mut spec = dir_spec(&root);
        spec.userns = true;
        spec.mounts = vec![MountSpec {
            target: "/from".into(),
            kind: MountKind::StageRoot {
                base: base.join("store"),
                lowers: vec!["l/top".into(), "empty".into()],
                staging: base.join("staging"),
                subpath: "usr/lib".into(),
            },
        }];
        let sys = RecordingSys::new(scratch.path());
        build_root(&sys, &spec).unwrap();
        let calls = sys.calls();
        let at = calls
            .iter()
            .position(|c| *c == Call::Chdir("T/store".into()))
            .unwrap();
        let ro = MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV;
        let mount = |(source, target, fstype, flags, data): MountCall| Call::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        };
        assert_eq!(
            calls[at..],
            [
                Call::Chdir("T/store".into()),
                mount(m(
                    "overlay",
                    "T/staging",
                    "overlay",
                    MS_RDONLY,
                    "lowerdir=l/top:empty,userxattr"
                )),
                Call::Mkdir("T/root/from".into(), 0o755),
                mount(m("T/staging/usr/lib", "T/root/from", "", ro, "")),
                mount(m("", "T/root/from", "", MS_REMOUNT | ro, "")),
            ]
        );
    }

    #[test]
    fn entering_pivots_into_the_root_and_detaches_the_old_one_after_the_report() {
        let (scratch, root) = scratch_root();
        let report = scratch.path().join("stubs.json");
        let mut spec = dir_spec(&root);
        spec.stub_report = Some(report.clone());
        let sys = RecordingSys::new(scratch.path());
        enter_root(&sys, &spec).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[calls.len() - 5..],
            [
                Call::MkdirAll("T/root/.rbuild-oldroot".into()),
                Call::PivotRoot("T/root".into(), "T/root/.rbuild-oldroot".into()),
                Call::Chdir("/".into()),
                Call::Umount("/.rbuild-oldroot".into(), libc::MNT_DETACH),
                Call::Rmdir("/.rbuild-oldroot".into()),
            ]
        );
        let stubs: Vec<Stub> = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let paths: Vec<&str> = stubs.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["proc", "dev", "sys"]);
    }

    #[test]
    fn a_refused_pivot_moves_the_root_over_slash_and_chroots_into_it() {
        let (scratch, root) = scratch_root();
        let sys = RecordingSys::new(scratch.path()).fail_on(|c| matches!(c, Call::PivotRoot(..)));
        enter_root(&sys, &dir_spec(&root)).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[calls.len() - 6..],
            [
                Call::PivotRoot("T/root".into(), "T/root/.rbuild-oldroot".into()),
                Call::Rmdir("T/root/.rbuild-oldroot".into()),
                Call::Chdir("T/root".into()),
                Call::Mount {
                    source: ".".into(),
                    target: "/".into(),
                    fstype: String::new(),
                    flags: MS_MOVE,
                    data: String::new(),
                },
                Call::Chroot(".".into()),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn a_failing_mount_stops_the_setup_with_an_error_naming_its_target() {
        let (scratch, root) = scratch_root();
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { target, .. } if target == "T/root/dev"));
        let err = enter_root(&sys, &dir_spec(&root)).err().unwrap();
        // Typed: the kernel's errno, inside where it happened.
        let SetupError::During { context, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(context, "at dev");
        assert!(
            matches!(&**source, SetupError::Sys { source, .. } if source.raw_os_error() == Some(libc::EPERM))
        );
        let err = err.to_string();
        assert!(err.starts_with("mount tmpfs on /proc/self/fd/"), "{err}");
        assert!(
            err.ends_with("Operation not permitted (os error 1) (at dev)"),
            "{err}"
        );
        // Nothing after the failed mount: no /sys, no pivot.
        let calls = sys.calls();
        assert!(matches!(calls.last(), Some(Call::Mount { target, .. }) if target == "T/root/dev"));
    }

    #[test]
    fn a_failing_step_mount_names_the_steps_target_and_mounts_no_later_one() {
        let (scratch, root) = scratch_root();
        let mut spec = dir_spec(&root);
        spec.mounts = ["/one", "/two"]
            .into_iter()
            .map(|target| MountSpec {
                target: target.into(),
                kind: MountKind::Tmpfs { size: None },
            })
            .collect();
        let sys = RecordingSys::new(scratch.path())
            .fail_on(|c| matches!(c, Call::Mount { target, .. } if target == "T/root/one"));
        let err = build_root(&sys, &spec).err().unwrap().to_string();
        assert!(err.ends_with("(at /one)"), "{err}");
        assert!(!sys.mounts().iter().any(|m| m.1 == "T/root/two"));
        assert!(!PathBuf::from(&root).join("two").exists());
    }
}
