//! Real toolchains through the prelude's rules: pip and pytest from PyPI, as a user's machine
//! gets them (the registries are reachable from the test machines).

use crate::util::{Workspace, installed_from_registry, no_digest};

#[test]
fn pip_deps_and_pytest_from_pypi_cache_per_target_and_report_pytests_failures() {
    let ws = Workspace::new();
    ws.write("requirements.txt", "pytest==8.3.3\n");
    ws.write("calc.py", "def add(a, b):\n    return a + b\n");
    ws.write(
        "tests/test_calc.py",
        "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    );
    ws.write(
        "tests/test_other.py",
        "def test_other():\n    assert 'x'.upper() == 'X'\n",
    );
    let build = |digest: &str| {
        format!(
            "pip_deps(name = \"pydeps\", digest = \"{digest}\")\n\
             pytest(name = \"calc_test\", srcs = [\"calc.py\", \"tests/test_calc.py\"], deps = [\":pydeps\"], args = [\"tests/test_calc.py\"])\n\
             pytest(name = \"other_test\", srcs = [\"tests/test_other.py\"], deps = [\":pydeps\"], args = [\"tests/test_other.py\"])\n"
        )
    };
    ws.write("BUILD.star", &build(&no_digest()));
    let first = ws.cairn(&["test"]);
    if !installed_from_registry(&first, "pip") {
        return;
    }
    let digest = first.actual_digest();
    ws.write("BUILD.star", &build(&digest));
    let run = ws.json_run(&["test"], 0);
    assert_eq!(run.count("executed"), 3, "{}", run.stderr);
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0);

    // pytest's own JUnit cases (`--junitxml` into `$XML_OUTPUT_FILE`) are in cairn's, also
    // when the tests are cached.
    let junit = ws.path("junit.xml");
    let junit_arg = junit.to_str().unwrap();
    ws.json_run(&["test", "--junit", junit_arg], 0);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:calc_test\" tests=\"1\" failures=\"0\"")
            && xml.contains(r#"classname="tests.test_calc" name="test_add""#)
            && xml.contains(r#"classname="tests.test_other" name="test_other""#),
        "{xml}"
    );

    // A broken function re-runs only the test that imports it, and shows pytest's report.
    ws.write("calc.py", "def add(a, b):\n    return a - b\n");
    let broken = ws.json_run(&["test", "--junit", junit_arg], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:calc_test\" tests=\"1\" failures=\"1\"")
            && xml.contains("<failure message=\"assert -1 == 3"),
        "{xml}"
    );
    let s = broken.statuses();
    assert_eq!(s["//:calc_test"], "failed");
    assert_eq!(s["//:other_test"], "cached");
    assert!(
        broken
            .stderr
            .contains("FAILED tests/test_calc.py::test_add - assert -1 == 3"),
        "{}",
        broken.stderr
    );

    // A fresh store installs the very same tree (the digest is reproducible).
    let fresh = tempfile::tempdir().unwrap();
    let again = ws.cairn_with(
        ws.root(),
        &["build", ":pydeps", "--json"],
        &[("CAIRN_STORE", fresh.path().to_str().unwrap())],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.count("executed"), 1);
}

#[test]
fn node_test_and_npm_script_run_with_the_real_node_and_npm() {
    let ws = Workspace::new();
    ws.write(
        "package.json",
        r#"{"name": "app", "private": true, "scripts": {"bundle": "mkdir -p dist && node build.js > dist/app.js"}}"#,
    );
    ws.write(
        "build.js",
        "console.log('export const answer = ' + (6 * 7) + ';');\n",
    );
    ws.write("lib.js", "exports.add = (a, b) => a + b;\n");
    ws.write(
        "test/add.test.js",
        "const test = require('node:test');\nconst assert = require('node:assert');\nconst { add } = require('../lib.js');\ntest('adds', () => assert.strictEqual(add(2, 2), 4));\n",
    );
    ws.write(
        "BUILD.star",
        "npm_script(name = \"bundle\", script = \"bundle\", srcs = [\"package.json\", \"build.js\"], outs = [\"dist/app.js\"])\n\
         node_test(name = \"unit\", srcs = [\"lib.js\", \"test/add.test.js\"])\n\
         node_action(name = \"gen\", script = \"gen.js\", srcs = [\"lib.js\"], args = [\"out/sum.txt\", \"20\", \"22\"], outs = [\"out/sum.txt\"])\n",
    );
    ws.write(
        "gen.js",
        "const fs = require('node:fs');\nconst { add } = require('./lib.js');\nconst [out, a, b] = process.argv.slice(2);\nfs.mkdirSync('out', { recursive: true });\nfs.writeFileSync(out, String(add(Number(a), Number(b))) + '\\n');\n",
    );
    let run = ws.json_run(&["test"], 0);
    assert_eq!(run.count("executed"), 3, "{}", run.stderr);
    assert_eq!(ws.read("dist/app.js"), "export const answer = 42;\n");
    assert_eq!(ws.read("out/sum.txt"), "42\n");
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0);

    let junit = ws.path("junit.xml");
    let junit_arg = junit.to_str().unwrap();
    ws.write("lib.js", "exports.add = (a, b) => a * b + 1;\n");
    let broken = ws.json_run(&["test", "--junit", junit_arg], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"//:unit\"") && xml.contains(r#"name="adds""#),
        "node's own JUnit case: {xml}"
    );
    assert_eq!(broken.statuses()["//:unit"], "failed");
    assert_eq!(broken.statuses()["//:bundle"], "cached");
    assert_eq!(broken.statuses()["//:gen"], "executed", "it reads lib.js");
    assert_eq!(ws.read("out/sum.txt"), "441\n");
    assert!(broken.stderr.contains("failing tests"), "{}", broken.stderr);
    assert!(broken.stderr.contains("5 !== 4"), "{}", broken.stderr);
}

#[test]
fn pnpm_deps_installs_pnpms_symlinked_layout_reproducibly() {
    let ws = Workspace::new();
    ws.write(
        "package.json",
        r#"{"name": "pw", "private": true, "dependencies": {"is-number": "7.0.0"}}"#,
    );
    // What `pnpm install --lockfile-only` (pnpm 9.15.0) wrote for it.
    ws.write(
        "pnpm-lock.yaml",
        "lockfileVersion: '9.0'\n\nsettings:\n  autoInstallPeers: true\n  excludeLinksFromLockfile: false\n\n\
         importers:\n\n  .:\n    dependencies:\n      is-number:\n        specifier: 7.0.0\n        version: 7.0.0\n\n\
         packages:\n\n  is-number@7.0.0:\n    resolution: {integrity: sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==}\n    engines: {node: '>=0.12.0'}\n\n\
         snapshots:\n\n  is-number@7.0.0: {}\n",
    );
    ws.write("m.js", "console.log(require('is-number')(3));\n");
    let build = |digest: &str| {
        format!(
            "pnpm_deps(name = \"deps\", digest = \"{digest}\")\n\
             action(name = \"use\", deps = [\":deps\"], srcs = [\"m.js\"], cmd = \"node m.js > $OUT\", outs = [\"out.txt\"], tools = [\"node\"])\n"
        )
    };
    ws.write("BUILD.star", &build(&no_digest()));
    let first = ws.cairn(&["build"]);
    if !installed_from_registry(&first, "pnpm") {
        return;
    }
    let digest = first.actual_digest();
    ws.write("BUILD.star", &build(&digest));
    let run = ws.json_run(&["build"], 0);
    assert_eq!(ws.read("out.txt"), "true\n", "{}", run.stderr);
    // pnpm's layout: the package is a symlink into `.pnpm`.
    let link = std::fs::read_link(ws.path("node_modules/is-number")).unwrap();
    assert!(link.starts_with(".pnpm"), "{}", link.display());
    // A fresh store installs the same tree.
    let fresh = tempfile::tempdir().unwrap();
    let again = ws.cairn_with(
        ws.root(),
        &["build", ":deps", "--json"],
        &[("CAIRN_STORE", fresh.path().to_str().unwrap())],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
}

#[test]
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn the_tokens_node_example_builds_and_tests_with_style_dictionary_and_esbuild() {
    // examples/tokens-node: Mimic's pipeline with the real tools from npm.
    let ws = Workspace::example("tokens-node");
    let run = ws.cairn(&["test", "--json"]);
    if run.code != 0 && run.stderr.contains("//:deps") && !run.stderr.contains("actual:") {
        assert!(
            std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_none(),
            "npm ci could not install:\n{}",
            run.stderr
        );
        return;
    }
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.count("executed"), 8, "{}", run.stderr);
    assert!(
        ws.read("packages/design-tokens/dist/web/tokens.css")
            .contains("--color-brand: #0055ff;")
    );
    assert!(
        ws.read("apps/web/dist/app.js")
            .contains("var ColorBrand = \"#0055ff\";")
    );
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0);

    // A description edit: the web tokens change (they carry descriptions as comments), the
    // bundle is rebuilt to the same bytes (esbuild drops comments) so its size test stays
    // cached, and mobile's JSON is unchanged so its test does too.
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "Body text.",
        "The text of the body.",
    );
    let edit = ws.json_run(&["test"], 0);
    let s = edit.statuses();
    assert_eq!(s["//packages/design-tokens:tokens_web"], "executed");
    assert_eq!(s["//apps/web:bundle"], "executed");
    assert_eq!(s["//apps/web:size_budget"], "cached", "{}", edit.stderr);
    assert_eq!(s["//apps/mobile:unit"], "cached");
    assert_eq!(s["//:deps"], "cached");

    // A token's value: every platform's tokens, the bundle and the tests reading them run
    // again.
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "#1a1a1a",
        "#202020",
    );
    let value = ws.json_run(&["test"], 0);
    let s = value.statuses();
    for label in [
        "//packages/design-tokens:tokens_web",
        "//apps/web:bundle",
        "//apps/mobile:unit",
    ] {
        assert_eq!(s[label], "executed", "{label}: {}", value.stderr);
    }
    assert_eq!(s["//:deps"], "cached");
    assert!(
        ws.read("packages/design-tokens/dist/web/tokens.css")
            .contains("--color-text: #202020;")
    );

    // Clean, then everything restored from the store, node_modules with its links included.
    let bundle = ws.read("apps/web/dist/app.js");
    assert_eq!(ws.cairn(&["clean"]).code, 0);
    assert!(!ws.path("node_modules").exists());
    let restored = ws.json_run(&["test"], 0);
    assert_eq!(restored.count("executed"), 0, "{}", restored.stderr);
    assert_eq!(ws.read("apps/web/dist/app.js"), bundle);
    assert!(
        std::fs::symlink_metadata(ws.path("node_modules/.bin/esbuild"))
            .unwrap()
            .is_symlink()
    );

    // Reproducible: --check runs every action again, the install included, to the same bytes.
    let check = ws.json_run(&["build", "--check"], 0);
    assert!(
        check.stderr.contains("re-run by --check"),
        "{}",
        check.stderr
    );
}

/// The interpreters of `examples/pytools`' matrix this machine has, as its cairn.toml finds
/// them (the system's directories, then pyenv's versions).
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn pytools_interpreters() -> Vec<String> {
    let mut dirs: Vec<std::path::PathBuf> = ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(std::path::PathBuf::from)
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let versions = std::path::Path::new(&home).join(".pyenv/versions");
        let mut found: Vec<_> = std::fs::read_dir(versions)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .collect();
        found.sort();
        dirs.extend(found);
    }
    ["3.9", "3.10", "3.11", "3.12", "3.13"]
        .iter()
        .filter(|v| dirs.iter().any(|d| d.join(format!("python{v}")).is_file()))
        .map(|v| v.to_string())
        .collect()
}

#[test]
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn the_pytools_example_runs_its_suites_on_every_interpreter_with_junit_and_a_coverage_gate() {
    let ws = Workspace::example("pytools");
    let junit = ws.path("junit.xml");
    let junit_arg = junit.to_str().unwrap();
    let run = ws.cairn(&["test", "--json", "--junit", junit_arg]);
    if run.code != 0 && run.stderr.contains("//:pydeps") && !run.stderr.contains("actual:") {
        assert!(
            std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_none(),
            "pip could not install:\n{}",
            run.stderr
        );
        return;
    }
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pythons = pytools_interpreters();
    assert!(!pythons.is_empty());
    let statuses = run.statuses();
    for v in &pythons {
        for suite in ["tokens", "stats", "report"] {
            assert_eq!(statuses[&format!("//:{suite}_py{v}")], "executed", "{v}");
        }
    }
    // The matrix is exactly what is installed, plus the tree, the report and its gate.
    assert_eq!(statuses.len(), 3 * pythons.len() + 3, "{statuses:?}");
    // Each target's pytest cases, in cairn's JUnit, under the target's own suite.
    let xml = std::fs::read_to_string(&junit).unwrap();
    for v in &pythons {
        assert!(
            xml.contains(&format!(
                "<testsuite name=\"//:tokens_py{v}\" tests=\"4\" failures=\"0\""
            )),
            "{xml}"
        );
    }
    assert_eq!(
        xml.matches(r#"name="test_apostrophes_stay_inside_words""#)
            .count(),
        pythons.len()
    );
    assert!(
        ws.read(".cairn-test/report_py3.11/test.xml")
            .contains("test_report_lists_the_top_words")
    );
    assert_eq!(ws.json_run(&["test"], 0).count("executed"), 0);

    // A change to `stats` re-runs the suites that import it, on every interpreter, and the
    // coverage report; not the tokens suites.
    ws.edit(
        "src/textstats/stats.py",
        "key=lambda item: (-item[1], item[0])",
        "key=lambda pair: (-pair[1], pair[0])",
    );
    let edit = ws.json_run(&["test"], 0);
    let s = edit.statuses();
    for v in &pythons {
        assert_eq!(s[&format!("//:stats_py{v}")], "executed");
        assert_eq!(s[&format!("//:report_py{v}")], "executed");
        assert_eq!(s[&format!("//:tokens_py{v}")], "cached");
    }
    assert_eq!(s["//:coverage_report"], "executed");

    // Untested code: the coverage gate fails with the figure.
    ws.write(
        "src/textstats/extra.py",
        "def unused(a, b):\n    if a:\n        return b\n    c = a + b\n    d = c * 2\n    e = d - 1\n    return e\n",
    );
    let gate = ws.json_run(&["test", "--keep-going"], 1);
    assert_eq!(gate.statuses()["//:coverage"], "failed");
    assert!(
        gate.stderr.contains("below the minimum of 90%"),
        "{}",
        gate.stderr
    );
}

#[test]
fn npm_deps_installs_through_the_npmrc_and_env_it_is_given() {
    // A private registry, given by an `.npmrc` or by `env`: npm must use it. Pointed at a
    // closed port here, the install fails naming it, proving neither was ignored (npm
    // rewrites the lockfile's registry.npmjs.org URLs to the configured registry).
    let ws = Workspace::new();
    ws.write(
        "package.json",
        r#"{"name": "app", "version": "1.0.0", "private": true, "dependencies": {"is-number": "7.0.0"}}"#,
    );
    ws.write(
        "package-lock.json",
        r#"{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "requires": true, "packages": {"": {"name": "app", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}}, "node_modules/is-number": {"version": "7.0.0", "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz", "license": "MIT", "engines": {"node": ">=0.12.0"}}}}"#,
    );
    ws.write(".npmrc", "registry=http://127.0.0.1:9/\nfetch-retries=0\n");
    let via = [
        ("npmrc", "npmrc = \".npmrc\""),
        (
            "env",
            "env = {\"npm_config_registry\": \"http://127.0.0.1:9/\", \"npm_config_fetch_retries\": \"0\"}",
        ),
    ];
    for (target, given) in via {
        if target == "env" {
            std::fs::remove_file(ws.path(".npmrc")).unwrap();
        }
        ws.write(
            "BUILD.star",
            &format!(
                "npm_deps(name = \"deps\", {given}, digest = \"{}\")\n",
                no_digest()
            ),
        );
        let run = ws.cairn(&["build"]);
        assert_eq!(run.code, 1, "{target}: {}", run.stderr);
        assert!(
            run.stderr.contains("127.0.0.1:9"),
            "{target} did not use the registry it was given:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("actual:"), "{}", run.stderr);
    }
}
