//! The remote executor: actions run on a REAPI server (`Execution.Execute`) after it has been
//! sent what it lacks of their input root, Command and Action; the result's blobs are
//! downloaded and verified into the local store, so what follows (outputs restored, early
//! cutoff, `why`) is the same as for an action run here. What cannot go remote runs on the
//! executor below (the local one): actions tagged `local`, fixed-output actions (they fetch
//! from the network, which a worker may not reach), and, unless `strict`, every action once
//! the server is down (one warning) or an action it rejects (one warning each).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_store::{Executed, RemoteError, RemoteExecution, Store, reapi};

use super::local::{STDERR_TAIL_LINES, TEST_TAIL_LINES, format_ms, tail_of, write_log};
use super::slots::Slots;
use super::{ExecError, ExecFailure, ExecOutcome, Executor};
use crate::action::{ActionKind, PreparedAction};
use crate::engine::CacheChain;
use crate::graph::Label;

pub(crate) struct RemoteExecutor<'a> {
    /// Runs what does not go remote.
    pub below: &'a dyn Executor,
    pub server: Arc<dyn RemoteExecution>,
    /// The chain whose first remote is `server`'s CAS: inputs go up and results come down
    /// through it (verified, counted, its circuit breaker shared).
    pub cache: &'a CacheChain<'a>,
    pub store: &'a Store,
    /// Fail what the remote cannot run, instead of running it here.
    pub strict: bool,
    /// `--remote-jobs`: how many actions run remotely at once.
    pub slots: Slots,
    pub cancel: Option<&'a AtomicBool>,
    pub warn: &'a (dyn Fn(&str) + Sync),
    /// Set once the server failed: everything runs below for the rest of the build.
    pub down: AtomicBool,
    /// Set when a target failed without `--keep-going`: the build fails whatever the
    /// operations still running would give, so they are cancelled on the server.
    pub abandoned: AtomicBool,
}

/// Why an action did not run remotely.
enum NotRemote {
    /// The server is not working (unreachable, failing calls).
    Down(String),
    /// The server refused this action (unsupported platform, invalid argument).
    Rejected(String),
}

/// gRPC status codes (google.rpc.Code) read from an ExecuteResponse.
const OK: i32 = 0;
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;
const FAILED_PRECONDITION: i32 = 9;
const UNAVAILABLE: i32 = 14;
/// FAILED_PRECONDITION naming missing blobs (the server lacks them after all, e.g. evicted
/// meanwhile): upload and try again this many times. Other failed preconditions (a platform
/// no worker offers) are a refusal.
const PRECONDITION_ATTEMPTS: u32 = 3;

impl RemoteExecutor<'_> {
    fn goes_remote(&self, action: &PreparedAction) -> bool {
        !action.local_only
            && !matches!(action.kind, ActionKind::FixedOutput(_))
            && !self.down.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
            || self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    fn run(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, NotRemote> {
        let down = |e: RemoteError| NotRemote::Down(e.to_string());
        let mut attempt = 1;
        let response = loop {
            let digest = self.cache.upload_action(action).map_err(down)?;
            let executed = self
                .server
                .execute(&digest, &|| self.cancelled())
                .map_err(down)?;
            let response = match executed {
                Executed::Cancelled => return Ok(ExecOutcome::Cancelled),
                Executed::Done(response) => *response,
            };
            let status = response.status.clone().unwrap_or_default();
            match status.code {
                OK | DEADLINE_EXCEEDED => break response,
                FAILED_PRECONDITION
                    if attempt < PRECONDITION_ATTEMPTS
                        && cairn_store::names_missing_blobs(&status) =>
                {
                    attempt += 1
                }
                CANCELLED if self.cancelled() => return Ok(ExecOutcome::Cancelled),
                UNAVAILABLE => return Err(NotRemote::Down(status_text(&status))),
                _ => return Err(NotRemote::Rejected(status_text(&status))),
            }
        };
        let timed_out = response.status.as_ref().map(|s| s.code) == Some(DEADLINE_EXCEEDED);
        let Some(result) = response.result else {
            if timed_out {
                return Ok(ExecOutcome::TimedOut(self.failure(
                    label,
                    action,
                    None,
                    &[],
                    &[],
                    self.timed_out(action),
                )));
            }
            return Err(NotRemote::Rejected(
                "the server answered without a result".to_string(),
            ));
        };
        let local = match self.cache.receive_executed(&result) {
            Ok(local) => local,
            // The local store failed: the outputs cannot be kept here either.
            Err(RemoteError::Store(e)) => {
                return Err(NotRemote::Down(format!(
                    "its outputs cannot be stored here: {e}"
                )));
            }
            Err(e) => return Err(down(e)),
        };
        let read = |d: &Option<reapi::Digest>| {
            d.as_ref()
                .and_then(cairn_store::Digest::from_reapi)
                .and_then(|d| self.store.cas().get_bytes(&d).ok())
                .unwrap_or_default()
        };
        let (stdout, stderr) = (read(&local.stdout_digest), read(&local.stderr_digest));
        let exit_code = Some(local.exit_code);
        if timed_out {
            let message = self.timed_out(action);
            let failure = self.failure(label, action, exit_code, &stdout, &stderr, message);
            return Ok(ExecOutcome::TimedOut(failure));
        }
        let problem = if local.exit_code != 0 {
            Some(format!(
                "exited with code {} on the remote executor",
                local.exit_code
            ))
        } else {
            missing_outputs(action, &local)
        };
        if let Some(message) = problem {
            let failure = self.failure(label, action, exit_code, &stdout, &stderr, message);
            return Ok(ExecOutcome::Failed(failure));
        }
        // Every test keeps its log, passing or not.
        if action.kind == ActionKind::Test {
            let log = combined(&stdout, &stderr);
            write_log(self.store, label, &action.key, &log, &[], true);
        }
        Ok(ExecOutcome::Success {
            result: local,
            remotely: true,
        })
    }

    fn timed_out(&self, action: &PreparedAction) -> String {
        format!(
            "timed out after {} on the remote executor",
            format_ms(action.timeout_ms)
        )
    }

    fn failure(
        &self,
        label: &Label,
        action: &PreparedAction,
        exit_code: Option<i32>,
        stdout: &[u8],
        stderr: &[u8],
        message: String,
    ) -> ExecFailure {
        let test = action.kind == ActionKind::Test;
        let (log, tail) = if test {
            let log = combined(stdout, stderr);
            let tail = tail_of(&log, TEST_TAIL_LINES);
            (
                write_log(self.store, label, &action.key, &log, &[], true),
                tail,
            )
        } else {
            (
                write_log(self.store, label, &action.key, stdout, stderr, false),
                tail_of(stderr, STDERR_TAIL_LINES),
            )
        };
        ExecFailure {
            exit_code,
            message,
            stderr_tail: tail,
            tail_is_output: test,
            log,
            // A remote failure's reports stay in its result on the server (not fetched).
            reports: None,
        }
    }
}

impl Executor for RemoteExecutor<'_> {
    fn execute(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        if !self.goes_remote(action) {
            return self.below.execute(label, action);
        }
        let not_remote = {
            let Some(_slot) = self.slots.acquire(self.cancel) else {
                // Closed: the build is failing or cancelled.
                return Ok(ExecOutcome::Cancelled);
            };
            match self.run(label, action) {
                Ok(outcome) => return Ok(outcome),
                Err(why) => why,
            }
        };
        let (why, all) = match not_remote {
            NotRemote::Down(why) => (why, true),
            NotRemote::Rejected(why) => (why, false),
        };
        if self.strict {
            return Ok(ExecOutcome::Failed(ExecFailure {
                exit_code: None,
                message: format!("could not run on the remote executor: {why}"),
                stderr_tail: String::new(),
                tail_is_output: false,
                log: None,
                reports: None,
            }));
        }
        if all {
            // One warning for the server, whichever of its cache and executor failed first.
            if !self.down.swap(true, Ordering::SeqCst) && self.cache.executor_failed() {
                (self.warn)(&format!(
                    "remote execution failed ({why}); running actions here, without the remote cache, for the rest of this build"
                ));
            }
        } else {
            (self.warn)(&format!(
                "the remote executor refused `{label}` ({why}); running it here"
            ));
        }
        self.below.execute(label, action)
    }

    fn stop_starting(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.slots.close();
        self.below.stop_starting();
    }
}

/// A test's one log from a remote run, whose stdout and stderr come apart: stdout, then stderr.
fn combined(stdout: &[u8], stderr: &[u8]) -> Vec<u8> {
    let mut log = stdout.to_vec();
    if !stderr.is_empty() {
        if !log.is_empty() && !log.ends_with(b"\n") {
            log.push(b'\n');
        }
        log.extend_from_slice(stderr);
    }
    log
}

/// The declared outputs a remote result lacks, said as a local run says them.
fn missing_outputs(action: &PreparedAction, result: &reapi::ActionResult) -> Option<String> {
    let mut problems = Vec::new();
    for out in &action.outs {
        let rel = out.relative_to(&action.working_dir);
        if !result.output_files.iter().any(|f| f.path == rel) {
            problems.push(format!("did not create declared output `{out}`"));
        }
    }
    for dir in &action.out_dirs {
        let rel = dir.relative_to(&action.working_dir);
        if !result.output_directories.iter().any(|d| d.path == rel) {
            problems.push(format!(
                "declared output directory `{dir}` is not a directory"
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn status_text(status: &bazel_remote_apis::google::rpc::Status) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let code = usize::try_from(status.code)
        .ok()
        .and_then(|c| NAMES.get(c))
        .map_or_else(|| format!("status {}", status.code), |n| n.to_string());
    if status.message.is_empty() {
        code
    } else {
        format!("{code}: {}", status.message)
    }
}
