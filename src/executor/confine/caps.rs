//! Capability sets of a RUN step's process: docker's default set as the
//! bounding, permitted and effective sets, empty inheritable and ambient
//! sets (what runc gives a container that docker or BuildKit created).
//!
//! The kernel does the rest at `execve`: a root process gets its bounding
//! set as permitted and effective, any other uid gets nothing, exactly as
//! in `docker run`.

use super::ConfineError;

/// A capability by its number in `linux/capability.h`, with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// `CAP_…` name.
    pub name: &'static str,
    /// Bit number.
    pub bit: u32,
}

const fn cap(name: &'static str, bit: u32) -> Cap {
    Cap { name, bit }
}

/// Every capability this code knows, by number (kernel 6.x: 0..=40).
pub const ALL: &[Cap] = &[
    cap("CAP_CHOWN", 0),
    cap("CAP_DAC_OVERRIDE", 1),
    cap("CAP_DAC_READ_SEARCH", 2),
    cap("CAP_FOWNER", 3),
    cap("CAP_FSETID", 4),
    cap("CAP_KILL", 5),
    cap("CAP_SETGID", 6),
    cap("CAP_SETUID", 7),
    cap("CAP_SETPCAP", 8),
    cap("CAP_LINUX_IMMUTABLE", 9),
    cap("CAP_NET_BIND_SERVICE", 10),
    cap("CAP_NET_BROADCAST", 11),
    cap("CAP_NET_ADMIN", 12),
    cap("CAP_NET_RAW", 13),
    cap("CAP_IPC_LOCK", 14),
    cap("CAP_IPC_OWNER", 15),
    cap("CAP_SYS_MODULE", 16),
    cap("CAP_SYS_RAWIO", 17),
    cap("CAP_SYS_CHROOT", 18),
    cap("CAP_SYS_PTRACE", 19),
    cap("CAP_SYS_PACCT", 20),
    cap("CAP_SYS_ADMIN", 21),
    cap("CAP_SYS_BOOT", 22),
    cap("CAP_SYS_NICE", 23),
    cap("CAP_SYS_RESOURCE", 24),
    cap("CAP_SYS_TIME", 25),
    cap("CAP_SYS_TTY_CONFIG", 26),
    cap("CAP_MKNOD", 27),
    cap("CAP_LEASE", 28),
    cap("CAP_AUDIT_WRITE", 29),
    cap("CAP_AUDIT_CONTROL", 30),
    cap("CAP_SETFCAP", 31),
    cap("CAP_MAC_OVERRIDE", 32),
    cap("CAP_MAC_ADMIN", 33),
    cap("CAP_SYSLOG", 34),
    cap("CAP_WAKE_ALARM", 35),
    cap("CAP_BLOCK_SUSPEND", 36),
    cap("CAP_AUDIT_READ", 37),
    cap("CAP_PERFMON", 38),
    cap("CAP_BPF", 39),
    cap("CAP_CHECKPOINT_RESTORE", 40),
];

/// Docker's (and containerd's, so BuildKit's) default capability set
/// (moby `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The bit of a capability name, if this code knows it.
pub fn bit_of(name: &str) -> Option<u32> {
    ALL.iter().find(|c| c.name == name).map(|c| c.bit)
}

/// A set of capabilities as the 64-bit mask `/proc/self/status` prints.
pub fn mask_of(names: &[&str]) -> u64 {
    names
        .iter()
        .filter_map(|n| bit_of(n))
        .fold(0, |m, b| m | 1 << b)
}

/// The names in a mask, lowest bit first (unknown bits as numbers).
pub fn names_of(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| {
            ALL.iter()
                .find(|c| c.bit == b)
                .map(|c| c.name.to_string())
                .unwrap_or_else(|| format!("cap{b}"))
        })
        .collect()
}

/// The highest capability the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<[CapData; 2], ConfineError> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and room for two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(ConfineError::caps("capget"));
    }
    Ok(data)
}

/// Whether the calling process holds capability `bit` in its effective set.
pub fn holds(bit: u32) -> bool {
    capget()
        .map(|d| d[(bit / 32) as usize].effective & (1 << (bit % 32)) != 0)
        .unwrap_or(false)
}

/// Limits the calling process to `keep` (a mask): drops every other
/// capability from the bounding set, clears the ambient and inheritable
/// sets and narrows permitted and effective to `keep`. Call it in the
/// step's process just before `execve` (dropping from the bounding set
/// needs CAP_SETPCAP, which the process still holds then).
pub fn restrict_to(keep: u64) -> Result<(), ConfineError> {
    for bit in 0..=last_cap() {
        if keep & (1 << bit) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit as libc::c_ulong, 0, 0, 0) };
        // EINVAL: a capability this kernel does not have.
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(ConfineError::caps(format!(
                "dropping capability {} from the bounding set",
                names_of(1 << bit).join("")
            )));
        }
    }
    // SAFETY: prctl with integer arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(ConfineError::caps("clearing ambient capabilities"));
    }
    let mut data = capget()?;
    for (i, d) in data.iter_mut().enumerate() {
        let part = (keep >> (32 * i)) as u32;
        d.permitted &= part;
        d.effective &= part;
        d.inheritable = 0;
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with a v3 header and two data structs we own.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(ConfineError::caps("capset"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_is_the_mask_docker_prints() {
        // `docker run busybox grep CapBnd /proc/self/status` on any host.
        assert_eq!(mask_of(DOCKER_DEFAULT), 0xa804_25fb);
        assert_eq!(names_of(0xa804_25fb).len(), DOCKER_DEFAULT.len());
        assert!(DOCKER_DEFAULT.iter().all(|n| bit_of(n).is_some()));
    }

    #[test]
    fn bits_are_unique_and_dense() {
        for (i, c) in ALL.iter().enumerate() {
            assert_eq!(c.bit as usize, i, "{}", c.name);
        }
    }
}
