//! `cairn affected`: the targets whose inputs differ between a revision and the working tree,
//! from the list of changed files (`vcs`) and the analysed graph. Computes; never prints.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use super::Analysis;
use crate::graph::Label;
use crate::workspace::WorkspacePath;

/// Every target that runs a command and is affected by a change to `changed` (workspace
/// paths): targets reading a changed source, BUILD file or loaded `.star` file (a change to
/// `cairn.toml` affects everything), the targets with sources in a package that lost a file,
/// and everything depending on those.
pub(crate) fn affected_targets(
    root: &Path,
    analysis: &Analysis,
    changed: &[String],
) -> BTreeSet<Label> {
    let graph = &analysis.graph;
    let changed_set: HashSet<&str> = changed.iter().map(String::as_str).collect();

    // A change to cairn.toml can change every key (tool path, sandbox): everything.
    let everything = changed_set.contains(crate::workspace::CONFIG_FILE);
    let mut direct: BTreeSet<Label> = BTreeSet::new();
    for target in graph.all_targets() {
        let pkg = &target.label.package;
        let build_file = if pkg.is_empty() {
            crate::load::BUILD_FILE.to_string()
        } else {
            format!("{pkg}/{}", crate::load::BUILD_FILE)
        };
        let loads = analysis.loads.get(pkg).map(Vec::as_slice).unwrap_or(&[]);
        let hit = everything
            || changed_set.contains(build_file.as_str())
            || loads.iter().any(|l| changed_set.contains(l.as_str()))
            || target.srcs.iter().any(|p| changed_set.contains(p.as_str()));
        if hit {
            direct.insert(target.label.clone());
        }
    }
    // A deleted file is in no target's srcs any more; a glob in its package may have listed
    // it, so that package's targets with sources count as affected (conservatively).
    for path in changed {
        if root.join(path).exists() {
            continue;
        }
        let wp = WorkspacePath::from_normalized(path.clone());
        let owner = analysis
            .scan
            .packages
            .keys()
            .filter(|pkg| {
                pkg.is_empty() || wp.is_within(&WorkspacePath::from_normalized((*pkg).clone()))
            })
            .max_by_key(|pkg| pkg.len());
        for target in graph.all_targets() {
            if Some(&target.label.package) == owner && !target.srcs.is_empty() {
                direct.insert(target.label.clone());
            }
        }
    }
    let mut all: BTreeSet<Label> = BTreeSet::new();
    for label in &direct {
        all.insert(label.clone());
        all.extend(
            graph
                .reachable(label, true, None)
                .into_iter()
                .map(|(_, l)| l),
        );
    }
    all.retain(|l| graph.kind_of(l).runs());
    all
}
