//! The loaded states of a workspace: every path in one string, every state in one vector and a
//! hash index over them, so loading 20,000 states makes three allocations, not 20,000. Kept in
//! the order the records list them (sorted, each directory's files together), which is the
//! order `check` walks them in, one open directory at a time.

use std::hash::BuildHasher;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use hashbrown::HashTable;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use rustc_hash::FxBuildHasher;

use super::FileState;

/// `Entry::checked`: not looked at in this build yet.
const UNKNOWN: u8 = 0;
/// A `stat` in this build matched the loaded state.
pub(super) const UNCHANGED: u8 = 1;
/// A `stat` in this build did not match (or failed).
const CHANGED: u8 = 2;

#[derive(Debug)]
pub(super) struct Entry {
    /// The path's place in `LoadedStates::paths`.
    start: u32,
    len: u32,
    pub state: FileState,
    /// `UNKNOWN`, `UNCHANGED` or `CHANGED`.
    pub checked: AtomicU8,
}

#[derive(Debug, Default)]
pub(super) struct LoadedStates {
    /// Every path (relative to the workspace root), back to back.
    paths: String,
    entries: Vec<Entry>,
    /// Indexes into `entries`, by the hash of the path.
    index: HashTable<u32>,
}

fn hash(path: &str) -> u64 {
    FxBuildHasher.hash_one(path)
}

impl LoadedStates {
    pub fn with_capacity(entries: usize, path_bytes: usize) -> LoadedStates {
        LoadedStates {
            paths: String::with_capacity(path_bytes),
            entries: Vec::with_capacity(entries),
            index: HashTable::with_capacity(entries),
        }
    }

    fn path_of(&self, entry: &Entry) -> &str {
        &self.paths[entry.start as usize..(entry.start + entry.len) as usize]
    }

    /// Adds the state of `path`, replacing an earlier one. Paths past `u32` offsets are left
    /// out (only a cache: a missing state costs a hash).
    pub fn insert(&mut self, path: &str, state: FileState) {
        let (Ok(start), Ok(len)) = (u32::try_from(self.paths.len()), u32::try_from(path.len()))
        else {
            return;
        };
        let Ok(next) = u32::try_from(self.entries.len()) else {
            return;
        };
        let h = hash(path);
        let found = self
            .index
            .find(h, |i| self.path_of(&self.entries[*i as usize]) == path)
            .copied();
        if let Some(i) = found {
            self.entries[i as usize].state = state;
            return;
        }
        self.paths.push_str(path);
        self.entries.push(Entry {
            start,
            len,
            state,
            checked: AtomicU8::new(UNKNOWN),
        });
        let (paths, entries) = (&self.paths, &self.entries);
        self.index.insert_unique(h, next, |i| {
            let e = &entries[*i as usize];
            hash(&paths[e.start as usize..(e.start + e.len) as usize])
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        let i = self.index.find(hash(path), |i| {
            self.path_of(&self.entries[*i as usize]) == path
        })?;
        Some(&self.entries[*i as usize])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|e| (self.path_of(e), e))
    }

    /// Marks every entry not checked yet `UNCHANGED` or `CHANGED` by an `lstat` relative to
    /// its directory, opened once for all its entries (a path walk from the root for each file
    /// costs a third more). Stops early once `stop` is set.
    pub fn check(&self, root: &str, stop: &AtomicBool) {
        self.check_range(root, 0..self.entries.len(), stop, false);
    }

    /// `check` on two threads, setting `stop` (and so ending both) at the first entry found
    /// changed. Returns whether every entry is unchanged.
    pub fn check_all(&self, root: &str, stop: &AtomicBool) -> bool {
        let n = self.entries.len();
        std::thread::scope(|scope| {
            let second = scope.spawn(|| self.check_range(root, n / 2..n, stop, true));
            self.check_range(root, 0..n / 2, stop, true);
            let _ = second.join();
        });
        !stop.load(Ordering::Relaxed)
            && self
                .entries
                .iter()
                .all(|e| e.checked.load(Ordering::Relaxed) == UNCHANGED)
    }

    /// `check` of the entries in `range`; with `stop_on_change`, the first change sets `stop`.
    fn check_range(
        &self,
        root: &str,
        range: std::ops::Range<usize>,
        stop: &AtomicBool,
        stop_on_change: bool,
    ) {
        let Ok(root_fd) = open_dir(None, root) else {
            if stop_on_change {
                stop.store(true, Ordering::Relaxed);
            }
            return;
        };
        let mut dir: Option<(&str, Option<OwnedFd>)> = None;
        for (i, entry) in self.entries[range].iter().enumerate() {
            if i % 64 == 0 && stop.load(Ordering::Relaxed) {
                return;
            }
            if entry.checked.load(Ordering::Relaxed) != UNKNOWN {
                continue;
            }
            let path = self.path_of(entry);
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            if dir.as_ref().is_none_or(|(d, _)| *d != parent) {
                let fd = if parent.is_empty() {
                    None
                } else {
                    open_dir(Some(&root_fd), parent).ok()
                };
                dir = Some((parent, fd));
            }
            let fd = match &dir {
                Some((_, Some(fd))) => Some(fd),
                Some(("", None)) => Some(&root_fd),
                _ => None, // The directory is gone (or unreadable): so is the file.
            };
            let same = fd.is_some_and(|fd| {
                fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| entry.state.matches_stat(&st))
            });
            entry.mark(same);
            if !same && stop_on_change {
                stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// `entry`'s mark (the entry of `rel`), checking it first with an `lstat` of
    /// `root` + `rel` if `check` has not reached it yet.
    pub fn check_entry(&self, root: &str, rel: &str, entry: &Entry) -> u8 {
        let mark = entry.checked.load(Ordering::Relaxed);
        if mark != UNKNOWN {
            return mark;
        }
        let same = std::fs::symlink_metadata(format!("{root}{rel}"))
            .is_ok_and(|meta| meta.is_file() && entry.state.matches(&meta));
        entry.mark(same)
    }
}

impl Entry {
    /// Whether a check found this file changed (or gone).
    pub fn found_changed(&self) -> bool {
        self.checked.load(Ordering::Relaxed) == CHANGED
    }

    /// Records what a check found: whether the file is a regular file in the loaded state.
    fn mark(&self, same: bool) -> u8 {
        let mark = if same { UNCHANGED } else { CHANGED };
        self.checked.store(mark, Ordering::Relaxed);
        mark
    }
}

fn open_dir(at: Option<&OwnedFd>, path: &str) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match at {
        Some(fd) => openat(fd, path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    }
}
