//! Hermeticity (issue 3): the namespace sandbox hides the file system, home and network;
//! fixed-output actions get the network and must match their digest; `build --check` finds
//! non-reproducible actions; tool identity enters the key.

use std::io::Write;
use std::net::TcpListener;

use crate::util::{MyTool, Workspace, namespaces_available, no_digest};

/// A workspace whose secret file sits next to the package, outside every input.
fn with_secret() -> Workspace {
    let ws = Workspace::new();
    ws.write("secret.txt", "top secret\n");
    ws
}

#[test]
fn relative_and_absolute_reads_of_undeclared_files_fail() {
    if !namespaces_available() {
        return;
    }
    let ws = with_secret();
    let abs = ws.path("secret.txt");
    ws.write(
        "pkg/BUILD.star",
        &format!(
            "action(name = \"rel\", cmd = \"cat ../secret.txt > $OUT\", outs = [\"rel.txt\"])\n\
             action(name = \"abs\", cmd = \"cat {} > $OUT\", outs = [\"abs.txt\"])\n",
            abs.display()
        ),
    );
    let run = ws.json_run(&["build", "--keep-going"], 1);
    assert_eq!(run.statuses()["//pkg:rel"], "failed");
    assert_eq!(run.statuses()["//pkg:abs"], "failed", "{}", run.stderr);
    assert!(!run.stderr.contains("top secret"));
    // The directory sandbox hides relative paths only; the namespace sandbox is what hides
    // the absolute one.
    let run = ws.json_run(&["build", "//pkg:abs", "--sandbox", "directory"], 0);
    assert_eq!(run.statuses()["//pkg:abs"], "executed");
}

#[test]
fn home_is_empty_and_writes_outside_outputs_vanish() {
    if !namespaces_available() {
        return;
    }
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("escaped");
    ws.write(
        "BUILD.star",
        &format!(
            "test(name = \"home\", cmd = 'test -z \"$(ls -A $HOME)\" && ! cat ~/.ssh/id_rsa && ! cat /root/.bashrc && id -u | grep -qx 1000')\n\
             test(name = \"write\", cmd = 'echo x > /tmp/scratch; (echo x > {m}) 2>/dev/null; (echo x > /etc/evil) 2>/dev/null; true')\n",
            m = marker.display()
        ),
    );
    let run = ws.json_run(&["test"], 0);
    assert_eq!(run.count("executed"), 2, "{}", run.stderr);
    assert!(
        !marker.exists(),
        "a write outside the sandbox reached the host"
    );
    assert!(!std::path::Path::new("/etc/evil").exists());
}

#[test]
fn no_network_except_in_fixed_output_actions_whose_digest_must_match() {
    if !namespaces_available() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"hello from the host\n");
        }
    });
    let connect = format!(
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=5); print(s.recv(100).decode().strip())\""
    );
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        &format!(
            "action(name = \"online\", cmd = \"\"\"{connect} > $OUT\"\"\", outs = [\"got.txt\"])\n"
        ),
    );
    let run = ws.json_run(&["build"], 1);
    assert_eq!(run.statuses()["//:online"], "failed");

    let zero = no_digest();
    let fetch = |digest: &str| {
        format!(
            "fixed_output(name = \"fetch\", cmd = \"\"\"{connect} > $OUT\"\"\", outs = [\"got.txt\"], digest = \"{digest}\")\n"
        )
    };
    ws.write("BUILD.star", &fetch(&zero));
    let run = ws.json_run(&["build"], 1);
    assert!(
        run.stderr.contains(&format!("expected: {zero}")),
        "{}",
        run.stderr
    );
    let actual = run.actual_digest();
    assert!(
        actual.starts_with("blake3:") && actual.len() == 71,
        "{actual}"
    );

    ws.write("BUILD.star", &fetch(&actual));
    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.statuses()["//:fetch"], "executed");
    assert_eq!(ws.read("got.txt"), "hello from the host\n");
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
    // Another command is run again and checked against the digest (same bytes: it passes).
    ws.write(
        "BUILD.star",
        &fetch(&actual).replace("timeout=5", "timeout=6"),
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
}

#[test]
fn a_lockfile_edited_under_a_stale_digest_is_caught_here_not_on_a_fresh_machine() {
    let ws = Workspace::new();
    let deps = |digest: &str| {
        format!(
            "fixed_output(name = \"deps\", srcs = [\"lock.txt\"], cmd = \"cp lock.txt $OUT\", outs = [\"installed.txt\"], digest = \"{digest}\")\n"
        )
    };
    ws.write("lock.txt", "esbuild 0.28.2\n");
    ws.write("BUILD.star", &deps(&no_digest()));
    let v28 = ws.json_run(&["build"], 1).actual_digest();
    ws.write("BUILD.star", &deps(&v28));
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);

    // `npm install --package-lock-only esbuild@0.27.0`, digest not updated: the install runs
    // again and its new output is refused, with the digest to paste.
    ws.write("lock.txt", "esbuild 0.27.0\n");
    let stale = ws.json_run(&["build"], 1);
    assert_eq!(stale.statuses()["//:deps"], "failed", "{}", stale.stderr);
    assert!(
        stale.stderr.contains(&format!("expected: {v28}")),
        "{}",
        stale.stderr
    );
    let v27 = stale.actual_digest();
    assert_ne!(v27, v28);
    ws.write("BUILD.star", &deps(&v27));
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("installed.txt"), "esbuild 0.27.0\n");

    // Back to the old lockfile and digest: its result is still in the store.
    ws.write("lock.txt", "esbuild 0.28.2\n");
    ws.write("BUILD.star", &deps(&v28));
    let back = ws.json_run(&["build"], 0);
    assert_eq!(back.count("cached"), 1, "{}", back.stderr);
    assert_eq!(ws.read("installed.txt"), "esbuild 0.28.2\n");
}

#[test]
fn build_check_names_nondeterministic_actions() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"stamp\", cmd = \"date +%s%N > $OUT\", outs = [\"stamp.txt\"])\n\
         action(name = \"stable\", cmd = \"echo same > $OUT\", outs = [\"same.txt\"])\n",
    );
    ws.json_run(&["build"], 0);
    let run = ws.json_run(&["build", "--check", "--keep-going"], 1);
    assert_eq!(run.statuses()["//:stamp"], "failed");
    assert_eq!(run.statuses()["//:stable"], "cached");
    assert!(
        run.stderr
            .contains("//:stamp: is not reproducible: re-running it changed\n    stamp.txt\n      cached: blake3:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 re-run by --check and reproducible"),
        "{}",
        run.stderr
    );
    // Full digests, and both versions kept for `diff`.
    let digests: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("cached: ")
                .or(l.trim().strip_prefix("now:    "))
        })
        .collect();
    assert_eq!(digests.len(), 2, "{}", run.stderr);
    assert!(
        digests.iter().all(|d| d.len() == "blake3:".len() + 64),
        "{digests:?}"
    );
    let kept = ws.store().join("logs/check/_root/stamp");
    let (cached, now) = (
        std::fs::read_to_string(kept.join("stamp.txt.cached")).unwrap(),
        std::fs::read_to_string(kept.join("stamp.txt.now")).unwrap(),
    );
    assert_eq!(cached, ws.read("stamp.txt"));
    assert_ne!(cached, now);
}

#[test]
fn build_check_runs_fixed_output_actions_again_too() {
    let ws = Workspace::new();
    let build = |digest: &str| {
        format!(
            "fixed_output(name = \"fetch\", cmd = \"echo fetched > $OUT\", outs = [\"f.txt\"], digest = \"{digest}\")\n"
        )
    };
    ws.write("BUILD.star", &build(&no_digest()));
    let run = ws.cairn(&["build"]);
    let actual = run.actual_digest();
    ws.write("BUILD.star", &build(&actual));
    ws.json_run(&["build"], 0);
    let check = ws.json_run(&["build", "--check"], 0);
    assert_eq!(check.statuses()["//:fetch"], "cached");
    assert!(
        check.stderr.contains("1 re-run by --check"),
        "{}",
        check.stderr
    );
    assert_eq!(
        check.json()["targets"][0]["checked"],
        true,
        "{}",
        check.stdout
    );
}

#[test]
fn mimic_is_reproducible() {
    let ws = Workspace::mimic();
    ws.json_run(&["build"], 0);
    let run = ws.json_run(&["build", "--check"], 0);
    assert_eq!(run.count("failed"), 0);
}

#[test]
fn replacing_a_tool_is_a_cache_miss() {
    let ws = Workspace::new();
    let tool = MyTool::on_tool_path_of(&ws);
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"mytool > $OUT\", outs = [\"v.txt\"])\n",
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("v.txt"), "mytool 1\n");
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
    tool.install("2");
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("v.txt"), "mytool 2\n");
}

#[test]
fn explicit_tool_that_does_not_exist_fails_clearly() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", tools = [\"no-such-tool\"], cmd = \"true\", outs = [\"x\"])\n",
    );
    let run = ws.json_run(&["build"], 1);
    assert!(
        run.stderr.contains(
            "tool `no-such-tool` was not found on the tool path `/usr/local/bin:/usr/bin:/bin`"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn pass_env_reaches_the_command_without_entering_the_key() {
    let ws = Workspace::new();
    ws.write("BUILD.star", "action(name = \"a\", pass_env = [\"CAIRN_TEST_CI\"], cmd = 'echo \"$CAIRN_TEST_CI\" > $OUT', outs = [\"ci.txt\"])\n");
    let run = |value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["-C"])
            .arg(ws.root())
            .args(["build", "--json"])
            .env("CAIRN_STORE", ws.store())
            .env("CAIRN_TEST_CI", value)
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(run("one")["counts"]["executed"], 1);
    assert_eq!(ws.read("ci.txt"), "one\n");
    assert_eq!(run("two")["counts"]["cached"], 1);
    let why = ws.cairn(&["why", "//:a"]);
    assert!(
        why.stdout
            .contains("note: pass_env [CAIRN_TEST_CI] reach the command but not the key"),
        "{}",
        why.stdout
    );
}

#[test]
fn sandbox_none_is_explicit_and_shown() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"echo x > $OUT\", outs = [\"x.txt\"])\n",
    );
    let run = ws.json_run(&["build", "--sandbox", "none"], 0);
    assert!(run.stderr.contains("(sandbox: none)"), "{}", run.stderr);
    assert_eq!(ws.read("x.txt"), "x\n");
}

#[test]
fn a_result_from_sandbox_none_never_serves_a_sandboxed_build_nor_a_remote() {
    // Issue 13: a test that reads an undeclared file passes without a sandbox; the next
    // sandboxed run must run it (and fail), not report it cached.
    let ws = with_secret();
    ws.write(
        "pkg/BUILD.star",
        "test(name = \"peek\", cmd = \"cat ../secret.txt\")\n",
    );
    let remote = tempfile::tempdir().unwrap();
    let remote_flag = format!("--remote=file://{}", remote.path().display());
    let loose = ws.json_run(
        &["test", "--sandbox", "none", &remote_flag, "--remote-upload"],
        0,
    );
    assert_eq!(loose.statuses()["//pkg:peek"], "executed");
    assert!(
        !remote.path().join("ac").exists(),
        "an unsandboxed result is never uploaded"
    );
    let again = ws.json_run(&["test", "--sandbox", "none"], 0);
    assert_eq!(
        again.statuses()["//pkg:peek"],
        "cached",
        "it serves builds like it"
    );
    let strict = ws.json_run(&["test", "--sandbox", "directory"], 1);
    assert_eq!(
        strict.statuses()["//pkg:peek"],
        "failed",
        "{}",
        strict.stderr
    );
    assert!(
        !strict.stderr.contains("(cached) PASSED"),
        "{}",
        strict.stderr
    );
}

/// Runs `cairn -C <ws> build --sandbox directory` (whose working directory is the sandbox's
/// own path) with the environment given, asserting success.
fn build_in_directory_sandbox(ws: &Workspace, env: &[(&str, &std::path::Path)]) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.arg("-C")
        .arg(ws.root())
        .args(["build", "--sandbox", "directory"])
        .env("CAIRN_STORE", ws.store())
        .env_remove("CAIRN_SANDBOX_BASE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sandboxes_go_to_the_configured_base_which_is_left_empty() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"where\", cmd = \"pwd > $OUT\", outs = [\"where.txt\"])\n",
    );
    let base = tempfile::tempdir().unwrap();
    // What a killed build left: a sandbox named after a process that is gone.
    let gone = std::process::Command::new("true")
        .spawn()
        .and_then(|mut c| c.wait().map(|_| c.id()))
        .unwrap();
    let stale = base.path().join(format!("action-{gone}-x1y2z3"));
    std::fs::create_dir_all(stale.join("root/pkg")).unwrap();
    std::fs::write(stale.join("root/pkg/big.bin"), "left behind").unwrap();

    build_in_directory_sandbox(&ws, &[("CAIRN_SANDBOX_BASE", base.path())]);
    let sandbox = ws.read("where.txt");
    assert!(
        sandbox.starts_with(&format!("{}/action-", base.path().display())),
        "the action ran in {sandbox}"
    );
    let left: Vec<_> = std::fs::read_dir(base.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the action's sandbox and the killed build's are both gone: {left:?}"
    );
}

#[test]
fn by_default_sandboxes_go_to_a_private_tmpfs_directory_or_the_store() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"where\", cmd = \"pwd > $OUT\", outs = [\"where.txt\"])\n",
    );
    build_in_directory_sandbox(&ws, &[]);
    let sandbox = ws.read("where.txt");
    let uid = std::fs::metadata(ws.root()).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let memory = format!("/dev/shm/cairn-{}/action-", uid.unwrap());
    let disk = format!("{}/sandbox/action-", ws.store().display());
    assert!(
        sandbox.starts_with(&memory) || sandbox.starts_with(&disk),
        "the action ran in {sandbox}, neither under {memory} nor {disk}"
    );
}

#[test]
fn actions_run_with_umask_022_whatever_the_callers() {
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"mode\", cmd = 'touch $TMPDIR/f && mkdir $TMPDIR/d && stat -c %a $TMPDIR/f $TMPDIR/d > $OUT', outs = [\"mode.txt\"])\n",
    );
    let mut modes = vec!["directory", "none"];
    if namespaces_available() {
        modes.push("namespace");
    }
    for mode in modes {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("umask 077 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg("-C")
            .arg(ws.root())
            .args(["build", "--sandbox", mode])
            .env("CAIRN_STORE", ws.store().join(mode))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ws.read("mode.txt"), "644\n755\n", "with the {mode} sandbox");
    }
}

#[test]
fn a_tool_installed_outside_usr_runs_with_its_whole_installation_in_the_sandbox() {
    if !namespaces_available() {
        return;
    }
    // As nvm, volta or /opt/node lay one out: `bin/<tool>` links into `lib/`, which reads
    // `share/`.
    let inst = tempfile::tempdir().unwrap();
    let root = inst.path();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("lib/mytool")).unwrap();
    std::fs::create_dir_all(root.join("share/mytool")).unwrap();
    std::fs::write(root.join("share/mytool/data.txt"), "data of mytool\n").unwrap();
    let cli = root.join("lib/mytool/cli.sh");
    std::fs::write(
        &cli,
        "#!/bin/sh\nhere=$(dirname \"$(readlink -f \"$0\")\")\ncat \"$here/../../share/mytool/data.txt\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../lib/mytool/cli.sh", root.join("bin/mytool")).unwrap();

    let ws = Workspace::new();
    ws.write(
        "cairn.toml",
        &format!(
            "[build]\ntool_path = [\"{}/bin\", \"/usr/bin\", \"/bin\"]\n",
            root.display()
        ),
    );
    ws.write(
        "BUILD.star",
        "action(name = \"a\", cmd = \"mytool > $OUT\", outs = [\"o.txt\"])\n",
    );
    let run = ws.json_run(&["build", "--sandbox", "namespace"], 0);
    assert_eq!(run.count("executed"), 1);
    assert_eq!(ws.read("o.txt"), "data of mytool\n");
}

#[test]
fn a_tools_installation_is_in_its_identity_and_its_own_packages_are_hidden() {
    // A pyenv-like interpreter outside /usr: its standard library is part of what it is, its
    // `site-packages` is not (and is hidden from normal actions); an npm-like script's package
    // is part of what it is.
    let inst = tempfile::tempdir().unwrap();
    let prefix = inst.path().join("versions/3.12.9");
    let write = |rel: &str, text: &str| {
        let path = prefix.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "bin/python3.12",
        "#!/bin/sh\nlib=\"$(dirname \"$(readlink -f \"$0\")\")/../lib/python3.12\"\ncat \"$lib/json/__init__.py\"\nls \"$lib/site-packages\" | wc -l\n",
    );
    write("lib/python3.12/os.py", "# os\n");
    write("lib/python3.12/json/__init__.py", "json v1\n");
    write("lib/python3.12/site-packages/six.py", "# six\n");
    write(
        "lib/node_modules/fake/package.json",
        "{\"name\": \"fake\"}\n",
    );
    write(
        "lib/node_modules/fake/bin/cli.sh",
        "#!/bin/sh\ncat \"$(dirname \"$(readlink -f \"$0\")\")/../lib/x.txt\"\n",
    );
    write("lib/node_modules/fake/lib/x.txt", "fake v1\n");
    use std::os::unix::fs::PermissionsExt;
    for rel in ["bin/python3.12", "lib/node_modules/fake/bin/cli.sh"] {
        std::fs::set_permissions(prefix.join(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("python3.12", prefix.join("bin/python3")).unwrap();
    std::os::unix::fs::symlink(
        "../lib/node_modules/fake/bin/cli.sh",
        prefix.join("bin/fake"),
    )
    .unwrap();

    let ws = Workspace::new();
    ws.write(
        "cairn.toml",
        &format!(
            "[build]\ntool_path = [\"{}/bin\", \"/usr/bin\", \"/bin\"]\n",
            prefix.display()
        ),
    );
    ws.write(
        "BUILD.star",
        "action(name = \"py\", cmd = \"python3 > $OUT\", outs = [\"py.txt\"])\n\
         action(name = \"fake\", cmd = \"fake > $OUT\", outs = [\"fake.txt\"])\n",
    );
    let namespace = namespaces_available();
    let sandbox = if namespace { "namespace" } else { "directory" };
    let build = || ws.json_run(&["build", "--sandbox", sandbox], 0);
    assert_eq!(build().count("executed"), 2);
    // Hidden in the namespace sandbox: nothing in its site-packages.
    let visible = if namespace { "0" } else { "1" };
    assert_eq!(ws.read("py.txt"), format!("json v1\n{visible}\n"));
    assert_eq!(ws.read("fake.txt"), "fake v1\n");

    // An installed package is not the interpreter: still cached.
    write("lib/python3.12/site-packages/six.py", "# six 2\n");
    assert_eq!(build().count("executed"), 0);
    // Its standard library is, and npm's package is npm.
    write("lib/python3.12/json/__init__.py", "json v2\n");
    write("lib/node_modules/fake/lib/x.txt", "fake v2\n");
    let why = ws.cairn(&["why", "//:py"]);
    assert!(
        why.stdout.contains("tool python3 changed") && why.stdout.contains("installation"),
        "{}",
        why.stdout
    );
    let run = build();
    assert_eq!(run.statuses()["//:py"], "executed", "{}", run.stderr);
    assert_eq!(run.statuses()["//:fake"], "executed", "{}", run.stderr);
    assert_eq!(ws.read("py.txt"), format!("json v2\n{visible}\n"));
    assert_eq!(ws.read("fake.txt"), "fake v2\n");
}

#[test]
fn global_node_packages_are_hidden_but_for_the_tools_installed_there() {
    if !namespaces_available() || !std::path::Path::new("/usr/lib/node_modules/npm").is_dir() {
        return;
    }
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"plain\", cmd = \"ls /usr/lib/node_modules > $OUT\", outs = [\"plain.txt\"])\n\
         action(name = \"npm\", cmd = \"npm --version > $OUT; ls /usr/lib/node_modules >> $OUT\", outs = [\"npm.txt\"])\n",
    );
    ws.json_run(&["build", "--sandbox", "namespace"], 0);
    assert_eq!(ws.read("plain.txt"), "");
    let npm = ws.read("npm.txt");
    assert!(npm.ends_with("\nnpm\n"), "only npm itself is there: {npm}");
}

#[test]
fn inputs_are_read_only_in_the_namespace_sandbox() {
    if !namespaces_available() {
        return;
    }
    // A dependency's installed tree: Python writes `__pycache__` next to what it imports,
    // which must neither fail the action nor change the input.
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"site\", out_dirs = [\"deps/site\"], cmd = \"mkdir -p deps/site && echo 'VALUE = 42' > deps/site/mod.py\")\n\
         action(name = \"use\", deps = [\":site\"], cmd = \"python3 -c 'import sys; sys.path.insert(0, \\\"deps/site\\\"); import mod; print(mod.VALUE)' > $OUT\", outs = [\"out.txt\"])\n\
         action(name = \"tamper\", deps = [\":site\"], srcs = [\"src/a.txt\"], cmd = \"(echo x >> deps/site/mod.py || echo refused) > $OUT; (echo y >> src/a.txt || echo refused) >> $OUT\", outs = [\"tamper.txt\"])\n",
    );
    ws.write("src/a.txt", "a\n");
    let run = ws.json_run(&["build", "--sandbox", "namespace"], 0);
    assert_eq!(run.count("executed"), 3, "{}", run.stderr);
    assert_eq!(ws.read("out.txt"), "42\n");
    assert_eq!(ws.read("tamper.txt"), "refused\nrefused\n");
}

#[test]
fn inputs_are_read_only_files_in_the_directory_sandbox() {
    // Modes only (they do not bind root), in the directories the namespace sandbox mounts
    // read-only: those holding only inputs (not the working directory, where outputs go).
    let ws = Workspace::new();
    ws.write(
        "BUILD.star",
        "action(name = \"dep\", cmd = \"mkdir -p gen && echo d > gen/d.txt && echo '#!/bin/sh' > gen/tool.sh && chmod +x gen/tool.sh\", outs = [\"gen/d.txt\", \"gen/tool.sh\"])\n\
         action(name = \"use\", deps = [\":dep\"], srcs = [\"src/a.txt\", \"top.txt\"], cmd = \"stat -c '%n %a' src/a.txt gen/d.txt gen/tool.sh top.txt > $OUT\", outs = [\"modes.txt\"])\n",
    );
    ws.write("src/a.txt", "a\n");
    ws.write("top.txt", "top\n");
    ws.json_run(&["build", "--sandbox", "directory"], 0);
    assert_eq!(
        ws.read("modes.txt"),
        "src/a.txt 444\ngen/d.txt 444\ngen/tool.sh 555\ntop.txt 644\n"
    );
}

#[test]
fn a_large_dependency_tree_is_made_once_in_the_store_and_mounted_read_only() {
    if !namespaces_available() {
        return;
    }
    let ws = Workspace::new();
    let build = |version: &str| {
        format!(
            "action(name = \"tree\", out_dirs = [\"node_modules\"], cmd = \"for i in $(seq 400); do mkdir -p node_modules/p$((i % 40)) && echo {version} $i > node_modules/p$((i % 40))/f$i.js; done && mkdir -p node_modules/.bin && ln -s ../p1/f1.js node_modules/.bin/tool\")\n\
             action(name = \"a\", deps = [\":tree\"], cmd = \"cat node_modules/p1/f1.js node_modules/.bin/tool > $OUT; find node_modules -type f | wc -l >> $OUT; (echo x > node_modules/p1/new.js || echo refused) >> $OUT\", outs = [\"a.txt\"])\n\
             action(name = \"b\", deps = [\":tree\"], cmd = \"cat node_modules/p2/f2.js > $OUT\", outs = [\"b.txt\"])\n"
        )
    };
    ws.write("BUILD.star", &build("v1"));
    let run = ws.json_run(&["build", "--sandbox", "namespace"], 0);
    assert_eq!(run.count("executed"), 3, "{}", run.stderr);
    assert_eq!(ws.read("a.txt"), "v1 1\nv1 1\n400\nrefused\n");
    assert_eq!(ws.read("b.txt"), "v1 2\n");
    let trees = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(ws.store().join("trees"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    // Both actions used one copy.
    assert_eq!(trees().len(), 1, "{:?}", trees());

    // Another tree is another copy, and what the actions see.
    ws.write("BUILD.star", &build("v2"));
    ws.json_run(&["build", "--sandbox", "namespace"], 0);
    assert_eq!(ws.read("b.txt"), "v2 2\n");
    assert_eq!(trees().len(), 2);
}

#[test]
fn a_scripts_interpreter_named_by_its_first_line_is_a_tool_in_the_key() {
    // `./gen` starts with `#!/usr/bin/env mytool`: replacing mytool must rebuild, as for a
    // tool named in the command.
    let ws = Workspace::new();
    let tool = MyTool::on_tool_path_of(&ws);
    ws.write("gen", "#!/usr/bin/env mytool\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.path("gen"), std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.write(
        "BUILD.star",
        "action(name = \"a\", srcs = [\"gen\"], cmd = \"./gen > $OUT\", outs = [\"v.txt\"])\n",
    );
    let run = ws.json_run(&["build"], 0);
    assert_eq!(run.count("executed"), 1, "{}", run.stderr);
    assert_eq!(ws.read("v.txt"), "mytool 1\n");
    assert_eq!(ws.json_run(&["build"], 0).count("cached"), 1);
    tool.install("2");
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    assert_eq!(ws.read("v.txt"), "mytool 2\n");
}

#[test]
fn fixed_output_digests_pick_this_platforms_one() {
    let ws = Workspace::new();
    let host = format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH);
    let other = format!("blake3:{}", "1".repeat(64));
    let build = |digests: &str| {
        format!(
            "fixed_output(name = \"fetch\", cmd = \"echo fetched > $OUT\", outs = [\"f.txt\"], digests = {{{digests}}})\n"
        )
    };
    // Only another platform's digest: this one's is printed, to add.
    ws.write(
        "BUILD.star",
        &build(&format!("\"plan9-mips\": \"{other}\"")),
    );
    let actual = ws.json_run(&["build"], 1).actual_digest();
    ws.write(
        "BUILD.star",
        &build(&format!(
            "\"plan9-mips\": \"{other}\", \"{host}\": \"{actual}\""
        )),
    );
    assert_eq!(ws.json_run(&["build"], 0).count("executed"), 1);
    // Both, or neither, is a mistake in the BUILD file.
    ws.write(
        "BUILD.star",
        &format!(
            "fixed_output(name = \"fetch\", cmd = \"echo fetched > $OUT\", outs = [\"f.txt\"], digest = \"{actual}\", digests = {{\"{host}\": \"{actual}\"}})\n"
        ),
    );
    let both = ws.cairn(&["build"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
    assert!(
        both.stderr.contains("needs either `digest` or `digests`"),
        "{}",
        both.stderr
    );
}

#[test]
fn a_fixed_output_digest_covers_the_symlinks_of_its_tree() {
    // npm's `.bin` links and pnpm's whole layout are links: the same files with a link moved
    // are other outputs, and the declared digest must say so.
    let ws = Workspace::new();
    let build = |target: &str, digest: &str| {
        format!(
            "fixed_output(name = \"deps\", cmd = \"mkdir -p node_modules/.bin node_modules/a node_modules/b && echo a > node_modules/a/cli && echo b > node_modules/b/cli && ln -s {target} node_modules/.bin/cli\", out_dirs = [\"node_modules\"], digest = \"{digest}\")\n"
        )
    };
    ws.write("BUILD.star", &build("../a/cli", &no_digest()));
    let actual = ws.json_run(&["build"], 1).actual_digest();
    ws.write("BUILD.star", &build("../a/cli", &actual));
    ws.json_run(&["build"], 0);
    assert_eq!(
        std::fs::read_link(ws.path("node_modules/.bin/cli")).unwrap(),
        std::path::Path::new("../a/cli")
    );
    ws.write("BUILD.star", &build("../b/cli", &actual));
    let moved = ws.json_run(&["build"], 1);
    assert_ne!(moved.actual_digest(), actual, "{}", moved.stderr);
}

#[test]
fn host_python_packages_are_hidden_from_normal_actions_in_the_namespace_sandbox() {
    if !namespaces_available()
        || !std::path::Path::new("/usr/lib/python3/dist-packages/yaml").is_dir()
    {
        return; // Debian's python3-yaml is what an undeclared import finds on this image.
    }
    let ws = Workspace::new();
    ws.write(
        "cairn.toml",
        "[build]\ntool_path = [\"/usr/bin\", \"/bin\"]\n",
    );
    ws.write(
        "BUILD.star",
        "action(name = \"undeclared\", cmd = \"python3 -c 'import yaml' > $OUT\", outs = [\"a.txt\"])\n\
         action(name = \"stdlib\", cmd = \"python3 -c 'import json; print(json.dumps(1))' > $OUT\", outs = [\"b.txt\"])\n",
    );
    let run = ws.json_run(&["build", "--keep-going", "--sandbox", "namespace"], 1);
    assert_eq!(run.statuses()["//:undeclared"], "failed");
    assert!(
        run.stderr.contains("No module named 'yaml'"),
        "{}",
        run.stderr
    );
    assert_eq!(run.statuses()["//:stdlib"], "executed");
    assert_eq!(ws.read("b.txt"), "1\n");
}

#[test]
fn a_fixed_outputs_pass_env_reaches_its_command_and_stays_out_of_its_key() {
    // A registry token or a proxy: the install needs it, its result does not depend on it.
    let ws = Workspace::new();
    let build = |digest: &str| {
        format!(
            "fixed_output(name = \"fetch\", cmd = \"test \\\"$REGISTRY_TOKEN\\\" = s3cret && echo fetched > $OUT\", outs = [\"f.txt\"], pass_env = [\"REGISTRY_TOKEN\"], digest = \"{digest}\")\n"
        )
    };
    ws.write("BUILD.star", &build(&no_digest()));
    let token = [("REGISTRY_TOKEN", "s3cret")];
    let first = ws.cairn_with(ws.root(), &["build"], &token);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let actual = first.actual_digest();
    ws.write("BUILD.star", &build(&actual));
    let run = ws.cairn_with(ws.root(), &["build", "--json"], &token);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ws.read("f.txt"), "fetched\n");
    // Another token: the same key, so the result is reused, not fetched again.
    let other = ws.cairn_with(
        ws.root(),
        &["build", "--json"],
        &[("REGISTRY_TOKEN", "rotated")],
    );
    assert_eq!(other.code, 0, "{}", other.stderr);
    assert_eq!(other.count("executed"), 0);
    // Without it, a fresh store cannot fetch: the command saw the variable, not a default.
    let fresh = tempfile::tempdir().unwrap();
    ws.cairn(&["clean"]);
    let without = ws.cairn_with(
        ws.root(),
        &["build"],
        &[("CAIRN_STORE", fresh.path().to_str().unwrap())],
    );
    assert_eq!(without.code, 1, "{}", without.stderr);
}
