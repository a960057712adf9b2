//! BUILD-file errors as diagnostics: file, 1-based line and column, message, and the macro
//! frames that led there, built from `starlark::Error` so the BUILD.star call site comes first.

use std::fmt;

use crate::graph::Location;

#[derive(Debug, Clone)]
pub(crate) struct Diagnostic {
    pub location: Location,
    pub message: String,
    /// Further frames, innermost last (e.g. the macro line in a `.star` file).
    pub notes: Vec<String>,
    /// The source line at `location`, for display.
    pub source_line: Option<String>,
}

impl Diagnostic {
    pub fn from_starlark(err: &starlark::Error) -> Diagnostic {
        let mut spans: Vec<starlark::codemap::FileSpan> = err
            .call_stack()
            .frames
            .iter()
            .filter_map(|f| f.location.clone())
            .collect();
        if let Some(span) = err.span()
            && spans.last() != Some(span)
        {
            spans.push(span.clone());
        }
        let mut message = clean_message(&err.without_diagnostic().to_string());
        if message.contains("`def` is not allowed") {
            message.push_str(
                " (BUILD.star files only declare targets: define functions in a `.star` file and `load()` them)",
            );
        }
        let Some(first) = spans.first() else {
            return Diagnostic {
                location: Location {
                    file: "<unknown>".into(),
                    line: 0,
                    column: 0,
                },
                message,
                notes: vec![],
                source_line: None,
            };
        };
        let resolved = first.resolve();
        let source_line = first
            .file
            .source()
            .lines()
            .nth(resolved.span.begin.line)
            .map(str::to_string);
        let notes = spans[1..]
            .iter()
            .map(|s| format!("called from here, reaching {}", location_of(s)))
            .collect();
        Diagnostic {
            location: location_of(first),
            message,
            notes,
            source_line,
        }
    }
}

fn location_of(span: &starlark::codemap::FileSpan) -> Location {
    let r = span.resolve();
    Location {
        file: r.file.trim_start_matches("//").to_string(),
        line: r.span.begin.line + 1,
        column: r.span.begin.column + 1,
    }
}

/// Starlark prefixes some messages with a kind ("error: ..."); keep one line where possible.
fn clean_message(text: &str) -> String {
    let text = text.trim();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}
