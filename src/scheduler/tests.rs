//! The scheduler against a fake op (as BuildKit's `scheduler_test.go`
//! drives its solver): no files, no processes, no root.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// What every fake op of a test writes down.
#[derive(Default)]
struct Log {
    /// "start:<key>" and "end:<key>" in the order they happened.
    order: Mutex<Vec<String>>,
    /// Keys `exec` was called for.
    execs: Mutex<Vec<String>>,
    /// Keys `record` was called for.
    records: Mutex<Vec<String>>,
    /// Keys `reuse` was called for, with the inputs it was given.
    reuses: Mutex<Vec<(String, Vec<NodeId>)>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Log {
    fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
    fn execs(&self) -> Vec<String> {
        self.execs.lock().unwrap().clone()
    }
    fn records(&self) -> Vec<String> {
        self.records.lock().unwrap().clone()
    }
    fn position(&self, what: &str) -> usize {
        self.order()
            .iter()
            .position(|e| e == what)
            .unwrap_or_else(|| panic!("{what} never happened: {:?}", self.order()))
    }
}

/// What a fake op does when it runs.
#[derive(Clone, Copy)]
enum Act {
    /// Outputs its value plus the sum of its inputs' outputs.
    Add(u64),
    /// The same after sleeping so long.
    Slow(u64, u64),
    /// Fails with this message.
    Fail(&'static str),
    /// Panics.
    Panic,
    /// Waits (up to 5 s) until the run is cancelled, then fails.
    UntilCancelled,
}

struct Fake {
    key: String,
    act: Act,
    hit: Option<u64>,
    slot: Slot,
    log: Arc<Log>,
    inputs: Vec<NodeId>,
}

impl Op for Fake {
    type Output = u64;
    type Hit = u64;
    type Error = String;
    type Event = String;

    fn key(&self) -> &str {
        &self.key
    }

    fn lookup(&self) -> Option<u64> {
        self.hit
    }

    fn acquire(&self) -> Slot {
        self.slot
    }

    fn reuse(&self, hit: &u64, inputs: &Inputs<u64>, cx: &Context<String>) -> Result<u64, String> {
        let given: Vec<NodeId> = self
            .inputs
            .iter()
            .copied()
            .filter(|n| inputs.try_get(*n).is_some())
            .collect();
        self.log
            .reuses
            .lock()
            .unwrap()
            .push((self.key.clone(), given));
        cx.emit(format!("cached {}", self.key));
        Ok(*hit)
    }

    fn exec(&self, inputs: &Inputs<u64>, cx: &Context<String>) -> Result<u64, String> {
        self.log.execs.lock().unwrap().push(self.key.clone());
        self.log
            .order
            .lock()
            .unwrap()
            .push(format!("start:{}", self.key));
        let now = self.log.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.most_running.fetch_max(now, Ordering::SeqCst);
        cx.emit(format!("{} 1", self.key));
        cx.emit(format!("{} 2", self.key));
        let sum: u64 = self.inputs.iter().map(|n| *inputs.get(*n)).sum();
        let result = match self.act {
            Act::Add(v) => Ok(v + sum),
            Act::Slow(v, ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(v + sum)
            }
            Act::Fail(message) => Err(message.to_string()),
            Act::Panic => {
                self.log.running.fetch_sub(1, Ordering::SeqCst);
                panic!("{} fell over", self.key)
            }
            Act::UntilCancelled => {
                let t = std::time::Instant::now();
                while !cx.cancelled() && t.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(format!("{} cancelled: {}", self.key, cx.cancelled()))
            }
        };
        self.log.running.fetch_sub(1, Ordering::SeqCst);
        self.log
            .order
            .lock()
            .unwrap()
            .push(format!("end:{}", self.key));
        result
    }

    fn record(&self, _output: &u64) -> Result<(), String> {
        self.log.records.lock().unwrap().push(self.key.clone());
        Ok(())
    }
}

/// Builds a DAG of fakes sharing one log.
#[derive(Default)]
struct Build {
    dag: Dag<Fake>,
    log: Arc<Log>,
}

impl Build {
    fn op(&mut self, key: &str, act: Act, inputs: &[NodeId]) -> NodeId {
        self.with(key, act, None, Slot::Worker, inputs, &[])
    }

    /// An op with a cache hit and the inputs (a subset) a hit still needs.
    fn with(
        &mut self,
        key: &str,
        act: Act,
        hit: Option<u64>,
        slot: Slot,
        inputs: &[NodeId],
        on_hit: &[NodeId],
    ) -> NodeId {
        let op = Fake {
            key: key.to_string(),
            act,
            hit,
            slot,
            log: self.log.clone(),
            inputs: inputs.to_vec(),
        };
        let edges = inputs
            .iter()
            .map(|&node| Input {
                node,
                on_hit: on_hit.contains(&node),
            })
            .collect();
        self.dag.add(Arc::new(op), edges)
    }

    fn run(
        &self,
        targets: &[NodeId],
        parallel: usize,
    ) -> (Result<Solved<u64>, Failure<String>>, Vec<String>) {
        let options = Options {
            parallel,
            cancel: Cancel::default(),
        };
        let mut events = Vec::new();
        let result = run(&self.dag, targets, lookup(&self.dag), &options, &mut |e| {
            events.push(e)
        });
        (result, events)
    }
}

#[test]
fn an_op_starts_only_after_all_its_inputs_ended() {
    let mut b = Build::default();
    let a = b.op("a", Act::Slow(1, 30), &[]);
    let left = b.op("left", Act::Slow(10, 20), &[a]);
    let right = b.op("right", Act::Add(100), &[a]);
    let join = b.op("join", Act::Add(1000), &[left, right]);
    let (result, _) = b.run(&[join], 4);
    let solved = result.unwrap();
    // Each output includes its inputs': the values flowed along the edges.
    assert_eq!(solved.outputs[&join], 1000 + 11 + 101);
    let log = &b.log;
    for (before, after) in [
        ("a", "left"),
        ("a", "right"),
        ("left", "join"),
        ("right", "join"),
    ] {
        assert!(
            log.position(&format!("end:{before}")) < log.position(&format!("start:{after}")),
            "{after} started before {before} ended: {:?}",
            log.order()
        );
    }
    assert_eq!(solved.how.values().filter(|h| **h == How::Ran).count(), 4);
}

#[test]
fn independent_ops_run_at_the_same_time() {
    let mut b = Build::default();
    let left = b.op("left", Act::Slow(1, 200), &[]);
    let right = b.op("right", Act::Slow(2, 200), &[]);
    let t = std::time::Instant::now();
    let (result, _) = b.run(&[left, right], 4);
    result.unwrap();
    assert_eq!(b.log.most_running.load(Ordering::SeqCst), 2);
    assert!(
        t.elapsed() < Duration::from_millis(390),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn identical_ops_are_one_node_and_run_once() {
    let mut b = Build::default();
    let base = b.op("base", Act::Add(1), &[]);
    let first = b.op("shared", Act::Add(2), &[base]);
    // The same key again (another stage doing the same): the same node.
    let second = b.op("shared", Act::Add(2), &[base]);
    assert_eq!(first, second);
    let x = b.op("x", Act::Add(10), &[first]);
    let y = b.op("y", Act::Add(20), &[second]);
    assert_eq!(b.dag.len(), 4);
    let (result, _) = b.run(&[x, y], 4);
    let solved = result.unwrap();
    assert_eq!((solved.outputs[&x], solved.outputs[&y]), (13, 23));
    let mut execs = b.log.execs();
    execs.sort();
    assert_eq!(execs, ["base", "shared", "x", "y"]);
}

#[test]
fn no_more_worker_ops_run_at_once_than_the_bound() {
    let mut b = Build::default();
    let ops: Vec<NodeId> = (0..8)
        .map(|i| b.op(&format!("op{i}"), Act::Slow(i, 40), &[]))
        .collect();
    let (result, _) = b.run(&ops, 3);
    let solved = result.unwrap();
    assert_eq!(solved.outputs.len(), 8);
    // The bound is reached (they do overlap) and never passed.
    assert_eq!(b.log.most_running.load(Ordering::SeqCst), 3);
}

#[test]
fn free_ops_take_no_worker_slot() {
    let mut b = Build::default();
    let worker = b.op("worker", Act::Slow(1, 300), &[]);
    let free = b.with("free", Act::Slow(2, 300), None, Slot::Free, &[], &[]);
    let t = std::time::Instant::now();
    let (result, _) = b.run(&[worker, free], 1);
    result.unwrap();
    assert_eq!(b.log.most_running.load(Ordering::SeqCst), 2);
    assert!(
        t.elapsed() < Duration::from_millis(590),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_failure_cancels_running_ops_starts_no_more_and_is_the_error() {
    let mut b = Build::default();
    let waiting = b.op("waiting", Act::UntilCancelled, &[]);
    let after_waiting = b.op("after-waiting", Act::Add(1), &[waiting]);
    let failing = b.op("failing", Act::Fail("exit code: 1"), &[]);
    let after_failing = b.op("after-failing", Act::Add(1), &[failing]);
    let t = std::time::Instant::now();
    let (result, _) = b.run(&[after_waiting, after_failing], 4);
    match result {
        Err(Failure::Op { node, error }) => {
            assert_eq!(node, failing);
            assert_eq!(error, "exit code: 1");
        }
        other => panic!("not the failing op's error: {other:?}"),
    }
    // The running op saw the cancellation (it did not wait its 5 s) …
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // … and nothing after either started.
    let mut execs = b.log.execs();
    execs.sort();
    assert_eq!(execs, ["failing", "waiting"]);
}

#[test]
fn the_cancel_flag_is_shared_with_whoever_watches_it() {
    let mut b = Build::default();
    let failing = b.op("failing", Act::Fail("no"), &[]);
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = Options {
        parallel: 2,
        cancel: Cancel::with_flag(flag.clone()),
    };
    let result = run(&b.dag, &[failing], lookup(&b.dag), &options, &mut |_| ());
    assert!(result.is_err());
    assert!(flag.load(Ordering::SeqCst), "the runner's flag was set");
}

#[test]
fn cancelled_before_the_start_runs_nothing() {
    let mut b = Build::default();
    let a = b.op("a", Act::Add(1), &[]);
    let options = Options {
        parallel: 2,
        cancel: Cancel::default(),
    };
    options.cancel.cancel();
    let result = run(&b.dag, &[a], lookup(&b.dag), &options, &mut |_| ());
    assert!(matches!(result, Err(Failure::Cancelled)), "{result:?}");
    assert!(b.log.execs().is_empty());
}

#[test]
fn a_cache_hit_skips_exec_and_what_only_it_needed() {
    let mut b = Build::default();
    let base = b.op("base", Act::Add(1), &[]);
    // A stage only the hit reads from (a `COPY --from`): never run.
    let other = b.op("other", Act::Fail("must not run"), &[]);
    let hit = b.with(
        "copy",
        Act::Fail("must not run either"),
        Some(77),
        Slot::Worker,
        &[base, other],
        &[base],
    );
    let after = b.op("after", Act::Add(1), &[hit]);
    let (result, events) = b.run(&[after], 4);
    let solved = result.unwrap();
    assert_eq!(solved.outputs[&hit], 77);
    assert_eq!(solved.outputs[&after], 78);
    assert_eq!(solved.how[&hit], How::Reused);
    assert!(!solved.outputs.contains_key(&other));
    let mut execs = b.log.execs();
    execs.sort();
    assert_eq!(execs, ["after", "base"]);
    // The hit was given its parent only, and is not recorded again.
    assert_eq!(
        *b.log.reuses.lock().unwrap(),
        [("copy".to_string(), vec![base])]
    );
    assert!(!b.log.records().contains(&"copy".to_string()));
    assert!(events.contains(&"cached copy".to_string()));
}

#[test]
fn only_what_the_targets_need_runs() {
    let mut b = Build::default();
    let wanted = b.op("wanted", Act::Add(1), &[]);
    let _unwanted = b.op("unwanted", Act::Fail("not needed"), &[]);
    let (result, _) = b.run(&[wanted], 4);
    assert_eq!(result.unwrap().outputs.len(), 1);
    assert_eq!(b.log.execs(), ["wanted"]);
}

#[test]
fn a_killed_op_leaves_no_record_and_finished_ones_keep_theirs() {
    let mut b = Build::default();
    let done = b.op("done", Act::Add(1), &[]);
    let killed = b.op("killed", Act::Panic, &[done]);
    let cancelled = b.op("cancelled", Act::UntilCancelled, &[done]);
    let (result, _) = b.run(&[killed, cancelled], 4);
    match result {
        Err(Failure::Panicked { node, message }) => {
            assert_eq!(node, Some(killed));
            assert!(message.contains("killed fell over"), "{message}");
        }
        other => panic!("not the panic: {other:?}"),
    }
    // Only the op that finished was recorded: no entry names a result
    // that was never made.
    assert_eq!(b.log.records(), ["done"]);
}

#[test]
fn events_reach_the_caller_in_each_ops_order() {
    let mut b = Build::default();
    let a = b.op("a", Act::Add(1), &[]);
    let c = b.op("c", Act::Add(1), &[a]);
    let (result, events) = b.run(&[c], 2);
    result.unwrap();
    assert_eq!(events, ["a 1", "a 2", "c 1", "c 2"]);
}

#[test]
#[should_panic(expected = "an input added before")]
fn an_input_must_exist_before_its_op() {
    let mut b = Build::default();
    b.op("a", Act::Add(1), &[5]);
}
