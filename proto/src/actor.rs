//! `ate.dev/v1alpha1 Actor`: one sandbox restored from its template's golden snapshot.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    progress::Progress,
    reference::{LocalObjectRef, OperationRef},
};

/// One sandbox instance of an ActorTemplate.
#[derive(CustomResource, JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ate.dev",
    version = "v1alpha1",
    kind = "Actor",
    doc = "One sandbox restored from its template's golden snapshot.",
    plural = "actors",
    namespaced,
    status = "ActorStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.desiredState"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ActorSpec {
    /// The ActorTemplate, in this namespace, whose golden snapshot the actor is restored from.
    pub template_ref: LocalObjectRef,
    /// Whether the sandbox should run or be checkpointed away.
    #[serde(default)]
    pub desired_state: DesiredState,
}

/// What a person wants an actor to be doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DesiredState {
    /// Restored and serving.
    #[default]
    Running,
    /// Checkpointed to the bucket, using no node resources.
    Suspended,
}

/// Where an actor is on its way to running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ActorPhase {
    /// Waiting for its template to be Ready.
    #[default]
    Pending,
    /// A node is restoring it.
    Restoring,
    /// Its template's root filesystem is prepared on `status.node`, and the actor stops
    /// there: this control plane does not boot sandboxes yet. `Ready` says so.
    Prepared,
    /// Serving at `status.endpoint`.
    Running,
    /// A node is checkpointing it.
    Suspending,
    /// Checkpointed to the bucket.
    Suspended,
    /// Restoring failed in a way a retry cannot fix.
    Failed,
}

/// What ate-controller observed and did for an actor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the actor is on its way to running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ActorPhase>,
    /// The node the actor runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `host:port` of the actor's gateway on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `Ready`, and `Stalled` or `Failed` reasons when something is wrong.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The node operation restoring or suspending the actor, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
    /// Progress of that operation's current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// `s3://…` of the snapshot the actor was last suspended to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
}
