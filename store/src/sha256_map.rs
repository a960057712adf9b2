//! The SHA-256 digest of blobs the store knows by their BLAKE3 digest, for remotes that accept
//! only SHA-256: computed once per blob, from bytes checked against the BLAKE3 digest in the
//! same pass, and remembered in the store's database. Never changes a blob or its local name;
//! never touches the network.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use sha2::Digest as _;

use crate::cas::feed_chunks;
use crate::error::{IoContext, Result, StoreError};
use crate::{Digest, DigestFunction, RemoteDigest, Store};

/// Where the bytes of a blob are, for [`Sha256Map::sha256_of`] to read if it must.
#[derive(Debug, Clone, Copy)]
pub enum BlobBytes<'a> {
    /// In memory.
    Memory(&'a [u8]),
    /// In the store's CAS, under the blob's digest.
    Cas,
    /// In a file on disk (e.g. a workspace source that never entered the CAS).
    File(&'a Path),
}

/// The SHA-256 digests of a store's blobs: an in-memory memo over the store's `sha256_map`
/// table. Mappings computed here are written to the table by [`Sha256Map::flush`], and on drop
/// (best effort). Safe to share between threads.
#[derive(Debug)]
pub struct Sha256Map<'a> {
    store: &'a Store,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every mapping known so far, by BLAKE3 digest.
    memo: HashMap<Digest, [u8; 32]>,
    /// Mappings computed since the last flush, not yet in the table.
    unsaved: Vec<(Digest, [u8; 32])>,
    /// Mappings a remote claimed for blobs not downloaded (see [`Sha256Map::assume`]): used
    /// to name them, never written to the table.
    assumed: HashMap<Digest, [u8; 32]>,
}

impl<'a> Sha256Map<'a> {
    /// The map of `store`, with an empty memo (see [`Store::sha256_map`]).
    pub(crate) fn new(store: &'a Store) -> Sha256Map<'a> {
        Sha256Map {
            store,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two collections updated by single calls: a panic elsewhere cannot
        // leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The SHA-256 digest of the blob `digest` names. Known (in the memo or the table), it
    /// is answered without reading `bytes`; otherwise they are read once, streaming, hashed
    /// with BLAKE3 and SHA-256 in the same pass, and must hash to `digest`
    /// ([`StoreError::FileChanged`], [`StoreError::WrongBytes`]; a CAS blob is verified by
    /// the CAS) before the mapping is remembered.
    pub fn sha256_of(&self, digest: &Digest, bytes: BlobBytes<'_>) -> Result<RemoteDigest> {
        if let Some(known) = self.known_or_err(digest)? {
            return Ok(known);
        }
        // Hash without holding the lock: other threads map other blobs meanwhile. Two
        // threads hashing the same blob compute the same answer; it is recorded once.
        let sha256 = match bytes {
            BlobBytes::Memory(bytes) => {
                let actual = Digest::of_bytes(bytes);
                if actual != *digest {
                    return Err(StoreError::WrongBytes {
                        expected: *digest,
                        actual,
                    });
                }
                DigestFunction::Sha256.hash(bytes)
            }
            BlobBytes::Cas => {
                let mut hasher = sha2::Sha256::new();
                self.store
                    .cas()
                    .read_chunks(digest, |chunk| hasher.update(chunk))?;
                hasher.finalize().into()
            }
            BlobBytes::File(path) => {
                let (actual, sha256) = hash_file(path)?;
                if actual != *digest {
                    return Err(StoreError::FileChanged {
                        path: path.to_path_buf(),
                        expected: *digest,
                        actual,
                    });
                }
                sha256
            }
        };
        let mut state = self.state();
        if state.memo.insert(*digest, sha256).is_none() {
            state.unsaved.push((*digest, sha256));
        }
        Ok(sha256_digest(digest, sha256))
    }

    /// The SHA-256 digest of `digest`'s blob if it is already known (memo or table); never
    /// hashes. A database that cannot be read answers `None`, as for an unknown blob.
    pub fn known(&self, digest: &Digest) -> Option<RemoteDigest> {
        self.known_or_err(digest).ok().flatten()
    }

    fn known_or_err(&self, digest: &Digest) -> Result<Option<RemoteDigest>> {
        {
            let state = self.state();
            if let Some(sha256) = state.memo.get(digest).or_else(|| state.assumed.get(digest)) {
                return Ok(Some(sha256_digest(digest, *sha256)));
            }
        }
        self.prefetch(std::slice::from_ref(digest))?;
        let state = self.state();
        Ok(state
            .memo
            .get(digest)
            .or_else(|| state.assumed.get(digest))
            .map(|sha256| sha256_digest(digest, *sha256)))
    }

    /// Reads the table's rows for every digest the memo does not hold yet, in one
    /// transaction, so later calls for them need no database access (e.g. before mapping
    /// every file of a tree on many threads).
    pub fn prefetch(&self, digests: &[Digest]) -> Result<()> {
        let missing: Vec<Digest> = {
            let state = self.state();
            digests
                .iter()
                .filter(|d| !state.memo.contains_key(d) && !state.assumed.contains_key(d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.store.db().get_sha256s(&missing)?;
        self.state().memo.extend(found);
        Ok(())
    }

    /// Remembers a mapping learnt elsewhere: bytes received from a SHA-256 remote, hashed with
    /// both functions as they arrived (see [`crate::Cas::put_received`]).
    pub fn remember(&self, digest: &Digest, sha256: &RemoteDigest) {
        debug_assert_eq!(sha256.function, DigestFunction::Sha256);
        let mut state = self.state();
        if state.memo.insert(*digest, sha256.hash).is_none() {
            state.unsaved.push((*digest, sha256.hash));
        }
    }

    /// Takes a remote's word that the blob it names `sha256` has the local digest `digest`,
    /// for a blob not downloaded (`--remote-download minimal`): later digests of actions that
    /// read it can then be computed without its bytes. Kept in memory only: the table holds
    /// only mappings computed from bytes (a blob received later is verified and
    /// [`Sha256Map::remember`]ed as usual).
    pub fn assume(&self, digest: &Digest, sha256: &RemoteDigest) {
        debug_assert_eq!(sha256.function, DigestFunction::Sha256);
        self.state().assumed.insert(*digest, sha256.hash);
    }

    /// Writes every mapping computed since the last flush to the store's table, in one
    /// transaction. On failure they are kept, for the next flush.
    pub fn flush(&self) -> Result<()> {
        let unsaved = std::mem::take(&mut self.state().unsaved);
        if let Err(e) = self.store.db().put_sha256s(&unsaved) {
            self.state().unsaved.extend(unsaved);
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Sha256Map<'_> {
    fn drop(&mut self) {
        // Best effort: a mapping not written is computed again next time, never wrong.
        let _ = self.flush();
    }
}

fn sha256_digest(digest: &Digest, sha256: [u8; 32]) -> RemoteDigest {
    RemoteDigest {
        function: DigestFunction::Sha256,
        hash: sha256,
        // The same bytes: the same size.
        size: digest.size,
    }
}

/// A file's BLAKE3 digest and SHA-256 hash, in one streaming pass.
fn hash_file(path: &Path) -> Result<(Digest, [u8; 32])> {
    let mut file = File::open(path).at("read", path)?;
    let mut blake3 = blake3::Hasher::new();
    let mut sha256 = sha2::Sha256::new();
    feed_chunks(&mut file, &mut |chunk| {
        blake3.update(chunk);
        sha256.update(chunk);
    })
    .at("read", path)?;
    let digest = Digest {
        hash: *blake3.finalize().as_bytes(),
        size: blake3.count(),
    };
    Ok((digest, sha256.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(bytes: &[u8]) -> RemoteDigest {
        RemoteDigest::of_bytes(DigestFunction::Sha256, bytes)
    }

    #[test]
    fn a_file_is_hashed_once_and_remembered_across_maps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let path = dir.path().join("src.txt");
        // Larger than one read chunk, so both hashes see several updates.
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let digest = Digest::of_bytes(&data);
        let map = store.sha256_map();
        assert_eq!(map.known(&digest), None);
        assert_eq!(
            map.sha256_of(&digest, BlobBytes::File(&path)).unwrap(),
            sha256(&data)
        );
        // Gone from disk: only the memo can answer now.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            map.sha256_of(&digest, BlobBytes::File(&path)).unwrap(),
            sha256(&data)
        );
        map.flush().unwrap();
        drop(map);

        let fresh = store.sha256_map();
        assert_eq!(fresh.known(&digest), Some(sha256(&data)));
        let fresh = Sha256Map::new(&store);
        assert_eq!(
            fresh.sha256_of(&digest, BlobBytes::File(&path)).unwrap(),
            sha256(&data),
            "answered from the table, without the file"
        );
    }

    #[test]
    fn mappings_are_saved_when_the_map_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = Digest::of_bytes(b"in memory");
        store
            .sha256_map()
            .sha256_of(&digest, BlobBytes::Memory(b"in memory"))
            .unwrap();
        assert_eq!(
            store.sha256_map().known(&digest),
            Some(sha256(b"in memory"))
        );
    }

    #[test]
    fn a_file_that_does_not_hash_to_the_digest_is_refused_and_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let path = dir.path().join("src.txt");
        std::fs::write(&path, "edited after hashing\n").unwrap();
        let digest = Digest::of_bytes(b"as hashed\n");
        let map = store.sha256_map();
        let err = map.sha256_of(&digest, BlobBytes::File(&path)).unwrap_err();
        match &err {
            StoreError::FileChanged {
                path: p,
                expected,
                actual,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*expected, digest);
                assert_eq!(*actual, Digest::of_bytes(b"edited after hashing\n"));
            }
            other => panic!("expected FileChanged, got {other:?}"),
        }
        assert!(err.to_string().contains("src.txt"), "{err}");
        assert!(matches!(
            map.sha256_of(&digest, BlobBytes::Memory(b"other bytes")),
            Err(StoreError::WrongBytes { .. })
        ));
        assert_eq!(map.known(&digest), None);
        map.flush().unwrap();
        assert!(store.db().get_sha256s(&[digest]).unwrap().is_empty());
    }

    #[test]
    fn a_cas_blob_is_read_from_the_store_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let packed = "abc".repeat(100_000).into_bytes(); // stored compressed
        let small = b"small blob".to_vec();
        let map = store.sha256_map();
        for data in [&packed, &small] {
            let digest = store.cas().put_bytes(data).unwrap();
            assert_eq!(
                map.sha256_of(&digest, BlobBytes::Cas).unwrap(),
                sha256(data)
            );
        }
        let absent = Digest::of_bytes(b"never stored");
        assert!(matches!(
            map.sha256_of(&absent, BlobBytes::Cas),
            Err(StoreError::Missing(_))
        ));
        let bad = store.cas().put_bytes(b"soon corrupt").unwrap();
        let (path, _) = store.cas().blob_path(&bad).unwrap();
        std::fs::write(&path, b"soon c0rrupt").unwrap();
        assert!(matches!(
            map.sha256_of(&bad, BlobBytes::Cas),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(map.known(&bad), None);
    }

    #[test]
    fn a_map_can_be_shared_by_threads() {
        fn is_sync<T: Sync>() {}
        is_sync::<Sha256Map<'static>>();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let map = store.sha256_map();
        let blobs: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100]).collect();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for blob in &blobs {
                        let d = Digest::of_bytes(blob);
                        let got = map.sha256_of(&d, BlobBytes::Memory(blob)).unwrap();
                        assert_eq!(got, sha256(blob));
                    }
                });
            }
        });
        assert_eq!(map.state().unsaved.len(), blobs.len(), "each recorded once");
    }

    #[test]
    fn prefetch_loads_known_rows_into_the_memo() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        store
            .db()
            .put_sha256s(&[(a, sha256(b"a").hash), (b, sha256(b"b").hash)])
            .unwrap();
        let map = store.sha256_map();
        map.prefetch(&[a, b, Digest::of_bytes(b"c")]).unwrap();
        assert_eq!(map.state().memo.len(), 2);
        assert_eq!(map.known(&b), Some(sha256(b"b")));
    }
}
