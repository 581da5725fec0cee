//! Kubernetes Events when an object's `Ready` condition changes, for `kubectl describe` and
//! event watchers. Progress alone (the same reason with a new percentage) is no event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Resource,
    runtime::events::{Event, EventType},
};
use proto::conditions::{self, reasons, types};

use crate::Context;

/// Reasons that ask a person to look: the event is a Warning.
const WARNINGS: [&str; 8] = [
    reasons::FAILED,
    reasons::STALLED,
    reasons::IMAGE_NOT_FOUND,
    reasons::UNAUTHORIZED,
    reasons::NO_MATCHING_PLATFORM,
    reasons::NO_NODE_AVAILABLE,
    reasons::WORKER_POOL_NOT_FOUND,
    reasons::NODE_LOST,
];

/// Publishes an Event regarding `object` when its `Ready` condition changed status or reason
/// between `before` and `after`. A refused event is logged: events inform, they never hold a
/// reconcile back.
pub async fn ready_changed<K>(ctx: &Context, object: &K, before: &[Condition], after: &[Condition])
where
    K: Resource<DynamicType = ()>,
{
    let Some(event) = transition(before, after) else { return };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, reason = %event.reason, "publishing an event failed");
    }
}

/// The event for a change of `Ready`, if it changed.
fn transition(before: &[Condition], after: &[Condition]) -> Option<Event> {
    let ready = conditions::find(after, types::READY)?;
    let was = conditions::find(before, types::READY);
    if was.is_some_and(|c| c.status == ready.status && c.reason == ready.reason) {
        return None;
    }
    let type_ = if WARNINGS.contains(&ready.reason.as_str()) {
        EventType::Warning
    } else {
        EventType::Normal
    };
    Some(Event {
        type_,
        reason: ready.reason.clone(),
        note: Some(ready.message.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    use super::*;

    fn ready(status: &str, reason: &str, message: &str) -> Vec<Condition> {
        vec![Condition {
            type_: types::READY.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        }]
    }

    #[test]
    fn a_new_reason_is_an_event_and_a_failure_is_a_warning() {
        let pulling = ready("False", reasons::PULLING_IMAGE, "Pulling x: 10%");
        let event = transition(&[], &pulling).unwrap();
        assert_eq!((event.type_, event.reason.as_str()), (EventType::Normal, "PullingImage"));

        let stalled = ready("False", reasons::STALLED, "No progress pulling x");
        let event = transition(&pulling, &stalled).unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.note.as_deref(), Some("No progress pulling x"));
    }

    #[test]
    fn progress_under_the_same_reason_is_no_event() {
        let before = ready("False", reasons::PULLING_IMAGE, "Pulling x: 10%");
        let after = ready("False", reasons::PULLING_IMAGE, "Pulling x: 11%");
        assert!(transition(&before, &after).is_none());
    }
}
