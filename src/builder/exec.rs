//! The Exec op: a RUN in its sandbox. Its mounts are made ready here
//! (stages mounted `from=`, a `#!` heredoc's script, the rest through
//! `executor::mounts`), its environment completed, and the step runner
//! does the rest.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::shared::{OpResult, Shared};
use super::step::{Job, MakesLayer};
use super::BuildError;
use crate::executor::mounts::{MountContext, PreparedMounts};
use crate::executor::sandbox::Network;
use crate::executor::{MountKind, MountSpec, Step};
use crate::parser::{MountType, NetworkMode};
use crate::snapshot::backend::View;
use crate::snapshot::Layer;
use crate::solver::dispatch::RunStep;
use crate::solver::FromSource;

/// A RUN step.
pub(super) struct Exec(pub(super) RunStep);

impl MakesLayer for Exec {
    fn layer(&self, job: &Job<'_>) -> Result<Option<Layer>, BuildError> {
        let (shared, run, at) = (job.shared, &self.0, job.at);
        let mut ready = ReadyMounts::default();
        ready.stages(shared, run, job.from, at)?;
        let context = mount_context(shared, std::mem::take(&mut ready.stage_roots));
        let mut prepared = PreparedMounts::prepare(&ready.other, &context).map_err(|e| {
            let machine = e.is_environment();
            super::classed(at, e, machine)
        })?;
        prepared.mounts.append(&mut ready.stage_mounts);
        if let Some((name, body)) = &run.script {
            prepared.mounts.push(ready.script(shared, name, body, at)?);
        }
        let mut env = run.env.clone();
        env.extend(run.proxy_env.iter().cloned());
        env.extend(prepared.env.iter().cloned());
        if let Some(socket) = &prepared.ssh_auth_sock {
            // As BuildKit: the first agent is the default one, unless the
            // Dockerfile chose its own.
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={socket}"));
            }
        }
        let step = Step {
            layers: job.parents.to_vec(),
            args: run.args.clone(),
            env,
            cwd: run.workdir.clone(),
            user: run.user.clone(),
            network: match (shared.options.network, run.network) {
                (Network::None, _) | (_, NetworkMode::None) => Network::None,
                (_, NetworkMode::Host) => Network::Host,
                (network, NetworkMode::Default) => network,
            },
            network_resolv_conf: shared.options.network_resolv_conf.clone(),
            security: match run.security {
                crate::parser::SecurityMode::Insecure => {
                    crate::executor::confine::Security::Insecure
                }
                crate::parser::SecurityMode::Sandbox => crate::executor::confine::Security::Sandbox,
            },
            mounts: prepared.mounts.clone(),
            layer_bytes: job.layer_bytes.clone(),
        };
        let mut sink = |stream, line: &[u8]| {
            let text = String::from_utf8_lossy(line);
            (job.output)(stream, text.trim_end_matches('\n').to_string());
        };
        let outcome = shared
            .runner
            .run(&step, &mut sink)
            .map_err(|e| BuildError::of_step(at, e))?;
        // Mount helpers (proxies, locks) and temporary dirs go with the step.
        drop(prepared);
        drop(ready);
        if let Some(failure) = outcome.failure {
            return Err(format!("{at}: {failure}").into());
        }
        Ok(outcome.layer)
    }
}

/// What the step's mounts need besides themselves.
fn mount_context(shared: &Shared, stage_roots: HashMap<String, PathBuf>) -> MountContext {
    let options = &shared.options;
    MountContext {
        storage: options.storage.clone(),
        context: options.context.clone(),
        secrets: options.secrets.clone(),
        stage_roots,
        ssh: options.ssh.clone(),
    }
}

/// A RUN's mounts of stages and scripts, made ready here, and the rest
/// for `executor::mounts`; with the temporary dirs they need kept.
#[derive(Default)]
struct ReadyMounts {
    stage_mounts: Vec<MountSpec>,
    other: Vec<crate::parser::Mount>,
    stage_roots: HashMap<String, PathBuf>,
    /// Temporary dirs and trees lent out of the snapshot store.
    keep: Vec<Box<dyn Send>>,
}

impl ReadyMounts {
    /// Stages mounted with `from=`, as the snapshot back-end's view of
    /// them: snapshot lower dirs mounted read-only (overlay), or a tree
    /// lent out of the snapshot store or made for the step (a read-only
    /// bind of it, or a copy for `rw`, as `executor::mounts` makes).
    fn stages(
        &mut self,
        shared: &Shared,
        run: &RunStep,
        from: &HashMap<usize, &OpResult>,
        at: &str,
    ) -> Result<(), BuildError> {
        let steps = shared.runner.steps();
        for (m, source) in run.mounts.iter().zip(&run.mount_sources) {
            match (source, &m.from) {
                (Some(FromSource::Stage(j)), Some(name)) => {
                    let dir = shared.temp_dir("stage-root-", at)?;
                    let layers = &from[j].layers;
                    // A bind reads the stage as the back-end gives it;
                    // a cache mount starts from a copy of its files.
                    let view = match m.kind {
                        MountType::Bind => steps.view(&shared.store, layers, dir.path()),
                        _ => steps.view_dir(&shared.store, layers, dir.path()),
                    }
                    .map_err(|e| super::environment(format!("{at}: stage {name}: {e}")))?;
                    match view {
                        View::Lowers { base, lowers } => self.stage_mounts.push(MountSpec {
                            target: m.target.clone().unwrap_or_default(),
                            kind: MountKind::StageRoot {
                                base,
                                lowers,
                                staging: dir.path().to_path_buf(),
                                subpath: m.source.clone().unwrap_or_else(|| ".".into()),
                            },
                        }),
                        View::Dir { path, loan } => {
                            self.keep.extend(loan.map(|l| Box::new(l) as Box<dyn Send>));
                            self.stage_roots.insert(name.clone(), path);
                            self.other.push(m.clone());
                        }
                    }
                    self.keep.push(Box::new(dir));
                }
                (Some(FromSource::Image(image)), _) => {
                    return Err(format!(
                        "{at}: --mount from={image}: mounting images is not supported yet"
                    )
                    .into())
                }
                _ => self.other.push(m.clone()),
            }
        }
        Ok(())
    }

    /// `RUN <<EOF` with a `#!` line runs the body as a file, mounted
    /// read-only at /dev/pipes as BuildKit does.
    fn script(
        &mut self,
        shared: &Shared,
        name: &str,
        body: &str,
        at: &str,
    ) -> Result<MountSpec, BuildError> {
        let dir = shared.temp_dir("script-", at)?;
        let file = dir.path().join(name);
        let io = |e: std::io::Error| super::environment(format!("{at}: {e}"));
        std::fs::write(&file, body).map_err(io)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        let mount = MountSpec {
            target: "/dev/pipes".to_string(),
            kind: MountKind::Bind {
                source: dir.path().to_path_buf(),
                readonly: true,
            },
        };
        self.keep.push(Box::new(dir));
        Ok(mount)
    }
}
