//! One walk of the workspace: which directories are packages (hold a `BUILD.star`) and which
//! files each package owns (those below it and not in a subpackage). Honours `.gitignore` and
//! `.ignore` files (with or without a git repository) and never enters `.git` or the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{BUILD_FILE, LoadError};

#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    /// Package path (`""` for the root) → files it owns, package-relative, sorted.
    pub packages: BTreeMap<String, Vec<String>>,
}

/// Walks the workspace at `root`, skipping `skip` (e.g. a store inside the workspace).
pub(crate) fn scan_workspace(root: &Path, skip: &[PathBuf]) -> Result<Scan, LoadError> {
    let skip: Vec<PathBuf> = skip.to_vec();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .ignore(true)
        .parents(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            e.file_name() != ".git" && !skip.iter().any(|s| e.path() == s.as_path())
        })
        .build();
    let mut files: Vec<String> = Vec::new();
    let mut packages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in walker {
        let entry = entry?;
        if !entry
            .file_type()
            .is_some_and(|t| t.is_file() || t.is_symlink())
        {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if entry.file_name() == BUILD_FILE {
            let pkg = rel
                .strip_suffix(BUILD_FILE)
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            packages.insert(pkg, Vec::new());
        }
        files.push(rel);
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
