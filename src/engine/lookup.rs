//! The one cache chain: where a cache hit is decided. The local store first, then the
//! configured remotes in order. A remote hit is checked (signatures), its blobs are
//! downloaded into the local store and the result is written there (backfill), so the next
//! lookup is a local hit. With trusted keys configured, a remote result counts only with a
//! valid signature (`Trust`). New results are stored locally and queued for upload in the
//! background (a build waits for uploads only in the bounded `finish`). The first failure of
//! a remote is one warning; the remote is then left alone for the rest of the build (a
//! circuit breaker), and the build goes on with what is left, never failing because of it.
//! The scheduler calls `lookup` and `store_result` and knows nothing about remotes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cairn_store::{
    Capabilities, Digest, DigestFunction, PublicKey, RemoteCache, RemoteDigest, RemoteError,
    Sha256Map, SigningKey, Store, StoreError, reapi, strip_signatures,
};
use prost::Message;

use super::encoding::{self, Blob};
use crate::action::PreparedAction;
use crate::graph::Label;
use crate::report::Traffic;

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Local,
    /// The remote at this index of the chain.
    Remote(usize),
}

/// What a lookup found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per lookup, moved once: a box would buy nothing.
pub(crate) enum Found {
    Hit {
        result: reapi::ActionResult,
        source: Source,
        /// Whether every blob the result names is in the local store. A remote hit that was
        /// not downloaded (`--remote-download minimal`) is not: its outputs can be listed but
        /// not restored, and it is not written to the local store.
        complete: bool,
    },
    Miss,
}

/// Which outputs of remote hits are downloaded (`--remote-download`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Download {
    /// Every remote hit's outputs (and it is backfilled into the local store).
    #[default]
    All,
    /// Only those of the targets the command named.
    Toplevel,
    /// None: a remote hit is recorded, and its outputs fetched only when an action that
    /// runs here reads them.
    Minimal,
}

/// Signatures (DESIGN.md "Signing"): what the chain signs uploads with, and whose signatures
/// a remote result needs to be used.
#[derive(Default, Clone)]
pub(crate) struct Trust {
    /// Signs every uploaded result.
    pub signer: Option<Arc<SigningKey>>,
    /// When set, a remote result is used only with a valid signature by one of these keys;
    /// any other is a miss, counted `untrusted`.
    pub trusted: Option<Arc<Vec<PublicKey>>>,
}

/// A remote of the chain and its state in this build.
pub(crate) struct Remote {
    pub cache: Arc<dyn RemoteCache>,
    /// Whether new results are sent to it.
    pub upload: bool,
}

struct Link {
    cache: Arc<dyn RemoteCache>,
    upload: bool,
    /// Read on first use; `None` when they could not be read (the remote is then broken).
    capabilities: OnceLock<Option<Capabilities>>,
    broken: AtomicBool,
}

/// How long `finish` waits for queued uploads by default.
pub(crate) const UPLOAD_FLUSH: Duration = Duration::from_secs(30);

pub(crate) struct CacheChain<'a> {
    local: &'a Store,
    /// SHA-256 digests of local blobs, for SHA-256 remotes.
    sha: Sha256Map<'a>,
    /// Where sources are read from for upload.
    workspace_root: &'a Path,
    links: Arc<Vec<Link>>,
    trust: Trust,
    /// Told once per remote that fails.
    warn: &'a (dyn Fn(&str) + Sync),
    /// Warnings raised on the upload thread, shown by `finish` (the reporter is not `'static`).
    late_warnings: Arc<Mutex<Vec<String>>>,
    downloaded: AtomicU64,
    uploaded: Arc<AtomicU64>,
    untrusted: AtomicU64,
    queued: Arc<AtomicUsize>,
    uploader: Mutex<Option<Uploader>>,
    download: Download,
    /// Blobs of remote hits that were not downloaded: local digest → the remote (index), its
    /// digest there and the key of the action that produced it, to fetch them when a local
    /// action reads them.
    deferred: Mutex<HashMap<Digest, (usize, RemoteDigest, Digest)>>,
    /// The actions of remote hits with blobs not downloaded, by key: run here when those blobs
    /// are needed and the remote no longer has them.
    producers: Mutex<HashMap<Digest, Arc<Producer>>>,
    /// Whether the digest of each action on the first remote is wanted (`--json`).
    report_keys: bool,
    /// The first remote's digest of actions looked up there, by local key.
    remote_keys: Mutex<HashMap<Digest, RemoteDigest>>,
}

/// A target whose remote hit left outputs undownloaded, and its action, to run here if the
/// remote loses them before they are needed.
#[derive(Debug)]
pub(crate) struct Producer {
    pub label: Label,
    pub action: PreparedAction,
}

struct Uploader {
    jobs: mpsc::Sender<Upload>,
    /// One message per upload thread that ended.
    done: mpsc::Receiver<()>,
    threads: usize,
}

/// One result to send, with its action (encoded for each remote on the upload thread: for a
/// SHA-256 remote that hashes every input, which must not hold up a build worker).
struct Upload {
    action: PreparedAction,
    result: reapi::ActionResult,
}

impl<'a> CacheChain<'a> {
    /// A chain of the local store only.
    pub fn local(
        local: &'a Store,
        workspace_root: &'a Path,
        warn: &'a (dyn Fn(&str) + Sync),
    ) -> CacheChain<'a> {
        CacheChain::new(local, workspace_root, Vec::new(), Trust::default(), warn)
    }

    pub fn new(
        local: &'a Store,
        workspace_root: &'a Path,
        remotes: Vec<Remote>,
        trust: Trust,
        warn: &'a (dyn Fn(&str) + Sync),
    ) -> CacheChain<'a> {
        let links = remotes
            .into_iter()
            .map(|r| Link {
                cache: r.cache,
                upload: r.upload,
                capabilities: OnceLock::new(),
                broken: AtomicBool::new(false),
            })
            .collect();
        CacheChain {
            local,
            sha: local.sha256_map(),
            workspace_root,
            links: Arc::new(links),
            trust,
            warn,
            late_warnings: Arc::default(),
            downloaded: AtomicU64::new(0),
            uploaded: Arc::new(AtomicU64::new(0)),
            untrusted: AtomicU64::new(0),
            queued: Arc::new(AtomicUsize::new(0)),
            uploader: Mutex::new(None),
            download: Download::All,
            deferred: Mutex::default(),
            producers: Mutex::default(),
            report_keys: false,
            remote_keys: Mutex::default(),
        }
    }

    /// Sets which remote hits are downloaded (default: all).
    pub fn with_download(mut self, download: Download) -> Self {
        self.download = download;
        self
    }

    /// Makes `remote_action_digest` answer (it costs the action's remote encoding).
    pub fn with_remote_digests(mut self, wanted: bool) -> Self {
        self.report_keys = wanted;
        self
    }

    /// Whether `remote_action_digest` answers.
    pub fn reports_remote_digests(&self) -> bool {
        self.report_keys && self.has_remotes()
    }

    /// The digest under which the first working remote holds (or would hold) `action`.
    pub fn remote_action_digest(&self, action: &PreparedAction) -> Option<RemoteDigest> {
        if !self.reports_remote_digests() {
            return None;
        }
        if let Some(known) = lock(&self.remote_keys).get(&action.key) {
            return Some(*known);
        }
        let link = self.links.first()?;
        let caps = self.usable(link)?;
        let key = encoding::remote_key(
            caps.digest_function,
            action,
            &self.sha,
            self.local,
            self.workspace_root,
        )
        .ok()?;
        lock(&self.remote_keys).insert(action.key, key);
        Some(key)
    }

    /// The local store.
    pub fn store(&self) -> &'a Store {
        self.local
    }

    /// Whether any remote is configured (and so a lookup may need the whole action).
    pub fn has_remotes(&self) -> bool {
        !self.links.is_empty()
    }

    /// The result stored locally under `key`, if it is there (no remote is asked).
    pub fn lookup_local(&self, key: &Digest) -> Result<Found, StoreError> {
        Ok(match self.local.get_action_result(key)? {
            Some(result) => Found::Hit {
                result,
                source: Source::Local,
                complete: true,
            },
            None => Found::Miss,
        })
    }

    /// Looks `action` up: locally (unless `local_missed`: the caller already did), then in
    /// each working remote in order. A remote hit is in the local store when this returns,
    /// unless it is not downloaded: with `--remote-download minimal`, or `toplevel` for a
    /// target the command did not name (`top_level`).
    pub fn lookup(
        &self,
        label: &Label,
        action: &PreparedAction,
        local_missed: bool,
        top_level: bool,
    ) -> Result<Found, StoreError> {
        if !local_missed && let hit @ Found::Hit { .. } = self.lookup_local(&action.key)? {
            return Ok(hit);
        }
        let download = match self.download {
            Download::All => true,
            Download::Toplevel => top_level,
            Download::Minimal => false,
        };
        for (index, link) in self.links.iter().enumerate() {
            let Some(caps) = self.usable(link) else {
                continue;
            };
            match self.lookup_remote(index, &caps, label, action, download) {
                Ok(Some((result, complete))) => {
                    return Ok(Found::Hit {
                        result,
                        source: Source::Remote(index),
                        complete,
                    });
                }
                Ok(None) => {}
                // REAPI: a result whose blobs are gone is a miss; the action runs and its
                // result is uploaded again.
                Err(RemoteError::BlobGone { .. }) => {}
                Err(RemoteError::Store(e)) => return Err(e),
                Err(e) => self.trip(link, &e),
            }
        }
        Ok(Found::Miss)
    }

    /// Drops an unusable local entry (its blobs are gone or corrupt).
    pub fn drop_result(&self, key: &Digest) -> Result<(), StoreError> {
        self.local.remove_action_result(key)
    }

    /// Stores a new result locally and queues it for upload to every remote that takes
    /// uploads. Every blob the result names is in the local store.
    pub fn store_result(
        &self,
        action: &PreparedAction,
        result: &reapi::ActionResult,
    ) -> Result<(), StoreError> {
        self.local.put_action_result(&action.key, result)?;
        // DESIGN: a result produced without a sandbox is never uploaded.
        if self.links.iter().any(|l| l.upload) && !crate::exec::is_unsandboxed(result) {
            self.queue_upload(action, result)?;
        }
        Ok(())
    }

    /// Queues a stored result for upload to every remote that takes uploads (`cache push`):
    /// as `store_result`, without storing it again.
    pub fn push_result(
        &self,
        action: &PreparedAction,
        result: &reapi::ActionResult,
    ) -> Result<bool, StoreError> {
        if crate::exec::is_unsandboxed(result) || !self.links.iter().any(|l| l.upload) {
            return Ok(false);
        }
        self.queue_upload(action, result)?;
        Ok(true)
    }

    /// Waits up to `budget` for queued uploads, then reports what moved. Uploads still
    /// queued are dropped with one warning (their results stay local: only executed results
    /// are uploaded, so a later build does not send them either).
    pub fn finish(&self, budget: Duration) -> Traffic {
        let uploader = self
            .uploader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Uploader {
            jobs,
            done,
            threads,
        }) = uploader
        {
            drop(jobs);
            let deadline = std::time::Instant::now() + budget;
            for _ in 0..threads {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if done.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
        let dropped = self.queued.load(Ordering::SeqCst) as u64;
        for text in self
            .late_warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            (self.warn)(&text);
        }
        if dropped > 0 {
            (self.warn)(&format!(
                "{dropped} result upload{} did not finish within {}s and {} dropped (the result{} stay{} in the local store only)",
                if dropped == 1 { "" } else { "s" },
                budget.as_secs(),
                if dropped == 1 { "was" } else { "were" },
                if dropped == 1 { "" } else { "s" },
                if dropped == 1 { "s" } else { "" },
            ));
        }
        let _ = self.sha.flush();
        self.traffic(dropped)
    }

    /// What moved so far.
    pub fn traffic(&self, uploads_dropped: u64) -> Traffic {
        Traffic {
            has_remote: self.has_remotes(),
            bytes_downloaded: self.downloaded.load(Ordering::SeqCst),
            bytes_uploaded: self.uploaded.load(Ordering::SeqCst),
            untrusted: self.untrusted.load(Ordering::SeqCst),
            uploads_dropped,
        }
    }

    /// The remote's capabilities, if it is working (read on first use).
    fn usable(&self, link: &Link) -> Option<Capabilities> {
        if link.broken.load(Ordering::SeqCst) {
            return None;
        }
        let caps = link
            .capabilities
            .get_or_init(|| match link.cache.capabilities() {
                Ok(caps) => Some(caps),
                Err(e) => {
                    self.trip(link, &e);
                    None
                }
            })
            .clone();
        if caps.is_none() {
            link.broken.store(true, Ordering::SeqCst);
        }
        caps
    }

    /// The circuit breaker: one warning, and the remote is not asked again in this build.
    fn trip(&self, link: &Link, error: &RemoteError) {
        if !link.broken.swap(true, Ordering::SeqCst) {
            (self.warn)(&format!(
                "remote cache failed ({error}); continuing without it for the rest of this build"
            ));
        }
    }

    /// For remote execution on the first remote: sends it what it lacks of `action` (the
    /// Action, the Command, every input Directory and file) and returns the action's digest
    /// there. An `Err` other than `RemoteError::Store` means the remote is not working.
    pub fn upload_action(&self, action: &PreparedAction) -> Result<RemoteDigest, RemoteError> {
        let (link, function) = self.executor_link()?;
        let (key, blobs) =
            encoding::action_blobs(function, action, &self.sha, self.local, self.workspace_root)?;
        let sent = upload_blobs(self.local, link, blobs)?;
        self.uploaded.fetch_add(sent, Ordering::SeqCst);
        Ok(key)
    }

    /// A result the first remote produced by running an action, made local: every blob it
    /// names is downloaded and verified (its local digests are known no other way).
    pub fn receive_executed(
        &self,
        result: &reapi::ActionResult,
    ) -> Result<reapi::ActionResult, RemoteError> {
        let (link, function) = self.executor_link()?;
        let mut result = result.clone();
        // Logs a server sent inline rather than by digest go straight into the local store.
        let inline = |raw: &mut Vec<u8>, digest: &Option<reapi::Digest>| {
            let stored = match digest {
                None if !raw.is_empty() => Some(self.local.cas().put_bytes(raw)),
                _ => None,
            };
            raw.clear();
            stored.transpose()
        };
        let stdout = inline(&mut result.stdout_raw, &result.stdout_digest)?;
        let stderr = inline(&mut result.stderr_raw, &result.stderr_digest)?;
        self.downloaded
            .fetch_add(result.encoded_len() as u64, Ordering::SeqCst);
        let mut fetch = |digest: &RemoteDigest| self.fetch(link, digest);
        let mut file = |digest: &RemoteDigest| self.fetch(link, digest);
        let mut local = encoding::receive_result(
            function,
            &result,
            self.local,
            &mut fetch,
            &mut file,
            link.cache.name(),
        )?;
        if let Some(d) = stdout {
            local.stdout_digest = Some(d.to_reapi());
        }
        if let Some(d) = stderr {
            local.stderr_digest = Some(d.to_reapi());
        }
        Ok(local)
    }

    /// The remote executor (the same server as the first remote) failed: the first remote
    /// is not asked again in this build either. Returns whether it was working until now
    /// (whether no warning about it was said yet).
    pub fn executor_failed(&self) -> bool {
        self.links
            .first()
            .is_some_and(|l| !l.broken.swap(true, Ordering::SeqCst))
    }

    /// The first remote (the executor's CAS) and its digest function, if it is working.
    fn executor_link(&self) -> Result<(&Link, DigestFunction), RemoteError> {
        let link = self.links.first().ok_or_else(|| RemoteError::Unavailable {
            backend: "the remote executor".to_string(),
            why: "no remote is configured".to_string(),
        })?;
        let caps = self.usable(link).ok_or_else(|| RemoteError::Unavailable {
            backend: link.cache.name().to_string(),
            why: "it failed earlier in this build".to_string(),
        })?;
        Ok((link, caps.digest_function))
    }

    /// One remote's answer for `action`: its result made local, and whether it is complete
    /// (downloaded and backfilled) or only named (`download` false: the blobs of files are
    /// named by the local digests the result's manifest gives, and fetched later if needed).
    fn lookup_remote(
        &self,
        index: usize,
        caps: &Capabilities,
        label: &Label,
        action: &PreparedAction,
        download: bool,
    ) -> Result<Option<(reapi::ActionResult, bool)>, RemoteError> {
        let link = &self.links[index];
        let function = caps.digest_function;
        let key =
            encoding::remote_key(function, action, &self.sha, self.local, self.workspace_root)?;
        if index == 0 && self.report_keys {
            lock(&self.remote_keys).insert(action.key, key);
        }
        let Some(result) = link.cache.get_action_result(&key)? else {
            return Ok(None);
        };
        // A failed run (servers such as buildbox-casd cache those) is never a hit: the action
        // runs again.
        if result.exit_code != 0 {
            return Ok(None);
        }
        self.downloaded
            .fetch_add(result.encoded_len() as u64, Ordering::SeqCst);
        // A signature entry is never an output: strip it whether or not it is checked.
        let (mut unsigned, signatures) = strip_signatures(&result);
        if let Some(trusted) = &self.trust.trusted
            && !self.is_signed(link, function, &key, &unsigned, &signatures, trusted)
        {
            self.untrusted.fetch_add(1, Ordering::SeqCst);
            return Ok(None);
        }
        // Nor is the manifest (covered by the signature, so checked after it).
        let manifest = encoding::take_digests_manifest(function, &mut unsigned);
        let claimed = match manifest {
            Some(digest) if !download => self.read_manifest(link, &digest)?,
            _ => None,
        };
        let deferred = std::cell::RefCell::new(Vec::new());
        let mut fetch = |digest: &RemoteDigest| self.fetch(link, digest);
        let mut file = |digest: &RemoteDigest| {
            let named = digest
                .as_local()
                .or_else(|| claimed.as_ref().and_then(|c| c.get(digest).copied()));
            match named {
                Some(local) if !download && digest.size > 0 => {
                    if !self.local.cas().contains(&local) {
                        deferred.borrow_mut().push((local, *digest));
                    }
                    Ok(local)
                }
                _ => self.fetch(link, digest),
            }
        };
        let local = encoding::receive_result(
            function,
            &unsigned,
            self.local,
            &mut fetch,
            &mut file,
            link.cache.name(),
        )?;
        let deferred = deferred.into_inner();
        if deferred.is_empty() {
            self.local.put_action_result(&action.key, &local)?;
            return Ok(Some((local, true)));
        }
        let mut known = lock(&self.deferred);
        for (local, remote) in deferred {
            if remote.function == DigestFunction::Sha256 {
                self.sha.assume(&local, &remote);
            }
            known.insert(local, (index, remote, action.key));
        }
        drop(known);
        let producer = Producer {
            label: label.clone(),
            action: action.clone(),
        };
        lock(&self.producers).insert(action.key, Arc::new(producer));
        Ok(Some((local, false)))
    }

    /// A result's manifest of local digests (see `encoding::DIGESTS_FILE`); `None` when it
    /// does not parse (its outputs are then downloaded).
    fn read_manifest(
        &self,
        link: &Link,
        digest: &RemoteDigest,
    ) -> Result<Option<HashMap<RemoteDigest, Digest>>, RemoteError> {
        let local = self.fetch(link, digest)?;
        let bytes = self.local.cas().get_bytes(&local)?;
        Ok(encoding::parse_digests_manifest(&bytes))
    }

    /// Fetches every input of `action` that a remote hit left undownloaded, before the action
    /// runs here. Each blob is verified against the remote's digest and must have the local
    /// digest the result's manifest claimed. Returns the producers of the blobs the remote
    /// could not give (expired, or the remote failed): they must run here, never fail the
    /// build (a remote that fails is also tripped, with its one warning).
    pub fn fetch_inputs(&self, action: &PreparedAction) -> Result<Vec<Arc<Producer>>, StoreError> {
        let wanted: Vec<(Digest, usize, RemoteDigest, Digest)> = {
            let deferred = lock(&self.deferred);
            if deferred.is_empty() {
                return Ok(Vec::new());
            }
            action
                .inputs
                .values()
                .filter_map(|info| {
                    deferred
                        .get(&info.digest)
                        .map(|(index, remote, producer)| (info.digest, *index, *remote, *producer))
                })
                .filter(|(local, ..)| !self.local.cas().contains(local))
                .collect()
        };
        let mut lost: Vec<Digest> = Vec::new();
        for (local, index, remote, producer) in wanted {
            if lost.contains(&producer) {
                continue;
            }
            let link = &self.links[index];
            if link.broken.load(Ordering::SeqCst) {
                lost.push(producer);
                continue;
            }
            let failed = match self.fetch(link, &remote) {
                Ok(got) if got == local => continue,
                Ok(got) => RemoteError::Protocol {
                    backend: link.cache.name().to_string(),
                    why: format!(
                        "blob {remote} holds {got} locally, not {local} as the result's manifest said"
                    ),
                },
                Err(RemoteError::Store(e)) => return Err(e),
                Err(e) => e,
            };
            // Expired: this remote simply no longer has it. Anything else: it is failing.
            if !matches!(failed, RemoteError::BlobGone { .. }) {
                self.trip(link, &failed);
            }
            lost.push(producer);
        }
        let producers = lock(&self.producers);
        Ok(lost
            .iter()
            .filter_map(|key| producers.get(key).cloned())
            .collect())
    }

    /// Whether one of `signatures` (key name, signature blob) is a valid signature of
    /// `unsigned` under `key` by a trusted key.
    fn is_signed(
        &self,
        link: &Link,
        function: DigestFunction,
        key: &RemoteDigest,
        unsigned: &reapi::ActionResult,
        signatures: &[(String, reapi::Digest)],
        trusted: &[PublicKey],
    ) -> bool {
        signatures.iter().any(|(name, digest)| {
            let Some(public) = trusted.iter().find(|k| k.name() == name) else {
                return false;
            };
            let Some(digest) =
                RemoteDigest::from_reapi(function, digest).filter(|d| d.size <= 1024)
            else {
                return false;
            };
            let mut bytes = Vec::new();
            matches!(link.cache.read_blob(&digest, &mut bytes), Ok(true))
                && RemoteDigest::of_bytes(function, &bytes) == digest
                && cairn_store::verify_signature(public, function, key, unsigned, &bytes)
        })
    }

    /// One blob from the remote into the local store, verified against the remote's digest
    /// on the way; returns its local digest. A BLAKE3 blob already here is not downloaded.
    fn fetch(&self, link: &Link, digest: &RemoteDigest) -> Result<Digest, RemoteError> {
        if let Some(local) = digest.as_local()
            && self.local.cas().contains(&local)
        {
            return Ok(local);
        }
        if digest.size == 0 {
            // The empty blob (an action's usual stdout and stderr) needs no round trip.
            return self
                .local
                .cas()
                .put_received(digest, &mut |_| Ok(()))
                .map_err(|e| match e {
                    StoreError::WrongRemoteBytes { .. } => RemoteError::Protocol {
                        backend: link.cache.name().to_string(),
                        why: format!("it names {digest} as the empty blob, which it is not"),
                    },
                    e => e.into(),
                });
        }
        let mut failure = None;
        let mut found = true;
        let received = self.local.cas().put_received(digest, &mut |sink| match link
            .cache
            .read_blob(digest, sink)
        {
            Ok(true) => Ok(()),
            Ok(false) => {
                found = false;
                Err(std::io::Error::other("missing"))
            }
            Err(e) => {
                let text = e.to_string();
                failure = Some(e);
                Err(std::io::Error::other(text))
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        if !found {
            return Err(RemoteError::BlobGone {
                backend: link.cache.name().to_string(),
                digest: digest.to_string(),
            });
        }
        match received {
            Ok(local) => {
                self.downloaded.fetch_add(digest.size, Ordering::SeqCst);
                if digest.function == DigestFunction::Sha256 {
                    self.sha.remember(&local, digest);
                }
                Ok(local)
            }
            Err(StoreError::WrongRemoteBytes { expected, actual }) => Err(RemoteError::Protocol {
                backend: link.cache.name().to_string(),
                why: format!("it served bytes hashing to {actual} as blob {expected}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn queue_upload(
        &self,
        action: &PreparedAction,
        result: &reapi::ActionResult,
    ) -> Result<(), StoreError> {
        let upload = Upload {
            action: action.clone(),
            result: result.clone(),
        };
        let mut uploader = self.uploader.lock().unwrap_or_else(|p| p.into_inner());
        let uploader = uploader.get_or_insert_with(|| self.spawn_uploader());
        self.queued.fetch_add(1, Ordering::SeqCst);
        if uploader.jobs.send(upload).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The upload thread: sends queued results one at a time, each after every blob it names
    /// is present on the remote.
    fn spawn_uploader(&self) -> Uploader {
        let (jobs, queue) = mpsc::channel::<Upload>();
        let queue = Arc::new(Mutex::new(queue));
        let (finished, done) = mpsc::channel();
        for n in 0..UPLOAD_THREADS {
            let queue = Arc::clone(&queue);
            let finished_here = finished.clone();
            let links = Arc::clone(&self.links);
            let store_root = self.local.root().to_path_buf();
            let workspace_root = self.workspace_root.to_path_buf();
            let signer = self.trust.signer.clone();
            let uploaded = Arc::clone(&self.uploaded);
            let queued = Arc::clone(&self.queued);
            let warnings = Arc::clone(&self.late_warnings);
            let spawned = std::thread::Builder::new()
                .name(format!("upload results {n}"))
                .spawn(move || {
                    // The thread must not borrow the build's store: it may outlive `finish`.
                    let store = Store::open(&store_root);
                    let sha = store.as_ref().ok().map(Store::sha256_map);
                    loop {
                        // Whatever is queued goes together (up to a bound): one
                        // FindMissingBlobs and one batch of small blobs for all of them.
                        let uploads = {
                            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                            let Ok(first) = queue.recv() else {
                                break;
                            };
                            let mut uploads = vec![first];
                            while uploads.len() < UPLOADS_PER_BATCH {
                                match queue.try_recv() {
                                    Ok(upload) => uploads.push(upload),
                                    Err(_) => break,
                                }
                            }
                            uploads
                        };
                        if let (Ok(store), Some(sha)) = (&store, &sha) {
                            for link in links.iter().filter(|l| l.upload) {
                                if link.broken.load(Ordering::SeqCst) {
                                    continue;
                                }
                                let signer = signer.as_deref();
                                match send(store, sha, &workspace_root, signer, link, &uploads) {
                                    Ok(bytes) => {
                                        uploaded.fetch_add(bytes, Ordering::SeqCst);
                                    }
                                    Err(e) => {
                                        if !link.broken.swap(true, Ordering::SeqCst) {
                                            warnings
                                                .lock()
                                                .unwrap_or_else(|p| p.into_inner())
                                                .push(format!(
                                                    "uploading to remote cache failed ({e}); no more uploads in this build"
                                                ));
                                        }
                                    }
                                }
                            }
                        }
                        queued.fetch_sub(uploads.len(), Ordering::SeqCst);
                    }
                    let _ = finished_here.send(());
                });
            if spawned.is_err() {
                // Fewer threads: the others still drain the queue.
                let _ = finished.send(());
            }
        }
        Uploader {
            jobs,
            done,
            threads: UPLOAD_THREADS,
        }
    }
}

/// Sends results: the blobs the remote lacks (asked for all of them at once), then each
/// result. Returns the bytes sent.
fn send(
    store: &Store,
    sha: &Sha256Map,
    workspace_root: &Path,
    signer: Option<&SigningKey>,
    link: &Link,
    uploads: &[Upload],
) -> Result<u64, RemoteError> {
    let caps = match link.capabilities.get() {
        Some(Some(caps)) => caps.clone(),
        Some(None) => return Ok(0),
        None => link.cache.capabilities()?,
    };
    if !caps.update_enabled {
        return Ok(0);
    }
    let function = caps.digest_function;
    let mut blobs = Vec::new();
    let mut results = Vec::with_capacity(uploads.len());
    for upload in uploads {
        let (key, action_blobs) =
            encoding::action_blobs(function, &upload.action, sha, store, workspace_root)?;
        let (mut result, result_blobs) =
            encoding::result_blobs(function, &upload.result, sha, store)?;
        blobs.extend(action_blobs);
        blobs.extend(result_blobs);
        if let Some(signer) = signer {
            let (signed, signature) = signer.sign(function, &key, &result);
            blobs.push((
                RemoteDigest::of_bytes(function, &signature),
                Blob::Bytes(signature),
            ));
            result = signed;
        }
        results.push((key, result));
    }
    let mut sent = upload_blobs(store, link, blobs)?;
    // REAPI: each result last, once every blob it names is present.
    for (key, result) in &results {
        link.cache.put_action_result(key, result)?;
        sent += result.encoded_len() as u64;
    }
    let _ = sha.flush();
    Ok(sent)
}

/// Sends the blobs among `blobs` that the remote lacks (asked for all at once): small ones
/// in batches, large ones streamed, each checked against its local digest. Returns the bytes
/// sent.
fn upload_blobs(
    store: &Store,
    link: &Link,
    mut blobs: Vec<(RemoteDigest, Blob)>,
) -> Result<u64, RemoteError> {
    blobs.sort_by_key(|(d, _)| *d);
    blobs.dedup_by_key(|(d, _)| *d);
    let digests: Vec<RemoteDigest> = blobs.iter().map(|(d, _)| *d).collect();
    let mut sent = 0;
    // Small blobs go in batches (one request for most results), large ones streamed.
    let mut batch: Vec<(RemoteDigest, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0;
    for want in link.cache.find_missing(&digests)? {
        let Ok(index) = digests.binary_search(&want) else {
            continue;
        };
        let blob = &blobs[index].1;
        sent += want.size;
        if want.size <= SMALL_BLOB {
            batch_bytes += want.size;
            batch.push((want, small_blob_bytes(store, blob)?));
            if batch_bytes >= BATCH_BYTES {
                link.cache.write_small_blobs(&batch)?;
                batch.clear();
                batch_bytes = 0;
            }
            continue;
        }
        match blob {
            Blob::Bytes(bytes) => link.cache.write_blob(&want, &mut bytes.as_slice())?,
            Blob::Store(local) => {
                let reader = store.cas().open_blob(local)?;
                link.cache
                    .write_blob(&want, &mut Verifying::new(reader, *local))?
            }
            Blob::File(path, local) => {
                let file = std::fs::File::open(path).map_err(|source| StoreError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })?;
                link.cache
                    .write_blob(&want, &mut Verifying::new(file, *local))?
            }
        }
    }
    if !batch.is_empty() {
        link.cache.write_small_blobs(&batch)?;
    }
    Ok(sent)
}

/// A mutex's data, even if a thread panicked holding it (every update here is one call).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blobs up to this size are sent in batches, read whole.
const SMALL_BLOB: u64 = 1 << 20;
/// A batch is sent once it holds this much.
const BATCH_BYTES: u64 = 2 << 20;
/// Threads sending results.
const UPLOAD_THREADS: usize = 4;
/// At most this many queued results are sent together.
const UPLOADS_PER_BATCH: usize = 64;

/// The bytes of a small blob to send, checked against its local digest (a workspace file
/// edited since it was hashed is refused, never sent under the old digest).
fn small_blob_bytes(store: &Store, blob: &Blob) -> Result<Vec<u8>, RemoteError> {
    Ok(match blob {
        Blob::Bytes(bytes) => bytes.clone(),
        Blob::Store(local) => store.cas().get_bytes(local)?,
        Blob::File(path, local) => {
            let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
            let actual = Digest::of_bytes(&bytes);
            if actual != *local {
                return Err(StoreError::FileChanged {
                    path: path.clone(),
                    expected: *local,
                    actual,
                }
                .into());
            }
            bytes
        }
    })
}

/// Reads a blob for sending and fails at its end if the bytes were not those of `digest`
/// (a workspace file changed since it was hashed): the receiver never completes a wrong blob.
struct Verifying<R> {
    inner: R,
    hasher: blake3::Hasher,
    digest: Digest,
}

impl<R: std::io::Read> Verifying<R> {
    fn new(inner: R, digest: Digest) -> Self {
        Verifying {
            inner,
            hasher: blake3::Hasher::new(),
            digest,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if n == 0 || buf.is_empty() {
            let actual = Digest {
                hash: *self.hasher.finalize().as_bytes(),
                size: self.hasher.count(),
            };
            if n == 0 && actual != self.digest {
                return Err(std::io::Error::other(format!(
                    "the bytes sent as {} hash to {actual} (the file changed since it was hashed)",
                    self.digest
                )));
            }
        }
        Ok(n)
    }
}
