//! The build as a DAG of ops (`petgraph`), with every cache key computed
//! before anything runs.
//!
//! Each planned stage becomes a chain: a `Source` op for its base (an image
//! or scratch; `FROM <stage>` continues that stage's chain), then one op
//! per step: `Exec` for RUN, `File` for COPY/ADD and WORKDIR creation.
//! `COPY --from` and `RUN --mount from=` add `Input` edges from the other
//! stage's last op. Ops are keyed by content (see [`super::keys`]); two
//! ops with the same key are one node, so identical work in two stages is
//! done once.
//!
//! Config-only instructions (ENV, LABEL, USER, ...) are not nodes: the
//! dispatcher folds them into the stage's config and into the inputs (and
//! so the keys) of the steps after them, which is all a `Meta` op would do.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::dispatch::{Base, FromSource, Plan, StepKind};
use super::keys;
use crate::blob::Digest;

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A base image or `scratch`.
    Source,
    /// A RUN.
    Exec,
    /// A COPY, ADD or WORKDIR creation.
    File,
}

/// One node of the graph.
#[derive(Debug, Clone)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// Its identity in the graph (what it is, on top of what).
    pub key: Digest,
    /// The key its result is cached under: the same, except for `COPY
    /// --link`, whose layer does not depend on what it lands on.
    pub cache_key: Digest,
    /// Stage and step (index into the stage's steps) of every place in
    /// the plan this op stands for; `None` for a stage's base.
    pub uses: Vec<(usize, Option<usize>)>,
}

/// Why one op waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The op runs on top of this one's result.
    Parent,
    /// The op reads this stage's result (`--from`).
    Input,
}

/// The ops of a plan and where each stage's steps are in it.
#[derive(Debug, Clone)]
pub struct BuildGraph {
    /// Ops, with edges from each op to the ops that wait for it.
    pub graph: DiGraph<Op, Dependency>,
    /// Per stage (by plan index): its base's op, then one op per step.
    pub stages: HashMap<usize, Vec<NodeIndex>>,
}

/// The content digests a step's key needs: per COPY source or RUN mount,
/// given the keys of the stages built so far (`--from` inputs); its error
/// (the caller's own type) ends the graph's construction.
pub type InputDigests<'a, E> = dyn FnMut(
        &super::dispatch::StagePlan,
        &super::dispatch::Step,
        &HashMap<usize, Digest>,
    ) -> Result<Vec<Option<Digest>>, E>
    + 'a;

impl BuildGraph {
    /// Builds the graph of `plan` (stages in dependency order). `base_manifest`
    /// gives the manifest digest of an image base; `inputs` the content
    /// digests a step reads.
    pub fn new<E>(
        plan: &Plan,
        base_manifest: &dyn Fn(&str) -> Option<Digest>,
        inputs: &mut InputDigests<'_, E>,
    ) -> Result<BuildGraph, E> {
        let mut graph: DiGraph<Op, Dependency> = DiGraph::new();
        let mut by_key: HashMap<Digest, NodeIndex> = HashMap::new();
        let mut stages: HashMap<usize, Vec<NodeIndex>> = HashMap::new();
        let mut stage_keys: HashMap<usize, Digest> = HashMap::new();
        for stage in &plan.stages {
            let platform = stage.platform.format();
            let mut nodes = Vec::new();
            let base = match &stage.base {
                Base::Stage(j) => *stages[j].last().expect("a stage has a base op"),
                base => {
                    let manifest = match base {
                        Base::Image(name) => base_manifest(name),
                        _ => None,
                    };
                    let key = keys::base_key(base, manifest.as_ref(), None);
                    *by_key.entry(key.clone()).or_insert_with(|| {
                        graph.add_node(Op {
                            kind: OpKind::Source,
                            cache_key: key.clone(),
                            key,
                            uses: Vec::new(),
                        })
                    })
                }
            };
            graph[base].uses.push((stage.index, None));
            nodes.push(base);
            let mut parent = base;
            for (n, step) in stage.steps.iter().enumerate() {
                let step_inputs = inputs(stage, step, &stage_keys)?;
                let linked = matches!(&step.kind, StepKind::Copy(c) if c.spec.link);
                let (key, cache_key) = if linked {
                    // Keyed without its parent; the node still is one per parent.
                    let cache_key =
                        keys::step_key(&keys::link_parent(), &step.kind, &step_inputs, &platform);
                    let key =
                        keys::step_key(&graph[parent].key, &step.kind, &step_inputs, &platform);
                    (key, cache_key)
                } else {
                    let key =
                        keys::step_key(&graph[parent].key, &step.kind, &step_inputs, &platform);
                    (key.clone(), key)
                };
                let node = match by_key.get(&key) {
                    Some(&node) => node,
                    None => {
                        let kind = match step.kind {
                            StepKind::Run(_) => OpKind::Exec,
                            StepKind::Copy(_) | StepKind::Mkdir { .. } => OpKind::File,
                        };
                        let node = graph.add_node(Op {
                            kind,
                            key: key.clone(),
                            cache_key,
                            uses: Vec::new(),
                        });
                        by_key.insert(key, node);
                        graph.add_edge(parent, node, Dependency::Parent);
                        for j in step_sources(&step.kind) {
                            let from = *stages[&j].last().expect("built before");
                            graph.add_edge(from, node, Dependency::Input);
                        }
                        node
                    }
                };
                graph[node].uses.push((stage.index, Some(n)));
                nodes.push(node);
                parent = node;
            }
            stage_keys.insert(stage.index, graph[parent].key.clone());
            stages.insert(stage.index, nodes);
        }
        Ok(BuildGraph { graph, stages })
    }

    /// The ops `node` waits for.
    pub fn dependencies(&self, node: NodeIndex) -> Vec<NodeIndex> {
        self.graph
            .edges_directed(node, Direction::Incoming)
            .map(|e| e.source())
            .collect()
    }

    /// The op `node` runs on top of.
    pub fn parent(&self, node: NodeIndex) -> Option<NodeIndex> {
        self.graph
            .edges_directed(node, Direction::Incoming)
            .find(|e| *e.weight() == Dependency::Parent)
            .map(|e| e.source())
    }

    /// The key of a stage's result (its last op).
    pub fn stage_key(&self, stage: usize) -> &Digest {
        &self.graph[*self.stages[&stage].last().expect("non-empty")].key
    }
}

/// Stages a step reads from (`COPY --from`, `RUN --mount from=`).
pub fn step_sources(kind: &StepKind) -> Vec<usize> {
    match kind {
        StepKind::Run(run) => run
            .mount_sources
            .iter()
            .flatten()
            .filter_map(|s| match s {
                FromSource::Stage(j) => Some(*j),
                FromSource::Image(_) => None,
            })
            .collect(),
        StepKind::Copy(copy) => match copy.from {
            Some(FromSource::Stage(j)) => vec![j],
            _ => Vec::new(),
        },
        StepKind::Mkdir { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::{plan, PlanOptions, Platform};

    fn graph_of(text: &str, target: Option<&str>) -> (Plan, BuildGraph) {
        let df = crate::parser::parse(text, "Dockerfile").unwrap();
        let options = PlanOptions {
            build_args: Default::default(),
            target: target.map(str::to_string),
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            labels: Default::default(),
            created: "2000-01-01T00:00:00Z".into(),
        };
        let p = plan(&df, &options, &mut |_, platform| {
            Ok(crate::solver::dispatch::empty_config(platform))
        })
        .unwrap();
        let g = BuildGraph::new(&p, &|_| None, &mut |_, _, _| {
            Ok::<_, std::convert::Infallible>(Vec::new())
        })
        .unwrap();
        (p, g)
    }

    #[test]
    fn identical_steps_in_two_stages_are_one_op() {
        let (_, g) = graph_of(
            "FROM busybox AS a\nRUN echo shared\nRUN echo a\n\
             FROM busybox AS b\nRUN echo shared\nRUN echo b\n\
             FROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /y /y\n",
            None,
        );
        // busybox, shared, a, b, scratch, two copies.
        assert_eq!(g.graph.node_count(), 7);
        let shared = g.stages[&0][1];
        assert_eq!(g.stages[&1][1], shared);
        assert_eq!(g.graph[shared].uses, [(0, Some(0)), (1, Some(0))]);
        let last_copy = *g.stages[&2].last().unwrap();
        let deps = g.dependencies(last_copy);
        assert_eq!(deps.len(), 2, "parent and the --from stage");
        assert!(deps.contains(&g.stages[&1][2]));
        assert!(petgraph::algo::toposort(&g.graph, None).is_ok());
    }

    #[test]
    fn from_stage_continues_its_chain_and_unneeded_stages_are_absent() {
        let (p, g) = graph_of(
            "FROM busybox AS base\nRUN echo base\n\
             FROM busybox AS unused\nRUN exit 1\n\
             FROM base\nRUN echo child\n",
            None,
        );
        assert_eq!(p.stages.len(), 2);
        let child = &g.stages[&2];
        assert_eq!(child[0], *g.stages[&0].last().unwrap());
        assert_eq!(g.parent(child[1]), Some(child[0]));
        assert_eq!(g.graph[child[1]].kind, OpKind::Exec);
        assert_eq!(g.graph[g.stages[&0][0]].kind, OpKind::Source);
    }
}
