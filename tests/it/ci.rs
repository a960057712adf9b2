//! cairn in CI (issue 16): cache archives between stores, through the real binary.

use crate::util::Workspace;

/// Every file under the mimic outputs, with its bytes.
fn outputs(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in walkdir::WalkDir::new(ws.root()).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(ws.root())
            .unwrap()
            .display()
            .to_string();
        if entry.file_type().is_file() && rel.contains("/dist/") {
            all.push((rel, std::fs::read(entry.path()).unwrap()));
        }
    }
    all
}

fn blob_count(ws: &Workspace) -> u64 {
    let run = ws.cairn(&["--json", "store", "stats"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json()["blobs"].as_u64().unwrap()
}

#[test]
fn an_exported_archive_gives_a_fresh_store_every_result() {
    let ci = Workspace::mimic();
    ci.json_run(&["test"], 0);
    let archive = ci.root().join("../ci-cache.tar.zst");
    let run = ci.cairn(&["cache", "export", archive.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("exported 13 action results"),
        "{}",
        run.stderr
    );
    let first = std::fs::read(&archive).unwrap();
    let again = ci.cairn(&["cache", "export", archive.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        first,
        "deterministic bytes"
    );

    // Another machine: a fresh checkout, an empty store, the archive.
    let fresh = Workspace::mimic();
    let run = fresh.cairn(&["cache", "import", archive.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("imported 13 action results"),
        "{}",
        run.stderr
    );
    let test = fresh.json_run(&["test"], 0);
    assert_eq!(test.count("executed"), 0, "{}", test.stderr);
    assert_eq!(test.count("cached"), 13, "{}", test.stderr);
    assert_eq!(outputs(&fresh), outputs(&ci));
    assert!(!outputs(&ci).is_empty());

    // An edited target is not in a new export until it is built: said, not silent.
    ci.edit(
        "apps/web/src/components/button.js",
        "button.textContent = label;",
        "button.textContent = label.trim();",
    );
    let partial = ci.cairn(&[
        "cache",
        "export",
        archive.to_str().unwrap(),
        "//apps/web/...",
    ]);
    assert_eq!(partial.code, 0, "{}", partial.stderr);
    assert!(
        partial.stderr.contains("have no result in the store")
            && partial.stderr.contains("//apps/web:build"),
        "{}",
        partial.stderr
    );
}

#[test]
fn a_malformed_archive_is_refused_whole_and_the_store_is_unchanged() {
    let ws = Workspace::mimic();
    ws.json_run(&["build"], 0);
    let blobs = blob_count(&ws);
    let bad = ws.root().join("../bad.tar.zst");
    // A valid start (the version entry, a real blob), then a link to /etc/passwd.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    {
        let mut builder = tar::Builder::new(&mut encoder);
        let mut header = tar::Header::new_gnu();
        let version = b"cairn cache archive 1\n";
        header.set_size(version.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "cairn-cache-archive", &version[..])
            .unwrap();
        let bytes = b"new bytes the store lacks";
        let name = format!("blobs/{}-{}", blake3::hash(bytes).to_hex(), bytes.len());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, &name, &bytes[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "blobs/escape", "/etc/passwd")
            .unwrap();
        builder.finish().unwrap();
    }
    std::fs::write(&bad, encoder.finish().unwrap()).unwrap();
    let run = ws.cairn(&["cache", "import", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("entry `blobs/escape`: a symbolic link")
            && run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert_eq!(blob_count(&ws), blobs, "not even the valid blob before it");
    let verify = ws.cairn(&["store", "verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    // Not an archive at all.
    std::fs::write(&bad, "hello").unwrap();
    let run = ws.cairn(&["cache", "import", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not a"), "{}", run.stderr);
}

#[test]
fn a_build_job_pushes_and_a_test_job_pulls_then_runs_only_tests() {
    let Some(url) = crate::util::test_server("CAIRN_TEST_GRPC_CACHE") else {
        return;
    };
    let remote = format!("--remote={url}");
    // The build job: builds (not uploading: no `CI` here), then pushes what it built.
    let build_job = crate::util::salted(Workspace::mimic(), "");
    let built = build_job.json_run(&["build", "--no-remote"], 0);
    assert_eq!(built.count("executed"), 6, "{}", built.stderr);
    let build_actions = built.statuses();
    let push = build_job.cairn(&["cache", "push", &remote]);
    assert_eq!(push.code, 0, "{}", push.stderr);
    assert!(
        push.stderr.contains("pushed 6 action results"),
        "{}",
        push.stderr
    );
    assert!(
        push.stderr
            .contains("7 target(s) have no result in the store"),
        "the tests never ran: {}",
        push.stderr
    );

    // The test job, on another machine: pulls, then tests without the remote.
    let test_job = Workspace::mimic();
    test_job.write("cairn.toml", &build_job.read("cairn.toml"));
    let pull = test_job.cairn(&["cache", "pull", &remote]);
    // The tests' results are not there: said, and they will run (not a failure).
    assert_eq!(pull.code, 0, "{}", pull.stderr);
    assert!(
        pull.stderr
            .contains("7 target(s) have no result here or on the remote"),
        "{}",
        pull.stderr
    );
    assert!(pull.stderr.contains("6 of 13 targets"), "{}", pull.stderr);
    assert!(
        !test_job.path("apps/web/dist").exists(),
        "pull writes nothing in the workspace"
    );
    let test = test_job.json_run(&["test", "--no-remote"], 0);
    let statuses = test.statuses();
    let executed: Vec<&String> = statuses
        .iter()
        .filter(|(_, s)| *s == "executed")
        .map(|(l, _)| l)
        .collect();
    assert_eq!(executed.len(), 7, "{}", test.stderr);
    assert!(
        executed.iter().all(|l| !build_actions.contains_key(*l)),
        "no build action ran: {executed:?}"
    );
    // Now everything is on the remote once pushed again; a third machine pulls it all.
    let push = test_job.cairn(&["cache", "push", &remote]);
    assert!(
        push.stderr.contains("pushed 13 action results"),
        "{}",
        push.stderr
    );
    let third = Workspace::mimic();
    third.write("cairn.toml", &build_job.read("cairn.toml"));
    let pull = third.cairn(&["cache", "pull", &remote]);
    assert_eq!(pull.code, 0, "{}", pull.stderr);
    assert!(pull.stderr.contains("13 of 13 targets"), "{}", pull.stderr);
    let test = third.json_run(&["test", "--no-remote"], 0);
    assert_eq!(test.count("cached"), 13, "{}", test.stderr);
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn affected_prints_a_github_matrix_and_a_shallow_clone_names_the_fetch_it_needs() {
    let origin = Workspace::mimic();
    git(origin.root(), &["init", "-q"]);
    git(origin.root(), &["add", "-A"]);
    git(origin.root(), &["commit", "-qm", "base"]);
    origin.edit(
        "apps/web/src/app.js",
        "page.className = \"page\";",
        "page.className = \"page wide\";",
    );
    git(origin.root(), &["commit", "-qam", "web only"]);

    let run = origin.cairn(&["affected", "--since", "HEAD~1", "--format", "github-matrix"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let matrix: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        matrix,
        serde_json::json!({"include": [
            {"target": "//apps/web:build", "package": "apps/web"},
            {"target": "//apps/web:size_budget", "package": "apps/web"},
            {"target": "//apps/web:unit", "package": "apps/web"},
        ]})
    );
    let run = origin.cairn(&[
        "affected",
        "--since",
        "HEAD~1",
        "--format",
        "github-matrix-packages",
    ]);
    let matrix: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        matrix,
        serde_json::json!({"include": [
            {"package": "apps/web", "targets": "//apps/web:build //apps/web:size_budget //apps/web:unit"},
        ]})
    );
    let run = origin.cairn(&["affected", "--since", "HEAD", "--format", "github-matrix"]);
    assert_eq!(run.stdout.trim(), r#"{"include":[]}"#);

    // A CI checkout with fetch-depth 1: the parent commit is not there.
    let clone_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", origin.root().display());
    git(
        clone_dir.path(),
        &["clone", "-q", "--depth", "1", &url, "ws"],
    );
    let clone = clone_dir.path().join("ws");
    let run = origin.cairn_in(&clone, &["affected", "--since", "HEAD~1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("shallow clone") && run.stderr.contains("git fetch --deepen"),
        "{}",
        run.stderr
    );
    git(&clone, &["fetch", "-q", "--deepen=1"]);
    let run = origin.cairn_in(&clone, &["affected", "--since", "HEAD~1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "//apps/web:build\n//apps/web:size_budget\n//apps/web:unit\n"
    );
    // Not shallow, and no such revision: said as such.
    let run = origin.cairn(&["affected", "--since", "no-such-ref"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`no-such-ref` is not a commit"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_step_summary_of_a_failing_run_names_the_target_and_its_output_tail() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        r#"
action(name = "gen", outs = ["gen.txt"], cmd = "sleep 0.2; echo ok > $OUT")
test(name = "green", deps = [":gen"], cmd = "test -s $DEPS")
test(name = "red", cmd = "echo 'expected 4, got 5' >&2; echo 'AssertionError: tokens differ'; exit 1")
"#,
    );
    let summary = ws.root().join("../summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    // GitHub Actions sets GITHUB_STEP_SUMMARY; the summary is appended to what is there.
    let junit = ws.path("junit.xml");
    let run = ws.cairn_with(
        ws.root(),
        &["test", "--keep-going", "--junit", junit.to_str().unwrap()],
        &[("GITHUB_STEP_SUMMARY", summary.to_str().unwrap())],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("earlier step\n### ❌ `cairn test`: 1 of 3 targets failed"),
        "{md}"
    );
    assert!(
        md.contains("<code>//:red</code>: exited with code 1"),
        "{md}"
    );
    assert!(
        md.contains("AssertionError: tokens differ") && md.contains("expected 4, got 5"),
        "{md}"
    );
    assert!(
        md.contains("| `//:gen` | executed |"),
        "slowest actions: {md}"
    );
    assert!(md.contains("| 2 | 0 | 1 | 0 | 0 % |"), "{md}");
    // The JUnit report: name = label, classname = package, the message the last line.
    let xml = ws.read("junit.xml");
    assert!(
        xml.contains(r#"<testcase name="//:red" classname="//" time=""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="exited with code 1: AssertionError: tokens differ">"#)
            || xml.contains(r#"<failure message="exited with code 1: expected 4, got 5">"#),
        "{xml}"
    );

    // With --summary-md, a passing cached run: the hit rate and no failure section.
    let own = ws.root().join("../own.md");
    ws.write(
        "BUILD.star",
        "action(name = \"gen\", outs = [\"gen.txt\"], cmd = \"sleep 0.2; echo ok > $OUT\")\n",
    );
    let run = ws.cairn(&["build", "--summary-md", own.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let md = std::fs::read_to_string(&own).unwrap();
    assert!(
        md.contains("### ✅ `cairn build`: 1 targets passed"),
        "{md}"
    );
    assert!(md.contains("| 0 | 1 | 0 | 0 | 100 % |"), "{md}");
    assert!(!md.contains("Failed"), "{md}");
}

#[test]
fn a_signing_key_from_the_environment_is_needed_only_to_upload() {
    let ws = Workspace::new();
    let shared = tempfile::tempdir().unwrap();
    ws.write(
        "cairn.toml",
        &format!(
            "[remote]\nurl = \"file://{}\"\nsigning_key = \"env:CAIRN_TEST_UNSET_KEY\"\n",
            shared.path().display()
        ),
    );
    ws.write(
        "BUILD.star",
        "action(name = \"a\", outs = [\"a.txt\"], cmd = \"echo a > $OUT\")\n",
    );
    // A laptop or a pull-request job: it reads the cache and needs no key.
    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.statuses()["//:a"], "executed");
    // A workflow that passes the secret only on main sets it empty elsewhere: the same.
    ws.edit("BUILD.star", "echo a", "echo c");
    let run = ws.cairn_with(ws.root(), &["build"], &[("CAIRN_TEST_UNSET_KEY", "")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Uploading without the key would spread unsigned results: refused.
    ws.edit("BUILD.star", "echo c", "echo b");
    for args in [&["build", "--remote-upload"][..], &["cache", "push"][..]] {
        let run = ws.cairn(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("CAIRN_TEST_UNSET_KEY") || run.stderr.contains("unsigned"),
            "{}",
            run.stderr
        );
    }
}

/// The targets a `cairn test --json` run executed, sorted.
fn executed(run: &crate::util::Run) -> Vec<String> {
    let mut labels = run.with_status("executed");
    labels.sort();
    labels
}

#[test]
fn agent_pipeline_runs_exactly_what_its_readme_says_each_edit_runs() {
    let ws = Workspace::example("agent-pipeline");
    let cold = ws.json_run(&["test"], 0);
    assert_eq!(cold.count("executed"), 6, "{}", cold.stderr);
    assert!(
        ws.read("deploy/dist/release.json")
            .contains("\"artifact\": \"agent.pyz\"")
    );
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0, "no-op");

    ws.write("docs/architecture.md", "# Architecture\n\nRewritten.\n");
    assert_eq!(
        executed(&ws.json_run(&["test"], 0)),
        Vec::<String>::new(),
        "docs only"
    );

    ws.edit("tools/lint.py", "MAX_LINE = 100", "MAX_LINE = 99");
    assert_eq!(executed(&ws.json_run(&["test"], 0)), ["//agent:quality"]);

    ws.edit(
        "agent/tests/integration_test.py",
        "4 requests",
        "four requests",
    );
    assert_eq!(
        executed(&ws.json_run(&["test"], 0)),
        ["//agent:integration", "//agent:quality"]
    );

    ws.edit(
        "agent/src/agent/planner.py",
        "An empty goal",
        "A blank goal",
    );
    assert_eq!(executed(&ws.json_run(&["test"], 0)).len(), 6);

    ws.edit(
        "agent/src/agent/planner.py",
        "    goal = \" \".join(goal.split())",
        "    goal = \" \".join(eval(repr(goal)).split())",
    );
    let run = ws.json_run(&["test", "--keep-going"], 1);
    assert_eq!(
        run.statuses()["//agent:security"],
        "failed",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("src/agent/planner.py:13: eval/exec of dynamic code"),
        "{}",
        run.stderr
    );
}

#[test]
fn omnihub_gates_run_in_stages_and_deploy_runs_only_after_they_pass() {
    let ws = Workspace::example("omnihub");
    let cold = ws.json_run(&["test"], 0);
    assert_eq!(cold.count("executed"), 7, "{}", cold.stderr);
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0, "no-op");
    ws.write("docs/runbook.md", "# Runbook\n\nCall someone.\n");
    assert_eq!(executed(&ws.json_run(&["test"], 0)), Vec::<String>::new());

    ws.edit(
        "hub/config.json",
        "\"to\": [\"chat\"]}",
        "\"to\": [\"chat\", \"email\"]}",
    );
    assert_eq!(
        executed(&ws.json_run(&["test"], 0)),
        [
            "//deploy:staging",
            "//hub:build",
            "//hub:config_check",
            "//hub:smoke"
        ]
    );

    // The deploy step runs when every gate passed.
    let staging = ws.path("deploy/dist/staging.txt");
    std::fs::remove_file(&staging).unwrap();
    let run = ws.cairn(&["run", "//deploy:staging"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("to staging"), "{}", run.stdout);
    assert!(staging.exists());

    // An untested function: the coverage gate fails, later stages are skipped, no deploy.
    let router = ws.read("hub/src/hub/router.py");
    ws.write(
        "hub/src/hub/router.py",
        &format!("{router}\n\ndef unused(x):\n    if x:\n        return 1\n    return 2\n"),
    );
    std::fs::remove_file(&staging).unwrap();
    let run = ws.cairn(&["run", "//deploy:staging"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("FAILED //hub:coverage"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("skipped //hub:smoke"), "{}", run.stderr);
    assert!(!run.stdout.contains("deploying"), "{}", run.stdout);
    assert!(!staging.exists(), "no deploy after a failed gate");
}

#[test]
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn phantom_power_installs_once_and_each_edit_runs_only_its_part() {
    let ws = Workspace::example("phantom-power");
    let cold = ws.cairn(&["test", "--json"]);
    let install_failed = cold.code != 0
        && (cold.stderr.contains("//frontend:deps") || cold.stderr.contains("//:pydeps"))
        && !cold.stderr.contains("actual:");
    if install_failed {
        assert!(
            std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_none(),
            "npm or pip could not install:\n{}",
            cold.stderr
        );
        return;
    }
    assert_eq!(cold.code, 0, "{}", cold.stderr);
    assert_eq!(cold.count("executed"), 14, "{}", cold.stderr);
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0, "no-op");

    ws.write("docs/index.md", "# Phantom Power\n\nNew words.\n");
    assert_eq!(executed(&ws.json_run(&["test"], 0)), Vec::<String>::new());

    ws.edit(
        "frontend/src/levels.ts",
        "// Meter levels",
        "// Mixer meter levels",
    );
    assert_eq!(
        executed(&ws.json_run(&["test"], 0)),
        [
            "//frontend:build",
            "//frontend:lint",
            "//frontend:typecheck",
            "//frontend:unit"
        ]
    );

    ws.edit(
        "backend/src/backend/presets.py",
        "stored per user",
        "kept per user",
    );
    assert_eq!(
        executed(&ws.json_run(&["test"], 0)),
        [
            "//backend:coverage",
            "//backend:lint",
            "//backend:tests",
            "//backend:typecheck"
        ]
    );

    let presets = ws.read("backend/src/backend/presets.py");
    ws.write(
        "backend/src/backend/presets.py",
        &format!("{presets}\n\ndef export(store):\n    out = []\n    for key in sorted(store._presets):\n        out.append(key)\n    return out\n"),
    );
    let run = ws.json_run(&["test", "--keep-going"], 1);
    assert_eq!(
        run.statuses()["//backend:coverage"],
        "failed",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("fail-under=90") || run.stderr.contains("less than fail-under"),
        "{}",
        run.stderr
    );
    assert_eq!(run.statuses()["//backend:tests"], "executed");
    // mypy --strict: the new function has no annotations.
    assert_eq!(
        run.statuses()["//backend:typecheck"],
        "failed",
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Function is missing a type annotation"),
        "{}",
        run.stderr
    );
}

#[test]
fn coverage_gate_reads_cobertura_coverage_py_json_and_lcov_reports() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        r#"
action(name = "xml", outs = ["coverage.xml"],
       cmd = "printf '<?xml version=\"1.0\"?>\\n<coverage line-rate=\"0.875\" branch-rate=\"0\">\\n</coverage>\\n' > $OUT")
action(name = "json", outs = ["coverage.json"],
       cmd = "printf '{\"meta\": {}, \"totals\": {\"percent_covered\": 72.5}}' > $OUT")
action(name = "lcov", outs = ["lcov.info"],
       cmd = "printf 'SF:a.js\\nLF:10\\nLH:9\\nend_of_record\\nSF:b.js\\nLF:10\\nLH:10\\nend_of_record\\n' > $OUT")
coverage_gate(name = "xml_gate", report = "coverage.xml", min = 85, deps = [":xml"])
coverage_gate(name = "json_gate", report = "coverage.json", min = 80, deps = [":json"])
coverage_gate(name = "lcov_gate", report = "lcov.info", min = 95, deps = [":lcov"])
"#,
    );
    let run = ws.json_run(&["test", "--keep-going"], 1);
    let statuses = run.statuses();
    assert_eq!(statuses["//:xml_gate"], "executed", "{}", run.stderr);
    assert_eq!(statuses["//:lcov_gate"], "executed", "{}", run.stderr);
    assert_eq!(statuses["//:json_gate"], "failed", "{}", run.stderr);
    assert!(
        run.stderr
            .contains("coverage 72.5% is below the minimum of 80%"),
        "{}",
        run.stderr
    );
    // Cached until the report changes.
    let again = ws.json_run(&["test", "--keep-going"], 1);
    assert_eq!(again.statuses()["//:xml_gate"], "cached");
}
