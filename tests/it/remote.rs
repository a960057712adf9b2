//! Remote caches through the real binary, against every backend: a `file://` directory and,
//! when the test scripts started one, nginx as a Bazel HTTP cache (`CAIRN_TEST_HTTP_CACHE`,
//! its data under `CAIRN_TEST_HTTP_CACHE_DIR`). Two copies of the Mimic workspace with
//! separate stores play two machines: uploads only of what the remote lacks, a remote that is
//! gone, a tampered blob, and the upload default.

use std::path::{Path, PathBuf};

use crate::util::{Relay, Workspace, host_port, no_digest, through};

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A remote for one test: its URL, the directory its blobs are stored in on disk (when the
/// test can reach them, to tamper with), and a salt that gives this test's actions keys of
/// their own (servers are shared by tests running at once).
struct Backend {
    name: &'static str,
    url: String,
    blobs: Option<PathBuf>,
    salt: String,
    _tmp: tempfile::TempDir,
}

impl Backend {
    fn new(
        name: &'static str,
        url: impl FnOnce(&Path, &str) -> String,
        blobs: impl FnOnce(&Path, &str) -> Option<PathBuf>,
    ) -> Backend {
        let tmp = tempfile::tempdir().unwrap();
        let salt = tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        Backend {
            name,
            url: url(tmp.path(), &salt),
            blobs: blobs(tmp.path(), &salt),
            salt,
            _tmp: tmp,
        }
    }

    /// A copy of Mimic whose every key is this test's: a tool-path entry that exists nowhere
    /// changes every action's `PATH`, and so its key.
    fn mimic(&self) -> Workspace {
        let ws = Workspace::mimic();
        ws.write(
            "cairn.toml",
            &format!(
                "[build]\ntool_path = [\"/nonexistent/{}\", \"/usr/local/bin\", \"/usr/bin\", \"/bin\"]\n",
                self.salt
            ),
        );
        ws
    }
}

/// Reads a server address the test scripts exported; panics when it is missing but
/// `CAIRN_TEST_REQUIRE_SERVERS` is set (CI), else says the backend is skipped.
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
fn server(var: &str, what: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        if std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_some() {
            panic!("CAIRN_TEST_REQUIRE_SERVERS is set but {var} is not");
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped {what}: {var} is not set (scripts/test.sh starts it)");
        }
    }
    value
}

/// The backends to test: always a directory; nginx (HTTP), buildbox-casd and BuildGrid (both
/// REAPI gRPC) when the test scripts started them.
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::new(
        "file",
        |dir, _| url(dir),
        |dir, _| Some(dir.join("cas")),
    )];
    if let (Some(http), Some(data)) = (
        server("CAIRN_TEST_HTTP_CACHE", "the HTTP cache"),
        server("CAIRN_TEST_HTTP_CACHE_DIR", "the HTTP cache"),
    ) {
        // A URL prefix of its own, so its blobs are found on disk.
        all.push(Backend::new(
            "http",
            |_, salt| format!("{}/{salt}", http.trim_end_matches('/')),
            |_, salt| Some(Path::new(&data).join(salt).join("cas")),
        ));
    }
    if let Some(grpc) = server("CAIRN_TEST_GRPC_CACHE", "buildbox-casd") {
        all.push(Backend::new(
            "buildbox-casd",
            |_, _| grpc.clone(),
            |_, _| None,
        ));
    }
    if let Some(grpc) = server("CAIRN_TEST_BUILDGRID", "BuildGrid") {
        all.push(Backend::new("buildgrid", |_, _| grpc.clone(), |_, _| None));
    }
    all
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
    .filter(|d| ws.path(d).exists())
    .flat_map(|d| {
        files_under(&ws.path(d))
            .into_iter()
            .map(move |(p, b)| (format!("{d}/{p}"), b))
    })
    .collect()
}

#[test]
fn a_second_machine_gets_every_result_from_the_remote() {
    for remote in backends() {
        second_machine_gets_every_result(&remote);
    }
}

fn second_machine_gets_every_result(remote: &Backend) {
    let ci = remote.mimic();
    let remote_flag = format!("--remote={}", remote.url);
    let first = ci.json_run(&["test", &remote_flag, "--remote-upload"], 0);
    assert_eq!(first.count("executed"), 13);
    let uploaded = first.json()["bytes_uploaded"].as_u64().unwrap();
    assert!(uploaded > 0, "{}", first.stdout);

    // The laptop names the remote in cairn.toml and has an empty store of its own.
    let laptop = remote.mimic();
    let config = laptop.read("cairn.toml");
    laptop.write(
        "cairn.toml",
        &format!("{config}[remote]\nurl = \"{}\"\n", remote.url),
    );
    let hit = laptop.json_run(&["test"], 0);
    assert_eq!(hit.count("executed"), 0, "{}: {}", remote.name, hit.stderr);
    assert_eq!(
        hit.count("remote_cached"),
        13,
        "{}: {}",
        remote.name,
        hit.stderr
    );
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
fn a_large_output_is_streamed_both_ways() {
    for remote in backends() {
        large_output_round_trip(&remote);
    }
}

fn large_output_round_trip(remote: &Backend) {
    // 3 MiB: above the batch size, so gRPC servers get it through ByteStream in chunks.
    // The salt makes the bytes this test's own: a server kept from an earlier run holds others.
    let build = format!(
        "action(name = \"big\", cmd = \"yes cairn-large-output-{} | head -c 3145728 > $OUT\", outs = [\"big.txt\"])\n",
        remote.salt
    );
    let ci = remote.mimic();
    ci.write("big/BUILD.star", &build);
    let remote_flag = format!("--remote={}", remote.url);
    let first = ci.json_run(&["build", "//big:big", &remote_flag, "--remote-upload"], 0);
    assert_eq!(
        first.count("executed"),
        1,
        "{}: {}",
        remote.name,
        first.stderr
    );
    assert!(first.json()["bytes_uploaded"].as_u64().unwrap() >= 3 << 20);
    let laptop = remote.mimic();
    laptop.write("big/BUILD.star", &build);
    let hit = laptop.json_run(&["build", "//big:big", &remote_flag], 0);
    assert_eq!(
        hit.count("remote_cached"),
        1,
        "{}: {}",
        remote.name,
        hit.stderr
    );
    assert!(hit.json()["bytes_downloaded"].as_u64().unwrap() >= 3 << 20);
    assert_eq!(
        std::fs::read(laptop.path("big/big.txt")).unwrap(),
        std::fs::read(ci.path("big/big.txt")).unwrap(),
        "{}",
        remote.name
    );
}

#[test]
fn blobs_the_remote_holds_are_not_sent_again() {
    for remote in backends() {
        not_sent_again(&remote);
    }
}

fn not_sent_again(remote: &Backend) {
    let ws = remote.mimic();
    let remote_flag = format!("--remote={}", remote.url);
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
        "{}: uploaded {second_bytes} bytes after an edit, {first_bytes} at first",
        remote.name
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
    for remote in backends() {
        tampered_blob_is_rejected(&remote);
    }
}

fn tampered_blob_is_rejected(remote: &Backend) {
    let Some(cas) = &remote.blobs else {
        return; // A server whose storage the test cannot reach.
    };
    let remote_flag = format!("--remote={}", remote.url);
    let ci = remote.mimic();
    ci.json_run(&["build", &remote_flag, "--remote-upload"], 0);
    // Same sizes, other bytes: only a digest check can tell.
    let blobs = files_under(cas);
    assert!(
        !blobs.is_empty(),
        "{}: nothing under {}",
        remote.name,
        cas.display()
    );
    for (rel, bytes) in blobs {
        let flipped: Vec<u8> = bytes.iter().map(|b| b ^ 0x20).collect();
        std::fs::write(cas.join(rel), flipped).unwrap();
    }
    let laptop = remote.mimic();
    let run = laptop.json_run(&["build", &remote_flag], 0);
    assert!(run.count("executed") > 0, "{}: {}", remote.name, run.stderr);
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
        ("--remote=grpcs://", "needs a host and port"),
        ("--remote=https://", "needs a host"),
        ("--remote=http:///path", "needs a host"),
    ] {
        let run = ws.cairn(&["build", flag]);
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{flag}: {}", run.stderr);
    }
}

/// `cairn store keygen NAME --secret-file PATH` in `dir`: the public key it prints.
fn keygen(ws: &Workspace, name: &str, secret: &Path) -> String {
    let run = ws.cairn(&[
        "store",
        "keygen",
        name,
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout.trim().to_string()
}

/// A copy of Mimic using `remote`, with more `[remote]` settings.
fn with_remote(remote: &Backend, settings: &str) -> Workspace {
    let ws = remote.mimic();
    let config = ws.read("cairn.toml");
    ws.write(
        "cairn.toml",
        &format!("{config}[remote]\nurl = \"{}\"\n{settings}", remote.url),
    );
    ws
}

#[test]
fn keygen_writes_a_private_secret_and_prints_the_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let secret = ws.path("ci.key");
    let public = keygen(&ws, "ci-1", &secret);
    assert!(public.starts_with("ci-1:"), "{public}");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(ws.read("ci.key").starts_with("ci-1:"));
    // Never overwritten; a bad name is a usage error.
    let again = ws.cairn(&[
        "store",
        "keygen",
        "ci-1",
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );
    let bad = ws.cairn(&["store", "keygen", "a:b", "--secret-file", "/tmp/x"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn only_results_signed_by_a_trusted_key_are_used() {
    for remote in backends() {
        signed_results(&remote);
    }
}

fn signed_results(remote: &Backend) {
    let keys = Workspace::new();
    let ci_key = keys.path("ci.key");
    let ci_public = keygen(&keys, "ci", &ci_key);
    let other_public = keygen(&keys, "other", &keys.path("other.key"));

    let ci = with_remote(
        remote,
        &format!("upload = true\nsigning_key = \"{}\"\n", ci_key.display()),
    );
    ci.json_run(&["test"], 0);

    let trusting = with_remote(remote, &format!("trusted_keys = [\"{ci_public}\"]\n"));
    let hit = trusting.json_run(&["test"], 0);
    assert_eq!(
        hit.count("remote_cached"),
        13,
        "{}: {}",
        remote.name,
        hit.stderr
    );
    assert_eq!(hit.count("untrusted"), 0);
    assert!(
        !trusting.path("apps/web/.cairn-signature").exists(),
        "a signature is never an output"
    );

    let doubting = with_remote(remote, &format!("trusted_keys = [\"{other_public}\"]\n"));
    let miss = doubting.json_run(&["test"], 0);
    assert_eq!(miss.count("remote_cached"), 0, "{}", remote.name);
    assert_eq!(
        miss.count("untrusted"),
        13,
        "{}: {}",
        remote.name,
        miss.stderr
    );
    assert_eq!(miss.count("executed"), 13);
}

#[test]
fn unsigned_and_moved_results_are_not_trusted() {
    for remote in backends() {
        unsigned_or_moved(&remote);
    }
}

fn unsigned_or_moved(remote: &Backend) {
    let keys = Workspace::new();
    let ci_key = keys.path("ci.key");
    let ci_public = keygen(&keys, "ci", &ci_key);
    // Unsigned uploads (a laptop with upload on but no key) are not trusted.
    let unsigned = with_remote(remote, "upload = true\n");
    unsigned.json_run(&["build", "//packages/design-tokens:all"], 0);
    let trusting = with_remote(remote, &format!("trusted_keys = [\"{ci_public}\"]\n"));
    let run = trusting.json_run(&["build", "//packages/design-tokens:all"], 0);
    assert_eq!(
        run.count("remote_cached"),
        0,
        "{}: {}",
        remote.name,
        run.stderr
    );
    assert!(run.count("untrusted") > 0, "{}", remote.name);

    // A signed result copied under another action's key is refused (needs the server's files).
    let Some(cas) = &remote.blobs else {
        return;
    };
    // CI signs, and trusts only its own key: the unsigned results above run again there and
    // are replaced by signed ones.
    let signed = with_remote(
        remote,
        &format!(
            "upload = true\nsigning_key = \"{}\"\ntrusted_keys = [\"{ci_public}\"]\n",
            ci_key.display()
        ),
    );
    signed.json_run(&["test"], 0);
    let ac = cas.parent().unwrap().join("ac");
    let mut entries = files_under(&ac);
    assert!(entries.len() >= 2, "{}", remote.name);
    let (from, bytes) = entries.remove(0);
    let (to, _) = entries.remove(0);
    assert_ne!(from, to);
    std::fs::write(ac.join(&to), bytes).unwrap();
    let laptop = with_remote(remote, &format!("trusted_keys = [\"{ci_public}\"]\n"));
    let run = laptop.json_run(&["test"], 0);
    assert_eq!(run.count("untrusted"), 1, "{}: {}", remote.name, run.stderr);
    assert!(run.count("executed") >= 1);
}

#[test]
fn a_result_whose_blobs_are_gone_is_a_miss_not_a_failure() {
    for remote in backends() {
        let Some(cas) = &remote.blobs else {
            continue;
        };
        let remote_flag = format!("--remote={}", remote.url);
        let ci = remote.mimic();
        ci.json_run(&["test", &remote_flag, "--remote-upload"], 0);
        // The server evicted every blob but kept the results.
        std::fs::remove_dir_all(cas).unwrap();
        let laptop = remote.mimic();
        let run = laptop.json_run(&["test", &remote_flag, "--remote-upload"], 0);
        assert_eq!(run.count("executed"), 13, "{}: {}", remote.name, run.stderr);
        assert!(
            !run.stderr.contains("warning"),
            "{}: {}",
            remote.name,
            run.stderr
        );
        // Uploaded again: a third machine gets every result.
        let third = remote.mimic();
        let hit = third.json_run(&["test", &remote_flag], 0);
        assert_eq!(
            hit.count("remote_cached"),
            13,
            "{}: {}",
            remote.name,
            hit.stderr
        );
    }
}

#[test]
fn minimal_downloads_fetch_only_what_a_local_action_reads() {
    for remote in backends() {
        minimal_downloads(&remote);
    }
}

fn minimal_downloads(remote: &Backend) {
    let ci = remote.mimic();
    let remote_flag = format!("--remote={}", remote.url);
    ci.json_run(&["test", &remote_flag, "--remote-upload"], 0);

    // A fresh machine runs every test without the outputs: all remote hits, none in place.
    let fresh = remote.mimic();
    let minimal = fresh.json_run(&["test", &remote_flag, "--remote-download=minimal"], 0);
    assert_eq!(
        minimal.count("executed"),
        0,
        "{}: {}",
        remote.name,
        minimal.stderr
    );
    assert_eq!(minimal.count("remote_cached"), 13, "{}", remote.name);
    assert!(
        outputs(&fresh).is_empty(),
        "{}: nothing restored",
        remote.name
    );
    let targets = minimal.json()["targets"].as_array().unwrap().clone();
    for t in &targets {
        let digest = t["remote_action_digest"].as_str().unwrap_or_default();
        assert!(
            digest.starts_with("sha256:") || digest.starts_with("blake3:"),
            "{}: {t}",
            remote.name
        );
    }

    // A leaf edit runs the app here: it reads the tokens' outputs, fetched first.
    let app = fresh.path("apps/web/src/app.js");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n// edited\n")).unwrap();
    let edit = fresh.json_run(&["test", &remote_flag, "--remote-download=minimal"], 0);
    assert!(
        edit.count("executed") >= 1,
        "{}: {}",
        remote.name,
        edit.stderr
    );

    // With `all`, every output is downloaded and identical to the CI machine's (but the
    // edited app's).
    let all = fresh.json_run(&["test", &remote_flag], 0);
    assert_eq!(all.count("executed"), 0, "{}: {}", remote.name, all.stderr);
    let want: Vec<_> = outputs(&ci)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("apps/web"))
        .collect();
    let got: Vec<_> = outputs(&fresh)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("apps/web"))
        .collect();
    assert_eq!(got, want, "{}", remote.name);
    assert!(
        fresh.path("apps/web/dist/app.js").exists(),
        "{}",
        remote.name
    );
}

#[test]
fn a_remote_killed_mid_build_is_one_warning_and_the_rest_built_locally() {
    for remote in backends() {
        killed_mid_build(&remote);
    }
}

fn killed_mid_build(remote: &Backend) {
    // A chain t1 → … → t8: CI has uploaded t1..t4; the second machine gets those from the
    // remote, then the remote dies while it builds t5.
    let chain: String = (1..=8)
        .map(|i| {
            let dep = if i > 1 {
                format!("deps = [\":t{}\"], ", i - 1)
            } else {
                String::new()
            };
            format!(
                "action(name = \"t{i}\", {dep}outs = [\"t{i}.txt\"], cmd = \"sleep 0.4; (cat $DEPS; echo {i} {salt}) > $OUT\")\n",
                salt = remote.salt
            )
        })
        .collect();
    let ci = Workspace::new();
    ci.write("BUILD.star", &chain);
    let remote_flag = format!("--remote={}", remote.url);
    let uploaded = ci.json_run(&["build", ":t4", &remote_flag, "--remote-upload"], 0);
    assert_eq!(uploaded.count("executed"), 4);

    let laptop = Workspace::new();
    laptop.write("BUILD.star", &chain);
    let relay = (remote.name != "file").then(|| Relay::start(host_port(&remote.url)));
    let url = match &relay {
        Some(relay) => through(&remote.url, relay),
        None => remote.url.clone(),
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("-C")
        .arg(laptop.root())
        .args(["build", ":t8", "--json", "--remote-upload"])
        .arg(format!("--remote={url}"))
        .env("CAIRN_STORE", laptop.store())
        .env("NO_COLOR", "1")
        .env_remove("CI")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // t4's output in the workspace: the remote hits are done and t5 is running.
    let began = std::time::Instant::now();
    while !laptop.path("t4.txt").exists() {
        assert!(
            began.elapsed().as_secs() < 60,
            "{}: t4 never arrived",
            remote.name
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    match &relay {
        Some(relay) => relay.kill(),
        None => {
            // A shared directory that goes away (an unmounted share): a file where it was.
            let dir = url.strip_prefix("file://").unwrap();
            std::fs::rename(dir, format!("{dir}.gone")).unwrap();
            std::fs::write(dir, "").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}: {stderr}", remote.name);
    assert_eq!(
        stderr.matches("remote cache failed").count(),
        1,
        "{}: {stderr}",
        remote.name
    );
    let run = crate::util::Run {
        code: 0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: stderr.into_owned(),
    };
    let statuses = run.statuses();
    for i in 1..=8 {
        let want = if i <= 4 { "remote_cached" } else { "executed" };
        assert_eq!(
            statuses[&format!("//:t{i}")],
            want,
            "{}: {}",
            remote.name,
            run.stderr
        );
    }
    let want: String = (1..=8).map(|i| format!("{i} {}\n", remote.salt)).collect();
    assert_eq!(laptop.read("t8.txt"), want);
}

#[test]
fn an_input_gone_from_the_remote_is_rebuilt_here_not_a_failure() {
    for remote in backends() {
        let Some(cas) = &remote.blobs else {
            continue; // A server whose storage the test cannot reach.
        };
        input_gone(&remote, cas);
    }
}

fn input_gone(remote: &Backend, cas: &Path) {
    let remote_flag = format!("--remote={}", remote.url);
    let ci = remote.mimic();
    ci.json_run(&["test", &remote_flag, "--remote-upload"], 0);
    // The server evicts one output of the web tokens (the result and the rest stay).
    let css = std::fs::read(ci.path("packages/design-tokens/dist/web/tokens.css")).unwrap();
    let evicted: Vec<_> = files_under(cas)
        .into_iter()
        .filter(|(_, bytes)| *bytes == css)
        .collect();
    assert!(
        !evicted.is_empty(),
        "{}: no blob of tokens.css",
        remote.name
    );
    for (rel, _) in evicted {
        std::fs::remove_file(cas.join(rel)).unwrap();
    }

    // A fresh machine takes the tokens' result without its bytes, then needs them for the
    // edited app: the transform runs here instead of the build failing.
    let laptop = remote.mimic();
    let app = laptop.path("apps/web/src/app.js");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n// edited\n")).unwrap();
    let run = laptop.json_run(
        &[
            "test",
            &remote_flag,
            "--remote-download=minimal",
            "--remote-upload",
        ],
        0,
    );
    assert_eq!(
        run.stderr
            .matches("the outputs of `//packages/design-tokens:tokens_web` are gone from the remote cache; running it here")
            .count(),
        1,
        "{}: {}",
        remote.name,
        run.stderr
    );
    assert_eq!(run.statuses()["//apps/web:build"], "executed");
    assert!(laptop.path("apps/web/dist/app.js").exists());

    // Run again, the transform gave the same bytes, and uploaded them: a third machine gets
    // every unedited result from the remote, byte-identical to CI's.
    let third = remote.mimic();
    let all = third.json_run(&["test", &remote_flag], 0);
    assert_eq!(all.count("executed"), 0, "{}: {}", remote.name, all.stderr);
    assert_eq!(outputs(&third), outputs(&ci), "{}", remote.name);
}

#[test]
fn what_cairn_uploads_reads_back_with_an_independent_reapi_client() {
    let Some(python) = server(
        "CAIRN_TEST_REAPI_PYTHON",
        "the independent REAPI read-back (BuildGrid's venv python)",
    ) else {
        return;
    };
    for remote in backends()
        .into_iter()
        .filter(|b| b.url.starts_with("grpc://"))
    {
        // Mimic, and a workspace with an output directory (a Tree) and a nested file.
        let mimic = remote.mimic();
        let dirs = Workspace::new();
        dirs.write(
            "BUILD.star",
            &format!(
                "action(name = \"site\", out_dirs = [\"site\"], cmd = \"mkdir -p site/a && echo {salt} > site/a/one && echo 2 > site/two\")\n\
                 action(name = \"use\", deps = [\":site\"], srcs = [\"in.txt\"], cmd = \"cat $(find $DEPS -type f | sort) in.txt > $OUT\", outs = [\"all.txt\"])\n\
                 test(name = \"t\", deps = [\":use\"], cmd = \"grep -q {salt} all.txt\")\n",
                salt = remote.salt
            ),
        );
        dirs.write("in.txt", "input\n");
        for ws in [&mimic, &dirs] {
            let run = ws.json_run(
                &[
                    "test",
                    &format!("--remote={}", remote.url),
                    "--remote-upload",
                ],
                0,
            );
            let digests: Vec<String> = run.json()["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| t["remote_action_digest"].as_str().map(String::from))
                .collect();
            assert!(!digests.is_empty(), "{}: {}", remote.name, run.stdout);
            let out = std::process::Command::new(&python)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/reapi_readback.py"
                ))
                .arg(format!("--server={}", remote.url))
                .arg(format!("--workspace={}", ws.root().display()))
                .args(&digests)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {}{stdout}",
                remote.name,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(stdout.lines().count(), digests.len(), "{stdout}");
        }
        assert!(dirs.path("site/a/one").exists());
    }
}

/// A Mimic run whose remote failed: every target built here, and the failure said once.
fn assert_built_here_with_one_warning(run: &crate::util::Run, what: &str) {
    assert_eq!(run.count("executed"), 13, "{what}: {}", run.stderr);
    assert_eq!(
        run.stderr.matches("remote cache failed").count(),
        1,
        "{what}: {}",
        run.stderr
    );
}

/// `cairn.toml` of a Mimic copy that uses `url` with the test CA (and `client`, a certificate
/// and key, when set).
fn tls_workspace(
    remote: &Backend,
    url: &str,
    ca: Option<&str>,
    client: Option<(&str, &str)>,
) -> Workspace {
    let ws = remote.mimic();
    let mut config = format!("{}[remote]\nurl = \"{url}\"\n", ws.read("cairn.toml"));
    if let Some(ca) = ca {
        config.push_str(&format!("tls_ca = \"{ca}\"\n"));
    }
    if let Some((cert, key)) = client {
        config.push_str(&format!(
            "tls_client_cert = \"{cert}\"\ntls_client_key = \"{key}\"\n"
        ));
    }
    ws.write("cairn.toml", &config);
    ws
}

#[test]
fn tls_remotes_with_a_private_ca_and_a_client_certificate() {
    // nginx started by the test scripts: the HTTP cache over HTTPS, and gRPC over TLS in front
    // of buildbox-casd (requiring a client certificate), both with the scripts' own CA.
    let (Some(https), Some(grpcs), Some(tls)) = (
        server("CAIRN_TEST_HTTPS_CACHE", "the HTTPS cache"),
        server("CAIRN_TEST_GRPCS", "gRPC over TLS"),
        server("CAIRN_TEST_TLS_DIR", "the test CA"),
    ) else {
        return;
    };
    let pem = |name: &str| format!("{tls}/{name}");
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client.key"));
    for (name, url, client) in [
        ("https", format!("{https}/tls"), None),
        ("grpcs", grpcs.clone(), Some((cert.as_str(), key.as_str()))),
    ] {
        let remote = Backend::new(
            if name == "https" { "https" } else { "grpcs" },
            |_, _| String::new(),
            |_, _| None,
        );
        let url = if name == "https" {
            format!("{url}/{}", remote.salt)
        } else {
            url
        };
        let ci = tls_workspace(&remote, &url, Some(&ca), client);
        let run = ci.json_run(&["test", "--remote-upload"], 0);
        assert_eq!(run.count("executed"), 13, "{name}: {}", run.stderr);
        assert!(!run.stderr.contains("warning"), "{name}: {}", run.stderr);
        assert!(run.json()["bytes_uploaded"].as_u64().unwrap() > 0);
        let laptop = tls_workspace(&remote, &url, Some(&ca), client);
        let hit = laptop.json_run(&["test"], 0);
        assert_eq!(hit.count("remote_cached"), 13, "{name}: {}", hit.stderr);
        assert_eq!(outputs(&laptop), outputs(&ci), "{name}");

        // Without the private CA the server's certificate is not trusted: one warning, and
        // everything is built here.
        let untrusting = tls_workspace(&remote, &url, None, client);
        let run = untrusting.json_run(&["test"], 0);
        assert_built_here_with_one_warning(&run, name);
        assert!(
            run.stderr.to_lowercase().contains("certificate"),
            "{name}: the warning says why: {}",
            run.stderr
        );
    }
    // The gRPC proxy requires a client certificate: without one, the handshake fails.
    let remote = Backend::new("grpcs", |_, _| String::new(), |_, _| None);
    let anonymous = tls_workspace(&remote, &grpcs, Some(&ca), None);
    let run = anonymous.json_run(&["test"], 0);
    assert_built_here_with_one_warning(&run, "grpcs without a client certificate");
    assert!(
        run.stderr.contains("requires a client certificate"),
        "{}",
        run.stderr
    );

    // A client key without its certificate is a usage error.
    let half = remote.mimic();
    half.write(
        "cairn.toml",
        &format!("[remote]\nurl = \"{grpcs}\"\ntls_client_key = \"{key}\"\n"),
    );
    let run = half.cairn(&["build"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("go together"), "{}", run.stderr);
}

#[test]
fn symlinks_in_output_directories_round_trip_through_every_remote() {
    for remote in backends() {
        let build = format!(
            "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"mkdir -p node_modules/esb node_modules/.bin && printf '#!/bin/sh\\\\necho {salt}\\\\n' > node_modules/esb/cli && chmod +x node_modules/esb/cli && ln -s ../esb/cli node_modules/.bin/esb\")\n\
             action(name = \"use\", deps = [\":tree\"], cmd = \"node_modules/.bin/esb > $OUT\", outs = [\"out.txt\"])\n",
            salt = remote.salt
        );
        let remote_flag = format!("--remote={}", remote.url);
        let ci = Workspace::new();
        ci.write("BUILD.star", &build);
        let first = ci.json_run(&["build", &remote_flag, "--remote-upload"], 0);
        assert_eq!(
            first.count("executed"),
            2,
            "{}: {}",
            remote.name,
            first.stderr
        );
        let laptop = Workspace::new();
        laptop.write("BUILD.star", &build);
        let hit = laptop.json_run(&["build", &remote_flag], 0);
        assert_eq!(
            hit.count("remote_cached"),
            2,
            "{}: {}",
            remote.name,
            hit.stderr
        );
        assert_eq!(
            std::fs::read_link(laptop.path("node_modules/.bin/esb")).unwrap(),
            Path::new("../esb/cli"),
            "{}",
            remote.name
        );
        assert_eq!(laptop.read("out.txt"), format!("{}\n", remote.salt));
    }
}

#[test]
fn a_fixed_output_result_keeps_its_recorded_inputs_through_every_remote() {
    // The inputs digest rides in the result's metadata: a server that kept it lets a fresh
    // machine take the install without running it.
    for remote in backends() {
        let build = |digest: &str| {
            format!(
                "fixed_output(name = \"deps\", srcs = [\"lock.txt\"], cmd = \"cp lock.txt $OUT\", outs = [\"installed.txt\"], digest = \"{digest}\")\n"
            )
        };
        let remote_flag = format!("--remote={}", remote.url);
        let ci = Workspace::new();
        ci.write("lock.txt", &format!("{}\n", remote.salt));
        ci.write("BUILD.star", &build(&no_digest()));
        let run = ci.cairn(&["build"]);
        let actual = run.actual_digest();
        ci.write("BUILD.star", &build(&actual));
        ci.json_run(&["build", &remote_flag, "--remote-upload"], 0);
        let laptop = Workspace::new();
        laptop.write("lock.txt", &format!("{}\n", remote.salt));
        laptop.write("BUILD.star", &build(&actual));
        let hit = laptop.json_run(&["build", &remote_flag], 0);
        assert_eq!(
            hit.count("remote_cached"),
            1,
            "{}: {}",
            remote.name,
            hit.stderr
        );
    }
}
