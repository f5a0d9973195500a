//! The sandbox helper: the single-threaded process that builds a RUN's
//! namespaces, mounts and root, then runs the command.
//!
//! `rbuild` re-executes itself with a hidden subcommand and the spec as JSON
//! on stdin (DESIGN: never `unshare` from the multithreaded tokio process).
//! The helper unshares mount, pid, uts and ipc (and net for
//! `--network=none`) namespaces and forks; the child is PID 1 of the new pid
//! namespace: it makes the mount tree private, mounts a fresh `/proc`, a
//! minimal `/dev` and a read-only `/sys`, pivots into the rootfs, and forks
//! the command as PID 2, reaping every orphan until it exits. When PID 1
//! exits, the kernel kills whatever the step left behind.

use std::ffi::CString;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::confine::{self, Posture, Security};

mod kernelfs;
mod remap;

pub(crate) use remap::probe as probe_remap;
pub use remap::{IdRange, Remap};

/// Which namespaces a step gets (the tier, as far as the helper cares).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    /// Mount, pid, uts, ipc (and net with `--network=none`): a fresh /proc.
    #[default]
    Full,
    /// As full without a pid namespace: /proc is the existing one, read-only,
    /// and leftovers are found by their mount namespace.
    NoPidns,
    /// No namespaces at all: chroot into the root (opt-in, for containers
    /// whose seccomp profile forbids unshare).
    Chroot,
}

/// The root a step runs in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RootFs {
    /// A writable directory used as it is.
    Dir(PathBuf),
    /// An overlay mount made inside the sandbox's mount namespace. Lower,
    /// upper and work dirs are relative to `base` (short names keep long
    /// chains under the one-page mount option limit); lowers are top first.
    Overlay {
        /// Dir the relative names are resolved from.
        base: PathBuf,
        /// Lower dirs, top first.
        lowers: Vec<String>,
        /// Upper dir.
        upper: String,
        /// Work dir.
        work: String,
        /// Mount point.
        merged: PathBuf,
    },
}

impl RootFs {
    /// Where the root appears on the host side before pivoting.
    pub fn path(&self) -> &Path {
        match self {
            RootFs::Dir(p) => p,
            RootFs::Overlay { merged, .. } => merged,
        }
    }
}

/// A mount inside the step (RUN --mount, /etc/hosts, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountSpec {
    /// Absolute path inside the root.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// The kinds of mounts a step can get.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host file or directory.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mounted read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Size limit in bytes.
        size: Option<u64>,
    },
    /// Another stage's root, read-only: an overlay of its snapshot lower
    /// dirs (named relative to `base`, top first) made at `staging`, of
    /// which `subpath` is bound at the target (`RUN --mount from=stage`).
    StageRoot {
        /// Dir the lower dir names are relative to.
        base: PathBuf,
        /// Lower dirs, top first (at least two: the store's empty dir last).
        lowers: Vec<String>,
        /// An empty host dir to mount the overlay on first.
        staging: PathBuf,
        /// The part of the stage's root to mount (`source=`), relative.
        subpath: String,
    },
}

/// A path the sandbox created in the root only to mount something on it.
/// After the step the caller removes what is still empty of the stubs made
/// for `--mount` targets (files and directories, deepest first, as today's
/// BuildKit's `MountStubsCleaner` does) and the file stubs of the kernel
/// file systems; their directories (`/proc`, `/sys`, `/dev`) stay, as the
/// mount points runc makes stay in BuildKit's layers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stub {
    /// Path relative to the root.
    pub path: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Made for a `--mount` target (not a kernel file system).
    #[serde(default)]
    pub mount: bool,
    /// The parent's access and modification times before, as
    /// (seconds, nanoseconds) pairs, to restore after removal.
    pub parent_times: [(i64, i64); 2],
}

/// What a sandboxed step runs, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The root file system.
    pub root: RootFs,
    /// argv; `args[0]` is looked up in the rootfs's `PATH` when not absolute.
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the rootfs (created if missing).
    pub cwd: String,
    /// User id to run as.
    pub uid: u32,
    /// Group id to run as.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// A private network namespace with only `lo` (`--network=none`).
    pub network_none: bool,
    /// Which namespaces to create.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Create a user namespace mapping the caller to root (rootless).
    #[serde(default)]
    pub userns: bool,
    /// Mounts inside the root, in order.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// `cgroup.procs` files the helper joins before anything else.
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// Where the helper writes the [`Stub`]s it created (JSON).
    #[serde(default)]
    pub stub_report: Option<PathBuf>,
    /// A COPY to do in the root instead of running `args`.
    #[serde(default)]
    pub copy: Option<super::copy::CopySpec>,
    /// The step's confinement (`RUN --security`).
    #[serde(default)]
    pub security: Security,
    /// Where rbuild is real root: run the step's ids as this unprivileged
    /// host range through a user namespace and idmapped mounts.
    #[serde(default)]
    pub remap: Option<Remap>,
}

impl SandboxSpec {
    /// Whether the step's mounts are made inside a user namespace (rootless
    /// or remapped): overlay then uses `userxattr`.
    pub fn in_userns(&self) -> bool {
        self.userns || self.remap.is_some()
    }
}

/// Exit code the helper uses for its own setup failures.
pub const SETUP_FAILED: i32 = 125;

fn cstr(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn check(what: &str, rc: libc::c_int) -> Result<(), String> {
    if rc < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

pub(crate) fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    let (s, t, f, d) = (
        cstr(source),
        cstr(&target.to_string_lossy()),
        cstr(fstype),
        cstr(data),
    );
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
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
    };
    check(&format!("mount {source} on {}", target.display()), rc)
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
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

/// Brings `lo` up in the current network namespace.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check("socket", fd)?;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            libc::close(fd);
            return check("bring lo up", rc);
        }
        libc::close(fd);
        check("read lo flags", rc)
    }
}

/// `rel` inside the root as an `O_PATH` handle (links resolve as if the
/// root were `/`): what mounting and stat need.
fn open_in_root(root: &OwnedFd, rel: &str) -> Result<OwnedFd, Errno> {
    crate::openat::in_root(root, rel, OFlags::PATH)
}

/// Access and modification times of `stat` as (seconds, nanoseconds).
// The field types differ between architectures; the casts are no-ops here.
#[allow(clippy::unnecessary_cast)]
fn stat_times(stat: &rfs::Stat) -> [(i64, i64); 2] {
    [
        (stat.st_atime as i64, stat.st_atime_nsec as i64),
        (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
    ]
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The root being assembled: its fd, host path, and the stubs created.
struct RootBuilder {
    fd: OwnedFd,
    host_path: PathBuf,
    stubs: Vec<Stub>,
}

impl RootBuilder {
    fn new(path: &Path) -> Result<RootBuilder, String> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open root {}: {e}", path.display()))?;
        Ok(RootBuilder {
            fd,
            host_path: path.to_path_buf(),
            stubs: Vec::new(),
        })
    }

    /// Opens `target` inside the root, creating what is missing (recorded
    /// as stubs). `dir` says what the last component must be.
    fn ensure(&mut self, target: &str, dir: bool) -> Result<OwnedFd, String> {
        let parts: Vec<&str> = target
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(format!("mount target {target} contains .."));
        }
        for depth in 1..=parts.len() {
            let prefix = parts[..depth].join("/");
            match open_in_root(&self.fd, &prefix) {
                Ok(fd) if depth == parts.len() => return Ok(fd),
                Ok(_) => continue,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(format!("resolve {target} in the root: {e}")),
            }
            let parent = open_in_root(&self.fd, &parts[..depth - 1].join("/"))
                .map_err(|e| format!("resolve parent of {target}: {e}"))?;
            let stat = rfs::fstat(&parent).map_err(|e| format!("stat parent of {target}: {e}"))?;
            // Where the parent really is (symlinks resolved), relative to the root.
            let real = std::fs::read_link(fd_path(&parent))
                .map_err(|e| format!("locate parent of {target}: {e}"))?;
            let real_rel = real
                .strip_prefix(&self.host_path)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let name = parts[depth - 1];
            let parent_dir = rfs::openat(
                &self.fd,
                fd_path(&parent),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| format!("open parent of {target}: {e}"))?;
            let make_dir = dir || depth < parts.len();
            let made = if make_dir {
                rfs::mkdirat(&parent_dir, name, Mode::from_raw_mode(0o755))
            } else {
                rfs::openat(
                    &parent_dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            };
            made.map_err(|e| format!("create mount point {target}: {e}"))?;
            self.stubs.push(Stub {
                path: real_rel.join(name).to_string_lossy().into_owned(),
                dir: make_dir,
                mount: false,
                parent_times: stat_times(&stat),
            });
            if depth == parts.len() {
                return open_in_root(&self.fd, &prefix)
                    .map_err(|e| format!("open created {target}: {e}"));
            }
        }
        open_in_root(&self.fd, "").map_err(|e| format!("open root: {e}"))
    }

    /// Mounts `source` on `target` inside the root.
    fn mount_on(
        &mut self,
        source: &str,
        target: &str,
        dir: bool,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> Result<(), String> {
        let fd = self.ensure(target, dir)?;
        mount(source, Path::new(&fd_path(&fd)), fstype, flags, data)
            .map_err(|e| format!("{e} (at {target})"))?;
        let per_mount = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID | libc::MS_NOEXEC;
        if flags & libc::MS_BIND != 0 && flags & per_mount != 0 {
            // A bind mount ignores these flags until it is remounted.
            let fd = open_in_root(&self.fd, target).map_err(|e| e.to_string())?;
            mount(
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

fn mount_overlay(
    base: &Path,
    lowers: &[String],
    upper: &str,
    work: &str,
    merged: &Path,
    userns: bool,
    flags: libc::c_ulong,
) -> Result<(), String> {
    std::env::set_current_dir(base).map_err(|e| format!("enter {}: {e}", base.display()))?;
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
    mount("overlay", merged, "overlay", flags, &data)
}

/// Builds the root: private mounts, overlay, /proc, /dev, /sys, the
/// step's mounts, then pivot_root.
fn enter_root(spec: &SandboxSpec) -> Result<(), String> {
    mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    // Whatever the step can write is nodev: device nodes it makes there
    // (a block device of the host's disk, say) cannot be opened.
    let writable = match spec.security {
        Security::Sandbox => libc::MS_NODEV,
        Security::Insecure => 0,
    };
    let root = spec.root.path().to_path_buf();
    if let RootFs::Overlay {
        base,
        lowers,
        upper,
        work,
        ..
    } = &spec.root
    {
        mount_overlay(base, lowers, upper, work, &root, spec.in_userns(), writable)?;
    } else {
        // The rootfs must be a mount point for pivot_root.
        mount(
            &root.to_string_lossy(),
            &root,
            "",
            libc::MS_BIND | libc::MS_REC,
            "",
        )?;
        if writable != 0 {
            mount(
                "",
                &root,
                "",
                libc::MS_BIND | libc::MS_REMOUNT | writable,
                "",
            )?;
        }
    }
    let mut builder = RootBuilder::new(&root)?;
    kernelfs::mount_kernel_filesystems(&mut builder, spec)?;
    let kernel_stubs = builder.stubs.len();
    for m in &spec.mounts {
        match &m.kind {
            MountKind::Bind { source, readonly } => {
                let is_dir = source.is_dir();
                let mut flags = libc::MS_BIND | libc::MS_REC | writable;
                if *readonly {
                    flags |= libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
                }
                builder.mount_on(&source.to_string_lossy(), &m.target, is_dir, "", flags, "")?;
            }
            MountKind::StageRoot {
                base,
                lowers,
                staging,
                subpath,
            } => {
                std::env::set_current_dir(base)
                    .map_err(|e| format!("enter {}: {e}", base.display()))?;
                let mut data = format!("lowerdir={}", lowers.join(":"));
                if spec.in_userns() {
                    data.push_str(",userxattr");
                }
                mount("overlay", staging, "overlay", libc::MS_RDONLY, &data)?;
                // The part asked for, resolved inside the stage's root.
                let stage_root = RootBuilder::new(staging)?;
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
                    libc::MS_BIND
                        | libc::MS_REC
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV,
                    "",
                )?;
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
                )?;
            }
        }
    }
    for stub in &mut builder.stubs[kernel_stubs..] {
        stub.mount = true;
    }
    if let Some(report) = &spec.stub_report {
        let json = serde_json::to_vec(&builder.stubs).map_err(|e| e.to_string())?;
        std::fs::write(report, json).map_err(|e| format!("write stub report: {e}"))?;
    }
    drop(builder);

    let old = root.join(".rbuild-oldroot");
    std::fs::create_dir_all(&old).map_err(|e| format!("create pivot dir: {e}"))?;
    let (new_c, old_c) = (cstr(&root.to_string_lossy()), cstr(&old.to_string_lossy()));
    // SAFETY: syscall with valid path pointers.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) }
        as libc::c_int;
    if rc == 0 {
        std::env::set_current_dir("/").map_err(|e| e.to_string())?;
        let old_in_root = cstr("/.rbuild-oldroot");
        // SAFETY: valid path.
        check("detach old root", unsafe {
            libc::umount2(old_in_root.as_ptr(), libc::MNT_DETACH)
        })?;
        let _ = std::fs::remove_dir("/.rbuild-oldroot");
    } else {
        // pivot_root is refused on some roots (e.g. a ramfs /): move + chroot.
        let _ = std::fs::remove_dir(&old);
        std::env::set_current_dir(&root).map_err(|e| e.to_string())?;
        mount(".", Path::new("/"), "", libc::MS_MOVE, "")?;
        let dot = cstr(".");
        // SAFETY: valid path.
        check("chroot", unsafe { libc::chroot(dot.as_ptr()) })?;
        std::env::set_current_dir("/").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Finds `name` on `PATH` from `env` (inside the new root).
fn resolve_program(name: &str, env: &[String]) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| format!("{dir}/{name}"))
        .find(|candidate| Path::new(candidate).is_file())
        .unwrap_or_else(|| name.to_string())
}

/// Sets the identity and execs the command; returns only on failure.
fn exec_command(spec: &SandboxSpec, posture: &Posture) -> String {
    // Rust ignores SIGPIPE and an ignored signal survives exec: restore
    // the defaults and an empty mask, so `yes | head` ends as it does in
    // docker (by SIGPIPE, silently).
    // SAFETY: plain signal-state syscalls in the child before exec.
    unsafe {
        for signal in [libc::SIGPIPE, libc::SIGXFSZ, libc::SIGINT, libc::SIGQUIT] {
            libc::signal(signal, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    if let Err(e) =
        std::fs::create_dir_all(&spec.cwd).and_then(|_| std::env::set_current_dir(&spec.cwd))
    {
        return format!("working directory {}: {e}", spec.cwd);
    }
    if let Err(e) = posture.apply() {
        return e;
    }
    let groups: Vec<libc::gid_t> = spec.groups.clone();
    // SAFETY: identity syscalls with plain integers and an owned slice.
    unsafe {
        // In a rootless user namespace setgroups is denied (that is what
        // lets an unprivileged caller write its gid map).
        if (!spec.userns || !groups.is_empty())
            && libc::setgroups(groups.len(), groups.as_ptr()) != 0
        {
            return format!(
                "setting supplementary groups {groups:?}: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::setgid(spec.gid) != 0 || libc::setuid(spec.uid) != 0 {
            let hint = if spec.userns {
                " (a rootless build maps only root; other users need subordinate ids)"
            } else {
                ""
            };
            return format!(
                "switching to {}:{}: {}{hint}",
                spec.uid,
                spec.gid,
                std::io::Error::last_os_error()
            );
        }
    }
    let program = cstr(&resolve_program(&spec.args[0], &spec.env));
    let argv: Vec<CString> = spec.args.iter().map(|a| cstr(a)).collect();
    let envp: Vec<CString> = spec.env.iter().map(|e| cstr(e)).collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings.
    unsafe { libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    format!("exec {}: {}", spec.args[0], std::io::Error::last_os_error())
}

/// Waits for `pid`, reaping every other child meanwhile; returns its
/// status as an exit code (128 + signal for a killed process).
fn wait_for(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on any child with a valid status pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return SETUP_FAILED;
        }
        if got == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        }
    }
}

/// Waits for `pid` while watching the lifeline (stdin): the caller keeps
/// that pipe open for as long as it wants the step, so end-of-file means
/// it died or gave up, and then `kill` ends the step at once.
fn wait_with_lifeline(pid: libc::pid_t, kill: &dyn Fn()) -> i32 {
    // SAFETY: pidfd_open with a pid we forked; -1 on old kernels.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if pidfd < 0 {
        return wait_for(pid);
    }
    let mut watching = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if watching { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polling two pollfds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if fds[0].revents != 0 {
            break;
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 64];
            // SAFETY: reading into a local buffer.
            let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                watching = false;
                kill();
            }
        }
    }
    // SAFETY: closing our pidfd.
    unsafe { libc::close(pidfd) };
    wait_for(pid)
}

/// Points stdin at /dev/null: RUN steps read nothing (as in docker), and
/// they must not hold the caller's lifeline pipe.
fn stdin_from_dev_null() {
    let null = cstr("/dev/null");
    // SAFETY: open and dup2 with valid arguments.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::close(fd);
        }
    }
}

/// Kills every other process in this mount namespace (the nopidns tier's
/// substitute for a pid namespace dying with its PID 1).
fn kill_mount_namespace_peers() {
    let Ok(own) = std::fs::metadata("/proc/self/ns/mnt") else {
        return;
    };
    let me = std::process::id();
    // Our parent, the helper, shares this mount namespace and waits for us.
    // SAFETY: plain getter.
    let parent = unsafe { libc::getppid() } as u32;
    for _ in 0..100 {
        let mut found = false;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || pid == parent {
                continue;
            }
            let same = std::fs::metadata(entry.path().join("ns/mnt"))
                .is_ok_and(|m| m.ino() == own.ino() && m.dev() == own.dev());
            if same {
                found = true;
                // SAFETY: signalling a pid in our own mount namespace.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        // Reap what we killed (they may be our children).
        // SAFETY: non-blocking waitpid with a null status pointer.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The sandbox's init (PID 1 with a pid namespace): set up the root, run
/// the command, reap, exit.
fn init(spec: &SandboxSpec, posture: &Posture) -> i32 {
    stdin_from_dev_null();
    let hostname = cstr(&spec.hostname);
    // SAFETY: valid buffer and length.
    unsafe { libc::sethostname(hostname.as_ptr(), spec.hostname.len()) };
    if spec.network_none {
        if let Err(e) = loopback_up() {
            eprintln!("rbuild sandbox: {e}");
            return SETUP_FAILED;
        }
    }
    if let Err(e) = enter_root(spec) {
        eprintln!("rbuild sandbox: {e}");
        return SETUP_FAILED;
    }
    // SAFETY: fork in a single-threaded process.
    let code = match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            let message = exec_command(spec, posture);
            eprintln!("rbuild sandbox: {message}");
            // SAFETY: exit without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        pid => wait_for(pid),
    };
    if spec.namespaces == Namespaces::NoPidns {
        kill_mount_namespace_peers();
    }
    code
}

/// The chroot tier: no namespaces; the command runs in its own session
/// chrooted into the root, and its process group is killed afterwards.
fn run_chroot(spec: &SandboxSpec, posture: &Posture) -> i32 {
    let RootFs::Dir(root) = &spec.root else {
        eprintln!("rbuild sandbox: the chroot tier needs a directory root, not overlay");
        return SETUP_FAILED;
    };
    if !spec.mounts.is_empty() {
        eprintln!(
            "rbuild sandbox: the chroot tier cannot mount (RUN --mount needs a namespace tier)"
        );
        return SETUP_FAILED;
    }
    if spec.network_none {
        eprintln!("rbuild sandbox: the chroot tier shares the network (--network=none needs a namespace tier)");
        return SETUP_FAILED;
    }
    // No mounts here, so /dev gets real nodes where CAP_MKNOD allows;
    // they are stubs, removed after the step like mount points.
    if let Ok(mut builder) = RootBuilder::new(root) {
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
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
            if rfs::mknodat(
                &dev,
                name,
                rfs::FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rfs::makedev(major, minor),
            )
            .is_ok()
            {
                builder.stubs.push(Stub {
                    path: format!("dev/{name}"),
                    dir: false,
                    mount: false,
                    parent_times: stat_times(&before),
                });
            }
        }
        if let Some(report) = &spec.stub_report {
            if let Ok(json) = serde_json::to_vec(&builder.stubs) {
                let _ = std::fs::write(report, json);
            }
        }
    }
    // SAFETY: fork in a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            stdin_from_dev_null();
            let path = cstr(&root.to_string_lossy());
            // SAFETY: plain syscalls in the child before exec.
            let rc = unsafe {
                libc::setsid();
                libc::chroot(path.as_ptr())
            };
            if rc != 0 {
                eprintln!(
                    "rbuild sandbox: chroot {}: {}",
                    root.display(),
                    std::io::Error::last_os_error()
                );
                // SAFETY: leave the child.
                unsafe { libc::_exit(SETUP_FAILED) }
            }
            let _ = std::env::set_current_dir("/");
            let message = exec_command(spec, posture);
            eprintln!("rbuild sandbox: {message}");
            // SAFETY: leave the child.
            unsafe { libc::_exit(127) }
        }
        pid => {
            // SAFETY (both closures): signalling the step's process group.
            let code = wait_with_lifeline(pid, &|| unsafe {
                libc::kill(-pid, libc::SIGKILL);
            });
            // SAFETY: kill the step's process group (its session leader's pid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            code
        }
    }
}

/// Maps the caller's uid and gid to root in a new user namespace.
pub(crate) fn enter_user_namespace() -> Result<(), String> {
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: unshare in this single-threaded helper.
    check("unshare(CLONE_NEWUSER)", unsafe {
        libc::unshare(libc::CLONE_NEWUSER)
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| format!("write {file}: {e}"))
    };
    write("/proc/self/setgroups", "deny".to_string())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// A COPY: in a mount namespace of its own (through a user namespace when
/// rootless), the root's overlay and the source stage's overlay are
/// mounted, then the files are copied. No process of the image runs.
fn copy_in_root(spec: &SandboxSpec, copy: &super::copy::CopySpec) -> Result<(), String> {
    if spec.namespaces != Namespaces::Chroot {
        if spec.userns {
            enter_user_namespace()?;
        }
        // SAFETY: unshare in this single-threaded helper.
        check("unshare(CLONE_NEWNS)", unsafe {
            libc::unshare(libc::CLONE_NEWNS)
        })?;
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        if let RootFs::Overlay {
            base,
            lowers,
            upper,
            work,
            merged,
        } = &spec.root
        {
            mount_overlay(base, lowers, upper, work, merged, spec.userns, 0)?;
        }
        if let Some((base, lowers)) = &copy.source_lowers {
            std::env::set_current_dir(base)
                .map_err(|e| format!("enter {}: {e}", base.display()))?;
            let mut data = format!("lowerdir={}", lowers.join(":"));
            if spec.userns {
                data.push_str(",userxattr");
            }
            mount(
                "overlay",
                &copy.source_root,
                "overlay",
                libc::MS_RDONLY,
                &data,
            )?;
        }
    } else if matches!(spec.root, RootFs::Overlay { .. }) || copy.source_lowers.is_some() {
        return Err("the chroot tier cannot mount overlays".to_string());
    }
    super::copy::run(copy, spec.root.path())
}

/// Enters the remapped user namespace with the spec pointed at idmapped
/// clones of its root and mounts.
fn enter_remapped(spec: &mut SandboxSpec, remap: &Remap) -> Result<(), String> {
    let shifts = remap::shift_spec(spec, &remap.staging)?;
    // Written from inside by the namespace's root.
    let owned: Vec<PathBuf> = spec.stub_report.iter().cloned().collect();
    let owned: Vec<&Path> = owned.iter().map(PathBuf::as_path).collect();
    remap::enter(remap.range, &remap.staging, &shifts, &owned).map_err(|e| {
        format!("{e} (remapping the step's ids; --userns-remap=off runs it as host root)")
    })
}

/// The step's confinement. Without a pid namespace the step could reach
/// rbuild and this helper by pid: they and their process groups are
/// guarded.
fn posture_for(spec: &SandboxSpec) -> Posture {
    // SAFETY: plain id getters.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    // SAFETY: plain getters on our own pid and our parent's.
    let mut protected = unsafe { vec![me, parent, libc::getpgid(0), libc::getpgid(parent)] };
    protected.retain(|p| *p > 0);
    protected.sort_unstable();
    protected.dedup();
    Posture::new(
        spec.security,
        spec.namespaces == Namespaces::Chroot,
        spec.namespaces == Namespaces::Full,
        protected,
    )
}

/// Entry point of the hidden helper subcommand: reads the spec from stdin,
/// creates the namespaces and returns the command's exit code.
pub fn helper_main() -> i32 {
    // One line of JSON; the pipe then stays open as the caller's lifeline.
    let mut text = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut text) {
        eprintln!("rbuild sandbox: reading the spec: {e}");
        return SETUP_FAILED;
    }
    let mut spec: SandboxSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rbuild sandbox: invalid spec: {e}");
            return SETUP_FAILED;
        }
    };
    if let Some(copy) = &spec.copy {
        return match copy_in_root(&spec, copy) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        };
    }
    if spec.args.is_empty() {
        eprintln!("rbuild sandbox: no command");
        return SETUP_FAILED;
    }
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            eprintln!("rbuild sandbox: joining cgroup {}: {e}", procs.display());
            return SETUP_FAILED;
        }
    }
    let posture = posture_for(&spec);
    if spec.namespaces == Namespaces::Chroot {
        confine::protect_self();
        return run_chroot(&spec, &posture);
    }
    let entered = match spec.remap.clone() {
        Some(remap) => enter_remapped(&mut spec, &remap),
        None if spec.userns => enter_user_namespace(),
        None => Ok(()),
    };
    if let Err(e) = entered {
        eprintln!("rbuild sandbox: {e}");
        return SETUP_FAILED;
    }
    // After the id maps are written (they are /proc/self files that a
    // non-dumpable process no longer owns).
    confine::protect_self();
    // A cgroup namespace rooted at the step's cgroup (joined above): the
    // step sees at most its own cgroup, never the host's hierarchy.
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP;
    if spec.namespaces == Namespaces::Full {
        flags |= libc::CLONE_NEWPID;
    }
    if spec.network_none {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare in this single-threaded helper.
    if let Err(e) = check("unshare", unsafe { libc::unshare(flags) }) {
        eprintln!("rbuild sandbox: {e} (needs root or a user namespace)");
        return SETUP_FAILED;
    }
    // SAFETY: fork in a single-threaded process; the child becomes PID 1.
    match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            let code = init(&spec, &posture);
            // SAFETY: leave without unwinding into the parent's state.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let nopidns = spec.namespaces == Namespaces::NoPidns;
            wait_with_lifeline(pid, &|| {
                // SAFETY: killing the sandbox's init (with a pid namespace,
                // the kernel then kills everything in it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                if nopidns {
                    kill_mount_namespace_peers();
                }
            })
        }
    }
}
