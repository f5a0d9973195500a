//! What a RUN step's process may do once it runs: the confinement of a
//! default docker container, in every tier.
//!
//! Owns the policy, not the mechanics of building a root: which
//! capabilities a step keeps ([`caps`]), docker's default seccomp profile
//! as data ([`profile`]) and its compilation ([`seccomp`]), and the paths
//! of `/proc` and `/sys` that are masked or read-only ([`MASKED_PATHS`],
//! [`READONLY_PATHS`]), which the sandbox mounts. The one way out is
//! `RUN --security=insecure`, which the build allows only with
//! `--allow security.insecure` (buildx's entitlement).

pub mod caps;
pub mod profile;
pub mod seccomp;

use serde::{Deserialize, Serialize};

/// `RUN --security`: the step's confinement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Docker's defaults: capabilities, seccomp, masked paths, no devices.
    #[default]
    Sandbox,
    /// Every capability, no seccomp filter, nothing masked, the host's
    /// devices (`--security=insecure`, as BuildKit's insecure mode).
    Insecure,
}

/// runc's masked paths (`runc spec`) plus containerd's
/// `/sys/devices/virtual/powercap`: files get `/dev/null` bound over them,
/// directories an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's read-only paths: bound over themselves, read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Capabilities a step keeps when it shares the caller's mount and pid
/// view (the chroot tier): CAP_SYS_CHROOT would let it leave the chroot
/// (chroot into a subdirectory, then climb out), and CAP_MKNOD would give
/// it the host's disks where no devices cgroup or `nodev` mount stands in
/// the way.
const CHROOT_TIER_DROPS: &[&str] = &["CAP_SYS_CHROOT", "CAP_MKNOD"];

/// What the step's process gets, decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    /// Capabilities kept (bounding, permitted, effective).
    pub caps: Vec<&'static str>,
    /// Whether docker's seccomp profile is installed.
    pub seccomp: bool,
    /// Processes (and their process groups) the step may not signal:
    /// set where the step shares rbuild's pid namespace.
    pub guard: Option<Vec<i32>>,
    /// Whether packet sockets are refused: on the default network a
    /// frame written to `tap0` reaches the user-mode stack without the
    /// routing table, and so past the routes that block the host.
    pub no_packet_sockets: bool,
}

impl Posture {
    /// The posture for `security` in a tier with or without its own pid
    /// namespace and mount namespace. `protected` are the pids a step
    /// without a pid namespace must not reach.
    pub fn new(security: Security, chroot: bool, pidns: bool, protected: Vec<i32>) -> Posture {
        if security == Security::Insecure {
            return Posture {
                caps: caps::ALL.iter().map(|c| c.name).collect(),
                seccomp: false,
                guard: None,
                no_packet_sockets: false,
            };
        }
        let kept = caps::DOCKER_DEFAULT
            .iter()
            .copied()
            .filter(|c| !chroot || !CHROOT_TIER_DROPS.contains(c))
            .collect();
        Posture {
            caps: kept,
            seccomp: true,
            guard: (!pidns).then_some(protected),
            no_packet_sockets: false,
        }
    }

    /// Applies the posture to the calling process, which is about to set
    /// its ids and `execve` the step. The filters go first: loading them
    /// without no_new_privs needs CAP_SYS_ADMIN, which the next part
    /// drops; the profile allows the syscalls that follow (prctl, capset,
    /// setgroups, setresuid, execve). Without CAP_SYS_ADMIN (root in a
    /// container that dropped it) the filters go in with no_new_privs.
    pub fn apply(&self, filters: &seccomp::Filters) -> Result<(), ConfineError> {
        let nnp = !caps::holds(caps::bit_of("CAP_SYS_ADMIN").unwrap_or(21));
        if let Some(protected) = &self.guard {
            seccomp::guard(protected, nnp)?
                .load()
                .map_err(|e| ConfineError::seccomp("loading the seccomp guard", e))?;
        }
        // A posture whose programs were not compiled fails closed: the
        // step never runs with less than its posture says.
        if self.no_packet_sockets {
            if filters.packet_sockets.is_empty() {
                return Err(ConfineError::uncompiled("the packet socket filters"));
            }
            for program in &filters.packet_sockets {
                program.load(nnp)?;
            }
        }
        if self.seccomp {
            let profile = filters.profile.as_ref();
            profile
                .ok_or_else(|| ConfineError::uncompiled("the seccomp profile"))?
                .load(nnp)?;
        }
        caps::restrict_to(caps::mask_of(&self.caps))
    }
}

/// Marks the calling process as not dumpable: a step running under the
/// same uid (tiers without a pid namespace) then cannot ptrace it, read
/// its memory or open its `/proc` files; `execve` of the step's command
/// makes the step itself dumpable again.
pub fn protect_self() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// Why a step's confinement could not be put on: a capability call or a
/// seccomp filter the kernel (or libseccomp) refused. The step never runs
/// without it.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// prctl, capget or capset failed.
    #[error("{what}: {source}")]
    Caps {
        /// What was being done.
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// libseccomp refused to build or load a filter.
    #[error("{what}: {source}")]
    Seccomp {
        /// What was being done.
        what: String,
        /// libseccomp's error.
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The kernel refused a compiled filter, or it could not be read.
    #[error("{what}: {source}")]
    SeccompLoad {
        /// What was being done.
        what: String,
        /// The kernel's (or the file system's) error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfineError {
    /// A capability call `what` that just failed (errno read now).
    pub(crate) fn caps(what: impl std::fmt::Display) -> ConfineError {
        ConfineError::Caps {
            what: what.to_string(),
            source: std::io::Error::last_os_error(),
        }
    }

    /// A libseccomp failure while doing `what` (worded only once it
    /// failed: filters are built for every step).
    pub(crate) fn seccomp(
        what: impl std::fmt::Display,
        source: libseccomp::error::SeccompError,
    ) -> ConfineError {
        ConfineError::Seccomp {
            what: what.to_string(),
            source,
        }
    }
}

impl ConfineError {
    /// A posture whose `what` reached the helper uncompiled.
    fn uncompiled(what: &str) -> Self {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "not compiled for this step");
        ConfineError::seccomp_load(what, e)
    }

    /// A compiled filter the kernel refused while doing `what`.
    pub(crate) fn seccomp_load(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        ConfineError::SeccompLoad {
            what: what.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_get_docker_caps_less_what_would_leave_a_chroot() {
        let full = Posture::new(Security::Sandbox, false, true, vec![]);
        assert_eq!(caps::mask_of(&full.caps), 0xa804_25fb);
        assert!(full.seccomp && full.guard.is_none());
        let chroot = Posture::new(Security::Sandbox, true, false, vec![7]);
        assert!(!chroot.caps.contains(&"CAP_SYS_CHROOT"));
        assert!(!chroot.caps.contains(&"CAP_MKNOD"));
        assert_eq!(chroot.guard, Some(vec![7]));
        let insecure = Posture::new(Security::Insecure, false, true, vec![]);
        assert_eq!(insecure.caps.len(), caps::ALL.len());
        assert!(!insecure.seccomp);
    }
}
