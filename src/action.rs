//! From a target and the digests of its inputs to an REAPI-shaped action: the `Command`
//! (argv, sorted environment, output paths, working directory), the input-root Merkle tree,
//! and the action key, the BLAKE3 digest of the encoded `Action`. Everything that enters the
//! key is listed here; nothing host-specific (absolute paths, time, user) does.

use std::collections::BTreeMap;

use cairn_store::{Digest, FileInfo, MerkleTree, reapi};
use prost::Message;

use crate::graph::Target;
use crate::workspace::WorkspacePath;

/// Changes whenever cairn changes how it runs actions, so old cache entries are not reused.
/// Guarded by `fixed_action_key_is_stable`.
const ACTION_SALT: &[u8] = b"cairn action v1";

/// `SOURCE_DATE_EPOCH` for every action: 1980-01-01T00:00:00Z, the earliest time a zip file
/// can hold, so archivers that honour it never fail.
pub(crate) const SOURCE_DATE_EPOCH: &str = "315532800";

/// `PATH` inside actions.
pub(crate) const ACTION_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// An action ready to look up or run.
#[derive(Debug, Clone)]
pub(crate) struct PreparedAction {
    pub key: Digest,
    /// The package directory the command runs in (REAPI `working_directory`).
    pub working_dir: String,
    pub cmd: String,
    /// The full environment, sorted (REAPI: environment_variables sorted by name).
    pub env: BTreeMap<String, String>,
    /// Every input file by workspace path.
    pub inputs: BTreeMap<WorkspacePath, FileInfo>,
    pub outs: Vec<WorkspacePath>,
    pub out_dirs: Vec<WorkspacePath>,
    pub timeout_ms: u64,
    /// Whether files written outside the declared outputs fail the action. True for actions;
    /// tests have no outputs and their scratch files are simply discarded.
    pub check_undeclared_writes: bool,
    pub command: reapi::Command,
    pub action: reapi::Action,
}

/// Builds the action of `target` from its source files and the files its dependencies provide
/// (dependency outputs, by content digest: that is what gives early cutoff).
pub(crate) fn prepare_action(
    target: &Target,
    srcs: &BTreeMap<WorkspacePath, FileInfo>,
    dep_files: &BTreeMap<WorkspacePath, FileInfo>,
) -> PreparedAction {
    let package = target.label.package.as_str();
    let rel = |paths: &mut dyn Iterator<Item = &WorkspacePath>| -> String {
        paths
            .map(|p| p.relative_to(package))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("TZ".into(), "UTC".into());
    env.insert("LC_ALL".into(), "C".into());
    env.insert("SOURCE_DATE_EPOCH".into(), SOURCE_DATE_EPOCH.into());
    env.insert("PATH".into(), ACTION_PATH.into());
    env.insert("SRCS".into(), rel(&mut srcs.keys()));
    env.insert("DEPS".into(), rel(&mut dep_files.keys()));
    env.insert("OUTS".into(), rel(&mut target.outputs()));
    if let Some(first) = target.outputs().next() {
        env.insert("OUT".into(), first.relative_to(package));
    }
    let depth = if package.is_empty() {
        0
    } else {
        package.split('/').count()
    };
    env.insert(
        "ROOT".into(),
        if depth == 0 {
            ".".into()
        } else {
            vec![".."; depth].join("/")
        },
    );
    for (k, v) in &target.env {
        env.insert(k.clone(), v.clone());
    }

    let mut inputs = srcs.clone();
    inputs.extend(dep_files.iter().map(|(k, v)| (k.clone(), *v)));
    let tree_files: BTreeMap<String, FileInfo> = inputs
        .iter()
        .map(|(p, i)| (p.as_str().to_string(), *i))
        .collect();
    // The working directory must exist even when it holds no input.
    let dirs: Vec<String> = if package.is_empty() {
        vec![]
    } else {
        vec![package.to_string()]
    };
    let tree = MerkleTree::build_with_dirs(&tree_files, &BTreeMap::new(), &dirs);

    let mut output_files: Vec<String> =
        target.outs.iter().map(|p| p.relative_to(package)).collect();
    let mut output_dirs: Vec<String> = target
        .out_dirs
        .iter()
        .map(|p| p.relative_to(package))
        .collect();
    output_files.sort();
    output_dirs.sort();
    let mut output_paths: Vec<String> = output_files.iter().chain(&output_dirs).cloned().collect();
    output_paths.sort();

    // REAPI v2.1 replaced output_files/output_directories with output_paths; servers older
    // than v2.1 read only the old fields, so both are set (as Bazel does).
    #[allow(deprecated)]
    let command = reapi::Command {
        arguments: vec!["/bin/sh".into(), "-c".into(), target.cmd.clone()],
        environment_variables: env
            .iter()
            .map(|(name, value)| reapi::command::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        output_files,
        output_directories: output_dirs,
        output_paths,
        working_directory: package.to_string(),
        ..Default::default()
    };
    let command_digest = Digest::of_bytes(&command.encode_to_vec());
    let action = reapi::Action {
        command_digest: Some(command_digest.to_reapi()),
        input_root_digest: Some(tree.root.to_reapi()),
        timeout: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: (target.timeout_ms / 1000) as i64,
            nanos: ((target.timeout_ms % 1000) * 1_000_000) as i32,
        }),
        do_not_cache: false,
        salt: ACTION_SALT.to_vec(),
        platform: None,
    };
    let key = Digest::of_bytes(&action.encode_to_vec());
    PreparedAction {
        key,
        working_dir: package.to_string(),
        cmd: target.cmd.clone(),
        env,
        inputs,
        outs: target.outs.clone(),
        out_dirs: target.out_dirs.clone(),
        timeout_ms: target.timeout_ms,
        check_undeclared_writes: target.kind == crate::graph::Kind::Action,
        command,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Kind, Label, Location};

    fn target() -> Target {
        Target {
            label: Label::parse("//apps/web:build", "").unwrap(),
            kind: Kind::Action,
            srcs: vec![],
            deps: vec![],
            cmd: "cat $SRCS > $OUT".into(),
            outs: vec![WorkspacePath::in_package("apps/web", "dist/app.js").unwrap()],
            out_dirs: vec![],
            env: BTreeMap::new(),
            tools: vec![],
            timeout_ms: 600_000,
            flaky: 0,
            tags: vec![],
            location: Location {
                file: "apps/web/BUILD.star".into(),
                line: 1,
                column: 1,
            },
        }
    }

    fn files(entries: &[(&str, &str)]) -> BTreeMap<WorkspacePath, FileInfo> {
        entries
            .iter()
            .map(|(p, c)| {
                (
                    WorkspacePath::from_normalized(p.to_string()),
                    FileInfo {
                        digest: Digest::of_bytes(c.as_bytes()),
                        executable: false,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn fixed_action_key_is_stable() {
        // Changing this key invalidates every cache: change it only deliberately.
        let a = prepare_action(
            &target(),
            &files(&[("apps/web/src/app.ts", "x")]),
            &BTreeMap::new(),
        );
        assert_eq!(
            a.key.to_string(),
            "blake3:1f5deb449d8bd2516d467aafd7eac4cf95839046bda63bdd03890faee5d0c109"
        );
    }

    #[test]
    fn every_field_that_matters_changes_the_key() {
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let deps = files(&[("packages/t/dist/t.css", "a")]);
        let base = prepare_action(&target(), &srcs, &deps).key;
        let mut keys = vec![base];
        let mut push = |k: Digest| {
            assert!(!keys.contains(&k), "a changed field left the key unchanged");
            keys.push(k);
        };
        push(prepare_action(&target(), &files(&[("apps/web/src/app.ts", "y")]), &deps).key);
        push(prepare_action(&target(), &files(&[("apps/web/src/other.ts", "x")]), &deps).key);
        push(prepare_action(&target(), &srcs, &files(&[("packages/t/dist/t.css", "b")])).key);
        let mut t = target();
        t.cmd = "cp $SRCS $OUT".into();
        push(prepare_action(&t, &srcs, &deps).key);
        let mut t = target();
        t.env.insert("NODE_ENV".into(), "prod".into());
        push(prepare_action(&t, &srcs, &deps).key);
        let mut t = target();
        t.outs = vec![WorkspacePath::in_package("apps/web", "dist/other.js").unwrap()];
        push(prepare_action(&t, &srcs, &deps).key);
        let mut t = target();
        t.timeout_ms = 1000;
        push(prepare_action(&t, &srcs, &deps).key);
        let mut exec = srcs.clone();
        exec.values_mut().for_each(|i| i.executable = true);
        push(prepare_action(&target(), &exec, &deps).key);
    }

    #[test]
    fn unchanged_dependency_outputs_keep_the_key() {
        // Early cutoff: a rebuilt dependency with identical outputs yields the same key.
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let a = prepare_action(&target(), &srcs, &files(&[("packages/t/dist/t.css", "a")]));
        let b = prepare_action(&target(), &srcs, &files(&[("packages/t/dist/t.css", "a")]));
        assert_eq!(a.key, b.key);
        assert_eq!(a.env["DEPS"], "../../packages/t/dist/t.css");
        assert_eq!(a.env["ROOT"], "../..");
        assert_eq!(a.env["OUT"], "dist/app.js");
    }
}
