//! From targets to REAPI-shaped actions: the `Command`, the input-root Merkle tree, the
//! action key, and the identity of the host tools an action calls.

pub(crate) mod install;
pub(crate) mod prepare;
pub(crate) mod tools;

pub(crate) use prepare::{ActionKind, DepInputs, PreparedAction, prepare_action};
pub(crate) use tools::{Tool, ToolResolver};
