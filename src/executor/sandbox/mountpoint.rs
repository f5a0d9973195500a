//! Mount points in a step's root: [`RootBuilder`] resolves a target inside
//! the root as if the root were `/` (a link in the image cannot point a
//! mount at the host), creates what is missing, records each creation as
//! a [`Stub`] for the caller to remove after the step, and mounts there.
//! Every root file system, `/dev`, the kernel file systems and the step's
//! `--mount`s go through it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use super::spec::Stub;
use super::sys::{mount_with, SetupError, Sys};

/// `rel` inside the root as an `O_PATH` handle (links resolve as if the
/// root were `/`): what mounting and stat need.
pub(super) fn open_in_root(root: &OwnedFd, rel: &str) -> Result<OwnedFd, Errno> {
    crate::openat::in_root(root, rel, OFlags::PATH)
}

/// Access and modification times of `stat` as (seconds, nanoseconds).
// The field types differ between architectures; the casts are no-ops here.
#[allow(clippy::unnecessary_cast)]
pub(super) fn stat_times(stat: &rfs::Stat) -> [(i64, i64); 2] {
    [
        (stat.st_atime as i64, stat.st_atime_nsec as i64),
        (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
    ]
}

/// The path naming what `fd` holds: the setup mounts on and creates in
/// what it opened, never on a path the image could swap meanwhile.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Writes the stubs as JSON where the caller reads them after the step.
pub(super) fn write_stub_report(report: &Path, stubs: &[Stub]) -> Result<(), SetupError> {
    let json = serde_json::to_vec(stubs).map_err(|e| SetupError::sys("encode stub report", e))?;
    std::fs::write(report, json).map_err(|e| SetupError::sys("write stub report", e))
}

/// The root being assembled: the calls it makes, its fd, host path, and
/// the stubs created.
pub(super) struct RootBuilder<'s> {
    pub(super) sys: &'s dyn Sys,
    pub(super) fd: OwnedFd,
    pub(super) host_path: PathBuf,
    pub(super) stubs: Vec<Stub>,
}

impl<'s> RootBuilder<'s> {
    pub(super) fn new(sys: &'s dyn Sys, path: &Path) -> Result<RootBuilder<'s>, SetupError> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SetupError::sys(format!("open root {}", path.display()), e))?;
        Ok(RootBuilder {
            sys,
            fd,
            host_path: path.to_path_buf(),
            stubs: Vec::new(),
        })
    }

    /// Opens `target` inside the root, creating what is missing (recorded
    /// as stubs). `dir` says what the last component must be.
    pub(super) fn ensure(&mut self, target: &str, dir: bool) -> Result<OwnedFd, SetupError> {
        let parts: Vec<&str> = target
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(SetupError::refused(format!(
                "mount target {target} contains .."
            )));
        }
        for depth in 1..=parts.len() {
            let prefix = parts[..depth].join("/");
            match open_in_root(&self.fd, &prefix) {
                Ok(fd) if depth == parts.len() => return Ok(fd),
                Ok(_) => continue,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(SetupError::sys(format!("resolve {target} in the root"), e)),
            }
            let make_dir = dir || depth < parts.len();
            self.create(target, &parts[..depth], make_dir)?;
            if depth == parts.len() {
                return open_in_root(&self.fd, &prefix)
                    .map_err(|e| SetupError::sys(format!("open created {target}"), e));
            }
        }
        open_in_root(&self.fd, "").map_err(|e| SetupError::sys("open root", e))
    }

    /// Creates the last of `parts` (a directory or an empty file) in its
    /// existing parent and records it as a stub, named by where the
    /// parent really is.
    fn create(&mut self, target: &str, parts: &[&str], make_dir: bool) -> Result<(), SetupError> {
        let parent = open_in_root(&self.fd, &parts[..parts.len() - 1].join("/"))
            .map_err(|e| SetupError::sys(format!("resolve parent of {target}"), e))?;
        let stat = rfs::fstat(&parent)
            .map_err(|e| SetupError::sys(format!("stat parent of {target}"), e))?;
        // Where the parent really is (symlinks resolved), relative to the root.
        let real = std::fs::read_link(fd_path(&parent))
            .map_err(|e| SetupError::sys(format!("locate parent of {target}"), e))?;
        let real_rel = real
            .strip_prefix(&self.host_path)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let name = parts[parts.len() - 1];
        let parent_dir = rfs::openat(
            &self.fd,
            fd_path(&parent),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SetupError::sys(format!("open parent of {target}"), e))?;
        // One component through the opened parent: what mkdirat and
        // openat on it would make.
        let at = Path::new(&fd_path(&parent_dir)).join(name);
        let made = if make_dir {
            self.sys.mkdir(&at, 0o755)
        } else {
            self.sys.create_file(&at, 0o644, true)
        };
        made.map_err(|e| SetupError::sys(format!("create mount point {target}"), e))?;
        self.stubs.push(Stub {
            path: real_rel.join(name).to_string_lossy().into_owned(),
            dir: make_dir,
            mount: false,
            parent_times: stat_times(&stat),
        });
        Ok(())
    }

    /// The stubs made so far as (path, is a dir, is a mount's own
    /// point): what the tests compare.
    #[cfg(test)]
    pub(super) fn stub_list(&self) -> Vec<(&str, bool, bool)> {
        self.stubs
            .iter()
            .map(|s| (s.path.as_str(), s.dir, s.mount))
            .collect()
    }

    /// Mounts `source` on `target` inside the root.
    pub(super) fn mount_on(
        &mut self,
        source: &str,
        target: &str,
        dir: bool,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> Result<(), SetupError> {
        let fd = self.ensure(target, dir)?;
        mount_with(
            self.sys,
            source,
            Path::new(&fd_path(&fd)),
            fstype,
            flags,
            data,
        )
        .map_err(|e| e.during(format!("at {target}")))?;
        let per_mount = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;
        if flags & libc::MS_BIND != 0 && flags & per_mount != 0 {
            // A bind mount ignores these flags until it is remounted.
            let fd = open_in_root(&self.fd, target)
                .map_err(|e| SetupError::sys(format!("open {target}"), e))?;
            mount_with(
                self.sys,
                "",
                Path::new(&fd_path(&fd)),
                "",
                libc::MS_BIND | libc::MS_REMOUNT | flags,
                "",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::sandbox::sys::{scratch_root, Call, RecordingSys};

    #[test]
    fn missing_parts_of_a_target_are_made_once_and_recorded_as_stubs() {
        let (scratch, root) = scratch_root();
        std::fs::create_dir(root.join("etc")).unwrap();
        let sys = RecordingSys::new(scratch.path());
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        builder.ensure("/etc/ssl/certs/ca.pem", false).unwrap();
        builder.ensure("etc/ssl/./certs/ca.pem", false).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Mkdir("T/root/etc/ssl".into(), 0o755),
                Call::Mkdir("T/root/etc/ssl/certs".into(), 0o755),
                // The mount point of a file must be new (O_EXCL).
                Call::CreateFile("T/root/etc/ssl/certs/ca.pem".into(), 0o644, true),
            ]
        );
        assert_eq!(
            builder.stub_list(),
            [
                ("etc/ssl", true, false),
                ("etc/ssl/certs", true, false),
                ("etc/ssl/certs/ca.pem", false, false)
            ]
        );
    }

    #[test]
    fn a_target_through_a_link_is_made_where_the_link_points_inside_the_root() {
        let (scratch, root) = scratch_root();
        std::fs::create_dir(root.join("real")).unwrap();
        // Absolute, as images have them: it must resolve in the root.
        std::os::unix::fs::symlink("/real", root.join("link")).unwrap();
        let sys = RecordingSys::new(scratch.path());
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        builder
            .mount_on("tmpfs", "/link/x", true, "tmpfs", 0, "")
            .unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Mkdir("T/root/real/x".into(), 0o755),
                Call::Mount {
                    source: "tmpfs".into(),
                    target: "T/root/real/x".into(),
                    fstype: "tmpfs".into(),
                    flags: 0,
                    data: String::new(),
                },
            ]
        );
        assert_eq!(builder.stubs[0].path, "real/x");
    }

    #[test]
    fn a_target_climbing_out_with_dotdot_is_refused_before_any_call() {
        let (scratch, root) = scratch_root();
        let sys = RecordingSys::new(scratch.path());
        let mut builder = RootBuilder::new(&sys, &root).unwrap();
        let err = builder
            .mount_on("tmpfs", "/tmp/../../etc", true, "tmpfs", 0, "")
            .unwrap_err();
        assert!(matches!(err, SetupError::Refused(_)), "{err:?}");
        assert_eq!(err.to_string(), "mount target /tmp/../../etc contains ..");
        assert!(sys.calls().is_empty());
    }
}
