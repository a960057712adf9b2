//! `cairn test --junit FILE`: one `<testcase>` per test target, cached ones marked, with
//! durations and failure output, in the JUnit XML shape CI systems read. A test that wrote
//! its own JUnit file (`reports = True`, `$XML_OUTPUT_FILE`) is a `<testsuite>` of its own
//! cases instead, copied as it wrote them.

use super::outcome::{BuildOutcome, Status, TargetReport};
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

/// A test's own JUnit file (`reports = True`: what it wrote to `$XML_OUTPUT_FILE`), by label.
pub(crate) type OwnReports = std::collections::HashMap<crate::graph::Label, String>;

/// The `<testcase>` elements of a JUnit document, verbatim, with how many of them failed
/// (`<failure>` or `<error>`) and were skipped.
fn own_cases(xml: &str) -> Result<(Vec<&str>, usize, usize), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let mut cases = Vec::new();
    let (mut failed, mut skipped) = (0, 0);
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let has = |tag: &str| case.children().any(|c| c.has_tag_name(tag));
        if has("failure") || has("error") {
            failed += 1;
        } else if has("skipped") {
            skipped += 1;
        }
        cases.push(&xml[case.range()]);
    }
    Ok((cases, failed, skipped))
}

pub(crate) fn junit_xml(outcome: &BuildOutcome, own: &OwnReports) -> String {
    let tests: Vec<_> = outcome
        .reports
        .iter()
        .filter(|r| r.kind == Kind::Test)
        .collect();
    // Tests that wrote their own JUnit get a suite of their cases; the others are one case
    // each in the suite `cairn`.
    let mut suites = Vec::new();
    let mut plain = Vec::new();
    let mut unreadable: std::collections::HashMap<&crate::graph::Label, String> =
        Default::default();
    for r in &tests {
        match own.get(&r.label).map(|xml| own_cases(xml)) {
            Some(Ok((cases, failed, skipped))) if !cases.is_empty() => {
                suites.push((*r, cases, failed, skipped))
            }
            Some(Err(e)) => {
                unreadable.insert(&r.label, e);
                plain.push(*r);
            }
            _ => plain.push(*r),
        }
    }
    // A failed target none of whose own cases failed (it crashed after writing them) keeps
    // its own failing case too, so the failure is never hidden.
    let extra = |r: &TargetReport, failed: usize| r.status == Status::Failed && failed == 0;
    let total = plain.len()
        + suites
            .iter()
            .map(|(r, c, f, _)| c.len() + usize::from(extra(r, *f)))
            .sum::<usize>();
    let plain_count = |s: Status| plain.iter().filter(|r| r.status == s).count();
    let failures = plain_count(Status::Failed)
        + suites
            .iter()
            .map(|(r, _, f, _)| f + usize::from(extra(r, *f)))
            .sum::<usize>();
    let skipped = plain_count(Status::Skipped) + suites.iter().map(|s| s.3).sum::<usize>();
    let seconds = outcome.wall_ms as f64 / 1000.0;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"cairn\" tests=\"{total}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{seconds:.3}\">\n",
    ));
    if !plain.is_empty() || suites.is_empty() {
        xml.push_str(&format!(
            "  <testsuite name=\"cairn\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{seconds:.3}\">\n",
            plain.len(),
            plain_count(Status::Failed),
            plain_count(Status::Skipped),
        ));
        for r in &plain {
            target_case(&mut xml, r, unreadable.get(&r.label).map(String::as_str));
        }
        xml.push_str("  </testsuite>\n");
    }
    for (r, cases, failed, skipped) in &suites {
        let extra = extra(r, *failed);
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
            escape(&r.label.to_string()),
            cases.len() + usize::from(extra),
            failed + usize::from(extra),
            r.duration_ms as f64 / 1000.0
        ));
        xml.push_str(&format!("    {}\n", properties(r)));
        for case in cases {
            xml.push_str("    ");
            xml.push_str(case);
            xml.push('\n');
        }
        if extra {
            target_case(&mut xml, r, None);
        }
        // The log's tail beside the cases, as for a target without its own JUnit.
        if let Some(f) = r.failure.as_ref().filter(|f| !f.stderr_tail.is_empty()) {
            xml.push_str(&format!(
                "    <system-out>{}</system-out>\n",
                escape(&f.stderr_tail)
            ));
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn properties(r: &TargetReport) -> String {
    format!(
        "<properties><property name=\"cached\" value=\"{}\"/><property name=\"status\" value=\"{}\"/><property name=\"attempts\" value=\"{}\"/></properties>",
        r.status.is_cached(),
        r.status.as_str(),
        r.attempts
    )
}

/// One test target as one `<testcase>`; `unreadable`: why its own JUnit file was not used.
fn target_case(xml: &mut String, r: &TargetReport, unreadable: Option<&str>) {
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
    xml.push_str(&format!("      {}\n", properties(r)));
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
    if let Some(why) = unreadable {
        xml.push_str(&format!(
            "      <system-err>its own JUnit file was not read: {}</system-err>\n",
            escape(why)
        ));
    }
    xml.push_str("    </testcase>\n");
}
