//! One walk of the workspace: which directories are packages (hold a `BUILD.star`) and which
//! files each package owns (those below it and not in a subpackage). Honours `.gitignore` and
//! `.ignore` files (with or without a git repository) and never enters `.git` or the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BUILD_FILE, LoadError};

#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    /// Package path (`""` for the root) → files it owns, package-relative, sorted.
    pub packages: BTreeMap<String, Vec<String>>,
}

/// Walks the workspace at `root`, skipping `skip` (e.g. a store inside the workspace).
pub(crate) fn scan_workspace(root: &Path, skip: &[PathBuf]) -> Result<Scan, LoadError> {
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
    let failure: Mutex<Option<ignore::Error>> = Mutex::default();
    walker.run(|| {
        let found = &found;
        let failure = &failure;
        Box::new(move |entry| {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return ignore::WalkState::Quit;
                }
            };
            if entry
                .file_type()
                .is_some_and(|t| t.is_file() || t.is_symlink())
                && let Ok(rel) = entry.path().strip_prefix(root)
            {
                let rel = rel.to_string_lossy().into_owned();
                found.lock().unwrap_or_else(|p| p.into_inner()).push(rel);
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
    Ok(Scan { packages })
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
}
