//! Store maintenance: LRU garbage collection to a size budget or age, and verification of
//! every blob. GC never removes a blob referenced by a kept action result; it takes the store's
//! lock exclusively, so it waits for running builds (which hold it shared) and none can start
//! while it runs. A result is deleted before its blobs, so an entry never points at a missing
//! blob even if GC is killed halfway.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use prost::Message;

use crate::db::now_ms;
use crate::error::{IoContext, Result};
use crate::tree::read_tree;
use crate::{Digest, Store, reapi};

/// What to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcPolicy {
    /// Shrink the store to at most this many bytes of blobs.
    pub max_bytes: Option<u64>,
    /// Evict results not used for this long, and unreferenced blobs older than this.
    pub older_than: Option<Duration>,
}

/// What GC did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Action results evicted.
    pub results_removed: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes freed on disk.
    pub bytes_freed: u64,
    /// Bytes of blobs left.
    pub bytes_left: u64,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs checked.
    pub blobs: u64,
    /// Hex digests of the corrupt blobs (now removed).
    pub corrupt: Vec<String>,
    /// Action results removed because they referenced a corrupt blob.
    pub results_removed: u64,
}

/// The blobs (hex) an action result needs, including the files inside its output trees.
fn referenced(store: &Store, result: &reapi::ActionResult) -> HashSet<String> {
    let mut out: HashSet<String> = result
        .output_files
        .iter()
        .map(|f| f.digest.as_ref())
        .chain([result.stdout_digest.as_ref(), result.stderr_digest.as_ref()])
        .chain(
            result
                .output_directories
                .iter()
                .map(|d| d.tree_digest.as_ref()),
        )
        .flatten()
        .map(|d| d.hash.clone())
        .collect();
    for dir in &result.output_directories {
        if let Some(tree) = dir.tree_digest.as_ref().and_then(Digest::from_reapi)
            && let Ok(contents) = read_tree(store.cas(), &tree)
        {
            for info in contents.files.values() {
                out.insert(info.digest.hex());
            }
        }
    }
    out
}

impl Store {
    /// Evicts least recently used results and the blobs only they used, per `policy`.
    pub fn gc(&self, policy: &GcPolicy) -> Result<GcReport> {
        let _exclusive = self.lock(true)?;
        // The shared trees namespace sandboxes mount (`trees/<digest>`) are copies of blobs,
        // made again on first use: no build runs now, so none is mounted.
        let trees = self.trees_dir();
        if trees.exists() {
            std::fs::remove_dir_all(&trees).at("remove", &trees)?;
        }
        let blobs = self.blob_ages()?;
        let sizes: HashMap<&str, u64> = blobs.iter().map(|(h, n, _)| (h.as_str(), *n)).collect();
        let now = now_ms();
        let cutoff_ms = policy.older_than.map(|d| now - d.as_millis() as i64);

        // Results, most recently used first: keep while they are young enough and fit.
        let mut kept_blobs: HashSet<String> = HashSet::new();
        let mut kept_bytes = 0u64;
        let mut evict: Vec<Digest> = Vec::new();
        let mut full = false;
        for (key, bytes, last_used) in self.db().all_action_results()? {
            let Ok(result) = reapi::ActionResult::decode(bytes.as_slice()) else {
                evict.push(key);
                continue;
            };
            if full || cutoff_ms.is_some_and(|c| last_used < c) {
                evict.push(key);
                continue;
            }
            let needs = referenced(self, &result);
            let extra: u64 = needs
                .iter()
                .filter(|h| !kept_blobs.contains(*h))
                .map(|h| sizes.get(h.as_str()).copied().unwrap_or(0))
                .sum();
            if policy.max_bytes.is_some_and(|max| kept_bytes + extra > max) {
                full = true;
                evict.push(key);
                continue;
            }
            kept_bytes += extra;
            kept_blobs.extend(needs);
        }
        let mut report = GcReport::default();
        for key in &evict {
            self.db().remove_action_result(key)?;
            report.results_removed += 1;
        }

        // Blobs no kept result needs, oldest first, while a rule says they must go.
        let mut total: u64 = blobs.iter().map(|(_, n, _)| n).sum();
        let mut candidates: Vec<&(String, u64, SystemTime)> = blobs
            .iter()
            .filter(|(h, _, _)| !kept_blobs.contains(h))
            .collect();
        candidates.sort_by_key(|(_, _, mtime)| *mtime);
        #[allow(clippy::disallowed_methods)] // GC ages blobs by the wall clock; never hashed.
        let age_line = policy.older_than.map(|d| SystemTime::now() - d);
        for (hex, size, mtime) in candidates {
            let too_old = age_line.is_some_and(|line| *mtime < line);
            let over = policy.max_bytes.is_some_and(|max| total > max);
            if !too_old && !over {
                continue;
            }
            // Its `sha256_map` row (if any) stays: a row is a fact about bytes, as true after
            // the blob is gone, and a few dozen bytes.
            self.cas().remove_hex(hex)?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
            total -= size;
        }
        report.bytes_left = total;
        Ok(report)
    }

    /// Re-hashes every blob; removes corrupt ones and every result that references one.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _exclusive = self.lock(true)?;
        let mut report = VerifyReport::default();
        for (hex, _) in self.cas().list()? {
            report.blobs += 1;
            // A corrupt blob's `sha256_map` row (if any) stays: it was computed from the
            // verified bytes, which the digest still names.
            if !self.cas().verify_hex(&hex)? {
                report.corrupt.push(hex);
            }
        }
        if report.corrupt.is_empty() {
            return Ok(report);
        }
        let corrupt: HashSet<&String> = report.corrupt.iter().collect();
        for (key, bytes, _) in self.db().all_action_results()? {
            let bad = match reapi::ActionResult::decode(bytes.as_slice()) {
                Ok(result) => {
                    referenced(self, &result)
                        .iter()
                        .any(|h| corrupt.contains(h))
                        || result.output_directories.iter().any(|d| {
                            d.tree_digest
                                .as_ref()
                                .is_some_and(|t| corrupt.contains(&t.hash))
                        })
                }
                Err(_) => true,
            };
            if bad {
                self.db().remove_action_result(&key)?;
                report.results_removed += 1;
            }
        }
        Ok(report)
    }

    fn blob_ages(&self) -> Result<Vec<(String, u64, SystemTime)>> {
        let mut out = Vec::new();
        for (hex, size) in self.cas().list()? {
            let mtime = self
                .cas()
                .blob_path_hex(&hex)
                .and_then(|p| std::fs::metadata(&p).at("stat", p).ok())
                .and_then(|m| m.modified().ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((hex, size, mtime));
        }
        Ok(out)
    }
}

/// Parses `10GiB`, `500MiB`, `2GB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// Parses `30d`, `12h`, `45m`, `90s`.
pub fn parse_age(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_size("10GiB"), Some(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_age("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("soon"), None);
    }

    #[test]
    fn verify_finds_and_removes_a_flipped_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = store.cas().put_bytes(b"good blob").unwrap();
        let bad = store.cas().put_bytes(b"soon to be bad").unwrap();
        let (path, _) = store.cas().blob_path(&bad).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let result = reapi::ActionResult {
            stdout_digest: Some(bad.to_reapi()),
            ..Default::default()
        };
        let key = Digest::of_bytes(b"key");
        store
            .db()
            .put_action_result(&key, &result.encode_to_vec())
            .unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.corrupt, vec![bad.hex()]);
        assert_eq!(report.results_removed, 1);
        assert!(store.cas().contains(&good));
        assert!(store.verify().unwrap().corrupt.is_empty());
    }
}
