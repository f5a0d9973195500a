//! Push and pull of a 300 MB, 3-layer image to a local registry, rbuild
//! against `skopeo copy`, side by side in one run (issue target: rbuild's
//! time <= skopeo's). Every measured transfer gets a fresh registry, so
//! neither tool can mount or skip blobs the other uploaded.
//!
//! Run: `cargo bench --bench registry` (needs docker-registry and skopeo;
//! `RBUILD_BENCH_ROUNDS` sets the rounds, default 3). In `cargo test` mode
//! (`--test` or no `--bench` flag) it runs one small round as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestRegistry;
use rbuild::cache::ContentStore;
use rbuild::image::config::host_architecture;
use rbuild::image::layer::{write_gzip_layer, Entry};
use rbuild::image::layout::{store_image, write_oci_layout_dir, StoredImage};
use rbuild::image::media::MediaTypes;
use rbuild::image::{ImageConfig, Reference};
use rbuild::registry::{CredentialSource, RegistryClient, RegistryOptions};

/// Incompressible bytes (xorshift), so the layer is as large as its data.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_image(store: &ContentStore, layer_bytes: usize) -> StoredImage {
    let layers: Vec<_> = (0..3)
        .map(|i| {
            let entries = vec![
                Entry::dir("data", 0o755),
                Entry::file(
                    &format!("data/layer{i}.bin"),
                    0o644,
                    noise(layer_bytes, 0x9E37_79B9 + i as u64),
                ),
            ];
            write_gzip_layer(store, entries, 0).unwrap()
        })
        .collect();
    let config: ImageConfig = serde_json::from_value(serde_json::json!({
        "architecture": host_architecture(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
    }))
    .unwrap();
    store_image(store, &config, &layers, MediaTypes::Oci).unwrap()
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

fn skopeo(args: &[String]) {
    let out = Command::new("skopeo").args(args).output().expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let rounds: usize = if benchmarking {
        std::env::var("RBUILD_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
    } else {
        1
    };
    let layer_bytes = if benchmarking { 100 << 20 } else { 1 << 20 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = ContentStore::open(work.path().join("store")).unwrap();
    let image = make_image(&store, layer_bytes);
    let total: u64 = image.layers.iter().map(|l| l.size).sum();
    let layout = work.path().join("layout");
    let name: Reference = "localhost/bench/image:1".parse().unwrap();
    write_oci_layout_dir(&store, &layout, &[(&image, std::slice::from_ref(&name))]).unwrap();
    println!(
        "image: 3 layers, {:.1} MB compressed; {rounds} round(s)",
        total as f64 / 1e6
    );

    let (mut rb_push, mut sk_push, mut rb_pull, mut sk_pull) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        // rbuild push, then pull into an empty store.
        let registry = TestRegistry::start(&[]);
        let target: Reference = format!("{}/bench/rbuild:1", registry.addr).parse().unwrap();
        let client =
            RegistryClient::new(CredentialSource::default(), RegistryOptions::default()).unwrap();
        let (t, r) = time(|| {
            rt.block_on(client.push(
                &store,
                &image.manifest_digest,
                std::slice::from_ref(&target),
                None,
            ))
        });
        r.unwrap();
        rb_push.push(t);
        let pulled = ContentStore::open(work.path().join(format!("pulled-{round}"))).unwrap();
        let (t, r) =
            time(|| rt.block_on(client.pull(&pulled, &target, "linux", host_architecture())));
        assert_eq!(r.unwrap().manifest_digest, image.manifest_digest);
        rb_pull.push(t);
        drop(registry);

        // skopeo push from the OCI layout, then pull into an empty layout.
        let registry = TestRegistry::start(&[]);
        let dest = format!("docker://{}/bench/skopeo:1", registry.addr);
        let (t, _) = time(|| {
            skopeo(&[
                "copy".into(),
                "--quiet".into(),
                "--dest-tls-verify=false".into(),
                format!("oci:{}:1", layout.display()),
                dest.clone(),
            ])
        });
        sk_push.push(t);
        let out_dir = work.path().join(format!("skopeo-pulled-{round}"));
        let (t, _) = time(|| {
            skopeo(&[
                "copy".into(),
                "--quiet".into(),
                "--src-tls-verify=false".into(),
                dest.clone(),
                format!("oci:{}:1", out_dir.display()),
            ])
        });
        sk_pull.push(t);
    }
    let (rp, sp, rl, sl) = (
        median(rb_push),
        median(sk_push),
        median(rb_pull),
        median(sk_pull),
    );
    let mb = total as f64 / 1e6;
    println!(
        "push  rbuild {:>7.3}s ({:>6.0} MB/s)   skopeo {:>7.3}s   ratio rbuild/skopeo {:.2}",
        rp.as_secs_f64(),
        mb / rp.as_secs_f64(),
        sp.as_secs_f64(),
        rp.as_secs_f64() / sp.as_secs_f64()
    );
    println!(
        "pull  rbuild {:>7.3}s ({:>6.0} MB/s)   skopeo {:>7.3}s   ratio rbuild/skopeo {:.2}",
        rl.as_secs_f64(),
        mb / rl.as_secs_f64(),
        sl.as_secs_f64(),
        rl.as_secs_f64() / sl.as_secs_f64()
    );
}
