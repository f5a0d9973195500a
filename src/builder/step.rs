//! The shell every step op shares, whatever makes its layer: its progress
//! events, a cache hit stacked on its parent, the layer-bytes watcher, and
//! the cache entry recorded once the layer is stored. What differs between
//! ops is a [`MakesLayer`]: a RUN (`exec.rs`) or a file op (`file.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::shared::{How, OpResult, Shared};
use super::{BuildError, Location};
use crate::blob::LayerBlob;
use crate::cache::CacheEntry;
use crate::executor::Stream;
use crate::progress::Event;
use crate::scheduler::{self, Context, Inputs};
use crate::snapshot::Layer;
use crate::solver;

/// What one step needs to make its layer.
pub(super) struct Job<'a> {
    pub(super) shared: &'a Shared,
    /// The layers it runs on.
    pub(super) parents: &'a [Layer],
    /// The results of the stages it reads from, by stage index.
    pub(super) from: &'a HashMap<usize, &'a OpResult>,
    /// Where its output lines go.
    pub(super) output: &'a dyn Fn(Stream, String),
    /// The layer's bytes as they are written.
    pub(super) layer_bytes: crate::snapshot::diff::ByteCounter,
    /// The step, as errors name it (stage, Dockerfile:line:column, text).
    pub(super) at: &'a str,
}

/// What makes a step's layer (None: it changed nothing).
pub(super) trait MakesLayer: Send + Sync + 'static {
    /// Runs the step on `job.parents`.
    fn layer(&self, job: &Job<'_>) -> Result<Option<Layer>, BuildError>;
}

/// A step of the graph as a scheduler op.
pub(super) struct StepOp<M: MakesLayer> {
    pub(super) shared: Arc<Shared>,
    pub(super) node: NodeIndex,
    /// The graph key (the scheduler's identity of the op).
    pub(super) key: String,
    pub(super) maker: M,
}

impl<M: MakesLayer> StepOp<M> {
    fn step(&self) -> (usize, &solver::Step) {
        let (stage, step) = self.shared.graph().graph[self.node].uses[0];
        let step = step.expect("a step op stands for a step");
        (stage, &self.shared.stage(stage).steps[step])
    }

    fn parent(&self) -> NodeIndex {
        self.shared
            .graph()
            .parent(self.node)
            .expect("a step has a parent")
    }

    /// Reports the step started, with its place in the stage; its id.
    fn started(&self, cx: &Context<Event>) -> usize {
        let (stage, step) = self.step();
        let (_, index) = self.shared.graph().graph[self.node].uses[0];
        let id = self
            .shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cx.emit(Event::Started {
            id,
            stage: self.shared.label(stage),
            index: index.expect("a step") + 1,
            total: self.shared.stage(stage).steps.len(),
            text: super::shown(step),
        });
        id
    }
}

impl<M: MakesLayer> scheduler::Op for StepOp<M> {
    type Output = OpResult;
    type Hit = CacheEntry;
    type Error = BuildError;
    type Event = Event;

    fn key(&self) -> &str {
        &self.key
    }

    fn lookup(&self) -> Option<CacheEntry> {
        let shared = &self.shared;
        let cache_key = &shared.graph().graph[self.node].cache_key;
        shared
            .use_cache(self.node)
            .then(|| shared.index.get(cache_key, &shared.store))
            .flatten()
    }

    fn reuse(
        &self,
        entry: &CacheEntry,
        inputs: &Inputs<OpResult>,
        cx: &Context<Event>,
    ) -> Result<OpResult, BuildError> {
        let id = self.started(cx);
        cx.emit(Event::Cached { id });
        let mut layers = inputs.get(self.parent().index()).layers.clone();
        layers.extend(entry.layer.clone().map(Layer::ready));
        // SOURCE_DATE_EPOCH decides every time; otherwise a cached step
        // keeps the time it ran, so a fully cached rebuild is identical.
        let created = match self.shared.options.source_date_epoch {
            Some(_) => self.shared.when.clone(),
            None => entry.created.clone(),
        };
        Ok(OpResult {
            layers,
            created,
            empty: entry.layer.is_none(),
            how: How::Cached,
        })
    }

    fn exec(&self, inputs: &Inputs<OpResult>, cx: &Context<Event>) -> Result<OpResult, BuildError> {
        let id = self.started(cx);
        let started = std::time::Instant::now();
        let result = self.run(id, started, inputs, cx);
        let elapsed = started.elapsed();
        cx.emit(match &result {
            Ok(_) => Event::Done { id, elapsed },
            Err(e) => Event::Failed {
                id,
                elapsed,
                message: e.message.clone(),
            },
        });
        result.map_err(|e| e.at(self.location()))
    }

    fn record(&self, result: &OpResult) -> Result<(), BuildError> {
        // An entry is written only once its blob is stored: it never names
        // a missing layer, and a killed build keeps what finished. A layer
        // still being written is recorded when it lands, by a thread the
        // build waits for before it ends, so the steps after it need not.
        let layer = (!result.empty).then(|| result.layers.last()).flatten();
        let entry = Entry {
            shared: self.shared.clone(),
            cache_key: self.shared.graph().graph[self.node].cache_key.clone(),
            at: self.at(self.step().1),
            location: self.location(),
        };
        let Some(layer) = layer.filter(|l| l.landed().is_none()).cloned() else {
            return entry.put(layer.and_then(Layer::landed));
        };
        let at = entry.at.clone();
        let handle = std::thread::Builder::new()
            .name("record".into())
            .spawn(move || entry.put_when_written(&layer))
            .map_err(|e| {
                super::environment(format!("{at}: recording the cache entry: {e}"))
                    .at(self.location())
            })?;
        self.shared
            .recording
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
        Ok(())
    }
}

/// What recording one step's cache entry needs, on whichever thread.
struct Entry {
    shared: Arc<Shared>,
    cache_key: crate::blob::Digest,
    at: String,
    location: Location,
}

impl Entry {
    /// Waits for `layer`, then records it; a layer that failed fails the
    /// build, blamed on its step.
    fn put_when_written(self, layer: &Layer) -> Result<(), BuildError> {
        match layer.wait() {
            Ok(blob) => self.put(Some(blob)),
            Err(e) => Err(
                super::environment(format!("{}: writing the layer: {e}", self.at))
                    .at(self.location.clone()),
            ),
        }
    }

    fn put(self, layer: Option<LayerBlob>) -> Result<(), BuildError> {
        self.shared
            .index
            .put(
                &self.cache_key,
                &CacheEntry {
                    layer,
                    created: self.shared.when.clone(),
                },
            )
            .map_err(|e| {
                super::environment(format!("{}: recording the cache entry: {e}", self.at))
                    .at(self.location.clone())
            })?;
        crate::failpoint::hit("cache-entry-written");
        Ok(())
    }
}

impl<M: MakesLayer> StepOp<M> {
    /// Where the step is in the Dockerfile.
    fn location(&self) -> Location {
        let (stage, step) = self.step();
        Location {
            stage: self.shared.label(stage),
            line: step.line,
            column: step.column,
        }
    }

    /// The step as errors name it.
    fn at(&self, step: &solver::Step) -> String {
        let (stage, _) = self.step();
        format!(
            "stage {}, Dockerfile:{}:{}: {}",
            self.shared.label(stage),
            step.line,
            step.column,
            super::shown(step)
        )
    }

    /// Makes the layer on the parent's, with output lines and layer bytes
    /// reported as it goes.
    fn run(
        &self,
        id: usize,
        started: std::time::Instant,
        inputs: &Inputs<OpResult>,
        cx: &Context<Event>,
    ) -> Result<OpResult, BuildError> {
        let shared = &*self.shared;
        let (_, step) = self.step();
        let graph = shared.graph();
        let mut layers = inputs.get(self.parent().index()).layers.clone();
        let from: HashMap<usize, &OpResult> = solver::graph::step_sources(&step.kind)
            .into_iter()
            .map(|j| {
                let tail = graph.stages[&j].last().expect("non-empty");
                (j, inputs.get(tail.index()))
            })
            .collect();
        let at = self.at(step);
        let layer_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let output = |stream, line| {
            cx.emit(Event::Output {
                id,
                stream,
                elapsed: started.elapsed(),
                line,
            })
        };
        let job = Job {
            shared,
            parents: &layers,
            from: &from,
            output: &output,
            layer_bytes: Some(layer_bytes.clone()),
            at: &at,
        };
        let layer =
            watch_layer_bytes(id, &layer_bytes, &|e| cx.emit(e), || self.maker.layer(&job))?;
        let empty = layer.is_none();
        layers.extend(layer);
        Ok(OpResult {
            layers,
            created: shared.when.clone(),
            empty,
            how: How::Ran,
        })
    }
}

/// Runs `work`, showing the layer's bytes once writing it has taken a
/// second (a big COPY or RUN), so small steps stay quiet. The watcher
/// wakes every 100 ms, and at once when the work ends (its channel
/// closes), so it never delays the step.
fn watch_layer_bytes<T>(
    id: usize,
    layer_bytes: &Arc<std::sync::atomic::AtomicU64>,
    emit: &(dyn Fn(Event) + Sync),
    work: impl FnOnce() -> T,
) -> T {
    use std::sync::atomic::Ordering;
    let (work_done, watch) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let task = format!("#{id} writing the layer");
            let mut writing_since = None;
            let mut shown = false;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                watch.recv_timeout(std::time::Duration::from_millis(100))
            {
                let done = layer_bytes.load(Ordering::Relaxed);
                if done == 0 {
                    continue;
                }
                let since = *writing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= std::time::Duration::from_secs(1) {
                    shown = true;
                    emit(Event::Bytes {
                        task: task.clone(),
                        done,
                        total: None,
                    });
                }
            }
            if shown {
                emit(Event::BytesDone {
                    task,
                    done: layer_bytes.load(Ordering::Relaxed),
                    elapsed: writing_since.map(|t| t.elapsed()).unwrap_or_default(),
                });
            }
        });
        let result = work();
        drop(work_done);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    /// What the watcher says about a write of `bytes` lasting `lasting`.
    fn watched(bytes: u64, lasting: std::time::Duration) -> Vec<Event> {
        let seen = Mutex::new(Vec::new());
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let emit = |e: Event| seen.lock().unwrap().push(e);
        watch_layer_bytes(7, &counter, &emit, || {
            counter.fetch_add(bytes, Ordering::Relaxed);
            std::thread::sleep(lasting);
        });
        seen.into_inner().unwrap()
    }

    #[test]
    fn a_layer_written_for_over_a_second_shows_its_bytes_and_a_quick_one_nothing() {
        let slow = watched(5_000, std::time::Duration::from_millis(1_500));
        assert!(
            slow.iter().any(|e| matches!(e, Event::Bytes { task, done: 5_000, total: None } if task == "#7 writing the layer")),
            "{slow:?}"
        );
        assert!(
            matches!(slow.last(), Some(Event::BytesDone { done: 5_000, .. })),
            "{slow:?}"
        );
        let quick = watched(5_000, std::time::Duration::from_millis(200));
        assert!(quick.is_empty(), "{quick:?}");
    }
}
