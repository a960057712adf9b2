//! The dry-run executor: runs nothing. `cairn why` walks the build with it to compute every
//! action (and look each up) without executing or restoring anything; an action it is given
//! ends `NotRun`, so its outputs, and its dependents' keys, are unknown.

use super::{ExecError, ExecOutcome, Executor};
use crate::action::PreparedAction;
use crate::graph::Label;

pub(crate) struct DryRunExecutor;

impl Executor for DryRunExecutor {
    fn execute(&self, _: &Label, _: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        Ok(ExecOutcome::NotRun)
    }
}
