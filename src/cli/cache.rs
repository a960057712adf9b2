//! `cairn cache export|import`: cache archives for CI systems that cache a file between runs.

use std::collections::BTreeSet;
use std::path::Path;

use cairn_store::ArchiveError;

use super::{Session, human_bytes};
use crate::engine::{DryInfo, DryRun};
use crate::error::Error;
use crate::graph::Label;
use crate::report;

/// `cairn cache export FILE [PATTERN...]`: the results the targets' current actions have in
/// the store, and every blob they name, as one tar+zstd archive. Targets without a result
/// (never built, or changed since) are named in a warning and left out.
pub(crate) fn export(s: &Session, file: &Path, patterns: &[String]) -> Result<u8, Error> {
    let loaded = s.load()?;
    let roots = s.roots(loaded.graph(), patterns)?;
    let (hits, unbuilt) = split(super::why::dry_run(s, &loaded, roots)?);
    let keys: BTreeSet<_> = hits.iter().map(|(_, info)| info.action.key).collect();
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

/// A dry run's actions: those with a result (by label), and the labels of those without.
fn split(dry: DryRun) -> (Vec<(Label, DryInfo)>, Vec<String>) {
    let found = dry.results.into_inner().unwrap_or_else(|p| p.into_inner());
    let (hits, misses): (Vec<_>, Vec<_>) = found.into_iter().partition(|(_, info)| info.hit);
    let mut hits = hits;
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    let mut misses: Vec<String> = misses.into_iter().map(|(l, _)| l.to_string()).collect();
    misses.sort();
    (hits, misses)
}

fn need_remote(s: &Session, what: &str) -> Result<(), Error> {
    if s.has_remote() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "`cairn cache {what}` needs a remote: set `[remote] url` in cairn.toml or pass `--remote URL`"
        )))
    }
}

/// `cairn cache push [PATTERN...]`: uploads the results the targets' current actions have
/// in the store to the remote, whatever `[remote] upload` says (a CI job that only builds
/// pushes at its end). Results made with `--sandbox none` are never uploaded.
pub(crate) fn push(s: &Session, patterns: &[String]) -> Result<u8, Error> {
    need_remote(s, "push")?;
    let loaded = s.load()?;
    let roots = s.roots(loaded.graph(), patterns)?;
    let (hits, mut unbuilt) = split(super::why::dry_run(s, &loaded, roots)?);
    let warned = std::sync::atomic::AtomicUsize::new(0);
    let warn = |text: &str| {
        warned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        s.warn(text);
    };
    let mut setup = s.remote_setup()?;
    if s.ws.config.remote.signing_key.is_some() && setup.trust.signer.is_none() {
        return Err(Error::Usage(
            "`signing_key` in `[remote]` of cairn.toml names an environment variable that is not set: results cannot be pushed unsigned".to_string(),
        ));
    }
    for remote in &mut setup.remotes {
        remote.upload = true;
    }
    let cache = crate::engine::CacheChain::new(
        &loaded.store,
        &s.ws.root,
        setup.remotes,
        setup.trust,
        &warn,
    );
    let mut queued = 0u64;
    for (label, info) in &hits {
        let result = loaded
            .store
            .get_action_result(&info.action.key)
            .map_err(|e| s.store_error(e))?;
        match result {
            Some(result) => {
                if cache
                    .push_result(&info.action, &result)
                    .map_err(|e| s.store_error(e))?
                {
                    queued += 1;
                }
            }
            None => unbuilt.push(label.to_string()),
        }
    }
    // Pushing is the whole job: wait for it (an hour at most).
    let traffic = cache.finish(std::time::Duration::from_secs(3600));
    let _ = loaded.store.flush_usage();
    s.save_states(&loaded);
    if !unbuilt.is_empty() {
        s.warn(&format!(
            "{} target(s) have no result in the store for their current inputs and were not pushed (build them first): {}",
            unbuilt.len(),
            shorten(&unbuilt)
        ));
    }
    let failed =
        warned.load(std::sync::atomic::Ordering::SeqCst) > 0 || traffic.uploads_dropped > 0;
    report::print_stderr(&format!(
        "pushed {queued} action results ({} uploaded){}",
        human_bytes(traffic.bytes_uploaded),
        if failed {
            "; the remote failed, see above"
        } else {
            ""
        }
    ));
    Ok(if failed { 1 } else { 0 })
}

/// `cairn cache pull [PATTERN...]`: fetches from the remote the results of the targets'
/// current actions the store lacks, with their outputs' blobs, without building or writing
/// anything in the workspace (a CI job that only tests pulls first).
pub(crate) fn pull(s: &Session, patterns: &[String]) -> Result<u8, Error> {
    need_remote(s, "pull")?;
    let loaded = s.load()?;
    let roots = s.roots(loaded.graph(), patterns)?;
    let warned = std::sync::atomic::AtomicUsize::new(0);
    let warn = |text: &str| {
        warned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        s.warn(text);
    };
    let setup = s.remote_setup()?;
    let cache = crate::engine::CacheChain::new(
        &loaded.store,
        &s.ws.root,
        setup.remotes,
        setup.trust,
        &warn,
    );
    let dry = super::why::dry_run_with(s, &loaded, &cache, roots);
    let traffic = cache.finish(crate::engine::lookup::UPLOAD_FLUSH);
    let _ = loaded.store.flush_usage();
    s.save_states(&loaded);
    let (hits, missing) = split(dry);
    let have = hits.len();
    if !missing.is_empty() {
        s.warn(&format!(
            "{} target(s) have no result here or on the remote for their current inputs (they will run): {}",
            missing.len(),
            shorten(&missing)
        ));
    }
    report::print_stderr(&format!(
        "{have} of {} targets have their results in the store ({} downloaded, {} untrusted)",
        have + missing.len(),
        human_bytes(traffic.bytes_downloaded),
        traffic.untrusted
    ));
    Ok(if warned.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        1
    } else {
        0
    })
}
