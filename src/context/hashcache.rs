//! Remembered content hashes of context files, so re-checking an
//! unchanged context costs a stat per file.
//!
//! A file's sha256 is reused while its inode, size, mtime and ctime (in
//! nanoseconds) are what they were when it was hashed: any write changes
//! mtime or ctime, and ctime cannot be set back. The table lives in
//! `$RBUILD_ROOT/context-cache/<hash of the context path>`, one line per
//! file, rewritten atomically after a build computed its keys.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

/// The sha256 of a file's content, read in large blocks (a small buffer
/// costs more in system calls than the hashing itself).
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
    }
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })?;
    Ok(hasher.finalize().into())
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// The hash table of one context directory.
#[derive(Debug, Default)]
pub struct HashCache {
    file: Option<PathBuf>,
    entries: Mutex<HashMap<String, (Stamp, [u8; 32])>>,
    changed: std::sync::atomic::AtomicBool,
    /// Bytes read and hashed so far (files whose stamp had changed).
    pub hashed: std::sync::atomic::AtomicU64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl HashCache {
    /// The table for `context` under `storage` (empty when there is none
    /// yet or it cannot be read).
    pub fn load(storage: &Path, context: &Path) -> HashCache {
        let name = hex(&Sha256::digest(context.as_os_str().as_encoded_bytes()));
        let file = storage.join("context-cache").join(name);
        let mut entries = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                let Some((fields, rel)) = line.split_once('\t') else {
                    continue;
                };
                let f: Vec<&str> = fields.split(' ').collect();
                let [ino, size, mtime, ctime, digest] = f.as_slice() else {
                    continue;
                };
                let (Ok(ino), Ok(size), Ok(mtime_ns), Ok(ctime_ns), Some(digest)) = (
                    ino.parse(),
                    size.parse(),
                    mtime.parse(),
                    ctime.parse(),
                    unhex(digest),
                ) else {
                    continue;
                };
                let stamp = Stamp {
                    ino,
                    size,
                    mtime_ns,
                    ctime_ns,
                };
                entries.insert(rel.to_string(), (stamp, digest));
            }
        }
        HashCache {
            file: Some(file),
            entries: Mutex::new(entries),
            changed: Default::default(),
            hashed: Default::default(),
        }
    }

    /// The sha256 of the file `rel` (at `path`, with `meta`), from the
    /// table when its stamp still matches, else read and remembered.
    pub fn file_digest(
        &self,
        rel: &str,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<[u8; 32]> {
        let stamp = Stamp::of(meta);
        if let Some((seen, digest)) = self.entries.lock().expect("not poisoned").get(rel) {
            if *seen == stamp {
                return Ok(*digest);
            }
        }
        let digest = sha256_file(path)?;
        self.hashed
            .fetch_add(meta.size(), std::sync::atomic::Ordering::Relaxed);
        if !rel.contains(['\n', '\t']) {
            self.entries
                .lock()
                .expect("not poisoned")
                .insert(rel.to_string(), (stamp, digest));
            self.changed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(digest)
    }

    /// Writes the table back if anything new was hashed.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.changed.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let entries = self.entries.lock().expect("not poisoned");
        let mut text = String::with_capacity(entries.len() * 120);
        for (rel, (s, digest)) in entries.iter() {
            text.push_str(&format!(
                "{} {} {} {} {}\t{rel}\n",
                s.ino,
                s.size,
                s.mtime_ns,
                s.ctime_ns,
                hex(digest)
            ));
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::cache::write_atomically(file, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_change_rehashes_and_the_table_persists() {
        let storage = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let path = ctx.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let cache = HashCache::load(storage.path(), ctx.path());
        let meta = std::fs::metadata(&path).unwrap();
        let first = cache.file_digest("f", &path, &meta).unwrap();
        assert_eq!(first, <[u8; 32]>::from(Sha256::digest(b"one")));
        cache.save().unwrap();
        let again = HashCache::load(storage.path(), ctx.path());
        assert_eq!(again.entries.lock().unwrap().len(), 1);
        // Same stamp: the remembered digest, even if the bytes were swapped
        // behind the file system's back (which a real write cannot do).
        assert_eq!(again.file_digest("f", &path, &meta).unwrap(), first);
        std::fs::write(&path, "two").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            again.file_digest("f", &path, &meta).unwrap(),
            <[u8; 32]>::from(Sha256::digest(b"two"))
        );
    }
}
