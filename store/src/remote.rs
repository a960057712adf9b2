//! The storage seam: a content-addressed cache with action results, split as REAPI splits it
//! (capabilities, CAS, action cache). The local store is one implementation; remote backends
//! (REAPI gRPC, the Bazel HTTP cache, a shared directory, archives) are others. A backend
//! speaks in its own digest function (`Capabilities::digest_function`); translating cairn's
//! BLAKE3 actions for a SHA-256 backend is the caller's business, not the backend's.

mod dir;
mod grpc;
mod http;
mod sign;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

pub use dir::DirCache;
pub use grpc::GrpcCache;
pub use http::HttpCache;
pub use sign::{KeyError, PublicKey, SIGNATURE_DIR, SigningKey, strip_signatures, verify};

use crate::digest::{DigestFunction, RemoteDigest};
use crate::error::StoreError;
use crate::{Store, reapi};

/// What a backend supports, read once before it is used (REAPI `GetCapabilities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The digest function every digest sent to or received from the backend uses.
    pub digest_function: DigestFunction,
    /// The largest batch request the backend takes, in serialized bytes (REAPI
    /// `max_batch_total_size_bytes`; 0 from a server means "about 4 MiB").
    pub max_batch_bytes: u64,
    /// Whether blobs may be sent zstd-compressed (REAPI `compressed-blobs`).
    pub zstd: bool,
    /// Whether the backend accepts new action results (REAPI `update_enabled`).
    pub update_enabled: bool,
}

impl Capabilities {
    /// A backend of files on a local or mounted disk: BLAKE3, no batch limit, no
    /// compression, writable (the local store, a directory remote).
    pub const BLAKE3_FILES: Capabilities = Capabilities {
        digest_function: DigestFunction::Blake3,
        max_batch_bytes: u64::MAX,
        zstd: false,
        update_enabled: true,
    };
}

/// Why a backend could not answer. Every variant means "this backend cannot be trusted to
/// work right now": the caller turns the first one into a warning and stops using it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The backend is unreachable or failed (connection refused, timeout, server error).
    #[error("{backend} is unavailable: {why}")]
    Unavailable {
        /// The backend, as configured (URL or path).
        backend: String,
        /// What went wrong.
        why: String,
    },
    /// The backend answered something that breaks the protocol (a blob whose bytes do not
    /// match its digest, a result naming a blob it does not have).
    #[error("{backend} answered wrongly: {why}")]
    Protocol {
        /// The backend, as configured.
        backend: String,
        /// What was wrong.
        why: String,
    },
    /// A result the backend holds names a blob it no longer has (evicted): a miss, not a
    /// failing backend.
    #[error("{backend} lost blob {digest}")]
    BlobGone {
        /// The backend, as configured.
        backend: String,
        /// The blob.
        digest: String,
    },
    /// The local side failed while moving data (the store could not write a blob).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a remote URL cannot be used (a configuration error, not a failing remote).
#[derive(Debug, thiserror::Error)]
#[error("Invalid remote URL `{url}`: {why}")]
pub struct RemoteUrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub why: String,
}

/// How to reach a remote, beside its URL.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Each request is given up after this long (the remote then counts as failing).
    pub timeout: Duration,
    /// Extra request headers (e.g. `Authorization`), values already resolved.
    pub headers: Vec<(String, String)>,
    /// The REAPI instance name (gRPC only).
    pub instance_name: String,
    /// TLS settings for `grpcs://` and `https://`.
    pub tls: TlsOptions,
}

/// TLS beyond the defaults (Mozilla's root certificates, no client certificate), as PEM.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust only these CA certificates (a self-hosted cache with its own CA).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its key, for servers that ask for one (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: Duration::from_secs(60),
            headers: Vec::new(),
            instance_name: String::new(),
            tls: TlsOptions::default(),
        }
    }
}

/// Opens the backend a remote URL names: `file:///dir` (a directory remote), `http://…` (a
/// Bazel HTTP cache) or `grpc://host:port` (REAPI); `https://` and `grpcs://` are the same over
/// TLS (rustls: Mozilla's roots, or `options.tls`).
pub fn open_remote(
    url: &str,
    options: &RemoteOptions,
) -> Result<Arc<dyn RemoteCache>, RemoteUrlError> {
    let err = |why: &str| RemoteUrlError {
        url: url.to_string(),
        why: why.to_string(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        err("expected `file:///dir`, `http://host:port`, `grpc://host:port` or `grpcs://…`")
    })?;
    match scheme {
        "file" => {
            let path = std::path::Path::new(rest);
            if !path.is_absolute() {
                return Err(err(
                    "a `file://` URL needs an absolute path (`file:///shared/dir`)",
                ));
            }
            Ok(Arc::new(DirCache::new(path)))
        }
        "http" | "https" => {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(err(&format!(
                    "an `{scheme}://` URL needs a host (`{scheme}://cache.example:8080`)"
                )));
            }
            let tls = (scheme == "https").then_some(&options.tls);
            let cache = HttpCache::new(url, options.timeout, options.headers.clone(), tls)
                .map_err(|why| err(&why))?;
            Ok(Arc::new(cache))
        }
        "grpc" | "grpcs" => Ok(open_grpc(url, options)?),
        _ => Err(err(&format!("unknown scheme `{scheme}`"))),
    }
}

/// A REAPI execution service (`Execution.Execute`) that reads its inputs from the CAS of the
/// same server (a `RemoteCache`). Synchronous for the caller, like `RemoteCache`.
pub trait RemoteExecution: Send + Sync {
    /// Runs the action stored under `action` (its Command and input root already in the CAS)
    /// and waits for it: the Execute stream is followed to the end, re-joined with
    /// `WaitExecution` when it drops, and the action is sent again when the server forgot the
    /// operation. `cancelled` is polled while waiting; once it says yes, the operation is
    /// cancelled on the server (`Operations.CancelOperation`) and `Executed::Cancelled`
    /// returned. A gRPC failure of the calls themselves is an `Err`; whatever went wrong in
    /// the run is in the response's `status` (an operation error is put there too).
    fn execute(
        &self,
        action: &RemoteDigest,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Executed, RemoteError>;
}

/// How a remote execution ended.
#[derive(Debug)]
pub enum Executed {
    /// The operation completed with this response.
    Done(Box<reapi::ExecuteResponse>),
    /// Cancelled at the caller's request.
    Cancelled,
}

/// `google.rpc.PreconditionFailure`, the detail REAPI attaches to a FAILED_PRECONDITION that
/// names missing blobs (violations of type `MISSING`, subject `blobs/<hash>/<size>`).
#[derive(Clone, PartialEq, prost::Message)]
struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    violations: Vec<Violation>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Violation {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    subject: String,
    #[prost(string, tag = "3")]
    description: String,
}

/// Whether `status` says blobs are missing from the server (upload them and try again), as
/// opposed to another failed precondition (an unknown platform, no worker for it).
pub fn names_missing_blobs(status: &bazel_remote_apis::google::rpc::Status) -> bool {
    use prost::Message;
    status.details.iter().any(|any| {
        any.type_url.ends_with("/google.rpc.PreconditionFailure")
            && PreconditionFailure::decode(any.value.as_slice())
                .is_ok_and(|f| f.violations.iter().any(|v| v.r#type == "MISSING"))
    })
}

/// Opens a REAPI server (`grpc://` or `grpcs://`): a cache and, where the server offers
/// it, an executor.
pub fn open_grpc(url: &str, options: &RemoteOptions) -> Result<Arc<GrpcCache>, RemoteUrlError> {
    let err = |why: String| RemoteUrlError {
        url: url.to_string(),
        why,
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if scheme != "grpc" && scheme != "grpcs" {
        return Err(err(
            "remote execution needs a REAPI server (`grpc://host:port` or `grpcs://host:port`)"
                .to_string(),
        ));
    }
    if rest.is_empty() {
        return Err(err(format!(
            "a `{scheme}://` URL needs a host and port (`{scheme}://cache:8980`)"
        )));
    }
    let tls = (scheme == "grpcs").then_some(&options.tls);
    let cache = GrpcCache::new(
        url,
        &options.instance_name,
        options.timeout,
        &options.headers,
        tls,
    )
    .map_err(err)?;
    Ok(Arc::new(cache))
}

/// A content-addressed cache with action results. Implementations are synchronous (the
/// engine calls them from worker threads; a network backend blocks on its own runtime) and
/// must be safe to call from many threads at once.
pub trait RemoteCache: Send + Sync {
    /// How the backend is named in messages (its URL or path).
    fn name(&self) -> &str;

    /// What the backend supports.
    fn capabilities(&self) -> Result<Capabilities, RemoteError>;

    /// The digests among `digests` whose blobs the backend does not hold.
    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError>;

    /// Streams the blob `digest` into `sink`; `Ok(false)` if the backend does not hold it.
    /// The bytes are verified by the receiver, not here.
    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError>;

    /// Stores the blob `digest`, whose bytes `source` yields (streamed: a large blob is never
    /// held in memory whole).
    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError>;

    /// Stores several small blobs, each given with its bytes (whole: for blobs up to about
    /// 1 MiB). Backends with a batch call send them in as few requests as their limits
    /// allow; the default stores them one by one.
    fn write_small_blobs(&self, blobs: &[(RemoteDigest, Vec<u8>)]) -> Result<(), RemoteError> {
        for (digest, bytes) in blobs {
            self.write_blob(digest, &mut bytes.as_slice())?;
        }
        Ok(())
    }

    /// The action result stored under `key`, if any.
    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError>;

    /// Stores an action result. Callers write it last, after every blob it names.
    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError>;
}

/// The local store as a backend (BLAKE3). This is also what a shared directory remote is: a
/// store at another path.
impl RemoteCache for Store {
    fn name(&self) -> &str {
        self.root().to_str().unwrap_or("the local store")
    }

    fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        Ok(Capabilities::BLAKE3_FILES)
    }

    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError> {
        Ok(digests
            .iter()
            .filter(|d| !d.as_local().is_some_and(|d| self.cas().contains(&d)))
            .copied()
            .collect())
    }

    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        let Some(local) = digest.as_local() else {
            return Ok(false);
        };
        match self.cas().read_to(&local, sink) {
            Ok(_) => Ok(true),
            Err(StoreError::Missing(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError> {
        let local = self.blake3_only(digest)?;
        Ok(self.cas().put_stream(&local, source)?)
    }

    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let Some(local) = key.as_local() else {
            return Ok(None);
        };
        Ok(Store::get_action_result(self, &local)?)
    }

    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let local = self.blake3_only(key)?;
        let missing =
            crate::referenced_blobs(result).any(|d| !d.is_some_and(|d| self.cas().contains(&d)));
        if missing {
            return Err(RemoteError::Protocol {
                backend: self.name().to_string(),
                why: format!("the result for {key:?} names a blob that was not sent first"),
            });
        }
        Ok(Store::put_action_result(self, &local, result)?)
    }
}

impl Store {
    fn blake3_only(&self, digest: &RemoteDigest) -> Result<crate::Digest, RemoteError> {
        digest.as_local().ok_or_else(|| RemoteError::Protocol {
            backend: self.name().to_string(),
            why: format!(
                "it holds BLAKE3 digests only, and was sent a {} one",
                digest.function.as_str()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    #[test]
    fn a_store_is_a_backend_that_streams_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let small = b"hello".to_vec();
        let digests: Vec<RemoteDigest> = [&big, &small]
            .iter()
            .map(|b| RemoteDigest::from(Digest::of_bytes(b)))
            .collect();
        assert_eq!(store.find_missing(&digests).unwrap(), digests);
        for (bytes, digest) in [&big, &small].iter().zip(&digests) {
            store.write_blob(digest, &mut bytes.as_slice()).unwrap();
        }
        assert!(store.find_missing(&digests).unwrap().is_empty());
        let mut read = Vec::new();
        assert!(store.read_blob(&digests[0], &mut read).unwrap());
        assert_eq!(read, big);

        // Bytes that do not match their digest are refused and not stored.
        let wrong = RemoteDigest::from(Digest::of_bytes(b"other"));
        let err = store
            .write_blob(&wrong, &mut &b"not other"[..])
            .unwrap_err();
        assert!(matches!(
            err,
            RemoteError::Store(StoreError::WrongBytes { .. })
        ));
        assert_eq!(store.find_missing(&[wrong]).unwrap(), vec![wrong]);
        assert!(!store.read_blob(&wrong, &mut Vec::new()).unwrap());
    }

    #[test]
    fn a_result_naming_a_missing_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = RemoteDigest::from(Digest::of_bytes(b"action"));
        let result = reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: "out".into(),
                digest: Some(Digest::of_bytes(b"never sent").to_reapi()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            RemoteCache::put_action_result(&store, &key, &result),
            Err(RemoteError::Protocol { .. })
        ));
        assert_eq!(RemoteCache::get_action_result(&store, &key).unwrap(), None);
        let sha = RemoteDigest {
            function: DigestFunction::Sha256,
            ..key
        };
        assert!(store.write_blob(&sha, &mut &b""[..]).is_err());
    }
}

#[cfg(test)]
mod precondition_tests {
    use super::*;
    use bazel_remote_apis::google::rpc::Status;
    use prost::Message;

    fn status_with(violation: &str) -> Status {
        let failure = PreconditionFailure {
            violations: vec![Violation {
                r#type: violation.to_string(),
                subject: "blobs/ab12/3".to_string(),
                description: String::new(),
            }],
        };
        Status {
            code: 9,
            message: "precondition".to_string(),
            details: vec![bazel_remote_apis::google::protobuf::Any {
                type_url: "type.googleapis.com/google.rpc.PreconditionFailure".to_string(),
                value: failure.encode_to_vec(),
            }],
        }
    }

    #[test]
    fn only_missing_violations_ask_for_an_upload() {
        assert!(names_missing_blobs(&status_with("MISSING")));
        assert!(!names_missing_blobs(&status_with("UNKNOWN_PLATFORM")));
        let bare = Status {
            code: 9,
            message: "Unregistered platform property".to_string(),
            details: vec![],
        };
        assert!(!names_missing_blobs(&bare));
        let garbage = Status {
            details: vec![bazel_remote_apis::google::protobuf::Any {
                type_url: "type.googleapis.com/google.rpc.PreconditionFailure".to_string(),
                value: vec![0xff, 0xff, 0xff],
            }],
            ..bare
        };
        assert!(!names_missing_blobs(&garbage));
    }
}
