//! The target graph: labels and patterns, targets as declared in BUILD files, and the DAG
//! (validation, cycle paths, topological order, closures).

pub(crate) mod dag;
pub(crate) mod label;
pub(crate) mod target;

pub(crate) use dag::{Graph, GraphError};
pub(crate) use label::{Label, LabelError, Pattern};
pub(crate) use target::{Kind, Location, Target};
