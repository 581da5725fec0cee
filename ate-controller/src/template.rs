//! The ActorTemplate reconciler: prepares a template on an atelet of its pool through a
//! long-running operation, and copies the operation's progress into the template's status.
//!
//! No reconcile waits on slow work: each one starts or polls an operation with short calls and
//! returns a requeue. While bytes move, the template is looked at every couple of seconds;
//! while nothing moves, the interval doubles up to a cap. Only a stall (no progress for the
//! stall window) cancels and restarts an operation, never elapsed time; the node's content
//! store keeps the bytes, so the new attempt continues where the old one stopped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use proto::{
    ActorTemplate, WorkerPool,
    actor_template::{ActorTemplateStatus, TemplatePhase},
    atelet::{
        CancelOperationRequest, GetOperationRequest, Operation, OperationMetadata, Phase,
        PullImageRequest, atelet_client::AteletClient, operation,
    },
    conditions::{self, Desired, Status, reasons, types},
    reference::OperationRef,
};
use sha2::{Digest as _, Sha256};
use tonic::transport::Channel;

use crate::{Config, nodes, progress};

/// How often a template whose operation moves bytes is looked at again.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// The first and the longest wait while an operation is quiet.
const QUIET_FIRST: Duration = Duration::from_secs(1);
const QUIET_CAP: Duration = Duration::from_secs(30);
/// At most one progress-only status write per template in this window.
const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(2);
/// Each gRPC call is short: its deadline.
const RPC_DEADLINE: Duration = Duration::from_secs(5);

/// Why a reconcile failed; the controller retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused a read or a status write.
    #[error("API request for ActorTemplate {template}: {source}")]
    Kube {
        /// `<namespace>/<name>`.
        template: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The atelet could not be reached or refused a call.
    #[error("atelet {node} ({endpoint}) for ActorTemplate {template}: {message}")]
    Atelet {
        /// `<namespace>/<name>`.
        template: String,
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// The gRPC status or transport error.
        message: String,
    },
}

/// State kept between reconciles, per template: what the last poll saw and when status was
/// last written, to pace requeues and status writes.
#[derive(Default)]
pub struct Memory {
    templates: Mutex<HashMap<String, Seen>>,
    channels: Mutex<HashMap<String, Channel>>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    bytes_done: u64,
    quiet_polls: u32,
    last_write: Instant,
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The controller's configuration.
    pub config: Config,
    /// Pacing state.
    pub memory: Memory,
}

/// Reconciles one ActorTemplate; see the module documentation.
///
/// # Errors
///
/// When the API server or the atelet cannot be reached; the controller retries.
pub async fn reconcile(
    template: Arc<ActorTemplate>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = template.namespace().unwrap_or_default();
    let name = format!("{namespace}/{}", template.name_any());
    let generation = template.metadata.generation;
    let status = template.status.clone().unwrap_or_default();
    let current_generation = status.observed_generation == generation;

    // A failed or ready generation waits for a new spec; a Ready one is re-checked rarely.
    if current_generation && status.phase == Some(TemplatePhase::Failed) {
        return Ok(Action::await_change());
    }
    if current_generation && status.phase == Some(TemplatePhase::Ready) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    // An operation of this generation runs: poll it on its node.
    if let Some(operation) = status.operation.clone().filter(|_| current_generation) {
        return poll(&template, &name, status, operation, &ctx).await;
    }

    // Otherwise start one on a live atelet of the template's pool.
    start(&template, &name, status, &ctx).await
}

/// What the template asks a node to do: its first container's image, pulled and unpacked.
fn pull_request(template: &ActorTemplate) -> PullImageRequest {
    PullImageRequest {
        idempotency_key: idempotency_key(template),
        image: template.spec.containers.first().map(|c| c.image.clone()).unwrap_or_default(),
        unpack: true,
    }
}

/// The same template UID and spec always give the same key, so a restarted controller (or a
/// retried reconcile) finds the operation already started instead of starting another.
pub fn idempotency_key(template: &ActorTemplate) -> String {
    let spec = serde_json::to_vec(&template.spec).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(&spec));
    format!("template/{}/{}", template.uid().unwrap_or_default(), &hash[..16])
}

async fn start(
    template: &ActorTemplate,
    name: &str,
    mut status: ActorTemplateStatus,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let generation = template.metadata.generation;
    let kube_error = |source| ReconcileError::Kube { template: name.to_owned(), source };
    let namespace = template.namespace().unwrap_or_default();

    // The pool decides which atelets may take the template.
    let pools: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let pool_name = &template.spec.worker_pool_ref.name;
    let Some(pool) = pools.get_opt(pool_name).await.map_err(kube_error)? else {
        let message = format!(
            "WorkerPool {namespace}/{pool_name} not found; create it or fix spec.workerPoolRef"
        );
        set_waiting(&mut status, generation, reasons::WORKER_POOL_NOT_FOUND, message);
        write_status(ctx, template, name, &status, true).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let nodes = nodes::live(&ctx.client, &ctx.config.namespace).await.map_err(kube_error)?;
    let Some(node) = nodes.into_iter().find(|node| node.matches(&pool.spec.node_selector)) else {
        let message = format!(
            "No atelet of WorkerPool {namespace}/{pool_name} holds a live lease; waiting for one"
        );
        set_waiting(&mut status, generation, reasons::NO_NODE_AVAILABLE, message);
        write_status(ctx, template, name, &status, true).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };

    let request = pull_request(template);
    let mut client = ctx.atelet(&node.endpoint, name, &node.name).await?;
    let operation = client
        .pull_image(with_deadline(request))
        .await
        .map_err(|e| ctx.atelet_error(name, &node.name, &node.endpoint, e.message()))?
        .into_inner();
    tracing::info!(template = %name, node = %node.name, operation = %operation.name, "started preparing the template");

    status.operation = Some(OperationRef { name: operation.name.clone(), node: node.name.clone() });
    status.observed_generation = generation;
    apply_operation(template, &mut status, &operation, &node.name);
    write_status(ctx, template, name, &status, true).await?;
    Ok(Action::requeue(QUIET_FIRST))
}

async fn poll(
    template: &ActorTemplate,
    name: &str,
    mut status: ActorTemplateStatus,
    operation_ref: OperationRef,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let generation = template.metadata.generation;
    let kube_error = |source| ReconcileError::Kube { template: name.to_owned(), source };

    // The node must still be there; if its Lease expired, start over on another.
    let nodes = nodes::live(&ctx.client, &ctx.config.namespace).await.map_err(kube_error)?;
    let Some(node) = nodes.into_iter().find(|n| n.name == operation_ref.node) else {
        let message = format!(
            "Node {} stopped renewing its lease while preparing the template; starting again elsewhere",
            operation_ref.node
        );
        status.operation = None;
        set_waiting(&mut status, generation, reasons::NODE_LOST, message);
        write_status(ctx, template, name, &status, true).await?;
        return Ok(Action::requeue(QUIET_FIRST));
    };
    let mut client = ctx.atelet(&node.endpoint, name, &node.name).await?;
    let request = GetOperationRequest { name: operation_ref.name.clone() };
    let operation = match client.get_operation(with_deadline(request)).await {
        Ok(response) => response.into_inner(),
        Err(status_code) if status_code.code() == tonic::Code::NotFound => {
            // The node lost its records (a new disk): start the work again.
            status.operation = None;
            write_status(ctx, template, name, &status, true).await?;
            return Ok(Action::requeue(QUIET_FIRST));
        }
        Err(error) => {
            return Err(ctx.atelet_error(name, &node.name, &node.endpoint, error.message()));
        }
    };

    // A stall is no progress for the whole window: cancel, and start the same key again.
    let metadata = operation.metadata.clone().unwrap_or_default();
    if !operation.done && stalled(&metadata, ctx.config.stall_window) {
        let message = format!(
            "No progress {} on node {} for {}; cancelled it and started again, keeping the bytes already downloaded",
            stuck_on(&metadata),
            node.name,
            progress::duration(ctx.config.stall_window.as_secs())
        );
        tracing::warn!(template = %name, operation = %operation.name, "operation stalled; restarting it");
        let cancel = CancelOperationRequest { name: operation.name.clone() };
        let _ = client.cancel_operation(with_deadline(cancel)).await;
        client
            .pull_image(with_deadline(pull_request(template)))
            .await
            .map_err(|e| ctx.atelet_error(name, &node.name, &node.endpoint, e.message()))?;
        set_waiting(&mut status, generation, reasons::STALLED, message);
        write_status(ctx, template, name, &status, true).await?;
        return Ok(Action::requeue(QUIET_FIRST));
    }

    // A cancelled or transiently failed operation is started again under the same key.
    let retry = matches!(&operation.result, Some(operation::Result::Error(e)) if e.retryable);
    if operation.done && retry {
        client
            .pull_image(with_deadline(pull_request(template)))
            .await
            .map_err(|e| ctx.atelet_error(name, &node.name, &node.endpoint, e.message()))?;
        return Ok(Action::requeue(QUIET_FIRST));
    }

    // Write on a phase change at once; on a percentage point at most every couple of seconds;
    // never for rate or ETA alone, so that many templates do not flood the API server.
    let phase_before = status.phase;
    let percent_before =
        status.progress.as_ref().and_then(|p| percent_of(p.bytes_done, p.bytes_total));
    let stall = stall_in_force(&status);
    apply_operation(template, &mut status, &operation, &node.name);
    // A reported stall stays in status until bytes move past where they stopped.
    if let Some((stopped_at, message)) =
        stall.filter(|(at, _)| !operation.done && metadata.bytes_done <= *at)
    {
        set_waiting(&mut status, generation, reasons::STALLED, message);
        if let Some(progress) = status.progress.as_mut() {
            progress.bytes_done = progress.bytes_done.max(stopped_at);
        }
    }
    let phase_changed = status.phase != phase_before || operation.done;
    let progressed = percent_of(metadata.bytes_done, metadata.bytes_total) != percent_before;
    let write = phase_changed || (progressed && ctx.memory.may_write(name));
    write_status(ctx, template, name, &status, write).await?;

    if operation.done {
        ctx.memory.forget(name);
        return Ok(if status.phase == Some(TemplatePhase::Ready) {
            Action::requeue(Duration::from_secs(300))
        } else {
            Action::await_change()
        });
    }
    Ok(Action::requeue(ctx.memory.next_poll(name, metadata.bytes_done)))
}

/// Copies an operation's state into the template's status: phase, progress and conditions.
fn apply_operation(
    template: &ActorTemplate,
    status: &mut ActorTemplateStatus,
    operation: &Operation,
    node: &str,
) {
    let generation = template.metadata.generation;
    let now = Timestamp::now();
    let metadata = operation.metadata.clone().unwrap_or_default();
    let image = pull_request(template).image;
    let short = short_reference(&image);

    let (phase, image_ready, snapshot, ready) = match &operation.result {
        Some(operation::Result::Response(_)) => {
            let pulled = format!(
                "Pulled {short} ({} MB) and unpacked it on node {node}",
                metadata.bytes_total.div_ceil(1_000_000)
            );
            status.operation = None;
            status.progress = None;
            (
                TemplatePhase::Ready,
                (Status::True, reasons::SUCCEEDED, pulled),
                (
                    Status::False,
                    reasons::SNAPSHOTS_NOT_AVAILABLE,
                    "Golden snapshots are not built by this control plane yet; actors use the prepared root filesystem".to_owned(),
                ),
                (
                    Status::True,
                    reasons::ROOTFS_PREPARED,
                    format!("Root filesystem of {short} prepared on node {node} (no golden snapshot yet)"),
                ),
            )
        }
        Some(operation::Result::Error(error)) => {
            let message = format!("{} Fix the template's image and apply it again.", error.message);
            status.operation = None;
            status.progress = None;
            let reason = failure_reason(&error.reason);
            (
                TemplatePhase::Failed,
                (Status::False, reason, message.clone()),
                (Status::False, reasons::FAILED, "The image could not be prepared".to_owned()),
                (Status::False, reason, message),
            )
        }
        None => {
            let progress = progress::from_metadata(&metadata);
            let (reason, message) = match metadata.phase() {
                Phase::Pulling => (
                    reasons::PULLING_IMAGE,
                    format!(
                        "Pulling {short}: {}% ({})",
                        progress::percent(&metadata).unwrap_or(0),
                        progress::detail(&metadata)
                    ),
                ),
                Phase::Unpacking => {
                    (reasons::UNPACKING_IMAGE, format!("Unpacking {short} on node {node}"))
                }
                Phase::Resolving => {
                    (reasons::RESOLVING_IMAGE, format!("Resolving {short} on node {node}"))
                }
                _ => (reasons::PENDING, format!("Queued on node {node}")),
            };
            status.progress = Some(progress);
            (
                TemplatePhase::Preparing,
                (Status::False, reason, message.clone()),
                (Status::False, reasons::PENDING, "Waiting for the image".to_owned()),
                (Status::False, reason, message),
            )
        }
    };

    status.phase = Some(phase);
    status.observed_generation = generation;
    for (type_, (condition_status, reason, message)) in [
        (types::IMAGE_READY, image_ready),
        (types::GOLDEN_SNAPSHOT_READY, snapshot),
        (types::READY, ready),
    ] {
        let desired = Desired { type_, status: condition_status, reason, message };
        conditions::set(&mut status.conditions, desired, generation, now);
    }
}

/// The condition reason for an operation's failure reason: known ones keep their name.
fn failure_reason(reason: &str) -> &'static str {
    match reason {
        "ImageNotFound" => reasons::IMAGE_NOT_FOUND,
        "Unauthorized" => reasons::UNAUTHORIZED,
        "NoMatchingPlatform" => reasons::NO_MATCHING_PLATFORM,
        _ => reasons::FAILED,
    }
}

/// Sets the template Pending with `Ready=False` for a reason that is not an operation's.
fn set_waiting(
    status: &mut ActorTemplateStatus,
    generation: Option<i64>,
    reason: &str,
    message: String,
) {
    let now = Timestamp::now();
    status.observed_generation = generation;
    if status.phase.is_none() || status.phase == Some(TemplatePhase::Failed) {
        status.phase = Some(TemplatePhase::Pending);
    }
    let desired = Desired { type_: types::READY, status: Status::False, reason, message };
    conditions::set(&mut status.conditions, desired, generation, now);
}

/// The bytes done and the message of a stall reported earlier and still in status.
fn stall_in_force(status: &ActorTemplateStatus) -> Option<(u64, String)> {
    let ready = conditions::find(&status.conditions, types::READY)?;
    (ready.reason == reasons::STALLED)
        .then(|| (status.progress.as_ref().map_or(0, |p| p.bytes_done), ready.message.clone()))
}

/// Whether the operation's last progress is older than the window.
fn stalled(metadata: &OperationMetadata, window: Duration) -> bool {
    let Some(last) = metadata.last_progress_time else { return false };
    let Ok(last) = SystemTime::try_from(last) else { return false };
    SystemTime::now().duration_since(last).is_ok_and(|quiet| quiet > window)
}

/// What a stalled operation is stuck on, for the condition message.
fn stuck_on(metadata: &OperationMetadata) -> String {
    match progress::percent(metadata) {
        Some(percent) => format!(
            "{} {} at {percent}%",
            progress::step(metadata.phase()).to_lowercase(),
            short_reference(&metadata.subject)
        ),
        None => format!(
            "{} {}",
            progress::step(metadata.phase()).to_lowercase(),
            short_reference(&metadata.subject)
        ),
    }
}

/// `registry/repo@sha256:d52b…`: enough to recognise, short enough for a status line.
fn short_reference(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((repository, hex)) if hex.len() > 4 => format!("{repository}@sha256:{}…", &hex[..4]),
        _ => image.to_owned(),
    }
}

fn percent_of(done: u64, total: u64) -> Option<u64> {
    (total > 0).then(|| done.min(total) * 100 / total)
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_DEADLINE);
    request
}

/// Writes the status through the status subresource when `write` is set and it changed.
async fn write_status(
    ctx: &Context,
    template: &ActorTemplate,
    name: &str,
    status: &ActorTemplateStatus,
    write: bool,
) -> Result<(), ReconcileError> {
    if !write || template.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ActorTemplate> =
        Api::namespaced(ctx.client.clone(), &template.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "ate.dev/v1alpha1",
        "kind": "ActorTemplate",
        "status": status,
    });
    api.patch_status(
        &template.name_any(),
        &PatchParams::apply("ate-controller").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| ReconcileError::Kube { template: name.to_owned(), source })?;
    ctx.memory.wrote(name);
    Ok(())
}

impl Context {
    /// A client for the atelet at `endpoint`, reusing its connection.
    async fn atelet(
        &self,
        endpoint: &str,
        template: &str,
        node: &str,
    ) -> Result<AteletClient<Channel>, ReconcileError> {
        let cached =
            self.memory.channels.lock().unwrap_or_else(|e| e.into_inner()).get(endpoint).cloned();
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let channel = Channel::from_shared(format!("http://{endpoint}"))
                    .map_err(|e| self.atelet_error(template, node, endpoint, &e.to_string()))?
                    .connect_timeout(RPC_DEADLINE)
                    .connect_lazy();
                self.memory
                    .channels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(endpoint.to_owned(), channel.clone());
                channel
            }
        };
        Ok(AteletClient::new(channel))
    }

    fn atelet_error(
        &self,
        template: &str,
        node: &str,
        endpoint: &str,
        message: &str,
    ) -> ReconcileError {
        ReconcileError::Atelet {
            template: template.to_owned(),
            node: node.to_owned(),
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        }
    }
}

impl Memory {
    /// When to look again: soon while bytes move; doubling from one second to the cap, with
    /// jitter, while they do not.
    fn next_poll(&self, template: &str, bytes_done: u64) -> Duration {
        let mut templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        let seen = templates.entry(template.to_owned()).or_insert(Seen {
            bytes_done,
            quiet_polls: 0,
            last_write: Instant::now() - MIN_WRITE_INTERVAL,
        });
        let moved = bytes_done > seen.bytes_done;
        seen.bytes_done = bytes_done;
        if moved {
            seen.quiet_polls = 0;
            return PROGRESS_INTERVAL;
        }
        seen.quiet_polls += 1;
        let backoff = QUIET_FIRST * 2u32.saturating_pow(seen.quiet_polls.min(6) - 1);
        let jitter = Duration::from_millis(
            u64::from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.subsec_millis())
                    .unwrap_or(0),
            ) % 250,
        );
        backoff.min(QUIET_CAP) + jitter
    }

    fn may_write(&self, template: &str) -> bool {
        let templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        templates.get(template).is_none_or(|seen| seen.last_write.elapsed() >= MIN_WRITE_INTERVAL)
    }

    fn wrote(&self, template: &str) {
        let mut templates = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        let seen = templates.entry(template.to_owned()).or_insert(Seen {
            bytes_done: 0,
            quiet_polls: 0,
            last_write: Instant::now(),
        });
        seen.last_write = Instant::now();
    }

    fn forget(&self, template: &str) {
        self.templates.lock().unwrap_or_else(|e| e.into_inner()).remove(template);
    }
}
