//! Restores outputs from the CAS into the workspace: by reflink where the file system allows,
//! else by copy; never by hard link (an edited output must not corrupt the store). Files whose
//! recorded state already matches the wanted digest are left alone, so a no-op restore is a
//! `stat` per file.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::Digest;
use crate::cas::Cas;
use crate::error::{IoContext, Result};
use crate::file_info::FileInfo;
use crate::file_state::FileStates;
use crate::tree::{DirContents, read_tree};

/// What a restore did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Files written from the store.
    pub written: u64,
    /// Files that already had the right content.
    pub unchanged: u64,
}

/// Makes `dest` a file with the given content and mode, unless it provably has them already.
pub fn restore_file(
    cas: &Cas,
    states: &FileStates,
    info: &FileInfo,
    dest: &Path,
) -> Result<Restored> {
    if is_in_place(states, info, dest) {
        return Ok(Restored {
            written: 0,
            unchanged: 1,
        });
    }
    if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(dest).at("remove", dest)?;
    }
    cas.write_to(&info.digest, dest, info.executable)?;
    // Best effort: failing to remember the state only costs a re-hash next time.
    let _ = states.record_written(dest, info.digest);
    Ok(Restored {
        written: 1,
        unchanged: 0,
    })
}

/// Whether `dest` is a regular file with `info`'s mode that the file-state cache knows (by its
/// metadata alone) to hold `info`'s digest.
pub fn is_in_place(states: &FileStates, info: &FileInfo, dest: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    if let Some(known) = states.unchanged(dest) {
        return known == *info;
    }
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return false;
    };
    meta.is_file()
        && (meta.permissions().mode() & 0o111 != 0) == info.executable
        && states.is_known_with(dest, &meta, &info.digest)
}

/// Makes `dest` a directory holding exactly the stored tree: missing or different files are
/// written, extra entries removed.
pub fn restore_dir(
    cas: &Cas,
    states: &FileStates,
    tree_digest: &Digest,
    dest: &Path,
) -> Result<Restored> {
    let contents = read_tree(cas, tree_digest)?;
    restore_contents(cas, states, &contents, dest)
}

/// Like `restore_dir`, from already decoded contents.
pub fn restore_contents(
    cas: &Cas,
    states: &FileStates,
    contents: &DirContents,
    dest: &Path,
) -> Result<Restored> {
    if fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(dest).at("remove", dest)?;
    }
    fs::create_dir_all(dest).at("create", dest)?;
    remove_extra(contents, dest)?;
    let mut total = Restored::default();
    for dir in &contents.dirs {
        let path = dest.join(dir);
        fs::create_dir_all(&path).at("create", &path)?;
    }
    for (rel, info) in &contents.files {
        let r = restore_file(cas, states, info, &dest.join(rel))?;
        total.written += r.written;
        total.unchanged += r.unchanged;
    }
    for (rel, target) in &contents.symlinks {
        let path = dest.join(rel);
        if fs::read_link(&path).is_ok_and(|t| t == Path::new(target)) {
            continue;
        }
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path).at("create symlink", &path)?;
        total.written += 1;
    }
    Ok(total)
}

/// Removes whatever is below `dest` but not in `contents`.
fn remove_extra(contents: &DirContents, dest: &Path) -> Result<()> {
    let wanted_files: BTreeSet<&str> = contents
        .files
        .keys()
        .chain(contents.symlinks.keys())
        .map(String::as_str)
        .collect();
    let wanted_dirs: BTreeSet<&str> = contents.dirs.iter().map(String::as_str).collect();
    let mut stale = Vec::new();
    let mut walker = walk_sorted(dest);
    while let Some((rel, path, is_dir)) = walker.next_entry()? {
        let keep = if is_dir {
            wanted_dirs.contains(rel.as_str())
        } else {
            wanted_files.contains(rel.as_str())
        };
        if !keep {
            stale.push((path, is_dir));
            if is_dir {
                walker.skip_last_dir();
            }
        }
    }
    for (path, is_dir) in stale {
        if is_dir {
            fs::remove_dir_all(&path).at("remove", &path)?;
        } else {
            fs::remove_file(&path).at("remove", &path)?;
        }
    }
    Ok(())
}

/// A depth-first walk that yields (relative path, path, is_dir) and can skip a directory.
struct Walk {
    root: std::path::PathBuf,
    stack: Vec<(String, std::path::PathBuf, bool)>,
    last_dir: Option<std::path::PathBuf>,
}

fn walk_sorted(root: &Path) -> Walk {
    let mut walk = Walk {
        root: root.to_path_buf(),
        stack: Vec::new(),
        last_dir: None,
    };
    walk.push_children(root, "");
    walk
}

impl Walk {
    fn push_children(&mut self, dir: &Path, rel: &str) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut children: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        children.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in children {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            self.stack.push((rel, e.path(), is_dir));
        }
    }

    fn next_entry(&mut self) -> Result<Option<(String, std::path::PathBuf, bool)>> {
        if let Some(dir) = self.last_dir.take() {
            let rel = dir
                .strip_prefix(&self.root)
                .expect("walked paths are below the root")
                .to_string_lossy()
                .into_owned();
            self.push_children(&dir, &rel);
        }
        let Some((rel, path, is_dir)) = self.stack.pop() else {
            return Ok(None);
        };
        if is_dir {
            self.last_dir = Some(path.clone());
        }
        Ok(Some((rel, path, is_dir)))
    }

    fn skip_last_dir(&mut self) {
        self.last_dir = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::capture_dir;

    #[test]
    fn restore_dir_makes_dest_exactly_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a"), "A").unwrap();
        fs::write(src.join("sub/b"), "B").unwrap();
        let (digest, _) = capture_dir(&cas, &src).unwrap();

        let dest = dir.path().join("dest");
        fs::create_dir_all(dest.join("stale_dir/x")).unwrap();
        fs::write(dest.join("stale"), "old").unwrap();
        fs::write(dest.join("a"), "edited").unwrap();
        let states = FileStates::default();
        restore_dir(&cas, &states, &digest, &dest).unwrap();

        assert_eq!(fs::read_to_string(dest.join("a")).unwrap(), "A");
        assert_eq!(fs::read_to_string(dest.join("sub/b")).unwrap(), "B");
        assert!(!dest.join("stale").exists());
        assert!(!dest.join("stale_dir").exists());
    }
}
