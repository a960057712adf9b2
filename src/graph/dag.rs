//! The DAG of targets: checks that every dependency exists, that no two targets declare the
//! same output, and that there is no cycle (reporting its path); gives topological order,
//! pattern closures and reverse dependencies.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::{Kind, Label, Location, Pattern, Target};
use crate::workspace::WorkspacePath;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GraphError {
    #[error("{location}: `{from}` depends on unknown target `{label}`{hint}")]
    UnknownTarget {
        location: Location,
        from: Label,
        label: Label,
        hint: String,
    },
    #[error(
        "{location}: `{label}` declares output `{path}`, which `{other}` (declared at {other_location}) also declares"
    )]
    OutputConflict {
        location: Location,
        label: Label,
        path: WorkspacePath,
        other: Label,
        other_location: Location,
    },
    #[error(
        "{location}: `{label}` lists `{path}` in `srcs`, but it is an output of `{producer}`; list `{producer}` in `deps` instead"
    )]
    SourceIsOutput {
        location: Location,
        label: Label,
        path: WorkspacePath,
        producer: Label,
    },
    #[error("{location}: dependency cycle: {}", path.iter().map(ToString::to_string).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        location: Location,
        path: Vec<Label>,
    },
    #[error("Pattern `{0}` matches no target")]
    NoMatch(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Graph {
    targets: BTreeMap<Label, Target>,
    rdeps: HashMap<Label, Vec<Label>>,
}

impl Graph {
    /// Builds and checks the graph. `is_globbed(package, path)` tells the source paths that
    /// came from a `glob()` in `package`: those that are some target's output are silently
    /// dropped (an output never becomes an
    /// input by glob), while an output named explicitly in `srcs` is an error.
    pub fn new(
        targets: Vec<Target>,
        is_globbed: &dyn Fn(&str, &WorkspacePath) -> bool,
    ) -> Result<Graph, GraphError> {
        let mut map: BTreeMap<Label, Target> =
            targets.into_iter().map(|t| (t.label.clone(), t)).collect();

        // Outputs: exact duplicates and nesting (a file inside another target's out_dir).
        let mut outputs: BTreeMap<WorkspacePath, Label> = BTreeMap::new();
        for t in map.values() {
            for out in t.outputs() {
                if let Some(other) = outputs.get(out) {
                    return Err(conflict(&map, t, out, other));
                }
                outputs.insert(out.clone(), t.label.clone());
            }
        }
        let paths: Vec<&WorkspacePath> = outputs.keys().collect();
        for pair in paths.windows(2) {
            // Sorted order puts `a/dist` right before `a/dist/x` (or other entries under it).
            if pair[1].is_within(pair[0]) {
                let t = &map[&outputs[pair[1]]];
                return Err(conflict(&map, t, pair[1], &outputs[pair[0]]));
            }
        }
        // A path is some target's output if it or one of its parent directories is declared:
        // a hash lookup per path component (sources far outnumber outputs).
        let by_path: HashMap<&str, &Label> = outputs.iter().map(|(p, l)| (p.as_str(), l)).collect();
        let producer_of = |path: &WorkspacePath| -> Option<&Label> {
            let mut prefix = path.as_str();
            loop {
                if let Some(label) = by_path.get(prefix) {
                    return Some(*label);
                }
                prefix = &prefix[..prefix.rfind('/')?];
            }
        };

        let mut dropped: Vec<(Label, WorkspacePath)> = Vec::new();
        for t in map.values() {
            for src in &t.srcs {
                if let Some(producer) = producer_of(src) {
                    if is_globbed(&t.label.package, src) {
                        dropped.push((t.label.clone(), src.clone()));
                    } else {
                        return Err(GraphError::SourceIsOutput {
                            location: t.location.clone(),
                            label: t.label.clone(),
                            path: src.clone(),
                            producer: producer.clone(),
                        });
                    }
                }
            }
            for dep in &t.deps {
                if !map.contains_key(dep) {
                    return Err(GraphError::UnknownTarget {
                        location: t.location.clone(),
                        from: t.label.clone(),
                        label: dep.clone(),
                        hint: suggest(&map, dep),
                    });
                }
            }
        }
        for (label, src) in dropped {
            let t = map.get_mut(&label).expect("label came from the map");
            t.srcs.retain(|s| *s != src);
            // The definition changed: its digest (perhaps from the analysis cache) is stale.
            t.definition = Default::default();
        }

        let mut rdeps: HashMap<Label, Vec<Label>> = HashMap::default();
        for t in map.values() {
            for dep in &t.deps {
                rdeps.entry(dep.clone()).or_default().push(t.label.clone());
            }
        }
        let graph = Graph {
            targets: map,
            rdeps,
        };
        graph.check_cycles()?;
        Ok(graph)
    }

    pub fn get(&self, label: &Label) -> Option<&Target> {
        self.targets.get(label)
    }

    pub fn all_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    /// What `target`'s dependencies provide, as `$DEPS` names it: each action's declared
    /// outputs (an output directory as the directory, however many files it holds), and the
    /// files of filegroups, through to their own dependencies.
    pub fn dep_roots(&self, target: &Target) -> BTreeSet<&WorkspacePath> {
        let mut roots = BTreeSet::new();
        let mut stack: Vec<&Label> = target.deps.iter().collect();
        let mut seen = HashSet::default();
        while let Some(dep) = stack.pop() {
            let Some(t) = self.get(dep).filter(|_| seen.insert(dep)) else {
                continue;
            };
            if t.kind.runs() {
                roots.extend(t.outputs());
            } else {
                roots.extend(&t.srcs);
                stack.extend(&t.deps);
            }
        }
        roots
    }

    pub fn rdeps(&self, label: &Label) -> &[Label] {
        self.rdeps.get(label).map(Vec::as_slice).unwrap_or(&[])
    }

    fn check_cycles(&self) -> Result<(), GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Active,
            Done,
        }
        let mut marks: HashMap<&Label, Mark> = HashMap::default();
        for start in self.targets.keys() {
            if marks.contains_key(start) {
                continue;
            }
            // Iterative DFS; `stack` holds (label, next dep index) and is the current path.
            let mut stack: Vec<(&Label, usize)> = vec![(start, 0)];
            marks.insert(start, Mark::Active);
            while let Some((label, idx)) = stack.last_mut() {
                let deps = &self.targets[*label].deps;
                if *idx == deps.len() {
                    marks.insert(label, Mark::Done);
                    stack.pop();
                    continue;
                }
                let dep = &deps[*idx];
                *idx += 1;
                match marks.get(dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::Active) => {
                        let from = stack.iter().position(|(l, _)| *l == dep).unwrap_or(0);
                        let mut path: Vec<Label> =
                            stack[from..].iter().map(|(l, _)| (*l).clone()).collect();
                        path.push(dep.clone());
                        return Err(GraphError::Cycle {
                            location: self.targets[dep].location.clone(),
                            path,
                        });
                    }
                    None => {
                        marks.insert(dep, Mark::Active);
                        stack.push((dep, 0));
                    }
                }
            }
        }
        Ok(())
    }

    /// The labels matched by `patterns`; each pattern must match something.
    pub fn matching(&self, patterns: &[(String, Pattern)]) -> Result<BTreeSet<Label>, GraphError> {
        let mut out = BTreeSet::new();
        for (text, pattern) in patterns {
            let before = out.len();
            let mut any = false;
            for label in self.targets.keys() {
                if pattern.matches(label) {
                    any = true;
                    out.insert(label.clone());
                }
            }
            if !any && out.len() == before {
                return Err(GraphError::NoMatch(text.clone()));
            }
        }
        Ok(out)
    }

    /// `roots` and everything they depend on, dependencies first.
    pub fn closure_in_order(&self, roots: &BTreeSet<Label>) -> Vec<Label> {
        let mut order = Vec::new();
        let mut seen: HashSet<&Label> = HashSet::default();
        for root in roots {
            let mut stack: Vec<(&Label, usize)> = Vec::new();
            if seen.insert(root) {
                stack.push((root, 0));
            }
            while let Some((label, idx)) = stack.last_mut() {
                let deps = &self.targets[*label].deps;
                if *idx < deps.len() {
                    let dep = &deps[*idx];
                    *idx += 1;
                    if seen.insert(dep) {
                        stack.push((dep, 0));
                    }
                } else {
                    order.push((*label).clone());
                    stack.pop();
                }
            }
        }
        order
    }

    /// Every declared output path of every target.
    pub fn all_outputs(&self) -> impl Iterator<Item = (&Target, &WorkspacePath)> {
        self.targets
            .values()
            .flat_map(|t| t.outputs().map(move |o| (t, o)))
    }

    /// ` (did you mean `//x:y`?)` for the closest existing label, if one is close.
    pub fn suggest(&self, wanted: &Label) -> String {
        suggest(&self.targets, wanted)
    }

    /// Labels reachable from `label` through deps (`reverse`: through rdeps), with their
    /// distance, up to `depth` levels; sorted by distance, then label.
    pub fn reachable(
        &self,
        label: &Label,
        reverse: bool,
        depth: Option<usize>,
    ) -> Vec<(usize, Label)> {
        let mut seen: HashSet<&Label> = [label].into_iter().collect();
        let mut frontier = vec![label];
        let mut out = Vec::new();
        let mut level = 0;
        while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
            level += 1;
            let mut next = Vec::new();
            for l in frontier {
                let edges: &[Label] = if reverse {
                    self.rdeps(l)
                } else {
                    &self.targets[l].deps
                };
                for e in edges {
                    if seen.insert(e) {
                        next.push(e);
                    }
                }
            }
            next.sort();
            out.extend(next.iter().map(|l| (level, (*l).clone())));
            frontier = next;
        }
        out
    }

    pub fn kind_of(&self, label: &Label) -> Kind {
        self.targets[label].kind
    }
}

fn conflict(
    map: &BTreeMap<Label, Target>,
    t: &Target,
    path: &WorkspacePath,
    other: &Label,
) -> GraphError {
    GraphError::OutputConflict {
        location: t.location.clone(),
        label: t.label.clone(),
        path: path.clone(),
        other: other.clone(),
        other_location: map[other].location.clone(),
    }
}

/// ` (did you mean `//x:y`?)` for the closest existing label, if one is close.
fn suggest(map: &BTreeMap<Label, Target>, wanted: &Label) -> String {
    let wanted_text = wanted.to_string();
    map.keys()
        .map(|l| (edit_distance(&l.to_string(), &wanted_text), l))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, l)| format!(" (did you mean `{l}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pkg: &str, name: &str, deps: &[&str], outs: &[&str]) -> Target {
        Target {
            label: Label::parse(&format!("//{pkg}:{name}"), "").unwrap(),
            kind: Kind::Action,
            srcs: vec![],
            deps: deps.iter().map(|d| Label::parse(d, pkg).unwrap()).collect(),
            cmd: String::new(),
            outs: outs
                .iter()
                .map(|o| WorkspacePath::in_package(pkg, o).unwrap())
                .collect(),
            out_dirs: vec![],
            env: BTreeMap::new(),
            tools: vec![],
            timeout_ms: 1000,
            flaky: 0,
            tags: vec![],
            pass_env: vec![],
            platform: Default::default(),
            fixed_digest: None,
            location: Location {
                file: format!("{pkg}/BUILD.star"),
                line: 1,
                column: 1,
            },
            definition: Default::default(),
        }
    }

    #[test]
    fn cycle_error_names_the_path() {
        let err = Graph::new(
            vec![
                target("a", "x", &["//b:y"], &[]),
                target("b", "y", &["//c:z"], &[]),
                target("c", "z", &["//a:x"], &[]),
            ],
            &|_, _| false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a/BUILD.star:1:1: dependency cycle: //a:x -> //b:y -> //c:z -> //a:x"
        );
    }

    #[test]
    fn unknown_dep_suggests_a_close_label() {
        let err = Graph::new(
            vec![
                target("a", "build", &[], &[]),
                target("b", "y", &["//a:buld"], &[]),
            ],
            &|_, _| false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "b/BUILD.star:1:1: `//b:y` depends on unknown target `//a:buld` (did you mean `//a:build`?)"
        );
    }

    #[test]
    fn duplicate_outputs_are_rejected() {
        let err = Graph::new(
            vec![
                target("a", "x", &[], &["out.txt"]),
                target("a", "y", &[], &["out.txt"]),
            ],
            &|_, _| false,
        )
        .unwrap_err();
        assert!(matches!(err, GraphError::OutputConflict { .. }), "{err}");
    }

    #[test]
    fn closure_is_dependencies_first() {
        let g = Graph::new(
            vec![
                target("a", "x", &["//b:y"], &[]),
                target("b", "y", &["//c:z"], &[]),
                target("c", "z", &[], &[]),
                target("d", "w", &[], &[]),
            ],
            &|_, _| false,
        )
        .unwrap();
        let roots = [Label::parse("//a:x", "").unwrap()].into_iter().collect();
        let order: Vec<String> = g
            .closure_in_order(&roots)
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(order, ["//c:z", "//b:y", "//a:x"]);
    }

    #[test]
    fn dropping_a_globbed_output_from_srcs_renews_the_definition_digest() {
        let path = |p: &str| WorkspacePath::in_package("a", p).unwrap();
        let mut reader = target("a", "reader", &[], &[]);
        reader.srcs = vec![path("gen.txt"), path("in.txt")];
        let stale = reader.definition_digest(); // as if it came from the analysis cache
        let mut expected = target("a", "reader", &[], &[]);
        expected.srcs = vec![path("in.txt")];
        let g = Graph::new(
            vec![reader, target("a", "gen", &[], &["gen.txt"])],
            &|_, _| true,
        )
        .unwrap();
        let reader = g.get(&Label::parse("//a:reader", "").unwrap()).unwrap();
        assert_eq!(reader.srcs, [path("in.txt")]);
        assert_ne!(reader.definition_digest(), stale);
        assert_eq!(reader.definition_digest(), expected.definition_digest());
    }

    #[test]
    fn a_source_inside_an_output_directory_is_an_output() {
        let path = |p: &str| WorkspacePath::in_package("a", p).unwrap();
        let mut maker = target("a", "gen", &[], &[]);
        maker.out_dirs = vec![path("dist")];
        let reader = |src: &str| {
            let mut t = target("a", "reader", &[], &[]);
            t.srcs = vec![path(src)];
            t
        };
        let err =
            Graph::new(vec![maker.clone(), reader("dist/deep/x.js")], &|_, _| false).unwrap_err();
        assert!(
            matches!(&err, GraphError::SourceIsOutput { producer, .. } if producer.name == "gen"),
            "{err}"
        );
        // Only a whole path component counts: `dist2/` is not inside `dist/`.
        let g = Graph::new(vec![maker, reader("dist2/x.js")], &|_, _| false).unwrap();
        let label = Label::parse("//a:reader", "").unwrap();
        assert_eq!(g.get(&label).unwrap().srcs, [path("dist2/x.js")]);
    }
}
