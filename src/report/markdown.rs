//! The Markdown step summary (`--summary-md FILE`, or `$GITHUB_STEP_SUMMARY` in GitHub
//! Actions): counts, cache hit rate, time saved, failed targets with their output tails, and
//! the slowest actions. Appended, as GitHub expects of every step.

use super::console::human_bytes;
use super::outcome::{BuildOutcome, Status};
use crate::exec::local::format_ms;

/// How many of the slowest actions are listed.
const SLOWEST: usize = 5;

/// Text inside a Markdown table cell or `<code>`: no pipes, no HTML.
fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace('\n', " ")
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

pub(crate) fn step_summary(outcome: &BuildOutcome, command: &str) -> String {
    let total = outcome.reports.len();
    let failed = outcome.count(Status::Failed);
    let cached = outcome.cached();
    let executed = outcome.executed();
    let ran = cached + executed;
    let hit_rate = if ran == 0 {
        0.0
    } else {
        100.0 * cached as f64 / ran as f64
    };
    let saved: u64 = outcome
        .reports
        .iter()
        .filter(|r| r.status.is_cached())
        .map(|r| r.saved_ms)
        .sum();
    let mut md = format!(
        "### {} `cairn {command}`: {}\n\n",
        if outcome.is_success() { "✅" } else { "❌" },
        if outcome.is_success() {
            format!("{total} targets passed")
        } else {
            format!("{failed} of {total} targets failed")
        }
    );
    md.push_str("| executed | cached | failed | skipped | hit rate | time saved | wall time |\n");
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    md.push_str(&format!(
        "| {executed}{} | {cached}{} | {failed} | {} | {hit_rate:.0} % | {} | {} |\n\n",
        match outcome.count(Status::RemoteExecuted) {
            0 => String::new(),
            n => format!(" ({n} remotely)"),
        },
        match outcome.count(Status::RemoteCached) {
            0 => String::new(),
            n => format!(" ({n} from the remote)"),
        },
        outcome.count(Status::Skipped),
        format_ms(saved),
        format_ms(outcome.wall_ms),
    ));
    let traffic = &outcome.traffic;
    if traffic.has_remote {
        md.push_str(&format!(
            "Remote: {} downloaded, {} uploaded{}.\n\n",
            human_bytes(traffic.bytes_downloaded),
            human_bytes(traffic.bytes_uploaded),
            if traffic.untrusted > 0 {
                format!(", {} results refused (untrusted)", traffic.untrusted)
            } else {
                String::new()
            }
        ));
    }
    let mut failures: Vec<_> = outcome
        .reports
        .iter()
        .filter(|r| r.status == Status::Failed)
        .collect();
    failures.sort_by(|a, b| a.label.cmp(&b.label));
    if !failures.is_empty() {
        md.push_str("#### Failed\n\n");
        for r in failures {
            let (message, tail) = match &r.failure {
                Some(f) => (f.message.as_str(), f.stderr_tail.trim_end()),
                None => ("failed", ""),
            };
            md.push_str(&format!(
                "<details open><summary><code>{}</code>: {}</summary>\n\n",
                cell(&r.label.to_string()),
                cell(message)
            ));
            if !tail.is_empty() {
                let fence = fence(tail);
                md.push_str(&format!("{fence}\n{tail}\n{fence}\n"));
            }
            if let Some(log) = r.failure.as_ref().and_then(|f| f.log.as_ref()) {
                md.push_str(&format!(
                    "\nFull log: `{}`\n",
                    cell(&log.display().to_string())
                ));
            }
            md.push_str("\n</details>\n\n");
        }
    }
    let mut slowest: Vec<_> = outcome
        .reports
        .iter()
        .filter(|r| r.status.is_executed() || r.status == Status::Failed)
        .collect();
    slowest.sort_by(|a, b| {
        b.duration_ms
            .cmp(&a.duration_ms)
            .then(a.label.cmp(&b.label))
    });
    if !slowest.is_empty() {
        md.push_str("#### Slowest actions\n\n| target | status | time |\n|---|---|---:|\n");
        for r in slowest.into_iter().take(SLOWEST) {
            md.push_str(&format!(
                "| `{}` | {} | {} |\n",
                cell(&r.label.to_string()),
                r.status.as_str(),
                format_ms(r.duration_ms)
            ));
        }
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_outlasts_the_backticks_inside() {
        assert_eq!(fence("plain"), "```");
        assert_eq!(fence("a ```` b"), "`````");
    }

    #[test]
    fn cells_cannot_break_the_table_or_inject_html() {
        assert_eq!(cell("a|b\n<script>"), "a\\|b &lt;script&gt;");
    }
}
