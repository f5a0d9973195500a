//! The scheduler: runs a DAG of ops written against one small contract,
//! [`Op`], and knows nothing of Dockerfiles, layers or sandboxes.
//!
//! The contract follows BuildKit's `solver/types.go` (an op's cache map
//! before anything runs, its exec, and the resource it acquires), cut to
//! what rbuild needs:
//!
//! - [`Op::key`]: the op's identity, known before anything runs. It must
//!   cover the op's inputs (as a content cache key does), so two ops with
//!   one key are one op: [`Dag::add`] returns the node already there.
//! - [`Op::lookup`]: what the cache holds for it, asked for every op before
//!   the first one runs ([`lookup`]), so the caller can claim the hits
//!   against garbage collection in one step.
//! - [`Op::acquire`]: whether it takes one of the bounded worker slots.
//! - [`Op::exec`] runs it; [`Op::reuse`] makes its result from a hit
//!   instead, waiting only for the inputs marked [`Input::on_hit`] (a
//!   cached step still stacks on its parent, but needs no `--from` stage).
//! - [`Op::record`] stores a result in the cache, called only once `exec`
//!   returned it: an op that failed, panicked or was cancelled leaves no
//!   record.
//!
//! [`run`] starts every ready op at once up to the slot bound, on tokio's
//! blocking pool (ops block on processes and disks), forwards the events
//! ops emit to the caller's thread, and at the first failure cancels: no
//! new op starts, running ones see [`Context::cancelled`] (and whatever
//! watches the shared flag, like the step runner), and the first error is
//! the build's.

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A node of a [`Dag`]: its index in insertion order.
pub type NodeId = usize;

/// What an op holds while it runs (BuildKit's `Acquire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Nothing: it is cheap (a base image already pulled, scratch).
    Free,
    /// One of the [`Options::parallel`] worker slots.
    Worker,
}

/// The contract between the scheduler and the work it runs.
pub trait Op: Send + Sync + 'static {
    /// What the op produces; inputs are the outputs of earlier ops.
    type Output: Clone + Send + Sync + 'static;
    /// What a cache lookup finds.
    type Hit: Send + Sync + 'static;
    /// Why the op failed.
    type Error: Send + 'static;
    /// What the op reports while it runs (progress), delivered in order
    /// on the thread that called [`run`].
    type Event: Send + 'static;

    /// The op's identity, which covers its inputs.
    fn key(&self) -> &str;

    /// The cache's result for this op, if any (asked before anything runs).
    fn lookup(&self) -> Option<Self::Hit> {
        None
    }

    /// What the op holds while it runs.
    fn acquire(&self) -> Slot {
        Slot::Worker
    }

    /// The result from a cache hit, given the inputs marked `on_hit`.
    fn reuse(
        &self,
        hit: &Self::Hit,
        inputs: &Inputs<Self::Output>,
        cx: &Context<Self::Event>,
    ) -> Result<Self::Output, Self::Error>;

    /// Runs the op on its inputs' outputs.
    fn exec(
        &self,
        inputs: &Inputs<Self::Output>,
        cx: &Context<Self::Event>,
    ) -> Result<Self::Output, Self::Error>;

    /// Records a result `exec` returned (never a reused one).
    fn record(&self, _output: &Self::Output) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// One edge: the op waits for `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// The op waited for.
    pub node: NodeId,
    /// Whether a cache hit still needs it.
    pub on_hit: bool,
}

/// The outputs of the inputs an op was given, by node.
#[derive(Debug)]
pub struct Inputs<T> {
    outputs: HashMap<NodeId, T>,
}

impl<T> Inputs<T> {
    /// The output of input `node`.
    ///
    /// # Panics
    /// If `node` is not one of the op's inputs given to this call (a
    /// hit is given only its `on_hit` inputs).
    pub fn get(&self, node: NodeId) -> &T {
        self.outputs
            .get(&node)
            .unwrap_or_else(|| panic!("node {node} is not an input given to this op"))
    }

    /// The output of `node`, if it was given.
    pub fn try_get(&self, node: NodeId) -> Option<&T> {
        self.outputs.get(&node)
    }
}

/// A DAG of ops; acyclic by construction (inputs are nodes added before).
pub struct Dag<O: Op + ?Sized> {
    nodes: Vec<Node<O>>,
    by_key: HashMap<String, NodeId>,
}

struct Node<O: Op + ?Sized> {
    op: Arc<O>,
    inputs: Vec<Input>,
}

impl<O: Op + ?Sized> Default for Dag<O> {
    fn default() -> Self {
        Dag {
            nodes: Vec::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<O: Op + ?Sized> Dag<O> {
    /// Adds `op` waiting for `inputs`, or returns the node that already
    /// has its key (identical ops are one op).
    ///
    /// # Panics
    /// If an input is not a node of this DAG.
    pub fn add(&mut self, op: Arc<O>, inputs: Vec<Input>) -> NodeId {
        if let Some(&node) = self.by_key.get(op.key()) {
            return node;
        }
        for input in &inputs {
            assert!(input.node < self.nodes.len(), "an input added before");
        }
        let node = self.nodes.len();
        self.by_key.insert(op.key().to_string(), node);
        self.nodes.push(Node { op, inputs });
        node
    }

    /// The op at `node`.
    pub fn op(&self, node: NodeId) -> &Arc<O> {
        &self.nodes[node].op
    }

    /// How many ops there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What `node` waits for, given whether it is a hit.
    fn waits(&self, node: NodeId, hit: bool) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes[node]
            .inputs
            .iter()
            .filter(move |i| !hit || i.on_hit)
            .map(|i| i.node)
    }
}

/// Asks every op of `dag` for its cache hit, all before anything runs.
pub fn lookup<O: Op + ?Sized>(dag: &Dag<O>) -> HashMap<NodeId, O::Hit> {
    (0..dag.len())
        .filter_map(|n| dag.op(n).lookup().map(|hit| (n, hit)))
        .collect()
}

/// Set once the run is cancelled; shareable with whatever must stop too.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token set together with `flag` (the step runner's own).
    pub fn with_flag(flag: Arc<AtomicBool>) -> Cancel {
        Cancel(flag)
    }

    /// Cancels.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a running op is given besides its inputs.
pub struct Context<E> {
    node: NodeId,
    events: tokio::sync::mpsc::UnboundedSender<E>,
    cancel: Cancel,
}

impl<E> Context<E> {
    /// The op's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Reports `event` to the caller of [`run`].
    pub fn emit(&self, event: E) {
        // The receiver lives until every op is done.
        let _ = self.events.send(event);
    }

    /// Whether the run was cancelled (another op failed).
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// At most this many [`Slot::Worker`] ops at once (at least one).
    pub parallel: usize,
    /// Set at the first failure.
    pub cancel: Cancel,
}

/// How an op's output came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// [`Op::reuse`] of a cache hit.
    Reused,
    /// [`Op::exec`].
    Ran,
}

/// The outputs of a run's ops, the targets and all they needed.
#[derive(Debug)]
pub struct Solved<T> {
    /// Every op's output, by node.
    pub outputs: HashMap<NodeId, T>,
    /// How each came about.
    pub how: HashMap<NodeId, How>,
}

/// Why a run failed: its first failure.
#[derive(Debug)]
pub enum Failure<E> {
    /// An op returned an error (from `exec`, `reuse` or `record`).
    Op {
        /// The op.
        node: NodeId,
        /// Its error.
        error: E,
    },
    /// An op panicked (or its task could not finish).
    Panicked {
        /// The op, when known.
        node: Option<NodeId>,
        /// What the task said.
        message: String,
    },
    /// The run was cancelled from outside ([`Options::cancel`]) before
    /// every needed op was done.
    Cancelled,
    /// The runtime could not start.
    Runtime(String),
}

/// Runs what `targets` need: each needed op once, as soon as what it waits
/// for is done (a hit waits only for its `on_hit` inputs), at most
/// `options.parallel` worker ops at a time.
pub fn run<O: Op + ?Sized>(
    dag: &Dag<O>,
    targets: &[NodeId],
    hits: HashMap<NodeId, O::Hit>,
    options: &Options,
    on_event: &mut dyn FnMut(O::Event),
) -> Result<Solved<O::Output>, Failure<O::Error>> {
    let needed = needed(dag, targets, &hits);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(options.parallel.max(1) + 1)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("starting the scheduler: {e}")))?;
    let run = Run {
        dag,
        needed,
        hits: Arc::new(hits),
        permits: Arc::new(tokio::sync::Semaphore::new(options.parallel.max(1))),
        cancel: options.cancel.clone(),
        solved: Solved {
            outputs: HashMap::new(),
            how: HashMap::new(),
        },
        started: HashSet::new(),
        failure: None,
    };
    runtime.block_on(run.drive(on_event))
}

/// The ops `targets` need, each with what it waits for.
fn needed<O: Op + ?Sized, H>(
    dag: &Dag<O>,
    targets: &[NodeId],
    hits: &HashMap<NodeId, H>,
) -> HashMap<NodeId, Vec<NodeId>> {
    let mut needed = HashMap::new();
    let mut stack = targets.to_vec();
    while let Some(node) = stack.pop() {
        if needed.contains_key(&node) {
            continue;
        }
        let waits: Vec<NodeId> = dag.waits(node, hits.contains_key(&node)).collect();
        stack.extend(waits.iter().copied());
        needed.insert(node, waits);
    }
    needed
}

/// One run's state, on the thread that called [`run`].
struct Run<'a, O: Op + ?Sized> {
    dag: &'a Dag<O>,
    needed: HashMap<NodeId, Vec<NodeId>>,
    hits: Arc<HashMap<NodeId, O::Hit>>,
    permits: Arc<tokio::sync::Semaphore>,
    cancel: Cancel,
    solved: Solved<O::Output>,
    started: HashSet<NodeId>,
    failure: Option<Failure<O::Error>>,
}

/// What a finished task hands back.
type Finished<O> = (NodeId, Result<(<O as Op>::Output, How), <O as Op>::Error>);

impl<O: Op + ?Sized> Run<'_, O> {
    /// Starts ready ops and collects finished ones until none is left.
    async fn drive(
        mut self,
        on_event: &mut dyn FnMut(O::Event),
    ) -> Result<Solved<O::Output>, Failure<O::Error>> {
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let mut running: tokio::task::JoinSet<Finished<O>> = tokio::task::JoinSet::new();
        let mut tasks: HashMap<tokio::task::Id, NodeId> = HashMap::new();
        loop {
            if self.failure.is_none() && !self.cancel.is_cancelled() {
                for node in self.ready() {
                    // Without a free slot it waits for the next finished op.
                    let Some(permit) = self.slot(node) else {
                        continue;
                    };
                    self.started.insert(node);
                    let task = self.start(node, permit, &events, &mut running);
                    tasks.insert(task, node);
                }
            }
            tokio::select! {
                Some(event) = received.recv() => on_event(event),
                done = running.join_next_with_id() => match done {
                    None => break,
                    Some(Ok((_, (node, Ok((output, how)))))) => {
                        self.solved.outputs.insert(node, output);
                        self.solved.how.insert(node, how);
                    }
                    Some(Ok((_, (node, Err(error))))) => self.fail(Failure::Op { node, error }),
                    Some(Err(e)) => {
                        let node = tasks.get(&e.id()).copied();
                        let message = panic_message(e);
                        self.fail(Failure::Panicked { node, message });
                    }
                },
            }
        }
        while let Ok(event) = received.try_recv() {
            on_event(event);
        }
        match self.failure {
            Some(failure) => Err(failure),
            // Cancelled from outside before all was done.
            None if self.solved.outputs.len() < self.needed.len() => Err(Failure::Cancelled),
            None => Ok(self.solved),
        }
    }

    /// The needed ops not started whose inputs are all done, in node order
    /// (so runs are repeatable).
    fn ready(&self) -> Vec<NodeId> {
        let mut ready: Vec<NodeId> = self
            .needed
            .iter()
            .filter(|(n, waits)| {
                !self.started.contains(*n)
                    && waits.iter().all(|w| self.solved.outputs.contains_key(w))
            })
            .map(|(n, _)| *n)
            .collect();
        ready.sort_unstable();
        ready
    }

    /// The slot `node` needs: `None` when it needs a worker slot and none
    /// is free, `Some(None)` when it needs none.
    fn slot(&self, node: NodeId) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
        match self.dag.op(node).acquire() {
            Slot::Free => Some(None),
            Slot::Worker => self.permits.clone().try_acquire_owned().ok().map(Some),
        }
    }

    /// Starts `node` on the blocking pool, holding `permit` until it ends.
    fn start(
        &self,
        node: NodeId,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        events: &tokio::sync::mpsc::UnboundedSender<O::Event>,
        running: &mut tokio::task::JoinSet<Finished<O>>,
    ) -> tokio::task::Id {
        let op = self.dag.op(node).clone();
        let inputs = Inputs {
            outputs: self.needed[&node]
                .iter()
                .map(|w| (*w, self.solved.outputs[w].clone()))
                .collect(),
        };
        let cx = Context {
            node,
            events: events.clone(),
            cancel: self.cancel.clone(),
        };
        let hits = self.hits.clone();
        running
            .spawn_blocking(move || {
                let _permit = permit;
                (node, perform(&*op, hits.get(&node), &inputs, &cx))
            })
            .id()
    }

    /// Keeps the first failure and cancels the rest.
    fn fail(&mut self, failure: Failure<O::Error>) {
        if self.failure.is_none() {
            self.cancel.cancel();
            self.failure = Some(failure);
        }
    }
}

/// Reuses a hit, or runs the op and records what it made.
fn perform<O: Op + ?Sized>(
    op: &O,
    hit: Option<&O::Hit>,
    inputs: &Inputs<O::Output>,
    cx: &Context<O::Event>,
) -> Result<(O::Output, How), O::Error> {
    if let Some(hit) = hit {
        return Ok((op.reuse(hit, inputs, cx)?, How::Reused));
    }
    let output = op.exec(inputs, cx)?;
    op.record(&output)?;
    Ok((output, How::Ran))
}

/// What a failed task said.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("a build task failed: {e}");
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    format!("a build task panicked: {text}")
}
