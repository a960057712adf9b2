//! The store's metadata in SQLite (WAL): the action cache, the file-state cache and build
//! statistics. One connection per `Db`, guarded by a mutex; every multi-row write is one
//! transaction. Never stores a blob's bytes (those live in the CAS).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::Digest;
use crate::error::{Result, StoreError};
use crate::file_info::FileState;

/// Values stored under keys with this prefix (`put_value`) are derived from action-cache
/// entries (e.g. cairn's key memo, which marks targets up to date by their last result): they
/// are dropped whenever an action result is removed.
pub const DERIVED_PREFIX: &str = "derived:";

/// `store gc`'s least-recently-used order is kept to this precision.
pub const TOUCH_GRANULARITY_MS: i64 = 3_600_000;

/// Bump when the schema changes; `migrate` upgrades older databases in place (the schema is
/// idempotent: it creates what is missing and drops what was replaced). 2: covering index
/// for the latest history per label. 3: `sha256_map`, the SHA-256 of blobs for remotes that
/// accept only SHA-256.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS action_cache (
    key BLOB PRIMARY KEY,
    result BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS file_state (
    path TEXT PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    label TEXT NOT NULL,
    key BLOB NOT NULL,
    status TEXT NOT NULL,
    manifest BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
-- Covers the latest-per-label query (no table row is read for it).
DROP INDEX IF EXISTS history_by_label;
CREATE INDEX IF NOT EXISTS history_latest ON history (workspace, label, seq, key, status);
-- BLAKE3 hash -> SHA-256 hash of the same bytes (the size is the same for both, so it is not
-- stored). A row is a fact about bytes, true whether or not the blob is still stored: GC and
-- verify leave rows of the blobs they remove.
CREATE TABLE IF NOT EXISTS sha256_map (
    blake3 BLOB PRIMARY KEY,
    sha256 BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    finished_ms INTEGER NOT NULL,
    executed INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    wall_ms INTEGER NOT NULL,
    saved_ms INTEGER NOT NULL
);
";

/// Counts of one finished build, recorded for `cairn store stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildRecord {
    /// Actions and tests that ran.
    pub executed: u64,
    /// Actions and tests answered from the cache.
    pub cached: u64,
    /// Actions and tests that failed.
    pub failed: u64,
    /// The build's wall time.
    pub wall_ms: u64,
    /// The recorded run time of every cached action: what the cache saved.
    pub saved_ms: u64,
}

/// Totals over the recorded builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildTotals {
    /// How many builds were recorded.
    pub builds: u64,
    /// The sum of their records.
    pub sum: BuildRecord,
}

/// How many history entries are kept per target.
const HISTORY_PER_TARGET: i64 = 5;

/// One recorded run of a target, for `cairn why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The target's label.
    pub label: String,
    /// Its action key.
    pub key: Digest,
    /// How it ended (`executed`, `cached`, `failed`).
    pub status: String,
    /// What went into the key (encoded by the caller).
    pub manifest: Vec<u8>,
}

/// The metadata database.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// A second connection, opened on first use, for bulk reads on another thread while
    /// `conn` serves this one (WAL readers do not wait for each other).
    reader: std::sync::OnceLock<Option<Mutex<Connection>>>,
}

/// A database error, told apart when it means the file is damaged (a recovery command exists).
fn db_error(path: &Path, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    let path = path.to_path_buf();
    match source.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::DamagedDatabase { path, source },
        _ => StoreError::Db { path, source },
    }
}

/// The action results a damaged database at `path` still gives (key, encoded result), in
/// order until the first row it cannot read: what `store verify --repair` carries over.
pub(crate) fn salvage_action_results(path: &Path) -> Vec<(Digest, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(conn) = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return out;
    };
    let Ok(mut stmt) = conn.prepare("SELECT key, result FROM action_cache") else {
        return out;
    };
    let Ok(mut rows) = stmt.query([]) else {
        return out;
    };
    while let Ok(Some(row)) = rows.next() {
        let (Ok(key), Ok(result)) = (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)) else {
            continue;
        };
        if let Ok(hash) = <[u8; 32]>::try_from(key.as_slice()) {
            out.push((Digest { hash, size: 0 }, result));
        }
    }
    out
}

/// Runs `f` until SQLite stops answering BUSY (another process setting the database up), for
/// at most the busy timeout.
fn when_not_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

impl Db {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let err = |source| db_error(path, source);
        let conn = Connection::open(path).map_err(err)?;
        // Concurrent cairn processes share the store: wait for a writer instead of failing.
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        // Switching a new database to WAL takes an exclusive lock, and SQLite answers BUSY
        // there without calling the busy handler: processes opening a fresh store at once
        // (a build, a watch, a gc) take turns instead (`tests/torture.py`, concurrent).
        when_not_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).map_err(err)?;
        when_not_busy(|| conn.pragma_update(None, "synchronous", "NORMAL")).map_err(err)?;
        let db = Db {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            reader: std::sync::OnceLock::new(),
        };
        when_not_busy(|| db.migrate()).map_err(err)?;
        Ok(db)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        db_error(&self.path, source)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> rusqlite::Result<()> {
        let conn = self.conn();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(())
    }

    /// The encoded `ActionResult` stored under an action key. Read-only: callers batch the
    /// last-use updates with `touch_action_results`, so a no-op build writes once.
    pub fn get_action_result(&self, key: &Digest) -> Result<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached("SELECT result FROM action_cache WHERE key = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![key.hash.as_slice()], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Stores an encoded `ActionResult` under an action key. The caller stores every blob the
    /// result references first, so an entry never points at a missing blob.
    pub fn put_action_result(&self, key: &Digest, result: &[u8]) -> Result<()> {
        let now = now_ms();
        self.conn()
            .execute(
                "INSERT INTO action_cache (key, result, created_ms, last_used_ms)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(key) DO UPDATE SET result = ?2, last_used_ms = ?3",
                params![key.hash.as_slice(), result, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes an action result (e.g. one whose blobs turned out corrupt or missing, or one
    /// evicted by GC), and with it every record derived from the action cache (values under
    /// `DERIVED_PREFIX`), which may refer to it.
    pub fn remove_action_result(&self, key: &Digest) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM action_cache WHERE key = ?1",
            params![key.hash.as_slice()],
        )
        .map_err(|e| self.err(e))?;
        // Every key that starts with the prefix sorts below the prefix + U+10FFFF.
        let end = format!("{DERIVED_PREFIX}\u{10FFFF}");
        conn.execute(
            "DELETE FROM kv WHERE key >= ?1 AND key < ?2",
            params![DERIVED_PREFIX, end],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every action result: key, encoded result, last use (ms since the epoch).
    pub fn all_action_results(&self) -> Result<Vec<(Digest, Vec<u8>, i64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT key, result, last_used_ms FROM action_cache ORDER BY last_used_ms DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok((
                    Digest {
                        hash: hash.try_into().unwrap_or([0; 32]),
                        size: 0,
                    },
                    r.get(1)?,
                    r.get(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// SQLite's own consistency check (`PRAGMA integrity_check`): the problems it lists, none
    /// when the database is sound.
    pub fn integrity_problems(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let line = row.map_err(|e| self.err(e))?;
            if line != "ok" {
                out.push(line);
            }
        }
        Ok(out)
    }

    /// How many action results are stored.
    pub fn action_count(&self) -> Result<u64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM action_cache", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Every file state recorded for paths under `prefix`, in one query.
    pub fn load_file_states(&self, prefix: &str) -> Result<HashMap<String, FileState>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, hash FROM file_state
                 WHERE path >= ?1 AND path < ?2",
            )
            .map_err(|e| self.err(e))?;
        // `prefix` + U+10FFFF sorts after every path below the prefix.
        let end = format!("{prefix}\u{10FFFF}");
        let rows = stmt
            .query_map(params![prefix, end], |r| {
                let hash: Vec<u8> = r.get(7)?;
                let size: i64 = r.get(3)?;
                Ok((
                    r.get::<_, String>(0)?,
                    FileState {
                        dev: r.get::<_, i64>(1)? as u64,
                        ino: r.get::<_, i64>(2)? as u64,
                        mtime_ns: r.get(4)?,
                        ctime_ns: r.get(5)?,
                        mode: r.get::<_, i64>(6)? as u32,
                        digest: Digest {
                            hash: hash.try_into().unwrap_or([0; 32]),
                            size: size as u64,
                        },
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Records file states in one transaction.
    pub fn save_file_states(&self, states: &[(String, FileState)]) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO file_state
                     (path, dev, ino, size, mtime_ns, ctime_ns, mode, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| self.err(e))?;
            for (path, s) in states {
                stmt.execute(params![
                    path,
                    s.dev as i64,
                    s.ino as i64,
                    s.digest.size as i64,
                    s.mtime_ns,
                    s.ctime_ns,
                    s.mode as i64,
                    s.digest.hash.as_slice()
                ])
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The SHA-256 hashes recorded (by `put_sha256s`) for blobs given by their BLAKE3
    /// digest, in one read transaction; a digest with no row is absent from the answer.
    pub fn get_sha256s(&self, digests: &[Digest]) -> Result<HashMap<Digest, [u8; 32]>> {
        let mut found = HashMap::new();
        if digests.is_empty() {
            return Ok(found);
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("SELECT sha256 FROM sha256_map WHERE blake3 = ?1")
                .map_err(|e| self.err(e))?;
            for digest in digests {
                let sha256: Option<Vec<u8>> = stmt
                    .query_row(params![digest.hash.as_slice()], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.err(e))?;
                // A row of the wrong length was not written by `put_sha256s`: treat it as
                // absent, so the hash is computed again (and the row replaced).
                if let Some(sha256) = sha256.and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                    found.insert(*digest, sha256);
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(found)
    }

    /// Records the SHA-256 hash of blobs given by their BLAKE3 digest, in one transaction.
    /// The caller computed each from the blob's bytes (a row is never derived from anything
    /// else, so it stays true as long as BLAKE3 has no collision).
    pub fn put_sha256s(&self, mappings: &[(Digest, [u8; 32])]) -> Result<()> {
        if mappings.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO sha256_map (blake3, sha256) VALUES (?1, ?2)",
                )
                .map_err(|e| self.err(e))?;
            for (digest, sha256) in mappings {
                stmt.execute(params![digest.hash.as_slice(), sha256.as_slice()])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every value whose key starts with `prefix`, in key order.
    pub fn values_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_value_with_prefix(prefix, |key, value| {
            out.push((key.to_string(), value.to_vec()))
        })?;
        Ok(out)
    }

    /// The total size of the values whose key starts with `prefix` (SQLite knows a value's
    /// length without reading it).
    pub fn value_bytes_with_prefix(&self, prefix: &str) -> Result<u64> {
        let end = format!("{prefix}\u{10FFFF}");
        self.with_reader(|conn| {
            conn.prepare_cached(
                "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM kv WHERE key >= ?1 AND key < ?2",
            )
            .and_then(|mut stmt| stmt.query_row(params![prefix, end], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
        })
    }

    /// Runs `f` on the second, read-only connection (opened on first use), or on the main one
    /// if that cannot be opened.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let reader = self.reader.get_or_init(|| {
            let conn = Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()?;
            conn.busy_timeout(Duration::from_secs(30)).ok()?;
            // Its values are read once, in order: a small page cache is recycled instead of
            // growing to the default 2 MiB of freshly touched memory.
            conn.pragma_update(None, "cache_size", -256).ok()?;
            Some(Mutex::new(conn))
        });
        match reader {
            Some(reader) => f(&reader.lock().unwrap_or_else(|p| p.into_inner())),
            None => f(&self.conn()),
        }
    }

    /// Calls `each(key, value)` for every value whose key starts with `prefix`, in key order,
    /// with the bytes as SQLite holds them (no copy of each value). Reads on a second,
    /// read-only connection, so loading file states does not wait for the main connection.
    pub fn for_each_value_with_prefix(
        &self,
        prefix: &str,
        mut each: impl FnMut(&str, &[u8]),
    ) -> Result<()> {
        let end = format!("{prefix}\u{10FFFF}");
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query(params![prefix, end]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let key = row.get_ref(0).and_then(|v| Ok(v.as_str()?));
                let value = row.get_ref(1).and_then(|v| Ok(v.as_blob()?));
                match (key, value) {
                    (Ok(key), Ok(value)) => each(key, value),
                    (Err(e), _) | (_, Err(e)) => return Err(self.err(e)),
                }
            }
            Ok(())
        })
    }

    /// Removes every value whose key starts with `prefix`.
    pub fn remove_values_with_prefix(&self, prefix: &str) -> Result<()> {
        let end = format!("{prefix}\u{10FFFF}");
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE key >= ?1 AND key < ?2")
            .and_then(|mut stmt| stmt.execute(params![prefix, end]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores several values in one transaction that first reads `guard`: returns whether it
    /// held `expected` (`None`: absent). The values are written either way; the answer tells
    /// whether anyone else wrote `guard` since the caller read it.
    pub fn put_values_guarded(
        &self,
        guard: &str,
        expected: Option<&[u8]>,
        values: &[(String, Vec<u8>)],
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let found: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM kv WHERE key = ?1", params![guard], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")
                .map_err(|e| self.err(e))?;
            for (key, value) in values {
                stmt.execute(params![key, value]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(found.as_deref() == expected)
    }

    /// Removes a value stored by `put_value` (nothing if there is none).
    pub fn remove_value(&self, key: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM kv WHERE key = ?1", params![key])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A value stored by `put_value` (e.g. a workspace's analysis cache).
    pub fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.conn()
            .query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores a value under a key, replacing any previous one.
    pub fn put_value(&self, key: &str, value: &[u8]) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks action results as used now, in one transaction (LRU bookkeeping for GC).
    pub fn touch_action_results(&self, keys: &[Digest]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE action_cache SET last_used_ms = ?2 WHERE key = ?1 AND last_used_ms < ?3",
                )
                .map_err(|e| self.err(e))?;
            // Uses within the hour are not written again: a no-op build changes no page.
            for key in keys {
                stmt.execute(params![
                    key.hash.as_slice(),
                    now,
                    now - TOUCH_GRANULARITY_MS
                ])
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The latest (key, status) recorded per label of a workspace.
    pub fn latest_history(&self, workspace: &str) -> Result<HashMap<String, (Digest, String)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                // SQLite takes bare columns from the row that holds the MAX: one pass over
                // the index instead of a subquery per row.
                "SELECT label, key, status, MAX(seq) FROM history WHERE workspace = ?1
                 GROUP BY label",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workspace], |r| {
                let hash: Vec<u8> = r.get(1)?;
                Ok((
                    r.get::<_, String>(0)?,
                    (
                        Digest {
                            hash: hash.try_into().unwrap_or([0; 32]),
                            size: 0,
                        },
                        r.get::<_, String>(2)?,
                    ),
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The recorded runs of one target, newest first.
    pub fn history(&self, workspace: &str, label: &str) -> Result<Vec<HistoryEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, status, manifest FROM history WHERE workspace = ?1 AND label = ?2
                 ORDER BY seq DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workspace, label], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok(HistoryEntry {
                    label: label.to_string(),
                    key: Digest {
                        hash: hash.try_into().unwrap_or([0; 32]),
                        size: 0,
                    },
                    status: r.get(1)?,
                    manifest: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Appends history entries in one transaction, keeping the newest few per target.
    pub fn record_history(&self, workspace: &str, entries: &[HistoryEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO history (workspace, label, key, status, manifest, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| self.err(e))?;
            let mut prune = tx
                .prepare_cached(
                    "DELETE FROM history WHERE workspace = ?1 AND label = ?2 AND seq NOT IN
                       (SELECT seq FROM history WHERE workspace = ?1 AND label = ?2
                        ORDER BY seq DESC LIMIT ?3)",
                )
                .map_err(|e| self.err(e))?;
            for e in entries {
                insert
                    .execute(params![
                        workspace,
                        e.label,
                        e.key.hash.as_slice(),
                        e.status,
                        e.manifest,
                        now
                    ])
                    .map_err(|e| self.err(e))?;
                prune
                    .execute(params![workspace, e.label, HISTORY_PER_TARGET])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records a finished build's counts.
    pub fn record_build(&self, record: &BuildRecord) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO builds (finished_ms, executed, cached, failed, wall_ms, saved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    now_ms(),
                    record.executed as i64,
                    record.cached as i64,
                    record.failed as i64,
                    record.wall_ms as i64,
                    record.saved_ms as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Totals over the most recent `last` builds.
    pub fn build_totals(&self, last: u64) -> Result<BuildTotals> {
        self.conn()
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(executed), 0), COALESCE(SUM(cached), 0),
                        COALESCE(SUM(failed), 0), COALESCE(SUM(wall_ms), 0),
                        COALESCE(SUM(saved_ms), 0)
                 FROM (SELECT * FROM builds ORDER BY id DESC LIMIT ?1)",
                params![last as i64],
                |r| {
                    Ok(BuildTotals {
                        builds: r.get::<_, i64>(0)? as u64,
                        sum: BuildRecord {
                            executed: r.get::<_, i64>(1)? as u64,
                            cached: r.get::<_, i64>(2)? as u64,
                            failed: r.get::<_, i64>(3)? as u64,
                            wall_ms: r.get::<_, i64>(4)? as u64,
                            saved_ms: r.get::<_, i64>(5)? as u64,
                        },
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}

#[allow(clippy::disallowed_methods)] // LRU bookkeeping needs the wall clock; never hashed.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_fresh_store_at_once_all_get_it() {
        // Found by tests/torture.py: the switch to WAL answered BUSY to all but one.
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("metadata.sqlite");
            let opened: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| Db::open(&path).is_ok()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(opened.iter().all(|ok| *ok), "{opened:?}");
        }
    }

    #[test]
    fn action_results_round_trip_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        let key = Digest::of_bytes(b"action");
        assert_eq!(db.get_action_result(&key).unwrap(), None);
        db.put_action_result(&key, b"result").unwrap();
        assert_eq!(
            db.get_action_result(&key).unwrap().as_deref(),
            Some(&b"result"[..])
        );
        assert_eq!(db.action_count().unwrap(), 1);
        let derived = format!("{DERIVED_PREFIX}memo");
        db.put_value(&derived, b"x").unwrap();
        db.put_value("other", b"y").unwrap();
        db.remove_action_result(&key).unwrap();
        assert_eq!(db.get_action_result(&key).unwrap(), None);
        assert_eq!(
            db.get_value(&derived).unwrap(),
            None,
            "derived records go too"
        );
        assert_eq!(db.get_value("other").unwrap().as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn file_states_are_scoped_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        let state = FileState {
            dev: 1,
            ino: 2,
            mtime_ns: 3,
            ctime_ns: 4,
            mode: 0o644,
            digest: Digest::of_bytes(b"x"),
        };
        db.save_file_states(&[
            ("/ws/a/x".into(), state),
            ("/ws/b".into(), state),
            ("/wsother/c".into(), state),
        ])
        .unwrap();
        let got = db.load_file_states("/ws/").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["/ws/a/x"], state);
    }

    #[test]
    fn reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let key = Digest::of_bytes(b"k");
        Db::open(&path)
            .unwrap()
            .put_action_result(&key, b"r")
            .unwrap();
        assert!(
            Db::open(&path)
                .unwrap()
                .get_action_result(&key)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn sha256_rows_are_found_by_blake3_digest() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        assert!(db.get_sha256s(&[a, b]).unwrap().is_empty());
        db.put_sha256s(&[(a, [1; 32]), (b, [2; 32])]).unwrap();
        db.put_sha256s(&[(a, [1; 32])]).unwrap();
        let c = Digest::of_bytes(b"c");
        let found = db.get_sha256s(&[a, c, b]).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&a], [1; 32]);
        assert_eq!(found[&b], [2; 32]);
    }

    #[test]
    fn a_version_2_database_gains_the_sha256_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let key = Digest::of_bytes(b"k");
        {
            let db = Db::open(&path).unwrap();
            db.put_action_result(&key, b"r").unwrap();
            let conn = db.conn();
            conn.execute_batch("DROP TABLE sha256_map; PRAGMA user_version = 2;")
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let d = Digest::of_bytes(b"blob");
        db.put_sha256s(&[(d, [7; 32])]).unwrap();
        assert_eq!(db.get_sha256s(&[d]).unwrap()[&d], [7; 32]);
        assert!(db.get_action_result(&key).unwrap().is_some(), "data kept");
    }
}

/// Property tests (issue 15): every row cairn reads back is what it wrote, and a row it did not
/// write (any type in any column: a damaged or foreign database) is an error or a value,
/// never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use crate::file_state::proptests::state;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;
    use rusqlite::types::Value;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        (dir, db)
    }

    /// Any SQLite value, or (often) `likely`, the one a reader looks for.
    fn value(likely: Value) -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => Just(likely),
            1 => Just(Value::Null),
            1 => any::<i64>().prop_map(Value::Integer),
            1 => any::<f64>().prop_map(Value::Real),
            1 => "\\PC{0,8}".prop_map(Value::Text),
            1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        ]
    }

    const KEY: [u8; 32] = [7; 32];

    /// A row of any values for one of the tables, with the statement that inserts it.
    fn row() -> impl Strategy<Value = (&'static str, Vec<Value>)> {
        let key = || value(Value::Blob(KEY.to_vec()));
        let text = |t: &str| value(Value::Text(t.to_string()));
        let int = || value(Value::Integer(1));
        prop_oneof![
            (key(), value(Value::Blob(Vec::new())), int(), int()).prop_map(|(a, b, c, d)| (
                "INSERT INTO action_cache (key, result, created_ms, last_used_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                vec![a, b, c, d]
            )),
            (
                text("/p/f"),
                int(),
                int(),
                int(),
                int(),
                int(),
                int(),
                key()
            )
                .prop_map(|(a, b, c, d, e, f, g, h)| (
                    "INSERT INTO file_state (path, dev, ino, size, mtime_ns, ctime_ns, mode, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    vec![a, b, c, d, e, f, g, h]
                )),
            (text("k"), value(Value::Blob(Vec::new())))
                .prop_map(|(a, b)| ("INSERT INTO kv (key, value) VALUES (?1, ?2)", vec![a, b])),
            (
                text("/ws"),
                text("//a:b"),
                key(),
                text("executed"),
                value(Value::Blob(b"{}".to_vec())),
                int()
            )
                .prop_map(|(a, b, c, d, e, f)| (
                    "INSERT INTO history (workspace, label, key, status, manifest, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    vec![a, b, c, d, e, f]
                )),
            (key(), key()).prop_map(|(a, b)| (
                "INSERT INTO sha256_map (blake3, sha256) VALUES (?1, ?2)",
                vec![a, b]
            )),
            (int(), int(), int(), int(), int(), int()).prop_map(|(a, b, c, d, e, f)| (
                "INSERT INTO builds (finished_ms, executed, cached, failed, wall_ms, saved_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                vec![a, b, c, d, e, f]
            )),
        ]
    }

    #[test]
    fn file_state_rows_round_trip() {
        let (_dir, db) = db();
        let strategy = proptest::collection::btree_map("[a-z/]{1,12}|\\PC{1,6}", state(), 0..8);
        let case = std::cell::Cell::new(0);
        TestRunner::default()
            .run(&strategy, |states| {
                case.set(case.get() + 1);
                let prefix = format!("/case{}/", case.get());
                let rows: Vec<(String, FileState)> = states
                    .iter()
                    .map(|(p, s)| (format!("{prefix}{p}"), *s))
                    .collect();
                db.save_file_states(&rows).unwrap();
                let back = db.load_file_states(&prefix).unwrap();
                prop_assert_eq!(back, rows.into_iter().collect::<HashMap<_, _>>());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn history_rows_round_trip() {
        let (_dir, db) = db();
        let entry = (
            "|a|\\PC{0,10}",
            any::<[u8; 32]>(),
            "\\PC{0,8}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(label, hash, status, manifest)| HistoryEntry {
                label,
                key: Digest { hash, size: 0 },
                status,
                manifest,
            });
        // Often one label many times (more than are kept).
        let strategy = proptest::collection::vec(entry, 0..8);
        let case = std::cell::Cell::new(0);
        TestRunner::default()
            .run(&strategy, |entries| {
                case.set(case.get() + 1);
                let ws = format!("/ws{}", case.get());
                db.record_history(&ws, &entries).unwrap();
                let latest = db.latest_history(&ws).unwrap();
                for e in &entries {
                    // Newest first: the entries of this label, in reverse, as many as kept.
                    let same: Vec<&HistoryEntry> = entries
                        .iter()
                        .rev()
                        .filter(|o| o.label == e.label)
                        .take(HISTORY_PER_TARGET as usize)
                        .collect();
                    let back = db.history(&ws, &e.label).unwrap();
                    prop_assert_eq!(back.iter().collect::<Vec<_>>(), same.clone());
                    prop_assert_eq!(&latest[&e.label], &(same[0].key, same[0].status.clone()));
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_row_of_any_values_is_read_or_refused() {
        let (_dir, db) = db();
        let key = Digest { hash: KEY, size: 0 };
        TestRunner::default()
            .run(&row(), |(insert, values)| {
                // A value a column's constraint refuses never gets in: nothing to read.
                if db
                    .conn()
                    .execute(insert, rusqlite::params_from_iter(&values))
                    .is_err()
                {
                    return Ok(());
                }
                let _ = db.get_action_result(&key);
                let _ = db.all_action_results();
                let _ = db.load_file_states("/p/");
                let _ = db.get_value("k");
                let _ = db.values_with_prefix("");
                let _ = db.value_bytes_with_prefix("");
                let _ = db.for_each_value_with_prefix("", |_, _| {});
                let _ = db.latest_history("/ws");
                let _ = db.history("/ws", "//a:b");
                let _ = db.get_sha256s(&[key]);
                let _ = db.build_totals(100);
                let _ = db.action_count();
                db.conn()
                    .execute_batch(
                        "DELETE FROM action_cache; DELETE FROM file_state; DELETE FROM kv;
                         DELETE FROM history; DELETE FROM sha256_map; DELETE FROM builds;",
                    )
                    .unwrap();
                Ok(())
            })
            .unwrap();
    }
}
