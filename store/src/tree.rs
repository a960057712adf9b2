//! REAPI Merkle trees: input roots built from a flat path → file map, output directories
//! captured from disk into `Tree` messages and restored from them. Encodings follow REAPI's
//! canonical form (entries sorted by name), so equal trees always have equal digests.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use prost::Message;

use crate::cas::Cas;
use crate::error::{IoContext, Result, StoreError};
use crate::file_info::FileInfo;
use crate::{Digest, reapi};

/// A Merkle tree of `Directory` messages.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// The digest of the encoded root `Directory`.
    pub root: Digest,
    /// The root `Directory` message.
    pub root_dir: reapi::Directory,
    /// Every non-root `Directory` message (deduplicated), children before parents.
    pub children: Vec<reapi::Directory>,
}

#[derive(Default)]
struct Node {
    files: BTreeMap<String, FileInfo>,
    symlinks: BTreeMap<String, String>,
    dirs: BTreeMap<String, Node>,
}

impl MerkleTree {
    /// Builds the tree of a set of files given by `/`-separated relative paths. Empty
    /// directories are expressed with a trailing `/` key mapped to nothing; see `build_with_dirs`.
    pub fn build(files: &BTreeMap<String, FileInfo>) -> MerkleTree {
        MerkleTree::build_with_dirs(files, &BTreeMap::new(), &[])
    }

    /// Builds a tree of files, symlinks (path → target) and directories that must exist even if
    /// empty.
    pub fn build_with_dirs(
        files: &BTreeMap<String, FileInfo>,
        symlinks: &BTreeMap<String, String>,
        empty_dirs: &[String],
    ) -> MerkleTree {
        let mut root = Node::default();
        for (path, info) in files {
            let (dir, name) = split(path);
            node_at(&mut root, dir)
                .files
                .insert(name.to_string(), *info);
        }
        for (path, target) in symlinks {
            let (dir, name) = split(path);
            node_at(&mut root, dir)
                .symlinks
                .insert(name.to_string(), target.clone());
        }
        for dir in empty_dirs {
            node_at(&mut root, dir);
        }
        let mut children = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let root_dir = encode_node(&root, &mut children, &mut seen);
        MerkleTree {
            root: Digest::of_bytes(&root_dir.encode_to_vec()),
            root_dir,
            children,
        }
    }

    /// The digest of the directory at `path` (`/`-separated, relative to the root), if the
    /// tree has one there.
    pub fn dir_digest(&self, path: &str) -> Option<Digest> {
        let mut dir = &self.root_dir;
        let mut digest = self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let node = dir.directories.iter().find(|d| d.name == part)?;
            digest = node.digest.as_ref().and_then(Digest::from_reapi)?;
            dir = self
                .children
                .iter()
                .find(|c| Digest::of_bytes(&c.encode_to_vec()) == digest)?;
        }
        Some(digest)
    }

    /// The REAPI `Tree` message (used for output directories).
    pub fn to_reapi_tree(&self) -> reapi::Tree {
        reapi::Tree {
            root: Some(self.root_dir.clone()),
            children: self.children.clone(),
        }
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    }
}

fn node_at<'a>(root: &'a mut Node, dir: &str) -> &'a mut Node {
    let mut node = root;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        node = node.dirs.entry(part.to_string()).or_default();
    }
    node
}

fn encode_node(
    node: &Node,
    out: &mut Vec<reapi::Directory>,
    seen: &mut std::collections::HashSet<Digest>,
) -> reapi::Directory {
    // REAPI: Directory.files, .directories and .symlinks each sorted by name (BTreeMap order).
    let directories = node
        .dirs
        .iter()
        .map(|(name, child)| {
            let dir = encode_node(child, out, seen);
            let digest = Digest::of_bytes(&dir.encode_to_vec());
            if seen.insert(digest) {
                out.push(dir);
            }
            reapi::DirectoryNode {
                name: name.clone(),
                digest: Some(digest.to_reapi()),
            }
        })
        .collect();
    reapi::Directory {
        files: node
            .files
            .iter()
            .map(|(name, info)| reapi::FileNode {
                name: name.clone(),
                digest: Some(info.digest.to_reapi()),
                is_executable: info.executable,
                node_properties: None,
            })
            .collect(),
        directories,
        symlinks: node
            .symlinks
            .iter()
            .map(|(name, target)| reapi::SymlinkNode {
                name: name.clone(),
                target: target.clone(),
                node_properties: None,
            })
            .collect(),
        node_properties: None,
    }
}

/// The contents of a directory on disk, as relative paths.
#[derive(Debug, Default, Clone)]
pub struct DirContents {
    /// Regular files.
    pub files: BTreeMap<String, FileInfo>,
    /// Symlinks and their targets.
    pub symlinks: BTreeMap<String, String>,
    /// Every directory (so empty ones survive a round trip).
    pub dirs: Vec<String>,
}

/// Stores every file below `dir` in the CAS and the directory's `Tree` message too; returns the
/// digest of the encoded `Tree` and what it holds. Modes are normalised to executable or not.
pub fn capture_dir(cas: &Cas, dir: &Path) -> Result<(Digest, DirContents)> {
    let mut contents = DirContents::default();
    walk(cas, dir, "", &mut contents)?;
    let tree = MerkleTree::build_with_dirs(&contents.files, &contents.symlinks, &contents.dirs);
    let digest = cas.put_bytes(&tree.to_reapi_tree().encode_to_vec())?;
    Ok((digest, contents))
}

fn walk(cas: &Cas, dir: &Path, rel: &str, out: &mut DirContents) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .at("list", dir)?
        .collect::<std::io::Result<_>>()
        .at("list", dir)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).at("stat", &path)?;
        if meta.is_symlink() {
            let target = fs::read_link(&path).at("read link", &path)?;
            if target.is_absolute() {
                return Err(StoreError::Unsupported {
                    path,
                    why: "absolute symlinks cannot be part of an output",
                });
            }
            out.symlinks
                .insert(child, target.to_string_lossy().into_owned());
        } else if meta.is_dir() {
            out.dirs.push(child.clone());
            walk(cas, &path, &child, out)?;
        } else if meta.is_file() {
            let digest = cas.put_file(&path)?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.files.insert(child, FileInfo { digest, executable });
        } else {
            return Err(StoreError::Unsupported {
                path,
                why: "only files, directories and relative symlinks can be outputs",
            });
        }
    }
    Ok(())
}

/// Decodes a stored `Tree` message into its contents.
pub fn read_tree(cas: &Cas, tree_digest: &Digest) -> Result<DirContents> {
    let bytes = cas.get_bytes(tree_digest)?;
    let tree = reapi::Tree::decode(bytes.as_slice()).map_err(|source| StoreError::Decode {
        digest: *tree_digest,
        what: "Tree",
        source,
    })?;
    let by_digest: HashMap<Digest, &reapi::Directory> = tree
        .children
        .iter()
        .map(|d| (Digest::of_bytes(&d.encode_to_vec()), d))
        .collect();
    let mut out = DirContents::default();
    if let Some(root) = &tree.root {
        // Counted before walked, each distinct directory once.
        let (entries, bytes) = unfolded_size(root, 0, &by_digest, &mut HashMap::new());
        if entries > MAX_TREE_ENTRIES || bytes > MAX_TREE_PATH_BYTES {
            return Err(unfolds_too_far(tree_digest));
        }
        flatten(root, "", 0, &by_digest, tree_digest, &mut out)?;
    }
    Ok(out)
}

/// How deep, how many entries, and how many bytes of paths in all a stored tree may unfold to:
/// a `Tree` names each child directory by digest, so a hostile one listing the next directory
/// twice at each level unfolds to 2^depth paths from a few hundred bytes, and long names at
/// every level make each path long (an imported archive, a damaged store).
const MAX_TREE_DEPTH: usize = 512;
const MAX_TREE_ENTRIES: usize = 10_000_000;
const MAX_TREE_PATH_BYTES: usize = 1 << 30;

fn unfolds_too_far(tree_digest: &Digest) -> StoreError {
    StoreError::BadTree {
        digest: *tree_digest,
        why: format!(
            "it unfolds deeper than {MAX_TREE_DEPTH} directories, to more than {MAX_TREE_ENTRIES} entries or to more than {} MiB of paths",
            MAX_TREE_PATH_BYTES >> 20
        ),
    }
}

/// How many entries `dir` unfolds to, and the bytes of their paths relative to it (both
/// saturating; a missing child counts as empty, for `flatten` to report).
fn unfolded_size(
    dir: &reapi::Directory,
    depth: usize,
    by_digest: &HashMap<Digest, &reapi::Directory>,
    memo: &mut HashMap<Digest, (usize, usize)>,
) -> (usize, usize) {
    if depth > MAX_TREE_DEPTH {
        return (usize::MAX, usize::MAX);
    }
    let names = dir
        .files
        .iter()
        .map(|f| f.name.len())
        .chain(dir.symlinks.iter().map(|l| l.name.len()))
        .chain(dir.directories.iter().map(|d| d.name.len()));
    let mut entries = dir.files.len() + dir.symlinks.len() + dir.directories.len();
    let mut bytes = names.fold(0usize, |sum, n| sum.saturating_add(n + 1));
    for sub in &dir.directories {
        let Some(digest) = sub.digest.as_ref().and_then(Digest::from_reapi) else {
            continue;
        };
        let (n, b) = match memo.get(&digest) {
            Some(size) => *size,
            None => {
                let size = by_digest.get(&digest).map_or((0, 0), |child| {
                    unfolded_size(child, depth + 1, by_digest, memo)
                });
                memo.insert(digest, size);
                size
            }
        };
        // Every path below `sub` starts with its name.
        entries = entries.saturating_add(n);
        bytes = bytes
            .saturating_add(n.saturating_mul(sub.name.len() + 1))
            .saturating_add(b);
    }
    (entries, bytes)
}

fn flatten(
    dir: &reapi::Directory,
    rel: &str,
    depth: usize,
    by_digest: &HashMap<Digest, &reapi::Directory>,
    tree_digest: &Digest,
    out: &mut DirContents,
) -> Result<()> {
    if depth > MAX_TREE_DEPTH {
        return Err(unfolds_too_far(tree_digest));
    }
    let join = |name: &str| {
        if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        }
    };
    let bad = || StoreError::BadTree {
        digest: *tree_digest,
        why: "a child directory or digest is missing".to_string(),
    };
    for file in &dir.files {
        check_name(&file.name, tree_digest)?;
        let digest = file
            .digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(bad)?;
        out.files.insert(
            join(&file.name),
            FileInfo {
                digest,
                executable: file.is_executable,
            },
        );
    }
    for link in &dir.symlinks {
        check_name(&link.name, tree_digest)?;
        out.symlinks.insert(join(&link.name), link.target.clone());
    }
    for sub in &dir.directories {
        check_name(&sub.name, tree_digest)?;
        let digest = sub
            .digest
            .as_ref()
            .and_then(Digest::from_reapi)
            .ok_or_else(bad)?;
        let child = by_digest.get(&digest).ok_or_else(bad)?;
        let path = join(&sub.name);
        out.dirs.push(path.clone());
        flatten(child, &path, depth + 1, by_digest, tree_digest, out)?;
    }
    Ok(())
}

/// A stored name must be one path component: a tree from a remote must not write outside the
/// directory it is restored into.
fn check_name(name: &str, tree_digest: &Digest) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(StoreError::BadTree {
            digest: *tree_digest,
            why: format!("entry name {name:?} is not a single path component"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(content: &[u8]) -> FileInfo {
        FileInfo {
            digest: Digest::of_bytes(content),
            executable: false,
        }
    }

    #[test]
    fn tree_digest_depends_on_content_path_and_mode_only() {
        let mut a = BTreeMap::new();
        a.insert("pkg/b.txt".to_string(), info(b"b"));
        a.insert("pkg/a.txt".to_string(), info(b"a"));
        let t1 = MerkleTree::build(&a);
        let mut b = BTreeMap::new();
        b.insert("pkg/a.txt".to_string(), info(b"a"));
        b.insert("pkg/b.txt".to_string(), info(b"b"));
        assert_eq!(t1.root, MerkleTree::build(&b).root);

        b.insert("pkg/b.txt".to_string(), info(b"B"));
        assert_ne!(t1.root, MerkleTree::build(&b).root);

        let mut c = a.clone();
        c.get_mut("pkg/a.txt").unwrap().executable = true;
        assert_ne!(t1.root, MerkleTree::build(&c).root);

        let mut d = BTreeMap::new();
        d.insert("other/a.txt".to_string(), info(b"a"));
        d.insert("other/b.txt".to_string(), info(b"b"));
        assert_ne!(t1.root, MerkleTree::build(&d).root);
    }

    #[test]
    fn fixed_tree_digest_is_stable() {
        // Changing this digest invalidates every cache: do it only deliberately.
        let mut files = BTreeMap::new();
        files.insert("a/b.txt".to_string(), info(b"hello"));
        files.insert(
            "c.txt".to_string(),
            FileInfo {
                digest: Digest::of_bytes(b""),
                executable: true,
            },
        );
        assert_eq!(
            MerkleTree::build(&files).root.to_string(),
            "blake3:fb6279cb8085b6c05379d97facc03a74395f6cd0e0de64e3ea1ae47663d4a73f"
        );
        let root = MerkleTree::build(&files).root_dir;
        assert_eq!(root.files[0].name, "c.txt");
        assert_eq!(root.directories[0].name, "a");
    }

    #[test]
    fn captured_dir_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
        let out = dir.path().join("out");
        fs::create_dir_all(out.join("sub/empty")).unwrap();
        fs::write(out.join("a.txt"), "A").unwrap();
        fs::write(out.join("sub/b.txt"), "B").unwrap();
        std::os::unix::fs::symlink("a.txt", out.join("link")).unwrap();
        let (digest, contents) = capture_dir(&cas, &out).unwrap();
        let back = read_tree(&cas, &digest).unwrap();
        assert_eq!(back.files, contents.files);
        assert_eq!(back.symlinks, contents.symlinks);
        let mut dirs = back.dirs.clone();
        dirs.sort();
        assert_eq!(dirs, vec!["sub".to_string(), "sub/empty".to_string()]);
    }
}

/// Property tests (issue 15): a stored `Tree` may be damaged, or come from a remote or an
/// imported archive; reading it back is contents or an error, never a panic, and never a path
/// that leaves the directory it is restored into.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn cas() -> (tempfile::TempDir, Cas) {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
        (dir, cas)
    }

    /// An entry name: mostly plain, sometimes one that must be refused.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => "[a-c]{1,2}",
            1 => Just(String::new()),
            1 => Just(".".to_string()),
            1 => Just("..".to_string()),
            1 => "[a-c]/[a-c]",
            1 => "/[a-c]",
            1 => any::<String>(),
        ]
    }

    /// What a digest field of a generated message holds.
    #[derive(Debug, Clone)]
    enum DigestField {
        /// The digest of an earlier child (by index, wrapped), or of some bytes.
        Real(proptest::sample::Index),
        /// Any hash text and size.
        Garbage(String, i64),
        Missing,
    }

    fn digest_field() -> impl Strategy<Value = DigestField> {
        prop_oneof![
            4 => any::<proptest::sample::Index>().prop_map(DigestField::Real),
            1 => ("[0-9a-fA-F]{0,66}|\\PC{0,4}", any::<i64>())
                .prop_map(|(h, s)| DigestField::Garbage(h, s)),
            1 => Just(DigestField::Missing),
        ]
    }

    type Spec = (
        Vec<(String, DigestField, bool)>,
        Vec<(String, String)>,
        Vec<(String, DigestField)>,
    );

    fn spec() -> impl Strategy<Value = Spec> {
        (
            proptest::collection::vec((name(), digest_field(), any::<bool>()), 0..3),
            proptest::collection::vec((name(), "[a-c./]{0,6}"), 0..2),
            proptest::collection::vec((name(), digest_field()), 0..3),
        )
    }

    /// A `Tree` from specs: each directory refers to earlier ones (so the tree is a DAG, as
    /// content addressing makes any real one), the last is the root.
    fn tree_of(specs: &[Spec], with_root: bool) -> reapi::Tree {
        let mut dirs: Vec<reapi::Directory> = Vec::new();
        for (files, symlinks, subdirs) in specs {
            let field = |f: &DigestField, dirs: &[reapi::Directory]| match f {
                DigestField::Real(i) if !dirs.is_empty() => {
                    Some(Digest::of_bytes(&dirs[i.index(dirs.len())].encode_to_vec()).to_reapi())
                }
                DigestField::Real(i) => Some(Digest::of_bytes(&[i.index(256) as u8]).to_reapi()),
                DigestField::Garbage(hash, size_bytes) => Some(reapi::Digest {
                    hash: hash.clone(),
                    size_bytes: *size_bytes,
                }),
                DigestField::Missing => None,
            };
            let dir = reapi::Directory {
                files: files
                    .iter()
                    .map(|(name, d, x)| reapi::FileNode {
                        name: name.clone(),
                        digest: field(d, &dirs),
                        is_executable: *x,
                        node_properties: None,
                    })
                    .collect(),
                symlinks: symlinks
                    .iter()
                    .map(|(name, target)| reapi::SymlinkNode {
                        name: name.clone(),
                        target: target.clone(),
                        node_properties: None,
                    })
                    .collect(),
                directories: subdirs
                    .iter()
                    .map(|(name, d)| reapi::DirectoryNode {
                        name: name.clone(),
                        digest: field(d, &dirs),
                    })
                    .collect(),
                node_properties: None,
            };
            dirs.push(dir);
        }
        let root = if with_root { dirs.pop() } else { None };
        reapi::Tree {
            root,
            children: dirs,
        }
    }

    /// Every path is relative and normal: it stays in the directory it is restored into.
    fn all_normal(contents: &DirContents) -> bool {
        let mut paths = contents.files.keys().chain(contents.symlinks.keys());
        paths.all(|p| p.split('/').all(|c| !matches!(c, "" | "." | "..")))
            && contents
                .dirs
                .iter()
                .all(|p| p.split('/').all(|c| !matches!(c, "" | "." | "..")))
    }

    /// Non-conflicting paths: none is a directory of another.
    fn paths(max: usize) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::btree_set("[a-c]{1,2}(/[a-c]{1,2}){0,3}", 0..max).prop_map(|set| {
            let all: Vec<String> = set.into_iter().collect();
            all.iter()
                .filter(|p| !all.iter().any(|q| q.starts_with(&format!("{p}/"))))
                .cloned()
                .collect()
        })
    }

    fn ancestors(path: &str) -> impl Iterator<Item = &str> {
        path.match_indices('/').map(|(i, _)| &path[..i])
    }

    proptest! {
        #[test]
        fn any_tree_bytes_read_back_or_fail(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (_dir, cas) = cas();
            let digest = cas.put_bytes(&bytes).unwrap();
            if let Ok(contents) = read_tree(&cas, &digest) {
                prop_assert!(all_normal(&contents), "{contents:?}");
            }
        }

        #[test]
        fn any_tree_message_reads_back_to_normal_paths_or_fails(
            specs in proptest::collection::vec(spec(), 1..6),
            with_root in any::<bool>(),
        ) {
            let (_dir, cas) = cas();
            let tree = tree_of(&specs, with_root);
            let digest = cas.put_bytes(&tree.encode_to_vec()).unwrap();
            if let Ok(contents) = read_tree(&cas, &digest) {
                prop_assert!(all_normal(&contents), "{contents:?}");
            }
        }

        #[test]
        fn built_trees_read_back_to_their_contents(
            all in paths(12),
            split in any::<proptest::sample::Index>(),
            executable in any::<bool>(),
            empty in paths(4),
        ) {
            let (links, files) = all.split_at(split.index(all.len() + 1));
            let files: BTreeMap<String, FileInfo> = files
                .iter()
                .map(|p| {
                    let digest = Digest::of_bytes(p.as_bytes());
                    (p.clone(), FileInfo { digest, executable })
                })
                .collect();
            let symlinks: BTreeMap<String, String> =
                links.iter().map(|p| (p.clone(), format!("../{p}"))).collect();
            // An empty directory may not be (or be below) a file or link.
            let taken: BTreeSet<&str> = all.iter().map(String::as_str).collect();
            let empty: Vec<String> = empty
                .into_iter()
                .filter(|d| !taken.contains(d.as_str()) && !ancestors(d).any(|a| taken.contains(a)))
                .filter(|d| !all.iter().any(|p| p.starts_with(&format!("{d}/"))))
                .collect();
            let tree = MerkleTree::build_with_dirs(&files, &symlinks, &empty);
            let (_dir, cas) = cas();
            let digest = cas.put_bytes(&tree.to_reapi_tree().encode_to_vec()).unwrap();
            let back = read_tree(&cas, &digest).unwrap();
            prop_assert_eq!(&back.files, &files);
            prop_assert_eq!(&back.symlinks, &symlinks);
            let dirs: BTreeSet<&str> = back.dirs.iter().map(String::as_str).collect();
            let expected: BTreeSet<&str> = all
                .iter()
                .flat_map(|p| ancestors(p))
                .chain(empty.iter().flat_map(|d| ancestors(d).chain([d.as_str()])))
                .collect();
            prop_assert_eq!(dirs, expected);
        }
    }
}

#[cfg(test)]
mod unfolding {
    use super::*;

    /// A tree of `levels` directories, each listing the one below twice (as `a…` and `b…`,
    /// names of `name_len` bytes), stored in a fresh CAS; and `read_tree`'s answer to it.
    fn read_doubling_tree(levels: usize, name_len: usize) -> Result<DirContents> {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
        let mut child = reapi::Directory::default();
        let mut children = Vec::new();
        for _ in 0..levels {
            let digest = Digest::of_bytes(&child.encode_to_vec());
            children.push(child);
            child = reapi::Directory {
                directories: ['a', 'b']
                    .iter()
                    .map(|c| reapi::DirectoryNode {
                        name: c.to_string().repeat(name_len),
                        digest: Some(digest.to_reapi()),
                    })
                    .collect(),
                ..Default::default()
            };
        }
        let tree = reapi::Tree {
            root: Some(child),
            children,
        };
        let digest = cas.put_bytes(&tree.encode_to_vec()).unwrap();
        read_tree(&cas, &digest)
    }

    #[test]
    fn a_tree_unfolding_exponentially_is_refused_not_walked() {
        // 2^60 paths from 60 small messages.
        match read_doubling_tree(60, 1) {
            Err(StoreError::BadTree { why, .. }) => assert!(why.contains("unfolds"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_tree_unfolding_to_long_paths_is_refused_by_their_bytes() {
        // 2^18 entries (under the count) whose paths are 18 names of 255 bytes each: ~1.2 GB.
        match read_doubling_tree(18, 255) {
            Err(StoreError::BadTree { why, .. }) => assert!(why.contains("MiB of paths"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
