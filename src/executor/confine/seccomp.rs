//! Compiling the profile into seccomp filters with libseccomp (the library
//! runc compiles docker's profile with), and the guard filter that keeps a
//! step in a tier without a pid namespace from signalling rbuild.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::confine::caps::DOCKER_DEFAULT;

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
    }
}
