//! The step as the helper receives it: [`SandboxSpec`] and the types it is
//! made of, serialized as one line of JSON on the helper's stdin. Plain
//! data: nothing here makes a syscall, so every other file of the sandbox
//! may use it and it uses none of them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::executor::confine::seccomp::Filters;
use crate::executor::confine::{Posture, Security};
use crate::executor::copy::CopySpec;

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
    /// No namespaces at all: chroot into the root (for root in containers
    /// whose seccomp profile forbids unshare: auto's last resort).
    Chroot,
}

/// The root a step runs in: the mounts the snapshot back-end prepared,
/// sent to the helper as they are.
pub use crate::snapshot::backend::RootMounts as RootFs;

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
    /// The step's network.
    #[serde(default)]
    pub network: Network,
    /// The resolv.conf slirp4netns reads its upstream DNS from (None: the
    /// host's `/etc/resolv.conf`).
    #[serde(default)]
    pub network_resolv_conf: Option<PathBuf>,
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
    pub copy: Option<CopySpec>,
    /// The step's confinement (`RUN --security`).
    #[serde(default)]
    pub security: Security,
    /// Where rbuild is real root: run the step's ids as this unprivileged
    /// host range through a user namespace and idmapped mounts.
    #[serde(default)]
    pub remap: Option<Remap>,
    /// The step's seccomp programs, compiled once in rbuild's process
    /// ([`crate::executor::Executor`] fills them in before the helper
    /// starts, from the posture [`SandboxSpec::posture`] gives).
    #[serde(default)]
    pub filters: Filters,
}

impl SandboxSpec {
    /// The step's confinement in its tier; `protected` are the pids a
    /// step without a pid namespace must not signal. Packet sockets are
    /// refused on the default network (a frame on `tap0` skips the routes
    /// that block the host).
    pub fn posture(&self, protected: Vec<i32>) -> Posture {
        let mut posture = Posture::new(
            self.security,
            self.namespaces == Namespaces::Chroot,
            self.namespaces == Namespaces::Full,
            protected,
        );
        posture.no_packet_sockets =
            self.network == Network::Private && self.security == Security::Sandbox;
        posture
    }

    /// Whether the step's mounts are made inside a user namespace (rootless
    /// or remapped): overlay then uses `userxattr`.
    pub fn in_userns(&self) -> bool {
        self.userns || self.remap.is_some()
    }

    /// Whether overlay is mounted with `userxattr`: in any user namespace
    /// but the host's, including the one rbuild itself may run in (a
    /// user-namespaced container, or its own over subordinate ids), where
    /// `trusted.*` cannot be set and removing a lower directory fails.
    pub fn overlay_userxattr(&self) -> bool {
        self.in_userns() || crate::userns::nested()
    }
}

/// A RUN's network, as `docker build` gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's (or the pod's) namespace: `--network=host`.
    #[default]
    Host,
    /// A namespace of its own with only `lo` (`--network=none`).
    None,
    /// A namespace of its own with `lo` and one link out through
    /// slirp4netns, which cannot reach the host's loopback, the host's own
    /// addresses or 169.254.0.0/16 (`--network=default`).
    Private,
}

impl Network {
    /// Whether the step gets a network namespace of its own.
    pub fn own_namespace(self) -> bool {
        self != Network::Host
    }
}

/// Exit code the helper uses for its own setup failures.
pub const SETUP_FAILED: i32 = 125;

/// Exit code of a COPY that the machine failed (a full disk), not the
/// Dockerfile: the build then exits as an environment failure.
pub const COPY_MACHINE_FAILED: i32 = 3;

/// Host ids a step's ids 0..count stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Host uid of the step's uid 0.
    pub uid: u32,
    /// Host gid of the step's gid 0.
    pub gid: u32,
    /// How many ids are mapped.
    pub count: u32,
}

/// Where rbuild takes its range: `/etc/subuid` and `/etc/subgid` entries
/// for a user named `rbuild`, else this block of 65,536 ids, far above
/// what `useradd` hands out (uids from 1000, subordinate ids from 100000).
const DEFAULT_BASE: u32 = 0x7000_0000;
const DEFAULT_COUNT: u32 = 65_536;

impl IdRange {
    /// The range for this machine: an `rbuild` entry in `/etc/subuid` and
    /// `/etc/subgid`, else 65,536 ids from 0x70000000.
    pub fn for_this_host() -> IdRange {
        let entry = |file: &str| -> Option<(u32, u32)> {
            let text = std::fs::read_to_string(file).ok()?;
            text.lines().find_map(|l| {
                let mut parts = l.split(':');
                (parts.next()? == "rbuild").then_some(())?;
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
        };
        match (entry("/etc/subuid"), entry("/etc/subgid")) {
            (Some((uid, ucount)), Some((gid, gcount))) => IdRange {
                uid,
                gid,
                count: ucount.min(gcount),
            },
            _ => IdRange {
                uid: DEFAULT_BASE,
                gid: DEFAULT_BASE,
                count: DEFAULT_COUNT,
            },
        }
    }
}

/// What the sandbox helper needs to remap a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remap {
    /// The host ids.
    pub range: IdRange,
    /// An empty host dir where the idmapped mounts are attached (inside
    /// the helper's own mount namespace; nothing shows on the host).
    pub staging: PathBuf,
}

impl SandboxSpec {
    /// `args` run as root in `root` with the full tier and nothing else
    /// (no env, no mounts, no limits): what tests and tools start from
    /// and change a field or two of.
    pub fn new(root: RootFs, args: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            root,
            args,
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            hostname: "h".into(),
            network: Network::Host,
            network_resolv_conf: None,
            namespaces: Namespaces::Full,
            userns: false,
            mounts: vec![],
            cgroup_procs: vec![],
            stub_report: None,
            copy: None,
            security: Security::Sandbox,
            remap: None,
            filters: Filters::default(),
        }
    }

    /// A `RUN true` in `root`: what the sandbox's unit tests start from.
    #[cfg(test)]
    pub(crate) fn example(root: RootFs) -> SandboxSpec {
        SandboxSpec::new(root, vec!["true".into()])
    }
}
