//! Remote execution through the real binary against buildbox-casd started with
//! `--buildbox-run` (`CAIRN_TEST_GRPC_CACHE`): a REAPI server that runs each action in a
//! bubblewrap sandbox whose `/` is the action's input root.

use crate::util::{Workspace, running, salted, test_server, wait_until};

/// buildbox-casd with `--buildbox-run`, or `None` (skipped).
fn executor() -> Option<String> {
    test_server("CAIRN_TEST_GRPC_CACHE")
}

fn outputs(ws: &Workspace) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dir in [
        "apps/web/dist",
        "apps/mobile/dist",
        "packages/design-tokens/dist",
    ] {
        for entry in walkdir::WalkDir::new(ws.path(dir)).sort_by_file_name() {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                let rel = entry.path().strip_prefix(ws.root()).unwrap();
                all.push((
                    rel.display().to_string(),
                    std::fs::read_to_string(entry.path()).unwrap(),
                ));
            }
        }
    }
    all
}

#[test]
fn mimic_runs_remotely_then_a_fresh_store_gets_every_result_from_the_remote() {
    let Some(url) = executor() else { return };
    let remote = format!("--remote={url}");
    let ws = salted(Workspace::mimic(), "");
    let run = ws.json_run(&["test", &remote, "--remote-exec"], 0);
    assert_eq!(run.count("remote_executed"), 13, "{}", run.stderr);
    assert_eq!(run.count("executed"), 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("13 executed (13 remotely)"),
        "{}",
        run.stderr
    );

    // The same workspace built here: byte-identical outputs.
    let here = salted(Workspace::mimic(), "");
    let local = here.json_run(&["test"], 0);
    assert_eq!(local.count("executed"), 13);
    assert_eq!(outputs(&ws), outputs(&here));
    assert!(!outputs(&ws).is_empty());

    // A second machine: every result is in the server's action cache.
    let second = salted(Workspace::mimic(), "");
    let config = ws.read("cairn.toml");
    second.write("cairn.toml", &config);
    let hit = second.json_run(&["test", &remote, "--remote-exec"], 0);
    assert_eq!(hit.count("remote_cached"), 13, "{}", hit.stderr);
    assert_eq!(hit.count("remote_executed") + hit.count("executed"), 0);
    assert_eq!(outputs(&second), outputs(&ws));
}

#[test]
fn an_action_tagged_local_runs_here_and_the_others_remotely() {
    let Some(url) = executor() else { return };
    let ws = salted(
        Workspace::new(),
        &format!("[remote]\nurl = \"{url}\"\nexecute = true\n"),
    );
    ws.write(
        "BUILD.star",
        r#"
action(name = "far", outs = ["far.txt"], cmd = "echo far > $OUT")
action(name = "near", deps = [":far"], outs = ["near.txt"], tags = ["local"],
       cmd = "(cat $DEPS; echo near) > $OUT")
"#,
    );
    let run = ws.json_run(&["build"], 0);
    let statuses = run.statuses();
    assert_eq!(statuses["//:far"], "remote_executed", "{}", run.stderr);
    assert_eq!(statuses["//:near"], "executed", "{}", run.stderr);
    assert_eq!(ws.read("near.txt"), "far\nnear\n");
}

#[test]
fn a_failing_remote_test_shows_its_output_and_a_timeout_is_named() {
    let Some(url) = executor() else { return };
    let ws = salted(Workspace::new(), "");
    ws.write(
        "BUILD.star",
        r#"
test(name = "red", cmd = "echo 'assertion failed: 2 + 2 == 5'; echo 'on stderr' >&2; exit 3")
test(name = "slow", cmd = "sleep 20", timeout = "1s")
"#,
    );
    let remote = format!("--remote={url}");
    // `--keep-going`: without it, the first failure cancels the other's operation.
    let run = ws.json_run(
        &["test", &remote, "--remote-exec=strict", "--keep-going"],
        1,
    );
    let statuses = run.statuses();
    assert_eq!(statuses["//:red"], "failed");
    assert_eq!(statuses["//:slow"], "failed");
    assert!(
        run.stderr
            .contains("exited with code 3 on the remote executor"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("assertion failed: 2 + 2 == 5") && run.stderr.contains("on stderr"),
        "the tail of its output is shown: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("timed out after 1.0s on the remote executor"),
        "{}",
        run.stderr
    );
    // A failure is never a hit, though the server caches it: it runs again.
    let again = ws.json_run(&["test", &remote, "--remote-exec=strict"], 1);
    assert!(
        again.stderr.contains("exited with code 3"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_server_that_is_down_is_one_warning_and_a_local_build() {
    let ws = salted(Workspace::mimic(), "");
    // Nothing listens on port 1.
    let run = ws.json_run(&["test", "--remote=grpc://127.0.0.1:1", "--remote-exec"], 0);
    assert_eq!(run.count("executed"), 13, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("warning").count(),
        1,
        "one warning for the server: {}",
        run.stderr
    );
}

#[test]
fn remote_execution_without_a_remote_is_a_usage_error() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", outs = [\"a\"], cmd = \"touch $OUT\")\n",
    );
    let run = ws.cairn(&["build", "--remote-exec"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("Remote execution needs a remote"),
        "{}",
        run.stderr
    );
    let run = ws.cairn(&["build", "--remote=http://127.0.0.1:1", "--remote-exec"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("needs a REAPI server"),
        "{}",
        run.stderr
    );
}

/// A `sleep` no other process on this machine runs: its arguments tell the test when the
/// action is running on the server, and whether it still is.
fn unique_sleep(seconds: u32) -> String {
    format!("{seconds}.{:06}", std::process::id() % 1_000_000)
}

#[test]
fn ctrl_c_cancels_the_operation_on_the_server() {
    let Some(url) = executor() else { return };
    let ws = salted(Workspace::new(), "");
    let sleep = unique_sleep(41);
    ws.write(
        "BUILD.star",
        &format!(
            "action(name = \"long\", outs = [\"long.txt\"], cmd = \"sleep {sleep}; touch $OUT\")\n"
        ),
    );
    let remote = format!("--remote={url}");
    let child = ws.spawn(&["build", &remote, "--remote-exec=strict"]);
    assert!(
        wait_until(60, || running(&format!("sleep {sleep}"))),
        "the action never started on the server"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        wait_until(10, || !running(&format!("sleep {sleep}"))),
        "the operation still runs on the server after Ctrl-C: {stderr}"
    );
    assert!(!ws.path("long.txt").exists());
    // Nothing was recorded: the next build runs it (here, briefly, with a shorter command).
    ws.write(
        "BUILD.star",
        "action(name = \"long\", outs = [\"long.txt\"], cmd = \"touch $OUT\")\n",
    );
    let run = ws.json_run(&["build", &remote, "--remote-exec=strict"], 0);
    assert_eq!(
        run.statuses()["//:long"],
        "remote_executed",
        "{}",
        run.stderr
    );
}

#[test]
fn a_failure_cancels_the_remote_operations_still_running() {
    let Some(url) = executor() else { return };
    let ws = salted(Workspace::new(), "");
    let sleep = unique_sleep(43);
    ws.write(
        "BUILD.star",
        &format!(
            "action(name = \"long\", outs = [\"long.txt\"], cmd = \"sleep {sleep}; touch $OUT\")\n\
             action(name = \"bad\", outs = [\"bad.txt\"], cmd = \"sleep 2; exit 1\")\n"
        ),
    );
    let remote = format!("--remote={url}");
    let began = std::time::Instant::now();
    let run = ws.json_run(&["build", &remote, "--remote-exec=strict", "-j", "2"], 1);
    assert!(
        began.elapsed().as_secs() < 30,
        "the build waited for the long action: {}",
        run.stderr
    );
    assert_eq!(run.statuses()["//:bad"], "failed", "{}", run.stderr);
    assert_ne!(
        run.statuses().get("//:long").map(String::as_str),
        Some("remote_executed"),
        "{}",
        run.stderr
    );
    assert!(
        wait_until(10, || !running(&format!("sleep {sleep}"))),
        "the operation still runs on the server: {}",
        run.stderr
    );
}

#[test]
fn a_server_killed_mid_build_is_one_warning_and_the_rest_runs_here() {
    let Some(url) = executor() else { return };
    let relay = crate::util::Relay::start(crate::util::host_port(&url));
    let through = crate::util::through(&url, &relay);
    let ws = salted(Workspace::new(), "");
    let sleep = unique_sleep(2);
    // A chain t1 → … → t6; the server goes away while t3 runs on it.
    let chain: String = (1..=6)
        .map(|i| {
            let dep = if i > 1 {
                format!("deps = [\":t{}\"], ", i - 1)
            } else {
                String::new()
            };
            let wait = if i == 3 { format!("sleep {sleep}; ") } else { String::new() };
            format!(
                "action(name = \"t{i}\", {dep}outs = [\"t{i}.txt\"], cmd = \"{wait}(cat $DEPS; echo {i}) > $OUT\")\n"
            )
        })
        .collect();
    ws.write("BUILD.star", &chain);
    let remote = format!("--remote={through}");
    let child = ws.spawn(&["build", ":t6", "--json", &remote, "--remote-exec"]);
    assert!(
        wait_until(60, || running(&format!("sleep {sleep}"))),
        "t3 never started on the server"
    );
    relay.kill();
    let out = child.wait_with_output().unwrap();
    let run = crate::util::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("warning").count(),
        1,
        "one warning for the server: {}",
        run.stderr
    );
    let statuses = run.statuses();
    for i in 1..=6 {
        let want = if i <= 2 {
            "remote_executed"
        } else {
            "executed"
        };
        assert_eq!(statuses[&format!("//:t{i}")], want, "{}", run.stderr);
    }
    let want: String = (1..=6).map(|i| format!("{i}\n")).collect();
    assert_eq!(ws.read("t6.txt"), want);
}

/// BuildGrid with Execution (`CAIRN_TEST_BUILDGRID_EXEC`): a queueing scheduler (operations
/// go QUEUED → EXECUTING → COMPLETED) whose worker polls for leases, and which refuses
/// platforms no worker offers.
fn buildgrid_executor() -> Option<String> {
    test_server("CAIRN_TEST_BUILDGRID_EXEC")
}

#[test]
fn buildgrid_runs_queued_actions_and_a_platform_it_lacks_runs_here() {
    let Some(url) = buildgrid_executor() else {
        return;
    };
    let ws = salted(Workspace::new(), "");
    ws.write(
        "BUILD.star",
        r#"
action(name = "gen", srcs = ["in.txt"], outs = ["gen.txt"], cmd = "tr a-z A-Z < $SRCS > $OUT")
test(name = "check", deps = [":gen"], cmd = "grep -q HELLO $DEPS")
action(name = "gpu", outs = ["gpu.txt"], cmd = "echo gpu > $OUT", platform = {"gpu": "a100"})
"#,
    );
    ws.write("in.txt", "hello\n");
    let remote = format!("--remote={url}");
    let run = ws.json_run(&["test", &remote, "--remote-exec"], 0);
    let statuses = run.statuses();
    assert_eq!(statuses["//:gen"], "remote_executed", "{}", run.stderr);
    assert_eq!(statuses["//:check"], "remote_executed", "{}", run.stderr);
    assert_eq!(ws.read("gen.txt"), "HELLO\n");
    // No worker offers `gpu`: BuildGrid refuses the action, which runs here, said once.
    assert_eq!(statuses["//:gpu"], "executed", "{}", run.stderr);
    assert_eq!(run.stderr.matches("warning").count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the remote executor refused `//:gpu`"),
        "{}",
        run.stderr
    );
    // strict: the refusal fails the action with the server's message.
    ws.write("in.txt", "hello again\n");
    ws.edit("BUILD.star", "echo gpu", "echo gpu again");
    let strict = ws.json_run(
        &["test", &remote, "--remote-exec=strict", "--keep-going"],
        1,
    );
    assert_eq!(strict.statuses()["//:gpu"], "failed", "{}", strict.stderr);
    assert!(
        strict
            .stderr
            .contains("could not run on the remote executor"),
        "{}",
        strict.stderr
    );
    assert_eq!(
        strict.statuses()["//:gen"],
        "remote_executed",
        "{}",
        strict.stderr
    );
}
