//! The build graph handed to the scheduler: one op per node (a
//! [`SourceOp`] for a base, a [`StepOp`] running an [`Exec`] or a
//! [`File`] for a step), every lookup done at once with the hits' blobs
//! claimed by the build's lease, then [`scheduler::run`].

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::exec::Exec;
use super::file::File;
use super::shared::{OpResult, Shared};
use super::source::SourceOp;
use super::step::StepOp;
use super::BuildError;
use crate::cache::CacheEntry;
use crate::progress::Event;
use crate::scheduler::{self, Dag, Input};
use crate::solver::graph::{Dependency, OpKind};
use crate::solver::StepKind;

/// The ops of one build, as the scheduler sees them.
type BuildOp =
    dyn scheduler::Op<Output = OpResult, Hit = CacheEntry, Error = BuildError, Event = Event>;

/// Runs the ops the target needs: ready ops start as soon as what they
/// wait for is done, a bounded number at a time. A cache hit needs its
/// parent (it stacks on it) but not its `--from` inputs, so stages only
/// hits read from are skipped.
pub(super) fn solve(
    shared: &Arc<Shared>,
    lease: &mut crate::gc::Lease,
    log: &mut dyn FnMut(&Event),
) -> Result<HashMap<NodeIndex, OpResult>, BuildError> {
    let dag = dag(shared);
    // All lookups at once, each hit's blob claimed as it is found.
    let hits = lease
        .hold(|| {
            let hits = scheduler::lookup(&dag);
            let blobs = hits
                .values()
                .filter_map(|e| e.layer.as_ref().map(|l| l.digest.clone()))
                .collect();
            (hits, blobs)
        })
        .map_err(|e| super::environment(format!("recording the lease: {e}")))?;
    let target = shared.plan.stages.last().expect("a target").index;
    let tail = *shared.graph().stages[&target].last().expect("non-empty");
    // Steps mostly wait (on processes, disks, networks): at least four at
    // once even on a two-core machine, as many as the cores beyond that.
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .clamp(4, 16);
    let options = scheduler::Options {
        parallel,
        cancel: scheduler::Cancel::with_flag(shared.runner.cancel_flag()),
    };
    let solved = scheduler::run(&dag, &[tail.index()], hits, &options, &mut |e| log(&e)).map_err(
        |failure| match failure {
            scheduler::Failure::Op { error, .. } => error,
            scheduler::Failure::Panicked { message, .. } => super::environment(message),
            scheduler::Failure::Cancelled => super::step_failed("the build was cancelled"),
            scheduler::Failure::Runtime(message) => super::environment(message),
        },
    )?;
    Ok(solved
        .outputs
        .into_iter()
        .map(|(node, result)| (NodeIndex::new(node), result))
        .collect())
}

/// The scheduler's DAG of `shared`'s graph: node for node, in the graph's
/// order (parents and inputs are always added before the ops that use
/// them), so a scheduler node is the graph node of the same index.
fn dag(shared: &Arc<Shared>) -> Dag<BuildOp> {
    let graph = shared.graph();
    let mut dag: Dag<BuildOp> = Dag::default();
    for node in graph.graph.node_indices() {
        let op = &graph.graph[node];
        let key = op.key.to_string();
        let built: Arc<BuildOp> = match op.kind {
            OpKind::Source => Arc::new(SourceOp {
                shared: shared.clone(),
                node,
                key,
            }),
            _ => step_op(shared, node, key),
        };
        let inputs = graph
            .graph
            .edges_directed(node, petgraph::Direction::Incoming)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                Input {
                    node: e.source().index(),
                    on_hit: *e.weight() == Dependency::Parent,
                }
            })
            .collect();
        let added = dag.add(built, inputs);
        assert_eq!(added, node.index(), "graph keys are unique");
    }
    dag
}

/// The op of step node `node`: what makes its layer decides its type.
fn step_op(shared: &Arc<Shared>, node: NodeIndex, key: String) -> Arc<BuildOp> {
    let (stage, step) = shared.graph().graph[node].uses[0];
    let step = &shared.stage(stage).steps[step.expect("a step")];
    let shared = shared.clone();
    match &step.kind {
        StepKind::Run(run) => Arc::new(StepOp {
            shared,
            node,
            key,
            maker: Exec(run.clone()),
        }),
        StepKind::Copy(copy) => Arc::new(StepOp {
            shared,
            node,
            key,
            maker: File::Copy(copy.clone()),
        }),
        StepKind::Mkdir { path, user } => Arc::new(StepOp {
            shared,
            node,
            key,
            maker: File::Mkdir {
                path: path.clone(),
                user: user.clone(),
            },
        }),
    }
}
