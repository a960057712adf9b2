//! Loading: scans the workspace for packages and files, evaluates `BUILD.star` files (and the
//! `.star` files they `load()`) with the `starlark` crate into targets, and turns Starlark
//! errors into diagnostics that name file, line and column. Never runs a build command.

pub(crate) mod builtins;
pub(crate) mod cache;
pub(crate) mod diagnostic;
pub(crate) mod eval;
pub(crate) mod prelude;
pub(crate) mod scan;

pub(crate) use cache::AnalysisCache;
pub(crate) use diagnostic::Diagnostic;
pub(crate) use eval::{load_workspace, probes_hold};
pub(crate) use scan::{Scan, scan_cached, scan_workspace, stored_scan_is_current};

use std::path::PathBuf;

/// Compresses a stored record (the scan, the analysis cache) as one zstd frame that records
/// its size, so `unpack` allocates once and decompresses in one call.
pub(crate) fn pack(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 1).expect("compressing in memory cannot fail")
}

/// Decompresses what `pack` wrote (or any zstd stream); `None` if it is damaged.
pub(crate) fn unpack(bytes: &[u8]) -> Option<Vec<u8>> {
    /// A recorded size above this is not believed (nor reserved up front): a frame's
    /// declared size comes from the record itself, which may be damaged.
    const MAX_SIZE: u64 = 64 << 20;
    match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if size <= MAX_SIZE => zstd::bulk::decompress(bytes, size as usize).ok(),
        _ => zstd::decode_all(bytes).ok(),
    }
}

/// The file name that makes a directory a package.
pub(crate) const BUILD_FILE: &str = "BUILD.star";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{0}")]
    Diagnostic(Box<Diagnostic>),
    #[error("Cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot scan the workspace: {0}")]
    Scan(#[from] ignore::Error),
}

/// Property tests (issue 15): stored records are packed with `pack`; unpacking any bytes is
/// the bytes or `None`, never a panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// zstd's frame magic number, so that frame headers (and their content sizes) are read.
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

    proptest! {
        #[test]
        fn packed_bytes_unpack_to_themselves(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            prop_assert_eq!(unpack(&pack(&bytes)), Some(bytes));
        }

        #[test]
        fn any_bytes_unpack_or_not(
            framed in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let bytes = if framed { [MAGIC.as_slice(), &bytes].concat() } else { bytes };
            unpack(&bytes);
        }

        #[test]
        fn a_damaged_pack_unpacks_or_not(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut packed = pack(&bytes);
            let at = flip.0.index(packed.len());
            packed[at] ^= flip.1;
            packed.truncate(cut.index(packed.len() + 1));
            unpack(&packed);
        }
    }
}
