//! The workspace: its root (the directory holding `cairn.toml`), its settings, the host
//! environment cairn was started with, and `WorkspacePath`, the only path type that may enter
//! a key. The only module that reads environment variables.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file that marks a workspace root.
pub(crate) const CONFIG_FILE: &str = "cairn.toml";

/// The default tool path (and so `PATH` inside actions): the system's, never the user's.
pub(crate) const DEFAULT_TOOL_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// The sandbox actions run in (`[build] sandbox`, `--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SandboxMode {
    /// Linux namespaces; falls back to `directory` (saying so once) where unavailable.
    Namespace,
    /// A fresh directory holding only the inputs.
    Directory,
    /// Run in the workspace itself: not hermetic, must be chosen explicitly.
    None,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Namespace => "namespace",
            SandboxMode::Directory => "directory",
            SandboxMode::None => "none",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkspaceError {
    #[error(
        "No `cairn.toml` found in `{0}` or any parent directory (a workspace root holds one; it may be empty)"
    )]
    NotFound(PathBuf),
    #[error("Cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Invalid `{path}`: {message}")]
    Config { path: PathBuf, message: String },
}

/// Settings from `cairn.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub remote: RemoteConfig,
}

/// `[remote]`: a cache shared with other machines.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoteConfig {
    /// `file:///shared/dir` (gRPC and HTTP come with their backends).
    pub url: Option<String>,
    /// Whether new results are uploaded. Default: when the `CI` environment variable is set
    /// (CI writes, laptops read).
    pub upload: Option<bool>,
    /// Extra request headers; a value `env:NAME` is the environment variable NAME's value, so
    /// a token never sits in cairn.toml.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// How long one request may take before the remote counts as failing (default `60s`).
    pub timeout: Option<String>,
    /// The REAPI instance name (gRPC), default empty.
    pub instance_name: Option<String>,
    /// The secret key uploaded results are signed with: a file (relative to the workspace
    /// root), or `env:VAR` for a variable holding the key (`cairn store keygen` makes one).
    pub signing_key: Option<String>,
    /// Public keys (`name:base64`); when set, a remote result is used only with a valid
    /// signature by one of them.
    pub trusted_keys: Option<Vec<String>>,
    /// Which outputs of remote hits are downloaded: `all` (default), `toplevel`, `minimal`.
    pub download: Option<String>,
    /// How many targets may wait on the remote at once, beyond `-j` (default 32).
    pub jobs: Option<usize>,
    /// Run actions on the remote's executor: `true`, `false` (default) or `"strict"` (an
    /// action the remote cannot run fails instead of running here).
    pub execute: Option<ExecuteSetting>,
    /// `[remote.platform]`: platform properties every action carries (a worker image, a
    /// pool), under the target's own `platform = {...}`. Part of every action key, whether or
    /// not it runs remotely, so a laptop building locally shares CI's remote-executed results.
    #[serde(default)]
    pub platform: std::collections::BTreeMap<String, String>,
    /// For `grpcs://` and `https://`: a PEM file of the only CA certificates to trust (a
    /// self-hosted cache with its own CA; default: Mozilla's roots). Relative paths are
    /// relative to the workspace root.
    pub tls_ca: Option<String>,
    /// A PEM client certificate (chain) and its key, for servers that ask for one.
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
}

/// `[remote] execute`: a boolean or `"strict"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum ExecuteSetting {
    Enabled(bool),
    Mode(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// Store directory; relative paths are relative to the workspace root.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildConfig {
    /// Default parallelism.
    pub jobs: Option<usize>,
    /// `namespace` (default), `directory` or `none`.
    pub sandbox: Option<SandboxMode>,
    /// Where sandbox directories are made (relative to the workspace root). Default: a
    /// private directory on `/dev/shm` where it is a tmpfs with room, else `<store>/sandbox`.
    pub sandbox_base: Option<PathBuf>,
    /// Where tools are looked up, in order; also the actions' `PATH`. Relative entries are
    /// relative to the workspace root. Default: `/usr/local/bin`, `/usr/bin`, `/bin`.
    pub tool_path: Option<Vec<PathBuf>>,
    /// How much an action may write to its `/tmp` (and, each, to its `HOME` and `/dev/shm`) in
    /// the namespace sandbox, where they are memory (tmpfs): `"4GiB"` by default.
    pub tmp_size: Option<String>,
    /// How long one BUILD.star file (with what it loads) may take to evaluate: `"60s"`.
    pub eval_time_limit: Option<String>,
    /// How much memory cairn may hold while evaluating one: `"4GiB"`.
    pub eval_memory_limit: Option<String>,
}

/// The environment variables cairn itself uses, read once at start-up.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostEnv {
    pub cairn_store: Option<PathBuf>,
    pub cairn_sandbox_base: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub no_color: bool,
    /// `CI` is set (to anything but an empty string): results are uploaded by default.
    pub ci: bool,
    /// Every variable, for `pass_env` (which never enters a key).
    pub vars: std::collections::BTreeMap<String, String>,
}

impl HostEnv {
    #[allow(clippy::disallowed_methods)] // The one place that reads the host environment.
    pub fn read() -> HostEnv {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        HostEnv {
            cairn_store: var("CAIRN_STORE").map(PathBuf::from),
            cairn_sandbox_base: var("CAIRN_SANDBOX_BASE").map(PathBuf::from),
            xdg_cache_home: var("XDG_CACHE_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            no_color: var("NO_COLOR").is_some(),
            ci: var("CI").is_some(),
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

/// A found workspace.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    pub root: PathBuf,
    pub config: Config,
}

impl Workspace {
    /// Finds the workspace containing `dir` by walking up to the nearest `cairn.toml`.
    pub fn find(dir: &Path) -> Result<Workspace, WorkspaceError> {
        let start = dir.canonicalize().map_err(|source| WorkspaceError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut cur = start.as_path();
        loop {
            let candidate = cur.join(CONFIG_FILE);
            if candidate.is_file() {
                let text =
                    std::fs::read_to_string(&candidate).map_err(|source| WorkspaceError::Read {
                        path: candidate.clone(),
                        source,
                    })?;
                let config: Config = toml::from_str(&text).map_err(|e| WorkspaceError::Config {
                    path: candidate.clone(),
                    message: e.to_string().trim().replace('\n', " "),
                })?;
                if config.remote.platform.contains_key("") {
                    return Err(WorkspaceError::Config {
                        path: candidate,
                        message: "`[remote.platform]` has an empty property name".to_string(),
                    });
                }
                return Ok(Workspace {
                    root: cur.to_path_buf(),
                    config,
                });
            }
            match cur.parent() {
                Some(parent) => cur = parent,
                None => return Err(WorkspaceError::NotFound(start)),
            }
        }
    }

    /// A configured sandbox base: `CAIRN_SANDBOX_BASE`, else `cairn.toml`'s
    /// `[build] sandbox_base` (relative to the workspace root); `None`: cairn chooses.
    pub fn sandbox_base(&self, env: &HostEnv) -> Option<PathBuf> {
        let dir = env
            .cairn_sandbox_base
            .clone()
            .or_else(|| self.config.build.sandbox_base.clone())?;
        Some(self.root.join(dir))
    }

    /// The store directory: `CAIRN_STORE`, else `cairn.toml`'s `[store] path`, else
    /// `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`.
    pub fn store_dir(&self, env: &HostEnv) -> PathBuf {
        if let Some(dir) = &env.cairn_store {
            return dir.clone();
        }
        if let Some(dir) = &self.config.store.path {
            return self.root.join(dir);
        }
        if let Some(cache) = &env.xdg_cache_home {
            return cache.join("cairn");
        }
        match &env.home {
            Some(home) => home.join(".cache/cairn"),
            None => self.root.join(".cairn-store"),
        }
    }

    /// The key under which this workspace's records and history are kept in a store.
    pub fn key(&self) -> String {
        self.root.display().to_string()
    }

    /// The tool path: `cairn.toml`'s `tool_path`, else the system default. An entry may start
    /// with `~/` (the home directory) and hold `*` in its components (`~/.pyenv/versions/*/bin`:
    /// every installed version, in name order; none is no directory).
    pub fn tool_path(&self) -> Vec<PathBuf> {
        match &self.config.build.tool_path {
            Some(dirs) => dirs
                .iter()
                .flat_map(|d| expand_dir(&self.root, d))
                .collect(),
            None => DEFAULT_TOOL_PATH.iter().map(PathBuf::from).collect(),
        }
    }

    /// The workspace package containing host directory `dir`, for relative patterns.
    pub fn package_of(&self, dir: &Path) -> String {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.strip_prefix(&self.root).ok().map(Path::to_path_buf))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A normalised path relative to the workspace root: `/`-separated, no `.` or `..`
/// components, not absolute, not empty. The only path form that enters an action key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WorkspacePath(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PathError {
    #[error("`{0}` is absolute; paths are relative to their package")]
    Absolute(String),
    #[error("`{0}` leaves its package (`..`)")]
    Escapes(String),
    #[error("the path is empty")]
    Empty,
}

impl WorkspacePath {
    /// Joins a package-relative path onto a package, normalising it. `..` may not climb out of
    /// the package.
    pub fn in_package(package: &str, rel: &str) -> Result<WorkspacePath, PathError> {
        if rel.starts_with('/') {
            return Err(PathError::Absolute(rel.to_string()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(rel.to_string()));
                    }
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(PathError::Empty);
        }
        let rel = parts.join("/");
        Ok(WorkspacePath(if package.is_empty() {
            rel
        } else {
            format!("{package}/{rel}")
        }))
    }

    /// Wraps an already-normalised relative path (from a walk of the workspace).
    pub fn from_normalized(path: String) -> WorkspacePath {
        debug_assert!(!path.starts_with('/') && !path.split('/').any(|p| p == ".." || p == "."));
        WorkspacePath(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_host(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// Whether a symlink at this path pointing at `target` stays inside the workspace: relative,
    /// and never climbing above its root, `..` resolved lexically (no other link involved).
    #[cfg(test)]
    pub fn link_stays_inside(&self, target: &str) -> bool {
        self.link_stays_inside_among(target, &|_| false)
    }

    /// `link_stays_inside` among other links (`is_link` says which workspace paths are links):
    /// a `..` after a component that is itself a link is refused, as it climbs from wherever
    /// that link leads, not from where it sits (`deep -> ../..` beside `esc ->
    /// deep/../../../etc` would leave the workspace though `esc` reads as inside).
    pub fn link_stays_inside_among(&self, target: &str, is_link: &dyn Fn(&str) -> bool) -> bool {
        if target.starts_with('/') {
            return false;
        }
        let mut parts: Vec<&str> = self.0.split('/').collect();
        parts.pop();
        let mut through_link = false;
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if through_link || parts.pop().is_none() {
                        return false;
                    }
                }
                name => {
                    parts.push(name);
                    through_link |= is_link(&parts.join("/"));
                }
            }
        }
        true
    }

    /// Whether `self` is `other` or lies below it.
    pub fn is_within(&self, other: &WorkspacePath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// This path relative to a package directory (`..` where needed), as a command in that
    /// directory would name it.
    pub fn relative_to(&self, package: &str) -> String {
        if package.is_empty() {
            return self.0.clone();
        }
        let base: Vec<&str> = package.split('/').collect();
        let target: Vec<&str> = self.0.split('/').collect();
        let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
        let ups = base.len() - common;
        let mut parts: Vec<&str> = std::iter::repeat_n("..", ups).collect();
        parts.extend(&target[common..]);
        parts.join("/")
    }
}

impl fmt::Display for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkspacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// `HOME`, for `~/` in the tool path (read where the tool path is needed, in this file as
/// `HostEnv` is).
#[allow(clippy::disallowed_methods)]
fn home_dir() -> Option<std::ffi::OsString> {
    std::env::var_os("HOME").filter(|h| !h.is_empty())
}

/// One `tool_path` entry as directories: `~/` is the home directory, a relative entry is below
/// the workspace `root`, and a component with `*` matches every directory it names.
fn expand_dir(root: &Path, entry: &Path) -> Vec<PathBuf> {
    let text = entry.to_string_lossy();
    let start = match (text.strip_prefix("~/"), home_dir()) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => root.join(entry),
    };
    if !text.contains('*') {
        return vec![start];
    }
    let mut found = vec![PathBuf::new()];
    for part in start.components() {
        let part = part.as_os_str();
        let name = part.to_string_lossy();
        if !name.contains('*') {
            found.iter_mut().for_each(|p| p.push(part));
            continue;
        }
        let Ok(glob) = globset::Glob::new(&name) else {
            return Vec::new();
        };
        let matcher = glob.compile_matcher();
        found = found
            .iter()
            .flat_map(|dir| {
                let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| matcher.is_match(e.file_name()) && e.path().is_dir())
                    .map(|e| e.path())
                    .collect();
                names.sort();
                names
            })
            .collect();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_path_entries_expand_home_and_stars() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["3.9.18", "3.12.1", "3.10.13"] {
            std::fs::create_dir_all(dir.path().join(format!("versions/{v}/bin"))).unwrap();
        }
        std::fs::write(dir.path().join("versions/file"), "").unwrap();
        let found = expand_dir(dir.path(), Path::new("versions/*/bin"));
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "versions/3.10.13/bin",
                "versions/3.12.1/bin",
                "versions/3.9.18/bin"
            ]
        );
        assert!(expand_dir(dir.path(), Path::new("none/*/bin")).is_empty());
        assert_eq!(
            expand_dir(dir.path(), Path::new("/usr/bin")),
            [PathBuf::from("/usr/bin")]
        );
        let home = PathBuf::from(home_dir().unwrap());
        assert_eq!(
            expand_dir(dir.path(), Path::new("~/bin")),
            [home.join("bin")]
        );
    }

    #[test]
    fn paths_are_normalised_and_kept_in_their_package() {
        let p = WorkspacePath::in_package("apps/web", "./src/../src/app.ts").unwrap();
        assert_eq!(p.as_str(), "apps/web/src/app.ts");
        assert_eq!(
            WorkspacePath::in_package("", "a.txt").unwrap().as_str(),
            "a.txt"
        );
        assert_eq!(
            WorkspacePath::in_package("apps/web", "../x"),
            Err(PathError::Escapes("../x".into()))
        );
        assert_eq!(
            WorkspacePath::in_package("apps/web", "/etc/passwd"),
            Err(PathError::Absolute("/etc/passwd".into()))
        );
        assert_eq!(WorkspacePath::in_package("a", "."), Err(PathError::Empty));
    }

    #[test]
    fn relative_to_package() {
        let p = WorkspacePath::from_normalized("packages/tokens/dist/web.css".into());
        assert_eq!(
            p.relative_to("apps/web"),
            "../../packages/tokens/dist/web.css"
        );
        assert_eq!(p.relative_to("packages/tokens"), "dist/web.css");
        assert_eq!(p.relative_to(""), "packages/tokens/dist/web.css");
    }

    #[test]
    fn a_link_stays_inside_unless_it_climbs_above_the_root_or_is_absolute() {
        let link = WorkspacePath::from_normalized("apps/web/node_modules/pkg".into());
        assert!(link.link_stays_inside("../../../packages/pkg"));
        assert!(link.link_stays_inside("../../.."));
        assert!(!link.link_stays_inside("../../../.."));
        assert!(link.link_stays_inside("./x/../y"));
        assert!(!link.link_stays_inside("../../../../outside"));
        assert!(!link.link_stays_inside("x/../../../../../etc/passwd"));
        assert!(!link.link_stays_inside("/etc/passwd"));
        let top = WorkspacePath::from_normalized("link".into());
        assert!(top.link_stays_inside("a/b"));
        assert!(!top.link_stays_inside(".."));
        // Through another link, `..` climbs from where that one leads: refused.
        let links = |p: &str| p == "pkg/out/deep";
        let esc = WorkspacePath::from_normalized("pkg/out/esc".into());
        assert!(esc.link_stays_inside("deep/../../../etc/passwd"));
        assert!(!esc.link_stays_inside_among("deep/../../../etc/passwd", &links));
        assert!(esc.link_stays_inside_among("deep/bin/tool", &links));
        assert!(esc.link_stays_inside_among("../lib/x", &links));
    }

    #[test]
    fn within() {
        let dir = WorkspacePath::from_normalized("a/dist".into());
        assert!(WorkspacePath::from_normalized("a/dist/x".into()).is_within(&dir));
        assert!(dir.is_within(&dir));
        assert!(!WorkspacePath::from_normalized("a/distx".into()).is_within(&dir));
    }
}

/// Property tests (issue 15): `WorkspacePath` is the only path that enters a key, so
/// normalising never panics and never yields a path that leaves the workspace.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// A package as labels make them: names, never `.` or `..`.
    fn package() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-c]{1,2}|[a-c]\\.[a-c]", 0..4).prop_map(|p| p.join("/"))
    }

    /// A relative path made of the components that matter to normalising.
    fn rel() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::collection::vec(
                prop::sample::select(vec!["a", "b", "c.txt", ".", "..", "", "...", ".a"]),
                0..7,
            )
            .prop_map(|parts| parts.join("/")),
            1 => any::<String>(),
        ]
    }

    fn normal() -> impl Strategy<Value = WorkspacePath> {
        proptest::collection::vec("[a-c]{1,2}", 1..5)
            .prop_map(|parts| WorkspacePath::from_normalized(parts.join("/")))
    }

    /// The reference: `rel`'s components resolved lexically below `base`'s; `None` if a `..`
    /// climbs above `base`'s root.
    fn resolve<'a>(base: &[&'a str], rel: &'a str) -> Option<Vec<&'a str>> {
        let mut parts = base.to_vec();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        Some(parts)
    }

    fn is_normal(path: &str) -> bool {
        !path.starts_with('/') && path.split('/').all(|c| !matches!(c, "" | "." | ".."))
    }

    proptest! {
        #[test]
        fn in_package_never_panics(package in any::<String>(), rel in any::<String>()) {
            let _ = WorkspacePath::in_package(&package, &rel);
        }

        #[test]
        fn in_package_is_normal_and_stays_in_its_package(package in package(), rel in rel()) {
            let got = WorkspacePath::in_package(&package, &rel);
            match resolve(&[], &rel) {
                _ if rel.starts_with('/') => {
                    prop_assert_eq!(got, Err(PathError::Absolute(rel.clone())))
                }
                None => prop_assert_eq!(got, Err(PathError::Escapes(rel.clone()))),
                Some(parts) if parts.is_empty() => prop_assert_eq!(got, Err(PathError::Empty)),
                Some(parts) => {
                    let path = got.unwrap();
                    prop_assert!(is_normal(path.as_str()), "{path:?}");
                    let expected = if package.is_empty() {
                        parts.join("/")
                    } else {
                        format!("{package}/{}", parts.join("/"))
                    };
                    prop_assert_eq!(path.as_str(), expected.as_str());
                    if !package.is_empty() {
                        let pkg = WorkspacePath::from_normalized(package.clone());
                        prop_assert!(path.is_within(&pkg));
                    }
                }
            }
        }

        #[test]
        fn link_stays_inside_agrees_with_a_lexical_resolver(link in normal(), target in rel()) {
            let parent: Vec<&str> = match link.as_str().rsplit_once('/') {
                Some((dir, _)) => dir.split('/').collect(),
                None => Vec::new(),
            };
            let inside = !target.starts_with('/') && resolve(&parent, &target).is_some();
            prop_assert_eq!(link.link_stays_inside(&target), inside);
        }

        #[test]
        fn relative_to_resolves_back_to_the_path(path in normal(), package in package()) {
            let rel = path.relative_to(&package);
            let base: Vec<&str> = package.split('/').filter(|p| !p.is_empty()).collect();
            prop_assert_eq!(
                resolve(&base, &rel).map(|parts| parts.join("/")),
                Some(path.as_str().to_string()),
                "{:?} from {:?}", rel, package
            );
        }
    }
}
