//! The snapshotter suite (issue 15), after containerd's
//! `snapshots/testsuite`: one set of checks run against both
//! implementations of the build's snapshot contract (the overlay and the
//! copy back-end of `snapshot::backend`, with the store's walk, usage and
//! removal). Files are written and read through the mounts each back-end
//! hands out (a real overlay mount for overlay), so what is checked is
//! what a step would see, not the store's private layout.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::{is_root, skip};
use rbuild::blob::LayerBlob;
use rbuild::cache::{Compression, ContentStore};
use rbuild::snapshot::backend::{self, LayerWrite, RootMounts, StepSnapshots, View};
use rbuild::snapshot::diff::{LayerOptions, OpaqueXattr};
use rbuild::snapshot::{chain_ids, Layer, SnapshotStore};

/// How to mount what a back-end hands out.
enum Mounts {
    /// An overlay: lower dirs top first; upper and work when writable.
    Overlay {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
    /// A directory used as it is.
    Dir { path: PathBuf },
}

/// A snapshot's mounts made usable at a path for as long as it lives.
struct Mounted {
    path: PathBuf,
    /// Set when an overlay was mounted (unmounted on drop).
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self._dir.is_some() {
            let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Mounts `mounts` as a step's root would be: an overlay with the
/// executor's options, or the directory itself.
fn mount(mounts: &Mounts) -> Mounted {
    match mounts {
        Mounts::Dir { path } => Mounted {
            path: path.clone(),
            _dir: None,
        },
        Mounts::Overlay { lowers, upper } => {
            let dir = tempfile::tempdir().unwrap();
            let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
            let mut data = format!("lowerdir={}", lowers.join(":"));
            if let Some((upper, work)) = upper {
                data.push_str(&format!(
                    ",upperdir={},workdir={}",
                    upper.display(),
                    work.display()
                ));
            }
            data.push_str(",redirect_dir=off,metacopy=off,index=off");
            let flags = if upper.is_some() { 0 } else { libc::MS_RDONLY };
            let c = |s: &str| std::ffi::CString::new(s).unwrap();
            let (kind, target, options) =
                (c("overlay"), c(&dir.path().display().to_string()), c(&data));
            // SAFETY: NUL-terminated strings that outlive the call.
            let rc = unsafe {
                libc::mount(
                    kind.as_ptr(),
                    target.as_ptr(),
                    kind.as_ptr(),
                    flags,
                    options.as_ptr().cast(),
                )
            };
            assert_eq!(
                rc,
                0,
                "mount overlay {data}: {}",
                std::io::Error::last_os_error()
            );
            Mounted {
                path: dir.path().to_path_buf(),
                _dir: Some(dir),
            }
        }
    }
}

fn write(root: &Path, rel: &str, body: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

/// A base with what layers carry: owners, modes, a symlink, a hard link,
/// an xattr, a fifo, times.
fn fill_base(root: &Path) {
    write(root, "etc/hostname", "base\n");
    write(root, "app/a", "a1");
    write(root, "app/gone", "doomed");
    write(root, "app/sub/deep", "deep");
    // chown clears setuid: owner first, then the mode.
    std::os::unix::fs::chown(root.join("app/a"), Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(root.join("app/a"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::os::unix::fs::symlink("../etc/hostname", root.join("app/link")).unwrap();
    std::fs::hard_link(root.join("app/sub/deep"), root.join("app/twin")).unwrap();
    rustix::fs::setxattr(
        root.join("app/sub/deep"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("app/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("etc/hostname"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

// The same steps through both back-ends, read back through what each
// hands out, and the layers compared between them.

/// The mounts of a prepared root or a view, as the suite's `mount` takes
/// them.
fn root_mounts(m: &RootMounts) -> Mounts {
    match m {
        RootMounts::Dir(path) => Mounts::Dir { path: path.clone() },
        RootMounts::Overlay {
            base,
            lowers,
            upper,
            work,
            ..
        } => Mounts::Overlay {
            lowers: lowers.iter().map(|l| base.join(l)).collect(),
            upper: Some((base.join(upper), base.join(work))),
        },
    }
}

fn view_mounts(v: &View) -> Mounts {
    match v {
        View::Lowers { base, lowers } => Mounts::Overlay {
            lowers: lowers.iter().map(|l| base.join(l)).collect(),
            upper: None,
        },
        View::Dir { path, .. } => Mounts::Dir { path: path.clone() },
    }
}

/// One step on `layers`: `change` runs on the mounted root, then the
/// root is committed; its layer.
fn step(
    steps: &dyn StepSnapshots,
    blobs: &ContentStore,
    layers: &[LayerBlob],
    change: impl FnOnce(&Path),
) -> LayerBlob {
    let ws = steps.store().workspace().unwrap();
    let prepared = steps
        .prepare(blobs, &Layer::all_ready(layers), &ws)
        .unwrap();
    let root = mount(&root_mounts(&prepared.mounts));
    change(&root.path);
    drop(root);
    let write = LayerWrite {
        blobs: blobs.clone(),
        options: LayerOptions {
            source_date_epoch: Some(1_500_000_000),
            id_map: None,
            compression: Compression::None,
        },
        counter: None,
        opaque: OpaqueXattr::Trusted,
    };
    let layer = steps.commit(prepared, &ws, &Layer::all_ready(layers), &write);
    // The overlay back-end writes it on a thread of its own.
    layer.unwrap().wait().unwrap()
}

/// The child step: a rewrite, an addition, deletions (one of a hard
/// link).
fn change_child(root: &Path) {
    assert_eq!(read(root, "app/a").as_deref(), Some("a1"), "the base shows");
    write(root, "app/a", "a2");
    write(root, "app/new", "new");
    std::fs::remove_file(root.join("app/gone")).unwrap();
    std::fs::remove_file(root.join("app/twin")).unwrap();
}

/// A dir made anew. Its layer says so in each differ's own way (overlay:
/// an opaque marker; the copy differ: a whiteout per old entry, as a
/// double-walk differ does), so only the trees are compared.
fn regrow(root: &Path) {
    assert_eq!(
        read(root, "app/new").as_deref(),
        Some("new"),
        "the child shows"
    );
    std::fs::remove_dir_all(root.join("app/sub")).unwrap();
    write(root, "app/sub/fresh", "fresh");
}

/// What a root of the base and the child must show.
fn assert_child_tree(root: &Path, how: &str) {
    assert_eq!(read(root, "app/a").as_deref(), Some("a2"), "{how}");
    assert_eq!(read(root, "app/new").as_deref(), Some("new"), "{how}");
    assert_eq!(read(root, "app/gone"), None, "{how}: deleted");
    assert_eq!(
        read(root, "app/sub/deep"),
        None,
        "{how}: the old dir's files"
    );
    assert_eq!(
        read(root, "app/sub/fresh").as_deref(),
        Some("fresh"),
        "{how}"
    );
    assert_eq!(
        read(root, "etc/hostname").as_deref(),
        Some("base\n"),
        "{how}"
    );
    let a = std::fs::metadata(root.join("app/a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (1000, 1001), "{how}: owners kept");
}

/// Reads `view` through its mounts, then gives it back.
fn assert_view(view: View, how: &str) {
    let mounted = mount(&view_mounts(&view));
    assert_child_tree(&mounted.path, how);
    drop(mounted);
    drop(view);
}

/// A layer's entries, one line each (name, type, mode, owner, mtime,
/// size, link), for a readable comparison.
fn listing(blobs: &ContentStore, layer: &LayerBlob) -> Vec<String> {
    let mut tar = tar::Archive::new(std::fs::File::open(blobs.blob_path(&layer.digest)).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let xattrs: Vec<String> = match e.pax_extensions().unwrap() {
                Some(pax) => pax
                    .map(|p| p.unwrap().key().unwrap_or("?").to_string())
                    .collect(),
                None => Vec::new(),
            };
            format!(
                "{} {:?} {:o} {}:{} {} {} {:?} {:?}",
                e.path().unwrap().display(),
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                h.size().unwrap(),
                h.link_name().unwrap(),
                xattrs
            )
        })
        .collect()
}

/// Runs the base, the child and an empty step through one back-end over
/// a fresh store, checks what it hands out, and returns the layers with
/// their listings.
fn backend_run(overlay: bool) -> (Vec<LayerBlob>, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = ContentStore::open(dir.path().join("blobs")).unwrap();
    let store = SnapshotStore::open(dir.path().join("snapshots")).unwrap();
    let steps = backend::for_mode(store, overlay);
    let name = steps.name();
    let base = step(&*steps, &blobs, &[], fill_base);
    let child = step(&*steps, &blobs, std::slice::from_ref(&base), change_child);
    let regrown = step(&*steps, &blobs, &[base.clone(), child.clone()], regrow);
    let layers = vec![base, child, regrown];
    let empty = step(&*steps, &blobs, &layers, |_| {});
    let scratch = tempfile::tempdir().unwrap();
    let view = steps
        .view(&blobs, &Layer::all_ready(&layers), scratch.path())
        .unwrap();
    assert_eq!(matches!(view, View::Lowers { .. }), overlay, "{name}: view");
    assert_view(view, &format!("{name}: view"));
    let scratch = tempfile::tempdir().unwrap();
    let view = steps
        .view_dir(&blobs, &Layer::all_ready(&layers), scratch.path())
        .unwrap();
    assert!(matches!(view, View::Dir { .. }), "{name}: view_dir");
    assert_view(view, &format!("{name}: view_dir"));
    // A view gives the tree back: the next step still starts from it.
    step(&*steps, &blobs, &layers, |root| {
        assert_child_tree(root, &format!("{name}: a step after the views"))
    });

    // A store with the blobs but none of the snapshots extracts them.
    let fresh = backend::for_mode(
        SnapshotStore::open(dir.path().join("fresh")).unwrap(),
        overlay,
    );
    step(&*fresh, &blobs, &layers, |root| {
        assert_child_tree(root, &format!("{name}: from the blobs alone"))
    });
    let mut all = layers;
    all.push(empty);
    let listings = all.iter().map(|l| listing(&blobs, l)).collect();
    (all, listings)
}

#[test]
fn both_step_back_ends_make_the_same_layers_and_views() {
    if !is_root() {
        skip("overlay mounts and the base's owners need root");
        return;
    }
    let (overlay, overlay_lists) = backend_run(true);
    let (copy, copy_lists) = backend_run(false);
    // All but the regrown dir's layer (see `regrow`), byte for byte.
    for i in [0, 1, 3] {
        assert_eq!(
            overlay_lists[i], copy_lists[i],
            "layer {i}: the same entries"
        );
        assert_eq!(overlay[i], copy[i], "layer {i}: the same bytes");
    }
    // The empty step still made a layer (BuildKit commits every step).
    assert!(overlay_lists[3].is_empty() && overlay[3].size > 0);
}

#[test]
fn a_root_goes_back_to_the_back_end_that_made_it() {
    if !is_root() {
        skip("overlay mounts need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blobs = ContentStore::open(dir.path().join("blobs")).unwrap();
    let store = || SnapshotStore::open(dir.path().join("snapshots")).unwrap();
    let (overlay, copy) = (
        backend::for_mode(store(), true),
        backend::for_mode(store(), false),
    );
    let ws = overlay.store().workspace().unwrap();
    let prepared = overlay.prepare(&blobs, &[], &ws).unwrap();
    let write = LayerWrite {
        blobs: blobs.clone(),
        options: LayerOptions {
            source_date_epoch: None,
            id_map: None,
            compression: Compression::None,
        },
        counter: None,
        opaque: OpaqueXattr::Trusted,
    };
    let err = copy.commit(prepared, &ws, &[], &write).unwrap_err();
    assert!(
        err.to_string().contains("not prepared by the copy tier"),
        "{err}"
    );
}

// The suite proper: each check on a fresh store, through one back-end.

/// A fresh blob store and snapshot store, and one back-end over the
/// latter.
struct Rig {
    dir: tempfile::TempDir,
    blobs: ContentStore,
    steps: std::sync::Arc<dyn StepSnapshots>,
    overlay: bool,
}

impl Rig {
    fn new(overlay: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let blobs = ContentStore::open(dir.path().join("blobs")).unwrap();
        let store = SnapshotStore::open(dir.path().join("snapshots")).unwrap();
        Rig {
            blobs,
            steps: backend::for_mode(store, overlay),
            dir,
            overlay,
        }
    }

    /// One step on `layers` (see [`step`]).
    fn step(&self, layers: &[LayerBlob], change: impl FnOnce(&Path)) -> LayerBlob {
        step(&*self.steps, &self.blobs, layers, change)
    }

    /// Runs `read` on the root of `layers` as the back-end's view hands
    /// it out, then gives the view back.
    fn read_view(&self, layers: &[LayerBlob], read: impl FnOnce(&Path)) {
        let scratch = tempfile::tempdir().unwrap();
        let view = self
            .steps
            .view(&self.blobs, &Layer::all_ready(layers), scratch.path())
            .unwrap();
        let mounted = mount(&view_mounts(&view));
        read(&mounted.path);
        drop(mounted);
        drop(view);
    }

    fn store(&self) -> &SnapshotStore {
        self.steps.store()
    }
}

/// The chain id (hex) of the top of `layers`.
fn chain_of(layers: &[LayerBlob]) -> String {
    let diff_ids: Vec<_> = layers.iter().map(|l| l.diff_id.clone()).collect();
    chain_ids(&diff_ids).last().unwrap().hex().to_string()
}

/// The chains the store's walk lists, sorted.
fn walked(rig: &Rig) -> Vec<String> {
    let mut chains: Vec<String> = rig
        .store()
        .walk()
        .unwrap()
        .into_iter()
        .map(|c| {
            // Each back-end commits its own kind of snapshot.
            assert_eq!((c.overlay, c.tree), (rig.overlay, !rig.overlay), "{c:?}");
            c.chain
        })
        .collect();
    chains.sort();
    chains
}

/// A base, then a child that changes, adds and deletes: a view of the
/// child shows exactly the child's tree, with what layers carry (owners,
/// modes, a symlink, a hard link, an xattr, a fifo), and a view of the
/// base is unchanged by its child.
fn changes_in_a_child_show_in_its_view(rig: &Rig) {
    let base = rig.step(&[], fill_base);
    let child = rig.step(std::slice::from_ref(&base), |root| {
        assert_eq!(read(root, "app/a").as_deref(), Some("a1"));
        write(root, "app/a", "a2");
        write(root, "app/new", "new");
        std::fs::remove_file(root.join("app/gone")).unwrap();
        std::fs::remove_dir_all(root.join("etc")).unwrap();
    });
    rig.read_view(&[base.clone(), child], |root| {
        assert_eq!(read(root, "app/a").as_deref(), Some("a2"));
        assert_eq!(read(root, "app/new").as_deref(), Some("new"));
        assert_eq!(read(root, "app/gone"), None, "a deleted file stays deleted");
        assert!(!root.join("etc").exists(), "a deleted dir stays deleted");
        let a = std::fs::metadata(root.join("app/a")).unwrap();
        assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1001, 0o4750));
        assert_eq!(
            std::fs::read_link(root.join("app/link")).unwrap(),
            Path::new("../etc/hostname")
        );
        let (deep, twin) = (
            std::fs::metadata(root.join("app/sub/deep")).unwrap(),
            std::fs::metadata(root.join("app/twin")).unwrap(),
        );
        assert_eq!(deep.ino(), twin.ino(), "hard links stay linked");
        let mut note = [0u8; 8];
        let n = rustix::fs::getxattr(root.join("app/sub/deep"), "user.note", &mut note).unwrap();
        assert_eq!(&note[..n], b"kept");
        use std::os::unix::fs::FileTypeExt;
        let pipe = std::fs::symlink_metadata(root.join("app/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!(pipe.mode() & 0o777, 0o640);
    });
    rig.read_view(&[base], |root| {
        assert_eq!(read(root, "app/a").as_deref(), Some("a1"));
        assert_eq!(read(root, "app/gone").as_deref(), Some("doomed"));
        let hostname = std::fs::metadata(root.join("etc/hostname")).unwrap();
        assert_eq!(hostname.mtime(), 1_000_000_000);
    });
}

/// Thirty generations, each changing one file: the top sees the newest of
/// each and none of what was deleted on the way.
fn a_long_chain_reads_like_one_tree(rig: &Rig) {
    let mut layers = Vec::new();
    for i in 0..30 {
        let layer = rig.step(&layers, |root| {
            write(root, &format!("layer/{i}"), &i.to_string());
            write(root, "shared", &i.to_string());
            if i > 0 && i % 5 == 0 {
                std::fs::remove_file(root.join(format!("layer/{}", i - 1))).unwrap();
            }
        });
        layers.push(layer);
    }
    rig.read_view(&layers, |root| {
        assert_eq!(read(root, "shared").as_deref(), Some("29"));
        for i in 0..30 {
            let deleted = (i + 1) % 5 == 0 && i + 1 < 30;
            let want = (!deleted).then(|| i.to_string());
            assert_eq!(read(root, &format!("layer/{i}")), want, "layer/{i}");
        }
    });
    // Overlay keeps every step's upper dir; the copy tier's one tree moved
    // from step to step (the earlier chains come back from their blobs).
    let kept = if rig.overlay { 30 } else { 1 };
    assert_eq!(walked(rig).len(), kept, "committed snapshots");
}

/// walk lists each committed snapshot; usage counts its own bytes (a hard
/// link once) and inodes; a removed snapshot is gone from walk, and a
/// step or a view that needs it again gets it back from its blob.
fn walk_usage_and_remove(rig: &Rig) {
    let big = rig.step(&[], |root| {
        write(root, "big", &"x".repeat(1 << 20));
        std::fs::hard_link(root.join("big"), root.join("big2")).unwrap();
        write(root, "d/small", "s");
    });
    let chain = chain_of(std::slice::from_ref(&big));
    assert_eq!(walked(rig), std::slice::from_ref(&chain));
    let usage = rig.store().usage(&chain).unwrap();
    assert_eq!(usage.size, (1 << 20) + 1, "a hard link counts once");
    // The chain's dir, its fs or tree, big (and its link), d, d/small.
    assert_eq!(usage.inodes, 5);
    assert!(usage.disk >= usage.size, "{usage:?}");

    let child = rig.step(std::slice::from_ref(&big), |root| write(root, "other", "o"));
    let both = [big.clone(), child];
    let top = chain_of(&both);
    if rig.overlay {
        let mut want = vec![chain.clone(), top.clone()];
        want.sort();
        assert_eq!(walked(rig), want);
        assert!(rig.store().remove(&chain).unwrap());
    } else {
        // The child took the tree: its parent's chain holds none now.
        assert_eq!(walked(rig), std::slice::from_ref(&top));
        assert!(rig.store().remove(&top).unwrap());
    }
    assert!(!rig.store().remove(&chain).unwrap(), "removed already");
    let left = if rig.overlay { vec![top] } else { Vec::new() };
    assert_eq!(walked(rig), left);
    assert_eq!(rig.store().usage(&chain).unwrap().inodes, 0);
    rig.read_view(&both, |root| {
        assert_eq!(read(root, "big").map(|b| b.len()), Some(1 << 20));
        assert_eq!(read(root, "other").as_deref(), Some("o"));
    });
    rig.step(&both, |root| {
        assert_eq!(read(root, "d/small").as_deref(), Some("s"));
        assert_eq!(read(root, "other").as_deref(), Some("o"));
    });
}

/// A chain's dir left with no snapshot in it (what a kill between making
/// the dir and renaming the snapshot in leaves) is not a snapshot: walk
/// skips it, a step that needs the chain extracts into it, and a sweep
/// removes such dirs and nothing else.
fn a_half_made_snapshot_is_not_one(rig: &Rig) {
    let base = rig.step(&[], fill_base);
    let fresh = backend::for_mode(
        SnapshotStore::open(rig.dir.path().join("fresh")).unwrap(),
        rig.overlay,
    );
    let chain = chain_of(std::slice::from_ref(&base));
    std::fs::create_dir(fresh.store().root().join(&chain)).unwrap();
    assert!(fresh.store().walk().unwrap().is_empty());
    let next = step(&*fresh, &rig.blobs, std::slice::from_ref(&base), |root| {
        assert_eq!(read(root, "app/a").as_deref(), Some("a1"));
    });
    let listed = || -> Vec<String> {
        let mut chains: Vec<String> = fresh
            .store()
            .walk()
            .unwrap()
            .into_iter()
            .map(|c| c.chain)
            .collect();
        chains.sort();
        chains
    };
    // Overlay extracted the base into its dir; the copy tier applied it
    // into the step's own tree, committed under the step's chain.
    let mut want = vec![chain_of(&[base.clone(), next])];
    if rig.overlay {
        want.push(chain);
        want.sort();
    }
    assert_eq!(listed(), want);
    let stray = fresh.store().root().join("ab".repeat(32));
    std::fs::create_dir(&stray).unwrap();
    fresh.store().sweep_half_made().unwrap();
    assert!(!stray.exists(), "the empty chain dir is swept");
    assert_eq!(listed(), want, "real snapshots stay");
}

type Check = fn(&Rig);

const SUITE: &[(&str, Check)] = &[
    (
        "changes_in_a_child_show_in_its_view",
        changes_in_a_child_show_in_its_view,
    ),
    (
        "a_long_chain_reads_like_one_tree",
        a_long_chain_reads_like_one_tree,
    ),
    ("walk_usage_and_remove", walk_usage_and_remove),
    (
        "a_half_made_snapshot_is_not_one",
        a_half_made_snapshot_is_not_one,
    ),
];

/// Runs every check on a fresh store through one back-end.
fn run_suite(overlay: bool) {
    for (name, check) in SUITE {
        eprintln!("-- {name} ({})", if overlay { "overlay" } else { "copy" });
        check(&Rig::new(overlay));
    }
}

#[test]
fn the_overlay_back_end_passes_the_suite() {
    if !is_root() {
        skip("overlay mounts need root");
        return;
    }
    run_suite(true);
}

#[test]
fn the_copy_back_end_passes_the_suite() {
    if !is_root() {
        skip("the suite's trees have other owners (chown needs root)");
        return;
    }
    run_suite(false);
}

/// An overlay step's layer is written while the next step runs: the
/// next step is prepared on it, by its snapshot's name, before anything
/// waits for its digest; once both land, the store names each by chain
/// id, as any other build finds them.
#[test]
fn the_next_step_stacks_a_layer_still_being_written() {
    if !is_root() {
        skip("overlay mounts need root");
        return;
    }
    let rig = Rig::new(true);
    let layer_write = LayerWrite {
        blobs: rig.blobs.clone(),
        options: LayerOptions {
            source_date_epoch: Some(1_500_000_000),
            id_map: None,
            compression: Compression::None,
        },
        counter: None,
        opaque: OpaqueXattr::Trusted,
    };
    let run = |layers: &[Layer], change: &dyn Fn(&Path)| -> Layer {
        let ws = rig.store().workspace().unwrap();
        let prepared = rig.steps.prepare(&rig.blobs, layers, &ws).unwrap();
        let root = mount(&root_mounts(&prepared.mounts));
        change(&root.path);
        drop(root);
        rig.steps
            .commit(prepared, &ws, layers, &layer_write)
            .unwrap()
    };
    let base = run(&[], &|root| write_big(root, "big", 64 << 20));
    let pending = base.snapshot().expect("named by its snapshot").to_string();
    assert!(pending.starts_with("p/"), "{pending}");
    // Prepared on the base without waiting for it: its lower dir is the
    // base's committed upper dir.
    let child = run(std::slice::from_ref(&base), &|root| {
        assert_eq!(std::fs::metadata(root.join("big")).unwrap().len(), 64 << 20);
        write(root, "small", "s");
    });
    let layers = Layer::wait_all(&[base, child]).unwrap();
    assert_eq!(walked(&rig).len(), 2, "each named by its chain id");
    assert!(rig
        .store()
        .root()
        .join(chain_of(&layers[..1]))
        .join("fs/big")
        .is_file());
    // A fresh build finds both by chain id, with the layers' own bytes.
    rig.read_view(&layers, |root| {
        assert_eq!(std::fs::metadata(root.join("big")).unwrap().len(), 64 << 20);
        assert_eq!(read(root, "small").as_deref(), Some("s"));
    });
    let listing_of_child = listing(&rig.blobs, &layers[1]);
    assert_eq!(listing_of_child.len(), 1, "{listing_of_child:?}");
}

/// `len` bytes at `rel` (a layer worth writing for a while).
fn write_big(root: &Path, rel: &str, len: usize) {
    let chunk = vec![7u8; 1 << 20];
    let mut file = std::fs::File::create(root.join(rel)).unwrap();
    for _ in 0..len / chunk.len() {
        std::io::Write::write_all(&mut file, &chunk).unwrap();
    }
}
