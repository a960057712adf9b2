//! Raw arguments → validated options (ripgrep's low and high arguments): clap's types end
//! here. Commands read `Options`; nothing below `cli` sees `Args`.

use std::path::PathBuf;

use super::args::{Args, ColorArg, DownloadArg, RemoteExecArg, SandboxArg};
use crate::engine::lookup::Download;
use crate::report::ColorChoice;
use crate::workspace::SandboxMode;

/// The global options of one invocation, checked and in the engine's terms.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `-C DIR`: run as if started there.
    pub directory: Option<PathBuf>,
    /// `-j N` (0 is refused by clap's parser; `None`: the configured default, else cores).
    pub jobs: Option<usize>,
    pub keep_going: bool,
    /// `--json`: a machine-readable summary on stdout.
    pub json: bool,
    pub color: ColorChoice,
    /// `--sandbox` (`None`: `cairn.toml`'s, else the namespace sandbox).
    pub sandbox: Option<SandboxMode>,
    pub verbose: bool,
    pub remote: RemoteChoice,
}

/// What the command line says about the remote cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteChoice {
    /// `--remote URL`.
    pub url: Option<String>,
    /// `--no-remote`.
    pub disabled: bool,
    /// `--remote-upload` (true) or `--no-remote-upload` (false).
    pub upload: Option<bool>,
    /// `--remote-download`.
    pub download: Option<Download>,
    /// `--remote-jobs`.
    pub jobs: Option<usize>,
    /// `--remote-exec[=on|off|strict]`.
    pub execute: Option<RemoteExec>,
}

/// Whether actions run on the remote executor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum RemoteExec {
    /// Here only.
    #[default]
    Off,
    /// Remotely; an action the remote cannot run (down, rejected) runs here, with a warning.
    On,
    /// Remotely; an action the remote cannot run fails with the server's message.
    Strict,
}

impl Options {
    pub fn from_args(args: &Args) -> Options {
        Options {
            directory: args.directory.clone(),
            jobs: args.jobs,
            keep_going: args.keep_going,
            json: args.json,
            color: match args.color {
                ColorArg::Auto => ColorChoice::Auto,
                ColorArg::Always => ColorChoice::Always,
                ColorArg::Never => ColorChoice::Never,
            },
            sandbox: args.sandbox.map(|s| match s {
                SandboxArg::Namespace => SandboxMode::Namespace,
                SandboxArg::Directory => SandboxMode::Directory,
                SandboxArg::None => SandboxMode::None,
            }),
            verbose: args.verbose,
            remote: RemoteChoice {
                url: args.remote.clone(),
                disabled: args.no_remote,
                upload: if args.remote_upload {
                    Some(true)
                } else if args.no_remote_upload {
                    Some(false)
                } else {
                    None
                },
                download: args.remote_download.map(|d| match d {
                    DownloadArg::All => Download::All,
                    DownloadArg::Toplevel => Download::Toplevel,
                    DownloadArg::Minimal => Download::Minimal,
                }),
                jobs: args.remote_jobs,
                execute: args.remote_exec.map(|e| match e {
                    RemoteExecArg::On => RemoteExec::On,
                    RemoteExecArg::Off => RemoteExec::Off,
                    RemoteExecArg::Strict => RemoteExec::Strict,
                }),
            },
        }
    }
}
