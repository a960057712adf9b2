//! Limits on evaluating BUILD.star files. Starlark offers no way to interrupt an evaluation,
//! so a thread watches the one under way (`load::eval::evaluating`) and, past its time or
//! memory limit, says which file it was and ends the process (exit 2: a bad BUILD file).
//! Nothing is left half-written: SQLite rolls back what the process did not commit.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::load::eval::evaluating;
use crate::report;

/// Runs while it lives; dropping it stops the thread.
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How often the evaluation is looked at.
const TICK: Duration = Duration::from_millis(50);

impl Watchdog {
    /// Watches evaluations: at most `time` each, at most `memory` bytes of this process's
    /// resident memory while one runs. `error` is the styled `error:` prefix.
    pub(crate) fn start(time: Duration, memory: u64, error: String) -> Watchdog {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("evaluation watchdog".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    let Some((file, elapsed)) = evaluating() else {
                        continue;
                    };
                    let problem = if elapsed > time {
                        format!(
                            "evaluation stopped after {} (an endless loop?); `[build] eval_time_limit` in cairn.toml raises the limit",
                            crate::exec::local::format_ms(time.as_millis() as u64)
                        )
                    } else if let Some(rss) = resident_bytes().filter(|r| *r > memory) {
                        format!(
                            "evaluation stopped holding {} MiB of memory, over the limit of {} MiB (a runaway comprehension?); `[build] eval_memory_limit` in cairn.toml raises the limit",
                            rss >> 20,
                            memory >> 20
                        )
                    } else {
                        continue;
                    };
                    report::print_stderr(&format!("{error} {file}: {problem}"));
                    std::process::exit(2);
                }
            })
            .ok();
        Watchdog {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This process's resident memory, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()?;
    Some(pages * page as u64)
}
