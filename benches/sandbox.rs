//! Sandbox overhead, measured on the real thing (`cargo bench --bench sandbox`):
//!
//! 1. 30 `RUN true` steps on the busybox base, one after another through
//!    the step runner (probe-chosen tier, overlay snapshots): the median
//!    wall time of a step is the sandbox's whole per-step overhead
//!    (workspace, helper start, namespaces, overlay mount, /proc, /dev,
//!    pivot_root, the command, diff of the upper dir, layer write).
//! 2. A step that writes one file, on a 10-file root and on a
//!    100,000-file root: the diff walks only the upper dir, so the two
//!    should cost the same. Reports both medians and their ratio.
//!
//! Run as root or as a user allowed user namespaces. Prints a summary the
//! README quotes.

use std::path::Path;
use std::time::{Duration, Instant};

use rbuild::blob::LayerBlob;
use rbuild::cache::ContentStore;
use rbuild::executor::{choose, Executor, IsolationRequest, Limits, Step, StepRunner};
use rbuild::image::busybox::{build_base, DEBIAN_BUSYBOX};
use rbuild::image::layer::{write_gzip_layer, Entry};
use rbuild::image::media::MediaTypes;
use rbuild::snapshot::SnapshotStore;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn runner(root: &Path) -> (StepRunner, ContentStore) {
    let executor = Executor::new(env!("CARGO_BIN_EXE_rbuild"));
    let probes = executor.probe(&root.join("snapshots/tmp")).expect("probe");
    let plan = choose(&probes, IsolationRequest::Auto).expect("an isolation tier");
    eprintln!(
        "tier: {} (snapshots {:?}, user namespace {})",
        plan.tier, plan.snapshots, plan.userns
    );
    let store = ContentStore::open(root).unwrap();
    let snapshots = SnapshotStore::open(root.join("snapshots")).unwrap();
    let runner = StepRunner::new(
        executor,
        plan,
        store.clone(),
        snapshots,
        probes.cgroup,
        Limits::default(),
        Some(0),
    )
    .unwrap();
    (runner, store)
}

fn step(layers: &[LayerBlob], script: &str) -> Step {
    Step {
        layers: rbuild::snapshot::Layer::all_ready(layers),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
        cwd: "/".into(),
        ..Step::default()
    }
}

fn time_steps(runner: &StepRunner, layers: &[LayerBlob], script: &str, n: usize) -> Vec<Duration> {
    // One step first: extracting the base snapshots is not per-step cost.
    let warm = runner.run(&step(layers, script), &mut |_, _| {}).unwrap();
    assert!(warm.failure.is_none(), "{:?}", warm.failure);
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let outcome = runner.run(&step(layers, script), &mut |_, _| {}).unwrap();
            assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
            started.elapsed()
        })
        .collect()
}

fn many_files(store: &ContentStore, count: usize) -> LayerBlob {
    let mut entries = vec![Entry::dir("data", 0o755)];
    for d in 0..count.div_ceil(1000) {
        entries.push(Entry::dir(&format!("data/{d:03}"), 0o755));
    }
    for i in 0..count {
        entries.push(Entry::file(
            &format!("data/{:03}/f{i:06}", i / 1000),
            0o644,
            format!("{i}\n").into_bytes(),
        ));
    }
    write_gzip_layer(store, entries, 0).unwrap()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --bench sandbox` does not,
    // and then a small, quick version checks that the benchmark still runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let (runner, store) = runner(dir.path());
    let base = build_base(&store, Path::new(DEBIAN_BUSYBOX), MediaTypes::Oci).unwrap();

    let steps = if quick { 5 } else { 30 };
    let chain = time_steps(&runner, &base.layers, "true", steps);
    let total: Duration = chain.iter().sum();
    let chain_median = median(chain);
    println!(
        "{steps} x RUN true: median {:.1} ms per step, {:.0} ms in all",
        ms(chain_median),
        ms(total)
    );

    let (small, large) = if quick { (10, 5_000) } else { (10, 100_000) };
    let rounds = if quick { 5 } else { 41 };
    let mut stacks = Vec::new();
    for files in [small, large] {
        let mut layers = base.layers.clone();
        let built = Instant::now();
        layers.push(many_files(&store, files));
        println!("{files}-file layer made in {:.0} ms", ms(built.elapsed()));
        // Warm: extracting the snapshot is not per-step cost.
        time_steps(&runner, &layers, "echo changed > /data/one", 1);
        stacks.push(layers);
    }
    // Alternate the two roots so that the machine's drift hits both alike.
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, layers) in stacks.iter().enumerate() {
            let started = Instant::now();
            let outcome = runner
                .run(&step(layers, "echo changed > /data/one"), &mut |_, _| {})
                .unwrap();
            assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
            samples[i].push(started.elapsed());
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    for (files, m) in [small, large].iter().zip(&medians) {
        println!(
            "write one file on a {files}-file root: median {:.1} ms per step",
            ms(*m)
        );
    }
    println!(
        "{large}-file / {small}-file step time: {:.2}x",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
}
