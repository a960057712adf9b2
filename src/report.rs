//! Everything cairn prints or writes for people and tools: progress, summaries, `--json`,
//! diagnostics, Chrome traces and JUnit XML. Receives events from the engine and never calls
//! back into it.

pub(crate) mod console;
pub(crate) mod junit;
pub(crate) mod markdown;
pub(crate) mod outcome;
pub(crate) mod trace;

pub(crate) use console::{
    ColorChoice, ConsoleReporter, Reporter, Style, human_bytes, json_summary, print_json,
    print_stderr, print_stdout, render_diagnostic, summary_line,
};
pub(crate) use outcome::{BuildOutcome, Status, TargetReport, Traffic};
pub(crate) use trace::Tracer;
