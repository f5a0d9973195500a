//! Named points in rbuild's writes where a test can have the process
//! killed, to prove a crash there leaves the store consistent (issue 15:
//! "a crash at any point leaves a consistent store").
//!
//! `RBUILD_FAILPOINT=<name>` makes the process send itself SIGKILL the
//! first time it reaches the point `name`: no destructor runs and no
//! buffer is flushed, as with the OOM killer or `kill -9`. Unset (always,
//! outside tests), a point costs one environment lookup. The names are
//! listed in [`POINTS`] so the test can go through every one and fail when
//! a point is no longer reached.

/// Every point, in the order a step reaches them.
pub const POINTS: &[&str] = &[
    // A copy-tier tree taken out of the store into a step's workspace.
    "snapshot-tree-taken",
    // A layer blob renamed into the content store, its dir not yet synced.
    "blob-committed",
    // A layer extracted into a temporary dir, not yet moved into place.
    "snapshot-extracted",
    // A step's upper dir (into `p/`, its layer not yet written) or copy-tier
    // tree moved out of its workspace.
    "snapshot-moved",
    // The snapshot's chain dir made, its `fs`/`tree` not yet renamed in.
    "snapshot-dir-made",
    // The snapshot in place (an overlay step's: its chain's symlink made),
    // its short name not yet linked.
    "snapshot-installed",
    // The step's cache entry written.
    "cache-entry-written",
    // A push: every blob uploaded, the manifest not yet put.
    "push-blobs-uploaded",
    // GC: a cache entry's file removed, its layer blob not yet.
    "gc-entry-removed",
    // GC: a snapshot moved out of the store, not yet deleted.
    "gc-snapshot-moved",
];

/// Kills the process here when `RBUILD_FAILPOINT` names `point`.
pub fn hit(point: &str) {
    debug_assert!(POINTS.contains(&point), "unlisted failpoint {point}");
    if std::env::var_os("RBUILD_FAILPOINT").is_some_and(|v| v == point) {
        // SAFETY: kill(2) of our own pid; SIGKILL cannot be caught.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
