//! Kubernetes Events on a harness's transitions, for `kubectl describe` and event watchers.
//!
//! Events are derived from the status before and after a reconcile, so a reconcile that
//! changes nothing publishes nothing. Their notes come from conditions and object names, never
//! from secret values.

use kube::{
    Resource,
    runtime::events::{Event, EventType, Recorder},
};
use proto::{
    AgentHarness, AgentHarnessStatus,
    conditions::{self, types},
};

/// Event reasons, CamelCase like condition reasons.
pub mod reasons {
    /// The harness's references resolve.
    pub const ACCEPTED: &str = "Accepted";
    /// A reference of the harness does not resolve; the note says which.
    pub const NOT_ACCEPTED: &str = "NotAccepted";
    /// The harness's ActorTemplate was created.
    pub const TEMPLATE_CREATED: &str = "TemplateCreated";
    /// The harness's Actor was created.
    pub const ACTOR_CREATED: &str = "ActorCreated";
    /// The harness's gateway serves.
    pub const READY: &str = "Ready";
}

/// One event to publish about a harness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `Normal`, or `Warning` when a person has something to fix.
    pub type_: EventType,
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What harness-operator did, e.g. `Create`.
    pub action: &'static str,
    /// A sentence for a person.
    pub note: String,
}

/// The transitions between two statuses of a harness worth an event.
pub fn transitions(
    before: Option<&AgentHarnessStatus>,
    after: &AgentHarnessStatus,
) -> Vec<Transition> {
    let mut found = Vec::new();
    let condition = |status: Option<&AgentHarnessStatus>, type_| {
        status
            .and_then(|s| conditions::find(&s.conditions, type_))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };

    let accepted = condition(Some(after), types::ACCEPTED);
    if accepted != condition(before, types::ACCEPTED)
        && let Some(c) = conditions::find(&after.conditions, types::ACCEPTED)
    {
        let (type_, reason) = match c.status.as_str() {
            "True" => (EventType::Normal, reasons::ACCEPTED),
            _ => (EventType::Warning, reasons::NOT_ACCEPTED),
        };
        found.push(Transition { type_, reason, action: "Accept", note: c.message.clone() });
    }

    let backend = |status: Option<&AgentHarnessStatus>| {
        status.and_then(|s| s.backend_ref.clone()).unwrap_or_default()
    };
    let (was, is) = (backend(before), backend(Some(after)));
    if let (None, Some(name)) = (&was.actor_template, &is.actor_template) {
        found.push(Transition {
            type_: EventType::Normal,
            reason: reasons::TEMPLATE_CREATED,
            action: "Create",
            note: format!("Created ActorTemplate {name}."),
        });
    }
    if let (None, Some(name)) = (&was.actor, &is.actor) {
        found.push(Transition {
            type_: EventType::Normal,
            reason: reasons::ACTOR_CREATED,
            action: "Create",
            note: format!("Created Actor {name}."),
        });
    }

    let was_ready = before.is_some_and(|s| conditions::is_true(&s.conditions, types::READY));
    if !was_ready
        && let Some(c) =
            conditions::find(&after.conditions, types::READY).filter(|c| c.status == "True")
    {
        found.push(Transition {
            type_: EventType::Normal,
            reason: reasons::READY,
            action: "Reconcile",
            note: c.message.clone(),
        });
    }
    found
}

/// Publishes `transitions` as Events regarding `harness`. A refused event is logged and
/// otherwise ignored: events inform, they never hold a reconcile back.
pub async fn publish(recorder: &Recorder, harness: &AgentHarness, transitions: Vec<Transition>) {
    let regarding = harness.object_ref(&());
    for transition in transitions {
        let event = Event {
            type_: transition.type_,
            reason: transition.reason.to_owned(),
            note: Some(transition.note),
            action: transition.action.to_owned(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &regarding).await {
            tracing::warn!(%error, reason = transition.reason, "publishing an event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
        jiff::Timestamp,
    };
    use proto::agent_harness::BackendRef;

    use super::*;

    fn status(
        conditions: &[(&str, &str, &str)],
        template: bool,
        actor: bool,
    ) -> AgentHarnessStatus {
        AgentHarnessStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| Condition {
                    type_: (*type_).into(),
                    status: (*status).into(),
                    reason: (*reason).into(),
                    message: format!("{type_} is {status}"),
                    observed_generation: Some(1),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            backend_ref: Some(BackendRef {
                actor_template: template.then(|| "claw".into()),
                actor: actor.then(|| "claw".into()),
            }),
            ..Default::default()
        }
    }

    fn reasons_of(transitions: Vec<Transition>) -> Vec<&'static str> {
        transitions.into_iter().map(|t| t.reason).collect()
    }

    #[test]
    fn a_first_rejection_is_a_warning() {
        let after = status(&[("Accepted", "False", "ModelConfigNotFound")], false, false);

        let found = transitions(None, &after);

        assert_eq!(found.len(), 1);
        assert_eq!((found[0].type_, found[0].reason), (EventType::Warning, "NotAccepted"));
    }

    #[test]
    fn acceptance_and_a_new_template_are_announced_together() {
        let before = status(&[("Accepted", "False", "WorkerPoolNotFound")], false, false);
        let after = status(&[("Accepted", "True", "Accepted")], true, false);

        assert_eq!(reasons_of(transitions(Some(&before), &after)), ["Accepted", "TemplateCreated"]);
    }

    #[test]
    fn a_new_actor_and_readiness_are_announced_once() {
        let before =
            status(&[("Accepted", "True", "Accepted"), ("Ready", "False", "Booting")], true, false);
        let after =
            status(&[("Accepted", "True", "Accepted"), ("Ready", "True", "Ready")], true, true);

        assert_eq!(reasons_of(transitions(Some(&before), &after)), ["ActorCreated", "Ready"]);
        assert!(transitions(Some(&after), &after).is_empty());
    }
}
