//! Remote execution through the real binary against buildbox-casd started with
//! `--buildbox-run` (`CAIRN_TEST_GRPC_CACHE`): a REAPI server that runs each action in a
//! bubblewrap sandbox whose `/` is the action's input root.

use crate::util::Workspace;

/// The server, or `None` (skipped) when the test scripts did not start it.
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn executor() -> Option<String> {
    let value = std::env::var("CAIRN_TEST_GRPC_CACHE")
        .ok()
        .filter(|v| !v.is_empty());
    if value.is_none() && std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_some() {
        panic!("CAIRN_TEST_REQUIRE_SERVERS is set but CAIRN_TEST_GRPC_CACHE is not");
    }
    value
}

/// A workspace whose every key is this test's (the server is shared with tests running at
/// once): an unused tool-path entry named after its directory changes every `PATH`.
fn salted(ws: Workspace, extra: &str) -> Workspace {
    let salt = ws
        .root()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    ws.write(
        "cairn.toml",
        &format!(
            "[build]\ntool_path = [\"/nonexistent/{salt}\", \"/usr/local/bin\", \"/usr/bin\", \"/bin\"]\n{extra}"
        ),
    );
    ws
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
    let run = ws.json_run(&["test", &remote, "--remote-exec=strict"], 1);
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
