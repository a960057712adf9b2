//! A result's outputs by workspace path, and restoring them into the workspace (by copy or
//! reflink from the store, never by hard link; see `cairn_store::restore_file`).

use std::collections::BTreeMap;
use std::path::Path;

use cairn_store::{
    Digest, FileInfo, FileStates, Store, StoreError, read_tree, reapi, restore_contents,
    restore_file,
};

use crate::workspace::WorkspacePath;

/// Files by workspace path.
pub(crate) type FileMap = BTreeMap<WorkspacePath, FileInfo>;

/// Symlinks by workspace path, each to its (relative) target.
pub(crate) type LinkMap = BTreeMap<WorkspacePath, String>;

/// What a target makes available to its dependents: files, and the symlinks its output
/// directories hold (a `node_modules/.bin/esbuild`, an npm workspace link), which dependents'
/// sandboxes get as symlinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Provides {
    pub files: FileMap,
    pub links: LinkMap,
}

impl Provides {
    /// Adds what `other` provides.
    pub fn extend(&mut self, other: &Provides) {
        self.files
            .extend(other.files.iter().map(|(k, v)| (k.clone(), *v)));
        self.links
            .extend(other.links.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// The files and symlinks of a result by workspace path (`working_dir` is the action's
/// package); with `restore`, also written into the workspace at `root`.
pub(crate) fn outputs_of(
    store: &Store,
    states: &FileStates,
    root: &Path,
    key: &Digest,
    working_dir: &str,
    result: &reapi::ActionResult,
    restore: bool,
) -> Result<Provides, StoreError> {
    let cas = store.cas();
    let bad = |what: &str| StoreError::BadResult {
        key: *key,
        why: format!("it has an invalid {what}"),
    };
    let mut provided = Provides::default();
    for file in &result.output_files {
        let path =
            WorkspacePath::in_package(working_dir, &file.path).map_err(|_| bad("output path"))?;
        let digest = file
            .digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(|| bad("digest"))?;
        let info = FileInfo {
            digest,
            executable: file.is_executable,
        };
        if restore {
            restore_file(cas, states, &info, &path.to_host(root))?;
        }
        provided.files.insert(path, info);
    }
    for dir in &result.output_directories {
        let path =
            WorkspacePath::in_package(working_dir, &dir.path).map_err(|_| bad("output path"))?;
        let digest = dir
            .tree_digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(|| bad("digest"))?;
        let contents = read_tree(cas, &digest)?;
        let entry = |rel: &str| {
            WorkspacePath::in_package(path.as_str(), rel).map_err(|_| bad("tree entry"))
        };
        for (rel, info) in &contents.files {
            provided.files.insert(entry(rel)?, *info);
        }
        let in_tree = |p: &str| {
            p.strip_prefix(path.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rel| contents.symlinks.contains_key(rel))
        };
        for (rel, target) in &contents.symlinks {
            let link = entry(rel)?;
            // A result from elsewhere (a remote, an archive) must not plant a way out of the
            // workspace; one made here never holds one (the executor refuses it).
            if !link.link_stays_inside_among(target, &in_tree) {
                return Err(StoreError::BadResult {
                    key: *key,
                    why: format!("its symlink `{link}` (-> {target}) points outside the workspace"),
                });
            }
            provided.links.insert(link, target.clone());
        }
        if restore {
            restore_contents(cas, states, &contents, &path.to_host(root))?;
        }
    }
    Ok(provided)
}

impl super::BuildContext<'_> {
    /// `outputs_of` for this build's store, file states and workspace.
    pub(super) fn outputs_of(
        &self,
        key: &Digest,
        working_dir: &str,
        result: &reapi::ActionResult,
        restore: bool,
    ) -> Result<Provides, StoreError> {
        outputs_of(
            self.cache.store(),
            self.states,
            self.workspace_root,
            key,
            working_dir,
            result,
            restore,
        )
    }
}

/// Removes the temp files a killed build left beside the outputs of `targets` (in their
/// directories, and anywhere inside their output directories); returns how many. Only with
/// the workspace's lock held, so no other cairn process is writing them now.
pub(crate) fn remove_stale_temps<'a>(
    root: &Path,
    targets: impl Iterator<Item = &'a crate::graph::Target>,
) -> usize {
    let mut dirs = std::collections::BTreeSet::new();
    let mut trees = std::collections::BTreeSet::new();
    for target in targets {
        for out in &target.outs {
            if let Some(parent) = out.to_host(root).parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
        for dir in &target.out_dirs {
            let host = dir.to_host(root);
            if let Some(parent) = host.parent() {
                dirs.insert(parent.to_path_buf());
            }
            trees.insert(host);
        }
    }
    let is_temp = |name: &std::ffi::OsStr| {
        name.to_str()
            .is_some_and(|n| n.starts_with(cairn_store::TEMP_PREFIX))
    };
    let mut removed = 0;
    for dir in &dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if is_temp(&entry.file_name()) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    for tree in &trees {
        for entry in walkdir::WalkDir::new(tree).into_iter().flatten() {
            if entry.file_type().is_file()
                && is_temp(entry.file_name())
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// The recorded run time of a result: what restoring it saves.
pub(crate) fn saved_ms_of(result: &reapi::ActionResult) -> u64 {
    result
        .execution_metadata
        .as_ref()
        .and_then(|m| m.virtual_execution_duration.as_ref())
        .map_or(0, |d| d.seconds as u64 * 1000 + d.nanos as u64 / 1_000_000)
}
