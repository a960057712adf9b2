//! The command line: clap arguments turned into engine calls, one file per command; maps
//! errors to exit codes. With `report`, the only code that prints.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod args;
mod build;
mod cache;
mod graph;
mod options;
mod store;
mod watch;
mod watchdog;
mod why;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cairn_store::{FileStates, Store};
use clap::Parser;

use crate::engine::{Analysis, AnalysisError, analyze};
use crate::error::Error;
use crate::exec::sandbox;
use crate::graph::{Graph, Label, Pattern};
use crate::load::LoadError;
use crate::report::{self, Style};
use crate::workspace::{HostEnv, Workspace};
use args::{AffectedFormat, Args, CacheCommand, Command, QueryCommand, StoreCommand};
use options::Options;
use options::RemoteExec;

pub fn main() -> ExitCode {
    let mut raw = std::env::args_os().skip(1);
    match raw.next() {
        Some(a) if a == sandbox::HELPER_ARG => return sandbox::helper_main(raw.collect()),
        _ => {}
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let env = HostEnv::read();
    let opts = Options::from_args(&args);
    let style = Style::new(opts.color, env.no_color);
    match run(&args, opts, &env, style) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e, &style);
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: &Args, opts: Options, env: &HostEnv, style: Style) -> Result<u8, Error> {
    // Needs no workspace.
    if let Command::Store {
        command: StoreCommand::Keygen { name, secret_file },
    } = &args.command
    {
        return store::keygen(name, secret_file);
    }
    let s = Session::open(opts, env, style)?;
    match &args.command {
        Command::Build {
            patterns,
            check,
            trace,
            summary_md,
        } => build::build(
            &s,
            patterns,
            build::Reports {
                trace: trace.as_deref(),
                junit: None,
                summary_md: summary_md.as_deref(),
            },
            false,
            *check,
        ),
        Command::Test {
            patterns,
            junit,
            trace,
            summary_md,
        } => build::build(
            &s,
            patterns,
            build::Reports {
                trace: trace.as_deref(),
                junit: junit.as_deref(),
                summary_md: summary_md.as_deref(),
            },
            true,
            false,
        ),
        Command::Run { label, args } => build::run(&s, label, args),
        Command::Clean => build::clean(&s),
        Command::Watch {
            patterns,
            test,
            debounce,
            poll,
        } => watch::watch(&s, patterns, *test, *debounce, *poll),
        Command::Why { label } => why::why(&s, label),
        Command::Affected {
            since,
            format,
            patterns,
        } => why::affected(&s, since, *format, patterns),
        Command::Graph { patterns, format } => graph::graph(&s, patterns, *format),
        Command::Query { query } => match query {
            QueryCommand::Deps { label, depth } => graph::query(&s, label, *depth, false),
            QueryCommand::Rdeps { label, depth } => graph::query(&s, label, *depth, true),
        },
        Command::Cache { command } => match command {
            CacheCommand::Export { file, patterns } => cache::export(&s, file, patterns),
            CacheCommand::Import { file } => cache::import(&s, file),
            CacheCommand::Push { patterns } => cache::push(&s, patterns),
            CacheCommand::Pull { patterns } => cache::pull(&s, patterns),
        },
        Command::Store { command } => match command {
            StoreCommand::Stats => store::stats(&s),
            StoreCommand::Gc {
                max_size,
                older_than,
            } => store::gc(&s, max_size.as_deref(), older_than.as_deref()),
            StoreCommand::Verify { repair } => store::verify(&s, *repair),
            StoreCommand::Keygen { .. } => unreachable!("handled before the workspace is opened"),
        },
    }
}

fn print_error(e: &Error, style: &Style) {
    if let Error::Analysis(inner) = e
        && let AnalysisError::Load(LoadError::Diagnostic(d)) = &**inner
    {
        report::print_stderr(&report::render_diagnostic(d, style));
        return;
    }
    let mut text = e.to_string();
    // `transparent` variants already include their source's text.
    if matches!(e, Error::Store { .. }) {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            // Most messages carry their cause's text already: say each once.
            let said = s.to_string();
            if !text.contains(&said) {
                text.push_str(&format!(": {said}"));
            }
            source = s.source();
        }
    }
    report::print_stderr(&format!("{} {text}", style.red("error:")));
}

/// One invocation: the workspace, its settings, and how to print.
pub(crate) struct Session<'a> {
    pub opts: Options,
    pub env: &'a HostEnv,
    pub style: Style,
    pub ws: Workspace,
    pub store_dir: PathBuf,
    /// The package of the directory cairn was started in, for relative patterns and labels.
    pub cwd_package: String,
}

/// A loaded workspace: store, file states and the checked graph.
pub(crate) struct Loaded {
    pub store: Store,
    pub states: Arc<FileStates>,
    pub analysis: Analysis,
}

impl Loaded {
    pub fn graph(&self) -> &Graph {
        &self.analysis.graph
    }

    /// Ends a one-shot command's use of the workspace: the store is closed, but the graph and
    /// file states are left to the process exit (freeing their tens of thousands of
    /// allocations one by one would only delay it).
    pub fn finish(self) {
        let Loaded {
            store,
            states,
            analysis,
        } = self;
        states.stop_checking();
        drop(store);
        std::mem::forget((states, analysis));
    }
}

impl<'a> Session<'a> {
    fn open(opts: Options, env: &'a HostEnv, style: Style) -> Result<Session<'a>, Error> {
        let start = match &opts.directory {
            Some(dir) => dir.clone(),
            None => std::env::current_dir()
                .map_err(|e| Error::Io(format!("Cannot read the current directory: {e}")))?,
        };
        let ws = Workspace::find(&start)?;
        let store_dir = ws.store_dir(env);
        let cwd_package = ws.package_of(&start);
        Ok(Session {
            opts,
            env,
            style,
            ws,
            store_dir,
            cwd_package,
        })
    }

    pub fn store_error(&self, source: cairn_store::StoreError) -> Error {
        Error::Store {
            path: self.store_dir.clone(),
            source,
        }
    }

    pub fn open_store(&self) -> Result<Store, Error> {
        Store::open(&self.store_dir).map_err(|e| self.store_error(e))
    }

    /// Opens the store and loads the graph (through the analysis cache).
    pub fn load(&self) -> Result<Loaded, Error> {
        self.load_opened(None)
    }

    /// `load`, with the store and the workspace's file states already opened (and perhaps
    /// checked in part), or opening them.
    pub fn load_opened(&self, opened: Option<(Store, Arc<FileStates>)>) -> Result<Loaded, Error> {
        let began = std::time::Instant::now();
        let (store, preloaded) = match opened {
            Some((store, states)) => (store, Some(states)),
            None => (self.open_store()?, None),
        };
        report::trace::span("open store", began);
        // The loaded file states are checked against the file system on a thread of their
        // own while the workspace is analysed, and on through the build: a source or output
        // found unchanged then costs the build no `stat`. The thread ends with the process
        // (or when `stop_checking` is called), and never writes anything.
        let load_states = || {
            let states = match preloaded {
                Some(states) => states,
                None => Arc::new(store.load_file_states(&self.ws.root)?),
            };
            let checking = Arc::clone(&states);
            let spawned = std::thread::Builder::new()
                .name("check file states".into())
                .spawn(move || {
                    report::trace::Tracer::set_track(99);
                    let began = std::time::Instant::now();
                    checking.check_unchanged();
                    report::trace::span("check file states", began);
                });
            if spawned.is_err() {
                // Only a lost head start: lookups `stat` as usual.
                states.stop_checking();
            }
            Ok(states)
        };
        let (limit_time, limit_memory) = self.eval_limits()?;
        let watchdog =
            watchdog::Watchdog::start(limit_time, limit_memory, self.style.red("error:"));
        let (analysis, states) = analyze(
            &self.ws.root,
            std::slice::from_ref(&self.store_dir),
            &self.ws.tool_path(),
            &store,
            load_states,
        )
        .map_err(|e| self.store_error(e))??;
        drop(watchdog);
        if self.opts.verbose {
            report::print_stderr(&format!(
                "loaded {} packages: {} evaluated, {} from the analysis cache",
                analysis.packages,
                analysis.evaluated.len(),
                analysis.packages - analysis.evaluated.len()
            ));
        }
        Ok(Loaded {
            store,
            states,
            analysis,
        })
    }

    /// Saves what loading and building learnt about files; false (after a warning) if that
    /// failed.
    pub fn save_states(&self, loaded: &Loaded) -> bool {
        match loaded.store.save_file_states(&loaded.states) {
            Ok(()) => true,
            Err(e) => {
                self.warn(&format!("could not save the file-state cache: {e}"));
                false
            }
        }
    }

    pub fn warn(&self, text: &str) {
        report::print_stderr(&format!("{} {text}", self.style.yellow("warning:")));
    }

    /// The key under which this workspace's history is kept.
    pub fn workspace_key(&self) -> String {
        self.ws.key()
    }

    pub fn patterns(&self, texts: &[String]) -> Result<Vec<(String, Pattern)>, Error> {
        let texts: Vec<String> = if texts.is_empty() {
            vec!["//...".to_string()]
        } else {
            texts.to_vec()
        };
        texts
            .into_iter()
            .map(|t| Ok((t.clone(), Pattern::parse(&t, &self.cwd_package)?)))
            .collect()
    }

    /// The targets `texts` (command-line patterns, default `//...`) match in `graph`.
    pub fn roots(&self, graph: &Graph, texts: &[String]) -> Result<Vec<Label>, Error> {
        Ok(graph
            .matching(&self.patterns(texts)?)
            .map_err(crate::engine::AnalysisError::from)?
            .into_iter()
            .collect())
    }

    /// A label given on the command line, which must name a target.
    pub fn label(&self, graph: &Graph, text: &str) -> Result<Label, Error> {
        let label = Label::parse(text, &self.cwd_package)?;
        if graph.get(&label).is_none() {
            return Err(Error::Usage(format!(
                "No target `{label}`{}",
                graph.suggest(&label)
            )));
        }
        Ok(label)
    }

    /// The remotes (see `remote_list`) and how their results are signed and trusted:
    /// `signing_key` (a file, or `env:VAR` holding the key) and `trusted_keys`.
    pub fn remote_setup(&self) -> Result<RemoteSetup, Error> {
        let config = &self.ws.config.remote;
        let mut trust = crate::engine::lookup::Trust::default();
        let (remotes, executor) = self.remote_list()?;
        let uploads = remotes.iter().any(|r| r.upload);
        let unset_key = config
            .signing_key
            .as_deref()
            .and_then(|s| s.strip_prefix("env:"))
            .is_some_and(|var| self.env.vars.get(var).is_none_or(|v| v.trim().is_empty()));
        // A machine that does not upload needs no key: CI sets the variable, laptops and
        // pull-request jobs do not.
        if let Some(source) = config
            .signing_key
            .as_ref()
            .filter(|_| uploads || !unset_key)
        {
            let text = match source.strip_prefix("env:") {
                Some(var) => self.env.vars.get(var).filter(|v| !v.trim().is_empty()).cloned().ok_or_else(|| {
                    Error::Usage(format!(
                        "`signing_key` in `[remote]` of cairn.toml names the environment variable `{var}`, which is not set (or empty): results cannot be uploaded unsigned (set it, or pass `--no-remote-upload`)"
                    ))
                })?,
                None => {
                    let path = self.ws.root.join(source);
                    std::fs::read_to_string(&path).map_err(|e| {
                        Error::Usage(format!(
                            "Cannot read the signing key `{}` (`signing_key` in cairn.toml): {e}",
                            path.display()
                        ))
                    })?
                }
            };
            let key: cairn_store::SigningKey = text
                .parse()
                .map_err(|e: cairn_store::KeyError| Error::Usage(e.to_string()))?;
            trust.signer = Some(Arc::new(key));
        }
        if let Some(keys) = &config.trusted_keys {
            let parsed = keys
                .iter()
                .map(|k| k.parse::<cairn_store::PublicKey>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Usage(format!("In `trusted_keys` of cairn.toml: {e}")))?;
            trust.trusted = Some(Arc::new(parsed));
        }
        Ok(RemoteSetup {
            remotes,
            trust,
            executor,
        })
    }

    /// Whether actions run remotely: `--remote-exec[=MODE]`, else `[remote] execute`.
    pub fn remote_exec(&self) -> Result<RemoteExec, Error> {
        use crate::workspace::ExecuteSetting;
        if let Some(mode) = self.opts.remote.execute {
            return Ok(mode);
        }
        match &self.ws.config.remote.execute {
            None | Some(ExecuteSetting::Enabled(false)) => Ok(RemoteExec::Off),
            Some(ExecuteSetting::Enabled(true)) => Ok(RemoteExec::On),
            Some(ExecuteSetting::Mode(m)) if m == "strict" => Ok(RemoteExec::Strict),
            Some(ExecuteSetting::Mode(other)) => Err(Error::Usage(format!(
                "Invalid `execute` in `[remote]` of cairn.toml: `{other}` (expected true, false or \"strict\")"
            ))),
        }
    }

    /// Whether this invocation has a remote cache (`--remote`, or `[remote] url` without
    /// `--no-remote`).
    pub fn has_remote(&self) -> bool {
        self.remote_url().is_some()
    }

    /// The remote cache's URL: `--remote URL`, else `[remote] url`, unless `--no-remote`.
    fn remote_url(&self) -> Option<&String> {
        let choice = &self.opts.remote;
        match (&choice.url, choice.disabled) {
            (_, true) => None,
            (Some(url), false) => Some(url),
            (None, false) => self.ws.config.remote.url.as_ref(),
        }
    }

    /// Which outputs of remote hits are downloaded: `--remote-download`, else `[remote]
    /// download`, else all.
    pub fn remote_download(&self) -> Result<crate::engine::lookup::Download, Error> {
        use crate::engine::lookup::Download;
        if let Some(download) = self.opts.remote.download {
            return Ok(download);
        }
        match self.ws.config.remote.download.as_deref() {
            None | Some("all") => Ok(Download::All),
            Some("toplevel") => Ok(Download::Toplevel),
            Some("minimal") => Ok(Download::Minimal),
            Some(other) => Err(Error::Usage(format!(
                "Invalid `download` in `[remote]` of cairn.toml: `{other}` (expected `all`, `toplevel` or `minimal`)"
            ))),
        }
    }

    /// The remote caches of this invocation: `--remote URL`, else `[remote] url`, unless
    /// `--no-remote`; uploading with `--remote-upload`, `[remote] upload`, else when `CI` is
    /// set.
    #[allow(clippy::type_complexity)]
    fn remote_list(
        &self,
    ) -> Result<
        (
            Vec<crate::engine::lookup::Remote>,
            Option<(Arc<dyn cairn_store::RemoteExecution>, RemoteExec)>,
        ),
        Error,
    > {
        let choice = &self.opts.remote;
        let config = &self.ws.config.remote;
        let execute = self.remote_exec()?;
        let Some(url) = self.remote_url() else {
            if execute != RemoteExec::Off {
                return Err(Error::Usage(
                    "Remote execution needs a remote: set `[remote] url` in cairn.toml or pass `--remote grpc://host:port`".to_string(),
                ));
            }
            return Ok((Vec::new(), None));
        };
        let mut options = cairn_store::RemoteOptions {
            instance_name: config.instance_name.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(text) = &config.timeout {
            let ms = crate::load::builtins::parse_timeout(text).map_err(|e| {
                Error::Usage(format!(
                    "Invalid `timeout` in `[remote]` of cairn.toml: {e}"
                ))
            })?;
            options.timeout = std::time::Duration::from_millis(ms);
        }
        let pem = |key: &str, path: &Option<String>| -> Result<Option<Vec<u8>>, Error> {
            let Some(path) = path else {
                return Ok(None);
            };
            let full = self.ws.root.join(path);
            std::fs::read(&full).map(Some).map_err(|e| {
                Error::Usage(format!(
                    "Cannot read `{key}` of `[remote]` in cairn.toml ({}): {e}",
                    full.display()
                ))
            })
        };
        options.tls.ca = pem("tls_ca", &config.tls_ca)?;
        match (
            pem("tls_client_cert", &config.tls_client_cert)?,
            pem("tls_client_key", &config.tls_client_key)?,
        ) {
            (Some(cert), Some(key)) => options.tls.client = Some((cert, key)),
            (None, None) => {}
            _ => {
                return Err(Error::Usage(
                    "`tls_client_cert` and `tls_client_key` in `[remote]` of cairn.toml go together: set both or neither".to_string(),
                ));
            }
        }
        for (name, value) in &config.headers {
            let value = match value.strip_prefix("env:") {
                Some(var) => self.env.vars.get(var).filter(|v| !v.trim().is_empty()).cloned().ok_or_else(|| {
                    Error::Usage(format!(
                        "Header `{name}` in `[remote]` of cairn.toml names the environment variable `{var}`, which is not set"
                    ))
                })?,
                None => value.clone(),
            };
            options.headers.push((name.clone(), value));
        }
        let upload = choice.upload.or(config.upload).unwrap_or(self.env.ci);
        if execute != RemoteExec::Off {
            let server =
                cairn_store::open_grpc(url, &options).map_err(|e| Error::Usage(e.to_string()))?;
            let cache: Arc<dyn cairn_store::RemoteCache> = server.clone();
            let remote = crate::engine::lookup::Remote { cache, upload };
            return Ok((vec![remote], Some((server, execute))));
        }
        let cache =
            cairn_store::open_remote(url, &options).map_err(|e| Error::Usage(e.to_string()))?;
        Ok((vec![crate::engine::lookup::Remote { cache, upload }], None))
    }

    /// How many targets may wait on the remote at once beyond `-j`: `--remote-jobs`, else
    /// `[remote] jobs`, else 32 (a lookup is a round trip, not a core).
    pub fn remote_jobs(&self) -> usize {
        self.opts
            .remote
            .jobs
            .or(self.ws.config.remote.jobs)
            .unwrap_or(DEFAULT_REMOTE_JOBS)
    }

    /// `[build] eval_time_limit` and `eval_memory_limit` (60 s and 4 GiB unless set).
    pub fn eval_limits(&self) -> Result<(std::time::Duration, u64), Error> {
        let build = &self.ws.config.build;
        let time = match &build.eval_time_limit {
            None => std::time::Duration::from_secs(60),
            Some(text) => cairn_store::parse_age(text).ok_or_else(|| {
                Error::Usage(format!(
                    "Invalid `[build] eval_time_limit` `{text}` in cairn.toml (expected a time such as `60s` or `5m`)"
                ))
            })?,
        };
        let memory = match &build.eval_memory_limit {
            None => 4 << 30,
            Some(text) => cairn_store::parse_size(text).ok_or_else(|| {
                Error::Usage(format!(
                    "Invalid `[build] eval_memory_limit` `{text}` in cairn.toml (expected a size such as `4GiB`)"
                ))
            })?,
        };
        Ok((time, memory))
    }

    /// `[build] tmp_size` in bytes (4 GiB unless set).
    pub fn tmp_size(&self) -> Result<u64, Error> {
        match &self.ws.config.build.tmp_size {
            None => Ok(DEFAULT_TMP_SIZE),
            Some(text) => cairn_store::parse_size(text).ok_or_else(|| {
                Error::Usage(format!(
                    "Invalid `[build] tmp_size` `{text}` in cairn.toml (expected a size such as `4GiB` or `512MiB`)"
                ))
            }),
        }
    }

    pub fn jobs(&self) -> usize {
        self.opts
            .jobs
            .or(self.ws.config.build.jobs)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

const DEFAULT_REMOTE_JOBS: usize = 32;

/// The default bound of an action's in-memory `/tmp` in the namespace sandbox: large for a
/// bundler, small enough that a runaway action cannot take the machine's memory.
const DEFAULT_TMP_SIZE: u64 = 4 << 30;

/// The remotes of an invocation, how their results are trusted, and the remote executor (the
/// first remote, when remote execution is on).
pub(crate) struct RemoteSetup {
    pub remotes: Vec<crate::engine::lookup::Remote>,
    pub trust: crate::engine::lookup::Trust,
    pub executor: Option<(Arc<dyn cairn_store::RemoteExecution>, RemoteExec)>,
}

/// The build context shared by build, run, watch and the dry run of `why`: callers set what
/// differs (check, recorder, restore, tracer, cancellation) with struct update syntax.
pub(crate) fn build_context<'a>(
    s: &'a Session,
    loaded: &'a Loaded,
    cache: &'a crate::engine::CacheChain<'a>,
    executor: &'a dyn crate::exec::Executor,
    reporter: &'a dyn report::Reporter,
    tools: &'a crate::action::ToolResolver<'a>,
) -> crate::engine::BuildContext<'a> {
    crate::engine::BuildContext {
        graph: loaded.graph(),
        cache,
        states: &loaded.states,
        executor,
        reporter,
        workspace_root: &s.ws.root,
        tools,
        host_env: &s.env.vars,
        platform: &s.ws.config.remote.platform,
        check: false,
        restore: true,
        unsandboxed: false,
        recorder: None,
        tracer: None,
        cancel: None,
        memo: None,
    }
}

pub(crate) use report::human_bytes;

/// The latest recorded status per label, for colouring graphs.
pub(crate) fn last_statuses(s: &Session, store: &Store) -> BTreeMap<String, String> {
    store
        .latest_history(&s.workspace_key())
        .map(|m| m.into_iter().map(|(l, (_, st))| (l, st)).collect())
        .unwrap_or_default()
}
