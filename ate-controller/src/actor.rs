//! The Actor reconciler: once an actor's template is Ready, asks an atelet of the template's
//! pool to prepare the actor as a long-running operation, and copies its progress into the
//! actor's status.
//!
//! Sandboxes are not booted yet: the operation prepares the template image's root filesystem
//! on the node (instant when the template was prepared there, since the node keeps the
//! bytes), and the actor then stops in phase `Prepared` with `Ready=True` for reason
//! `RootfsPrepared`, so that nobody mistakes it for a serving sandbox. Restoring from a golden
//! snapshot replaces this operation when snapshots exist.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, runtime::controller::Action};
use proto::{
    Actor, ActorTemplate, WorkerPool,
    actor::{ActorPhase, ActorStatus, DesiredState},
    actor_template::TemplatePhase,
    atelet::{CancelOperationRequest, GetOperationRequest, Operation, PullImageRequest, operation},
    conditions::{self, Desired, Status, reasons, types},
    reference::OperationRef,
};
use sha2::{Digest as _, Sha256};

use crate::{
    Context, ReconcileError,
    atelets::with_deadline,
    nodes::{self, Node},
    progress,
};

/// How often a Prepared actor's node is checked for a live Lease.
const RECHECK: Duration = Duration::from_secs(30);

/// Reconciles one Actor; see the module documentation.
///
/// # Errors
///
/// When the API server or the atelet cannot be reached; the controller retries.
pub async fn reconcile(actor: Arc<Actor>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = actor.namespace().unwrap_or_default();
    let object = format!("Actor {namespace}/{}", actor.name_any());
    let kube_error = |source| ReconcileError::kube(&object, source);
    let generation = actor.metadata.generation;
    let mut status = actor.status.clone().unwrap_or_default();
    let current_generation = status.observed_generation == generation;
    let live = nodes::live(&ctx.client, &ctx.config.namespace).await.map_err(kube_error)?;

    if current_generation && status.phase == Some(ActorPhase::Failed) {
        return Ok(Action::await_change());
    }
    if current_generation && status.phase == Some(ActorPhase::Prepared) {
        let node = status.node.clone().unwrap_or_default();
        if live.iter().any(|n| n.name == node) {
            return Ok(Action::requeue(RECHECK));
        }
        let message = format!("Node {node} stopped renewing its lease; preparing the actor again");
        status.node = None;
        set(
            &mut status,
            generation,
            ActorPhase::Pending,
            Status::False,
            reasons::NODE_LOST,
            message,
        );
        write_status(&ctx, &actor, &object, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    if actor.spec.desired_state == DesiredState::Suspended {
        let message = "Suspending an actor needs golden snapshots, which this control plane does \
                       not build yet; set spec.desiredState to Running"
            .to_owned();
        set(&mut status, generation, ActorPhase::Pending, Status::False, reasons::FAILED, message);
        write_status(&ctx, &actor, &object, &status).await?;
        return Ok(Action::await_change());
    }

    // The template must be Ready for its current spec; its changes wake this actor.
    let templates: Api<ActorTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    let template_name = &actor.spec.template_ref.name;
    let template = templates.get_opt(template_name).await.map_err(kube_error)?;
    let waiting_on = template_ready_message(template.as_ref());
    let Some(template) = template.filter(template_ready) else {
        let message = format!(
            "Waiting for ActorTemplate {namespace}/{template_name} to be Ready{waiting_on}"
        );
        set(&mut status, generation, ActorPhase::Pending, Status::False, reasons::PENDING, message);
        write_status(&ctx, &actor, &object, &status).await?;
        return Ok(Action::await_change());
    };
    let request = prepare_request(&actor, &template);

    if let Some(operation) = status.operation.clone().filter(|_| current_generation)
        && let Some(node) = live.iter().find(|n| n.name == operation.node)
    {
        return poll(&actor, &object, status, &operation.name, node, request, &ctx).await;
    }

    // Start on a live atelet of the template's pool, the first by name, so that a retried
    // reconcile picks the same one.
    let pools: Api<WorkerPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let pool_name = &template.spec.worker_pool_ref.name;
    let selector = match pools.get_opt(pool_name).await.map_err(kube_error)? {
        Some(pool) => pool.spec.node_selector,
        None => {
            let message = format!(
                "WorkerPool {namespace}/{pool_name} of ActorTemplate {template_name} not found"
            );
            let reason = reasons::WORKER_POOL_NOT_FOUND;
            set(&mut status, generation, ActorPhase::Pending, Status::False, reason, message);
            write_status(&ctx, &actor, &object, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };
    let mut candidates: Vec<&Node> = live.iter().filter(|n| n.matches(&selector)).collect();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let Some(node) = candidates.first() else {
        let message =
            format!("No atelet of WorkerPool {namespace}/{pool_name} holds a live lease; waiting");
        let reason = reasons::NO_NODE_AVAILABLE;
        set(&mut status, generation, ActorPhase::Pending, Status::False, reason, message);
        write_status(&ctx, &actor, &object, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };

    let mut client = ctx.atelets.client(node, &object)?;
    let operation = client
        .pull_image(with_deadline(request.clone()))
        .await
        .map_err(|e| ReconcileError::atelet(&object, node, e.message()))?
        .into_inner();
    tracing::info!(actor = %object, node = %node.name, operation = %operation.name, "started preparing the actor");
    status.operation = Some(OperationRef { name: operation.name.clone(), node: node.name.clone() });
    apply_operation(&mut status, generation, &operation, &request.image, &node.name);
    write_status(&ctx, &actor, &object, &status).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Polls the actor's operation on `node`: restarts it after a stall or a retryable failure,
/// and copies its state into status.
async fn poll(
    actor: &Actor,
    object: &str,
    mut status: ActorStatus,
    operation_name: &str,
    node: &Node,
    request: PullImageRequest,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let generation = actor.metadata.generation;
    let mut client = ctx.atelets.client(node, object)?;
    let get = GetOperationRequest { name: operation_name.to_owned() };
    let operation = match client.get_operation(with_deadline(get)).await {
        Ok(response) => response.into_inner(),
        Err(error) if error.code() == tonic::Code::NotFound => {
            // The node lost its records: start the work again.
            status.operation = None;
            write_status(ctx, actor, object, &status).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Err(error) => return Err(ReconcileError::atelet(object, node, error.message())),
    };
    let metadata = operation.metadata.clone().unwrap_or_default();
    let retryable = matches!(&operation.result, Some(operation::Result::Error(e)) if e.retryable);
    let stalled = !operation.done && progress::stalled(&metadata, ctx.config.stall_window);
    if stalled || (operation.done && retryable) {
        if stalled {
            let cancel = CancelOperationRequest { name: operation.name.clone() };
            let _ = client.cancel_operation(with_deadline(cancel)).await;
            let message = format!(
                "No progress {} on node {} for {}; cancelled it and started again",
                progress::stuck_on(&metadata),
                node.name,
                progress::duration(ctx.config.stall_window.as_secs())
            );
            let phase = ActorPhase::Restoring;
            set(&mut status, generation, phase, Status::False, reasons::STALLED, message);
            write_status(ctx, actor, object, &status).await?;
        }
        client
            .pull_image(with_deadline(request))
            .await
            .map_err(|e| ReconcileError::atelet(object, node, e.message()))?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let phase_before = status.phase;
    apply_operation(&mut status, generation, &operation, &request.image, &node.name);
    let key = object.to_owned();
    if operation.done {
        ctx.pacing.forget(&key);
        write_status(ctx, actor, object, &status).await?;
        return Ok(if status.phase == Some(ActorPhase::Prepared) {
            Action::requeue(RECHECK)
        } else {
            Action::await_change()
        });
    }
    if status.phase != phase_before || ctx.pacing.may_write(&key) {
        write_status(ctx, actor, object, &status).await?;
        ctx.pacing.wrote(&key);
    }
    Ok(Action::requeue(ctx.pacing.next_poll(&key, metadata.bytes_done)))
}

/// Whether the template is Ready for its current spec.
fn template_ready(template: &ActorTemplate) -> bool {
    template.status.as_ref().is_some_and(|s| {
        s.phase == Some(TemplatePhase::Ready)
            && s.observed_generation == template.metadata.generation
    })
}

/// `: <the template's Ready message>`, or what is missing.
fn template_ready_message(template: Option<&ActorTemplate>) -> String {
    let Some(template) = template else {
        return "; it does not exist: create it or fix spec.templateRef".to_owned();
    };
    template
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::READY))
        .map(|c| format!(": {}", c.message))
        .unwrap_or_default()
}

/// The operation that prepares the actor: its template's image, unpacked. The key follows
/// the actor's UID and the image, so a new image starts a new operation and nothing else does.
fn prepare_request(actor: &Actor, template: &ActorTemplate) -> PullImageRequest {
    let image = template.spec.containers.first().map(|c| c.image.clone()).unwrap_or_default();
    let hash = hex::encode(Sha256::digest(image.as_bytes()));
    PullImageRequest {
        idempotency_key: format!("actor/{}/{}", actor.uid().unwrap_or_default(), &hash[..16]),
        image,
        unpack: true,
    }
}

/// Copies an operation's state into the actor's status.
fn apply_operation(
    status: &mut ActorStatus,
    generation: Option<i64>,
    operation: &Operation,
    image: &str,
    node: &str,
) {
    let metadata = operation.metadata.clone().unwrap_or_default();
    let short = progress::short_reference(image);
    match &operation.result {
        Some(operation::Result::Response(_)) => {
            status.operation = None;
            status.progress = None;
            status.node = Some(node.to_owned());
            let message = format!(
                "Root filesystem of {short} prepared on node {node}; the sandbox is not booted: \
                 this control plane does not boot sandboxes yet"
            );
            let reason = reasons::ROOTFS_PREPARED;
            set(status, generation, ActorPhase::Prepared, Status::True, reason, message);
        }
        Some(operation::Result::Error(error)) => {
            status.operation = None;
            status.progress = None;
            let reason = progress::failure_reason(&error.reason);
            let message = format!("{} Fix the template's image and apply it again.", error.message);
            set(status, generation, ActorPhase::Failed, Status::False, reason, message);
        }
        None => {
            let (reason, message) = progress::condition_line(&metadata, &short, node);
            status.progress = Some(progress::from_metadata(&metadata));
            set(status, generation, ActorPhase::Restoring, Status::False, reason, message);
        }
    }
}

/// Sets the phase and the `Ready` condition.
fn set(
    status: &mut ActorStatus,
    generation: Option<i64>,
    phase: ActorPhase,
    ready: Status,
    reason: &str,
    message: String,
) {
    status.phase = Some(phase);
    status.observed_generation = generation;
    let desired = Desired { type_: types::READY, status: ready, reason, message };
    conditions::set(&mut status.conditions, desired, generation, Timestamp::now());
}

/// Writes the status through the status subresource when it changed, with an Event when
/// `Ready` changed.
async fn write_status(
    ctx: &Context,
    actor: &Actor,
    object: &str,
    status: &ActorStatus,
) -> Result<(), ReconcileError> {
    let before = actor.status.clone().unwrap_or_default();
    if before == *status {
        return Ok(());
    }
    crate::apply_status(ctx, actor, object, status, &before.conditions, &status.conditions).await
}
