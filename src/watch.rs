//! File-system events, debounced, as batches of changed workspace-relative paths on a channel.
//! Ignores `.git`, the store and paths matched by `.gitignore` files; knows nothing about
//! builds (the watch loop decides what an edit means).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer, new_debouncer_opt};

/// What the watcher tells the watch loop.
#[derive(Debug)]
pub(crate) enum WatchEvent {
    /// Paths (relative to the workspace root) created, modified or removed, deduplicated.
    Changed(Vec<String>),
    /// The watcher failed (e.g. the inotify watch limit); it may have missed events.
    Error(String),
}

/// A running watcher; dropping it stops it.
pub(crate) struct FileWatcher {
    _debouncer: Box<dyn std::any::Any + Send>,
    /// Why it polls, when it does (no inotify here, too many watches, or `--poll`).
    pub polling: Option<String>,
}

/// Ignore rules: `.gitignore` files anywhere in the workspace, each applying below its own
/// directory.
pub(crate) struct IgnoreRules {
    root: PathBuf,
    skip: Vec<PathBuf>,
    matchers: Vec<(PathBuf, Gitignore)>,
}

impl IgnoreRules {
    /// `gitignores` are workspace-relative paths of `.gitignore` files; `skip` are host
    /// directories never to report (the store).
    pub fn new(root: &Path, gitignores: &[String], skip: Vec<PathBuf>) -> IgnoreRules {
        let matchers = gitignores
            .iter()
            .filter_map(|rel| {
                let file = root.join(rel);
                let dir = file.parent()?.to_path_buf();
                let mut b = GitignoreBuilder::new(&dir);
                b.add(&file);
                Some((dir, b.build().ok()?))
            })
            .collect();
        IgnoreRules {
            root: root.to_path_buf(),
            skip,
            matchers,
        }
    }

    /// The workspace-relative form of `path`, unless it is ignored.
    pub fn relevant(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        if rel.as_os_str().is_empty()
            || rel.components().any(|c| c.as_os_str() == ".git")
            || self.skip.iter().any(|s| path.starts_with(s))
        {
            return None;
        }
        let is_dir = path.is_dir();
        for (dir, matcher) in &self.matchers {
            if path.starts_with(dir)
                && matcher
                    .matched_path_or_any_parents(path, is_dir)
                    .is_ignore()
            {
                return None;
            }
        }
        Some(rel.to_string_lossy().into_owned())
    }
}

/// Watches `root` recursively and sends debounced batches to `tx`, mapped through `wrap`.
/// Falls back to polling (and says so in `polling`) when inotify cannot be used.
pub(crate) fn watch<M: Send + 'static>(
    root: &Path,
    rules: IgnoreRules,
    debounce: Duration,
    force_poll: bool,
    tx: Sender<M>,
    wrap: fn(WatchEvent) -> M,
) -> Result<FileWatcher, String> {
    let rules = std::sync::Arc::new(rules);
    let handler = {
        let rules = rules.clone();
        move |result: DebounceEventResult| {
            let event = match result {
                Ok(events) => {
                    let mut paths: Vec<String> = events
                        .iter()
                        .filter(|e| !matches!(e.kind, EventKind::Access(_)))
                        .flat_map(|e| e.paths.iter())
                        .filter_map(|p| rules.relevant(p))
                        .collect();
                    paths.sort();
                    paths.dedup();
                    if paths.is_empty() {
                        return;
                    }
                    WatchEvent::Changed(paths)
                }
                Err(errors) => WatchEvent::Error(
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            let _ = tx.send(wrap(event));
        }
    };
    let reason = if force_poll {
        "--poll".to_string()
    } else {
        match new_debouncer(debounce, None, handler.clone()) {
            Ok(mut d) => match d.watch(root, RecursiveMode::Recursive) {
                Ok(()) => {
                    return Ok(FileWatcher {
                        _debouncer: Box::new(d),
                        polling: None,
                    });
                }
                Err(e) => format!("inotify could not watch the workspace: {e}"),
            },
            Err(e) => format!("inotify is unavailable: {e}"),
        }
    };
    let config =
        notify::Config::default().with_poll_interval(debounce.max(Duration::from_millis(100)));
    let mut d = new_debouncer_opt::<_, notify::PollWatcher, notify_debouncer_full::NoCache>(
        debounce,
        None,
        handler,
        notify_debouncer_full::NoCache,
        config,
    )
    .map_err(|e| format!("cannot start a polling watcher: {e}"))?;
    d.watch(root, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch `{}`: {e}", root.display()))?;
    Ok(FileWatcher {
        _debouncer: Box::new(d),
        polling: Some(reason),
    })
}
