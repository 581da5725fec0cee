//! `ate.dev/v1alpha1 ActorTemplate`: an image, how to run it, and its golden snapshot.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    progress::Progress,
    reference::{OperationRef, SecretKeyRef, WorkerPoolRef},
};

/// What every actor of a template runs, and where its golden snapshot is kept.
///
/// ate-controller prepares the golden snapshot once (pull, unpack, boot, checkpoint, upload)
/// on an atelet of the template's pool; actors are restored from it.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ate.dev",
    version = "v1alpha1",
    kind = "ActorTemplate",
    doc = "A sandbox image and how to run it, with its golden snapshot in an S3 bucket.",
    plural = "actortemplates",
    shortname = "atpl",
    namespaced,
    status = "ActorTemplateStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ActorTemplateSpec {
    /// The containers of the sandbox. The first one's `readyz` decides when it is ready.
    #[schemars(length(min = 1, max = 8))]
    pub containers: Vec<Container>,
    /// The WorkerPool, in this namespace, whose nodes prepare and run the sandboxes.
    pub worker_pool_ref: WorkerPoolRef,
    /// Where the template's snapshots are kept.
    pub snapshots_config: SnapshotsConfig,
}

/// One process tree of a sandbox.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// A DNS label naming the container within the template.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("must be a DNS label: lowercase letters, digits and '-'"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The image, pinned by digest (`repository@sha256:<64 hex digits>`), so that every node
    /// and every snapshot runs the same bytes.
    #[x_kube(validation = Rule::new("self.matches('^[^@]+@sha256:[a-f0-9]{64}$')")
        .message("must be pinned by digest: <repository>@sha256:<64 hex digits>"))]
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// The executable and its arguments; the image's entrypoint when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, literal or from a Secret key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports the container listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// The HTTP endpoint that answers 2xx once the container is ready to be checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readyz: Option<Readyz>,
}

/// An environment variable of a container.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)")
    .message("set exactly one of value or valueFrom"))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// The variable's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from when it must not be written in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A value read when the sandbox starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the template's namespace, read by the atelet that starts the
    /// sandbox.
    pub secret_key_ref: SecretKeyRef,
}

/// A port a container listens on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// An optional name for the port, e.g. `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub name: Option<String>,
    /// The port number inside the sandbox.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
}

/// An HTTP readiness check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readyz {
    /// The port inside the sandbox.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The request path, e.g. `/readyz`.
    #[serde(default = "default_readyz_path")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
}

fn default_readyz_path() -> String {
    "/readyz".to_owned()
}

/// Where snapshots are kept.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotsConfig {
    /// An S3 location, `s3://<bucket>/<prefix>`, reachable from every node of the pool.
    #[x_kube(validation = Rule::new("self.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$')")
        .message("must be an S3 location: s3://<bucket>/<prefix>"))]
    #[schemars(length(min = 1, max = 1024))]
    pub location: String,
}

/// Where a template is on its way to Ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplatePhase {
    /// Accepted; no node works on it yet.
    #[default]
    Pending,
    /// A node is pulling, booting, checkpointing or uploading.
    Preparing,
    /// The golden snapshot is in the bucket; actors can be restored from it.
    Ready,
    /// Preparation failed in a way a retry cannot fix; the conditions say what to change.
    Failed,
}

/// What ate-controller observed and did for a template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorTemplateStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the template is on its way to Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TemplatePhase>,
    /// `ImageReady`, `GoldenSnapshotReady` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The node operation preparing the golden snapshot, while one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRef>,
    /// Progress of that operation's current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// `s3://…` of the golden snapshot's manifest, once it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_snapshot: Option<String>,
}
