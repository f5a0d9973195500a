//! The sandbox helper: the single-threaded process that builds a RUN's
//! namespaces, mounts and root, then runs the command.
//!
//! `rbuild` re-executes itself with a hidden subcommand and the spec as JSON
//! on stdin (DESIGN: never `unshare` from the multithreaded tokio process).
//! The helper unshares mount, pid, uts and ipc (and net for
//! `--network=none`) namespaces and forks; the child is PID 1 of the new pid
//! namespace: it makes the mount tree private, mounts a fresh `/proc`, a
//! minimal `/dev` and a read-only `/sys`, pivots into the rootfs, and forks
//! the command as PID 2, reaping every orphan until it exits. When PID 1
//! exits, the kernel kills whatever the step left behind.
//!
//! The files, each using only those before it: `spec` (the step as
//! data), `sys` (the syscalls that build the root, behind a trait the
//! tests record), `mountpoint` (mount points in the root and their
//! stubs), `dev`, `kernelfs` (`/proc`, `/dev`, `/sys`), `remap` (the
//! remapped user namespace), `rootfs` (the root in order, and the pivot),
//! `netns` (`--network=none` for host root without CAP_NET_ADMIN),
//! `netstack` (the default network's slirp4netns and routes), `process`
//! (namespaces, init, exec, waits) and `chroot` (the tier
//! without namespaces).

use std::io::BufRead;

use super::confine;

mod chroot;
mod dev;
mod kernelfs;
mod mountpoint;
mod netns;
mod netstack;
mod process;
mod remap;
mod rootfs;
mod spec;
mod sys;

pub use netstack::{stack_problem, STACK_DNS};
pub(crate) use process::{enter_user_namespace, full_range};
pub(crate) use remap::{enter_for_probe as enter_remapped_for_probe, probe as probe_remap};
pub use spec::{
    IdRange, MountKind, MountSpec, Namespaces, Network, Remap, RootFs, SandboxSpec, Stub,
    COPY_MACHINE_FAILED, SETUP_FAILED,
};
pub(crate) use sys::{mount, mount_volatile_overlay, pipe, read_all, LinuxSys, SetupError};

/// Entry point of the hidden helper subcommand: reads the spec from stdin,
/// creates the namespaces and returns the command's exit code.
pub fn helper_main() -> i32 {
    // One line of JSON; the pipe then stays open as the caller's lifeline.
    let mut text = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut text) {
        eprintln!("rbuild sandbox: reading the spec: {e}");
        return SETUP_FAILED;
    }
    let mut spec: SandboxSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rbuild sandbox: invalid spec: {e}");
            return SETUP_FAILED;
        }
    };
    if let Some(copy) = &spec.copy {
        return match process::copy_in_root(&spec, copy) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                match e {
                    SetupError::Copy(c) if c.is_environment() => COPY_MACHINE_FAILED,
                    _ => 1,
                }
            }
        };
    }
    if spec.args.is_empty() {
        eprintln!("rbuild sandbox: no command");
        return SETUP_FAILED;
    }
    if let Err(e) = process::join_cgroups(&spec) {
        eprintln!("rbuild sandbox: {e}");
        return SETUP_FAILED;
    }
    // Before the cgroups and namespaces: slirp4netns runs as the host's.
    let keeper = match spec.network {
        Network::Private if spec.namespaces != Namespaces::Chroot => {
            match netstack::Keeper::fork(spec.in_userns(), spec.network_resolv_conf.as_deref()) {
                Ok(keeper) => Some(keeper),
                Err(e) => {
                    eprintln!("rbuild sandbox: {e}");
                    return SETUP_FAILED;
                }
            }
        }
        _ => None,
    };
    let posture = process::posture_for(&spec);
    if spec.namespaces == Namespaces::Chroot {
        confine::protect_self();
        return chroot::run_chroot(&spec, &posture);
    }
    let entered = match spec.remap.clone() {
        Some(remap) => process::enter_remapped(&mut spec, &remap),
        None if spec.userns => process::enter_user_namespace(),
        None => Ok(()),
    };
    if let Err(e) = entered {
        eprintln!("rbuild sandbox: {e}");
        return SETUP_FAILED;
    }
    // After the id maps are written (they are /proc/self files that a
    // non-dumpable process no longer owns).
    confine::protect_self();
    process::run_in_namespaces(&spec, &posture, keeper)
}
