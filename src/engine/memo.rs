//! The key memo: per target, a fingerprint of everything its action key is computed from, and
//! the last successful outcome: the key, the output files (by digest) and the recorded run
//! time. When the fingerprint is unchanged, the build uses the remembered key and skips
//! building the action (environment, input Merkle tree, encodings), which is most of a cached
//! target's CPU time; and when every remembered output is still in place (known by its
//! metadata to hold its digest), the target is up to date without an action-cache lookup, as
//! Bazel's local action cache decides. Otherwise the key is looked up as usual; a miss
//! computes the action in full.
//!
//! The fingerprint covers the whole target definition (its serialized form, so a new field
//! cannot be forgotten), the digests of its sources and dependency outputs, the resolved
//! tools and the tool path. The memo is kept per cairn binary: a different binary (another
//! version, or a rebuilt one whose action encoding may differ) starts with an empty memo.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use cairn_store::{Digest, FileInfo, Record, Store};
use rustc_hash::FxHashMap;

use super::outputs::Provides;
use crate::action::Tool;
use crate::graph::{Label, Target};
use crate::workspace::WorkspacePath;

/// A fingerprint: BLAKE3 of the action's ingredients.
pub(crate) type Fingerprint = [u8; 32];

/// A target's last successful outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub fingerprint: Fingerprint,
    pub key: Digest,
    /// What it provided (its outputs' files and symlinks), by workspace path.
    pub outputs: Provides,
    /// The recorded run time of its result (what the cache saves).
    pub saved_ms: u64,
    /// When this memo last had the result's use recorded in the store (ms since the epoch):
    /// within `TOUCH_GRANULARITY_MS` of it, recording it again changes nothing.
    pub used_ms: i64,
}

/// Now, in milliseconds since the epoch, for `Outcome::used_ms`.
#[allow(clippy::disallowed_methods)] // Use times are wall-clock times, as in the store.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) struct KeyMemo {
    /// The identity of the cairn binary that wrote the memo.
    binary: String,
    known: FxHashMap<String, Outcome>,
    updates: Mutex<Vec<(String, Outcome)>>,
}

/// A derived record: removing any action result drops the memo, so a target is never
/// reported cached from a result the store no longer has.
fn record_of(workspace: &str) -> Record<'_> {
    Record::KeyMemo { workspace }
}

fn hash_info(h: &mut blake3::Hasher, info: &FileInfo) {
    h.update(&info.digest.hash);
    h.update(&info.digest.size.to_le_bytes());
    h.update(&[info.executable as u8]);
}

/// The running binary's identity: path, size, mtime and inode.
pub(crate) fn binary_identity() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let meta = std::fs::metadata(&exe).ok();
    format!(
        "{} {} {} {:?}",
        env!("CARGO_PKG_VERSION"),
        exe.display(),
        meta.as_ref()
            .map_or(0, |m| m.mtime() * 1_000_000_000 + m.mtime_nsec()),
        meta.map(|m| (m.len(), m.ino())),
    )
}

impl KeyMemo {
    /// Loads the memo of `workspace`; an unreadable one, or one from another binary, is empty.
    pub fn load(store: &Store, workspace: &str) -> KeyMemo {
        let binary = binary_identity();
        let known = store
            .get_record(&record_of(workspace))
            .ok()
            .flatten()
            .and_then(|bytes| postcard::from_bytes::<Stored>(&bytes).ok())
            .filter(|s| s.binary == binary)
            .map(|s| {
                s.entries
                    .into_iter()
                    .map(StoredEntry::into_outcome)
                    .collect()
            })
            .unwrap_or_default();
        KeyMemo {
            binary,
            known,
            updates: Mutex::default(),
        }
    }

    /// The fingerprint of an action's ingredients (the arguments of `prepare_action`, less
    /// `pass_env`, which never enters a key), and whether the build runs without a sandbox:
    /// such a build's successes never make a sandboxed build's target up to date.
    pub fn fingerprint(
        target: &Target,
        srcs: &[FileInfo],
        deps: &Provides,
        tools: &[Tool],
        path_var: &str,
        platform: &BTreeMap<String, String>,
        unsandboxed: bool,
    ) -> Fingerprint {
        let mut h = blake3::Hasher::new();
        h.update(b"cairn key memo v6\0");
        h.update(&[unsandboxed as u8]);
        h.update(&target.definition_digest());
        // `srcs` are the digests of the target's `srcs`, in that order (the paths are in the
        // serialized target).
        h.update(&(srcs.len() as u64).to_le_bytes());
        for info in srcs {
            hash_info(&mut h, info);
        }
        h.update(&(deps.files.len() as u64).to_le_bytes());
        for (path, info) in &deps.files {
            h.update(path.as_str().as_bytes());
            h.update(b"\0");
            hash_info(&mut h, info);
        }
        h.update(&(deps.links.len() as u64).to_le_bytes());
        for (path, target) in &deps.links {
            h.update(path.as_str().as_bytes());
            h.update(b"\0");
            h.update(target.as_bytes());
            h.update(b"\0");
        }
        h.update(&(tools.len() as u64).to_le_bytes());
        for tool in tools {
            h.update(tool.name.as_bytes());
            h.update(b"\0");
            h.update(tool.path.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(&tool.digest.hash);
            h.update(&tool.installation.map_or([0; 32], |i| i.hash));
        }
        h.update(path_var.as_bytes());
        h.update(b"\0");
        for (name, value) in platform {
            h.update(name.as_bytes());
            h.update(b"\0");
            h.update(value.as_bytes());
            h.update(b"\0");
        }
        *h.finalize().as_bytes()
    }

    /// The last successful outcome of `label` if its fingerprint is still `fingerprint`.
    pub fn outcome(&self, label: &Label, fingerprint: &Fingerprint) -> Option<&Outcome> {
        self.known
            .get(&label.to_string())
            .filter(|o| o.fingerprint == *fingerprint)
    }

    /// Remembers a successful outcome of `label` (written by `save`).
    pub fn remember(&self, label: &Label, outcome: Outcome) {
        let text = label.to_string();
        if self.known.get(&text) == Some(&outcome) {
            return;
        }
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((text, outcome));
    }

    /// Writes the memo back if anything was learnt.
    pub fn save(self, store: &Store, workspace: &str) -> cairn_store::Result<()> {
        let updates = self.updates.into_inner().unwrap_or_else(|p| p.into_inner());
        if updates.is_empty() {
            return Ok(());
        }
        let mut known = self.known;
        known.extend(updates);
        let stored = Stored {
            binary: self.binary,
            entries: known
                .into_iter()
                .map(|(label, o)| StoredEntry::of(label, o))
                .collect(),
        };
        store.put_record(
            &record_of(workspace),
            &postcard::to_stdvec(&stored).expect("the memo serializes"),
        )
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    binary: String,
    entries: Vec<StoredEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEntry {
    label: String,
    fingerprint: Fingerprint,
    key: ([u8; 32], u64),
    /// Path, hash, size, executable.
    outputs: Vec<(WorkspacePath, [u8; 32], u64, bool)>,
    /// Path, target.
    links: Vec<(WorkspacePath, String)>,
    saved_ms: u64,
    used_ms: i64,
}

impl StoredEntry {
    fn of(label: String, o: Outcome) -> StoredEntry {
        StoredEntry {
            label,
            fingerprint: o.fingerprint,
            key: (o.key.hash, o.key.size),
            outputs: o
                .outputs
                .files
                .into_iter()
                .map(|(path, info)| (path, info.digest.hash, info.digest.size, info.executable))
                .collect(),
            links: o.outputs.links.into_iter().collect(),
            saved_ms: o.saved_ms,
            used_ms: o.used_ms,
        }
    }

    fn into_outcome(self) -> (String, Outcome) {
        let (hash, size) = self.key;
        let files = self
            .outputs
            .into_iter()
            .map(|(path, hash, size, executable)| {
                let digest = Digest { hash, size };
                (path, FileInfo { digest, executable })
            })
            .collect();
        let outputs = Provides {
            files,
            links: self.links.into_iter().collect(),
        };
        let outcome = Outcome {
            fingerprint: self.fingerprint,
            key: Digest { hash, size },
            outputs,
            saved_ms: self.saved_ms,
            used_ms: self.used_ms,
        };
        (self.label, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ActionFixture;

    fn fingerprint(f: &ActionFixture, path_var: &str) -> Fingerprint {
        fingerprint_on(f, path_var, &BTreeMap::new())
    }

    fn fingerprint_on(
        f: &ActionFixture,
        path_var: &str,
        platform: &BTreeMap<String, String>,
    ) -> Fingerprint {
        let srcs: Vec<FileInfo> = f.srcs.values().copied().collect();
        let deps = Provides {
            files: f.deps.clone(),
            links: Default::default(),
        };
        KeyMemo::fingerprint(&f.target, &srcs, &deps, &f.tools, path_var, platform, false)
    }

    #[test]
    fn every_ingredient_changes_the_fingerprint() {
        let base = ActionFixture::new(3, 2);
        let fp = fingerprint(&base, "/bin");
        assert_eq!(fp, fingerprint(&ActionFixture::new(3, 2), "/bin"));
        assert_ne!(fp, fingerprint(&base, "/usr/bin"));
        let pool: BTreeMap<String, String> = [("pool".to_string(), "large".to_string())].into();
        assert_ne!(
            fp,
            fingerprint_on(&base, "/bin", &pool),
            "[remote.platform]"
        );
        let changes: [fn(&mut ActionFixture); 7] = [
            |f| f.target.cmd.push(' '),
            |f| {
                f.target.env.insert("A".into(), "1".into());
            },
            |f| f.target.timeout_ms += 1,
            |f| f.srcs.values_mut().next().unwrap().executable = true,
            |f| f.deps.values_mut().next().unwrap().digest = Digest::of_bytes(b"other"),
            |f| f.tools[0].digest = Digest::of_bytes(b"another sh"),
            |f| f.tools[0].installation = Some(Digest::of_bytes(b"another libc")),
        ];
        for change in changes {
            let mut f = ActionFixture::new(3, 2);
            change(&mut f);
            assert_ne!(fp, fingerprint(&f, "/bin"));
        }
    }

    #[test]
    fn a_key_is_returned_only_for_the_same_fingerprint_and_survives_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(dir.path()).unwrap();
        let f = ActionFixture::new(3, 2);
        let fp = fingerprint(&f, "/bin");
        let label = &f.target.label;
        let outcome = Outcome {
            fingerprint: fp,
            key: f.key(),
            outputs: Provides {
                files: f.deps.clone(),
                links: [(
                    WorkspacePath::in_package("apps/web", "node_modules/.bin/tool").unwrap(),
                    "../tool/cli.js".to_string(),
                )]
                .into(),
            },
            saved_ms: 12,
            used_ms: 1_800_000_000_000,
        };
        let memo = KeyMemo::load(&db, "/ws");
        assert_eq!(memo.outcome(label, &fp), None);
        memo.remember(label, outcome.clone());
        memo.save(&db, "/ws").unwrap();
        let memo = KeyMemo::load(&db, "/ws");
        assert_eq!(memo.outcome(label, &fp), Some(&outcome));
        assert_eq!(memo.outcome(label, &[0; 32]), None);
        assert_eq!(KeyMemo::load(&db, "/other").outcome(label, &fp), None);
    }
}

/// Property tests (issue 15): the memo read back from the store may be damaged or foreign;
/// loading any bytes is a memo (empty when unreadable), never a panic, and what was saved
/// loads back as it was.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    fn path() -> impl Strategy<Value = WorkspacePath> {
        "[a-c]{1,2}(/[a-c.]{1,3}){0,2}"
            .prop_filter_map("a normal path", |p| WorkspacePath::in_package("", &p).ok())
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        let info = (any::<[u8; 32]>(), any::<u64>(), any::<bool>()).prop_map(
            |(hash, size, executable)| FileInfo {
                digest: Digest { hash, size },
                executable,
            },
        );
        (
            any::<[u8; 32]>(),
            any::<([u8; 32], u64)>(),
            proptest::collection::btree_map(path(), info, 0..3),
            proptest::collection::btree_map(path(), "\\PC{0,8}", 0..2),
            any::<(u64, i64)>(),
        )
            .prop_map(
                |(fingerprint, (hash, size), files, links, (saved_ms, used_ms))| Outcome {
                    fingerprint,
                    key: Digest { hash, size },
                    outputs: Provides { files, links },
                    saved_ms,
                    used_ms,
                },
            )
    }

    fn label() -> impl Strategy<Value = Label> {
        "//[a-c]{1,2}(/[a-c]{1,2}){0,2}:[a-c]{1,3}".prop_map(|t| Label::parse(&t, "").unwrap())
    }

    #[test]
    fn saved_outcomes_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let strategy = proptest::collection::btree_map(label(), outcome(), 0..4);
        TestRunner::default()
            .run(&strategy, |outcomes| {
                store.remove_record(&record_of("/ws")).unwrap();
                let memo = KeyMemo::load(&store, "/ws");
                for (label, outcome) in &outcomes {
                    memo.remember(label, outcome.clone());
                }
                memo.save(&store, "/ws").unwrap();
                let memo = KeyMemo::load(&store, "/ws");
                for (label, outcome) in &outcomes {
                    prop_assert_eq!(memo.outcome(label, &outcome.fingerprint), Some(outcome));
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn any_stored_memo_loads_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // This binary's identity first, so that decoding goes on into the entries.
        let identity = postcard::to_stdvec(&binary_identity()).unwrap();
        let strategy = (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..512),
        );
        TestRunner::default()
            .run(&strategy, |(ours, rest)| {
                let bytes = if ours {
                    [identity.as_slice(), &rest].concat()
                } else {
                    rest
                };
                store.put_record(&record_of("/ws"), &bytes).unwrap();
                let memo = KeyMemo::load(&store, "/ws");
                for (path, _) in memo.known.values().flat_map(|o| &o.outputs.files) {
                    prop_assert!(WorkspacePath::in_package("", path.as_str()).as_ref() == Ok(path));
                }
                Ok(())
            })
            .unwrap();
    }
}
