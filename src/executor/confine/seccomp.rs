//! Compiling the profile into seccomp filters with libseccomp (the library
//! runc compiles docker's profile with), the guard filter that keeps a
//! step in a tier without a pid namespace from signalling rbuild, and the
//! filter that keeps a step on the default network from writing frames.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use super::profile::{self, Action, Compare};
use super::ConfineError;

fn action(a: Action) -> ScmpAction {
    match a {
        Action::Allow => ScmpAction::Allow,
        Action::Errno(e) => ScmpAction::Errno(e),
    }
}

fn compare(index: u32, c: Compare) -> ScmpArgCompare {
    match c {
        Compare::NotEqual(v) => ScmpArgCompare::new(index, ScmpCompareOp::NotEqual, v),
        Compare::Equal(v) => ScmpArgCompare::new(index, ScmpCompareOp::Equal, v),
        Compare::MaskedEqual { mask, value } => {
            ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(mask), value)
        }
    }
}

fn new_filter(default: ScmpAction, nnp: bool) -> Result<ScmpFilterContext, ConfineError> {
    let mut filter = ScmpFilterContext::new(default)
        .map_err(|e| ConfineError::seccomp("seccomp: new filter", e))?;
    let native = profile::native_arch();
    if let Some((_, extra)) = profile::ARCH_MAP.iter().find(|(a, _)| *a == native) {
        for name in *extra {
            let arch = ScmpArch::from_str(name)
                .map_err(|e| ConfineError::seccomp(format!("seccomp: {name}"), e))?;
            filter
                .add_arch(arch)
                .map_err(|e| ConfineError::seccomp(format!("seccomp: add arch {name}"), e))?;
        }
    }
    // Docker installs its profile without no_new_privs (setuid programs
    // keep working in RUN steps); that needs CAP_SYS_ADMIN at load time.
    // Where rbuild lacks it (the chroot tier in a container), the kernel
    // takes a filter only with no_new_privs set.
    filter
        .set_ctl_nnp(nnp)
        .map_err(|e| ConfineError::seccomp("seccomp: nnp attribute", e))?;
    Ok(filter)
}

/// Docker's default profile for a step holding `caps`, ready to load
/// (setting no_new_privs first when `nnp`). Syscall names this libseccomp
/// does not know are skipped, as moby does (a newer profile names
/// syscalls an older library cannot resolve).
pub fn docker_default(caps: &[&str], nnp: bool) -> Result<ScmpFilterContext, ConfineError> {
    let mut filter = new_filter(ScmpAction::Errno(profile::DEFAULT_ERRNO), nnp)?;
    let (arch, kernel) = (profile::native_arch(), profile::kernel_version());
    for group in profile::groups_for(caps, arch, kernel) {
        let args: Vec<ScmpArgCompare> = group.args.iter().map(|(i, c)| compare(*i, *c)).collect();
        for name in group.names.split_whitespace() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if args.is_empty() {
                filter.add_rule(action(group.action), syscall)
            } else {
                filter.add_rule_conditional(action(group.action), syscall, &args)
            };
            added.map_err(|e| ConfineError::seccomp(format!("seccomp: rule for {name}"), e))?;
        }
    }
    Ok(filter)
}

/// A second filter for tiers where the step shares rbuild's pid
/// namespace: signals to the `protected` processes and process groups,
/// and to every process (`kill(-1)`), fail with EPERM. Stacked on the
/// profile, the stricter answer wins. `tkill` is refused outright: it
/// names a thread without its process, and glibc's `raise` uses `tgkill`.
pub fn guard(protected: &[i32], nnp: bool) -> Result<ScmpFilterContext, ConfineError> {
    let mut filter = new_filter(ScmpAction::Allow, nnp)?;
    let deny = ScmpAction::Errno(libc::EPERM);
    // pid arguments are C ints: compare the low 32 bits only.
    let low = |index: u32, pid: i32| {
        ScmpArgCompare::new(
            index,
            ScmpCompareOp::MaskedEqual(0xffff_ffff),
            pid as u32 as u64,
        )
    };
    let mut targets: Vec<i32> = vec![-1];
    for &pid in protected {
        targets.push(pid);
        targets.push(-pid);
    }
    targets.sort_unstable();
    targets.dedup();
    for name in [
        "kill",
        "tgkill",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "pidfd_open",
    ] {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            continue;
        };
        for &pid in &targets {
            if name == "pidfd_open" && pid <= 0 {
                continue;
            }
            filter
                .add_rule_conditional(deny, syscall, &[low(0, pid)])
                .map_err(|e| ConfineError::seccomp(format!("seccomp guard: {name}({pid})"), e))?;
        }
    }
    if let Ok(tkill) = ScmpSyscall::from_name("tkill") {
        filter
            .add_rule(deny, tkill)
            .map_err(|e| ConfineError::seccomp("seccomp guard: tkill", e))?;
    }
    Ok(filter)
}

/// The obsolete socket type (libc marks it deprecated, which is the point).
const SOCK_PACKET: u64 = 10;

/// Filters for steps on the default network: `socket(AF_PACKET, ..)`,
/// and `socket(AF_INET, SOCK_PACKET, ..)`, which the kernel turns into
/// one, fail with EPERM; 32-bit `socketcall(SYS_SOCKET, ..)`, whose
/// arguments a filter cannot read, fails too (32-bit glibc since 2.23
/// calls `socket` directly). Stacked on the profile like [`guard`]. Two
/// filters, not one: libseccomp 2.5 compiles the three rules together
/// into a program that lets `socket(AF_PACKET, ..)` through.
pub fn no_packet_sockets(nnp: bool) -> Result<Vec<ScmpFilterContext>, ConfineError> {
    let deny = ScmpAction::Errno(libc::EPERM);
    // C ints: the low 32 bits only (the register's upper half is not
    // promised to be zero, and the kernel ignores it).
    let int = |index: u32, value: i32| {
        ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(0xffff_ffff), value as u64)
    };
    let rule = |filter: &mut ScmpFilterContext,
                name: &str,
                args: &[ScmpArgCompare]|
     -> Result<(), ConfineError> {
        let syscall = ScmpSyscall::from_name(name)
            .map_err(|e| ConfineError::seccomp(format!("seccomp: {name}"), e))?;
        filter
            .add_rule_conditional(deny, syscall, args)
            .map(|_| ())
            .map_err(|e| ConfineError::seccomp(format!("seccomp: packet sockets: {name}"), e))
    };
    let mut families = new_filter(ScmpAction::Allow, nnp)?;
    rule(&mut families, "socket", &[int(0, libc::AF_PACKET)])?;
    // SYS_SOCKET is call 1; libseccomp adds it only where socketcall is.
    rule(&mut families, "socketcall", &[int(0, 1)])?;
    let mut types = new_filter(ScmpAction::Allow, nnp)?;
    // The type's low bits; SOCK_NONBLOCK and SOCK_CLOEXEC sit above them.
    let packet_type = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xf), SOCK_PACKET);
    rule(&mut types, "socket", &[int(0, libc::AF_INET), packet_type])?;
    Ok(vec![families, types])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::confine::caps::DOCKER_DEFAULT;
    use std::os::fd::AsRawFd;

    /// The compiled program's size in BPF instructions.
    fn instructions(filter: &ScmpFilterContext) -> u64 {
        let file = tempfile::tempfile().unwrap();
        filter.export_bpf(&file).unwrap();
        file.metadata().unwrap().len() / 8
    }

    #[test]
    fn both_filters_compile() {
        let profile = docker_default(DOCKER_DEFAULT, false).unwrap();
        // Hundreds of allowed syscalls for three architectures.
        assert!(instructions(&profile) > 300, "{}", instructions(&profile));
        let guard = guard(&[4242, 77], true).unwrap();
        assert!(instructions(&guard) > 10);
        for filter in no_packet_sockets(true).unwrap() {
            assert!(instructions(&filter) > 5);
        }
    }

    /// What `socket(family, kind, 0)` returns in a child that loaded the
    /// packet socket filters first (or none): the fd, or -errno.
    fn socket_in_child(filtered: bool, family: u64, kind: i32) -> i32 {
        let filters = no_packet_sockets(true).unwrap();
        let (r, w) = crate::executor::sandbox::pipe().unwrap();
        // SAFETY: fork in a test; the child only loads filters, makes one
        // syscall, writes four bytes and exits.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                if filtered {
                    for f in &filters {
                        f.load().unwrap();
                    }
                }
                let fd = libc::syscall(libc::SYS_socket, family, kind as u64, 0u64) as i32;
                let got = if fd < 0 {
                    -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                } else {
                    fd
                };
                libc::write(w.as_raw_fd(), got.to_ne_bytes().as_ptr().cast(), 4);
                libc::_exit(0);
            }
            drop(w);
            let mut buf = [0u8; 4];
            libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 4);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            i32::from_ne_bytes(buf)
        }
    }

    #[test]
    fn a_step_on_the_default_network_opens_no_packet_socket() {
        if socket_in_child(false, libc::AF_PACKET as u64, libc::SOCK_DGRAM) < 0 {
            eprintln!("SKIP: no packet sockets here even unfiltered (needs CAP_NET_RAW)");
            return;
        }
        let eperm = -libc::EPERM;
        let packet = libc::AF_PACKET as u64;
        assert_eq!(socket_in_child(true, packet, libc::SOCK_DGRAM), eperm);
        assert_eq!(socket_in_child(true, packet, libc::SOCK_RAW), eperm);
        // Garbage in the register's upper half: the kernel reads an int.
        assert_eq!(
            socket_in_child(true, packet | 0xdead_0000_0000, libc::SOCK_DGRAM),
            eperm
        );
        let inet = libc::AF_INET as u64;
        let obsolete = SOCK_PACKET as i32 | libc::SOCK_CLOEXEC;
        assert_eq!(socket_in_child(true, inet, obsolete), eperm);
        assert!(socket_in_child(true, inet, libc::SOCK_DGRAM) >= 0);
    }
}
