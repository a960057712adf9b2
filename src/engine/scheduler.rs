//! The parallel walk of the target DAG. `jobs` worker threads share one ready queue (with
//! failure propagation and fail-fast) and each take one target at a time through the
//! pipeline (`pipeline::run_target`: prepare → lookup → execute → record). A dependency that
//! failed marks its dependents `skipped`. The walk knows nothing about caches or executors.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use cairn_store::FileStates;

use super::Recorder;
use super::lookup::CacheChain;
use super::memo::KeyMemo;
use super::pipeline::run_target;
use crate::action::ToolResolver;
use crate::exec::Executor;
use crate::graph::{Graph, Kind, Label};
pub(crate) use crate::report::{BuildOutcome, Status, TargetReport, Traffic};
use crate::report::{Reporter, Tracer};

pub(crate) struct BuildOptions {
    pub roots: Vec<Label>,
    pub run_tests: bool,
    /// How many actions run here at once (the executor holds that bound too).
    pub jobs: usize,
    /// How many targets beyond `jobs` the walk has in flight: with a remote cache they spend
    /// their time in lookups (network round trips), not on a core, and wait for one of the
    /// executor's `jobs` slots only when they must run here.
    pub lookahead: usize,
    pub keep_going: bool,
}

/// What a finished target makes available to its dependents.
pub(super) type Provided = Arc<super::outputs::Provides>;

/// Everything a build reads, shared by the workers.
pub(crate) struct BuildContext<'a> {
    pub graph: &'a Graph,
    /// Where hits are decided and results stored: the local store, then any remotes.
    pub cache: &'a CacheChain<'a>,
    pub states: &'a FileStates,
    pub executor: &'a dyn Executor,
    pub reporter: &'a dyn Reporter,
    pub workspace_root: &'a std::path::Path,
    pub tools: &'a ToolResolver<'a>,
    /// The host environment, for `pass_env`.
    pub host_env: &'a BTreeMap<String, String>,
    /// `[remote.platform]`: properties every action's platform starts from.
    pub platform: &'a BTreeMap<String, String>,
    /// `build --check`: re-run cached actions and compare their outputs.
    pub check: bool,
    /// Whether cached outputs are written into the workspace (not in a dry run).
    pub restore: bool,
    /// The build runs with `--sandbox none`: it may use any result, and its own serve only
    /// builds like it.
    pub unsandboxed: bool,
    /// Where outcomes are recorded: history for `cairn why`, or a dry run's findings.
    pub recorder: Option<&'a dyn Recorder>,
    /// `--trace FILE`.
    pub tracer: Option<&'a Tracer>,
    /// Remembered action keys (none: every action is built in full).
    pub memo: Option<&'a KeyMemo>,
    /// When set, no new action starts (running ones are killed by the executor).
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

pub(super) struct Job {
    pub label: Label,
    pub deps: Vec<Provided>,
    /// Named by the command (not only needed by a target it named).
    pub top_level: bool,
}

pub(super) struct Done {
    pub label: Label,
    pub report: Option<TargetReport>,
    pub provided: Provided,
    pub ok: bool,
}

pub(crate) fn run_build(shared: &BuildContext, options: &BuildOptions) -> BuildOutcome {
    let graph = shared.graph;
    let reporter = shared.reporter;
    let start = Instant::now();
    let roots: std::collections::BTreeSet<Label> = options.roots.iter().cloned().collect();
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
        for worker in 0..options.jobs.max(1) + options.lookahead {
            let (state, wake, in_build, roots) = (&state, &wake, &in_build, &roots);
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
                    let top_level = roots.contains(&label);
                    let done = run_target(
                        shared,
                        Job {
                            label,
                            deps,
                            top_level,
                        },
                    );
                    if let Some(t) = shared.tracer {
                        t.span("target", "walk", began, serde_json::Value::Null);
                    }
                    walk = state.lock().unwrap_or_else(|p| p.into_inner());
                    walk.running -= 1;
                    let was_going = !walk.stop;
                    walk.complete(graph, done, in_build, options.keep_going);
                    if was_going && walk.stop {
                        shared.executor.stop_starting();
                    }
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
            duration_ms: 0,
            blocked_by: blocked.get(label).cloned(),
            ..TargetReport::new(target, Status::Skipped, None, start)
        };
        reporter.target_finished(&report);
        reports.push(report);
    }
    BuildOutcome {
        tools: BTreeMap::new(),
        traffic: Traffic::default(),
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

#[cfg(test)]
mod tests;
