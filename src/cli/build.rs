//! `cairn build`, `cairn test`, `cairn run` and `cairn clean`.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::options::RemoteExec;
use super::{Loaded, Session, build_context};
use crate::action::ToolResolver;
use crate::engine::history::HistoryRecorder;
use crate::engine::lookup::Download;
use crate::engine::memo::KeyMemo;
use crate::engine::uptodate;
use crate::engine::{BuildContext, BuildOptions, BuildOutcome, CacheChain, Status, run_build};
use crate::error::Error;
use crate::exec::base::SandboxBase;
use crate::exec::local::LocalExecutor;
use crate::exec::remote::RemoteExecutor;
use crate::exec::sandbox::SandboxMode;
use crate::exec::slots::Slots;
use crate::graph::{Kind, Label};
use crate::report::{self, ConsoleReporter, Reporter, Tracer, junit::junit_xml};
use crate::workspace::WorkspacePath;

/// The reports a build writes besides the console's.
pub(crate) struct Reports<'a> {
    /// `--trace FILE`.
    pub trace: Option<&'a Path>,
    /// `--junit FILE`.
    pub junit: Option<&'a Path>,
    /// `--summary-md FILE`.
    pub summary_md: Option<&'a Path>,
}

/// Builds (and with `run_tests`, tests) the targets matched by `patterns`. Returns the exit
/// code: 0, or 1 if anything failed.
pub(crate) fn build(
    s: &Session,
    patterns: &[String],
    reports: Reports,
    run_tests: bool,
    check: bool,
) -> Result<u8, Error> {
    let Reports {
        trace,
        junit,
        summary_md,
    } = reports;
    // GitHub Actions names the file every step appends its summary to.
    let summary_md = summary_md.map(Path::to_path_buf).or_else(|| {
        s.env
            .vars
            .get("GITHUB_STEP_SUMMARY")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    let invocation = format!(
        "{}{}",
        if run_tests { "test" } else { "build" },
        patterns.iter().map(|p| format!(" {p}")).collect::<String>()
    );
    let write_summary = |outcome: &BuildOutcome| -> Result<(), Error> {
        let Some(path) = &summary_md else {
            return Ok(());
        };
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(report::markdown::step_summary(outcome, &invocation).as_bytes())
            })
            .map_err(|e| {
                Error::Io(format!(
                    "Cannot write the step summary `{}`: {e}",
                    path.display()
                ))
            })
    };
    let tracer = trace.map(|_| Tracer::install());
    let interrupted = on_interrupt();
    let loading = Instant::now();
    let mode = sandbox_mode(s);
    let command =
        uptodate::command_identity(&s.ws, &s.cwd_package, patterns, run_tests, mode.as_str());
    // The up-to-date record answers a repeated command whose inputs did not change; `--check`,
    // traces and reports want the build itself.
    // With a remote and `--json`, the summary names each action's remote digest, which the
    // record does not keep.
    let replayable =
        !check && trace.is_none() && junit.is_none() && !(s.opts.json && s.has_remote());
    let mut opened = None;
    if replayable {
        let store = s.open_store()?;
        let states = std::sync::Arc::new(
            store
                .load_file_states(&s.ws.root)
                .map_err(|e| s.store_error(e))?,
        );
        // Shared with builds, as `execute` holds it: `store gc` waits for it.
        let lock = store.lock(false).map_err(|e| s.store_error(e))?;
        // A build killed while writing outputs leaves temp files only a build removes.
        let abandoned = store.workspace_lock_abandoned(&s.ws.key());
        if let Some(outcome) = (!abandoned)
            .then(|| uptodate::replay(&s.ws, &s.store_dir, &store, &states, &command))
            .flatten()
        {
            report_replayed(s, &store, &outcome, mode);
            write_summary(&outcome)?;
            if s.opts.json {
                report::print_json(&report::json_summary(&outcome));
            }
            std::mem::forget((states, outcome));
            return Ok(0);
        }
        drop(lock);
        opened = Some((store, states));
    }
    let loaded = s.load_opened(opened)?;
    report::trace::span("load and analysis", loading);
    let roots = s.roots(loaded.graph(), patterns)?;
    let download = s.remote_download()?;
    let outcome = execute(
        s,
        &loaded,
        roots,
        run_tests,
        check,
        tracer,
        Some(interrupted),
        false,
        download,
    )?;
    let saving = Instant::now();
    let saved = s.save_states(&loaded);
    report::trace::span("save file states", saving);
    if interrupted.load(Ordering::SeqCst) {
        // What was cancelled is not an outcome: nothing to replay or report.
        loaded.finish();
        std::mem::forget(outcome);
        return Ok(INTERRUPTED_EXIT);
    }
    // Outputs left on the remote are not in place: such a build is no outcome to replay.
    if replayable && saved && download == Download::All {
        uptodate::record(
            &s.ws,
            &loaded.store,
            &loaded.states,
            &loaded.analysis,
            &command,
            &outcome,
        );
    }
    if let (Some(t), Some(path)) = (tracer, trace) {
        t.write(path, s.jobs())
            .map_err(|e| Error::Io(format!("Cannot write the trace `{}`: {e}", path.display())))?;
    }
    write_summary(&outcome)?;
    if let Some(path) = junit {
        let own = own_reports(&s.ws.root, loaded.graph(), &outcome);
        std::fs::write(path, junit_xml(&outcome, &own)).map_err(|e| {
            Error::Io(format!(
                "Cannot write the JUnit report `{}`: {e}",
                path.display()
            ))
        })?;
    }
    if s.opts.json {
        report::print_json(&report::json_summary(&outcome));
    }
    let code = if outcome.is_success() { 0 } else { 1 };
    loaded.finish();
    std::mem::forget(outcome);
    Ok(code)
}

/// The exit code of a build stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
pub(crate) const INTERRUPTED_EXIT: u8 = 130;

/// Set by the first Ctrl-C of a build.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C stop the build instead of the process: the first one sets the returned flag,
/// on which no new action starts, running local actions are killed and remote operations
/// are cancelled on the server (`Operations.CancelOperation`), and nothing cancelled is
/// recorded; a second one exits at once.
fn on_interrupt() -> &'static AtomicBool {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED_EXIT));
        }
        report::print_stderr(
            "interrupted: stopping running actions (Ctrl-C again to quit at once)",
        );
    });
    &INTERRUPTED
}

/// Runs the build of `roots` with the console reporter, records history and statistics, and
/// prints the summary line. Cancellable through `cancel`; with `watch`, the reporter stays
/// quiet about cached and skipped targets and no summary line is printed (the watch loop
/// prints its own).
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    s: &Session,
    loaded: &Loaded,
    roots: Vec<Label>,
    run_tests: bool,
    check: bool,
    tracer: Option<&Tracer>,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    watch: bool,
    download: Download,
) -> Result<BuildOutcome, Error> {
    // Shared with other builds; `store gc` waits for it.
    let _lock = loaded.store.lock(false).map_err(|e| s.store_error(e))?;
    // One writer of this workspace's outputs at a time (a second build, a watch beside it).
    let writer = loaded
        .store
        .lock_workspace(&s.ws.key(), |pid| {
            let holder = pid.map_or("another cairn process".to_string(), |p| {
                format!("cairn (pid {p})")
            });
            report::print_stderr(&format!(
                "Waiting for {holder}, which is building this workspace..."
            ));
        })
        .map_err(|e| s.store_error(e))?;
    if writer.previous_died {
        let removed = crate::engine::remove_stale_temps(&s.ws.root, loaded.graph().all_targets());
        if s.opts.verbose && removed > 0 {
            report::print_stderr(&format!(
                "removed {removed} temp files a killed build left beside its outputs"
            ));
        }
    }
    let reporter = ConsoleReporter::new(s.style, s.opts.verbose).for_watch(watch);
    let mode = sandbox_mode(s);
    let warn = |text: &str| reporter.warning(text);
    let local_executor = LocalExecutor {
        store: &loaded.store,
        workspace_root: &s.ws.root,
        mode,
        base: SandboxBase::new(s.ws.sandbox_base(s.env), loaded.store.root()),
        // The running binary even if it was replaced or deleted since (an upgrade during a
        // long watch): every action starts through it.
        helper: match Path::new("/proc/self/exe") {
            exe if exe.exists() => exe.to_path_buf(),
            _ => std::env::current_exe()
                .map_err(|e| Error::Io(format!("Cannot find the cairn binary: {e}")))?,
        },
        on_fallback: &warn,
        effective: OnceLock::new(),
        cancel,
        slots: Slots::new(s.jobs()),
        tmp_size: s.tmp_size()?,
        orphans: Default::default(),
    };
    let tools = ToolResolver::new(s.ws.tool_path(), Some(&loaded.store));
    let setup = s.remote_setup()?;
    let cache = CacheChain::new(&loaded.store, &s.ws.root, setup.remotes, setup.trust, &warn)
        .with_download(download)
        .with_remote_digests(s.opts.json);
    let remote_executor = setup.executor.map(|(server, mode)| RemoteExecutor {
        below: &local_executor,
        server,
        cache: &cache,
        store: &loaded.store,
        strict: mode == RemoteExec::Strict,
        slots: Slots::new(s.remote_jobs()),
        cancel,
        warn: &warn,
        down: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
    });
    let executor: &dyn crate::exec::Executor = match &remote_executor {
        Some(remote) => remote,
        None => &local_executor,
    };
    let workspace_key = s.workspace_key();
    let began = Instant::now();
    let history = HistoryRecorder::new(
        loaded
            .store
            .latest_history(&workspace_key)
            .unwrap_or_default(),
    );
    report::trace::span("load history", began);
    let began = Instant::now();
    let memo = KeyMemo::load(&loaded.store, &workspace_key);
    report::trace::span("load key memo", began);
    let context = BuildContext {
        check,
        unsandboxed: mode == SandboxMode::None,
        recorder: Some(&history),
        tracer,
        cancel,
        memo: Some(&memo),
        ..build_context(s, loaded, &cache, executor, &reporter, &tools)
    };
    let began = Instant::now();
    let mut outcome = run_build(
        &context,
        &BuildOptions {
            roots,
            run_tests,
            jobs: s.jobs(),
            lookahead: if cache.has_remotes() {
                s.remote_jobs()
            } else {
                0
            },
            keep_going: s.opts.keep_going,
        },
    );
    report::trace::span("build", began);
    outcome.tools = tools.resolved();
    outcome.traffic = cache.finish(crate::engine::lookup::UPLOAD_FLUSH);
    // What the file-state check has not reached by now, no one needs (`cairn run` goes on to
    // run a command of the user's: it gets the core).
    loaded.states.stop_checking();
    reporter.finish();
    let began = Instant::now();
    let store = &loaded.store;
    let recorded = store
        .flush_usage()
        .and_then(|()| store.record_history(&workspace_key, &history.into_entries()))
        .and_then(|()| memo.save(store, &workspace_key))
        .and_then(|()| store.record_build(&build_record(&outcome)));
    report::trace::span("record history and statistics", began);
    if let Err(e) = recorded {
        s.warn(&format!(
            "could not record build history and statistics: {e}"
        ));
    }
    if watch {
        return Ok(outcome);
    }
    let fell_back = local_executor.effective.get() == Some(&SandboxMode::Directory)
        && mode == SandboxMode::Namespace;
    print_summary(s, &outcome, mode, fell_back);
    Ok(outcome)
}

/// The sandbox asked for: `--sandbox`, else `[build] sandbox`, else the namespace sandbox.
fn sandbox_mode(s: &Session) -> SandboxMode {
    s.opts
        .sandbox
        .or(s.ws.config.build.sandbox)
        .unwrap_or(SandboxMode::Namespace)
}

fn build_record(outcome: &BuildOutcome) -> cairn_store::BuildRecord {
    cairn_store::BuildRecord {
        executed: outcome.executed() as u64,
        cached: outcome.cached() as u64,
        failed: outcome.count(Status::Failed) as u64,
        wall_ms: outcome.wall_ms,
        saved_ms: outcome.reports.iter().map(|r| r.saved_ms).sum(),
    }
}

/// The summary line, naming the sandbox when it is not the namespace one.
fn print_summary(s: &Session, outcome: &BuildOutcome, mode: SandboxMode, fell_back: bool) {
    let mut summary = report::summary_line(outcome, &s.style);
    if fell_back {
        summary.push_str(" (sandbox: directory, namespaces unavailable)");
    } else if mode == SandboxMode::None {
        summary.push_str(&format!(" (sandbox: {})", mode.as_str()));
    }
    report::print_stderr(&summary);
}

/// Reports a replayed outcome (every target cached) as `execute` reports a build.
fn report_replayed(
    s: &Session,
    store: &cairn_store::Store,
    outcome: &BuildOutcome,
    mode: SandboxMode,
) {
    if s.opts.verbose {
        report::print_stderr(
            "nothing this command depends on changed since it last ran: its outcome is replayed (no analysis, no build)",
        );
    }
    let reporter = ConsoleReporter::new(s.style, s.opts.verbose);
    for report in &outcome.reports {
        reporter.target_finished(report);
    }
    reporter.finish();
    if let Err(e) = store.record_build(&build_record(outcome)) {
        s.warn(&format!("could not record build statistics: {e}"));
    }
    print_summary(s, outcome, mode, false);
}

/// `cairn run LABEL -- ARGS`: builds the target's dependencies, then runs its command in the
/// workspace (its package directory), uncached, with the terminal and the host environment.
pub(crate) fn run(s: &Session, label: &str, args: &[String]) -> Result<u8, Error> {
    let loaded = s.load()?;
    let label = s.label(loaded.graph(), label)?;
    let target = loaded
        .graph()
        .get(&label)
        .expect("label was checked")
        .clone();
    if !target.kind.runs() {
        return Err(Error::Usage(format!(
            "`{label}` is a {}: it has no command to run",
            target.kind.as_str()
        )));
    }
    // The command reads its dependencies' outputs in the workspace: they are downloaded.
    // (Once it runs, Ctrl-C reaches it as well, and cairn waits for it to end.)
    let interrupted = on_interrupt();
    // A test among the dependencies (or a group of tests) is a gate: it runs (or is a cached
    // pass), and the command runs only if every one passed.
    let outcome = execute(
        s,
        &loaded,
        target.deps.clone(),
        true,
        false,
        None,
        Some(interrupted),
        false,
        Download::All,
    )?;
    s.save_states(&loaded);
    if interrupted.load(Ordering::SeqCst) {
        return Ok(INTERRUPTED_EXIT);
    }
    if !outcome.is_success() {
        return Ok(1);
    }
    let package = &target.label.package;
    let rel = |paths: &mut dyn Iterator<Item = &WorkspacePath>| {
        paths
            .map(|p| p.relative_to(package))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // What the dependencies provide, named as in the action's `$DEPS`.
    let deps = rel(&mut loaded.graph().dep_roots(&target).into_iter());
    let depth = if package.is_empty() {
        0
    } else {
        package.split('/').count()
    };
    let root = if depth == 0 {
        ".".to_string()
    } else {
        vec![".."; depth].join("/")
    };
    // `"$@"` passes the arguments through unchanged, whatever they contain.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{} \"$@\"", target.cmd.trim_end()))
        .arg("cairn-run")
        .args(args)
        .current_dir(s.ws.root.join(package))
        .env("SRCS", rel(&mut target.srcs.iter()))
        .env("OUTS", rel(&mut target.outputs()))
        .env("DEPS", deps)
        .env("ROOT", root)
        .envs(&target.env)
        .status()
        .map_err(|e| Error::Io(format!("Cannot run `{label}`: {e}")))?;
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

/// `cairn clean`: removes every declared output from the workspace.
pub(crate) fn clean(s: &Session) -> Result<u8, Error> {
    let loaded = s.load()?;
    s.save_states(&loaded);
    let mut removed = 0usize;
    for (_, path) in loaded.graph().all_outputs() {
        let host = path.to_host(&s.ws.root);
        let result = match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&host),
            Ok(_) => std::fs::remove_file(&host),
            Err(_) => continue,
        };
        result.map_err(|e| Error::Io(format!("Cannot remove `{}`: {e}", host.display())))?;
        removed += 1;
    }
    report::print_stderr(&format!(
        "Removed {removed} materialized output{} (the store is untouched: the next build restores them)",
        if removed == 1 { "" } else { "s" }
    ));
    Ok(0)
}

/// The JUnit files the tests of `outcome` wrote themselves (`reports = True`): a passing or
/// cached test's from its reports directory in the workspace, a failing one's from what the
/// store's logs kept of it.
fn own_reports(
    root: &std::path::Path,
    graph: &crate::graph::Graph,
    outcome: &BuildOutcome,
) -> report::junit::OwnReports {
    use crate::load::builtins::TEST_XML;
    let mut own = report::junit::OwnReports::new();
    for r in outcome.reports.iter().filter(|r| r.kind == Kind::Test) {
        let Some(target) = graph.get(&r.label) else {
            continue;
        };
        let Some(dir) = target.env.get("TEST_OUTPUTS_DIR") else {
            continue;
        };
        let file = match r.failure.as_ref().map(|f| f.reports.as_ref()) {
            Some(Some(kept)) => kept.join(TEST_XML),
            Some(None) => continue,
            None => WorkspacePath::in_package(r.label.package.as_str(), dir)
                .map(|d| d.to_host(root).join(TEST_XML))
                .unwrap_or_default(),
        };
        if let Ok(xml) = std::fs::read_to_string(&file) {
            own.insert(r.label.clone(), xml);
        }
    }
    own
}
