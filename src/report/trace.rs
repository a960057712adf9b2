//! `--trace FILE`: Chrome trace-event JSON (opens in Perfetto or chrome://tracing), one track
//! per worker thread, with spans for loading, analysis, cache lookups and execution.

use std::cell::Cell;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};

thread_local! {
    /// The track of the current thread: 0 for the main thread, 1.. for workers.
    static TRACK: Cell<usize> = const { Cell::new(0) };
}

/// The process's tracer, installed by `--trace`.
static GLOBAL: OnceLock<Tracer> = OnceLock::new();

/// Records a span on the installed tracer (nothing without `--trace`): for phases far from
/// the command code, such as loading and analysis.
pub(crate) fn span(name: &str, began: Instant) {
    if let Some(t) = GLOBAL.get() {
        t.span(name, "phase", began, Value::Null);
    }
}

/// Collects spans; cheap enough to leave on for a whole build.
pub(crate) struct Tracer {
    start: Instant,
    events: Mutex<Vec<Value>>,
}

impl Tracer {
    pub fn new() -> Tracer {
        Tracer {
            start: Instant::now(),
            events: Mutex::default(),
        }
    }

    /// Installs the process's tracer (its clock starts now) and returns it.
    pub fn install() -> &'static Tracer {
        GLOBAL.get_or_init(Tracer::new)
    }

    /// Names the calling thread's track (call once at worker start).
    pub fn set_track(track: usize) {
        TRACK.with(|t| t.set(track));
    }

    /// Records a span that began at `began` and ends now.
    pub fn span(&self, name: &str, category: &str, began: Instant, args: Value) {
        let ts = began.saturating_duration_since(self.start).as_micros() as u64;
        let dur = began.elapsed().as_micros() as u64;
        let tid = TRACK.with(Cell::get);
        let event = json!({
            "name": name, "cat": category, "ph": "X", "ts": ts, "dur": dur.max(1),
            "pid": 1, "tid": tid, "args": args,
        });
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
    }

    /// Writes the trace file.
    pub fn write(&self, path: &Path, workers: usize) -> std::io::Result<()> {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for tid in 0..=workers {
            let name = if tid == 0 {
                "main".to_string()
            } else {
                format!("worker {tid}")
            };
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name},
            }));
        }
        let doc = json!({ "traceEvents": events, "displayTimeUnit": "ms" });
        std::fs::write(path, serde_json::to_vec(&doc).expect("a trace serializes"))
    }
}
