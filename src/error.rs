//! The top-level error and its exit code: bad usage, configuration or BUILD files exit 2;
//! build or test failures and environment failures exit 1.

use cairn_store::StoreError;

use crate::engine::AnalysisError;
use crate::graph::LabelError;
use crate::workspace::WorkspaceError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Analysis(Box<AnalysisError>),
    #[error(transparent)]
    Label(#[from] LabelError),
    #[error("Cannot use the store at `{path}`: {source}")]
    Store {
        path: std::path::PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Io(String),
    /// Bad command-line usage the parser could not catch (exit 2).
    #[error("{0}")]
    Usage(String),
}

impl From<AnalysisError> for Error {
    fn from(e: AnalysisError) -> Error {
        Error::Analysis(Box::new(e))
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Workspace(_) | Error::Analysis(_) | Error::Label(_) | Error::Usage(_) => 2,
            Error::Store { .. } | Error::Io(_) => 1,
        }
    }
}
