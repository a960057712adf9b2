//! Actions and results in a remote's digest function. For a BLAKE3 remote the local encoding
//! is the remote one. For a SHA-256 remote (most REAPI servers) the action is re-encoded with
//! every input's SHA-256 (`Sha256Map`: computed once per blob, remembered in the store), a
//! result is translated to SHA-256 digests before upload, and a downloaded result back to
//! local ones: each blob is verified against the remote's digest while its BLAKE3 digest is
//! computed, and output trees are rebuilt locally. The cache chain calls these; nothing else
//! needs to know which function a remote speaks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cairn_store::{
    BlobBytes, Digest, DigestFunction, FileInfo, MerkleTree, RemoteDigest, RemoteError, Sha256Map,
    Store, StoreError, reapi, reencode_action, reencode_tree,
};
use prost::Message;

use crate::action::PreparedAction;
use crate::action::prepare::InputBytes;

/// Where the bytes of a blob to upload are.
#[derive(Debug, Clone)]
pub(crate) enum Blob {
    Bytes(Vec<u8>),
    /// The local store's blob with this (local) digest.
    Store(Digest),
    /// A workspace file, which must still hold this digest.
    File(PathBuf, Digest),
}

/// The digest of `local` in `function`. Everything the remote is sent is named by the
/// result of this; for SHA-256, `bytes` says where to read the blob if its SHA-256 is not
/// known yet.
fn remote_digest(
    function: DigestFunction,
    sha: &Sha256Map,
    local: &Digest,
    bytes: BlobBytes,
) -> Result<RemoteDigest, StoreError> {
    match function {
        DigestFunction::Blake3 => Ok(RemoteDigest::from(*local)),
        DigestFunction::Sha256 => sha.sha256_of(local, bytes),
    }
}

/// The action's key on a remote speaking `function`.
pub(crate) fn remote_key(
    function: DigestFunction,
    action: &PreparedAction,
    sha: &Sha256Map,
    store: &Store,
    root: &Path,
) -> Result<RemoteDigest, StoreError> {
    match function {
        DigestFunction::Blake3 => Ok(RemoteDigest::from(action.key)),
        DigestFunction::Sha256 => Ok(action_blobs(function, action, sha, store, root)?.0),
    }
}

/// The action's key on the remote, and every blob the remote needs to hold the action: the
/// Action, the Command, every input Directory and every input file.
pub(crate) fn action_blobs(
    function: DigestFunction,
    action: &PreparedAction,
    sha: &Sha256Map,
    store: &Store,
    root: &Path,
) -> Result<(RemoteDigest, Vec<(RemoteDigest, Blob)>), StoreError> {
    // Where each input's bytes are, by local digest.
    let mut files: HashMap<Digest, (Blob, Option<PathBuf>)> = HashMap::new();
    for (_, info, bytes) in action.input_files() {
        let entry = match bytes {
            InputBytes::Dependency(_) if store.cas().contains(&info.digest) => {
                (Blob::Store(info.digest), None)
            }
            InputBytes::Workspace(path) | InputBytes::Dependency(path) => {
                let host = path.to_host(root);
                (Blob::File(host.clone(), info.digest), Some(host))
            }
        };
        files.entry(info.digest).or_insert(entry);
    }
    let mut blobs = Vec::new();
    let tree = &action.input_tree;
    let key = match function {
        DigestFunction::Blake3 => {
            blobs.push((
                RemoteDigest::from(Digest::of_bytes(&action.encoded_action)),
                Blob::Bytes(action.encoded_action.clone()),
            ));
            blobs.push((
                RemoteDigest::from(Digest::of_bytes(&action.encoded_command)),
                Blob::Bytes(action.encoded_command.clone()),
            ));
            for dir in std::iter::once(&tree.root_dir).chain(&tree.children) {
                let bytes = dir.encode_to_vec();
                blobs.push((
                    RemoteDigest::from(Digest::of_bytes(&bytes)),
                    Blob::Bytes(bytes),
                ));
            }
            for (digest, (blob, _)) in &files {
                blobs.push((RemoteDigest::from(*digest), blob.clone()));
            }
            RemoteDigest::from(action.key)
        }
        DigestFunction::Sha256 => {
            // One read of the SHA-256 table for all inputs, not one per file.
            let locals: Vec<Digest> = files.keys().copied().collect();
            sha.prefetch(&locals)?;
            let directories: HashMap<Digest, reapi::Directory> = std::iter::once(&tree.root_dir)
                .chain(&tree.children)
                .map(|d| (Digest::of_bytes(&d.encode_to_vec()), d.clone()))
                .collect();
            let reencoded = reencode_action(
                function,
                &action.action,
                &action.command,
                &directories,
                &mut |local: &Digest| {
                    let bytes = match files.get(local) {
                        Some((_, Some(path))) => BlobBytes::File(path),
                        _ => BlobBytes::Cas,
                    };
                    sha.sha256_of(local, bytes)
                },
            )?;
            for (digest, bytes) in reencoded.messages {
                blobs.push((digest, Blob::Bytes(bytes)));
            }
            for (remote, local) in reencoded.files {
                let blob = files
                    .get(&local)
                    .map_or(Blob::Store(local), |(blob, _)| blob.clone());
                blobs.push((remote, blob));
            }
            reencoded.action
        }
    };
    Ok((key, blobs))
}

/// The output entry of a result sent to a SHA-256 remote that lists the local (BLAKE3)
/// digest of every file blob the result names, one line `<sha256> <size> <blake3>` each,
/// sorted. With it, a machine that does not download the outputs
/// (`--remote-download minimal`) still knows their local digests, and so the keys of the
/// actions that read them. It is an output file of the result, so a signature covers it; it
/// is never written into a workspace. The claim is checked whenever a blob is downloaded.
pub(crate) const DIGESTS_FILE: &str = ".cairn-digests";

/// The manifest's bytes for `pairs` (remote digest, local digest).
fn digests_manifest(pairs: &mut [(RemoteDigest, Digest)]) -> Vec<u8> {
    pairs.sort();
    let mut text = String::new();
    let mut last = None;
    for (remote, local) in pairs.iter() {
        if last == Some(remote) {
            continue;
        }
        last = Some(remote);
        text.push_str(&format!(
            "{} {} {}\n",
            remote.hex(),
            remote.size,
            local.hex()
        ));
    }
    text.into_bytes()
}

/// Reads a manifest (see [`DIGESTS_FILE`]): SHA-256 digest → local digest. `None` when any
/// line is malformed (the outputs are then downloaded, as from a result without one).
pub(crate) fn parse_digests_manifest(bytes: &[u8]) -> Option<HashMap<RemoteDigest, Digest>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let (Some(sha), Some(size), Some(local), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let size_bytes: i64 = size.parse().ok()?;
        let as_reapi = |hash: &str| reapi::Digest {
            hash: hash.to_string(),
            size_bytes,
        };
        let remote = RemoteDigest::from_reapi(DigestFunction::Sha256, &as_reapi(sha))?;
        let local = Digest::from_reapi(&as_reapi(local))?;
        map.insert(remote, local);
    }
    Some(map)
}

/// Removes the manifest entry from a remote result; returns its digest when there was one.
pub(crate) fn take_digests_manifest(
    function: DigestFunction,
    result: &mut reapi::ActionResult,
) -> Option<RemoteDigest> {
    let index = result
        .output_files
        .iter()
        .position(|f| f.path == DIGESTS_FILE)?;
    let entry = result.output_files.remove(index);
    entry
        .digest
        .as_ref()
        .and_then(|d| RemoteDigest::from_reapi(function, d))
}

/// A local result in the remote's digests, and every blob it names (output files, output
/// trees and their files, stdout and stderr), all in the local store. For a SHA-256 remote
/// the result also names a manifest of the local digests ([`DIGESTS_FILE`]).
pub(crate) fn result_blobs(
    function: DigestFunction,
    result: &reapi::ActionResult,
    sha: &Sha256Map,
    store: &Store,
) -> Result<(reapi::ActionResult, Vec<(RemoteDigest, Blob)>), StoreError> {
    let bad = |what: &str| StoreError::BadMessageDigest {
        message: "ActionResult",
        field: what.to_string(),
    };
    let local_of = |d: Option<&reapi::Digest>, what: &str| {
        d.and_then(Digest::from_reapi).ok_or_else(|| bad(what))
    };
    let mut blobs = Vec::new();
    let mut pairs: Vec<(RemoteDigest, Digest)> = Vec::new();
    let mut remote = result.clone();
    let translate = |local: Digest,
                     blobs: &mut Vec<(RemoteDigest, Blob)>,
                     pairs: &mut Vec<(RemoteDigest, Digest)>| {
        let digest = remote_digest(function, sha, &local, BlobBytes::Cas)?;
        blobs.push((digest, Blob::Store(local)));
        pairs.push((digest, local));
        Ok::<_, StoreError>(digest)
    };
    for file in &mut remote.output_files {
        let local = local_of(file.digest.as_ref(), &file.path)?;
        file.digest = Some(translate(local, &mut blobs, &mut pairs)?.to_reapi());
    }
    for dir in &mut remote.output_directories {
        let local = local_of(dir.tree_digest.as_ref(), &dir.path)?;
        let bytes = store.cas().get_bytes(&local)?;
        let tree = reapi::Tree::decode(bytes.as_slice()).map_err(|source| StoreError::Decode {
            digest: local,
            what: "Tree",
            source,
        })?;
        let mut files = Vec::new();
        let (digest, encoded) = reencode_tree(function, &tree, &mut |local: &Digest| {
            let digest = remote_digest(function, sha, local, BlobBytes::Cas)?;
            files.push((digest, Blob::Store(*local)));
            pairs.push((digest, *local));
            Ok(digest)
        })?;
        blobs.extend(files);
        blobs.push((digest, Blob::Bytes(encoded)));
        dir.tree_digest = Some(digest.to_reapi());
    }
    for log in [&mut remote.stdout_digest, &mut remote.stderr_digest] {
        if let Some(d) = log.as_ref() {
            let local = local_of(Some(d), "stdout/stderr")?;
            *log = Some(translate(local, &mut blobs, &mut pairs)?.to_reapi());
        }
    }
    if function == DigestFunction::Sha256 && !pairs.is_empty() {
        let manifest = digests_manifest(&mut pairs);
        let digest = RemoteDigest::of_bytes(function, &manifest);
        blobs.push((digest, Blob::Bytes(manifest)));
        remote.output_files.push(reapi::OutputFile {
            path: DIGESTS_FILE.to_string(),
            digest: Some(digest.to_reapi()),
            ..Default::default()
        });
    }
    Ok((remote, blobs))
}

/// A remote's result made local: every digest is replaced by the local one and output trees
/// are rebuilt in the local encoding. `fetch` brings a blob into the local store (verified
/// against the remote digest) and returns its local digest: trees are always fetched.
/// `file` does the same for the blob of a file (an output, a file in a tree, stdout or
/// stderr): it may fetch it too, or only name it (`--remote-download minimal`). The result
/// must not hold a manifest entry any more (`take_digests_manifest`).
pub(crate) fn receive_result(
    function: DigestFunction,
    result: &reapi::ActionResult,
    store: &Store,
    fetch: &mut dyn FnMut(&RemoteDigest) -> Result<Digest, RemoteError>,
    file: &mut dyn FnMut(&RemoteDigest) -> Result<Digest, RemoteError>,
    backend: &str,
) -> Result<reapi::ActionResult, RemoteError> {
    let protocol = |why: String| RemoteError::Protocol {
        backend: backend.to_string(),
        why,
    };
    let remote_of = |d: Option<&reapi::Digest>| {
        d.and_then(|d| RemoteDigest::from_reapi(function, d))
            .ok_or_else(|| protocol("a result holds a malformed digest".into()))
    };
    let mut local = result.clone();
    for output in &mut local.output_files {
        let digest = file(&remote_of(output.digest.as_ref())?)?;
        output.digest = Some(digest.to_reapi());
    }
    for log in [&mut local.stdout_digest, &mut local.stderr_digest] {
        if log.is_some() {
            let digest = file(&remote_of(log.as_ref())?)?;
            *log = Some(digest.to_reapi());
        }
    }
    for dir in &mut local.output_directories {
        let tree_digest = remote_of(dir.tree_digest.as_ref())?;
        let stored = fetch(&tree_digest)?;
        let bytes = store.cas().get_bytes(&stored)?;
        let tree = reapi::Tree::decode(bytes.as_slice())
            .map_err(|e| protocol(format!("tree {tree_digest} does not decode: {e}")))?;
        let contents = receive_tree(function, &tree, file, &protocol)?;
        let rebuilt = MerkleTree::build_with_dirs(&contents.0, &contents.1, &contents.2);
        let digest = store
            .cas()
            .put_bytes(&rebuilt.to_reapi_tree().encode_to_vec())?;
        dir.tree_digest = Some(digest.to_reapi());
    }
    Ok(local)
}

/// Files (fetched), symlinks and directories of a remote `Tree`, by relative path.
type Contents = (
    BTreeMap<String, FileInfo>,
    BTreeMap<String, String>,
    Vec<String>,
);

fn receive_tree(
    function: DigestFunction,
    tree: &reapi::Tree,
    file: &mut dyn FnMut(&RemoteDigest) -> Result<Digest, RemoteError>,
    protocol: &dyn Fn(String) -> RemoteError,
) -> Result<Contents, RemoteError> {
    // REAPI: children are named by the digest of their encoding, in the remote's function.
    let children: HashMap<RemoteDigest, &reapi::Directory> = tree
        .children
        .iter()
        .map(|c| (RemoteDigest::of_bytes(function, &c.encode_to_vec()), c))
        .collect();
    let root = tree
        .root
        .as_ref()
        .ok_or_else(|| protocol("an output tree has no root".into()))?;
    let mut out: Contents = Default::default();
    let mut stack = vec![(String::new(), root)];
    let mut visited = 0usize;
    while let Some((prefix, dir)) = stack.pop() {
        visited += 1;
        if visited > tree.children.len() + 1 {
            return Err(protocol("an output tree refers to itself".into()));
        }
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            }
        };
        for node in &dir.files {
            let remote = node
                .digest
                .as_ref()
                .and_then(|d| RemoteDigest::from_reapi(function, d))
                .ok_or_else(|| protocol(format!("tree file `{}` has no digest", node.name)))?;
            let digest = file(&remote)?;
            out.0.insert(
                join(&node.name),
                FileInfo {
                    digest,
                    executable: node.is_executable,
                },
            );
        }
        for link in &dir.symlinks {
            out.1.insert(join(&link.name), link.target.clone());
        }
        for sub in &dir.directories {
            let remote = sub
                .digest
                .as_ref()
                .and_then(|d| RemoteDigest::from_reapi(function, d))
                .ok_or_else(|| protocol(format!("tree directory `{}` has no digest", sub.name)))?;
            let child = children.get(&remote).ok_or_else(|| {
                protocol(format!("tree directory `{}` is not in the tree", sub.name))
            })?;
            let path = join(&sub.name);
            out.2.push(path.clone());
            stack.push((path, child));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result with an output file, an output directory (nested, with an empty directory and
    /// a symlink) and stdout, stored in `store`.
    fn local_result(store: &Store) -> reapi::ActionResult {
        let cas = store.cas();
        let file = |bytes: &[u8], executable| FileInfo {
            digest: cas.put_bytes(bytes).unwrap(),
            executable,
        };
        let files: BTreeMap<String, FileInfo> = [
            ("a.js".to_string(), file(b"console.log(1)", false)),
            ("bin/run".to_string(), file(b"#!/bin/sh\n", true)),
            ("deep/er/x.css".to_string(), file(b".x{}", false)),
        ]
        .into();
        let links: BTreeMap<String, String> = [("latest".to_string(), "a.js".to_string())].into();
        let tree = MerkleTree::build_with_dirs(&files, &links, &["empty".to_string()]);
        let tree_digest = cas
            .put_bytes(&tree.to_reapi_tree().encode_to_vec())
            .unwrap();
        reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out.txt".into(),
                digest: Some(cas.put_bytes(b"out").unwrap().to_reapi()),
                ..Default::default()
            }],
            output_directories: vec![reapi::OutputDirectory {
                path: "dist".into(),
                tree_digest: Some(tree_digest.to_reapi()),
                ..Default::default()
            }],
            stdout_digest: Some(cas.put_bytes(b"hello\n").unwrap().to_reapi()),
            ..Default::default()
        }
    }

    #[test]
    fn a_result_survives_a_round_trip_through_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let here = Store::open(&dir.path().join("here")).unwrap();
        let result = local_result(&here);
        let sha = here.sha256_map();
        let (remote, blobs) = result_blobs(DigestFunction::Sha256, &result, &sha, &here).unwrap();
        // Every blob is named by the SHA-256 of its bytes; the result names only those.
        let mut held: HashMap<RemoteDigest, Vec<u8>> = HashMap::new();
        for (digest, blob) in blobs {
            let bytes = match blob {
                Blob::Bytes(b) => b,
                Blob::Store(local) => here.cas().get_bytes(&local).unwrap(),
                Blob::File(path, _) => std::fs::read(path).unwrap(),
            };
            assert_eq!(
                RemoteDigest::of_bytes(DigestFunction::Sha256, &bytes),
                digest
            );
            held.insert(digest, bytes);
        }
        let named = remote.output_files[0].digest.as_ref().unwrap();
        assert_eq!(named.hash.len(), 64);
        assert!(
            held.contains_key(&RemoteDigest::from_reapi(DigestFunction::Sha256, named).unwrap())
        );

        // The manifest names the local digest of every file blob (two outputs, three files
        // in the tree) and is not an output of the received result.
        let mut remote = remote;
        let manifest = take_digests_manifest(DigestFunction::Sha256, &mut remote)
            .expect("a SHA-256 result carries a manifest");
        let claimed = parse_digests_manifest(&held[&manifest]).unwrap();
        assert_eq!(claimed.len(), 5);
        for (sha256, local) in &claimed {
            assert_eq!(here.cas().get_bytes(local).unwrap(), held[sha256]);
        }

        // Another machine receives it: the same local result, trees rebuilt canonically.
        let there = Store::open(&dir.path().join("there")).unwrap();
        let fetched = std::cell::Cell::new(0);
        let fetch = |digest: &RemoteDigest| {
            fetched.set(fetched.get() + 1);
            let bytes = held.get(digest).expect("the remote holds it").clone();
            Ok(there
                .cas()
                .put_received(digest, &mut |sink| sink.write_all(&bytes))?)
        };
        let received = receive_result(
            DigestFunction::Sha256,
            &remote,
            &there,
            &mut { fetch },
            &mut { fetch },
            "memory",
        )
        .unwrap();
        assert_eq!(received, result);
        assert_eq!(fetched.get(), 6, "file, stdout, tree and its three files");
        let contents = cairn_store::read_tree(
            there.cas(),
            &Digest::from_reapi(received.output_directories[0].tree_digest.as_ref().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(contents.files.len(), 3);
        assert_eq!(contents.symlinks["latest"], "a.js");

        // A third machine only names the files (`--remote-download minimal`): it fetches the
        // tree alone and gets the same local result.
        let third = Store::open(&dir.path().join("third")).unwrap();
        let trees = std::cell::Cell::new(0);
        let received = receive_result(
            DigestFunction::Sha256,
            &remote,
            &third,
            &mut |digest| {
                trees.set(trees.get() + 1);
                let bytes = held[digest].clone();
                Ok(third
                    .cas()
                    .put_received(digest, &mut |sink| sink.write_all(&bytes))?)
            },
            &mut |digest| Ok(claimed[digest]),
            "memory",
        )
        .unwrap();
        assert_eq!(received, result);
        assert_eq!(trees.get(), 1);
        let local = Digest::from_reapi(result.output_files[0].digest.as_ref().unwrap()).unwrap();
        assert!(!third.cas().contains(&local), "no output bytes came");
    }

    #[test]
    fn a_manifest_with_a_bad_line_is_not_used() {
        let sha = RemoteDigest::of_bytes(DigestFunction::Sha256, b"x");
        let local = Digest::of_bytes(b"x");
        let good = format!("{} 1 {}\n", sha.hex(), local.hex());
        assert_eq!(
            parse_digests_manifest(good.as_bytes()).unwrap()[&sha],
            local
        );
        for bad in [
            format!("{good}{} 2 {}\n", sha.hex(), "zz"),
            format!("{} -1 {}\n", sha.hex(), local.hex()),
            format!("{} 1 {} extra\n", sha.hex(), local.hex()),
            "\u{ff}".to_string(),
        ] {
            assert!(parse_digests_manifest(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn bytes_that_do_not_match_the_remote_digest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = RemoteDigest::of_bytes(DigestFunction::Sha256, b"right");
        let err = store
            .cas()
            .put_received(&digest, &mut |sink| sink.write_all(b"wrong"))
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongRemoteBytes { .. }), "{err}");
        assert!(!store.cas().contains(&Digest::of_bytes(b"wrong")));
    }
}

/// Property tests (issue 15): the digests manifest of a remote result is bytes from elsewhere;
/// reading any of them is a map or `None`, and a written manifest reads back to its pairs.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn written_manifests_read_back(
            pairs in proptest::collection::btree_map(
                any::<[u8; 32]>(),
                (any::<[u8; 32]>(), 0..=i64::MAX as u64),
                0..6,
            ),
        ) {
            let mut pairs: Vec<(RemoteDigest, Digest)> = pairs
                .into_iter()
                .map(|(sha, (hash, size))| {
                    let remote = RemoteDigest { function: DigestFunction::Sha256, hash: sha, size };
                    (remote, Digest { hash, size })
                })
                .collect();
            let expected: HashMap<RemoteDigest, Digest> = pairs.iter().copied().collect();
            prop_assert_eq!(parse_digests_manifest(&digests_manifest(&mut pairs)), Some(expected));
        }

        #[test]
        fn any_manifest_bytes_read_or_are_refused(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                "([0-9a-f]{64} -?[0-9]{1,20} [0-9a-fA-F]{63,65}( x)?\n){0,3}"
                    .prop_map(String::into_bytes),
            ],
        ) {
            if let Some(map) = parse_digests_manifest(&bytes) {
                let text = std::str::from_utf8(&bytes).unwrap();
                prop_assert!(map.len() <= text.lines().count());
                for (remote, local) in map {
                    prop_assert_eq!(remote.size, local.size);
                }
            }
        }
    }
}
