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
    /// Action results removed because a blob they name was missing (never made by cairn, which
    /// stores blobs before the result naming them: a store edited or copied in part).
    pub dangling_removed: u64,
    /// What SQLite's integrity check reported about the metadata database (empty: sound).
    pub database_problems: Vec<String>,
}

impl VerifyReport {
    /// Whether the store was found sound (nothing corrupt, missing or inconsistent).
    pub fn is_sound(&self) -> bool {
        self.corrupt.is_empty() && self.dangling_removed == 0 && self.database_problems.is_empty()
    }
}

/// Whether every blob `result` names is in the store (its output trees read and walked); an
/// empty blob needs no file.
fn names_only_present_blobs(store: &Store, result: &reapi::ActionResult) -> bool {
    let present = |d: Option<&reapi::Digest>| {
        d.and_then(Digest::from_reapi)
            .is_none_or(|d| d.size == 0 || store.cas().contains(&d))
    };
    let files = result.output_files.iter().map(|f| f.digest.as_ref());
    let logs = [result.stdout_digest.as_ref(), result.stderr_digest.as_ref()];
    if !files.chain(logs).all(present) {
        return false;
    }
    result.output_directories.iter().all(|dir| {
        let Some(tree) = dir.tree_digest.as_ref().and_then(Digest::from_reapi) else {
            return false;
        };
        read_tree(store.cas(), &tree).is_ok_and(|contents| {
            contents
                .files
                .values()
                .all(|info| info.digest.size == 0 || store.cas().contains(&info.digest))
        })
    })
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
        // An age beyond what the clocks hold makes nothing old (guarded by
        // `gc_with_any_age_or_size_budget_runs`), here and for blobs below.
        let cutoff_ms = policy
            .older_than
            .map(|d| i64::try_from(d.as_millis()).map_or(i64::MIN, |ms| now.saturating_sub(ms)));

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
        let age_line = policy.older_than.map(|d| SystemTime::now().checked_sub(d));
        for (hex, size, mtime) in candidates {
            let too_old = age_line.is_some_and(|line| line.is_some_and(|line| *mtime < line));
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

    /// Checks the database (SQLite's integrity check), re-hashes every blob, removes corrupt
    /// ones and every result that references one, and every result naming a missing blob.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _exclusive = self.lock(true)?;
        let mut report = VerifyReport {
            database_problems: self.db().integrity_problems()?,
            ..VerifyReport::default()
        };
        for (hex, _) in self.cas().list()? {
            report.blobs += 1;
            // A corrupt blob's `sha256_map` row (if any) stays: it was computed from the
            // verified bytes, which the digest still names.
            if !self.cas().verify_hex(&hex)? {
                report.corrupt.push(hex);
            }
        }
        let corrupt: HashSet<&String> = report.corrupt.iter().collect();
        let mut dangling = 0;
        for (key, bytes, _) in self.db().all_action_results()? {
            let bad = match reapi::ActionResult::decode(bytes.as_slice()) {
                Ok(result) if !corrupt.is_empty() => {
                    referenced(self, &result)
                        .iter()
                        .any(|h| corrupt.contains(h))
                        || result.output_directories.iter().any(|d| {
                            d.tree_digest
                                .as_ref()
                                .is_some_and(|t| corrupt.contains(&t.hash))
                        })
                }
                Ok(_) => false,
                Err(_) => true,
            };
            if bad {
                self.db().remove_action_result(&key)?;
                report.results_removed += 1;
                continue;
            }
            // Corrupt blobs are gone by now: what is still missing was missing before.
            let whole = reapi::ActionResult::decode(bytes.as_slice())
                .is_ok_and(|result| names_only_present_blobs(self, &result));
            if !whole {
                self.db().remove_action_result(&key)?;
                dangling += 1;
            }
        }
        report.dangling_removed = dangling;
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
    // The unit is the last character, whatever its width; a count of seconds past `u64` is
    // refused (`any_size_or_age_text_parses_or_is_refused` guards both).
    let (num, unit) = t.split_at(t.char_indices().next_back()?.0);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        "w" => n.checked_mul(604_800),
        _ => None,
    }?;
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

    #[test]
    fn verify_removes_a_result_naming_a_missing_blob_and_checks_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.cas().put_bytes(b"kept").unwrap();
        let gone = Digest::of_bytes(b"never stored");
        let with = |d: Digest| reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out".into(),
                digest: Some(d.to_reapi()),
                ..Default::default()
            }],
            stdout_digest: Some(Digest::of_bytes(b"").to_reapi()),
            ..Default::default()
        };
        let (sound, dangling) = (Digest::of_bytes(b"k1"), Digest::of_bytes(b"k2"));
        for (key, blob) in [(sound, kept), (dangling, gone)] {
            let bytes = with(blob).encode_to_vec();
            store.db().put_action_result(&key, &bytes).unwrap();
        }
        let report = store.verify().unwrap();
        assert_eq!(report.dangling_removed, 1);
        assert!(report.database_problems.is_empty());
        assert!(!report.is_sound());
        assert!(store.db().get_action_result(&sound).unwrap().is_some());
        assert!(store.db().get_action_result(&dangling).unwrap().is_none());
        assert!(store.verify().unwrap().is_sound());
    }
}

/// Property tests (issue 15): GC and verify read back every stored result, whatever its bytes;
/// and the sizes and ages they are given are parsed or refused, never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    proptest! {
        #[test]
        fn any_size_or_age_text_parses_or_is_refused(
            text in "\\PC{0,12}|[0-9]{1,25}(\\.[0-9]{0,3})? ?\
                     (b|k|kb|KiB|m|MB|mib|g|gb|GiB|t|tb|tib|s|m|h|d|w|x)?",
        ) {
            parse_size(&text);
            parse_age(&text);
        }

        #[test]
        fn ages_are_their_number_of_units_or_refused_when_too_long(
            n in prop_oneof![0u64..1_000_000, any::<u64>()],
            unit in prop::sample::select(vec![
                ("s", 1u64),
                ("m", 60),
                ("h", 3600),
                ("d", 86_400),
                ("w", 604_800),
            ]),
        ) {
            let (suffix, secs) = unit;
            prop_assert_eq!(
                parse_age(&format!("{n}{suffix}")),
                n.checked_mul(secs).map(Duration::from_secs)
            );
        }
    }

    /// What a stored result may hold: any bytes, or a result whose digests are anything.
    fn result_bytes() -> impl Strategy<Value = Vec<u8>> {
        let digest = ("[0-9a-f]{64}|\\PC{0,4}", any::<i64>())
            .prop_map(|(hash, size_bytes)| reapi::Digest { hash, size_bytes });
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            (
                proptest::option::of(digest.clone()),
                proptest::option::of(digest)
            )
                .prop_map(|(file, tree)| {
                    reapi::ActionResult {
                        output_files: vec![reapi::OutputFile {
                            path: "f".into(),
                            digest: file,
                            ..Default::default()
                        }],
                        output_directories: vec![reapi::OutputDirectory {
                            path: "d".into(),
                            tree_digest: tree,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                    .encode_to_vec()
                }),
        ]
    }

    #[test]
    fn gc_with_any_age_or_size_budget_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.cas().put_bytes(b"a blob").unwrap();
        let strategy = (
            proptest::option::of(any::<u64>()),
            proptest::option::of(prop_oneof![any::<u64>(), 0..10_000_000_000u64]),
        );
        TestRunner::default()
            .run(&strategy, |(max_bytes, secs)| {
                let policy = GcPolicy {
                    max_bytes,
                    older_than: secs.map(Duration::from_secs),
                };
                store.gc(&policy).unwrap();
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn gc_and_verify_read_any_stored_result_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A blob that results may name, stored compressed.
        let blob = store
            .cas()
            .put_bytes(&"abc".repeat(10_000).into_bytes())
            .unwrap();
        let strategy = (result_bytes(), any::<bool>());
        TestRunner::default()
            .run(&strategy, |(bytes, gc)| {
                let key = Digest::of_bytes(&bytes);
                store.db().put_action_result(&key, &bytes).unwrap();
                if gc {
                    store.gc(&GcPolicy::default()).unwrap();
                } else {
                    store.verify().unwrap();
                }
                // Whatever verify kept is a result.
                if !gc && let Some(kept) = store.db().get_action_result(&key).unwrap() {
                    prop_assert!(reapi::ActionResult::decode(kept.as_slice()).is_ok());
                }
                store.db().remove_action_result(&key).unwrap();
                store
                    .cas()
                    .put_bytes(&"abc".repeat(10_000).into_bytes())
                    .unwrap();
                prop_assert!(store.cas().contains(&blob));
                Ok(())
            })
            .unwrap();
    }
}
