//! Status conditions: their types and reasons, and the one way to update them.
//!
//! Conditions follow the Kubernetes conventions: a list keyed by `type`, each with a `status`
//! of `True`, `False` or `Unknown`, a CamelCase `reason`, a `message` written for a person,
//! the `observedGeneration` it describes, and a `lastTransitionTime` that moves only when
//! `status` changes. Progress updates change the message, never the transition time.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// Condition types. Each is set by exactly one controller.
pub mod types {
    /// The harness's spec and everything it refers to (ModelConfig, WorkerPool, Secret) are
    /// valid and present.
    pub const ACCEPTED: &str = "Accepted";
    /// The harness's template has its golden snapshot.
    pub const ACTOR_TEMPLATE_READY: &str = "ActorTemplateReady";
    /// The harness's actor is serving.
    pub const ACTOR_READY: &str = "ActorReady";
    /// The object does what it was asked to; for a harness, its gateway can be used.
    pub const READY: &str = "Ready";
    /// The template's image is in a node's content store.
    pub const IMAGE_READY: &str = "ImageReady";
    /// The template's golden snapshot is in the bucket, manifest last.
    pub const GOLDEN_SNAPSHOT_READY: &str = "GoldenSnapshotReady";
}

/// Condition reasons, CamelCase and stable: controllers and the UI match on them.
pub mod reasons {
    /// The spec is valid and all references resolve.
    pub const ACCEPTED: &str = "Accepted";
    /// No node has started on the object yet.
    pub const PENDING: &str = "Pending";
    /// A node is resolving the image reference to a manifest.
    pub const RESOLVING_IMAGE: &str = "ResolvingImage";
    /// A node is downloading the image's layers.
    pub const PULLING_IMAGE: &str = "PullingImage";
    /// A node is unpacking the image's layers into a root filesystem.
    pub const UNPACKING_IMAGE: &str = "UnpackingImage";
    /// A node is booting the sandbox and waiting for its readiness check.
    pub const BOOTING: &str = "Booting";
    /// A node is checkpointing the sandbox.
    pub const CHECKPOINTING: &str = "Checkpointing";
    /// A node is uploading the snapshot to the bucket.
    pub const UPLOADING_SNAPSHOT: &str = "UploadingSnapshot";
    /// A node is restoring an actor from its snapshot.
    pub const RESTORING: &str = "Restoring";
    /// The step finished.
    pub const SUCCEEDED: &str = "Succeeded";
    /// No progress for longer than the stall window; the operation is being retried.
    pub const STALLED: &str = "Stalled";
    /// The image reference names nothing in its registry.
    pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";
    /// The registry refused the credentials, or asked for some and none were given.
    pub const UNAUTHORIZED: &str = "Unauthorized";
    /// The image has no manifest for the node's platform.
    pub const NO_MATCHING_PLATFORM: &str = "NoMatchingPlatform";
    /// The snapshot could not be written to the bucket.
    pub const SNAPSHOT_UPLOAD_FAILED: &str = "SnapshotUploadFailed";
    /// No atelet of the pool holds a live lease.
    pub const NO_NODE_AVAILABLE: &str = "NoNodeAvailable";
    /// The referenced ModelConfig does not exist.
    pub const MODEL_CONFIG_NOT_FOUND: &str = "ModelConfigNotFound";
    /// The referenced WorkerPool does not exist.
    pub const WORKER_POOL_NOT_FOUND: &str = "WorkerPoolNotFound";
    /// The referenced Secret, or its key, does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A step failed in a way retrying cannot fix; the message says what to change.
    pub const FAILED: &str = "Failed";
    /// Everything the object needs is Ready; for a harness, its gateway serves.
    pub const READY: &str = "Ready";
    /// The image is pulled and unpacked on a node; golden snapshots are not built yet.
    pub const ROOTFS_PREPARED: &str = "RootfsPrepared";
    /// This control plane cannot build golden snapshots yet.
    pub const SNAPSHOTS_NOT_AVAILABLE: &str = "SnapshotsNotAvailable";
    /// The node running the operation stopped renewing its Lease.
    pub const NODE_LOST: &str = "NodeLost";
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl Status {
    /// The status as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition a controller wants to be current, before the bookkeeping fields are filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    /// One of [`types`].
    pub type_: &'a str,
    /// Whether the condition holds.
    pub status: Status,
    /// One of [`reasons`].
    pub reason: &'a str,
    /// A sentence for a person: what is happening, or what failed and what to do.
    pub message: String,
}

/// Sets the condition of `desired.type_` in `conditions`, replacing one of the same type.
///
/// `lastTransitionTime` becomes `now` only when the status differs from the current one (or
/// there was none); a change of reason or message alone keeps the old time.
/// `observedGeneration` is always set to `generation`. Returns whether anything changed, so a
/// caller can skip a status write that would change nothing.
pub fn set(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = desired.status.as_str();
    let Some(current) = conditions.iter_mut().find(|c| c.type_ == desired.type_) else {
        conditions.push(Condition {
            type_: desired.type_.to_owned(),
            status: status.to_owned(),
            reason: desired.reason.to_owned(),
            message: desired.message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
        return true;
    };

    let unchanged = current.status == status
        && current.reason == desired.reason
        && current.message == desired.message
        && current.observed_generation == generation;
    if unchanged {
        return false;
    }

    if current.status != status {
        current.last_transition_time = Time(now);
    }
    current.status = status.to_owned();
    current.reason = desired.reason.to_owned();
    current.message = desired.message;
    current.observed_generation = generation;
    true
}

/// Returns the condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == Status::True.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn pulling(message: &str) -> Desired<'static> {
        Desired {
            type_: types::IMAGE_READY,
            status: Status::False,
            reason: reasons::PULLING_IMAGE,
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_new_condition_is_added_with_the_time_and_generation() {
        let mut conditions = Vec::new();

        assert!(set(&mut conditions, pulling("Pulling 10%"), Some(3), at(100)));

        assert_eq!(conditions.len(), 1);
        let c = &conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("ImageReady", "False"));
        assert_eq!(c.reason, "PullingImage");
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, Time(at(100)));
    }

    #[test]
    fn progress_changes_the_message_but_not_the_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, pulling("Pulling 10%"), Some(1), at(100));

        assert!(set(&mut conditions, pulling("Pulling 45%"), Some(1), at(200)));

        assert_eq!(conditions[0].message, "Pulling 45%");
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn a_status_change_moves_the_transition_time() {
        let mut conditions = Vec::new();
        set(&mut conditions, pulling("Pulling 99%"), Some(1), at(100));
        let done = Desired {
            status: Status::True,
            reason: reasons::SUCCEEDED,
            message: "Pulled".into(),
            ..pulling("")
        };

        assert!(set(&mut conditions, done, Some(1), at(300)));

        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, Time(at(300)));
        assert!(is_true(&conditions, types::IMAGE_READY));
    }

    #[test]
    fn setting_the_same_condition_again_reports_no_change() {
        let mut conditions = Vec::new();
        set(&mut conditions, pulling("Pulling 10%"), Some(1), at(100));

        assert!(!set(&mut conditions, pulling("Pulling 10%"), Some(1), at(200)));
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn a_new_generation_is_recorded_even_when_nothing_else_changes() {
        let mut conditions = Vec::new();
        set(&mut conditions, pulling("Pulling 10%"), Some(1), at(100));

        assert!(set(&mut conditions, pulling("Pulling 10%"), Some(2), at(200)));
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set(&mut conditions, pulling("Pulling 10%"), Some(1), at(100));
        let ready = Desired {
            type_: types::READY,
            status: Status::False,
            reason: reasons::PULLING_IMAGE,
            message: "Waiting for the image".into(),
        };

        set(&mut conditions, ready, Some(1), at(150));

        assert_eq!(conditions.len(), 2);
        assert_eq!(find(&conditions, types::IMAGE_READY).unwrap().message, "Pulling 10%");
        assert!(!is_true(&conditions, types::READY));
    }
}
