//! Content digests: BLAKE3 hash plus size, written `blake3:<64 hex>` everywhere cairn prints one.
//! Never hashes anything but the bytes it is given.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use crate::reapi;

/// Files at least this large are hashed with BLAKE3's memory-mapped, multi-threaded path.
const MMAP_THRESHOLD: u64 = 1 << 20;

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

    /// The digest of a file's contents, streaming small files and memory-mapping large ones.
    pub fn of_file(path: &Path) -> io::Result<Digest> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut hasher = blake3::Hasher::new();
        if len >= MMAP_THRESHOLD {
            hasher.update_mmap_rayon(path)?;
        } else {
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
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
}
