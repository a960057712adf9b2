//! Host tool identity. A tool an action calls (named in `tools`, the first word of `cmd`, and
//! always `sh`) is resolved once per build on the tool path, and its path, content digest and
//! installation digest (see `install`) enter the action key's salt: replacing `python3`, or
//! the libpython or standard library it runs, is a cache miss, not a wrong hit.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::{Digest, FileStates, Store};

/// A resolved tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tool {
    pub name: String,
    /// Where it was found on the tool path (the directory is what `PATH` lists).
    pub path: PathBuf,
    /// The digest of the file it resolves to (symlinks followed).
    pub digest: Digest,
    /// The digest of what it runs from beyond that file (its shared libraries, an
    /// interpreter's standard library, a script's package: see `install`).
    pub installation: Option<Digest>,
}

impl Tool {
    /// Its identity as the key's salt and `cairn why` show it: the content digest, and the
    /// installation's when it has one.
    pub fn identity(&self) -> String {
        match &self.installation {
            Some(i) => format!("{} installation {i}", self.digest),
            None => self.digest.to_string(),
        }
    }
}

/// Shell words that are not programs: never resolved as tools.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "[", "alias", "break", "case", "cd", "command", "continue", "echo", "eval",
    "exec", "exit", "export", "false", "for", "if", "printf", "pwd", "read", "return", "set",
    "shift", "test", "trap", "true", "umask", "unset", "until", "wait", "while", "{", "(",
];

/// The program a shell command starts with, if it is a plain command name.
pub(crate) fn first_word(cmd: &str) -> Option<&str> {
    let word = cmd.split_whitespace().next()?;
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    (plain && !SHELL_WORDS.contains(&word)).then_some(word)
}

/// The interpreter a script's first line names, as a tool name: `#!/usr/bin/env node` →
/// `node`, `#!/usr/bin/python3 -u` → `python3`. `None` without a `#!` line.
pub(crate) fn shebang_tool(first_line: &str) -> Option<&str> {
    let rest = first_line.strip_prefix("#!")?.trim();
    let mut words = rest.split_whitespace();
    let interpreter = words.next()?;
    let name = if interpreter.rsplit('/').next() == Some("env") {
        // `env -S a b` and `env VAR=x a`: the first word that is neither.
        words.find(|w| !w.starts_with('-') && !w.contains('='))?
    } else {
        interpreter
    };
    let name = name.rsplit('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// The first word of `cmd` when it runs a script by path (`./gen.py`, `scripts/build.js`).
pub(crate) fn script_word(cmd: &str) -> Option<&str> {
    let word = cmd.split_whitespace().next()?;
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.+/".contains(c));
    (plain && word.contains('/') && !word.starts_with('/')).then_some(word)
}

/// Resolves tool names on the tool path, once per name per build.
pub(crate) struct ToolResolver<'a> {
    search: Vec<PathBuf>,
    /// `search` as a `PATH` value.
    path_var: String,
    resolved: Mutex<HashMap<String, Option<Tool>>>,
    /// Installation digests by resolved file.
    installations: Mutex<HashMap<PathBuf, Option<Digest>>>,
    /// Where the file states of tools (outside the workspace) are remembered between builds.
    store: Option<&'a Store>,
}

impl<'a> ToolResolver<'a> {
    pub fn new(search: Vec<PathBuf>, store: Option<&'a Store>) -> ToolResolver<'a> {
        let path_var = search
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        ToolResolver {
            search,
            path_var,
            resolved: Mutex::default(),
            installations: Mutex::default(),
            store,
        }
    }

    /// The `PATH` value actions see: the tool path.
    pub fn path_var(&self) -> &str {
        &self.path_var
    }

    /// Every name resolved so far, with what it resolved to.
    pub fn resolved(&self) -> std::collections::BTreeMap<String, Option<Tool>> {
        let resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved
            .iter()
            .map(|(name, tool)| (name.clone(), tool.clone()))
            .collect()
    }

    /// The first executable file named `name` on the tool path (or at `name`, an absolute
    /// path: an interpreter named by its installation, `/opt/python3.12/bin/python3`).
    pub fn resolve(&self, name: &str, states: &FileStates) -> Option<Tool> {
        if let Some(found) = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return found.clone();
        }
        let found = find_tool(&self.search, name).and_then(|path| {
            let real = std::fs::canonicalize(&path).ok()?;
            if let Some(store) = self.store {
                // Best effort: without it the tool is only hashed again.
                let _ = store.preload_file_state(states, &real);
            }
            let (info, _) = states.file_info(&real).ok()?;
            let installation = self.installation(&real, &info.digest, states);
            Some(Tool {
                name: name.to_string(),
                path,
                digest: info.digest,
                installation,
            })
        });
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), found.clone());
        found
    }
}

impl ToolResolver<'_> {
    /// The installation digest of the tool file `real`, once per file per build (`python3`
    /// and `python3.11` are one file).
    fn installation(&self, real: &Path, digest: &Digest, states: &FileStates) -> Option<Digest> {
        let done = |m: &Mutex<HashMap<PathBuf, Option<Digest>>>| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(real)
                .cloned()
        };
        if let Some(found) = done(&self.installations) {
            return found;
        }
        let found = super::install::installation_digest(real, digest, states, self.store);
        self.installations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(real.to_path_buf(), found);
        found
    }
}

/// Where the tool `name` is: the first executable file of that name in a directory of
/// `search`, or `name` itself when it is an absolute path to one. `None` for another relative
/// path.
pub(crate) fn find_tool(search: &[PathBuf], name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        let path = PathBuf::from(name);
        return is_executable_file(&path).then_some(path);
    }
    if name.is_empty() || name.contains('/') {
        return None;
    }
    search
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| is_executable_file(path))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripts_interpreter_is_read_from_its_first_line() {
        assert_eq!(shebang_tool("#!/usr/bin/env node"), Some("node"));
        assert_eq!(
            shebang_tool("#! /usr/bin/env -S python3 -u"),
            Some("python3")
        );
        assert_eq!(shebang_tool("#!/usr/bin/env LC_ALL=C perl"), Some("perl"));
        assert_eq!(shebang_tool("#!/usr/bin/python3 -u"), Some("python3"));
        assert_eq!(shebang_tool("#!/bin/sh"), Some("sh"));
        assert_eq!(shebang_tool("import sys"), None);
        assert_eq!(script_word("./gen.py --out x"), Some("./gen.py"));
        assert_eq!(script_word("scripts/build.js"), Some("scripts/build.js"));
        assert_eq!(script_word("python3 x.py"), None);
        assert_eq!(script_word("/usr/bin/python3 x.py"), None);
    }

    #[test]
    fn first_word_skips_shell_builtins_and_assignments() {
        assert_eq!(first_word("python3 scripts/x.py"), Some("python3"));
        assert_eq!(first_word("  cat $SRCS > $OUT"), Some("cat"));
        assert_eq!(first_word("echo hi"), None);
        assert_eq!(first_word("FOO=1 make"), None);
        assert_eq!(first_word("./run.sh"), None);
        assert_eq!(first_word(""), None);
    }

    #[test]
    fn resolves_on_the_tool_path_and_sees_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("mytool");
        std::fs::write(&tool, "#!/bin/sh\necho 1\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let states = FileStates::default();
        let first = ToolResolver::new(vec![bin.clone()], None)
            .resolve("mytool", &states)
            .unwrap();
        assert_eq!(first.path, tool);
        std::fs::write(&tool, "#!/bin/sh\necho 2\n").unwrap();
        let second = ToolResolver::new(vec![bin.clone()], None)
            .resolve("mytool", &states)
            .unwrap();
        assert_ne!(first.digest, second.digest);
        assert!(
            ToolResolver::new(vec![bin], None)
                .resolve("absent", &states)
                .is_none()
        );
    }
}
