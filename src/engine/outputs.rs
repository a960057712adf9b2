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

/// The files of a result by workspace path (`working_dir` is the action's package); with
/// `restore`, also written into the workspace at `root`.
pub(crate) fn outputs_of(
    store: &Store,
    states: &FileStates,
    root: &Path,
    key: &Digest,
    working_dir: &str,
    result: &reapi::ActionResult,
    restore: bool,
) -> Result<FileMap, StoreError> {
    let cas = store.cas();
    let bad = |what: &str| StoreError::BadTree {
        digest: *key,
        why: format!("action result has an invalid {what}"),
    };
    let mut provided = BTreeMap::new();
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
        provided.insert(path, info);
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
        if restore {
            restore_contents(cas, states, &contents, &path.to_host(root))?;
        }
        for (rel, info) in contents.files {
            provided.insert(
                WorkspacePath::in_package(path.as_str(), &rel).map_err(|_| bad("tree entry"))?,
                info,
            );
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
    ) -> Result<FileMap, StoreError> {
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

/// The recorded run time of a result: what restoring it saves.
pub(crate) fn saved_ms_of(result: &reapi::ActionResult) -> u64 {
    result
        .execution_metadata
        .as_ref()
        .and_then(|m| m.virtual_execution_duration.as_ref())
        .map_or(0, |d| d.seconds as u64 * 1000 + d.nanos as u64 / 1_000_000)
}
