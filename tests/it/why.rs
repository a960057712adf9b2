//! Knowing why (issue 5): `why`, `affected`, queries, graphs, traces, JUnit, `run`, and store
//! gc/verify, on examples/mimic.

use std::process::Command;

use crate::util::Workspace;

fn why(ws: &Workspace, label: &str) -> String {
    let run = ws.cairn(&["why", label]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout
}

#[test]
fn why_names_the_edited_source_file() {
    let ws = Workspace::mimic();
    assert!(why(&ws, "//apps/web:build").contains("never built in this store"));
    ws.json_run(&["test"], 0);
    assert!(why(&ws, "//apps/web:build").contains("no change: next build is a cache hit"));
    ws.edit(
        "apps/web/src/components/button.js",
        "button.textContent = label;",
        "button.textContent = label.toUpperCase();",
    );
    let text = why(&ws, "//apps/web:build");
    let reasons: Vec<&str> = text.lines().skip(1).map(str::trim).collect();
    assert_eq!(reasons.len(), 1, "{text}");
    assert!(
        reasons[0].starts_with("input apps/web/src/components/button.js changed (blake3:"),
        "{text}"
    );
    // Untouched targets.
    assert!(why(&ws, "//apps/mobile:build").contains("no change: next build is a cache hit"));
}

#[test]
fn why_names_the_dependency_output_that_changed() {
    let ws = Workspace::mimic();
    ws.json_run(&["test"], 0);
    ws.edit(
        "packages/design-tokens/tokens/spacing.json",
        "\"16px\"",
        "\"18px\"",
    );
    // Before the tokens are rebuilt: the root cause is named through the dependency.
    let text = why(&ws, "//apps/mobile:build");
    assert!(
        text.contains("dependency //packages/design-tokens:tokens_mobile must be rebuilt first"),
        "{text}"
    );
    assert!(
        text.contains("input packages/design-tokens/tokens/spacing.json changed"),
        "{text}"
    );
    // Once they are, the changed output itself.
    ws.json_run(&["build", "//packages/design-tokens/..."], 0);
    let text = why(&ws, "//apps/mobile:build");
    assert!(text.contains("dependency //packages/design-tokens:tokens_mobile output dist/mobile/tokens.json changed"), "{text}");
    assert!(!text.contains("spacing.json"), "{text}");
}

#[test]
fn why_names_a_changed_env_var_and_json_works() {
    let ws = Workspace::new();
    ws.write("BUILD.star", "action(name = \"a\", env = {\"NODE_ENV\": \"dev\"}, cmd = \"echo $NODE_ENV > $OUT\", outs = [\"a.txt\"])\naction(name = \"b\", cmd = \"echo b > $OUT\", outs = [\"b.txt\"])\n");
    ws.json_run(&["build"], 0);
    ws.edit("BUILD.star", "\"dev\"", "\"prod\"");
    let text = why(&ws, "//:a");
    assert!(text.contains("env NODE_ENV: \"dev\" → \"prod\""), "{text}");
    assert!(why(&ws, "//:b").contains("no change"));
    let run = ws.cairn(&["why", "//:a", "--json"]);
    let v = run.json();
    assert_eq!(v["state"], "changed");
    assert_eq!(v["reasons"][0], "env NODE_ENV: \"dev\" → \"prod\"");
    let run = ws.cairn(&["why", "//:nope"]);
    assert_eq!(run.code, 2);
}

fn git(ws: &Workspace, args: &[&str]) {
    let ok = Command::new("git")
        .current_dir(ws.root())
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn affected_maps_git_changes_through_the_graph() {
    let ws = Workspace::mimic();
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "base"]);
    ws.edit(
        "apps/web/src/app.js",
        "page.className = \"page\";",
        "page.className = \"page wide\";",
    );
    let run = ws.cairn(&["affected", "--since", "HEAD"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "//apps/web:build\n//apps/web:size_budget\n//apps/web:unit\n"
    );

    git(&ws, &["checkout", "-q", "--", "."]);
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "#7a3cff",
        "#7a3ccc",
    );
    let run = ws.cairn(&["affected", "--since", "HEAD", "--json"]);
    let targets: Vec<String> = run.json()["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    for app in ["web", "mobile", "desktop"] {
        for t in ["build", "unit", "size_budget"] {
            assert!(
                targets.contains(&format!("//apps/{app}:{t}")),
                "{targets:?}"
            );
        }
    }
    // A pattern narrows the list; a new untracked file counts; a bad ref is a usage error.
    git(&ws, &["checkout", "-q", "--", "."]);
    ws.write("apps/desktop/src/extra.js", "export const x = 1;\n");
    let run = ws.cairn(&["affected", "--since", "HEAD", "//apps/desktop:build"]);
    assert_eq!(run.stdout, "//apps/desktop:build\n");
    assert_eq!(ws.cairn(&["affected", "--since", "no-such-ref"]).code, 2);
}

#[test]
fn trace_and_junit_files_have_the_right_shape() {
    let ws = Workspace::mimic();
    let trace = ws.path("trace.json");
    let junit = ws.path("junit.xml");
    let run = ws.cairn(&[
        "test",
        "--trace",
        trace.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let executed: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "execute")
        .map(|e| e["args"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(executed.len(), 13, "one execute span per executed action");
    assert!(events.iter().all(|e| e["ph"] == "X" || e["ph"] == "M"));
    assert!(events.iter().any(|e| e["name"] == "load and analysis"));

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert_eq!(xml.matches("<testsuite ").count(), 1);
    assert_eq!(xml.matches("<testcase ").count(), 7, "{xml}");
    assert!(xml.contains("<testcase name=\"//apps/web:unit\" classname=\"apps/web\""));

    ws.edit(
        "apps/web/BUILD.star",
        "max_bundle_bytes = 8000",
        "max_bundle_bytes = 10",
    );
    let run = ws.cairn(&["test", "--junit", junit.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(xml.contains("value=\"true\""), "cached tests are marked");
}

#[test]
fn query_and_mermaid() {
    let ws = Workspace::mimic();
    let run = ws.cairn(&[
        "query",
        "rdeps",
        "//packages/design-tokens:tokens_web",
        "--depth",
        "1",
    ]);
    assert_eq!(run.stdout, "//apps/web:build\n//apps/web:unit\n");
    let run = ws.cairn(&["query", "deps", "//apps/web:build"]);
    assert!(
        run.stdout.contains("//packages/design-tokens:sources\n"),
        "{}",
        run.stdout
    );
    ws.json_run(&["build", "//apps/web:build"], 0);
    let run = ws.cairn(&["graph", "--format", "mermaid", "//apps/web:build"]);
    assert!(run.stdout.starts_with("flowchart LR\n"));
    assert!(
        run.stdout.contains("[\"//apps/web:build\"]:::executed"),
        "{}",
        run.stdout
    );
}

#[test]
fn run_builds_deps_then_runs_in_the_workspace_with_args() {
    let ws = Workspace::mimic();
    ws.write("apps/web/serve/BUILD.star", "test(name = \"serve\", deps = [\"//apps/web:build\"], cmd = 'echo \"serving $DEPS on\" \"$@\" > served.txt; exit 3')\n");
    let run = ws.cairn(&["run", "//apps/web/serve:serve", "--", "--port", "8080"]);
    assert_eq!(run.code, 3, "exit code passes through: {}", run.stderr);
    assert_eq!(
        ws.read("apps/web/serve/served.txt"),
        "serving ../dist/app.css ../dist/app.js on --port 8080\n"
    );
}

#[test]
fn gc_then_build_is_correct_and_verify_finds_a_flipped_byte() {
    let ws = Workspace::mimic();
    ws.json_run(&["test"], 0);
    let gc = ws.cairn(&["store", "gc", "--max-size", "4KiB"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stderr.contains("Removed"), "{}", gc.stderr);
    let run = ws.json_run(&["test"], 0);
    assert!(run.count("executed") > 0, "evicted results are rebuilt");
    assert_eq!(ws.cairn(&["store", "verify"]).code, 0);
    let again = ws.json_run(&["test"], 0);
    assert_eq!(again.count("executed"), 0);

    // Flip a byte in one blob.
    let cas = ws.store().join("cas");
    let blob = walk(&cas)
        .into_iter()
        .find(|p| p.extension().is_none())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&blob, bytes).unwrap();
    let verify = ws.cairn(&["store", "verify"]);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(
        verify.stderr.contains("corrupt blob blake3:"),
        "{}",
        verify.stderr
    );
    assert_eq!(
        ws.cairn(&["store", "verify"]).code,
        0,
        "the corrupt blob was removed"
    );
    ws.json_run(&["test"], 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn why_names_a_changed_tool_and_a_changed_platform_property() {
    let ws = Workspace::new();
    let tool = crate::util::MyTool::on_tool_path_of(&ws);
    let config = ws.read("cairn.toml");
    ws.write(
        "cairn.toml",
        &format!("{config}[remote.platform]\npool = \"small\"\n"),
    );
    ws.write(
        "BUILD.star",
        "action(name = \"a\", outs = [\"a.txt\"], tools = [\"mytool\"], cmd = \"mytool > $OUT\")\n",
    );
    ws.json_run(&["build"], 0);
    tool.install("2");
    let text = why(&ws, "//:a");
    assert!(text.contains("tool mytool changed ("), "{text}");
    assert!(
        text.contains("/mytool blake3:"),
        "names the path and digest: {text}"
    );
    ws.json_run(&["build"], 0);
    ws.write(
        "cairn.toml",
        &format!("{config}[remote.platform]\npool = \"large\"\n"),
    );
    let text = why(&ws, "//:a");
    assert!(
        text.contains(r#"platform property pool: "small" → "large""#),
        "{text}"
    );
    assert_eq!(ws.json_run(&["build"], 0).statuses()["//:a"], "executed");
}
