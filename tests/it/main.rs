//! Integration tests: run the real `cairn` binary on real workspaces in temp directories, each
//! with its own temp store.

mod build;
mod ci;
mod errors;
mod exec;
mod hostile;
mod mimic;
mod remote;
mod remote_exec;
mod sandbox;
mod toolchains;
mod uptodate;
mod util;
mod watch;
mod why;
