//! A tool's installation: what it runs from beyond its own file. For a dynamically linked
//! program, the shared libraries the loader gives it (`ldd`, remembered per binary in the
//! store); for a Python interpreter, its standard library (`<prefix>/lib/pythonX.Y`, without
//! `site-packages`, `__pycache__` and the `test` package); for a script inside a package (npm's
//! `bin/npm` → `lib/node_modules/npm/bin/npm-cli.js`), that package. Its digest joins the tool's
//! in the key, so upgrading libpython, the standard library or npm is a miss, not a wrong hit.
//! Files are hashed through the file-state cache (one `stat` each once known), so a no-op
//! build stays a no-op.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_store::{Digest, FileStates, Store};

/// How far above a script its package's `package.json` may be (`bin/npm-cli.js`: one).
const PACKAGE_DEPTH: usize = 3;

/// Directories of a standard library that are not it: installed packages and caches.
const NOT_STDLIB: &[&str] = &["site-packages", "dist-packages", "__pycache__"];

/// The digest of what the tool at `real` (its resolved file, whose content digest is
/// `digest`) runs from beyond that file, or `None` when it runs from nothing else.
pub(crate) fn installation_digest(
    real: &Path,
    digest: &Digest,
    states: &FileStates,
    store: Option<&Store>,
) -> Option<Digest> {
    let elf = is_elf(real);
    let mut files: Vec<PathBuf> = if elf {
        libraries(real, digest, store)
    } else {
        Vec::new()
    };
    if let Some(store) = store {
        for lib in &files {
            // Best effort, as below.
            let _ = store.preload_file_state(states, lib);
        }
    }
    let mut trees = Vec::new();
    if let Some(stdlib) = python_stdlib(real) {
        trees.push((stdlib, true));
    }
    if !elf && let Some(package) = script_package(real) {
        trees.push((package, false));
    }
    let mut links = Vec::new();
    for (tree, stdlib) in &trees {
        if let Some(store) = store {
            // Best effort: without it the tree is only hashed again.
            let _ = store.preload_file_states_under(states, tree);
        }
        let listed = listing(tree, *stdlib, store);
        files.extend(listed.files.into_iter().map(PathBuf::from));
        links.extend(
            listed
                .links
                .into_iter()
                .map(|(p, t)| (PathBuf::from(p), PathBuf::from(t))),
        );
    }
    if files.is_empty() && links.is_empty() {
        return None;
    }
    files.sort();
    files.dedup();
    links.sort();
    // One `stat` per known file (its state is remembered), on every core.
    use rayon::prelude::*;
    let digests: Vec<Option<(Digest, bool)>> = files
        .par_iter()
        .map(|path| {
            states
                .file_info(path)
                .ok()
                .map(|(info, _)| (info.digest, info.executable))
        })
        .collect();
    let mut listing = Vec::new();
    for (path, found) in files.iter().zip(digests) {
        let Some((digest, executable)) = found else {
            continue;
        };
        listing.extend_from_slice(path.as_os_str().as_encoded_bytes());
        listing.push(0);
        listing.extend_from_slice(&digest.hash);
        listing.push(u8::from(executable));
    }
    for (path, target) in &links {
        listing.extend_from_slice(path.as_os_str().as_encoded_bytes());
        listing.extend_from_slice(b"\0->");
        listing.extend_from_slice(target.as_os_str().as_encoded_bytes());
        listing.push(0);
    }
    Some(Digest::of_bytes(&listing))
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The shared libraries the loader gives the program at `real` (and the loader itself), as
/// `ldd` lists them with an empty environment (as actions run). Remembered in the store per
/// binary path and digest: the loader runs once per tool version.
fn libraries(real: &Path, digest: &Digest, store: Option<&Store>) -> Vec<PathBuf> {
    let remembered = store.map(|s| {
        let mut id = real.as_os_str().as_encoded_bytes().to_vec();
        id.extend_from_slice(&digest.hash);
        s.root()
            .join("tools")
            .join(format!("{}.libs", &Digest::of_bytes(&id).hex()[..32]))
    });
    if let Some(text) = remembered
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        return text.lines().map(PathBuf::from).collect();
    }
    let Ok(out) = Command::new("ldd").arg(real).env_clear().output() else {
        return Vec::new();
    };
    // Exit 1 for a static binary ("not a dynamic executable"): no libraries.
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<PathBuf> = text.lines().filter_map(ldd_library).collect();
    if let Some(path) = remembered
        && let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let mut listing: String = libs.iter().map(|l| format!("{}\n", l.display())).collect();
        if listing.is_empty() {
            listing.push('\n');
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, listing).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    libs
}

/// The library path of one `ldd` line: `libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x…)`
/// or `/lib64/ld-linux-x86-64.so.2 (0x…)`; `None` for the vDSO and what was not found.
fn ldd_library(line: &str) -> Option<PathBuf> {
    let line = line.trim();
    let path = match line.split_once(" => ") {
        Some((_, rest)) => rest.split_whitespace().next()?,
        None => line.split_whitespace().next()?,
    };
    path.starts_with('/').then(|| PathBuf::from(path))
}

/// The standard library of a Python interpreter at `<prefix>/bin/pythonX[.Y]`:
/// `<prefix>/lib/pythonX.Y`, the one holding `os.py`.
fn python_stdlib(real: &Path) -> Option<PathBuf> {
    let name = real.file_name()?.to_str()?;
    let version = name.strip_prefix("python")?;
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let lib = real.parent()?.parent()?.join("lib");
    let candidates: Vec<PathBuf> = if version.contains('.') {
        vec![lib.join(name)]
    } else {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}.")))
            })
            .collect();
        found.sort();
        found
    };
    candidates
        .into_iter()
        .find(|dir| dir.join("os.py").is_file())
}

/// The package a script lies in: the nearest directory above it with a `package.json`.
fn script_package(real: &Path) -> Option<PathBuf> {
    real.ancestors()
        .skip(1)
        .take(PACKAGE_DEPTH)
        .find(|dir| dir.join("package.json").is_file())
        .map(Path::to_path_buf)
}

/// What a tree holds: its directories as `lstat` saw them (path, mtime and ctime in ns, inode),
/// files and symlinks (with their targets).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Listing {
    dirs: Vec<(String, i64, i64, u64)>,
    files: Vec<String>,
    links: Vec<(String, String)>,
}

fn dir_state(path: &Path) -> Option<(i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        m.ino(),
    ))
}

/// The listing of `tree`, remembered in the store while none of its directories changed (a
/// file that appears, vanishes or is replaced changes its directory's times): a `stat` per
/// directory instead of reading each.
fn listing(tree: &Path, stdlib: bool, store: Option<&Store>) -> Listing {
    let remembered = store.map(|s| {
        let id = format!("{}\0{stdlib}", tree.display());
        s.root().join("tools").join(format!(
            "{}.tree",
            &Digest::of_bytes(id.as_bytes()).hex()[..32]
        ))
    });
    if let Some(path) = &remembered
        && let Ok(bytes) = std::fs::read(path)
        && let Ok(listed) = postcard::from_bytes::<Listing>(&bytes)
        && listed
            .dirs
            .iter()
            .all(|(d, m, c, i)| dir_state(Path::new(d)) == Some((*m, *c, *i)))
    {
        return listed;
    }
    let listed = walk(tree, stdlib);
    // Not while a directory may still change within its clock tick unseen.
    let now_ns = crate::engine::memo::now_ms().saturating_mul(1_000_000);
    let settled = listed
        .dirs
        .iter()
        .all(|(_, m, c, _)| now_ns - (*m).max(*c) > cairn_store::RACY_WINDOW_NS);
    if let Some(path) = remembered
        && settled
        && let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && let Ok(bytes) = postcard::to_stdvec(&listed)
    {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    listed
}

/// Every directory, file and symlink of `tree`; a standard library without its packages,
/// caches and top-level `test` package.
fn walk(tree: &Path, stdlib: bool) -> Listing {
    let mut listed = Listing::default();
    let entries = walkdir::WalkDir::new(tree)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            if !stdlib || !e.file_type().is_dir() {
                return true;
            }
            let name = e.file_name().to_string_lossy();
            !(NOT_STDLIB.contains(&name.as_ref()) || (e.depth() == 1 && name == "test"))
        });
    let text = |p: &Path| p.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let kind = entry.file_type();
        if kind.is_dir() {
            if let Some((m, c, i)) = dir_state(entry.path()) {
                listed.dirs.push((text(entry.path()), m, c, i));
            }
        } else if kind.is_file() {
            listed.files.push(text(entry.path()));
        } else if kind.is_symlink()
            && let Ok(target) = std::fs::read_link(entry.path())
        {
            listed.links.push((text(entry.path()), text(&target)));
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_name_libraries_and_the_loader() {
        assert_eq!(
            ldd_library("\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)"),
            Some(PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"))
        );
        assert_eq!(
            ldd_library("\t/lib64/ld-linux-x86-64.so.2 (0x00007f)"),
            Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2"))
        );
        assert_eq!(ldd_library("\tlinux-vdso.so.1 (0x00007ffd)"), None);
        assert_eq!(ldd_library("\tlibgone.so.1 => not found"), None);
    }

    #[test]
    fn an_interpreters_stdlib_and_a_scripts_package_are_its_installation() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("versions/3.12.1");
        let write = |rel: &str, text: &str| {
            let path = prefix.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("bin/python3.12", "#!/bin/sh\n");
        write("lib/python3.12/os.py", "# os\n");
        write("lib/python3.12/json/__init__.py", "# json\n");
        write("lib/python3.12/site-packages/six.py", "# six\n");
        write("lib/python3.12/test/test_os.py", "# a test\n");
        write("lib/node_modules/npm/package.json", "{}\n");
        write(
            "lib/node_modules/npm/bin/npm-cli.js",
            "#!/usr/bin/env node\n",
        );
        write("lib/node_modules/npm/lib/cli.js", "// cli\n");
        let python = prefix.join("bin/python3.12");
        assert_eq!(python_stdlib(&python), Some(prefix.join("lib/python3.12")));
        let npm = prefix.join("lib/node_modules/npm/bin/npm-cli.js");
        assert_eq!(
            script_package(&npm),
            Some(prefix.join("lib/node_modules/npm"))
        );

        let states = FileStates::default();
        let digest = Digest::of_bytes(b"x");
        let of = |p: &Path| installation_digest(p, &digest, &states, None).unwrap();
        let (py, js) = (of(&python), of(&npm));
        // An installed package or a test is not the interpreter; a stdlib module is.
        write("lib/python3.12/site-packages/six.py", "# six 2\n");
        write("lib/python3.12/test/test_os.py", "# another test\n");
        let states = FileStates::default();
        let of = |p: &Path| installation_digest(p, &digest, &states, None).unwrap();
        assert_eq!(of(&python), py);
        write("lib/python3.12/json/__init__.py", "# json 2\n");
        write("lib/node_modules/npm/lib/cli.js", "// cli 2\n");
        let states = FileStates::default();
        let of = |p: &Path| installation_digest(p, &digest, &states, None).unwrap();
        assert_ne!(of(&python), py);
        assert_ne!(of(&npm), js);
    }
}
