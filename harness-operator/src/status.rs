//! A harness's status, computed from what the reconcile observed: whether it is accepted, and
//! the status of its ActorTemplate and Actor.
//!
//! Pure: the reconcile writes the result only when it differs from the current status, and
//! `lastTransitionTime` moves only when a condition's status does (see
//! [`proto::conditions::set`]).

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::ResourceExt;
use proto::{
    Actor, ActorTemplate, AgentHarnessStatus,
    agent_harness::{BackendRef, Connection},
    conditions::{self, Desired, Status, reasons, types},
    progress::Progress,
};

use crate::{acceptance::Rejection, harness::HarnessRef};

/// The summary shown in the STATUS column once the harness is Ready.
pub const READY_SUMMARY: &str = "Ready";

/// What one reconcile saw of a harness and its children.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    /// Why the harness is not accepted; `None` when it is.
    pub rejection: Option<&'a Rejection>,
    /// The owned ActorTemplate, as last applied or read.
    pub template: Option<&'a ActorTemplate>,
    /// The owned Actor, as last applied or read.
    pub actor: Option<&'a Actor>,
}

impl Observed<'_> {
    /// Whether the template's `Ready` condition is `True`.
    pub fn template_ready(&self) -> bool {
        self.template.is_some_and(|t| is_ready(t.status.as_ref().map(|s| &s.conditions[..])))
    }

    /// Whether the actor's `Ready` condition is `True`.
    pub fn actor_ready(&self) -> bool {
        self.actor.is_some_and(|a| is_ready(a.status.as_ref().map(|s| &s.conditions[..])))
    }
}

fn is_ready(conditions: Option<&[Condition]>) -> bool {
    conditions.is_some_and(|c| conditions::is_true(c, types::READY))
}

/// The status a harness should have after a reconcile that observed `observed`.
///
/// Starts from `current`, so unchanged conditions keep their transition times; sets
/// `Accepted`, `ActorTemplateReady`, `ActorReady` and `Ready` (the first condition that is not
/// `True` gives `Ready` its reason and message), the progress line, the backend references and
/// the connection endpoint.
pub fn desired(
    current: Option<&AgentHarnessStatus>,
    id: &HarnessRef,
    observed: &Observed<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> AgentHarnessStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.observed_generation = generation;

    let accepted = match observed.rejection {
        None => Desired {
            type_: types::ACCEPTED,
            status: Status::True,
            reason: reasons::ACCEPTED,
            message: "The ModelConfig, WorkerPool and Secrets the harness refers to exist."
                .to_owned(),
        },
        Some(rejection) => Desired {
            type_: types::ACCEPTED,
            status: Status::False,
            reason: rejection.reason,
            message: rejection.message.clone(),
        },
    };
    let template = template_condition(id, observed);
    let actor = actor_condition(id, observed);
    let endpoint = observed.actor.and_then(|a| a.status.as_ref()?.endpoint.clone());

    let failing = [&accepted, &template, &actor].into_iter().find(|c| c.status != Status::True);
    let ready = match failing {
        Some(failing) => Desired {
            type_: types::READY,
            status: Status::False,
            reason: failing.reason,
            message: failing.message.clone(),
        },
        // Serving only with an endpoint; an actor Ready without one (its root filesystem
        // prepared, no sandbox booted yet) lends its own reason and words, so that nobody
        // reads "serves" where nothing does.
        None => match &endpoint {
            Some(endpoint) => Desired {
                type_: types::READY,
                status: Status::True,
                reason: reasons::READY,
                message: format!("The gateway serves at {endpoint}."),
            },
            None => Desired { type_: types::READY, ..actor.clone() },
        },
    };
    status.progress = Some(progress(failing.map(|c| c.type_), &ready, observed));

    for condition in [accepted.clone(), template.clone(), actor.clone(), ready] {
        conditions::set(&mut status.conditions, condition, generation, now);
    }

    let backend = BackendRef {
        actor_template: observed.template.map(ResourceExt::name_any),
        actor: observed.actor.map(ResourceExt::name_any),
    };
    status.backend_ref = (backend != BackendRef::default()).then_some(backend);
    status.connection = endpoint.map(|endpoint| Connection { endpoint: Some(endpoint) });
    status
}

/// `ActorTemplateReady`: the template's `Ready` condition, or `Unknown` until it has one.
fn template_condition<'a>(id: &HarnessRef, observed: &Observed<'a>) -> Desired<'a> {
    let Some(template) = observed.template else {
        return pending(
            types::ACTOR_TEMPLATE_READY,
            match observed.rejection {
                Some(_) => {
                    "Waiting for the harness to be accepted before creating its ActorTemplate."
                        .to_owned()
                }
                None => format!("Creating ActorTemplate {id}."),
            },
        );
    };
    let conditions = template.status.as_ref().map(|s| &s.conditions[..]).unwrap_or_default();
    mirror(types::ACTOR_TEMPLATE_READY, conditions, &format!("ActorTemplate {id}"), || {
        format!("Waiting for ate-controller to start preparing ActorTemplate {id}.")
    })
}

/// `ActorReady`: the actor's `Ready` condition, or `Unknown` until it exists and has one.
fn actor_condition<'a>(id: &HarnessRef, observed: &Observed<'a>) -> Desired<'a> {
    let Some(actor) = observed.actor else {
        return pending(
            types::ACTOR_READY,
            format!("Waiting for ActorTemplate {id} to be Ready before creating the Actor."),
        );
    };
    let conditions = actor.status.as_ref().map(|s| &s.conditions[..]).unwrap_or_default();
    mirror(types::ACTOR_READY, conditions, &format!("Actor {id}"), || {
        format!("Waiting for ate-controller to restore Actor {id}.")
    })
}

/// The child's `Ready` condition under the harness's condition type `type_`.
fn mirror<'a>(
    type_: &'a str,
    child: &'a [Condition],
    what: &str,
    waiting: impl FnOnce() -> String,
) -> Desired<'a> {
    let Some(ready) = conditions::find(child, types::READY) else {
        return pending(type_, waiting());
    };
    let status = match ready.status.as_str() {
        "True" => Status::True,
        "False" => Status::False,
        _ => Status::Unknown,
    };
    Desired {
        type_,
        status,
        // The API server refuses a condition without a reason; a child should never lack one.
        reason: if ready.reason.is_empty() { reasons::PENDING } else { &ready.reason },
        message: if ready.message.is_empty() {
            format!("{what} is Ready={}.", status.as_str())
        } else {
            ready.message.clone()
        },
    }
}

fn pending(type_: &str, message: String) -> Desired<'_> {
    Desired { type_, status: Status::Unknown, reason: reasons::PENDING, message }
}

/// The progress line: `Ready`; the progress of the child whose condition holds the harness
/// back, while it reports some; else the message of what holds it back.
fn progress(failing: Option<&str>, ready: &Desired<'_>, observed: &Observed<'_>) -> Progress {
    let child = match failing {
        None => {
            return Progress {
                phase: READY_SUMMARY.to_owned(),
                summary: READY_SUMMARY.to_owned(),
                ..Progress::default()
            };
        }
        Some(types::ACTOR_TEMPLATE_READY) => {
            observed.template.and_then(|t| t.status.as_ref()?.progress.clone())
        }
        Some(types::ACTOR_READY) => {
            observed.actor.and_then(|a| a.status.as_ref()?.progress.clone())
        }
        Some(_) => None,
    };
    let mut progress = child.unwrap_or_default();
    if progress.summary.is_empty() {
        progress.summary = ready.message.clone();
    }
    // One line: the STATUS column of `kubectl get` shows nothing after a line break.
    progress.summary = progress.summary.replace(['\r', '\n'], " ");
    progress
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proto::{ActorStatus, ActorTemplateStatus};
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn id() -> HarnessRef {
        HarnessRef { namespace: "kagent".into(), name: "claw".into() }
    }

    fn ready(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Time(at(1)),
        }
    }

    fn template(conditions: Vec<Condition>, progress: Option<Progress>) -> ActorTemplate {
        let mut template: ActorTemplate = serde_json::from_value(json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "ActorTemplate",
            "metadata": {"name": "claw", "namespace": "kagent"},
            "spec": {
                "containers": [{"name": "gateway", "image": "g@sha256:0"}],
                "workerPoolRef": {"name": "p"}, "snapshotsConfig": {"location": "s3://b/p"},
            },
        }))
        .unwrap();
        template.status = Some(ActorTemplateStatus { conditions, progress, ..Default::default() });
        template
    }

    fn actor(conditions: Vec<Condition>, endpoint: Option<&str>) -> Actor {
        let mut actor: Actor = serde_json::from_value(json!({
            "apiVersion": "ate.dev/v1alpha1", "kind": "Actor",
            "metadata": {"name": "claw", "namespace": "kagent"},
            "spec": {"templateRef": {"name": "claw"}},
        }))
        .unwrap();
        actor.status = Some(ActorStatus {
            conditions,
            endpoint: endpoint.map(str::to_owned),
            ..Default::default()
        });
        actor
    }

    fn condition<'a>(status: &'a AgentHarnessStatus, type_: &str) -> &'a Condition {
        conditions::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_}"))
    }

    fn summary(status: &AgentHarnessStatus) -> &str {
        &status.progress.as_ref().unwrap().summary
    }

    #[test]
    fn a_rejected_harness_is_not_ready_for_the_rejection_reason() {
        let rejection = Rejection {
            reason: reasons::MODEL_CONFIG_NOT_FOUND,
            message: "ModelConfig kagent/m not found; create it or fix spec.modelConfigRef".into(),
        };
        let observed = Observed { rejection: Some(&rejection), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(2), at(10));

        for type_ in ["Accepted", "Ready"] {
            let c = condition(&status, type_);
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ModelConfigNotFound"));
            assert_eq!(c.message, rejection.message);
            assert_eq!(c.observed_generation, Some(2));
        }
        assert_eq!(condition(&status, "ActorTemplateReady").status, "Unknown");
        assert_eq!(summary(&status), rejection.message);
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.backend_ref, None);
    }

    #[test]
    fn a_template_without_conditions_is_pending() {
        let template = template(Vec::new(), None);
        let observed = Observed { template: Some(&template), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(1), at(10));

        let c = condition(&status, "ActorTemplateReady");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "Pending"));
        assert_eq!(condition(&status, "Ready").reason, "Pending");
        assert_eq!(status.backend_ref.as_ref().unwrap().actor_template.as_deref(), Some("claw"));
    }

    #[test]
    fn a_pulling_template_shows_its_condition_and_progress() {
        let line = "Pulling image 45% (160/360 MB, ETA 32s)";
        let progress =
            Progress { phase: "Pulling".into(), summary: line.into(), ..Default::default() };
        let template = template(
            vec![ready("False", "PullingImage", "Pulling the image")],
            Some(progress.clone()),
        );
        let observed = Observed { template: Some(&template), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(1), at(10));

        let c = condition(&status, "ActorTemplateReady");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PullingImage"));
        assert_eq!(c.message, "Pulling the image");
        assert_eq!(condition(&status, "Ready").reason, "PullingImage");
        assert_eq!(status.progress, Some(progress));
        assert_eq!(condition(&status, "Accepted").status, "True");
    }

    #[test]
    fn a_ready_actor_makes_the_harness_ready_with_its_endpoint() {
        let template = template(vec![ready("True", "Succeeded", "Snapshot taken")], None);
        let actor = actor(vec![ready("True", "Succeeded", "Running")], Some("10.0.0.7:31000"));
        let observed =
            Observed { template: Some(&template), actor: Some(&actor), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(1), at(10));

        let c = condition(&status, "Ready");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Ready"));
        assert!(c.message.contains("10.0.0.7:31000"), "{}", c.message);
        assert_eq!(summary(&status), "Ready");
        assert_eq!(
            status.connection.as_ref().and_then(|c| c.endpoint.as_deref()),
            Some("10.0.0.7:31000")
        );
        assert_eq!(status.backend_ref.as_ref().unwrap().actor.as_deref(), Some("claw"));
    }

    #[test]
    fn an_actor_ready_without_an_endpoint_lends_its_reason_instead_of_serving() {
        let template = template(vec![ready("True", "RootfsPrepared", "Prepared on node-1")], None);
        let message = "Root filesystem prepared on node-1; the sandbox is not booted";
        let actor = actor(vec![ready("True", "RootfsPrepared", message)], None);
        let observed =
            Observed { template: Some(&template), actor: Some(&actor), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(1), at(10));

        let c = condition(&status, "Ready");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "RootfsPrepared"));
        assert!(c.message.contains("not booted") && !c.message.contains("serves"), "{}", c.message);
        assert!(status.connection.is_none());
    }

    #[test]
    fn a_restoring_actor_lends_its_progress_once_the_template_is_ready() {
        let template = template(vec![ready("True", "Succeeded", "Snapshot taken")], None);
        let actor = actor(vec![ready("False", "Restoring", "Restoring on node-1\nfrom s3")], None);
        let observed =
            Observed { template: Some(&template), actor: Some(&actor), ..Observed::default() };

        let status = desired(None, &id(), &observed, Some(1), at(10));

        assert_eq!(condition(&status, "Ready").reason, "Restoring");
        assert_eq!(summary(&status), "Restoring on node-1 from s3");
    }

    #[test]
    fn an_unchanged_observation_yields_an_equal_status_with_the_old_times() {
        let template = template(vec![ready("False", "PullingImage", "Pulling")], None);
        let observed = Observed { template: Some(&template), ..Observed::default() };
        let first = desired(None, &id(), &observed, Some(1), at(10));

        let second = desired(Some(&first), &id(), &observed, Some(1), at(20));

        assert_eq!(second, first);
    }

    #[test]
    fn progress_moves_the_message_but_not_the_transition_time() {
        let pulling = |message| template(vec![ready("False", "PullingImage", message)], None);
        let (before, after) = (pulling("Pulling 10%"), pulling("Pulling 50%"));
        let first = desired(
            None,
            &id(),
            &Observed { template: Some(&before), ..Observed::default() },
            Some(1),
            at(10),
        );

        let second = desired(
            Some(&first),
            &id(),
            &Observed { template: Some(&after), ..Observed::default() },
            Some(1),
            at(20),
        );

        let c = condition(&second, "Ready");
        assert_eq!(c.message, "Pulling 50%");
        assert_eq!(c.last_transition_time, Time(at(10)));
    }
}
