//! The controller: watches AgentHarnesses and the children they own, and runs
//! [`reconcile`](crate::reconcile::reconcile) for each harness that changed or fell due.

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource,
    runtime::{Controller, controller, watcher},
};
use proto::{Actor, ActorTemplate, AgentHarness};
use serde::de::DeserializeOwned;

use crate::{
    config::Config,
    harness::managed_selector,
    metrics::Metrics,
    reconcile::{Context, error_policy, reconcile},
};

/// Runs the AgentHarness controller until `shutdown` resolves, then lets the reconciles in
/// flight finish (for up to five seconds) and returns.
///
/// Watches harnesses in `config.watch_namespace` (every namespace when unset), and the
/// ActorTemplates, Actors and token Secrets they own, so that a child's status change
/// reconciles its harness at once. Reconciles of different harnesses run in parallel.
/// Failures are logged and retried with backoff; watch errors are logged and the watches
/// resume, so this returns only on shutdown.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let namespace = config.watch_namespace.clone();
    let harnesses = api::<AgentHarness>(&client, namespace.as_deref());
    let templates = api::<ActorTemplate>(&client, namespace.as_deref());
    let actors = api::<Actor>(&client, namespace.as_deref());
    let secrets = api::<Secret>(&client, namespace.as_deref());
    tracing::info!(namespace = namespace.as_deref().unwrap_or("*"), "watching AgentHarnesses");

    // The controller wants a shutdown future that is also Sync; a watch receiver is. A second
    // receiver starts the grace period.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    let context = Arc::new(Context::new(client, config, metrics));
    let controller = Controller::new(harnesses, watcher::Config::default())
        .owns(templates, watcher::Config::default())
        .owns(actors, watcher::Config::default())
        // Only the Secrets it manages: watching every Secret would cache all of them.
        .owns(secrets, watcher::Config::default().labels(&managed_selector()))
        .graceful_shutdown_on(stopping(stopped.clone()))
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((harness, action)) => tracing::trace!(%harness, ?action, "reconciled"),
                // Logged once by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(harness)) => {
                    tracing::debug!(%harness, "the harness is gone");
                }
                Err(error) => tracing::warn!(%error, "watching harnesses and their children"),
            }
        });
    // Reconciles in flight get a grace period to finish, and no more.
    proto::shutdown::finish_within(controller, stopping(stopped), SHUTDOWN_GRACE).await;
    tracing::info!("controller stopped");
}

/// How long reconciles in flight may take to finish after the shutdown signal.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}
