//! Odd and hostile inputs (issue 15): each asserts the exact behaviour and message.

use crate::util::{Workspace, namespaces_available};

#[test]
fn odd_file_names_are_inputs_and_one_that_is_not_utf8_is_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let ws = Workspace::new();
    for (name, text) in [
        ("src/with space.txt", "space\n"),
        ("src/ünïcødé.txt", "unicode\n"),
        ("src/-leading-dash.txt", "dash\n"),
        ("src/new\nline.txt", "newline\n"),
        ("src/empty.txt", ""),
    ] {
        ws.write(name, text);
    }
    // $SRCS is space-separated (as Bazel's $(SRCS)): names with spaces are read by glob here.
    ws.write(
        "BUILD.star",
        "action(name = \"all\", srcs = glob([\"src/*\"]), cmd = \"cat src/* > $OUT; ls -q src | wc -l >> $OUT\", outs = [\"all.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("all.txt"), "dash\nnewline\nspace\nunicode\n5\n");
    // Each is tracked under its own name: editing the one with a newline rebuilds.
    ws.write("src/new\nline.txt", "edited\n");
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert!(ws.read("all.txt").contains("edited\n"));

    // REAPI's paths are strings: a name that is not UTF-8 cannot be an input. Said where the
    // glob is, naming the file; never silently left out nor taken for another name.
    let bad = ws
        .root()
        .join(std::ffi::OsStr::from_bytes(b"src/bad\xff.txt"));
    std::fs::write(&bad, "bad\n").unwrap();
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "BUILD.star:1:29: glob() matches `src/bad\u{FFFD}.txt`, whose name is not UTF-8"
        ),
        "{}",
        run.stderr
    );
    // Excluded, it is no one's input.
    ws.write(
        "BUILD.star",
        "action(name = \"all\", srcs = glob([\"src/*\"], exclude = [\"src/bad*\"]), cmd = \"cat src/* > $OUT\", outs = [\"all.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("all.txt"), "dash\nedited\nspace\nunicode\n");
}

#[test]
fn two_names_alike_but_for_a_space_and_a_newline_never_share_a_key() {
    let ws = Workspace::new();
    ws.write("src/a b.txt", "same\n");
    ws.write("src/a\nb.txt", "same\n");
    ws.write(
        "BUILD.star",
        "action(name = \"space\", srcs = [\"src/a b.txt\"], cmd = \"ls -q src > $OUT\", outs = [\"space.txt\"])\n\
         action(name = \"newline\", srcs = [\"src/a\\nb.txt\"], cmd = \"ls -q src > $OUT\", outs = [\"newline.txt\"])\n",
    );
    let run = ws.json_run(&["build"], 0);
    let keys: Vec<String> = run.json()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
    // Each sandbox held its own file only.
    assert_eq!(ws.read("space.txt"), "a b.txt\n");
    assert_eq!(ws.read("newline.txt"), "a?b.txt\n");
}

#[test]
fn a_source_symlink_is_read_through_inside_the_workspace_and_refused_leading_out() {
    let outside = tempfile::tempdir().unwrap();
    let host_file = outside.path().join("secret.txt");
    std::fs::write(&host_file, "host\n").unwrap();
    let ws = Workspace::new();
    ws.write("src/real.txt", "real\n");
    std::os::unix::fs::symlink("real.txt", ws.path("src/inside.txt")).unwrap();
    std::os::unix::fs::symlink(&host_file, ws.path("src/outside.txt")).unwrap();
    ws.write(
        "BUILD.star",
        "action(name = \"in\", srcs = [\"src/inside.txt\"], cmd = \"cat src/inside.txt > $OUT\", outs = [\"in.txt\"])\n\
         action(name = \"out\", srcs = [\"src/outside.txt\"], cmd = \"cat src/outside.txt > $OUT\", outs = [\"out.txt\"])\n",
    );
    let run = ws.json_run(&["build", "--keep-going"], 1);
    // Inside: the target's content is the input, tracked through the link.
    assert_eq!(ws.read("in.txt"), "real\n");
    ws.write("src/real.txt", "edited\n");
    // Outside: refused, naming the link and where it leads.
    let real = std::fs::canonicalize(&host_file).unwrap();
    assert!(
        run.stderr.contains(&format!(
            "ERROR //:out: source file `src/outside.txt` is a symlink to `{}`, outside the workspace",
            real.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!ws.path("out.txt").exists());
    let again = ws.json_run(&["build", "//:in"], 0);
    assert_eq!(again.count("executed"), 1);
    assert_eq!(ws.read("in.txt"), "edited\n");
}

/// Whether a process whose command line holds `word` is alive, waiting up to 10 s for one
/// being killed to go (a PID namespace's processes die just after its first one).
fn survives(word: &str) -> bool {
    let alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(word))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive() {
        if std::time::Instant::now() > deadline {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

#[test]
fn a_daemon_an_action_starts_never_outlives_it_in_any_sandbox() {
    let mut modes = vec!["directory", "none"];
    if namespaces_available() {
        modes.push("namespace");
    }
    for (i, mode) in modes.into_iter().enumerate() {
        let ws = Workspace::new();
        // Detached twice over (a subshell's background job, in a session of its own), and
        // once more for the action that times out; each sleep is unique to this test run.
        let tag = std::process::id() * 10 + i as u32;
        ws.write(
            "BUILD.star",
            &format!(
                "action(name = \"d\", cmd = \"(setsid sh -c 'sleep 9{tag}1 & ' &); echo started > $OUT\", outs = [\"d.txt\"])\n\
                 action(name = \"t\", cmd = \"(setsid sh -c 'sleep 9{tag}2 & ' &); sleep 9{tag}3\", outs = [\"t.txt\"], timeout = \"1s\")\n"
            ),
        );
        let run = ws.json_run(&["build", "--keep-going", "--sandbox", mode], 1);
        assert_eq!(ws.read("d.txt"), "started\n", "{mode}");
        assert!(
            run.stderr.contains("timed out after 1.0s"),
            "{mode}: {}",
            run.stderr
        );
        for n in 1..=3 {
            assert!(
                !survives(&format!("sleep 9{tag}{n}")),
                "{mode}: sleep 9{tag}{n} survived"
            );
        }
    }
}

#[test]
fn a_damaged_store_database_names_itself_and_verify_repair_rebuilds_it() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", srcs = [\"a.txt\"], cmd = \"cat a.txt > $OUT\", outs = [\"out.txt\"])\n",
    );
    ws.write("a.txt", "hello\n");
    ws.json_run(&["build"], 0);
    // Overwritten (a disk error, a stray tool): not a database any more.
    let db = ws.store().join("metadata.sqlite");
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(ws.store().join(format!("metadata.sqlite{ext}")));
    }
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "The store's database `{}` is damaged (file is not a database): run `cairn store verify --repair` to rebuild it",
            db.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("is damaged").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    let repair = ws.cairn(&["store", "verify", "--repair"]);
    assert_eq!(repair.code, 0, "{}", repair.stderr);
    assert!(
        repair
            .stderr
            .contains("Rebuilt the store's database: carried over the 0 action results"),
        "{}",
        repair.stderr
    );
    assert!(ws.store().join("metadata.sqlite.damaged").exists());
    // The blobs survived; the results went with the database, so the action runs again.
    let again = ws.json_run(&["build"], 0);
    assert_eq!(again.count("executed"), 1);
    assert_eq!(ws.read("out.txt"), "hello\n");
    assert_eq!(ws.cairn(&["store", "verify"]).code, 0);
}

#[test]
fn an_action_filling_its_tmpdir_fails_there_and_the_next_one_has_a_fresh_one() {
    if !namespaces_available() {
        return;
    }
    let ws = Workspace::new();
    ws.write("cairn.toml", "[build]\ntmp_size = \"16MiB\"\n");
    ws.write(
        "BUILD.star",
        "test(name = \"fill\", cmd = \"head -c 100000000 /dev/zero > $TMPDIR/big\")\n\
         test(name = \"next\", deps = [\":fill\"], cmd = \"head -c 8000000 /dev/zero > $TMPDIR/some && test ! -e $TMPDIR/big\")\n\
         test(name = \"after\", cmd = \"head -c 8000000 /dev/zero > $TMPDIR/some && test ! -e $TMPDIR/big\")\n",
    );
    let run = ws.json_run(&["test", "--keep-going"], 1);
    let s = run.statuses();
    assert_eq!(s["//:fill"], "failed");
    assert_eq!(s["//:after"], "executed", "{}", run.stderr);
    assert!(
        run.stderr
            .contains("head: error writing 'standard output': No space left on device"),
        "{}",
        run.stderr
    );
    ws.write("cairn.toml", "[build]\ntmp_size = \"lots\"\n");
    let bad = ws.cairn(&["test"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains(
            "Invalid `[build] tmp_size` `lots` in cairn.toml (expected a size such as `4GiB` or `512MiB`)"
        ),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_build_file_looping_or_allocating_without_end_is_stopped_naming_itself() {
    let ws = Workspace::new();
    ws.write(
        "cairn.toml",
        "[build]\neval_time_limit = \"1s\"\neval_memory_limit = \"512MiB\"\n",
    );
    ws.write(
        "defs.star",
        "def spin():\n    n = 0\n    for x in range(1000000):\n        for y in range(1000000):\n            n += 1\n    return n\n",
    );
    ws.write(
        "loops/BUILD.star",
        "load(\"//defs.star\", \"spin\")\nN = spin()\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: loops/BUILD.star: evaluation stopped after 1.0s (an endless loop?); `[build] eval_time_limit` in cairn.toml raises the limit"
        ),
        "{}",
        run.stderr
    );

    std::fs::remove_dir_all(ws.path("loops")).unwrap();
    ws.write(
        "cairn.toml",
        "[build]\neval_time_limit = \"120s\"\neval_memory_limit = \"256MiB\"\n",
    );
    ws.write(
        "grows/BUILD.star",
        "BIG = [\"x\" * 100 + str(i) for i in range(100000000)]\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: grows/BUILD.star: evaluation stopped holding ")
            && run
                .stderr
                .contains("MiB of memory, over the limit of 256 MiB (a runaway comprehension?)"),
        "{}",
        run.stderr
    );

    // Within the limits, the same workspace builds.
    std::fs::remove_dir_all(ws.path("grows")).unwrap();
    ws.write(
        "ok/BUILD.star",
        "N = len([i for i in range(100000)])\naction(name = \"a\", cmd = \"echo %d > $OUT\" % N, outs = [\"a.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    assert_eq!(ws.read("ok/a.txt"), "100000\n");
}

#[test]
fn a_load_cycle_names_its_path() {
    let ws = Workspace::new();
    ws.write("a.star", "load(\"//b.star\", \"B\")\nA = 1\n");
    ws.write("b.star", "load(\"//a.star\", \"A\")\nB = 2\n");
    ws.write("BUILD.star", "load(\"//a.star\", \"A\")\n");
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("BUILD.star:1:1: ")
            && run
                .stderr
                .contains("load cycle: a.star -> b.star -> a.star"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_ten_megabyte_build_file_and_a_hundred_thousand_files_in_one_package_build() {
    let ws = Workspace::new();
    // 10 MB of BUILD.star: a large literal beside the targets.
    let mut build = String::from("DATA = [\n");
    while build.len() < 10 << 20 {
        build.push_str(&format!("    \"{:0>90}\",\n", build.len()));
    }
    build.push_str("]\n");
    build.push_str(
        "action(name = \"count\", srcs = glob([\"many/f1234*.txt\"]), cmd = \"echo %d > $OUT; ls many | wc -l >> $OUT\" % len(DATA), outs = [\"count.txt\"])\n",
    );
    ws.write("BUILD.star", &build);
    std::fs::create_dir_all(ws.path("many")).unwrap();
    for i in 0..100_000 {
        std::fs::write(ws.path(&format!("many/f{i}.txt")), format!("{i}\n")).unwrap();
    }
    let entries = build.matches("\",\n").count();
    ws.json_run(&["build"], 0);
    // f1234.txt and f12340.txt ... f12349.txt: 11 files reach the sandbox.
    assert_eq!(ws.read("count.txt"), format!("{entries}\n11\n"));
    // A no-op replays; an edit of one of the 100,000 reruns.
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 0);
    std::fs::write(ws.path("many/f12345.txt"), "edited\n").unwrap();
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
}
