//! One target's way through a build: its inputs are hashed and its tools resolved, then
//! prepare → lookup → execute → record. The key memo may answer before the action is built
//! (the target is up to date in the workspace, or its remembered key is a local hit); the
//! cache chain (`lookup`) decides every other hit; the executor runs misses. Flaky retries and
//! `--check` are one small policy each (`execute_with_retries`, `check::check_reproducible`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cairn_store::{Digest, FileInfo, StoreError};

use super::check::check_reproducible;
use super::lookup::{Found, Source};
use super::memo::{Fingerprint, KeyMemo, Outcome};
use super::outputs::{FileMap, Provides, saved_ms_of};
use super::scheduler::{BuildContext, Done, Job, Provided, Status, TargetReport};
use crate::action::tools::{first_word, script_word, shebang_tool};
use crate::action::{DepInputs, PreparedAction, Tool, prepare_action};
use crate::exec::{ExecError, ExecFailure, ExecOutcome, is_unsandboxed};
use crate::graph::{Kind, Label, Target};
use crate::workspace::WorkspacePath;

/// Why a target failed without a command's failure to show.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("cannot read source file `{path}`: {source}")]
    Source {
        path: WorkspacePath,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "source file `{path}` is a symlink to `{target}`, outside the workspace: inputs must be in the workspace, where every checkout has them and `watch` sees them (copy the file in, or fetch it with a `fixed_output`)"
    )]
    SourceOutside { path: WorkspacePath, target: String },
    #[error(
        "tool `{name}` was not found on the tool path `{tool_path}` (set `tool_path` in cairn.toml to add directories)"
    )]
    MissingTool { name: String, tool_path: String },
    #[error("cannot store or restore its outputs: {0}")]
    Outputs(#[source] StoreError),
    #[error("cannot put its inputs in place: {0}")]
    Inputs(#[source] StoreError),
    /// A dependency whose outputs the remote lost ran here and did not give them back.
    #[error(
        "its input from `{producer}` is gone from the remote cache, and running `{producer}` here {why}"
    )]
    Rerun { producer: Label, why: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Runs one target: the scheduler's unit of work.
pub(super) fn run_target(ctx: &BuildContext, job: Job) -> Done {
    let target = ctx.graph.get(&job.label).expect("scheduled labels exist");
    let started = Instant::now();
    let mut dep_files = Provides::default();
    for d in &job.deps {
        dep_files.extend(d);
    }
    let hashing = Instant::now();
    let srcs = hash_sources(ctx, target);
    trace(ctx, "hash sources", &target.label, hashing);
    let srcs = match srcs {
        Ok(srcs) => srcs,
        Err(e) => return failed(ctx, target, None, started, &e),
    };
    if !target.kind.runs() {
        let mut all = dep_files;
        all.files.extend(source_map(target, &srcs));
        return Done {
            label: job.label,
            report: None,
            provided: Arc::new(all),
            ok: true,
        };
    }
    let preparing = Instant::now();
    let tools = match resolve_tools(ctx, target) {
        Ok(tools) => tools,
        Err(e) => return failed(ctx, target, None, started, &e),
    };
    let step = Step {
        ctx,
        target,
        started,
        preparing,
        srcs,
        dep_files,
        tools,
        top_level: job.top_level,
    };
    step.run()
}

/// The first line of the file at `path` (at most 256 bytes of it), if it can be read.
fn first_line(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    Some(text.lines().next().unwrap_or_default().to_string())
}

/// A target whose inputs are known.
struct Step<'a> {
    ctx: &'a BuildContext<'a>,
    target: &'a Target,
    started: Instant,
    preparing: Instant,
    /// The digests of `target.srcs`, in that order.
    srcs: Vec<FileInfo>,
    /// What the dependencies provide.
    dep_files: Provides,
    tools: Vec<Tool>,
    /// Named by the command (`--remote-download toplevel` downloads its outputs).
    top_level: bool,
}

/// Where a target's outcome is memoised (when the key memo is in use).
type Remember<'a> = Option<(&'a KeyMemo, Fingerprint)>;

impl Step<'_> {
    fn run(&self) -> Done {
        let ctx = self.ctx;
        let target = self.target;
        // The key memo spares building the action when its ingredients are unchanged; `--check`
        // needs the action itself.
        let memo = ctx.memo.filter(|_| !ctx.check);
        let remember: Remember = memo.map(|memo| {
            let fp = KeyMemo::fingerprint(
                target,
                &self.srcs,
                &self.dep_files,
                &self.tools,
                ctx.tools.path_var(),
                ctx.platform,
                ctx.unsandboxed,
            );
            (memo, fp)
        });
        let mut local_missed = None;
        if let Some((memo, fp)) = remember
            && let Some(known) = memo.outcome(&target.label, &fp)
        {
            trace(ctx, "prepare action", &target.label, self.preparing);
            if let Some(done) = self.up_to_date(known, remember) {
                return done;
            }
            // Up to date in microseconds above; from here on the target shows as running.
            ctx.reporter.target_started(&target.label);
            let looking = Instant::now();
            let found = ctx.cache.lookup_local(&known.key);
            trace(ctx, "cache lookup", &target.label, looking);
            let key = known.key;
            if let Some(done) = self.use_found(found, key, None, remember) {
                return done;
            }
            local_missed = Some(key);
        }
        if local_missed.is_none() {
            ctx.reporter.target_started(&target.label);
        }
        let action = self.prepare();
        trace(ctx, "prepare action", &target.label, self.preparing);
        let local_missed = local_missed == Some(action.key);
        if !local_missed || ctx.cache.has_remotes() {
            let looking = Instant::now();
            let found = ctx
                .cache
                .lookup(&target.label, &action, local_missed, self.top_level);
            trace(ctx, "cache lookup", &target.label, looking);
            if let Some(done) = self.use_found(found, action.key, Some(&action), remember) {
                return done;
            }
        }
        self.execute(&action, remember)
    }

    fn prepare(&self) -> PreparedAction {
        let target = self.target;
        let pass_env: BTreeMap<String, String> = target
            .pass_env
            .iter()
            .filter_map(|name| {
                self.ctx
                    .host_env
                    .get(name)
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect();
        let dep_roots: Vec<&WorkspacePath> = self.ctx.graph.dep_roots(target).into_iter().collect();
        let deps = DepInputs {
            files: &self.dep_files.files,
            links: &self.dep_files.links,
            roots: &dep_roots,
        };
        prepare_action(
            target,
            &source_map(target, &self.srcs),
            &deps,
            &self.tools,
            self.ctx.tools.path_var(),
            pass_env,
            self.ctx.platform,
        )
    }

    /// The memo's answer without any lookup: every output of the last success with these
    /// ingredients is still in place in the workspace. (Output directories may have gained
    /// files, so they always go through the cache, which makes them exact.)
    fn up_to_date(&self, known: &Outcome, remember: Remember) -> Option<Done> {
        let ctx = self.ctx;
        if !ctx.restore || !self.target.out_dirs.is_empty() {
            return None;
        }
        let in_place = known.outputs.files.iter().all(|(path, info)| {
            match ctx.states.unchanged_in_workspace(path.as_str()) {
                Some(found) => found == *info,
                None => {
                    cairn_store::is_in_place(ctx.states, info, &path.to_host(ctx.workspace_root))
                }
            }
        });
        if !in_place {
            return None;
        }
        // The store keeps use times to the hour: a use recorded by this memo within the hour
        // needs no write (a no-op build writes nothing).
        let touch = super::memo::now_ms().saturating_sub(known.used_ms)
            >= cairn_store::TOUCH_GRANULARITY_MS;
        if touch {
            ctx.cache.store().mark_used(&known.key);
        }
        let remember = remember.filter(|_| touch);
        Some(self.cached(
            known.key,
            known.outputs.clone(),
            known.saved_ms,
            Status::Cached,
            None,
            remember,
        ))
    }

    /// Turns a lookup into the target's outcome when it is a usable hit: the outputs are
    /// restored (or only listed, without restoring) and, with `--check`, the action is run
    /// again and compared. A hit whose outputs cannot be restored is dropped with a warning and
    /// counts as a miss.
    fn use_found(
        &self,
        found: Result<Found, StoreError>,
        key: Digest,
        action: Option<&PreparedAction>,
        remember: Remember,
    ) -> Option<Done> {
        let ctx = self.ctx;
        let target = self.target;
        let (result, source, complete) = match found {
            Ok(Found::Hit {
                result,
                source,
                complete,
            }) => (result, source, complete),
            Ok(Found::Miss) => return None,
            Err(e) => {
                self.unusable(&key, &e);
                return None;
            }
        };
        // DESIGN: a result produced without a sandbox never serves a sandboxed build (it may
        // have read files it did not declare); running the action replaces it.
        if !ctx.unsandboxed && is_unsandboxed(&result) {
            return None;
        }
        // A fixed-output result is named by its declared digest, so an edited lockfile with a
        // stale digest would still find it (green here, red on a fresh CI machine): one made
        // from other inputs runs again, and its output is checked against the digest.
        if let Some(action) = action
            && matches!(action.kind, crate::action::ActionKind::FixedOutput(_))
            && !action.same_inputs(&result)
        {
            return None;
        }
        let working_dir = &target.label.package;
        // Outputs not downloaded are listed (their digests are known) but not restored.
        let restore = ctx.restore && complete;
        let provided = match ctx.outputs_of(&key, working_dir, &result, restore) {
            Ok(provided) => provided,
            Err(e) => {
                self.unusable(&key, &e);
                return None;
            }
        };
        // `--check` runs every cached action again, fixed-output ones too (their re-run must
        // give the declared digest); tests are not build outputs.
        let checked = ctx.check
            && matches!(target.kind, Kind::Action | Kind::FixedOutput)
            && action.is_some();
        if checked
            && let Some(action) = action
            && let Some(problem) = check_reproducible(ctx, target, action, &provided)
        {
            return Some(failed_with(ctx, target, Some(key), self.started, problem));
        }
        let status = match source {
            Source::Local => Status::Cached,
            Source::Remote(_) => Status::RemoteCached,
        };
        let mut done = self.cached(
            key,
            provided,
            saved_ms_of(&result),
            status,
            action,
            remember,
        );
        if let Some(report) = done.report.as_mut() {
            report.checked = checked;
        }
        Some(done)
    }

    fn unusable(&self, key: &Digest, error: &StoreError) {
        let _ = self.ctx.cache.drop_result(key);
        self.ctx.reporter.warning(&format!(
            "cache entry of `{}` is unusable and was dropped: {error}",
            self.target.label
        ));
    }

    /// Reports a target whose result came from a cache. `action` is the prepared action if
    /// there is one; otherwise it is built only if the recorder needs it.
    fn cached(
        &self,
        key: Digest,
        provided: Provides,
        saved_ms: u64,
        status: Status,
        action: Option<&PreparedAction>,
        remember: Remember,
    ) -> Done {
        let ctx = self.ctx;
        let target = self.target;
        let reporting = Instant::now();
        if let Some((memo, fingerprint)) = remember {
            memo.remember(
                &target.label,
                Outcome {
                    fingerprint,
                    key,
                    outputs: provided.clone(),
                    saved_ms,
                    used_ms: super::memo::now_ms(),
                },
            );
        }
        let needs_action = ctx.cache.reports_remote_digests()
            || ctx
                .recorder
                .is_some_and(|r| !r.is_recorded(target, key, status));
        let prepared;
        let action = match action {
            Some(action) => Some(action),
            None if needs_action => {
                prepared = self.prepare();
                Some(&prepared)
            }
            None => None,
        };
        if let (Some(recorder), Some(action)) = (ctx.recorder, action)
            && !recorder.is_recorded(target, key, status)
        {
            recorder.record(target, key, status, action);
        }
        let report = TargetReport {
            saved_ms,
            remote_action_digest: action.and_then(|a| ctx.cache.remote_action_digest(a)),
            ..TargetReport::new(target, status, Some(key), self.started)
        };
        ctx.reporter.target_finished(&report);
        trace(ctx, "report", &target.label, reporting);
        Done {
            label: target.label.clone(),
            report: Some(report),
            provided: Arc::new(provided),
            ok: true,
        }
    }

    /// A miss: runs the action (retrying a flaky test), then records and reports the outcome.
    fn execute(&self, action: &PreparedAction, remember: Remember) -> Done {
        let ctx = self.ctx;
        let target = self.target;
        match self.inputs_in_place(action) {
            Ok(true) => {}
            Ok(false) => return self.cancelled(action),
            Err(e) => return failed(ctx, target, Some(action.key), self.started, &e),
        }
        let (outcome, attempts) = execute_with_retries(ctx, target, action);
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                return failed(ctx, target, Some(action.key), self.started, &e.into());
            }
        };
        let (result, remotely) = match outcome {
            ExecOutcome::Success { result, remotely } => (result, remotely),
            ExecOutcome::Cancelled => return self.cancelled(action),
            ExecOutcome::NotRun => {
                // A dry run: the outputs are unknown, and so are the keys of dependents (which
                // still get computed, with what is known).
                if let Some(recorder) = ctx.recorder {
                    recorder.not_run(target, action);
                }
                return Done {
                    label: target.label.clone(),
                    report: None,
                    provided: Provided::default(),
                    ok: true,
                };
            }
            ExecOutcome::Failed(failure) | ExecOutcome::TimedOut(failure) => {
                if let Some(recorder) = ctx.recorder {
                    recorder.record(target, action.key, Status::Failed, action);
                }
                let report = TargetReport {
                    failure: Some(failure),
                    attempts,
                    remote_action_digest: ctx.cache.remote_action_digest(action),
                    ..TargetReport::new(target, Status::Failed, Some(action.key), self.started)
                };
                ctx.reporter.target_finished(&report);
                return Done {
                    label: target.label.clone(),
                    report: Some(report),
                    provided: Provided::default(),
                    ok: false,
                };
            }
        };
        let provided = ctx
            .cache
            .store_result(action, &result)
            .and_then(|()| ctx.outputs_of(&action.key, &action.working_dir, &result, true));
        let provided = match provided {
            Ok(p) => p,
            Err(e) => {
                let e = TargetError::Outputs(e);
                return failed(ctx, target, Some(action.key), self.started, &e);
            }
        };
        let status = if remotely {
            Status::RemoteExecuted
        } else {
            Status::Executed
        };
        if let Some(recorder) = ctx.recorder {
            recorder.record(target, action.key, status, action);
        }
        if let Some((memo, fingerprint)) = remember {
            memo.remember(
                &target.label,
                Outcome {
                    fingerprint,
                    key: action.key,
                    outputs: provided.clone(),
                    saved_ms: saved_ms_of(&result),
                    used_ms: super::memo::now_ms(),
                },
            );
        }
        let report = TargetReport {
            attempts,
            remote_action_digest: ctx.cache.remote_action_digest(action),
            ..TargetReport::new(target, status, Some(action.key), self.started)
        };
        ctx.reporter.target_finished(&report);
        Done {
            label: target.label.clone(),
            report: Some(report),
            provided: Arc::new(provided),
            ok: true,
        }
    }
}

impl Step<'_> {
    /// Killed by cancellation: nothing recorded, nothing reported, dependents wait.
    fn cancelled(&self, action: &PreparedAction) -> Done {
        Done {
            label: self.target.label.clone(),
            report: Some(TargetReport::new(
                self.target,
                Status::Skipped,
                Some(action.key),
                self.started,
            )),
            provided: Provided::default(),
            ok: false,
        }
    }

    /// Puts every input of `action` in the local store before it runs here: fetches what
    /// remote hits left undownloaded (`--remote-download`), and runs here the dependencies
    /// whose outputs the remote no longer has (expired, or the remote failed), so a lost blob
    /// never fails a build. `Ok(false)`: cancelled meanwhile.
    fn inputs_in_place(&self, action: &PreparedAction) -> Result<bool, TargetError> {
        let ctx = self.ctx;
        let lost = ctx
            .cache
            .fetch_inputs(action)
            .map_err(TargetError::Inputs)?;
        if lost.is_empty() {
            return Ok(true);
        }
        for producer in &lost {
            ctx.reporter.warning(&format!(
                "the outputs of `{}` are gone from the remote cache; running it here",
                producer.label
            ));
            if !self.inputs_in_place(&producer.action)? {
                return Ok(false);
            }
            let rerun = |why: String| TargetError::Rerun {
                producer: producer.label.clone(),
                why,
            };
            match ctx.executor.execute(&producer.label, &producer.action)? {
                ExecOutcome::Success { result, .. } => ctx
                    .cache
                    .store_result(&producer.action, &result)
                    .map_err(TargetError::Inputs)?,
                ExecOutcome::Cancelled => return Ok(false),
                ExecOutcome::NotRun => return Ok(true),
                ExecOutcome::Failed(f) | ExecOutcome::TimedOut(f) => {
                    return Err(rerun(format!("failed: {}", f.message)));
                }
            }
        }
        // Run again, a reproducible action gives the very blobs the remote had named.
        if let Some(producer) = ctx
            .cache
            .fetch_inputs(action)
            .map_err(TargetError::Inputs)?
            .first()
        {
            return Err(TargetError::Rerun {
                producer: producer.label.clone(),
                why: "gave other outputs than the remote's result named (it is not reproducible; build with `--remote-download=all`)".to_string(),
            });
        }
        Ok(true)
    }
}

/// The flaky-test policy: a test with `flaky = N` that fails (or times out) runs again, up to
/// N more times, with a warning each time. Returns the last outcome and how many runs it took.
fn execute_with_retries(
    ctx: &BuildContext,
    target: &Target,
    action: &PreparedAction,
) -> (Result<ExecOutcome, ExecError>, u32) {
    let allowed = 1 + if target.kind == Kind::Test {
        target.flaky
    } else {
        0
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let running = Instant::now();
        let outcome = ctx.executor.execute(&target.label, action);
        trace(ctx, "execute", &target.label, running);
        let failed = matches!(
            &outcome,
            Ok(ExecOutcome::Failed(_) | ExecOutcome::TimedOut(_))
        );
        if !failed || attempts >= allowed {
            return (outcome, attempts);
        }
        ctx.reporter.warning(&format!(
            "`{}` failed on attempt {attempts}; retrying (flaky = {})",
            target.label, target.flaky
        ));
    }
}

/// A failed target whose failure is `error` (reported now).
fn failed(
    ctx: &BuildContext,
    target: &Target,
    key: Option<Digest>,
    started: Instant,
    error: &TargetError,
) -> Done {
    failed_with(ctx, target, key, started, error.to_string())
}

fn failed_with(
    ctx: &BuildContext,
    target: &Target,
    key: Option<Digest>,
    started: Instant,
    message: String,
) -> Done {
    let report = TargetReport {
        failure: Some(ExecFailure {
            exit_code: None,
            message,
            stderr_tail: String::new(),
            tail_is_output: false,
            log: None,
            reports: None,
        }),
        ..TargetReport::new(target, Status::Failed, key, started)
    };
    if target.kind.runs() {
        ctx.reporter.target_finished(&report);
    }
    Done {
        label: target.label.clone(),
        report: target.kind.runs().then_some(report),
        provided: Provided::default(),
        ok: false,
    }
}

pub(super) fn trace(ctx: &BuildContext, name: &str, label: &Label, began: Instant) {
    if let Some(t) = ctx.tracer {
        t.span(
            name,
            "build",
            began,
            serde_json::json!({ "label": label.to_string() }),
        );
    }
}

/// The tools the action calls: those in `tools` (which must exist), the first word of `cmd`
/// and `sh` (when found).
fn resolve_tools(ctx: &BuildContext, target: &Target) -> Result<Vec<Tool>, TargetError> {
    let mut tools = Vec::new();
    for name in &target.tools {
        match ctx.tools.resolve(name, ctx.states) {
            Some(tool) => tools.push(tool),
            None => {
                return Err(TargetError::MissingTool {
                    name: name.clone(),
                    tool_path: ctx.tools.path_var().to_string(),
                });
            }
        }
    }
    // A script run by path is run by the interpreter its `#!` line names: that is a tool too
    // (a declared source, read from the workspace; its content is in the key anyway).
    let interpreter = script_word(&target.cmd)
        .and_then(|word| WorkspacePath::in_package(&target.label.package, word).ok())
        .filter(|path| target.srcs.contains(path))
        .and_then(|path| first_line(&path.to_host(ctx.workspace_root)));
    let implicit = ["sh"]
        .into_iter()
        .chain(first_word(&target.cmd))
        .chain(interpreter.as_deref().and_then(shebang_tool));
    for name in implicit {
        if !tools.iter().any(|t| t.name == name)
            && let Some(tool) = ctx.tools.resolve(name, ctx.states)
        {
            tools.push(tool);
        }
    }
    Ok(tools)
}

/// The digests of the target's sources, in the order of `srcs`. A file the build's file-state
/// check found unchanged costs nothing; any other costs a `stat` (and a hash if it changed).
fn hash_sources(ctx: &BuildContext, target: &Target) -> Result<Vec<FileInfo>, TargetError> {
    target
        .srcs
        .iter()
        .map(|src| {
            if let Some(info) = ctx.states.unchanged_in_workspace(src.as_str()) {
                return Ok(info);
            }
            let host = src.to_host(ctx.workspace_root);
            // A source may be a link (its target's content is the input), but only to a file
            // in the workspace.
            if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_symlink())
                && let Some(outside) = link_leaving(&host, ctx.workspace_root)
            {
                return Err(TargetError::SourceOutside {
                    path: src.clone(),
                    target: outside,
                });
            }
            match ctx.states.file_info(&host) {
                Ok((info, _)) => Ok(info),
                Err(source) => Err(TargetError::Source {
                    path: src.clone(),
                    source,
                }),
            }
        })
        .collect()
}

/// Where the symlink `host` leads, when that is outside the workspace at `root` (both
/// resolved, so links through links count where they end).
fn link_leaving(host: &Path, root: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(host).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    (!resolved.starts_with(&root)).then(|| resolved.display().to_string())
}

/// The sources by path, from `hash_sources`.
fn source_map(target: &Target, infos: &[FileInfo]) -> FileMap {
    target
        .srcs
        .iter()
        .cloned()
        .zip(infos.iter().copied())
        .collect()
}
