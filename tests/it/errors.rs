//! Bad input: every BUILD-file mistake exits 2 with `file:line:col: message`; no panics.

use crate::util::Workspace;

/// Writes `BUILD.star` (and `sub/BUILD.star` when given), runs `cairn build`, expects exit 2
/// and returns stderr.
fn broken(build: &str) -> String {
    let ws = Workspace::new();
    ws.write("BUILD.star", build);
    let run = ws.cairn(&["build"]);
    assert_eq!(
        run.code, 2,
        "expected exit 2 for {build:?}\nstderr:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run.stderr
}

fn assert_has(stderr: &str, wanted: &str) {
    assert!(stderr.contains(wanted), "expected {wanted:?} in:\n{stderr}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let err = broken("filegroup(name = \"a\", srcs = [])\naction(name = \"b\", cmd = \"true\",\n");
    assert_has(&err, "error: BUILD.star:3:");
    assert_has(&err, "Parse error");
}

#[test]
fn unknown_attribute_is_named() {
    let err = broken("\n\naction(name = \"a\", cmd = \"true\", outs = [\"x\"], srcz = [])\n");
    assert_has(
        &err,
        "error: BUILD.star:3:1: Found `srcz` extra named parameter",
    );
}

#[test]
fn wrong_type_says_what_was_expected() {
    let err = broken("action(name = \"a\", cmd = \"true\", outs = \"x\")\n");
    assert_has(&err, "error: BUILD.star:1:1:");
    assert_has(&err, "expected `list[str]`");
}

#[test]
fn label_naming_no_target_suggests_a_close_one() {
    let ws = Workspace::new();
    ws.write(
        "lib/BUILD.star",
        "action(name = \"build\", cmd = \"echo > o\", outs = [\"o\"])\n",
    );
    ws.write(
        "app/BUILD.star",
        "\naction(name = \"a\", cmd = \"true\", outs = [\"x\"], deps = [\"//lib:buld\"])\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(
        &run.stderr,
        "app/BUILD.star:2:1: `//app:a` depends on unknown target `//lib:buld` (did you mean `//lib:build`?)",
    );
}

#[test]
fn duplicate_target_names_both_places() {
    let err = broken("filegroup(name = \"a\")\nfilegroup(name = \"a\")\n");
    assert_has(
        &err,
        "BUILD.star:2:1: Duplicate target name `a` in package `//` (first declared at BUILD.star:1:1)",
    );
}

#[test]
fn outputs_outside_the_package_are_rejected() {
    let ws = Workspace::new();
    ws.write(
        "pkg/BUILD.star",
        "action(name = \"a\", cmd = \"true\", outs = [\"../escape\"])\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(
        &run.stderr,
        "pkg/BUILD.star:1:1: Output `../escape` in `outs` of `//pkg:a` must be a path inside package `//pkg`",
    );
    let err = broken("action(name = \"a\", cmd = \"true\", outs = [\"/etc/x\"])\n");
    assert_has(&err, "`/etc/x` is absolute");
}

#[test]
fn two_targets_declaring_one_output_conflict() {
    let err = broken(
        "action(name = \"a\", cmd = \"true\", outs = [\"x\"])\naction(name = \"b\", cmd = \"true\", outs = [\"x\"])\n",
    );
    assert_has(
        &err,
        "BUILD.star:2:1: `//:b` declares output `x`, which `//:a` (declared at BUILD.star:1:1) also declares",
    );
}

#[test]
fn cycle_error_names_the_path() {
    let err = broken(
        "action(name = \"a\", cmd = \"true\", outs = [\"x\"], deps = [\":b\"])\n\
         action(name = \"b\", cmd = \"true\", outs = [\"y\"], deps = [\":c\"])\n\
         action(name = \"c\", cmd = \"true\", outs = [\"z\"], deps = [\":a\"])\n",
    );
    assert_has(&err, "dependency cycle: //:a -> //:b -> //:c -> //:a");
}

#[test]
fn errors_inside_a_macro_lead_with_the_build_file_line() {
    let ws = Workspace::new();
    ws.write(
        "defs.star",
        "def lib(name):\n    action(name = name, cmd = \"true\", outs = [\"../up\"])\n",
    );
    ws.write(
        "pkg/BUILD.star",
        "load(\"//defs.star\", \"lib\")\n\nlib(name = \"x\")\n",
    );
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(&run.stderr, "error: pkg/BUILD.star:3:1:");
    assert_has(&run.stderr, "defs.star:2:");
}

#[test]
fn def_in_a_build_file_points_to_star_files() {
    let err = broken("def f():\n    pass\n");
    assert_has(&err, "BUILD.star:1:1:");
    assert_has(&err, ".star");
}

#[test]
fn load_errors_name_the_loaded_file() {
    let ws = Workspace::new();
    ws.write("a.star", "load(\"//b.star\", \"x\")\ny = 1\n");
    ws.write("b.star", "load(\"//a.star\", \"y\")\nx = 1\n");
    ws.write("BUILD.star", "load(\"//a.star\", \"y\")\n");
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(&run.stderr, "load cycle: a.star -> b.star -> a.star");

    let ws = Workspace::new();
    ws.write("BUILD.star", "load(\"//nope.star\", \"y\")\n");
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(&run.stderr, "BUILD.star:1:1: Cannot load `//nope.star`");
}

#[test]
fn missing_source_is_named() {
    let err =
        broken("action(name = \"a\", cmd = \"true\", outs = [\"x\"], srcs = [\"nope.txt\"])\n");
    assert_has(
        &err,
        "BUILD.star:1:1: Source file `nope.txt` of `//:a` does not exist",
    );
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    ws.write("BUILD.star", "filegroup(name = \"a\")\n");
    assert_eq!(ws.cairn(&["build", "//nothing/..."]).code, 2);
    assert_eq!(ws.cairn(&["build", "//bad label"]).code, 2);
    assert_eq!(ws.cairn(&["frobnicate"]).code, 2);
    let outside = tempfile::tempdir().unwrap();
    let run = ws.cairn_in(outside.path(), &["build"]);
    assert_eq!(run.code, 2);
    assert_has(&run.stderr, "No `cairn.toml` found");
    ws.write("cairn.toml", "[build]\njobz = 3\n");
    let run = ws.cairn(&["build"]);
    assert_eq!(run.code, 2);
    assert_has(&run.stderr, "cairn.toml");
}
