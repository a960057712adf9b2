//! The key memo: per target, a fingerprint of everything its action key is computed from and
//! the key it gave. When the fingerprint is unchanged, the build uses the remembered key and
//! skips building the action (environment, input Merkle tree, encodings), which is most of a
//! cached target's CPU time. The cache lookup, output checks and everything after still
//! happen as usual; a miss computes the action in full.
//!
//! The fingerprint covers the whole target definition (its serialized form, so a new field
//! cannot be forgotten), the digests of its sources and dependency outputs, the resolved
//! tools and the tool path. The memo is kept per cairn binary: a different binary (another
//! version, or a rebuilt one whose action encoding may differ) starts with an empty memo.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use cairn_store::{Db, Digest, FileInfo};
use rustc_hash::FxHashMap;

use crate::action::Tool;
use crate::graph::{Label, Target};
use crate::workspace::WorkspacePath;

/// A fingerprint: BLAKE3 of the action's ingredients.
pub(crate) type Fingerprint = [u8; 32];

pub(crate) struct KeyMemo {
    /// The identity of the cairn binary that wrote the memo.
    binary: String,
    known: FxHashMap<String, (Fingerprint, Digest)>,
    updates: Mutex<Vec<(String, Fingerprint, Digest)>>,
}

fn record_key(workspace: &str) -> String {
    format!("key-memo:{workspace}")
}

/// The running binary's identity: path, size, mtime and inode.
fn binary_identity() -> String {
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
    pub fn load(db: &Db, workspace: &str) -> KeyMemo {
        let binary = binary_identity();
        let known = db
            .get_value(&record_key(workspace))
            .ok()
            .flatten()
            .and_then(|bytes| postcard::from_bytes::<Stored>(&bytes).ok())
            .filter(|s| s.binary == binary)
            .map(|s| {
                s.entries
                    .into_iter()
                    .map(|(label, fp, hash, size)| (label, (fp, Digest { hash, size })))
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
    /// `pass_env`, which never enters a key).
    pub fn fingerprint(
        target: &Target,
        srcs: &BTreeMap<WorkspacePath, FileInfo>,
        dep_files: &BTreeMap<WorkspacePath, FileInfo>,
        tools: &[Tool],
        path_var: &str,
    ) -> Fingerprint {
        let mut h = blake3::Hasher::new();
        h.update(b"cairn key memo v1\0");
        h.update(&postcard::to_stdvec(target).expect("a target serializes"));
        for files in [srcs, dep_files] {
            h.update(&(files.len() as u64).to_le_bytes());
            for (path, info) in files {
                h.update(path.as_str().as_bytes());
                h.update(b"\0");
                h.update(&info.digest.hash);
                h.update(&info.digest.size.to_le_bytes());
                h.update(&[info.executable as u8]);
            }
        }
        h.update(&(tools.len() as u64).to_le_bytes());
        for tool in tools {
            h.update(tool.name.as_bytes());
            h.update(b"\0");
            h.update(tool.path.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(&tool.digest.hash);
        }
        h.update(path_var.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The key remembered for `label` if its fingerprint is still `fingerprint`.
    pub fn key(&self, label: &Label, fingerprint: &Fingerprint) -> Option<Digest> {
        self.known
            .get(&label.to_string())
            .filter(|(fp, _)| fp == fingerprint)
            .map(|(_, key)| *key)
    }

    /// Remembers the key computed for `label` (written by `save`).
    pub fn remember(&self, label: &Label, fingerprint: Fingerprint, key: Digest) {
        let text = label.to_string();
        if self.known.get(&text) == Some(&(fingerprint, key)) {
            return;
        }
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((text, fingerprint, key));
    }

    /// Writes the memo back if anything was learnt.
    pub fn save(self, db: &Db, workspace: &str) -> cairn_store::Result<()> {
        let updates = self.updates.into_inner().unwrap_or_else(|p| p.into_inner());
        if updates.is_empty() {
            return Ok(());
        }
        let mut known = self.known;
        for (label, fp, key) in updates {
            known.insert(label, (fp, key));
        }
        let stored = Stored {
            binary: self.binary,
            entries: known
                .into_iter()
                .map(|(label, (fp, key))| (label, fp, key.hash, key.size))
                .collect(),
        };
        db.put_value(
            &record_key(workspace),
            &postcard::to_stdvec(&stored).expect("the memo serializes"),
        )
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    binary: String,
    entries: Vec<(String, Fingerprint, [u8; 32], u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ActionFixture;

    fn fingerprint(f: &ActionFixture, path_var: &str) -> Fingerprint {
        KeyMemo::fingerprint(&f.target, &f.srcs, &f.deps, &f.tools, path_var)
    }

    #[test]
    fn every_ingredient_changes_the_fingerprint() {
        let base = ActionFixture::new(3, 2);
        let fp = fingerprint(&base, "/bin");
        assert_eq!(fp, fingerprint(&ActionFixture::new(3, 2), "/bin"));
        assert_ne!(fp, fingerprint(&base, "/usr/bin"));
        let changes: [fn(&mut ActionFixture); 6] = [
            |f| f.target.cmd.push(' '),
            |f| {
                f.target.env.insert("A".into(), "1".into());
            },
            |f| f.target.timeout_ms += 1,
            |f| f.srcs.values_mut().next().unwrap().executable = true,
            |f| f.deps.values_mut().next().unwrap().digest = Digest::of_bytes(b"other"),
            |f| f.tools[0].digest = Digest::of_bytes(b"another sh"),
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
        let db = Db::open(&dir.path().join("db")).unwrap();
        let f = ActionFixture::new(3, 2);
        let fp = fingerprint(&f, "/bin");
        let memo = KeyMemo::load(&db, "/ws");
        assert_eq!(memo.key(&f.target.label, &fp), None);
        memo.remember(&f.target.label, fp, f.key());
        memo.save(&db, "/ws").unwrap();
        let memo = KeyMemo::load(&db, "/ws");
        assert_eq!(memo.key(&f.target.label, &fp), Some(f.key()));
        assert_eq!(memo.key(&f.target.label, &[0; 32]), None);
        assert_eq!(KeyMemo::load(&db, "/other").key(&f.target.label, &fp), None);
    }
}
