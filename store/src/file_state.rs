//! The file-state cache: (path, device, inode, size, mtime, ctime, mode) → digest, so a file
//! whose metadata is unchanged is never re-hashed. A workspace's states are one binary record
//! in the store's database, read once per build (a few milliseconds for 20,000 files) and
//! written back only when something changed; states of files outside the workspace (host
//! tools) are rows of their own. Never trusts an entry whose mtime is too recent to be
//! unambiguous.

use std::fs::Metadata;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use crate::Digest;
use crate::db::Db;
use crate::error::Result;
use crate::file_info::{FileInfo, FileState};

mod loaded;
use loaded::{LoadedStates, UNCHANGED};

/// A file modified less than this before it was hashed may still change within the same
/// timestamp tick without changing its metadata ("racy clean", as in git): such a file is
/// hashed but not remembered, so the next build hashes it again.
pub const RACY_WINDOW_NS: i64 = 1_000_000_000;

/// The file-state cache of one workspace: the states read at the start, what was learnt since,
/// and the updates to write back. Safe to share between threads.
///
/// A one-shot build can have the loaded states checked against the file system ahead of
/// need (`check_unchanged`, on a thread of its own while the workspace is analysed): a file
/// found unchanged then costs its build no system call at all. The check is a snapshot of the
/// build's start; a long-lived cache (watch mode) never uses it.
#[derive(Debug, Default)]
pub struct FileStates {
    /// The workspace root, with a trailing `/`: states of paths below it are saved as one
    /// record. Empty for a cache that is never saved.
    prefix: String,
    /// The workspace's states as loaded (by path below `prefix`); fixed after `load` but for
    /// the checked marks.
    loaded: LoadedStates,
    /// States saved or preloaded since `load` (host tools, and a long-lived cache's saves):
    /// they shadow `loaded`.
    learnt: std::sync::RwLock<HashMap<String, FileState>>,
    /// Whether `learnt` may be non-empty (lookups skip its lock while it is empty).
    has_learnt: AtomicBool,
    /// Whether `learnt` may hold a path below `prefix`, and so shadow a loaded state.
    learnt_inside: AtomicBool,
    updates: Mutex<HashMap<String, FileState>>,
    /// Whether `updates` may be non-empty: lookups skip its lock while it is empty (the whole
    /// of a no-op build).
    has_updates: AtomicBool,
    /// Set by `check_unchanged`: this cache serves one build, and its `checked` marks hold
    /// for the whole of it.
    snapshot: AtomicBool,
    /// Set to end a `check_unchanged` under way.
    stop_checking: AtomicBool,
    /// Set when a file was looked up whose state will not be saved (modified within the
    /// racy window, changed while hashed, or a path too long for a record): the saved
    /// states then do not cover everything this process looked at.
    incomplete: AtomicBool,
    /// Changes whenever the workspace's records are written (a random value, read with them):
    /// anything derived from a set of states can tell it is still the current set.
    generation: std::sync::atomic::AtomicU64,
}

/// A workspace's file states are kept in this many records, by a hash of the file's
/// directory, so a build that learnt a few new states rewrites a few small records, not all of
/// them, and a directory's files are listed together.
const SHARDS: u64 = 64;

/// The common beginning of the keys of a workspace's records.
fn record_prefix(prefix: &str) -> String {
    format!("file-states2:{prefix}:")
}

/// Where records of the first format (sharded by path) were kept.
fn old_record_prefix(prefix: &str) -> String {
    format!("file-states:{prefix}:")
}

/// Where the generation of a workspace's records is kept.
fn generation_key(prefix: &str) -> String {
    format!("file-states-generation:{prefix}")
}

fn record_key(prefix: &str, shard: u64) -> String {
    format!("{}{shard:02x}", record_prefix(prefix))
}

/// The record a path's state lives in: FNV-1a of its directory (stable across versions).
fn shard_of(rel: &str) -> u64 {
    let dir = rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    let hash = dir.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % SHARDS
}

/// The record's format: a version tag, then per file, sorted by path, the path below the root
/// (u16 length + bytes), dev, ino, mtime, ctime, mode, size and hash, little-endian.
const RECORD_TAG: &[u8; 4] = b"cfs2";

/// One file's bytes in a record, past its path.
const STATE_BYTES: usize = 8 * 4 + 4 + 8 + 32;

/// Encodes states (paths below the root) sorted by path.
fn encode_states(mut states: Vec<(&str, &FileState)>) -> Vec<u8> {
    states.sort_unstable_by_key(|(rel, _)| *rel);
    let mut out = RECORD_TAG.to_vec();
    for (rel, s) in states {
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

/// Decodes a record into `into`; a damaged or foreign one yields what could be read before
/// the damage (states are only a cache: a missing one costs a hash).
fn decode_states(bytes: &[u8], into: &mut LoadedStates) {
    let Some(mut rest) = bytes.strip_prefix(RECORD_TAG.as_slice()) else {
        return;
    };
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn u64_of(rest: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
    }
    let mut next = |rest: &mut &[u8]| -> Option<()> {
        let len = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?) as usize;
        let rel = std::str::from_utf8(take(rest, len)?).ok()?;
        let dev = u64_of(rest)?;
        let ino = u64_of(rest)?;
        let mtime_ns = u64_of(rest)? as i64;
        let ctime_ns = u64_of(rest)? as i64;
        let mode = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
        let size = u64_of(rest)?;
        let hash: [u8; 32] = take(rest, 32)?.try_into().ok()?;
        let digest = Digest { hash, size };
        let state = FileState {
            dev,
            ino,
            mtime_ns,
            ctime_ns,
            mode,
            digest,
        };
        into.insert(rel, state);
        Some(())
    };
    while !rest.is_empty() && next(&mut rest).is_some() {}
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
        let records = record_prefix(&prefix);
        let bytes = db.value_bytes_with_prefix(&records)? as usize;
        // Each state takes its path's length plus two bytes plus `STATE_BYTES`: assume paths of
        // about 40 bytes for the entry count.
        let mut loaded = LoadedStates::with_capacity(bytes / (STATE_BYTES + 42), bytes);
        db.for_each_value_with_prefix(&records, |_, bytes| decode_states(bytes, &mut loaded))?;
        let generation = db
            .get_value(&generation_key(&prefix))?
            .and_then(|b| Some(u64::from_le_bytes(b.as_slice().try_into().ok()?)))
            .unwrap_or(0);
        Ok(FileStates {
            prefix,
            loaded,
            generation: generation.into(),
            ..FileStates::default()
        })
    }

    /// Checks every loaded state against the file system (one `lstat` each), so that lookups
    /// of unchanged files need none (a lookup of a file not reached yet checks it the same
    /// way, and the check then passes it by). Returns early once `stop_checking` is called.
    ///
    /// Only for a cache that serves one build (a one-shot command): from here on, a file
    /// found unchanged once is taken as unchanged for the rest of the process, unless cairn
    /// itself records a new state for it.
    pub fn check_unchanged(&self) {
        self.snapshot.store(true, Ordering::Release);
        self.loaded.check(&self.prefix, &self.stop_checking);
    }

    /// Checks every loaded state now (one `lstat` each, on two threads), stopping at the
    /// first that changed, and tells whether all are unchanged; like `check_unchanged`, the
    /// marks then hold for the rest of the process, so a build that follows looks at no file
    /// twice. False for a cache with nothing loaded.
    pub fn all_unchanged(&self) -> bool {
        if self.prefix.is_empty() || self.loaded.is_empty() {
            return false;
        }
        self.snapshot.store(true, Ordering::Release);
        self.loaded.check_all(&self.prefix, &AtomicBool::new(false))
    }

    /// Whether every file looked up so far will have its state saved (see `incomplete`).
    pub fn is_complete(&self) -> bool {
        !self.incomplete.load(Ordering::Relaxed)
    }

    /// The generation of the workspace's records as loaded or last saved by this cache
    /// (0: none was ever written).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Ends a `check_unchanged` under way (what it did not reach is looked up as usual).
    pub fn stop_checking(&self) {
        self.stop_checking.store(true, Ordering::Relaxed);
    }

    /// The state of `key` if it is a loaded state found unchanged in this build and nothing
    /// learnt since shadows it.
    fn unchanged_state(&self, key: &str) -> Option<FileState> {
        self.unchanged_below_root(key.strip_prefix(&self.prefix)?)
    }

    /// `unchanged_state` by the path relative to the workspace root.
    fn unchanged_below_root(&self, rel: &str) -> Option<FileState> {
        if !self.snapshot.load(Ordering::Acquire) || self.prefix.is_empty() {
            return None;
        }
        let entry = self.loaded.get(rel)?;
        // Not reached by the check yet: check it here, as the check would have (and it will
        // then pass it by), so every file is looked at once.
        if self.loaded.check_entry(&self.prefix, rel, entry) != UNCHANGED {
            return None;
        }
        let may_be_shadowed =
            self.has_updates.load(Ordering::Acquire) || self.learnt_inside.load(Ordering::Acquire);
        if may_be_shadowed && self.shadowed(&format!("{}{rel}", self.prefix)) {
            return None;
        }
        Some(entry.state)
    }

    /// Whether something learnt in this process replaces the loaded state of `key`.
    fn shadowed(&self, key: &str) -> bool {
        (self.has_updates.load(Ordering::Acquire)
            && self
                .updates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(key))
            || (self.learnt_inside.load(Ordering::Acquire) && self.learnt().contains_key(key))
    }

    /// What `path` holds if it is known unchanged in this build: its state was loaded and
    /// found unchanged by `check_unchanged` (or, if the check has not reached it yet, by an
    /// `lstat` now).
    pub fn unchanged(&self, path: &Path) -> Option<FileInfo> {
        self.unchanged_state(&path.to_string_lossy())
            .map(|s| s.info())
    }

    /// `unchanged` for a path relative to the workspace root (no host path to build).
    pub fn unchanged_in_workspace(&self, rel: &str) -> Option<FileInfo> {
        self.unchanged_below_root(rel).map(|s| s.info())
    }

    /// The last state saved or learnt for `key`, pending updates excluded.
    fn committed(&self, key: &str) -> Option<FileState> {
        if self.has_learnt.load(Ordering::Acquire)
            && let Some(state) = self.learnt().get(key)
        {
            return Some(*state);
        }
        self.loaded_entry(key).map(|e| e.state)
    }

    fn loaded_entry(&self, key: &str) -> Option<&loaded::Entry> {
        if self.prefix.is_empty() {
            return None;
        }
        self.loaded.get(key.strip_prefix(&self.prefix)?)
    }

    fn remembered(&self, key: &str) -> Option<FileState> {
        if self.has_updates.load(Ordering::Acquire) {
            let updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = updates.get(key) {
                return Some(*state);
            }
        }
        self.committed(key)
    }

    fn update(&self, key: String, state: FileState) {
        if key.len() - self.prefix.len().min(key.len()) > usize::from(u16::MAX) {
            self.incomplete.store(true, Ordering::Relaxed);
        }
        let mut updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
        updates.insert(key, state);
        self.has_updates.store(true, Ordering::Release);
    }

    /// The digest of a regular file (symlinks are followed), hashing it only if its metadata
    /// changed since it was last seen.
    pub fn file_info(&self, path: &Path) -> io::Result<(FileInfo, Lookup)> {
        let key = path.to_string_lossy();
        if let Some(state) = self.unchanged_state(&key) {
            return Ok((state.info(), Lookup::Hit));
        }
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
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
        } else {
            self.incomplete.store(true, Ordering::Relaxed);
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
        if self.committed(&key) != Some(state) {
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
            self.incomplete.store(true, Ordering::Relaxed);
            return;
        }
        if self.committed(key) == Some(state) {
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
            self.learn([(key, state)]);
        }
        Ok(())
    }

    /// `preload` for every recorded file below the directory `dir` (a tool's installation),
    /// in one query.
    pub fn preload_under(&self, db: &Db, dir: &Path) -> Result<()> {
        let mut prefix = dir.to_string_lossy().into_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let found = db.load_file_states(&prefix)?;
        let fresh: Vec<(String, FileState)> = found
            .into_iter()
            .filter(|(path, _)| self.remembered(path).is_none())
            .collect();
        if !fresh.is_empty() {
            self.learn(fresh);
        }
        Ok(())
    }

    fn learnt(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, FileState>> {
        self.learnt.read().unwrap_or_else(|p| p.into_inner())
    }

    fn learn(&self, states: impl IntoIterator<Item = (String, FileState)>) {
        let mut learnt = self.learnt.write().unwrap_or_else(|p| p.into_inner());
        for (path, state) in states {
            if !self.prefix.is_empty() && path.starts_with(&self.prefix) {
                self.learnt_inside.store(true, Ordering::Release);
            }
            learnt.insert(path, state);
        }
        self.has_learnt.store(!learnt.is_empty(), Ordering::Release);
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
        // A checked cache drops the states it found changed or gone and did not learn anew:
        // they are of no use (a lookup would hash the file again), and a deleted file's state
        // would otherwise be found changed by every later check.
        let stale: std::collections::HashSet<&str> = if self.snapshot.load(Ordering::Acquire) {
            self.loaded
                .iter()
                .filter(|(_, e)| e.found_changed())
                .map(|(rel, _)| rel)
                .collect()
        } else {
            Default::default()
        };
        if updates.is_empty() && stale.is_empty() {
            return Ok(());
        }
        let (inside, outside): (Vec<_>, Vec<_>) = updates
            .into_iter()
            .partition(|(path, _)| !self.prefix.is_empty() && path.starts_with(&self.prefix));
        db.save_file_states(&outside)?;
        self.learn(outside);
        if !inside.is_empty() || !stale.is_empty() {
            let dirty: std::collections::BTreeSet<u64> = inside
                .iter()
                .map(|(path, _)| shard_of(&path[self.prefix.len()..]))
                .chain(stale.iter().map(|rel| shard_of(rel)))
                .collect();
            self.learn(inside);
            let learnt = self.learnt();
            let learnt: HashMap<&str, &FileState> = learnt
                .iter()
                .filter_map(|(path, state)| Some((path.strip_prefix(&self.prefix)?, state)))
                .collect();
            let mut records: BTreeMap<u64, Vec<(&str, &FileState)>> = BTreeMap::new();
            let current = self
                .loaded
                .iter()
                .filter(|(rel, _)| !learnt.contains_key(rel) && !stale.contains(rel))
                .map(|(rel, e)| (rel, &e.state))
                .chain(learnt.iter().map(|(rel, state)| (*rel, *state)));
            for (rel, state) in current {
                let shard = shard_of(rel);
                if dirty.contains(&shard) {
                    records.entry(shard).or_default().push((rel, state));
                }
            }
            let mut records: Vec<(String, Vec<u8>)> = records
                .into_iter()
                .map(|(shard, states)| (record_key(&self.prefix, shard), encode_states(states)))
                .collect();
            // A shard whose every state was dropped is written empty.
            for shard in &dirty {
                let key = record_key(&self.prefix, *shard);
                if !records.iter().any(|(k, _)| *k == key) {
                    records.push((key, RECORD_TAG.to_vec()));
                }
            }
            let generation = new_generation();
            let key = generation_key(&self.prefix);
            records.push((key.clone(), generation.to_le_bytes().to_vec()));
            db.remove_values_with_prefix(&old_record_prefix(&self.prefix))?;
            let was = self.generation.load(Ordering::Relaxed).to_le_bytes();
            let expected = (self.generation() != 0).then_some(was.as_slice());
            if !db.put_values_guarded(&key, expected, &records)? {
                // Another process saved since these states were loaded: the records now mix
                // its shards and ours, so they need not hold every state looked at here.
                self.incomplete.store(true, Ordering::Relaxed);
            }
            self.generation.store(generation, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A generation no other save has used: the time, this process and a count, hashed.
fn new_generation() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&now_ns().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let bytes: [u8; 8] = h.finalize().as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_le_bytes(bytes).max(1)
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

    /// A workspace of aged files `a/x.txt`, `a/y.txt`, `b/z.txt` whose states are saved.
    fn saved_workspace() -> (tempfile::TempDir, Db, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let ws = dir.path().join("ws");
        for rel in ["a/x.txt", "a/y.txt", "b/z.txt"] {
            let file = ws.join(rel);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, rel).unwrap();
            age(&file);
        }
        let states = FileStates::load(&db, &ws).unwrap();
        for rel in ["a/x.txt", "a/y.txt", "b/z.txt"] {
            assert_eq!(states.file_info(&ws.join(rel)).unwrap().1, Lookup::Hashed);
        }
        states.save(&db).unwrap();
        (dir, db, ws)
    }

    #[test]
    fn a_checked_build_sees_the_workspace_as_it_was_when_checked() {
        let (_dir, db, ws) = saved_workspace();
        // Changed before the check: seen, and re-hashed.
        std::fs::write(ws.join("a/x.txt"), "edited").unwrap();
        let states = FileStates::load(&db, &ws).unwrap();
        states.check_unchanged();
        assert_eq!(states.unchanged(&ws.join("a/x.txt")), None);
        let (info, how) = states.file_info(&ws.join("a/x.txt")).unwrap();
        assert_eq!(
            (info.digest, how),
            (Digest::of_bytes(b"edited"), Lookup::Hashed)
        );
        // Unchanged at the check: known without looking again, for the rest of the build.
        let z = ws.join("b/z.txt");
        let before = Digest::of_bytes(b"b/z.txt");
        assert_eq!(states.unchanged(&z).map(|i| i.digest), Some(before));
        std::fs::write(&z, "changed during the build").unwrap();
        assert_eq!(
            states.file_info(&z).unwrap(),
            (states.unchanged(&z).unwrap(), Lookup::Hit)
        );
        // ... unless cairn itself writes it: its recorded state replaces the checked one.
        states
            .record_written(&z, Digest::of_bytes(b"changed during the build"))
            .unwrap();
        assert_eq!(states.unchanged(&z), None);
        assert_eq!(
            states.file_info(&z).unwrap().0.digest,
            Digest::of_bytes(b"changed during the build")
        );
    }

    #[test]
    fn a_lookup_checks_what_the_check_has_not_reached() {
        let (_dir, db, ws) = saved_workspace();
        std::fs::write(ws.join("a/x.txt"), "edited").unwrap();
        let states = FileStates::load(&db, &ws).unwrap();
        states.stop_checking();
        states.check_unchanged(); // stopped at once: nothing checked yet
        let (x, z) = (ws.join("a/x.txt"), ws.join("b/z.txt"));
        assert_eq!(states.unchanged(&x), None);
        assert_eq!(
            states.file_info(&x).unwrap().0.digest,
            Digest::of_bytes(b"edited")
        );
        let z_digest = Digest::of_bytes(b"b/z.txt");
        assert_eq!(states.unchanged(&z).map(|i| i.digest), Some(z_digest));
        // Checked once: the build's view of it holds.
        std::fs::write(&z, "later").unwrap();
        assert_eq!(states.unchanged(&z).map(|i| i.digest), Some(z_digest));
    }

    #[test]
    fn an_unchecked_cache_always_looks_at_the_file() {
        let (_dir, db, ws) = saved_workspace();
        // Watch mode keeps one cache for many builds and never checks ahead.
        let states = FileStates::load(&db, &ws).unwrap();
        let y = ws.join("a/y.txt");
        assert_eq!(states.file_info(&y).unwrap().1, Lookup::Hit);
        assert_eq!(states.unchanged(&y), None);
        std::fs::write(&y, "edited").unwrap();
        assert_eq!(
            states.file_info(&y).unwrap().0.digest,
            Digest::of_bytes(b"edited")
        );
    }

    #[test]
    fn records_keep_every_state_and_replace_the_old_format() {
        let (_dir, db, ws) = saved_workspace();
        let prefix = format!("{}/", ws.display());
        db.put_value(&format!("{}00", old_record_prefix(&prefix)), b"cfs1")
            .unwrap();
        // Learn one more state: only its record is rewritten, the old format is dropped.
        let states = FileStates::load(&db, &ws).unwrap();
        std::fs::write(ws.join("b/w.txt"), "w").unwrap();
        age(&ws.join("b/w.txt"));
        states.file_info(&ws.join("b/w.txt")).unwrap();
        states.save(&db).unwrap();
        assert!(
            db.values_with_prefix(&old_record_prefix(&prefix))
                .unwrap()
                .is_empty()
        );
        let states = FileStates::load(&db, &ws).unwrap();
        for rel in ["a/x.txt", "a/y.txt", "b/z.txt", "b/w.txt"] {
            assert_eq!(
                states.file_info(&ws.join(rel)).unwrap().1,
                Lookup::Hit,
                "{rel}"
            );
        }
        // A directory's files share a record, sorted by path.
        let records = db.values_with_prefix(&record_prefix(&prefix)).unwrap();
        let b = records
            .iter()
            .find(|(key, _)| key.ends_with(&format!("{:02x}", shard_of("b/w.txt"))))
            .unwrap();
        let (w, z) = (find(&b.1, b"b/w.txt"), find(&b.1, b"b/z.txt"));
        assert!(w.is_some() && w < z, "{w:?} {z:?}");
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn a_save_after_another_process_saved_is_incomplete_and_checks_drop_what_changed() {
        let (_dir, db, ws) = saved_workspace();
        let first = FileStates::load(&db, &ws).unwrap();
        let second = FileStates::load(&db, &ws).unwrap();
        assert_ne!(first.generation(), 0);
        assert_eq!(first.generation(), second.generation());
        for (states, name) in [(&first, "b/one.txt"), (&second, "b/two.txt")] {
            std::fs::write(ws.join(name), name).unwrap();
            age(&ws.join(name));
            states.file_info(&ws.join(name)).unwrap();
        }
        first.save(&db).unwrap();
        assert!(first.is_complete());
        // `second` loaded before `first` saved: its save cannot vouch for the records.
        second.save(&db).unwrap();
        assert!(!second.is_complete());
        assert_ne!(first.generation(), second.generation());

        // A checked cache drops the state of a deleted file, and all the others are then
        // unchanged.
        std::fs::remove_file(ws.join("a/x.txt")).unwrap();
        let checked = FileStates::load(&db, &ws).unwrap();
        assert!(!checked.all_unchanged());
        checked.save(&db).unwrap();
        let again = FileStates::load(&db, &ws).unwrap();
        assert!(again.all_unchanged());
        assert_ne!(again.generation(), second.generation());
        // A file hashed within the racy window is not saved: the cache says so.
        let fresh = ws.join("a/new.txt");
        std::fs::write(&fresh, "new").unwrap();
        assert!(again.is_complete());
        again.file_info(&fresh).unwrap();
        assert!(!again.is_complete());
    }
}

/// Property tests (issue 15): a file-state record read back from the database may be damaged,
/// truncated or foreign; decoding it keeps what could be read and never panics.
#[cfg(test)]
pub(crate) mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Any file state (shared with the database's property tests).
    pub(crate) fn state() -> impl Strategy<Value = FileState> {
        (
            any::<(u64, u64, i64, i64, u32)>(),
            any::<[u8; 32]>(),
            any::<u64>(),
        )
            .prop_map(
                |((dev, ino, mtime_ns, ctime_ns, mode), hash, size)| FileState {
                    dev,
                    ino,
                    mtime_ns,
                    ctime_ns,
                    mode,
                    digest: Digest { hash, size },
                },
            )
    }

    fn states() -> impl Strategy<Value = BTreeMap<String, FileState>> {
        proptest::collection::btree_map("[a-z0-9._/-]{1,24}|\\PC{1,8}", state(), 0..12)
    }

    fn decoded(bytes: &[u8]) -> BTreeMap<String, FileState> {
        let mut loaded = LoadedStates::default();
        decode_states(bytes, &mut loaded);
        loaded
            .iter()
            .map(|(path, entry)| (path.to_string(), entry.state))
            .collect()
    }

    proptest! {
        #[test]
        fn any_record_bytes_decode_without_panicking(
            tagged in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let bytes = if tagged { [RECORD_TAG.as_slice(), &bytes].concat() } else { bytes };
            decoded(&bytes);
        }

        #[test]
        fn encoded_states_decode_to_themselves(states in states()) {
            let encoded = encode_states(states.iter().map(|(p, s)| (p.as_str(), s)).collect());
            prop_assert_eq!(decoded(&encoded), states);
        }

        #[test]
        fn a_truncated_or_damaged_record_yields_only_states_it_holds(
            states in states(),
            cut in any::<proptest::sample::Index>(),
            flip in any::<Option<(proptest::sample::Index, u8)>>(),
        ) {
            let mut encoded =
                encode_states(states.iter().map(|(p, s)| (p.as_str(), s)).collect());
            encoded.truncate(cut.index(encoded.len() + 1));
            let damaged = match flip {
                Some((at, byte)) if !encoded.is_empty() => {
                    let at = at.index(encoded.len());
                    encoded[at] ^= byte | 1;
                    true
                }
                _ => false,
            };
            let back = decoded(&encoded);
            if !damaged {
                // Only truncated: every state decoded is one that was written.
                for (path, state) in &back {
                    prop_assert_eq!(states.get(path), Some(state));
                }
            }
        }
    }
}
