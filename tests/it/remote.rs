//! Remote caches through the real binary: a `file://` directory remote shared by two copies
//! of the Mimic workspace with separate stores (two machines), uploads only of what the remote
//! lacks, a remote that is gone, a tampered blob, and the upload default.

use std::path::Path;

use crate::util::Workspace;

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Every file under `dir` (relative path → bytes), for comparing outputs of two machines.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn outputs(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    [
        "apps/web/dist",
        "apps/mobile/dist",
        "packages/design-tokens/dist",
    ]
    .iter()
    .flat_map(|d| {
        files_under(&ws.path(d))
            .into_iter()
            .map(move |(p, b)| (format!("{d}/{p}"), b))
    })
    .collect()
}

#[test]
fn a_second_machine_gets_every_result_from_a_directory_remote() {
    let remote = tempfile::tempdir().unwrap();
    let ci = Workspace::mimic();
    let remote_flag = format!("--remote={}", url(remote.path()));
    let first = ci.json_run(&["test", &remote_flag, "--remote-upload"], 0);
    assert_eq!(first.count("executed"), 13);
    let uploaded = first.json()["bytes_uploaded"].as_u64().unwrap();
    assert!(uploaded > 0, "{}", first.stdout);

    // The laptop names the remote in cairn.toml and has an empty store of its own.
    let laptop = Workspace::mimic();
    laptop.write(
        "cairn.toml",
        &format!("[remote]\nurl = \"{}\"\n", url(remote.path())),
    );
    let hit = laptop.json_run(&["test"], 0);
    assert_eq!(hit.count("executed"), 0, "{}", hit.stderr);
    assert_eq!(hit.count("remote_cached"), 13, "{}", hit.stderr);
    assert!(hit.json()["bytes_downloaded"].as_u64().unwrap() > 0);
    assert_eq!(
        hit.json()["bytes_uploaded"],
        0,
        "the laptop does not upload"
    );
    assert!(
        hit.stderr.contains("13 cached (13 from the remote)"),
        "{}",
        hit.stderr
    );
    assert_eq!(outputs(&laptop), outputs(&ci), "outputs are byte-identical");
    assert!(!outputs(&laptop).is_empty());

    // Backfilled: the next build is local.
    let again = laptop.json_run(&["test"], 0);
    assert_eq!(again.count("cached"), 13);
    assert_eq!(again.json()["bytes_downloaded"], 0);
}

#[test]
fn blobs_the_remote_holds_are_not_sent_again() {
    let remote = tempfile::tempdir().unwrap();
    let ws = Workspace::mimic();
    let remote_flag = format!("--remote={}", url(remote.path()));
    let first = ws.json_run(&["test", &remote_flag, "--remote-upload"], 0);
    let first_bytes = first.json()["bytes_uploaded"].as_u64().unwrap();
    // A description the transforms ignore: they run again, their outputs are the same.
    ws.edit(
        "packages/design-tokens/tokens/color.json",
        "\"$description\": \"",
        "\"$description\": \"Edited. ",
    );
    let second = ws.json_run(&["test", &remote_flag, "--remote-upload"], 0);
    assert!(second.count("executed") > 0);
    let second_bytes = second.json()["bytes_uploaded"].as_u64().unwrap();
    assert!(
        second_bytes > 0 && second_bytes < first_bytes / 2,
        "uploaded {second_bytes} bytes after an edit, {first_bytes} at first"
    );
}

#[test]
fn a_remote_that_is_gone_is_one_warning_and_a_local_build() {
    let ws = Workspace::mimic();
    let gone = ws.root().join("no-such-share");
    let run = ws.json_run(
        &[
            "test",
            &format!("--remote={}", url(&gone)),
            "--remote-upload",
        ],
        0,
    );
    assert_eq!(run.count("executed"), 13);
    assert_eq!(
        run.stderr.matches("warning: remote cache failed").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no-such-share"), "{}", run.stderr);
}

#[test]
fn a_tampered_remote_blob_is_rejected_and_the_action_runs() {
    let remote = tempfile::tempdir().unwrap();
    let remote_flag = format!("--remote={}", url(remote.path()));
    let ci = Workspace::mimic();
    ci.json_run(&["build", &remote_flag, "--remote-upload"], 0);
    // Same sizes, other bytes: only a digest check can tell.
    for (rel, bytes) in files_under(&remote.path().join("cas")) {
        let flipped: Vec<u8> = bytes.iter().map(|b| b ^ 0x20).collect();
        std::fs::write(remote.path().join("cas").join(rel), flipped).unwrap();
    }
    let laptop = Workspace::mimic();
    let run = laptop.json_run(&["build", &remote_flag], 0);
    assert!(run.count("executed") > 0, "{}", run.stderr);
    assert_eq!(run.count("remote_cached"), 0);
    assert!(
        run.stderr.contains("served bytes hashing to"),
        "{}",
        run.stderr
    );
    assert_eq!(outputs(&laptop), outputs(&ci));
}

#[test]
fn uploads_are_off_by_default_unless_ci_is_set() {
    let remote = tempfile::tempdir().unwrap();
    let remote_flag = format!("--remote={}", url(remote.path()));
    let ws = Workspace::mimic();
    let run = ws.cairn_with(ws.root(), &["build", "--json", &remote_flag], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["bytes_uploaded"], 0);
    assert!(!remote.path().join("ac").exists(), "nothing was uploaded");

    let ci = Workspace::mimic();
    let run = ci.cairn_with(
        ci.root(),
        &["build", "--json", &remote_flag],
        &[("CI", "true")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.json()["bytes_uploaded"].as_u64().unwrap() > 0);
    assert!(remote.path().join("ac").is_dir());
}

#[test]
fn a_bad_remote_url_is_a_usage_error() {
    let ws = Workspace::mimic();
    for (flag, says) in [
        ("--remote=file://relative/dir", "absolute path"),
        ("--remote=ftp://host/x", "unknown scheme `ftp`"),
        ("--remote=shared", "expected `file:///dir`"),
    ] {
        let run = ws.cairn(&["build", flag]);
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{flag}: {}", run.stderr);
    }
}
