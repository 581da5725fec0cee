//! ate-controller: drives ActorTemplates (and, with the snapshot work, Actors) through
//! long-running operations on atelets, and keeps their status telling what happens.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{Controller, controller::Action, watcher},
};
use proto::ActorTemplate;
use tokio_util::sync::CancellationToken;

pub mod nodes;
pub mod progress;
pub mod template;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control plane's namespace, where atelets keep their Leases.
    pub namespace: String,
    /// No progress for this long cancels and restarts an operation.
    pub stall_window: Duration,
    /// How many reconciles run at once.
    pub concurrency: u16,
    /// Only reconcile objects in this namespace; all namespaces when unset.
    pub watch_namespace: Option<String>,
}

/// Runs the ActorTemplate controller until `shutdown` is cancelled.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) {
    let templates: Api<ActorTemplate> = match &config.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let concurrency = config.concurrency;
    let context =
        Arc::new(template::Context { client, config, memory: template::Memory::default() });

    Controller::new(templates, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(template::reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
}

/// A failed reconcile is logged once and retried after a short pause.
fn error_policy(
    _template: Arc<ActorTemplate>,
    error: &template::ReconcileError,
    _ctx: Arc<template::Context>,
) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
