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
use super::sys::{mount_with, Sys};
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
) -> Result<(), String> {
    // Relative names from `base`: long chains stay under the one-page
    // limit of mount options.
    sys.chdir(base)
        .map_err(|e| format!("enter {}: {e}", base.display()))?;
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
    mount_with(sys, "overlay", merged, "overlay", flags, &data)
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
) -> Result<(), String> {
    sys.chdir(base)
        .map_err(|e| format!("enter {}: {e}", base.display()))?;
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
pub(super) fn enter_root(sys: &dyn Sys, spec: &SandboxSpec) -> Result<(), String> {
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
) -> Result<RootBuilder<'s>, String> {
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
fn mount_root(sys: &dyn Sys, spec: &SandboxSpec, writable: libc::c_ulong) -> Result<(), String> {
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
            spec.in_userns(),
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
) -> Result<(), String> {
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
            mount_readonly_overlay(sys, base, lowers, staging, spec.in_userns())?;
            // The part asked for, resolved inside the stage's root.
            let stage_root = RootBuilder::new(sys, staging)?;
            let part = open_in_root(&stage_root.fd, subpath)
                .map_err(|e| format!("--mount source {subpath}: {e}"))?;
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
fn pivot_into(sys: &dyn Sys, root: &Path) -> Result<(), String> {
    let old = root.join(".rbuild-oldroot");
    sys.mkdir_all(&old)
        .map_err(|e| format!("create pivot dir: {e}"))?;
    if sys.pivot_root(root, &old).is_ok() {
        sys.chdir(Path::new("/")).map_err(|e| e.to_string())?;
        let old_in_root = Path::new("/.rbuild-oldroot");
        sys.umount(old_in_root, libc::MNT_DETACH)
            .map_err(|e| format!("detach old root: {e}"))?;
        let _ = sys.rmdir(old_in_root);
        return Ok(());
    }
    let _ = sys.rmdir(&old);
    sys.chdir(root).map_err(|e| e.to_string())?;
    mount_with(sys, ".", Path::new("/"), "", libc::MS_MOVE, "")?;
    sys.chroot(Path::new("."))
        .map_err(|e| format!("chroot: {e}"))?;
    sys.chdir(Path::new("/")).map_err(|e| e.to_string())
}
