//! The engine: loads the workspace, builds the graph, and walks it in parallel: for each
//! action, compute its key, look it up in the store, restore or execute, and record results.

pub(crate) mod scheduler;

pub(crate) use scheduler::{BuildOptions, BuildOutcome, Status, TargetReport, run_build};

use std::collections::HashSet;
use std::path::Path;

use crate::graph::{Graph, GraphError};
use crate::load::{LoadError, load_workspace, scan_workspace};
use crate::workspace::WorkspacePath;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AnalysisError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{location}: Source file `{path}` of `{label}` does not exist")]
    MissingSource {
        location: crate::graph::Location,
        label: crate::graph::Label,
        path: WorkspacePath,
    },
}

/// Scans and loads the workspace and checks the graph.
pub(crate) fn analyze(root: &Path, skip: &[std::path::PathBuf]) -> Result<Graph, AnalysisError> {
    let scan = scan_workspace(root, skip)?;
    let loaded = load_workspace(root, &scan)?;
    let globbed: HashSet<WorkspacePath> = loaded.globbed;
    let graph = Graph::new(loaded.targets, &globbed)?;
    if let Some((label, path, location)) = loaded.missing_srcs.into_iter().next() {
        return Err(AnalysisError::MissingSource {
            location,
            label,
            path,
        });
    }
    Ok(graph)
}
