//! A sequential, single-stage builder: `FROM busybox|scratch` followed by
//! RUN, ENV, WORKDIR, USER, SHELL, CMD, ENTRYPOINT and LABEL, each RUN in a
//! real sandbox, each change a real layer, the result a stored image.
//!
//! It exists to drive the sandbox and the snapshot differ end to end
//! (`rbuild debug run`) before the solver does: no DAG, no cache, no COPY.
//! The solver replaces it; what it computes (configs, history, layers) is
//! what the solver will compute for the same steps.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::image::{History, HistoryBuilder};

use crate::cache::ContentStore;
use crate::executor::mounts::{MountContext, PreparedMounts, SecretSource};
use crate::executor::{CgroupSupport, Executor, Limits, Plan, Step, StepRunner, Stream};
use crate::image::busybox::build_base;
use crate::image::config::{ImageConfig, RunConfig};
use crate::image::layer::LayerBlob;
use crate::image::layout::{store_image, StoredImage};
use crate::image::media::MediaTypes;
use crate::parser::shell::Lexer;
use crate::parser::{Dockerfile, InstructionKind, NetworkMode};
use crate::snapshot::{LayerRef, SnapshotStore};

/// Settings for a linear build.
#[derive(Debug, Clone)]
pub struct LinearOptions {
    /// `$RBUILD_ROOT`: content store, snapshots, cache mounts.
    pub storage: PathBuf,
    /// The isolation plan.
    pub plan: Plan,
    /// Cgroup support found by the probe.
    pub cgroups: CgroupSupport,
    /// Limits for every RUN.
    pub limits: Limits,
    /// `--network=none` for every RUN.
    pub network_none: bool,
    /// Clamp layer mtimes and set created times.
    pub source_date_epoch: Option<i64>,
    /// The busybox binary `FROM busybox` is built from.
    pub busybox: PathBuf,
    /// Build context (for bind mounts).
    pub context: Option<PathBuf>,
    /// Secrets by id.
    pub secrets: HashMap<String, SecretSource>,
}

/// The image built and where its blobs are.
#[derive(Debug)]
pub struct Built {
    /// The content store holding every blob.
    pub store: ContentStore,
    /// The image.
    pub image: StoredImage,
    /// Steps that ran.
    pub steps: usize,
}

fn created(epoch: Option<i64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    rfc3339(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A command's argv: the shell form behind SHELL, the exec form as is.
fn argv(command: &crate::parser::CommandLine, shell: &[String]) -> Vec<String> {
    if command.prepend_shell {
        let mut args = shell.to_vec();
        args.push(command.args.join(" "));
        args
    } else {
        command.args.clone()
    }
}

fn history(created: &str, by: String, empty: bool) -> Result<History, String> {
    let mut builder = HistoryBuilder::default()
        .created(created.to_string())
        .created_by(by)
        .comment("buildkit.dockerfile.v0".to_string());
    if empty {
        builder = builder.empty_layer(true);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Runs the last stage of `dockerfile`; `log` gets progress and output lines.
pub fn build(
    dockerfile: &Dockerfile,
    options: &LinearOptions,
    executor: Executor,
    log: &mut dyn FnMut(&str),
) -> Result<Built, String> {
    let store = ContentStore::open(&options.storage).map_err(|e| e.to_string())?;
    let snapshots =
        SnapshotStore::open(options.storage.join("snapshots")).map_err(|e| e.to_string())?;
    let stage = dockerfile
        .stages
        .last()
        .ok_or("the Dockerfile has no FROM")?;
    if dockerfile.stages.len() > 1 {
        return Err("debug run builds one stage; multi-stage needs the solver".to_string());
    }
    let (mut config, mut layers): (ImageConfig, Vec<LayerBlob>) = match stage.from.image.as_str() {
        "scratch" => (
            ImageConfig {
                created: None,
                author: None,
                architecture: crate::image::busybox::host_architecture().to_string(),
                os: "linux".to_string(),
                variant: None,
                config: Some(RunConfig::default()),
                rootfs: oci_spec::image::RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(Vec::<String>::new())
                    .build()
                    .map_err(|e| e.to_string())?,
                history: Vec::new(),
            },
            Vec::new(),
        ),
        "busybox" => {
            let base =
                build_base(&store, &options.busybox, MediaTypes::Oci).map_err(|e| e.to_string())?;
            let bytes = store.read(&base.config_digest).map_err(|e| e.to_string())?;
            (
                ImageConfig::from_blob(&bytes).map_err(|e| e.to_string())?,
                base.layers,
            )
        }
        other => {
            return Err(format!(
                "debug run knows FROM busybox (built from {}) and FROM scratch, not {other}",
                options.busybox.display()
            ))
        }
    };
    let runner = StepRunner::new(
        executor,
        options.plan.clone(),
        store.clone(),
        snapshots,
        options.cgroups.clone(),
        options.limits,
        options.source_date_epoch,
    )?;
    let when = created(options.source_date_epoch);
    let lexer = Lexer::new(dockerfile.directives.escape);
    let mut run_config = config.config.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = run_config
        .oci
        .env()
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut workdir = run_config.oci.working_dir().clone().unwrap_or_default();
    let mut user = run_config.oci.user().clone().unwrap_or_default();
    let mut shell = run_config
        .shell
        .clone()
        .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()]);
    let mount_ctx = MountContext {
        storage: options.storage.clone(),
        context: options.context.clone(),
        secrets: options.secrets.clone(),
    };
    let mut steps = 0;
    let total = stage.instructions.len() + 1;
    log(&format!("[1/{total}] FROM {}", stage.from.image));
    for (index, instruction) in stage.instructions.iter().enumerate() {
        let at = format!(
            "{}:{}",
            instruction.span.start.line, instruction.span.start.column
        );
        log(&format!("[{}/{total}] {}", index + 2, instruction.original));
        let expand = |word: &str, env: &[(String, String)]| {
            lexer
                .process_word(word, env)
                .map_err(|e| format!("line {at}: {}", e.message))
        };
        let empty_history = |by: String, config: &mut ImageConfig| -> Result<(), String> {
            config.history.push(history(&when, by, true)?);
            Ok(())
        };
        match &instruction.kind {
            InstructionKind::Run(run) => {
                let args = argv(&run.command, &shell);
                let prepared = PreparedMounts::prepare(&run.mounts, &mount_ctx)
                    .map_err(|e| format!("line {at}: {e}"))?;
                let mut step_env: Vec<String> =
                    env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                step_env.extend(prepared.env.iter().cloned());
                let parents: Vec<LayerRef> = layers
                    .iter()
                    .map(|l| LayerRef {
                        digest: l.digest.clone(),
                        diff_id: l.diff_id.clone(),
                    })
                    .collect();
                let step = Step {
                    layers: parents,
                    args: args.clone(),
                    env: step_env,
                    cwd: if workdir.is_empty() {
                        "/".to_string()
                    } else {
                        workdir.clone()
                    },
                    user: user.clone(),
                    network_none: options.network_none || run.network == Some(NetworkMode::None),
                    mounts: prepared.mounts.clone(),
                };
                let mut sink = |stream: Stream, line: &[u8]| {
                    let text = String::from_utf8_lossy(line);
                    let prefix = if stream == Stream::Stderr { "! " } else { "  " };
                    log(&format!("{prefix}{}", text.trim_end_matches('\n')));
                };
                let outcome = runner
                    .run(&step, &mut sink)
                    .map_err(|e| format!("line {at}: {e}"))?;
                drop(prepared);
                steps += 1;
                if let Some(failure) = outcome.failure {
                    return Err(format!(
                        "{}:{at}: {}: {failure}",
                        "Dockerfile", instruction.original
                    ));
                }
                let layer = outcome.layer.expect("a successful step has a layer");
                let by = format!("RUN {} # buildkit", args.join(" "));
                if is_empty_layer(&store, &layer)? {
                    config.history.push(history(&when, by, true)?);
                } else {
                    config.history.push(history(&when, by, false)?);
                    layers.push(layer);
                }
            }
            InstructionKind::Env(pairs) => {
                for kv in pairs {
                    let value = expand(&kv.value, &env)?;
                    env.retain(|(k, _)| k != &kv.key);
                    env.push((kv.key.clone(), value));
                }
                empty_history(
                    format!(
                        "ENV {}",
                        instruction.original.trim_start_matches("ENV ").trim()
                    ),
                    &mut config,
                )?;
            }
            InstructionKind::Workdir(dir) => {
                let dir = expand(dir, &env)?;
                workdir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", workdir.trim_end_matches('/'))
                };
                empty_history(format!("WORKDIR {workdir}"), &mut config)?;
            }
            InstructionKind::User(u) => {
                user = expand(u, &env)?;
                empty_history(format!("USER {user}"), &mut config)?;
            }
            InstructionKind::Shell(s) => {
                shell = s.clone();
                empty_history(format!("SHELL {s:?}"), &mut config)?;
            }
            InstructionKind::Cmd(c) => {
                let args = argv(c, &shell);
                run_config.oci.set_cmd(Some(args.clone()));
                empty_history(format!("CMD {args:?}"), &mut config)?;
            }
            InstructionKind::Entrypoint(c) => {
                let args = argv(c, &shell);
                run_config.oci.set_entrypoint(Some(args.clone()));
                run_config.oci.set_cmd(None);
                empty_history(format!("ENTRYPOINT {args:?}"), &mut config)?;
            }
            InstructionKind::Label(pairs) => {
                let mut labels = run_config.oci.labels().clone().unwrap_or_default();
                for kv in pairs {
                    labels.insert(expand(&kv.key, &env)?, expand(&kv.value, &env)?);
                }
                run_config.oci.set_labels(Some(labels));
                empty_history(
                    format!(
                        "LABEL {}",
                        instruction.original.trim_start_matches("LABEL ").trim()
                    ),
                    &mut config,
                )?;
            }
            _ => {
                return Err(format!(
                "Dockerfile:{at}: {}: debug run does not handle this instruction (the solver will)",
                instruction.original
            ))
            }
        }
    }
    run_config
        .oci
        .set_env(Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()));
    run_config
        .oci
        .set_working_dir((!workdir.is_empty()).then_some(workdir));
    run_config.oci.set_user((!user.is_empty()).then_some(user));
    config.config = Some(run_config);
    config.created = Some(when);
    config.rootfs = oci_spec::image::RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let image =
        store_image(&store, &config, &layers, MediaTypes::Oci).map_err(|e| e.to_string())?;
    Ok(Built {
        store,
        image,
        steps,
    })
}

/// Whether a layer's tar has no entries (BuildKit leaves such steps out
/// of the layer list and marks their history `empty_layer`).
fn is_empty_layer(store: &ContentStore, layer: &LayerBlob) -> Result<bool, String> {
    let reader =
        crate::snapshot::store::open_layer(store, &layer.digest).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(|e| e.to_string())?;
    Ok(entries.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
