//! Build history for `cairn why`: per target, what went into its last few keys (inputs by
//! digest, environment, tools, command), and the plain-words difference between two of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use cairn_store::{Digest, HistoryEntry};
use serde::{Deserialize, Serialize};

use super::Status;
use crate::action::PreparedAction;
use crate::graph::{Graph, Label, Target};
use crate::workspace::WorkspacePath;

/// Variables cairn derives from the inputs and outputs: their changes are explained by the
/// inputs themselves, so `why` does not repeat them.
const DERIVED_ENV: &[&str] = &["SRCS", "DEPS", "OUTS", "OUT", "ROOT"];

/// Everything that entered one action key, in readable form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub cmd: String,
    pub env: BTreeMap<String, String>,
    /// Tool name → `path blake3:…`.
    pub tools: BTreeMap<String, String>,
    /// Input path → digest hex.
    pub inputs: BTreeMap<String, String>,
    /// Declared outputs (paths only).
    pub outputs: Vec<String>,
    pub timeout_ms: u64,
    /// The action's platform properties (`[remote.platform]`, the target's `platform`).
    #[serde(default)]
    pub platform: BTreeMap<String, String>,
}

impl Manifest {
    pub fn of(action: &PreparedAction) -> Manifest {
        let tools = crate::action::prepare::salt_tools(&action.action.salt);
        let platform = action
            .action
            .platform
            .iter()
            .flat_map(|p| &p.properties)
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        Manifest {
            platform,
            cmd: action.cmd.clone(),
            env: action.env.clone(),
            tools,
            inputs: action
                .inputs
                .iter()
                .map(|(p, i)| (p.as_str().to_string(), i.digest.hex()))
                .collect(),
            outputs: action.outputs().map(|p| p.as_str().to_string()).collect(),
            timeout_ms: action.timeout_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Collects history during a build; written in one transaction at the end.
pub(crate) struct HistoryRecorder {
    /// The latest recorded (key, status) per label at the start of the build.
    latest: HashMap<String, (Digest, String)>,
    entries: Mutex<Vec<HistoryEntry>>,
}

impl HistoryRecorder {
    pub fn new(latest: HashMap<String, (Digest, String)>) -> HistoryRecorder {
        HistoryRecorder {
            latest,
            entries: Mutex::default(),
        }
    }

    /// Whether the latest recorded entry of `label` has this key and status already.
    pub fn is_latest(&self, label: &Label, key: Digest, status: &str) -> bool {
        self.latest
            .get(&label.to_string())
            .is_some_and(|(k, s)| k.hash == key.hash && s == status)
    }

    /// Records a run unless it repeats the latest entry (so a no-op build records nothing and
    /// builds no manifest).
    pub fn record(&self, label: &Label, key: Digest, status: &str, action: &PreparedAction) {
        if self.is_latest(label, key, status) {
            return;
        }
        let text = label.to_string();
        let entry = HistoryEntry {
            label: text,
            key,
            status: status.to_string(),
            manifest: Manifest::of(action).encode(),
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }

    pub fn into_entries(self) -> Vec<HistoryEntry> {
        self.entries.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl super::Recorder for HistoryRecorder {
    fn is_recorded(&self, target: &Target, key: Digest, status: Status) -> bool {
        self.is_latest(&target.label, key, status.as_str())
    }

    fn record(&self, target: &Target, key: Digest, status: Status, action: &PreparedAction) {
        HistoryRecorder::record(self, &target.label, key, status.as_str(), action);
    }
}

fn short(hex: &str) -> String {
    // The first 8 characters, not bytes: a recorded digest is not trusted to be hex
    // (`any_two_recorded_manifests_are_explained`).
    let end = hex.char_indices().nth(8).map_or(hex.len(), |(i, _)| i);
    format!("blake3:{}…", &hex[..end])
}

/// The differences between the last recorded manifest and the current one, most specific
/// first: the target's own inputs, then dependency outputs, environment, tools, command.
/// `unknown_deps` are dependencies that must be rebuilt first, so the inputs they provide are
/// not known yet.
pub(crate) fn explain(
    graph: &Graph,
    old: &Manifest,
    new: &Manifest,
    unknown_deps: &BTreeSet<Label>,
) -> Vec<String> {
    let mut own = Vec::new();
    let mut deps = Vec::new();
    let producer = |path: &str| -> Option<(Label, String)> {
        // Normalised, not trusted to be: a manifest read back may be damaged or foreign
        // (`any_two_recorded_manifests_are_explained`).
        let wp = WorkspacePath::in_package("", path).ok()?;
        graph.all_outputs().find_map(|(t, out)| {
            wp.is_within(out)
                .then(|| (t.label.clone(), wp.relative_to(&t.label.package)))
        })
    };
    for dep in unknown_deps {
        deps.push(format!(
            "dependency {dep} must be rebuilt first (see `cairn why {dep}`), so the outputs it provides are not known yet"
        ));
    }
    let paths: BTreeSet<&String> = old.inputs.keys().chain(new.inputs.keys()).collect();
    for path in paths {
        let (a, b) = (old.inputs.get(path), new.inputs.get(path));
        if a == b {
            continue;
        }
        match producer(path) {
            Some((dep, rel)) => {
                if unknown_deps.contains(&dep) {
                    continue;
                }
                deps.push(match (a, b) {
                    (Some(a), Some(b)) => format!(
                        "dependency {dep} output {rel} changed ({} → {})",
                        short(a),
                        short(b)
                    ),
                    (None, Some(_)) => format!("dependency {dep} has a new output {rel}"),
                    _ => format!("dependency {dep} no longer provides {rel}"),
                });
            }
            None => own.push(match (a, b) {
                (Some(a), Some(b)) => format!("input {path} changed ({} → {})", short(a), short(b)),
                (None, Some(_)) => format!("new input {path}"),
                _ => format!("input {path} removed"),
            }),
        }
    }
    let mut rest = Vec::new();
    let names: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for name in names {
        if DERIVED_ENV.contains(&name.as_str()) {
            continue;
        }
        match (old.env.get(name), new.env.get(name)) {
            (Some(a), Some(b)) if a != b => rest.push(format!("env {name}: {a:?} → {b:?}")),
            (None, Some(b)) => rest.push(format!("env {name} added ({b:?})")),
            (Some(a), None) => rest.push(format!("env {name} removed (was {a:?})")),
            _ => {}
        }
    }
    let tools: BTreeSet<&String> = old.tools.keys().chain(new.tools.keys()).collect();
    for name in tools {
        match (old.tools.get(name), new.tools.get(name)) {
            (Some(a), Some(b)) if a != b => rest.push(format!("tool {name} changed ({a} → {b})")),
            (None, Some(b)) => rest.push(format!("tool {name} is now used ({b})")),
            (Some(_), None) => rest.push(format!("tool {name} is no longer used")),
            _ => {}
        }
    }
    // (A manifest recorded before platforms were kept has none: nothing to compare.)
    let properties: BTreeSet<&String> = old.platform.keys().chain(new.platform.keys()).collect();
    for name in properties.into_iter().filter(|_| !old.platform.is_empty()) {
        match (old.platform.get(name), new.platform.get(name)) {
            (Some(a), Some(b)) if a != b => {
                rest.push(format!("platform property {name}: {a:?} → {b:?}"))
            }
            (None, Some(b)) => rest.push(format!("platform property {name} added ({b:?})")),
            (Some(a), None) => rest.push(format!("platform property {name} removed (was {a:?})")),
            _ => {}
        }
    }
    if old.cmd != new.cmd {
        rest.push(format!(
            "command changed:\n    was: {}\n    now: {}",
            old.cmd.trim(),
            new.cmd.trim()
        ));
    }
    if old.outputs != new.outputs {
        rest.push(format!(
            "declared outputs changed: [{}] → [{}]",
            old.outputs.join(", "),
            new.outputs.join(", ")
        ));
    }
    if old.timeout_ms != new.timeout_ms {
        rest.push(format!(
            "timeout changed: {}ms → {}ms",
            old.timeout_ms, new.timeout_ms
        ));
    }
    own.into_iter().chain(deps).chain(rest).collect()
}

/// Property tests (issue 15): a manifest read back from the history may be damaged or written
/// by another cairn; decoding any bytes is a manifest or `None`, and explaining the difference
/// between any two never panics.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-c/]{1,6}|\\PC{0,6}", "[0-9a-f]{0,64}|\\PC{0,12}", 0..4)
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            "\\PC{0,16}",
            map(),
            map(),
            map(),
            proptest::collection::vec("\\PC{0,8}", 0..3),
            any::<u64>(),
            map(),
        )
            .prop_map(|(cmd, env, tools, inputs, outputs, timeout_ms, platform)| {
                Manifest {
                    cmd,
                    env,
                    tools,
                    inputs,
                    outputs,
                    timeout_ms,
                    platform,
                }
            })
    }

    proptest! {
        #[test]
        fn manifests_round_trip(manifest in manifest()) {
            prop_assert_eq!(Manifest::decode(&manifest.encode()), Some(manifest));
        }

        #[test]
        fn any_bytes_decode_to_a_manifest_or_none(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..128),
                "\\{(\"[a-z_]{2,10}\":(\"\\PC{0,4}\"|[0-9]{1,3}|\\{\\}|\\[\\]),?){0,4}\\}"
                    .prop_map(String::into_bytes),
            ],
        ) {
            Manifest::decode(&bytes);
        }

        #[test]
        fn any_two_recorded_manifests_are_explained(old in manifest(), new in manifest()) {
            let graph = Graph::new(Vec::new(), &|_, _| false).unwrap();
            let reasons = explain(&graph, &old, &new, &BTreeSet::new());
            prop_assert_eq!(reasons.is_empty(), {
                let env = |m: &Manifest| -> BTreeMap<String, String> {
                    m.env
                        .iter()
                        .filter(|(k, _)| !DERIVED_ENV.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                old.inputs == new.inputs
                    && env(&old) == env(&new)
                    && old.tools == new.tools
                    && (old.platform.is_empty() || old.platform == new.platform)
                    && old.cmd == new.cmd
                    && old.outputs == new.outputs
                    && old.timeout_ms == new.timeout_ms
            });
        }
    }
}
