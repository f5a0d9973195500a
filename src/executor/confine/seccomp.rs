//! Compiling the profile into seccomp filters with libseccomp (the library
//! runc compiles docker's profile with), the guard filter that keeps a
//! step in a tier without a pid namespace from signalling rbuild, and the
//! filter that keeps a step on the default network from writing frames.
//!
//! The filters every step shares are compiled once per rbuild process
//! ([`Program::profile`], [`Program::packet_sockets`]) and handed to each
//! step's helper as BPF: libseccomp's compile of docker's profile for
//! three architectures costs each step milliseconds of CPU, the load of a
//! finished program microseconds.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

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

/// A compiled filter: classic BPF instructions exactly as libseccomp
/// exports them (and would load them), one `u64` per 8-byte
/// `sock_filter`, so the buffer is aligned for the kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Program(Vec<u64>);

impl Program {
    /// Exports `filter`'s program (through a temporary file: libseccomp
    /// 2.5 exports only to a file descriptor).
    pub fn compile(filter: &ScmpFilterContext) -> Result<Program, ConfineError> {
        use std::io::{Read, Seek};
        let mut file = tempfile::tempfile()
            .map_err(|e| ConfineError::seccomp_load("seccomp: a file to export into", e))?;
        filter
            .export_bpf(file.as_fd())
            .map_err(|e| ConfineError::seccomp("seccomp: exporting the program", e))?;
        let mut bytes = Vec::new();
        file.rewind()
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| ConfineError::seccomp_load("seccomp: reading the program", e))?;
        let words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Program(words))
    }

    /// Docker's default profile for a step holding `caps`, compiled once
    /// per process for each capability set (a build has at most two: the
    /// namespace tiers' and the chroot tier's).
    pub fn profile(caps: &[&'static str]) -> Result<Program, ConfineError> {
        static MADE: OnceLock<Mutex<HashMap<Vec<&'static str>, Program>>> = OnceLock::new();
        let made = MADE.get_or_init(Default::default);
        if let Some(program) = made.lock().unwrap_or_else(|e| e.into_inner()).get(caps) {
            return Ok(program.clone());
        }
        // no_new_privs is the loader's choice, not part of the program.
        let program = Program::compile(&docker_default(caps, false)?)?;
        made.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(caps.to_vec(), program.clone());
        Ok(program)
    }

    /// The packet socket filters ([`no_packet_sockets`]), compiled once
    /// per process.
    pub fn packet_sockets() -> Result<Vec<Program>, ConfineError> {
        static MADE: OnceLock<Vec<Program>> = OnceLock::new();
        if let Some(programs) = MADE.get() {
            return Ok(programs.clone());
        }
        let programs = no_packet_sockets(false)?
            .iter()
            .map(Program::compile)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MADE.get_or_init(|| programs).clone())
    }

    /// The number of instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the program has no instructions (the kernel refuses one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Installs the program on the calling thread, as libseccomp's
    /// `seccomp_load` does with its default attributes (no flags; first
    /// no_new_privs when `nnp`). Stacked on any filter already there.
    pub fn load(&self, nnp: bool) -> Result<(), ConfineError> {
        let len = u16::try_from(self.0.len())
            .map_err(|_| ConfineError::seccomp_load("seccomp: program too long", einval()))?;
        if nnp {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(ConfineError::seccomp_load("seccomp: no_new_privs", e));
            }
        }
        let prog = libc::sock_fprog {
            len,
            // The kernel only reads it; u64 keeps sock_filter's alignment.
            filter: self.0.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the kernel copies `len` instructions from the buffer,
        // which outlives the call.
        let done = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if done != 0 {
            let e = std::io::Error::last_os_error();
            return Err(ConfineError::seccomp_load("seccomp: loading the filter", e));
        }
        Ok(())
    }
}

/// The compiled programs a step's helper loads: made in rbuild's process
/// before the helper starts ([`Filters::for_posture`]) and carried in its
/// spec. The per-step guard is not here: it names the helper's own pids.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filters {
    /// Docker's profile for the step's capabilities.
    pub profile: Option<Program>,
    /// The packet socket filters, for a step on the default network.
    pub packet_sockets: Vec<Program>,
}

impl Filters {
    /// What a step with `posture` needs compiled.
    pub fn for_posture(posture: &super::Posture) -> Result<Filters, ConfineError> {
        Ok(Filters {
            profile: match posture.seccomp {
                true => Some(Program::profile(&posture.caps)?),
                false => None,
            },
            packet_sockets: match posture.no_packet_sockets {
                true => Program::packet_sockets()?,
                false => vec![],
            },
        })
    }
}

fn einval() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EINVAL)
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

    /// What syscall `nr` with `args` returns in a child that loaded
    /// `programs` first: its result, or -errno.
    fn in_child(programs: &[Program], nr: libc::c_long, args: [u64; 3]) -> i64 {
        let (r, w) = crate::executor::sandbox::pipe().unwrap();
        // SAFETY: fork in a test; the child only loads filters, makes one
        // syscall, writes eight bytes and exits.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                for p in programs {
                    if p.load(true).is_err() {
                        libc::_exit(1);
                    }
                }
                let got = libc::syscall(nr, args[0], args[1], args[2]);
                let got = if got < 0 {
                    -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
                } else {
                    got
                };
                libc::write(w.as_raw_fd(), got.to_ne_bytes().as_ptr().cast(), 8);
                libc::_exit(0);
            }
            drop(w);
            let mut buf = [0u8; 8];
            let n = libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 8);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            assert_eq!(n, 8, "the child loaded no filter");
            i64::from_ne_bytes(buf)
        }
    }

    /// What `socket(family, kind, 0)` returns in a child that loaded the
    /// packet socket filters first (or none): the fd, or -errno.
    fn socket_in_child(filtered: bool, family: u64, kind: i32) -> i64 {
        let programs = match filtered {
            true => Program::packet_sockets().unwrap(),
            false => vec![],
        };
        in_child(&programs, libc::SYS_socket, [family, kind as u64, 0])
    }

    #[test]
    fn the_profile_is_compiled_once_and_loads_as_libseccomp_would() {
        let program = Program::profile(DOCKER_DEFAULT).unwrap();
        // The same instructions libseccomp would load itself, and the
        // second call is the first one's program.
        let direct = Program::compile(&docker_default(DOCKER_DEFAULT, true).unwrap()).unwrap();
        assert_eq!(program, direct);
        assert_eq!(Program::profile(DOCKER_DEFAULT).unwrap(), program);
        assert!(program.len() > 300, "{}", program.len());
        let profile = std::slice::from_ref(&program);
        // keyctl is outside docker's profile; getpid inside it.
        assert_ne!(
            in_child(&[], libc::SYS_keyctl, [0, 0, 0]),
            -(libc::EPERM as i64)
        );
        assert_eq!(
            in_child(profile, libc::SYS_keyctl, [0, 0, 0]),
            -(libc::EPERM as i64)
        );
        assert!(in_child(profile, libc::SYS_getpid, [0, 0, 0]) > 0);
        // unshare(CLONE_NEWUSER) needs CAP_SYS_ADMIN in docker's profile.
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(
            in_child(profile, libc::SYS_unshare, [newuser, 0, 0]),
            -(libc::EPERM as i64)
        );
    }

    #[test]
    fn a_posture_with_no_compiled_program_fails_closed() {
        let posture = crate::executor::confine::Posture::new(
            crate::executor::confine::Security::Sandbox,
            false,
            true,
            vec![],
        );
        let err = posture.apply(&Filters::default()).unwrap_err().to_string();
        assert!(err.contains("not compiled"), "{err}");
        let compiled = Filters::for_posture(&posture).unwrap();
        assert_eq!(
            compiled.profile,
            Some(Program::profile(&posture.caps).unwrap())
        );
        assert!(compiled.packet_sockets.is_empty());
    }

    #[test]
    fn a_step_on_the_default_network_opens_no_packet_socket() {
        if socket_in_child(false, libc::AF_PACKET as u64, libc::SOCK_DGRAM) < 0 {
            eprintln!("SKIP: no packet sockets here even unfiltered (needs CAP_NET_RAW)");
            return;
        }
        let eperm = -(libc::EPERM as i64);
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
