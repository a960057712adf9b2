//! Graph, globs, patterns, JSON summary shape, early cutoff and store stats.

use crate::util::Workspace;

#[test]
fn json_summary_has_exactly_the_documented_shape() {
    let ws = Workspace::new();
    ws.write("BUILD.star", "action(name = \"a\", cmd = \"echo > $OUT\", outs = [\"o\"])\ntest(name = \"t\", cmd = \"true\")\n");
    let json = ws.json_run(&["test"], 0).json();
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["counts", "targets", "wall_ms"]);
    let mut counts: Vec<&String> = json["counts"].as_object().unwrap().keys().collect();
    counts.sort();
    assert_eq!(
        counts,
        ["cached", "executed", "failed", "remote_cached", "skipped"]
    );
    for t in json["targets"].as_array().unwrap() {
        let mut keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["action_key", "duration_ms", "kind", "label", "status"]
        );
        assert!(t["action_key"].as_str().unwrap().starts_with("blake3:"));
    }
    let kinds: Vec<&str> = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"action") && kinds.contains(&"test"));
}

#[test]
fn glob_never_picks_up_outputs() {
    let ws = Workspace::new();
    ws.write("pkg/a.txt", "a");
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"cat\", srcs = glob([\"**\"], exclude = [\"BUILD.star\"]), cmd = \"cat $SRCS > $OUT\", outs = [\"all.txt\"])\n",
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    // all.txt now exists in the package; it must not become an input of its own action.
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
    ws.write("pkg/b.txt", "b");
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("pkg/all.txt"), "ab");
}

#[test]
fn explicit_output_in_srcs_is_an_error_pointing_at_deps() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"gen\", cmd = \"echo > $OUT\", outs = [\"gen.txt\"])\naction(name = \"use\", srcs = [\"gen.txt\"], cmd = \"cp $SRCS $OUT\", outs = [\"u\"])\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("it is an output of `//:gen`; list `//:gen` in `deps` instead"),
        "{}",
        run.stderr
    );
}

#[test]
fn gitignored_files_are_not_globbed_but_explicit_srcs_are_used() {
    let ws = Workspace::new();
    ws.write(".gitignore", "*.log\n");
    ws.write("x.log", "log");
    ws.write("y.txt", "txt");
    ws.write(
        "BUILD.star",
        "action(name = \"g\", srcs = glob([\"*.log\", \"*.txt\"]), cmd = \"echo $SRCS > $OUT\", outs = [\"g.out\"])\n\
         action(name = \"e\", srcs = [\"x.log\"], cmd = \"cat $SRCS > $OUT\", outs = [\"e.out\"])\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("g.out"), "y.txt\n");
    assert_eq!(ws.read("e.out"), "log");
}

#[test]
fn patterns_select_targets_and_their_dependencies() {
    let ws = Workspace::mimic();
    let run = ws.json_run(&["build", "//apps/web:build"], 0);
    let mut labels: Vec<String> = run.statuses().into_keys().collect();
    labels.sort();
    assert_eq!(
        labels,
        ["//apps/web:build", "//packages/design-tokens:tokens_web"]
    );
    // Relative pattern from inside a package directory.
    let run = ws.cairn_in(&ws.path("apps/mobile"), &["build", ":build", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.statuses().contains_key("//apps/mobile:build"));
    // `build` does not run tests.
    let run = ws.json_run(&["build", "//apps/..."], 0);
    assert!(
        run.statuses()
            .keys()
            .all(|l| l.ends_with(":build") || l.contains("tokens_"))
    );
}

#[test]
fn graph_outputs_dot_and_json() {
    let ws = Workspace::mimic();
    let dot = ws.cairn(&["graph", "//apps/web:build"]);
    assert_eq!(dot.code, 0, "{}", dot.stderr);
    assert!(dot.stdout.starts_with("digraph cairn {"));
    assert!(
        dot.stdout
            .contains("\"//apps/web:build\" -> \"//packages/design-tokens:tokens_web\";")
    );
    let json = ws.cairn(&["graph", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let web = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "//apps/web:build")
        .unwrap();
    assert_eq!(web["kind"], "action");
    assert!(
        web["deps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "//tools:bundler")
    );
}

#[test]
fn store_stats_reports_hits() {
    let ws = Workspace::mimic();
    ws.json_run(&["test"], 0);
    ws.json_run(&["test"], 0);
    let run = ws.cairn(&["store", "stats", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["recent_builds"], 2);
    assert_eq!(v["executed"], 13);
    assert_eq!(v["cached"], 13);
    assert!(v["blobs"].as_u64().unwrap() > 10);
    assert!(v["action_results"].as_u64().unwrap() >= 13);
}

#[test]
fn no_op_build_evaluates_no_build_file_and_edits_reevaluate_only_affected_packages() {
    let ws = Workspace::mimic();
    let loaded = |run: &crate::util::Run| -> String {
        run.stderr
            .lines()
            .find(|l| l.starts_with("loaded "))
            .unwrap_or_else(|| panic!("no `loaded` line in:\n{}", run.stderr))
            .to_string()
    };
    let first = ws.json_run(&["build", "-v"], 0);
    assert_eq!(
        loaded(&first),
        "loaded 6 packages: 6 evaluated, 0 from the analysis cache"
    );
    let noop = ws.json_run(&["build", "-v"], 0);
    assert_eq!(
        loaded(&noop),
        "loaded 6 packages: 0 evaluated, 6 from the analysis cache"
    );
    // The three apps load tools/defs.star; nothing else does.
    ws.edit(
        "tools/defs.star",
        "def platform_app(",
        "# comment\ndef platform_app(",
    );
    let run = ws.json_run(&["build", "-v"], 0);
    assert_eq!(
        loaded(&run),
        "loaded 6 packages: 3 evaluated, 3 from the analysis cache"
    );
    // A new file can change what a glob matches: its package is evaluated again.
    ws.write("apps/web/src/extra.js", "export const extra = 1;\n");
    let run = ws.json_run(&["build", "-v"], 0);
    assert_eq!(
        loaded(&run),
        "loaded 6 packages: 1 evaluated, 5 from the analysis cache"
    );
    assert_eq!(run.with_status("executed"), ["//apps/web:build"]);
}

#[test]
fn ctrl_c_stops_the_build_kills_its_actions_and_records_nothing() {
    let ws = Workspace::new();
    let sleep = format!("29.{:06}", std::process::id() % 1_000_000);
    ws.write(
        "BUILD.star",
        &format!(
            "action(name = \"quick\", outs = [\"quick.txt\"], cmd = \"echo q > $OUT\")\n\
             action(name = \"long\", deps = [\":quick\"], outs = [\"long.txt\"], cmd = \"sleep {sleep}; touch $OUT\")\n"
        ),
    );
    let child = ws.spawn(&["build"]);
    assert!(
        crate::util::wait_until(60, || crate::util::running(&format!("sleep {sleep}"))),
        "the action never started"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: stopping running actions"),
        "{stderr}"
    );
    assert!(
        !crate::util::running(&format!("sleep {sleep}")),
        "the action outlived the build: {stderr}"
    );
    assert!(!ws.path("long.txt").exists());
    // What finished is kept.
    let again = ws.json_run(&["build", ":quick"], 0);
    assert_eq!(again.statuses()["//:quick"], "cached", "{}", again.stderr);
}

#[test]
fn a_second_build_of_a_workspace_waits_for_the_first_naming_its_pid() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // The first build's action runs in the workspace (no sandbox) and waits for `go`, so the
    // second build surely starts while the first holds the workspace.
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"slow\", cmd = \"while [ ! -f go ]; do sleep 0.02; done; echo slow > $OUT\", outs = [\"slow.txt\"])\n\
         action(name = \"quick\", cmd = \"echo quick > $OUT\", outs = [\"quick.txt\"])\n",
    );
    let start = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("-C")
            .arg(ws.root())
            .args(args)
            .env("CAIRN_STORE", ws.store())
            .env("NO_COLOR", "1")
            .env_remove("CI")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start(&["build", "--sandbox", "none", "//:slow"]);
    // The first holds the lock once its action runs: its sandbox-less action has made no
    // output yet, so wait for the lock file to name it.
    let locks = ws.store().join("locks");
    let pid = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(&locks)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|held| held == pid))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first build never took the lock"
        );
        std::thread::yield_now();
    }
    let mut second = start(&["build", "//:quick"]);
    let mut lines = BufReader::new(second.stderr.take().unwrap()).lines();
    let said = lines.next().unwrap().unwrap();
    assert_eq!(
        said,
        format!("Waiting for cairn (pid {pid}), which is building this workspace...")
    );
    ws.write("go", "");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(second.wait().unwrap().success(), "{rest:?}");
    assert!(first.wait_with_output().unwrap().status.success());
    assert_eq!(ws.read("slow.txt"), "slow\n");
    assert_eq!(ws.read("quick.txt"), "quick\n");
}
