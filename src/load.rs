//! Loading: scans the workspace for packages and files, evaluates `BUILD.star` files (and the
//! `.star` files they `load()`) with the `starlark` crate into targets, and turns Starlark
//! errors into diagnostics that name file, line and column. Never runs a build command.

pub(crate) mod builtins;
pub(crate) mod cache;
pub(crate) mod diagnostic;
pub(crate) mod eval;
pub(crate) mod prelude;
pub(crate) mod scan;

pub(crate) use cache::AnalysisCache;
pub(crate) use diagnostic::Diagnostic;
pub(crate) use eval::load_workspace;
pub(crate) use scan::{Scan, scan_cached, scan_workspace};

use std::path::PathBuf;

/// The file name that makes a directory a package.
pub(crate) const BUILD_FILE: &str = "BUILD.star";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{0}")]
    Diagnostic(Box<Diagnostic>),
    #[error("Cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot scan the workspace: {0}")]
    Scan(#[from] ignore::Error),
}
