//! The up-to-date record (issue 6): a repeated command is answered from the record of its last
//! run only while nothing it depends on changed; every kind of change makes it build again.

use crate::util::{MyTool, Run, Workspace};

/// Waits out the racy window: states of files (and scans of directories) modified within
/// the last second are not saved, and a build that looked at one is not recorded (see
/// `a_build_that_saw_a_file_just_modified_is_not_recorded`).
fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

/// Whether the run (with `-v`, which says so) replayed the recorded outcome.
fn replayed(run: &Run) -> bool {
    run.stderr.contains("its outcome is replayed")
}

/// Runs `cairn test` until it is replayed, pausing after each run that is not (its files and
/// directories are then out of the racy window), and checks that the replayed run reports
/// every target cached and that no run after the first executes anything.
fn settle(ws: &Workspace, targets: u64) -> Run {
    for i in 0..4 {
        let run = ws.json_run(&["-v", "test"], 0);
        if replayed(&run) {
            assert!(i > 0, "the first run after a change builds");
            assert_eq!(run.count("cached"), targets);
            return run;
        }
        if i > 0 {
            assert_eq!(run.count("executed"), 0, "{}", run.stderr);
        }
        pause();
    }
    panic!("not replayed after four runs");
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("cairn.toml", "");
    ws.write(
        "lib/BUILD.star",
        "action(name = \"cat\", srcs = glob([\"src/*.txt\"]), cmd = \"cat $SRCS > $OUT\", outs = [\"all.txt\"])\n\
         test(name = \"check\", deps = [\":cat\"], cmd = \"test -s $DEPS\")\n",
    );
    ws.write("lib/src/a.txt", "a\n");
    ws.write("lib/src/b.txt", "b\n");
    pause();
    ws
}

#[test]
fn a_repeated_command_is_replayed_and_says_so() {
    let ws = workspace();
    let run = settle(&ws, 2);
    // Same output as a build that finds everything cached.
    assert!(
        run.stderr.contains("(cached) PASSED //lib:check"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("2 targets: 2 cached, 0 executed, 0 failed")
    );
    // Without `-v`, a replay looks like any build that found everything cached.
    let quiet = ws.cairn(&["test"]);
    assert_eq!(quiet.code, 0);
    assert!(!quiet.stderr.contains("replayed"), "{}", quiet.stderr);
    assert!(quiet.stderr.contains("(cached) PASSED //lib:check"));
    // Another command has a record of its own.
    let build = ws.json_run(&["-v", "build", "//lib:cat"], 0);
    assert!(!replayed(&build));
    assert!(!replayed(&ws.json_run(&["-v", "build", "//lib:check"], 0)));
}

#[test]
fn every_kind_of_change_builds_again() {
    let ws = workspace();
    settle(&ws, 2);

    // A source's content.
    ws.write("lib/src/a.txt", "a2\n");
    pause();
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&run));
    assert_eq!(run.count("executed"), 2);
    assert_eq!(ws.read("lib/all.txt"), "a2\nb\n");
    settle(&ws, 2);

    // A new file the glob matches.
    ws.write("lib/src/c.txt", "c\n");
    pause();
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&run));
    assert_eq!(ws.read("lib/all.txt"), "a2\nb\nc\n");
    settle(&ws, 2);

    // A deleted source: built once, then replayed again (its state is dropped).
    std::fs::remove_file(ws.path("lib/src/c.txt")).unwrap();
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&run));
    assert_eq!(ws.read("lib/all.txt"), "a2\nb\n");
    settle(&ws, 2);

    // A deleted or edited output is restored.
    std::fs::remove_file(ws.path("lib/all.txt")).unwrap();
    assert!(!replayed(&ws.json_run(&["-v", "test"], 0)));
    assert_eq!(ws.read("lib/all.txt"), "a2\nb\n");
    settle(&ws, 2);
    ws.write("lib/all.txt", "tampered\n");
    pause();
    assert!(!replayed(&ws.json_run(&["-v", "test"], 0)));
    assert_eq!(ws.read("lib/all.txt"), "a2\nb\n");
    settle(&ws, 2);

    // The BUILD file.
    ws.edit(
        "lib/BUILD.star",
        "cat $SRCS > $OUT",
        "cat $SRCS $SRCS > $OUT",
    );
    pause();
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&run));
    assert_eq!(run.count("executed"), 2);
    settle(&ws, 2);

    // cairn.toml.
    ws.write("cairn.toml", "[build]\njobs = 1\n");
    pause();
    assert!(!replayed(&ws.json_run(&["-v", "test"], 0)));
}

#[test]
fn a_build_that_saw_a_file_just_modified_is_not_recorded() {
    let ws = workspace();
    // A test's source: editing it in place changes no directory and writes no output, so
    // only the file's own state can tell that it changed.
    ws.write(
        "data/BUILD.star",
        "test(name = \"data\", srcs = [\"data.txt\"], cmd = \"grep -q ok data.txt\")\n",
    );
    ws.write("data/data.txt", "ok 1\n");
    pause();
    settle(&ws, 3);
    // Modified just before the build: its state is not saved, so a record could not notice
    // a second edit within the same timestamp. So there is none: once the racy window has
    // passed, the next run builds (and finds everything cached) instead of replaying.
    ws.write("data/data.txt", "ok 2\n");
    assert_eq!(ws.json_run(&["-v", "test"], 0).count("executed"), 1);
    pause();
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(
        !replayed(&run),
        "recorded although a file's state was not saved"
    );
    assert_eq!(run.count("executed"), 0);
    assert!(
        replayed(&ws.json_run(&["-v", "test"], 0)),
        "that run was recorded"
    );
}

#[test]
fn a_replaced_tool_builds_again() {
    let ws = workspace();
    let tool = MyTool::on_tool_path_of(&ws);
    ws.write(
        "BUILD.star",
        "action(name = \"v\", cmd = \"mytool > $OUT\", outs = [\"v.txt\"])\n",
    );
    pause();
    settle(&ws, 3);
    tool.install("2");
    let run = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&run));
    assert_eq!(ws.read("v.txt"), "mytool 2\n");
}

#[test]
fn output_directories_are_replayed_until_a_file_in_them_changes() {
    let ws = workspace();
    ws.write(
        "gen/BUILD.star",
        "action(name = \"tree\", cmd = \"mkdir -p out/deep && echo x > out/x && echo y > out/deep/y\", out_dirs = [\"out\"])\n",
    );
    pause();
    settle(&ws, 3);
    // A file added anywhere in the output directory: built again, and the file removed.
    for extra in ["gen/out/extra", "gen/out/deep/extra"] {
        ws.write(extra, "junk\n");
        let run = ws.json_run(&["-v", "test"], 0);
        assert!(!replayed(&run), "{extra}: {}", run.stderr);
        assert!(!ws.path(extra).exists(), "{extra}");
        pause();
        settle(&ws, 3);
    }
    // A file of it edited or removed: restored.
    ws.write("gen/out/deep/y", "edited\n");
    assert!(!replayed(&ws.json_run(&["-v", "test"], 0)));
    assert_eq!(ws.read("gen/out/deep/y"), "y\n");
    pause();
    settle(&ws, 3);
    std::fs::remove_dir_all(ws.path("gen/out/deep")).unwrap();
    assert!(!replayed(&ws.json_run(&["-v", "test"], 0)));
    assert_eq!(ws.read("gen/out/deep/y"), "y\n");
}

#[test]
fn a_star_file_first_loaded_by_an_evaluation_is_watched_too() {
    let ws = workspace();
    settle(&ws, 2);
    // A new macro file, loaded by an edited BUILD file: the build that evaluates them has no
    // state of the `.star` file yet, so it is not recorded. (A test writes nothing into the
    // workspace, so no directory changes to give the edit away.)
    ws.write("lib/defs.star", "GREETING = \"hello\"\n");
    ws.edit(
        "lib/BUILD.star",
        "action(",
        "load(\"//lib/defs.star\", \"GREETING\")\ntest(name = \"greet\", cmd = \"test \" + GREETING + \" = hello\")\naction(",
    );
    pause();
    assert_eq!(ws.json_run(&["-v", "test"], 0).count("executed"), 1);
    pause();
    ws.write("lib/defs.star", "GREETING = \"howdy\"\n");
    pause();
    let run = ws.json_run(&["-v", "test"], 1);
    assert!(
        !replayed(&run),
        "recorded although a loaded .star file had no state"
    );
    assert_eq!(run.statuses()["//lib:greet"], "failed");
}

#[test]
fn host_tools_makes_a_matrix_of_what_is_installed_and_sees_one_installed_later() {
    let ws = Workspace::new();
    let bin = tempfile::tempdir().unwrap();
    ws.write(
        "cairn.toml",
        &format!(
            "[build]\ntool_path = [\"{}\", \"/usr/bin\", \"/bin\"]\n",
            bin.path().display()
        ),
    );
    let install = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = bin.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho {name}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    install("interp3.11");
    ws.write(
        "BUILD.star",
        "[test(name = \"test_\" + py.rsplit(\"/\", 1)[-1], cmd = py) for py in host_tools([\"interp3.11\", \"interp3.12\", \"/usr/bin/env\", \"/nonexistent/python3\"])]\n",
    );
    let labels = |run: &Run| {
        let mut l: Vec<String> = run.statuses().into_keys().collect();
        l.sort();
        l
    };
    let first = ws.json_run(&["test"], 0);
    assert_eq!(
        labels(&first),
        ["//:test_env", "//:test_interp3.11"],
        "{}",
        first.stderr
    );
    // Repeated: the up-to-date replay answers, with the same matrix.
    pause();
    assert_eq!(labels(&settle(&ws, 2)), labels(&first));
    // A newly installed interpreter joins the matrix (neither the replay nor the analysis
    // cache hides it).
    install("interp3.12");
    let second = ws.json_run(&["-v", "test"], 0);
    assert!(!replayed(&second), "{}", second.stderr);
    assert_eq!(
        labels(&second),
        ["//:test_env", "//:test_interp3.11", "//:test_interp3.12"],
        "{}",
        second.stderr
    );
    assert_eq!(second.statuses()["//:test_interp3.12"], "executed");
    assert_eq!(second.statuses()["//:test_interp3.11"], "cached");

    ws.write("BUILD.star", "x = host_tools([\"bin/python3\"])\n");
    let bad = ws.cairn(&["build"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("BUILD.star:1:")
            && bad
                .stderr
                .contains("`bin/python3` is neither a tool name nor an absolute path"),
        "{}",
        bad.stderr
    );
}
