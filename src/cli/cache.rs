//! `cairn cache export|import`: cache archives for CI systems that cache a file between runs.

use std::collections::BTreeSet;
use std::path::Path;

use cairn_store::ArchiveError;

use super::{Session, human_bytes};
use crate::engine::AnalysisError;
use crate::error::Error;
use crate::graph::Label;
use crate::report;

/// `cairn cache export FILE [PATTERN...]`: the results the targets' current actions have in
/// the store, and every blob they name, as one tar+zstd archive. Targets without a result
/// (never built, or changed since) are named in a warning and left out.
pub(crate) fn export(s: &Session, file: &Path, patterns: &[String]) -> Result<u8, Error> {
    let loaded = s.load()?;
    let patterns = s.patterns(patterns)?;
    let roots: Vec<Label> = loaded
        .graph()
        .matching(&patterns)
        .map_err(AnalysisError::from)?
        .into_iter()
        .collect();
    let dry = super::why::dry_run(s, &loaded, roots)?;
    let found = dry.results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut keys = BTreeSet::new();
    let mut unbuilt: Vec<String> = Vec::new();
    for (label, info) in &found {
        if info.hit {
            keys.insert(info.action.key);
        } else {
            unbuilt.push(label.to_string());
        }
    }
    unbuilt.sort();
    // Written next to FILE and renamed: a failed export leaves no half archive.
    let partial = file.with_file_name(format!(
        ".{}.partial",
        file.file_name()
            .map_or("archive".into(), |n| n.to_string_lossy())
    ));
    let io = |e: std::io::Error, what: &Path| {
        Error::Io(format!(
            "Cannot write the archive `{}`: {e}",
            what.display()
        ))
    };
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&partial).map_err(|e| io(e, &partial))?);
    let exported = loaded.store.export_archive(&keys, &mut out).and_then(|r| {
        use std::io::Write;
        out.flush()
            .map_err(|e| ArchiveError::Malformed(format!("cannot write: {e}")))?;
        Ok(r)
    });
    let (report, _) = match exported {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(archive_error(s, file, e, false));
        }
    };
    drop(out);
    std::fs::rename(&partial, file).map_err(|e| io(e, file))?;
    s.save_states(&loaded);
    if !unbuilt.is_empty() {
        s.warn(&format!(
            "{} target(s) have no result in the store for their current inputs and are not in the archive (build them first): {}",
            unbuilt.len(),
            shorten(&unbuilt)
        ));
    }
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if s.opts.json {
        report::print_json(&serde_json::json!({
            "archive": file.display().to_string(),
            "results": report.results,
            "blobs": report.blobs,
            "blob_bytes": report.bytes,
            "archive_bytes": size,
            "missing": unbuilt,
        }));
    } else {
        report::print_stderr(&format!(
            "exported {} action results and {} blobs ({}) to {} ({})",
            report.results,
            report.blobs,
            human_bytes(report.bytes),
            file.display(),
            human_bytes(size)
        ));
    }
    Ok(0)
}

/// `cairn cache import FILE`: everything in the archive is verified before anything enters
/// the store; a malformed archive is refused whole (exit 2).
pub(crate) fn import(s: &Session, file: &Path) -> Result<u8, Error> {
    let store = s.open_store()?;
    let _lock = store.lock(false).map_err(|e| s.store_error(e))?;
    let mut input =
        std::io::BufReader::new(std::fs::File::open(file).map_err(|e| {
            Error::Io(format!("Cannot read the archive `{}`: {e}", file.display()))
        })?);
    let report = store
        .import_archive(&mut input)
        .map_err(|e| archive_error(s, file, e, true))?;
    if s.opts.json {
        report::print_json(&serde_json::json!({
            "archive": file.display().to_string(),
            "results": report.results,
            "blobs": report.blobs,
            "blob_bytes": report.bytes,
        }));
    } else {
        report::print_stderr(&format!(
            "imported {} action results and {} blobs ({}) from {}",
            report.results,
            report.blobs,
            human_bytes(report.bytes),
            file.display()
        ));
    }
    Ok(0)
}

/// A malformed archive is bad input (exit 2); a failing store is not.
fn archive_error(s: &Session, file: &Path, e: ArchiveError, importing: bool) -> Error {
    match e {
        ArchiveError::Store(e) => s.store_error(e),
        e if importing => Error::Usage(format!(
            "Refused the archive `{}` (nothing was imported): {e}",
            file.display()
        )),
        e => Error::Io(format!("Cannot export to `{}`: {e}", file.display())),
    }
}

fn shorten(labels: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = labels[..labels.len().min(SHOWN)].join(", ");
    if labels.len() > SHOWN {
        text.push_str(&format!(" and {} more", labels.len() - SHOWN));
    }
    text
}
