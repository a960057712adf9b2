//! The scheduler with an in-memory executor and an in-memory remote cache: hits, misses,
//! early cutoff, failures, cancellation, flaky retries and remote hits, without a process or
//! a server. (The real executor and real remotes are tested by the integration tests.)

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;

use cairn_store::{
    Capabilities, DigestFunction, FileStates, RemoteCache, RemoteDigest, RemoteError, Store, reapi,
};

use super::*;
use crate::action::PreparedAction;
use crate::engine::lookup::{Remote, Trust, UPLOAD_FLUSH};
use crate::exec::{ExecError, ExecFailure, ExecOutcome};
use crate::graph::{Location, Target};
use crate::workspace::WorkspacePath;

/// "Runs" an action by writing each declared output with a fixed content (the target's `cmd`,
/// unless overridden), so outputs depend only on what the test says.
#[derive(Default)]
struct MemoryExecutor {
    runs: Mutex<Vec<String>>,
    /// Label → how many more runs fail before one succeeds (`u32::MAX`: always).
    failures: Mutex<HashMap<String, u32>>,
    /// Labels whose run is cancelled.
    cancelled: Vec<String>,
    /// Label → the content of its outputs.
    contents: HashMap<String, String>,
    store: Option<PathBuf>,
}

impl MemoryExecutor {
    fn runs(&self) -> Vec<String> {
        let mut runs = self.runs.lock().unwrap().clone();
        runs.sort();
        runs
    }
}

impl Executor for MemoryExecutor {
    fn execute(&self, label: &Label, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        let name = label.to_string();
        self.runs.lock().unwrap().push(name.clone());
        if self.cancelled.contains(&name) {
            return Ok(ExecOutcome::Cancelled);
        }
        if let Some(left) = self.failures.lock().unwrap().get_mut(&name)
            && *left > 0
        {
            if *left != u32::MAX {
                *left -= 1;
            }
            return Ok(ExecOutcome::Failed(ExecFailure {
                exit_code: Some(1),
                message: "exited with code 1".into(),
                stderr_tail: String::new(),
                tail_is_output: false,
                log: None,
                reports: None,
            }));
        }
        let store = Store::open(self.store.as_ref().expect("a store")).unwrap();
        let content = self
            .contents
            .get(&name)
            .cloned()
            .unwrap_or(action.cmd.clone());
        let mut result = reapi::ActionResult::default();
        for out in &action.outs {
            let digest = store.cas().put_bytes(content.as_bytes()).unwrap();
            result.output_files.push(reapi::OutputFile {
                path: out.relative_to(&action.working_dir),
                digest: Some(digest.to_reapi()),
                ..Default::default()
            });
        }
        Ok(ExecOutcome::Success {
            result,
            remotely: false,
        })
    }
}

/// An in-memory remote cache (BLAKE3), counting what it is asked.
#[derive(Default)]
struct MemoryCache {
    blobs: Mutex<HashMap<RemoteDigest, Vec<u8>>>,
    results: Mutex<HashMap<RemoteDigest, reapi::ActionResult>>,
    lookups: Mutex<u32>,
    /// Fails every call.
    down: bool,
    /// The digest function it speaks (BLAKE3 unless set).
    sha256: bool,
}

impl MemoryCache {
    fn function(&self) -> DigestFunction {
        if self.sha256 {
            DigestFunction::Sha256
        } else {
            DigestFunction::Blake3
        }
    }

    /// Every digest inside every stored result and action resolves to a blob whose bytes hash
    /// to it: the remote holds valid REAPI data.
    fn assert_every_digest_resolves(&self) {
        let f = self.function();
        let blobs = self.blobs.lock().unwrap();
        let get = |d: &reapi::Digest| {
            let digest = RemoteDigest::from_reapi(f, d).expect("a digest in the function");
            blobs
                .get(&digest)
                .unwrap_or_else(|| panic!("{digest} is not held"))
        };
        let mut actions = 0;
        for (key, result) in self.results.lock().unwrap().iter() {
            let action = reapi::Action::decode(blobs[key].as_slice()).unwrap();
            actions += 1;
            reapi::Command::decode(get(action.command_digest.as_ref().unwrap()).as_slice())
                .unwrap();
            let mut dirs = vec![action.input_root_digest.clone().unwrap()];
            while let Some(d) = dirs.pop() {
                let dir = reapi::Directory::decode(get(&d).as_slice()).unwrap();
                for file in &dir.files {
                    get(file.digest.as_ref().unwrap());
                }
                dirs.extend(dir.directories.iter().map(|s| s.digest.clone().unwrap()));
            }
            for file in &result.output_files {
                get(file.digest.as_ref().unwrap());
            }
            for log in [&result.stdout_digest, &result.stderr_digest]
                .into_iter()
                .flatten()
            {
                get(log);
            }
        }
        assert!(actions > 0);
    }

    fn check(&self) -> Result<(), RemoteError> {
        if self.down {
            return Err(RemoteError::Unavailable {
                backend: "memory".into(),
                why: "connection refused".into(),
            });
        }
        Ok(())
    }
}

impl RemoteCache for MemoryCache {
    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        self.check()?;
        Ok(Capabilities {
            digest_function: self.function(),
            max_batch_bytes: 4 << 20,
            zstd: false,
            update_enabled: true,
        })
    }

    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError> {
        self.check()?;
        let blobs = self.blobs.lock().unwrap();
        Ok(digests
            .iter()
            .filter(|d| !blobs.contains_key(d))
            .copied()
            .collect())
    }

    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        self.check()?;
        let Some(bytes) = self.blobs.lock().unwrap().get(digest).cloned() else {
            return Ok(false);
        };
        sink.write_all(&bytes).unwrap();
        Ok(true)
    }

    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError> {
        self.check()?;
        let mut bytes = Vec::new();
        source.read_to_end(&mut bytes).unwrap();
        assert_eq!(RemoteDigest::of_bytes(self.function(), &bytes), *digest);
        self.blobs.lock().unwrap().insert(*digest, bytes);
        Ok(())
    }

    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        self.check()?;
        *self.lookups.lock().unwrap() += 1;
        Ok(self.results.lock().unwrap().get(key).cloned())
    }

    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        self.check()?;
        let blobs = self.blobs.lock().unwrap();
        for file in &result.output_files {
            let d = RemoteDigest::from_reapi(self.function(), file.digest.as_ref().unwrap());
            assert!(
                blobs.contains_key(&d.unwrap()),
                "a result is written after its blobs"
            );
        }
        assert!(
            blobs.contains_key(key),
            "the Action is uploaded before its result"
        );
        self.results.lock().unwrap().insert(*key, result.clone());
        Ok(())
    }
}

/// Collects what a build reports.
#[derive(Default)]
struct Collect {
    reports: Mutex<Vec<TargetReport>>,
    warnings: Mutex<Vec<String>>,
}

impl Reporter for Collect {
    fn build_started(&self, _: usize) {}
    fn target_started(&self, _: &Label) {}
    fn target_finished(&self, report: &TargetReport) {
        self.reports.lock().unwrap().push(report.clone());
    }
    fn warning(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
    }
}

fn target(label: &str, kind: Kind, srcs: &[&str], deps: &[&str], outs: &[&str]) -> Target {
    let label = Label::parse(label, "").unwrap();
    let pkg = label.package.clone();
    Target {
        kind,
        srcs: srcs
            .iter()
            .map(|s| WorkspacePath::in_package(&pkg, s).unwrap())
            .collect(),
        deps: deps
            .iter()
            .map(|d| Label::parse(d, &pkg).unwrap())
            .collect(),
        cmd: format!("make {label}"),
        outs: outs
            .iter()
            .map(|o| WorkspacePath::in_package(&pkg, o).unwrap())
            .collect(),
        out_dirs: vec![],
        env: BTreeMap::new(),
        tools: vec![],
        timeout_ms: 1000,
        flaky: 0,
        tags: vec![],
        pass_env: vec![],
        platform: BTreeMap::new(),
        fixed_digest: None,
        location: Location {
            file: format!("{pkg}/BUILD.star"),
            line: 1,
            column: 1,
        },
        definition: Default::default(),
        label,
    }
}

/// A workspace on disk with a graph: `//lib:gen` (from `lib/in.txt`) → `//app:build` →
/// `//app:test`, and `//lib:lint`, a test of the library with `flaky = 2`.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    graph: Graph,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/in.txt"), "v1").unwrap();
        let mut lint = target("//lib:lint", Kind::Test, &["in.txt"], &[], &[]);
        lint.flaky = 2;
        let graph = Graph::new(
            vec![
                target("//lib:gen", Kind::Action, &["in.txt"], &[], &["gen.txt"]),
                target(
                    "//app:build",
                    Kind::Action,
                    &[],
                    &["//lib:gen"],
                    &["app.txt"],
                ),
                target("//app:test", Kind::Test, &[], &["//app:build"], &[]),
                lint,
            ],
            &|_, _| false,
        )
        .unwrap();
        Fixture {
            _dir: dir,
            root,
            graph,
        }
    }

    fn store(&self, name: &str) -> PathBuf {
        self.root.parent().unwrap().join(name)
    }

    /// Builds (and tests) everything with the local store at `store` and `remotes`.
    fn build(
        &self,
        store: &Path,
        executor: &MemoryExecutor,
        remotes: Vec<Remote>,
    ) -> (BuildOutcome, Vec<String>) {
        self.build_with(store, executor, remotes, None)
    }

    fn build_with(
        &self,
        store: &Path,
        executor: &MemoryExecutor,
        remotes: Vec<Remote>,
        cancel: Option<&std::sync::atomic::AtomicBool>,
    ) -> (BuildOutcome, Vec<String>) {
        let store = Store::open(store).unwrap();
        let states = FileStates::default();
        let reporter = Collect::default();
        let warn = |text: &str| reporter.warning(text);
        let cache = CacheChain::new(&store, &self.root, remotes, Trust::default(), &warn);
        let tools = ToolResolver::new(vec!["/bin".into(), "/usr/bin".into()], None);
        let host_env = BTreeMap::new();
        let ctx = BuildContext {
            graph: &self.graph,
            cache: &cache,
            states: &states,
            executor,
            reporter: &reporter,
            workspace_root: &self.root,
            tools: &tools,
            host_env: &host_env,
            platform: &host_env,
            check: false,
            restore: true,
            unsandboxed: false,
            recorder: None,
            tracer: None,
            memo: None,
            cancel,
        };
        let roots = self.graph.all_targets().map(|t| t.label.clone()).collect();
        let mut outcome = run_build(
            &ctx,
            &BuildOptions {
                roots,
                run_tests: true,
                jobs: 2,
                lookahead: 0,
                keep_going: true,
            },
        );
        outcome.traffic = cache.finish(UPLOAD_FLUSH);
        let warnings = reporter.warnings.lock().unwrap().clone();
        (outcome, warnings)
    }
}

fn executor(store: &Path) -> MemoryExecutor {
    MemoryExecutor {
        store: Some(store.to_path_buf()),
        ..Default::default()
    }
}

fn status(outcome: &BuildOutcome, label: &str) -> Status {
    outcome
        .reports
        .iter()
        .find(|r| r.label.to_string() == label)
        .unwrap_or_else(|| panic!("no report for {label}"))
        .status
}

#[test]
fn a_miss_executes_and_an_unchanged_build_is_all_hits() {
    let f = Fixture::new();
    let store = f.store("store");
    let first = executor(&store);
    let (outcome, _) = f.build(&store, &first, vec![]);
    assert_eq!(outcome.count(Status::Executed), 4);
    assert_eq!(
        first.runs(),
        ["//app:build", "//app:test", "//lib:gen", "//lib:lint"]
    );
    assert_eq!(
        std::fs::read_to_string(f.root.join("app/app.txt")).unwrap(),
        "make //app:build"
    );

    std::fs::remove_file(f.root.join("app/app.txt")).unwrap();
    let second = executor(&store);
    let (outcome, _) = f.build(&store, &second, vec![]);
    assert_eq!(outcome.count(Status::Cached), 4);
    assert!(second.runs().is_empty());
    assert!(
        f.root.join("app/app.txt").exists(),
        "a hit restores its outputs"
    );
}

#[test]
fn identical_outputs_of_a_rebuilt_dependency_stop_the_rebuild() {
    let f = Fixture::new();
    let store = f.store("store");
    f.build(&store, &executor(&store), vec![]);
    std::fs::write(f.root.join("lib/in.txt"), "v2").unwrap();
    let again = executor(&store);
    let (outcome, _) = f.build(&store, &again, vec![]);
    // `gen` writes the same bytes for any input: its dependents keep their keys.
    assert_eq!(again.runs(), ["//lib:gen", "//lib:lint"]);
    assert_eq!(status(&outcome, "//app:build"), Status::Cached);
    assert_eq!(status(&outcome, "//app:test"), Status::Cached);

    let changed = MemoryExecutor {
        contents: [("//lib:gen".to_string(), "new bytes".to_string())].into(),
        ..executor(&store)
    };
    std::fs::write(f.root.join("lib/in.txt"), "v3").unwrap();
    let (outcome, _) = f.build(&store, &changed, vec![]);
    // New bytes from `gen` reach `app:build`, whose own bytes stay the same: the wave stops
    // before `app:test`.
    assert_eq!(changed.runs(), ["//app:build", "//lib:gen", "//lib:lint"]);
    assert_eq!(status(&outcome, "//app:test"), Status::Cached);
}

#[test]
fn a_failure_skips_its_dependents_and_is_not_cached() {
    let f = Fixture::new();
    let store = f.store("store");
    let failing = executor(&store);
    failing
        .failures
        .lock()
        .unwrap()
        .insert("//lib:gen".into(), u32::MAX);
    let (outcome, _) = f.build(&store, &failing, vec![]);
    assert_eq!(status(&outcome, "//lib:gen"), Status::Failed);
    for dependent in ["//app:build", "//app:test"] {
        let report = outcome
            .reports
            .iter()
            .find(|r| r.label.to_string() == dependent)
            .unwrap();
        assert_eq!(report.status, Status::Skipped);
        assert_eq!(report.blocked_by.as_ref().unwrap().to_string(), "//lib:gen");
    }
    assert!(!outcome.is_success());
    let fixed = executor(&store);
    f.build(&store, &fixed, vec![]);
    assert_eq!(fixed.runs(), ["//app:build", "//app:test", "//lib:gen"]);
}

#[test]
fn a_cancelled_action_is_neither_reported_nor_recorded() {
    let f = Fixture::new();
    let store = f.store("store");
    let cancelling = MemoryExecutor {
        cancelled: vec!["//lib:gen".into()],
        ..executor(&store)
    };
    let (outcome, _) = f.build(&store, &cancelling, vec![]);
    assert_eq!(status(&outcome, "//lib:gen"), Status::Skipped);
    assert_eq!(status(&outcome, "//app:build"), Status::Skipped);
    assert_eq!(outcome.count(Status::Failed), 0);
    assert!(!outcome.is_success());
    let again = executor(&store);
    f.build(&store, &again, vec![]);
    assert!(again.runs().contains(&"//lib:gen".to_string()));

    // With the cancel flag set, nothing starts at all.
    let flag = std::sync::atomic::AtomicBool::new(true);
    let idle = executor(&f.store("other"));
    let (outcome, _) = f.build_with(&f.store("other"), &idle, vec![], Some(&flag));
    assert!(idle.runs().is_empty());
    assert_eq!(outcome.count(Status::Skipped), 4);
}

#[test]
fn a_flaky_test_is_retried_up_to_its_limit() {
    let f = Fixture::new();
    let store = f.store("store");
    let flaky = executor(&store);
    flaky
        .failures
        .lock()
        .unwrap()
        .insert("//lib:lint".into(), 2);
    let (outcome, warnings) = f.build(&store, &flaky, vec![]);
    let lint = outcome
        .reports
        .iter()
        .find(|r| r.label.to_string() == "//lib:lint")
        .unwrap();
    assert_eq!((lint.status, lint.attempts), (Status::Executed, 3));
    assert_eq!(warnings.len(), 2, "{warnings:?}");

    let store = f.store("store2");
    let hopeless = executor(&store);
    hopeless
        .failures
        .lock()
        .unwrap()
        .insert("//lib:lint".into(), 3);
    let (outcome, _) = f.build(&store, &hopeless, vec![]);
    assert_eq!(status(&outcome, "//lib:lint"), Status::Failed);
}

#[test]
fn a_remote_hit_is_reported_backfilled_and_then_a_local_hit() {
    let f = Fixture::new();
    let remote = Arc::new(MemoryCache::default());
    let link = |upload| Remote {
        cache: Arc::clone(&remote) as Arc<dyn RemoteCache>,
        upload,
    };
    // A CI machine builds and uploads.
    let ci = f.store("ci");
    let (outcome, warnings) = f.build(&ci, &executor(&ci), vec![link(true)]);
    assert_eq!(outcome.count(Status::Executed), 4, "{warnings:?}");
    assert!(outcome.traffic.bytes_uploaded > 0);
    assert_eq!(remote.results.lock().unwrap().len(), 4);

    // A laptop with an empty store gets every result from the remote.
    let laptop = f.store("laptop");
    std::fs::remove_file(f.root.join("app/app.txt")).unwrap();
    let local = executor(&laptop);
    let (outcome, warnings) = f.build(&laptop, &local, vec![link(false)]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(local.runs().is_empty());
    assert_eq!(outcome.count(Status::RemoteCached), 4);
    assert!(outcome.traffic.bytes_downloaded > 0);
    assert_eq!(
        std::fs::read_to_string(f.root.join("app/app.txt")).unwrap(),
        "make //app:build"
    );

    // Backfilled: the next build finds everything locally and never asks the remote.
    let asked = *remote.lookups.lock().unwrap();
    let (outcome, _) = f.build(&laptop, &executor(&laptop), vec![link(false)]);
    assert_eq!(outcome.count(Status::Cached), 4);
    assert_eq!(*remote.lookups.lock().unwrap(), asked);
    assert_eq!(outcome.traffic.bytes_downloaded, 0);
}

#[test]
fn a_sha256_remote_holds_valid_reapi_data_and_serves_hits() {
    let f = Fixture::new();
    let remote = Arc::new(MemoryCache {
        sha256: true,
        ..Default::default()
    });
    let link = |upload| Remote {
        cache: Arc::clone(&remote) as Arc<dyn RemoteCache>,
        upload,
    };
    let ci = f.store("ci");
    let (outcome, warnings) = f.build(&ci, &executor(&ci), vec![link(true)]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(outcome.count(Status::Executed), 4);
    assert_eq!(remote.results.lock().unwrap().len(), 4);
    remote.assert_every_digest_resolves();
    // No BLAKE3 digest was sent: every blob's SHA-256 is its name (checked on write).

    let laptop = f.store("laptop");
    std::fs::remove_file(f.root.join("app/app.txt")).unwrap();
    let local = executor(&laptop);
    let (outcome, warnings) = f.build(&laptop, &local, vec![link(false)]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(local.runs().is_empty());
    assert_eq!(outcome.count(Status::RemoteCached), 4);
    assert_eq!(
        std::fs::read_to_string(f.root.join("app/app.txt")).unwrap(),
        "make //app:build"
    );
    let (outcome, _) = f.build(&laptop, &executor(&laptop), vec![link(false)]);
    assert_eq!(
        outcome.count(Status::Cached),
        4,
        "backfilled in local digests"
    );
}

#[test]
fn a_failing_remote_is_one_warning_and_the_build_goes_on_locally() {
    let f = Fixture::new();
    let down = Arc::new(MemoryCache {
        down: true,
        ..Default::default()
    });
    let store = f.store("store");
    let local = executor(&store);
    let remotes = vec![Remote {
        cache: down as Arc<dyn RemoteCache>,
        upload: true,
    }];
    let (outcome, warnings) = f.build(&store, &local, remotes);
    assert!(outcome.is_success());
    assert_eq!(outcome.count(Status::Executed), 4);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("connection refused"), "{warnings:?}");
}
