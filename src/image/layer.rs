//! Deterministic gzip layers: sorted entries, normalised headers, and the
//! uncompressed digest (diff_id) and compressed digest in one pass.
//!
//! Used for layers rbuild assembles from a file list (the busybox base,
//! later COPY/ADD results). Same entries and mtime → same bytes, anywhere.

use std::io;

use crate::blob::LayerBlob;
use crate::cache::{finish_layer, start_layer, Compression, ContentStore, LayerError};

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, without a leading `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

impl Entry {
    /// A root-owned directory.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            kind: EntryKind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned file.
    pub fn file(path: &str, mode: u32, contents: Vec<u8>) -> Entry {
        Entry {
            path: path.to_string(),
            kind: EntryKind::File(contents),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned symlink.
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_string(),
            kind: EntryKind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }
}

/// Writes `entries` (sorted by path here) as a gzip layer into `store`.
/// Every entry gets `mtime`; user and group names stay empty.
pub fn write_gzip_layer(
    store: &ContentStore,
    mut entries: Vec<Entry>,
    mtime: u64,
) -> Result<LayerBlob, LayerError> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut tar = start_layer(store, None, Compression::Gzip)?;
    for entry in &entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(mtime);
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, format!("{}/", entry.path), io::empty())?;
            }
            EntryKind::File(contents) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(contents.len() as u64);
                tar.append_data(&mut header, &entry.path, contents.as_slice())?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &entry.path, target)?;
            }
        }
    }
    finish_layer(tar)
}
