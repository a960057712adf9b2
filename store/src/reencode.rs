//! REAPI messages re-encoded with another digest function: an `Action` with its `Command` and
//! every `Directory` of its input root, or an output directory's `Tree`, rewritten so that
//! every digest inside is in that function. This is what a remote accepting only SHA-256 is
//! given, as valid REAPI data any client or worker can use. Pure: reads neither the store nor
//! the network (file digests come from the caller, e.g. a [`crate::Sha256Map`]).

use std::collections::{BTreeMap, HashMap};

use prost::Message;

use crate::error::{Result, StoreError};
use crate::{Digest, DigestFunction, RemoteDigest, reapi};

/// An action re-encoded with another digest function, with everything a remote needs to hold
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reencoded {
    /// The digest of the re-encoded `Action`: the action key on the remote.
    pub action: RemoteDigest,
    /// The digest of the encoded `Command`.
    pub command: RemoteDigest,
    /// The digest of the re-encoded input root `Directory`.
    pub input_root: RemoteDigest,
    /// The encoded `Action`, `Command` and every `Directory` of the input root, each by its
    /// digest in the target function.
    pub messages: BTreeMap<RemoteDigest, Vec<u8>>,
    /// Every input file's digest in the target function → its local digest (which blob to send
    /// for it).
    pub files: BTreeMap<RemoteDigest, Digest>,
}

/// Re-encodes an action with `function`'s digests. Walks the input root from
/// `action.input_root_digest` through `directories` (every `Directory` of the tree by its local
/// digest, the root included), rewriting each file's digest through `file_digest` and each
/// subdirectory's to its re-encoded digest; each distinct `Directory` is re-encoded once.
/// Entries keep their order (REAPI's sort by name does not depend on digests). The `Command`
/// holds no digest and is encoded as it is; the `Action` gets the new command and input root
/// digests and keeps every other field. With [`DigestFunction::Blake3`] and `file_digest`
/// returning the local digest, every message is byte for byte the local one.
pub fn reencode_action(
    function: DigestFunction,
    action: &reapi::Action,
    command: &reapi::Command,
    directories: &HashMap<Digest, reapi::Directory>,
    file_digest: &mut dyn FnMut(&Digest) -> Result<RemoteDigest>,
) -> Result<Reencoded> {
    let local_command = local_digest(action.command_digest.as_ref(), "Action", "command_digest")?;
    let local_root = local_digest(
        action.input_root_digest.as_ref(),
        "Action",
        "input_root_digest",
    )?;
    let command_bytes = command.encode_to_vec();
    let actual = Digest::of_bytes(&command_bytes);
    if actual != local_command {
        // The action would name another command on the remote than it does here.
        return Err(StoreError::WrongMessage {
            message: "Command",
            expected: local_command,
            actual,
        });
    }

    let lookup = |digest: &Digest| directories.get(digest);
    let mut walk = Walk::new(function, &lookup, file_digest);
    let input_root = walk.directory(&local_root)?;
    let command_digest = RemoteDigest::of_bytes(function, &command_bytes);
    let action = reapi::Action {
        command_digest: Some(command_digest.to_reapi()),
        input_root_digest: Some(input_root.to_reapi()),
        ..action.clone()
    };
    let action_bytes = action.encode_to_vec();
    let action_digest = RemoteDigest::of_bytes(function, &action_bytes);
    let Walk {
        mut messages,
        files,
        ..
    } = walk;
    messages.insert(command_digest, command_bytes);
    messages.insert(action_digest, action_bytes);
    Ok(Reencoded {
        action: action_digest,
        command: command_digest,
        input_root,
        messages,
        files,
    })
}

/// Re-encodes an output directory's `Tree` (root and children, each child referred to by the
/// digest of its encoded `Directory`) with `function`'s digests, file digests rewritten through
/// `file_digest`; children stay in their order. Returns the new `Tree`'s digest and encoding.
pub fn reencode_tree(
    function: DigestFunction,
    tree: &reapi::Tree,
    file_digest: &mut dyn FnMut(&Digest) -> Result<RemoteDigest>,
) -> Result<(RemoteDigest, Vec<u8>)> {
    let locals: Vec<Digest> = tree
        .children
        .iter()
        .map(|child| Digest::of_bytes(&child.encode_to_vec()))
        .collect();
    let by_digest: HashMap<Digest, &reapi::Directory> =
        locals.iter().copied().zip(&tree.children).collect();
    let lookup = |digest: &Digest| by_digest.get(digest).copied();
    let mut walk = Walk::new(function, &lookup, file_digest);
    let root = tree
        .root
        .as_ref()
        .map(|root| walk.rewrite(root))
        .transpose()?;
    let mut children = Vec::with_capacity(locals.len());
    for local in &locals {
        let remote = walk.directory(local)?;
        let bytes = &walk.messages[&remote];
        children.push(
            reapi::Directory::decode(bytes.as_slice())
                .expect("a Directory encoded by this walk decodes"),
        );
    }
    let bytes = reapi::Tree { root, children }.encode_to_vec();
    Ok((RemoteDigest::of_bytes(function, &bytes), bytes))
}

/// One re-encoding: every `Directory` reached so far, re-encoded once.
struct Walk<'m, F> {
    function: DigestFunction,
    /// The `Directory` stored under a local digest.
    lookup: &'m F,
    file_digest: &'m mut dyn FnMut(&Digest) -> Result<RemoteDigest>,
    /// Local digest of each `Directory` re-encoded so far → its new digest.
    done: HashMap<Digest, RemoteDigest>,
    messages: BTreeMap<RemoteDigest, Vec<u8>>,
    files: BTreeMap<RemoteDigest, Digest>,
}

impl<'m, F> Walk<'m, F>
where
    F: Fn(&Digest) -> Option<&'m reapi::Directory>,
{
    fn new(
        function: DigestFunction,
        lookup: &'m F,
        file_digest: &'m mut dyn FnMut(&Digest) -> Result<RemoteDigest>,
    ) -> Self {
        Walk {
            function,
            lookup,
            file_digest,
            done: HashMap::new(),
            messages: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// The new digest of the `Directory` stored under `local`, re-encoding it (children first)
    /// unless this walk already did.
    fn directory(&mut self, local: &Digest) -> Result<RemoteDigest> {
        if let Some(remote) = self.done.get(local) {
            return Ok(*remote);
        }
        let dir = (self.lookup)(local).ok_or(StoreError::MissingDirectory(*local))?;
        // A directory given under the wrong digest would be sent as something it is not. The
        // check also keeps the walk finite: a cycle would need a BLAKE3 fixed point.
        let actual = Digest::of_bytes(&dir.encode_to_vec());
        if actual != *local {
            return Err(StoreError::WrongMessage {
                message: "Directory",
                expected: *local,
                actual,
            });
        }
        let bytes = self.rewrite(dir)?.encode_to_vec();
        let remote = RemoteDigest::of_bytes(self.function, &bytes);
        self.messages.insert(remote, bytes);
        self.done.insert(*local, remote);
        Ok(remote)
    }

    /// `dir` with every digest in the target function. Only digests change: names, their
    /// order (REAPI: each list sorted by name), modes, symlinks and node properties stay.
    fn rewrite(&mut self, dir: &reapi::Directory) -> Result<reapi::Directory> {
        let mut out = dir.clone();
        for file in &mut out.files {
            let local = local_digest(file.digest.as_ref(), "Directory", &file.name)?;
            let remote = (self.file_digest)(&local)?;
            debug_assert_eq!(
                remote.function, self.function,
                "file_digest answers in the target function"
            );
            self.files.insert(remote, local);
            file.digest = Some(remote.to_reapi());
        }
        for sub in &mut out.directories {
            let local = local_digest(sub.digest.as_ref(), "Directory", &sub.name)?;
            sub.digest = Some(self.directory(&local)?.to_reapi());
        }
        Ok(out)
    }
}

/// A local digest held by a message field (or a named entry), which must be present and valid.
fn local_digest(
    digest: Option<&reapi::Digest>,
    message: &'static str,
    field: &str,
) -> Result<Digest> {
    digest
        .and_then(Digest::from_reapi)
        .ok_or_else(|| StoreError::BadMessageDigest {
            message,
            field: field.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlobBytes, FileInfo, MerkleTree, Store};

    /// Three files in two nested directories (`src`, `src/lib`), by path: content and mode.
    fn files() -> BTreeMap<String, (&'static [u8], bool)> {
        BTreeMap::from([
            (
                "src/main.c".to_string(),
                (
                    &b"int lib(void);\nint main(void) { return lib(); }\n"[..],
                    false,
                ),
            ),
            (
                "src/lib/lib.c".to_string(),
                (&b"int lib(void) { return 0; }\n"[..], false),
            ),
            (
                "src/lib/build.sh".to_string(),
                (&b"#!/bin/sh\ncc -o app main.c lib/lib.c\n"[..], true),
            ),
        ])
    }

    fn tree() -> MerkleTree {
        let infos = files()
            .into_iter()
            .map(|(path, (content, executable))| {
                let digest = Digest::of_bytes(content);
                (path, FileInfo { digest, executable })
            })
            .collect();
        MerkleTree::build(&infos)
    }

    /// Every `Directory` of a tree by its local digest, root included.
    fn directories(tree: &MerkleTree) -> HashMap<Digest, reapi::Directory> {
        tree.children
            .iter()
            .chain([&tree.root_dir])
            .map(|dir| (Digest::of_bytes(&dir.encode_to_vec()), dir.clone()))
            .collect()
    }

    fn command() -> reapi::Command {
        reapi::Command {
            arguments: vec!["/bin/sh".into(), "lib/build.sh".into()],
            environment_variables: vec![
                reapi::command::EnvironmentVariable {
                    name: "LANG".into(),
                    value: "C".into(),
                },
                reapi::command::EnvironmentVariable {
                    name: "PATH".into(),
                    value: "/usr/bin:/bin".into(),
                },
            ],
            output_paths: vec!["app".into(), "app.map".into()],
            working_directory: "src".into(),
            ..Default::default()
        }
    }

    fn action(tree: &MerkleTree, command: &reapi::Command) -> reapi::Action {
        reapi::Action {
            command_digest: Some(Digest::of_bytes(&command.encode_to_vec()).to_reapi()),
            input_root_digest: Some(tree.root.to_reapi()),
            timeout: Some(bazel_remote_apis::google::protobuf::Duration {
                seconds: 600,
                nanos: 0,
            }),
            do_not_cache: false,
            salt: b"cairn-golden-salt".to_vec(),
            platform: Some(reapi::Platform {
                properties: vec![reapi::platform::Property {
                    name: "OSFamily".into(),
                    value: "linux".into(),
                }],
            }),
        }
    }

    /// SHA-256 of the fixture's files, as a `file_digest` that knows only those.
    fn sha256_of_fixture_file(local: &Digest) -> Result<RemoteDigest> {
        files()
            .into_values()
            .find(|(content, _)| Digest::of_bytes(content) == *local)
            .map(|(content, _)| RemoteDigest::of_bytes(DigestFunction::Sha256, content))
            .ok_or(StoreError::Missing(*local))
    }

    fn reencode_fixture(function: DigestFunction) -> Reencoded {
        let tree = tree();
        let command = command();
        let mut file_digest = |d: &Digest| match function {
            DigestFunction::Sha256 => sha256_of_fixture_file(d),
            DigestFunction::Blake3 => Ok(RemoteDigest::from(*d)),
        };
        reencode_action(
            function,
            &action(&tree, &command),
            &command,
            &directories(&tree),
            &mut file_digest,
        )
        .unwrap()
    }

    #[test]
    fn fixed_action_has_a_stable_sha256_encoding() {
        // What a SHA-256 remote knows this action by. Changing it must be deliberate: it
        // invalidates every result cairn stored on such remotes. (Checked, when it was pinned,
        // against a protobuf encoding written by hand outside prost.)
        let re = reencode_fixture(DigestFunction::Sha256);
        assert_eq!(
            re.action.to_string(),
            "sha256:5667f01ed47e29bc2ae7c23b0201d84e6613312a04c883c30b73fbf3d8c51309/185"
        );
        assert_eq!(re.messages.len(), 5, "Action, Command, 3 Directories");
        assert_eq!(re.files.len(), 3);
    }

    #[test]
    fn blake3_identity_reencoding_is_the_local_encoding() {
        let tree = tree();
        let command = command();
        let action = action(&tree, &command);
        let re = reencode_fixture(DigestFunction::Blake3);
        let action_bytes = action.encode_to_vec();
        assert_eq!(
            re.action,
            RemoteDigest::from(Digest::of_bytes(&action_bytes))
        );
        assert_eq!(re.messages[&re.action], action_bytes);
        assert_eq!(re.input_root, RemoteDigest::from(tree.root));
        assert_eq!(
            re.command,
            RemoteDigest::from(Digest::of_bytes(&command.encode_to_vec()))
        );
        for (local, dir) in directories(&tree) {
            assert_eq!(re.messages[&RemoteDigest::from(local)], dir.encode_to_vec());
        }
        for (remote, local) in &re.files {
            assert_eq!(*remote, RemoteDigest::from(*local));
        }
    }

    #[test]
    fn every_digest_in_a_sha256_reencoding_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut contents: HashMap<Digest, Vec<u8>> = HashMap::new();
        for (content, _) in files().into_values() {
            contents.insert(store.cas().put_bytes(content).unwrap(), content.to_vec());
        }
        let map = store.sha256_map();
        let tree = tree();
        let command = command();
        let local_action = action(&tree, &command);
        let re = reencode_action(
            DigestFunction::Sha256,
            &local_action,
            &command,
            &directories(&tree),
            &mut |d| map.sha256_of(d, BlobBytes::Cas),
        )
        .unwrap();

        // Every message is stored under its own SHA-256 digest.
        for (digest, bytes) in &re.messages {
            assert_eq!(
                *digest,
                RemoteDigest::of_bytes(DigestFunction::Sha256, bytes)
            );
        }
        let resolve = |d: &Option<reapi::Digest>| {
            let d = RemoteDigest::from_reapi(DigestFunction::Sha256, d.as_ref().unwrap()).unwrap();
            assert!(re.messages.contains_key(&d), "{d} resolves");
            d
        };
        let action = reapi::Action::decode(re.messages[&re.action].as_slice()).unwrap();
        assert_eq!(resolve(&action.command_digest), re.command);
        assert_eq!(resolve(&action.input_root_digest), re.input_root);
        assert_eq!(
            reapi::Command::decode(re.messages[&re.command].as_slice()).unwrap(),
            command
        );
        assert_eq!(action.timeout, local_action.timeout);
        assert_eq!(action.salt, local_action.salt);
        assert_eq!(action.platform, local_action.platform);
        assert_eq!(action.do_not_cache, local_action.do_not_cache);

        // Walk the input root through `messages` only.
        let mut pending = vec![(String::new(), re.input_root)];
        let mut reached = vec![re.action, re.command];
        let mut paths = Vec::new();
        while let Some((path, digest)) = pending.pop() {
            reached.push(digest);
            let dir = reapi::Directory::decode(re.messages[&digest].as_slice()).unwrap();
            for file in &dir.files {
                let remote =
                    RemoteDigest::from_reapi(DigestFunction::Sha256, file.digest.as_ref().unwrap())
                        .unwrap();
                let local = re.files[&remote];
                assert_eq!(
                    remote,
                    RemoteDigest::of_bytes(DigestFunction::Sha256, &contents[&local])
                );
                paths.push(format!("{path}{}", file.name));
            }
            for sub in &dir.directories {
                pending.push((format!("{path}{}/", sub.name), resolve(&sub.digest)));
            }
        }
        paths.sort();
        assert_eq!(paths, files().into_keys().collect::<Vec<_>>());
        reached.sort();
        assert_eq!(
            reached,
            re.messages.keys().copied().collect::<Vec<_>>(),
            "nothing unreferenced"
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let tree = tree();
        let command = command();
        let mut dirs = directories(&tree);
        let lib = tree.children[0].clone(); // children come before parents: `src/lib`
        let lib_digest = Digest::of_bytes(&lib.encode_to_vec());
        dirs.remove(&lib_digest);
        let err = reencode_action(
            DigestFunction::Sha256,
            &action(&tree, &command),
            &command,
            &dirs,
            &mut sha256_of_fixture_file,
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::MissingDirectory(d) if d == lib_digest),
            "{err}"
        );
    }

    #[test]
    fn a_command_the_action_does_not_name_is_refused() {
        let tree = tree();
        let command = command();
        let mut other = command.clone();
        other.arguments.push("--verbose".into());
        let err = reencode_action(
            DigestFunction::Sha256,
            &action(&tree, &command),
            &other,
            &directories(&tree),
            &mut sha256_of_fixture_file,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::WrongMessage {
                    message: "Command",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn tree_reencoding_round_trips() {
        let tree = tree().to_reapi_tree();
        let local = tree.encode_to_vec();
        let (digest, bytes) =
            reencode_tree(DigestFunction::Blake3, &tree, &mut |d| Ok((*d).into())).unwrap();
        assert_eq!(bytes, local, "identity re-encoding is the local encoding");
        assert_eq!(digest, RemoteDigest::from(Digest::of_bytes(&local)));

        let (digest, bytes) =
            reencode_tree(DigestFunction::Sha256, &tree, &mut sha256_of_fixture_file).unwrap();
        assert_eq!(
            digest,
            RemoteDigest::of_bytes(DigestFunction::Sha256, &bytes)
        );
        let remote = reapi::Tree::decode(bytes.as_slice()).unwrap();
        let by_digest: HashMap<RemoteDigest, &reapi::Directory> = remote
            .children
            .iter()
            .map(|d| {
                (
                    RemoteDigest::of_bytes(DigestFunction::Sha256, &d.encode_to_vec()),
                    d,
                )
            })
            .collect();
        // Same shape, same names and modes; every digest in SHA-256 and resolvable.
        fn same(
            local: &reapi::Directory,
            remote: &reapi::Directory,
            by_digest: &HashMap<RemoteDigest, &reapi::Directory>,
            local_children: &[reapi::Directory],
        ) {
            assert_eq!(local.files.len(), remote.files.len());
            for (l, r) in local.files.iter().zip(&remote.files) {
                assert_eq!((&l.name, l.is_executable), (&r.name, r.is_executable));
                let l = Digest::from_reapi(l.digest.as_ref().unwrap()).unwrap();
                assert_eq!(
                    RemoteDigest::from_reapi(DigestFunction::Sha256, r.digest.as_ref().unwrap()),
                    Some(sha256_of_fixture_file(&l).unwrap())
                );
            }
            assert_eq!(local.directories.len(), remote.directories.len());
            for (l, r) in local.directories.iter().zip(&remote.directories) {
                assert_eq!(l.name, r.name);
                let l = Digest::from_reapi(l.digest.as_ref().unwrap()).unwrap();
                let l = local_children
                    .iter()
                    .find(|c| Digest::of_bytes(&c.encode_to_vec()) == l)
                    .unwrap();
                let r =
                    RemoteDigest::from_reapi(DigestFunction::Sha256, r.digest.as_ref().unwrap())
                        .unwrap();
                same(l, by_digest[&r], by_digest, local_children);
            }
        }
        same(
            tree.root.as_ref().unwrap(),
            remote.root.as_ref().unwrap(),
            &by_digest,
            &tree.children,
        );
        assert_eq!(remote.children.len(), tree.children.len());
    }

    #[test]
    fn a_tree_with_a_dangling_child_is_refused() {
        let mut tree = tree().to_reapi_tree();
        let lib = tree.children.remove(0);
        let err =
            reencode_tree(DigestFunction::Sha256, &tree, &mut sha256_of_fixture_file).unwrap_err();
        assert!(
            matches!(err, StoreError::MissingDirectory(d) if d == Digest::of_bytes(&lib.encode_to_vec())),
            "{err}"
        );
    }
}
