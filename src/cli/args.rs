//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorArg {
    Auto,
    Always,
    Never,
}

/// `--sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SandboxArg {
    /// Linux namespaces; falls back to `directory` (saying so once) where unavailable.
    Namespace,
    /// A fresh directory holding only the inputs.
    Directory,
    /// Run in the workspace itself: not hermetic, must be chosen explicitly.
    None,
}

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "A reproducible, content-addressed build system",
    after_help = "Patterns: //... (everything), //apps/... (a subtree), //apps/web:all (a package), //apps/web:build (one target), :build (in the current directory's package)"
)]
pub(crate) struct Args {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Run at most N actions at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", global = true, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub jobs: Option<usize>,
    /// Keep building targets that do not depend on a failed one.
    #[arg(long, global = true)]
    pub keep_going: bool,
    /// Print a machine-readable summary on stdout (human output stays on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// When to use colours (honours NO_COLOR).
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// The sandbox actions run in (default: cairn.toml's `sandbox`, else namespace).
    #[arg(long, global = true, value_enum)]
    pub sandbox: Option<SandboxArg>,
    /// Also show cached targets.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Use this remote cache (overrides cairn.toml's `[remote] url`), e.g. file:///shared/dir.
    #[arg(long, global = true, value_name = "URL", conflicts_with = "no_remote")]
    pub remote: Option<String>,
    /// Use no remote cache, whatever cairn.toml says.
    #[arg(long, global = true)]
    pub no_remote: bool,
    /// Upload new results to the remote (default: when CI is set).
    #[arg(long, global = true, conflicts_with = "no_remote_upload")]
    pub remote_upload: bool,
    /// Never upload to the remote.
    #[arg(long, global = true)]
    pub no_remote_upload: bool,
    /// Which outputs of remote hits are downloaded: all, those of the targets named
    /// (toplevel), or only those an action run here reads (minimal). Default: cairn.toml's
    /// `[remote] download`, else all.
    #[arg(long, global = true, value_enum, value_name = "WHICH")]
    pub remote_download: Option<DownloadArg>,
    /// How many targets may wait on the remote at once (lookups, downloads), beyond `-j`
    /// (default: cairn.toml's `[remote] jobs`, else 32).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub remote_jobs: Option<usize>,
    /// Run actions on the remote's REAPI executor (`Execution.Execute`); `strict` fails an
    /// action the remote cannot run instead of running it here. `off` overrides cairn.toml's
    /// `[remote] execute`.
    #[arg(long, global = true, value_enum, value_name = "MODE", num_args = 0..=1, default_missing_value = "on", require_equals = true)]
    pub remote_exec: Option<RemoteExecArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RemoteExecArg {
    On,
    Off,
    Strict,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DownloadArg {
    All,
    Toplevel,
    Minimal,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build targets (default: //...); tests are not run.
    Build {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Re-run cached actions and report every one whose outputs differ (non-reproducible).
        #[arg(long)]
        check: bool,
        /// Write a Chrome trace (open it in Perfetto or chrome://tracing).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Append a Markdown summary of the run to FILE (default: `$GITHUB_STEP_SUMMARY`).
        #[arg(long, value_name = "FILE")]
        summary_md: Option<PathBuf>,
    },
    /// Build, then run the test targets; cached passes are not re-run.
    Test {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Write a JUnit XML report of the test targets.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write a Chrome trace (open it in Perfetto or chrome://tracing).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Append a Markdown summary of the run to FILE (default: `$GITHUB_STEP_SUMMARY`).
        #[arg(long, value_name = "FILE")]
        summary_md: Option<PathBuf>,
    },
    /// Build a target's dependencies, then run its command in the workspace, uncached, with
    /// the terminal attached (deploy, serve); its exit code is cairn's.
    Run {
        label: String,
        /// Arguments appended to the command.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Explain why a target's next build is (or is not) a cache miss.
    Why { label: String },
    /// List the targets whose actions differ between a git revision and the working tree.
    Affected {
        /// A git revision (commit, branch, tag).
        #[arg(long, value_name = "REF")]
        since: String,
        /// `lines` (one label per line), `github-matrix` (`{"include":[{"target":…,
        /// "package":…}]}` for a job matrix), or `github-matrix-packages` (one entry per
        /// package, its targets space-separated).
        #[arg(long, value_enum, default_value_t = AffectedFormat::Lines)]
        format: AffectedFormat,
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Build (and with --test, test), then rebuild what each edit affects, until Ctrl-C.
    Watch {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Also run the tests.
        #[arg(long)]
        test: bool,
        /// Milliseconds to wait for a burst of edits to settle.
        #[arg(long, value_name = "MS", default_value_t = 50)]
        debounce: u64,
        /// Poll the file system instead of using inotify.
        #[arg(long)]
        poll: bool,
    },
    /// Remove materialized outputs from the workspace (the store is untouched).
    Clean,
    /// Print the target graph.
    Graph {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Graph queries.
    Query {
        #[command(subcommand)]
        query: QueryCommand,
    },
    /// Inspect and maintain the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Move results between stores as one file (for CI caches such as `actions/cache`).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Write the results of the targets' current actions (and every blob they name) to FILE,
    /// a tar+zstd archive; the same results give the same bytes.
    Export {
        file: PathBuf,
        /// Targets whose results go in (default: //...).
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Verify an archive whole, then add its results and blobs to the store; a malformed
    /// archive is refused (exit 2) and nothing is written.
    Import { file: PathBuf },
    /// Upload the results the targets' current actions have in the store to the remote,
    /// whatever `[remote] upload` says (a CI job that only builds pushes at its end).
    Push {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Fetch from the remote the results of the targets' current actions that the store
    /// lacks, with their blobs; nothing is built or written in the workspace.
    Pull {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AffectedFormat {
    Lines,
    GithubMatrix,
    GithubMatrixPackages,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueryCommand {
    /// What LABEL depends on (transitively).
    Deps {
        label: String,
        /// Only this many levels.
        #[arg(long)]
        depth: Option<usize>,
    },
    /// What depends on LABEL (transitively).
    Rdeps {
        label: String,
        #[arg(long)]
        depth: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Sizes, counts, hit rate and time saved over recent builds.
    Stats,
    /// Shrink the store: evict the least recently used results (and blobs only they use).
    Gc {
        /// Keep the store at most this large (e.g. 10GiB, 500MiB).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Evict results not used for this long (e.g. 30d, 12h).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
    /// Check the database and re-hash every blob; remove corrupt blobs and the results that
    /// use them or name missing ones. Exit 1 if any.
    Verify {
        /// If the database is damaged, move it aside and rebuild it, keeping every result it
        /// can still read (blobs are never touched).
        #[arg(long)]
        repair: bool,
    },
    /// Make a new ed25519 key for signing uploaded results: writes the secret key to PATH
    /// (mode 0600) and prints the public key for `trusted_keys`, both as `NAME:base64`.
    Keygen {
        /// The key's name (e.g. `ci-1`), part of both keys.
        name: String,
        /// Where the secret key goes (never overwritten).
        #[arg(long, value_name = "PATH")]
        secret_file: PathBuf,
    },
}
