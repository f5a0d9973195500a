//! Per-step cgroups: memory, process and CPU limits, written straight to
//! cgroupfs (v2 first, v1 fallback), and what the kernel says afterwards.
//!
//! The caller's process creates a cgroup for each step before the sandbox
//! starts, the sandbox helper moves itself in before it forks anything, and
//! after the step the caller reads the OOM and pids events, kills whatever
//! is still inside and removes the cgroup. Nothing here needs D-Bus or
//! systemd: cgroups are nested under the caller's own cgroup.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Why a step's cgroup could not be made or limited.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup rbuild may create (the reason the probe found).
    #[error("resource limits need a writable cgroup ({0})")]
    NotWritable(String),
    /// A limit whose controller is not mounted.
    #[error("no {0} controller")]
    NoController(&'static str),
    /// Creating the cgroup or writing a limit failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}

/// Limits applied to every RUN step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (`--memory`).
    pub memory: Option<u64>,
    /// CPUs (`--cpus`, e.g. 1.5).
    pub cpus: Option<f64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// Which cgroup hierarchy this machine uses for resource control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// The unified hierarchy (`/sys/fs/cgroup/cgroup.controllers` exists).
    V2,
    /// Per-controller hierarchies (`/sys/fs/cgroup/memory`, ...).
    V1,
    /// No cgroupfs found.
    None,
}

/// Where cgroups live on this machine and whether we may create them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSupport {
    /// The hierarchy in use.
    pub version: CgroupVersion,
    /// For v2: the one parent dir (controller ""). For v1: the parent dir
    /// of each controller (memory, pids, cpu) that is present.
    pub parents: Vec<(String, PathBuf)>,
    /// Whether a child cgroup could be created (and removed) under each parent.
    pub writable: bool,
    /// Why not, when not.
    pub problem: Option<String>,
    /// What detection had to do to make it writable (v2: processes moved
    /// out of the container's own cgroup), for `rbuild info`.
    #[serde(default)]
    pub note: Option<String>,
}

const MOUNT: &str = "/sys/fs/cgroup";

/// The caller's own cgroup path in `controller`'s hierarchy ("" for v2).
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        if matches {
            return Some(path.trim_start_matches('/').to_string());
        }
    }
    None
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!(
        "rbuild-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl CgroupSupport {
    /// Looks at this machine's cgroupfs and tries creating a cgroup.
    pub fn detect() -> CgroupSupport {
        let root = Path::new(MOUNT);
        if root.join("cgroup.controllers").exists() {
            let own = own_path("").unwrap_or_default();
            let parent = root.join(&own);
            let mut support = CgroupSupport {
                version: CgroupVersion::V2,
                parents: vec![(String::new(), parent.clone())],
                writable: false,
                problem: None,
                note: None,
            };
            // The controllers must be on in the parent's subtree_control;
            // a parent holding processes itself cannot enable them, so a
            // sibling dir under the grandparent is the next try.
            let mut candidates = vec![parent.clone()];
            if let Some(grand) = parent.parent().filter(|g| g.starts_with(root)) {
                candidates.push(grand.to_path_buf());
            }
            let mut errors = Vec::new();
            for candidate in candidates {
                let enabled = enable_v2_controllers(&candidate).or_else(|e| {
                    // v2's no-internal-process rule: a cgroup holding
                    // processes cannot give its children controllers. A
                    // container's cgroup (its cgroup namespace's root)
                    // holds the container's processes, rbuild among
                    // them: they move into a leaf under it, as
                    // docker-in-docker's entrypoint does, still under the
                    // container's limits.
                    if e.raw_os_error() != Some(libc::EBUSY) || !own.is_empty() {
                        return Err(e);
                    }
                    let moved = evacuate(&candidate)?;
                    support.note = Some(format!(
                        "moved this container's {moved} process(es) into {}, since a v2 \
                         cgroup holding processes cannot enable controllers for its children",
                        candidate.join(LEAF).display()
                    ));
                    enable_v2_controllers(&candidate)
                });
                match enabled.and_then(|_| try_create(&candidate)) {
                    Ok(()) => {
                        support.parents = vec![(String::new(), candidate)];
                        support.writable = true;
                        return support;
                    }
                    Err(e) => errors.push(format!("{}: {e}", candidate.display())),
                }
            }
            support.problem = Some(errors.join("; "));
            return support;
        }
        let mut parents = Vec::new();
        for controller in ["memory", "pids", "cpu"] {
            let dir = root.join(controller);
            if dir.join("cgroup.procs").exists() {
                let own = own_path(controller).unwrap_or_default();
                // In a container the hierarchy is often mounted at our own
                // cgroup, so the path /proc/self/cgroup names is not there.
                let nested = dir.join(own);
                let parent = if nested.is_dir() { nested } else { dir };
                parents.push((controller.to_string(), parent));
            }
        }
        if parents.is_empty() {
            return CgroupSupport {
                version: CgroupVersion::None,
                parents,
                writable: false,
                problem: Some(format!("no cgroup v2 or v1 controllers under {MOUNT}")),
                note: None,
            };
        }
        let problems: Vec<String> = parents
            .iter()
            .filter_map(|(_, p)| try_create(p).err().map(|e| format!("{}: {e}", p.display())))
            .collect();
        CgroupSupport {
            version: CgroupVersion::V1,
            writable: problems.is_empty(),
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            note: None,
            parents,
        }
    }

    /// Creates a cgroup for one step with `limits` applied.
    pub fn create(&self, limits: &Limits) -> Result<StepCgroup, CgroupError> {
        if !self.writable {
            return Err(CgroupError::NotWritable(
                self.problem.as_deref().unwrap_or("no cgroupfs").to_string(),
            ));
        }
        let name = unique_name();
        let mut cgroup = StepCgroup {
            version: self.version.clone(),
            dirs: Vec::new(),
            limits: *limits,
        };
        for (controller, parent) in &self.parents {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir).map_err(|source| CgroupError::Io {
                what: format!("create {}", dir.display()),
                source,
            })?;
            cgroup.dirs.push((controller.clone(), dir));
        }
        cgroup.apply()?;
        Ok(cgroup)
    }
}

/// The leaf a container's processes move into (docker-in-docker's name).
const LEAF: &str = "init";

/// Moves every process of the v2 cgroup `dir` into its child [`LEAF`];
/// returns how many moved. Processes that exit meanwhile are skipped; new
/// ones (forked during the move) are caught by the next pass.
fn evacuate(dir: &Path) -> std::io::Result<usize> {
    let leaf = dir.join(LEAF);
    match std::fs::create_dir(&leaf) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let mut moved = 0;
    for _ in 0..10 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
        if procs.trim().is_empty() {
            return Ok(moved);
        }
        for pid in procs.split_whitespace() {
            match std::fs::write(leaf.join("cgroup.procs"), pid) {
                Ok(()) => moved += 1,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Err(std::io::Error::other(
        "processes kept appearing in the cgroup while they were moved out",
    ))
}

fn enable_v2_controllers(parent: &Path) -> std::io::Result<()> {
    let available = std::fs::read_to_string(parent.join("cgroup.controllers"))?;
    let wanted: Vec<String> = ["memory", "pids", "cpu"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    std::fs::write(parent.join("cgroup.subtree_control"), wanted.join(" "))
}

fn try_create(parent: &Path) -> std::io::Result<()> {
    let probe = parent.join(unique_name());
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    std::fs::write(dir.join(file), value).map_err(|source| CgroupError::Io {
        what: format!("write {value} to {}", dir.join(file).display()),
        source,
    })
}

/// A cgroup made for one step; removed (with everything in it killed) by
/// [`StepCgroup::finish`] or on drop.
#[derive(Debug)]
pub struct StepCgroup {
    version: CgroupVersion,
    dirs: Vec<(String, PathBuf)>,
    limits: Limits,
}

/// What the kernel recorded about a step's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupEvents {
    /// Processes the OOM killer killed.
    pub oom_kills: u64,
    /// Forks refused by the pids limit.
    pub pids_refused: u64,
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl StepCgroup {
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            _ => self
                .dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    fn apply(&self) -> Result<(), CgroupError> {
        let v2 = self.version == CgroupVersion::V2;
        if let Some(bytes) = self.limits.memory {
            let dir = self
                .dir_of("memory")
                .ok_or(CgroupError::NoController("memory"))?;
            if v2 {
                write(dir, "memory.max", &bytes.to_string())?;
                // Swap would let a step outgrow its limit slowly.
                let _ = write(dir, "memory.swap.max", "0");
            } else {
                write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
                }
            }
        }
        if let Some(pids) = self.limits.pids {
            let dir = self
                .dir_of("pids")
                .ok_or(CgroupError::NoController("pids"))?;
            write(dir, "pids.max", &pids.to_string())?;
        }
        if let Some(cpus) = self.limits.cpus {
            let dir = self.dir_of("cpu").ok_or(CgroupError::NoController("cpu"))?;
            let period = 100_000u64;
            let quota = ((cpus * period as f64).round() as u64).max(1000);
            if v2 {
                write(dir, "cpu.max", &format!("{quota} {period}"))?;
            } else {
                write(dir, "cpu.cfs_period_us", &period.to_string())?;
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes "0" to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// The limits this cgroup enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reads the OOM and pids counters.
    pub fn events(&self) -> CgroupEvents {
        let read = |controller: &str, file: &str| {
            self.dir_of(controller)
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
                .unwrap_or_default()
        };
        match self.version {
            CgroupVersion::V2 => CgroupEvents {
                oom_kills: counter(&read("memory", "memory.events"), "oom_kill"),
                pids_refused: counter(&read("pids", "pids.events"), "max"),
            },
            _ => CgroupEvents {
                oom_kills: counter(&read("memory", "memory.oom_control"), "oom_kill"),
                pids_refused: counter(&read("pids", "pids.events"), "max"),
            },
        }
    }

    /// Kills everything left inside and removes the cgroup.
    pub fn finish(mut self) -> CgroupEvents {
        let events = self.events();
        self.teardown();
        events
    }

    fn teardown(&mut self) {
        for _ in 0..200 {
            let mut alive = false;
            for (_, dir) in &self.dirs {
                if self.version == CgroupVersion::V2 && dir.join("cgroup.kill").exists() {
                    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
                }
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    alive = true;
                    // SAFETY: sending a signal to a pid we read from our cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (_, dir) in self.dirs.drain(..) {
            for _ in 0..100 {
                match std::fs::remove_dir(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(oom, "oom_kill"), 3);
        assert_eq!(
            counter("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n", "max"),
            7
        );
        assert_eq!(counter("", "max"), 0);
    }
}
