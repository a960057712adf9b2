//! The local executor. Each action gets a fresh directory (see `base` for where) holding only
//! its input root (dependency outputs copied from the CAS, sources from the workspace, both
//! verified against their digests, never hard-linked), a private `HOME` and `TMPDIR`, and
//! only the environment its `Command` lists. A relative read of an undeclared
//! workspace file finds nothing, because the workspace is not there. Outputs are checked
//! against the declaration (missing, wrong type, or undeclared files fail the action) and
//! stored in the CAS with normalised modes.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_store::{Digest, FileInfo, MerkleTree, Store, StoreError, capture_dir, reapi};

use super::base::{SandboxBase, sandbox_prefix};
use super::orphans;
use super::sandbox::{self, NamespaceSpec, SandboxMode};
use super::slots::Slots;
use super::{ExecError, ExecFailure, ExecOutcome, Executor};
use crate::action::{ActionKind, PreparedAction};
use crate::graph::Label;
use crate::workspace::WorkspacePath;

/// How much of stderr a failure shows.
pub(super) const STDERR_TAIL_LINES: usize = 20;
/// How much of a test's log (its stdout and stderr, which test runners fill with reports).
pub(super) const TEST_TAIL_LINES: usize = 40;
/// How much of the end of a log a tail is taken from.
const TAIL_BYTES: usize = 64 * 1024;
/// How many undeclared files a failure lists.
const MAX_LISTED: usize = 5;

pub(crate) struct LocalExecutor<'a> {
    pub store: &'a Store,
    /// The workspace, to read source files from (they are stored in the CAS first, verified).
    pub workspace_root: &'a Path,
    /// The sandbox asked for; `Namespace` is checked once, on first use.
    pub mode: SandboxMode,
    /// Where sandbox directories are made.
    pub base: SandboxBase,
    /// This binary, which doubles as the namespace sandbox helper.
    pub helper: PathBuf,
    /// Told once when the namespace sandbox is unavailable.
    pub on_fallback: &'a (dyn Fn(&str) + Sync),
    pub effective: OnceLock<SandboxMode>,
    /// Set to kill running actions (Ctrl-C, or a newer edit in watch mode).
    pub cancel: Option<&'a AtomicBool>,
    /// `-j`: how many actions run here at once.
    pub slots: Slots,
    /// What actions leave behind outside a PID namespace.
    pub orphans: orphans::Orphans,
    /// Bytes an action may write to its `/tmp` (and `HOME`, `/dev/shm`) in the namespace
    /// sandbox.
    pub tmp_size: u64,
}

impl LocalExecutor<'_> {
    /// The sandbox actually used: `Namespace` only if a probe sandbox works here.
    pub fn effective_mode(&self) -> SandboxMode {
        *self.effective.get_or_init(|| {
            if self.mode != SandboxMode::Namespace {
                return self.mode;
            }
            let scratch = self.base.for_inputs(0).map_err(|e| e.to_string()).and_then(|base| {
                tempfile::Builder::new()
                    .prefix(&sandbox_prefix("probe"))
                    .tempdir_in(base)
                    .map_err(|e| e.to_string())
            });
            let result = match &scratch {
                Ok(dir) => sandbox::probe(&self.helper, dir.path()),
                Err(e) => Err(format!("cannot create a scratch directory: {e}")),
            };
            match result {
                Ok(()) => SandboxMode::Namespace,
                Err(why) => {
                    (self.on_fallback)(&format!(
                        "the namespace sandbox is unavailable here ({why}); using the directory sandbox, which does not hide absolute paths or the network"
                    ));
                    SandboxMode::Directory
                }
            }
        })
    }

    /// The store's read-only copy of the input directory `rel` of `action` (whose digest is
    /// `digest`), made on first use: under `trees/<digest>`, written from the CAS (verified)
    /// into a temporary directory and renamed into place, so a partial tree is never used and
    /// two builds making the same one at once both end with it.
    fn shared_tree(
        &self,
        action: &PreparedAction,
        rel: &str,
        digest: &Digest,
    ) -> Result<PathBuf, StoreError> {
        let trees = self.store.trees_dir();
        let dir = trees.join(digest.hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        let io = |op: &'static str, path: &Path, source: std::io::Error| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&trees).map_err(|e| io("create", &trees, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&trees)
            .map_err(|e| io("create", &trees, e))?;
        let prefix = format!("{rel}/");
        let cas = self.store.cas();
        for (path, info) in &action.inputs {
            if let Some(inner) = path.as_str().strip_prefix(&prefix) {
                cas.write_new_file(&info.digest, &tmp.path().join(inner), info.executable)?;
            }
        }
        for (path, target) in &action.input_links {
            if let Some(inner) = path.as_str().strip_prefix(&prefix) {
                symlink_at(target, &tmp.path().join(inner))?;
            }
        }
        let made = tmp.keep();
        if let Err(e) = fs::rename(&made, &dir) {
            let _ = fs::remove_dir_all(&made);
            // Someone else made it first: theirs is the same.
            if !dir.is_dir() {
                return Err(io("rename", &dir, e));
            }
        }
        Ok(dir)
    }
}

impl Executor for LocalExecutor<'_> {
    fn execute(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        let Some(_slot) = self.slots.acquire(self.cancel) else {
            return Ok(ExecOutcome::Cancelled);
        };
        too_large(label, action)?;
        let start = Instant::now();
        let sandbox_err = |source: StoreError| ExecError::Sandbox {
            label: label.clone(),
            source,
        };
        let io_err = |op: &'static str, path: &Path, source: std::io::Error| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let mode = self.effective_mode();
        let input_bytes = action.inputs.values().map(|i| i.digest.size).sum();
        let base = self.base.for_inputs(input_bytes).map_err(sandbox_err)?;
        let sandbox = tempfile::Builder::new()
            .prefix(&sandbox_prefix("action"))
            .tempdir_in(base)
            .map_err(|e| sandbox_err(io_err("create", base, e)))?;
        // Without a sandbox the command runs in the workspace itself.
        let root = match mode {
            SandboxMode::None => self.workspace_root.to_path_buf(),
            _ => sandbox.path().join("root"),
        };
        let home = sandbox.path().join("home");
        let tmp = sandbox.path().join("tmp");
        for dir in [&root, &home, &tmp] {
            fs::create_dir_all(dir).map_err(|e| sandbox_err(io_err("create", dir, e)))?;
        }

        // REAPI: the Action and its Command live in the CAS beside the inputs, so the store
        // holds everything needed to re-run or explain this action later.
        let cas = self.store.cas();
        cas.put_bytes(&action.encoded_command)
            .map_err(sandbox_err)?;
        cas.put_bytes(&action.encoded_action).map_err(sandbox_err)?;

        // Large dependency trees (a `node_modules`) are made once per digest in the store and
        // mounted read-only into namespace sandboxes, instead of copied into each.
        let read_only = if mode == SandboxMode::Namespace {
            read_only_inputs(action)
        } else {
            Vec::new()
        };
        let shared = shared_trees(action, &read_only);
        let mut mounts = Vec::with_capacity(shared.len());
        for (rel, digest) in &shared {
            let host = self.shared_tree(action, rel, digest).map_err(sandbox_err)?;
            mounts.push((host, rel.clone()));
        }
        let in_shared = |path: &WorkspacePath| {
            shared.iter().any(|(rel, _)| {
                path.as_str()
                    .strip_prefix(rel.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        };
        let read_only: Vec<String> = read_only
            .into_iter()
            .filter(|rel| !shared.iter().any(|(s, _)| s == rel))
            .collect();
        // The directories the namespace sandbox would mount read-only: in the directory
        // sandbox, their files are made read-only instead (modes, which do not bind root).
        let read_only_here: std::collections::HashSet<String> = if mode == SandboxMode::Directory {
            read_only_inputs(action).into_iter().collect()
        } else {
            Default::default()
        };
        let is_read_only_here = |path: &WorkspacePath| {
            let mut dir = path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                if read_only_here.contains(parent) {
                    return true;
                }
                dir = parent;
            }
            false
        };

        // Inputs: what the CAS holds (dependency outputs) is written from it, sources are
        // copied from the workspace; both are verified against the digest in the key on the
        // way, so the sandbox holds exactly what was hashed. (Sources do not enter the CAS:
        // nothing reads them from there, and a cold build would create an inode for each.)
        for (path, info) in action.inputs.iter().filter(|(p, _)| !in_shared(p)) {
            let in_cas = cas.contains(&info.digest);
            let source = path.to_host(self.workspace_root);
            let written = match mode {
                // The command reads the workspace itself: only check what it will read.
                SandboxMode::None if in_cas => Ok(()),
                SandboxMode::None => cairn_store::verify_file(&source, &info.digest),
                _ if in_cas => {
                    cas.write_new_file(&info.digest, &path.to_host(&root), info.executable)
                }
                _ => cairn_store::copy_verified(
                    &source,
                    &path.to_host(&root),
                    &info.digest,
                    info.executable,
                ),
            };
            written.map_err(sandbox_err)?;
            // As in the namespace sandbox, an action writing into what it reads fails (but for
            // root, whom modes do not bind).
            if is_read_only_here(path) {
                use std::os::unix::fs::PermissionsExt;
                let host = path.to_host(&root);
                let read_only = if info.executable { 0o555 } else { 0o444 };
                fs::set_permissions(&host, fs::Permissions::from_mode(read_only))
                    .map_err(|e| sandbox_err(io_err("chmod", &host, e)))?;
            }
        }
        // Symlinks of dependency output directories, as they were captured (relative). Without
        // a sandbox they are in the workspace already.
        if mode != SandboxMode::None {
            for (path, target) in action.input_links.iter().filter(|(p, _)| !in_shared(p)) {
                symlink_at(target, &path.to_host(&root)).map_err(sandbox_err)?;
            }
        }
        let workdir = root.join(&action.working_dir);
        fs::create_dir_all(&workdir).map_err(|e| sandbox_err(io_err("create", &workdir, e)))?;
        for out in &action.outs {
            let host = out.to_host(&root);
            if mode == SandboxMode::None {
                // Stale outputs must not survive into the new result.
                let _ = fs::remove_file(&host);
            }
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent).map_err(|e| sandbox_err(io_err("create", parent, e)))?;
            }
        }
        for dir in &action.out_dirs {
            let host = dir.to_host(&root);
            if mode == SandboxMode::None {
                let _ = fs::remove_dir_all(&host);
            }
            fs::create_dir_all(&host).map_err(|e| sandbox_err(io_err("create", &host, e)))?;
        }

        let stdout_path = sandbox.path().join("stdout");
        let stderr_path = sandbox.path().join("stderr");
        let stdout = File::create(&stdout_path)
            .map_err(|e| sandbox_err(io_err("create", &stdout_path, e)))?;
        // A test's stdout and stderr are one log, interleaved as written (pytest and most
        // test runners report failures on stdout), as Bazel's test.log.
        let combined = action.kind == ActionKind::Test;
        let stderr = File::create(&stderr_path)
            .and_then(|f| if combined { stdout.try_clone() } else { Ok(f) })
            .map_err(|e| sandbox_err(io_err("create", &stderr_path, e)))?;
        let network = matches!(action.kind, ActionKind::FixedOutput(_));
        let new_root = sandbox.path().join("newroot");
        // The working directory as the command sees it.
        let inner_workdir = match mode {
            SandboxMode::Namespace => Path::new(sandbox::SANDBOX_ROOT).join(&action.working_dir),
            _ => workdir.clone(),
        };
        let mut command = match mode {
            SandboxMode::Namespace => {
                fs::create_dir_all(&new_root)
                    .map_err(|e| sandbox_err(io_err("create", &new_root, e)))?;
                let spec = NamespaceSpec {
                    new_root: &new_root,
                    input_root: &root,
                    cwd: &action.working_dir,
                    network,
                    read_only: &action.tool_dirs,
                    read_only_inputs: &read_only,
                    mounts: &mounts,
                    tmp_size: self.tmp_size,
                };
                sandbox::namespace_command(&self.helper, &spec, &["/bin/sh", "-c", &action.cmd])
            }
            SandboxMode::Directory | SandboxMode::None => {
                // umask 022, so outputs do not depend on the user's umask: set by the shell
                // (on the command's first line, so its line numbers stay as written), not by
                // a hook between fork and exec, which would make the spawn a full `fork` of
                // this process (copying its page tables) instead of a `vfork`.
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("umask 022; {}", action.cmd))
                    .current_dir(&workdir);
                c
            }
        };
        command
            .env_clear()
            .envs(&action.env)
            .envs(&action.pass_env)
            // Fresh empty directories each run: not part of the key, the same for every run.
            // (The namespace sandbox replaces them with its own /home/cairn and /tmp.)
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .envs(absolute_report_vars(action, &inner_workdir))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        // Without a PID namespace, what the action leaves behind is found by its tag.
        let tag = (mode != SandboxMode::Namespace).then(|| self.orphans.tag());
        if let Some(tag) = &tag {
            command.env(orphans::TAG_VAR, tag);
        }
        let child = command.spawn().map_err(|source| ExecError::Spawn {
            label: label.clone(),
            source,
        })?;
        let pid = child.id();
        if tag.is_some() {
            self.orphans.started(pid);
        }
        let (status, ended) =
            wait_for(child, Duration::from_millis(action.timeout_ms), self.cancel);
        if let Some(tag) = &tag {
            self.orphans.ended(pid, tag);
        }
        let duration_ms = start.elapsed().as_millis() as u64;

        let exit_code = status.and_then(|s| s.code());
        let logs = Logs {
            stdout: &stdout_path,
            stderr: &stderr_path,
            combined,
        };
        let failure = |message: String| {
            let tail = if combined {
                tail_lines(&stdout_path, TEST_TAIL_LINES)
            } else {
                tail_lines(&stderr_path, STDERR_TAIL_LINES)
            };
            ExecFailure {
                exit_code,
                message,
                stderr_tail: tail,
                tail_is_output: combined,
                log: save_log(self.store, label, &action.key, &logs),
                reports: save_reports(self.store, label, &action.key, action, &root),
            }
        };
        if ended == Ended::Cancelled {
            return Ok(ExecOutcome::Cancelled);
        }
        if ended == Ended::TimedOut {
            return Ok(ExecOutcome::TimedOut(failure(format!(
                "timed out after {} and was killed",
                format_ms(action.timeout_ms)
            ))));
        }
        match exit_code {
            Some(0) => {}
            Some(code) => {
                return Ok(ExecOutcome::Failed(failure(format!(
                    "exited with code {code}"
                ))));
            }
            None => {
                return Ok(ExecOutcome::Failed(failure(
                    "was killed by a signal".to_string(),
                )));
            }
        }
        if let Some(problem) = check_outputs(&root, action, mode) {
            return Ok(ExecOutcome::Failed(failure(problem)));
        }
        // Every test keeps its log, passing or not (its result holds it too, as stdout).
        if combined {
            save_log(self.store, label, &action.key, &logs);
        }

        let capture_err = |source: StoreError| ExecError::Capture {
            label: label.clone(),
            source,
        };
        let mut result = reapi::ActionResult {
            exit_code: 0,
            ..Default::default()
        };
        for out in &action.outs {
            let host = out.to_host(&root);
            let executable = is_executable(&host);
            let digest = cas.put_file(&host).map_err(capture_err)?;
            result.output_files.push(reapi::OutputFile {
                path: out.relative_to(&action.working_dir),
                digest: Some(digest.to_reapi()),
                is_executable: executable,
                ..Default::default()
            });
        }
        // For a fixed-output action: every output file and symlink by package-relative path
        // (a `node_modules/.bin` link, pnpm's layout: the declared digest vouches for them too).
        let mut produced: BTreeMap<String, FileInfo> = BTreeMap::new();
        let mut produced_links: BTreeMap<String, String> = BTreeMap::new();
        for f in &result.output_files {
            if let Some(d) = f.digest.as_ref().and_then(Digest::from_reapi) {
                produced.insert(
                    f.path.clone(),
                    FileInfo {
                        digest: d,
                        executable: f.is_executable,
                    },
                );
            }
        }
        for dir in &action.out_dirs {
            let (tree, contents) = match capture_dir(cas, &dir.to_host(&root)) {
                Ok(captured) => captured,
                // What the action made is not storable: its failure, named by workspace path
                // (the sandbox's host path means nothing to the user).
                Err(StoreError::Unsupported { path, why }) => {
                    let shown = path.strip_prefix(&root).unwrap_or(&path);
                    let target = fs::read_link(&path)
                        .map(|t| format!(" (-> {})", t.display()))
                        .unwrap_or_default();
                    return Ok(ExecOutcome::Failed(failure(format!(
                        "made `{}`{target}, which an output cannot hold: {why}",
                        shown.display()
                    ))));
                }
                Err(e) => return Err(capture_err(e)),
            };
            // Links stay inside the workspace (an npm workspace link may leave its tree):
            // one leading out would let dependents read the host through it.
            let in_tree = |p: &str| {
                p.strip_prefix(dir.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rel| contents.symlinks.contains_key(rel))
            };
            if let Some((link, target)) = contents.symlinks.iter().find(|(link, target)| {
                WorkspacePath::in_package(dir.as_str(), link)
                    .is_ok_and(|p| !p.link_stays_inside_among(target, &in_tree))
            }) {
                return Ok(ExecOutcome::Failed(failure(format!(
                    "made `{dir}/{link}` (-> {target}), which points outside the workspace: an output's symlinks must stay inside it"
                ))));
            }
            let rel = dir.relative_to(&action.working_dir);
            for (path, info) in contents.files {
                produced.insert(format!("{rel}/{path}"), info);
            }
            for (path, target) in contents.symlinks {
                produced_links.insert(format!("{rel}/{path}"), target);
            }
            result.output_directories.push(reapi::OutputDirectory {
                path: dir.relative_to(&action.working_dir),
                tree_digest: Some(tree.to_reapi()),
                ..Default::default()
            });
        }
        if let ActionKind::FixedOutput(expected) = action.kind {
            let actual = MerkleTree::build_with_dirs(&produced, &produced_links, &[]).root;
            if actual.hash != expected.hash {
                return Ok(ExecOutcome::Failed(failure(format!(
                    "produced outputs whose digest differs from the declared one\n  expected: {expected}\n  actual:   {actual}\n  (if the new outputs are right, set digest = \"{actual}\"; if `actual` changes on every run, the action is not reproducible: look for timestamps, absolute paths or unordered listings in its outputs)"
                ))));
            }
        }
        result.stdout_digest = Some(cas.put_file(&stdout_path).map_err(capture_err)?.to_reapi());
        result.stderr_digest = Some(cas.put_file(&stderr_path).map_err(capture_err)?.to_reapi());
        result.execution_metadata = Some(reapi::ExecutedActionMetadata {
            worker: if mode == SandboxMode::None {
                super::UNSANDBOXED_WORKER.into()
            } else {
                "cairn-local".into()
            },
            virtual_execution_duration: Some(bazel_remote_apis::google::protobuf::Duration {
                seconds: (duration_ms / 1000) as i64,
                nanos: ((duration_ms % 1000) * 1_000_000) as i32,
            }),
            ..Default::default()
        });
        if let ActionKind::FixedOutput(_) = action.kind {
            action.record_inputs(&mut result);
        }
        Ok(ExecOutcome::Success {
            result,
            remotely: false,
        })
    }

    fn stop_starting(&self) {
        self.slots.close();
    }
}

/// The directories of the input root that hold inputs and nothing the action may write: the
/// largest ones containing no declared output and not on the way to one or to the working
/// directory (which stays writable, as tests expect). At most `MAX_READ_ONLY_MOUNTS` (one
/// mount each); past that, none.
fn read_only_inputs(action: &PreparedAction) -> Vec<String> {
    use std::collections::BTreeSet;
    let parents = |path: &str| -> Vec<String> {
        path.match_indices('/')
            .map(|(i, _)| path[..i].to_string())
            .collect()
    };
    // Every declared output, the working directory, and each directory on the way to one.
    let mut writable: BTreeSet<String> = BTreeSet::new();
    let working_dir = (!action.working_dir.is_empty()).then_some(action.working_dir.as_str());
    for path in action.outputs().map(|p| p.as_str()).chain(working_dir) {
        writable.insert(path.to_string());
        writable.extend(parents(path));
    }
    let mut dirs = BTreeSet::new();
    for path in action.inputs.keys().chain(action.input_links.keys()) {
        // The outermost directory of the input that is not writable.
        if let Some(dir) = parents(path.as_str())
            .into_iter()
            .find(|d| !writable.contains(d))
        {
            dirs.insert(dir);
        }
    }
    if dirs.len() > MAX_READ_ONLY_MOUNTS {
        return Vec::new();
    }
    dirs.into_iter().collect()
}

/// Of the read-only input directories, those shared between sandboxes (with their digests):
/// at least `SHARED_TREE_MIN_FILES` inputs, every one a dependency's output (never a source,
/// which changes with every edit). Below that, copying costs less than a mount.
fn shared_trees(action: &PreparedAction, read_only: &[String]) -> Vec<(String, Digest)> {
    read_only
        .iter()
        .filter_map(|rel| {
            let prefix = format!("{rel}/");
            let under = |p: &&WorkspacePath| p.as_str().starts_with(&prefix);
            let files = action.inputs.keys().filter(under).count();
            let sources = action.sources.iter().filter(under).count();
            (files >= SHARED_TREE_MIN_FILES && sources == 0)
                .then(|| action.input_tree.dir_digest(rel).map(|d| (rel.clone(), d)))
                .flatten()
        })
        .collect()
}

/// Input trees with fewer files than this are copied into each sandbox.
const SHARED_TREE_MIN_FILES: usize = 256;

/// More read-only input directories than this are not worth their mounts.
const MAX_READ_ONLY_MOUNTS: usize = 256;

/// Linux's `MAX_ARG_STRLEN`: the longest single argument or `NAME=value` string `execve`
/// takes.
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Refuses an action whose command or one of whose environment variables `execve` would
/// refuse with a bare E2BIG ("Argument list too long").
fn too_large(label: &Label, action: &PreparedAction) -> Result<(), ExecError> {
    let err = |what: String, size: usize, limit: String| ExecError::TooLarge {
        label: label.clone(),
        what,
        size,
        limit,
    };
    let one = || format!("{MAX_ARG_STRLEN} for one environment variable or argument");
    // `umask 022; ` and the NUL.
    let cmd = action.cmd.len() + 12;
    if cmd > MAX_ARG_STRLEN {
        return Err(err("its command".to_string(), cmd, one()));
    }
    for (name, value) in action.env.iter().chain(&action.pass_env) {
        let size = name.len() + value.len() + 2;
        if size > MAX_ARG_STRLEN {
            let what = match name.as_str() {
                "SRCS" => "`$SRCS` (every source file, by path)".to_string(),
                _ => format!("the environment variable `{name}`"),
            };
            return Err(err(what, size, one()));
        }
    }
    // And all of them together, with their pointers, against `ARG_MAX` (a quarter of the
    // stack limit, usually 2 MiB): named by the largest variable, the one to shrink.
    let strings = action.env.iter().chain(&action.pass_env);
    let total: usize = cmd
        + 3 * 8
        + strings
            .clone()
            .map(|(n, v)| n.len() + v.len() + 2 + 8)
            .sum::<usize>();
    // With an unlimited stack, glibc's ARG_MAX is huge while the kernel still stops at 3/4
    // of its default stack limit (6 MiB).
    let limit = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .map_or(2 << 20, |n| (n as usize).min(6 << 20));
    if total > limit
        && let Some((name, _)) = strings.max_by_key(|(n, v)| n.len() + v.len())
    {
        return Err(err(
            format!("its command and environment together (the largest variable is `{name}`)"),
            total,
            format!("{limit} for all of them (`ARG_MAX`)"),
        ));
    }
    Ok(())
}

/// Creates the symlink `host` → `target` (an input's, relative), and its parent directories.
fn symlink_at(target: &str, host: &Path) -> Result<(), StoreError> {
    let io = |op: &'static str, path: &Path, source: std::io::Error| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = host.parent() {
        fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    std::os::unix::fs::symlink(target, host).map_err(|e| io("create symlink", host, e))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Waits for the child; on timeout kills its whole process group. Either way, the group is
/// killed afterwards so no background process outlives its action.
/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Exited,
    TimedOut,
    Cancelled,
}

/// How often a running action checks for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Waits for the child; on timeout or cancellation kills its whole process group. Either way,
/// the group is killed afterwards so no background process outlives its action (those that
/// left the group are `orphans`' business).
fn wait_for(
    mut child: std::process::Child,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> (Option<std::process::ExitStatus>, Ended) {
    use nix::sys::signal::{Signal, killpg};
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait().ok();
        let _ = tx.send(status);
    });
    let deadline = Instant::now() + timeout;
    let kill_group = || {
        let _ = killpg(pgid, Signal::SIGKILL);
    };
    let stop = |rx: &mpsc::Receiver<Option<std::process::ExitStatus>>| {
        kill_group();
        rx.recv().ok().flatten()
    };
    let (status, ended) = loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(CANCEL_POLL);
        match rx.recv_timeout(slice) {
            Ok(status) => break (status, Ended::Exited),
            Err(mpsc::RecvTimeoutError::Disconnected) => break (None, Ended::Exited),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                    break (stop(&rx), Ended::Cancelled);
                }
                if Instant::now() >= deadline {
                    break (stop(&rx), Ended::TimedOut);
                }
            }
        }
    };
    kill_group();
    let _ = waiter.join();
    (status, ended)
}

/// Whether the sandbox holds exactly the declared outputs (besides the inputs).
fn check_outputs(root: &Path, action: &PreparedAction, mode: SandboxMode) -> Option<String> {
    let mut problems = Vec::new();
    for out in &action.outs {
        match fs::symlink_metadata(out.to_host(root)) {
            Ok(m) if m.is_file() => {}
            Ok(m) if m.is_dir() => problems.push(format!(
                "declared output `{out}` is a directory (declare it in `out_dirs`)"
            )),
            Ok(_) => problems.push(format!("declared output `{out}` is not a regular file")),
            Err(_) => problems.push(format!("did not create declared output `{out}`")),
        }
    }
    for dir in &action.out_dirs {
        if !out_is_dir(&dir.to_host(root)) {
            problems.push(format!(
                "declared output directory `{dir}` is not a directory"
            ));
        }
    }
    if !problems.is_empty() {
        return Some(problems.join("; "));
    }
    // Tests have no outputs (their scratch files are discarded); without a sandbox the
    // workspace is full of other files.
    if action.kind == ActionKind::Test || mode == SandboxMode::None {
        return None;
    }
    let mut extra = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let Ok(entry) = entry else { continue };
        if entry.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let rel = WorkspacePath::from_normalized(rel.to_string_lossy().into_owned());
        let declared = outputs_contain(action, &rel)
            || action.inputs.contains_key(&rel)
            || action.input_links.contains_key(&rel);
        if !declared {
            extra.push(format!("`{rel}`"));
        }
    }
    if extra.is_empty() {
        return None;
    }
    let more = extra.len().saturating_sub(MAX_LISTED);
    extra.truncate(MAX_LISTED);
    let mut msg = format!(
        "wrote files outside its declared outputs: {}",
        extra.join(", ")
    );
    if more > 0 {
        msg.push_str(&format!(" and {more} more"));
    }
    msg.push_str(" (declare them in `outs`/`out_dirs`, or write scratch files to $TMPDIR)");
    Some(msg)
}

fn out_is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn outputs_contain(action: &PreparedAction, path: &WorkspacePath) -> bool {
    action.outs.contains(path) || action.out_dirs.iter().any(|d| path.is_within(d))
}

/// The last `n` lines of a file (reading at most its last 64 KiB).
fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES as u64)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    tail_of(&buf, n)
}

/// Where an action's output went: stdout and stderr, or (a test) one combined log.
struct Logs<'a> {
    stdout: &'a Path,
    stderr: &'a Path,
    combined: bool,
}

/// Keeps an action's output under the store's `logs/` (`<package>/<name>-<key>.log`).
fn save_log(store: &Store, label: &Label, key: &Digest, logs: &Logs) -> Option<PathBuf> {
    let read = |path: &Path| fs::read(path).unwrap_or_default();
    write_log(
        store,
        label,
        key,
        &read(logs.stdout),
        &read(logs.stderr),
        logs.combined,
    )
}

/// A test's report variables (`reports = True`: `TEST_OUTPUTS_DIR`, `XML_OUTPUT_FILE`), which
/// its `Command` holds relative to the working directory, made absolute for the run.
fn absolute_report_vars(action: &PreparedAction, workdir: &Path) -> Vec<(String, PathBuf)> {
    if action.kind != ActionKind::Test {
        return Vec::new();
    }
    crate::load::builtins::TEST_REPORT_VARS
        .iter()
        .filter_map(|var| Some((var.to_string(), workdir.join(action.env.get(*var)?))))
        .collect()
}

/// Keeps what a failing test left in its reports directory under the store's `logs/`
/// (`<package>/<name>-<key>.reports/`): a failure is not cached, and its reports are what
/// explains it.
fn save_reports(
    store: &Store,
    label: &Label,
    key: &Digest,
    action: &PreparedAction,
    root: &Path,
) -> Option<PathBuf> {
    let rel = action.env.get("TEST_OUTPUTS_DIR")?;
    let from = root.join(&action.working_dir).join(rel);
    if action.kind != ActionKind::Test || !from.is_dir() {
        return None;
    }
    let to = store.logs_dir().join(label.package_dir()).join(format!(
        "{}-{}.reports",
        label.name,
        key.short()
    ));
    let _ = fs::remove_dir_all(&to);
    for entry in walkdir::WalkDir::new(&from).follow_links(false) {
        let entry = entry.ok()?;
        let dest = to.join(entry.path().strip_prefix(&from).ok()?);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&dest).ok()?;
        } else if entry.file_type().is_file() {
            fs::copy(entry.path(), &dest).ok()?;
        }
    }
    Some(to)
}

/// Writes an action's log (`combined`: a test's one stream, whose bytes are all in `stdout`).
pub(super) fn write_log(
    store: &Store,
    label: &Label,
    key: &Digest,
    stdout: &[u8],
    stderr: &[u8],
    combined: bool,
) -> Option<PathBuf> {
    let dir = store.logs_dir().join(label.package_dir());
    fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{}-{}.log", label.name, key.short()));
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut log = String::new();
    if combined {
        log.push_str(&format!("# {label}\n# --- stdout and stderr ---\n"));
        log.push_str(&text(stdout));
    } else {
        log.push_str(&format!("# {label}\n# --- stdout ---\n"));
        log.push_str(&text(stdout));
        log.push_str("\n# --- stderr ---\n");
        log.push_str(&text(stderr));
    }
    fs::write(&path, log).ok()?;
    Some(path)
}

/// The last `n` lines of `bytes`.
pub(super) fn tail_of(bytes: &[u8], n: usize) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn format_ms(ms: u64) -> String {
    if ms >= 60_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}
