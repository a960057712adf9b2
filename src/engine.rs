//! The engine: loads the workspace, builds the graph, and walks it in parallel: for each
//! action, compute its key, look it up in the store, restore or execute, and record results.

pub(crate) mod history;
pub(crate) mod scheduler;

pub(crate) use scheduler::{
    BuildContext, BuildOptions, BuildOutcome, DryInfo, DryRun, Status, TargetReport, run_build,
};

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use crate::report::trace::span;

use crate::graph::{Graph, GraphError};
use cairn_store::{FileStates, Store};

use crate::load::{AnalysisCache, LoadError, Scan, load_workspace, scan_cached};
use crate::workspace::WorkspacePath;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AnalysisError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{location}: Source file `{path}` of `{label}` {problem}")]
    BadSource {
        location: crate::graph::Location,
        label: crate::graph::Label,
        path: WorkspacePath,
        problem: &'static str,
    },
}

/// The checked graph and how it was obtained.
pub(crate) struct Analysis {
    pub graph: Graph,
    pub packages: usize,
    /// Packages whose BUILD.star was evaluated (the rest came from the analysis cache).
    pub evaluated: Vec<String>,
    /// Package → the `.star` files it loads.
    pub loads: std::collections::BTreeMap<String, Vec<String>>,
    /// The workspace scan: package → the files it owns (package-relative, sorted).
    pub scan: Scan,
}

/// Scans and loads the workspace (reusing the analysis cache stored in `store`) and checks
/// the graph.
pub(crate) fn analyze(
    root: &Path,
    skip: &[std::path::PathBuf],
    store: &Store,
    states: &FileStates,
) -> Result<Analysis, AnalysisError> {
    let began = Instant::now();
    let scan = scan_cached(root, skip, store.db())?;
    span("scan workspace", began);
    let began = Instant::now();
    let cache_key = format!("analysis:{}", root.display());
    let stored = store.db().get_value(&cache_key).ok().flatten();
    let mut cache = AnalysisCache::decode(stored.as_deref());
    span("decode analysis cache", began);
    let analysis = analyze_scanned(root, scan, states, &mut cache)?;
    if !analysis.evaluated.is_empty() || stored.is_none() {
        let began = Instant::now();
        // Best effort: a cache that cannot be saved only costs an evaluation next time.
        let _ = store.db().put_value(&cache_key, &cache.encode());
        span("save analysis cache", began);
    }
    Ok(analysis)
}

/// Loads an already scanned workspace through an in-memory analysis cache (watch mode keeps
/// both between cycles) and checks the graph.
pub(crate) fn analyze_scanned(
    root: &Path,
    scan: Scan,
    states: &FileStates,
    cache: &mut AnalysisCache,
) -> Result<Analysis, AnalysisError> {
    let began = Instant::now();
    let loaded = load_workspace(root, &scan, states, cache)?;
    span("load packages", began);
    let began = Instant::now();
    let globbed: HashSet<WorkspacePath> = loaded.globbed;
    let graph = Graph::new(loaded.targets, &globbed)?;
    span("build graph", began);
    let began = Instant::now();
    check_sources(root, &scan, &graph)?;
    span("check sources", began);
    Ok(Analysis {
        graph,
        packages: loaded.packages,
        evaluated: loaded.evaluated,
        loads: loaded.loads,
        scan,
    })
}

/// Every explicit source must be a file. Most are in the scan (a hash lookup); the rest
/// (ignored files named explicitly) are checked with a `stat`.
fn check_sources(root: &Path, scan: &Scan, graph: &Graph) -> Result<(), AnalysisError> {
    for target in graph.all_targets() {
        let files = scan.packages.get(&target.label.package);
        let package = &target.label.package;
        for src in &target.srcs {
            // The package-relative path, without allocating (sources are rarely elsewhere).
            let rel = if package.is_empty() {
                Some(src.as_str())
            } else {
                src.as_str()
                    .strip_prefix(package.as_str())
                    .and_then(|r| r.strip_prefix('/'))
            };
            if let (Some(rel), Some(files)) = (rel, files)
                && files.binary_search_by(|f| f.as_str().cmp(rel)).is_ok()
            {
                continue;
            }
            let host = src.to_host(root);
            let problem = if host.is_file() {
                continue;
            } else if host.is_dir() {
                "is a directory; name its files, e.g. with glob([\"dir/**\"])"
            } else {
                "does not exist"
            };
            return Err(AnalysisError::BadSource {
                location: target.location.clone(),
                label: target.label.clone(),
                path: src.clone(),
                problem,
            });
        }
    }
    Ok(())
}
