//! The records cairn keeps beside action results, each kind under a key built here and only
//! here: the analysis cache, the stored scan, the key memo and the up-to-date record. Their
//! bytes are opaque to the store (the engine encodes them); what the store decides is where
//! each lives and which are *derived* from action results (dropped whenever a result is
//! removed, so nothing derived outlives what it was derived from).

use crate::Store;
use crate::db::DERIVED_PREFIX;
use crate::error::Result;

/// One record, named by its kind and what it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A workspace's evaluated packages (the analysis cache), by workspace root.
    Analysis {
        /// The workspace root, as the engine names workspaces.
        workspace: &'a str,
    },
    /// A workspace's stored scan (its files, validated by directory metadata).
    Scan {
        /// The workspace root.
        workspace: &'a str,
    },
    /// A workspace's key memo: remembered action keys and last successes. Derived.
    KeyMemo {
        /// The workspace root.
        workspace: &'a str,
    },
    /// The up-to-date record of one command in a workspace: its last outcome. Derived.
    UpToDate {
        /// The workspace root.
        workspace: &'a str,
        /// The command's identity (a digest of what makes two invocations the same).
        command: &'a str,
    },
}

impl Record<'_> {
    /// Whether the record is derived from action results (and dropped with any of them).
    pub fn is_derived(&self) -> bool {
        matches!(self, Record::KeyMemo { .. } | Record::UpToDate { .. })
    }

    /// The key in the store's `kv` table. Kept byte-identical to the keys written before this
    /// type existed, so existing stores keep their records.
    fn key(&self) -> String {
        match self {
            Record::Analysis { workspace } => format!("analysis:{workspace}"),
            Record::Scan { workspace } => format!("scan:{workspace}"),
            Record::KeyMemo { workspace } => format!("{DERIVED_PREFIX}key-memo:{workspace}"),
            Record::UpToDate { workspace, command } => {
                format!("{DERIVED_PREFIX}up-to-date:{workspace}\0{command}")
            }
        }
    }
}

impl Store {
    /// The bytes of a record, if stored.
    pub fn get_record(&self, record: &Record) -> Result<Option<Vec<u8>>> {
        self.db().get_value(&record.key())
    }

    /// Stores (replaces) a record.
    pub fn put_record(&self, record: &Record, bytes: &[u8]) -> Result<()> {
        self.db().put_value(&record.key(), bytes)
    }

    /// Removes a record; a missing one is fine.
    pub fn remove_record(&self, record: &Record) -> Result<()> {
        self.db().remove_value(&record.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    #[test]
    fn derived_records_go_with_any_removed_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ws = "/ws";
        let records = [
            Record::Analysis { workspace: ws },
            Record::Scan { workspace: ws },
            Record::KeyMemo { workspace: ws },
            Record::UpToDate {
                workspace: ws,
                command: "c1",
            },
        ];
        for r in &records {
            store.put_record(r, b"x").unwrap();
        }
        store
            .put_action_result(&Digest::of_bytes(b"k"), &Default::default())
            .unwrap();
        store
            .db()
            .remove_action_result(&Digest::of_bytes(b"k"))
            .unwrap();
        for r in &records {
            let kept = store.get_record(r).unwrap().is_some();
            assert_eq!(kept, !r.is_derived(), "{r:?}");
        }
        store.remove_record(&records[0]).unwrap();
        assert_eq!(store.get_record(&records[0]).unwrap(), None);
    }
}
