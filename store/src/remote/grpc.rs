//! REAPI v2 over gRPC (`grpc://host:port`): Capabilities, the CAS (FindMissingBlobs,
//! BatchUpdateBlobs / BatchReadBlobs for small blobs, ByteStream Write / Read for large ones,
//! streamed in chunks: a large blob is never held whole) and the ActionCache. Every request
//! names the instance and sets `digest_function`. Works with any REAPI server (buildbox-casd,
//! BuildGrid, Buildbarn, bazel-remote, NativeLink). The calls are synchronous for the caller:
//! the backend blocks on its own tokio runtime, so the engine never sees async code.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use bazel_remote_apis::google::longrunning::operations_client::OperationsClient;
use bazel_remote_apis::google::longrunning::{CancelOperationRequest, Operation, operation};
use prost::Message;

use super::{Capabilities, Executed, RemoteCache, RemoteError, RemoteExecution, TlsOptions};
use crate::digest::{DigestFunction, RemoteDigest};
use crate::reapi;
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use reapi::execution_client::ExecutionClient;

/// ByteStream chunks: well below gRPC's default 4 MiB message limit.
const CHUNK: usize = 1 << 20;
/// What "no limit" (`max_batch_total_size_bytes = 0`) means: gRPC's 4 MiB message limit
/// still applies, less room for the rest of the request.
const DEFAULT_BATCH: u64 = 4 << 20;
/// Blobs up to this size go in a batch request (one blob's share of a batch, with headroom
/// for the request's own fields).
const BATCH_BLOB_MAX: u64 = 1 << 20;
/// Digests per FindMissingBlobs request.
const FIND_MISSING_CHUNK: usize = 5_000;
/// How many times a unary call is tried.
const ATTEMPTS: u32 = 3;

fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// An REAPI server.
pub struct GrpcCache {
    name: String,
    instance: String,
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    headers: Vec<(
        tonic::metadata::AsciiMetadataKey,
        tonic::metadata::AsciiMetadataValue,
    )>,
    /// For `Execute` and `WaitExecution`, whose streams last as long as the action: no
    /// per-request timeout.
    exec_channel: Channel,
    capabilities: OnceLock<Capabilities>,
    uploads: AtomicU64,
    /// `grpcs://` with no client certificate set (for a hint when a proxy refuses us).
    tls_without_client_cert: bool,
}

impl std::fmt::Debug for GrpcCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold tokens: never print them.
        f.debug_struct("GrpcCache")
            .field("name", &self.name)
            .finish()
    }
}

impl GrpcCache {
    /// The server at `url` (`grpc://host:port`), for `instance`, each call given up after
    /// `timeout`, sending `headers` (e.g. `authorization`) with every call. Connects lazily:
    /// an unreachable server fails its first call, not this.
    /// `tls` is set for `grpcs://` (rustls: Mozilla's roots unless it names a CA).
    pub fn new(
        url: &str,
        instance: &str,
        timeout: Duration,
        headers: &[(String, String)],
        tls: Option<&TlsOptions>,
    ) -> Result<GrpcCache, String> {
        let (scheme, address) = match (url.strip_prefix("grpc://"), url.strip_prefix("grpcs://")) {
            (Some(address), _) => ("http", address),
            (_, Some(address)) => ("https", address),
            _ => return Err("expected `grpc://host:port` or `grpcs://host:port`".to_string()),
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_webpki_roots(),
            };
            if let Some((cert, key)) = &tls.client {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("cannot set up TLS: {e}"))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-grpc")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC runtime: {e}"))?;
        let (channel, exec_channel) = {
            let _guard = runtime.enter();
            (
                endpoint.clone().timeout(timeout).connect_lazy(),
                endpoint.connect_lazy(),
            )
        };
        let mut parsed = Vec::new();
        for (name, value) in headers {
            let key = name
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| format!("header name `{name}` is not valid in gRPC metadata"))?;
            let value = value.parse().map_err(|_| {
                format!("the value of header `{name}` is not valid in gRPC metadata")
            })?;
            parsed.push((key, value));
        }
        Ok(GrpcCache {
            name: url.to_string(),
            instance: instance.to_string(),
            runtime,
            channel,
            exec_channel,
            headers: parsed,
            capabilities: OnceLock::new(),
            uploads: AtomicU64::new(0),
            tls_without_client_cert: tls.is_some_and(|t| t.client.is_none()),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (key, value) in &self.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        request
    }

    /// One unary call, retried with backoff (100 ms, then 400 ms) while it fails with a status
    /// REAPI calls transient: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED. What fails
    /// after that is the caller's to report (and the cache chain's circuit breaker's).
    fn unary<M, R, F, Fut>(&self, message: M, call: F) -> Result<R, tonic::Status>
    where
        M: Clone,
        F: Fn(tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self.runtime.block_on(call(self.request(message.clone()))) {
                Ok(response) => return Ok(response.into_inner()),
                Err(s) if attempt < ATTEMPTS && is_transient(s.code()) => {
                    std::thread::sleep(delay);
                    delay *= 4;
                    attempt += 1;
                }
                Err(s) => return Err(s),
            }
        }
    }

    fn failed(&self, call: &str, status: tonic::Status) -> RemoteError {
        let message = status.message();
        // An HTTP answer instead of gRPC: usually a proxy in front of the server turning the
        // request away (nginx answers 400 when a client certificate is required).
        let hint = if message.contains("status: 400") && self.tls_without_client_cert {
            " (an HTTP 400 from a TLS proxy often means it requires a client certificate: set `tls_client_cert` and `tls_client_key`)"
        } else {
            ""
        };
        RemoteError::Unavailable {
            backend: self.name.clone(),
            why: format!("{call}: {:?}: {message}{hint}", status.code()),
        }
    }

    fn protocol(&self, why: String) -> RemoteError {
        RemoteError::Protocol {
            backend: self.name.clone(),
            why,
        }
    }

    fn caps(&self) -> Result<Capabilities, RemoteError> {
        if let Some(caps) = self.capabilities.get() {
            return Ok(caps.clone());
        }
        let caps = self.read_capabilities()?;
        Ok(self.capabilities.get_or_init(|| caps).clone())
    }

    fn read_capabilities(&self) -> Result<Capabilities, RemoteError> {
        let client = CapabilitiesClient::new(self.channel.clone());
        let message = reapi::GetCapabilitiesRequest {
            instance_name: self.instance.clone(),
        };
        let server = self
            .unary(message, |r| {
                let mut c = client.clone();
                async move { c.get_capabilities(r).await }
            })
            .map_err(|s| self.failed("GetCapabilities", s))?;
        let cache = server
            .cache_capabilities
            .ok_or_else(|| self.protocol("it offers no cache (no cache capabilities)".into()))?;
        let offers = |f: DigestFunction| cache.digest_functions.contains(&f.to_reapi());
        // BLAKE3 where offered (no re-encoding); else SHA-256, which an empty list means too
        // (servers older than REAPI 2.2 list nothing).
        let digest_function = if offers(DigestFunction::Blake3) {
            DigestFunction::Blake3
        } else if offers(DigestFunction::Sha256) || cache.digest_functions.is_empty() {
            DigestFunction::Sha256
        } else {
            return Err(self.protocol("it accepts neither BLAKE3 nor SHA-256 digests".to_string()));
        };
        let max = u64::try_from(cache.max_batch_total_size_bytes).unwrap_or(0);
        Ok(Capabilities {
            digest_function,
            max_batch_bytes: if max == 0 {
                DEFAULT_BATCH
            } else {
                max.min(DEFAULT_BATCH)
            },
            zstd: cache
                .supported_compressors
                .contains(&(reapi::compressor::Value::Zstd as i32)),
            update_enabled: cache
                .action_cache_update_capabilities
                .is_some_and(|c| c.update_enabled),
        })
    }

    /// ByteStream resource names (REAPI: `{instance}/blobs/{hash}/{size}`, with the function
    /// named for functions other than the 64-hex-digit default SHA-256).
    fn blob_path(&self, digest: &RemoteDigest) -> String {
        let function = match digest.function {
            DigestFunction::Sha256 => String::new(),
            other => format!("{}/", other.as_str()),
        };
        let instance = if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        };
        format!("{instance}blobs/{function}{}/{}", digest.hex(), digest.size)
    }

    fn upload_path(&self, digest: &RemoteDigest) -> String {
        let instance = if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        };
        let function = match digest.function {
            DigestFunction::Sha256 => String::new(),
            other => format!("{}/", other.as_str()),
        };
        format!(
            "{instance}uploads/{}/blobs/{function}{}/{}",
            upload_id(self.uploads.fetch_add(1, Ordering::Relaxed)),
            digest.hex(),
            digest.size
        )
    }
}

/// A unique id for a ByteStream upload, shaped like a UUID (REAPI asks for one).
fn upload_id(n: u64) -> String {
    static PROCESS: OnceLock<[u8; 32]> = OnceLock::new();
    let seed = PROCESS.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        h.update(&std::process::id().to_le_bytes());
        #[allow(clippy::disallowed_methods)] // Uniqueness, not build input.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.update(&now.to_le_bytes());
        *h.finalize().as_bytes()
    });
    let mut h = blake3::Hasher::new_keyed(seed);
    h.update(&n.to_le_bytes());
    let hex = h.finalize().to_hex();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// WriteRequests produced by the calling thread, consumed by tonic.
struct Chunks(tokio::sync::mpsc::Receiver<WriteRequest>);

impl tonic::codegen::tokio_stream::Stream for Chunks {
    type Item = WriteRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WriteRequest>> {
        self.0.poll_recv(cx)
    }
}

impl RemoteCache for GrpcCache {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        self.caps()
    }

    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError> {
        let function = self.caps()?.digest_function;
        let client = ContentAddressableStorageClient::new(self.channel.clone());
        let mut missing = Vec::new();
        for chunk in digests.chunks(FIND_MISSING_CHUNK) {
            let message = reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: chunk.iter().map(RemoteDigest::to_reapi).collect(),
                digest_function: function.to_reapi(),
            };
            let response = self
                .unary(message, |r| {
                    let mut c = client.clone();
                    async move { c.find_missing_blobs(r).await }
                })
                .map_err(|s| self.failed("FindMissingBlobs", s))?;
            for d in response.missing_blob_digests {
                let digest = RemoteDigest::from_reapi(function, &d)
                    .ok_or_else(|| self.protocol("FindMissingBlobs named a bad digest".into()))?;
                missing.push(digest);
            }
        }
        Ok(missing)
    }

    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        let io = |e: std::io::Error| {
            RemoteError::Store(crate::StoreError::Io {
                op: "write a downloaded blob",
                path: std::path::PathBuf::new(),
                source: e,
            })
        };
        if digest.size <= BATCH_BLOB_MAX {
            let client = ContentAddressableStorageClient::new(self.channel.clone());
            let message = reapi::BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests: vec![digest.to_reapi()],
                acceptable_compressors: vec![],
                digest_function: digest.function.to_reapi(),
            };
            let response = self
                .unary(message, |r| {
                    let mut c = client.clone();
                    async move { c.batch_read_blobs(r).await }
                })
                .map_err(|s| self.failed("BatchReadBlobs", s))?;
            let Some(blob) = response.responses.into_iter().next() else {
                return Err(self.protocol("BatchReadBlobs answered nothing".into()));
            };
            match blob.status.map_or(0, |s| s.code) {
                0 => {}
                5 => return Ok(false), // NOT_FOUND
                code => {
                    return Err(self.protocol(format!("BatchReadBlobs of {digest}: status {code}")));
                }
            }
            sink.write_all(&blob.data).map_err(io)?;
            return Ok(true);
        }
        let mut client = ByteStreamClient::new(self.channel.clone());
        let request = self.request(ReadRequest {
            resource_name: self.blob_path(digest),
            read_offset: 0,
            read_limit: 0,
        });
        let mut stream = match self.runtime.block_on(client.read(request)) {
            Ok(response) => response.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(false),
            Err(s) => return Err(self.failed("ByteStream.Read", s)),
        };
        loop {
            match self.runtime.block_on(stream.message()) {
                Ok(Some(chunk)) => sink.write_all(&chunk.data).map_err(io)?,
                Ok(None) => return Ok(true),
                Err(s) if s.code() == tonic::Code::NotFound => return Ok(false),
                Err(s) => return Err(self.failed("ByteStream.Read", s)),
            }
        }
    }

    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError> {
        let io = |e: std::io::Error| {
            RemoteError::Store(crate::StoreError::Io {
                op: "read a blob to upload",
                path: std::path::PathBuf::new(),
                source: e,
            })
        };
        if digest.size <= BATCH_BLOB_MAX {
            let mut data = Vec::with_capacity(digest.size as usize);
            source.read_to_end(&mut data).map_err(io)?;
            return self.write_small_blobs(&[(*digest, data)]);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = ByteStreamClient::new(self.channel.clone());
        let request = self.request(Chunks(rx));
        let call = self
            .runtime
            .spawn(async move { client.write(request).await });
        let resource = self.upload_path(digest);
        let mut offset: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        let mut first = true;
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                let n = source.read(&mut buf[filled..]).map_err(io)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            let last = offset + filled as u64 >= digest.size || filled == 0;
            let chunk = WriteRequest {
                // REAPI: the resource name on the first request only.
                resource_name: if first {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: offset as i64,
                finish_write: last,
                data: buf[..filled].to_vec(),
            };
            first = false;
            offset += filled as u64;
            if tx.blocking_send(chunk).is_err() || last {
                break;
            }
        }
        drop(tx);
        let response = self
            .runtime
            .block_on(call)
            .map_err(|e| self.protocol(format!("ByteStream.Write did not finish: {e}")))?;
        match response {
            Ok(r) if r.get_ref().committed_size == digest.size as i64 => Ok(()),
            Ok(r) => Err(self.protocol(format!(
                "ByteStream.Write of {digest} committed {} bytes",
                r.get_ref().committed_size
            ))),
            // A blob the server already holds may end the stream early, as committed.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.failed("ByteStream.Write", s)),
        }
    }

    fn write_small_blobs(&self, blobs: &[(RemoteDigest, Vec<u8>)]) -> Result<(), RemoteError> {
        // REAPI: max_batch_total_size_bytes bounds the whole request; leave room for each
        // entry's digest and framing.
        let limit = self.caps()?.max_batch_bytes.saturating_sub(64 << 10).max(1);
        let client = ContentAddressableStorageClient::new(self.channel.clone());
        let mut start = 0;
        while start < blobs.len() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < blobs.len() && (end == start || bytes + blobs[end].0.size + 200 <= limit) {
                bytes += blobs[end].0.size + 200;
                end += 1;
            }
            let Some(function) = blobs.get(start).map(|(d, _)| d.function) else {
                break;
            };
            let message = reapi::BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests: blobs[start..end]
                    .iter()
                    .map(
                        |(digest, data)| reapi::batch_update_blobs_request::Request {
                            digest: Some(digest.to_reapi()),
                            data: data.clone(),
                            compressor: 0,
                        },
                    )
                    .collect(),
                digest_function: function.to_reapi(),
            };
            let response = self
                .unary(message, |r| {
                    let mut c = client.clone();
                    async move { c.batch_update_blobs(r).await }
                })
                .map_err(|s| self.failed("BatchUpdateBlobs", s))?;
            for r in response.responses {
                if let Some(status) = r.status.filter(|s| s.code != 0) {
                    return Err(self.protocol(format!(
                        "BatchUpdateBlobs refused a blob: {}",
                        status.message
                    )));
                }
            }
            start = end;
        }
        Ok(())
    }

    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let client = ActionCacheClient::new(self.channel.clone());
        let message = reapi::GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(key.to_reapi()),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: vec![],
            digest_function: key.function.to_reapi(),
        };
        let found = self.unary(message, |r| {
            let mut c = client.clone();
            async move { c.get_action_result(r).await }
        });
        match found {
            Ok(result) => Ok(Some(result)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.failed("GetActionResult", s)),
        }
    }

    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let client = ActionCacheClient::new(self.channel.clone());
        let message = reapi::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(key.to_reapi()),
            action_result: Some(result.clone()),
            results_cache_policy: None,
            digest_function: key.function.to_reapi(),
        };
        self.unary(message, |r| {
            let mut c = client.clone();
            async move { c.update_action_result(r).await }
        })
        .map_err(|s| self.failed("UpdateActionResult", s))?;
        Ok(())
    }
}

/// How often a waiting `execute` looks at its cancellation flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);
/// How many times the Execute stream may be re-opened after it failed or dropped.
const STREAM_ATTEMPTS: u32 = 5;

impl RemoteExecution for GrpcCache {
    fn execute(
        &self,
        action: &RemoteDigest,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Executed, RemoteError> {
        let client = ExecutionClient::new(self.exec_channel.clone());
        // The name of the operation once the server gave it: a dropped stream is re-joined
        // with WaitExecution; without one (or when the server forgot it) the action is sent
        // again, which REAPI makes safe (the server merges identical actions).
        let mut operation: Option<String> = None;
        let mut failures = 0;
        let mut delay = Duration::from_millis(200);
        loop {
            let opened = self.runtime.block_on(async {
                let mut c = client.clone();
                match &operation {
                    None => {
                        let message = reapi::ExecuteRequest {
                            instance_name: self.instance.clone(),
                            // The cache chain has looked the action up already; a result
                            // cached by the server for a failed run must not come back.
                            skip_cache_lookup: true,
                            action_digest: Some(action.to_reapi()),
                            execution_policy: None,
                            results_cache_policy: None,
                            digest_function: action.function.to_reapi(),
                            ..Default::default()
                        };
                        c.execute(self.request(message)).await
                    }
                    Some(name) => {
                        let message = reapi::WaitExecutionRequest { name: name.clone() };
                        c.wait_execution(self.request(message)).await
                    }
                }
            });
            let mut stream = match opened {
                Ok(response) => response.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound && operation.is_some() => {
                    operation = None;
                    continue;
                }
                Err(s) if is_transient(s.code()) && failures + 1 < STREAM_ATTEMPTS => {
                    failures += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                    continue;
                }
                Err(s) => return self.execute_failed(s),
            };
            loop {
                if cancelled() {
                    if let Some(name) = &operation {
                        self.cancel_operation(name);
                    }
                    return Ok(Executed::Cancelled);
                }
                let next = self
                    .runtime
                    .block_on(async { tokio::time::timeout(CANCEL_POLL, stream.message()).await });
                match next {
                    // Nothing yet: look at the flag again.
                    Err(_elapsed) => {}
                    Ok(Ok(Some(op))) => {
                        if !op.name.is_empty() {
                            operation = Some(op.name.clone());
                        }
                        if op.done {
                            return self.finished(op).map(|r| Executed::Done(Box::new(r)));
                        }
                    }
                    // The stream ended before the operation did: re-join it.
                    Ok(Ok(None)) => break,
                    Ok(Err(s)) if s.code() == tonic::Code::NotFound && operation.is_some() => {
                        operation = None;
                        break;
                    }
                    Ok(Err(s)) if is_transient(s.code()) && failures + 1 < STREAM_ATTEMPTS => {
                        failures += 1;
                        std::thread::sleep(delay);
                        delay *= 2;
                        break;
                    }
                    Ok(Err(s)) => return self.execute_failed(s),
                }
            }
        }
    }
}

impl GrpcCache {
    /// An Execute (or WaitExecution) call that failed. REAPI gives INVALID_ARGUMENT and
    /// FAILED_PRECONDITION (a missing input, a platform no worker offers) for problems of
    /// this action: they are its response, as if its ExecuteResponse said them. Anything
    /// else means the server is not working.
    fn execute_failed(&self, s: tonic::Status) -> Result<Executed, RemoteError> {
        if !matches!(
            s.code(),
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
        ) {
            return Err(self.failed("Execute", s));
        }
        // The full status (with its details) travels in `grpc-status-details-bin`.
        let status = bazel_remote_apis::google::rpc::Status::decode(s.details())
            .ok()
            .filter(|d| d.code == s.code() as i32)
            .unwrap_or_else(|| bazel_remote_apis::google::rpc::Status {
                code: s.code() as i32,
                message: s.message().to_string(),
                details: vec![],
            });
        Ok(Executed::Done(Box::new(reapi::ExecuteResponse {
            status: Some(status),
            ..Default::default()
        })))
    }

    /// The response of a finished operation; an operation error becomes the response's status.
    fn finished(&self, op: Operation) -> Result<reapi::ExecuteResponse, RemoteError> {
        match op.result {
            Some(operation::Result::Response(any)) => {
                reapi::ExecuteResponse::decode(any.value.as_slice())
                    .map_err(|e| self.protocol(format!("an ExecuteResponse does not decode: {e}")))
            }
            Some(operation::Result::Error(status)) => Ok(reapi::ExecuteResponse {
                status: Some(status),
                ..Default::default()
            }),
            None => Err(self.protocol(format!(
                "operation {} is done without a response or an error",
                op.name
            ))),
        }
    }

    /// Asks the server to stop an operation (best effort: the build is going away).
    fn cancel_operation(&self, name: &str) {
        let mut client = OperationsClient::new(self.channel.clone());
        let request = self.request(CancelOperationRequest {
            name: name.to_string(),
        });
        let _ = self.runtime.block_on(client.cancel_operation(request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_reapi() {
        let cache = GrpcCache::new(
            "grpc://127.0.0.1:1",
            "main",
            Duration::from_secs(1),
            &[],
            None,
        )
        .unwrap();
        let sha = RemoteDigest::of_bytes(DigestFunction::Sha256, b"x");
        assert_eq!(cache.blob_path(&sha), format!("main/blobs/{}/1", sha.hex()));
        let blake = RemoteDigest::of_bytes(DigestFunction::Blake3, b"x");
        assert_eq!(
            cache.blob_path(&blake),
            format!("main/blobs/blake3/{}/1", blake.hex())
        );
        let upload = cache.upload_path(&sha);
        let parts: Vec<&str> = upload.split('/').collect();
        assert_eq!(parts[0..2], ["main", "uploads"]);
        assert_eq!(parts[2].len(), 36, "a UUID-shaped id: {upload}");
        assert_ne!(
            upload,
            cache.upload_path(&sha),
            "each upload has its own id"
        );
        assert!(GrpcCache::new("http://x", "", Duration::from_secs(1), &[], None).is_err());
    }

    #[test]
    fn an_unreachable_server_fails_its_first_call() {
        let cache =
            GrpcCache::new("grpc://127.0.0.1:1", "", Duration::from_secs(2), &[], None).unwrap();
        assert!(matches!(
            cache.capabilities(),
            Err(RemoteError::Unavailable { .. })
        ));
    }
}
