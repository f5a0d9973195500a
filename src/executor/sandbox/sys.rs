//! The sandbox's seam to the kernel for building a step's root: [`Sys`],
//! the calls that change the mount tree or the root's contents (mounts,
//! the pivot or chroot, the directories, files, links and nodes made as
//! mount points or in `/dev`, the hostname); [`LinuxSys`], which makes
//! them; and, in tests, [`RecordingSys`], which writes them down in order
//! so the root's setup can be checked as an ordinary user, mounting
//! nothing (after youki's `syscall` crate: a trait, a Linux
//! implementation, a test one).
//!
//! Reads (open, stat, readlink, mountinfo) stay direct: they change
//! nothing, and the setup decides by what is really there. The few raw
//! wrappers the rest of the helper shares (`mount` worded as the helper
//! reports it, pipes) live here too.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The calls that build a step's root. Each returns the kernel's error
/// unworded: the caller says what it was doing.
pub(crate) trait Sys {
    /// mount(2); an empty `fstype` or `data` is passed as NULL.
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// chroot(2).
    fn chroot(&self, path: &Path) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// mkdir(2) of one directory.
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// A directory and its missing parents (as `mkdir -p`).
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// An empty regular file: with `exclusive`, one that must not exist
    /// yet (O_EXCL); otherwise an existing one is truncated.
    fn create_file(&self, path: &Path, mode: u32, exclusive: bool) -> io::Result<()>;
    /// symlink(2): `link` pointing at `target`.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// mknod(2) of a character device.
    fn mknod_char(&self, path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()>;
    /// rmdir(2).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> io::Result<()>;
}

/// The flags of a kernel file system nothing runs from and nothing opens
/// devices on.
pub(super) const NOSUID_NODEV_NOEXEC: libc::c_ulong =
    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// [`Sys`] on the running kernel.
pub(crate) struct LinuxSys;

pub(super) fn cstr(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn path_cstr(path: &Path) -> CString {
    cstr(&path.to_string_lossy())
}

/// The result of a libc call that returns -1 and sets errno on failure.
fn os_result(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Why the helper could not set a step up: the kernel's errors keep
/// their errno (a caller may retry without an option the kernel refused),
/// and each says what the helper was doing.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A call the kernel refused.
    #[error("{what}: {source}")]
    Sys {
        /// What the helper was doing ("mount overlay on …").
        what: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// An error below, with where in the setup it happened.
    #[error("{source} ({context})")]
    During {
        /// Where ("at /work", "the step's memory cgroup").
        context: String,
        /// What failed there.
        #[source]
        source: Box<SetupError>,
    },
    /// The COPY the helper was running failed.
    #[error(transparent)]
    Copy(#[from] crate::executor::copy::CopyError),
    /// A spec this tier will not run, or a setup the helper refuses.
    #[error("{0}")]
    Refused(String),
}

impl SetupError {
    /// A refused call: what was being done, and the kernel's error.
    pub(crate) fn sys(what: impl std::fmt::Display, source: impl Into<io::Error>) -> SetupError {
        SetupError::Sys {
            what: what.to_string(),
            source: source.into(),
        }
    }

    /// The same error, saying where it happened.
    pub(crate) fn during(self, context: impl std::fmt::Display) -> SetupError {
        SetupError::During {
            context: context.to_string(),
            source: Box::new(self),
        }
    }

    /// A refusal worded `why`.
    pub(crate) fn refused(why: impl std::fmt::Display) -> SetupError {
        SetupError::Refused(why.to_string())
    }
}

pub(super) fn check(what: &str, rc: libc::c_int) -> Result<(), SetupError> {
    os_result(rc).map_err(|e| SetupError::sys(what, e))
}

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()> {
        let (s, t, f, d) = (cstr(source), path_cstr(target), cstr(fstype), cstr(data));
        // SAFETY: valid NUL-terminated strings that outlive the call.
        os_result(unsafe {
            libc::mount(
                s.as_ptr(),
                t.as_ptr(),
                if fstype.is_empty() {
                    std::ptr::null()
                } else {
                    f.as_ptr()
                },
                flags,
                if data.is_empty() {
                    std::ptr::null()
                } else {
                    d.as_ptr().cast()
                },
            )
        })
    }

    fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let t = path_cstr(target);
        // SAFETY: valid path.
        os_result(unsafe { libc::umount2(t.as_ptr(), flags) })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let (new_c, old_c) = (path_cstr(new_root), path_cstr(put_old));
        // SAFETY: syscall with valid path pointers.
        os_result(
            unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) }
                as libc::c_int,
        )
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        let p = path_cstr(path);
        // SAFETY: valid path.
        os_result(unsafe { libc::chroot(p.as_ptr()) })
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        rustix::fs::mkdir(path, rustix::fs::Mode::from_raw_mode(mode)).map_err(io::Error::from)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_file(&self, path: &Path, mode: u32, exclusive: bool) -> io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        options.open(path).map(drop)
    }

    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn mknod_char(&self, path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(mode),
            rustix::fs::makedev(major, minor),
        )
        .map_err(io::Error::from)?;
        // The umask took bits from `mode`: /dev/null must be 0666 for a
        // step that runs as another user.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        let c = cstr(name);
        // SAFETY: valid buffer and length.
        os_result(unsafe { libc::sethostname(c.as_ptr(), name.len()) })
    }
}

/// `sys.mount`, a failure worded as the helper reports it: what was
/// mounted where.
pub(crate) fn mount_with(
    sys: &dyn Sys,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), SetupError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|e| SetupError::sys(format!("mount {source} on {}", target.display()), e))
}

/// An overlay with an upper dir, mounted `volatile` where the kernel has
/// the option (5.10 on; refused before, then mounted without it).
///
/// Volatile skips the fsync of each copy-up (a `chown -R` of 10,000 lower
/// files took 6.7 s with them, 0.9 s without) and, as much, the sync of
/// the whole upper file system that the kernel runs when an overlay
/// without it is unmounted: every dirty page on the disk, any writer's,
/// is written back before the unmount returns (a probe's overlay made a
/// cached build right after a cold one wait 0.25 s for the cold build's
/// pages). The upper dir is one step's, thrown away unless the step
/// succeeds; committed, it is a snapshot like an extracted layer, which
/// is not fsynced either: the blobs are the durable copy (a syncfs per
/// commit was tried: it cost 1-2 s a step under load).
pub(crate) fn mount_volatile_overlay(
    sys: &dyn Sys,
    merged: &Path,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), SetupError> {
    let fast = format!("{data},volatile");
    if sys
        .mount("overlay", merged, "overlay", flags, &fast)
        .is_ok()
    {
        return Ok(());
    }
    mount_with(sys, "overlay", merged, "overlay", flags, data)
}

/// A mount on the running kernel, for the helper's code outside the
/// root's setup (the remapper, the probes).
pub(crate) fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), SetupError> {
    mount_with(&LinuxSys, source, target, fstype, flags, data)
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid two-int array.
    check("pipe", unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
    // SAFETY: both fds were just returned to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything `fd` yields until end-of-file, as text.
pub(crate) fn read_all(fd: &OwnedFd) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
pub(crate) use recording::{m, mounts_of, scratch_root, Call, MountCall, RecordingSys};

#[cfg(test)]
mod recording {
    use std::cell::RefCell;
    use std::io;
    use std::path::{Path, PathBuf};

    use super::Sys;

    /// One call a [`RecordingSys`] was asked to make. Paths are as the
    /// kernel would have resolved them: a `/proc/self/fd/N` prefix (how
    /// the setup names what it opened) becomes the path of that fd, and
    /// the scratch dir is written `T`, so `T/root/proc` is the root's
    /// `/proc` while `/proc` is the host's.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Mount {
            source: String,
            target: String,
            fstype: String,
            flags: libc::c_ulong,
            data: String,
        },
        Umount(String, libc::c_int),
        PivotRoot(String, String),
        Chroot(String),
        Chdir(String),
        Mkdir(String, u32),
        MkdirAll(String),
        CreateFile(String, u32, bool),
        Symlink(String, String),
        MknodChar(String, u32, u32, u32),
        Rmdir(String),
        Sethostname(String),
    }

    /// A recorded mount: (source, target, fstype, flags, data).
    pub(crate) type MountCall = (String, String, String, libc::c_ulong, String);

    /// A [`MountCall`] from string slices, as tests write what they expect.
    pub(crate) fn m(
        source: &str,
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> MountCall {
        (
            source.to_string(),
            target.to_string(),
            fstype.to_string(),
            flags,
            data.to_string(),
        )
    }

    /// The mounts among `calls`, in order.
    pub(crate) fn mounts_of(calls: Vec<Call>) -> Vec<MountCall> {
        calls
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => Some((source, target, fstype, flags, data)),
                _ => None,
            })
            .collect()
    }

    /// A [`Sys`] that records every call in order and returns success, or
    /// EPERM for the calls `fail_on` picks (still recorded: they were
    /// tried). Directories, files and links inside the scratch dir are
    /// also made for real, as an ordinary user can: the setup opens what
    /// it created (a mount point, then what is under it). Mounts, the
    /// pivot, chroot, chdir, nodes and removals are only recorded.
    pub(crate) struct RecordingSys {
        scratch: PathBuf,
        calls: RefCell<Vec<Call>>,
        fail: Box<dyn Fn(&Call) -> bool>,
    }

    impl RecordingSys {
        /// A recorder whose real creations stay inside `scratch`.
        pub(crate) fn new(scratch: &Path) -> RecordingSys {
            RecordingSys {
                scratch: scratch.canonicalize().expect("scratch dir"),
                calls: RefCell::new(Vec::new()),
                fail: Box::new(|_| false),
            }
        }

        /// Makes the calls `pick` chooses fail with EPERM.
        pub(crate) fn fail_on(mut self, pick: impl Fn(&Call) -> bool + 'static) -> RecordingSys {
            self.fail = Box::new(pick);
            self
        }

        /// Every call so far, in order.
        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        /// The mounts so far, in order.
        pub(crate) fn mounts(&self) -> Vec<MountCall> {
            mounts_of(self.calls())
        }

        /// `path` as the kernel would resolve its `/proc/self/fd/N`
        /// prefix, the scratch dir shown as `T`.
        pub(crate) fn show(&self, path: &str) -> String {
            let real = self.resolve(Path::new(path));
            match real.strip_prefix(&self.scratch) {
                Ok(rest) if rest.as_os_str().is_empty() => "T".to_string(),
                Ok(rest) => format!("T/{}", rest.display()),
                Err(_) => real.display().to_string(),
            }
        }

        fn resolve(&self, path: &Path) -> PathBuf {
            let mut parts = path.components();
            let fd_dir: PathBuf = parts.by_ref().take(5).collect();
            match fd_dir.parent() {
                Some(parent) if parent == Path::new("/proc/self/fd") => {
                    match std::fs::read_link(&fd_dir) {
                        Ok(real) => real.join(parts.as_path()),
                        Err(_) => path.to_path_buf(),
                    }
                }
                _ => path.to_path_buf(),
            }
        }

        /// Records `call`; fails it if picked, else runs `real` when the
        /// path lies in the scratch dir.
        fn record(
            &self,
            call: Call,
            path: Option<&Path>,
            real: impl FnOnce(&Path) -> io::Result<()>,
        ) -> io::Result<()> {
            let failed = (self.fail)(&call);
            self.calls.borrow_mut().push(call);
            if failed {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            match path.map(|p| self.resolve(p)) {
                Some(p) if p.starts_with(&self.scratch) => real(&p),
                _ => Ok(()),
            }
        }

        fn only_record(&self, call: Call) -> io::Result<()> {
            self.record(call, None, |_| Ok(()))
        }
    }

    /// A scratch dir holding an empty `root/`: what a test's spec points
    /// at and its [`RecordingSys`] is made for. The dir goes with the
    /// returned guard.
    pub(crate) fn scratch_root() -> (tempfile::TempDir, PathBuf) {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let root = scratch.path().canonicalize().expect("scratch").join("root");
        std::fs::create_dir(&root).expect("root dir");
        (scratch, root)
    }

    impl Sys for RecordingSys {
        fn mount(
            &self,
            source: &str,
            target: &Path,
            fstype: &str,
            flags: libc::c_ulong,
            data: &str,
        ) -> io::Result<()> {
            self.only_record(Call::Mount {
                source: self.show(source),
                target: self.show(&target.to_string_lossy()),
                fstype: fstype.to_string(),
                flags,
                data: data.to_string(),
            })
        }

        fn umount(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
            self.only_record(Call::Umount(self.show(&target.to_string_lossy()), flags))
        }

        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.only_record(Call::PivotRoot(
                self.show(&new_root.to_string_lossy()),
                self.show(&put_old.to_string_lossy()),
            ))
        }

        fn chroot(&self, path: &Path) -> io::Result<()> {
            self.only_record(Call::Chroot(self.show(&path.to_string_lossy())))
        }

        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.only_record(Call::Chdir(self.show(&path.to_string_lossy())))
        }

        fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
            let call = Call::Mkdir(self.show(&path.to_string_lossy()), mode);
            self.record(call, Some(path), |p| std::fs::create_dir(p))
        }

        fn mkdir_all(&self, path: &Path) -> io::Result<()> {
            let call = Call::MkdirAll(self.show(&path.to_string_lossy()));
            self.record(call, Some(path), |p| std::fs::create_dir_all(p))
        }

        fn create_file(&self, path: &Path, mode: u32, exclusive: bool) -> io::Result<()> {
            let call = Call::CreateFile(self.show(&path.to_string_lossy()), mode, exclusive);
            self.record(call, Some(path), |p| {
                super::LinuxSys.create_file(p, mode, exclusive)
            })
        }

        fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
            let call = Call::Symlink(target.to_string(), self.show(&link.to_string_lossy()));
            self.record(call, Some(link), |p| std::os::unix::fs::symlink(target, p))
        }

        fn mknod_char(&self, path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
            let shown = self.show(&path.to_string_lossy());
            self.only_record(Call::MknodChar(shown, mode, major, minor))
        }

        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.only_record(Call::Rmdir(self.show(&path.to_string_lossy())))
        }

        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.only_record(Call::Sethostname(name.to_string()))
        }
    }
}
