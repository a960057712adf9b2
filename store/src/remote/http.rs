//! The Bazel HTTP cache protocol (`http://host:port/prefix`): `GET`/`PUT` `/ac/<hash>` (an
//! encoded `ActionResult`) and `/cas/<hash>` (a blob), `HEAD /cas/<hash>` to ask for one,
//! with SHA-256 hashes as Bazel sends them, so any server that serves Bazel's HTTP cache
//! (bazel-remote, nginx WebDAV, a CDN in front of object storage) works. Nothing the server
//! sends is trusted: the cache chain verifies every blob against its digest.

use std::io::{Read, Write};
use std::time::Duration;

use prost::Message;

use super::{Capabilities, RemoteCache, RemoteError, TlsOptions};
use crate::digest::{DigestFunction, RemoteDigest};
use crate::reapi;

/// A Bazel HTTP cache.
pub struct HttpCache {
    /// The URL without a trailing `/`.
    base: String,
    agent: ureq::Agent,
    /// Extra request headers (e.g. `Authorization`).
    headers: Vec<(String, String)>,
}

/// rustls with Mozilla's roots, or only the given CA; the client certificate if one is set.
fn tls_config(tls: &TlsOptions) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
    let certificates = |pem: &[u8], what: &str| -> Result<Vec<Certificate<'static>>, String> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            if let PemItem::Certificate(c) = item.map_err(|e| format!("{what}: {e}"))? {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(format!("{what} holds no PEM certificate"));
        }
        Ok(certs)
    };
    let mut config = TlsConfig::builder();
    if let Some(ca) = &tls.ca {
        config = config.root_certs(RootCerts::new_with_certs(&certificates(ca, "the CA file")?));
    }
    if let Some((cert, key)) = &tls.client {
        let chain = certificates(cert, "the client certificate")?;
        let key = PrivateKey::from_pem(key)
            .map_err(|e| format!("the client key is not a PEM private key: {e}"))?;
        config = config.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(config.build())
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold tokens: never print them.
        f.debug_struct("HttpCache")
            .field("base", &self.base)
            .finish()
    }
}

impl HttpCache {
    /// The cache at `url` (`http://host:port[/prefix]`), each request given up after
    /// `timeout`, sending `headers` with every request.
    /// `tls` is set for `https://`.
    pub fn new(
        url: &str,
        timeout: Duration,
        headers: Vec<(String, String)>,
        tls: Option<&TlsOptions>,
    ) -> Result<HttpCache, String> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout));
        if let Some(tls) = tls {
            config = config.tls_config(tls_config(tls)?);
        }
        Ok(HttpCache {
            base: url.trim_end_matches('/').to_string(),
            agent: config.build().into(),
            headers,
        })
    }

    fn url(&self, kind: &str, digest: &RemoteDigest) -> Result<String, RemoteError> {
        if digest.function != DigestFunction::Sha256 {
            return Err(RemoteError::Protocol {
                backend: self.base.clone(),
                why: format!(
                    "it takes SHA-256 digests, and was sent a {} one",
                    digest.function.as_str()
                ),
            });
        }
        Ok(format!("{}/{kind}/{}", self.base, digest.hex()))
    }

    fn unavailable(&self, what: &str, why: impl std::fmt::Display) -> RemoteError {
        RemoteError::Unavailable {
            backend: self.base.clone(),
            why: format!("{what}: {why}"),
        }
    }

    fn with_headers<B>(&self, mut request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }

    /// `GET url`: the body streamed into `sink`, `Ok(false)` on 404.
    fn get(&self, url: &str, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        let mut response = self
            .with_headers(self.agent.get(url))
            .call()
            .map_err(|e| self.unavailable(&format!("GET {url}"), e))?;
        match response.status().as_u16() {
            200 => {
                let mut body = response.body_mut().as_reader();
                std::io::copy(&mut body, sink)
                    .map_err(|e| self.unavailable(&format!("GET {url}"), e))?;
                Ok(true)
            }
            404 => Ok(false),
            status => Err(self.unavailable(&format!("GET {url}"), format!("HTTP {status}"))),
        }
    }

    /// `PUT url` with the body read from `source`.
    fn put(&self, url: &str, source: &mut dyn Read) -> Result<(), RemoteError> {
        let response = self
            .with_headers(self.agent.put(url))
            .send(ureq::SendBody::from_reader(source))
            .map_err(|e| self.unavailable(&format!("PUT {url}"), e))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(self.unavailable(&format!("PUT {url}"), format!("HTTP {status}"))),
        }
    }
}

impl RemoteCache for HttpCache {
    fn name(&self) -> &str {
        &self.base
    }

    fn capabilities(&self) -> Result<Capabilities, RemoteError> {
        // The protocol has no capabilities call: ask for a blob that cannot exist, which any
        // working server answers 404 (and a down one not at all).
        let probe = RemoteDigest::of_bytes(DigestFunction::Sha256, b"cairn capabilities probe");
        self.get(&self.url("cas", &probe)?, &mut std::io::sink())?;
        Ok(Capabilities {
            digest_function: DigestFunction::Sha256,
            max_batch_bytes: 0,
            zstd: false,
            update_enabled: true,
        })
    }

    fn find_missing(&self, digests: &[RemoteDigest]) -> Result<Vec<RemoteDigest>, RemoteError> {
        let mut missing = Vec::new();
        for digest in digests {
            let url = self.url("cas", digest)?;
            let response = self
                .with_headers(self.agent.head(&url))
                .call()
                .map_err(|e| self.unavailable(&format!("HEAD {url}"), e))?;
            match response.status().as_u16() {
                200 => {}
                404 => missing.push(*digest),
                status => {
                    return Err(self.unavailable(&format!("HEAD {url}"), format!("HTTP {status}")));
                }
            }
        }
        Ok(missing)
    }

    fn read_blob(&self, digest: &RemoteDigest, sink: &mut dyn Write) -> Result<bool, RemoteError> {
        self.get(&self.url("cas", digest)?, sink)
    }

    fn write_blob(&self, digest: &RemoteDigest, source: &mut dyn Read) -> Result<(), RemoteError> {
        self.put(&self.url("cas", digest)?, source)
    }

    fn get_action_result(
        &self,
        key: &RemoteDigest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let mut bytes = Vec::new();
        if !self.get(&self.url("ac", key)?, &mut bytes)? {
            return Ok(None);
        }
        // A damaged entry is a miss: the action runs and its result replaces it.
        Ok(reapi::ActionResult::decode(bytes.as_slice()).ok())
    }

    fn put_action_result(
        &self,
        key: &RemoteDigest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        self.put(
            &self.url("ac", key)?,
            &mut result.encode_to_vec().as_slice(),
        )
    }
}
