//! The up-to-date record: the key memo's idea for a whole command. After a successful
//! `cairn build`/`cairn test` whose every looked-at file will have its state saved, the
//! command's outcome (which targets, their keys) is kept with the generation of the file
//! states saved at its end. The next run of the same command, by the same cairn binary, in
//! the same workspace, is that outcome again, without analysis or a walk of the graph, when:
//!
//! - the file states are still that generation (no build since learnt or dropped anything),
//!   and every one of them is unchanged on disk (one `lstat` each, on two threads): every
//!   BUILD, `.star`, source and output file the recorded build looked at has a state;
//! - the stored scan is current (no directory or ignore file changed: no file appeared or
//!   vanished, so no glob can match anything new);
//! - every tool resolves to the same path and content as before;
//! - `cairn.toml` and the command line (command, patterns, the directory they are relative
//!   to, the sandbox) are the same;
//! - the record is younger than the store's use-time granularity (older, the normal build
//!   runs and records the results' use, as a no-op does every hour).
//!
//! Under these conditions the normal build would reuse every package's analysis, compute the
//! same fingerprints, find every output in place and report every target cached: this is its
//! answer without the work. Not recorded: a build that evaluated a package (a `.star` file it
//! loaded may have no state yet), or looked at a file whose state is not saved (modified
//! within the racy window). Output directories (a `node_modules`) are recorded as the
//! metadata of every directory in them: a file that appears or vanishes in one changes that
//! directory's times, and the replay is off (so is the record while one of them was changed
//! within the racy window). The record lives under the store's derived prefix, so removing any
//! action result drops it.

use std::collections::BTreeMap;

use cairn_store::{Digest, FileStates, RACY_WINDOW_NS, Store, TOUCH_GRANULARITY_MS};
use serde::{Deserialize, Serialize};

use crate::action::{Tool, ToolResolver};
use crate::engine::memo::{binary_identity, now_ms};
use crate::engine::{BuildOutcome, Status, TargetReport};
use crate::graph::{Kind, Label};
use crate::load::stored_scan_is_current;
use crate::workspace::Workspace;
use std::path::Path;

/// What the record knows of one reported target.
#[derive(Serialize, Deserialize)]
struct RecordedTarget {
    label: String,
    kind: Kind,
    key: [u8; 32],
    key_size: u64,
    saved_ms: u64,
}

/// A directory of an output directory, as `lstat` saw it: workspace path, mtime and ctime
/// (ns), inode.
type DirState = (String, i64, i64, u64);

/// The state of every directory under the output directories `roots` (workspace-relative),
/// or `None` when one is missing, not a plain directory, or changed within the racy window
/// (a file added in the same clock tick would not show).
fn dir_states(root: &Path, roots: &[&crate::workspace::WorkspacePath]) -> Option<Vec<DirState>> {
    use std::os::unix::fs::MetadataExt;
    let now_ns = now_ms().saturating_mul(1_000_000);
    let mut out = Vec::new();
    for dir in roots {
        for entry in walkdir::WalkDir::new(dir.to_host(root)).sort_by_file_name() {
            let entry = entry.ok()?;
            if !entry.file_type().is_dir() {
                continue;
            }
            let meta = entry.metadata().ok()?;
            let (mtime, ctime) = (
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            );
            if mtime.max(ctime) > now_ns - RACY_WINDOW_NS {
                return None;
            }
            let rel = entry.path().strip_prefix(root).ok()?;
            out.push((rel.to_string_lossy().into_owned(), mtime, ctime, meta.ino()));
        }
    }
    Some(out)
}

/// Whether every directory recorded by `dir_states` is still as it was.
fn dirs_unchanged(root: &Path, recorded: &[DirState]) -> bool {
    use std::os::unix::fs::MetadataExt;
    recorded.iter().all(|(path, mtime, ctime, ino)| {
        std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| {
            m.is_dir()
                && m.mtime() * 1_000_000_000 + m.mtime_nsec() == *mtime
                && m.ctime() * 1_000_000_000 + m.ctime_nsec() == *ctime
                && m.ino() == *ino
        })
    })
}

/// What a tool name resolved to: path, content hash and size, installation hash (`None`: not
/// found).
type ToolIdentity = Option<(String, [u8; 32], u64, Option<[u8; 32]>)>;

/// What decides most misses, first in a `Record` so it can be read alone (postcard reads
/// fields in order).
#[derive(Serialize, Deserialize)]
struct RecordHead {
    /// Which cairn binary, which command (see `command_identity`).
    binary: String,
    command: String,
    /// `FileStates::generation` after the recorded build saved its states.
    generation: u64,
    recorded_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    head: RecordHead,
    /// Every tool name the build resolved, with what it resolved to.
    tools: Vec<(String, ToolIdentity)>,
    /// In the order the build reported them.
    targets: Vec<RecordedTarget>,
    /// Every directory of the targets' output directories.
    out_dirs: Vec<DirState>,
    /// What the packages' `host_tools()` calls found (an interpreter installed since is a
    /// package to evaluate again).
    probes: std::collections::BTreeMap<String, bool>,
}

/// The identity of a command: what it builds, from where, with which settings.
pub(crate) fn command_identity(
    ws: &Workspace,
    cwd_package: &str,
    patterns: &[String],
    run_tests: bool,
    sandbox: &str,
) -> String {
    let config = std::fs::read(ws.root.join(crate::workspace::CONFIG_FILE)).unwrap_or_default();
    format!(
        "{} patterns={patterns:?} in={:?} sandbox={sandbox} config={}",
        if run_tests { "test" } else { "build" },
        cwd_package,
        Digest::of_bytes(&config).hex(),
    )
}

/// The command's record id: a digest of its identity (derived: removed with any result).
fn record_id(command: &str) -> String {
    Digest::of_bytes(command.as_bytes()).hex()[..32].to_string()
}

fn tool_identity(tool: &Option<Tool>) -> ToolIdentity {
    tool.as_ref().map(|t| {
        (
            t.path.to_string_lossy().into_owned(),
            t.digest.hash,
            t.digest.size,
            t.installation.map(|i| i.hash),
        )
    })
}

/// The recorded outcome of `command`, if it still holds (see the module doc), with every
/// target reported cached. `states` are the workspace's loaded file states: they are checked
/// here, and a build that follows (when this returns `None`) uses the marks.
pub(crate) fn replay(
    ws: &Workspace,
    store_dir: &Path,
    store: &Store,
    states: &FileStates,
    command: &str,
) -> Option<BuildOutcome> {
    let began = std::time::Instant::now();
    let (workspace, id) = (ws.key(), record_id(command));
    let bytes = store
        .get_record(&cairn_store::Record::UpToDate {
            workspace: &workspace,
            command: &id,
        })
        .ok()
        .flatten()?;
    let (head, _) = postcard::take_from_bytes::<RecordHead>(&bytes).ok()?;
    // Saturating: a record's clock may be anything (`any_stored_record_replays_without_panicking`).
    let fresh = now_ms().saturating_sub(head.recorded_ms);
    if head.binary != binary_identity()
        || head.command != command
        || head.generation != states.generation()
        || !(0..TOUCH_GRANULARITY_MS).contains(&fresh)
    {
        return None;
    }
    if !states.all_unchanged() {
        return None;
    }
    if !stored_scan_is_current(&ws.root, &[store_dir.to_path_buf()], store) {
        return None;
    }
    let record: Record = postcard::from_bytes(&bytes).ok()?;
    if !dirs_unchanged(&ws.root, &record.out_dirs) {
        return None;
    }
    let tools = ToolResolver::new(ws.tool_path(), Some(store));
    let same_tools = record
        .tools
        .iter()
        .all(|(name, was)| tool_identity(&tools.resolve(name, states)) == *was);
    if !same_tools || !crate::load::probes_hold(&ws.tool_path(), &record.probes) {
        return None;
    }
    let mut reports = Vec::with_capacity(record.targets.len());
    for t in record.targets {
        reports.push(TargetReport {
            label: Label::parse(&t.label, "").ok()?,
            kind: t.kind,
            status: Status::Cached,
            action_key: Some(Digest {
                hash: t.key,
                size: t.key_size,
            }),
            duration_ms: 0,
            attempts: 1,
            cmd: String::new(),
            failure: None,
            blocked_by: None,
            saved_ms: t.saved_ms,
            remote_action_digest: None,
            checked: false,
        });
    }
    Some(BuildOutcome {
        reports,
        wall_ms: began.elapsed().as_millis() as u64,
        tools: BTreeMap::new(),
        traffic: Default::default(),
    })
}

/// Records `outcome` as the up-to-date answer to `command`, if it may be (see the module
/// doc), from the build's `analysis`. Call after the file states were saved.
pub(crate) fn record(
    ws: &Workspace,
    store: &Store,
    states: &FileStates,
    analysis: &crate::engine::Analysis,
    command: &str,
    outcome: &BuildOutcome,
) {
    let (graph, evaluated) = (&analysis.graph, !analysis.evaluated.is_empty());
    let (workspace, id) = (ws.key(), record_id(command));
    let key = cairn_store::Record::UpToDate {
        workspace: &workspace,
        command: &id,
    };
    let known = outcome
        .reports
        .iter()
        .all(|r| graph.get(&r.label).is_some());
    let out_dirs: Vec<&crate::workspace::WorkspacePath> = outcome
        .reports
        .iter()
        .filter_map(|r| graph.get(&r.label))
        .flat_map(|t| &t.out_dirs)
        .collect();
    let keys: Option<Vec<Digest>> = outcome.reports.iter().map(|r| r.action_key).collect();
    let recordable = outcome.is_success()
        && !evaluated
        && known
        && states.is_complete()
        && states.generation() != 0;
    let dirs = recordable
        .then(|| dir_states(&ws.root, &out_dirs))
        .flatten();
    let (Some(keys), Some(out_dirs)) = (keys, dirs) else {
        let _ = store.remove_record(&key);
        return;
    };
    let targets = outcome
        .reports
        .iter()
        .zip(keys)
        .map(|(r, key)| RecordedTarget {
            label: r.label.to_string(),
            kind: r.kind,
            key: key.hash,
            key_size: key.size,
            saved_ms: if r.status.is_executed() {
                r.duration_ms
            } else {
                r.saved_ms
            },
        })
        .collect();
    let record = Record {
        head: RecordHead {
            binary: binary_identity(),
            command: command.to_string(),
            generation: states.generation(),
            recorded_ms: now_ms(),
        },
        tools: outcome
            .tools
            .iter()
            .map(|(name, tool)| (name.clone(), tool_identity(tool)))
            .collect(),
        targets,
        out_dirs,
        probes: analysis.probes.clone(),
    };
    if let Ok(bytes) = postcard::to_stdvec(&record) {
        let _ = store.put_record(&key, &bytes);
    }
}

/// Property tests (issue 15): an up-to-date record read back may be damaged, foreign or from
/// another clock; replaying any bytes is an answer (here always "no": nothing is checked as
/// unchanged), never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    const COMMAND: &str = "build patterns=[\"//...\"]";

    /// A head's fields: often this binary's and command's, the clock any time at all.
    fn head() -> impl Strategy<Value = (String, String, u64, i64)> {
        (
            prop_oneof![Just(binary_identity()), "\\PC{0,8}"],
            prop_oneof![Just(COMMAND.to_string()), "\\PC{0,8}"],
            prop_oneof![Just(0u64), any::<u64>()],
            prop_oneof![Just(now_ms()), any::<i64>(), Just(i64::MIN), Just(i64::MAX)],
        )
    }

    fn head_of(
        (binary, command, generation, recorded_ms): (String, String, u64, i64),
    ) -> RecordHead {
        RecordHead {
            binary,
            command,
            generation,
            recorded_ms,
        }
    }

    type Target = (String, [u8; 32], u64, u64);

    /// A whole record's bytes, with any contents.
    fn record() -> impl Strategy<Value = Vec<u8>> {
        let target = (
            "\\PC{0,12}|//[a-c]{1,2}:[a-c]{1,2}",
            any::<([u8; 32], u64, u64)>(),
        )
            .prop_map(|(label, (key, size, saved))| (label, key, size, saved));
        (
            head(),
            proptest::collection::vec(
                (
                    "\\PC{0,6}",
                    any::<Option<(String, [u8; 32], u64, Option<[u8; 32]>)>>(),
                ),
                0..2,
            ),
            proptest::collection::vec(target, 0..3),
            proptest::collection::vec(("\\PC{0,6}", any::<(i64, i64, u64)>()), 0..2),
            proptest::collection::btree_map("\\PC{0,6}", any::<bool>(), 0..2),
        )
            .prop_map(|(head, tools, targets, dirs, probes)| {
                let targets = targets
                    .into_iter()
                    .map(|(label, key, key_size, saved_ms): Target| RecordedTarget {
                        label,
                        kind: Kind::Action,
                        key,
                        key_size,
                        saved_ms,
                    })
                    .collect();
                let record = Record {
                    head: head_of(head),
                    tools,
                    targets,
                    out_dirs: dirs
                        .into_iter()
                        .map(|(p, (m, c, i))| (p, m, c, i))
                        .collect(),
                    probes,
                };
                postcard::to_stdvec(&record).unwrap()
            })
    }

    #[test]
    fn any_stored_record_replays_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace {
            root: dir.path().join("ws"),
            config: Default::default(),
        };
        std::fs::create_dir_all(&ws.root).unwrap();
        let store_dir = dir.path().join("store");
        let store = Store::open(&store_dir).unwrap();
        let states = FileStates::default();
        let (workspace, id) = (ws.key(), record_id(COMMAND));
        let key = cairn_store::Record::UpToDate {
            workspace: &workspace,
            command: &id,
        };
        let bytes = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..128),
            (head(), proptest::collection::vec(any::<u8>(), 0..128)).prop_map(|(head, rest)| {
                [postcard::to_stdvec(&head_of(head)).unwrap(), rest].concat()
            }),
            record(),
        ];
        TestRunner::default()
            .run(&bytes, |bytes| {
                store.put_record(&key, &bytes).unwrap();
                prop_assert!(replay(&ws, &store_dir, &store, &states, COMMAND).is_none());
                // Decoding the whole record, as a replay that got that far would.
                let _ = postcard::from_bytes::<Record>(&bytes);
                Ok(())
            })
            .unwrap();
    }
}
