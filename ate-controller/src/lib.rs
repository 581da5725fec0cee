//! ate-controller: drives ActorTemplates and Actors through long-running operations on
//! atelets, and keeps their status telling what happens.
//!
//! [`run`] runs two kube-runtime controllers side by side, each reconciling up to
//! [`Config::concurrency`] objects at once, so one slow template never holds up another. The
//! [`template`] reconciler prepares a template's image on a node of its pool; the [`actor`]
//! reconciler prepares each actor once its template is Ready. Both only start and poll
//! operations with short calls ([`atelets`]), requeueing at the pace [`pacing`] sets, and
//! publish [`events`] when `Ready` changes.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use proto::{Actor, ActorTemplate};
use tokio_util::sync::CancellationToken;

pub mod actor;
pub mod atelets;
pub mod events;
pub mod metrics;
pub mod nodes;
pub mod pacing;
pub mod progress;
pub mod template;

pub use metrics::Metrics;

/// The field manager of status writes and the reporter of events.
pub const MANAGER: &str = "ate-controller";

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control plane's namespace, where atelets keep their Leases.
    pub namespace: String,
    /// No progress for this long cancels and restarts an operation.
    pub stall_window: Duration,
    /// How many reconciles of each kind run at once.
    pub concurrency: u16,
    /// Only reconcile objects in this namespace; all namespaces when unset.
    pub watch_namespace: Option<String>,
}

/// Everything a reconcile needs, shared by both controllers.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The controller's configuration.
    pub config: Config,
    /// Channels to atelets.
    pub atelets: atelets::Atelets,
    /// When each object is polled and written next.
    pub pacing: pacing::Pacing,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Counts reconciles and their failures.
    pub metrics: Metrics,
}

/// Why a reconcile failed; the controller retries it after a pause.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused a read or a status write.
    #[error("API request for {object}: {source}")]
    Kube {
        /// `<Kind> <namespace>/<name>`.
        object: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The atelet could not be reached or refused a call.
    #[error("atelet {node} ({endpoint}) for {object}: {message}")]
    Atelet {
        /// `<Kind> <namespace>/<name>`.
        object: String,
        /// The node.
        node: String,
        /// Its endpoint.
        endpoint: String,
        /// The gRPC status or transport error.
        message: String,
    },
}

impl ReconcileError {
    /// An API error while reconciling `object`.
    pub fn kube(object: &str, source: kube::Error) -> ReconcileError {
        ReconcileError::Kube { object: object.to_owned(), source }
    }

    /// An atelet error while reconciling `object` on `node`.
    pub fn atelet(object: &str, node: &nodes::Node, message: &str) -> ReconcileError {
        ReconcileError::Atelet {
            object: object.to_owned(),
            node: node.name.clone(),
            endpoint: node.endpoint.clone(),
            message: message.to_owned(),
        }
    }
}

/// Writes `status` through `object`'s status subresource by server-side apply, and publishes
/// an Event when its `Ready` condition changed from `before` to `after`. `name` says which
/// object it is, in errors.
///
/// # Errors
///
/// When the API server refuses the write.
pub async fn apply_status<K>(
    ctx: &Context,
    object: &K,
    name: &str,
    status: &impl serde::Serialize,
    before: &[Condition],
    after: &[Condition],
) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| ReconcileError::kube(name, source))?;
    events::ready_changed(ctx, object, before, after).await;
    Ok(())
}

/// Runs the ActorTemplate and Actor controllers until `shutdown` is cancelled.
pub async fn run(client: Client, config: Config, metrics: Metrics, shutdown: CancellationToken) {
    let (templates, actors) = match &config.watch_namespace {
        Some(namespace) => (
            Api::<ActorTemplate>::namespaced(client.clone(), namespace),
            Api::<Actor>::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(config.concurrency);
    let reporter =
        Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        atelets: atelets::Atelets::default(),
        pacing: pacing::Pacing::new(metrics.clone()),
        metrics,
        client,
        config,
    });

    let template_controller = Controller::new(templates.clone(), watcher::Config::default())
        .with_config(controller_config.clone())
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            |template, ctx: Arc<Context>| async move {
                ctx.metrics.reconciled("ActorTemplate");
                template::reconcile(template, ctx).await
            },
            |_, error, ctx| error_policy("ActorTemplate", error, &ctx),
            context.clone(),
        )
        .for_each(log_result);

    // An actor waits for its template: a change of the template wakes the actors naming it.
    let actor_controller = Controller::new(actors, watcher::Config::default());
    let known_actors = actor_controller.store();
    let actor_controller = actor_controller
        .watches(templates, watcher::Config::default(), move |template| {
            let namespace = template.namespace();
            let name = template.name_any();
            known_actors
                .state()
                .into_iter()
                .filter(|actor| {
                    actor.namespace() == namespace && actor.spec.template_ref.name == name
                })
                .map(|actor| ObjectRef::from_obj(&*actor))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            |actor, ctx: Arc<Context>| async move {
                ctx.metrics.reconciled("Actor");
                actor::reconcile(actor, ctx).await
            },
            |_, error, ctx| error_policy("Actor", error, &ctx),
            context,
        )
        .for_each(log_result);

    // Reconciles in flight get a grace period to finish, and no more.
    let controllers = async {
        tokio::join!(template_controller, actor_controller);
    };
    proto::shutdown::finish_within(controllers, shutdown.cancelled(), SHUTDOWN_GRACE).await;
}

/// How long reconciles in flight may take to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A failed reconcile is logged, counted and retried after a short pause.
fn error_policy(kind: &'static str, error: &ReconcileError, ctx: &Context) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    ctx.metrics.failed(kind);
    Action::requeue(Duration::from_secs(5))
}

async fn log_result<T, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "reconcile did not complete");
    }
}
