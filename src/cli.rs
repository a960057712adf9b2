//! The command line: clap arguments, turned into engine calls; maps errors to exit codes.
//! The only module (with `report`) that prints.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn_store::{FileStates, Store};
use clap::Parser;

use std::sync::OnceLock;

use crate::action::ToolResolver;
use crate::engine::{AnalysisError, BuildContext, BuildOptions, analyze, run_build};
use crate::error::Error;
use crate::exec::local::LocalExecutor;
use crate::exec::sandbox::{self, SandboxMode};
use crate::graph::{Graph, Kind, Label, Pattern};
use crate::load::LoadError;
use crate::report::{self, ConsoleReporter, Reporter, Style};
use crate::workspace::{HostEnv, Workspace};
use args::{Args, Command, GraphFormat, StoreCommand};

pub fn main() -> ExitCode {
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == sandbox::HELPER_ARG) {
        return sandbox::helper_main(raw.collect());
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let env = HostEnv::read();
    let style = Style::new(args.color, env.no_color);
    match run(&args, &env, style) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_error(&e, &style);
            ExitCode::from(e.exit_code())
        }
    }
}

fn print_error(e: &Error, style: &Style) {
    match e {
        Error::BuildFailed => {}
        Error::Analysis(e) if matches!(**e, AnalysisError::Load(LoadError::Diagnostic(_))) => {
            let AnalysisError::Load(LoadError::Diagnostic(d)) = &**e else {
                unreachable!("matched above")
            };
            report::print_stderr(&report::render_diagnostic(d, style));
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            // `transparent` variants already include their source's text.
            if matches!(other, Error::Store { .. }) {
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
            }
            report::print_stderr(&format!("{} {text}", style.red("error:")));
        }
    }
}

struct Session {
    ws: Workspace,
    store_dir: PathBuf,
    /// The package of the directory cairn was started in, for relative patterns.
    cwd_package: String,
}

fn open_session(args: &Args, env: &HostEnv) -> Result<Session, Error> {
    let start = match &args.directory {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .map_err(|e| Error::Io(format!("Cannot read the current directory: {e}")))?,
    };
    let ws = Workspace::find(&start)?;
    let store_dir = ws.store_dir(env);
    let cwd_package = ws.package_of(&start);
    Ok(Session {
        ws,
        store_dir,
        cwd_package,
    })
}

fn open_store(dir: &Path) -> Result<Store, Error> {
    Store::open(dir).map_err(|source| Error::Store {
        path: dir.to_path_buf(),
        source,
    })
}

fn load_states(s: &Session, store: &Store) -> Result<FileStates, Error> {
    FileStates::load(store.db(), &s.ws.root).map_err(|source| Error::Store {
        path: s.store_dir.clone(),
        source,
    })
}

/// Loads and checks the graph (through the analysis cache).
fn load_graph(
    s: &Session,
    store: &Store,
    states: &FileStates,
    verbose: bool,
) -> Result<Graph, Error> {
    let analysis = analyze(
        &s.ws.root,
        std::slice::from_ref(&s.store_dir),
        store,
        states,
    )?;
    if verbose {
        report::print_stderr(&format!(
            "loaded {} packages: {} evaluated, {} from the analysis cache",
            analysis.packages,
            analysis.evaluated,
            analysis.packages - analysis.evaluated
        ));
    }
    Ok(analysis.graph)
}

fn parse_patterns(texts: &[String], cwd_package: &str) -> Result<Vec<(String, Pattern)>, Error> {
    let texts: Vec<String> = if texts.is_empty() {
        vec!["//...".to_string()]
    } else {
        texts.to_vec()
    };
    texts
        .into_iter()
        .map(|t| Ok((t.clone(), Pattern::parse(&t, cwd_package)?)))
        .collect()
}

fn run(args: &Args, env: &HostEnv, style: Style) -> Result<(), Error> {
    match &args.command {
        Command::Build { patterns, check } => build(args, env, style, patterns, false, *check),
        Command::Test { patterns } => build(args, env, style, patterns, true, false),
        Command::Clean => clean(args, env),
        Command::Graph { patterns, format } => graph(args, env, patterns, *format),
        Command::Store { command } => match command {
            StoreCommand::Stats => store_stats(args, env),
        },
    }
}

fn build(
    args: &Args,
    env: &HostEnv,
    style: Style,
    patterns: &[String],
    run_tests: bool,
    check: bool,
) -> Result<(), Error> {
    let session = open_session(args, env)?;
    let store = open_store(&session.store_dir)?;
    let states = load_states(&session, &store)?;
    let graph = load_graph(&session, &store, &states, args.verbose)?;
    let patterns = parse_patterns(patterns, &session.cwd_package)?;
    let roots: Vec<Label> = graph
        .matching(&patterns)
        .map_err(AnalysisError::from)?
        .into_iter()
        .collect();
    let jobs = args
        .jobs
        .or(session.ws.config.build.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let reporter = ConsoleReporter::new(style, args.verbose);
    let mode = args
        .sandbox
        .or(session.ws.config.build.sandbox)
        .unwrap_or(SandboxMode::Namespace);
    let warn = |text: &str| reporter.warning(text);
    let executor = LocalExecutor {
        store: &store,
        workspace_root: &session.ws.root,
        mode,
        helper: std::env::current_exe()
            .map_err(|e| Error::Io(format!("Cannot find the cairn binary: {e}")))?,
        on_fallback: &warn,
        effective: OnceLock::new(),
    };
    let tools = ToolResolver::new(session.ws.tool_path());
    let context = BuildContext {
        graph: &graph,
        store: &store,
        states: &states,
        executor: &executor,
        reporter: &reporter,
        workspace_root: &session.ws.root,
        tools: &tools,
        host_env: &env.vars,
        check,
    };
    let outcome = run_build(
        &context,
        &BuildOptions {
            roots,
            run_tests,
            jobs,
            keep_going: args.keep_going,
        },
    );
    reporter.finish();
    if let Err(e) = states.save(store.db()).and_then(|()| store.flush_usage()) {
        reporter_warning(&style, &format!("could not save the file-state cache: {e}"));
    }
    let record = cairn_store::BuildRecord {
        executed: outcome.count(crate::engine::Status::Executed) as u64,
        cached: outcome.count(crate::engine::Status::Cached) as u64,
        failed: outcome.count(crate::engine::Status::Failed) as u64,
        wall_ms: outcome.wall_ms,
        saved_ms: outcome.reports.iter().map(|r| r.saved_ms).sum(),
    };
    if let Err(e) = store.db().record_build(&record) {
        reporter_warning(&style, &format!("could not record build statistics: {e}"));
    }
    let mut summary = report::summary_line(&outcome, &style);
    // The sandbox is named when it is not the hermetic default; `none` always.
    match executor.effective.get() {
        Some(SandboxMode::Directory) if mode == SandboxMode::Namespace => {
            summary.push_str(" (sandbox: directory, namespaces unavailable)")
        }
        _ if mode == SandboxMode::None => {
            summary.push_str(&format!(" (sandbox: {})", mode.as_str()))
        }
        _ => {}
    }
    report::print_stderr(&summary);
    if args.json {
        report::print_json(&report::json_summary(&outcome));
    }
    if outcome.is_success() {
        Ok(())
    } else {
        Err(Error::BuildFailed)
    }
}

fn reporter_warning(style: &Style, text: &str) {
    report::print_stderr(&format!("{} {text}", style.yellow("warning:")));
}

fn clean(args: &Args, env: &HostEnv) -> Result<(), Error> {
    let session = open_session(args, env)?;
    let store = open_store(&session.store_dir)?;
    let states = load_states(&session, &store)?;
    let graph = load_graph(&session, &store, &states, args.verbose)?;
    let mut removed = 0usize;
    for (_, path) in graph.all_outputs() {
        let host = path.to_host(&session.ws.root);
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
    Ok(())
}

fn graph(
    args: &Args,
    env: &HostEnv,
    patterns: &[String],
    format: GraphFormat,
) -> Result<(), Error> {
    let session = open_session(args, env)?;
    let store = open_store(&session.store_dir)?;
    let states = load_states(&session, &store)?;
    let graph = load_graph(&session, &store, &states, args.verbose)?;
    let _ = states.save(store.db());
    let patterns = parse_patterns(patterns, &session.cwd_package)?;
    let roots = graph.matching(&patterns).map_err(AnalysisError::from)?;
    let labels = graph.closure_in_order(&roots);
    let out = match format {
        GraphFormat::Json => {
            let nodes: Vec<serde_json::Value> = labels
                .iter()
                .map(|l| {
                    let t = graph.get(l).expect("closure labels exist");
                    serde_json::json!({
                        "label": l.to_string(),
                        "kind": t.kind.as_str(),
                        "deps": t.deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                        "srcs": t.srcs.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                        "outs": t.outputs().map(|s| s.as_str()).collect::<Vec<_>>(),
                        "location": t.location.to_string(),
                    })
                })
                .collect();
            format!("{}\n", serde_json::json!({ "targets": nodes }))
        }
        GraphFormat::Dot => {
            let mut dot = String::from("digraph cairn {\n  rankdir=LR;\n  node [shape=box];\n");
            for l in &labels {
                let t = graph.get(l).expect("closure labels exist");
                let shape = match t.kind {
                    Kind::Test => "ellipse",
                    Kind::Filegroup => "folder",
                    Kind::Group => "diamond",
                    Kind::Action | Kind::FixedOutput => "box",
                };
                dot.push_str(&format!("  \"{l}\" [shape={shape}];\n"));
                for d in &t.deps {
                    dot.push_str(&format!("  \"{l}\" -> \"{d}\";\n"));
                }
            }
            dot.push_str("}\n");
            dot
        }
    };
    report::print_stdout(&out);
    Ok(())
}

fn store_stats(args: &Args, env: &HostEnv) -> Result<(), Error> {
    let session = open_session(args, env)?;
    let store = open_store(&session.store_dir)?;
    let stats = store.stats().map_err(|source| Error::Store {
        path: session.store_dir.clone(),
        source,
    })?;
    let r = stats.recent;
    let runs = r.sum.executed + r.sum.cached;
    let hit_rate = if runs == 0 {
        0.0
    } else {
        100.0 * r.sum.cached as f64 / runs as f64
    };
    if args.json {
        report::print_json(&serde_json::json!({
            "path": session.store_dir.display().to_string(),
            "blobs": stats.blobs,
            "blob_bytes": stats.blob_bytes,
            "action_results": stats.actions,
            "recent_builds": r.builds,
            "executed": r.sum.executed,
            "cached": r.sum.cached,
            "hit_rate": hit_rate,
            "saved_ms": r.sum.saved_ms,
        }));
        return Ok(());
    }
    report::print_stdout(&format!(
        "store:          {}\nblobs:          {} ({})\naction results: {}\nrecent builds:  {} ({} executed, {} cached: {:.1}% hit rate, {} of run time saved)\n",
        session.store_dir.display(),
        stats.blobs,
        human_bytes(stats.blob_bytes),
        stats.actions,
        r.builds,
        r.sum.executed,
        r.sum.cached,
        hit_rate,
        crate::exec::local::format_ms(r.sum.saved_ms),
    ));
    Ok(())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
