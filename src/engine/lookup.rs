//! The one cache chain: where a cache hit is decided. The local store first, then the
//! configured remotes in order. A remote hit is checked (the trust hook), its blobs are
//! downloaded into the local store and the result is written there (backfill), so the next
//! lookup is a local hit. New results are stored locally and queued for upload in the
//! background (a build waits for uploads only in the bounded `finish`). The first failure of
//! a remote is one warning; the remote is then left alone for the rest of the build (a
//! circuit breaker), and the build goes on with what is left, never failing because of it.
//! The scheduler calls `lookup` and `store_result` and knows nothing about remotes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cairn_store::{
    Capabilities, Digest, DigestFunction, RemoteCache, RemoteDigest, RemoteError, Store,
    StoreError, reapi,
};
use prost::Message;

use crate::action::PreparedAction;
use crate::action::prepare::InputBytes;
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
    },
    Miss,
}

/// Decides whether a result from a remote may be used (signatures, issue 14). The chain asks
/// it about every remote hit before downloading anything.
pub(crate) trait TrustPolicy: Send + Sync {
    fn is_trusted(&self, remote: &str, key: &RemoteDigest, result: &reapi::ActionResult) -> bool;
}

/// Every remote result is used.
pub(crate) struct TrustAll;

impl TrustPolicy for TrustAll {
    fn is_trusted(&self, _: &str, _: &RemoteDigest, _: &reapi::ActionResult) -> bool {
        true
    }
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
    /// Where sources are read from for upload.
    workspace_root: &'a Path,
    links: Arc<Vec<Link>>,
    trust: Box<dyn TrustPolicy>,
    /// Told once per remote that fails.
    warn: &'a (dyn Fn(&str) + Sync),
    /// Warnings raised on the upload thread, shown by `finish` (the reporter is not `'static`).
    late_warnings: Arc<Mutex<Vec<String>>>,
    downloaded: AtomicU64,
    uploaded: Arc<AtomicU64>,
    untrusted: AtomicU64,
    queued: Arc<AtomicUsize>,
    uploader: Mutex<Option<Uploader>>,
}

struct Uploader {
    jobs: mpsc::Sender<Upload>,
    done: mpsc::Receiver<()>,
}

/// One result to send: its key, the result, and every blob it and its action name.
struct Upload {
    key: Digest,
    result: reapi::ActionResult,
    blobs: Vec<(Digest, Blob)>,
}

/// Where the bytes of a blob to upload are.
enum Blob {
    Store,
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

impl<'a> CacheChain<'a> {
    /// A chain of the local store only.
    pub fn local(
        local: &'a Store,
        workspace_root: &'a Path,
        warn: &'a (dyn Fn(&str) + Sync),
    ) -> CacheChain<'a> {
        CacheChain::new(local, workspace_root, Vec::new(), Box::new(TrustAll), warn)
    }

    pub fn new(
        local: &'a Store,
        workspace_root: &'a Path,
        remotes: Vec<Remote>,
        trust: Box<dyn TrustPolicy>,
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
        }
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
            },
            None => Found::Miss,
        })
    }

    /// Looks `action` up: locally (unless `local_missed`: the caller already did), then in
    /// each working remote in order. A remote hit is in the local store when this returns.
    pub fn lookup(&self, action: &PreparedAction, local_missed: bool) -> Result<Found, StoreError> {
        if !local_missed && let Found::Hit { result, source } = self.lookup_local(&action.key)? {
            return Ok(Found::Hit { result, source });
        }
        for (index, link) in self.links.iter().enumerate() {
            let Some(caps) = self.usable(link) else {
                continue;
            };
            match self.lookup_remote(link, &caps, action) {
                Ok(Some(result)) => {
                    return Ok(Found::Hit {
                        result,
                        source: Source::Remote(index),
                    });
                }
                Ok(None) => {}
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
        if self.links.iter().any(|l| l.upload) {
            self.queue_upload(action, result)?;
        }
        Ok(())
    }

    /// Waits up to `budget` for queued uploads, then reports what moved. Uploads still
    /// queued are dropped with one warning (the next build uploads them again).
    pub fn finish(&self, budget: Duration) -> Traffic {
        let uploader = self
            .uploader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(Uploader { jobs, done }) = uploader {
            drop(jobs);
            let _ = done.recv_timeout(budget);
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
                "{dropped} result upload{} did not finish within {}s and {} dropped (the next build sends {})",
                if dropped == 1 { "" } else { "s" },
                budget.as_secs(),
                if dropped == 1 { "was" } else { "were" },
                if dropped == 1 { "it" } else { "them" },
            ));
        }
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

    /// The remote's capabilities, if it is working and speaks a digest function this chain
    /// can translate to.
    fn usable(&self, link: &Link) -> Option<Capabilities> {
        if link.broken.load(Ordering::SeqCst) {
            return None;
        }
        let caps = link
            .capabilities
            .get_or_init(|| match link.cache.capabilities() {
                Ok(caps) if caps.digest_function == DigestFunction::Blake3 => Some(caps),
                Ok(caps) => {
                    (self.warn)(&format!(
                        "remote {} takes {} digests only, which this build of cairn cannot send yet; it is not used",
                        link.cache.name(),
                        caps.digest_function.as_str()
                    ));
                    None
                }
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

    fn lookup_remote(
        &self,
        link: &Link,
        _caps: &Capabilities,
        action: &PreparedAction,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let key = RemoteDigest::from(action.key);
        let Some(result) = link.cache.get_action_result(&key)? else {
            return Ok(None);
        };
        if !self.trust.is_trusted(link.cache.name(), &key, &result) {
            self.untrusted.fetch_add(1, Ordering::SeqCst);
            return Ok(None);
        }
        self.download(link, &result)?;
        self.local.put_action_result(&action.key, &result)?;
        Ok(Some(result))
    }

    /// Brings every blob `result` names (output files, output trees and the files in them,
    /// stdout and stderr) into the local store, verified on the way.
    fn download(&self, link: &Link, result: &reapi::ActionResult) -> Result<(), RemoteError> {
        let protocol = |why: String| RemoteError::Protocol {
            backend: link.cache.name().to_string(),
            why,
        };
        let digest_of = |d: Option<&reapi::Digest>| {
            d.and_then(Digest::from_reapi)
                .ok_or_else(|| protocol("a result holds a malformed digest".into()))
        };
        let mut files = Vec::new();
        for file in &result.output_files {
            files.push(digest_of(file.digest.as_ref())?);
        }
        for log in [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
        {
            files.push(digest_of(Some(log))?);
        }
        for dir in &result.output_directories {
            let tree_digest = digest_of(dir.tree_digest.as_ref())?;
            self.fetch(link, &tree_digest)?;
            let bytes = self.local.cas().get_bytes(&tree_digest)?;
            let tree = reapi::Tree::decode(bytes.as_slice())
                .map_err(|e| protocol(format!("tree {tree_digest} does not decode: {e}")))?;
            for dir in tree.root.iter().chain(&tree.children) {
                for file in &dir.files {
                    files.push(digest_of(file.digest.as_ref())?);
                }
            }
        }
        for digest in files {
            self.fetch(link, &digest)?;
        }
        Ok(())
    }

    /// One blob from the remote into the local store (unless already there).
    fn fetch(&self, link: &Link, digest: &Digest) -> Result<(), RemoteError> {
        let mut failure = None;
        let mut found = true;
        let fetched = self.local.cas().put_writing(digest, &mut |sink| match link
            .cache
            .read_blob(&RemoteDigest::from(*digest), sink)
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
            return Err(RemoteError::Protocol {
                backend: link.cache.name().to_string(),
                why: format!("a result names blob {digest}, which it does not hold"),
            });
        }
        match fetched {
            Ok(true) => {
                self.downloaded.fetch_add(digest.size, Ordering::SeqCst);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(StoreError::WrongBytes { expected, actual }) => Err(RemoteError::Protocol {
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
            key: action.key,
            result: result.clone(),
            blobs: upload_blobs(action, result, self.local, self.workspace_root)?,
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
        let (finished, done) = mpsc::channel();
        let links = Arc::clone(&self.links);
        let store_root = self.local.root().to_path_buf();
        let uploaded = Arc::clone(&self.uploaded);
        let queued = Arc::clone(&self.queued);
        let warnings = Arc::clone(&self.late_warnings);
        std::thread::Builder::new()
            .name("upload results".into())
            .spawn(move || {
                // The thread must not borrow the build's store: it may outlive `finish`.
                let store = Store::open(&store_root);
                for upload in queue {
                    if let Ok(store) = &store {
                        for link in links.iter().filter(|l| l.upload) {
                            if link.broken.load(Ordering::SeqCst) {
                                continue;
                            }
                            match send(store, link, &upload) {
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
                    queued.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = finished.send(());
            })
            .expect("the upload thread starts");
        Uploader { jobs, done }
    }
}

/// Every blob an uploaded result needs on the remote: the Action and Command, every input
/// Directory and file, and every blob the result names.
fn upload_blobs(
    action: &PreparedAction,
    result: &reapi::ActionResult,
    store: &Store,
    workspace_root: &Path,
) -> Result<Vec<(Digest, Blob)>, StoreError> {
    let mut blobs: Vec<(Digest, Blob)> = vec![
        (
            Digest::of_bytes(&action.encoded_action),
            Blob::Bytes(action.encoded_action.clone()),
        ),
        (
            Digest::of_bytes(&action.encoded_command),
            Blob::Bytes(action.encoded_command.clone()),
        ),
    ];
    let tree = &action.input_tree;
    for dir in std::iter::once(&tree.root_dir).chain(&tree.children) {
        let bytes = dir.encode_to_vec();
        blobs.push((Digest::of_bytes(&bytes), Blob::Bytes(bytes)));
    }
    for (_, info, bytes) in action.input_files() {
        let blob = match bytes {
            InputBytes::Dependency(_) if store.cas().contains(&info.digest) => Blob::Store,
            InputBytes::Workspace(path) | InputBytes::Dependency(path) => {
                Blob::File(path.to_host(workspace_root))
            }
        };
        blobs.push((info.digest, blob));
    }
    let named = result
        .output_files
        .iter()
        .filter_map(|f| f.digest.as_ref())
        .chain(
            result
                .output_directories
                .iter()
                .filter_map(|d| d.tree_digest.as_ref()),
        )
        .chain(result.stdout_digest.as_ref())
        .chain(result.stderr_digest.as_ref());
    for d in named {
        if let Some(d) = Digest::from_reapi(d) {
            blobs.push((d, Blob::Store));
        }
    }
    for dir in &result.output_directories {
        let Some(tree) = dir.tree_digest.as_ref().and_then(Digest::from_reapi) else {
            continue;
        };
        let contents = cairn_store::read_tree(store.cas(), &tree)?;
        blobs.extend(contents.files.values().map(|i| (i.digest, Blob::Store)));
    }
    blobs.sort_by_key(|(d, _)| *d);
    blobs.dedup_by_key(|(d, _)| *d);
    Ok(blobs)
}

/// Sends one result: the blobs the remote lacks, then the result. Returns the bytes sent.
fn send(store: &Store, link: &Link, upload: &Upload) -> Result<u64, RemoteError> {
    let digests: Vec<RemoteDigest> = upload
        .blobs
        .iter()
        .map(|(d, _)| RemoteDigest::from(*d))
        .collect();
    let missing = link.cache.find_missing(&digests)?;
    let mut sent = 0;
    for want in &missing {
        let Ok(index) = digests.binary_search(want) else {
            continue;
        };
        let (digest, blob) = &upload.blobs[index];
        match blob {
            Blob::Bytes(bytes) => link.cache.write_blob(want, &mut bytes.as_slice())?,
            Blob::Store => {
                let mut reader = store.cas().open_blob(digest)?;
                link.cache.write_blob(want, &mut reader)?
            }
            Blob::File(path) => {
                let mut file = std::fs::File::open(path).map_err(|source| StoreError::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })?;
                link.cache.write_blob(want, &mut file)?
            }
        }
        sent += digest.size;
    }
    // REAPI: the result last, once every blob it names is present.
    let result_bytes = upload.result.encoded_len() as u64;
    link.cache
        .put_action_result(&RemoteDigest::from(upload.key), &upload.result)?;
    Ok(sent + result_bytes)
}
