//! The content each step's cache key needs, computed before anything
//! runs: the selected context files' digest, a git source's commit, a
//! download's digest, or the key of a stage read from.

use std::collections::HashMap;

use super::shared::Shared;
use super::BuildError;
use crate::blob::Digest;
use crate::parser::MountType;
use crate::solver::{self, FromSource, StepKind};

/// The content digests a step's key needs: a COPY's sources (see
/// [`copy_inputs`]), a RUN's bind mounts of the context or of stages.
pub(super) fn step_inputs(
    shared: &Shared,
    stage: &solver::StagePlan,
    step: &solver::Step,
    stage_keys: &HashMap<usize, Digest>,
) -> Result<Vec<Option<Digest>>, BuildError> {
    let at = format!(
        "Dockerfile:{}:{}: {}",
        step.line,
        step.column,
        super::shown(step)
    );
    let _ = stage;
    match &step.kind {
        StepKind::Run(run) => Ok(run
            .mounts
            .iter()
            .zip(&run.mount_sources)
            .map(|(m, from)| match (&m.kind, from, &shared.options.context) {
                // A mounted stage is known by its final cache key.
                (_, Some(FromSource::Stage(j)), _) => stage_keys.get(j).cloned(),
                (MountType::Bind, None, Some(context)) => {
                    let source = m.source.as_deref().unwrap_or(".").trim_start_matches('/');
                    crate::solver::keys::tree_digest(&context.join(source)).ok()
                }
                _ => None,
            })
            .collect()),
        StepKind::Copy(copy) => copy_inputs(shared, copy, stage_keys, &at),
        StepKind::Mkdir { .. } => Ok(Vec::new()),
    }
}

/// The content each COPY source contributes to the cache key: the
/// selected context files' digest, or the key of the stage (or manifest
/// of the image) copied from. Heredoc bodies are in the step itself.
fn copy_inputs(
    ctx: &Shared,
    copy: &solver::CopyStep,
    stage_keys: &HashMap<usize, Digest>,
    at: &str,
) -> Result<Vec<Option<Digest>>, BuildError> {
    let from = match &copy.from {
        Some(FromSource::Stage(j)) => Some(stage_keys[j].clone()),
        Some(FromSource::Image(name)) => Some(ctx.bases[name].manifest_digest.clone()),
        None => None,
    };
    let mut tree = None;
    copy.spec
        .sources
        .iter()
        .map(|source| match source {
            crate::parser::Source::Heredoc(_) => Ok(None),
            crate::parser::Source::Path(_) if from.is_some() => Ok(from.clone()),
            crate::parser::Source::Path(p) if !copy.add && crate::context::git::is_git(p) => {
                Err(format!("{at}: source can't be a git ref for COPY (use ADD)").into())
            }
            crate::parser::Source::Path(p) if !copy.add && crate::context::remote::is_url(p) => {
                Err(format!("{at}: source can't be a URL for COPY (use ADD)").into())
            }
            crate::parser::Source::Path(p) if crate::context::git::is_git(p) => {
                let (_, checkout) = ctx.checkout(p, &copy.spec, at)?;
                // The commit names the files (a kept .git differs from
                // one checkout to the next, so it is not hashed); the
                // source itself, with its subdir, is in the key already.
                let named = format!("git\0{}\0{}", checkout.commit, checkout.git_dir);
                Ok(Some(Digest::from_sha256(
                    <sha2::Sha256 as sha2::Digest>::digest(named.as_bytes()).into(),
                )))
            }
            crate::parser::Source::Path(url) if copy.add && crate::context::remote::is_url(url) => {
                let (_, file) = ctx.download(url, copy.spec.checksum.as_deref(), at)?;
                Ok(Some(file.digest))
            }
            crate::parser::Source::Path(p) => {
                if tree.is_none() {
                    tree = Some(context_tree(ctx, &copy.spec.exclude, at)?);
                }
                let tree = tree.as_ref().expect("just set");
                tree.digest(std::slice::from_ref(p))
                    .map(Some)
                    .map_err(|e| super::of_context(at, e))
            }
        })
        .collect()
}

fn context_tree<'a>(
    ctx: &'a Shared,
    exclude: &[String],
    at: &str,
) -> Result<crate::context::SourceTree<'a>, BuildError> {
    let Some(context) = &ctx.options.context else {
        return Err(format!("{at}: COPY from the context needs a build context").into());
    };
    crate::context::SourceTree::new(context, &ctx.options.ignore, exclude)
        .map(|tree| tree.with_cache(&ctx.hashes))
        .map_err(|e| super::of_context(at, e))
}
