//! The reconcile of one AgentHarness: its finalizer, its references, its gateway token Secret,
//! ActorTemplate and Actor, and its status.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Recorder, Reporter},
    },
};
use proto::{Actor, ActorTemplate, AgentHarness};
use serde_json::json;
use tracing::Instrument;

use crate::{
    acceptance::{self, Acceptance, LookupError, Resolved},
    actor,
    config::Config,
    events, finalizer,
    harness::{HarnessRef, MANAGER, is_owned_by},
    metrics::Metrics,
    status::{self, Observed},
    template, token,
};

/// What every reconcile shares: the API client, the configuration, the event recorder, the
/// metrics, and the failure counts that space out retries.
pub struct Context {
    client: Client,
    config: Config,
    recorder: Recorder,
    metrics: Metrics,
    failures: Mutex<HashMap<HarnessRef, u32>>,
}

impl Context {
    /// A context for reconciles that talk to the API server through `client`.
    pub fn new(client: Client, config: Config, metrics: Metrics) -> Context {
        let reporter =
            Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            failures: Mutex::default(),
        }
    }

    /// The configuration reconciles build children with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records one more consecutive failure of `id` and returns how many there have been.
    fn failed(&self, id: &HarnessRef) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(id.clone()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// Forgets the failures of `id` after a reconcile that succeeded.
    fn succeeded(&self, id: &HarnessRef) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(id);
    }
}

/// Why a reconcile failed. Each variant names the step and the object, and carries the API
/// error; none carries or prints the gateway token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The harness has no namespace; the API server never serves one like that.
    #[error("AgentHarness {name} has no namespace")]
    NoNamespace {
        /// The harness's name.
        name: String,
    },
    /// Adding or removing the finalizer failed, e.g. on a conflicting update.
    #[error("updating the finalizers of AgentHarness {harness}: {source}")]
    Finalizer {
        /// The harness.
        harness: HarnessRef,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A referenced object could not be read (not: did not exist).
    #[error("checking the references of AgentHarness {harness}: {source}")]
    References {
        /// The harness.
        harness: HarnessRef,
        /// The failed lookup.
        #[source]
        source: LookupError,
    },
    /// Applying, reading or deleting a child failed.
    #[error("{verb} {kind} {object}: {source}")]
    Child {
        /// What was done: `applying`, `reading` or `deleting`.
        verb: &'static str,
        /// The child's kind.
        kind: &'static str,
        /// `namespace/name` of the child.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the harness's status failed.
    #[error("writing the status of AgentHarness {harness}: {source}")]
    WriteStatus {
        /// The harness.
        harness: HarnessRef,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The step that failed, as the `reason` label of the error counter.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::NoNamespace { .. } => "no_namespace",
            Error::Finalizer { .. } => "finalizer",
            Error::References { .. } => "references",
            Error::Child { verb: "applying", .. } => "apply_child",
            Error::Child { verb: "deleting", .. } => "delete_child",
            Error::Child { .. } => "read_child",
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

/// When to reconcile a harness again, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// A reference is missing and may yet appear: check again in 30 s.
    NotAccepted,
    /// The template or the actor is not Ready yet: look again in 5 s, or sooner when a watch
    /// of the children reports a change.
    WaitingForChildren,
    /// Everything is Ready: look again in 5 minutes, in case a change went unseen.
    Ready,
    /// The harness is being deleted and its Actor is still there: look again in 2 s.
    WaitingForActorDeletion,
    /// The harness's deletion can finish; nothing more to do.
    Deleted,
}

impl Requeue {
    /// How long until the next reconcile, `None` for none.
    pub fn after(self) -> Option<Duration> {
        match self {
            Requeue::NotAccepted => Some(Duration::from_secs(30)),
            Requeue::WaitingForChildren => Some(Duration::from_secs(5)),
            Requeue::Ready => Some(Duration::from_secs(300)),
            Requeue::WaitingForActorDeletion => Some(Duration::from_secs(2)),
            Requeue::Deleted => None,
        }
    }

    /// The controller's action for this requeue.
    pub fn action(self) -> Action {
        self.after().map_or_else(Action::await_change, Action::requeue)
    }
}

/// The first retry after a failure; each further consecutive failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failing harness.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// Reconciles one harness; the controller calls it on every change of the harness or its
/// children, and when a requeue falls due.
///
/// # Errors
///
/// [`Error`] when an API call fails; [`error_policy`] schedules the retry.
pub async fn reconcile(harness: Arc<AgentHarness>, ctx: Arc<Context>) -> Result<Action, Error> {
    let id =
        HarnessRef::of(&harness).ok_or_else(|| Error::NoNamespace { name: harness.name_any() })?;
    let span = tracing::info_span!("reconcile", namespace = %id.namespace, name = %id.name);
    ctx.metrics.reconciled();

    let requeue = reconcile_harness(&harness, &id, &ctx).instrument(span.clone()).await?;

    ctx.succeeded(&id);
    span.in_scope(|| tracing::debug!(requeue = ?requeue, after = ?requeue.after(), "reconciled"));
    Ok(requeue.action())
}

/// Decides when to retry a failed reconcile: after 1 s, doubling with each consecutive failure
/// of the same harness up to 5 minutes. Logs the failure (once, here) and counts it.
pub fn error_policy(harness: Arc<AgentHarness>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_reason());
    let Some(id) = HarnessRef::of(&harness) else {
        tracing::warn!(%error, "reconcile failed; not retrying");
        return Action::await_change();
    };
    let failures = ctx.failed(&id);
    let retry_in =
        FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(LONGEST_RETRY);
    tracing::warn!(
        namespace = %id.namespace,
        name = %id.name,
        %error,
        failures,
        ?retry_in,
        "reconcile failed; retrying"
    );
    Action::requeue(retry_in)
}

/// The checklist.
async fn reconcile_harness(
    harness: &AgentHarness,
    id: &HarnessRef,
    ctx: &Context,
) -> Result<Requeue, Error> {
    let harnesses: Api<AgentHarness> = Api::namespaced(ctx.client.clone(), &id.namespace);

    // 1. Deletion: the Actor first, then the finalizer. The rest goes by garbage collection.
    if harness.meta().deletion_timestamp.is_some() {
        return clean_up(harness, id, ctx, &harnesses).await;
    }
    if !finalizer::is_present(harness) {
        finalizer::add(&harnesses, harness)
            .await
            .map_err(|source| Error::Finalizer { harness: id.clone(), source })?;
    }

    // 2. Accepted: every referenced object exists. Children are built only then.
    let acceptance = acceptance::check(&ctx.client, id, &harness.spec)
        .await
        .map_err(|source| Error::References { harness: id.clone(), source })?;

    // 3, 4 and 6: the token Secret, the ActorTemplate, and the Actor once the template is
    // Ready. A harness that is not accepted keeps the children it has and only observes them.
    let children = match &acceptance {
        Acceptance::Accepted(resolved) => build_children(harness, id, resolved, ctx).await?,
        Acceptance::Rejected(_) => observe_children(id, ctx).await?,
    };

    // 5 and 7: mirror the children into conditions, progress and connection.
    let observed = Observed {
        rejection: match &acceptance {
            Acceptance::Accepted(_) => None,
            Acceptance::Rejected(rejection) => Some(rejection),
        },
        template: children.template.as_ref(),
        actor: children.actor.as_ref(),
    };
    let current = harness.status.as_ref();
    let status =
        status::desired(current, id, &observed, harness.meta().generation, Timestamp::now());

    // 8. Write the status only when something changed.
    if current != Some(&status) {
        let patch = json!({
            "apiVersion": AgentHarness::api_version(&()),
            "kind": AgentHarness::kind(&()),
            "status": status,
        });
        harnesses
            .patch_status(&id.name, &apply_params(), &Patch::Apply(&patch))
            .await
            .map_err(|source| Error::WriteStatus { harness: id.clone(), source })?;
    }

    // 9. Events on transitions.
    events::publish(&ctx.recorder, harness, events::transitions(current, &status)).await;

    // 10. Requeue.
    Ok(if observed.rejection.is_some() {
        Requeue::NotAccepted
    } else if observed.template_ready() && observed.actor_ready() {
        Requeue::Ready
    } else {
        Requeue::WaitingForChildren
    })
}

/// The children one reconcile applied or read.
struct Children {
    template: Option<ActorTemplate>,
    actor: Option<Actor>,
}

/// Applies the token Secret, the ActorTemplate, and the Actor once the template is Ready.
async fn build_children(
    harness: &AgentHarness,
    id: &HarnessRef,
    resolved: &Resolved,
    ctx: &Context,
) -> Result<Children, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let templates: Api<ActorTemplate> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let actors: Api<Actor> = Api::namespaced(ctx.client.clone(), &id.namespace);

    // 3. The gateway token lives in a Secret; an inline one in the harness's own.
    let secret_name = id.token_secret_name();
    match &resolved.substrate.gateway_token {
        Some(inline) => {
            let secret = token::owned_secret(harness, id, inline);
            secrets
                .patch(&secret_name, &apply_params(), &Patch::Apply(&secret))
                .await
                .map_err(child_error("applying", "Secret", id, &secret_name))?;
        }
        None => delete_stale_secret(harness, id, &secrets).await?,
    }
    let token = token::secret_key_ref(id, &resolved.substrate);

    // 4. The ActorTemplate.
    let desired =
        template::desired(harness, id, &resolved.substrate, &resolved.model, token, &ctx.config);
    let template = templates
        .patch(&id.name, &apply_params(), &Patch::Apply(&desired))
        .await
        .map_err(child_error("applying", "ActorTemplate", id, &id.name))?;

    // 6. The Actor, once the template has its golden snapshot.
    let template_ready =
        Observed { template: Some(&template), ..Observed::default() }.template_ready();
    let actor = if template_ready {
        let desired = actor::desired(harness, id);
        let actor = actors
            .patch(&id.name, &apply_params(), &Patch::Apply(&desired))
            .await
            .map_err(child_error("applying", "Actor", id, &id.name))?;
        Some(actor)
    } else {
        actors.get_opt(&id.name).await.map_err(child_error("reading", "Actor", id, &id.name))?
    };

    Ok(Children { template: Some(template), actor })
}

/// Reads the children a harness that is not accepted may still have.
async fn observe_children(id: &HarnessRef, ctx: &Context) -> Result<Children, Error> {
    let templates: Api<ActorTemplate> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let actors: Api<Actor> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let template = templates.get_opt(&id.name).await.map_err(child_error(
        "reading",
        "ActorTemplate",
        id,
        &id.name,
    ))?;
    let actor =
        actors.get_opt(&id.name).await.map_err(child_error("reading", "Actor", id, &id.name))?;
    Ok(Children { template, actor })
}

/// Deletes the owned token Secret of a harness that switched to `gatewayTokenSecretRef`.
async fn delete_stale_secret(
    harness: &AgentHarness,
    id: &HarnessRef,
    secrets: &Api<Secret>,
) -> Result<(), Error> {
    let name = id.token_secret_name();
    let stale =
        secrets.get_opt(&name).await.map_err(child_error("reading", "Secret", id, &name))?;
    if stale.is_some_and(|secret| is_owned_by(&secret, harness)) {
        delete(secrets, &name).await.map_err(child_error("deleting", "Secret", id, &name))?;
        tracing::info!(secret = %id.sibling(&name), "deleted the unused gateway token Secret");
    }
    Ok(())
}

/// Deletes the owned Actor, waits until it is gone, then removes the finalizer.
async fn clean_up(
    harness: &AgentHarness,
    id: &HarnessRef,
    ctx: &Context,
    harnesses: &Api<AgentHarness>,
) -> Result<Requeue, Error> {
    if !finalizer::is_present(harness) {
        return Ok(Requeue::Deleted);
    }
    let actors: Api<Actor> = Api::namespaced(ctx.client.clone(), &id.namespace);

    let actor =
        actors.get_opt(&id.name).await.map_err(child_error("reading", "Actor", id, &id.name))?;
    if let Some(actor) = actor.filter(|actor| is_owned_by(actor, harness)) {
        if actor.meta().deletion_timestamp.is_some() {
            tracing::debug!("waiting for the Actor to be deleted");
            return Ok(Requeue::WaitingForActorDeletion);
        }
        let gone = delete(&actors, &id.name)
            .await
            .map_err(child_error("deleting", "Actor", id, &id.name))?;
        tracing::info!(actor = %id, "deleting the Actor of the deleted harness");
        if !gone {
            return Ok(Requeue::WaitingForActorDeletion);
        }
    }

    finalizer::remove(harnesses, harness)
        .await
        .map_err(|source| Error::Finalizer { harness: id.clone(), source })?;
    tracing::info!("the Actor is gone; removed the finalizer");
    Ok(Requeue::Deleted)
}

/// Deletes an object in the background; returns whether it is gone already (not found, or
/// deleted at once because nothing holds it back).
async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(outcome) => Ok(outcome.is_right()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(error) => Err(error),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn child_error<'a>(
    verb: &'static str,
    kind: &'static str,
    id: &'a HarnessRef,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Child { verb, kind, object: id.sibling(name), source }
}
