//! `cairn watch`: an initial build, then one cycle per settled batch of edits. The loop keeps
//! the scan, the analysis cache, the graph and the file-state cache in memory; a cycle
//! re-hashes only the changed paths, re-evaluates only packages whose inputs changed, and
//! builds only the watched targets an edit reaches. Outputs, the store, `.git` and ignored
//! paths never start a cycle; a newer edit cancels the running cycle's actions.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::json;

use super::build::execute;
use super::{Loaded, Session};
use crate::engine::{AnalysisError, BuildOutcome, Status, analyze_scanned};
use crate::error::Error;
use crate::graph::{Graph, Kind, Label, Pattern};
use crate::load::{AnalysisCache, BUILD_FILE, Scan, scan_workspace};
use crate::report;
use crate::watch::{IgnoreRules, WatchEvent};
use crate::workspace::WorkspacePath;

enum Msg {
    Files(WatchEvent),
    Interrupt,
}

/// Set by Ctrl-C; running actions are killed and the loop ends.
static CANCEL: AtomicBool = AtomicBool::new(false);

pub(crate) fn watch(
    s: &Session,
    patterns: &[String],
    run_tests: bool,
    debounce_ms: u64,
    poll: bool,
) -> Result<u8, Error> {
    s.remote_download()?;
    let store = s.open_store()?;
    let states = Arc::new(
        store
            .load_file_states(&s.ws.root)
            .map_err(|e| s.store_error(e))?,
    );
    let skip = vec![s.store_dir.clone()];
    let workspace = s.ws.root.display().to_string();
    let cache_key = cairn_store::Record::Analysis {
        workspace: &workspace,
    };
    let mut cache = AnalysisCache::decode(store.get_record(&cache_key).ok().flatten().as_deref());
    let scan = scan_workspace(&s.ws.root, &skip).map_err(AnalysisError::from)?;
    let gitignores: Vec<String> = scan
        .packages
        .iter()
        .flat_map(|(pkg, files)| {
            files
                .iter()
                .filter(|f| f.ends_with(".gitignore"))
                .map(move |f| {
                    if pkg.is_empty() {
                        f.clone()
                    } else {
                        format!("{pkg}/{f}")
                    }
                })
        })
        .collect();
    let (limit_time, limit_memory) = s.eval_limits()?;
    let watchdog =
        super::watchdog::Watchdog::start(limit_time, limit_memory, s.style.red("error:"));
    let analysis = analyze_scanned(&s.ws.root, scan, &states, &mut cache, &s.ws.tool_path())?;
    drop(watchdog);
    let patterns = s.patterns(patterns)?;
    let mut loaded = Loaded {
        store,
        states,
        analysis,
    };

    let (tx, rx) = mpsc::channel::<Msg>();
    let interrupt_tx = tx.clone();
    let _ = ctrlc::set_handler(move || {
        CANCEL.store(true, Ordering::SeqCst);
        let _ = interrupt_tx.send(Msg::Interrupt);
    });
    let rules = IgnoreRules::new(&s.ws.root, &gitignores, skip.clone());
    let watcher = crate::watch::watch(
        &s.ws.root,
        rules,
        Duration::from_millis(debounce_ms),
        poll,
        tx,
        Msg::Files,
    )
    .map_err(Error::Io)?;
    if let Some(why) = &watcher.polling {
        s.warn(&format!("watching by polling ({why})"));
    }

    let mut watch = Watch {
        s,
        patterns,
        run_tests,
        broken: false,
        scan_dirty: false,
        seen: std::collections::HashMap::new(),
    };
    let mut pending: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        if first || !pending.is_empty() {
            let changed = std::mem::take(&mut pending);
            let interrupted = watch.cycle(
                &mut loaded,
                &mut cache,
                &skip,
                changed,
                first,
                &rx,
                &mut pending,
            );
            first = false;
            s.save_states(&loaded);
            if interrupted {
                break;
            }
            if !pending.is_empty() {
                continue;
            }
        }
        match rx.recv() {
            Ok(Msg::Files(WatchEvent::Changed(paths))) => pending.extend(paths),
            Ok(Msg::Files(WatchEvent::Error(e))) => s.warn(&format!("file watcher: {e}")),
            Ok(Msg::Interrupt) | Err(_) => break,
        }
        // Take everything that is already queued into this batch.
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Msg::Files(WatchEvent::Changed(paths)) => pending.extend(paths),
                Msg::Files(WatchEvent::Error(e)) => s.warn(&format!("file watcher: {e}")),
                Msg::Interrupt => {
                    pending.clear();
                    break;
                }
            }
        }
        if CANCEL.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = loaded.store.put_record(&cache_key, &cache.encode());
    drop(watcher);
    Ok(if CANCEL.load(Ordering::SeqCst) {
        130
    } else {
        0
    })
}

struct Watch<'a> {
    s: &'a Session<'a>,
    patterns: Vec<(String, Pattern)>,
    run_tests: bool,
    /// The last analysis failed: the graph in use is the last good one.
    broken: bool,
    /// A path changed in a way the incremental scan update cannot follow: rescan.
    scan_dirty: bool,
    /// The digest each changed file had when this loop last looked (the file-state cache does
    /// not keep files modified within its racy window, so it cannot tell a touch from an edit).
    seen: std::collections::HashMap<String, cairn_store::Digest>,
}

/// Whether `path` is a declared output (or inside one) or a temp file cairn writes.
fn is_output(graph: &Graph, path: &str) -> bool {
    if path.contains(".cairn-tmp-") {
        return true;
    }
    let wp = WorkspacePath::from_normalized(path.to_string());
    graph.all_outputs().any(|(_, out)| wp.is_within(out))
}

impl Watch<'_> {
    /// One cycle. Returns true when interrupted (Ctrl-C). Edits that arrive while it builds
    /// cancel the build and are left in `pending`.
    #[allow(clippy::too_many_arguments)]
    fn cycle(
        &mut self,
        loaded: &mut Loaded,
        cache: &mut AnalysisCache,
        skip: &[std::path::PathBuf],
        changed: Vec<String>,
        initial: bool,
        rx: &mpsc::Receiver<Msg>,
        pending: &mut Vec<String>,
    ) -> bool {
        let s = self.s;
        let started = Instant::now();
        let mut changed: Vec<String> = changed
            .into_iter()
            .filter(|p| !is_output(loaded.graph(), p))
            .collect();
        changed.sort();
        changed.dedup();
        if !initial && changed.is_empty() {
            return false;
        }
        let (content_changed, reanalyze) = if initial {
            (true, false)
        } else {
            self.apply_changes(loaded, &changed)
        };
        if !content_changed && !self.broken {
            return false; // touch, or saved without a change: nothing to do, nothing to say
        }
        let reanalyze = reanalyze || self.broken;
        if reanalyze {
            let scan = if self.scan_dirty {
                self.scan_dirty = false;
                match scan_workspace(&s.ws.root, skip) {
                    Ok(scan) => scan,
                    Err(e) => {
                        s.warn(&format!("cannot rescan the workspace: {e}"));
                        return false;
                    }
                }
            } else {
                loaded.analysis.scan.clone()
            };
            // A BUILD file edited into an endless loop ends the watch, naming it, as a build.
            let watchdog = s.eval_limits().ok().map(|(time, memory)| {
                super::watchdog::Watchdog::start(time, memory, s.style.red("error:"))
            });
            let analyzed =
                analyze_scanned(&s.ws.root, scan, &loaded.states, cache, &s.ws.tool_path());
            drop(watchdog);
            match analyzed {
                Ok(analysis) => {
                    loaded.analysis = analysis;
                    self.broken = false;
                }
                Err(e) => {
                    self.broken = true;
                    let err = Error::from(e);
                    super::print_error(&err, &s.style);
                    if s.opts.json {
                        report::print_json(
                            &json!({ "error": err.to_string(), "changed": changed }),
                        );
                    }
                    report::print_stderr(&s.style.dim(
                        "watching: the last good graph stays in use until the error is fixed",
                    ));
                    return false;
                }
            }
        }
        let reanalyzed = reanalyze || initial;
        let roots = match self.roots(loaded, &changed, initial, reanalyzed) {
            Ok(r) => r,
            Err(e) => {
                super::print_error(&e, &s.style);
                return false;
            }
        };
        if roots.is_empty() {
            return false;
        }

        let cancel = AtomicBool::new(false);
        let mut interrupted = false;
        // Checked when the watch started.
        let download = s.remote_download().unwrap_or_default();
        let outcome = std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                execute(
                    s,
                    loaded,
                    roots,
                    self.run_tests,
                    false,
                    None,
                    Some(&cancel),
                    true,
                    download,
                )
            });
            while !handle.is_finished() {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(Msg::Files(WatchEvent::Changed(paths))) => {
                        let relevant: Vec<String> = paths
                            .into_iter()
                            .filter(|p| !is_output(loaded.graph(), p))
                            .collect();
                        if !relevant.is_empty() {
                            // A newer edit makes this build stale: stop it, build again.
                            cancel.store(true, Ordering::SeqCst);
                            pending.extend(relevant);
                        }
                    }
                    Ok(Msg::Files(WatchEvent::Error(e))) => s.warn(&format!("file watcher: {e}")),
                    Ok(Msg::Interrupt) => {
                        cancel.store(true, Ordering::SeqCst);
                        interrupted = true;
                    }
                    Err(_) => {}
                }
                if CANCEL.load(Ordering::SeqCst) {
                    cancel.store(true, Ordering::SeqCst);
                    interrupted = true;
                }
            }
            handle.join().expect("the build thread does not panic")
        });
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                super::print_error(&e, &s.style);
                return interrupted;
            }
        };
        self.report(&outcome, &changed, started, cancel.load(Ordering::SeqCst));
        interrupted
    }

    /// Updates the scan and the file-state cache for the changed paths. Returns (whether any
    /// content, file list or BUILD/.star file changed, whether analysis must run again).
    fn apply_changes(&mut self, loaded: &mut Loaded, changed: &[String]) -> (bool, bool) {
        let root = &self.s.ws.root;
        let mut content = false;
        let mut reanalyze = false;
        for path in changed {
            let host = root.join(path);
            let name = host
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == BUILD_FILE
                || path.ends_with(".star")
                || name == crate::workspace::CONFIG_FILE
            {
                reanalyze = true;
                content = true;
                // A BUILD.star created or deleted changes the set of packages: rescan.
                if name == BUILD_FILE
                    && (!host.is_file() || !self.in_scan(&loaded.analysis.scan, path))
                {
                    self.scan_dirty = true;
                }
            }
            let meta = std::fs::symlink_metadata(&host);
            let in_scan = self.in_scan(&loaded.analysis.scan, path);
            match meta {
                Ok(m) if m.is_dir() => {
                    // A new directory (e.g. from a checkout): its files come with the rescan.
                    self.scan_dirty = true;
                    reanalyze = true;
                    content = true;
                }
                Ok(m) if m.is_file() => {
                    if !in_scan {
                        add_to_scan(&mut loaded.analysis.scan, path);
                        reanalyze = true;
                        content = true;
                        continue;
                    }
                    let before = self
                        .seen
                        .get(path)
                        .copied()
                        .or_else(|| loaded.states.known_digest(&host));
                    let now = loaded.states.file_info(&host).ok().map(|(i, _)| i.digest);
                    if before != now || now.is_none() {
                        content = true;
                    }
                    if let Some(d) = now {
                        self.seen.insert(path.clone(), d);
                    }
                }
                _ => {
                    if remove_from_scan(&mut loaded.analysis.scan, path) {
                        reanalyze = true;
                        content = true;
                    }
                }
            }
        }
        (content, reanalyze)
    }

    fn in_scan(&self, scan: &Scan, path: &str) -> bool {
        owner(scan, path).is_some_and(|(pkg, rel)| scan.packages[&pkg].binary_search(&rel).is_ok())
    }

    /// The watched targets an edit reaches: targets with a changed source or in a package
    /// that was evaluated again, and everything that depends on them.
    fn roots(
        &self,
        loaded: &Loaded,
        changed: &[String],
        initial: bool,
        reanalyzed: bool,
    ) -> Result<Vec<Label>, Error> {
        let graph = loaded.graph();
        let watched = graph
            .matching(&self.patterns)
            .map_err(AnalysisError::from)?;
        let scope: HashSet<Label> = graph
            .closure_in_order(&watched)
            .into_iter()
            .filter(|l| self.run_tests || graph.kind_of(l) != Kind::Test)
            .collect();
        if initial {
            return Ok(watched.into_iter().collect());
        }
        let changed_set: HashSet<&str> = changed.iter().map(String::as_str).collect();
        // Packages evaluated by this cycle's analysis (their targets may have changed).
        let evaluated: HashSet<&String> = if reanalyzed {
            loaded.analysis.evaluated.iter().collect()
        } else {
            HashSet::new()
        };
        let mut reached: BTreeSet<Label> = BTreeSet::new();
        for t in graph.all_targets() {
            if evaluated.contains(&t.label.package)
                || t.srcs.iter().any(|p| changed_set.contains(p.as_str()))
            {
                reached.insert(t.label.clone());
                reached.extend(
                    graph
                        .reachable(&t.label, true, None)
                        .into_iter()
                        .map(|(_, l)| l),
                );
            }
        }
        // Groups and filegroups only gather: building what they reach is enough.
        Ok(reached
            .into_iter()
            .filter(|l| scope.contains(l) && graph.kind_of(l).runs())
            .collect())
    }

    fn report(
        &self,
        outcome: &BuildOutcome,
        changed: &[String],
        started: Instant,
        cancelled: bool,
    ) {
        let s = self.s;
        if s.opts.json {
            let mut v = report::json_summary(outcome);
            v["changed"] = json!(changed);
            // From the settled batch to the end of the cycle (analysis, hashing, build).
            v["cycle_ms"] = json!(started.elapsed().as_millis() as u64);
            if cancelled {
                v["cancelled"] = json!(true);
            }
            report::print_json(&v);
        }
        let what = match changed {
            [] => "initial build".to_string(),
            [one] => format!("changed: {one}"),
            [first, rest @ ..] => format!("changed: {first} (+{} more)", rest.len()),
        };
        let tests: Vec<_> = outcome
            .reports
            .iter()
            .filter(|r| r.kind == Kind::Test)
            .collect();
        let failed = outcome.count(Status::Failed);
        let mut line = format!(
            "{what} → {} executed, {} cached",
            outcome.executed(),
            outcome.cached()
        );
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        } else if !tests.is_empty() && !cancelled {
            line.push_str(", tests passed");
        }
        if cancelled {
            line.push_str(", cancelled by a newer edit");
        }
        line.push_str(&format!(
            " in {}",
            crate::exec::local::format_ms(started.elapsed().as_millis() as u64)
        ));
        let line = if failed > 0 {
            s.style.red(&line)
        } else {
            s.style.bold(&line)
        };
        report::print_stderr(&line);
    }
}

/// The package owning `path` and the path relative to it.
fn owner(scan: &Scan, path: &str) -> Option<(String, String)> {
    let wp = WorkspacePath::from_normalized(path.to_string());
    let pkg = scan
        .packages
        .keys()
        .filter(|p| p.is_empty() || wp.is_within(&WorkspacePath::from_normalized((*p).clone())))
        .max_by_key(|p| p.len())?
        .clone();
    let rel = if pkg.is_empty() {
        path.to_string()
    } else {
        path[pkg.len() + 1..].to_string()
    };
    Some((pkg, rel))
}

fn add_to_scan(scan: &mut Scan, path: &str) {
    if let Some((pkg, rel)) = owner(scan, path) {
        let files = scan.packages.get_mut(&pkg).expect("owner exists");
        if let Err(i) = files.binary_search(&rel) {
            files.insert(i, rel);
        }
    }
}

/// Removes a deleted file (or every file under a deleted directory); true if anything went.
fn remove_from_scan(scan: &mut Scan, path: &str) -> bool {
    let Some((pkg, rel)) = owner(scan, path) else {
        return false;
    };
    let files = scan.packages.get_mut(&pkg).expect("owner exists");
    let before = files.len();
    let dir = format!("{rel}/");
    files.retain(|f| *f != rel && !f.starts_with(&dir));
    files.len() != before
}
