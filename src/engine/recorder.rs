//! Where the outcome of each action is recorded: the build history (for `cairn why`) in a
//! build, what a dry run found in `why`'s dry run. The pipeline tells a recorder every
//! outcome and never knows which one it has.

use cairn_store::Digest;

use super::Status;
use crate::action::PreparedAction;
use crate::graph::Target;

pub(crate) trait Recorder: Sync {
    /// Whether recording `status` for `key` would add nothing (so the caller need not build
    /// the action to record it: a no-op build builds no action).
    fn is_recorded(&self, target: &Target, key: Digest, status: Status) -> bool;

    /// Records how the action ended: `Executed`, `RemoteExecuted`, `Cached`, `RemoteCached`
    /// or `Failed`.
    fn record(&self, target: &Target, key: Digest, status: Status, action: &PreparedAction);

    /// Records an action the executor did not run (a dry run): its outputs are unknown.
    fn not_run(&self, _target: &Target, _action: &PreparedAction) {}
}
