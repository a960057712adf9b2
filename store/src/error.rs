//! The store's error type: every I/O failure carries the path it happened on.

use std::path::PathBuf;

use crate::{Digest, RemoteDigest};

/// Anything the store can fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`, `rename`, ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite metadata database is damaged (truncated, overwritten, corrupt pages).
    #[error(
        "The store's database `{path}` is damaged ({source}): run `cairn store verify --repair` to rebuild it (every sound blob, and every result it can still read, is kept)"
    )]
    DamagedDatabase {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The SQLite metadata database failed.
    #[error("Store database `{path}`: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A blob's bytes do not hash to its name: it was corrupted on disk and has been removed.
    #[error(
        "Blob {expected} is corrupt (its content hashes to {actual}); it was removed from the store"
    )]
    Corrupt {
        /// The digest the blob is stored under.
        expected: Digest,
        /// What its content hashes to.
        actual: Digest,
    },
    /// Bytes received from a remote under one of its digests hash to another: nothing was
    /// stored.
    #[error("Bytes received as blob {expected} hash to {actual}; they were not stored")]
    WrongRemoteBytes {
        /// The remote's digest the bytes were sent as.
        expected: RemoteDigest,
        /// What they hash to.
        actual: RemoteDigest,
    },
    /// A blob the caller asked for is not in the store.
    #[error("Blob {0} is not in the store")]
    Missing(Digest),
    /// A stored protobuf message could not be decoded.
    #[error("Stored message {digest} does not decode as {what}: {source}")]
    Decode {
        /// The blob holding the message.
        digest: Digest,
        /// The expected message type.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: prost::DecodeError,
    },
    /// A stored or received action result cannot be used as it is (an output path leaving
    /// its package, a missing digest, a link out of the workspace).
    #[error("The action result for {key} is malformed: {why}")]
    BadResult {
        /// The action key it is stored under.
        key: Digest,
        /// What is wrong.
        why: String,
    },
    /// A stored `Tree` message is malformed (dangling child, bad entry name).
    #[error("Stored tree {digest} is malformed: {why}")]
    BadTree {
        /// The blob holding the `Tree`.
        digest: Digest,
        /// What is wrong.
        why: String,
    },
    /// A file given as the bytes of a blob no longer holds them: it changed since it was
    /// hashed. Nothing is remembered for it.
    #[error("`{path}` changed since it was hashed: expected {expected}, found {actual}")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The digest it was hashed to.
        expected: Digest,
        /// What it hashes to now.
        actual: Digest,
    },
    /// Bytes given as those of a blob (in memory, or received from a remote) hash to another
    /// digest. Nothing is stored or remembered for them.
    #[error("Bytes given as blob {expected} hash to {actual}; they were not stored")]
    WrongBytes {
        /// The digest the bytes were given as.
        expected: Digest,
        /// What they hash to.
        actual: Digest,
    },
    /// A `Directory` that a tree being re-encoded refers to was not given.
    #[error("Directory {0} is referenced in a tree but was not given")]
    MissingDirectory(Digest),
    /// A message given under a digest (a `Directory` keyed by it, a `Command` named by an
    /// `Action`) encodes to another one.
    #[error("{message} given as {expected} encodes to {actual}")]
    WrongMessage {
        /// The message type (`Directory`, `Command`).
        message: &'static str,
        /// The digest it was given under.
        expected: Digest,
        /// The digest of its encoding.
        actual: Digest,
    },
    /// A message being re-encoded lacks a digest, or holds a malformed one.
    #[error("{message} `{field}` has a missing or malformed digest")]
    BadMessageDigest {
        /// The message type (`Action`, `Directory`).
        message: &'static str,
        /// The field, or the name of the entry, holding the digest.
        field: String,
    },
    /// An output tree holds something cairn cannot store (a socket, a device, an absolute
    /// symlink escaping the tree...).
    #[error("Unsupported file `{path}`: {why}")]
    Unsupported {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Adds the path and operation to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;

    /// For a copy from `src` into `dest`: a full disk (or quota) is named by where it was
    /// being written, anything else by what was being read.
    fn copying(self, src: &std::path::Path, dest: &std::path::Path) -> Result<T>
    where
        Self: Sized,
    {
        self.at("copy", src).map_err(|e| match e {
            StoreError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                StoreError::Io {
                    op: "write",
                    path: dest.to_path_buf(),
                    source,
                }
            }
            other => other,
        })
    }
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
