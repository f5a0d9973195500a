//! Running RUN steps in sandboxes: namespaces, a private mount tree, a
//! pivoted root, PID 1 reaping, and every leftover process killed at the end.
//!
//! Owns syscalls and processes, not Dockerfiles: the caller passes a
//! [`SandboxSpec`] (root, argv, env, cwd, user, network mode). The sandbox
//! runs in a re-executed, single-threaded copy of the `rbuild` binary
//! ([`sandbox::helper_main`] behind a hidden subcommand), never in the
//! multithreaded caller.

pub mod sandbox;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub use sandbox::{SandboxSpec, SETUP_FAILED};

/// The hidden subcommand the helper runs under.
pub const HELPER_SUBCOMMAND: &str = "__sandbox";

/// What a sandboxed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code (128 + signal when killed; 125 when the sandbox could not be set up).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// Starts sandboxes through a helper binary.
#[derive(Debug, Clone)]
pub struct Executor {
    helper: PathBuf,
}

impl Executor {
    /// Uses `helper` (an `rbuild` binary) to create sandboxes.
    pub fn new(helper: impl Into<PathBuf>) -> Executor {
        Executor {
            helper: helper.into(),
        }
    }

    /// Uses the running executable (when it is `rbuild`).
    pub fn current() -> std::io::Result<Executor> {
        Ok(Executor::new(std::env::current_exe()?))
    }

    /// Runs `spec` to completion and collects its output.
    pub fn run(&self, spec: &SandboxSpec) -> std::io::Result<RunOutput> {
        let mut child = Command::new(&self.helper)
            .arg(HELPER_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_clear()
            .spawn()?;
        let json = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
        child.stdin.take().expect("piped stdin").write_all(&json)?;
        let out = child.wait_with_output()?;
        Ok(RunOutput {
            code: out.status.code().unwrap_or(SETUP_FAILED),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
