//! Watch mode (issue 4): the real `cairn watch --json` on a copy of examples/mimic, with files
//! edited from the test. Waits on output lines with timeouts; never sleeps to synchronise
//! except to prove idleness.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::util::Workspace;

struct Watching {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Watching {
    fn start(ws: &Workspace, args: &[&str]) -> Watching {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("-C")
            .arg(ws.root())
            .args(["watch", "--json"])
            .args(args)
            .env("CAIRN_STORE", ws.store())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Watching { child, lines: rx }
    }

    /// The next cycle's JSON line.
    fn next(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a watch cycle within 30 s")
    }

    /// Asserts that no cycle happens for a while.
    fn idle(&self, secs: u64) {
        if let Ok(v) = self.lines.recv_timeout(Duration::from_secs(secs)) {
            panic!("unexpected cycle: {v}");
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Waits (up to 30 s) until some process has `arg` on its command line.
fn wait_for_process(arg: &str) {
    for _ in 0..300 {
        let found = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        });
        if found {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no process with argument {arg} appeared");
}

fn executed(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "executed")
        .map(|t| t["label"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn watch_rebuilds_exactly_what_edits_affect() {
    let ws = Workspace::mimic();
    let w = Watching::start(&ws, &["--test"]);
    let initial = w.next();
    assert_eq!(initial["counts"]["executed"], 13, "{initial}");
    assert_eq!(initial["changed"], serde_json::json!([]));

    // 1. A web source: one cycle, only web targets.
    ws.edit(
        "apps/web/src/components/card.js",
        "card.className = \"card\";",
        "card.className = \"card wide\";",
    );
    let v = w.next();
    assert_eq!(
        v["changed"],
        serde_json::json!(["apps/web/src/components/card.js"])
    );
    assert_eq!(
        executed(&v),
        [
            "//apps/web:build",
            "//apps/web:size_budget",
            "//apps/web:unit"
        ]
    );

    // 3. Atomic save (write a temp file, rename over): one correct cycle. Touch: nothing.
    let tmp = ws.path("apps/web/src/.app.js.swp");
    std::fs::write(
        &tmp,
        ws.read("apps/web/src/app.js")
            .replace("\"page\"", "\"page main\""),
    )
    .unwrap();
    std::fs::rename(&tmp, ws.path("apps/web/src/app.js")).unwrap();
    let v = w.next();
    assert_eq!(
        executed(&v),
        [
            "//apps/web:build",
            "//apps/web:size_budget",
            "//apps/web:unit"
        ]
    );
    assert!(ws.read("apps/web/dist/app.js").contains("page main"));
    let f = std::fs::File::options()
        .write(true)
        .open(ws.path("apps/web/src/app.js"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    drop(f);
    // 4. Neither that touch nor the outputs the cycles wrote start another cycle.
    w.idle(2);

    // 2. A token value: the transforms and every app.
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "#12b76a",
        "#12b76b",
    );
    let v = w.next();
    let ran = executed(&v);
    for t in [
        "//packages/design-tokens:tokens_web",
        "//apps/web:build",
        "//apps/mobile:unit",
        "//apps/desktop:size_budget",
    ] {
        assert!(ran.contains(&t.to_string()), "{t} not in {ran:?}");
    }

    // 7. A new file matching an existing glob.
    ws.write(
        "apps/mobile/src/screens/Settings.js",
        "export function Settings() { return null; }\n",
    );
    let v = w.next();
    assert!(
        executed(&v).contains(&"//apps/mobile:build".to_string()),
        "{v}"
    );
    assert!(
        ws.read("apps/mobile/dist/index.bundle.js")
            .contains("function Settings")
    );
}

#[test]
fn a_broken_build_file_is_reported_and_the_watcher_survives() {
    let ws = Workspace::mimic();
    let w = Watching::start(&ws, &[]);
    w.next();
    ws.edit(
        "apps/desktop/BUILD.star",
        "max_bundle_bytes = 6000,",
        "max_bundle_bytes = 6000 +,",
    );
    let v = w.next();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("apps/desktop/BUILD.star:8:30"),
        "{v}"
    );
    ws.edit(
        "apps/desktop/BUILD.star",
        "max_bundle_bytes = 6000 +,",
        "max_bundle_bytes = 7000,",
    );
    let v = w.next();
    assert!(v["counts"].is_object(), "{v}");
    ws.edit("apps/desktop/src/main.js", "String(value)", "`${value}`");
    let v = w.next();
    assert_eq!(executed(&v), ["//apps/desktop:build"]);
}

#[test]
fn a_newer_edit_cancels_a_running_action() {
    let ws = Workspace::new();
    ws.write("in.txt", "fast\n");
    ws.write(
        "BUILD.star",
        "action(name = \"slow\", srcs = [\"in.txt\"], cmd = 'if grep -q slow in.txt; then sleep 61.5; fi; cp in.txt $OUT', outs = [\"out.txt\"])\n",
    );
    let w = Watching::start(&ws, &[]);
    assert_eq!(w.next()["counts"]["executed"], 1);
    ws.write("in.txt", "slow\n");
    // Wait until the slow cycle's action runs, then edit again.
    wait_for_process("61.5");
    ws.write("in.txt", "fast again\n");
    let cancelled = w.next();
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    assert_eq!(cancelled["counts"]["executed"], 0);
    let v = w.next();
    assert_eq!(executed(&v), ["//:slow"]);
    assert_eq!(ws.read("out.txt"), "fast again\n");
}
