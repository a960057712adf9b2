//! Cache archives: action results and the blobs they name, in one tar+zstd file, for CI
//! systems that cache a file between runs (`actions/cache`, GitLab `cache:`).
//!
//! Layout: `cairn-cache-archive` (the format version, first), then `blobs/<hex>-<size>` (a
//! blob's bytes, by its BLAKE3 digest) and `results/<hex>-<size>` (an encoded ActionResult,
//! by its action key), each group sorted by name. Every header is the same but for name and
//! size (mode 0644, mtime 0, uid/gid 0, no user names), and the zstd level is fixed, so the
//! same results give the same bytes.
//!
//! Import verifies everything before anything enters the store: each entry is a regular file
//! with a name of the layout (no absolute path, no `..`, no link or device, no duplicate),
//! each blob's bytes match its name, each result decodes and every blob it names (the files
//! inside its output trees too) is in the archive or the store. Blobs are staged under the
//! store's `tmp/` while they are checked; only then are they stored, then the results.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::digest::Digest;
use crate::error::{IoContext, StoreError};
use crate::{Store, reapi};

/// The first entry's name, and its content.
const VERSION_ENTRY: &str = "cairn-cache-archive";
const VERSION: &[u8] = b"cairn cache archive 1\n";
/// The zstd level of every archive (part of what makes the bytes deterministic).
const ZSTD_LEVEL: i32 = 3;
/// The largest encoded ActionResult an archive may hold.
const MAX_RESULT_BYTES: u64 = 64 << 20;

/// Why an archive cannot be imported (or exported).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive itself is malformed or holds something it must not.
    #[error("entry `{entry}`: {why}")]
    Entry {
        /// The entry's name, as in the archive.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// The archive as a whole is wrong (not zstd, not tar, no version entry).
    #[error("{0}")]
    Malformed(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an export or import moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Action results.
    pub results: u64,
    /// Blobs (output files, trees, logs).
    pub blobs: u64,
    /// Bytes of blob content (before compression).
    pub bytes: u64,
}

fn entry_name(kind: &str, digest: &Digest) -> String {
    format!("{kind}/{}-{}", digest.hex(), digest.size)
}

/// Parses `<64 hex>-<size>`.
fn parse_name(name: &str) -> Option<Digest> {
    let (hex, size) = name.split_once('-')?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    // One spelling per size (no leading zeros): two names never mean one digest, so the
    // duplicate check sees every duplicate.
    if size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
        || size.len() > 20
        || (size.len() > 1 && size.starts_with('0'))
    {
        return None;
    }
    let hash = blake3::Hash::from_hex(hex).ok()?;
    Some(Digest {
        hash: *hash.as_bytes(),
        size: size.parse().ok()?,
    })
}

/// Every blob `result` names: output files, output trees and the files inside them, stdout
/// and stderr. `tree` reads a tree blob's bytes.
fn named_blobs(
    result: &reapi::ActionResult,
    tree: &mut dyn FnMut(&Digest) -> Result<Vec<u8>, String>,
) -> Result<BTreeSet<Digest>, String> {
    let mut out = BTreeSet::new();
    let local = |d: Option<&reapi::Digest>, what: &str| {
        d.and_then(Digest::from_reapi)
            .ok_or_else(|| format!("its {what} has no valid BLAKE3 digest"))
    };
    for file in &result.output_files {
        out.insert(local(
            file.digest.as_ref(),
            &format!("output `{}`", file.path),
        )?);
    }
    for log in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        out.insert(local(Some(log), "stdout or stderr")?);
    }
    for dir in &result.output_directories {
        let digest = local(dir.tree_digest.as_ref(), &format!("output `{}`", dir.path))?;
        out.insert(digest);
        let bytes = tree(&digest)?;
        let decoded = reapi::Tree::decode(bytes.as_slice())
            .map_err(|e| format!("the tree of `{}` does not decode: {e}", dir.path))?;
        for directory in decoded.root.iter().chain(&decoded.children) {
            for file in &directory.files {
                out.insert(local(
                    file.digest.as_ref(),
                    &format!("file `{}`", file.name),
                )?);
            }
        }
    }
    Ok(out)
}

/// A reader that fails at its end if the bytes it gave do not have `digest`: a corrupt
/// blob is never exported.
struct Verifying<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
    digest: Digest,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if n == 0
            && (self.len != self.digest.size
                || *self.hasher.finalize().as_bytes() != self.digest.hash)
        {
            return Err(io::Error::other(format!(
                "the store's blob {} is corrupt (run `cairn store verify --repair`)",
                self.digest
            )));
        }
        Ok(n)
    }
}

fn header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

impl Store {
    /// Writes the results stored under `keys` (those the store has) and every blob they name
    /// to `out` as a cache archive. Keys without a usable result are skipped (returned).
    pub fn export_archive(
        &self,
        keys: &BTreeSet<Digest>,
        out: &mut dyn Write,
    ) -> Result<(ArchiveReport, Vec<Digest>), ArchiveError> {
        let mut results: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        let mut blobs: BTreeSet<Digest> = BTreeSet::new();
        let mut missing = Vec::new();
        for key in keys {
            let Some(result) = self.get_action_result(key)? else {
                missing.push(*key);
                continue;
            };
            let named = named_blobs(&result, &mut |d| {
                self.cas().get_bytes(d).map_err(|e| e.to_string())
            })
            .map_err(|why| ArchiveError::Entry {
                entry: entry_name("results", key),
                why,
            })?;
            blobs.extend(named);
            results.insert(*key, result.encode_to_vec());
        }
        let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)
            .map_err(|e| ArchiveError::Malformed(format!("cannot start compressing: {e}")))?;
        encoder
            .include_checksum(true)
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        let written = {
            let mut builder = tar::Builder::new(&mut encoder);
            let io =
                |e: io::Error| ArchiveError::Malformed(format!("cannot write the archive: {e}"));
            builder
                .append(
                    &header(VERSION_ENTRY, VERSION.len() as u64).map_err(io)?,
                    VERSION,
                )
                .map_err(io)?;
            let mut bytes = 0;
            for digest in &blobs {
                let reader = Verifying {
                    inner: self.cas().open_blob(digest)?,
                    hasher: blake3::Hasher::new(),
                    len: 0,
                    digest: *digest,
                };
                builder
                    .append(
                        &header(&entry_name("blobs", digest), digest.size).map_err(io)?,
                        reader,
                    )
                    .map_err(io)?;
                bytes += digest.size;
            }
            for (key, encoded) in &results {
                builder
                    .append(
                        &header(&entry_name("results", key), encoded.len() as u64).map_err(io)?,
                        encoded.as_slice(),
                    )
                    .map_err(io)?;
            }
            builder.finish().map_err(io)?;
            bytes
        };
        encoder
            .finish()
            .map_err(|e| ArchiveError::Malformed(format!("cannot finish the archive: {e}")))?;
        Ok((
            ArchiveReport {
                results: results.len() as u64,
                blobs: blobs.len() as u64,
                bytes: written,
            },
            missing,
        ))
    }

    /// Imports a cache archive: everything is checked first (see the module's comment), and
    /// on any error nothing enters the store.
    pub fn import_archive(&self, input: &mut dyn Read) -> Result<ArchiveReport, ArchiveError> {
        let staging = Staging::new(&self.root().join("tmp"))?;
        let decoder = zstd::stream::read::Decoder::new(input)
            .map_err(|e| ArchiveError::Malformed(format!("not a zstd stream: {e}")))?;
        let mut archive = tar::Archive::new(decoder);
        let entries = archive
            .entries()
            .map_err(|e| ArchiveError::Malformed(format!("not a tar archive: {e}")))?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut blobs: BTreeMap<Digest, PathBuf> = BTreeMap::new();
        let mut results: BTreeMap<Digest, reapi::ActionResult> = BTreeMap::new();
        let mut first = true;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| ArchiveError::Malformed(format!("not a readable tar archive: {e}")))?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            let bad = |why: &str| ArchiveError::Entry {
                entry: name.clone(),
                why: why.to_string(),
            };
            if raw.first() == Some(&b'/') {
                return Err(bad("an absolute path"));
            }
            if raw.split(|b| *b == b'/').any(|c| c == b"..") {
                return Err(bad("a path with `..`"));
            }
            let kind = entry.header().entry_type();
            if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                let what = match kind {
                    tar::EntryType::Symlink => "a symbolic link",
                    tar::EntryType::Link => "a hard link",
                    tar::EntryType::Char | tar::EntryType::Block => "a device file",
                    tar::EntryType::Fifo => "a FIFO",
                    tar::EntryType::Directory => "a directory",
                    _ => "not a regular file",
                };
                return Err(bad(&format!(
                    "{what} (an archive holds regular files only)"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(bad("a duplicate entry"));
            }
            let size = entry.header().size().map_err(|e| bad(&e.to_string()))?;
            if first {
                first = false;
                let mut version = Vec::new();
                if name == VERSION_ENTRY && size <= 64 {
                    entry
                        .read_to_end(&mut version)
                        .map_err(|e| bad(&e.to_string()))?;
                }
                if version != VERSION {
                    return Err(ArchiveError::Malformed(format!(
                        "not a cairn cache archive of this version (the first entry is `{name}`, not `{VERSION_ENTRY}` holding {:?})",
                        String::from_utf8_lossy(VERSION).trim()
                    )));
                }
                continue;
            }
            let (kind, rest) = name.split_once('/').unwrap_or(("", ""));
            let digest = parse_name(rest).ok_or_else(|| {
                bad("not a name of the archive's layout (`blobs/<hex>-<size>` or `results/<hex>-<size>`)")
            })?;
            match kind {
                "blobs" => {
                    if size != digest.size {
                        return Err(bad(&format!(
                            "its size is {size} bytes, not the {} its name says",
                            digest.size
                        )));
                    }
                    let path = staging.dir.join(blobs.len().to_string());
                    let mut file = File::create(&path).at("create", &path)?;
                    let mut hasher = blake3::Hasher::new();
                    let mut buf = vec![0; 256 << 10];
                    let mut len = 0u64;
                    loop {
                        let n = entry.read(&mut buf).map_err(|e| bad(&e.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        file.write_all(&buf[..n]).at("write", &path)?;
                        len += n as u64;
                    }
                    if len != digest.size || *hasher.finalize().as_bytes() != digest.hash {
                        return Err(bad(
                            "its bytes do not match its name (a damaged or altered archive)",
                        ));
                    }
                    blobs.insert(digest, path);
                }
                "results" => {
                    if size > MAX_RESULT_BYTES {
                        return Err(bad("an action result larger than 64 MiB"));
                    }
                    let mut bytes = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(|e| bad(&e.to_string()))?;
                    let result = reapi::ActionResult::decode(bytes.as_slice())
                        .map_err(|e| bad(&format!("not an action result: {e}")))?;
                    results.insert(digest, result);
                }
                _ => {
                    return Err(bad(
                        "not a name of the archive's layout (`blobs/<hex>-<size>` or `results/<hex>-<size>`)",
                    ));
                }
            }
        }
        if first {
            return Err(ArchiveError::Malformed("an empty archive".to_string()));
        }
        for (key, result) in &results {
            let bad = |why: String| ArchiveError::Entry {
                entry: entry_name("results", key),
                why,
            };
            let named = named_blobs(result, &mut |d| match blobs.get(d) {
                Some(path) => std::fs::read(path).map_err(|e| e.to_string()),
                None => self.cas().get_bytes(d).map_err(|_| {
                    format!("it names blob {d}, which neither the archive nor the store has")
                }),
            })
            .map_err(bad)?;
            if let Some(gone) = named
                .iter()
                .find(|d| !blobs.contains_key(d) && !self.cas().contains(d))
            {
                return Err(bad(format!(
                    "it names blob {gone}, which neither the archive nor the store has"
                )));
            }
        }
        // Everything checked: now the store.
        let mut report = ArchiveReport::default();
        for (digest, path) in &blobs {
            let mut file = File::open(path).at("read", path)?;
            self.cas().put_stream(digest, &mut file)?;
            report.blobs += 1;
            report.bytes += digest.size;
        }
        for (key, result) in &results {
            self.put_action_result(key, result)?;
            report.results += 1;
        }
        Ok(report)
    }
}

/// A directory under the store's `tmp/`, removed when dropped (whatever happened).
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(tmp: &Path) -> Result<Staging, StoreError> {
        std::fs::create_dir_all(tmp).at("create", tmp)?;
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(tmp)
            .at("create", tmp)?
            .keep();
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding one result with an output file, an output tree and stdout.
    fn store_with_result(dir: &Path) -> (Store, Digest) {
        let store = Store::open(dir).unwrap();
        let out = store.cas().put_bytes(b"output bytes\n").unwrap();
        let log = store.cas().put_bytes(b"log\n").unwrap();
        let inner = store.cas().put_bytes(b"in a tree\n").unwrap();
        let tree = reapi::Tree {
            root: Some(reapi::Directory {
                files: vec![reapi::FileNode {
                    name: "f.txt".into(),
                    digest: Some(inner.to_reapi()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            children: vec![],
        };
        let tree = store.cas().put_bytes(&tree.encode_to_vec()).unwrap();
        let result = reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out.txt".into(),
                digest: Some(out.to_reapi()),
                ..Default::default()
            }],
            output_directories: vec![reapi::OutputDirectory {
                path: "dist".into(),
                tree_digest: Some(tree.to_reapi()),
                ..Default::default()
            }],
            stdout_digest: Some(log.to_reapi()),
            ..Default::default()
        };
        let key = Digest::of_bytes(b"an action");
        store.put_action_result(&key, &result).unwrap();
        (store, key)
    }

    fn export(store: &Store, key: Digest) -> Vec<u8> {
        let mut bytes = Vec::new();
        let (report, missing) = store
            .export_archive(&[key, Digest::of_bytes(b"unknown")].into(), &mut bytes)
            .unwrap();
        assert_eq!((report.results, report.blobs), (1, 4));
        assert_eq!(missing, [Digest::of_bytes(b"unknown")]);
        bytes
    }

    #[test]
    fn an_export_imports_into_an_empty_store_and_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let (store, key) = store_with_result(a.path());
        let bytes = export(&store, key);
        assert_eq!(
            bytes,
            export(&store, key),
            "the same results, the same bytes"
        );
        let b = tempfile::tempdir().unwrap();
        let other = Store::open(b.path()).unwrap();
        let report = other.import_archive(&mut bytes.as_slice()).unwrap();
        assert_eq!((report.results, report.blobs), (1, 4));
        assert_eq!(
            other.get_action_result(&key).unwrap(),
            store.get_action_result(&key).unwrap()
        );
        assert_eq!(
            std::fs::read_dir(b.path().join("tmp")).unwrap().count(),
            0,
            "no staging left"
        );
    }

    /// An archive of `entries` (name, type, bytes), in that order, after the version entry.
    fn archive(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        {
            let mut builder = tar::Builder::new(&mut encoder);
            builder
                .append(
                    &header(VERSION_ENTRY, VERSION.len() as u64).unwrap(),
                    VERSION,
                )
                .unwrap();
            for (name, kind, bytes) in entries {
                let mut h = tar::Header::new_gnu();
                // Raw names: `set_path` refuses `..` and absolute paths.
                let raw = name.as_bytes();
                h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(*kind);
                if *kind == tar::EntryType::Symlink {
                    h.set_link_name("/etc/passwd").unwrap();
                }
                h.set_cksum();
                builder.append(&h, *bytes).unwrap();
            }
            builder.finish().unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn every_malformed_archive_is_refused_naming_its_entry_and_writes_nothing() {
        let blob = b"some bytes";
        let good = entry_name("blobs", &Digest::of_bytes(blob));
        let wrong = entry_name("blobs", &Digest::of_bytes(b"other bytes"));
        let result = reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "o".into(),
                digest: Some(Digest::of_bytes(b"absent").to_reapi()),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let result_name = entry_name("results", &Digest::of_bytes(b"k"));
        let regular = tar::EntryType::Regular;
        let cases: Vec<(Vec<(&str, tar::EntryType, &[u8])>, &str, &str)> = vec![
            (
                vec![("/etc/passwd", regular, blob)],
                "/etc/passwd",
                "an absolute path",
            ),
            (
                vec![("blobs/../../x", regular, blob)],
                "blobs/../../x",
                "`..`",
            ),
            (
                vec![("blobs/link", tar::EntryType::Symlink, b"")],
                "blobs/link",
                "a symbolic link",
            ),
            (
                vec![("blobs/hard", tar::EntryType::Link, b"")],
                "blobs/hard",
                "a hard link",
            ),
            (
                vec![("blobs/dev", tar::EntryType::Char, b"")],
                "blobs/dev",
                "a device file",
            ),
            (
                vec![(&good, regular, blob), (&good, regular, blob)],
                &good,
                "a duplicate entry",
            ),
            (
                vec![(&wrong, regular, b"some bytes!")],
                &wrong,
                "do not match its name",
            ),
            (
                vec![("blobs/abc", regular, blob)],
                "blobs/abc",
                "not a name of the archive's layout",
            ),
            (
                vec![(&result_name, regular, &result)],
                &result_name,
                "neither the archive nor the store has",
            ),
            (
                vec![(&result_name, regular, b"\xff\xff\xff")],
                &result_name,
                "not an action result",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.cas().put_bytes(b"already here").unwrap();
        for (entries, entry, why) in cases {
            let bytes = archive(&entries);
            let err = store.import_archive(&mut bytes.as_slice()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("entry `{entry}`")),
                "{entry}: {text}"
            );
            assert!(text.contains(why), "{entry}: {text}");
            assert_eq!(
                store.cas().list().unwrap().len(),
                1,
                "{entry}: nothing stored"
            );
            assert_eq!(store.stats().unwrap().actions, 0);
            assert_eq!(
                std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
                0
            );
        }
        // Not an archive at all, and an archive of another kind.
        let err = store.import_archive(&mut &b"plain text"[..]).unwrap_err();
        assert!(matches!(err, ArchiveError::Malformed(_)), "{err}");
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        {
            let mut builder = tar::Builder::new(&mut encoder);
            builder
                .append(&header("README", 2).unwrap(), &b"hi"[..])
                .unwrap();
            builder.finish().unwrap();
        }
        let other = encoder.finish().unwrap();
        let err = store.import_archive(&mut other.as_slice()).unwrap_err();
        assert!(
            err.to_string().contains("not a cairn cache archive"),
            "{err}"
        );
    }
}

/// Property tests (issue 15): an archive is bytes from outside (a CI cache); importing any of
/// them is a report or an error, never a panic, and an error leaves the store as it was.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    /// One generated entry after the version entry.
    #[derive(Debug, Clone)]
    enum Entry {
        /// A blob under its own name.
        Blob(Vec<u8>),
        /// A blob under the name of other bytes (or another size).
        Misnamed(Vec<u8>, u64),
        /// A result under a valid name naming some of the archive's blobs (by index), some
        /// digests of its own and perhaps a tree.
        Result(
            Vec<proptest::sample::Index>,
            Vec<(String, i64)>,
            Option<usize>,
        ),
        /// A result of any bytes.
        RawResult(Vec<u8>),
        /// Any name at all.
        Named(String, Vec<u8>),
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            3 => bytes().prop_map(Entry::Blob),
            1 => (bytes(), any::<u64>()).prop_map(|(b, s)| Entry::Misnamed(b, s)),
            2 => (
                proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
                proptest::collection::vec(("[0-9a-f]{64}|\\PC{0,3}", any::<i64>()), 0..2),
                any::<Option<usize>>(),
            )
                .prop_map(|(i, d, t)| Entry::Result(i, d, t)),
            1 => bytes().prop_map(Entry::RawResult),
            1 => ("[a-z/.]{0,12}|blobs/[0-9a-f-]{0,70}|\\PC{0,20}", bytes())
                .prop_map(|(n, b)| Entry::Named(n, b)),
        ]
    }

    fn result_name(seed: usize) -> String {
        entry_name("results", &Digest::of_bytes(&seed.to_le_bytes()))
    }

    /// The archive's tar entries: name and bytes, version entry first.
    fn entries(list: &[Entry]) -> Vec<(String, Vec<u8>)> {
        let blobs: Vec<Digest> = list
            .iter()
            .filter_map(|e| match e {
                Entry::Blob(b) => Some(Digest::of_bytes(b)),
                _ => None,
            })
            .collect();
        let mut out = vec![(VERSION_ENTRY.to_string(), VERSION.to_vec())];
        for (i, e) in list.iter().enumerate() {
            out.push(match e {
                Entry::Blob(b) => (entry_name("blobs", &Digest::of_bytes(b)), b.clone()),
                Entry::Misnamed(b, size) => {
                    let mut d = Digest::of_bytes(b);
                    d.size = *size;
                    (entry_name("blobs", &d), b.clone())
                }
                Entry::Result(named, digests, tree) => {
                    let mut result = reapi::ActionResult::default();
                    for (n, index) in named.iter().enumerate() {
                        let digest = match blobs.len() {
                            0 => Digest::of_bytes(b"absent"),
                            len => blobs[index.index(len)],
                        };
                        result.output_files.push(reapi::OutputFile {
                            path: format!("out{n}"),
                            digest: Some(digest.to_reapi()),
                            ..Default::default()
                        });
                    }
                    for (hash, size_bytes) in digests {
                        result.stdout_digest = Some(reapi::Digest {
                            hash: hash.clone(),
                            size_bytes: *size_bytes,
                        });
                    }
                    if let (Some(t), false) = (tree, blobs.is_empty()) {
                        result.output_directories.push(reapi::OutputDirectory {
                            path: "dir".into(),
                            tree_digest: Some(blobs[t % blobs.len()].to_reapi()),
                            ..Default::default()
                        });
                    }
                    (result_name(i), result.encode_to_vec())
                }
                Entry::RawResult(b) => (result_name(i), b.clone()),
                Entry::Named(name, b) => (name.clone(), b.clone()),
            });
        }
        out
    }

    fn archive_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        {
            let mut builder = tar::Builder::new(&mut encoder);
            for (name, bytes) in entries {
                let mut h = tar::Header::new_gnu();
                // Raw names (`set_path` refuses `..` and absolute paths), cut to the field.
                let raw = &name.as_bytes()[..name.len().min(100)];
                h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
                h.set_size(bytes.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                builder.append(&h, bytes.as_slice()).unwrap();
            }
            builder.finish().unwrap();
        }
        encoder.finish().unwrap()
    }

    /// What an import may change: the blobs and results stored.
    fn contents(store: &Store) -> (Vec<(String, u64)>, u64) {
        let mut blobs = store.cas().list().unwrap();
        blobs.sort();
        (blobs, store.stats().unwrap().actions)
    }

    proptest! {
        #[test]
        fn entry_names_round_trip_and_any_name_parses_or_not(
            hash in any::<[u8; 32]>(),
            size in any::<u64>(),
            text in "[0-9a-f]{64}-[0-9]{1,21}|\\PC{0,80}",
        ) {
            let digest = Digest { hash, size };
            let name = entry_name("blobs", &digest);
            prop_assert_eq!(parse_name(name.strip_prefix("blobs/").unwrap()), Some(digest));
            // A name that parses is the one way to write its digest (no `-007` for 7).
            if let Some(d) = parse_name(&text) {
                prop_assert_eq!(entry_name("blobs", &d), format!("blobs/{text}"));
            }
        }
    }

    #[test]
    fn any_bytes_are_refused_as_an_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let strategy = (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        );
        TestRunner::default()
            .run(&strategy, |(compressed, bytes)| {
                let input = if compressed {
                    zstd::bulk::compress(&bytes, 1).unwrap()
                } else {
                    bytes
                };
                prop_assert!(store.import_archive(&mut input.as_slice()).is_err());
                prop_assert_eq!(contents(&store), (Vec::new(), 0));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn any_entries_are_refused_or_imported_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let strategy = proptest::collection::vec(entry(), 0..6);
        TestRunner::default()
            .run(&strategy, |list| {
                let entries = entries(&list);
                let before = contents(&store);
                match store.import_archive(&mut archive_of(&entries).as_slice()) {
                    Ok(report) => {
                        let results: Vec<Digest> = entries
                            .iter()
                            .filter_map(|(n, _)| parse_name(n.strip_prefix("results/")?))
                            .collect();
                        prop_assert_eq!(report.results, results.len() as u64);
                        for key in results {
                            prop_assert!(store.get_action_result(&key).unwrap().is_some());
                        }
                    }
                    Err(_) => prop_assert_eq!(contents(&store), before),
                }
                prop_assert_eq!(
                    std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
                    0,
                    "no staging left"
                );
                Ok(())
            })
            .unwrap();
    }
}
