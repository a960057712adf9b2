//! Running actions. `Executor` is the vocabulary; `local` runs an action in a fresh sandbox
//! directory holding only its input root, with a cleared environment, and captures its
//! declared outputs into the store.

pub(crate) mod base;
pub(crate) mod local;
pub(crate) mod sandbox;

use std::path::PathBuf;

use cairn_store::{StoreError, reapi};

use crate::action::PreparedAction;
use crate::graph::Label;

/// What running an action produced.
#[derive(Debug)]
pub(crate) struct ExecOutcome {
    /// The result to cache: present when the command exited 0 and its outputs are as declared.
    pub result: Option<reapi::ActionResult>,
    /// Why the action failed, when it did.
    pub failure: Option<ExecFailure>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExecFailure {
    pub exit_code: Option<i32>,
    pub message: String,
    pub stderr_tail: String,
    pub log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error("Cannot prepare the sandbox of `{label}`: {source}")]
    Sandbox {
        label: Label,
        #[source]
        source: StoreError,
    },
    #[error("Cannot start `/bin/sh` for `{label}`: {source}")]
    Spawn {
        label: Label,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot store the outputs of `{label}`: {source}")]
    Capture {
        label: Label,
        #[source]
        source: StoreError,
    },
}

/// Runs prepared actions.
pub(crate) trait Executor: Sync {
    fn execute(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, ExecError>;
}
