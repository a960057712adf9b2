//! Test helpers: a temp workspace (with its own store) and a runner for the real binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Whether unprivileged user namespaces work here. Where they do not, tests that need them
/// skip with a printed reason, unless CAIRN_TEST_REQUIRE_NAMESPACES is set (CI sets it).
pub fn namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["-Urn", "true"])
        .status()
        .is_ok_and(|s| s.success());
    #[allow(clippy::disallowed_methods)] // Test configuration, not build input.
    let required = std::env::var_os("CAIRN_TEST_REQUIRE_NAMESPACES").is_some();
    if !ok && required {
        panic!("user namespaces are unavailable but CAIRN_TEST_REQUIRE_NAMESPACES is set");
    }
    if !ok {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: unprivileged user namespaces are unavailable on this machine");
        }
    }
    ok
}

pub struct Workspace {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

/// One run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A placeholder for a fixed-output digest: the first build fails printing the real one.
pub fn no_digest() -> String {
    format!("blake3:{}", "0".repeat(64))
}

/// Whether `run`, a first install under `no_digest()`, got as far as printing the digest its
/// download produced. When it did not, the registry was unreachable: tolerated on a
/// developer's machine, a failure where the test scripts promise the registries (CI).
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
pub fn installed_from_registry(run: &Run, what: &str) -> bool {
    if run.stderr.contains("actual:") {
        return true;
    }
    assert!(
        std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_none(),
        "{what} could not install from its registry:\n{}",
        run.stderr
    );
    false
}

impl Run {
    /// The digest a fixed-output action's failure says it actually produced (to paste).
    pub fn actual_digest(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("actual:"))
            .unwrap_or_else(|| panic!("no actual digest in:\n{}", self.stderr))
            .trim()
            .to_string()
    }

    /// The `--json` summary printed on stdout.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// label → status from the `--json` summary.
    pub fn statuses(&self) -> BTreeMap<String, String> {
        self.json()["targets"]
            .as_array()
            .expect("targets is an array")
            .iter()
            .map(|t| {
                (
                    t["label"].as_str().unwrap().to_string(),
                    t["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Labels with the given status, sorted.
    pub fn with_status(&self, status: &str) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s == status)
            .map(|(l, _)| l)
            .collect()
    }

    pub fn count(&self, status: &str) -> u64 {
        self.json()["counts"][status]
            .as_u64()
            .expect("count is a number")
    }
}

impl Workspace {
    /// An empty workspace (just `cairn.toml`).
    pub fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
            store: tempfile::tempdir().unwrap(),
        };
        ws.write("cairn.toml", "");
        ws
    }

    /// A copy of `examples/mimic`.
    pub fn mimic() -> Workspace {
        Workspace::example("mimic")
    }

    /// A copy of `examples/<name>` (without the outputs a build left there).
    pub fn example(name: &str) -> Workspace {
        let ws = Workspace::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        copy_tree(&src, ws.root());
        ws
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> &Path {
        self.store.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// Replaces `from` with `to` in a file, insisting that `from` occurs.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// Runs `cairn -C <root> ARGS`.
    pub fn cairn(&self, args: &[&str]) -> Run {
        self.cairn_in(self.root(), args)
    }

    pub fn cairn_in(&self, dir: &Path, args: &[&str]) -> Run {
        self.cairn_with(dir, args, &[])
    }

    /// Runs `cairn -C DIR ARGS` with extra environment variables. `CI` is never inherited
    /// (it turns remote uploads on): tests that want it pass it here.
    pub fn cairn_with(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("CAIRN_STORE", self.store())
            .env("NO_COLOR", "1")
            .env_remove("CI")
            .envs(env.iter().copied())
            .output()
            .expect("the cairn binary runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `cairn -C <root> ARGS` in the background, its stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("-C")
            .arg(self.root())
            .args(args)
            .env("CAIRN_STORE", self.store())
            .env("NO_COLOR", "1")
            .env_remove("CI")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the cairn binary starts")
    }

    /// Runs with `--json` and asserts the exit code.
    pub fn json_run(&self, args: &[&str], code: i32) -> Run {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.cairn(&all);
        assert_eq!(
            run.code, code,
            "cairn {args:?} exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        run
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() == "dist" || entry.file_name() == "node_modules" {
                continue;
            }
            std::fs::create_dir_all(&to).unwrap();
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// `mytool`, a script in a directory of its own that the workspace's `cairn.toml` puts first
/// on the tool path; `install` (re)writes it to print `mytool <version>`.
pub struct MyTool {
    dir: tempfile::TempDir,
}

impl MyTool {
    /// Writes the workspace's `cairn.toml` (replacing it) and installs version 1.
    pub fn on_tool_path_of(ws: &Workspace) -> MyTool {
        let tool = MyTool {
            dir: tempfile::tempdir().unwrap(),
        };
        ws.write(
            "cairn.toml",
            &format!(
                "[build]\ntool_path = [\"{}\", \"/usr/bin\", \"/bin\"]\n",
                tool.dir.path().display()
            ),
        );
        tool.install("1");
        tool
    }

    pub fn install(&self, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("mytool");
        std::fs::write(&path, format!("#!/bin/sh\necho mytool {version}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A TCP relay in front of a real server, to kill "the server" mid-build from the client's
/// point of view: `kill` resets every open connection and closes the port, as a crashed
/// server would (the server itself is shared with tests running at once).
pub struct Relay {
    addr: std::net::SocketAddr,
    dead: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn start(upstream: String) -> Relay {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            dead: Default::default(),
            open: Default::default(),
        };
        let (dead, open) = (relay.dead.clone(), relay.open.clone());
        std::thread::spawn(move || {
            while !dead.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
            // The listener is dropped here: new connections are refused.
        });
        relay
    }

    pub fn kill(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().iter() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `url` with its `host:port` replaced by the relay's.
pub fn through(url: &str, relay: &Relay) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{}{path}", relay.addr)
}

pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest.split('/').next().unwrap().to_string()
}

/// Whether a process whose command line holds `text` runs on this machine (a test server's workers
/// are processes here).
pub fn running(text: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", text])
        .output()
        .expect("pgrep runs")
        .status
        .success()
}

/// Waits up to `secs` for `condition`.
pub fn wait_until(secs: u64, condition: impl Fn() -> bool) -> bool {
    let began = std::time::Instant::now();
    while began.elapsed().as_secs() < secs {
        if condition() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// The URL of a test server the test scripts started (`var`, e.g. `CAIRN_TEST_GRPC_CACHE`),
/// or `None` (the test is skipped), unless `CAIRN_TEST_REQUIRE_SERVERS` says it must be there.
#[allow(clippy::disallowed_methods)] // Test configuration, not build input.
pub fn test_server(var: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if value.is_none() && std::env::var_os("CAIRN_TEST_REQUIRE_SERVERS").is_some() {
        panic!("CAIRN_TEST_REQUIRE_SERVERS is set but {var} is not");
    }
    value
}

/// `ws` with every key its own (a test server is shared with tests running at once): an
/// unused tool-path entry named after its directory changes every `PATH`; `extra` is appended
/// to its `cairn.toml`.
pub fn salted(ws: Workspace, extra: &str) -> Workspace {
    let salt = ws
        .root()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    ws.write(
        "cairn.toml",
        &format!(
            "[build]\ntool_path = [\"/nonexistent/{salt}\", \"/usr/local/bin\", \"/usr/bin\", \"/bin\"]\n{extra}"
        ),
    );
    ws
}
