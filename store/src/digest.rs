//! Content digests: BLAKE3 hash plus size, written `blake3:<64 hex>` everywhere cairn prints one;
//! and digests as a remote holds them, in the digest function it accepts (BLAKE3 or SHA-256).
//! Never hashes anything but the bytes it is given.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use sha2::Digest as _;

use crate::reapi;

/// Files at least this large are hashed on every core.
const PARALLEL_THRESHOLD: u64 = 1 << 20;

/// Files up to this size are memory-mapped whole (BLAKE3's fastest path: 7.5 GiB/s for a
/// cached 64 MiB file here). A larger one is read a window at a time (3.3 GiB/s): a map's
/// pages count in cairn's resident memory, 4 GiB for a 4 GiB output where issue 15 allows
/// 200 MB, and the store crate maps no windows itself (it has no `unsafe`).
const MMAP_MAX: u64 = 64 << 20;

/// The window a file larger than `MMAP_MAX` is read and hashed in.
const WINDOW: usize = 16 << 20;

/// The digest of a byte string: its BLAKE3 hash and its length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// The 32-byte BLAKE3 hash.
    pub hash: [u8; 32],
    /// The length of the hashed bytes.
    pub size: u64,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid digest `{text}`: expected `blake3:` followed by 64 hex digits")]
pub struct ParseDigestError {
    text: String,
}

impl Digest {
    /// The digest of an in-memory byte string.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest {
            hash: *blake3::hash(bytes).as_bytes(),
            size: bytes.len() as u64,
        }
    }

    /// The digest of a file's contents: small files streamed on this thread, large ones on
    /// every core (mapped up to `MMAP_MAX`, then a window at a time). Memory stays bounded
    /// whatever the size.
    pub fn of_file(path: &Path) -> io::Result<Digest> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut hasher = blake3::Hasher::new();
        if (PARALLEL_THRESHOLD..=MMAP_MAX).contains(&len) {
            hasher.update_mmap_rayon(path)?;
        } else if len > MMAP_MAX {
            let mut window = vec![0u8; WINDOW];
            loop {
                let mut filled = 0;
                while filled < WINDOW {
                    match file.read(&mut window[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if filled == 0 {
                    break;
                }
                hasher.update_rayon(&window[..filled]);
                if filled < WINDOW {
                    break;
                }
            }
        } else {
            crate::cas::with_read_buffer(|buf| -> io::Result<()> {
                loop {
                    let n = file.read(buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    hasher.update(&buf[..n]);
                }
            })?;
        }
        Ok(Digest {
            hash: *hasher.finalize().as_bytes(),
            size: hasher.count(),
        })
    }

    /// The hash as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }

    /// The REAPI form of this digest (hash as hex, size as `size_bytes`).
    pub fn to_reapi(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// Parses the REAPI form back; `None` if the hash is not 64 hex digits.
    pub fn from_reapi(digest: &reapi::Digest) -> Option<Digest> {
        let hash = blake3::Hash::from_hex(&digest.hash).ok()?;
        Some(Digest {
            hash: *hash.as_bytes(),
            size: u64::try_from(digest.size_bytes).ok()?,
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}/{}", self.short(), self.size)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parses `blake3:<64 hex>`. The size is unknown in this form and set to 0; use it for
    /// comparing hashes only.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            text: text.to_string(),
        };
        let hex = text.strip_prefix("blake3:").ok_or_else(err)?;
        let hash = blake3::Hash::from_hex(hex).map_err(|_| err())?;
        Ok(Digest {
            hash: *hash.as_bytes(),
            size: 0,
        })
    }
}

/// A hash function digests are computed with: BLAKE3 locally and for remotes that accept it,
/// SHA-256 for remotes that accept only that (BuildGrid, buildbox-casd). Both hashes are 32
/// bytes, so a hash alone does not say which function made it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum DigestFunction {
    /// BLAKE3, the local store's function.
    Blake3,
    /// SHA-256, what most REAPI servers accept.
    Sha256,
}

impl DigestFunction {
    /// The lowercase name, as it prefixes a printed digest: `blake3` or `sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestFunction::Blake3 => "blake3",
            DigestFunction::Sha256 => "sha256",
        }
    }

    /// The REAPI `DigestFunction.Value` number (`BLAKE3` = 9, `SHA256` = 1), as requests carry
    /// it in `digest_function`.
    pub fn to_reapi(self) -> i32 {
        use reapi::digest_function::Value;
        match self {
            DigestFunction::Blake3 => Value::Blake3 as i32,
            DigestFunction::Sha256 => Value::Sha256 as i32,
        }
    }

    /// The function a REAPI `DigestFunction.Value` number names; `None` for every other value,
    /// `UNKNOWN` (0) included: what an unset function means depends on where it was read.
    pub fn from_reapi(value: i32) -> Option<DigestFunction> {
        use reapi::digest_function::Value;
        match Value::try_from(value).ok()? {
            Value::Blake3 => Some(DigestFunction::Blake3),
            Value::Sha256 => Some(DigestFunction::Sha256),
            _ => None,
        }
    }

    /// The hash of an in-memory byte string.
    pub fn hash(self, bytes: &[u8]) -> [u8; 32] {
        match self {
            DigestFunction::Blake3 => *blake3::hash(bytes).as_bytes(),
            DigestFunction::Sha256 => sha2::Sha256::digest(bytes).into(),
        }
    }
}

/// A digest as a remote holds it: hash (in `function`) and size. Printed
/// `sha256:<64 hex>/<size>` (or `blake3:...`). The local store always uses [`Digest`]; this type
/// lives only at the boundary with a remote.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteDigest {
    /// The function `hash` was computed with.
    pub function: DigestFunction,
    /// The 32-byte hash.
    pub hash: [u8; 32],
    /// The length of the hashed bytes.
    pub size: u64,
}

impl RemoteDigest {
    /// The local digest, when this one is BLAKE3.
    pub fn as_local(&self) -> Option<Digest> {
        (self.function == DigestFunction::Blake3).then_some(Digest {
            hash: self.hash,
            size: self.size,
        })
    }

    /// The digest of an in-memory byte string in `function`.
    pub fn of_bytes(function: DigestFunction, bytes: &[u8]) -> RemoteDigest {
        RemoteDigest {
            function,
            hash: function.hash(bytes),
            size: bytes.len() as u64,
        }
    }

    /// The hash as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        to_hex(&self.hash)
    }

    /// The REAPI form of this digest (hash as lowercase hex, size as `size_bytes`).
    pub fn to_reapi(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// Parses the REAPI form of a digest in `function` (which the message does not say);
    /// `None` unless the hash is 64 lowercase hex digits (REAPI's form) and the size is not
    /// negative.
    pub fn from_reapi(function: DigestFunction, digest: &reapi::Digest) -> Option<RemoteDigest> {
        Some(RemoteDigest {
            function,
            hash: from_lowercase_hex(&digest.hash)?,
            size: u64::try_from(digest.size_bytes).ok()?,
        })
    }
}

impl From<Digest> for RemoteDigest {
    /// The local digest as a BLAKE3 remote holds it.
    fn from(digest: Digest) -> RemoteDigest {
        RemoteDigest {
            function: DigestFunction::Blake3,
            hash: digest.hash,
            size: digest.size,
        }
    }
}

impl fmt::Display for RemoteDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.function.as_str(), self.hex(), self.size)
    }
}

impl fmt::Debug for RemoteDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn to_hex(hash: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in hash {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// 64 lowercase hex digits as 32 bytes. Uppercase is refused: REAPI writes hashes in lowercase,
/// so an uppercase one would name a different blob on most servers.
fn from_lowercase_hex(text: &str) -> Option<[u8; 32]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_blake3_of_nothing() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(d.size, 0);
    }

    #[test]
    fn file_digest_equals_bytes_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(Digest::of_file(&path).unwrap(), Digest::of_bytes(&data));
        std::fs::write(&path, b"small").unwrap();
        assert_eq!(Digest::of_file(&path).unwrap(), Digest::of_bytes(b"small"));
    }

    #[test]
    fn reapi_round_trip_and_parse() {
        let d = Digest::of_bytes(b"hello");
        assert_eq!(Digest::from_reapi(&d.to_reapi()), Some(d));
        let parsed: Digest = d.to_string().parse().unwrap();
        assert_eq!(parsed.hash, d.hash);
        assert!("sha256:00".parse::<Digest>().is_err());
        assert!("blake3:zz".parse::<Digest>().is_err());
    }

    #[test]
    fn empty_sha256_remote_digest_prints_with_function_and_size() {
        let d = RemoteDigest::of_bytes(DigestFunction::Sha256, b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0"
        );
        assert_eq!(
            RemoteDigest::of_bytes(DigestFunction::Sha256, b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn remote_digest_reapi_round_trips_and_rejects_bad_hex() {
        let d = RemoteDigest::of_bytes(DigestFunction::Sha256, b"hello");
        let wire = d.to_reapi();
        assert_eq!(wire.hash, d.hex());
        assert_eq!(wire.size_bytes, 5);
        assert_eq!(
            RemoteDigest::from_reapi(DigestFunction::Sha256, &wire),
            Some(d)
        );
        let parse = |hash: &str, size_bytes: i64| {
            RemoteDigest::from_reapi(
                DigestFunction::Sha256,
                &reapi::Digest {
                    hash: hash.to_string(),
                    size_bytes,
                },
            )
        };
        assert_eq!(parse(&wire.hash, -1), None, "negative size");
        assert_eq!(parse(&wire.hash[..62], 5), None, "too short");
        assert_eq!(parse(&format!("{}00", wire.hash), 5), None, "too long");
        assert_eq!(parse(&wire.hash.to_uppercase(), 5), None, "uppercase");
        assert_eq!(
            parse(&format!("{}zz", &wire.hash[..62]), 5),
            None,
            "not hex"
        );
        assert_eq!(parse("", 0), None, "empty");
    }

    #[test]
    fn local_digest_becomes_a_blake3_remote_digest() {
        let local = Digest::of_bytes(b"hello");
        let remote = RemoteDigest::from(local);
        assert_eq!(
            remote,
            RemoteDigest::of_bytes(DigestFunction::Blake3, b"hello")
        );
        assert_eq!(remote.to_reapi(), local.to_reapi());
        assert_eq!(remote.to_string(), format!("{local}/5"));
    }

    #[test]
    fn digest_functions_map_to_reapi_numbers() {
        assert_eq!(DigestFunction::Blake3.to_reapi(), 9);
        assert_eq!(DigestFunction::Sha256.to_reapi(), 1);
        for f in [DigestFunction::Blake3, DigestFunction::Sha256] {
            assert_eq!(DigestFunction::from_reapi(f.to_reapi()), Some(f));
        }
        for other in [0, 2, 8, 10, 1000, -1] {
            assert_eq!(DigestFunction::from_reapi(other), None, "{other}");
        }
        assert_eq!(DigestFunction::Blake3.as_str(), "blake3");
        assert_eq!(DigestFunction::Sha256.as_str(), "sha256");
    }
}

/// Property tests (issue 15): digests come back from text and REAPI messages that may have
/// been damaged or written by someone else; parsing them is an answer, never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn digest() -> impl Strategy<Value = Digest> {
        (any::<[u8; 32]>(), 0..=i64::MAX as u64).prop_map(|(hash, size)| Digest { hash, size })
    }

    /// Hash text: sometimes 64 hex digits (either case), sometimes anything.
    fn hash_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{64}",
            "[0-9a-fA-F]{62,66}",
            any::<String>(),
            "[0-9a-f]{63}[^0-9a-f]",
        ]
    }

    proptest! {
        #[test]
        fn a_printed_digest_parses_back_to_its_hash(d in digest()) {
            let parsed: Digest = d.to_string().parse().unwrap();
            prop_assert_eq!(parsed.hash, d.hash);
        }

        #[test]
        fn any_text_parses_as_a_digest_or_is_refused(text in prop_oneof![
            any::<String>(),
            hash_text().prop_map(|h| format!("blake3:{h}")),
        ]) {
            if let Ok(d) = text.parse::<Digest>() {
                prop_assert_eq!(format!("blake3:{}", d.hex()), text.to_ascii_lowercase());
            }
        }

        #[test]
        fn reapi_digests_round_trip(d in digest()) {
            prop_assert_eq!(Digest::from_reapi(&d.to_reapi()), Some(d));
            for function in [DigestFunction::Blake3, DigestFunction::Sha256] {
                let remote = RemoteDigest { function, hash: d.hash, size: d.size };
                let back = RemoteDigest::from_reapi(function, &remote.to_reapi());
                prop_assert_eq!(back, Some(remote));
            }
        }

        #[test]
        fn any_reapi_digest_is_read_or_refused(hash in hash_text(), size_bytes in any::<i64>()) {
            let message = reapi::Digest { hash: hash.clone(), size_bytes };
            let remote = RemoteDigest::from_reapi(DigestFunction::Sha256, &message);
            let lowercase_hex =
                hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            prop_assert_eq!(remote.is_some(), lowercase_hex && size_bytes >= 0);
            if let Some(remote) = remote {
                prop_assert_eq!(remote.to_reapi(), message.clone());
            }
            if let Some(local) = Digest::from_reapi(&message) {
                prop_assert_eq!(local.size, size_bytes as u64);
                prop_assert_eq!(local.hex(), hash.to_ascii_lowercase());
            }
        }
    }
}
