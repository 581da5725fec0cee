//! `kagent.dev/v1alpha2 AgentHarness`: a person's request for an agent sandbox.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    progress::Progress,
    reference::{SecretKeyRef, WorkerPoolRef},
};

/// A request for an agent running in a snapshot-backed sandbox.
///
/// harness-operator turns it into an ActorTemplate (the image and its golden snapshot) and an
/// Actor (the running sandbox), and mirrors their progress into this object's conditions.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "kagent.dev",
    version = "v1alpha2",
    kind = "AgentHarness",
    doc = "An agent sandbox: its backend, model and gateway token, and its progress to Ready.",
    plural = "agentharnesses",
    shortname = "ahr",
    namespaced,
    status = "AgentHarnessStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.progress.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.runtime != 'substrate' || has(self.substrate)")
    .message("spec.substrate is required when spec.runtime is substrate").field_path(".substrate"))]
#[serde(rename_all = "camelCase")]
pub struct AgentHarnessSpec {
    /// The agent that runs in the sandbox. `openclaw` runs the OpenClaw gateway.
    pub backend: Backend,
    /// A sentence for people about what this harness is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Name of the ModelConfig, in this namespace, that the agent talks to.
    #[schemars(length(min = 1, max = 253))]
    pub model_config_ref: String,
    /// Where the agent runs. `substrate` runs it in a gVisor sandbox restored from a golden
    /// snapshot, configured by `spec.substrate`.
    pub runtime: Runtime,
    /// Settings of the `substrate` runtime. Required when `runtime` is `substrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substrate: Option<SubstrateSpec>,
}

/// The agents a harness can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The OpenClaw gateway, serving HTTP and WebSocket on one port.
    Openclaw,
}

/// The runtimes a harness can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A gVisor sandbox on an atelet node, restored from the template's golden snapshot.
    Substrate,
}

/// How a harness runs on the substrate runtime.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.gatewayToken) != has(self.gatewayTokenSecretRef)")
    .message("set exactly one of spec.substrate.gatewayToken or spec.substrate.gatewayTokenSecretRef"))]
#[serde(rename_all = "camelCase")]
pub struct SubstrateSpec {
    /// The token clients present to the agent's gateway, inline. Prefer
    /// `gatewayTokenSecretRef`: an inline token is readable by anyone who can read this object.
    /// Exactly one of `gatewayToken` and `gatewayTokenSecretRef` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub gateway_token: Option<String>,
    /// A key of a Secret in this namespace that holds the gateway token. Exactly one of
    /// `gatewayToken` and `gatewayTokenSecretRef` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_token_secret_ref: Option<SecretKeyRef>,
    /// The WorkerPool, in this namespace, whose nodes run the sandbox.
    pub worker_pool_ref: WorkerPoolRef,
    /// Replaces the backend's default image, e.g. to run a build of your own. Must be pinned
    /// by digest (`repository@sha256:<64 hex digits>`) so every node runs the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^@]+@sha256:[a-f0-9]{64}$')")
        .message("must be pinned by digest: <repository>@sha256:<64 hex digits>"))]
    pub workload_image: Option<String>,
}

/// What harness-operator observed and did for a harness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentHarnessStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ActorTemplateReady`, `ActorReady` and `Ready`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The objects that implement this harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<BackendRef>,
    /// Where the harness's gateway can be reached once it is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// The slow work in progress, mirrored from the template or the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// The ActorTemplate and Actor that implement a harness, in its namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Name of the owned ActorTemplate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_template: Option<String>,
    /// Name of the owned Actor, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// How to reach a harness's gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// `host:port` of the actor's gateway, as published by its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}
