//! Where action sandboxes are made. Every action gets a fresh directory that is deleted when it
//! ends, so a build creates and deletes its inputs' copies once per action: tens of thousands
//! of files for a big build. On a memory file system that is cheap. On a disk file system it
//! is not, and on some it gets worse as the build goes: ext4 without a journal skips every
//! inode deleted in the last minutes when it allocates a new one, so a cold build of 2,000
//! actions spends most of its time in the kernel looking for free inodes.
//!
//! So sandboxes go to `/dev/shm/cairn-<uid>` when that is a private directory on a tmpfs with
//! room to spare (at least [`MEMORY_RESERVE`] free beyond the action's inputs, which must be
//! at most [`MEMORY_MAX_INPUTS`]), and to `<store>/sandbox` otherwise. A configured base
//! (`CAIRN_SANDBOX_BASE`, `[build] sandbox_base`) is always used as it is.
//!
//! A sandbox directory is named after the process that made it (`action-<pid>-...`), so the
//! first action of a later build can delete what a killed build left behind.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn_store::StoreError;
use nix::sys::statfs::{TMPFS_MAGIC, statfs};
use nix::sys::statvfs::statvfs;

/// Actions whose inputs add up to more than this run on disk.
pub(crate) const MEMORY_MAX_INPUTS: u64 = 64 << 20;
/// A memory sandbox needs this much free space beyond the action's inputs, for its outputs and
/// scratch files.
pub(crate) const MEMORY_RESERVE: u64 = 1 << 30;
/// Where memory sandboxes go, if it is a tmpfs.
const SHM: &str = "/dev/shm";

/// The directories sandboxes are made in.
pub(crate) struct SandboxBase {
    /// Set: every sandbox goes there.
    configured: Option<PathBuf>,
    /// `<store>/sandbox`.
    disk: PathBuf,
    /// The private directory on a tmpfs, if there is one; found (and swept) on first use.
    memory: OnceLock<Option<PathBuf>>,
    disk_swept: OnceLock<()>,
}

impl SandboxBase {
    pub fn new(configured: Option<PathBuf>, store_root: &Path) -> SandboxBase {
        SandboxBase {
            configured,
            disk: store_root.join("sandbox"),
            memory: OnceLock::new(),
            disk_swept: OnceLock::new(),
        }
    }

    /// The directory for a sandbox whose inputs add up to `input_bytes`; it exists.
    pub fn for_inputs(&self, input_bytes: u64) -> Result<&Path, StoreError> {
        if let Some(dir) = &self.configured {
            return self.on_disk(dir);
        }
        let memory = self.memory.get_or_init(|| {
            let dir = private_tmpfs_dir(Path::new(SHM))?;
            sweep(&dir);
            Some(dir)
        });
        if let Some(dir) = memory
            && input_bytes <= MEMORY_MAX_INPUTS
            && free_bytes(dir).is_some_and(|free| free >= input_bytes + MEMORY_RESERVE)
        {
            return Ok(dir);
        }
        self.on_disk(&self.disk)
    }

    fn on_disk<'a>(&self, dir: &'a Path) -> Result<&'a Path, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        self.disk_swept.get_or_init(|| sweep(dir));
        Ok(dir)
    }
}

/// The prefix of a sandbox directory made by this process (`kind` is one of `KINDS`).
pub(crate) fn sandbox_prefix(kind: &str) -> String {
    debug_assert!(KINDS.contains(&kind));
    format!("{kind}-{}-", std::process::id())
}

/// `<shm>/cairn-<uid>`, created mode 0700, if `shm` is a tmpfs and the directory is ours alone:
/// a directory (not a link), owned by this user, that no one else may enter. `/dev/shm` is
/// world-writable, so anyone could have made that name first.
fn private_tmpfs_dir(shm: &Path) -> Option<PathBuf> {
    if statfs(shm).ok()?.filesystem_type() != TMPFS_MAGIC {
        return None;
    }
    let uid = nix::unistd::getuid().as_raw();
    let dir = shm.join(format!("cairn-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0;
    private.then_some(dir)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let st = statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Deletes the sandboxes in `base` whose process is gone (a build killed mid-action).
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if !process_exists(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The kinds of directory cairn makes in a sandbox base (`sandbox_prefix`).
const KINDS: &[&str] = &["action", "probe"];

/// The pid in a sandbox name `<kind>-<pid>-<random>`; `None` for any other name (a configured
/// base may hold directories that are not ours).
fn owner_pid(name: &str) -> Option<i32> {
    let (kind, rest) = name.split_once('-')?;
    if !KINDS.contains(&kind) {
        return None;
    }
    let (pid, _random) = rest.split_once('-')?;
    pid.parse().ok().filter(|&p| p > 0)
}

fn process_exists(pid: i32) -> bool {
    let pid = nix::unistd::Pid::from_raw(pid);
    // EPERM: it exists, as someone else's.
    !matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_name_gives_its_owner() {
        assert_eq!(owner_pid("action-1234-Xa9b2"), Some(1234));
        assert_eq!(owner_pid("probe-77-abc"), Some(77));
        assert_eq!(owner_pid("action-Xa9b2"), None);
        assert_eq!(owner_pid("action-0-x"), None);
        assert_eq!(owner_pid("notes.txt"), None);
        assert_eq!(owner_pid("backup-2024-01"), None, "not a kind of ours");
    }

    #[test]
    fn sweeping_removes_only_what_dead_processes_left() {
        let base = tempfile::tempdir().unwrap();
        // A child that has exited and been waited for: its pid is free.
        let dead = std::process::Command::new("true")
            .spawn()
            .and_then(|mut c| c.wait().map(|_| c.id()))
            .unwrap();
        let mine = base.path().join(format!("{}x", sandbox_prefix("action")));
        let stale = base.path().join(format!("action-{dead}-y"));
        let other = base.path().join("unrelated");
        for dir in [&mine, &stale, &other] {
            fs::create_dir_all(dir.join("root")).unwrap();
        }
        sweep(base.path());
        assert!(mine.exists(), "this process is alive");
        assert!(other.exists(), "not a sandbox name");
        assert!(!stale.exists(), "its process is gone");
    }

    #[test]
    fn the_memory_directory_is_private_or_not_used() {
        if statfs(Path::new(SHM)).map(|s| s.filesystem_type()) != Ok(TMPFS_MAGIC) {
            return; // No tmpfs at /dev/shm here: nothing to check.
        }
        let shm = tempfile::tempdir_in(SHM).unwrap();
        let dir = private_tmpfs_dir(shm.path()).expect("a tmpfs directory is used");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Someone else's making: open to others, so not ours alone.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert_eq!(private_tmpfs_dir(shm.path()), None);
        fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(shm.path(), &dir).unwrap();
        assert_eq!(private_tmpfs_dir(shm.path()), None, "a link is not used");
        // A disk directory is never used for memory sandboxes.
        let disk = tempfile::tempdir().unwrap();
        if statfs(disk.path()).map(|s| s.filesystem_type()) != Ok(TMPFS_MAGIC) {
            assert_eq!(private_tmpfs_dir(disk.path()), None);
        }
    }

    #[test]
    fn large_inputs_and_a_configured_base_go_to_disk() {
        let store = tempfile::tempdir().unwrap();
        let base = SandboxBase::new(None, store.path());
        let disk = store.path().join("sandbox");
        assert_eq!(base.for_inputs(MEMORY_MAX_INPUTS + 1).unwrap(), disk);
        assert!(disk.is_dir());
        let chosen = base.for_inputs(10).unwrap();
        let memory = base.memory.get().unwrap();
        if memory
            .as_deref()
            .and_then(free_bytes)
            .is_some_and(|f| f > MEMORY_RESERVE + 10)
        {
            assert_ne!(chosen, disk, "small inputs go to memory when it has room");
        }
        let configured = store.path().join("mine");
        let base = SandboxBase::new(Some(configured.clone()), store.path());
        assert_eq!(base.for_inputs(10).unwrap(), configured);
        assert!(configured.is_dir());
    }
}
