//! The directory remote (`file:///dir`): a directory shared by several machines (a network
//! mount) or kept between CI runs by a cache step. Plain files only, no database, so any
//! number of writers on any number of machines can share it: `cas/<2 hex>/<hex>` holds a
//! blob's bytes, `ac/<2 hex>/<hex>` an encoded `ActionResult`, each written to a unique temp
//! file in `tmp/` and renamed into place (never a partial file under a digest name; the first
//! complete copy of a blob stays). BLAKE3, as the local store. Nothing here trusts what it
//! reads: the cache chain verifies every blob against its digest before using it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::{Capabilities, RemoteCache, RemoteError};
use crate::digest::{DigestFunction, RemoteDigest};
use crate::reapi;

/// A directory remote.
#[derive(Debug)]
pub struct DirCache {
    root: PathBuf,
    name: String,
}

impl DirCache {
    /// The remote at `root` (created on first write if missing).
    pub fn new(root: &Path) -> DirCache {
        DirCache {
            root: root.to_path_buf(),
            name: format!("file://{}", root.display()),
        }
    }

    fn unavailable(&self, op: &str, path: &Path, e: io::Error) -> RemoteError {
        RemoteError::Unavailable {
            backend: self.name.clone(),
            why: format!("cannot {op} `{}`: {e}", path.display()),
        }
    }

    fn path(&self, kind: &str, digest: &RemoteDigest) -> Result<PathBuf, RemoteError> {
        if digest.function != DigestFunction::Blake3 {
            return Err(RemoteError::Protocol {
                backend: self.name.clone(),
                why: format!(
                    "it holds BLAKE3 digests, and was asked for a {} one",
                    digest.function.as_str()
                ),
            });
        }
        let hex = digest.hex();
        Ok(self.root.join(kind).join(&hex[..2]).join(hex))
    }

    /// Writes `source` to `dest` through a temp file in `tmp/`, renamed into place.
    fn publish(&self, dest: &Path, source: &mut dyn Read) -> Result<(), RemoteError> {
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir).map_err(|e| self.unavailable("create", &tmp_dir, e))?;
        let parent = dest.parent().expect("entries have a fan-out directory");
        fs::create_dir_all(parent).map_err(|e| self.unavailable("create", parent, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| self.unavailable("create a temp file in", &tmp_dir, e))?;
        io::copy(source, tmp.as_file_mut()).map_err(|e| self.unavailable("write", dest, e))?;
        tmp.persist(dest)
            .map_err(|e| self.unavailable("rename into", dest, e.error))?;
        Ok(())
    }
}

impl RemoteCache for DirCache {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        // A directory that is not there (an unmounted share) is a failing remote, not an
        // empty one: it would otherwise be filled on the local disk.
        if !self.root.is_dir() {
            return Err(self.unavailable(
                "use",
                &self.root,
                io::Error::new(io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        Ok(Capabilities::BLAKE3_FILES)
    }

    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError> {
        let mut missing = Vec::new();
        for digest in digests {
            let path = self.path("cas", digest)?;
            match fs::metadata(&path) {
                Ok(meta) if meta.len() == digest.size => {}
                Ok(_) => missing.push(*digest),
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(*digest),
                Err(e) => return Err(self.unavailable("stat", &path, e)),
            }
        }
        Ok(missing)
    }

    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        let path = self.path("cas", digest)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.unavailable("read", &path, e)),
        };
        io::copy(&mut file, sink).map_err(|e| self.unavailable("read", &path, e))?;
        Ok(true)
    }

    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError> {
        let path = self.path("cas", digest)?;
        if fs::metadata(&path).is_ok_and(|m| m.len() == digest.size) {
            return Ok(());
        }
        self.publish(&path, source)
    }

    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let path = self.path("ac", key)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.unavailable("read", &path, e)),
        };
        match reapi::ActionResult::decode(bytes.as_slice()) {
            Ok(result) => Ok(Some(result)),
            // A damaged entry is a miss: the action runs and its result replaces it.
            Err(_) => Ok(None),
        }
    }

    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let path = self.path("ac", key)?;
        self.publish(&path, &mut result.encode_to_vec().as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    #[test]
    fn blobs_and_results_round_trip_and_a_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DirCache::new(dir.path());
        assert!(cache.capabilities().is_ok());
        let bytes = b"some output".to_vec();
        let digest = RemoteDigest::from(Digest::of_bytes(&bytes));
        assert_eq!(cache.find_missing(&[digest]).unwrap(), vec![digest]);
        cache.write_blob(&digest, &mut bytes.as_slice()).unwrap();
        assert!(cache.find_missing(&[digest]).unwrap().is_empty());
        let mut read = Vec::new();
        assert!(cache.read_blob(&digest, &mut read).unwrap());
        assert_eq!(read, bytes);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "no temp file is left behind"
        );

        let key = RemoteDigest::from(Digest::of_bytes(b"action"));
        assert_eq!(cache.get_action_result(&key).unwrap(), None);
        let result = reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(digest.to_reapi()),
            ..Default::default()
        };
        cache.put_action_result(&key, &result).unwrap();
        assert_eq!(cache.get_action_result(&key).unwrap(), Some(result));

        let gone = DirCache::new(&dir.path().join("unmounted"));
        assert!(matches!(
            gone.capabilities(),
            Err(RemoteError::Unavailable { .. })
        ));
    }
}
