//! The content-addressed blob store: files named by digest, written atomically (temp file +
//! rename), zstd-compressed where that pays, and verified against their digest when read.
//! Never deletes a blob except one found corrupt (GC lives elsewhere).

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{IoContext, Result, StoreError};
use crate::{Digest, DigestFunction, RemoteDigest};

/// Blobs up to this size are restored through memory (see `write_to`).
const SMALL_BLOB: u64 = 1 << 20;

/// Blobs smaller than this are stored raw: compression would not pay for its header.
const COMPRESS_MIN: u64 = 4 * 1024;
/// Blobs larger than this are stored raw, to keep memory bounded while compressing.
const COMPRESS_MAX: u64 = 64 * 1024 * 1024;
/// A compressed blob is kept only if it is at most this fraction of the raw size.
const COMPRESS_RATIO: f64 = 0.8;

/// The blob store rooted at a directory (`<store>/cas`).
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
    tmp: PathBuf,
}

/// Where and how one blob is stored.
enum Stored {
    Raw(PathBuf),
    Zstd(PathBuf),
}

/// Whether unnamed files (`O_TMPFILE`) work here; cleared the first time they do not.
static UNNAMED_FILES: AtomicBool = AtomicBool::new(true);

/// A blob being written. Where the file system has unnamed files (ext4, xfs, btrfs, tmpfs),
/// it is one in the blob's own fan-out directory, given its digest name once complete: no
/// temp name, no rename across directories (which takes a lock for the whole file system, so
/// two workers storing blobs wait on each other), and nothing left behind by a crash.
/// Elsewhere it is a named temp file in `tmp/`, renamed into place.
///
/// There is no fsync per blob (it would dominate cold builds): a crash leaves no blob or a
/// whole one under a digest name, and one damaged by a power loss fails verification on read,
/// is removed, and its action re-runs.
enum Pending {
    Unnamed(File),
    Named(tempfile::NamedTempFile),
}

impl Pending {
    fn file(&mut self) -> &mut File {
        match self {
            Pending::Unnamed(file) => file,
            Pending::Named(tmp) => tmp.as_file_mut(),
        }
    }

    /// Puts the finished blob at `dest`. Another process may have stored the same blob first;
    /// then that one stays.
    fn publish(self, dest: &Path, tmp_dir: &Path) -> Result<()> {
        match self {
            Pending::Unnamed(mut file) => {
                use std::os::fd::AsRawFd;
                // Naming an unnamed file takes its /proc path (linking by descriptor alone,
                // AT_EMPTY_PATH, needs a capability).
                let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
                let linked = nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    by_fd.as_str(),
                    nix::fcntl::AT_FDCWD,
                    dest,
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                );
                match linked {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                    // No /proc here: copy to a named temp file, and use those from now on.
                    Err(nix::errno::Errno::ENOENT) if !Path::new("/proc/self/fd").exists() => {
                        UNNAMED_FILES.store(false, Ordering::Relaxed);
                        let mut named = temp_file(tmp_dir)?;
                        file.seek(io::SeekFrom::Start(0)).at("read", dest)?;
                        io::copy(&mut file, named.as_file_mut()).at("copy", dest)?;
                        Pending::Named(named).publish(dest, tmp_dir)
                    }
                    Err(e) => Err(io::Error::from(e)).at("link into", dest),
                }
            }
            Pending::Named(tmp) => {
                tmp.persist(dest)
                    .map_err(|e| e.error)
                    .at("rename into", dest)?;
                Ok(())
            }
        }
    }
}

fn temp_file(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new_in(dir).at("create temp file in", dir)
}

impl Cas {
    /// Opens (creating if needed) the blob store under `root`, using `tmp` for partial writes.
    /// `tmp` must be on the same file system as `root` so renames are atomic.
    pub fn open(root: PathBuf, tmp: PathBuf) -> Result<Cas> {
        fs::create_dir_all(&root).at("create", &root)?;
        fs::create_dir_all(&tmp).at("create", &tmp)?;
        Ok(Cas { root, tmp })
    }

    fn raw_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join(&hex[..2]).join(hex)
    }

    fn zstd_path(&self, digest: &Digest) -> PathBuf {
        let mut path = self.raw_path(digest);
        path.set_extension("zst");
        path
    }

    fn locate(&self, digest: &Digest) -> Option<Stored> {
        let raw = self.raw_path(digest);
        if raw.exists() {
            return Some(Stored::Raw(raw));
        }
        let zst = self.zstd_path(digest);
        zst.exists().then_some(Stored::Zstd(zst))
    }

    /// Whether the blob is present (not verified).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.locate(digest).is_some()
    }

    /// The path of a stored blob and whether it is compressed, for size accounting.
    pub fn blob_path(&self, digest: &Digest) -> Option<(PathBuf, bool)> {
        match self.locate(digest)? {
            Stored::Raw(p) => Some((p, false)),
            Stored::Zstd(p) => Some((p, true)),
        }
    }

    /// The on-disk path of the blob stored under `hex`, if present.
    pub fn blob_path_hex(&self, hex: &str) -> Option<PathBuf> {
        if hex.len() < 2 {
            return None;
        }
        let raw = self.root.join(&hex[..2]).join(hex);
        if raw.exists() {
            return Some(raw);
        }
        let zst = raw.with_extension("zst");
        zst.exists().then_some(zst)
    }

    /// Stores bytes; returns their digest. A blob already present is not rewritten.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !self.contains(&digest) {
            self.write_new(&digest, bytes)?;
        }
        Ok(digest)
    }

    /// Stores a file's content; returns its digest. Reads the file once for hashing and once
    /// more only if the blob is new.
    pub fn put_file(&self, path: &Path) -> Result<Digest> {
        let digest = Digest::of_file(path).at("read", path)?;
        self.put_file_with_digest(path, digest)?;
        Ok(digest)
    }

    /// Stores a file whose digest the caller already knows (e.g. from the file-state cache).
    /// The copy is re-hashed before it is published, so a file that changed in between is
    /// rejected instead of stored under the wrong name.
    pub fn put_file_with_digest(&self, path: &Path, digest: Digest) -> Result<()> {
        if self.contains(&digest) {
            return Ok(());
        }
        if (COMPRESS_MIN..=COMPRESS_MAX).contains(&digest.size) {
            let bytes = fs::read(path).at("read", path)?;
            let actual = Digest::of_bytes(&bytes);
            if actual != digest {
                return Err(changed_while_storing(path));
            }
            return self.write_new(&digest, &bytes);
        }
        let dest = self.raw_path(&digest);
        let mut pending = self.pending(&dest)?;
        let mut source = File::open(path).at("read", path)?;
        let mut writer = HashingWriter::new(pending.file());
        io::copy(&mut source, &mut writer).copying(path, &self.tmp)?;
        if writer.digest() != digest {
            return Err(changed_while_storing(path));
        }
        pending.publish(&dest, &self.tmp)
    }

    /// Stores a blob read from `source`, which must yield exactly the bytes of `digest`
    /// (checked before the blob is published: wrong bytes never get the name). Large blobs are
    /// streamed, never held in memory. A blob already present is not rewritten.
    pub fn put_stream(&self, digest: &Digest, source: &mut dyn Read) -> Result<()> {
        if self.contains(digest) {
            return Ok(());
        }
        let dest = self.raw_path(digest);
        if (COMPRESS_MIN..=COMPRESS_MAX).contains(&digest.size) {
            let mut bytes = Vec::with_capacity(digest.size as usize);
            source.read_to_end(&mut bytes).at("receive", &dest)?;
            let actual = Digest::of_bytes(&bytes);
            if actual != *digest {
                return Err(StoreError::WrongBytes {
                    expected: *digest,
                    actual,
                });
            }
            return self.write_new(digest, &bytes);
        }
        let mut pending = self.pending(&dest)?;
        let mut writer = HashingWriter::new(pending.file());
        io::copy(source, &mut writer).at("receive", &dest)?;
        let actual = writer.digest();
        if actual != *digest {
            return Err(StoreError::WrongBytes {
                expected: *digest,
                actual,
            });
        }
        pending.publish(&dest, &self.tmp)
    }

    /// Stores a blob whose bytes `fill` writes (e.g. a download): they are hashed on the way
    /// and published under `digest` only if they match it. A blob already present is not
    /// rewritten (`fill` is not called). Returns whether `fill` was called.
    pub fn put_writing(
        &self,
        digest: &Digest,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<bool> {
        if self.contains(digest) {
            return Ok(false);
        }
        let dest = self.raw_path(digest);
        let mut pending = self.pending(&dest)?;
        let mut writer = HashingWriter::new(pending.file());
        fill(&mut writer).at("receive", &dest)?;
        let actual = writer.digest();
        if actual != *digest {
            return Err(StoreError::WrongBytes {
                expected: *digest,
                actual,
            });
        }
        pending.publish(&dest, &self.tmp)?;
        Ok(true)
    }

    /// Stores bytes received under a remote's digest (`expected`, in its function), whose
    /// local digest is not known yet: `fill` writes them, they are hashed with BLAKE3 (and
    /// with `expected`'s function) on the way, and published under their BLAKE3 digest only if
    /// they match `expected`. Returns the local digest.
    pub fn put_received(
        &self,
        expected: &RemoteDigest,
        fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Digest> {
        let mut tmp = temp_file(&self.tmp)?;
        let tmp_path = tmp.path().to_path_buf();
        let mut writer = DualHashingWriter {
            inner: tmp.as_file_mut(),
            blake3: blake3::Hasher::new(),
            sha256: (expected.function == DigestFunction::Sha256)
                .then(<sha2::Sha256 as sha2::Digest>::new),
        };
        fill(&mut writer).at("receive", &tmp_path)?;
        let local = Digest {
            hash: *writer.blake3.finalize().as_bytes(),
            size: writer.blake3.count(),
        };
        let actual = match writer.sha256.take() {
            Some(hasher) => RemoteDigest {
                function: DigestFunction::Sha256,
                hash: sha2::Digest::finalize(hasher).into(),
                size: local.size,
            },
            None => RemoteDigest::from(local),
        };
        if actual != *expected {
            return Err(StoreError::WrongRemoteBytes {
                expected: *expected,
                actual,
            });
        }
        if self.contains(&local) {
            return Ok(local);
        }
        let dest = self.raw_path(&local);
        let parent = dest.parent().expect("blob paths have a fan-out directory");
        fs::create_dir_all(parent).at("create", parent)?;
        Pending::Named(tmp).publish(&dest, &self.tmp)?;
        Ok(local)
    }

    /// A reader of a blob's bytes (decompressed), not verified: for sending a blob to a
    /// receiver that verifies what it gets.
    pub fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        match self.locate(digest).ok_or(StoreError::Missing(*digest))? {
            Stored::Raw(path) => Ok(Box::new(File::open(&path).at("read", &path)?)),
            Stored::Zstd(path) => {
                let file = File::open(&path).at("read", &path)?;
                let decoder = zstd::stream::read::Decoder::new(file).at("decompress", &path)?;
                Ok(Box::new(decoder))
            }
        }
    }

    /// Streams a blob's bytes into `sink`, verifying them on the way; returns their length.
    /// A corrupt blob is removed and reported, after `sink` has seen its bytes: callers that
    /// publish what they wrote must do so only on success.
    pub fn read_to(&self, digest: &Digest, sink: &mut dyn Write) -> Result<u64> {
        let mut writer = HashingWriter::new(sink);
        match self.locate(digest).ok_or(StoreError::Missing(*digest))? {
            Stored::Raw(path) => {
                let mut file = File::open(&path).at("read", &path)?;
                io::copy(&mut file, &mut writer).at("read", &path)?;
            }
            Stored::Zstd(path) => {
                let file = File::open(&path).at("read", &path)?;
                zstd::stream::read::Decoder::new(file)
                    .and_then(|mut d| io::copy(&mut d, &mut writer))
                    .at("decompress", &path)?;
            }
        }
        let actual = writer.digest();
        self.check(digest, actual)?;
        Ok(actual.size)
    }

    fn write_new(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let size = bytes.len() as u64;
        if (COMPRESS_MIN..=COMPRESS_MAX).contains(&size) {
            let packed = zstd::bulk::compress(bytes, 3).at("compress", self.raw_path(digest))?;
            if (packed.len() as f64) <= size as f64 * COMPRESS_RATIO {
                return self.write_atomically(&self.zstd_path(digest), &packed);
            }
        }
        self.write_atomically(&self.raw_path(digest), bytes)
    }

    fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut pending = self.pending(dest)?;
        pending.file().write_all(bytes).at("write", dest)?;
        pending.publish(dest, &self.tmp)
    }

    /// A file to write the blob for `dest` into (see [`Pending`]).
    fn pending(&self, dest: &Path) -> Result<Pending> {
        let parent = dest.parent().expect("blob paths have a fan-out directory");
        fs::create_dir_all(parent).at("create", parent)?;
        if UNNAMED_FILES.load(Ordering::Relaxed) {
            use std::os::unix::fs::OpenOptionsExt;
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::libc::O_TMPFILE)
                .mode(0o600)
                .open(parent)
            {
                Ok(file) => return Ok(Pending::Unnamed(file)),
                // EOPNOTSUPP: this file system has no unnamed files; EISDIR or ENOENT: the
                // kernel predates them.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::ENOENT)
                    ) =>
                {
                    UNNAMED_FILES.store(false, Ordering::Relaxed)
                }
                Err(e) => return Err(e).at("create temp file in", parent),
            }
        }
        Ok(Pending::Named(temp_file(&self.tmp)?))
    }

    /// Reads a whole blob, verifying its digest. A corrupt blob is removed and reported.
    pub fn get_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes = match self.locate(digest).ok_or(StoreError::Missing(*digest))? {
            Stored::Raw(path) => fs::read(&path).at("read", &path)?,
            Stored::Zstd(path) => {
                let file = File::open(&path).at("read", &path)?;
                // The size comes from a record that may be damaged (guarded by
                // `a_read_with_any_size_is_the_blob_or_an_error`): reserve no more than a
                // compressed blob can hold.
                let mut out = Vec::with_capacity(digest.size.min(COMPRESS_MAX) as usize);
                zstd::stream::read::Decoder::new(file)
                    .and_then(|mut d| d.read_to_end(&mut out))
                    .at("decompress", &path)?;
                out
            }
        };
        self.check(digest, Digest::of_bytes(&bytes))?;
        Ok(bytes)
    }

    /// Streams a blob's content to `each` in chunks of at most 256 KiB (memory stays bounded
    /// whatever the blob's size), verifying its digest at the end. On `Err`, the chunks already
    /// given were not the blob (a corrupt blob is removed and reported as in `get_bytes`): the
    /// caller must discard whatever it made of them.
    pub fn read_chunks(&self, digest: &Digest, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut hasher = blake3::Hasher::new();
        let mut both = |chunk: &[u8]| {
            hasher.update(chunk);
            each(chunk);
        };
        match self.locate(digest).ok_or(StoreError::Missing(*digest))? {
            Stored::Raw(path) => {
                let mut file = File::open(&path).at("read", &path)?;
                feed_chunks(&mut file, &mut both).at("read", &path)?;
            }
            Stored::Zstd(path) => {
                let file = File::open(&path).at("read", &path)?;
                zstd::stream::read::Decoder::new(file)
                    .and_then(|mut d| feed_chunks(&mut d, &mut both))
                    .at("decompress", &path)?;
            }
        }
        let actual = Digest {
            hash: *hasher.finalize().as_bytes(),
            size: hasher.count(),
        };
        self.check(digest, actual)
    }

    /// Writes a blob's content to `dest`, a new file in a directory no one else writes to (an
    /// action's sandbox): no temp file and rename, since no reader can see it half-written.
    /// Mode 0644, or 0755 when `executable`. Blobs above 1 MiB go through [`Cas::write_to`].
    pub fn write_new_file(&self, digest: &Digest, dest: &Path, executable: bool) -> Result<()> {
        if digest.size > SMALL_BLOB {
            return self.write_to(digest, dest, executable);
        }
        use std::os::unix::fs::PermissionsExt;
        let bytes = self.get_bytes(digest)?;
        let parent = dest
            .parent()
            .expect("a destination file has a parent directory");
        fs::create_dir_all(parent).at("create", parent)?;
        let mut file = File::create_new(dest).at("create", dest)?;
        file.write_all(&bytes).at("write", dest)?;
        let mode = if executable { 0o755 } else { 0o644 };
        file.set_permissions(fs::Permissions::from_mode(mode))
            .at("chmod", dest)
    }

    /// Writes a blob's content to `dest` (replacing it atomically) with mode 0644, or 0755 when
    /// `executable`. Small blobs are read and verified in memory and written once; larger raw
    /// blobs are reflinked where the file system allows, else copied, and the written file is
    /// verified before it is renamed into place.
    pub fn write_to(&self, digest: &Digest, dest: &Path, executable: bool) -> Result<()> {
        let parent = dest
            .parent()
            .expect("a destination file has a parent directory");
        fs::create_dir_all(parent).at("create", parent)?;
        if digest.size <= SMALL_BLOB {
            // One file creation instead of three (temp file, its removal, the copy): file
            // creation is what restoring thousands of outputs spends its time on.
            use std::os::unix::fs::PermissionsExt;
            let bytes = self.get_bytes(digest)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(crate::TEMP_PREFIX)
                .tempfile_in(parent)
                .at("create temp file in", parent)?;
            tmp.write_all(&bytes).at("write", tmp.path())?;
            let mode = if executable { 0o755 } else { 0o644 };
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
                .at("chmod", tmp.path())?;
            tmp.persist(dest)
                .map_err(|e| e.error)
                .at("rename into", dest)?;
            return Ok(());
        }
        let tmp = tempfile::Builder::new()
            .prefix(crate::TEMP_PREFIX)
            .tempfile_in(parent)
            .at("create temp file in", parent)?;
        let actual = match self.locate(digest).ok_or(StoreError::Missing(*digest))? {
            Stored::Raw(path) => {
                // reflink needs a destination that does not exist yet: keep the unique name,
                // drop the empty file.
                let tmp = tmp.into_temp_path();
                fs::remove_file(&tmp).at("remove", &tmp)?;
                reflink_copy::reflink_or_copy(&path, &tmp).at("copy", &path)?;
                let actual = Digest::of_file(&tmp).at("read", &tmp)?;
                (tmp, actual)
            }
            Stored::Zstd(path) => {
                let file = File::open(&path).at("read", &path)?;
                let mut writer = HashingWriter::new(tmp.as_file());
                zstd::stream::read::Decoder::new(file)
                    .and_then(|mut d| io::copy(&mut d, &mut writer))
                    .at("decompress", &path)?;
                let actual = writer.digest();
                (tmp.into_temp_path(), actual)
            }
        };
        let (tmp, actual) = actual;
        self.check(digest, actual)?;
        set_mode(&tmp, executable)?;
        tmp.persist(dest)
            .map_err(|e| e.error)
            .at("rename into", dest)?;
        Ok(())
    }

    /// Re-hashes a blob; removes it if corrupt. Returns whether it was sound.
    pub fn verify(&self, digest: &Digest) -> Result<bool> {
        match self.get_bytes(digest) {
            Ok(_) => Ok(true),
            Err(StoreError::Corrupt { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn check(&self, expected: &Digest, actual: Digest) -> Result<()> {
        if actual == *expected {
            return Ok(());
        }
        // A corrupt blob must never be served again: drop it so the next build re-creates it.
        // (The right bytes asked for with a wrong size are a wrong record, not a bad blob:
        // the blob stays.)
        if actual.hash != expected.hash {
            for path in [self.raw_path(expected), self.zstd_path(expected)] {
                let _ = fs::remove_file(path);
            }
        }
        Err(StoreError::Corrupt {
            expected: *expected,
            actual,
        })
    }

    /// Re-hashes the blob stored under `hex` (whatever its size); a corrupt one is removed.
    /// Returns whether it was sound.
    pub fn verify_hex(&self, hex: &str) -> Result<bool> {
        let Ok(hash) = blake3::Hash::from_hex(hex) else {
            return Ok(false);
        };
        let raw = self.root.join(&hex[..2]).join(hex);
        let zst = raw.with_extension("zst");
        let bytes = if raw.exists() {
            fs::read(&raw).at("read", &raw)?
        } else {
            let file = File::open(&zst).at("read", &zst)?;
            let mut out = Vec::new();
            if zstd::stream::read::Decoder::new(file)
                .and_then(|mut d| d.read_to_end(&mut out))
                .is_err()
            {
                let _ = fs::remove_file(&zst);
                return Ok(false);
            }
            out
        };
        if blake3::hash(&bytes) == hash {
            return Ok(true);
        }
        let _ = fs::remove_file(&raw);
        let _ = fs::remove_file(&zst);
        Ok(false)
    }

    /// Removes a blob (GC). Missing is fine.
    pub fn remove_hex(&self, hex: &str) -> Result<()> {
        if hex.len() < 2 {
            return Ok(());
        }
        let raw = self.root.join(&hex[..2]).join(hex);
        for path in [raw.with_extension("zst"), raw] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at("remove", path),
            }
        }
        Ok(())
    }

    /// Every stored blob's digest hex and on-disk size.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for fan in fs::read_dir(&self.root).at("list", &self.root)? {
            let fan = fan.at("list", &self.root)?.path();
            if !fan.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&fan).at("list", &fan)? {
                let entry = entry.at("list", &fan)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let hex = name.trim_end_matches(".zst").to_string();
                let len = entry.metadata().at("stat", entry.path())?.len();
                out.push((hex, len));
            }
        }
        Ok(out)
    }
}

/// Reads `reader` to its end in chunks of at most 256 KiB, giving each to `each`.
pub(crate) fn feed_chunks(reader: &mut impl Read, each: &mut impl FnMut(&[u8])) -> io::Result<()> {
    with_read_buffer(|buf| {
        loop {
            match reader.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => each(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

/// Runs `f` with this thread's 256 KiB read buffer: zeroing a fresh one for every blob read
/// cost more than the read itself for the small files a build is made of.
pub(crate) fn with_read_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.is_empty() {
                buf.resize(256 * 1024, 0);
            }
            f(&mut buf)
        }
        // Re-entered (a reader that itself reads a blob): a buffer of its own.
        Err(_) => f(&mut vec![0u8; 256 * 1024]),
    })
}

/// Copies `src` to `dest`, a new file in a directory no one else writes to (an action's
/// sandbox), hashing on the way: if `src` no longer holds `digest` (it changed since it was
/// hashed), the copy is removed and the change reported. Mode 0644, or 0755 when `executable`.
/// How a source enters a sandbox without first entering the CAS.
pub fn copy_verified(src: &Path, dest: &Path, digest: &Digest, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dest
        .parent()
        .expect("a destination file has a parent directory");
    fs::create_dir_all(parent).at("create", parent)?;
    let mut from = File::open(src).at("read", src)?;
    let to = File::create_new(dest).at("create", dest)?;
    let mut writer = HashingWriter::new(&to);
    io::copy(&mut from, &mut writer).copying(src, dest)?;
    if writer.digest() != *digest {
        let _ = fs::remove_file(dest);
        return Err(changed_since_hashed(src));
    }
    let mode = if executable { 0o755 } else { 0o644 };
    to.set_permissions(fs::Permissions::from_mode(mode))
        .at("chmod", dest)
}

/// Checks that `path` holds `digest` (a source an action reads in place, without a sandbox).
pub fn verify_file(path: &Path, digest: &Digest) -> Result<()> {
    if Digest::of_file(path).at("read", path)? == *digest {
        Ok(())
    } else {
        Err(changed_since_hashed(path))
    }
}

/// A source whose content is no longer what the build hashed for its action key.
fn changed_since_hashed(path: &Path) -> StoreError {
    StoreError::Io {
        op: "use",
        path: path.to_path_buf(),
        source: io::Error::other(
            "it changed after this build hashed it (edited during the build?); build again",
        ),
    }
}

fn changed_while_storing(path: &Path) -> StoreError {
    StoreError::Io {
        op: "store",
        path: path.to_path_buf(),
        source: io::Error::other("the file changed while it was being stored"),
    }
}

/// Sets a normalised mode: 0755 for executables, 0644 otherwise, so one content never has two
/// digests (REAPI keeps only `is_executable`).
pub fn set_mode(path: &Path, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at("chmod", path)
}

/// Hashes what passes with BLAKE3 and, optionally, SHA-256.
struct DualHashingWriter<W> {
    inner: W,
    blake3: blake3::Hasher,
    sha256: Option<sha2::Sha256>,
}

impl<W: Write> Write for DualHashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.blake3.update(&buf[..n]);
        if let Some(h) = &mut self.sha256 {
            sha2::Digest::update(h, &buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }

    fn digest(&self) -> Digest {
        Digest {
            hash: *self.hasher.finalize().as_bytes(),
            size: self.hasher.count(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas() -> (tempfile::TempDir, Cas) {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
        (dir, cas)
    }

    #[test]
    fn round_trips_small_and_compressible_blobs() {
        let (_dir, cas) = cas();
        let small = b"tiny".to_vec();
        let big = "abc".repeat(10_000).into_bytes();
        for data in [small, big] {
            let d = cas.put_bytes(&data).unwrap();
            assert_eq!(cas.get_bytes(&d).unwrap(), data);
        }
        let (path, compressed) = cas
            .blob_path(&Digest::of_bytes(&"abc".repeat(10_000).into_bytes()))
            .unwrap();
        assert!(
            compressed,
            "repetitive 30 KB blob should be stored compressed at {path:?}"
        );
    }

    #[test]
    fn read_chunks_streams_raw_and_compressed_blobs_and_refuses_corrupt_ones() {
        let (_dir, cas) = cas();
        // xorshift: bytes zstd cannot shrink, so the blob is stored raw.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let raw: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let packed = "abc".repeat(200_000).into_bytes();
        for (data, compressed) in [(raw, false), (packed, true), (Vec::new(), false)] {
            let d = cas.put_bytes(&data).unwrap();
            assert_eq!(cas.blob_path(&d).unwrap().1, compressed);
            let mut back = Vec::new();
            let mut chunks = 0;
            cas.read_chunks(&d, |c| {
                back.extend_from_slice(c);
                chunks += 1;
            })
            .unwrap();
            assert_eq!(back, data);
            assert!(data.len() < 256 * 1024 || chunks > 1, "streamed in chunks");
        }
        let d = cas.put_bytes(b"precious bytes").unwrap();
        let (path, _) = cas.blob_path(&d).unwrap();
        fs::write(&path, b"precious bytez").unwrap();
        assert!(matches!(
            cas.read_chunks(&d, |_| {}),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(!cas.contains(&d));
        assert!(matches!(
            cas.read_chunks(&d, |_| {}),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn a_read_with_a_wrong_size_fails_but_keeps_the_sound_blob() {
        let (_dir, cas) = cas();
        let digest = cas.put_bytes(b"sound bytes").unwrap();
        let wrong = Digest {
            hash: digest.hash,
            size: digest.size + 1,
        };
        assert!(matches!(
            cas.get_bytes(&wrong),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(cas.get_bytes(&digest).unwrap(), b"sound bytes");
    }

    #[test]
    fn corrupt_blob_is_detected_and_removed() {
        let (_dir, cas) = cas();
        let d = cas.put_bytes(b"precious bytes").unwrap();
        let (path, _) = cas.blob_path(&d).unwrap();
        fs::write(&path, b"precious bytez").unwrap();
        assert!(matches!(cas.get_bytes(&d), Err(StoreError::Corrupt { .. })));
        assert!(!cas.contains(&d));
    }

    #[test]
    fn write_to_restores_content_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, cas) = cas();
        let data = "x".repeat(50_000).into_bytes();
        let d = cas.put_bytes(&data).unwrap();
        let dest = dir.path().join("out/deep/file");
        cas.write_to(&d, &dest, true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), data);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn put_file_rejects_a_wrong_digest() {
        let (dir, cas) = cas();
        let src = dir.path().join("src");
        fs::write(&src, "y".repeat(10_000)).unwrap();
        let wrong = Digest::of_bytes(b"other");
        assert!(cas.put_file_with_digest(&src, wrong).is_err());
        assert!(!cas.contains(&wrong));
    }

    #[test]
    fn stored_blobs_leave_no_temp_files_and_a_second_store_keeps_the_first() {
        let (dir, cas) = cas();
        let file = dir.path().join("file");
        fs::write(&file, "z".repeat(1000)).unwrap(); // below COMPRESS_MIN: copied as it is
        let small = b"small blob".to_vec();
        let compressible = "abc".repeat(10_000).into_bytes();
        let d_file = cas.put_file(&file).unwrap();
        let d_small = cas.put_bytes(&small).unwrap();
        let d_comp = cas.put_bytes(&compressible).unwrap();
        assert_eq!(cas.get_bytes(&d_small).unwrap(), small);
        assert_eq!(cas.get_bytes(&d_comp).unwrap(), compressible);
        assert!(cas.verify(&d_file).unwrap());
        // The same blob published again (as by another process racing this one) is no error.
        cas.write_atomically(&cas.raw_path(&d_small), &small)
            .unwrap();
        assert_eq!(cas.get_bytes(&d_small).unwrap(), small);
        let left: Vec<_> = fs::read_dir(dir.path().join("tmp")).unwrap().collect();
        assert!(left.is_empty(), "temp files left: {left:?}");
        let names: Vec<String> = cas.list().unwrap().into_iter().map(|(h, _)| h).collect();
        for d in [d_file, d_small, d_comp] {
            assert!(names.contains(&d.hex()), "{} is listed", d.hex());
        }
        assert_eq!(names.len(), 3, "nothing but the blobs: {names:?}");
    }

    #[test]
    fn write_new_file_writes_content_and_mode_once() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, cas) = cas();
        let d = cas.put_bytes(b"#!/bin/sh\necho hi\n").unwrap();
        let dest = dir.path().join("sandbox/root/pkg/run.sh");
        cas.write_new_file(&d, &dest, true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"#!/bin/sh\necho hi\n");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        assert!(
            cas.write_new_file(&d, &dest, true).is_err(),
            "an existing file is never overwritten"
        );
    }

    #[test]
    fn copy_verified_copies_what_was_hashed_and_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.txt");
        fs::write(&src, "hashed\n").unwrap();
        let digest = Digest::of_bytes(b"hashed\n");
        let dest = dir.path().join("sandbox/pkg/src.txt");
        copy_verified(&src, &dest, &digest, false).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hashed\n");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(verify_file(&src, &digest).is_ok());
        // Changed after it was hashed: refused, and no copy is left behind.
        fs::write(&src, "edited\n").unwrap();
        let other = dir.path().join("sandbox/pkg/other.txt");
        assert!(copy_verified(&src, &other, &digest, false).is_err());
        assert!(!other.exists());
        assert!(verify_file(&src, &digest).is_err());
    }
}

/// Property tests (issue 15): digests reach the CAS from decoded records (action results,
/// trees, archives), so their sizes may be anything; a read is the blob or an error.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_read_with_any_size_is_the_blob_or_an_error(
            compressible in any::<bool>(),
            size in prop_oneof![any::<u64>(), 0..(1u64 << 20)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cas = Cas::open(dir.path().join("cas"), dir.path().join("tmp")).unwrap();
            let data = if compressible {
                "abc".repeat(2_000).into_bytes()
            } else {
                b"raw".to_vec()
            };
            let stored = cas.put_bytes(&data).unwrap();
            prop_assert_eq!(cas.blob_path(&stored).unwrap().1, compressible);
            let asked = Digest { size, ..stored };
            match cas.get_bytes(&asked) {
                Ok(bytes) => prop_assert!(size == stored.size && bytes == data),
                Err(e) => prop_assert!(
                    size != stored.size && matches!(e, StoreError::Corrupt { .. }),
                    "{e}"
                ),
            }
        }
    }
}
