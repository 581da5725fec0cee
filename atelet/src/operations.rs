//! Long-running operations: slow work started by a short call, run in the background,
//! observed by polling, and recorded on the node's disk so that it survives restarts.
//!
//! An operation's name is derived from its idempotency key, so a repeated start — even after
//! a restart of atelet — finds the same operation. Starting a key whose operation failed or
//! was cancelled runs it again under the same name: the content store keeps the bytes, so the
//! new attempt continues where the last one stopped.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use prost::Message as _;
use proto::atelet::{
    ImagePulled, Operation, OperationError, OperationKind, OperationMetadata, OperationResponse,
    Phase, PullImageRequest, operation, operation_response,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    digest::Digest,
    pull::{PullError, PullProgress, Puller},
    rootfs,
};

/// How often a running operation's progress, rate and ETA are refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// The longest a `WaitOperation` call is held open.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Why an operation call was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperationsError {
    /// No operation has that name on this node.
    #[error("no operation named {0} on this node")]
    NotFound(String),
    /// The request is malformed; the message names the field.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The record could not be written to disk.
    #[error("recording operation {name} in {path}: {source}")]
    Record {
        /// The operation.
        name: String,
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What an operation was asked to do, as recorded on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Request {
    /// A [`PullImageRequest`], protobuf-encoded then base64.
    PullImage(String),
}

/// An operation's file on disk: the request and the latest state, both protobuf, base64'd.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    request: Request,
    operation: String,
}

struct Entry {
    request: Request,
    state: Mutex<Operation>,
    changes: watch::Sender<u64>,
    cancel: Mutex<CancellationToken>,
}

impl Entry {
    fn snapshot(&self) -> Operation {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The operations of one node.
#[derive(Clone)]
pub struct Operations {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    node: String,
    puller: Arc<Puller>,
    rootfs_dir: PathBuf,
    unpacker: rootfs::Unpacker,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Operations {
    /// Opens the operations recorded under `state_dir/operations`, and resumes every one that
    /// had not finished.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or read. Unreadable records are skipped with a
    /// warning, not fatal.
    pub async fn open(
        state_dir: &Path,
        node: &str,
        puller: Arc<Puller>,
    ) -> Result<Operations, OperationsError> {
        let dir = state_dir.join("operations");
        let record_error =
            |source| OperationsError::Record { name: "*".into(), path: dir.clone(), source };
        tokio::fs::create_dir_all(&dir).await.map_err(record_error)?;
        let operations = Operations {
            inner: Arc::new(Inner {
                dir: dir.clone(),
                node: node.to_owned(),
                puller,
                rootfs_dir: state_dir.join("rootfs"),
                unpacker: rootfs::Unpacker::default(),
                entries: Mutex::default(),
            }),
        };

        let mut listing = tokio::fs::read_dir(&dir).await.map_err(record_error)?;
        while let Some(file) = listing.next_entry().await.map_err(record_error)? {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match load_record(&path).await {
                Ok((request, operation)) => {
                    let unfinished = !operation.done;
                    let name = operation.name.clone();
                    let entry = operations.insert(request, operation);
                    if unfinished {
                        tracing::info!(operation = %name, "resuming operation after restart");
                        operations.run(entry);
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable operation record")
                }
            }
        }
        Ok(operations)
    }

    fn insert(&self, request: Request, operation: Operation) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            request,
            state: Mutex::new(operation.clone()),
            changes: watch::channel(0).0,
            cancel: Mutex::new(CancellationToken::new()),
        });
        self.lock().insert(operation.name, Arc::clone(&entry));
        entry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, OperationsError> {
        self.lock().get(name).cloned().ok_or_else(|| OperationsError::NotFound(name.to_owned()))
    }

    /// Starts pulling (and optionally unpacking) an image, or returns the operation already
    /// started with the same idempotency key.
    ///
    /// # Errors
    ///
    /// [`OperationsError::InvalidArgument`] for a missing key or an image not pinned by digest.
    pub async fn start_pull(
        &self,
        request: PullImageRequest,
    ) -> Result<Operation, OperationsError> {
        if request.idempotency_key.is_empty() {
            return Err(OperationsError::InvalidArgument(
                "idempotency_key is required: derive it from what the pull is for".into(),
            ));
        }
        crate::registry::Registry::parse(&request.image)
            .map_err(|e| OperationsError::InvalidArgument(format!("image: {e}")))?;

        let name = format!(
            "operations/pull-{}",
            &Digest::of(request.idempotency_key.as_bytes()).hex()[..20]
        );
        let existing = self.lock().get(&name).cloned();
        let entry = match existing {
            Some(entry) => {
                let current = entry.snapshot();
                let retry =
                    current.done && !matches!(current.result, Some(operation::Result::Response(_)));
                if !retry {
                    return Ok(current);
                }
                tracing::info!(operation = %name, "starting again an operation that did not succeed");
                entry
            }
            None => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(request.encode_to_vec());
                self.insert(
                    Request::PullImage(encoded),
                    Operation { name: name.clone(), ..Default::default() },
                )
            }
        };

        {
            let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
            *state = Operation {
                name: name.clone(),
                done: false,
                metadata: Some(OperationMetadata {
                    kind: OperationKind::PullImage as i32,
                    idempotency_key: request.idempotency_key.clone(),
                    phase: Phase::Queued as i32,
                    subject: request.image.clone(),
                    start_time: Some(SystemTime::now().into()),
                    last_progress_time: Some(SystemTime::now().into()),
                    node: self.inner.node.clone(),
                    message: format!("Queued pull of {}", request.image),
                    ..Default::default()
                }),
                result: None,
            };
        }
        self.persist(&entry).await?;
        self.run(Arc::clone(&entry));
        Ok(entry.snapshot())
    }

    /// The latest state of an operation.
    ///
    /// # Errors
    ///
    /// [`OperationsError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Operation, OperationsError> {
        Ok(self.entry(name)?.snapshot())
    }

    /// Waits until the operation is done or changes phase or progress, at most `timeout`
    /// (capped at [`MAX_WAIT`]), and returns its latest state.
    ///
    /// # Errors
    ///
    /// [`OperationsError::NotFound`].
    pub async fn wait(&self, name: &str, timeout: Duration) -> Result<Operation, OperationsError> {
        let entry = self.entry(name)?;
        let mut changes = entry.changes.subscribe();
        if !entry.snapshot().done {
            let _ = tokio::time::timeout(timeout.min(MAX_WAIT), changes.changed()).await;
        }
        Ok(entry.snapshot())
    }

    /// Every operation on the node, newest first.
    pub fn list(&self, unfinished_only: bool) -> Vec<Operation> {
        let mut all: Vec<Operation> = self
            .lock()
            .values()
            .map(|entry| entry.snapshot())
            .filter(|op| !(unfinished_only && op.done))
            .collect();
        let started = |op: &Operation| {
            op.metadata.as_ref().and_then(|m| m.start_time).map(|t| (t.seconds, t.nanos))
        };
        all.sort_by_key(|op| std::cmp::Reverse(started(op)));
        all
    }

    /// Asks an operation to stop; a finished operation is returned unchanged.
    ///
    /// # Errors
    ///
    /// [`OperationsError::NotFound`].
    pub async fn cancel(&self, name: &str) -> Result<Operation, OperationsError> {
        let entry = self.entry(name)?;
        if !entry.snapshot().done {
            entry.cancel.lock().unwrap_or_else(|e| e.into_inner()).cancel();
            let mut changes = entry.changes.subscribe();
            // The runner records the cancellation at once; wait for it, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while !entry.snapshot().done {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        Ok(entry.snapshot())
    }

    async fn persist(&self, entry: &Entry) -> Result<(), OperationsError> {
        let operation = entry.snapshot();
        let record = Record {
            request: entry.request.clone(),
            operation: base64::engine::general_purpose::STANDARD.encode(operation.encode_to_vec()),
        };
        let file = self.inner.dir.join(format!("{}.json", file_stem(&operation.name)));
        let partial = file.with_extension("json.partial");
        let bytes = serde_json::to_vec(&record).expect("a record serializes");
        let write = async {
            tokio::fs::write(&partial, bytes).await?;
            tokio::fs::rename(&partial, &file).await
        };
        write.await.map_err(|source| OperationsError::Record {
            name: operation.name.clone(),
            path: file.clone(),
            source,
        })
    }

    fn update(&self, entry: &Entry, change: impl FnOnce(&mut Operation)) {
        {
            let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut state);
        }
        entry.changes.send_modify(|version| *version += 1);
    }

    /// Runs the operation's work in the background.
    fn run(&self, entry: Arc<Entry>) {
        let cancel = CancellationToken::new();
        *entry.cancel.lock().unwrap_or_else(|e| e.into_inner()) = cancel.clone();
        let operations = self.clone();
        tokio::spawn(async move {
            let Request::PullImage(encoded) = &entry.request;
            let request = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| PullImageRequest::decode(bytes.as_slice()).ok())
                .unwrap_or_default();
            let name = entry.snapshot().name;
            let span = tracing::info_span!("operation", operation = %name, image = %request.image);
            let outcome = tracing::Instrument::instrument(
                operations.pull_image(&entry, &request, &cancel),
                span,
            )
            .await;
            operations.finish(&entry, outcome);
            if let Err(error) = operations.persist(&entry).await {
                tracing::error!(%error, "operation finished but its record could not be written");
            }
        });
    }

    async fn pull_image(
        &self,
        entry: &Entry,
        request: &PullImageRequest,
        cancel: &CancellationToken,
    ) -> Result<ImagePulled, OperationFailure> {
        self.set_phase(entry, Phase::Resolving, format!("Resolving {}", request.image));
        let _ = self.persist(entry).await;
        let progress = Arc::new(PullProgress::default());
        let meter = self.watch_progress(entry, Arc::clone(&progress), &request.image);

        let pulled = self.inner.puller.pull(&request.image, &progress, cancel).await;
        meter.abort();
        let image = pulled?;

        let mut rootfs_path = String::new();
        if request.unpack {
            self.set_phase(entry, Phase::Unpacking, format!("Unpacking {}", request.image));
            let _ = self.persist(entry).await;
            let target = self.inner.rootfs_dir.join(image.manifest_digest.hex());
            let store = self.inner.puller.store().clone();
            let unpacking = self.inner.unpacker.unpack(&store, &image, &target);
            rootfs_path = tokio::select! {
                path = unpacking => path?.display().to_string(),
                () = cancel.cancelled() => return Err(OperationFailure::Pull(PullError::Cancelled)),
            };
        }

        Ok(ImagePulled {
            manifest_digest: image.manifest_digest.to_string(),
            bytes: image.total_bytes(),
            rootfs: rootfs_path,
        })
    }

    fn set_phase(&self, entry: &Entry, phase: Phase, message: String) {
        self.update(entry, |op| {
            let metadata = op.metadata.get_or_insert_with(Default::default);
            metadata.phase = phase as i32;
            metadata.message = message;
            metadata.last_progress_time = Some(SystemTime::now().into());
        });
    }

    /// Copies a pull's progress into the operation's metadata, with a smoothed rate and ETA,
    /// until aborted.
    fn watch_progress(
        &self,
        entry: &Entry,
        progress: Arc<PullProgress>,
        image: &str,
    ) -> tokio::task::AbortHandle {
        let operations = self.clone();
        let name = entry.snapshot().name;
        let image = image.to_owned();
        tokio::spawn(async move {
            let Ok(entry) = operations.entry(&name) else { return };
            let mut rate = RateMeter::default();
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            let mut pulling = false;
            loop {
                ticker.tick().await;
                let total = progress.total.load(Ordering::Relaxed);
                let done = progress.done.load(Ordering::Relaxed);
                if total == 0 {
                    continue;
                }
                let moved = rate.sample(done);
                let phase_changed = !pulling;
                pulling = true;
                operations.update(&entry, |op| {
                    let metadata = op.metadata.get_or_insert_with(Default::default);
                    metadata.phase = Phase::Pulling as i32;
                    metadata.bytes_done = done;
                    metadata.bytes_total = total;
                    metadata.bytes_per_second = rate.bytes_per_second();
                    metadata.eta_seconds = rate.eta_seconds(total.saturating_sub(done));
                    metadata.message = format!("Pulling {image}");
                    if moved || phase_changed {
                        metadata.last_progress_time = Some(SystemTime::now().into());
                    }
                });
                if phase_changed {
                    let _ = operations.persist(&entry).await;
                }
            }
        })
        .abort_handle()
    }

    fn finish(&self, entry: &Entry, outcome: Result<ImagePulled, OperationFailure>) {
        self.update(entry, |op| {
            op.done = true;
            let metadata = op.metadata.get_or_insert_with(Default::default);
            metadata.end_time = Some(SystemTime::now().into());
            metadata.eta_seconds = None;
            match outcome {
                Ok(pulled) => {
                    tracing::info!(manifest = %pulled.manifest_digest, bytes = pulled.bytes, "image pulled");
                    metadata.phase = Phase::Succeeded as i32;
                    metadata.bytes_total = metadata.bytes_total.max(pulled.bytes);
                    metadata.bytes_done = metadata.bytes_total;
                    metadata.message = format!("Pulled {}", metadata.subject);
                    op.result = Some(operation::Result::Response(OperationResponse {
                        response: Some(operation_response::Response::ImagePulled(pulled)),
                    }));
                }
                Err(OperationFailure::Pull(PullError::Cancelled)) => {
                    tracing::info!("operation cancelled");
                    metadata.phase = Phase::Cancelled as i32;
                    metadata.message = "Cancelled; the bytes downloaded so far are kept".into();
                    op.result = Some(operation::Result::Error(OperationError {
                        reason: "Cancelled".into(),
                        message: metadata.message.clone(),
                        retryable: true,
                    }));
                }
                Err(failure) => {
                    tracing::error!(error = %failure, "operation failed");
                    metadata.phase = Phase::Failed as i32;
                    metadata.message = failure.to_string();
                    op.result = Some(operation::Result::Error(OperationError {
                        reason: failure.reason().into(),
                        message: failure.to_string(),
                        retryable: failure.is_retryable(),
                    }));
                }
            }
        });
    }
}

/// Why an operation's work failed.
#[derive(Debug, thiserror::Error)]
enum OperationFailure {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Unpack(#[from] rootfs::RootfsError),
}

impl OperationFailure {
    fn reason(&self) -> &'static str {
        match self {
            OperationFailure::Pull(error) => error.reason(),
            OperationFailure::Unpack(error) => error.reason(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            OperationFailure::Pull(error) => error.is_retryable(),
            OperationFailure::Unpack(_) => false,
        }
    }
}

/// An exponentially smoothed transfer rate.
#[derive(Debug, Default)]
struct RateMeter {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl RateMeter {
    /// Records the bytes done now; returns whether they grew since the last sample.
    fn sample(&mut self, done: u64) -> bool {
        let now = Instant::now();
        let moved = match self.last {
            Some((at, before)) => {
                let seconds = now.duration_since(at).as_secs_f64();
                if seconds > 0.0 {
                    let instant = done.saturating_sub(before) as f64 / seconds;
                    self.rate =
                        if self.rate == 0.0 { instant } else { 0.3 * instant + 0.7 * self.rate };
                }
                done > before
            }
            None => false,
        };
        self.last = Some((now, done));
        moved
    }

    fn bytes_per_second(&self) -> f64 {
        self.rate
    }

    fn eta_seconds(&self, remaining: u64) -> Option<u64> {
        (self.rate >= 1.0).then(|| (remaining as f64 / self.rate).ceil() as u64)
    }
}

fn file_stem(name: &str) -> String {
    name.replace('/', "_")
}

async fn load_record(path: &Path) -> Result<(Request, Operation), String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let operation = base64::engine::general_purpose::STANDARD
        .decode(&record.operation)
        .map_err(|e| e.to_string())?;
    let operation = Operation::decode(operation.as_slice()).map_err(|e| e.to_string())?;
    Ok((record.request, operation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_follows_the_bytes_moved_and_gives_an_eta() {
        let mut meter = RateMeter::default();
        assert!(!meter.sample(0), "a first sample has nothing to compare with");
        assert_eq!(meter.eta_seconds(100), None);

        meter.last = meter.last.map(|(at, done)| (at - Duration::from_secs(1), done));
        assert!(meter.sample(1000));

        let rate = meter.bytes_per_second();
        assert!((900.0..=1100.0).contains(&rate), "{rate}");
        assert_eq!(meter.eta_seconds(5000), Some((5000.0 / rate).ceil() as u64));
    }

    #[test]
    fn no_new_bytes_is_no_progress() {
        let mut meter = RateMeter::default();
        meter.sample(500);
        assert!(!meter.sample(500));
    }
}
