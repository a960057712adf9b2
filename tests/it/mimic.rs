//! The checks of the core issue, on a copy of examples/mimic with a fresh store.

use crate::util::Workspace;

const TOKENS: [&str; 3] = [
    "//packages/design-tokens:tokens_desktop",
    "//packages/design-tokens:tokens_mobile",
    "//packages/design-tokens:tokens_web",
];

fn app_targets(app: &str) -> Vec<String> {
    ["build", "size_budget", "unit"]
        .iter()
        .map(|t| format!("//apps/{app}:{t}"))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A built and tested Mimic workspace.
fn built() -> Workspace {
    let ws = Workspace::mimic();
    let run = ws.json_run(&["test", "//..."], 0);
    assert_eq!(run.count("executed"), 13, "{}", run.stderr);
    ws
}

#[test]
fn first_run_executes_everything_and_second_run_executes_nothing() {
    let ws = built();
    assert!(ws.read("apps/web/dist/app.js").contains("function Button"));
    assert!(
        ws.read("packages/design-tokens/dist/web/tokens.css")
            .contains("--color-brand-primary: #0b5fff;")
    );

    let run = ws.json_run(&["test", "//..."], 0);
    assert_eq!(run.count("executed"), 0);
    assert_eq!(run.count("cached"), 13);
    assert!(run.statuses().values().all(|s| s == "cached"));
    assert!(
        run.stderr.contains("(cached) PASSED //apps/web:unit"),
        "{}",
        run.stderr
    );
}

#[test]
fn editing_a_web_source_rebuilds_only_the_web_app() {
    let ws = built();
    ws.edit(
        "apps/web/src/components/card.js",
        "card.className = \"card\";",
        "card.className = \"card card--raised\";",
    );
    let run = ws.json_run(&["test", "//..."], 0);
    assert_eq!(run.with_status("executed"), app_targets("web"));
    assert_eq!(run.count("cached"), 10);
}

#[test]
fn changing_a_token_value_rebuilds_transforms_and_every_app() {
    let ws = built();
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "#0b5fff",
        "#0a4fe0",
    );
    let run = ws.json_run(&["test", "//..."], 0);
    let mut expected: Vec<String> = TOKENS.iter().map(|s| s.to_string()).collect();
    expected.push("//packages/design-tokens:schema_test".into());
    for app in ["web", "mobile", "desktop"] {
        expected.extend(app_targets(app));
    }
    assert_eq!(run.with_status("executed"), sorted(expected));
    assert!(
        ws.read("packages/design-tokens/dist/web/tokens.css")
            .contains("#0a4fe0")
    );
    assert!(ws.read("apps/web/dist/app.js").contains("\"#0a4fe0\""));
}

#[test]
fn changing_only_a_description_stops_at_the_transforms() {
    let ws = built();
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "Buttons, links, focus rings",
        "Buttons and links",
    );
    let run = ws.json_run(&["test", "//..."], 0);
    let mut expected: Vec<String> = TOKENS.iter().map(|s| s.to_string()).collect();
    expected.push("//packages/design-tokens:schema_test".into());
    assert_eq!(run.with_status("executed"), sorted(expected));
    for app in ["web", "mobile", "desktop"] {
        for label in app_targets(app) {
            assert_eq!(run.statuses()[&label], "cached", "{label}");
        }
    }
}

#[test]
fn clean_then_build_restores_outputs_without_running_anything() {
    let ws = built();
    let before = ws.read("apps/mobile/dist/index.bundle.js");
    let clean = ws.cairn(&["clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(!ws.path("apps/mobile/dist/index.bundle.js").exists());
    assert!(
        !ws.path("packages/design-tokens/dist/web/tokens.css")
            .exists()
    );

    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.count("executed"), 0);
    assert_eq!(ws.read("apps/mobile/dist/index.bundle.js"), before);
    assert!(
        ws.path("packages/design-tokens/dist/web/tokens.css")
            .exists()
    );
}

#[test]
fn a_failing_test_exits_1_and_runs_again_next_time() {
    let ws = built();
    ws.edit(
        "apps/web/BUILD.star",
        "max_bundle_bytes = 8000",
        "max_bundle_bytes = 10",
    );
    for _ in 0..2 {
        let run = ws.json_run(&["test", "//apps/web/..."], 1);
        assert_eq!(run.statuses()["//apps/web:size_budget"], "failed");
        // Its build is cached; the failed test itself ran (failures are never cached).
        assert_eq!(run.statuses()["//apps/web:build"], "cached");
        let log = run
            .stderr
            .split("full log: ")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap();
        assert!(
            std::fs::read_to_string(log.trim())
                .unwrap()
                .contains("over its size budget")
        );
        assert!(
            run.stderr.contains("FAILED //apps/web:size_budget"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("over its size budget"),
            "stderr tail is shown:\n{}",
            run.stderr
        );
        assert!(run.stderr.contains("full log: "), "{}", run.stderr);
    }
}

#[test]
fn a_broken_build_file_exits_2_naming_file_and_line() {
    let ws = built();
    ws.edit(
        "apps/desktop/BUILD.star",
        "max_bundle_bytes = 6000,",
        "max_bundle_bytes = 6000 +,",
    );
    let run = ws.cairn(&["test"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: apps/desktop/BUILD.star:8:30: Parse error"),
        "{}",
        run.stderr
    );
}

#[test]
fn reading_an_undeclared_workspace_file_fails() {
    let ws = built();
    ws.write(
        "apps/web/sneaky/BUILD.star",
        r#"action(name = "peek", cmd = "cat ../../mobile/src/App.js > out.txt", outs = ["out.txt"])"#,
    );
    let run = ws.json_run(&["build", "//apps/web/sneaky:peek"], 1);
    assert_eq!(run.statuses()["//apps/web/sneaky:peek"], "failed");
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
}
