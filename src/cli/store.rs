//! `cairn store stats|gc|verify|keygen`.

use serde_json::json;

use cairn_store::Store;

use super::{Session, human_bytes};
use crate::error::Error;
use crate::exec::local::format_ms;
use crate::report;

pub(crate) fn stats(s: &Session) -> Result<u8, Error> {
    let store = s.open_store()?;
    let stats = store.stats().map_err(|e| s.store_error(e))?;
    let r = stats.recent;
    let runs = r.sum.executed + r.sum.cached;
    let hit_rate = if runs == 0 {
        0.0
    } else {
        100.0 * r.sum.cached as f64 / runs as f64
    };
    if s.opts.json {
        report::print_json(&json!({
            "path": s.store_dir.display().to_string(),
            "blobs": stats.blobs,
            "blob_bytes": stats.blob_bytes,
            "action_results": stats.actions,
            "recent_builds": r.builds,
            "executed": r.sum.executed,
            "cached": r.sum.cached,
            "hit_rate": hit_rate,
            "saved_ms": r.sum.saved_ms,
        }));
        return Ok(0);
    }
    report::print_stdout(&format!(
        "store:          {}\nblobs:          {} ({})\naction results: {}\nrecent builds:  {} ({} executed, {} cached: {:.1}% hit rate, {} of run time saved)\n",
        s.store_dir.display(),
        stats.blobs,
        human_bytes(stats.blob_bytes),
        stats.actions,
        r.builds,
        r.sum.executed,
        r.sum.cached,
        hit_rate,
        format_ms(r.sum.saved_ms),
    ));
    Ok(0)
}

pub(crate) fn gc(
    s: &Session,
    max_size: Option<&str>,
    older_than: Option<&str>,
) -> Result<u8, Error> {
    let max_bytes = max_size
        .map(|t| {
            cairn_store::parse_size(t).ok_or_else(|| {
                Error::Usage(format!(
                    "Invalid size `{t}`: expected e.g. `10GiB`, `500MB` or a number of bytes"
                ))
            })
        })
        .transpose()?;
    let older = older_than
        .map(|t| {
            cairn_store::parse_age(t).ok_or_else(|| {
                Error::Usage(format!(
                    "Invalid age `{t}`: expected e.g. `30d`, `12h`, `45m`"
                ))
            })
        })
        .transpose()?;
    if max_bytes.is_none() && older.is_none() {
        return Err(Error::Usage(
            "`cairn store gc` needs `--max-size SIZE` and/or `--older-than AGE`".into(),
        ));
    }
    let store = s.open_store()?;
    let r = store
        .gc(&cairn_store::GcPolicy {
            max_bytes,
            older_than: older,
        })
        .map_err(|e| s.store_error(e))?;
    if s.opts.json {
        report::print_json(&json!({
            "results_removed": r.results_removed,
            "blobs_removed": r.blobs_removed,
            "bytes_freed": r.bytes_freed,
            "bytes_left": r.bytes_left,
        }));
    } else {
        report::print_stderr(&format!(
            "Removed {} action results and {} blobs, freed {}; {} left",
            r.results_removed,
            r.blobs_removed,
            human_bytes(r.bytes_freed),
            human_bytes(r.bytes_left)
        ));
    }
    Ok(0)
}

pub(crate) fn verify(s: &Session, repair: bool) -> Result<u8, Error> {
    let store = if repair {
        let (store, repaired) =
            Store::open_repairing(&s.store_dir).map_err(|e| s.store_error(e))?;
        if let Some(damaged) = &repaired.damaged {
            report::print_stderr(&format!(
                "Rebuilt the store's database: carried over the {} action results the damaged one still gave; it is kept at `{}`",
                repaired.salvaged,
                damaged.display()
            ));
        }
        store
    } else {
        s.open_store()?
    };
    let r = store.verify().map_err(|e| s.store_error(e))?;
    if s.opts.json {
        report::print_json(&json!({
            "blobs": r.blobs,
            "corrupt": r.corrupt.iter().map(|h| format!("blake3:{h}")).collect::<Vec<_>>(),
            "results_removed": r.results_removed,
            "dangling_removed": r.dangling_removed,
            "database_problems": r.database_problems,
        }));
    } else if r.is_sound() {
        report::print_stderr(&format!("All {} blobs are sound", r.blobs));
    } else {
        for problem in &r.database_problems {
            report::print_stderr(&format!(
                "{} the metadata database: {problem}",
                s.style.red("error:")
            ));
        }
        if r.dangling_removed > 0 {
            report::print_stderr(&format!(
                "{} {} action results named blobs the store does not have (removed); the next build re-creates them",
                s.style.red("error:"),
                r.dangling_removed
            ));
        }
    }
    if !r.corrupt.is_empty() {
        for hex in &r.corrupt {
            report::print_stderr(&format!(
                "{} corrupt blob blake3:{hex} (removed)",
                s.style.red("error:")
            ));
        }
        report::print_stderr(&format!(
            "{} of {} blobs were corrupt and have been removed, with the {} action results that used them; the next build re-creates them",
            r.corrupt.len(),
            r.blobs,
            r.results_removed
        ));
    }
    Ok(if r.is_sound() { 0 } else { 1 })
}

/// `cairn store keygen NAME --secret-file PATH`: a new signing key. The secret goes to PATH
/// (created mode 0600, never overwriting), the public key to stdout.
pub(crate) fn keygen(name: &str, secret_file: &std::path::Path) -> Result<u8, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if name.is_empty()
        || name.contains(':')
        || name.contains('/')
        || name.contains(char::is_whitespace)
    {
        return Err(Error::Usage(format!(
            "Invalid key name `{name}`: use letters, digits, `-`, `_` and `.` (it names the key in `trusted_keys`)"
        )));
    }
    let key = cairn_store::SigningKey::generate(name).map_err(|e| Error::Io(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_file)
        .map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "it exists (a key is never overwritten)".to_string()
            } else {
                e.to_string()
            };
            Error::Usage(format!(
                "Cannot write the secret key to `{}`: {why}",
                secret_file.display()
            ))
        })?;
    writeln!(file, "{}", key.to_secret_text())
        .map_err(|e| Error::Io(format!("Cannot write `{}`: {e}", secret_file.display())))?;
    report::print_stdout(&format!("{}\n", key.public()));
    Ok(0)
}
