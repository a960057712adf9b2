//! `cairn test --junit FILE`: one `<testcase>` per test target, cached ones marked, with
//! durations and failure output, in the JUnit XML shape CI systems read.

use super::outcome::{BuildOutcome, Status};
use crate::graph::Kind;

fn escape(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

pub(crate) fn junit_xml(outcome: &BuildOutcome) -> String {
    let tests: Vec<_> = outcome
        .reports
        .iter()
        .filter(|r| r.kind == Kind::Test)
        .collect();
    let count = |s: Status| tests.iter().filter(|r| r.status == s).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"cairn\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        tests.len(),
        count(Status::Failed),
        count(Status::Skipped),
        outcome.wall_ms as f64 / 1000.0
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"cairn\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">\n",
        tests.len(),
        count(Status::Failed),
        count(Status::Skipped),
        outcome.wall_ms as f64 / 1000.0
    ));
    for r in tests {
        let classname = if r.label.package.is_empty() {
            "//"
        } else {
            r.label.package.as_str()
        };
        xml.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">\n",
            escape(&r.label.to_string()),
            escape(classname),
            r.duration_ms as f64 / 1000.0
        ));
        xml.push_str(&format!(
            "      <properties><property name=\"cached\" value=\"{}\"/><property name=\"status\" value=\"{}\"/><property name=\"attempts\" value=\"{}\"/></properties>\n",
            r.status.is_cached(),
            r.status.as_str(),
            r.attempts
        ));
        match r.status {
            Status::Failed => {
                // Viewers show the message as the one-line reason: the failure and the last
                // line of its output (usually the assertion); the body holds the tail.
                let (message, body) = match &r.failure {
                    Some(f) => {
                        let last = f
                            .stderr_tail
                            .lines()
                            .rev()
                            .map(str::trim)
                            .find(|l| !l.is_empty());
                        let message = match last {
                            Some(line) => format!("{}: {line}", f.message),
                            None => f.message.clone(),
                        };
                        (message, f.stderr_tail.clone())
                    }
                    None => ("failed".to_string(), String::new()),
                };
                xml.push_str(&format!(
                    "      <failure message=\"{}\">{}</failure>\n",
                    escape(&message),
                    escape(&body)
                ));
            }
            Status::Skipped => xml.push_str(&format!(
                "      <skipped message=\"{}\"/>\n",
                escape(&match &r.blocked_by {
                    Some(d) => format!("dependency {d} failed"),
                    None => "the build stopped before it ran".to_string(),
                })
            )),
            Status::Cached => xml.push_str("      <system-out>(cached) PASSED</system-out>\n"),
            Status::RemoteCached => {
                xml.push_str("      <system-out>(remote cached) PASSED</system-out>\n")
            }
            Status::Executed | Status::RemoteExecuted => {}
        }
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}
