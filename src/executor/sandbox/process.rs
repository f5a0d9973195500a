//! The helper's processes: the namespaces it enters (a user namespace,
//! rootless or remapped; then mount, pid, uts, ipc, cgroup and maybe net),
//! the init that is PID 1 of the step's pid namespace, the command's exec
//! with its identity, and the waits, which reap every orphan and watch
//! the caller's lifeline (stdin). Also a COPY's helper, which enters its
//! namespaces, mounts and copies, running nothing of the image.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::netns;
use super::netstack;
use super::remap;
use super::rootfs::{enter_root, mount_overlay, mount_readonly_overlay};
use super::spec::{Namespaces, Network, Remap, RootFs, SandboxSpec, SETUP_FAILED};
use super::sys::{check, cstr, mount, LinuxSys, SetupError, Sys};
use crate::executor::confine::Posture;
use crate::executor::copy::{self, CopySpec};

/// Finds `name` on `PATH` from `env` (inside the new root).
pub(super) fn resolve_program(name: &str, env: &[String]) -> String {
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

/// Sets the identity and execs the command; returns only on failure, with
/// the exit code to leave with: the sandbox's own (125) when the step
/// could not be set up (its working directory, confinement, ids), 127 as
/// docker's when the command itself cannot be executed.
pub(super) fn exec_command(spec: &SandboxSpec, posture: &Posture) -> (i32, String) {
    match set_up_command(spec, posture) {
        Err(message) => (SETUP_FAILED, message),
        Ok(()) => (127, exec(spec)),
    }
}

/// Everything before `execve`: signals, working directory, posture, ids.
fn set_up_command(spec: &SandboxSpec, posture: &Posture) -> Result<(), String> {
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
        return Err(format!("working directory {}: {e}", spec.cwd));
    }
    posture.apply(&spec.filters).map_err(|e| e.to_string())?;
    let groups: Vec<libc::gid_t> = spec.groups.clone();
    // SAFETY: identity syscalls with plain integers and an owned slice.
    unsafe {
        // In a rootless user namespace setgroups is denied (that is what
        // lets an unprivileged caller write its gid map).
        if (!spec.userns || !groups.is_empty())
            && libc::setgroups(groups.len(), groups.as_ptr()) != 0
        {
            return Err(format!(
                "setting supplementary groups {groups:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::setgid(spec.gid) != 0 || libc::setuid(spec.uid) != 0 {
            let hint = if spec.userns {
                " (a rootless build maps only root; other users need subordinate ids: ranges in /etc/subuid and /etc/subgid, and newuidmap from the uidmap package)"
            } else {
                ""
            };
            return Err(format!(
                "switching to {}:{}: {}{hint}",
                spec.uid,
                spec.gid,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Execs the step's command; returns only on failure, saying why.
fn exec(spec: &SandboxSpec) -> String {
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
pub(super) fn wait_for(pid: libc::pid_t) -> i32 {
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
pub(super) fn wait_with_lifeline(pid: libc::pid_t, kill: &dyn Fn()) -> i32 {
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
pub(super) fn stdin_from_dev_null() {
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
pub(super) fn kill_mount_namespace_peers() {
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
fn init(spec: &SandboxSpec, posture: &Posture, net: &OwnNetwork) -> i32 {
    stdin_from_dev_null();
    let _ = LinuxSys.sethostname(&spec.hostname);
    if let OwnNetwork::Unshared(blocked) = net {
        if let Err(e) = netns::loopback_up().and_then(|()| netstack::block(blocked)) {
            eprintln!("rbuild sandbox: {e}");
            return SETUP_FAILED;
        }
    }
    if let Err(e) = enter_root(&LinuxSys, spec) {
        eprintln!("rbuild sandbox: {e}");
        return SETUP_FAILED;
    }
    // SAFETY: fork in a single-threaded process.
    let code = match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            let (code, message) = exec_command(spec, posture);
            eprintln!("rbuild sandbox: {message}");
            // SAFETY: exit without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => wait_for(pid),
    };
    if spec.namespaces == Namespaces::NoPidns {
        kill_mount_namespace_peers();
    }
    code
}

/// Makes the caller root of a new user namespace: with every id of its
/// own namespace when it is root holding CAP_SETUID and CAP_SETGID
/// ([`full_range`]), else with its own uid and gid alone.
pub(crate) fn enter_user_namespace() -> Result<(), SetupError> {
    match full_range() {
        Some(count) => remap::enter_identity(count),
        None => enter_as_only_root(),
    }
}

/// How many ids, from 0, root may map into a user namespace of its own:
/// those its own namespace maps from 0 (all of them outside any user
/// namespace, fewer in a user-namespaced pod). None unless the caller is
/// root with CAP_SETUID and CAP_SETGID.
pub(crate) fn full_range() -> Option<u32> {
    use crate::executor::confine::caps;
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0
        || !caps::holds(caps::bit_of("CAP_SETUID")?)
        || !caps::holds(caps::bit_of("CAP_SETGID")?)
    {
        return None;
    }
    // Every id from 0 without a gap: a namespace of rbuild's own maps its
    // uid to 0 and its subordinate ids after it, on two lines.
    let from_zero = |file: &str| -> Option<u32> {
        let text = std::fs::read_to_string(file).ok()?;
        Some(crate::userns::contiguous_from_zero(
            &crate::userns::parse_map(&text),
        ))
    };
    let count = from_zero("/proc/self/uid_map")?.min(from_zero("/proc/self/gid_map")?);
    (count > 1).then_some(count)
}

/// Maps the caller's uid and gid to root in a new user namespace.
fn enter_as_only_root() -> Result<(), SetupError> {
    // SAFETY: plain id getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: unshare in this single-threaded helper.
    check("unshare(CLONE_NEWUSER)", unsafe {
        libc::unshare(libc::CLONE_NEWUSER)
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| SetupError::sys(format!("write {file}"), e))
    };
    write("/proc/self/setgroups", "deny".to_string())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// A COPY: in a mount namespace of its own (through a user namespace when
/// rootless), the root's overlay and the source stage's overlay are
/// mounted, then the files are copied. No process of the image runs.
pub(super) fn copy_in_root(spec: &SandboxSpec, copy: &CopySpec) -> Result<(), SetupError> {
    if spec.namespaces != Namespaces::Chroot {
        if spec.userns {
            enter_user_namespace()?;
        }
        // SAFETY: unshare in this single-threaded helper.
        check("unshare(CLONE_NEWNS)", unsafe {
            libc::unshare(libc::CLONE_NEWNS)
        })?;
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        let userxattr = spec.overlay_userxattr();
        if let RootFs::Overlay {
            base,
            lowers,
            upper,
            work,
            merged,
        } = &spec.root
        {
            mount_overlay(&LinuxSys, base, lowers, upper, work, merged, userxattr, 0)?;
        }
        if let Some((base, lowers)) = &copy.source_lowers {
            mount_readonly_overlay(&LinuxSys, base, lowers, &copy.source_root, userxattr)?;
        }
    } else if matches!(spec.root, RootFs::Overlay { .. }) || copy.source_lowers.is_some() {
        return Err(SetupError::refused("the chroot tier cannot mount overlays"));
    }
    Ok(copy::run(copy, spec.root.path())?)
}

/// Enters the remapped user namespace with the spec pointed at idmapped
/// clones of its root and mounts.
pub(super) fn enter_remapped(spec: &mut SandboxSpec, remap: &Remap) -> Result<(), SetupError> {
    let shifts = remap::shift_spec(spec, &remap.staging)?;
    // Written from inside by the namespace's root.
    let owned: Vec<PathBuf> = spec.stub_report.iter().cloned().collect();
    let owned: Vec<&Path> = owned.iter().map(PathBuf::as_path).collect();
    remap::enter(remap.range, Some(&remap.staging), &shifts, &owned)
        .map_err(|e| e.during("remapping the step's ids; --userns-remap=off runs it as host root"))
}

/// The step's confinement. Without a pid namespace the step could reach
/// rbuild and this helper by pid: they and their process groups are
/// guarded.
pub(super) fn posture_for(spec: &SandboxSpec) -> Posture {
    // SAFETY: plain id getters.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    // SAFETY: plain getters on our own pid and our parent's.
    let mut protected = unsafe { vec![me, parent, libc::getpgid(0), libc::getpgid(parent)] };
    protected.retain(|p| *p > 0);
    protected.sort_unstable();
    protected.dedup();
    spec.posture(protected)
}

/// Moves the helper into each of the step's cgroups before anything else,
/// so all it forks is counted there.
pub(super) fn join_cgroups(spec: &SandboxSpec) -> Result<(), SetupError> {
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, std::process::id().to_string())
            .map_err(|e| SetupError::sys(format!("joining cgroup {}", procs.display()), e))?;
    }
    Ok(())
}

/// What the init still has to do for the step's network.
enum OwnNetwork {
    /// The host's network: nothing.
    Shared,
    /// A namespace `unshare` made: bring `lo` up, then block these.
    Unshared(Vec<netstack::Prefix>),
    /// A namespace `netns::enter` joined, `lo` already up.
    Lent,
}

/// The step's network once the namespaces are unshared: the default
/// network's stack started, or the lent namespace already joined.
fn own_network(
    spec: &SandboxSpec,
    lent: bool,
    keeper: Option<netstack::Keeper>,
) -> Result<OwnNetwork, SetupError> {
    if lent {
        return Ok(OwnNetwork::Lent);
    }
    if !spec.network.own_namespace() {
        return Ok(OwnNetwork::Shared);
    }
    let blocked = keeper.map(netstack::Keeper::start).transpose()?;
    Ok(OwnNetwork::Unshared(blocked.unwrap_or_default()))
}

/// The namespace tiers, once any user namespace is entered: unshares the
/// step's namespaces, forks the init (PID 1 with a pid namespace) and
/// waits for it, killing it when the lifeline ends.
pub(super) fn run_in_namespaces(
    spec: &SandboxSpec,
    posture: &Posture,
    keeper: Option<netstack::Keeper>,
) -> i32 {
    // A cgroup namespace rooted at the step's cgroup (joined above): the
    // step sees at most its own cgroup, never the host's hierarchy.
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWCGROUP;
    if spec.namespaces == Namespaces::Full {
        flags |= libc::CLONE_NEWPID;
    }
    let lent = spec.network == Network::None && netns::root_without_net_admin(spec.in_userns());
    if spec.network.own_namespace() && !lent {
        flags |= libc::CLONE_NEWNET;
    }
    // Before the pid namespace: the lender is a child, and the first
    // child after CLONE_NEWPID is its PID 1, whose exit ends it.
    if lent {
        if let Err(e) = netns::enter() {
            eprintln!("rbuild sandbox: {e}");
            return SETUP_FAILED;
        }
    }
    // SAFETY: unshare in this single-threaded helper.
    if let Err(e) = check("unshare", unsafe { libc::unshare(flags) }) {
        eprintln!("rbuild sandbox: {e} (needs root or a user namespace)");
        return SETUP_FAILED;
    }
    let net = match own_network(spec, lent, keeper) {
        Ok(net) => net,
        Err(e) => {
            eprintln!("rbuild sandbox: {e}");
            return SETUP_FAILED;
        }
    };
    // SAFETY: fork in a single-threaded process; the child becomes PID 1.
    match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            let code = init(spec, posture, &net);
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
