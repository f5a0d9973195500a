//! `RUN --mount=type=ssh` with `--ssh`, against real OpenSSH agents: a
//! static probe (`tests/fixtures/ssh_probe.c`) asks the forwarded socket
//! for its identities inside the step, so what it lists is what the real
//! agent holds. Covered: `--ssh default` ($SSH_AUTH_SOCK) at the default
//! target with SSH_AUTH_SOCK set, `--ssh ID=KEY` (a private agent) at a
//! chosen target with uid and mode, an optional mount whose id was not
//! forwarded (skipped), a required one (a clear error), and no socket or
//! stub left in the image.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use common::{build_and_unpack, is_root, run_ok, skip, stderr};

fn ready() -> bool {
    for tool in ["ssh-agent", "ssh-add", "ssh-keygen", "gcc"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            skip(&format!(
                "{tool} is not installed (apt-get install openssh-client gcc)"
            ));
            return false;
        }
    }
    if !is_root() {
        skip("RUN in the full tier needs root");
        return false;
    }
    true
}

/// The probe, compiled once per test binary.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| common::static_probe("ssh_probe"))
}

fn key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path),
    );
    path
}

/// A real ssh-agent on a socket of its own, killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for k in keys {
            run_ok(Command::new("ssh-add").arg(k).env("SSH_AUTH_SOCK", &socket));
        }
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_mounts_forward_agents_and_leave_nothing_behind() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let agent_key = key(&keys, "agent-key");
    let file_key = key(&keys, "file-key");
    let agent = Agent::start(work.path(), &[&agent_key]);
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(probe(), ctx.join("ssh_probe")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         COPY ssh_probe /probe\n\
         RUN --mount=type=ssh /probe > /default.txt; echo \"sock=$SSH_AUTH_SOCK\" >> /default.txt\n\
         RUN --mount=type=ssh,id=keys,target=/k.sock,uid=1000,mode=0660 \
             /probe /k.sock > /keys.txt; stat -c '%u %a %F' /k.sock >> /keys.txt\n\
         RUN --mount=type=ssh,id=absent /probe > /absent.txt || echo skipped >> /absent.txt\n\
         RUN --mount=type=ssh,id=absent --mount=type=ssh ls /run/buildkit > /numbered.txt\n",
    )
    .unwrap();
    let keys = format!("keys={}", file_key.display());
    let (_, rootfs) = build_and_unpack(
        &ctx,
        work.path(),
        &["--ssh", "default", "--ssh", &keys],
        &[("SSH_AUTH_SOCK", agent.socket.to_str().unwrap())],
    );
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(
        read("default.txt"),
        "identities 1\nkey agent-key\nsock=/run/buildkit/ssh_agent.0\n"
    );
    assert_eq!(
        read("keys.txt"),
        "identities 1\nkey file-key\n1000 660 socket\n"
    );
    assert_eq!(read("absent.txt"), "no SSH_AUTH_SOCK\nskipped\n");
    // The second SSH mount of a RUN is number 1 even when the first was
    // left out, as BuildKit numbers them.
    assert_eq!(read("numbered.txt"), "ssh_agent.1\n");
    assert!(
        !rootfs.join("k.sock").exists(),
        "the socket's stub is in the image"
    );
    assert!(
        !rootfs.join("run/buildkit/ssh_agent.0").exists(),
        "the default socket's stub is in the image"
    );
}

#[test]
fn a_required_ssh_mount_without_an_agent_fails_clearly() {
    if !ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--root"])
        .arg(work.path().join("root"))
        .arg(&ctx)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2:") && err.contains("ssh agent default is required"),
        "{err}"
    );
    // --ssh default with no agent in the environment is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["build", "--progress=plain", "--ssh", "default", "--root"])
        .arg(work.path().join("root"))
        .arg(&ctx)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SSH_AUTH_SOCK is not set"),
        "{}",
        stderr(&out)
    );
}
