//! Running actions. `Executor` is the vocabulary; `local` runs an action in a fresh sandbox
//! directory holding only its input root, with a cleared environment, and captures its
//! declared outputs into the store; `dry` runs nothing (the dry run of `why`).

pub(crate) mod base;
pub(crate) mod dry;
pub(crate) mod local;
pub(crate) mod orphans;
pub(crate) mod remote;
pub(crate) mod sandbox;
pub(crate) mod slots;

use std::path::PathBuf;

use cairn_store::{StoreError, reapi};

use crate::action::PreparedAction;
use crate::graph::Label;

/// How running an action ended.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per run, moved once: a box would buy nothing.
pub(crate) enum ExecOutcome {
    /// The command exited 0 and its outputs are as declared: the result to cache, its blobs
    /// in the local store.
    Success {
        result: reapi::ActionResult,
        /// Whether a remote executor ran it (status `remote_executed`).
        remotely: bool,
    },
    /// The command ran and failed (a non-zero exit, a signal, outputs not as declared).
    Failed(ExecFailure),
    /// The command was killed at its timeout.
    TimedOut(ExecFailure),
    /// The build was cancelled while it ran (Ctrl-C, a newer edit): nothing is recorded.
    Cancelled,
    /// The executor does not run actions (the dry run of `why`): its outputs are unknown.
    NotRun,
}

#[derive(Debug, Clone)]
pub(crate) struct ExecFailure {
    pub exit_code: Option<i32>,
    pub message: String,
    /// The last lines of stderr, or of a test's combined log (`tail_is_output`).
    pub stderr_tail: String,
    pub tail_is_output: bool,
    pub log: Option<PathBuf>,
    /// A failing test's reports directory (`reports = True`), kept under the store's logs.
    pub reports: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error("Cannot prepare the sandbox of `{label}`: {source}")]
    Sandbox {
        label: Label,
        #[source]
        source: StoreError,
    },
    #[error("Cannot start the command of `{label}`: {source}")]
    Spawn {
        label: Label,
        #[source]
        source: std::io::Error,
    },
    /// Linux refuses to start a program with one argument or environment string over
    /// `MAX_ARG_STRLEN` (128 KiB): said before trying, naming the culprit.
    #[error("Cannot start `{label}`: {what} is {size} bytes, over Linux's limit of {limit}")]
    TooLarge {
        label: Label,
        what: String,
        size: usize,
        /// The limit passed, and what it applies to.
        limit: String,
    },
    #[error("Cannot store the outputs of `{label}`: {source}")]
    Capture {
        label: Label,
        #[source]
        source: StoreError,
    },
}

/// `ExecutedActionMetadata.worker` of a result produced with `--sandbox none`: such a result
/// never serves a sandboxed build and is never uploaded.
pub(crate) const UNSANDBOXED_WORKER: &str = "cairn-local (sandbox: none)";

/// Whether `result` was produced without a sandbox.
pub(crate) fn is_unsandboxed(result: &reapi::ActionResult) -> bool {
    result
        .execution_metadata
        .as_ref()
        .is_some_and(|m| m.worker == UNSANDBOXED_WORKER)
}

/// Runs prepared actions. An `Err` means the action could not be run at all (no sandbox, no
/// shell); everything that happened once it ran is an `ExecOutcome`.
pub(crate) trait Executor: Sync {
    fn execute(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, ExecError>;

    /// A target failed without `--keep-going`: actions not yet started are not started
    /// (they end `Cancelled`); running ones finish.
    fn stop_starting(&self) {}
}
