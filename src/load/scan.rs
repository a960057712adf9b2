//! One walk of the workspace: which directories are packages (hold a `BUILD.star`) and which
//! files each package owns (those below it and not in a subpackage). Honours `.gitignore` and
//! `.ignore` files (with or without a git repository) and never enters `.git` or the store.
//!
//! A walk's result is kept in the store with the metadata of every directory it listed and
//! every ignore file it read: while none of them changed, the next scan is one `stat` per
//! directory instead of a walk (creating, deleting or renaming an entry changes its
//! directory's mtime; editing a file's contents changes no directory, and the file itself is
//! checked through the file-state cache).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::{Record, Store};
use serde::{Deserialize, Serialize};

use super::{BUILD_FILE, LoadError};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Scan {
    /// Package path (`""` for the root) → files it owns, package-relative, sorted.
    pub packages: BTreeMap<String, Vec<String>>,
}

/// A directory's or ignore file's metadata, as far as a scan depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Sig {
    ino: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Sig {
    /// The metadata of `path` (`None` if it does not exist), or `Err` if it changed too
    /// recently to be trusted: an entry added within the same timestamp tick as the listing
    /// would not change the mtime we saw (the "racy" case, as in git).
    fn of(path: &Path, now_ns: i64) -> Result<Option<Sig>, ()> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(None);
        };
        let sig = Sig {
            ino: meta.ino(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        };
        if sig.mtime_ns.max(sig.ctime_ns) > now_ns - RACY_WINDOW_NS {
            return Err(());
        }
        Ok(Some(sig))
    }
}

const RACY_WINDOW_NS: i64 = 1_000_000_000;

/// Ends the (lossy) name of a file whose real name is not UTF-8, in a package's file list: no
/// file name holds a NUL, so no real name is taken for one of these.
pub(crate) const NOT_UTF8: char = '\0';

#[allow(clippy::disallowed_methods)] // The racy check compares against the wall clock.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(i64::MAX)
}

/// A stored scan and what it depends on.
#[derive(Serialize, Deserialize)]
struct ScanRecord {
    deps: ScanDeps,
    scan: Scan,
}

/// What a stored scan depends on: first in its record, so it can be read alone (postcard reads
/// fields in order; `stored_scan_is_current` does not decode the scan itself).
#[derive(Serialize, Deserialize)]
struct ScanDeps {
    /// cairn's version and the skipped paths: a record of another setup is never trusted.
    fingerprint: String,
    /// Every listed directory (workspace-relative, `""` for the root) and its metadata.
    dirs: Vec<(String, Sig)>,
    /// Every ignore file that could apply, with its metadata (`None`: absent).
    guards: Vec<(String, Option<Sig>)>,
}

impl ScanDeps {
    /// Whether nothing the scan depends on changed: same setup, and one `stat` per directory
    /// and ignore file finds each as it was.
    fn are_current(&self, root: &Path, skip: &[PathBuf]) -> bool {
        let now = now_ns();
        self.fingerprint == fingerprint(skip)
            && self
                .dirs
                .iter()
                .all(|(rel, sig)| Sig::of(&root.join(rel), now) == Ok(Some(*sig)))
            && self
                .guards
                .iter()
                .all(|(rel, sig)| Sig::of(&root.join(rel), now) == Ok(*sig))
    }
}

fn record_of(root: &Path) -> String {
    root.display().to_string()
}

fn fingerprint(skip: &[PathBuf]) -> String {
    let mut text = format!("cairn {} scan v2", env!("CARGO_PKG_VERSION"));
    for s in skip {
        text.push('\0');
        text.push_str(&s.to_string_lossy());
    }
    text
}

/// Whether the scan stored in `store` is still the workspace's: no directory or ignore file it
/// depends on changed (what `scan_cached` checks before reusing it).
pub(crate) fn stored_scan_is_current(root: &Path, skip: &[PathBuf], store: &Store) -> bool {
    let workspace = record_of(root);
    store
        .get_record(&Record::Scan {
            workspace: &workspace,
        })
        .ok()
        .flatten()
        .and_then(|bytes| super::unpack(&bytes))
        .and_then(|b| {
            postcard::take_from_bytes::<ScanDeps>(&b)
                .ok()
                .map(|(deps, _)| deps)
        })
        .is_some_and(|deps| deps.are_current(root, skip))
}

/// Scans the workspace, reusing the scan stored in `store` when no directory or ignore file it
/// depends on changed; otherwise walks and stores the new scan (best effort).
pub(crate) fn scan_cached(root: &Path, skip: &[PathBuf], store: &Store) -> Result<Scan, LoadError> {
    let workspace = record_of(root);
    let key = Record::Scan {
        workspace: &workspace,
    };
    let stored = store
        .get_record(&key)
        .ok()
        .flatten()
        .and_then(|bytes| super::unpack(&bytes))
        .and_then(|bytes| postcard::from_bytes::<ScanRecord>(&bytes).ok());
    // One `stat` per directory, on this thread: the other core is checking file states
    // meanwhile (see `FileStates::check_unchanged`), and a parallel loop here only contends
    // with it.
    if let Some(record) = stored
        && record.deps.are_current(root, skip)
    {
        return Ok(record.scan);
    }
    let (scan, dirs) = walk(root, skip)?;
    let now = now_ns();
    let mut guards = Vec::new();
    let mut trusted = true;
    let candidates = scan
        .packages
        .iter()
        .flat_map(|(pkg, files)| files.iter().map(move |f| (pkg, f)))
        .filter(|(_, f)| f.ends_with(".gitignore") || f.ends_with(".ignore"))
        .map(|(pkg, f)| {
            if pkg.is_empty() {
                f.clone()
            } else {
                format!("{pkg}/{f}")
            }
        })
        .chain([".git/info/exclude".to_string()]);
    for rel in candidates {
        match Sig::of(&root.join(&rel), now) {
            Ok(sig) => guards.push((rel, sig)),
            Err(()) => trusted = false,
        }
    }
    let dirs: Option<Vec<(String, Sig)>> = dirs
        .into_iter()
        .map(|(rel, sig)| Some((rel, sig?)))
        .collect();
    if let (Some(dirs), true) = (dirs, trusted) {
        let record = ScanRecord {
            deps: ScanDeps {
                fingerprint: fingerprint(skip),
                dirs,
                guards,
            },
            scan,
        };
        if let Ok(bytes) = postcard::to_stdvec(&record) {
            let _ = store.put_record(&key, &super::pack(&bytes));
        }
        return Ok(record.scan);
    }
    // Something changed while we looked: do not keep this scan, walk again next time.
    let _ = store.put_record(&key, &[]);
    Ok(scan)
}

/// Walks the workspace at `root`, skipping `skip` (e.g. a store inside the workspace).
pub(crate) fn scan_workspace(root: &Path, skip: &[PathBuf]) -> Result<Scan, LoadError> {
    walk(root, skip).map(|(scan, _)| scan)
}

/// A listed directory and its metadata, taken when the walk reached it (`None`: too recent
/// to be trusted).
type DirSig = (String, Option<Sig>);

fn walk(root: &Path, skip: &[PathBuf]) -> Result<(Scan, Vec<DirSig>), LoadError> {
    let skip: Vec<PathBuf> = skip.to_vec();
    // A parallel walk: on a no-op build the scan is most of the analysis time.
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .ignore(true)
        .parents(false)
        .follow_links(false)
        .filter_entry(move |e| {
            e.file_name() != ".git" && !skip.iter().any(|s| e.path() == s.as_path())
        })
        .build_parallel();
    let found: Mutex<Vec<String>> = Mutex::default();
    let dirs: Mutex<Vec<DirSig>> = Mutex::default();
    let failure: Mutex<Option<ignore::Error>> = Mutex::default();
    let now = now_ns();
    walker.run(|| {
        let found = &found;
        let dirs = &dirs;
        let failure = &failure;
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return ignore::WalkState::Quit;
                }
            };
            let Some(kind) = entry.file_type() else {
                return ignore::WalkState::Continue;
            };
            let Ok(rel) = entry.path().strip_prefix(root) else {
                return ignore::WalkState::Continue;
            };
            // A name that is not UTF-8 cannot be an input (REAPI's paths are strings): kept,
            // marked, for glob() to refuse by name rather than to miss silently.
            let rel = match rel.to_str() {
                Some(text) => text.to_owned(),
                None => format!("{}{NOT_UTF8}", rel.to_string_lossy()),
            };
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(cairn_store::TEMP_PREFIX))
            {
                // An output being written (or left by a killed build): never an input.
                return ignore::WalkState::Continue;
            }
            if kind.is_file() || kind.is_symlink() {
                found.lock().unwrap_or_else(|p| p.into_inner()).push(rel);
            } else if kind.is_dir() {
                // The walker lists a directory's entries after this call returns, so an
                // entry added later changes an mtime newer than this one (or a racy one).
                let sig = Sig::of(entry.path(), now).ok().flatten();
                dirs.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((rel, sig));
            }
            ignore::WalkState::Continue
        })
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let mut files = found.into_inner().unwrap_or_else(|p| p.into_inner());
    files.sort();
    let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rel in &files {
        if rel == BUILD_FILE || rel.ends_with(&format!("/{BUILD_FILE}")) {
            let pkg = rel
                .strip_suffix(BUILD_FILE)
                .unwrap_or_default()
                .trim_end_matches('/');
            packages.insert(pkg.to_string(), Vec::new());
        }
    }
    for file in files {
        if let Some(pkg) = owning_package(&packages, &file) {
            let rel = if pkg.is_empty() {
                file.clone()
            } else {
                file[pkg.len() + 1..].to_string()
            };
            packages
                .get_mut(&pkg)
                .expect("owning package exists")
                .push(rel);
        }
    }
    // Plain string order (the walk sorts per directory, which differs for `a.txt` vs `a/b`),
    // so lookups can binary-search.
    for files in packages.values_mut() {
        files.sort();
    }
    let dirs = dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((Scan { packages }, dirs))
}

fn owning_package(packages: &BTreeMap<String, Vec<String>>, file: &str) -> Option<String> {
    let mut dir = file;
    loop {
        dir = match dir.rfind('/') {
            Some(i) => &dir[..i],
            None => "",
        };
        if packages.contains_key(dir) {
            return Some(dir.to_string());
        }
        if dir.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_belong_to_the_nearest_package_and_ignored_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (path, content) in [
            ("BUILD.star", ""),
            ("top.txt", "x"),
            ("a/BUILD.star", ""),
            ("a/src/x.ts", ""),
            ("a/b/BUILD.star", ""),
            ("a/b/y.ts", ""),
            ("a/dist/out.js", ""),
            ("a/.gitignore", "dist/\n"),
            (".git/config", ""),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let scan = scan_workspace(root, &[]).unwrap();
        assert_eq!(scan.packages[""], ["BUILD.star", "top.txt"]);
        assert_eq!(scan.packages["a"], [".gitignore", "BUILD.star", "src/x.ts"]);
        assert_eq!(scan.packages["a/b"], ["BUILD.star", "y.ts"]);
    }

    #[test]
    fn a_stored_scan_is_reused_until_a_directory_or_ignore_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        for (path, content) in [
            ("BUILD.star", ""),
            ("a/BUILD.star", ""),
            ("a/src/x.ts", ""),
            ("a/.gitignore", "dist/\n"),
        ] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let db = Store::open(&dir.path().join("store")).unwrap();
        let workspace = record_of(&root);
        let stored = || {
            db.get_record(&Record::Scan {
                workspace: &workspace,
            })
            .unwrap()
            .unwrap_or_default()
        };
        // Directories changed within the last second are not trusted: nothing is stored.
        let first = scan_cached(&root, &[], &db).unwrap();
        assert!(stored().is_empty());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            scan_cached(&root, &[], &db).unwrap().packages,
            first.packages
        );
        assert!(!stored().is_empty(), "a settled scan is stored");
        assert_eq!(
            scan_cached(&root, &[], &db).unwrap().packages,
            first.packages
        );

        // A new file changes its directory.
        std::fs::write(root.join("a/src/y.ts"), "").unwrap();
        let scan = scan_cached(&root, &[], &db).unwrap();
        assert_eq!(
            scan.packages["a"],
            [".gitignore", "BUILD.star", "src/x.ts", "src/y.ts"]
        );

        // An edited ignore file changes no directory, but is checked itself.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        scan_cached(&root, &[], &db).unwrap();
        assert!(!stored().is_empty());
        std::fs::write(root.join("a/.gitignore"), "dist/\n*.ts\n").unwrap();
        let scan = scan_cached(&root, &[], &db).unwrap();
        assert_eq!(scan.packages["a"], [".gitignore", "BUILD.star"]);
        assert_eq!(scan.packages, scan_workspace(&root, &[]).unwrap().packages);
    }
}

/// Property tests (issue 15): a stored scan may be damaged or foreign; whatever its bytes, a
/// scan is the stored one only while it is current, else a fresh walk, and never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    fn sig() -> impl Strategy<Value = Sig> {
        any::<(u64, i64, i64)>().prop_map(|(ino, mtime_ns, ctime_ns)| Sig {
            ino,
            mtime_ns,
            ctime_ns,
        })
    }

    fn rel() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_string()),
            Just("a/.gitignore".to_string()),
            "[a-c./]{0,8}",
            "\\PC{0,6}",
        ]
    }

    /// A record as cairn writes it, with any contents.
    fn record(fingerprint: String) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((rel(), sig()), 0..3),
            proptest::collection::vec((rel(), proptest::option::of(sig())), 0..3),
            proptest::collection::btree_map(
                rel(),
                proptest::collection::vec("\\PC{0,6}", 0..3),
                0..3,
            ),
        )
            .prop_map(move |(dirs, guards, packages)| {
                let record = ScanRecord {
                    deps: ScanDeps {
                        fingerprint: fingerprint.clone(),
                        dirs,
                        guards,
                    },
                    scan: Scan { packages },
                };
                postcard::to_stdvec(&record).unwrap()
            })
    }

    #[test]
    fn any_stored_scan_is_used_only_while_current() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        for path in ["BUILD.star", "a/BUILD.star", "a/x.ts", "a/.gitignore"] {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let store = Store::open(&dir.path().join("store")).unwrap();
        let walked = scan_workspace(&root, &[]).unwrap().packages;
        let workspace = record_of(&root);
        let key = Record::Scan {
            workspace: &workspace,
        };
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(any::<u8>(), 0..256).prop_map(|b| super::super::pack(&b)),
            record(fingerprint(&[])).prop_map(|b| super::super::pack(&b)),
            (record(fingerprint(&[])), any::<prop::sample::Index>())
                .prop_map(|(b, cut)| { super::super::pack(&b[..cut.index(b.len() + 1)]) }),
        ];
        TestRunner::default()
            .run(&bytes, |bytes| {
                store.put_record(&key, &bytes).unwrap();
                let current = stored_scan_is_current(&root, &[], &store);
                let scan = scan_cached(&root, &[], &store).unwrap();
                prop_assert!(current || scan.packages == walked);
                Ok(())
            })
            .unwrap();
    }
}
