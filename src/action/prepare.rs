//! From a target and the digests of its inputs to an REAPI-shaped action: the `Command`
//! (argv, sorted environment, output paths, working directory), the input-root Merkle tree,
//! and the action key, the BLAKE3 digest of the encoded `Action`. Everything that enters the
//! key is listed here; nothing host-specific (absolute paths, time, user) does.

use std::collections::BTreeMap;

use cairn_store::{Digest, FileInfo, MerkleTree, reapi};
use prost::Message;

use super::Tool;
use crate::graph::{Kind, Target};
use crate::workspace::WorkspacePath;

/// Changes whenever cairn changes how it runs actions, so old cache entries are not reused.
/// Guarded by `fixed_action_key_is_stable`. v2: tool identities moved from `Platform` into the
/// salt (docs/decisions.md).
const ACTION_SALT: &[u8] = b"cairn action v3";

/// `SOURCE_DATE_EPOCH` for every action: 1980-01-01T00:00:00Z, the earliest time a zip file
/// can hold, so archivers that honour it never fail.
pub(crate) const SOURCE_DATE_EPOCH: &str = "315532800";

/// What kind of action this is, for the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionKind {
    /// Declared outputs only; files written elsewhere fail it; no network.
    Build,
    /// No outputs; scratch files are discarded; no network.
    Test,
    /// Network allowed; its outputs must have the declared digest.
    FixedOutput(Digest),
}

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
    /// Every input symlink (from dependency output directories) → its relative target.
    pub input_links: BTreeMap<WorkspacePath, String>,
    pub outs: Vec<WorkspacePath>,
    pub out_dirs: Vec<WorkspacePath>,
    pub timeout_ms: u64,
    pub kind: ActionKind,
    /// Host directories of the resolved tools (mounted read-only in the namespace sandbox).
    pub tool_dirs: Vec<std::path::PathBuf>,
    /// `pass_env` variables with their host values: passed to the command, never in the key.
    pub pass_env: BTreeMap<String, String>,
    pub command: reapi::Command,
    pub action: reapi::Action,
    /// The blobs an uploader or a remote executor needs, so nothing is walked or encoded again:
    /// the encoded `Command` and `Action` (`action.command_digest` and the key, except for a
    /// fixed-output action, whose key names its declared content instead).
    pub encoded_command: Vec<u8>,
    pub encoded_action: Vec<u8>,
    /// The input root: every `Directory` message, by digest.
    pub input_tree: MerkleTree,
    /// The inputs that are sources, read from the workspace (sorted); every other input is a
    /// file a dependency provides (see `InputBytes`).
    pub sources: Vec<WorkspacePath>,
    /// Tagged `local` (or Bazel's `no-remote-exec`): never sent to a remote executor.
    pub local_only: bool,
}

/// Where an input file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputBytes<'a> {
    /// A source: the workspace file at this path.
    Workspace(&'a WorkspacePath),
    /// A file a dependency provides: the store's blob when an action produced it, else (a
    /// source of a `filegroup` among the dependencies) the workspace file at this path.
    Dependency(&'a WorkspacePath),
}

/// What the namespace sandbox mounts (read-only) for a tool at `path`: its directory and, for
/// a `<prefix>/bin/<tool>`, the installation prefix (nvm's, volta's, pyenv's, `/opt/node`: the
/// tool's `lib/` and `share/` live there); the same for where a symlinked tool really is (npm's
/// `bin/npm` → `../lib/node_modules/npm/bin/npm-cli.js`). System directories are mounted
/// anyway, and the sandbox skips them.
fn installation_dirs(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    let mut add = |tool: &std::path::Path| {
        if let Some(dir) = tool.parent() {
            dirs.push(dir.to_path_buf());
            if dir.file_name().is_some_and(|n| n == "bin")
                && let Some(prefix) = dir.parent().filter(|p| p.parent().is_some())
            {
                dirs.push(prefix.to_path_buf());
            }
        }
    };
    add(path);
    if let Ok(real) = std::fs::canonicalize(path)
        && real != path
    {
        add(&real);
    }
    dirs
}

/// `ExecutedActionMetadata.auxiliary_metadata` type of a fixed-output result's inputs digest.
const FIXED_INPUTS_TYPE: &str = "type.cairn.build/FixedOutputInputs";

impl PreparedAction {
    /// What a fixed-output action was run from, beyond its declared digest: its input root
    /// (sources, the lockfile, dependency outputs) and its command. Not its tools (a machine
    /// with another `npm` gets the same answer) nor the platform.
    pub fn inputs_digest(&self) -> Digest {
        let part = |d: &Option<reapi::Digest>| {
            d.as_ref()
                .and_then(Digest::from_reapi)
                .map_or([0; 32], |d| d.hash)
        };
        let mut bytes = part(&self.action.input_root_digest).to_vec();
        bytes.extend(part(&self.action.command_digest));
        Digest::of_bytes(&bytes)
    }

    /// Records `inputs_digest` in a fixed-output result (signed and uploaded with it).
    pub fn record_inputs(&self, result: &mut reapi::ActionResult) {
        let digest = self.inputs_digest();
        let mut value = digest.hash.to_vec();
        value.extend(digest.size.to_le_bytes());
        let metadata = result
            .execution_metadata
            .get_or_insert_with(Default::default);
        metadata
            .auxiliary_metadata
            .retain(|a| a.type_url != FIXED_INPUTS_TYPE);
        metadata
            .auxiliary_metadata
            .push(bazel_remote_apis::google::protobuf::Any {
                type_url: FIXED_INPUTS_TYPE.to_string(),
                value,
            });
    }

    /// Whether `result` was produced from this action's inputs (`record_inputs`); a result
    /// that recorded none (an older cairn's) does not count.
    pub fn same_inputs(&self, result: &reapi::ActionResult) -> bool {
        let digest = self.inputs_digest();
        let mut want = digest.hash.to_vec();
        want.extend(digest.size.to_le_bytes());
        result.execution_metadata.as_ref().is_some_and(|m| {
            m.auxiliary_metadata
                .iter()
                .any(|a| a.type_url == FIXED_INPUTS_TYPE && a.value == want)
        })
    }

    /// Every declared output path (files and directories).
    pub fn outputs(&self) -> impl Iterator<Item = &WorkspacePath> {
        self.outs.iter().chain(&self.out_dirs)
    }

    /// Every input file with where its bytes are.
    pub fn input_files(&self) -> impl Iterator<Item = (&WorkspacePath, &FileInfo, InputBytes<'_>)> {
        self.inputs.iter().map(|(path, info)| {
            let bytes = if self.sources.binary_search(path).is_ok() {
                InputBytes::Workspace(path)
            } else {
                InputBytes::Dependency(path)
            };
            (path, info, bytes)
        })
    }
}

/// What the dependencies give an action.
pub(crate) struct DepInputs<'a> {
    /// Their files by workspace path.
    pub files: &'a BTreeMap<WorkspacePath, FileInfo>,
    /// The symlinks of their output directories → their relative targets.
    pub links: &'a BTreeMap<WorkspacePath, String>,
    /// What `$DEPS` names (an output directory once, not its files).
    pub roots: &'a [&'a WorkspacePath],
}

/// Builds the action of `target` from its source files and the files its dependencies provide
/// (dependency outputs, by content digest: that is what gives early cutoff).
/// `tools` are the resolved tools the action calls (their path and digest enter the key as
/// the salt); `path_var` is the tool path, the action's `PATH`; `pass_env` holds
/// host values of the target's `pass_env` names; `default_platform` is `[remote.platform]`.
pub(crate) fn prepare_action(
    target: &Target,
    srcs: &BTreeMap<WorkspacePath, FileInfo>,
    deps: &DepInputs,
    tools: &[Tool],
    path_var: &str,
    pass_env: BTreeMap<String, String>,
    default_platform: &BTreeMap<String, String>,
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
    env.insert("PATH".into(), path_var.into());
    env.insert("SRCS".into(), rel(&mut srcs.keys()));
    // The roots, not every file: a dependency's output directory (a `node_modules` of
    // thousands of files) is one word, so `$DEPS` stays far below Linux's 128 KiB limit for
    // one environment string.
    env.insert("DEPS".into(), rel(&mut deps.roots.iter().copied()));
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
    inputs.extend(deps.files.iter().map(|(k, v)| (k.clone(), *v)));
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
    // Symlinks of dependency output directories are input symlinks (REAPI `SymlinkNode`s).
    let tree_links: BTreeMap<String, String> = deps
        .links
        .iter()
        .map(|(p, t)| (p.as_str().to_string(), t.clone()))
        .collect();
    let tree = MerkleTree::build_with_dirs(&tree_files, &tree_links, &dirs);

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

    // REAPI v2.1 replaced output_files/output_directories with output_paths, and v2.2 moved
    // the platform from Command to Action; older servers read only the old fields, so both
    // are set (as Bazel does).
    let platform = platform(default_platform, &target.platform);
    #[allow(deprecated)]
    let command = reapi::Command {
        platform: Some(platform.clone()),
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
    let mut sorted_tools: Vec<&Tool> = tools.iter().collect();
    sorted_tools.sort_by(|a, b| a.name.cmp(&b.name));
    sorted_tools.dedup_by(|a, b| a.name == b.name);
    let encoded_command = command.encode_to_vec();
    let command_digest = Digest::of_bytes(&encoded_command);
    let action = reapi::Action {
        command_digest: Some(command_digest.to_reapi()),
        input_root_digest: Some(tree.root.to_reapi()),
        timeout: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: (target.timeout_ms / 1000) as i64,
            nanos: ((target.timeout_ms % 1000) * 1_000_000) as i32,
        }),
        do_not_cache: false,
        salt: salt(&sorted_tools),
        platform: Some(platform),
    };
    let encoded_action = action.encode_to_vec();
    let kind = match (target.kind, target.fixed_digest) {
        (Kind::FixedOutput, Some(d)) => ActionKind::FixedOutput(d),
        (Kind::Test, _) => ActionKind::Test,
        _ => ActionKind::Build,
    };
    let key = match kind {
        // Nix's fixed-output rule: the result is named by its declared content, so neither
        // the command nor the inputs (nor the network) decide what it is.
        ActionKind::FixedOutput(d) => fixed_output_key(&d, &command.output_paths, package),
        _ => Digest::of_bytes(&encoded_action),
    };
    let mut tool_dirs: Vec<std::path::PathBuf> = sorted_tools
        .iter()
        .flat_map(|t| installation_dirs(&t.path))
        .collect();
    tool_dirs.sort();
    tool_dirs.dedup();
    PreparedAction {
        key,
        working_dir: package.to_string(),
        cmd: target.cmd.clone(),
        env,
        inputs,
        input_links: deps.links.clone(),
        outs: target.outs.clone(),
        out_dirs: target.out_dirs.clone(),
        timeout_ms: target.timeout_ms,
        kind,
        tool_dirs,
        pass_env,
        command,
        action,
        encoded_command,
        encoded_action,
        input_tree: tree,
        sources: srcs.keys().cloned().collect(),
        local_only: target
            .tags
            .iter()
            .any(|t| t == "local" || t == "no-remote-exec"),
    }
}

/// The salt: cairn's action version, then every tool the action calls (name, resolved path,
/// content and installation digest), sorted by name. Key-only identity lives here, never in `Platform`, which
/// REAPI servers match workers on: a worker cannot satisfy `cairn.tool.python3 = /usr/bin/…`.
fn salt(sorted_tools: &[&Tool]) -> Vec<u8> {
    let mut salt = ACTION_SALT.to_vec();
    for tool in sorted_tools {
        salt.push(0);
        salt.extend_from_slice(tool.name.as_bytes());
        salt.push(0);
        salt.extend_from_slice(tool.path.as_os_str().as_encoded_bytes());
        salt.push(0);
        salt.extend_from_slice(tool.identity().as_bytes());
    }
    salt
}

/// The tools named in an action's salt: name → `path digest` (for `cairn why`).
pub(crate) fn salt_tools(salt: &[u8]) -> BTreeMap<String, String> {
    let Some(rest) = salt.strip_prefix(ACTION_SALT) else {
        return BTreeMap::new();
    };
    let fields: Vec<String> = rest
        .split(|b| *b == 0)
        .skip(1)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    fields
        .chunks_exact(3)
        .map(|t| (t[0].clone(), format!("{} {}", t[1], t[2])))
        .collect()
}

/// `Platform`: what a worker must offer. The host's OS family and ISA, then the workspace's
/// `[remote.platform]` defaults, then the target's own `platform = {...}` properties (each
/// overriding what comes before); REAPI: sorted by name, each name once.
fn platform(
    defaults: &BTreeMap<String, String>,
    declared: &BTreeMap<String, String>,
) -> reapi::Platform {
    let mut properties: BTreeMap<&str, &str> = BTreeMap::new();
    properties.insert("OSFamily", std::env::consts::OS);
    properties.insert("ISA", isa());
    for (name, value) in defaults.iter().chain(declared) {
        properties.insert(name, value);
    }
    reapi::Platform {
        properties: properties
            .into_iter()
            .map(|(name, value)| reapi::platform::Property {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect(),
    }
}

/// The host's instruction set, spelled as REAPI's platform documentation does.
fn isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        other => other,
    }
}

/// The key of a fixed-output action: its declared digest, output paths and directory.
fn fixed_output_key(digest: &Digest, output_paths: &[String], package: &str) -> Digest {
    let marker = reapi::Command {
        arguments: vec!["cairn-fixed-output".into(), digest.to_string()],
        output_paths: output_paths.to_vec(),
        working_directory: package.to_string(),
        ..Default::default()
    };
    let action = reapi::Action {
        command_digest: Some(Digest::of_bytes(&marker.encode_to_vec()).to_reapi()),
        salt: ACTION_SALT.to_vec(),
        ..Default::default()
    };
    Digest::of_bytes(&action.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_LINKS: BTreeMap<WorkspacePath, String> = BTreeMap::new();

    /// The action of `t` with no dependencies.
    fn without_deps(
        t: &Target,
        srcs: &BTreeMap<WorkspacePath, FileInfo>,
        tools: &[Tool],
        path_var: &str,
        pass_env: BTreeMap<String, String>,
    ) -> PreparedAction {
        let deps = DepInputs {
            files: &BTreeMap::new(),
            links: &NO_LINKS,
            roots: &[],
        };
        prepare_action(t, srcs, &deps, tools, path_var, pass_env, &BTreeMap::new())
    }
    use crate::graph::{Label, Location};

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
            pass_env: vec![],
            platform: Default::default(),
            fixed_digest: None,
            location: Location {
                file: "apps/web/BUILD.star".into(),
                line: 1,
                column: 1,
            },
            definition: Default::default(),
        }
    }

    fn prep(
        t: &Target,
        srcs: &BTreeMap<WorkspacePath, FileInfo>,
        deps: &BTreeMap<WorkspacePath, FileInfo>,
    ) -> PreparedAction {
        let roots: Vec<&WorkspacePath> = deps.keys().collect();
        let links = BTreeMap::new();
        let deps = DepInputs {
            files: deps,
            links: &links,
            roots: &roots,
        };
        prepare_action(
            t,
            srcs,
            &deps,
            &[],
            "/usr/bin:/bin",
            BTreeMap::new(),
            &BTreeMap::new(),
        )
    }

    fn tool(content: &str) -> Tool {
        Tool {
            name: "python3".into(),
            path: "/usr/bin/python3".into(),
            digest: Digest::of_bytes(content.as_bytes()),
            installation: None,
        }
    }

    #[test]
    fn tool_identity_and_path_enter_the_key_but_pass_env_does_not() {
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let t = target();
        let a = without_deps(&t, &srcs, &[tool("v1")], "/usr/bin", BTreeMap::new());
        let b = without_deps(&t, &srcs, &[tool("v2")], "/usr/bin", BTreeMap::new());
        let c = without_deps(
            &t,
            &srcs,
            &[tool("v1")],
            "/opt/bin:/usr/bin",
            BTreeMap::new(),
        );
        let ci: BTreeMap<String, String> = [("CI".to_string(), "true".to_string())].into();
        let d = without_deps(&t, &srcs, &[tool("v1")], "/usr/bin", ci);
        assert_ne!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_eq!(a.key, d.key);
        assert_eq!(d.pass_env["CI"], "true");
    }

    #[test]
    fn platform_holds_only_what_a_worker_can_match_and_tools_stay_key_only() {
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let mut t = target();
        let a = without_deps(&t, &srcs, &[tool("v1")], "/usr/bin", BTreeMap::new());
        let names: Vec<&str> = a
            .action
            .platform
            .as_ref()
            .unwrap()
            .properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["ISA", "OSFamily"], "no tool identity in Platform");
        let tools = salt_tools(&a.action.salt);
        assert_eq!(tools.len(), 1, "{tools:?}");
        assert!(
            tools["python3"].starts_with("/usr/bin/python3 "),
            "{tools:?}"
        );
        assert!(
            a.action
                .salt
                .windows(b"/usr/bin/python3".len())
                .any(|w| w == b"/usr/bin/python3"),
            "the tool's path is in the salt"
        );
        #[allow(deprecated)]
        let command_platform = a.command.platform.clone();
        assert_eq!(command_platform, a.action.platform, "both carry it");

        t.platform.insert("pool".into(), "large".into());
        let b = without_deps(&t, &srcs, &[tool("v1")], "/usr/bin", BTreeMap::new());
        assert_ne!(a.key, b.key, "a platform property changes the key");
        let props = &b.action.platform.as_ref().unwrap().properties;
        let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ISA", "OSFamily", "pool"], "sorted by name");

        // `[remote.platform]` defaults are under the target's own properties.
        let deps = DepInputs {
            files: &BTreeMap::new(),
            links: &NO_LINKS,
            roots: &[],
        };
        let defaults: BTreeMap<String, String> =
            [("pool", "small"), ("container-image", "docker://node:22")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let c = prepare_action(
            &t,
            &srcs,
            &deps,
            &[tool("v1")],
            "/usr/bin",
            BTreeMap::new(),
            &defaults,
        );
        let props: Vec<(&str, &str)> = c
            .action
            .platform
            .as_ref()
            .unwrap()
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(props[0], ("ISA", isa()));
        assert_eq!(
            props[1..],
            [
                ("OSFamily", std::env::consts::OS),
                ("container-image", "docker://node:22"),
                ("pool", "large")
            ]
        );
        assert_ne!(b.key, c.key, "a default changes the key");
        t.platform.clear();
        let d = prepare_action(
            &t,
            &srcs,
            &deps,
            &[tool("v1")],
            "/usr/bin",
            BTreeMap::new(),
            &defaults,
        );
        let pool = d
            .action
            .platform
            .as_ref()
            .unwrap()
            .properties
            .iter()
            .find(|p| p.name == "pool")
            .unwrap();
        assert_eq!(
            pool.value, "small",
            "a default applies where the target says nothing"
        );
    }

    #[test]
    fn a_prepared_action_carries_its_blobs() {
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let deps = files(&[("packages/t/dist/t.css", "a")]);
        let a = prep(&target(), &srcs, &deps);
        assert_eq!(Digest::of_bytes(&a.encoded_action), a.key);
        assert_eq!(
            Some(Digest::of_bytes(&a.encoded_command).to_reapi()),
            a.action.command_digest
        );
        assert_eq!(
            Some(a.input_tree.root.to_reapi()),
            a.action.input_root_digest
        );
        let kinds: Vec<(String, InputBytes)> = a
            .input_files()
            .map(|(path, _, bytes)| (path.to_string(), bytes))
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(
            matches!(kinds[0].1, InputBytes::Workspace(p) if p.as_str() == "apps/web/src/app.ts")
        );
        assert!(
            matches!(kinds[1].1, InputBytes::Dependency(p) if p.as_str() == "packages/t/dist/t.css")
        );
    }

    #[test]
    fn fixed_output_key_depends_only_on_declared_digest_and_outputs() {
        let mut t = target();
        t.kind = Kind::FixedOutput;
        t.fixed_digest = Some(Digest::of_bytes(b"tree"));
        let a = prep(
            &t,
            &files(&[("apps/web/package-lock.json", "1")]),
            &BTreeMap::new(),
        );
        t.cmd = "npm ci --prefer-offline".into();
        let b = prep(
            &t,
            &files(&[("apps/web/package-lock.json", "1")]),
            &BTreeMap::new(),
        );
        assert_eq!(a.key, b.key);
        t.fixed_digest = Some(Digest::of_bytes(b"other tree"));
        assert_ne!(a.key, prep(&t, &BTreeMap::new(), &BTreeMap::new()).key);
        assert_eq!(a.kind, ActionKind::FixedOutput(Digest::of_bytes(b"tree")));
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
        // Changing this key invalidates every cache: change it only deliberately. (Last: the
        // v3 salt, whose tool identities hold installation digests; pinned on x86-64 Linux.)
        let a = prep(
            &target(),
            &files(&[("apps/web/src/app.ts", "x")]),
            &BTreeMap::new(),
        );
        assert_eq!(
            a.key.to_string(),
            "blake3:ada81f6a7cce2eac917f84175b6b8af43fd837ca3d439293dc5db3fa8fca53e2"
        );
    }

    #[test]
    fn every_field_that_matters_changes_the_key() {
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let deps = files(&[("packages/t/dist/t.css", "a")]);
        let base = prep(&target(), &srcs, &deps).key;
        let mut keys = vec![base];
        let mut push = |k: Digest| {
            assert!(!keys.contains(&k), "a changed field left the key unchanged");
            keys.push(k);
        };
        push(prep(&target(), &files(&[("apps/web/src/app.ts", "y")]), &deps).key);
        push(prep(&target(), &files(&[("apps/web/src/other.ts", "x")]), &deps).key);
        push(prep(&target(), &srcs, &files(&[("packages/t/dist/t.css", "b")])).key);
        let mut t = target();
        t.cmd = "cp $SRCS $OUT".into();
        push(prep(&t, &srcs, &deps).key);
        let mut t = target();
        t.env.insert("NODE_ENV".into(), "prod".into());
        push(prep(&t, &srcs, &deps).key);
        let mut t = target();
        t.outs = vec![WorkspacePath::in_package("apps/web", "dist/other.js").unwrap()];
        push(prep(&t, &srcs, &deps).key);
        let mut t = target();
        t.timeout_ms = 1000;
        push(prep(&t, &srcs, &deps).key);
        let mut exec = srcs.clone();
        exec.values_mut().for_each(|i| i.executable = true);
        push(prep(&target(), &exec, &deps).key);
    }

    #[test]
    fn unchanged_dependency_outputs_keep_the_key() {
        // Early cutoff: a rebuilt dependency with identical outputs yields the same key.
        let srcs = files(&[("apps/web/src/app.ts", "x")]);
        let a = prep(&target(), &srcs, &files(&[("packages/t/dist/t.css", "a")]));
        let b = prep(&target(), &srcs, &files(&[("packages/t/dist/t.css", "a")]));
        assert_eq!(a.key, b.key);
        assert_eq!(a.env["DEPS"], "../../packages/t/dist/t.css");
        assert_eq!(a.env["ROOT"], "../..");
        assert_eq!(a.env["OUT"], "dist/app.js");
    }
}
