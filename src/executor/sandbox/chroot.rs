//! The chroot tier: no namespaces at all (for root in containers whose
//! seccomp profile forbids unshare; auto's last resort, with a warning). The command runs in its own session
//! chrooted into a directory root, and its process group is killed
//! afterwards. Nothing can be mounted, so a spec that needs a mount is
//! refused, and `/dev` gets real nodes where CAP_MKNOD allows.

use std::path::Path;

use super::dev::make_dev_nodes;
use super::mountpoint::{write_stub_report, RootBuilder};
use super::process::{exec_command, stdin_from_dev_null, wait_with_lifeline};
use super::spec::{Network, RootFs, SandboxSpec, SETUP_FAILED};
use super::sys::{LinuxSys, Sys};
use crate::executor::confine::Posture;

/// Runs the step in the chroot tier and returns its exit code.
pub(super) fn run_chroot(spec: &SandboxSpec, posture: &Posture) -> i32 {
    let root = match chroot_root(spec) {
        Ok(root) => root,
        Err(why) => {
            eprintln!("rbuild sandbox: {why}");
            return SETUP_FAILED;
        }
    };
    prepare_dev(&LinuxSys, root, spec);
    run_chrooted(root, spec, posture)
}

/// The directory to chroot into, or why this tier cannot run the spec.
fn chroot_root(spec: &SandboxSpec) -> Result<&Path, &'static str> {
    let RootFs::Dir(root) = &spec.root else {
        return Err("the chroot tier needs a directory root, not overlay");
    };
    if !spec.mounts.is_empty() {
        return Err("the chroot tier cannot mount (RUN --mount needs a namespace tier)");
    }
    if spec.network == Network::None {
        return Err("the chroot tier shares the network (--network=none needs a namespace tier)");
    }
    Ok(root)
}

/// The default device nodes in the root's `/dev`, reported as stubs.
/// Best effort, as the step may run without them.
fn prepare_dev(sys: &dyn Sys, root: &Path, spec: &SandboxSpec) {
    if let Ok(mut builder) = RootBuilder::new(sys, root) {
        make_dev_nodes(&mut builder);
        if let Some(report) = &spec.stub_report {
            let _ = write_stub_report(report, &builder.stubs);
        }
    }
}

/// Forks the command into a session of its own chrooted at `root`, waits
/// for it, then kills what is left of its process group.
fn run_chrooted(root: &Path, spec: &SandboxSpec, posture: &Posture) -> i32 {
    // SAFETY: fork in a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => SETUP_FAILED,
        0 => {
            stdin_from_dev_null();
            // SAFETY: a plain syscall in the child before exec.
            unsafe { libc::setsid() };
            if let Err(e) = LinuxSys.chroot(root) {
                eprintln!("rbuild sandbox: chroot {}: {e}", root.display());
                // SAFETY: leave the child.
                unsafe { libc::_exit(SETUP_FAILED) }
            }
            let _ = std::env::set_current_dir("/");
            let (code, message) = exec_command(spec, posture);
            eprintln!("rbuild sandbox: {message}");
            // SAFETY: leave the child.
            unsafe { libc::_exit(code) }
        }
        pid => {
            // SAFETY (both closures): signalling the step's process group.
            let code = wait_with_lifeline(pid, &|| unsafe {
                libc::kill(-pid, libc::SIGKILL);
            });
            // SAFETY: kill the step's process group (its session leader's pid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::executor::sandbox::spec::{MountKind, MountSpec, Stub};
    use crate::executor::sandbox::sys::{scratch_root, Call, RecordingSys};

    #[test]
    fn the_chroot_tier_refuses_a_spec_that_needs_a_mount() {
        let dir = SandboxSpec::example(RootFs::Dir(PathBuf::from("/r")));
        assert_eq!(chroot_root(&dir), Ok(Path::new("/r")));
        let overlay = SandboxSpec::example(RootFs::Overlay {
            base: PathBuf::from("/b"),
            lowers: vec!["l".into()],
            upper: "u".into(),
            work: "w".into(),
            merged: PathBuf::from("/m"),
        });
        assert!(chroot_root(&overlay)
            .unwrap_err()
            .contains("directory root"));
        let mut mounts = dir.clone();
        mounts.mounts.push(MountSpec {
            target: "/tmp".into(),
            kind: MountKind::Tmpfs { size: None },
        });
        assert!(chroot_root(&mounts).unwrap_err().contains("RUN --mount"));
        let mut network = dir;
        network.network = Network::None;
        assert!(chroot_root(&network)
            .unwrap_err()
            .contains("--network=none"));
    }

    #[test]
    fn the_chroot_tiers_dev_nodes_are_reported_as_stubs_and_nothing_is_mounted() {
        let (scratch, root) = scratch_root();
        let report = scratch.path().join("stubs.json");
        let mut spec = SandboxSpec::example(RootFs::Dir(root.clone()));
        spec.stub_report = Some(report.clone());
        let sys = RecordingSys::new(scratch.path());
        prepare_dev(&sys, &root, &spec);
        assert!(sys.mounts().is_empty());
        assert_eq!(sys.calls().len(), 7, "{:#?}", sys.calls());
        assert!(sys
            .calls()
            .iter()
            .skip(1)
            .all(|c| matches!(c, Call::MknodChar(..))));
        let stubs: Vec<Stub> = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let paths: Vec<&str> = stubs.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/null",
                "dev/zero",
                "dev/full",
                "dev/random",
                "dev/urandom",
                "dev/tty"
            ]
        );
    }
}
