//! Fixtures for the micro benchmarks in `benches/micro.rs`; not part of cairn's interface.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_store::{Digest, FileInfo};

use crate::action::{DepInputs, Tool, prepare_action};
use crate::graph::{Kind, Label, Location, Target};
use crate::workspace::WorkspacePath;

/// A build action shaped like the macro benchmark's: a package `apps/app0001` with `srcs`
/// sources under `src/` and the outputs of `deps` libraries as inputs.
pub struct ActionFixture {
    pub(crate) target: Target,
    pub(crate) srcs: BTreeMap<WorkspacePath, FileInfo>,
    pub(crate) deps: BTreeMap<WorkspacePath, FileInfo>,
    pub(crate) tools: Vec<Tool>,
}

fn info(text: &str) -> FileInfo {
    FileInfo {
        digest: Digest::of_bytes(text.as_bytes()),
        executable: false,
    }
}

impl ActionFixture {
    pub fn new(srcs: usize, deps: usize) -> ActionFixture {
        let package = "apps/app0001";
        let path = |p: String| WorkspacePath::in_package("", &p).expect("a valid path");
        let srcs: BTreeMap<WorkspacePath, FileInfo> = (0..srcs)
            .map(|i| {
                (
                    path(format!("{package}/src/mod{i:02}.js")),
                    info(&i.to_string()),
                )
            })
            .collect();
        let deps = (0..deps)
            .map(|i| {
                (
                    path(format!("libs/lib{i:04}/out/build.txt")),
                    info(&format!("lib{i}")),
                )
            })
            .collect();
        let target = Target {
            label: Label::parse(&format!("//{package}:build"), "").expect("a valid label"),
            kind: Kind::Action,
            srcs: srcs.keys().cloned().collect(),
            deps: Vec::new(),
            cmd: "cat $SRCS $DEPS | sha256sum > $OUT".to_string(),
            outs: vec![path(format!("{package}/out/build.txt"))],
            out_dirs: Vec::new(),
            env: BTreeMap::new(),
            tools: Vec::new(),
            timeout_ms: 600_000,
            flaky: 0,
            tags: Vec::new(),
            pass_env: Vec::new(),
            platform: BTreeMap::new(),
            fixed_digest: None,
            location: Location {
                file: format!("{package}/BUILD.star"),
                line: 1,
                column: 1,
            },
            definition: Default::default(),
        };
        let tool = |name: &str| Tool {
            name: name.to_string(),
            path: PathBuf::from(format!("/usr/bin/{name}")),
            digest: Digest::of_bytes(name.as_bytes()),
            installation: None,
        };
        ActionFixture {
            target,
            srcs,
            deps,
            tools: vec![tool("sh"), tool("cat")],
        }
    }

    /// Computes the action key, as every build does for every action it considers.
    pub fn key(&self) -> Digest {
        let roots: Vec<&WorkspacePath> = self.deps.keys().collect();
        let links = BTreeMap::new();
        let deps = DepInputs {
            files: &self.deps,
            links: &links,
            roots: &roots,
        };
        prepare_action(
            &self.target,
            &self.srcs,
            &deps,
            &self.tools,
            "/usr/local/bin:/usr/bin:/bin",
            BTreeMap::new(),
            &BTreeMap::new(),
        )
        .key
    }
}
