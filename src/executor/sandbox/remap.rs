//! A step's root as an unprivileged host id where rbuild is real root
//! (docker's userns-remap, done per step): the helper enters a user
//! namespace whose ids 0..count are the host ids of an [`IdRange`] no
//! account uses, and sees every lower dir, its workspace and every bind
//! source through an idmapped mount, so the files keep their owners on
//! disk (a layer is the same either way) while the step, even through a
//! kernel bug in a namespaced path, holds no privilege on the host.
//!
//! Only real root can write such maps and idmap mounts, and only from the
//! parent user namespace, so a forked mapper (still real root, in the same
//! private mount namespace) does both once the helper has unshared its
//! user namespace; the mounts then come along into every namespace the
//! helper makes after.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::spec::{IdRange, MountKind, RootFs, SandboxSpec};
use super::sys::{
    check, cstr, mount, mount_volatile_overlay, pipe, read_all, LinuxSys, SetupError,
};

/// The read-only sysfs the mapper mounts under the staging dir.
pub(super) const SYSFS: &str = "sys";

/// A host path shown at `staging/<name>` through an idmapped mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shift {
    source: PathBuf,
    name: String,
    dir: bool,
}

/// Points the spec's root and mounts at idmapped clones under `staging`
/// and returns what must be cloned.
pub(super) fn shift_spec(spec: &mut SandboxSpec, staging: &Path) -> Result<Vec<Shift>, SetupError> {
    let mut shifts = Vec::new();
    let mut add = |source: PathBuf, name: String, dir: bool| {
        shifts.push(Shift {
            source,
            name: name.clone(),
            dir,
        });
        name
    };
    match &mut spec.root {
        RootFs::Overlay {
            base,
            lowers,
            upper,
            work,
            ..
        } => {
            for (i, lower) in lowers.iter_mut().enumerate() {
                *lower = add(base.join(&*lower), format!("l{i}"), true);
            }
            // upper and work must stay on one mount: their common parent.
            let (up, wk) = (Path::new(upper.as_str()), Path::new(work.as_str()));
            let parent = up
                .parent()
                .filter(|p| wk.parent() == Some(*p))
                .ok_or_else(|| SetupError::refused("upper and work dirs are not siblings"))?;
            let ws = add(base.join(parent), "ws".to_string(), true);
            let leaf = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
            *upper = format!("{ws}/{}", leaf(up).unwrap_or_default());
            *work = format!("{ws}/{}", leaf(wk).unwrap_or_default());
            *base = staging.to_path_buf();
        }
        RootFs::Dir(path) => {
            add(path.clone(), "root".to_string(), true);
            *path = staging.join("root");
        }
    }
    for (i, m) in spec.mounts.iter_mut().enumerate() {
        match &mut m.kind {
            MountKind::Bind { source, .. } => {
                let dir = source.is_dir();
                let name = add(source.clone(), format!("b{i}"), dir);
                *source = staging.join(name);
            }
            MountKind::StageRoot { base, lowers, .. } => {
                for (j, lower) in lowers.iter_mut().enumerate() {
                    *lower = add(base.join(&*lower), format!("s{i}-{j}"), true);
                }
                *base = staging.to_path_buf();
            }
            MountKind::Tmpfs { .. } => {}
        }
    }
    Ok(shifts)
}

// Linux's mount API (linux/mount.h); not every libc binding has them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Attaches a clone of `source` at `target`, its owners seen through the
/// user namespace `userns` (on-disk id n shows as that namespace's id n).
fn idmapped_clone(source: &Path, target: &Path, userns: &OwnedFd) -> Result<(), SetupError> {
    let what = |step: &str| format!("{step} {}", source.display());
    let src = cstr(&source.to_string_lossy());
    // SAFETY: open_tree with a valid path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    } as libc::c_int;
    check(&what("clone"), fd)?;
    // SAFETY: the fd was just returned to us.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = cstr("");
    // SAFETY: mount_setattr on our detached tree with a sized struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    } as libc::c_int;
    check(&what("idmap"), rc)?;
    let dst = cstr(&target.to_string_lossy());
    // SAFETY: move_mount of our detached tree onto an existing path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    } as libc::c_int;
    check(&what("attach"), rc)
}

/// The mapper's work, as real root in the parent namespaces: the maps of
/// `pid`'s new user namespace, then (with a staging dir) the idmapped
/// clones under it.
fn map_and_shift(
    pid: libc::pid_t,
    range: IdRange,
    staging: Option<&Path>,
    shifts: &[Shift],
) -> Result<(), SetupError> {
    let write = |file: &str, text: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| SetupError::sys(format!("write {path}"), e))
    };
    write("uid_map", format!("0 {} {}", range.uid, range.count))?;
    write("gid_map", format!("0 {} {}", range.gid, range.count))?;
    let Some(staging) = staging else {
        return Ok(());
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| SetupError::sys("open the step's user namespace", e))?;
    let userns = OwnedFd::from(ns);
    mount(
        "tmpfs",
        staging,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=755",
    )?;
    // A fresh sysfs needs a network namespace its mounter owns; the step's
    // user namespace owns none on the host network, real root does.
    let sys = staging.join(SYSFS);
    std::fs::create_dir(&sys)
        .map_err(|e| SetupError::sys(format!("create {}", sys.display()), e))?;
    mount(
        "sysfs",
        &sys,
        "sysfs",
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    for shift in shifts {
        let target = staging.join(&shift.name);
        let made = if shift.dir {
            std::fs::create_dir(&target)
        } else {
            std::fs::write(&target, b"")
        };
        made.map_err(|e| SetupError::sys(format!("create {}", target.display()), e))?;
        idmapped_clone(&shift.source, &target, &userns)?;
    }
    Ok(())
}

/// Makes the calling (single-threaded, disposable) helper root of a new
/// user namespace whose ids 0.. are the parent's ids 0..`count`, mapped
/// by a child that stays in the parent namespace (writing another id than
/// one's own needs CAP_SETUID and CAP_SETGID there, which the helper loses
/// by entering). For root without CAP_SYS_ADMIN (a container that keeps
/// docker's default set but no seccomp profile): the step's ids are the
/// container's, every one of them, and its mounts its namespace's own.
pub(crate) fn enter_identity(count: u32) -> Result<(), SetupError> {
    let range = IdRange {
        uid: 0,
        gid: 0,
        count,
    };
    enter(range, None, &[], &[])
}

/// Makes the calling (single-threaded, disposable) helper root of a new
/// user namespace mapped to `range`; with a `staging` dir, in a private
/// mount namespace where each of `shifts` is attached under it. `owned`
/// files are handed to the namespace's root first (files the helper
/// writes from inside).
pub(super) fn enter(
    range: IdRange,
    staging: Option<&Path>,
    shifts: &[Shift],
    owned: &[&Path],
) -> Result<(), SetupError> {
    if staging.is_some() {
        // SAFETY: unshare in the single-threaded helper.
        check("unshare(CLONE_NEWNS)", unsafe {
            libc::unshare(libc::CLONE_NEWNS)
        })?;
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    }
    for file in owned {
        std::fs::write(file, b"")
            .map_err(|e| SetupError::sys(format!("create {}", file.display()), e))?;
        std::os::unix::fs::chown(file, Some(range.uid), Some(range.gid))
            .map_err(|e| SetupError::sys(format!("chown {}", file.display()), e))?;
    }
    let (go, result) = (pipe()?, pipe()?);
    // SAFETY: fork in the single-threaded helper.
    match unsafe { libc::fork() } {
        -1 => Err(SetupError::sys("fork", std::io::Error::last_os_error())),
        0 => {
            drop(go.1);
            drop(result.0);
            let mut byte = [0u8; 1];
            // SAFETY: reading one byte into a local buffer.
            let n = unsafe { libc::read(go.0.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            let outcome = if n == 1 {
                // SAFETY: plain getter.
                map_and_shift(unsafe { libc::getppid() }, range, staging, shifts)
            } else {
                Err(SetupError::refused("the helper gave up before the maps"))
            };
            let code = match outcome {
                Ok(()) => 0,
                Err(e) => {
                    let message = e.to_string();
                    // SAFETY: writing our own buffer to our pipe end.
                    unsafe {
                        libc::write(result.1.as_raw_fd(), message.as_ptr().cast(), message.len())
                    };
                    1
                }
            };
            // SAFETY: leave the mapper without the helper's destructors.
            unsafe { libc::_exit(code) }
        }
        mapper => {
            drop(go.0);
            drop(result.1);
            // SAFETY: unshare in the single-threaded helper.
            let unshared = check("unshare(CLONE_NEWUSER)", unsafe {
                libc::unshare(libc::CLONE_NEWUSER)
            });
            if unshared.is_ok() {
                // SAFETY: writing one byte from a local buffer.
                unsafe { libc::write(go.1.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            }
            drop(go.1);
            let message = read_all(&result.0);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(mapper, &mut status, 0) };
            unshared?;
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                // The mapper's error crossed the pipe as its text.
                return Err(SetupError::refused(if message.is_empty() {
                    format!("the id mapper died (status {status})")
                } else {
                    message
                }));
            }
            become_root()
        }
    }
}

/// Takes uid and gid 0 of the new namespace (host ids of the range).
fn become_root() -> Result<(), SetupError> {
    // SAFETY: identity syscalls with plain integers.
    unsafe {
        check("setgroups", libc::setgroups(0, std::ptr::null()))?;
        check("setresgid", libc::setresgid(0, 0, 0))?;
        check("setresuid", libc::setresuid(0, 0, 0))
    }
}

/// The probe's second half (root only): the calling disposable child
/// enters a remapped user namespace as a step would (with nothing to
/// shift; `stage` an empty dir), where the caller then tries a step's
/// `/proc`. A container that masks parts of its `/proc` lets real root
/// mount a fresh one but refuses it inside a user namespace.
pub(crate) fn enter_for_probe(stage: &Path) -> Result<(), SetupError> {
    enter(IdRange::for_this_host(), Some(stage), &[], &[])
}

/// The probe (root only): a file created and chowned through an overlay of
/// idmapped layers, mounted inside the remapped namespace, lands on disk
/// with the step's own ids. `scratch` holds `lower/`, `upper/`, `work/`,
/// `merged/` and an empty `stage/`; run in a disposable child.
pub(crate) fn probe(scratch: &Path) -> Result<(), SetupError> {
    let ws = scratch.join("ws");
    for dir in ["upper", "work"] {
        std::fs::create_dir_all(ws.join(dir))
            .map_err(|e| SetupError::sys(format!("create {dir}"), e))?;
    }
    let shifts = [
        Shift {
            source: scratch.join("lower"),
            name: "l".to_string(),
            dir: true,
        },
        Shift {
            source: ws,
            name: "ws".to_string(),
            dir: true,
        },
    ];
    let stage = scratch.join("stage");
    enter(IdRange::for_this_host(), Some(&stage), &shifts, &[])?;
    // SAFETY: unshare in the single-threaded probe child.
    check("unshare(CLONE_NEWNS)", unsafe {
        libc::unshare(libc::CLONE_NEWNS)
    })?;
    let data = format!(
        "lowerdir={0}/l,upperdir={0}/ws/upper,workdir={0}/ws/work,userxattr",
        stage.display()
    );
    let merged = scratch.join("merged");
    mount_volatile_overlay(&LinuxSys, &merged, 0, &data)?;
    let file = merged.join("made-by-step");
    std::fs::write(&file, b"x").map_err(|e| SetupError::sys("write through the overlay", e))?;
    std::os::unix::fs::chown(&file, Some(1000), Some(1000))
        .map_err(|e| SetupError::sys("chown through the overlay", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::sandbox::MountSpec;

    #[test]
    fn the_spec_points_at_clones_under_the_staging_dir() {
        let mut spec = SandboxSpec::example(RootFs::Overlay {
            base: PathBuf::from("/s"),
            lowers: vec!["l/AAA".into(), "l/BBB".into()],
            upper: "w/x/upper".into(),
            work: "w/x/work".into(),
            merged: PathBuf::from("/s/w/x/merged"),
        });
        spec.mounts = vec![MountSpec {
            target: "/etc/hosts".into(),
            kind: MountKind::Bind {
                source: PathBuf::from("/nonexistent/hosts"),
                readonly: false,
            },
        }];
        let shifts = shift_spec(&mut spec, Path::new("/st")).unwrap();
        let names: Vec<(&Path, &str)> = shifts
            .iter()
            .map(|s| (s.source.as_path(), s.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (Path::new("/s/l/AAA"), "l0"),
                (Path::new("/s/l/BBB"), "l1"),
                (Path::new("/s/w/x"), "ws"),
                (Path::new("/nonexistent/hosts"), "b0"),
            ]
        );
        let RootFs::Overlay {
            base,
            lowers,
            upper,
            work,
            merged,
        } = &spec.root
        else {
            panic!("overlay");
        };
        assert_eq!(base, Path::new("/st"));
        assert_eq!(lowers, &["l0", "l1"]);
        assert_eq!((upper.as_str(), work.as_str()), ("ws/upper", "ws/work"));
        assert_eq!(merged, Path::new("/s/w/x/merged"));
        assert!(matches!(&spec.mounts[0].kind,
            MountKind::Bind { source, .. } if source == Path::new("/st/b0")));
    }
}
