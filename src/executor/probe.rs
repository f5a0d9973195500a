//! What this environment lets a sandbox do, and the isolation tier chosen
//! from it.
//!
//! The probes run once, in the re-executed single-threaded helper (never
//! `unshare` in the tokio process), each in a forked child so one probe's
//! namespaces never leak into the next: user namespace, mount namespace,
//! pid namespace with a fresh /proc, overlay (with `userxattr` in a user
//! namespace) on the real storage dir, chroot. Cgroups are probed by the
//! caller (plain file writes). [`choose`] turns the results and the
//! `--isolation` request into a [`Plan`] or a refusal that names the failed
//! probes and what would unlock more.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::{CgroupSupport, CgroupVersion};
use super::sandbox::{mount, IdRange, Namespaces, SetupError};

/// One probe's outcome: `None` when it worked, the error otherwise.
pub type Outcome = Option<String>;

/// Namespace probes run in one mode (directly, or inside a user namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceProbes {
    /// Whether these ran inside a new user namespace.
    pub userns: bool,
    /// Creating the user namespace (when `userns`).
    pub enter_userns: Outcome,
    /// unshare(CLONE_NEWNS) and a tmpfs mount.
    pub mountns: Outcome,
    /// unshare(CLONE_NEWPID) and mounting a fresh /proc.
    pub pidns_proc: Outcome,
    /// Mounting overlay over the storage dir, and deleting through it.
    pub overlay: Outcome,
}

/// Everything probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probes {
    /// Effective uid of the caller.
    pub euid: u32,
    /// Namespace probes without a user namespace (only tried as root).
    pub direct: Option<NamespaceProbes>,
    /// Namespace probes inside a new user namespace (tried when not root,
    /// or when root could not create namespaces directly).
    pub user: Option<NamespaceProbes>,
    /// chroot(2) into a directory.
    pub chroot: Outcome,
    /// Remapping a step's ids (root only): an overlay of idmapped layers
    /// inside a user namespace mapped to an unused host range, with the
    /// owners a step sets landing on disk unshifted.
    #[serde(default)]
    pub remap: RemapProbe,
    /// Cgroup hierarchy and whether it is writable.
    pub cgroup: CgroupSupport,
}

/// The remap probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemapProbe {
    /// Not tried (not root, or no mount namespace).
    #[default]
    Untried,
    /// It worked.
    Works,
    /// Why not.
    Failed(String),
}

/// What `--isolation` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IsolationRequest {
    /// The strongest tier the probes allow (never chroot or inplace).
    #[default]
    Auto,
    /// Namespaces including pid, with a fresh /proc.
    Full,
    /// Namespaces without a pid namespace.
    Nopidns,
    /// No namespaces: chroot into a copied root (auto picks it only for
    /// root where no namespace can be made).
    Chroot,
    /// kaniko-style, in the build container's own root (opt-in).
    Inplace,
}

/// How snapshots are made for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Overlay over shared lower dirs; the diff walks the upper dir.
    Overlay,
    /// A copied root per step; the diff walks before and after.
    Copy,
}

/// The chosen tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Tier name as DESIGN.md and `rbuild info` show it.
    pub tier: String,
    /// Namespaces a step gets.
    pub namespaces: Namespaces,
    /// Whether a user namespace maps the caller to root.
    pub userns: bool,
    /// How snapshots are made.
    pub snapshots: SnapshotMode,
    /// Whether per-step cgroups (and so limits) are available.
    pub cgroups: bool,
    /// Real root only: the host ids a step's ids run as (a user namespace
    /// over idmapped mounts), so a step's root is no host root.
    #[serde(default)]
    pub remap: Option<IdRange>,
    /// Why auto chose the chroot tier (no namespace could be made), for
    /// the build's warning; None when the tier was asked for or is not
    /// chroot.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// Picks the tier for `request`, or explains why none is possible.
pub fn choose(probes: &Probes, request: IsolationRequest) -> Result<Plan, String> {
    let cgroups = probes.cgroup.writable;
    let usable: Vec<&NamespaceProbes> = [probes.direct.as_ref(), probes.user.as_ref()]
        .into_iter()
        .flatten()
        .filter(|p| p.enter_userns.is_none() && p.mountns.is_none())
        .collect();
    let with_pidns = usable.iter().find(|p| p.pidns_proc.is_none());
    let plan_for = |p: &NamespaceProbes, namespaces: Namespaces| {
        let overlay = p.overlay.is_none();
        let tier = match (namespaces, overlay, p.userns) {
            (_, false, true) => "rootless-copy",
            (Namespaces::Full, _, _) => "full",
            _ => "nopidns",
        };
        Plan {
            tier: tier.to_string(),
            namespaces,
            userns: p.userns,
            snapshots: if overlay {
                SnapshotMode::Overlay
            } else {
                SnapshotMode::Copy
            },
            cgroups,
            remap: (!p.userns && probes.remap == RemapProbe::Works).then(IdRange::for_this_host),
            fallback: None,
        }
    };
    let chroot = |fallback: Option<String>| Plan {
        tier: "chroot".to_string(),
        namespaces: Namespaces::Chroot,
        userns: false,
        snapshots: SnapshotMode::Copy,
        cgroups,
        remap: None,
        fallback,
    };
    match request {
        IsolationRequest::Auto | IsolationRequest::Full => {
            if let Some(p) = with_pidns {
                return Ok(plan_for(p, Namespaces::Full));
            }
            if request == IsolationRequest::Auto {
                if let Some(p) = usable.first() {
                    return Ok(plan_for(p, Namespaces::NoPidns));
                }
                // Root where no namespace can be made (docker's default
                // seccomp profile, RuntimeDefault pods): the chroot tier,
                // as kaniko runs there, rather than no RUN at all. It
                // never replaces the container's own root.
                if probes.euid == 0 && probes.chroot.is_none() {
                    return Ok(chroot(Some(failed_probes(probes).join("; "))));
                }
            }
        }
        IsolationRequest::Nopidns => {
            if let Some(p) = usable.first() {
                return Ok(plan_for(p, Namespaces::NoPidns));
            }
        }
        IsolationRequest::Chroot => {
            if probes.chroot.is_none() {
                return Ok(chroot(None));
            }
        }
        IsolationRequest::Inplace => {
            return Err("--isolation=inplace is not supported yet; \
                 use --isolation=chroot in a dedicated build container"
                .to_string())
        }
    }
    Err(refusal(probes, request))
}

fn refusal(probes: &Probes, request: IsolationRequest) -> String {
    let failed: Vec<String> = failed_probes(probes)
        .iter()
        .map(|line| format!("  {line}"))
        .collect();
    let wanted = match request {
        IsolationRequest::Full => "the full tier (pid namespace with a fresh /proc)",
        IsolationRequest::Nopidns => "the nopidns tier (a mount namespace)",
        IsolationRequest::Chroot => "the chroot tier",
        _ => "any namespace tier",
    };
    format!(
        "cannot run RUN steps here: {wanted} is not available.\nFailed probes:\n{}\n\
         To unlock more: run as root, or allow unprivileged user namespaces \
         (sysctl user.max_user_namespaces > 0, kernel.apparmor_restrict_unprivileged_userns=0); \
         in Kubernetes use a privileged pod, or hostUsers: false with procMount: Unmasked and a \
         seccomp profile that allows unshare and mount (see docs/kubernetes); in a dedicated \
         build container, --isolation=chroot (root in the container) needs no namespaces. \
         Builds without RUN steps still work.",
        failed.join("\n")
    )
}

/// Every failed namespace or chroot probe, one line each.
fn failed_probes(probes: &Probes) -> Vec<String> {
    let mut failed = Vec::new();
    for p in [probes.direct.as_ref(), probes.user.as_ref()]
        .into_iter()
        .flatten()
    {
        let mode = if p.userns {
            "in a user namespace"
        } else {
            "as root"
        };
        for (name, outcome) in [
            ("user namespace", &p.enter_userns),
            ("mount namespace", &p.mountns),
            ("pid namespace + /proc", &p.pidns_proc),
        ] {
            if let Some(e) = outcome {
                failed.push(format!("{name} ({mode}): {e}"));
            }
        }
    }
    if let Some(e) = &probes.chroot {
        failed.push(format!("chroot: {e}"));
    }
    failed
}

impl Probes {
    /// Human-readable lines for `rbuild info`.
    pub fn describe(&self) -> Vec<String> {
        let show = |o: &Outcome| match o {
            None => "ok".to_string(),
            Some(e) => format!("FAILED: {e}"),
        };
        let mut lines = vec![format!("euid: {}", self.euid)];
        for p in [self.direct.as_ref(), self.user.as_ref()]
            .into_iter()
            .flatten()
        {
            let mode = if p.userns { "user namespace" } else { "direct" };
            if p.userns {
                lines.push(format!("probe {mode}: create: {}", show(&p.enter_userns)));
            }
            lines.push(format!(
                "probe {mode}: mount namespace: {}",
                show(&p.mountns)
            ));
            lines.push(format!(
                "probe {mode}: pid namespace + /proc: {}",
                show(&p.pidns_proc)
            ));
            lines.push(format!("probe {mode}: overlay: {}", show(&p.overlay)));
        }
        lines.push(format!("probe chroot: {}", show(&self.chroot)));
        match &self.remap {
            RemapProbe::Untried => {}
            RemapProbe::Works => {
                lines.push("probe remap (idmapped overlay in a user namespace): ok".into())
            }
            RemapProbe::Failed(why) => lines.push(format!(
                "probe remap (idmapped overlay in a user namespace): FAILED: {why}"
            )),
        }
        let version = match self.cgroup.version {
            CgroupVersion::V2 => "v2",
            CgroupVersion::V1 => "v1",
            CgroupVersion::None => "none",
        };
        lines.push(format!(
            "cgroup: {version}, {}",
            if self.cgroup.writable {
                match &self.cgroup.note {
                    Some(note) => format!("writable (limits available; {note})"),
                    None => "writable (limits available)".to_string(),
                }
            } else {
                format!(
                    "not writable: {}",
                    self.cgroup.problem.as_deref().unwrap_or("?")
                )
            }
        ));
        lines
    }
}

// ---- the helper side -------------------------------------------------

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn unshare(flags: libc::c_int, what: &str) -> Result<(), SetupError> {
    // SAFETY: unshare in a forked single-threaded child.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(SetupError::sys(what, std::io::Error::last_os_error()))
    }
}

/// Runs `probe` in a forked child; its error text comes back over a pipe.
fn in_child(probe: impl FnOnce() -> Result<(), SetupError>) -> Outcome {
    let (read_end, write_end) = match super::sandbox::pipe() {
        Ok(ends) => ends,
        Err(e) => return Some(e.to_string()),
    };
    // SAFETY: fork in the single-threaded helper.
    match unsafe { libc::fork() } {
        -1 => Some(last_error("fork")),
        0 => {
            let result = probe();
            let code = match result {
                Ok(()) => 0,
                Err(e) => {
                    let message = e.to_string();
                    // SAFETY: writing our own buffer to our pipe end.
                    unsafe {
                        libc::write(
                            write_end.as_raw_fd(),
                            message.as_ptr().cast(),
                            message.len(),
                        )
                    };
                    1
                }
            };
            // SAFETY: leave the child without the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            // Our copy of the write end goes, so the read ends with the child.
            drop(write_end);
            let text = super::sandbox::read_all(&read_end);
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                None
            } else if text.is_empty() {
                Some(format!("probe died (status {status})"))
            } else {
                Some(text)
            }
        }
    }
}

fn enter(userns: bool) -> Result<(), SetupError> {
    if userns {
        super::sandbox::enter_user_namespace()
    } else {
        Ok(())
    }
}

/// In the caller's (user) namespace: a pid namespace and, as its PID 1,
/// a fresh `/proc` on `at`, as a step's init mounts it.
fn fresh_proc(at: &Path) -> Result<(), SetupError> {
    unshare(
        libc::CLONE_NEWNS | libc::CLONE_NEWPID,
        "unshare(CLONE_NEWNS|CLONE_NEWPID)",
    )?;
    let inner = in_child(|| {
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        mount(
            "proc",
            at,
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
        )
    });
    match inner {
        None => Ok(()),
        Some(e) => Err(SetupError::refused(e)),
    }
}

fn probe_namespaces(scratch: &Path, userns: bool) -> NamespaceProbes {
    let enter_userns = if userns {
        in_child(|| enter(true))
    } else {
        None
    };
    let mountns = in_child(|| {
        enter(userns)?;
        unshare(libc::CLONE_NEWNS, "unshare(CLONE_NEWNS)")?;
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        mount("tmpfs", &scratch.join("mnt"), "tmpfs", 0, "size=64k")
    });
    let pidns_proc = in_child(|| {
        enter(userns)?;
        fresh_proc(&scratch.join("proc"))
    });
    let overlay = in_child(|| {
        enter(userns)?;
        unshare(libc::CLONE_NEWNS, "unshare(CLONE_NEWNS)")?;
        mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")?;
        let mut data = format!(
            "lowerdir={},upperdir={},workdir={}",
            scratch.join("lower").display(),
            scratch.join("upper").display(),
            scratch.join("work").display()
        );
        if userns || crate::userns::nested() {
            data.push_str(",userxattr");
        }
        let merged = scratch.join("merged");
        // As a step mounts it (volatile: its unmount does not write back
        // the whole disk's dirty pages).
        super::sandbox::mount_volatile_overlay(&super::sandbox::LinuxSys, &merged, 0, &data)?;
        // A deletion needs a whiteout in the upper dir.
        std::fs::remove_file(merged.join("file"))
            .map_err(|e| SetupError::sys("delete through overlay", e))?;
        std::fs::write(merged.join("new"), b"x")
            .map_err(|e| SetupError::sys("write through overlay", e))?;
        // A directory made again where a lower one was needs an opaque
        // xattr (without `userxattr` in a user namespace: EIO).
        std::fs::remove_dir_all(merged.join("dir"))
            .and_then(|()| std::fs::create_dir(merged.join("dir")))
            .map_err(|e| SetupError::sys("replace a directory through overlay", e))
    });
    NamespaceProbes {
        userns,
        enter_userns,
        mountns,
        pidns_proc,
        overlay,
    }
}

/// The remap probe in a child, then a look at the owner it left on disk.
fn probe_remap(dir: &Path) -> Outcome {
    let prepared = ["lower", "merged", "stage", "proc"]
        .iter()
        .try_for_each(|d| std::fs::create_dir_all(dir.join(d)));
    if let Err(e) = prepared {
        return Some(format!("preparing {}: {e}", dir.display()));
    }
    if let Some(failed) = in_child(|| super::sandbox::probe_remap(dir)) {
        return Some(failed);
    }
    let proc = in_child(|| {
        super::sandbox::enter_remapped_for_probe(&dir.join("stage"))?;
        fresh_proc(&dir.join("proc"))
    });
    if let Some(failed) = proc {
        return Some(format!(
            "a fresh /proc in the remapped namespace: {failed} (a container that masks \
             /proc paths refuses it in a user namespace; procMount: Unmasked allows it)"
        ));
    }
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir.join("ws/upper/made-by-step")) {
        Ok(m) if m.uid() == 1000 && m.gid() == 1000 => None,
        Ok(m) => Some(format!(
            "a file chowned to 1000:1000 landed as {}:{}",
            m.uid(),
            m.gid()
        )),
        Err(e) => Some(format!("the file written through the overlay: {e}")),
    }
}

/// The helper's probe entry point: probes in `scratch` (a fresh dir on the
/// storage file system), prints the results as JSON and exits 0.
pub fn probe_main(scratch: &Path) -> i32 {
    let prepare = || -> std::io::Result<()> {
        for sub in [
            "mnt", "proc", "lower", "upper", "work", "merged", "work-u", "upper-u",
        ] {
            std::fs::create_dir_all(scratch.join(sub))?;
        }
        std::fs::create_dir_all(scratch.join("lower/dir"))?;
        std::fs::write(scratch.join("lower/dir/file"), b"x")?;
        std::fs::write(scratch.join("lower/file"), b"x")
    };
    if let Err(e) = prepare() {
        eprintln!("rbuild probe: preparing {}: {e}", scratch.display());
        return 1;
    }
    // SAFETY: plain getter.
    let euid = unsafe { libc::geteuid() };
    let direct = (euid == 0).then(|| probe_namespaces(scratch, false));
    let need_user = direct.as_ref().is_none_or(|d| d.mountns.is_some());
    let user = need_user.then(|| {
        // Fresh upper/work dirs: the direct overlay probe used the others.
        let _ = std::fs::remove_dir_all(scratch.join("upper"));
        let _ = std::fs::remove_dir_all(scratch.join("work"));
        let _ = std::fs::create_dir_all(scratch.join("upper"));
        let _ = std::fs::create_dir_all(scratch.join("work"));
        probe_namespaces(scratch, true)
    });
    let chroot = in_child(|| {
        let path = c(scratch);
        // SAFETY: chroot in a throwaway child.
        if unsafe { libc::chroot(path.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(SetupError::sys("chroot", std::io::Error::last_os_error()))
        }
    });
    // Idmapped layers need real root: root of a nested user namespace
    // cannot idmap the host's file system.
    let remap = direct
        .as_ref()
        .filter(|d| d.mountns.is_none() && !crate::userns::nested())
        .map_or(RemapProbe::Untried, |_| {
            match probe_remap(&scratch.join("remap")) {
                None => RemapProbe::Works,
                Some(why) => RemapProbe::Failed(why),
            }
        });
    let probes = Probes {
        euid,
        direct,
        user,
        chroot,
        remap,
        cgroup: CgroupSupport {
            version: CgroupVersion::None,
            parents: Vec::new(),
            writable: false,
            problem: None,
            note: None,
        },
    };
    match serde_json::to_string(&probes) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!("rbuild probe: {e}");
            1
        }
    }
}

/// Where probes ran.
pub fn scratch_dir(storage: &Path) -> PathBuf {
    storage.join("tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(userns: bool, mountns: bool, pidns: bool, overlay: bool) -> NamespaceProbes {
        let fail = |ok: bool| (!ok).then(|| "EPERM".to_string());
        NamespaceProbes {
            userns,
            enter_userns: None,
            mountns: fail(mountns),
            pidns_proc: fail(pidns),
            overlay: fail(overlay),
        }
    }

    fn probes(
        direct: Option<NamespaceProbes>,
        user: Option<NamespaceProbes>,
        chroot: bool,
    ) -> Probes {
        Probes {
            euid: if direct.is_some() { 0 } else { 1000 },
            direct,
            user,
            chroot: (!chroot).then(|| "EPERM".to_string()),
            remap: RemapProbe::Untried,
            cgroup: CgroupSupport {
                version: CgroupVersion::V1,
                parents: Vec::new(),
                writable: true,
                problem: None,
                note: None,
            },
        }
    }

    #[test]
    fn only_real_root_with_a_working_probe_is_remapped() {
        let mut root = probes(Some(ns(false, true, true, true)), None, true);
        assert_eq!(choose(&root, IsolationRequest::Auto).unwrap().remap, None);
        root.remap = RemapProbe::Works;
        let plan = choose(&root, IsolationRequest::Auto).unwrap();
        assert_eq!(plan.remap, Some(IdRange::for_this_host()));
        root.remap = RemapProbe::Failed("EINVAL".into());
        assert_eq!(choose(&root, IsolationRequest::Auto).unwrap().remap, None);
        let mut user = probes(None, Some(ns(true, true, true, true)), true);
        user.remap = RemapProbe::Works;
        assert_eq!(choose(&user, IsolationRequest::Auto).unwrap().remap, None);
    }

    #[test]
    fn tiers_follow_the_probes() {
        let root = probes(Some(ns(false, true, true, true)), None, true);
        let plan = choose(&root, IsolationRequest::Auto).unwrap();
        assert_eq!((plan.tier.as_str(), plan.userns), ("full", false));
        assert_eq!(plan.snapshots, SnapshotMode::Overlay);

        let masked_proc = probes(None, Some(ns(true, true, false, true)), false);
        let plan = choose(&masked_proc, IsolationRequest::Auto).unwrap();
        assert_eq!(plan.tier, "nopidns");
        assert!(choose(&masked_proc, IsolationRequest::Full)
            .unwrap_err()
            .contains("pid namespace + /proc (in a user namespace): EPERM"));

        let no_overlay = probes(None, Some(ns(true, true, true, false)), false);
        let plan = choose(&no_overlay, IsolationRequest::Auto).unwrap();
        assert_eq!(plan.tier, "rootless-copy");
        assert_eq!(plan.snapshots, SnapshotMode::Copy);

        let seccomp = probes(
            Some(ns(false, false, false, false)),
            Some(ns(true, false, false, false)),
            true,
        );
        // Root with no namespace: auto falls back to chroot, saying why.
        let plan = choose(&seccomp, IsolationRequest::Auto).unwrap();
        assert_eq!(plan.tier, "chroot");
        let why = plan.fallback.unwrap();
        assert!(why.contains("mount namespace (as root): EPERM"), "{why}");
        let asked = choose(&seccomp, IsolationRequest::Chroot).unwrap();
        assert_eq!((asked.tier.as_str(), asked.fallback), ("chroot", None));
        let refused = choose(&seccomp, IsolationRequest::Full).unwrap_err();
        assert!(refused.contains("--isolation=chroot"), "{refused}");
        // Not root, nothing works: a refusal naming every probe.
        let mut user = seccomp.clone();
        user.euid = 1000;
        user.chroot = Some("EPERM".into());
        let refused = choose(&user, IsolationRequest::Auto).unwrap_err();
        assert!(refused.contains("  chroot: EPERM"), "{refused}");
        assert!(choose(&seccomp, IsolationRequest::Inplace).is_err());
    }
}
