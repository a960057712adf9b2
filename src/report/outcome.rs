//! What a build reports, target by target and in total: the vocabulary the engine hands to
//! the reporters (console, `--json`, JUnit, the up-to-date record). Plain data; nothing here
//! calls into the engine.

use std::collections::BTreeMap;
use std::time::Instant;

use cairn_store::Digest;

use crate::exec::ExecFailure;
use crate::graph::{Kind, Label, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Run here.
    Executed,
    /// Run by a remote executor.
    RemoteExecuted,
    /// Found in the local store (or up to date in the workspace).
    Cached,
    /// Found in a remote cache (and now in the local store too).
    RemoteCached,
    Failed,
    /// Not run because a dependency failed (or the build was cancelled).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::RemoteExecuted => "remote_executed",
            Status::Cached => "cached",
            Status::RemoteCached => "remote_cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }

    /// Whether the result came from a cache (local or remote).
    pub fn is_cached(self) -> bool {
        matches!(self, Status::Cached | Status::RemoteCached)
    }

    /// Whether the action ran in this build (here or remotely).
    pub fn is_executed(self) -> bool {
        matches!(self, Status::Executed | Status::RemoteExecuted)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TargetReport {
    pub label: Label,
    pub kind: Kind,
    pub status: Status,
    pub action_key: Option<Digest>,
    pub duration_ms: u64,
    /// How many times the command ran (more than 1 for a retried flaky test).
    pub attempts: u32,
    pub cmd: String,
    pub failure: Option<ExecFailure>,
    /// For a skipped target: the failed dependency that caused it.
    pub blocked_by: Option<Label>,
    /// The recorded run time of a cached result (what the cache saved).
    pub saved_ms: u64,
    /// The digest under which the (first) remote holds the action, when one is configured
    /// and `--json` asked for it.
    pub remote_action_digest: Option<cairn_store::RemoteDigest>,
    /// A cached action `build --check` ran again (and found reproducible).
    pub checked: bool,
}

impl TargetReport {
    /// A report of `target` ending with `status` now, with nothing else to say.
    pub fn new(target: &Target, status: Status, key: Option<Digest>, started: Instant) -> Self {
        TargetReport {
            label: target.label.clone(),
            kind: target.kind,
            status,
            action_key: key,
            duration_ms: started.elapsed().as_millis() as u64,
            attempts: 0,
            cmd: target.cmd.clone(),
            failure: None,
            blocked_by: None,
            saved_ms: 0,
            remote_action_digest: None,
            checked: false,
        }
    }
}

pub(crate) struct BuildOutcome {
    /// One report per action or test, in completion order.
    pub reports: Vec<TargetReport>,
    pub wall_ms: u64,
    /// Every tool name the build resolved, with what it resolved to (set by the caller that
    /// owns the resolver).
    pub tools: BTreeMap<String, Option<crate::action::Tool>>,
    /// What moved to and from remotes (set by the caller that owns the cache chain).
    pub traffic: Traffic,
}

impl BuildOutcome {
    pub fn count(&self, status: Status) -> usize {
        self.reports.iter().filter(|r| r.status == status).count()
    }

    /// Targets whose result came from a cache, local or remote.
    pub fn cached(&self) -> usize {
        self.count(Status::Cached) + self.count(Status::RemoteCached)
    }

    /// Targets that ran in this build, here or remotely.
    pub fn executed(&self) -> usize {
        self.count(Status::Executed) + self.count(Status::RemoteExecuted)
    }

    pub fn is_success(&self) -> bool {
        self.count(Status::Failed) == 0 && self.count(Status::Skipped) == 0
    }
}

/// Bytes moved and results found, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Traffic {
    /// Whether the build had a remote (the summary then says what moved).
    pub has_remote: bool,
    pub bytes_downloaded: u64,
    pub bytes_uploaded: u64,
    /// Remote results the trust policy refused.
    pub untrusted: u64,
    /// Uploads still queued when `finish` gave up waiting.
    pub uploads_dropped: u64,
}
