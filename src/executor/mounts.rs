//! `RUN --mount`: turning parsed mounts into host paths the sandbox binds.
//!
//! Cache mounts are persistent dirs under `$RBUILD_ROOT/cache-mounts`
//! keyed by id, with docker's sharing modes (shared: used together;
//! locked: one user at a time, others wait on a file lock; private: a busy
//! cache gives the next user a fresh throwaway dir). Secrets are copied to
//! a private tmpfs file (or passed as an environment variable) that only
//! the sandbox sees and that is deleted with the step; they never reach
//! the root, so never a layer, the cache or a log. Bind mounts from the
//! context stay inside it; a writable bind gets a throwaway copy, so the
//! context is never changed. Mounts from other stages need the solver.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::sandbox::{MountKind, MountSpec};
use crate::parser::{CacheSharing, Mount, MountType};

/// Why a RUN's `--mount`s could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount asks for what cannot be given (no target, a `from=` that
    /// is not a stage, a bad size): the Dockerfile's to fix.
    #[error("{0}")]
    Spec(String),
    /// What the mount needs was not handed to the build (a required
    /// secret or agent, an environment variable, a bind source).
    #[error("{0}")]
    Missing(String),
    /// The machine failed while making it ready (the cache directory,
    /// the secret's tmpfs, the lock).
    #[error("{what}: {source}")]
    Io {
        /// What was being made ready.
        what: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}

impl MountError {
    /// A failure of the machine while preparing `what`.
    fn io(what: impl std::fmt::Display, source: std::io::Error) -> MountError {
        MountError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// A mount the Dockerfile asks for that cannot be made.
    fn spec(why: impl Into<String>) -> MountError {
        MountError::Spec(why.into())
    }

    /// Whether the machine, not the build's inputs, is to blame.
    pub fn is_environment(&self) -> bool {
        matches!(self, MountError::Io { .. })
    }
}

/// Where a secret's value comes from (`--secret id=…,src=…|env=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the build host.
    File(PathBuf),
    /// An environment variable of the rbuild process.
    Env(String),
}

/// What mounts are resolved against.
#[derive(Debug, Clone, Default)]
pub struct MountContext {
    /// `$RBUILD_ROOT`.
    pub storage: PathBuf,
    /// The build context directory, if any.
    pub context: Option<PathBuf>,
    /// Secrets by id.
    pub secrets: HashMap<String, SecretSource>,
    /// Roots of other stages for `from=`, by the name the mount uses.
    pub stage_roots: HashMap<String, PathBuf>,
    /// The SSH agents `--ssh` forwards.
    pub ssh: Option<std::sync::Arc<super::ssh::Forwards>>,
}

/// Mounts ready for one step; holds locks and temporary files until dropped.
#[derive(Debug, Default)]
pub struct PreparedMounts {
    /// The sandbox mounts.
    pub mounts: Vec<MountSpec>,
    /// Extra environment (`type=secret,env=…`); never logged.
    pub env: Vec<String>,
    /// Where the first SSH mount's socket is (`SSH_AUTH_SOCK`, unless the
    /// step's environment sets it).
    pub ssh_auth_sock: Option<String>,
    /// SSH mounts seen so far, forwarded or not (default targets count
    /// them all, as BuildKit numbers every SSH mount of a RUN).
    ssh_mounts: usize,
    // Dropped first: proxies stop before their directories go.
    proxies: Vec<super::ssh::Proxy>,
    locks: Vec<std::fs::File>,
    temps: Vec<tempfile::TempDir>,
}

fn secret_dir(storage: &Path) -> std::io::Result<tempfile::TempDir> {
    // A tmpfs keeps secret bytes off disk where there is one.
    let fallback = storage.join("tmp");
    let _ = std::fs::create_dir_all(&fallback);
    for base in [Path::new("/dev/shm"), &fallback] {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("rbuild-secret-")
            .tempdir_in(base)
        {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
            return Ok(dir);
        }
    }
    tempfile::tempdir()
}

fn lock(path: &Path, wait: bool) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let mode = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(file.as_fd(), mode) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        std::fs::set_permissions(to, meta.permissions())?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

impl PreparedMounts {
    /// Resolves `mounts` for one step.
    pub fn prepare(mounts: &[Mount], ctx: &MountContext) -> Result<PreparedMounts, MountError> {
        let mut out = PreparedMounts::default();
        for m in mounts {
            let target = m.target.clone();
            match m.kind {
                MountType::Tmpfs => {
                    let target = target
                        .ok_or_else(|| MountError::spec("--mount=type=tmpfs needs target="))?;
                    let size = match &m.size {
                        Some(s) => Some(crate::units::parse_size(s).map_err(MountError::Spec)?),
                        None => None,
                    };
                    out.mounts.push(MountSpec {
                        target,
                        kind: MountKind::Tmpfs { size },
                    });
                }
                MountType::Cache => out.cache(m, ctx)?,
                MountType::Secret => out.secret(m, ctx)?,
                MountType::Bind => out.bind(m, ctx)?,
                MountType::Ssh => out.ssh(m, ctx)?,
            }
        }
        Ok(out)
    }

    /// A bind of host `source` on `target` in the step's root.
    fn push_bind(&mut self, target: String, source: PathBuf, readonly: bool) {
        self.mounts.push(MountSpec {
            target,
            kind: MountKind::Bind { source, readonly },
        });
    }

    fn cache(&mut self, m: &Mount, ctx: &MountContext) -> Result<(), MountError> {
        let target = m
            .target
            .clone()
            .ok_or_else(|| MountError::spec("--mount=type=cache needs target="))?;
        if m.from.is_some() {
            return Err(MountError::spec(
                "--mount=type=cache,from=… needs the multi-stage solver (not yet)",
            ));
        }
        let id = m.id.clone().unwrap_or_else(|| target.clone());
        // BuildKit keys a cache by its id and, when uid, gid or mode is
        // given, by the directory they make (mounts.go getRefCacheDir:
        // id + ":" + the base's ref): another owner is another cache.
        let keyed = match (m.uid, m.gid, m.mode) {
            (None, None, None) => id.clone(),
            (uid, gid, mode) => format!(
                "{id}\0{}:{}:{:o}",
                uid.unwrap_or(0),
                gid.unwrap_or(0),
                mode.unwrap_or(0o755)
            ),
        };
        let key = hex(&Sha256::digest(keyed.as_bytes()))[..32].to_string();
        let base = ctx.storage.join("cache-mounts");
        std::fs::create_dir_all(&base).map_err(|e| MountError::io(base.display(), e))?;
        let dir = base.join(&key);
        let lock_path = base.join(format!("{key}.lock"));
        let io = |e: std::io::Error| MountError::io(format!("cache mount {id}"), e);
        let source = match m.sharing.unwrap_or_default() {
            CacheSharing::Shared => dir.clone(),
            CacheSharing::Locked => {
                self.locks
                    .push(lock(&lock_path, true).map_err(io)?.expect("blocking lock"));
                dir.clone()
            }
            CacheSharing::Private => match lock(&lock_path, false).map_err(io)? {
                Some(held) => {
                    self.locks.push(held);
                    dir.clone()
                }
                None => {
                    let temp = tempfile::Builder::new()
                        .prefix("private-")
                        .tempdir_in(&base)
                        .map_err(io)?;
                    let path = temp.path().join("dir");
                    self.temps.push(temp);
                    path
                }
            },
        };
        if !source.exists() {
            std::fs::create_dir_all(&source).map_err(io)?;
            let mode = m.mode.unwrap_or(0o755);
            std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode)).map_err(io)?;
            chown_as_root(&source, m).map_err(io)?;
        }
        self.push_bind(target, source, m.readonly);
        Ok(())
    }

    fn secret(&mut self, m: &Mount, ctx: &MountContext) -> Result<(), MountError> {
        let id =
            m.id.clone()
                .or_else(|| {
                    m.target
                        .as_deref()
                        .and_then(|t| Path::new(t).file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .ok_or_else(|| MountError::spec("--mount=type=secret needs id= or target="))?;
        let value = match ctx.secrets.get(&id) {
            Some(SecretSource::File(path)) => std::fs::read(path).map_err(|e| {
                MountError::Missing(format!("secret {id}: reading {}: {e}", path.display()))
            })?,
            Some(SecretSource::Env(var)) => std::env::var_os(var)
                .ok_or_else(|| {
                    MountError::Missing(format!(
                        "secret {id}: environment variable {var} is not set"
                    ))
                })?
                .into_encoded_bytes(),
            None if m.required => {
                return Err(MountError::Missing(format!(
                    "secret {id} is required but was not provided (--secret id={id},src=…)"
                )))
            }
            None => return Ok(()),
        };
        if let Some(var) = &m.env {
            let text = String::from_utf8(value.clone()).map_err(|_| {
                MountError::spec(format!(
                    "secret {id} is not UTF-8 and cannot be an environment variable"
                ))
            })?;
            self.env.push(format!("{var}={text}"));
            if m.target.is_none() {
                return Ok(());
            }
        }
        let io = |e: std::io::Error| MountError::io(format!("secret {id}"), e);
        let dir = secret_dir(&ctx.storage).map_err(io)?;
        let file = dir.path().join("secret");
        std::fs::write(&file, &value).map_err(io)?;
        let mode = m.mode.unwrap_or(0o400);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        chown_as_root(&file, m).map_err(io)?;
        let target = m.target.clone();
        self.push_bind(
            target.unwrap_or_else(|| format!("/run/secrets/{id}")),
            file,
            true,
        );
        self.temps.push(dir);
        Ok(())
    }

    /// An agent socket for the step: a proxy to the agent `--ssh` forwards
    /// as the mount's id, at `target` (default
    /// `/run/buildkit/ssh_agent.N`, N counting the step's SSH mounts).
    fn ssh(&mut self, m: &Mount, ctx: &MountContext) -> Result<(), MountError> {
        let id = m.id.clone().unwrap_or_else(|| "default".to_string());
        let index = self.ssh_mounts;
        self.ssh_mounts += 1;
        let Some(agent) = ctx.ssh.as_ref().and_then(|f| f.socket(&id)) else {
            if m.required {
                return Err(MountError::Missing(format!(
                    "ssh agent {id} is required but was not forwarded (--ssh {id} or --ssh {id}=SOCKET|KEY)"
                )));
            }
            return Ok(());
        };
        let io = |e: std::io::Error| MountError::io(format!("ssh agent {id}"), e);
        let dir = secret_dir(&ctx.storage).map_err(io)?;
        let socket = dir.path().join("agent.sock");
        let proxy = super::ssh::Proxy::start(&socket, agent).map_err(io)?;
        std::fs::set_permissions(
            &socket,
            std::fs::Permissions::from_mode(m.mode.unwrap_or(0o600)),
        )
        .map_err(io)?;
        chown_as_root(&socket, m).map_err(io)?;
        let target = m
            .target
            .clone()
            .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{index}"));
        if self.ssh_auth_sock.is_none() {
            self.ssh_auth_sock = Some(target.clone());
        }
        self.push_bind(target, socket, true);
        self.proxies.push(proxy);
        self.temps.push(dir);
        Ok(())
    }

    fn bind(&mut self, m: &Mount, ctx: &MountContext) -> Result<(), MountError> {
        let target = m
            .target
            .clone()
            .ok_or_else(|| MountError::spec("--mount=type=bind needs target="))?;
        let context = match &m.from {
            Some(from) => ctx.stage_roots.get(from).ok_or_else(|| {
                MountError::spec(format!("--mount=type=bind,from={from}: only stages of this Dockerfile can be mounted yet"))
            })?,
            None => ctx
                .context
                .as_ref()
                .ok_or_else(|| MountError::spec("--mount=type=bind needs a build context"))?,
        };
        let context = context
            .canonicalize()
            .map_err(|e| MountError::io(format!("build context {}", context.display()), e))?;
        let rel = m.source.as_deref().unwrap_or(".").trim_start_matches('/');
        let source = context
            .join(rel)
            .canonicalize()
            .map_err(|e| MountError::Missing(format!("bind source {rel}: {e}")))?;
        if !source.starts_with(&context) {
            return Err(MountError::spec(format!(
                "bind source {rel} is outside the mounted root"
            )));
        }
        let source = if m.readonly {
            source
        } else {
            // Writes are allowed but thrown away, as in docker.
            let scratch = ctx.storage.join("tmp");
            std::fs::create_dir_all(&scratch).map_err(|e| MountError::io(scratch.display(), e))?;
            let temp = tempfile::Builder::new()
                .prefix("bind-")
                .tempdir_in(ctx.storage.join("tmp"))
                .map_err(|e| MountError::io(format!("bind {rel}"), e))?;
            let copy = temp.path().join("src");
            copy_tree(&source, &copy).map_err(|e| MountError::io(format!("bind {rel}"), e))?;
            self.temps.push(temp);
            copy
        };
        self.push_bind(target, source, m.readonly);
        Ok(())
    }
}

/// Gives `path` the mount's `uid=`/`gid=` (default root); only root can,
/// and in a rootless build everything is the caller's anyway.
fn chown_as_root(path: &Path, m: &Mount) -> std::io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(m.uid.unwrap_or(0))),
        Some(rustix::fs::Gid::from_raw(m.gid.unwrap_or(0))),
    )?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
