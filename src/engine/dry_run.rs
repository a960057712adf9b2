//! What `why`'s dry run finds: for every action, the action as it would run now, whether the
//! store holds its result, and which dependencies would have to run first (whose outputs,
//! and so this action's real key, are not known yet). Filled in through `Recorder` by a
//! build walked with the dry-run executor and no restoring.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use cairn_store::Digest;

use super::{Recorder, Status};
use crate::action::PreparedAction;
use crate::graph::{Label, Target};

/// What a dry run found for one action or test.
#[derive(Debug, Clone)]
pub(crate) struct DryInfo {
    pub action: PreparedAction,
    /// Whether the store holds a result for the key.
    pub hit: bool,
    /// Dependencies that must run first: the files they provide are not known yet.
    pub unknown_deps: BTreeSet<Label>,
}

/// The results of a dry run.
#[derive(Debug, Default)]
pub(crate) struct DryRun {
    pub results: Mutex<HashMap<Label, DryInfo>>,
    /// Targets whose outputs are unknown (a miss, or an unknown dependency).
    unknown: Mutex<HashSet<Label>>,
}

impl DryRun {
    fn note(&self, target: &Target, action: &PreparedAction, found: bool) {
        let unknown_deps: BTreeSet<Label> = {
            let unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            target
                .deps
                .iter()
                .filter(|d| unknown.contains(*d))
                .cloned()
                .collect()
        };
        let hit = found && unknown_deps.is_empty();
        if !hit {
            self.unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(target.label.clone());
        }
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                target.label.clone(),
                DryInfo {
                    action: action.clone(),
                    hit,
                    unknown_deps,
                },
            );
    }
}

impl Recorder for DryRun {
    fn is_recorded(&self, _: &Target, _: Digest, _: Status) -> bool {
        false
    }

    fn record(&self, target: &Target, _: Digest, status: Status, action: &PreparedAction) {
        let found = matches!(status, Status::Cached | Status::RemoteCached);
        self.note(target, action, found);
    }

    fn not_run(&self, target: &Target, action: &PreparedAction) {
        self.note(target, action, false);
    }
}
