//! cairn: a reproducible, content-addressed build system.

pub(crate) mod action;
#[doc(hidden)]
pub mod bench;
pub mod cli;
pub(crate) mod engine;
pub(crate) mod error;
pub(crate) mod exec;
pub(crate) mod graph;
pub(crate) mod load;
pub(crate) mod report;
pub(crate) mod vcs;
pub(crate) mod watch;
pub(crate) mod workspace;
