//! The engine: loads the workspace, builds the graph, and walks it in parallel: for each
//! action, compute its key, look it up (`lookup`: the local store, then remotes), restore or
//! execute, and record results.

pub(crate) mod affected;
mod check;
pub(crate) mod dry_run;
mod encoding;
pub(crate) mod history;
pub(crate) mod lookup;
pub(crate) mod memo;
mod outputs;
mod pipeline;
mod recorder;
pub(crate) mod scheduler;
pub(crate) mod uptodate;

pub(crate) use dry_run::{DryInfo, DryRun};
pub(crate) use lookup::CacheChain;
pub(crate) use outputs::remove_stale_temps;
pub(crate) use recorder::Recorder;
pub(crate) use scheduler::{
    BuildContext, BuildOptions, BuildOutcome, Status, TargetReport, run_build,
};

use std::path::Path;
use std::sync::Arc;
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
    /// What `host_tools()` asked: tool name → whether it was found.
    pub probes: std::collections::BTreeMap<String, bool>,
}

/// Scans and loads the workspace (reusing the analysis cache stored in `store`) and checks
/// the graph. `load_states` reads the file-state cache; it runs on another thread while the
/// workspace is scanned and the analysis cache decoded (it is needed only after both).
pub(crate) fn analyze<E: Send>(
    root: &Path,
    skip: &[std::path::PathBuf],
    tool_path: &[std::path::PathBuf],
    store: &Store,
    load_states: impl FnOnce() -> Result<Arc<FileStates>, E> + Send,
) -> Result<Result<(Analysis, Arc<FileStates>), AnalysisError>, E> {
    let workspace = root.display().to_string();
    let cache_key = cairn_store::Record::Analysis {
        workspace: &workspace,
    };
    let (states, read) = std::thread::scope(|scope| {
        let states = scope.spawn(|| {
            let began = Instant::now();
            let states = load_states();
            span("load file states", began);
            states
        });
        let read = (|| {
            let began = Instant::now();
            let scan = scan_cached(root, skip, store)?;
            span("scan workspace", began);
            let began = Instant::now();
            let stored = store.get_record(&cache_key).ok().flatten();
            let cache = AnalysisCache::decode(stored.as_deref());
            span("decode analysis cache", began);
            Ok::<_, AnalysisError>((scan, cache))
        })();
        let states = states
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (states, read)
    });
    let states = states?;
    let result = read.and_then(|(scan, mut cache)| {
        let (analysis, encoded) = analyze_with(root, scan, &states, &mut cache, false, tool_path)?;
        if let Some(bytes) = encoded {
            let began = Instant::now();
            // Best effort: a cache that cannot be saved only costs an evaluation next time.
            let _ = store.put_record(&cache_key, &bytes);
            span("save analysis cache", began);
        }
        Ok(analysis)
    });
    Ok(result.map(|analysis| (analysis, states)))
}

/// Loads an already scanned workspace through an in-memory analysis cache (watch mode keeps
/// both between cycles) and checks the graph.
pub(crate) fn analyze_scanned(
    root: &Path,
    scan: Scan,
    states: &FileStates,
    cache: &mut AnalysisCache,
    tool_path: &[std::path::PathBuf],
) -> Result<Analysis, AnalysisError> {
    analyze_with(root, scan, states, cache, true, tool_path).map(|(analysis, _)| analysis)
}

/// `analyze_scanned`; without `keep_cache`, the cache is consumed, and returned encoded if
/// anything was evaluated (to be stored).
fn analyze_with(
    root: &Path,
    scan: Scan,
    states: &FileStates,
    cache: &mut AnalysisCache,
    keep_cache: bool,
    tool_path: &[std::path::PathBuf],
) -> Result<(Analysis, Option<Vec<u8>>), AnalysisError> {
    let began = Instant::now();
    let mut loaded = load_workspace(root, &scan, states, cache, keep_cache, tool_path)?;
    let encoded = loaded.encoded_cache.take();
    span("load packages", began);
    let began = Instant::now();
    let globbed = loaded.globbed;
    let is_globbed = |package: &str, path: &WorkspacePath| {
        globbed
            .get(package)
            .is_some_and(|paths| paths.binary_search(path).is_ok())
    };
    let graph = Graph::new(loaded.targets, &is_globbed)?;
    span("build graph", began);
    let began = Instant::now();
    check_sources(root, &scan, &graph)?;
    span("check sources", began);
    let analysis = Analysis {
        graph,
        packages: loaded.packages,
        evaluated: loaded.evaluated,
        loads: loaded.loads,
        probes: loaded.probes,
        scan,
    };
    Ok((analysis, encoded))
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
