//! What is known about one file: its content digest and mode as it enters an input tree
//! (`FileInfo`), and the metadata the file-state cache keys that digest by (`FileState`).
//! Shared by the cache (`file_state`) and the database that stores it (`db`).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crate::Digest;

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
    pub(crate) fn from_metadata(meta: &Metadata, digest: Digest) -> FileState {
        FileState {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            mode: meta.mode() & 0o7777,
            digest,
        }
    }

    /// `matches` for what `fstatat` returned.
    pub(crate) fn matches_stat(&self, st: &nix::sys::stat::FileStat) -> bool {
        use nix::sys::stat::SFlag;
        st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
            && self.dev == st.st_dev
            && self.ino == st.st_ino
            && self.mtime_ns == st.st_mtime * 1_000_000_000 + st.st_mtime_nsec
            && self.ctime_ns == st.st_ctime * 1_000_000_000 + st.st_ctime_nsec
            && self.mode == st.st_mode & 0o7777
            && self.digest.size == st.st_size as u64
    }

    pub(crate) fn matches(&self, meta: &Metadata) -> bool {
        *self
            == FileState::from_metadata(
                meta,
                Digest {
                    size: meta.len(),
                    ..self.digest
                },
            )
    }

    pub(crate) fn info(&self) -> FileInfo {
        FileInfo {
            digest: self.digest,
            executable: self.mode & 0o111 != 0,
        }
    }
}
