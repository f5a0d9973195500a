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
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a sandboxed step runs, and where.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The root file system (a writable directory).
    pub rootfs: PathBuf,
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

fn mount(
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

/// Builds the root: private mounts, /proc, /dev, /sys, then pivot_root.
fn enter_root(spec: &SandboxSpec) -> Result<(), String> {
    let root = &spec.rootfs;
    mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    // The rootfs must be a mount point for pivot_root.
    mount(
        &root.to_string_lossy(),
        root,
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    for dir in ["proc", "dev", "sys", "tmp"] {
        let _ = std::fs::create_dir_all(root.join(dir));
    }
    mount(
        "proc",
        &root.join("proc"),
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    let dev = root.join("dev");
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        std::fs::write(&target, b"").map_err(|e| format!("create /dev/{node}: {e}"))?;
        mount(&format!("/dev/{node}"), &target, "", libc::MS_BIND, "")?;
    }
    std::fs::create_dir_all(dev.join("pts")).map_err(|e| e.to_string())?;
    mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dev.join("shm")).map_err(|e| e.to_string())?;
    mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777,size=65536k",
    )?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| e.to_string())?;
    }
    // The host's /sys, read-only (a fresh sysfs needs a network namespace of our own).
    mount(
        "/sys",
        &root.join("sys"),
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    mount(
        "",
        &root.join("sys"),
        "",
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "",
    )?;

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
        std::env::set_current_dir(root).map_err(|e| e.to_string())?;
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
fn exec_command(spec: &SandboxSpec) -> String {
    if let Err(e) =
        std::fs::create_dir_all(&spec.cwd).and_then(|_| std::env::set_current_dir(&spec.cwd))
    {
        return format!("working directory {}: {e}", spec.cwd);
    }
    let groups: Vec<libc::gid_t> = spec.groups.clone();
    // SAFETY: identity syscalls with plain integers and an owned slice.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(spec.gid) != 0
            || libc::setuid(spec.uid) != 0
        {
            return format!(
                "switching to {}:{}: {}",
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

/// PID 1 of the sandbox: set up the root, run the command, reap, exit.
fn init(spec: &SandboxSpec) -> i32 {
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
    match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            let message = exec_command(spec);
            eprintln!("rbuild sandbox: {message}");
            // SAFETY: exit without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        pid => wait_for(pid),
    }
}

/// Entry point of the hidden helper subcommand: reads the spec from stdin,
/// creates the namespaces and returns the command's exit code.
pub fn helper_main() -> i32 {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("rbuild sandbox: reading the spec: {e}");
        return SETUP_FAILED;
    }
    let spec: SandboxSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rbuild sandbox: invalid spec: {e}");
            return SETUP_FAILED;
        }
    };
    if spec.args.is_empty() {
        eprintln!("rbuild sandbox: no command");
        return SETUP_FAILED;
    }
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
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
            let code = init(&spec);
            // SAFETY: leave without unwinding into the parent's state.
            unsafe { libc::_exit(code) }
        }
        pid => wait_for(pid),
    }
}
