//! Docker's default seccomp profile, as data.
//!
//! Source: moby/moby `profiles/seccomp/default.json` at commit
//! `00f3d189e420d485e42d15fe494f96d272284e0e` (the profile shipped by
//! Docker Engine 28; BuildKit's runc worker applies the same rules through
//! containerd's `contrib/seccomp`). The rules are restated here in our own
//! shape: a group of syscall names, the action, argument conditions, and
//! the capability, architecture and kernel conditions under which moby's
//! `setupSeccomp` keeps the group. The sibling `seccomp.rs` compiles them with
//! libseccomp exactly as moby does; `tests/confinement.rs` checks the
//! compiled filter against Debian's own copy of the profile.

/// What a matching syscall gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Runs.
    Allow,
    /// Fails with this errno.
    Errno(i32),
}

/// A comparison of one syscall argument (libseccomp's `SCMP_CMP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `arg != value`.
    NotEqual(u64),
    /// `arg == value`.
    Equal(u64),
    /// `arg & mask == value`.
    MaskedEqual {
        /// Bits compared.
        mask: u64,
        /// What they must be.
        value: u64,
    },
}

/// When a group applies (moby's `includes` / `excludes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// The step must hold every one of these capabilities.
    pub caps: &'static [&'static str],
    /// The step must hold none of these.
    pub not_caps: &'static [&'static str],
    /// Only on these architectures (Go's names: amd64, arm64, ...).
    pub arches: &'static [&'static str],
    /// Never on these architectures.
    pub not_arches: &'static [&'static str],
    /// Only on kernels at least this new (major, minor).
    pub min_kernel: Option<(u32, u32)>,
}

const ALWAYS: Condition = Condition {
    caps: &[],
    not_caps: &[],
    arches: &[],
    not_arches: &[],
    min_kernel: None,
};

/// One rule group of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Syscall names, whitespace-separated.
    pub names: &'static str,
    /// What they get.
    pub action: Action,
    /// Conditions on arguments, all of which must hold: (index, comparison).
    pub args: &'static [(u32, Compare)],
    /// When the group is part of the filter at all.
    pub when: Condition,
}

/// The profile's default: EPERM for every syscall no group allows.
pub const DEFAULT_ERRNO: i32 = libc::EPERM;

/// Extra architectures each native one carries (moby's `archMap`), in
/// libseccomp's names: a 32-bit program in a RUN step is filtered by the
/// same rules instead of being killed as a foreign architecture.
pub const ARCH_MAP: &[(&str, &[&str])] = &[
    ("amd64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("arm64", &["SCMP_ARCH_ARM"]),
    ("s390x", &["SCMP_ARCH_S390"]),
];

const fn allow(names: &'static str, when: Condition) -> Group {
    Group {
        names,
        action: Action::Allow,
        args: &[],
        when,
    }
}

const fn with_caps(caps: &'static [&'static str]) -> Condition {
    Condition { caps, ..ALWAYS }
}

const fn on_arches(arches: &'static [&'static str]) -> Condition {
    Condition { arches, ..ALWAYS }
}

const fn personality(args: &'static [(u32, Compare)]) -> Group {
    Group {
        names: "personality",
        action: Action::Allow,
        args,
        when: ALWAYS,
    }
}

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN:
/// CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
pub const CLONE_NAMESPACE_FLAGS: u64 = 2_114_060_288;

/// The profile's groups, in its order.
pub const GROUPS: &[Group] = &[
    allow(
        "accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32 \
         clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime \
         clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect \
         copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old \
         epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat \
         exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark \
         fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr \
         flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 \
         fsync ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd \
         getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups \
         getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom \
         getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid \
         getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr \
         inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl \
         io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set \
         io_setup io_submit io_uring_enter io_uring_register io_uring_setup ipc kill \
         landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 \
         lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr \
         lstat lstat64 madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod \
         mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open \
         mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink \
         mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at \
         nanosleep newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal \
         pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 \
         preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev \
         pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg \
         recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2 \
         restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo \
         rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo \
         sched_getaffinity sched_getattr sched_getparam sched_get_priority_max \
         sched_get_priority_min sched_getscheduler sched_rr_get_interval \
         sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam \
         sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop \
         semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 \
         setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority \
         setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 \
         setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid \
         setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 \
         sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx \
         symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create \
         timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime \
         timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime \
         timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink \
         unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid \
         write writev",
        ALWAYS,
    ),
    allow(
        "process_vm_readv process_vm_writev ptrace",
        Condition {
            min_kernel: Some((4, 8)),
            ..ALWAYS
        },
    ),
    // Any socket family but AF_VSOCK (40).
    Group {
        names: "socket",
        action: Action::Allow,
        args: &[(0, Compare::NotEqual(40))],
        when: ALWAYS,
    },
    personality(&[(0, Compare::Equal(0))]),
    personality(&[(0, Compare::Equal(8))]),
    personality(&[(0, Compare::Equal(131_072))]),
    personality(&[(0, Compare::Equal(131_080))]),
    personality(&[(0, Compare::Equal(4_294_967_295))]),
    allow("sync_file_range2 swapcontext", on_arches(&["ppc64le"])),
    allow(
        "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        on_arches(&["arm", "arm64"]),
    ),
    allow("arch_prctl", on_arches(&["amd64", "x32"])),
    allow("modify_ldt", on_arches(&["amd64", "x32", "x86"])),
    allow(
        "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
        on_arches(&["s390", "s390x"]),
    ),
    allow("riscv_flush_icache", on_arches(&["riscv64"])),
    allow("open_by_handle_at", with_caps(&["CAP_DAC_READ_SEARCH"])),
    allow(
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount \
         mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname \
         sethostname setns syslog umount umount2 unshare",
        with_caps(&["CAP_SYS_ADMIN"]),
    ),
    // clone without namespace flags (threads, fork) for everyone else.
    Group {
        names: "clone",
        action: Action::Allow,
        args: &[(
            0,
            Compare::MaskedEqual {
                mask: CLONE_NAMESPACE_FLAGS,
                value: 0,
            },
        )],
        when: Condition {
            not_caps: &["CAP_SYS_ADMIN"],
            not_arches: &["s390", "s390x"],
            ..ALWAYS
        },
    },
    // s390 passes clone's flags second.
    Group {
        names: "clone",
        action: Action::Allow,
        args: &[(
            1,
            Compare::MaskedEqual {
                mask: CLONE_NAMESPACE_FLAGS,
                value: 0,
            },
        )],
        when: Condition {
            not_caps: &["CAP_SYS_ADMIN"],
            arches: &["s390", "s390x"],
            ..ALWAYS
        },
    },
    // clone3 hides its flags in memory seccomp cannot read: ENOSYS makes
    // libc fall back to clone.
    Group {
        names: "clone3",
        action: Action::Errno(libc::ENOSYS),
        args: &[],
        when: Condition {
            not_caps: &["CAP_SYS_ADMIN"],
            ..ALWAYS
        },
    },
    allow("reboot", with_caps(&["CAP_SYS_BOOT"])),
    allow("chroot", with_caps(&["CAP_SYS_CHROOT"])),
    allow(
        "delete_module init_module finit_module",
        with_caps(&["CAP_SYS_MODULE"]),
    ),
    allow("acct", with_caps(&["CAP_SYS_PACCT"])),
    allow(
        "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        with_caps(&["CAP_SYS_PTRACE"]),
    ),
    allow("iopl ioperm", with_caps(&["CAP_SYS_RAWIO"])),
    allow(
        "settimeofday stime clock_settime clock_settime64",
        with_caps(&["CAP_SYS_TIME"]),
    ),
    allow("vhangup", with_caps(&["CAP_SYS_TTY_CONFIG"])),
    allow(
        "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
        with_caps(&["CAP_SYS_NICE"]),
    ),
    allow("syslog", with_caps(&["CAP_SYSLOG"])),
    allow("bpf", with_caps(&["CAP_BPF"])),
    allow("perf_event_open", with_caps(&["CAP_PERFMON"])),
];

/// Go's name of the architecture rbuild was built for (the profile's
/// `arches` use those names).
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Condition {
    /// Whether moby keeps a group with this condition for a container
    /// holding `caps` on `arch` under `kernel`.
    pub fn holds(&self, caps: &[&str], arch: &str, kernel: (u32, u32)) -> bool {
        if self.not_arches.contains(&arch) || self.not_caps.iter().any(|c| caps.contains(c)) {
            return false;
        }
        if !self.arches.is_empty() && !self.arches.contains(&arch) {
            return false;
        }
        if !self.caps.iter().all(|c| caps.contains(c)) {
            return false;
        }
        self.min_kernel.is_none_or(|min| kernel >= min)
    }
}

/// The groups that apply to a container holding `caps` on `arch`.
pub fn groups_for<'a>(
    caps: &'a [&'a str],
    arch: &'a str,
    kernel: (u32, u32),
) -> impl Iterator<Item = &'static Group> + 'a {
    GROUPS
        .iter()
        .filter(move |g| g.when.holds(caps, arch, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::confine::caps::DOCKER_DEFAULT;

    #[test]
    fn the_default_caps_keep_the_groups_moby_keeps() {
        let kept: Vec<&Group> = groups_for(DOCKER_DEFAULT, "amd64", (6, 1)).collect();
        let names: Vec<&str> = kept
            .iter()
            .flat_map(|g| g.names.split_whitespace())
            .collect();
        // Held capabilities and the native arch.
        assert!(names.contains(&"chroot"));
        assert!(names.contains(&"arch_prctl"));
        assert!(names.contains(&"ptrace"));
        // CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_DAC_READ_SEARCH are not held.
        for denied in [
            "mount",
            "unshare",
            "setns",
            "init_module",
            "open_by_handle_at",
            "bpf",
        ] {
            assert!(!names.contains(&denied), "{denied}");
        }
        assert!(!names.contains(&"keyctl") && !names.contains(&"kexec_load"));
        // clone only without namespace flags; clone3 says ENOSYS.
        let clone: Vec<&&Group> = kept.iter().filter(|g| g.names == "clone").collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args[0].0, 0);
        assert!(kept
            .iter()
            .any(|g| g.names == "clone3" && g.action == Action::Errno(libc::ENOSYS)));
        // Old kernels do not get ptrace.
        let old: Vec<&str> = groups_for(DOCKER_DEFAULT, "amd64", (4, 4))
            .flat_map(|g| g.names.split_whitespace())
            .collect();
        assert!(!old.contains(&"ptrace"));
    }

    #[test]
    fn sys_admin_swaps_the_clone_rules() {
        let caps = ["CAP_SYS_ADMIN"];
        let kept: Vec<&Group> = groups_for(&caps, "amd64", (6, 1)).collect();
        assert!(kept.iter().any(|g| g.names.contains("unshare")));
        assert!(!kept
            .iter()
            .any(|g| g.names == "clone" || g.names == "clone3"));
    }
}
