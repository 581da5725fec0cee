//! The ActorTemplate reconciler: prepares a template on an atelet of its pool through a
//! long-running operation, and copies the operation's progress into the template's status.
//!
//! No reconcile waits on slow work: each one starts or polls an operation with short calls and
//! returns a requeue. While bytes move, the template is looked at every couple of seconds;
//! while nothing moves, the interval doubles up to a cap. Only a stall (no progress for the
//! stall window) cancels and restarts an operation, never elapsed time; the node's content
//! store keeps the bytes, so the new attempt continues where the old one stopped.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, runtime::controller::Action};
use proto::{
    ActorTemplate, WorkerPool,
    actor_template::{ActorTemplateStatus, TemplatePhase},
    atelet::{CancelOperationRequest, GetOperationRequest, Operation, PullImageRequest, operation},
    conditions::{self, Desired, Status, reasons, types},
    reference::OperationRef,
};
use sha2::{Digest as _, Sha256};

use crate::{Context, ReconcileError, atelets::with_deadline, nodes, pacing, progress};

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
    let kube_error = |source| ReconcileError::kube(&object(name), source);
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
    let mut client = ctx.atelets.client(&node, &object(name))?;
    let operation = client
        .pull_image(with_deadline(request))
        .await
        .map_err(|e| ReconcileError::atelet(&object(name), &node, e.message()))?
        .into_inner();
    tracing::info!(template = %name, node = %node.name, operation = %operation.name, "started preparing the template");

    status.operation = Some(OperationRef { name: operation.name.clone(), node: node.name.clone() });
    status.observed_generation = generation;
    apply_operation(template, &mut status, &operation, &node.name);
    write_status(ctx, template, name, &status, true).await?;
    Ok(Action::requeue(pacing::QUIET_FIRST))
}

async fn poll(
    template: &ActorTemplate,
    name: &str,
    mut status: ActorTemplateStatus,
    operation_ref: OperationRef,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let generation = template.metadata.generation;
    let kube_error = |source| ReconcileError::kube(&object(name), source);

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
        return Ok(Action::requeue(pacing::QUIET_FIRST));
    };
    let mut client = ctx.atelets.client(&node, &object(name))?;
    let request = GetOperationRequest { name: operation_ref.name.clone() };
    let operation = match client.get_operation(with_deadline(request)).await {
        Ok(response) => response.into_inner(),
        Err(status_code) if status_code.code() == tonic::Code::NotFound => {
            // The node lost its records (a new disk): start the work again.
            status.operation = None;
            write_status(ctx, template, name, &status, true).await?;
            return Ok(Action::requeue(pacing::QUIET_FIRST));
        }
        Err(error) => {
            return Err(ReconcileError::atelet(&object(name), &node, error.message()));
        }
    };

    // A stall is no progress for the whole window: cancel, and start the same key again.
    let metadata = operation.metadata.clone().unwrap_or_default();
    if !operation.done && progress::stalled(&metadata, ctx.config.stall_window) {
        let message = format!(
            "No progress {} on node {} for {}; cancelled it and started again, keeping the bytes already downloaded",
            progress::stuck_on(&metadata),
            node.name,
            progress::duration(ctx.config.stall_window.as_secs())
        );
        tracing::warn!(template = %name, operation = %operation.name, "operation stalled; restarting it");
        let cancel = CancelOperationRequest { name: operation.name.clone() };
        let _ = client.cancel_operation(with_deadline(cancel)).await;
        client
            .pull_image(with_deadline(pull_request(template)))
            .await
            .map_err(|e| ReconcileError::atelet(&object(name), &node, e.message()))?;
        set_waiting(&mut status, generation, reasons::STALLED, message);
        write_status(ctx, template, name, &status, true).await?;
        return Ok(Action::requeue(pacing::QUIET_FIRST));
    }

    // A cancelled or transiently failed operation is started again under the same key.
    let retry = matches!(&operation.result, Some(operation::Result::Error(e)) if e.retryable);
    if operation.done && retry {
        client
            .pull_image(with_deadline(pull_request(template)))
            .await
            .map_err(|e| ReconcileError::atelet(&object(name), &node, e.message()))?;
        return Ok(Action::requeue(pacing::QUIET_FIRST));
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
    let write = phase_changed || (progressed && ctx.pacing.may_write(name));
    write_status(ctx, template, name, &status, write).await?;

    if operation.done {
        ctx.pacing.forget(name);
        return Ok(if status.phase == Some(TemplatePhase::Ready) {
            Action::requeue(Duration::from_secs(300))
        } else {
            Action::await_change()
        });
    }
    Ok(Action::requeue(ctx.pacing.next_poll(name, metadata.bytes_done)))
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
    let short = progress::short_reference(&image);

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
            let reason = progress::failure_reason(&error.reason);
            (
                TemplatePhase::Failed,
                (Status::False, reason, message.clone()),
                (Status::False, reasons::FAILED, "The image could not be prepared".to_owned()),
                (Status::False, reason, message),
            )
        }
        None => {
            let progress = progress::from_metadata(&metadata);
            let (reason, message) = progress::condition_line(&metadata, &short, node);
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

/// How errors name a template.
fn object(name: &str) -> String {
    format!("ActorTemplate {name}")
}

fn percent_of(done: u64, total: u64) -> Option<u64> {
    (total > 0).then(|| done.min(total) * 100 / total)
}

/// Writes the status through the status subresource when `write` is set and it changed, with
/// an Event when `Ready` changed.
async fn write_status(
    ctx: &Context,
    template: &ActorTemplate,
    name: &str,
    status: &ActorTemplateStatus,
    write: bool,
) -> Result<(), ReconcileError> {
    let before = template.status.clone().unwrap_or_default();
    if !write || before == *status {
        return Ok(());
    }
    let (before, after) = (&before.conditions, &status.conditions);
    crate::apply_status(ctx, template, &object(name), status, before, after).await?;
    ctx.pacing.wrote(name);
    Ok(())
}
