//! The file-state cache: (path, device, inode, size, mtime, ctime, mode) → digest, so a file
//! whose metadata is unchanged is never re-hashed. A workspace's states are one binary record
//! in the store's database, read once per build (a few milliseconds for 20,000 files) and
//! written back only when something changed; states of files outside the workspace (host
//! tools) are rows of their own. Never trusts an entry whose mtime is too recent to be
//! unambiguous.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use crate::Digest;
use crate::db::Db;
use crate::error::Result;

/// A file modified less than this before it was hashed may still change within the same
/// timestamp tick without changing its metadata ("racy clean", as in git): such a file is
/// hashed but not remembered, so the next build hashes it again.
const RACY_WINDOW_NS: i64 = 1_000_000_000;

/// What the cache remembers about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// The permission bits.
    pub mode: u32,
    /// The content digest (its `size` is the file size).
    pub digest: Digest,
}

/// A file's digest and whether it is executable, as it enters an input tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The content digest.
    pub digest: Digest,
    /// Whether any execute bit is set.
    pub executable: bool,
}

impl FileState {
    fn from_metadata(meta: &Metadata, digest: Digest) -> FileState {
        FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            mode: meta.mode() & 0o7777,
            digest,
        }
    }

    fn matches(&self, meta: &Metadata) -> bool {
        *self
            == FileState::from_metadata(
                meta,
                Digest {
                    size: meta.len(),
                    ..self.digest
                },
            )
    }

    fn info(&self) -> FileInfo {
        FileInfo {
            digest: self.digest,
            executable: self.mode & 0o111 != 0,
        }
    }
}

/// The file-state cache of one workspace for one build: a snapshot read at the start and the
/// updates to write back at the end. Safe to share between threads.
#[derive(Debug, Default)]
pub struct FileStates {
    /// The workspace root, with a trailing `/`: states of paths below it are saved as one
    /// record. Empty for a cache that is never saved.
    prefix: String,
    snapshot: std::sync::RwLock<HashMap<String, FileState>>,
    updates: Mutex<HashMap<String, FileState>>,
    /// Whether `updates` may be non-empty: lookups skip its lock while it is empty (the whole
    /// of a no-op build).
    has_updates: AtomicBool,
}

/// A workspace's file states are kept in this many records, by a hash of the path, so a
/// build that learnt a few new states rewrites a few small records, not all of them.
const SHARDS: u64 = 64;

/// The common beginning of the keys of a workspace's records.
fn record_prefix(prefix: &str) -> String {
    format!("file-states:{prefix}:")
}

fn record_key(prefix: &str, shard: u64) -> String {
    format!("{}{shard:02x}", record_prefix(prefix))
}

/// The record a path's state lives in: FNV-1a of its bytes (stable across versions).
fn shard_of(path: &str) -> u64 {
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % SHARDS
}

/// The record's format: a version tag, then per file the path below the root
/// (u16 length + bytes), dev, ino, mtime, ctime, mode, size and hash, little-endian.
const RECORD_TAG: &[u8; 4] = b"cfs1";

fn encode_states<'a>(
    prefix: &str,
    states: impl Iterator<Item = (&'a String, &'a FileState)>,
) -> Vec<u8> {
    let mut out = RECORD_TAG.to_vec();
    for (path, s) in states {
        let Some(rel) = path.strip_prefix(prefix) else {
            continue;
        };
        let Ok(len) = u16::try_from(rel.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        out.extend_from_slice(&s.digest.size.to_le_bytes());
        out.extend_from_slice(&s.digest.hash);
    }
    out
}

/// Decodes a record; a damaged or foreign one yields what could be read before the damage
/// (states are only a cache: a missing one costs a hash).
fn decode_states(prefix: &str, bytes: &[u8]) -> HashMap<String, FileState> {
    let mut map = HashMap::default();
    let Some(mut rest) = bytes.strip_prefix(RECORD_TAG.as_slice()) else {
        return map;
    };
    map.reserve(rest.len() / 100);
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn u64_of(rest: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
    }
    let next = |rest: &mut &[u8]| -> Option<(String, FileState)> {
        let len = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?) as usize;
        let rel = std::str::from_utf8(take(rest, len)?).ok()?;
        let mut path = String::with_capacity(prefix.len() + rel.len());
        path.push_str(prefix);
        path.push_str(rel);
        let dev = u64_of(rest)?;
        let ino = u64_of(rest)?;
        let mtime_ns = u64_of(rest)? as i64;
        let ctime_ns = u64_of(rest)? as i64;
        let mode = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
        let size = u64_of(rest)?;
        let hash: [u8; 32] = take(rest, 32)?.try_into().ok()?;
        Some((
            path,
            FileState {
                dev,
                ino,
                mtime_ns,
                ctime_ns,
                mode,
                digest: Digest { hash, size },
            },
        ))
    };
    while !rest.is_empty() {
        let Some((path, state)) = next(&mut rest) else {
            break;
        };
        map.insert(path, state);
    }
    map
}

/// How a digest was obtained, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// From the cache: only a `stat`.
    Hit,
    /// The file was read and hashed.
    Hashed,
}

impl FileStates {
    /// Loads the states recorded for files under `root` (an absolute path).
    pub fn load(db: &Db, root: &Path) -> Result<FileStates> {
        let mut prefix = root.to_string_lossy().into_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut snapshot = HashMap::default();
        for (_, bytes) in db.values_with_prefix(&record_prefix(&prefix))? {
            snapshot.extend(decode_states(&prefix, &bytes));
        }
        Ok(FileStates {
            prefix,
            snapshot: std::sync::RwLock::new(snapshot),
            updates: Mutex::default(),
            has_updates: AtomicBool::new(false),
        })
    }

    fn remembered(&self, key: &str) -> Option<FileState> {
        if self.has_updates.load(Ordering::Acquire) {
            let updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = updates.get(key) {
                return Some(*state);
            }
        }
        self.snapshot().get(key).copied()
    }

    fn update(&self, key: String, state: FileState) {
        let mut updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
        updates.insert(key, state);
        self.has_updates.store(true, Ordering::Release);
    }

    /// The digest of a regular file (symlinks are followed), hashing it only if its metadata
    /// changed since it was last seen.
    pub fn file_info(&self, path: &Path) -> io::Result<(FileInfo, Lookup)> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let key = path.to_string_lossy();
        if let Some(state) = self.remembered(&key)
            && state.matches(&meta)
        {
            return Ok((state.info(), Lookup::Hit));
        }
        let digest = Digest::of_file(path)?;
        // Re-stat: if the file changed while we hashed it, the digest may describe neither
        // version, so it is returned but not remembered.
        let after = std::fs::metadata(path)?;
        let state = FileState::from_metadata(&meta, digest);
        if state.matches(&after) {
            self.remember(&key, state);
        }
        Ok((state.info(), Lookup::Hashed))
    }

    /// Records the state of a file cairn just wrote with known content (a restored output),
    /// so the next build does not hash it.
    /// The racy-clean window does not apply: cairn knows the content it just wrote.
    pub fn record_written(&self, path: &Path, digest: Digest) -> io::Result<()> {
        let meta = std::fs::metadata(path)?;
        let state = FileState::from_metadata(&meta, digest);
        let key = path.to_string_lossy();
        if self.snapshot().get(key.as_ref()) != Some(&state) {
            self.update(key.into_owned(), state);
        }
        Ok(())
    }

    /// Whether the file at `path` is known (by metadata alone) to hold `digest`.
    pub fn is_known(&self, path: &Path, digest: &Digest) -> bool {
        std::fs::metadata(path).is_ok_and(|meta| self.is_known_with(path, &meta, digest))
    }

    /// `is_known` for a file whose metadata the caller already has (symlinks not followed:
    /// a symlink is never known).
    pub fn is_known_with(&self, path: &Path, meta: &Metadata, digest: &Digest) -> bool {
        self.remembered(&path.to_string_lossy())
            .is_some_and(|s| s.digest == *digest && s.matches(meta))
    }

    fn remember(&self, key: &str, state: FileState) {
        if state.mtime_ns > now_ns() - RACY_WINDOW_NS {
            return;
        }
        if self.snapshot().get(key) == Some(&state) {
            return;
        }
        self.update(key.to_string(), state);
    }

    /// Adds the recorded state of one file outside the loaded prefix (a host tool), so it is
    /// not hashed again when unchanged.
    pub fn preload(&self, db: &Db, path: &Path) -> Result<()> {
        let key = path.to_string_lossy().into_owned();
        if self.remembered(&key).is_some() {
            return Ok(());
        }
        if let Some(state) = db.load_file_states(&key)?.remove(&key) {
            let mut snapshot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
            snapshot.insert(key, state);
        }
        Ok(())
    }

    fn snapshot(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, FileState>> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest last recorded for `path`, without looking at the file.
    pub fn known_digest(&self, path: &Path) -> Option<Digest> {
        self.remembered(&path.to_string_lossy()).map(|s| s.digest)
    }

    /// Writes the new and changed states back (nothing when there are none); they stay in
    /// memory, so a long-lived cache (watch mode) keeps knowing them. States of files in the
    /// workspace are rewritten as one record, the others (host tools) row by row.
    pub fn save(&self, db: &Db) -> Result<()> {
        let updates: Vec<(String, FileState)> = {
            let mut guard = self.updates.lock().unwrap_or_else(|p| p.into_inner());
            self.has_updates.store(false, Ordering::Release);
            guard.drain().collect()
        };
        if updates.is_empty() {
            return Ok(());
        }
        let (inside, outside): (Vec<_>, Vec<_>) = updates
            .into_iter()
            .partition(|(path, _)| !self.prefix.is_empty() && path.starts_with(&self.prefix));
        db.save_file_states(&outside)?;
        let mut snapshot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        snapshot.extend(outside);
        if !inside.is_empty() {
            let dirty: std::collections::BTreeSet<u64> = inside
                .iter()
                .map(|(path, _)| shard_of(&path[self.prefix.len()..]))
                .collect();
            snapshot.extend(inside);
            let mut records: BTreeMap<u64, Vec<(&String, &FileState)>> = BTreeMap::new();
            for (path, state) in snapshot.iter() {
                let shard = path
                    .strip_prefix(&self.prefix)
                    .map(shard_of)
                    .filter(|s| dirty.contains(s));
                if let Some(shard) = shard {
                    records.entry(shard).or_default().push((path, state));
                }
            }
            let records: Vec<(String, Vec<u8>)> = records
                .into_iter()
                .map(|(shard, states)| {
                    let key = record_key(&self.prefix, shard);
                    (key, encode_states(&self.prefix, states.into_iter()))
                })
                .collect();
            db.put_values(&records)?;
        }
        Ok(())
    }
}

#[allow(clippy::disallowed_methods)] // The racy-clean check compares against the wall clock.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn age(path: &Path) {
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn unchanged_file_is_not_rehashed_and_edits_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let file = dir.path().join("ws/a.txt");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "one").unwrap();
        age(&file);

        let states = FileStates::load(&db, &dir.path().join("ws")).unwrap();
        let (info, how) = states.file_info(&file).unwrap();
        assert_eq!(
            (info.digest, how),
            (Digest::of_bytes(b"one"), Lookup::Hashed)
        );
        states.save(&db).unwrap();

        let states = FileStates::load(&db, &dir.path().join("ws")).unwrap();
        assert_eq!(states.file_info(&file).unwrap().1, Lookup::Hit);

        std::fs::write(&file, "two").unwrap();
        age(&file); // same mtime as before: the ctime and size still tell
        let (info, how) = states.file_info(&file).unwrap();
        assert_eq!(
            (info.digest, how),
            (Digest::of_bytes(b"two"), Lookup::Hashed)
        );
    }

    #[test]
    fn recently_modified_files_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let file = dir.path().join("fresh");
        std::fs::write(&file, "new").unwrap();
        let states = FileStates::load(&db, dir.path()).unwrap();
        states.file_info(&file).unwrap();
        states.save(&db).unwrap();
        let states = FileStates::load(&db, dir.path()).unwrap();
        assert_eq!(states.file_info(&file).unwrap().1, Lookup::Hashed);
    }
}
