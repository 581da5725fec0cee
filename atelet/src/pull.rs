//! Pulling an image into the content store: one download per digest on the node, shared by
//! every pull that needs it, resumed from the bytes on disk after any interruption.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    digest::Digest,
    registry::{Descriptor, Registry, RegistryError, ResolvedImage},
    store::{Store, StoreError},
};

/// How many attempts in a row may fail without moving a byte before a blob download gives up.
const ATTEMPTS_WITHOUT_PROGRESS: u32 = 8;

/// Why a pull failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PullError {
    /// The registry refused or kept failing.
    #[error(transparent)]
    Registry(Arc<RegistryError>),
    /// The content store could not hold or verify a blob.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The pull was cancelled.
    #[error("the pull was cancelled")]
    Cancelled,
}

impl PullError {
    /// Whether trying again, unchanged, can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PullError::Registry(error) => error.is_retryable(),
            PullError::Store(error) => matches!(**error, StoreError::Io { .. }),
            PullError::Cancelled => true,
        }
    }

    /// The CamelCase reason a condition reports for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::Registry(error) => error.reason(),
            PullError::Store(error) => match **error {
                StoreError::DigestMismatch { .. } | StoreError::TooLarge { .. } => "DigestMismatch",
                _ => "ContentStoreFailed",
            },
            PullError::Cancelled => "Cancelled",
        }
    }
}

impl From<RegistryError> for PullError {
    fn from(error: RegistryError) -> PullError {
        PullError::Registry(Arc::new(error))
    }
}

impl From<StoreError> for PullError {
    fn from(error: StoreError) -> PullError {
        PullError::Store(Arc::new(error))
    }
}

/// Bytes moved by a pull so far, readable while it runs.
#[derive(Debug, Default)]
pub struct PullProgress {
    /// Bytes of the image (config and layers, as stored) on disk.
    pub done: AtomicU64,
    /// Bytes of the image in all; 0 until the manifest is resolved.
    pub total: AtomicU64,
}

/// One blob download in flight, shared by every pull that needs the blob. The download stops
/// when the last pull waiting for it lets go.
struct Download {
    on_disk: Arc<AtomicU64>,
    result: watch::Receiver<Option<Result<(), PullError>>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pulls images into the node's content store.
pub struct Puller {
    store: Store,
    registry: Arc<Registry>,
    downloads: Mutex<HashMap<Digest, Weak<Download>>>,
    slots: Arc<Semaphore>,
}

impl Puller {
    /// A puller writing to `store`, reading from `registry`, running at most
    /// `parallel_downloads` blob downloads at once on the node.
    pub fn new(store: Store, registry: Registry, parallel_downloads: usize) -> Puller {
        Puller {
            store,
            registry: Arc::new(registry),
            downloads: Mutex::default(),
            slots: Arc::new(Semaphore::new(parallel_downloads.max(1))),
        }
    }

    /// The content store pulls write to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves `reference` and makes sure its config and layers are committed in the store,
    /// downloading what is missing. Returns the resolved image.
    ///
    /// # Errors
    ///
    /// The first terminal failure of any blob, or [`PullError::Cancelled`].
    pub async fn pull(
        &self,
        reference: &str,
        progress: &PullProgress,
        cancel: &CancellationToken,
    ) -> Result<ResolvedImage, PullError> {
        let image = tokio::select! {
            image = self.resolve_with_retries(reference) => image?,
            () = cancel.cancelled() => return Err(PullError::Cancelled),
        };
        progress.total.store(image.total_bytes(), Ordering::Relaxed);

        let blobs: Vec<Descriptor> =
            std::iter::once(image.config.clone()).chain(image.layers.iter().cloned()).collect();
        let downloads: Vec<(Descriptor, Option<Arc<Download>>)> = {
            let mut list = Vec::with_capacity(blobs.len());
            for blob in blobs {
                let download = if self.store.contains(&blob.digest).await {
                    None
                } else {
                    Some(self.download(reference, &blob))
                };
                list.push((blob, download));
            }
            list
        };

        let report = || {
            let done: u64 = downloads
                .iter()
                .map(|(blob, download)| match download {
                    None => blob.size,
                    Some(download) => download.on_disk.load(Ordering::Relaxed).min(blob.size),
                })
                .sum();
            progress.done.store(done, Ordering::Relaxed);
        };
        report();

        let wait_all = async {
            for (_, download) in downloads.iter() {
                let Some(download) = download else { continue };
                let mut result = download.result.clone();
                let outcome = result
                    .wait_for(Option::is_some)
                    .await
                    .map(|r| r.clone().expect("waited for a result"))
                    .unwrap_or(Err(PullError::Cancelled));
                outcome?;
            }
            Ok::<(), PullError>(())
        };
        tokio::pin!(wait_all);
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                outcome = &mut wait_all => {
                    report();
                    outcome?;
                    return Ok(image);
                }
                _ = ticker.tick() => report(),
                () = cancel.cancelled() => return Err(PullError::Cancelled),
            }
        }
    }

    async fn resolve_with_retries(&self, reference: &str) -> Result<ResolvedImage, PullError> {
        let mut backoff = Backoff::default();
        loop {
            match self.registry.resolve(reference).await {
                Ok(image) => return Ok(image),
                Err(error)
                    if error.is_retryable() && backoff.attempts < ATTEMPTS_WITHOUT_PROGRESS =>
                {
                    tracing::warn!(%reference, %error, "resolving failed; retrying");
                    backoff.wait().await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Returns the download of `blob` in flight, starting it if none is.
    fn download(&self, reference: &str, blob: &Descriptor) -> Arc<Download> {
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        downloads.retain(|_, download| download.strong_count() > 0);
        if let Some(download) = downloads.get(&blob.digest).and_then(Weak::upgrade) {
            return download;
        }

        let on_disk = Arc::new(AtomicU64::new(0));
        let (sender, result) = watch::channel(None);
        let task = tokio::spawn(fetch_blob(
            self.store.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.slots),
            reference.to_owned(),
            blob.clone(),
            Arc::clone(&on_disk),
            sender,
        ));
        let download = Arc::new(Download { on_disk, result, task: task.abort_handle() });
        downloads.insert(blob.digest.clone(), Arc::downgrade(&download));
        download
    }
}

/// Downloads one blob into the store, retrying transient faults with backoff from the bytes
/// already on disk, and publishes the outcome.
async fn fetch_blob(
    store: Store,
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    reference: String,
    blob: Descriptor,
    on_disk: Arc<AtomicU64>,
    result: watch::Sender<Option<Result<(), PullError>>>,
) {
    let _slot = slots.acquire_owned().await.expect("the semaphore is never closed");
    let mut backoff = Backoff::default();
    let outcome = loop {
        let before = store.bytes_present(&blob.digest).await;
        match fetch_attempt(&store, &registry, &reference, &blob, &on_disk).await {
            Ok(()) => break Ok(()),
            Err(error) if error.is_retryable() => {
                if store.bytes_present(&blob.digest).await > before {
                    backoff = Backoff::default();
                }
                if backoff.attempts >= ATTEMPTS_WITHOUT_PROGRESS {
                    break Err(error);
                }
                tracing::warn!(digest = %blob.digest, %error, "blob download interrupted; resuming");
                backoff.wait().await;
            }
            Err(error) => break Err(error),
        }
    };
    match &outcome {
        Ok(()) => tracing::info!(digest = %blob.digest, bytes = blob.size, "blob committed"),
        Err(error) => tracing::error!(digest = %blob.digest, %error, "blob download failed"),
    }
    let _ = result.send(Some(outcome));
}

async fn fetch_attempt(
    store: &Store,
    registry: &Registry,
    reference: &str,
    blob: &Descriptor,
    on_disk: &AtomicU64,
) -> Result<(), PullError> {
    if store.contains(&blob.digest).await {
        on_disk.store(blob.size, Ordering::Relaxed);
        return Ok(());
    }
    let mut writer = store.writer(&blob.digest, blob.size).await?;
    on_disk.store(writer.offset(), Ordering::Relaxed);

    if writer.offset() < blob.size {
        let mut response = registry.fetch(reference, blob, writer.offset()).await?;
        // A registry that ignores `Range` sends the blob from byte 0: skip what is on disk.
        let mut skip = if response.from_offset { 0 } else { writer.offset() };
        while let Some(chunk) = response.stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Transient {
                what: format!("blob {}", blob.digest),
                message: e.to_string(),
            })?;
            let chunk = if skip > 0 {
                let skipped = skip.min(chunk.len() as u64);
                skip -= skipped;
                chunk.slice(usize::try_from(skipped).unwrap_or(chunk.len())..)
            } else {
                chunk
            };
            writer.write(&chunk).await?;
            on_disk.store(writer.offset(), Ordering::Relaxed);
        }
    }

    match writer.commit().await {
        Ok(_) => Ok(()),
        Err(StoreError::Incomplete { .. }) => Err(RegistryError::Transient {
            what: format!("blob {}", blob.digest),
            message: "the response ended early".into(),
        }
        .into()),
        Err(error) => Err(error.into()),
    }
}

/// Exponential backoff between retries: 250 ms doubling to 30 s, with jitter.
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    async fn wait(&mut self) {
        let base = Duration::from_millis(250) * 2u32.saturating_pow(self.attempts.min(7));
        let base = base.min(Duration::from_secs(30));
        let jitter = base.mul_f64(rand_fraction() * 0.25);
        self.attempts += 1;
        tokio::time::sleep(base + jitter).await;
    }
}

/// A number in [0, 1) from the clock: enough to spread retries apart, without a dependency.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}
