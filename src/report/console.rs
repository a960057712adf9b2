//! Human output: live progress (a bar on a terminal, one plain line per event otherwise),
//! failure details, diagnostics, the final summary line and the `--json` summary.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::outcome::{BuildOutcome, Status, TargetReport};
use crate::exec::local::format_ms;
use crate::graph::{Kind, Label};
use crate::load::Diagnostic;

/// Receives build events; implementations must be callable from worker threads.
pub(crate) trait Reporter: Sync {
    fn build_started(&self, total: usize);
    fn target_started(&self, label: &Label);
    fn target_finished(&self, report: &TargetReport);
    fn warning(&self, message: &str);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Terminal styling, decided once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    color: bool,
}

impl Style {
    pub fn new(choice: ColorChoice, no_color_env: bool) -> Style {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color_env && std::io::stderr().is_terminal(),
        };
        Style { color }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn red(&self, t: &str) -> String {
        self.paint("1;31", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// Human output on stderr.
pub(crate) struct ConsoleReporter {
    style: Style,
    verbose: bool,
    bar: Option<ProgressBar>,
    state: Mutex<ProgressState>,
    silent: bool,
    /// Watch mode: no lines for cached or skipped targets.
    watch: bool,
    /// Lines of cached targets not yet written (no progress bar only): written together, so a
    /// no-op build of thousands of tests is a few writes, not one per line.
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    text: String,
    since: Option<Instant>,
}

/// Batched lines wait at most this long.
const BATCH_DELAY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct ProgressState {
    total: usize,
    done: usize,
    running: Vec<Label>,
}

impl ConsoleReporter {
    pub fn new(style: Style, verbose: bool) -> ConsoleReporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}")
                    .expect("the progress template is valid"),
            );
            bar
        });
        ConsoleReporter {
            style,
            verbose,
            bar,
            state: Mutex::default(),
            silent: false,
            watch: false,
            pending: Mutex::default(),
        }
    }

    /// In watch mode, only executed and failed targets get a line.
    pub fn for_watch(mut self, watch: bool) -> ConsoleReporter {
        self.watch = watch;
        self
    }

    /// A reporter that prints nothing (dry runs).
    pub fn quiet() -> ConsoleReporter {
        ConsoleReporter {
            style: Style { color: false },
            verbose: false,
            bar: None,
            state: Mutex::default(),
            silent: true,
            watch: false,
            pending: Mutex::default(),
        }
    }

    fn line(&self, text: &str) {
        self.emit(text, false);
    }

    /// Prints a line; a `batched` one may wait (see `pending`), any other line first writes
    /// what waits.
    fn emit(&self, text: &str, batched: bool) {
        if self.silent {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.println(text);
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.text.push_str(text);
        pending.text.push('\n');
        let since = *pending.since.get_or_insert_with(Instant::now);
        if !batched || pending.text.len() > 32 * 1024 || since.elapsed() > BATCH_DELAY {
            flush(&mut pending);
        }
    }

    fn refresh(&self, state: &ProgressState) {
        if let Some(bar) = &self.bar {
            bar.set_length(state.total as u64);
            bar.set_position(state.done as u64);
            let names: Vec<String> = state
                .running
                .iter()
                .take(3)
                .map(|l| l.to_string())
                .collect();
            let more = state.running.len().saturating_sub(3);
            let mut msg = names.join(", ");
            if more > 0 {
                msg.push_str(&format!(" +{more}"));
            }
            bar.set_message(msg);
        }
    }

    pub fn finish(&self) {
        flush(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn describe(&self, r: &TargetReport) -> Option<String> {
        let s = &self.style;
        let time = format_ms(r.duration_ms);
        let flaky = if r.attempts > 1 {
            s.yellow(&format!(" (flaky: passed on attempt {})", r.attempts))
        } else {
            String::new()
        };
        match (r.status, r.kind) {
            (Status::Executed, Kind::Test) => Some(format!(
                "{} {} {}{flaky}",
                s.green("PASSED"),
                r.label,
                s.dim(&time)
            )),
            (Status::RemoteExecuted, Kind::Test) => Some(format!(
                "{} {} {} {}",
                s.green("PASSED"),
                r.label,
                s.dim(&time),
                s.dim("(remote)")
            )),
            (Status::Cached, Kind::Test) => {
                Some(format!("{} {}", s.dim("(cached) PASSED"), r.label))
            }
            (Status::RemoteCached, Kind::Test) => {
                Some(format!("{} {}", s.dim("(remote cached) PASSED"), r.label))
            }
            (Status::Executed, _) => {
                Some(format!("{} {} {}", s.green("built"), r.label, s.dim(&time)))
            }
            (Status::RemoteExecuted, _) => Some(format!(
                "{} {} {} {}",
                s.green("built"),
                r.label,
                s.dim(&time),
                s.dim("(remote)")
            )),
            (Status::Cached, _) => self
                .verbose
                .then(|| format!("{} {}", s.dim("cached"), r.label)),
            (Status::RemoteCached, _) => self
                .verbose
                .then(|| format!("{} {}", s.dim("remote cached"), r.label)),
            (Status::Skipped, _) => Some(match &r.blocked_by {
                Some(dep) => format!(
                    "{} {} (dependency {dep} failed)",
                    s.yellow("skipped"),
                    r.label
                ),
                None => format!(
                    "{} {} (the build stopped after a failure; --keep-going builds the rest)",
                    s.yellow("skipped"),
                    r.label
                ),
            }),
            (Status::Failed, _) => Some(self.failure_text(r)),
        }
    }

    fn failure_text(&self, r: &TargetReport) -> String {
        let s = &self.style;
        let what = if r.kind == Kind::Test {
            "FAILED"
        } else {
            "ERROR"
        };
        let mut text = String::new();
        let reason = r
            .failure
            .as_ref()
            .map(|f| f.message.as_str())
            .unwrap_or("failed");
        text.push_str(&format!(
            "{} {}: {reason}",
            s.red(what),
            s.bold(&r.label.to_string())
        ));
        if r.attempts > 1 {
            text.push_str(&format!(" (after {} attempts)", r.attempts));
        }
        text.push_str(&format!("\n  command: {}", r.cmd.trim()));
        if let Some(f) = &r.failure {
            if let Some(code) = f.exit_code {
                text.push_str(&format!("\n  exit code: {code}"));
            }
            if !f.stderr_tail.trim().is_empty() {
                text.push_str(if f.tail_is_output {
                    "\n  output (last lines):"
                } else {
                    "\n  stderr (last lines):"
                });
                for line in f.stderr_tail.lines() {
                    text.push_str(&format!("\n    {line}"));
                }
            }
            if let Some(log) = &f.log {
                text.push_str(&format!("\n  full log: {}", log.display()));
            }
            if let Some(reports) = &f.reports {
                text.push_str(&format!("\n  reports: {}", reports.display()));
            }
        }
        text
    }
}

impl Reporter for ConsoleReporter {
    fn build_started(&self, total: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.total = total;
        self.refresh(&st);
    }

    fn target_started(&self, label: &Label) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.running.push(label.clone());
        self.refresh(&st);
    }

    fn target_finished(&self, report: &TargetReport) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.running.retain(|l| *l != report.label);
        st.done += 1;
        let quiet = self.watch && (report.status.is_cached() || report.status == Status::Skipped);
        if let Some(text) = self.describe(report).filter(|_| !quiet) {
            self.emit(&text, report.status.is_cached());
        }
        self.refresh(&st);
    }

    fn warning(&self, message: &str) {
        self.line(&format!("{} {message}", self.style.yellow("warning:")));
    }
}

impl Drop for ConsoleReporter {
    fn drop(&mut self) {
        flush(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn flush(pending: &mut Pending) {
    if !pending.text.is_empty() {
        // Nothing sensible to do if stderr is gone.
        let _ = std::io::stderr().write_all(pending.text.as_bytes());
        pending.text.clear();
    }
    pending.since = None;
}

/// `12 targets: 9 cached, 3 executed, 0 failed in 1.23s`
pub(crate) fn summary_line(outcome: &BuildOutcome, style: &Style) -> String {
    let n = outcome.reports.len();
    let remote_cached = outcome.count(Status::RemoteCached);
    let remote_executed = outcome.count(Status::RemoteExecuted);
    let of_which = |n: usize, what: &str| {
        if n > 0 {
            format!(" ({n} {what})")
        } else {
            String::new()
        }
    };
    let mut text = format!(
        "{n} target{}: {} cached{}, {} executed{}, {} failed",
        if n == 1 { "" } else { "s" },
        outcome.cached(),
        of_which(remote_cached, "from the remote"),
        outcome.executed(),
        of_which(remote_executed, "remotely"),
        outcome.count(Status::Failed),
    );
    let skipped = outcome.count(Status::Skipped);
    if skipped > 0 {
        text.push_str(&format!(", {skipped} skipped"));
    }
    let flaky = outcome
        .reports
        .iter()
        .filter(|r| r.attempts > 1 && r.status == Status::Executed)
        .count();
    if flaky > 0 {
        text.push_str(&format!(", {flaky} flaky"));
    }
    let checked = outcome.reports.iter().filter(|r| r.checked).count();
    if checked > 0 {
        text.push_str(&format!(", {checked} re-run by --check and reproducible"));
    }
    text.push_str(&format!(" in {:.2}s", outcome.wall_ms as f64 / 1000.0));
    let traffic = &outcome.traffic;
    if traffic.bytes_downloaded > 0 || traffic.bytes_uploaded > 0 {
        text.push_str(&format!(
            " ({} downloaded, {} uploaded)",
            human_bytes(traffic.bytes_downloaded),
            human_bytes(traffic.bytes_uploaded)
        ));
    }
    if outcome.is_success() {
        style.bold(&text)
    } else {
        style.red(&text)
    }
}

/// The `--json` summary (DESIGN.md schema; only ever extended by adding keys).
pub(crate) fn json_summary(outcome: &BuildOutcome) -> serde_json::Value {
    let targets: Vec<serde_json::Value> = outcome
        .reports
        .iter()
        .map(|r| {
            let mut t = json!({
                "label": r.label.to_string(),
                "kind": r.kind.as_str(),
                "status": r.status.as_str(),
                "action_key": r.action_key.map(|k| k.to_string()),
                "duration_ms": r.duration_ms,
            });
            if r.attempts > 1 {
                t["attempts"] = json!(r.attempts);
            }
            if let Some(digest) = &r.remote_action_digest {
                t["remote_action_digest"] = json!(digest.to_string());
            }
            if r.checked {
                t["checked"] = json!(true);
            }
            t
        })
        .collect();
    let mut summary = json!({
        "targets": targets,
        "counts": {
            "executed": outcome.count(Status::Executed),
            "cached": outcome.count(Status::Cached),
            "remote_cached": outcome.count(Status::RemoteCached),
            "failed": outcome.count(Status::Failed),
            "skipped": outcome.count(Status::Skipped),
        },
        "wall_ms": outcome.wall_ms,
    });
    // DESIGN.md: with a remote, the summary adds what moved and what was not trusted.
    let traffic = &outcome.traffic;
    if traffic.has_remote {
        summary["counts"]["remote_executed"] = json!(outcome.count(Status::RemoteExecuted));
        summary["counts"]["untrusted"] = json!(traffic.untrusted);
        summary["bytes_downloaded"] = json!(traffic.bytes_downloaded);
        summary["bytes_uploaded"] = json!(traffic.bytes_uploaded);
    }
    summary
}

/// Human-readable bytes.
pub(crate) fn human_bytes(n: u64) -> String {
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

pub(crate) fn print_json(value: &serde_json::Value) {
    // One write: `println!` would hand the line to stdout a few bytes at a time, and stdout
    // passes them on a kilobyte at a time (hundreds of writes for a large build's summary).
    let mut text = value.to_string();
    text.push('\n');
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

pub(crate) fn print_stdout(text: &str) {
    print!("{text}");
}

pub(crate) fn print_stderr(text: &str) {
    eprintln!("{text}");
}

/// `error: file:line:col: message`, then the source line with a caret under the column.
pub(crate) fn render_diagnostic(d: &Diagnostic, style: &Style) -> String {
    let mut text = format!("{} {}: {}", style.red("error:"), d.location, d.message);
    if let Some(line) = &d.source_line {
        let num = d.location.line.to_string();
        let pad = " ".repeat(num.len());
        let caret_pad: String = line
            .chars()
            .take(d.location.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        text.push_str(&format!(
            "\n{pad} |\n{num} | {line}\n{pad} | {caret_pad}{}",
            style.red("^")
        ));
    }
    for note in &d.notes {
        text.push_str(&format!("\n  note: {note}"));
    }
    text
}
