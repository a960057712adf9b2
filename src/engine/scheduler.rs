//! The parallel walk of the target DAG. `jobs` worker threads share one ready queue (with
//! failure propagation and fail-fast) and each take one target at a time: hash its sources
//! (file-state cache), compute its action key, restore a cached result or execute.
//! A dependency that failed marks its dependents `skipped`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use cairn_store::{
    Digest, FileInfo, FileStates, Store, StoreError, read_tree, reapi, restore_contents,
    restore_file,
};

use super::history::HistoryRecorder;
use super::memo::{Fingerprint, KeyMemo, Outcome};
use crate::action::tools::first_word;
use crate::action::{PreparedAction, Tool, ToolResolver, prepare_action};
use crate::exec::local::CANCELLED;
use crate::exec::{ExecError, ExecFailure, Executor};
use crate::graph::{Graph, Kind, Label, Target};
use crate::report::{Reporter, Tracer};
use crate::workspace::WorkspacePath;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Executed,
    Cached,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
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
}

pub(crate) struct BuildOptions {
    pub roots: Vec<Label>,
    pub run_tests: bool,
    pub jobs: usize,
    pub keep_going: bool,
}

pub(crate) struct BuildOutcome {
    /// One report per action or test, in completion order.
    pub reports: Vec<TargetReport>,
    pub wall_ms: u64,
    /// Every tool name the build resolved, with what it resolved to (set by the caller that
    /// owns the resolver).
    pub tools: BTreeMap<String, Option<crate::action::Tool>>,
}

impl BuildOutcome {
    pub fn count(&self, status: Status) -> usize {
        self.reports.iter().filter(|r| r.status == status).count()
    }

    pub fn is_success(&self) -> bool {
        self.count(Status::Failed) == 0 && self.count(Status::Skipped) == 0
    }
}

/// Files a finished target makes available to its dependents.
type Provided = Arc<BTreeMap<WorkspacePath, FileInfo>>;

/// Everything a build reads, shared by the workers.
pub(crate) struct BuildContext<'a> {
    pub graph: &'a Graph,
    pub store: &'a Store,
    pub states: &'a FileStates,
    pub executor: &'a dyn Executor,
    pub reporter: &'a dyn Reporter,
    pub workspace_root: &'a std::path::Path,
    pub tools: &'a ToolResolver<'a>,
    /// The host environment, for `pass_env`.
    pub host_env: &'a BTreeMap<String, String>,
    /// `build --check`: re-run cached actions and compare their outputs.
    pub check: bool,
    /// Where runs are recorded for `cairn why` (none for a dry run).
    pub history: Option<&'a HistoryRecorder>,
    /// A dry run computes keys and looks them up, but never executes or restores.
    pub dry_run: Option<&'a DryRun>,
    /// `--trace FILE`.
    pub tracer: Option<&'a Tracer>,
    /// Remembered action keys (none: every action is built in full).
    pub memo: Option<&'a KeyMemo>,
    /// When set, no new action starts (running ones are killed by the executor).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What a dry run found for one action or test.
#[derive(Debug, Clone)]
pub(crate) struct DryInfo {
    pub action: PreparedAction,
    /// Whether the store holds a result for the key.
    pub hit: bool,
    /// Dependencies that must run first: the files they provide are not known yet.
    pub unknown_deps: std::collections::BTreeSet<Label>,
}

/// The results of a dry run.
#[derive(Debug, Default)]
pub(crate) struct DryRun {
    pub results: Mutex<HashMap<Label, DryInfo>>,
    /// Targets whose outputs are unknown (a miss, or an unknown dependency).
    unknown: Mutex<HashSet<Label>>,
}

type Shared<'a> = BuildContext<'a>;

struct Job {
    label: Label,
    deps: Vec<Provided>,
}

struct Done {
    label: Label,
    report: Option<TargetReport>,
    provided: Provided,
    ok: bool,
}

pub(crate) fn run_build(shared: &BuildContext, options: &BuildOptions) -> BuildOutcome {
    let graph = shared.graph;
    let reporter = shared.reporter;
    let start = Instant::now();
    let roots = options.roots.iter().cloned().collect();
    let order: Vec<Label> = graph
        .closure_in_order(&roots)
        .into_iter()
        .filter(|l| options.run_tests || graph.kind_of(l) != Kind::Test)
        .collect();
    let in_build: FxHashSet<&Label> = order.iter().collect();
    let waiting: FxHashMap<Label, usize> = order
        .iter()
        .map(|l| {
            let n = graph.get(l).map_or(0, |t| {
                t.deps.iter().filter(|d| in_build.contains(d)).count()
            });
            (l.clone(), n)
        })
        .collect();
    let ready: VecDeque<Label> = order.iter().filter(|l| waiting[*l] == 0).cloned().collect();
    let total = order.iter().filter(|l| graph.kind_of(l).runs()).count();
    reporter.build_started(total);

    let state = Mutex::new(Walk {
        ready,
        waiting,
        provided: FxHashMap::default(),
        reports: Vec::with_capacity(total),
        blocked: FxHashMap::default(),
        finished: FxHashSet::default(),
        running: 0,
        idle: 0,
        stop: false,
    });
    let wake = Condvar::new();
    let cancelled = || {
        shared
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    };
    std::thread::scope(|scope| {
        for worker in 0..options.jobs.max(1) {
            let (state, wake, in_build) = (&state, &wake, &in_build);
            scope.spawn(move || {
                Tracer::set_track(worker + 1);
                let mut walk = state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let next = if walk.stop || cancelled() {
                        None
                    } else {
                        walk.ready.pop_front()
                    };
                    let Some(label) = next else {
                        if walk.running == 0 {
                            // Nothing ready and nothing running that could make more ready.
                            wake.notify_all();
                            break;
                        }
                        walk.idle += 1;
                        walk = wake.wait(walk).unwrap_or_else(|p| p.into_inner());
                        walk.idle -= 1;
                        continue;
                    };
                    let target = graph.get(&label).expect("scheduled labels exist");
                    let deps = target
                        .deps
                        .iter()
                        .filter_map(|d| walk.provided.get(d).cloned())
                        .collect();
                    walk.running += 1;
                    drop(walk);
                    let began = Instant::now();
                    let done = run_target(shared, Job { label, deps });
                    if let Some(t) = shared.tracer {
                        t.span("target", "walk", began, serde_json::Value::Null);
                    }
                    walk = state.lock().unwrap_or_else(|p| p.into_inner());
                    walk.running -= 1;
                    walk.complete(graph, done, in_build, options.keep_going);
                    // This worker takes the next ready target itself; idle ones are woken
                    // only for the rest, or to finish (a wake-up is a system call).
                    if walk.idle > 0 && (walk.ready.len() > 1 || walk.running == 0 || walk.stop) {
                        wake.notify_all();
                    }
                }
            });
        }
    });
    let Walk {
        mut reports,
        blocked,
        finished,
        ..
    } = state.into_inner().unwrap_or_else(|p| p.into_inner());

    for label in &order {
        let target = graph.get(label).expect("ordered labels exist");
        if finished.contains(label) || !target.kind.runs() {
            continue;
        }
        let report = TargetReport {
            label: label.clone(),
            kind: target.kind,
            status: Status::Skipped,
            action_key: None,
            duration_ms: 0,
            attempts: 0,
            cmd: target.cmd.clone(),
            failure: None,
            blocked_by: blocked.get(label).cloned(),
            saved_ms: 0,
        };
        reporter.target_finished(&report);
        reports.push(report);
    }
    BuildOutcome {
        tools: BTreeMap::new(),
        reports,
        wall_ms: start.elapsed().as_millis() as u64,
    }
}

/// The shared state of a build's walk, behind one lock: workers take ready targets from it
/// and report finished ones to it, so no coordinating thread sits between them.
struct Walk {
    ready: VecDeque<Label>,
    /// Label → how many of its dependencies in the build have not finished.
    waiting: FxHashMap<Label, usize>,
    provided: FxHashMap<Label, Provided>,
    reports: Vec<TargetReport>,
    blocked: FxHashMap<Label, Label>,
    finished: FxHashSet<Label>,
    running: usize,
    /// Workers waiting for a target to become ready.
    idle: usize,
    /// A target failed without `--keep-going`: start nothing new.
    stop: bool,
}

impl Walk {
    /// Records a finished target: its report, and either its dependents' readiness or, on
    /// failure, their blocking.
    fn complete(
        &mut self,
        graph: &Graph,
        done: Done,
        in_build: &FxHashSet<&Label>,
        keep_going: bool,
    ) {
        self.finished.insert(done.label.clone());
        if let Some(report) = done.report {
            self.reports.push(report);
        }
        if !done.ok {
            if !keep_going {
                self.stop = true;
            }
            block_dependents(graph, &done.label, in_build, &mut self.blocked);
            return;
        }
        for rdep in graph.rdeps(&done.label) {
            if let Some(n) = self.waiting.get_mut(rdep) {
                *n -= 1;
                if *n == 0 && !self.blocked.contains_key(rdep) {
                    self.ready.push_back(rdep.clone());
                }
            }
        }
        self.provided.insert(done.label, done.provided);
    }
}

/// Marks everything in the build that depends on the failed `cause` as blocked by it.
fn block_dependents(
    graph: &Graph,
    cause: &Label,
    in_build: &FxHashSet<&Label>,
    blocked: &mut FxHashMap<Label, Label>,
) {
    let mut stack = vec![cause.clone()];
    while let Some(label) = stack.pop() {
        for rdep in graph.rdeps(&label) {
            if in_build.contains(rdep) && !blocked.contains_key(rdep) {
                blocked.insert(rdep.clone(), cause.clone());
                stack.push(rdep.clone());
            }
        }
    }
}

fn run_target(shared: &Shared, job: Job) -> Done {
    let target = shared
        .graph
        .get(&job.label)
        .expect("scheduled labels exist");
    let started = Instant::now();
    let mut dep_files: BTreeMap<WorkspacePath, FileInfo> = BTreeMap::new();
    for d in &job.deps {
        dep_files.extend(d.iter().map(|(k, v)| (k.clone(), *v)));
    }
    let hashing = Instant::now();
    let srcs = hash_sources(shared, target);
    trace(shared, "hash sources", &target.label, hashing);
    let srcs = match srcs {
        Ok(srcs) => srcs,
        Err(message) => return failed(shared, target, None, started, message),
    };
    if !target.kind.runs() {
        let mut all = source_map(target, &srcs);
        all.extend(dep_files);
        return Done {
            label: job.label,
            report: None,
            provided: Arc::new(all),
            ok: true,
        };
    }
    let preparing = Instant::now();
    let tools = match resolve_tools(shared, target) {
        Ok(tools) => tools,
        Err(message) => return failed(shared, target, None, started, message),
    };
    let pass_env: BTreeMap<String, String> = target
        .pass_env
        .iter()
        .filter_map(|name| shared.host_env.get(name).map(|v| (name.clone(), v.clone())))
        .collect();
    let path_var = shared.tools.path_var();
    let prepare = || {
        prepare_action(
            target,
            &source_map(target, &srcs),
            &dep_files,
            &tools,
            path_var,
            pass_env.clone(),
        )
    };
    // The key memo spares building the action when its ingredients are unchanged; a dry run
    // and `--check` need the action itself.
    let memo = shared
        .memo
        .filter(|_| shared.dry_run.is_none() && !shared.check);
    let fingerprint =
        memo.map(|_| KeyMemo::fingerprint(target, &srcs, &dep_files, &tools, path_var));
    let remember = memo.zip(fingerprint);
    let mut missed = None;
    if let Some((memo, fp)) = remember
        && let Some(known) = memo.outcome(&target.label, &fp)
    {
        trace(shared, "prepare action", &target.label, preparing);
        // Up to date, as far as the workspace shows: every output of the last success with
        // these ingredients is still in place. (Output directories may have gained files, so
        // they always go through the cache, which makes them exact.)
        let in_place = target.out_dirs.is_empty()
            && known.outputs.iter().all(|(path, info)| {
                match shared.states.unchanged_in_workspace(path.as_str()) {
                    Some(found) => found == *info,
                    None => cairn_store::is_in_place(
                        shared.states,
                        info,
                        &path.to_host(shared.workspace_root),
                    ),
                }
            });
        if in_place {
            // The store keeps use times to the hour: a use recorded by this memo within the
            // hour needs no write (a no-op build writes nothing).
            let now = super::memo::now_ms();
            let touch = now - known.used_ms >= cairn_store::TOUCH_GRANULARITY_MS;
            if touch {
                shared.store.mark_used(&known.key);
            }
            let (key, outputs, saved_ms) = (known.key, known.outputs.clone(), known.saved_ms);
            let remember = remember.filter(|_| touch);
            return cached(
                shared, target, key, outputs, saved_ms, started, &prepare, remember,
            );
        }
        // Up to date in microseconds above; from here on the target shows as running.
        shared.reporter.target_started(&target.label);
        let looking = Instant::now();
        let found = lookup(shared, &known.key, &target.label.package);
        trace(shared, "cache lookup", &target.label, looking);
        match found {
            Ok(Some((provided, saved_ms))) => {
                let key = known.key;
                return cached(
                    shared, target, key, provided, saved_ms, started, &prepare, remember,
                );
            }
            Ok(None) => missed = Some(known.key),
            Err(e) => {
                missed = Some(known.key);
                shared.reporter.warning(&format!(
                    "cache entry of `{}` is unusable and was dropped: {e}",
                    target.label
                ));
            }
        }
    }
    if missed.is_none() {
        shared.reporter.target_started(&target.label);
    }
    let action = prepare();
    trace(shared, "prepare action", &target.label, preparing);
    if let Some(dry) = shared.dry_run {
        return dry_run_target(shared, dry, target, action);
    }

    if missed != Some(action.key) {
        let looking = Instant::now();
        let found = lookup(shared, &action.key, &action.working_dir);
        trace(shared, "cache lookup", &target.label, looking);
        match found {
            Ok(Some((provided, saved_ms))) => {
                if shared.check
                    && target.kind == Kind::Action
                    && let Some(problem) = check_reproducible(shared, target, &action, &provided)
                {
                    return failed(shared, target, Some(action.key), started, problem);
                }
                return cached(
                    shared,
                    target,
                    action.key,
                    provided,
                    saved_ms,
                    started,
                    &|| action.clone(),
                    remember,
                );
            }
            Ok(None) => {}
            Err(e) => shared.reporter.warning(&format!(
                "cache entry of `{}` is unusable and was dropped: {e}",
                target.label
            )),
        }
    }

    let attempts_allowed = 1 + if target.kind == Kind::Test {
        target.flaky
    } else {
        0
    };
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        let running = Instant::now();
        let outcome = shared.executor.execute(&target.label, &action);
        trace(shared, "execute", &target.label, running);
        let retry = matches!(&outcome, Ok(o) if o.result.is_none()) && attempts < attempts_allowed;
        if !retry {
            break outcome;
        }
        shared.reporter.warning(&format!(
            "`{}` failed on attempt {attempts}; retrying (flaky = {})",
            target.label, target.flaky
        ));
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return failed(shared, target, Some(action.key), started, error_text(&e)),
    };
    let Some(result) = outcome.result else {
        if outcome
            .failure
            .as_ref()
            .is_some_and(|f| f.message == CANCELLED)
        {
            // Killed by cancellation: nothing recorded, nothing reported, dependents wait.
            let mut done = failed(shared, target, Some(action.key), started, String::new());
            if let Some(report) = &mut done.report {
                report.status = Status::Skipped;
            }
            return done;
        }
        if let Some(h) = shared.history {
            h.record(&target.label, action.key, "failed", &action);
        }
        let mut done = failed(shared, target, Some(action.key), started, String::new());
        if let Some(report) = &mut done.report {
            report.failure = outcome.failure;
            report.attempts = attempts;
        }
        if let Some(report) = &done.report {
            shared.reporter.target_finished(report);
        }
        return done;
    };
    let provided = shared
        .store
        .put_action_result(&action.key, &result)
        .and_then(|()| restore_outputs(shared, &action, &result));
    let provided = match provided {
        Ok(p) => p,
        Err(e) => {
            return failed(
                shared,
                target,
                Some(action.key),
                started,
                format!("cannot store or restore its outputs: {e}"),
            );
        }
    };
    if let Some(h) = shared.history {
        h.record(&target.label, action.key, "executed", &action);
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
        label: target.label.clone(),
        kind: target.kind,
        status: Status::Executed,
        action_key: Some(action.key),
        duration_ms: started.elapsed().as_millis() as u64,
        attempts,
        cmd: target.cmd.clone(),
        failure: None,
        blocked_by: None,
        saved_ms: 0,
    };
    shared.reporter.target_finished(&report);
    Done {
        label: job.label,
        report: Some(report),
        provided: Arc::new(provided),
        ok: true,
    }
}

/// Reports a target whose result came from the cache. `action` builds its action, needed only
/// when history records something new; `remember` is where the outcome is memoised.
#[allow(clippy::too_many_arguments)]
fn cached(
    shared: &Shared,
    target: &Target,
    key: Digest,
    provided: FileMap,
    saved_ms: u64,
    started: Instant,
    action: &dyn Fn() -> PreparedAction,
    remember: Option<(&KeyMemo, Fingerprint)>,
) -> Done {
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
    if let Some(h) = shared.history
        && !h.is_latest(&target.label, key, "cached")
    {
        h.record(&target.label, key, "cached", &action());
    }
    let report = TargetReport {
        label: target.label.clone(),
        kind: target.kind,
        status: Status::Cached,
        action_key: Some(key),
        duration_ms: started.elapsed().as_millis() as u64,
        attempts: 0,
        cmd: target.cmd.clone(),
        failure: None,
        blocked_by: None,
        saved_ms,
    };
    shared.reporter.target_finished(&report);
    trace(shared, "report", &target.label, reporting);
    Done {
        label: target.label.clone(),
        report: Some(report),
        provided: Arc::new(provided),
        ok: true,
    }
}

fn error_text(e: &ExecError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Builds a failed report; `message` empty means the caller fills `failure` itself (and
/// reports it).
fn failed(
    shared: &Shared,
    target: &Target,
    key: Option<Digest>,
    started: Instant,
    message: String,
) -> Done {
    let report = TargetReport {
        label: target.label.clone(),
        kind: target.kind,
        status: Status::Failed,
        action_key: key,
        duration_ms: started.elapsed().as_millis() as u64,
        attempts: 0,
        cmd: target.cmd.clone(),
        failure: (!message.is_empty()).then(|| ExecFailure {
            exit_code: None,
            message: message.clone(),
            stderr_tail: String::new(),
            log: None,
        }),
        blocked_by: None,
        saved_ms: 0,
    };
    if !message.is_empty() {
        shared.reporter.target_finished(&report);
    }
    Done {
        label: target.label.clone(),
        report: target.kind.runs().then_some(report),
        provided: Arc::default(),
        ok: false,
    }
}

fn trace(shared: &Shared, name: &str, label: &Label, began: Instant) {
    if let Some(t) = shared.tracer {
        t.span(
            name,
            "build",
            began,
            serde_json::json!({ "label": label.to_string() }),
        );
    }
}

/// A dry run of one action: look the key up (no restore, no execution) and remember the
/// outcome. Unknown outputs propagate to dependents.
fn dry_run_target(shared: &Shared, dry: &DryRun, target: &Target, action: PreparedAction) -> Done {
    let unknown_deps: std::collections::BTreeSet<Label> = {
        let unknown = dry.unknown.lock().unwrap_or_else(|p| p.into_inner());
        target
            .deps
            .iter()
            .filter(|d| unknown.contains(*d))
            .cloned()
            .collect()
    };
    let cached = shared
        .store
        .get_action_result(&action.key)
        .ok()
        .flatten()
        .and_then(|r| outputs_of(shared, &action.key, &action.working_dir, &r, false).ok());
    let hit = cached.is_some() && unknown_deps.is_empty();
    if !hit {
        dry.unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.label.clone());
    }
    let label = target.label.clone();
    dry.results
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            label.clone(),
            DryInfo {
                action,
                hit,
                unknown_deps,
            },
        );
    Done {
        label,
        report: None,
        provided: Arc::new(cached.unwrap_or_default()),
        ok: true,
    }
}

/// `build --check`: runs a cached action again and compares every output digest with the
/// cached result. Returns what differs, if anything (or why the re-run failed).
fn check_reproducible(
    shared: &Shared,
    target: &Target,
    action: &PreparedAction,
    cached: &FileMap,
) -> Option<String> {
    let outcome = match shared.executor.execute(&target.label, action) {
        Ok(o) => o,
        Err(e) => {
            return Some(format!(
                "could not be re-run for --check: {}",
                error_text(&e)
            ));
        }
    };
    let Some(result) = outcome.result else {
        let why = outcome.failure.map(|f| f.message).unwrap_or_default();
        return Some(format!("failed when re-run for --check: {why}"));
    };
    let fresh = match outputs_of(shared, &action.key, &action.working_dir, &result, false) {
        Ok(f) => f,
        Err(e) => return Some(format!("could not read its re-run outputs: {e}")),
    };
    let mut differ = Vec::new();
    for path in cached
        .keys()
        .chain(fresh.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (cached.get(path), fresh.get(path));
        if a.map(|i| i.digest) != b.map(|i| i.digest) {
            let show = |i: Option<&FileInfo>| {
                i.map_or("missing".to_string(), |i| {
                    format!("blake3:{}", i.digest.short())
                })
            };
            differ.push(format!("{path} ({} cached, {} now)", show(a), show(b)));
        }
    }
    (!differ.is_empty()).then(|| {
        format!(
            "is not reproducible: re-running it changed {}",
            differ.join(", ")
        )
    })
}

/// The tools the action calls: those in `tools` (which must exist), the first word of `cmd`
/// and `sh` (when found).
fn resolve_tools(shared: &Shared, target: &Target) -> Result<Vec<Tool>, String> {
    let mut tools = Vec::new();
    for name in &target.tools {
        match shared.tools.resolve(name, shared.states) {
            Some(tool) => tools.push(tool),
            None => {
                return Err(format!(
                    "tool `{name}` was not found on the tool path `{}` (set `tool_path` in cairn.toml to add directories)",
                    shared.tools.path_var()
                ));
            }
        }
    }
    let implicit = ["sh"].into_iter().chain(first_word(&target.cmd));
    for name in implicit {
        if !tools.iter().any(|t| t.name == name)
            && let Some(tool) = shared.tools.resolve(name, shared.states)
        {
            tools.push(tool);
        }
    }
    Ok(tools)
}

/// The digests of the target's sources, in the order of `srcs`. A file the build's file-state
/// check found unchanged costs nothing; any other costs a `stat` (and a hash if it changed).
fn hash_sources(shared: &Shared, target: &Target) -> Result<Vec<FileInfo>, String> {
    target
        .srcs
        .iter()
        .map(|src| {
            if let Some(info) = shared.states.unchanged_in_workspace(src.as_str()) {
                return Ok(info);
            }
            let host = src.to_host(shared.workspace_root);
            match shared.states.file_info(&host) {
                Ok((info, _)) => Ok(info),
                Err(e) => Err(format!("cannot read source file `{src}`: {e}")),
            }
        })
        .collect()
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

/// Files by workspace path.
type FileMap = BTreeMap<WorkspacePath, FileInfo>;

/// A cached result restored into the workspace, and its recorded run time; `None` on a miss.
fn lookup(
    shared: &Shared,
    key: &Digest,
    working_dir: &str,
) -> Result<Option<(FileMap, u64)>, StoreError> {
    let Some(result) = shared.store.get_action_result(key)? else {
        return Ok(None);
    };
    match outputs_of(shared, key, working_dir, &result, true) {
        Ok(provided) => Ok(Some((provided, saved_ms_of(&result)))),
        Err(e) => {
            shared.store.db().remove_action_result(key)?;
            Err(e)
        }
    }
}

/// The recorded run time of a result: what restoring it saves.
fn saved_ms_of(result: &reapi::ActionResult) -> u64 {
    result
        .execution_metadata
        .as_ref()
        .and_then(|m| m.virtual_execution_duration.as_ref())
        .map_or(0, |d| d.seconds as u64 * 1000 + d.nanos as u64 / 1_000_000)
}

/// Makes the workspace hold the result's outputs; returns them by workspace path.
fn restore_outputs(
    shared: &Shared,
    action: &PreparedAction,
    result: &reapi::ActionResult,
) -> Result<BTreeMap<WorkspacePath, FileInfo>, StoreError> {
    outputs_of(shared, &action.key, &action.working_dir, result, true)
}

/// The files of a result by workspace path; with `restore`, also written into the workspace.
fn outputs_of(
    shared: &Shared,
    key: &Digest,
    working_dir: &str,
    result: &reapi::ActionResult,
    restore: bool,
) -> Result<BTreeMap<WorkspacePath, FileInfo>, StoreError> {
    let cas = shared.store.cas();
    let bad = |what: &str| StoreError::BadTree {
        digest: *key,
        why: format!("action result has an invalid {what}"),
    };
    let mut provided = BTreeMap::new();
    for file in &result.output_files {
        let path =
            WorkspacePath::in_package(working_dir, &file.path).map_err(|_| bad("output path"))?;
        let digest = file
            .digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(|| bad("digest"))?;
        let info = FileInfo {
            digest,
            executable: file.is_executable,
        };
        if restore {
            restore_file(
                cas,
                shared.states,
                &info,
                &path.to_host(shared.workspace_root),
            )?;
        }
        provided.insert(path, info);
    }
    for dir in &result.output_directories {
        let path =
            WorkspacePath::in_package(working_dir, &dir.path).map_err(|_| bad("output path"))?;
        let digest = dir
            .tree_digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(|| bad("digest"))?;
        let contents = read_tree(cas, &digest)?;
        if restore {
            restore_contents(
                cas,
                shared.states,
                &contents,
                &path.to_host(shared.workspace_root),
            )?;
        }
        for (rel, info) in contents.files {
            provided.insert(
                WorkspacePath::in_package(path.as_str(), &rel).map_err(|_| bad("tree entry"))?,
                info,
            );
        }
    }
    Ok(provided)
}
