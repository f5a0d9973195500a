//! Storage accounting and garbage collection for `$RBUILD_ROOT`: `rbuild
//! du`, `rbuild prune`, the size cap applied after each build, and the
//! leases that keep a running build's data safe from all three.
//!
//! A build holds a lease for its whole run: a file under `leases/` it keeps
//! locked (so a crashed build's lease is recognisably stale) listing the
//! blobs it uses from before its start. Blobs it writes itself are newer
//! than the lease and are kept for that reason. Taking a cache hit and
//! writing it into the lease happen under a shared `gc.lock`; collection
//! holds that lock exclusively, so nothing a build has started to use can
//! disappear under it. Snapshots and workspaces are only collected while no
//! build runs: running steps have them mounted.
//!
//! What is kept: blobs of named images (`images/`), of the offline busybox
//! base, and of cache entries that survive; `--all` drops every cache entry
//! and snapshot; a size cap drops entries and snapshots least recently used
//! first until the store fits.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{flock, FlockOperation};

use crate::blob::Digest;
use crate::cache::{CacheEntry, ContentStore};
use crate::image::layout::StoredImage;
use crate::snapshot::tree::remove_tree;
use crate::snapshot::{Committed, SnapshotStore};

/// A running build's claim on the store.
#[derive(Debug)]
pub struct Lease {
    root: PathBuf,
    path: PathBuf,
    file: std::fs::File,
}

fn lock_file(root: &Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(root)?;
    std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("gc.lock"))
}

/// The store-wide lock, held shared by builds while they claim blobs and
/// exclusively by collection.
struct GcLock {
    _file: std::fs::File,
}

impl GcLock {
    fn shared(root: &Path) -> std::io::Result<GcLock> {
        let file = lock_file(root)?;
        flock(file.as_fd(), FlockOperation::LockShared)?;
        Ok(GcLock { _file: file })
    }

    fn exclusive(root: &Path) -> std::io::Result<GcLock> {
        let file = lock_file(root)?;
        flock(file.as_fd(), FlockOperation::LockExclusive)?;
        Ok(GcLock { _file: file })
    }
}

impl Lease {
    /// Takes a lease on the store under `root`.
    pub fn acquire(root: &Path) -> std::io::Result<Lease> {
        let dir = root.join("leases");
        std::fs::create_dir_all(&dir)?;
        let file = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempfile_in(&dir)?;
        let (file, path) = file.keep().map_err(|e| e.error)?;
        flock(file.as_fd(), FlockOperation::LockExclusive)?;
        Ok(Lease {
            root: root.to_path_buf(),
            path,
            file,
        })
    }

    /// Runs `f` with collection held off and records the digests it
    /// returns as this build's: look a blob up and claim it in one step.
    pub fn hold<T>(&mut self, f: impl FnOnce() -> (T, Vec<Digest>)) -> std::io::Result<T> {
        let _lock = GcLock::shared(&self.root)?;
        let (value, digests) = f();
        let mut text = String::new();
        for digest in digests {
            text.push_str(digest.as_str());
            text.push('\n');
        }
        self.file.write_all(text.as_bytes())?;
        Ok(value)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The leases of builds still running: the digests they hold and when the
/// oldest started. Stale leases (their build died) are removed.
fn live_leases(root: &Path) -> (HashSet<Digest>, Option<SystemTime>) {
    let mut held = HashSet::new();
    let mut oldest: Option<SystemTime> = None;
    let Ok(entries) = std::fs::read_dir(root.join("leases")) else {
        return (held, oldest);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let live = flock(file.as_fd(), FlockOperation::NonBlockingLockShared).is_err();
        if !live {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let started = entry
            .metadata()
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        oldest = Some(oldest.map_or(started, |o| o.min(started)));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        held.extend(text.lines().filter_map(|l| l.parse().ok()));
    }
    (held, oldest)
}

/// What `rbuild du` reports, in bytes and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Blobs in the content store.
    pub blobs: u64,
    /// Their total size.
    pub blob_bytes: u64,
    /// Cache index entries.
    pub entries: u64,
    /// Extracted layers (overlay lower dirs).
    pub snapshots: u64,
    /// Their total size on disk.
    pub snapshot_bytes: u64,
    /// `RUN --mount=type=cache` directories' size.
    pub cache_mount_bytes: u64,
    /// Named images.
    pub images: u64,
}

impl Usage {
    /// Everything rbuild keeps on disk.
    pub fn total(&self) -> u64 {
        self.blob_bytes + self.snapshot_bytes + self.cache_mount_bytes
    }
}

fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn blobs(root: &Path) -> Vec<(Digest, u64, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(root.join("blobs/sha256")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let digest: Digest = format!("sha256:{}", e.file_name().to_string_lossy())
                .parse()
                .ok()?;
            let meta = e.metadata().ok()?;
            Some((digest, meta.len(), meta.modified().ok()?))
        })
        .collect()
}

/// The committed snapshots under `root`, by the snapshot store's own walk
/// (none when it cannot be read), with the bytes each takes on disk.
fn snapshots(root: &Path) -> (SnapshotStore, Vec<(Committed, u64)>) {
    let store = SnapshotStore::existing(root.join("snapshots"));
    let found = store
        .walk()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let disk = store.usage(&c.chain).map_or(0, |u| u.disk);
            (c, disk)
        })
        .collect();
    (store, found)
}

/// Cache entries: (file, entry, last use).
fn cache_entries(root: &Path) -> Vec<(PathBuf, Option<CacheEntry>, SystemTime)> {
    let Ok(entries) = std::fs::read_dir(root.join("cache")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let used = e.metadata().ok()?.modified().ok()?;
            let entry = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            Some((e.path(), entry, used))
        })
        .collect()
}

/// Measures the store under `root`.
pub fn usage(root: &Path) -> Usage {
    let blobs = blobs(root);
    let (_, snapshots) = snapshots(root);
    Usage {
        blobs: blobs.len() as u64,
        blob_bytes: blobs.iter().map(|b| b.1).sum(),
        entries: cache_entries(root).len() as u64,
        snapshots: snapshots.len() as u64,
        snapshot_bytes: snapshots.iter().map(|(_, disk)| disk).sum(),
        cache_mount_bytes: dir_size(&root.join("cache-mounts")),
        images: crate::image::local::LocalImages::open(root).all().len() as u64,
    }
}

/// What to collect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Drop every cache entry, snapshot and cache mount (named images stay).
    pub all: bool,
    /// Drop least recently used entries and snapshots until the store
    /// takes at most this many bytes.
    pub keep_storage: Option<u64>,
}

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache entries removed.
    pub entries: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Snapshots removed.
    pub snapshots: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Whether snapshots were left alone because a build was running.
    pub builds_running: bool,
}

/// Collects garbage under `root` as `options` say. Dangling blobs (no
/// named image, cache entry or running build uses them), leftovers of
/// killed builds and stale leases always go.
pub fn prune(root: &Path, options: PruneOptions) -> std::io::Result<PruneReport> {
    let _lock = GcLock::exclusive(root)?;
    let store = ContentStore::open(root).map_err(std::io::Error::other)?;
    let mut report = PruneReport::default();
    let (held, oldest_lease) = live_leases(root);
    let idle = oldest_lease.is_none();
    report.builds_running = !idle;

    let protected = protected_blobs(root, held);
    let mut entries = cache_entries(root);
    let mut blobs = Blobs::new(root, &store, protected, oldest_lease, &entries);
    blobs.remove_dangling(&mut report);
    // Snapshots are mounted by running steps: only collected (and so only
    // walked and measured) when idle.
    let (snapshot_store, snapshots) = if idle {
        snapshots(root)
    } else {
        (SnapshotStore::existing(root.join("snapshots")), Vec::new())
    };
    evict_lru(
        root,
        options,
        &mut entries,
        (&snapshot_store, &snapshots),
        &mut blobs,
        &mut report,
    );
    if idle {
        let _ = snapshot_store.sweep_half_made();
        remove_leftovers(root, &store, options, &mut report);
    }
    Ok(report)
}

/// The roots a collection keeps the blobs of: named images, the busybox
/// base, and `held`, what running builds' leases list.
fn protected_blobs(root: &Path, held: HashSet<Digest>) -> HashSet<Digest> {
    let mut protected = held;
    for image in crate::image::local::LocalImages::open(root).all() {
        protected.extend(image.blobs().cloned());
    }
    if let Ok(bytes) = std::fs::read(root.join("busybox-base.json")) {
        if let Ok((_, image)) = serde_json::from_slice::<(String, StoredImage)>(&bytes) {
            protected.extend(image.blobs().cloned());
        }
    }
    protected
}

/// The blobs of a collection not yet removed, and what keeps each: being
/// protected, a surviving cache entry using it as its layer, or being newer
/// than the oldest running build (which may have written it).
struct Blobs<'a> {
    store: &'a ContentStore,
    protected: HashSet<Digest>,
    /// When the oldest running build started, if one runs.
    oldest_lease: Option<SystemTime>,
    /// How many surviving cache entries use each blob as their layer.
    refs: HashMap<Digest, u32>,
    /// Size and modification time of each blob left.
    left: HashMap<Digest, (u64, SystemTime)>,
}

impl<'a> Blobs<'a> {
    /// Lists the blobs under `root` and counts the layer references of
    /// the cache `entries`.
    fn new(
        root: &Path,
        store: &'a ContentStore,
        protected: HashSet<Digest>,
        oldest_lease: Option<SystemTime>,
        entries: &[(PathBuf, Option<CacheEntry>, SystemTime)],
    ) -> Self {
        let mut refs: HashMap<Digest, u32> = HashMap::new();
        for (_, entry, _) in entries {
            if let Some(layer) = entry.as_ref().and_then(|e| e.layer.as_ref()) {
                *refs.entry(layer.digest.clone()).or_default() += 1;
            }
        }
        let left = blobs(root)
            .into_iter()
            .map(|(d, size, t)| (d, (size, t)))
            .collect();
        Blobs {
            store,
            protected,
            oldest_lease,
            refs,
            left,
        }
    }

    /// Whether nothing keeps blob `d`, last modified at `modified`.
    fn removable(&self, d: &Digest, modified: SystemTime) -> bool {
        let fresh = self.oldest_lease.is_some_and(|start| modified >= start);
        !self.protected.contains(d) && self.refs.get(d).copied().unwrap_or(0) == 0 && !fresh
    }

    /// Removes blob `d` from the store and from the blobs left, counting
    /// it in `report` if its file went. Returns its size (0 if not left).
    fn remove(&mut self, d: &Digest, report: &mut PruneReport) -> u64 {
        let Some((size, _)) = self.left.remove(d) else {
            return 0;
        };
        if std::fs::remove_file(self.store.blob_path(d)).is_ok() {
            report.blobs += 1;
            report.freed += size;
        }
        size
    }

    /// Removes every blob nothing keeps.
    fn remove_dangling(&mut self, report: &mut PruneReport) {
        let dangling: Vec<Digest> = self
            .left
            .iter()
            .filter(|(d, (_, t))| self.removable(d, *t))
            .map(|(d, _)| d.clone())
            .collect();
        for d in dangling {
            self.remove(&d, report);
        }
    }

    /// Drops one cache entry's reference to blob `d`, removing the blob if
    /// nothing keeps it any more. Returns the bytes removed from the count.
    fn release(&mut self, d: &Digest, report: &mut PruneReport) -> u64 {
        let count = self.refs.entry(d.clone()).or_default();
        *count = count.saturating_sub(1);
        match self.left.get(d) {
            Some(&(_, t)) if self.removable(d, t) => self.remove(d, report),
            _ => 0,
        }
    }

    /// The bytes of the blobs left.
    fn total(&self) -> u64 {
        self.left.values().map(|(s, _)| s).sum()
    }
}

/// A cache entry or snapshot that the size cap or `--all` may remove,
/// by its index in its list.
enum Victim {
    Entry(usize),
    Snapshot(usize),
}

/// Removes cache entries (and the blobs only they used) and `snapshots`,
/// least recently used first, while the store is over what `options`
/// allow: everything for `--all`, down to the cap for `--keep-storage`.
fn evict_lru(
    root: &Path,
    options: PruneOptions,
    entries: &mut [(PathBuf, Option<CacheEntry>, SystemTime)],
    (snapshot_store, snapshots): (&SnapshotStore, &[(Committed, u64)]),
    blobs: &mut Blobs<'_>,
    report: &mut PruneReport,
) {
    let mut total: u64 = blobs.total()
        + snapshots.iter().map(|(_, disk)| disk).sum::<u64>()
        + dir_size(&root.join("cache-mounts"));
    let mut victims: Vec<(SystemTime, Victim)> = entries
        .iter()
        .enumerate()
        .map(|(i, (_, _, t))| (*t, Victim::Entry(i)))
        .chain(
            snapshots
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (c.last_used, Victim::Snapshot(i))),
        )
        .collect();
    victims.sort_by_key(|(t, _)| *t);
    for (_, victim) in victims {
        let over = match options.keep_storage {
            _ if options.all => true,
            Some(cap) => total > cap,
            None => false,
        };
        if !over {
            break;
        }
        let freed = match victim {
            Victim::Entry(i) => evict_entry(&mut entries[i], blobs, report),
            Victim::Snapshot(i) => evict_snapshot(snapshot_store, &snapshots[i], report),
        };
        total = total.saturating_sub(freed);
    }
}

/// Removes a cache entry's file, then its layer blob if nothing else keeps
/// it. Returns the bytes of the blob removed (the entry file is not
/// counted in the store's size).
fn evict_entry(
    (path, entry, _): &mut (PathBuf, Option<CacheEntry>, SystemTime),
    blobs: &mut Blobs<'_>,
    report: &mut PruneReport,
) -> u64 {
    if std::fs::remove_file(&*path).is_err() {
        return 0;
    }
    crate::failpoint::hit("gc-entry-removed");
    report.entries += 1;
    let Some(layer) = entry.take().and_then(|e| e.layer) else {
        return 0;
    };
    blobs.release(&layer.digest, report)
}

/// Removes a snapshot through the store (which renames it out before
/// deleting it). Returns its bytes if it went, else 0.
fn evict_snapshot(
    store: &SnapshotStore,
    (snapshot, disk): &(Committed, u64),
    report: &mut PruneReport,
) -> u64 {
    match store.remove(&snapshot.chain) {
        Ok(true) => {
            report.snapshots += 1;
            report.freed += disk;
            *disk
        }
        _ => 0,
    }
}

/// Removes what no build uses while none runs: leftovers of killed builds,
/// links to removed snapshots, stale ingests, and with `--all` the cache
/// mounts.
fn remove_leftovers(
    root: &Path,
    store: &ContentStore,
    options: PruneOptions,
    report: &mut PruneReport,
) {
    for sub in ["snapshots/w", "snapshots/tmp", "tmp"] {
        if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
            for entry in entries.flatten() {
                let _ = remove_tree(&entry.path());
            }
        }
    }
    if let Ok(links) = std::fs::read_dir(root.join("snapshots/l")) {
        for link in links.flatten() {
            if std::fs::metadata(link.path()).is_err() {
                let _ = std::fs::remove_file(link.path());
            }
        }
    }
    if options.all {
        let mounts = root.join("cache-mounts");
        report.freed += dir_size(&mounts);
        let _ = remove_tree(&mounts);
    }
    let _ = store.clean_ingest(std::time::Duration::from_secs(0));
    // Records of gzip blobs this sweep (or an earlier one) removed.
    crate::cache::forget_dangling_gzip(store);
}

/// The size cap configured for `root`: `$RBUILD_KEEP_STORAGE`, else
/// `keep_storage` in `$RBUILD_ROOT/config.json` (e.g. `"2g"`).
pub fn configured_cap(root: &Path) -> Result<Option<u64>, String> {
    let text = match std::env::var("RBUILD_KEEP_STORAGE") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => std::fs::read(root.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["keep_storage"].as_str().map(str::to_string)),
    };
    text.map(|t| crate::units::parse_size(&t).map_err(|e| format!("keep_storage {t:?}: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::LayerBlob;
    use crate::cache::CacheIndex;

    fn entry_for(store: &ContentStore, index: &CacheIndex, bytes: &[u8]) -> (Digest, Digest) {
        let blob = store.put(bytes).unwrap();
        let key = Digest::of(bytes);
        index
            .put(
                &key,
                &CacheEntry {
                    layer: Some(LayerBlob {
                        digest: blob.clone(),
                        size: bytes.len() as u64,
                        diff_id: Digest::of(b"tar"),
                    }),
                    created: "2024-01-01T00:00:00Z".into(),
                },
            )
            .unwrap();
        (key, blob)
    }

    fn prune_all(root: &Path) -> PruneReport {
        prune(
            root,
            PruneOptions {
                all: true,
                keep_storage: None,
            },
        )
        .unwrap()
    }

    fn age(path: &Path, secs_ago: u64) {
        let f = std::fs::File::options().append(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - std::time::Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn dangling_blobs_go_and_referenced_ones_stay() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let index = CacheIndex::open(root.path()).unwrap();
        let (_, kept) = entry_for(&store, &index, b"kept layer");
        let dangling = store.put(b"nobody uses me").unwrap();
        let report = prune(root.path(), PruneOptions::default()).unwrap();
        assert_eq!((report.blobs, report.entries), (1, 0));
        assert!(store.contains(&kept));
        assert!(!store.contains(&dangling));
    }

    #[test]
    fn a_cap_drops_the_least_recently_used_first_and_all_drops_everything() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let index = CacheIndex::open(root.path()).unwrap();
        let big = vec![7u8; 40_000];
        let mut other = big.clone();
        other[0] = 8;
        let (old_key, old_blob) = entry_for(&store, &index, &big);
        let (new_key, new_blob) = entry_for(&store, &index, &other);
        age(
            &root.path().join(format!("cache/{}.json", old_key.hex())),
            3600,
        );
        let report = prune(
            root.path(),
            PruneOptions {
                all: false,
                keep_storage: Some(50_000),
            },
        )
        .unwrap();
        assert_eq!((report.entries, report.blobs), (1, 1));
        assert!(!store.contains(&old_blob));
        assert!(store.contains(&new_blob));
        assert!(index.get(&new_key, &store).is_some());
        let report = prune_all(root.path());
        assert_eq!((report.entries, report.blobs), (1, 1));
        assert_eq!(usage(root.path()).blobs, 0);
    }

    #[test]
    fn a_running_builds_lease_and_new_blobs_survive_even_prune_all() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let index = CacheIndex::open(root.path()).unwrap();
        let (_, used) = entry_for(&store, &index, b"a layer the build took");
        let old_dangling = store.put(b"old garbage").unwrap();
        age(&store.blob_path(&old_dangling), 3600);
        let mut lease = Lease::acquire(root.path()).unwrap();
        lease.hold(|| ((), vec![used.clone()])).unwrap();
        let written = store.put(b"a layer the build just wrote").unwrap();
        let report = prune_all(root.path());
        assert!(report.builds_running);
        assert!(store.contains(&used), "a leased blob was removed");
        assert!(
            store.contains(&written),
            "a running build's new blob was removed"
        );
        assert!(!store.contains(&old_dangling));
        drop(lease);
        let report = prune_all(root.path());
        assert!(!report.builds_running);
        assert!(!store.contains(&used));
        assert!(!store.contains(&written));
    }
}
