//! Execution: sandbox contents and environment, declared outputs, timeouts, flaky tests,
//! failure propagation and --keep-going.

use crate::util::{Workspace, no_digest};

#[test]
fn missing_declared_output_fails_naming_target_and_path() {
    let ws = Workspace::new();
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"a\", cmd = \"echo hi > other.txt\", outs = [\"wanted.txt\"])\n",
    );
    let run = ws.json_run(&["build"], 1);
    assert_eq!(run.statuses()["//pkg:a"], "failed");
    assert!(
        run.stderr
            .contains("ERROR //pkg:a: did not create declared output `pkg/wanted.txt`"),
        "{}",
        run.stderr
    );
}

#[test]
fn writing_outside_declared_outputs_fails() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"echo x > out; echo y > stray\", outs = [\"out\"])\n",
    );
    let run = ws.json_run(&["build"], 1);
    assert!(
        run.stderr
            .contains("wrote files outside its declared outputs: `stray`"),
        "{}",
        run.stderr
    );
    assert!(
        !ws.path("out").exists(),
        "a failed action's outputs are not materialized"
    );
}

#[test]
fn environment_is_cleared_and_fixed() {
    let ws = Workspace::new();
    ws.write("src/in.txt", "input\n");
    ws.write(
        "src/BUILD.star",
        "action(name = \"env\", srcs = [\"in.txt\"], env = {\"MODE\": \"prod\"}, outs = [\"env.txt\"],\n\
         cmd = 'echo \"TZ=$TZ LC_ALL=$LC_ALL SDE=$SOURCE_DATE_EPOCH MODE=$MODE SRCS=$SRCS OUT=$OUT ROOT=$ROOT USER=${USER:-unset}\" > $OUT; ls -A $HOME | wc -l >> $OUT')\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        ws.read("src/env.txt"),
        "TZ=UTC LC_ALL=C SDE=315532800 MODE=prod SRCS=in.txt OUT=env.txt ROOT=.. USER=unset\n0\n"
    );
}

#[test]
fn env_change_is_a_cache_miss() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", env = {\"V\": \"1\"}, cmd = 'echo $V > o', outs = [\"o\"])\n",
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
    ws.edit("BUILD.star", "\"1\"", "\"2\"");
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("o"), "2\n");
}

#[test]
fn timeout_kills_the_process_group() {
    let ws = Workspace::new();
    // The background sleep holds stdout open: only killing the whole group ends the action.
    ws.write(
        "BUILD.star",
        "test(name = \"slow\", timeout = \"1s\", cmd = \"sleep 60 & sleep 60\")\n",
    );
    let run = ws.json_run(&["test"], 1);
    assert_eq!(run.statuses()["//:slow"], "failed");
    assert!(
        run.stderr.contains("timed out after 1.0s"),
        "{}",
        run.stderr
    );
}

#[test]
fn flaky_test_is_retried_and_reported() {
    let ws = Workspace::new();
    let counter = ws.path("attempts");
    // The directory sandbox lets an absolute path through; the test uses that to fail exactly
    // once (the namespace sandbox would hide the counter).
    ws.write(
        "BUILD.star",
        &format!(
            "test(name = \"flaky\", flaky = 2, cmd = 'echo x >> {c}; test $(wc -l < {c}) -ge 2')\n\
             test(name = \"solid\", cmd = 'exit 1')\n",
            c = counter.display()
        ),
    );
    let run = ws.json_run(&["test", ":flaky", "--sandbox", "directory"], 0);
    let t = &run.json()["targets"][0];
    assert_eq!(t["status"], "executed");
    assert_eq!(t["attempts"], 2);
    assert!(
        run.stderr.contains("flaky: passed on attempt 2"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 flaky"), "{}", run.stderr);
}

#[test]
fn failed_dependency_skips_dependents_and_keep_going_builds_the_rest() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"bad\", cmd = \"echo boom >&2; exit 3\", outs = [\"bad.txt\"])\n\
         action(name = \"after\", deps = [\":bad\"], cmd = \"cp $DEPS $OUT\", outs = [\"after.txt\"])\n\
         action(name = \"other\", cmd = \"echo ok > $OUT\", outs = [\"other.txt\"])\n",
    );
    let run = ws.json_run(&["build", "--keep-going"], 1);
    let s = run.statuses();
    assert_eq!(s["//:bad"], "failed");
    assert_eq!(s["//:after"], "skipped");
    assert_eq!(s["//:other"], "executed");
    assert!(run.stderr.contains("exit code: 3"), "{}", run.stderr);
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("skipped //:after (dependency //:bad failed)"),
        "{}",
        run.stderr
    );

    let run = ws.json_run(&["build", "-j", "1"], 1);
    assert_eq!(run.statuses()["//:after"], "skipped");
}

#[test]
fn out_dirs_are_captured_and_restored() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"site\", out_dirs = [\"site\"], cmd = \"mkdir -p site/a && echo 1 > site/a/one && echo 2 > site/two && chmod +x site/two\")\n\
         action(name = \"use\", deps = [\":site\"], cmd = \"find $DEPS -type f | sort | xargs cat > $OUT\", outs = [\"all.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("all.txt"), "1\n2\n");
    ws.write("site/stale", "left over");
    assert_eq!(ws.cairn(&["clean"]).code, 0);
    assert!(!ws.path("site").exists());
    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.count("executed"), 0);
    assert_eq!(ws.read("site/a/one"), "1\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.path("site/two"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn edited_output_is_restored_from_the_store() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"echo original > $OUT\", outs = [\"o.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    ws.write("o.txt", "tampered\n");
    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.count("cached"), 1);
    assert_eq!(ws.read("o.txt"), "original\n");
}

#[test]
fn no_op_build_does_not_rewrite_outputs() {
    use std::os::unix::fs::MetadataExt;
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"echo x > $OUT\", outs = [\"o.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    let inode = std::fs::metadata(ws.path("o.txt")).unwrap().ino();
    ws.json_run(&["build"], 0);
    ws.json_run(&["build"], 0);
    assert_eq!(
        std::fs::metadata(ws.path("o.txt")).unwrap().ino(),
        inode,
        "the output was rewritten"
    );
}

#[test]
fn deps_names_a_dependency_output_directory_once_however_many_files_it_holds() {
    // A `node_modules`-sized tree: listing every file would put ~300 KB in `$DEPS`, past
    // Linux's 128 KiB limit for one environment string (the action could not even start).
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = 'for i in $(seq 6000); do mkdir -p node_modules/package-with-a-long-name-$i && echo $i > node_modules/package-with-a-long-name-$i/index.js; done')\n\
         action(name = \"use\", deps = [\":tree\"], srcs = [\"a.txt\"], cmd = 'echo \"$DEPS\" > $OUT; find $DEPS -type f | wc -l >> $OUT', outs = [\"deps.txt\"])\n",
    );
    ws.write("a.txt", "a\n");
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("deps.txt"), "node_modules\n6000\n");
}

#[test]
fn an_environment_variable_too_large_to_start_names_itself() {
    let ws = Workspace::new();
    let names: Vec<String> = (0..2500)
        .map(|i| format!("src/a-source-file-with-a-rather-long-name-number-{i:05}.txt"))
        .collect();
    for name in &names {
        ws.write(name, "x\n");
    }
    ws.write(
        "BUILD.star",
        "action(name = \"many\", srcs = glob([\"src/*.txt\"]), cmd = \"cat $SRCS > $OUT\", outs = [\"all.txt\"])\n",
    );
    let run = ws.json_run(&["build"], 1);
    assert!(
        run.stderr
            .contains("`$SRCS` (every source file, by path) is 147505 bytes")
            && run.stderr.contains("over Linux's limit of 131072"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("Argument list too long").count(),
        0,
        "{}",
        run.stderr
    );

    // Each variable under the limit for one, all of them over the limit for the whole.
    ws.write(
        "BUILD.star",
        "action(name = \"wide\", cmd = \"true > $OUT\", outs = [\"w.txt\"], env = {\"V\" + str(10 + i): \"x\" * (100000 + i) for i in range(30)})\n",
    );
    let wide = ws.json_run(&["build"], 1);
    assert!(
        wide.stderr
            .contains("its command and environment together (the largest variable is `V39`) is")
            && wide.stderr.contains("for all of them (`ARG_MAX`)"),
        "{}",
        wide.stderr
    );
    assert!(
        !wide.stderr.contains("Argument list too long"),
        "{}",
        wide.stderr
    );
}

#[test]
fn symlinks_in_a_dependency_output_directory_reach_dependents_sandboxes() {
    // What npm makes: `node_modules/.bin/<tool>` links to the package's script, and a package
    // may be a link to another (npm workspaces, pnpm's whole layout).
    let tree = |target: &str| {
        format!(
            "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"mkdir -p node_modules/esb/bin node_modules/other/bin node_modules/.bin && printf '#!/bin/sh\\\\necho esb ran\\\\n' > node_modules/esb/bin/cli && printf '#!/bin/sh\\\\necho other ran\\\\n' > node_modules/other/bin/cli && chmod +x node_modules/*/bin/cli && ln -s {target} node_modules/.bin/esb && ln -s esb node_modules/alias\")\n\
             action(name = \"use\", deps = [\":tree\"], cmd = \"node_modules/.bin/esb > $OUT && ls node_modules/alias/bin >> $OUT && readlink node_modules/.bin/esb >> $OUT\", outs = [\"out.txt\"])\n"
        )
    };
    for sandbox in ["namespace", "directory"] {
        if sandbox == "namespace" && !crate::util::namespaces_available() {
            continue;
        }
        let ws = Workspace::new();
        ws.write("BUILD.star", &tree("../esb/bin/cli"));
        let run = ws.json_run(&["build", "--sandbox", sandbox], 0);
        assert_eq!(run.count("executed"), 2, "{sandbox}: {}", run.stderr);
        assert_eq!(
            ws.read("out.txt"),
            "esb ran\ncli\n../esb/bin/cli\n",
            "{sandbox}"
        );

        // Cached, and restored from the store after a clean: the dependent stays cached.
        assert_eq!(
            ws.json_run(&["build", "--sandbox", sandbox], 0)
                .count("executed"),
            0
        );
        assert_eq!(ws.cairn(&["clean"]).code, 0);
        let again = ws.json_run(&["build", "--sandbox", sandbox], 0);
        assert_eq!(again.count("executed"), 0, "{sandbox}: {}", again.stderr);
        assert_eq!(
            std::fs::read_link(ws.path("node_modules/.bin/esb")).unwrap(),
            std::path::Path::new("../esb/bin/cli")
        );

        // A link that points elsewhere is a new input: the dependent runs again.
        ws.write("BUILD.star", &tree("../other/bin/cli"));
        let moved = ws.json_run(&["build", "--sandbox", sandbox], 0);
        assert_eq!(moved.statuses()["//:use"], "executed", "{sandbox}");
        assert_eq!(ws.read("out.txt"), "other ran\ncli\n../other/bin/cli\n");
    }
}

#[test]
fn a_failing_test_shows_its_combined_output_and_every_test_keeps_its_log() {
    // pytest reports failures on stdout: the tail must show them, interleaved with stderr.
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "test(name = \"py\", cmd = \"echo '___ test_add ___'; echo 'note on stderr' >&2; echo 'E   assert 1 == 2'; echo 'FAILED test_math.py::test_add'; exit 1\")\n\
         test(name = \"ok\", cmd = \"echo '1 passed in 0.01s'\")\n",
    );
    let junit = ws.path("junit.xml");
    let run = ws.json_run(
        &["test", "--keep-going", "--junit", junit.to_str().unwrap()],
        1,
    );
    let shown = run
        .stderr
        .split("output (last lines):")
        .nth(1)
        .unwrap_or_else(|| panic!("no output tail: {}", run.stderr));
    let order = [
        "___ test_add ___",
        "note on stderr",
        "E   assert 1 == 2",
        "FAILED test_math.py::test_add",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|l| {
            shown
                .find(l)
                .unwrap_or_else(|| panic!("{l}: {}", run.stderr))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", run.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("FAILED test_math.py::test_add") && xml.contains("E   assert 1 == 2"),
        "{xml}"
    );

    // The passing test's log is kept too.
    let logs: Vec<String> = walkdir::WalkDir::new(ws.store().join("logs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("# //:ok") && l.contains("1 passed in 0.01s")),
        "{logs:?}"
    );
}

#[test]
fn a_tests_reports_are_cached_restored_and_its_junit_cases_merged() {
    // A test writing its own JUnit file and a report, as `pytest --junitxml` and coverage do.
    let ws = Workspace::new();
    ws.write(
        "run.sh",
        "{ echo '<testsuites><testsuite name=\"pytest\">'; cat cases.xml; echo '</testsuite></testsuites>'; } > \"$XML_OUTPUT_FILE\"\n\
         cat v.txt > \"$TEST_OUTPUTS_DIR/coverage.txt\"\n\
         echo 'checked calc'; exit $(cat code.txt)\n",
    );
    ws.write(
        "BUILD.star",
        "test(name = \"unit\", srcs = [\"run.sh\", \"cases.xml\", \"code.txt\", \"v.txt\"], reports = True, cmd = \"sh run.sh\")\n\
         test(name = \"plain\", cmd = \"true\")\n",
    );
    let case = |name: &str, body: &str| {
        format!(r#"<testcase classname="calc" name="{name}" time="0.001">{body}</testcase>"#)
    };
    let cases = |second: &str, code: u32| {
        ws.write(
            "cases.xml",
            &format!("{}\n{second}\n", case("test_add", "")),
        );
        ws.write("code.txt", &format!("{code}\n"));
    };
    ws.write("v.txt", "81%\n");
    cases(&case("test_sub", ""), 0);
    let junit = ws.path("junit.xml");
    let junit_arg = junit.to_str().unwrap();
    let run = ws.json_run(&["test", "--junit", junit_arg], 0);
    assert_eq!(run.statuses()["//:unit"], "executed");
    assert_eq!(ws.read(".cairn-test/unit/coverage.txt"), "81%\n");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:unit\" tests=\"2\" failures=\"0\"")
            && xml
                .contains(r#"<testcase classname="calc" name="test_add" time="0.001"></testcase>"#)
            && xml.contains(r#"name="test_sub""#)
            && xml.contains("<testcase name=\"//:plain\"")
            && xml.contains("<testsuites name=\"cairn\" tests=\"3\" failures=\"0\""),
        "{xml}"
    );
    assert!(
        roxmltree::Document::parse(&xml).is_ok(),
        "well-formed: {xml}"
    );

    // Cached: the reports come back from the store with the result.
    std::fs::remove_dir_all(ws.path(".cairn-test")).unwrap();
    let cached = ws.json_run(&["test", "--junit", junit_arg], 0);
    assert_eq!(cached.statuses()["//:unit"], "cached", "{}", cached.stderr);
    assert_eq!(ws.read(".cairn-test/unit/coverage.txt"), "81%\n");
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("name=\"test_sub\"")
    );

    // A failing test: its own failing case is in the report, its reports are kept.
    cases(
        &case("test_sub", r#"<failure message="assert 1 == 2"/>"#),
        1,
    );
    let failed = ws.json_run(&["test", "--junit", junit_arg], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:unit\" tests=\"2\" failures=\"1\"")
            && xml.contains(r#"<failure message="assert 1 == 2"/>"#)
            && xml.contains("<system-out>checked calc</system-out>"),
        "{xml}"
    );
    let kept = failed
        .stderr
        .split("reports: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("reports named: {}", failed.stderr));
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(kept).join("coverage.txt")).unwrap(),
        "81%\n"
    );

    // Crashing after a passing JUnit: the failure is not hidden behind its cases.
    cases(&case("test_sub", ""), 3);
    ws.json_run(&["test", "--junit", junit_arg], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:unit\" tests=\"3\" failures=\"1\"")
            && xml.contains("exited with code 3"),
        "{xml}"
    );

    // Cairn sets the variables: a test's env cannot.
    ws.write(
        "BUILD.star",
        "test(name = \"t\", cmd = \"true\", reports = True, env = {\"XML_OUTPUT_FILE\": \"x\"})\n",
    );
    let refused = ws.cairn(&["test"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused
            .stderr
            .contains("`XML_OUTPUT_FILE` in `env` of test `t`: cairn sets it"),
        "{}",
        refused.stderr
    );
}

#[test]
fn an_unstorable_output_is_named_by_its_workspace_path_once() {
    // `python3 -m venv` makes absolute links to the interpreter.
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"venv\", out_dirs = [\"deps/venv\"], cmd = \"mkdir -p deps/venv/bin && ln -s /usr/bin/python3 deps/venv/bin/python3\")\n",
    );
    let run = ws.json_run(&["build"], 1);
    assert_eq!(
        run.stderr
            .matches("made `deps/venv/bin/python3` (-> /usr/bin/python3), which an output cannot hold: absolute symlinks cannot be part of an output")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("/root/deps"),
        "no sandbox path: {}",
        run.stderr
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn npm_deps_installs_a_workspaces_lockfile_from_the_registry_with_its_links() {
    // The real npm and registry, as a user's machine has them.
    let ws = Workspace::new();
    ws.write(
        "package.json",
        r#"{"name": "ws", "private": true, "workspaces": ["packages/a"], "dependencies": {"is-number": "7.0.0"}}"#,
    );
    ws.write(
        "packages/a/package.json",
        r#"{"name": "a", "version": "1.0.0", "main": "index.js"}"#,
    );
    ws.write("packages/a/index.js", "exports.hello = 'hello from a';\n");
    ws.write("config/npmrc", "registry=https://registry.npmjs.org/\n");
    ws.write(
        "main.js",
        "const isNumber = require('is-number');\nconsole.log(isNumber(5), require('a').hello);\n",
    );
    let locked = std::process::Command::new("npm")
        .args([
            "install",
            "--package-lock-only",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ])
        .current_dir(ws.root())
        .output();
    if !locked.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_none(),
            "npm or its registry is unavailable: {locked:?}"
        );
        return;
    }
    let build = |digest: &str| {
        format!(
            "npm_deps(name = \"deps\", digest = \"{digest}\", workspaces = [\"packages/a\"], npmrc = \"config/npmrc\", pass_env = [\"NPM_TOKEN\"])\n\
             action(name = \"use\", deps = [\":deps\"], srcs = [\"main.js\", \"packages/a/package.json\", \"packages/a/index.js\"], cmd = \"node main.js > $OUT\", outs = [\"out.txt\"], tools = [\"node\"])\n"
        )
    };
    ws.write("BUILD.star", &build(&no_digest()));
    let first = ws.json_run(&["build"], 1);
    let actual = first.actual_digest();
    ws.write("BUILD.star", &build(&actual));
    let run = ws.json_run(&["build"], 0);
    assert_eq!(ws.read("out.txt"), "true hello from a\n", "{}", run.stderr);
    // The workspace link is a symlink, in the workspace and in the sandbox that used it.
    assert_eq!(
        std::fs::read_link(ws.path("node_modules/a")).unwrap(),
        std::path::Path::new("../packages/a")
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 0);
}

#[test]
fn an_output_symlink_leading_out_of_the_workspace_fails_the_action_naming_it() {
    // Leaving its own tree is fine (an npm workspace link); leaving the workspace is not: a
    // dependent would read the host through it, and a remote would hand it to other machines.
    let ws = Workspace::new();
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"mkdir -p node_modules/a && ln -s ../../../lib node_modules/a/lib && ln -s ../../../../../etc node_modules/etc\")\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "made `pkg/node_modules/etc` (-> ../../../../../etc), which points outside the workspace"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("made `pkg/node_modules/a/lib`"),
        "{}",
        run.stderr
    );
    assert!(!ws.path("pkg/node_modules/etc").exists());

    // Through another link of the tree, `..` climbs from where that one leads.
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"mkdir -p node_modules && ln -s ../.. node_modules/deep && ln -s deep/../../../etc node_modules/esc\")\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "made `pkg/node_modules/esc` (-> deep/../../../etc), which points outside the workspace"
        ),
        "{}",
        run.stderr
    );

    // Inside the workspace, though outside the tree: stored and restored as it is.
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"mkdir -p node_modules/a && ln -s ../../../lib node_modules/a/lib\")\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(
        std::fs::read_link(ws.path("pkg/node_modules/a/lib")).unwrap(),
        std::path::Path::new("../../../lib")
    );
}
