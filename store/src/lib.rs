//! `cairn-store`: cairn's content-addressed store, usable on its own. It owns digests, the blob
//! store (CAS), the SQLite action cache and file-state cache, REAPI Merkle trees, output
//! restoration, and the SHA-256 digests and re-encoded messages that remotes accepting only
//! SHA-256 are fed. It knows nothing about Starlark, labels or the command line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod archive;
mod cas;
mod db;
mod digest;
mod error;
mod file_info;
mod file_state;
mod gc;
mod materialize;
mod records;
mod reencode;
mod remote;
mod sha256_map;
mod tree;

use std::path::{Path, PathBuf};

use prost::Message;

pub use archive::{ArchiveError, ArchiveReport};
pub use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
pub use cas::{Cas, copy_verified, set_mode, verify_file};
pub use db::{BuildRecord, BuildTotals, Db, HistoryEntry, TOUCH_GRANULARITY_MS};
pub use digest::{Digest, DigestFunction, ParseDigestError, RemoteDigest};
pub use error::{Result, StoreError};
pub use file_info::{FileInfo, FileState};
pub use file_state::{FileStates, Lookup, RACY_WINDOW_NS};
pub use gc::{GcPolicy, GcReport, VerifyReport, parse_age, parse_size};
pub use materialize::{Restored, is_in_place, restore_contents, restore_dir, restore_file};
pub use records::Record;
pub use reencode::{Reencoded, reencode_action, reencode_tree};
pub use remote::{
    Capabilities, DirCache, Executed, GrpcCache, HttpCache, KeyError, PublicKey, RemoteCache,
    RemoteError, RemoteExecution, RemoteOptions, RemoteUrlError, SIGNATURE_DIR, SigningKey,
    TlsOptions, names_missing_blobs, open_grpc, open_remote, strip_signatures,
    verify as verify_signature,
};
pub use sha256_map::{BlobBytes, Sha256Map};
pub use tree::{DirContents, MerkleTree, capture_dir, read_tree};

/// A store on disk: `cas/` (blobs), `tmp/` (partial writes), `logs/` (action logs) and
/// `metadata.sqlite`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    cas: Cas,
    db: Db,
    /// Action results read since the last `flush_usage`.
    used: std::sync::Mutex<Vec<Digest>>,
}

/// Sizes and counts for `cairn store stats`.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Number of blobs.
    pub blobs: u64,
    /// Bytes on disk taken by blobs (after compression).
    pub blob_bytes: u64,
    /// Number of action results.
    pub actions: u64,
    /// Totals over recent builds.
    pub recent: BuildTotals,
}

impl Store {
    /// Opens the store at `root`, creating it if needed.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|source| StoreError::Io {
            op: "create",
            path: root.to_path_buf(),
            source,
        })?;
        let cas = Cas::open(root.join("cas"), root.join("tmp"))?;
        let db = Db::open(&root.join("metadata.sqlite"))?;
        Ok(Store {
            root: root.to_path_buf(),
            cas,
            db,
            used: std::sync::Mutex::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn cas(&self) -> &Cas {
        &self.cas
    }

    /// The metadata database (within the crate: callers use the typed methods below).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The SHA-256 digests of this store's blobs, for a remote that accepts only SHA-256. Each
    /// map has its own memo over the store's table; keep one for a whole build or upload.
    pub fn sha256_map(&self) -> Sha256Map<'_> {
        Sha256Map::new(self)
    }

    /// Loads the file states recorded for the workspace at `root` (an absolute path).
    pub fn load_file_states(&self, root: &Path) -> Result<FileStates> {
        FileStates::load(&self.db, root)
    }

    /// Writes back what `states` learnt (see [`FileStates::save`]).
    pub fn save_file_states(&self, states: &FileStates) -> Result<()> {
        states.save(&self.db)
    }

    /// Makes `states` know the recorded state of a file outside the workspace (a host tool),
    /// so it is not hashed again.
    pub fn preload_file_state(&self, states: &FileStates, path: &Path) -> Result<()> {
        states.preload(&self.db, path)
    }

    /// `preload_file_state` for every recorded file below `dir`, in one query.
    pub fn preload_file_states_under(&self, states: &FileStates, dir: &Path) -> Result<()> {
        states.preload_under(&self.db, dir)
    }

    /// The latest recorded run of every label of `workspace`: key and status.
    pub fn latest_history(
        &self,
        workspace: &str,
    ) -> Result<std::collections::HashMap<String, (Digest, String)>> {
        self.db.latest_history(workspace)
    }

    /// The recorded runs of one label, newest first.
    pub fn history(&self, workspace: &str, label: &str) -> Result<Vec<HistoryEntry>> {
        self.db.history(workspace, label)
    }

    /// Records runs of targets (keeping a few per label).
    pub fn record_history(&self, workspace: &str, entries: &[HistoryEntry]) -> Result<()> {
        self.db.record_history(workspace, entries)
    }

    /// Records one finished build's counts, for `store stats`.
    pub fn record_build(&self, record: &BuildRecord) -> Result<()> {
        self.db.record_build(record)
    }

    /// Removes the action result under `key` (and every derived record with it).
    pub fn remove_action_result(&self, key: &Digest) -> Result<()> {
        self.db.remove_action_result(key)
    }

    /// The directory for action logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Where read-only copies of large input trees are kept, one per digest, for namespace
    /// sandboxes to mount (made again on first use: `gc` clears them).
    pub fn trees_dir(&self) -> PathBuf {
        self.root.join("trees")
    }

    /// The action result stored under `key`, if every blob it references is still present.
    /// An entry that cannot be used (undecodable, or a blob gone) is removed and reported as
    /// absent, so the action simply runs again.
    pub fn get_action_result(&self, key: &Digest) -> Result<Option<reapi::ActionResult>> {
        let Some(bytes) = self.db.get_action_result(key)? else {
            return Ok(None);
        };
        let usable = reapi::ActionResult::decode(bytes.as_slice())
            .ok()
            .filter(|r| referenced_blobs(r).all(|d| d.is_some_and(|d| self.cas.contains(&d))));
        if usable.is_none() {
            self.db.remove_action_result(key)?;
        } else {
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(*key);
        }
        Ok(usable)
    }

    /// Counts a result as used (for `store gc`'s least-recently-used order) without reading
    /// it: for a target found up to date in the workspace.
    pub fn mark_used(&self, key: &Digest) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(*key);
    }

    /// Stores an action result. Every blob it references must already be in the CAS.
    pub fn put_action_result(&self, key: &Digest, result: &reapi::ActionResult) -> Result<()> {
        debug_assert!(referenced_blobs(result).all(|d| d.is_some_and(|d| self.cas.contains(&d))));
        self.db.put_action_result(key, &result.encode_to_vec())
    }

    /// Takes the store lock: shared for a build (many at once), exclusive for GC and verify
    /// (which wait for running builds). Released when the returned file is dropped.
    pub fn lock(&self, exclusive: bool) -> Result<std::fs::File> {
        lock_at(&self.root, exclusive)
    }

    /// Opens the store at `root`, first rebuilding its database if that is damaged (it cannot
    /// be opened, or SQLite's integrity check fails): the damaged file is moved aside to
    /// `metadata.sqlite.damaged`, a fresh one is made, and every action result the damaged
    /// one still gives is carried over (run `verify` next: it drops those naming blobs that
    /// are gone). Blobs are never touched; the file states, history and analysis caches start
    /// empty (they are caches).
    pub fn open_repairing(root: &Path) -> Result<(Store, Repaired)> {
        match Store::open(root) {
            Ok(store) if store.db.integrity_problems().is_ok_and(|p| p.is_empty()) => {
                return Ok((store, Repaired::default()));
            }
            Ok(store) => drop(store),
            Err(StoreError::DamagedDatabase { .. }) => {}
            Err(e) => return Err(e),
        }
        let lock = lock_at(root, true)?;
        let db = root.join("metadata.sqlite");
        let salvaged = db::salvage_action_results(&db);
        let aside = root.join("metadata.sqlite.damaged");
        std::fs::rename(&db, &aside).map_err(|source| StoreError::Io {
            op: "move aside",
            path: db.clone(),
            source,
        })?;
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::rename(
                root.join(format!("metadata.sqlite{ext}")),
                root.join(format!("metadata.sqlite.damaged{ext}")),
            );
        }
        drop(lock);
        let store = Store::open(root)?;
        for (key, bytes) in &salvaged {
            store.db.put_action_result(key, bytes)?;
        }
        Ok((
            store,
            Repaired {
                damaged: Some(aside),
                salvaged: salvaged.len() as u64,
            },
        ))
    }
}

/// The lock of a workspace's outputs, from [`Store::lock_workspace`].
#[derive(Debug)]
pub struct WorkspaceLock {
    file: std::fs::File,
    /// Whether the last holder died holding it (killed mid-build): the temp files of the
    /// outputs it was restoring (named [`TEMP_PREFIX`]...) may be left in the workspace.
    pub previous_died: bool,
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        // Let go normally: the next holder has nothing to clean up after us.
        let _ = self.file.set_len(0);
    }
}

/// The name prefix of the temp files outputs are written to before they are renamed into
/// place in the workspace: never an input, and removable once their writer is gone.
pub const TEMP_PREFIX: &str = ".cairn-tmp-";

/// What [`Store::open_repairing`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Where the damaged database was moved, if it was rebuilt.
    pub damaged: Option<PathBuf>,
    /// Action results carried over from it.
    pub salvaged: u64,
}

/// Takes the lock of the store at `root` (see [`Store::lock`]).
fn lock_at(root: &Path, exclusive: bool) -> Result<std::fs::File> {
    {
        let path = root.join("lock");
        let io = |source| StoreError::Io {
            op: "lock",
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        if exclusive {
            file.lock().map_err(io)?;
        } else {
            file.lock_shared().map_err(io)?;
        }
        Ok(file)
    }
}

impl Store {
    /// Whether the last holder of the workspace lock of `key` died holding it (its PID is still
    /// in the lock file and no such process lives): a build must then clean up after it, so
    /// nothing may be replayed. One small read.
    pub fn workspace_lock_abandoned(&self, key: &str) -> bool {
        let path = self
            .root
            .join("locks")
            .join(format!("{}.lock", Digest::of_bytes(key.as_bytes()).hex()));
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Takes the lock of the workspace `key` names (its root), exclusively: one cairn process
    /// writes a workspace's outputs at a time. When another holds it, `waiting` is told that
    /// process's PID (as it wrote it) before this one blocks until it is released. Released
    /// when the returned lock is dropped, or when its process dies; see
    /// [`WorkspaceLock::previous_died`].
    pub fn lock_workspace(
        &self,
        key: &str,
        waiting: impl FnOnce(Option<u32>),
    ) -> Result<WorkspaceLock> {
        use std::io::{Read, Seek, Write};
        let dir = self.root.join("locks");
        let path = dir.join(format!("{}.lock", Digest::of_bytes(key.as_bytes()).hex()));
        let io = |op, source| StoreError::Io {
            op,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let holder = |file: &mut std::fs::File| {
            let mut text = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut text);
            text.trim().parse::<u32>().ok()
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                waiting(holder(&mut file));
                file.lock().map_err(|e| io("lock", e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", e)),
        }
        // A holder that let go normally emptied the file: a PID left in it died holding it.
        let previous_died = holder(&mut file).is_some();
        // Ours now: say who holds it, for the next one to wait.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(WorkspaceLock {
            file,
            previous_died,
        })
    }

    /// Records the last use of every action result read since the previous call, in one
    /// transaction. Call once at the end of a build.
    pub fn flush_usage(&self) -> Result<()> {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner()));
        self.db.touch_action_results(&used)
    }

    /// Sizes and counts.
    pub fn stats(&self) -> Result<StoreStats> {
        let blobs = self.cas.list()?;
        Ok(StoreStats {
            blobs: blobs.len() as u64,
            blob_bytes: blobs.iter().map(|(_, n)| n).sum(),
            actions: self.db.action_count()?,
            recent: self.db.build_totals(100)?,
        })
    }
}

/// Every blob digest an action result points at (`None` for a malformed digest).
fn referenced_blobs(result: &reapi::ActionResult) -> impl Iterator<Item = Option<Digest>> + '_ {
    let files = result.output_files.iter().map(|f| f.digest.as_ref());
    let dirs = result
        .output_directories
        .iter()
        .map(|d| d.tree_digest.as_ref());
    let logs = [result.stdout_digest.as_ref(), result.stderr_digest.as_ref()]
        .into_iter()
        .flatten()
        .map(Some);
    files
        .chain(dirs)
        .chain(logs)
        .map(|d| d.and_then(Digest::from_reapi))
}

/// Property tests (issue 15): a stored action result is read back as a usable result or as
/// absent (and then dropped), whatever its bytes.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    #[test]
    fn any_stored_result_is_usable_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let present = store.cas().put_bytes(b"present").unwrap();
        let digest = prop_oneof![
            Just(present.to_reapi()),
            ("[0-9a-f]{64}|\\PC{0,4}", any::<i64>())
                .prop_map(|(hash, size_bytes)| reapi::Digest { hash, size_bytes }),
        ];
        let result = proptest::collection::vec(proptest::option::of(digest), 0..3).prop_map(|ds| {
            reapi::ActionResult {
                output_files: ds
                    .into_iter()
                    .map(|digest| reapi::OutputFile {
                        path: "f".into(),
                        digest,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
            .encode_to_vec()
        });
        let bytes = prop_oneof![proptest::collection::vec(any::<u8>(), 0..64), result];
        let key = Digest::of_bytes(b"key");
        TestRunner::default()
            .run(&bytes, |bytes| {
                store.db.put_action_result(&key, &bytes).unwrap();
                match store.get_action_result(&key).unwrap() {
                    Some(result) => {
                        let decoded = reapi::ActionResult::decode(bytes.as_slice()).ok();
                        prop_assert_eq!(Some(&result), decoded.as_ref());
                        prop_assert!(referenced_blobs(&result).all(|d| d == Some(present)));
                    }
                    None => prop_assert_eq!(store.db.get_action_result(&key).unwrap(), None),
                }
                Ok(())
            })
            .unwrap();
    }
}

#[cfg(test)]
mod workspace_lock {
    use super::*;

    #[test]
    fn a_lock_let_go_normally_leaves_nothing_to_clean_and_one_left_by_the_dead_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.lock_workspace("/ws", |_| panic!("free")).unwrap();
        assert!(!first.previous_died);
        drop(first);
        assert!(!store.workspace_lock_abandoned("/ws"));
        let second = store.lock_workspace("/ws", |_| panic!("free")).unwrap();
        assert!(!second.previous_died);
        drop(second);
        // As a holder killed with it leaves it: its PID in the file, no such process alive.
        let path = dir
            .path()
            .join("locks")
            .join(format!("{}.lock", Digest::of_bytes(b"/ws").hex()));
        std::fs::write(&path, "999999999").unwrap();
        assert!(store.workspace_lock_abandoned("/ws"));
        let third = store.lock_workspace("/ws", |_| panic!("free")).unwrap();
        assert!(third.previous_died);
    }
}
