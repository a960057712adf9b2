//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exec::sandbox::SandboxMode;
use crate::report::ColorChoice;

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
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// The sandbox actions run in (default: cairn.toml's `sandbox`, else namespace).
    #[arg(long, global = true, value_enum)]
    pub sandbox: Option<SandboxMode>,
    /// Also show cached targets.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
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
    },
    /// Build, then run the test targets; cached passes are not re-run.
    Test {
        #[arg(value_name = "PATTERN")]
        patterns: Vec<String>,
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
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Sizes, counts, hit rate and time saved over recent builds.
    Stats,
}
