//! The analysis cache: a package's evaluated targets are reused when its BUILD.star, every
//! `.star` file it (transitively) loaded, and the list of files it owns are unchanged, and
//! cairn itself (version and prelude) is the same. Checking costs a `stat` per BUILD/.star file
//! (through the file-state cache) and a hash of each package's file list: no Starlark runs on a
//! no-op build.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::prelude::PRELUDE;
use crate::graph::Target;
use crate::workspace::WorkspacePath;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AnalysisCache {
    /// cairn's version and prelude digest: entries of another cairn are never trusted.
    pub fingerprint: String,
    pub packages: BTreeMap<String, PackageEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PackageEntry {
    /// Digest of the BUILD.star file.
    pub build: String,
    /// Digest of the package's file list (what `glob()` can see).
    pub files: String,
    /// Every `.star` file the evaluation loaded, directly or not, with its digest.
    pub loads: BTreeMap<String, String>,
    pub targets: Vec<Target>,
    /// `definition_digest()` of each target, in order: decoded targets get theirs from here.
    pub definitions: Vec<[u8; 32]>,
    pub globbed: Vec<WorkspacePath>,
    /// What `host_tools()` asked: tool name → whether it was found.
    pub probes: BTreeMap<String, bool>,
}

impl AnalysisCache {
    /// Decodes a stored cache; anything unreadable or from another cairn is an empty cache.
    pub fn decode(bytes: Option<&[u8]>) -> AnalysisCache {
        let fingerprint = fingerprint();
        bytes
            .and_then(super::unpack)
            .and_then(|b| postcard::from_bytes::<AnalysisCache>(&b).ok())
            .filter(|c| c.fingerprint == fingerprint)
            .filter(|c| {
                c.packages.values().all(|e| {
                    e.targets.len() == e.definitions.len()
                        && e.targets.iter().zip(&e.definitions).all(|(t, d)| {
                            // Freshly decoded: the digest is not set yet.
                            t.definition.set(*d).is_ok()
                        })
                })
            })
            .unwrap_or(AnalysisCache {
                fingerprint,
                packages: BTreeMap::new(),
            })
    }

    pub fn encode(&self) -> Vec<u8> {
        super::pack(&postcard::to_stdvec(self).expect("the analysis cache serializes"))
    }
}

/// The digest of a package's file list.
pub(crate) fn files_digest(files: &[String]) -> String {
    let mut hasher = blake3::Hasher::new();
    for f in files {
        hasher.update(f.as_bytes());
        hasher.update(b"\0");
    }
    hasher.finalize().to_hex().to_string()
}

fn fingerprint() -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(crate::graph::target::DEFINITION_DOMAIN);
    for (name, source) in PRELUDE {
        hasher.update(name.as_bytes());
        hasher.update(source.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ActionFixture;

    fn cache_with(targets: Vec<Target>, definitions: Vec<[u8; 32]>) -> Vec<u8> {
        let mut cache = AnalysisCache::decode(None);
        cache.packages.insert(
            "apps/app0001".into(),
            PackageEntry {
                build: "b".into(),
                files: "f".into(),
                loads: BTreeMap::new(),
                probes: BTreeMap::new(),
                targets,
                definitions,
                globbed: Vec::new(),
            },
        );
        cache.encode()
    }

    #[test]
    fn decoded_targets_carry_their_stored_definition_digests() {
        let target = ActionFixture::new(3, 1).target;
        let digest = target.definition_digest();
        let bytes = cache_with(vec![target.clone()], vec![digest]);
        let decoded = AnalysisCache::decode(Some(&bytes));
        let t = &decoded.packages["apps/app0001"].targets[0];
        assert_eq!(
            t.definition.get(),
            Some(&digest),
            "set from the cache, not recomputed"
        );
        // A record whose digests do not pair with its targets is not trusted.
        let bytes = cache_with(vec![target], Vec::new());
        assert!(AnalysisCache::decode(Some(&bytes)).packages.is_empty());
    }
}

/// Property tests (issue 15): a stored analysis cache may be damaged or foreign; decoding any
/// bytes is a cache (empty when untrusted), never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that decode past the fingerprint: this cairn's, then anything.
    fn after_fingerprint(rest: &[u8]) -> Vec<u8> {
        let mut bytes = postcard::to_stdvec(&fingerprint()).unwrap();
        bytes.extend_from_slice(rest);
        bytes
    }

    proptest! {
        #[test]
        fn any_stored_bytes_decode_to_a_cache(
            form in 0..3,
            rest in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let bytes = match form {
                0 => rest,
                1 => super::super::pack(&rest),
                _ => super::super::pack(&after_fingerprint(&rest)),
            };
            let cache = AnalysisCache::decode(Some(&bytes));
            prop_assert_eq!(cache.fingerprint, fingerprint());
            for entry in cache.packages.values() {
                prop_assert_eq!(entry.targets.len(), entry.definitions.len());
            }
        }
    }
}
